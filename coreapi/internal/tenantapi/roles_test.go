package tenantapi_test

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/openapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

type roleList struct {
	Data       []tenantapi.Role `json:"data"`
	NextCursor *string          `json:"next_cursor"`
	Total      *int64           `json:"total"`
}

func TestRolesCRUD(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Get(t, &w.Admin, "/api/v1/roles?include_total=true")
	apitest.WantStatus(t, r, 200)
	var l roleList
	r.JSON(t, &l)
	// Listed in creation order: the built-in ones, made together, in an
	// order of their own; by name here.
	slices.SortFunc(l.Data, func(a, b tenantapi.Role) int { return strings.Compare(a.Name, b.Name) })
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
	if want := permissions.BuiltinNames(); !slices.Equal(l.Data[2].Permissions, want) {
		t.Errorf("owner permissions = %v, want %v", l.Data[2].Permissions, want)
	}
	if want := []string{"api-keys:write", "audit:read", "roles:read", "roles:write", "tenant:read", "users:read", "users:write"}; !slices.Equal(l.Data[0].Permissions, want) {
		t.Errorf("admin permissions = %v, want %v", l.Data[0].Permissions, want)
	}
	if want := []string{"tenant:read"}; !slices.Equal(l.Data[1].Permissions, want) {
		t.Errorf("member permissions = %v, want %v", l.Data[1].Permissions, want)
	}

	r = w.E.Send(t, &w.Admin, "POST", "/api/v1/roles", map[string]any{
		"name": "auditor", "description": "Reads the trail", "permissions": []string{"audit:read", "users:read", "audit:read"},
	})
	apitest.WantStatus(t, r, 201)
	var ro tenantapi.Role
	r.JSON(t, &ro)
	if ro.Name != "auditor" || ro.Builtin || !slices.Equal(ro.Permissions, []string{"audit:read", "users:read"}) {
		t.Fatalf("created = %+v", ro)
	}
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "POST", "/api/v1/roles", map[string]any{"name": "auditor"}), 409, "role_name_taken")
	// The same name in another tenant is fine.
	apitest.WantStatus(t, w.E.Send(t, &w.OwnerB, "POST", "/api/v1/roles", map[string]any{"name": "auditor"}), 201)

	// Grant it, then change its permissions: the whole tenant is invalidated.
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/auditor", nil), 200)
	before := len(w.E.OutboxSubjects(t))
	r = w.E.Send(t, &w.Admin, "PATCH", "/api/v1/roles/"+ro.ID, map[string]any{"permissions": []string{"audit:read"}})
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &ro)
	if !slices.Equal(ro.Permissions, []string{"audit:read"}) || ro.Description != "Reads the trail" {
		t.Fatalf("patched = %+v", ro)
	}
	got := w.E.OutboxSubjects(t)
	if len(got) != before+1 || got[before] != invalidation.TenantSubject(w.A) {
		t.Fatalf("outbox = %v, want a new %s", got, invalidation.TenantSubject(w.A))
	}
	// A description-only change does not touch projections.
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/roles/"+ro.ID, map[string]any{"description": "x"}), 200)
	if n := len(w.E.OutboxSubjects(t)); n != before+1 {
		t.Fatalf("description change wrote outbox rows (%d, want %d)", n, before+1)
	}
	// The member's projection now holds the new permission set.
	me := w.E.IdentityOf(t, w.Member.UserID, w.A)
	if !slices.Equal(me.Permissions, []string{"audit:read", "tenant:read"}) {
		t.Fatalf("member permissions = %v", me.Permissions)
	}

	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "DELETE", "/api/v1/roles/"+ro.ID, nil), 204)
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "DELETE", "/api/v1/roles/"+ro.ID, nil), 404, "not_found")
	r = w.E.Get(t, &w.Admin, "/api/v1/users/"+w.Member.UserID)
	var m tenantapi.Member
	r.JSON(t, &m)
	if !slices.Equal(m.Roles, []string{"member"}) {
		t.Fatalf("deleted role still granted: %v", m.Roles)
	}
	got = w.E.OutboxSubjects(t)
	if got[len(got)-1] != invalidation.TenantSubject(w.A) {
		t.Fatalf("delete did not invalidate the tenant: %v", got)
	}
	wantAudit := []string{"role.created", "member.role_granted", "role.updated", "role.updated", "member.role_revoked", "role.deleted"}
	if got := w.E.AuditActions(t, w.A); !slices.Equal(got, wantAudit) {
		t.Fatalf("audit = %v, want %v", got, wantAudit)
	}
}

func TestRolesRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var l roleList
	w.E.Get(t, &w.Owner, "/api/v1/roles").JSON(t, &l)
	i := slices.IndexFunc(l.Data, func(r tenantapi.Role) bool { return r.Name == "owner" })
	if i < 0 {
		t.Fatalf("no owner role in %+v", l.Data)
	}
	owner := l.Data[i]
	r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "ops", "permissions": []string{"tenant:write"}})
	apitest.WantStatus(t, r, 201)
	var ops tenantapi.Role
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
			apitest.WantProblem(t, w.E.Send(t, &w.Admin, tt.method, tt.path, tt.body), tt.status, tt.code)
		})
	}
	t.Run("rename to a taken name", func(t *testing.T) {
		apitest.WantProblem(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+ops.ID, map[string]any{"name": "admin"}), 409, "role_name_taken")
	})
	t.Run("pagination in creation order", func(t *testing.T) {
		r := w.E.Get(t, &w.Owner, "/api/v1/roles?limit=2")
		var p1 roleList
		r.JSON(t, &p1)
		if len(p1.Data) != 2 || p1.NextCursor == nil {
			t.Fatalf("page 1 = %s", r.Body)
		}
		var p2 roleList
		w.E.Get(t, &w.Owner, "/api/v1/roles?limit=2&cursor="+*p1.NextCursor).JSON(t, &p2)
		names := []string{p1.Data[0].Name, p1.Data[1].Name}
		for _, x := range p2.Data {
			names = append(names, x.Name)
		}
		// The built-in roles first (made with the tenant), then ops.
		if len(names) != 4 || names[3] != "ops" || p2.NextCursor != nil {
			t.Fatalf("names = %v, next %v", names, p2.NextCursor)
		}
		slices.Sort(names[:3])
		if !slices.Equal(names, []string{"admin", "member", "owner", "ops"}) {
			t.Fatalf("names = %v", names)
		}
	})
}

// TestRoleDeletionRacingMemberChanges: a custom role is deleted while an
// admin takes it from a member (or removes the member). The deletion
// drops the member's grant and then refreshes the member's role names; the
// other change holds the member and then drops the same grant. Each waited
// for the other (a deadlock PostgreSQL broke by failing one with a 500);
// now the deletion waits its turn on the tenant as the member changes do,
// and both answer. A test transaction holds the grant's row so that the
// two requests meet in that order every time.
func TestRoleDeletionRacingMemberChanges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method, path string
		want               []int // acceptable statuses of the member change
	}{
		{"revoke", "DELETE", "/roles/ops", []int{200, 404}},
		{"remove", "DELETE", "", []int{204}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			ctx := t.Context()
			r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "ops", "permissions": []string{"audit:read"}})
			apitest.WantStatus(t, r, 201)
			var ops tenantapi.Role
			r.JSON(t, &ops)
			apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/ops", nil), 200)

			hold, err := w.E.DB.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer hold.Rollback(context.Background())
			if _, err := hold.Exec(ctx, `SELECT 1 FROM membership_roles WHERE tenant_id = $1 AND user_id = $2 AND role_id = $3 FOR UPDATE`,
				w.A, w.Member.UserID, ops.ID); err != nil {
				t.Fatal(err)
			}
			deleted := make(chan apitest.Response, 1)
			go func() { deleted <- w.E.Send(t, &w.Owner, "DELETE", "/api/v1/roles/"+ops.ID, nil) }()
			w.E.DB.WaitForLockWaiters(t, 1)
			changed := make(chan apitest.Response, 1)
			go func() {
				changed <- w.E.Send(t, &w.Admin, tc.method, "/api/v1/users/"+w.Member.UserID+tc.path, nil)
			}()
			w.E.DB.WaitForLockWaiters(t, 2)
			if err := hold.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if r := <-deleted; r.Status != 204 {
				t.Errorf("role deletion: status %d, want 204; body %s", r.Status, r.Body)
			}
			if r := <-changed; !slices.Contains(tc.want, r.Status) {
				t.Errorf("%s: status %d, want one of %v; body %s", tc.name, r.Status, tc.want, r.Body)
			}
		})
	}
}

// TestPermissionListBound: a role's (and an API key's) permission list is
// refused above 64 entries (422), and the OpenAPI document says so (it
// declared no bound, so a client built from it could send lists the
// server refuses).
func TestPermissionListBound(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					MaxItems *int `json:"maxItems"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapi.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"CreateRole", "PatchRole", "CreateAPIKey"} {
		if m := doc.Components.Schemas[name].Properties["permissions"].MaxItems; m == nil || *m != 64 {
			t.Errorf("%s.permissions: maxItems %v, want 64", name, m)
		}
	}
	w := newWorld(t)
	perms := func(n int) []string { return slices.Repeat([]string{"audit:read"}, n) }
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "auditor", "permissions": perms(64)}), 201)
	apitest.WantProblem(t, w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "auditor2", "permissions": perms(65)}), 422, "validation_failed")
}

// TestRoleUpdateAudited: role.updated records the role's editable fields
// before ("from") and after ("to"), as user.email_changed records an
// address, so an auditor sees what a change changed: the row used to hold
// the request's new values only. A patch that changes nothing writes no
// row.
func TestRoleUpdateAudited(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Send(t, &w.Admin, "POST", "/api/v1/roles", map[string]any{
		"name": "ops", "description": "Runs things", "permissions": []string{"users:read"},
	})
	apitest.WantStatus(t, r, 201)
	var ro tenantapi.Role
	r.JSON(t, &ro)
	type state struct {
		Name        string   `json:"name"`
		Description string   `json:"description"`
		Permissions []string `json:"permissions"`
	}
	last := r
	for _, c := range []struct {
		patch    map[string]any
		from, to state
	}{
		{map[string]any{"name": "operators", "permissions": []string{"roles:read", "users:read"}},
			state{"ops", "Runs things", []string{"users:read"}}, state{"operators", "Runs things", []string{"roles:read", "users:read"}}},
		{map[string]any{"description": ""},
			state{"operators", "Runs things", []string{"roles:read", "users:read"}}, state{"operators", "", []string{"roles:read", "users:read"}}},
		{map[string]any{"permissions": []string{}},
			state{"operators", "", []string{"roles:read", "users:read"}}, state{"operators", "", []string{}}},
	} {
		last = w.E.Send(t, &w.Admin, "PATCH", "/api/v1/roles/"+ro.ID, c.patch)
		apitest.WantStatus(t, last, 200)
		from, to := newestChange[state](t, w, "role.updated", ro.ID)
		if !reflect.DeepEqual(from, c.from) || !reflect.DeepEqual(to, c.to) {
			t.Errorf("patch %v: from %+v to %+v, want from %+v to %+v", c.patch, from, to, c.from, c.to)
		}
	}
	// A patch that changes nothing answers the role as it is and writes
	// no row (it used to write one whose from and to were equal), nor an
	// invalidation.
	outbox := len(w.E.OutboxSubjects(t))
	for _, patch := range []map[string]any{
		{"name": "operators"}, {"description": ""}, {"permissions": []string{}},
		{"name": "operators", "description": "", "permissions": []string{}},
	} {
		wantNoChange(t, w, &w.Admin, "/api/v1/roles/"+ro.ID, patch, last.Body)
	}
	last = w.E.Send(t, &w.Admin, "PATCH", "/api/v1/roles/"+ro.ID, map[string]any{"permissions": []string{"users:read", "roles:read"}})
	apitest.WantStatus(t, last, 200)
	outbox++
	wantNoChange(t, w, &w.Admin, "/api/v1/roles/"+ro.ID, map[string]any{"permissions": []string{"roles:read", "users:read", "roles:read"}}, last.Body)
	if n := len(w.E.OutboxSubjects(t)); n != outbox {
		t.Errorf("outbox rows = %d, want %d: a patch that changed nothing invalidated", n, outbox)
	}
}

// TestRoleDeletionAuditsEachHolder: deleting a custom role takes it from
// every member holding it, as revoking it from each would; each of them
// gets the member.role_revoked row a revocation writes (data.via
// role.deleted, the deleter as actor, the deletion's request), before the
// role.deleted row, so a member's audit trail says when and by whom they
// lost the role. Only role.deleted was written: the trail of a member who
// held the role showed it granted and never taken away.
func TestRoleDeletionAuditsEachHolder(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	other := w.E.SeedUserIn(t, w.B, "other@bravo.test", "member")
	for _, tid := range []string{w.A, w.B} {
		as := &w.Owner
		if tid == w.B {
			as = &w.OwnerB
		}
		// The same name in B, held by B's member: B's trail stays as it was.
		apitest.WantStatus(t, w.E.Send(t, as, "POST", "/api/v1/roles", map[string]any{"name": "ops", "permissions": []string{"users:read"}}), 201)
	}
	apitest.WantStatus(t, w.E.Send(t, &w.OwnerB, "PUT", "/api/v1/users/"+other.UserID+"/roles/ops", nil), 200)
	var l roleList
	w.E.Get(t, &w.Owner, "/api/v1/roles").JSON(t, &l)
	var ops tenantapi.Role
	for _, ro := range l.Data {
		if ro.Name == "ops" {
			ops = ro
		}
	}
	holders := []string{w.Admin.UserID, w.Member.UserID}
	for _, uid := range holders {
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", "/api/v1/users/"+uid+"/roles/ops", nil), 200)
	}
	before := len(w.E.AuditActions(t, w.A))
	beforeB := w.E.AuditActions(t, w.B)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/roles/"+ops.ID, nil), 204)

	r := w.E.Get(t, &w.Owner, "/api/v1/audit-events?limit=3")
	apitest.WantStatus(t, r, 200)
	var page struct {
		Data []struct {
			Actor     string          `json:"actor_user_id"`
			Action    string          `json:"action"`
			Target    string          `json:"target_type"`
			TargetID  string          `json:"target_id"`
			Data      json.RawMessage `json:"data"`
			RequestID string          `json:"request_id"`
		} `json:"data"`
	}
	r.JSON(t, &page)
	if n := len(w.E.AuditActions(t, w.A)) - before; n != 3 {
		t.Fatalf("the deletion wrote %d audit rows, want 3 (one member.role_revoked per holder, then role.deleted): %s", n, r.Body)
	}
	del := page.Data[0]
	if del.Action != "role.deleted" || del.TargetID != ops.ID {
		t.Fatalf("newest audit row = %+v, want role.deleted of %s", del, ops.ID)
	}
	var revoked []string
	for _, e := range page.Data[1:] {
		if e.Action != "member.role_revoked" || e.Target != "user" || e.Actor != w.Owner.UserID || e.RequestID != del.RequestID {
			t.Errorf("holder's row = %+v, want member.role_revoked of a user by %s in request %s", e, w.Owner.UserID, del.RequestID)
		}
		var data map[string]any
		if err := json.Unmarshal(e.Data, &data); err != nil || !reflect.DeepEqual(data, map[string]any{"role": "ops", "via": "role.deleted"}) {
			t.Errorf("holder's row data = %s, want {\"role\":\"ops\",\"via\":\"role.deleted\"}", e.Data)
		}
		revoked = append(revoked, e.TargetID)
	}
	slices.Sort(revoked)
	want := slices.Sorted(slices.Values(holders))
	if !slices.Equal(revoked, want) {
		t.Errorf("role revoked from %v, want its holders %v", revoked, want)
	}
	if got := w.E.AuditActions(t, w.B); !slices.Equal(got, beforeB) {
		t.Errorf("tenant B's audit = %v, want it unchanged %v", got, beforeB)
	}

	// A role nobody holds: its deletion writes role.deleted alone.
	r = w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "idle"})
	apitest.WantStatus(t, r, 201)
	var idle tenantapi.Role
	r.JSON(t, &idle)
	before = len(w.E.AuditActions(t, w.A))
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/roles/"+idle.ID, nil), 204)
	if got := w.E.AuditActions(t, w.A)[before:]; !slices.Equal(got, []string{"role.deleted"}) {
		t.Errorf("deleting a role nobody holds wrote %v, want [role.deleted]", got)
	}
}

// TestRoleChangeNeedsTheHoldersPermissions: deleting a custom role, or
// taking permissions out of it, takes them from every member holding it,
// so it needs every permission those members hold, as revoking the role
// from each of them does (TestRevokeNeedsTheMembersPermissions). An admin
// (no tenant:write) could not take "managers" from a member who also held
// tenant:write, but deleted the role, or emptied it, and so demoted that
// member all the same.
func TestRoleChangeNeedsTheHoldersPermissions(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	mgr := []string{"roles:read", "roles:write", "users:read", "users:write"}
	r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "managers", "permissions": mgr})
	apitest.WantStatus(t, r, 201)
	var managers tenantapi.Role
	r.JSON(t, &managers)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "tenant-editor", "permissions": []string{"tenant:write"}}), 201)
	mid := w.Member.UserID
	base := "/api/v1/users/" + mid + "/roles/"
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", base+"managers", nil), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", base+"tenant-editor", nil), 200)
	before := len(w.E.OutboxSubjects(t))

	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "DELETE", base+"managers", nil), 403, "forbidden")
	path := "/api/v1/roles/" + managers.ID
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "DELETE", path, nil), 403, "forbidden")
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "PATCH", path, map[string]any{"permissions": []string{}}), 403, "forbidden")
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "PATCH", path, map[string]any{"permissions": []string{"users:read"}}), 403, "forbidden")
	if got := w.E.IdentityOf(t, mid, w.A).Permissions; !slices.Equal(got, append(slices.Clone(mgr[:2]), "tenant:read", "tenant:write", "users:read", "users:write")) {
		t.Errorf("member's permissions = %v after refused changes", got)
	}
	if n := len(w.E.OutboxSubjects(t)); n != before {
		t.Errorf("refused changes wrote %d outbox rows", n-before)
	}

	// What demotes nobody stays the admin's: a description, a permission
	// added. (A new name is taken from the holders too:
	// TestRoleChangeNeedsWhatGrantingItNeeds.)
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", path, map[string]any{"description": "Manage people"}), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", path, map[string]any{"permissions": append(slices.Clone(mgr), "audit:read")}), 200)
	// Once the member holds nothing beyond the admin, so is the rest.
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", base+"tenant-editor", nil), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", path, map[string]any{"permissions": []string{"users:read"}}), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "DELETE", path, nil), 204)
	if got := w.E.IdentityOf(t, mid, w.A).Permissions; !slices.Equal(got, []string{"tenant:read"}) {
		t.Errorf("member's permissions = %v after the role's deletion", got)
	}
}

// TestRoleDescriptionTrimmed: a role's description is stored without the
// white space around it, on creation and on a change, as a tenant's or a
// member's name is (docs/security.md: role descriptions are trimmed); it
// was stored as sent. A change to the description the role has, give or
// take that white space, changes nothing.
func TestRoleDescriptionTrimmed(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "ops", "description": " \tRuns things\n "})
	apitest.WantStatus(t, r, 201)
	var ro tenantapi.Role
	r.JSON(t, &ro)
	if ro.Description != "Runs things" {
		t.Errorf("created description = %q, want %q", ro.Description, "Runs things")
	}
	r = w.E.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+ro.ID, map[string]any{"description": "  Runs more  "})
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &ro)
	if ro.Description != "Runs more" {
		t.Errorf("changed description = %q, want %q", ro.Description, "Runs more")
	}
	var stored string
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT description FROM roles WHERE id = $1`, ro.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != "Runs more" {
		t.Errorf("stored description = %q", stored)
	}
	wantNoChange(t, w, &w.Owner, "/api/v1/roles/"+ro.ID, map[string]any{"description": " Runs more "}, mustJSON(t, ro))
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRoleChangeNeedsWhatGrantingItNeeds: renaming a role, changing its
// permissions or deleting it changes what every holder of it holds (the
// role names each of their requests carries in X-Auth-Roles, which an
// app may authorize on, and their permissions), and what the pending
// invitations of it hand out: as granting or revoking it, that needs
// users:write. A caller with roles:write alone (here a "designer" holding
// roles:read, roles:write and audit:read) renamed a role its holders and
// an app relied on by name, gave them more, or took it from them, none of
// which they could do through the grant and revoke routes. What changes
// no holder stays theirs: a new role, and a role's description.
func TestRoleChangeNeedsWhatGrantingItNeeds(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	create := func(name string, perms ...string) tenantapi.Role {
		t.Helper()
		r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": name, "permissions": perms})
		apitest.WantStatus(t, r, 201)
		var ro tenantapi.Role
		r.JSON(t, &ro)
		return ro
	}
	create("designer", "roles:read", "roles:write", "audit:read")
	auditors := create("auditors", "audit:read")
	base := "/api/v1/users/" + w.Member.UserID + "/roles/"
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", base+"designer", nil), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", "/api/v1/users/"+w.Admin.UserID+"/roles/auditors", nil), 200)
	designer := w.E.IdentityOf(t, w.Member.UserID, w.A)
	if slices.Contains(designer.Permissions, "users:write") || !slices.Contains(designer.Permissions, "roles:write") {
		t.Fatalf("designer's permissions = %v", designer.Permissions)
	}
	// The grant and revoke routes refuse the designer.
	apitest.WantProblem(t, w.E.Send(t, &designer, "DELETE", "/api/v1/users/"+w.Admin.UserID+"/roles/auditors", nil), 403, "insufficient_scope")
	before := len(w.E.OutboxSubjects(t))
	audited := len(w.E.AuditActions(t, w.A))

	path := "/api/v1/roles/" + auditors.ID
	for _, tc := range []struct {
		name, method string
		body         any
	}{
		{"rename", "PATCH", map[string]any{"name": "billing-approvers"}},
		{"rename with a description", "PATCH", map[string]any{"name": "billing-approvers", "description": "x"}},
		{"permissions taken out", "PATCH", map[string]any{"permissions": []string{}}},
		{"permissions added", "PATCH", map[string]any{"permissions": []string{"audit:read", "roles:read"}}},
		{"delete", "DELETE", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			apitest.WantProblem(t, w.E.Send(t, &designer, tc.method, path, tc.body), 403, "insufficient_scope")
		})
	}
	if got := w.E.IdentityOf(t, w.Admin.UserID, w.A).Roles; !slices.Contains(got, "auditors") {
		t.Errorf("the holder's roles = %v after refused changes, want auditors among them", got)
	}
	if n := len(w.E.OutboxSubjects(t)); n != before {
		t.Errorf("refused changes wrote %d outbox rows", n-before)
	}
	if n := len(w.E.AuditActions(t, w.A)); n != audited {
		t.Errorf("refused changes wrote %d audit rows", n-audited)
	}

	// What changes no holder stays the designer's.
	apitest.WantStatus(t, w.E.Send(t, &designer, "PATCH", path, map[string]any{"description": "Reads the trail"}), 200)
	apitest.WantStatus(t, w.E.Send(t, &designer, "PATCH", path, map[string]any{"name": "auditors", "permissions": []string{"audit:read"}}), 200)
	r := w.E.Send(t, &designer, "POST", "/api/v1/roles", map[string]any{"name": "readers", "permissions": []string{"audit:read"}})
	apitest.WantStatus(t, r, 201)
	// A new name is taken from every holder, as revoking the role from
	// each is: an admin (no tenant:write) may not rename a role the
	// owner holds, whom they could not revoke it from.
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", "/api/v1/users/"+w.Owner.UserID+"/roles/auditors", nil), 200)
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "DELETE", "/api/v1/users/"+w.Owner.UserID+"/roles/auditors", nil), 403, "forbidden")
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "PATCH", path, map[string]any{"name": "trail-readers"}), 403, "forbidden")
	// Once the holders hold nothing beyond the admin, the admin, who may
	// grant and revoke it, may rename it.
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+w.Owner.UserID+"/roles/auditors", nil), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PATCH", path, map[string]any{"name": "trail-readers"}), 200)
}

// TestRoleListStableUnderRenames: a client paging through GET /roles sees
// every role exactly once, however roles are renamed between its pages.
// Paged by name, a role renamed past the cursor came again, and one
// renamed before it was never listed.
func TestRoleListStableUnderRenames(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	want := map[string]bool{} // role id → listed
	var all roleList
	for _, name := range []string{"a1", "a2", "a3", "a4"} {
		r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": name})
		apitest.WantStatus(t, r, 201)
	}
	w.E.Get(t, &w.Owner, "/api/v1/roles?limit=100").JSON(t, &all)
	for _, ro := range all.Data {
		want[ro.ID] = false
	}
	if len(want) != 7 {
		t.Fatalf("%d roles, want 7", len(want))
	}
	seen := map[string]int{}
	var p roleList
	r := w.E.Get(t, &w.Owner, "/api/v1/roles?limit=3")
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &p)
	for _, ro := range p.Data {
		seen[ro.ID]++
	}
	// Each custom role listed so far moves to the end of the names, each
	// one not yet listed to their start.
	for _, ro := range all.Data {
		if ro.Builtin {
			continue
		}
		name := "0" + ro.Name
		if seen[ro.ID] > 0 {
			name = "z" + ro.Name
		}
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+ro.ID, map[string]any{"name": name}), 200)
	}
	for p.NextCursor != nil {
		cursor := *p.NextCursor
		p = roleList{}
		r := w.E.Get(t, &w.Owner, "/api/v1/roles?limit=3&cursor="+cursor)
		apitest.WantStatus(t, r, 200)
		r.JSON(t, &p)
		for _, ro := range p.Data {
			seen[ro.ID]++
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("role %s listed %d times, want once", id, seen[id])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("listed %d roles, want %d", len(seen), len(want))
	}
}
