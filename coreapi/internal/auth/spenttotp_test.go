package auth_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestTOTPCodeRaceLoserIsNoGuess: two requests sending the same TOTP code
// at once (a double submit, a client's retry) have it accepted once; the
// one that loses the race is refused as a used code, but its code was
// right a moment before: it counts no guess against the account's lockout
// and is not audited as a wrong code. So at a sign-in (two mfa_tokens, or
// one twice), a step-up and the enrolment's confirmation. The test holds
// the account's TOTP row until both requests wait to spend the code's time
// step, so the race happens every run.
func TestTOTPCodeRaceLoserIsNoGuess(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// send sends the code; prepare returns it.
		prepare func(t *testing.T, e *env, email string) (uid string, send func() apitest.Response)
		code    string // the loser's problem code
	}{
		{name: "two sign-ins", code: "invalid_grant", prepare: func(t *testing.T, e *env, email string) (string, func() apitest.Response) {
			tk, secret, _ := e.mfaUser(t, email)
			code := codeAt(t, secret, time.Now().Add(30*time.Second))
			return claims(t, tk.AccessToken)["sub"].(string), func() apitest.Response { return e.mfaOTP(t, e.challenge(t, email), code) }
		}},
		{name: "one sign-in twice", code: "invalid_grant", prepare: func(t *testing.T, e *env, email string) (string, func() apitest.Response) {
			tk, secret, _ := e.mfaUser(t, email)
			code, mt := codeAt(t, secret, time.Now().Add(30*time.Second)), e.challenge(t, email)
			return claims(t, tk.AccessToken)["sub"].(string), func() apitest.Response { return e.mfaOTP(t, mt, code) }
		}},
		{name: "step-up", code: "invalid_grant", prepare: func(t *testing.T, e *env, email string) (string, func() apitest.Response) {
			tk, secret, _ := e.mfaUser(t, email)
			as := e.identityFor(t, tk)
			code := codeAt(t, secret, time.Now().Add(30*time.Second))
			return as.UserID, func() apitest.Response {
				return e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": code})
			}
		}},
		{name: "confirmation", code: "invalid_mfa_code", prepare: func(t *testing.T, e *env, email string) (string, func() apitest.Response) {
			as := e.identityFor(t, e.signup(t, email, "T "+email))
			code := codeAt(t, e.enrol(t, as).Secret, time.Now())
			return as.UserID, func() apitest.Response { return e.confirm(t, as, code) }
		}},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			uid, send := tt.prepare(t, e, "twice@example.com")
			hold := e.DB.Hold(t, `SELECT 1 FROM mfa_totp WHERE user_id = $1 FOR UPDATE`, uid)
			var (
				wg  sync.WaitGroup
				res [2]apitest.Response
			)
			for i := range res {
				wg.Go(func() { res[i] = send() })
			}
			// Both wait to spend the code's time step.
			e.DB.WaitForLockWaitersOn(t, "UPDATE mfa_totp SET last_step", 2)
			if err := hold.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			ok, refused := 0, 0
			for _, r := range res {
				switch r.Status {
				case http.StatusOK:
					ok++
				case http.StatusBadRequest:
					refused++
					if p := r.Problem(t); p.Code != tt.code || !strings.Contains(p.Detail, "already been used") {
						t.Errorf("refusal %q %q, want %s saying the code was used", p.Code, p.Detail, tt.code)
					}
				}
			}
			if ok != 1 || refused != 1 {
				t.Fatalf("answers %d %s and %d %s; want one success and one refusal (400)", res[0].Status, res[0].Body, res[1].Status, res[1].Body)
			}
			if n := e.count(t, `SELECT coalesce(sum(failures), 0) FROM login_attempts`); n != 0 {
				t.Errorf("%d failures counted, want 0: the losing request sent a right code", n)
			}
			if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_code_failed'`); n != 0 {
				t.Errorf("%d user.mfa_code_failed events, want 0", n)
			}
		})
	}
}

// TestUsedTOTPCodeIsRefusedButNoGuess: a TOTP code sent again after it was
// accepted (a client's retry once the first answer was lost), or one of an
// earlier step than the one accepted, is refused (RFC 6238 section 5.2)
// and said to be used, but counts no wrong guess and is not audited as
// one: it was right. A wrong code still counts and is audited.
func TestUsedTOTPCodeIsRefusedButNoGuess(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	const email = "again@example.com"
	_, secret, _, spent := e.mfaUserSpent(t, email)
	next := codeAt(t, secret, time.Now().Add(30*time.Second))
	wantStatus(t, "the next step's code", e.mfaOTP(t, e.challenge(t, email), next), http.StatusOK, "")
	failures := func() int {
		return e.count(t, `SELECT coalesce(sum(failures), 0) FROM login_attempts`)
	}
	failed := func() int {
		return e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_code_failed'`)
	}
	for what, code := range map[string]string{"the same code again": next, "the code of an earlier step": spent} {
		r := e.mfaOTP(t, e.challenge(t, email), code)
		wantStatus(t, what, r, http.StatusBadRequest, "invalid_grant")
		if p := r.Problem(t); !strings.Contains(p.Detail, "already been used") {
			t.Errorf("%s: %q, want it to say the code was used", what, p.Detail)
		}
		if n := failures(); n != 0 {
			t.Errorf("%s: %d failures counted, want 0", what, n)
		}
		if n := failed(); n != 0 {
			t.Errorf("%s: %d user.mfa_code_failed events, want 0", what, n)
		}
	}
	wrong := "000000"
	if wrong == next || wrong == spent {
		wrong = "999999"
	}
	r := e.mfaOTP(t, e.challenge(t, email), wrong)
	wantStatus(t, "a wrong code", r, http.StatusBadRequest, "invalid_grant")
	if p := r.Problem(t); strings.Contains(p.Detail, "already been used") {
		t.Errorf("a wrong code: %q, said to be used", p.Detail)
	}
	if n := failures(); n != 2 { // the account's pair and its key-wide count
		t.Errorf("after a wrong code: %d failures counted, want 2 (one per count)", n)
	}
	if n := failed(); n != 1 {
		t.Errorf("after a wrong code: %d user.mfa_code_failed events, want 1", n)
	}
}
