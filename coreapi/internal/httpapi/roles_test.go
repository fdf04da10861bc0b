package httpapi_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

type roleList struct {
	Data       []roles.Role `json:"data"`
	NextCursor *string      `json:"next_cursor"`
	Total      *int64       `json:"total"`
}

func TestRolesCRUD(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.e.Get(t, &w.admin, "/api/v1/roles?include_total=true")
	wantStatus(t, r, 200)
	var l roleList
	r.JSON(t, &l)
	if len(l.Data) != 3 || l.Data[0].Name != "admin" || l.Data[1].Name != "member" || l.Data[2].Name != "owner" || *l.Total != 3 {
		t.Fatalf("built-in roles = %s", r.Body)
	}
	for _, ro := range l.Data {
		if !ro.Builtin {
			t.Errorf("%s not builtin", ro.Name)
		}
	}
	// Built-in roles show what they hold under the live (here built-in)
	// catalog, api-keys:write included, whatever their rows stored.
	if want := permissions.BuiltinNames(); !equal(l.Data[2].Permissions, want) {
		t.Errorf("owner permissions = %v, want %v", l.Data[2].Permissions, want)
	}
	if want := []string{"api-keys:write", "audit:read", "roles:read", "roles:write", "tenant:read", "users:read", "users:write"}; !equal(l.Data[0].Permissions, want) {
		t.Errorf("admin permissions = %v, want %v", l.Data[0].Permissions, want)
	}
	if want := []string{"tenant:read"}; !equal(l.Data[1].Permissions, want) {
		t.Errorf("member permissions = %v, want %v", l.Data[1].Permissions, want)
	}

	r = w.e.Send(t, &w.admin, "POST", "/api/v1/roles", map[string]any{
		"name": "auditor", "description": "Reads the trail", "permissions": []string{"audit:read", "users:read", "audit:read"},
	})
	wantStatus(t, r, 201)
	var ro roles.Role
	r.JSON(t, &ro)
	if ro.Name != "auditor" || ro.Builtin || !equal(ro.Permissions, []string{"audit:read", "users:read"}) {
		t.Fatalf("created = %+v", ro)
	}
	wantProblem(t, w.e.Send(t, &w.admin, "POST", "/api/v1/roles", map[string]any{"name": "auditor"}), 409, "role_name_taken")
	// The same name in another tenant is fine.
	wantStatus(t, w.e.Send(t, &w.ownerB, "POST", "/api/v1/roles", map[string]any{"name": "auditor"}), 201)

	// Grant it, then change its permissions: the whole tenant is invalidated.
	wantStatus(t, w.e.Send(t, &w.admin, "PUT", "/api/v1/users/"+w.member.UserID+"/roles/auditor", nil), 200)
	before := len(outboxSubjects(t, w.e))
	r = w.e.Send(t, &w.admin, "PATCH", "/api/v1/roles/"+ro.ID, map[string]any{"permissions": []string{"audit:read"}})
	wantStatus(t, r, 200)
	r.JSON(t, &ro)
	if !equal(ro.Permissions, []string{"audit:read"}) || ro.Description != "Reads the trail" {
		t.Fatalf("patched = %+v", ro)
	}
	got := outboxSubjects(t, w.e)
	if len(got) != before+1 || got[before] != invalidation.TenantSubject(w.a) {
		t.Fatalf("outbox = %v, want a new %s", got, invalidation.TenantSubject(w.a))
	}
	// A description-only change does not touch projections.
	wantStatus(t, w.e.Send(t, &w.admin, "PATCH", "/api/v1/roles/"+ro.ID, map[string]any{"description": "x"}), 200)
	if n := len(outboxSubjects(t, w.e)); n != before+1 {
		t.Fatalf("description change wrote outbox rows (%d, want %d)", n, before+1)
	}
	// The member's projection now holds the new permission set.
	me := w.e.IdentityOf(t, w.member.UserID, w.a)
	if !equal(me.Permissions, []string{"audit:read", "tenant:read"}) {
		t.Fatalf("member permissions = %v", me.Permissions)
	}

	wantStatus(t, w.e.Send(t, &w.admin, "DELETE", "/api/v1/roles/"+ro.ID, nil), 204)
	wantProblem(t, w.e.Send(t, &w.admin, "DELETE", "/api/v1/roles/"+ro.ID, nil), 404, "not_found")
	r = w.e.Get(t, &w.admin, "/api/v1/users/"+w.member.UserID)
	var m users.Member
	r.JSON(t, &m)
	if !equal(m.Roles, []string{"member"}) {
		t.Fatalf("deleted role still granted: %v", m.Roles)
	}
	got = outboxSubjects(t, w.e)
	if got[len(got)-1] != invalidation.TenantSubject(w.a) {
		t.Fatalf("delete did not invalidate the tenant: %v", got)
	}
	wantAudit := []string{"role.created", "member.role_granted", "role.updated", "role.updated", "role.deleted"}
	if got := auditActions(t, w.e, w.a); !equal(got, wantAudit) {
		t.Fatalf("audit = %v, want %v", got, wantAudit)
	}
}

func TestRolesRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var l roleList
	w.e.Get(t, &w.owner, "/api/v1/roles").JSON(t, &l)
	owner := l.Data[2]
	r := w.e.Send(t, &w.owner, "POST", "/api/v1/roles", map[string]any{"name": "ops", "permissions": []string{"tenant:write"}})
	wantStatus(t, r, 201)
	var ops roles.Role
	r.JSON(t, &ops)

	tests := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"change a built-in role", "PATCH", "/api/v1/roles/" + owner.ID, map[string]any{"description": "x"}, 409, "builtin_role"},
		{"delete a built-in role", "DELETE", "/api/v1/roles/" + owner.ID, nil, 409, "builtin_role"},
		{"create with a permission the admin lacks", "POST", "/api/v1/roles", map[string]any{"name": "boss", "permissions": []string{"tenant:write"}}, 403, "forbidden"},
		{"change a role that has a permission the admin lacks", "PATCH", "/api/v1/roles/" + ops.ID, map[string]any{"description": "x"}, 403, "forbidden"},
		{"delete a role that has a permission the admin lacks", "DELETE", "/api/v1/roles/" + ops.ID, nil, 403, "forbidden"},
		{"unknown permission", "POST", "/api/v1/roles", map[string]any{"name": "x", "permissions": []string{"root"}}, 422, "validation_failed"},
		{"bad name", "POST", "/api/v1/roles", map[string]any{"name": "Has Spaces"}, 422, "validation_failed"},
		{"empty patch", "PATCH", "/api/v1/roles/" + ops.ID, map[string]any{}, 422, "validation_failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, w.e.Send(t, &w.admin, tt.method, tt.path, tt.body), tt.status, tt.code)
		})
	}
	t.Run("rename to a taken name", func(t *testing.T) {
		wantProblem(t, w.e.Send(t, &w.owner, "PATCH", "/api/v1/roles/"+ops.ID, map[string]any{"name": "admin"}), 409, "role_name_taken")
	})
	t.Run("pagination by name", func(t *testing.T) {
		r := w.e.Get(t, &w.owner, "/api/v1/roles?limit=2")
		var p1 roleList
		r.JSON(t, &p1)
		if len(p1.Data) != 2 || p1.NextCursor == nil {
			t.Fatalf("page 1 = %s", r.Body)
		}
		var p2 roleList
		w.e.Get(t, &w.owner, "/api/v1/roles?limit=2&cursor="+*p1.NextCursor).JSON(t, &p2)
		names := []string{p1.Data[0].Name, p1.Data[1].Name}
		for _, x := range p2.Data {
			names = append(names, x.Name)
		}
		if !equal(names, []string{"admin", "member", "ops", "owner"}) || p2.NextCursor != nil {
			t.Fatalf("names = %v, next %v", names, p2.NextCursor)
		}
	})
}
