package auth_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestSignInRacingAccountDeletion: a password sign-in whose password was
// checked while the account existed, and which opens its session once
// the account was deleted (DELETE /users/me/account, `coreapi users delete`), is
// answered as a sign-in of an unknown address is (400 invalid_grant): it
// said "this account is disabled" (403 user_disabled), or that the user
// is no member of the tenant, of an account that no longer exists. The
// sign-in is held at its session's membership (locked here) until the
// deletion, in the same transaction, committed; both with a tenant named
// and without (which then looks for another tenant to land in).
func TestSignInRacingAccountDeletion(t *testing.T) {
	t.Parallel()
	for _, named := range []bool{true, false} {
		name := "no tenant named"
		if named {
			name = "tenant named"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			tk := e.signup(t, "racing@example.com", "Own")
			uid := claims(t, tk.AccessToken)["sub"].(string)
			body := map[string]string{"grant_type": "password", "email": "racing@example.com", "password": pw}
			if named {
				body["tenant_id"] = tk.TenantID
			}
			hold := e.DB.Hold(t, `SELECT 1 FROM memberships WHERE user_id = $1 FOR UPDATE`, uid)
			var (
				wg sync.WaitGroup
				r  apitest.Response
			)
			wg.Go(func() { r = e.token(t, body) })
			e.DB.WaitForLockWaiters(t, 1) // the sign-in, at its session's membership
			if _, err := hold.Exec(ctx, `DELETE FROM users WHERE id = $1`, uid); err != nil {
				t.Fatal(err)
			}
			if err := hold.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			wantStatus(t, "sign-in racing the deletion", r, http.StatusBadRequest, "invalid_grant")
			if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, uid); n != 0 {
				t.Errorf("%d sessions of the deleted account", n)
			}
		})
	}
}
