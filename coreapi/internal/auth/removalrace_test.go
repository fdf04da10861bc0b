package auth_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestRemovalRacingPasswordChange: a member's removal from a tenant ends
// their sessions there while the member changes their password, which
// ends their other sessions and then reissues the one it keeps. The
// removal took the sessions without the account's row, so with the
// change holding one session and waiting for the other, and the removal
// holding that other and waiting for the first, PostgreSQL failed one of
// them with a deadlock (500). The removal takes the account's row first
// now, as every other change that ends a user's sessions does, and the
// two run one after the other. The change is held (a row of the user's
// reset links it deletes after ending the other sessions is locked) until
// the removal waits. Both orders of the two sessions' creation are tried,
// as the removal ends them in the order it finds them.
func TestRemovalRacingPasswordChange(t *testing.T) {
	t.Parallel()
	for _, callerFirst := range []bool{true, false} {
		name := "caller's session opened last"
		if callerFirst {
			name = "caller's session opened first"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			tk := e.signup(t, "leaving@example.com", "Own")
			uid := claims(t, tk.AccessToken)["sub"].(string)
			second := e.SeedTenant(t, "Second")
			admin := e.SeedUserIn(t, second.ID, "admin@example.com", "owner")
			e.SeedMember(t, second.ID, uid, "member")
			signIn := func() tokens {
				t.Helper()
				r := e.token(t, map[string]string{"grant_type": "password", "email": "leaving@example.com", "password": pw, "tenant_id": second.ID})
				if r.Status != http.StatusOK {
					t.Fatalf("sign-in: %d %s", r.Status, r.Body)
				}
				var got tokens
				r.JSON(t, &got)
				return got
			}
			first, last := signIn(), signIn()
			caller := last
			if callerFirst {
				caller = first
			}
			as := e.identityFor(t, caller)

			if _, err := e.DB.Pool.Exec(ctx, `INSERT INTO action_tokens (token_hash, purpose, user_id, email, expires_at)
VALUES ('\x01', 'password_reset', $1, 'leaving@example.com', now() + interval '1 hour')`, uid); err != nil {
				t.Fatal(err)
			}
			hold := e.DB.Hold(t, `SELECT 1 FROM action_tokens WHERE user_id = $1 FOR UPDATE`, uid)
			var (
				wg         sync.WaitGroup
				change, rm apitest.Response
				removed    = make(chan struct{})
			)
			wg.Go(func() {
				change = e.Send(t, as, http.MethodPut, "/api/v1/users/me/password",
					map[string]string{"current_password": pw, "new_password": "another horse battery"})
			})
			e.DB.WaitForLockWaiters(t, 1) // the change, at the reset link, the other sessions ended
			wg.Go(func() {
				defer close(removed)
				rm = e.Send(t, &admin, http.MethodDelete, "/api/v1/users/"+uid, nil)
			})
			e.waitLockedOrDone(t, 2, removed)
			if err := hold.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if rm.Status != http.StatusNoContent {
				t.Errorf("removal: %d %s", rm.Status, rm.Body)
			}
			// The change stands; its answer is the session's tokens, or
			// 401 when the removal ended the session before they were
			// issued.
			if change.Status != http.StatusOK {
				wantStatus(t, "password change", change, http.StatusUnauthorized, "invalid_token")
			}
			if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND tenant_id = $2 AND revoked_at IS NULL`, uid, second.ID); n != 0 {
				t.Errorf("%d sessions in the tenant the user was removed from are live", n)
			}
		})
	}
}
