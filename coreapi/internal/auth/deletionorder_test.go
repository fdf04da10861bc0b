package auth_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// TestSignInDuringAccountDeletion: a password sign-in whose password was
// checked while the account existed, and which opens its session while
// the account's deletion (users.DeleteAccount, as DELETE
// /users/me/account and `coreapi users delete` run it) is under way, is
// answered as a sign-in of an unknown address is (400 invalid_grant), and
// the deletion goes through. The deletion took the account's row before
// the memberships its delete removes, while a sign-in takes the
// membership before the account's row (its session's foreign key, then
// factorActiveLocked): the sign-in held the membership and waited for
// the account, the deletion held the account and waited for the
// membership, and PostgreSQL failed one of them with a deadlock (500).
// The deletion is held, with what it has locked, once the account's row
// is (DeleteOptions.Check), until the sign-in waits on a lock.
func TestSignInDuringAccountDeletion(t *testing.T) {
	t.Parallel()
	for _, named := range []bool{true, false} {
		name := "no tenant named"
		if named {
			name = "tenant named"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			tk := e.signup(t, "deleting@example.com", "Own")
			uid := claims(t, tk.AccessToken)["sub"].(string)
			body := map[string]string{"grant_type": "password", "email": "deleting@example.com", "password": pw}
			if named {
				body["tenant_id"] = tk.TenantID
			}
			var (
				wg      sync.WaitGroup
				delErr  error
				locked  = make(chan struct{})
				release = make(chan struct{})
			)
			wg.Go(func() {
				_, delErr = users.DeleteAccount(ctx, e.DB.Pool, uid, users.DeleteOptions{
					By: users.DeletedBySelf, ActorUserID: uid,
					Check: func(context.Context, pgx.Tx) error {
						close(locked)
						<-release
						return nil
					},
				})
			})
			free := sync.OnceFunc(func() { close(release) })
			t.Cleanup(free) // a test that gave up lets the deletion end
			<-locked
			answer := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response { return e.token(t, body) })
			free()
			r := answer()
			wg.Wait()
			if delErr != nil {
				t.Errorf("deletion: %v", delErr)
			}
			wantStatus(t, "sign-in during the deletion", r, http.StatusBadRequest, "invalid_grant")
			if n := e.count(t, `SELECT (SELECT count(*) FROM users WHERE id = $1) + (SELECT count(*) FROM sessions WHERE user_id = $1)`, uid); n != 0 {
				t.Errorf("%d rows of the account and its sessions left, want 0", n)
			}
		})
	}
}
