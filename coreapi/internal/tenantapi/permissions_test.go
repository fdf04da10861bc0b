package tenantapi_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// notesCatalog is the example app's catalog.
const notesCatalog = `
permissions:
  - name: notes:read
    description: Read notes
    member_default: true
  - name: notes:write
    description: Create notes
`

func mustCatalog(t testing.TB, text string) *permissions.Catalog {
	t.Helper()
	c, err := permissions.Parse([]byte(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// notesWorld is world with the notes catalog.
func notesWorld(t *testing.T) *world {
	t.Helper()
	cat := mustCatalog(t, notesCatalog)
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.Catalog = cat }})
	w := apitest.SeedWorld(t, e)
	return w
}

func TestListPermissions(t *testing.T) {
	t.Parallel()
	w := notesWorld(t)
	// Any member may read the vocabulary; it needs no permission.
	r := w.E.Get(t, &identity.Identity{UserID: w.Member.UserID, TenantID: w.A}, "/api/v1/permissions")
	apitest.WantStatus(t, r, 200)
	if r.Stats.Queries != 0 {
		t.Errorf("GET /permissions made %d queries, want 0", r.Stats.Queries)
	}
	var l struct {
		Data []permissions.Entry `json:"data"`
	}
	r.JSON(t, &l)
	var names []string
	got := map[string]permissions.Entry{}
	for _, e := range l.Data {
		names = append(names, e.Name)
		got[e.Name] = e
	}
	want := []string{"api-keys:write", "audit:read", "notes:read", "notes:write", "roles:read", "roles:write", "tenant:read", "tenant:write", "users:read", "users:write"}
	if !slices.Equal(names, want) {
		t.Fatalf("names = %v, want %v", names, want)
	}
	if e := got["notes:read"]; e.Builtin || !e.MemberDefault || e.Description != "Read notes" {
		t.Errorf("notes:read = %+v", e)
	}
	if e := got["notes:write"]; e.Builtin || e.MemberDefault || e.Description != "Create notes" {
		t.Errorf("notes:write = %+v", e)
	}
	if e := got["tenant:read"]; !e.Builtin || !e.MemberDefault || e.Description == "" {
		t.Errorf("tenant:read = %+v", e)
	}
	if e := got["api-keys:write"]; !e.Builtin || e.MemberDefault {
		t.Errorf("api-keys:write = %+v", e)
	}
	apitest.WantProblem(t, w.E.Get(t, nil, "/api/v1/permissions"), 401, "unauthenticated")
}

// TestBuiltinRolesFollowTheCatalog: owner holds every catalog permission,
// admin all but tenant:write, member tenant:read plus the member_default
// ones, in the projection, in /users/me and in the role list.
func TestBuiltinRolesFollowTheCatalog(t *testing.T) {
	t.Parallel()
	w := notesWorld(t)
	all := []string{"api-keys:write", "audit:read", "notes:read", "notes:write", "roles:read", "roles:write", "tenant:read", "tenant:write", "users:read", "users:write"}
	admin := []string{"api-keys:write", "audit:read", "notes:read", "notes:write", "roles:read", "roles:write", "tenant:read", "users:read", "users:write"}
	member := []string{"notes:read", "tenant:read"}
	for _, c := range []struct {
		who  identity.Identity
		want []string
	}{{w.Owner, all}, {w.Admin, admin}, {w.Member, member}} {
		r := w.E.Get(t, &c.who, "/api/v1/users/me")
		apitest.WantStatus(t, r, 200)
		var me tenantapi.Me
		r.JSON(t, &me)
		if !slices.Equal(me.Permissions, c.want) || !slices.Equal(c.who.Permissions, c.want) {
			t.Errorf("%v: /users/me %v, projection %v; want %v", me.Roles, me.Permissions, c.who.Permissions, c.want)
		}
		// What the proxy forwards as X-Auth-Permissions is the projection's
		// list, fetched from the internal endpoint in one query.
		r = w.E.Do(t, apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + c.who.UserID + "?tenant_id=" + w.A, Service: true})
		apitest.WantStatus(t, r, 200)
		if r.Stats.Queries != 1 {
			t.Errorf("projection took %d queries, want 1", r.Stats.Queries)
		}
		var p identity.Projection
		r.JSON(t, &p)
		if !slices.Equal(p.Permissions, c.want) {
			t.Errorf("%v: projection endpoint %v, want %v", p.Roles, p.Permissions, c.want)
		}
	}
	var l roleList
	w.E.Get(t, &w.Owner, "/api/v1/roles").JSON(t, &l)
	for _, ro := range l.Data {
		want := map[string][]string{"owner": all, "admin": admin, "member": member}[ro.Name]
		if !slices.Equal(ro.Permissions, want) {
			t.Errorf("role %s lists %v, want %v", ro.Name, ro.Permissions, want)
		}
	}
}

// TestCustomRolesHoldCatalogPermissions: a custom role may hold catalog
// permissions, never one outside the catalog, and never more than the
// caller holds; granting likewise.
func TestCustomRolesHoldCatalogPermissions(t *testing.T) {
	t.Parallel()
	w := notesWorld(t)
	r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "writer", "permissions": []string{"notes:write", "notes:read"}})
	apitest.WantStatus(t, r, 201)
	var writer tenantapi.Role
	r.JSON(t, &writer)
	if !slices.Equal(writer.Permissions, []string{"notes:read", "notes:write"}) {
		t.Fatalf("writer = %+v", writer)
	}
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/writer", nil), 200)
	if got := w.E.IdentityOf(t, w.Member.UserID, w.A).Permissions; !slices.Equal(got, []string{"notes:read", "notes:write", "tenant:read"}) {
		t.Fatalf("member with writer holds %v", got)
	}

	t.Run("unknown permissions are named", func(t *testing.T) {
		r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "x", "permissions": []string{"notes:read", "notes:delete", "invoices:write", "notes:delete"}})
		apitest.WantProblem(t, r, 422, "validation_failed")
		p := r.Problem(t)
		var msgs []string
		for _, fe := range p.Errors {
			if fe.Field != "permissions" {
				t.Errorf("field %q", fe.Field)
			}
			msgs = append(msgs, fe.Message)
		}
		if len(msgs) != 2 || !strings.Contains(msgs[0], `"notes:delete"`) || !strings.Contains(msgs[1], `"invoices:write"`) {
			t.Fatalf("errors = %+v", p.Errors)
		}
		r = w.E.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+writer.ID, map[string]any{"permissions": []string{"notes:admin"}})
		apitest.WantProblem(t, r, 422, "validation_failed")
		if p := r.Problem(t); len(p.Errors) != 1 || !strings.Contains(p.Errors[0].Message, `"notes:admin"`) {
			t.Fatalf("patch errors = %+v", p.Errors)
		}
	})

	// A delegate who may manage roles and members but only reads notes.
	r = w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "delegate",
		"permissions": []string{"roles:write", "users:write", "users:read", "tenant:read", "notes:read"}})
	apitest.WantStatus(t, r, 201)
	del := w.E.SeedUserIn(t, w.A, "delegate@acme.test", "delegate")
	plain := w.E.SeedUserIn(t, w.A, "plain@acme.test")
	tests := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"create a role with a permission the delegate lacks", "POST", "/api/v1/roles", map[string]any{"name": "w2", "permissions": []string{"notes:write"}}, 403, "forbidden"},
		{"grant a role with a permission the delegate lacks", "PUT", "/api/v1/users/" + plain.UserID + "/roles/writer", nil, 403, "forbidden"},
		{"add a member with such a role", "POST", "/api/v1/users", map[string]any{"email": "new@acme.test", "roles": []string{"writer"}}, 403, "forbidden"},
		{"reshape a role holding such a permission", "PATCH", "/api/v1/roles/" + writer.ID, map[string]any{"permissions": []string{"notes:read"}}, 403, "forbidden"},
		{"grant admin, which holds notes:write through the catalog", "PUT", "/api/v1/users/" + plain.UserID + "/roles/admin", nil, 403, "forbidden"},
		{"create a role within the delegate's permissions", "POST", "/api/v1/roles", map[string]any{"name": "reader", "permissions": []string{"notes:read"}}, 201, ""},
		{"grant member: tenant:read and notes:read, both held", "PUT", "/api/v1/users/" + plain.UserID + "/roles/member", nil, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := w.E.Send(t, &del, tt.method, tt.path, tt.body)
			if tt.code == "" {
				apitest.WantStatus(t, r, tt.status)
				return
			}
			apitest.WantProblem(t, r, tt.status, tt.code)
		})
	}
	if got := w.E.IdentityOf(t, plain.UserID, w.A).Permissions; !slices.Equal(got, []string{"notes:read", "tenant:read"}) {
		t.Fatalf("plain member holds %v", got)
	}
	// Without notes:read the delegate may not grant member any more: the
	// member role carries the catalog's member_default permissions.
	r = w.E.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+rolesByName(t, w)["delegate"].ID, map[string]any{"permissions": []string{"roles:write", "users:write", "users:read", "tenant:read"}})
	apitest.WantStatus(t, r, 200)
	del = w.E.IdentityOf(t, del.UserID, w.A)
	other := w.E.SeedUserIn(t, w.A, "other@acme.test")
	apitest.WantProblem(t, w.E.Send(t, &del, "PUT", "/api/v1/users/"+other.UserID+"/roles/member", nil), 403, "forbidden")
}

func rolesByName(t *testing.T, w *world) map[string]tenantapi.Role {
	t.Helper()
	var l roleList
	w.E.Get(t, &w.Owner, "/api/v1/roles?limit=100").JSON(t, &l)
	out := map[string]tenantapi.Role{}
	for _, r := range l.Data {
		out[r.Name] = r
	}
	return out
}

// TestCatalogUnderEveryExecMode: the catalog is bound as array literals
// sent as text; every DB_EXEC_MODE (PgBouncer-friendly ones included)
// reads them the same way.
func TestCatalogUnderEveryExecMode(t *testing.T) {
	t.Parallel()
	cat := mustCatalog(t, notesCatalog)
	for name, mode := range map[string]pgx.QueryExecMode{
		"cache_statement": pgx.QueryExecModeCacheStatement,
		"cache_describe":  pgx.QueryExecModeCacheDescribe,
		"describe_exec":   pgx.QueryExecModeDescribeExec,
		"exec":            pgx.QueryExecModeExec,
		"simple_protocol": pgx.QueryExecModeSimpleProtocol,
	} {
		t.Run(name, func(t *testing.T) {
			e := start(t, apitest.Options{ExecMode: mode, Configure: func(o *httpapi.Options) { o.Catalog = cat }})
			ten := e.SeedTenant(t, "Acme")
			owner := e.SeedUserIn(t, ten.ID, "o@acme.test", "owner")
			member := e.SeedUserIn(t, ten.ID, "m@acme.test", "member")
			apitest.WantStatus(t, e.Send(t, &owner, "POST", "/api/v1/roles", map[string]any{"name": "writer", "permissions": []string{"notes:write"}}), 201)
			apitest.WantStatus(t, e.Send(t, &owner, "PUT", "/api/v1/users/"+member.UserID+"/roles/writer", nil), 200)
			r := e.Do(t, apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + member.UserID + "?tenant_id=" + ten.ID, Service: true})
			apitest.WantStatus(t, r, 200)
			var p identity.Projection
			r.JSON(t, &p)
			if want := []string{"notes:read", "notes:write", "tenant:read"}; !slices.Equal(p.Permissions, want) {
				t.Fatalf("projection permissions = %v, want %v", p.Permissions, want)
			}
			var me tenantapi.Me
			e.Get(t, &owner, "/api/v1/users/me").JSON(t, &me)
			if !slices.Equal(me.Permissions, cat.Names()) {
				t.Fatalf("owner holds %v, want %v", me.Permissions, cat.Names())
			}
		})
	}
}

// TestHandingOutUnderAnotherCatalog: a replica whose catalog does not
// declare a permission a custom role stores (one declared by the replicas
// of the other version during a rollout, or one taken out of the catalog
// and declared again later) must not hand that role out on the say of a
// caller who does not hold the permission. It judged the role by what its
// own catalog declares, so a delegate without notes:write granted
// themselves "writer" through an old replica (or added a member with it),
// and every new replica then gave them notes:write. Such a role is handed
// out only by a replica that can judge it: here, 403 forbidden for
// everyone, nothing granted; the new replica still grants it.
func TestHandingOutUnderAnotherCatalog(t *testing.T) {
	t.Parallel()
	newer := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.Catalog = mustCatalog(t, notesCatalog) }})
	w := apitest.SeedWorld(t, newer)
	older := start(t, apitest.Options{DB: newer.DB}) // the built-in catalog: no notes:*
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "writer", "permissions": []string{"notes:write"}}), 201)
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "delegate",
		"permissions": []string{"tenant:read", "users:read", "users:write"}}), 201)
	del := newer.SeedUserIn(t, w.A, "delegate@acme.test", "delegate")
	plain := newer.SeedUserIn(t, w.A, "plain@acme.test", "member")
	held := func(uid string) []string { return newer.IdentityOf(t, uid, w.A).Permissions }
	before := map[string][]string{del.UserID: held(del.UserID), plain.UserID: held(plain.UserID)}

	for _, c := range []struct {
		name         string
		as           *identity.Identity
		method, path string
		body         any
	}{
		{"delegate grants themselves the role", &del, "PUT", "/api/v1/users/me/roles/writer", nil},
		{"delegate grants it to a member", &del, "PUT", "/api/v1/users/" + plain.UserID + "/roles/writer", nil},
		{"delegate adds a member with it", &del, "POST", "/api/v1/users", map[string]any{"email": "new@acme.test", "roles": []string{"writer"}}},
		{"admin grants it", &w.Admin, "PUT", "/api/v1/users/" + plain.UserID + "/roles/writer", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			apitest.WantProblem(t, older.Send(t, c.as, c.method, c.path, c.body), 403, "forbidden")
		})
	}
	for uid, want := range before {
		if got := held(uid); !slices.Equal(got, want) {
			t.Errorf("%s holds %v after the refusals, want %v", uid, got, want)
		}
	}
	if n := newer.Strings(t, `SELECT u.id::text FROM users u WHERE u.email = 'new@acme.test'`); len(n) != 0 {
		t.Errorf("a member was added with the role: %v", n)
	}
	// The replica that declares the permission judges the role in full.
	apitest.WantProblem(t, newer.Send(t, &del, "PUT", "/api/v1/users/me/roles/writer", nil), 403, "forbidden")
	apitest.WantStatus(t, newer.Send(t, &w.Admin, "PUT", "/api/v1/users/"+plain.UserID+"/roles/writer", nil), 200)
}
