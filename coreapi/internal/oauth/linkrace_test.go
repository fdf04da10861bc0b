package oauth_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// qIdentitiesLock is the lock a link to an existing account takes (of the
// account and the provider) after its checks and before it links.
const qIdentitiesLock = `SELECT pg_advisory_xact_lock(hashtextextended('identities:' || $1 || ':fake', 0))`

// verifiedAccount signs up email, with its address verified (an account a
// provider's verified address links to), and returns its tokens.
func (x *env) verifiedAccount(t *testing.T, email string) tokens {
	t.Helper()
	tk := x.signup(t, email)
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, sub(t, tk.AccessToken)); err != nil {
		t.Fatal(err)
	}
	return tk
}

// hold takes q (a lock) in a transaction of its own, released at the
// test's end or by its Rollback.
func (x *env) hold(t *testing.T, q string, args ...any) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, q, args...); err != nil {
		t.Fatal(err)
	}
	return tx
}

// waitingOnLocks waits until n backends of the test's database wait for a
// lock.
func (x *env) waitingOnLocks(t *testing.T, n int) {
	t.Helper()
	eventually.Within(t, 30*time.Second, func() error {
		return x.lockWaiters(n)
	})
}

func (x *env) lockWaiters(n int) error {
	var w int
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&w); err != nil {
		return err
	}
	if w < n {
		return fmt.Errorf("%d backends wait for a lock, want %d", w, n)
	}
	return nil
}

// TestConcurrentLinksKeepOne: two sign-ins that link to the same account
// by its address at once both pass their checks (no identity of theirs,
// the address verified, no second factor, no subject of the provider
// linked yet) before either links; the lock of the account and provider
// makes the second see the first's link. Two subjects: one links, the
// other is refused as a later holder of the address would be. One
// subject twice (two tabs, a double click): it links once, and both sign
// in through it.
func TestConcurrentLinksKeepOne(t *testing.T) {
	for _, tt := range []struct {
		name     string
		subjects [2]string
	}{
		{"two subjects", [2]string{"idp-user-1", "idp-user-2"}},
		{"one subject twice", [2]string{"idp-user-1", "idp-user-1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x := start(t)
			acct := x.verifiedAccount(t, "oidc@example.com")
			uid := sub(t, acct.AccessToken)
			var paths [2]string
			var begun [2]started
			for i, s := range tt.subjects {
				x.idp.mu.Lock()
				x.idp.Subject = s
				x.idp.mu.Unlock()
				begun[i] = x.begin(t, "")
				paths[i] = x.approve(t, begun[i])
			}
			held := x.hold(t, qIdentitiesLock, uid)
			answers := make(chan apitest.Response, 2)
			for i := range paths {
				go func() { answers <- x.callback(t, paths[i], begun[i].cookie) }()
			}
			// Both checked the account and wait to link.
			x.waitingOnLocks(t, 2)
			if err := held.Rollback(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := map[int]int{}
			var refused apitest.Response
			for range paths {
				r := <-answers
				got[r.Status]++
				if r.Status != http.StatusOK {
					refused = r
				}
			}
			if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, uid); n != 1 {
				t.Errorf("%d identities linked to the account, want 1", n)
			}
			if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.identity_linked' AND target_id = $1`, uid); n != 1 {
				t.Errorf("%d identity_linked audit events, want 1", n)
			}
			if tt.subjects[0] != tt.subjects[1] {
				if got[http.StatusOK] != 1 || refused.Status != http.StatusConflict || refused.Problem(t).Code != problem.CodeOtherSubjectLinked {
					t.Fatalf("answers %v, the refused one %d %s; want one 200 and one 409 %s", got, refused.Status, refused.Body, problem.CodeOtherSubjectLinked)
				}
				return
			}
			if got[http.StatusOK] != 2 {
				t.Fatalf("answers %v (refused: %s), want both 200", got, refused.Body)
			}
		})
	}
}
