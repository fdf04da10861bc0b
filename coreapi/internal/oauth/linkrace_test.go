package oauth_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
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
				x.idp.Mu.Lock()
				x.idp.Subject = s
				x.idp.Mu.Unlock()
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

// TestNoLinkAfterTheFactorIsActive: linking to an account by its address
// is refused once the account has a second factor. A link checks for the
// factor and links in one transaction holding the account's row, which
// the factor's confirmation locks before it activates the factor: a
// confirmation that answers while a link is in flight would let that link
// land on an account whose factor is already active. Either the link is
// made first (and the confirmation waits for it: the order of any link
// made before a factor), or the factor first (and the link is refused).
func TestNoLinkAfterTheFactorIsActive(t *testing.T) {
	ks, err := mfa.ParseKeys("k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := mfa.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// enrol starts an enrolment of the account and returns the code that
	// confirms it.
	enrol := func(t *testing.T, x *env, acct tokens) string {
		t.Helper()
		r := x.Send(t, x.identityFor(t, acct), http.MethodPost, "/api/v1/users/me/mfa/totp", nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("enrol: %d %s", r.Status, r.Body)
		}
		var en struct {
			Secret string `json:"secret"`
		}
		r.JSON(t, &en)
		code, err := mfa.Code(en.Secret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	type confirmed struct {
		r apitest.Response
		// linked is how many identities the account had when the
		// confirmation answered.
		linked int
		err    error
	}

	t.Run("link in flight", func(t *testing.T) {
		x := startWith(t, sealer)
		acct := x.verifiedAccount(t, "oidc@example.com")
		uid := sub(t, acct.AccessToken)
		code := enrol(t, x, acct)
		b := x.begin(t, "")
		path := x.approve(t, b)
		// The link stops after its checks (no active factor), before it
		// links.
		held := x.hold(t, qIdentitiesLock, uid)
		linked := make(chan apitest.Response, 1)
		go func() { linked <- x.callback(t, path, b.cookie) }()
		x.waitingOnLocks(t, 1)
		done := make(chan confirmed, 1)
		as := x.identityFor(t, acct)
		go func() {
			var c confirmed
			c.r = x.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/totp/confirm", map[string]string{"code": code})
			c.err = x.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM identities WHERE user_id = $1`, uid).Scan(&c.linked)
			done <- c
		}()
		// The confirmation answers, or waits for the link.
		eventually.Within(t, 30*time.Second, func() error {
			if len(done) == 1 {
				return nil
			}
			return x.lockWaiters(2)
		})
		if err := held.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		c := <-done
		if c.err != nil {
			t.Fatal(c.err)
		}
		if c.r.Status != http.StatusOK {
			t.Fatalf("confirm: %d %s", c.r.Status, c.r.Body)
		}
		r := <-linked
		if r.Status == http.StatusOK && c.linked == 0 {
			t.Fatal("the link landed after the confirmation of the second factor had answered")
		}
		if r.Status != http.StatusOK && (r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeMFABeforeLinking) {
			t.Fatalf("callback: %d %s", r.Status, r.Body)
		}
	})

	t.Run("factor confirmed first", func(t *testing.T) {
		x := startWith(t, sealer)
		acct := x.verifiedAccount(t, "oidc@example.com")
		uid := sub(t, acct.AccessToken)
		code := enrol(t, x, acct)
		_, _, sid, _ := claimsOf(t, acct.AccessToken)
		b := x.begin(t, "")
		path := x.approve(t, b)
		// The confirmation stops at the session's row, which it locks
		// after the account's.
		held := x.hold(t, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, sid)
		done := make(chan apitest.Response, 1)
		as := x.identityFor(t, acct)
		go func() {
			done <- x.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/totp/confirm", map[string]string{"code": code})
		}()
		x.waitingOnLocks(t, 1)
		linked := make(chan apitest.Response, 1)
		go func() { linked <- x.callback(t, path, b.cookie) }()
		// The link waits for the account's row.
		x.waitingOnLocks(t, 2)
		if err := held.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.Status != http.StatusOK {
			t.Fatalf("confirm: %d %s", r.Status, r.Body)
		}
		if r := <-linked; r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeMFABeforeLinking {
			t.Fatalf("link after the factor: %d %s, want 409 %s", r.Status, r.Body, problem.CodeMFABeforeLinking)
		}
		if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, uid); n != 0 {
			t.Errorf("%d identities linked to an account with an active second factor", n)
		}
	})
}
