package auth_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestTOTPStepAcceptedOnce: a TOTP code sent several times at once is
// accepted once, whatever sends it: completions of one mfa_token, or a
// sign-in's completion beside a step-up of another session. The others
// are refused (400 invalid_grant).
func TestTOTPStepAcceptedOnce(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	for _, tc := range []struct {
		name, email string
		stepUp      bool
	}{
		{"one mfa_token four times", "step-once@example.com", false},
		{"a sign-in beside a step-up", "step-once-up@example.com", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			email := tc.email
			tk, secret, _ := e.mfaUser(t, email)
			as := e.identityFor(t, tk)
			code := codeAt(t, secret, time.Now().Add(30*time.Second))
			mt := e.challenge(t, email)
			sends := []func() apitest.Response{}
			for range 4 {
				sends = append(sends, func() apitest.Response { return e.mfaOTP(t, mt, code) })
			}
			if tc.stepUp {
				sends = append(sends[:1], func() apitest.Response {
					return e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": code})
				})
			}
			answers := make([]apitest.Response, len(sends))
			var wg sync.WaitGroup
			for i, send := range sends {
				wg.Go(func() { answers[i] = send() })
			}
			wg.Wait()
			accepted := 0
			for i, r := range answers {
				switch r.Status {
				case http.StatusOK:
					accepted++
				case http.StatusBadRequest:
					wantStatus(t, "a code accepted already", r, http.StatusBadRequest, "invalid_grant")
				default:
					t.Errorf("answer %d: %d %s; want 200 or 400 invalid_grant", i, r.Status, r.Body)
				}
			}
			if accepted != 1 {
				t.Errorf("the code was accepted %d times, want once", accepted)
			}
		})
	}
}

// TestFailedStepUpKeepsTheStep: a code whose step-up fails once the code
// was matched (its session ended meanwhile) was accepted by nothing, and
// the same code still signs the user in. The step-up spent the code's
// time step before the session was found ended, and the sign-in that
// followed, with the code the authenticator still showed, was refused
// (400 invalid_grant, "this code has already been used") until the next
// step. The step-up is held on its session's row, the code matched,
// while the test ends the session.
func TestFailedStepUpKeepsTheStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	const email = "step-kept@example.com"
	tk, secret, _ := e.mfaUser(t, email)
	as := e.identityFor(t, tk)
	code := codeAt(t, secret, time.Now().Add(30*time.Second))
	hold := e.DB.Hold(t, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, as.SessionID)
	stepUp := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response {
		return e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": code})
	})
	if _, err := hold.Exec(ctx, `UPDATE sessions SET revoked_at = now() WHERE id = $1`, as.SessionID); err != nil {
		t.Fatal(err)
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "step-up of a session ended meanwhile", stepUp(), http.StatusUnauthorized, "invalid_token")
	wantStatus(t, "sign-in with the same code", e.mfaOTP(t, e.challenge(t, email), code), http.StatusOK, "")
	wantStatus(t, "the code again", e.mfaOTP(t, e.challenge(t, email), code), http.StatusBadRequest, "invalid_grant")
}

// TestFailedSecondStepKeepsTheStep: a sign-in's second step that fails
// once its code was matched (the account signed out everywhere meanwhile:
// its token version moved on) gives the code's time step back, as a
// step-up does (TestFailedStepUpKeepsTheStep): the next sign-in with the
// same code goes through, and the code is accepted once. The second step
// is held on the account's row, which its session's insert waits for
// (the foreign key), the code matched and the challenge claimed. Its
// refusal is 400 invalid_grant, as Issue refuses a session signed out
// before its tokens: the session, found stamped with an older version
// than the account's, answered 500 (sessions.ErrNotFound).
func TestFailedSecondStepKeepsTheStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	const email = "second-step-kept@example.com"
	tk, secret, _ := e.mfaUser(t, email)
	as := e.identityFor(t, tk)
	code := codeAt(t, secret, time.Now().Add(30*time.Second))
	mt := e.challenge(t, email)
	hold := e.DB.Hold(t, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, as.UserID)
	second := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response { return e.mfaOTP(t, mt, code) })
	if _, err := hold.Exec(ctx, `UPDATE users SET token_version = token_version + 1 WHERE id = $1`, as.UserID); err != nil {
		t.Fatal(err)
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "second step of an account signed out meanwhile", second(), http.StatusBadRequest, "invalid_grant")
	wantStatus(t, "sign-in with the same code", e.mfaOTP(t, e.challenge(t, email), code), http.StatusOK, "")
	wantStatus(t, "the code again", e.mfaOTP(t, e.challenge(t, email), code), http.StatusBadRequest, "invalid_grant")
}

// TestFailedRecoveryCodeUseKeepsTheCode: a recovery code whose sign-in
// or step-up fails once the code was spent was accepted by nothing, and
// stays the owner's: the next sign-in with it goes through, and it is
// then accepted once. The code was spent in a transaction of its own,
// before the session's, and a session's failure left it spent for good:
// one of the account's few recovery codes lost, refused (400
// invalid_grant, "this recovery code has already been used") when its
// owner tried it again. The sign-in is held on the account's row (its
// session's insert waits there) while the account is signed out
// everywhere, the step-up on its session's row while the session ends,
// each after its code was spent.
func TestFailedRecoveryCodeUseKeepsTheCode(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	for _, tc := range []struct {
		name, email string
		stepUp      bool
	}{
		{"a sign-in's second step", "recovery-kept@example.com", false},
		{"a step-up", "recovery-kept-up@example.com", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			tk, _, codes := e.mfaUser(t, tc.email)
			as := e.identityFor(t, tk)
			code := codes[0]
			var (
				hold pgx.Tx
				send func() apitest.Response
				end  string
				args []any
			)
			if tc.stepUp {
				hold = e.DB.Hold(t, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, as.SessionID)
				send = func() apitest.Response {
					return e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": code})
				}
				end, args = `UPDATE sessions SET revoked_at = now() WHERE id = $1`, []any{as.SessionID}
			} else {
				mt := e.challenge(t, tc.email)
				hold = e.DB.Hold(t, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, as.UserID)
				send = func() apitest.Response { return e.mfaOTP(t, mt, code) }
				end, args = `UPDATE users SET token_version = token_version + 1 WHERE id = $1`, []any{as.UserID}
			}
			failed := dbtest.AnsweredOrWaiting(t, e.DB, send)
			if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NOT NULL`, as.UserID); n != 1 {
				t.Fatalf("%d recovery codes spent while the request waits, want 1: the test holds it after the code", n)
			}
			if _, err := hold.Exec(ctx, end, args...); err != nil {
				t.Fatal(err)
			}
			if err := hold.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if r := failed(); r.Status == http.StatusOK {
				t.Fatalf("%s ended meanwhile: %d %s; want a refusal", tc.name, r.Status, r.Body)
			}
			wantStatus(t, "sign-in with the same recovery code", e.mfaOTP(t, e.challenge(t, tc.email), code), http.StatusOK, "")
			wantStatus(t, "the recovery code again", e.mfaOTP(t, e.challenge(t, tc.email), code), http.StatusBadRequest, "invalid_grant")
		})
	}
}

// TestFailedConfirmationKeepsTheStep: a TOTP enrolment's confirmation
// that fails once its code was matched (the session ended meanwhile)
// activates nothing and gives the code's time step back: the owner,
// signed in again, confirms with the same code, which the authenticator
// still shows, and it is then accepted once. The step was spent before
// the confirmation's transaction, and the retry was refused (400
// invalid_mfa_code, "this code has already been used") until the next
// step. The confirmation is held on its session's row, the code matched,
// while the test ends the session.
func TestFailedConfirmationKeepsTheStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	const email = "confirm-kept@example.com"
	tk := e.signup(t, email, "T "+email)
	as := e.identityFor(t, tk)
	en := e.enrol(t, as)
	code := codeAt(t, en.Secret, time.Now().Add(30*time.Second))
	hold := e.DB.Hold(t, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, as.SessionID)
	confirm := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response { return e.confirm(t, as, code) })
	if _, err := hold.Exec(ctx, `UPDATE sessions SET revoked_at = now() WHERE id = $1`, as.SessionID); err != nil {
		t.Fatal(err)
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "confirmation from a session ended meanwhile", confirm(), http.StatusUnauthorized, "invalid_token")
	r := e.token(t, map[string]string{"grant_type": "password", "email": email, "password": pw})
	wantStatus(t, "sign-in again", r, http.StatusOK, "")
	var again tokens
	r.JSON(t, &again)
	againAs := e.identityFor(t, again)
	wantStatus(t, "confirmation with the same code", e.confirm(t, againAs, code), http.StatusOK, "")
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'active'`, as.UserID); n != 1 {
		t.Fatalf("%d active factors, want 1", n)
	}
	wantStatus(t, "the code again, to sign in", e.mfaOTP(t, e.challenge(t, email), code), http.StatusBadRequest, "invalid_grant")
}
