package tenantapi_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
)

// TestGrantRacingRoleEscalation: a role handed out (granted to a member,
// or given to a new member with POST /users) while an owner's change adds
// a permission to it that the admin handing it out does not hold. The
// grant read the role's permissions without a lock, checked them, and
// then waited on the role's row for its foreign key until the change
// committed: it went through, and the admin had given tenant:write. The
// roles handed out are now locked (FOR SHARE) as they are checked, so the
// check waits for the change and refuses.
func TestGrantRacingRoleEscalation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cases := []struct {
		name string
		send func(role string) apitest.Response
		// held reports whether the role was handed out anyway.
		held func(t *testing.T, role string) bool
	}{
		{
			name: "grant",
			send: func(role string) apitest.Response {
				return w.E.Send(t, &w.Admin, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/"+role, nil)
			},
			held: func(t *testing.T, role string) bool {
				var m tenantapi.Member
				w.E.Get(t, &w.Owner, "/api/v1/users/"+w.Member.UserID).JSON(t, &m)
				return slices.Contains(m.Roles, role)
			},
		},
		{
			name: "new member",
			send: func(role string) apitest.Response {
				return w.E.Send(t, &w.Admin, "POST", "/api/v1/users", map[string]any{"email": role + "@acme.test", "roles": []string{role}})
			},
			held: func(t *testing.T, role string) bool {
				var n int
				if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM users WHERE email = $1`, role+"@acme.test").Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n != 0
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			role := "ops-" + map[string]string{"grant": "g", "new member": "n"}[c.name]
			r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": role, "permissions": []string{"audit:read"}})
			apitest.WantStatus(t, r, 201)
			var ro tenantapi.Role
			r.JSON(t, &ro)
			// The owner's PATCH in flight: the role locked and changed, not
			// yet committed (what roles.Store.Update does).
			hold, err := w.E.DB.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer hold.Rollback(context.Background())
			if _, err := hold.Exec(ctx, `SELECT 1 FROM roles WHERE tenant_id = $1 AND id = $2 FOR UPDATE`, w.A, ro.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := hold.Exec(ctx, `UPDATE roles SET permissions = '{audit:read,tenant:write}' WHERE id = $1`, ro.ID); err != nil {
				t.Fatal(err)
			}
			done := make(chan apitest.Response, 1)
			go func() { done <- c.send(role) }()
			w.E.DB.WaitForLockWaiters(t, 1)
			if err := hold.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			apitest.WantProblem(t, <-done, 403, "forbidden")
			if c.held(t, role) {
				t.Errorf("the admin handed out %s, which now carries tenant:write", role)
			}
		})
	}
}
