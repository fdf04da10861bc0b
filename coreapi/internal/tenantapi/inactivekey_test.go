package tenantapi_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestInactiveCreatorsKeyWritesNothing: a key whose creator's membership
// was disabled (the key paused, not revoked), or whose creator was
// removed from the tenant (the key revoked), is still forwarded by a
// proxy that has not yet heard, signed with the permissions it had. It
// changes nothing: a disabled creator's key is refused as the creator's
// own token is (403 forbidden: every change narrows its caller's
// permissions to those an active membership grants, roles.Live), and a
// removed creator's key as any revoked key (401 invalid_token).
func TestInactiveCreatorsKeyWritesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	e := w.E
	disabled := e.SeedUserIn(t, w.A, "disabled@acme.test", "admin")
	removed := e.SeedUserIn(t, w.A, "removed@acme.test", "admin")
	disabledKey, removedKey := e.AsKey(t, disabled), e.AsKey(t, removed)
	apitest.WantStatus(t, e.Send(t, &w.Owner, "PATCH", "/api/v1/users/"+disabled.UserID, map[string]any{"membership_status": "disabled"}), 200)
	apitest.WantStatus(t, e.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+removed.UserID, nil), 204)

	admins := func(t *testing.T) int {
		t.Helper()
		var n int
		e.Tx(t, func(tx pgx.Tx) error {
			return tx.QueryRow(context.Background(), `SELECT count(*) FROM membership_roles mr JOIN roles r ON r.id = mr.role_id
				WHERE mr.user_id = $1 AND r.name = 'admin'`, w.Member.UserID).Scan(&n)
		})
		return n
	}
	for _, tt := range []struct {
		name   string
		as     identity.Identity
		status int
		code   string
	}{
		{"disabled creator's token", disabled, 403, "forbidden"},
		{"disabled creator's key", disabledKey, 403, "forbidden"},
		{"removed creator's key", removedKey, 401, "invalid_token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			apitest.WantProblem(t, e.Send(t, &tt.as, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/admin", nil), tt.status, tt.code)
			if admins(t) != 0 {
				t.Fatal("a role was granted")
			}
			apitest.WantProblem(t, e.Send(t, &tt.as, "POST", "/api/v1/roles", map[string]any{"name": "crony", "permissions": []string{"users:read"}}),
				tt.status, tt.code)
			apitest.WantProblem(t, e.Send(t, &tt.as, "PATCH", "/api/v1/users/"+w.Admin.UserID, map[string]any{"membership_status": "disabled"}),
				tt.status, tt.code)
		})
	}
	r := e.Get(t, &w.Owner, "/api/v1/users/"+w.Admin.UserID)
	apitest.WantStatus(t, r, 200)
	var m struct {
		Status string `json:"membership_status"`
	}
	r.JSON(t, &m)
	if m.Status != "active" {
		t.Fatal("an inactive creator's key disabled a member")
	}
}
