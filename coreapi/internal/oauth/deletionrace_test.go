package oauth_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestProviderSignInRacingAccountDeletion: a sign-in through a linked provider
// that found the account's identity while the account existed, and opens
// its session once the account was deleted (DELETE /users/me/account,
// `coreapi users delete`), is answered 409 conflict, "deleted meanwhile":
// it said 500, or 403 "no active membership" of an account that no
// longer exists. Nothing is opened or created, and no hand-over code
// made. The sign-in is held at its session's membership (locked here)
// until the deletion, in the same transaction, committed; with a tenant
// named and without (which then looks for another tenant to land in).
func TestProviderSignInRacingAccountDeletion(t *testing.T) {
	for _, named := range []bool{false, true} {
		name := "no tenant named"
		if named {
			name = "tenant named"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			x := start(t)
			me := x.linkedAccount(t, "racer@example.com")
			query := ""
			if named {
				query = "?tenant_id=" + me.TenantID
			}
			st := x.begin(t, query)
			path := x.approve(t, st)
			codes := x.count(t, `SELECT count(*) FROM oauth_handovers`)
			held := x.hold(t, `SELECT 1 FROM memberships WHERE user_id = $1 FOR UPDATE`, me.UserID)
			answer := make(chan apitest.Response, 1)
			go func() { answer <- x.callback(t, path, st.cookie) }()
			x.waitingOnLocks(t, 1) // the sign-in, at its session's membership
			if _, err := held.Exec(ctx, `DELETE FROM users WHERE id = $1`, me.UserID); err != nil {
				t.Fatal(err)
			}
			if err := held.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			apitest.WantProblem(t, <-answer, http.StatusConflict, problem.CodeConflict)
			if n := x.count(t, `SELECT (SELECT count(*) FROM sessions WHERE user_id = $1)
 + (SELECT count(*) FROM users WHERE lower(email) = 'racer@example.com')`, me.UserID); n != 0 {
				t.Errorf("%d sessions of the deleted account, or accounts of its address, want 0", n)
			}
			if n := x.count(t, `SELECT count(*) FROM oauth_handovers`); n != codes {
				t.Errorf("%d hand-over codes made", n-codes)
			}
		})
	}
}
