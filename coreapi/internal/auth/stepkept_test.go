package auth_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

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
