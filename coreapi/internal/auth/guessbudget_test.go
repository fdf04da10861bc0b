package auth_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys/keytest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lockout"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
)

// startLimited is start (cheap hashes) with a client's budgets of
// failures and of checks an hour, and the lockout policy lock.
func startLimited(t testing.TB, failures, checks int, lock auth.Lockout) *env {
	t.Helper()
	ring, dir := keytest.Ring(t)
	e := &env{ring: ring, keyDir: dir}
	h := password.New(cheap, 0)
	e.Env = apitest.Start(t, apitest.Options{Coverage: coverage, Passwords: h, Configure: func(o *httpapi.Options) {
		svc, err := auth.New(auth.Options{Logger: o.Logger, Pool: o.Pool, Keys: ring, Passwords: h,
			Sessions: sessions.New(o.Pool, time.Hour, 10*time.Second), Issuer: issuer, Audience: audience,
			AccessTTL: 15 * time.Minute, MFA: testSealer(t, mfaKeys), Lockout: lock,
			SignInFailuresPerHour: failures, PasswordChecksPerHour: checks})
		if err != nil {
			t.Fatal(err)
		}
		e.svc = svc
		o.Register = append(o.Register, svc.Register)
	}})
	return e
}

// signInFrom sends a password grant for email from the client ip.
func (e *env) signInFrom(t testing.TB, ip, email, password string) apitest.Response {
	t.Helper()
	return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", ClientIP: ip,
		Body: map[string]string{"grant_type": "password", "email": email, "password": password}})
}

// longLock locks a client out of an address after two failures, for an
// hour: a lock that cannot run out while a test waits.
var longLock = auth.Lockout{Threshold: 2, Base: time.Hour, Max: time.Hour, Window: time.Hour,
	AccountThreshold: 100, AccountMax: time.Minute}

// TestRefusedGuessLeavesTheBudgetsRoom: a guess that a later step of the
// sign-in refuses (the address's lockout, the client's budget of guesses)
// never holds the budgets counted before it, not even for a moment. They
// were counted each in a statement of its own and given back after the
// refusal: a sign-in of the same client IP, or a password hashed for it,
// that ran in between found the budget of checks spent and was refused
// 429 although it had room. Here the refused guess is held between its
// first counts and its refusal (the row its refusing step needs is held),
// and the other request is sent meanwhile.
func TestRefusedGuessLeavesTheBudgetsRoom(t *testing.T) {
	t.Parallel()
	const client = "203.0.113.80"
	checksOf := func(e *env) int {
		return e.count(t, `SELECT coalesce(sum(hits), 0)::int FROM rate_limits WHERE key = $1`, ratelimit.PasswordChecksKey(client))
	}

	t.Run("lockout refuses, a sign-in beside it", func(t *testing.T) {
		// Three checks an hour; two failures lock the client out of
		// ghost@ and leave one check.
		e := startLimited(t, 10, 3, longLock)
		e.signup(t, "owner@example.com", "O")
		for range 2 {
			if r := e.signInFrom(t, client, "ghost@example.com", "wrong password"); r.Status != http.StatusBadRequest {
				t.Fatalf("wrong password: %d %s", r.Status, r.Body)
			}
		}
		hold := e.DB.Hold(t, `SELECT 1 FROM login_attempts WHERE email_hash = $1 AND client_ip = '' FOR UPDATE`,
			lockout.EmailKey("ghost@example.com"))
		locked := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response {
			return e.signInFrom(t, client, "ghost@example.com", "wrong password")
		})
		beside := dbtest.AnsweredOrWaitingFor(t, e.DB, 2, func() apitest.Response {
			return e.signInFrom(t, client, "owner@example.com", pw)
		})
		if err := hold.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		if r := beside(); r.Status != http.StatusOK {
			t.Errorf("sign-in beside a guess the lockout refuses, with the last check left: %d %s, want 200", r.Status, r.Body)
		}
		apitest.WantProblem(t, locked(), http.StatusTooManyRequests, "too_many_requests")
		if n := checksOf(e); n != 3 {
			t.Errorf("checks counted: %d, want 3 (two failures and the sign-in)", n)
		}
	})

	t.Run("guess budget refuses, a password hashed beside it", func(t *testing.T) {
		// Two failures an hour and three checks: two failures spend the
		// one and leave one of the other.
		e := startLimited(t, 2, 3, auth.DefaultLockout())
		for _, email := range []string{"a@example.com", "b@example.com"} {
			if r := e.signInFrom(t, client, email, "wrong password"); r.Status != http.StatusBadRequest {
				t.Fatalf("wrong password: %d %s", r.Status, r.Body)
			}
		}
		hold := e.DB.Hold(t, `SELECT 1 FROM rate_limits WHERE key = $1 FOR UPDATE`,
			ratelimit.Key("password-guess", ratelimit.ClientKey(client)))
		spent := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response {
			return e.signInFrom(t, client, "c@example.com", "wrong password")
		})
		type answer struct {
			ok  bool
			err error
		}
		beside := dbtest.AnsweredOrWaitingFor(t, e.DB, 2, func() answer {
			ok, _, err := e.svc.ReserveHash(context.Background(), client)
			return answer{ok, err}
		})
		if err := hold.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		if a := beside(); a.err != nil || !a.ok {
			t.Errorf("password hashed beside a guess its budget refuses, with the last check left = %v, %v; want allowed", a.ok, a.err)
		}
		apitest.WantProblem(t, spent(), http.StatusTooManyRequests, "too_many_requests")
		if n := checksOf(e); n != 3 {
			t.Errorf("checks counted: %d, want 3 (two failures and the hash)", n)
		}
	})
}

// TestConcurrentSignInsWithinTheChecks: correct sign-ins sent at once
// from one client pass its budget of checks no further than its N,
// whichever of them wait on the others' counts.
func TestConcurrentSignInsWithinTheChecks(t *testing.T) {
	t.Parallel()
	const budget, n, client = 4, 12, "203.0.113.81"
	e := startLimited(t, 10, budget, auth.DefaultLockout())
	e.signup(t, "owner@example.com", "O")
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		signedIn, other int
	)
	for range n {
		wg.Go(func() {
			r := e.signInFrom(t, client, "owner@example.com", pw)
			mu.Lock()
			defer mu.Unlock()
			switch r.Status {
			case http.StatusOK:
				signedIn++
			case http.StatusTooManyRequests:
			default:
				other++
				t.Errorf("status %d %s", r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	if signedIn != budget || other != 0 {
		t.Errorf("%d of %d sign-ins passed a budget of %d checks", signedIn, n, budget)
	}
}
