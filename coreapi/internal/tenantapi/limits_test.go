package tenantapi_test

import (
	"context"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
)

// TestRoleLimits: a tenant's custom roles and one member's roles were
// unbounded. Every role a member holds is a name in its projection and in
// the X-Auth-Roles header of each of its requests, so enough grants made
// the member's requests too large for its apps. Now a tenant has at most
// roles.MaxCustomRoles custom roles and a member holds at most
// roles.MaxMemberRoles (409 conflict above either, nothing written); a
// grant of a role already held still answers 200, and the other tenant is
// not held back.
func TestRoleLimits(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	pool := w.E.DB.Pool
	// MaxCustomRoles - 1 custom roles, MaxMemberRoles - 1 of them (with
	// member) granted to the member.
	if _, err := pool.Exec(ctx, `
INSERT INTO roles (tenant_id, name) SELECT $1, 'bulk-' || i FROM generate_series(1, $2) i`, w.A, roles.MaxCustomRoles-1); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
INSERT INTO membership_roles (tenant_id, user_id, role_id)
SELECT tenant_id, $2, id FROM roles WHERE tenant_id = $1 AND name ~ '^bulk-' ORDER BY name LIMIT $3`, w.A, w.Member.UserID, roles.MaxMemberRoles-2); err != nil {
		t.Fatal(err)
	}
	customs := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM roles WHERE tenant_id = $1 AND NOT builtin`, w.A).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "POST", "/api/v1/roles", map[string]any{"name": "last"}), 201)
	apitest.WantProblem(t, w.E.Send(t, &w.Admin, "POST", "/api/v1/roles", map[string]any{"name": "one-too-many"}), 409, "conflict")
	if n := customs(); n != roles.MaxCustomRoles {
		t.Fatalf("%d custom roles, want %d", n, roles.MaxCustomRoles)
	}
	apitest.WantStatus(t, w.E.Send(t, &w.OwnerB, "POST", "/api/v1/roles", map[string]any{"name": "one-too-many"}), 201)

	// The member holds member and MaxMemberRoles - 2 bulk roles: one more
	// grant reaches the limit, the next is refused.
	grant := func(role string) apitest.Response {
		return w.E.Send(t, &w.Admin, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/"+role, nil)
	}
	apitest.WantStatus(t, grant("last"), 200)
	apitest.WantProblem(t, grant("bulk-999"), 409, "conflict")
	apitest.WantStatus(t, grant("last"), 200) // already held: no change, no refusal
	var held int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM membership_roles WHERE tenant_id = $1 AND user_id = $2`, w.A, w.Member.UserID).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held != roles.MaxMemberRoles {
		t.Fatalf("the member holds %d roles, want %d", held, roles.MaxMemberRoles)
	}
	// A revocation makes room again.
	apitest.WantStatus(t, w.E.Send(t, &w.Admin, "DELETE", "/api/v1/users/"+w.Member.UserID+"/roles/last", nil), 200)
	apitest.WantStatus(t, grant("bulk-999"), 200)
}
