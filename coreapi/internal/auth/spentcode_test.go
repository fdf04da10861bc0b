package auth_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestRecoveryCodeRaceLoserIsNoGuess: two requests sending the same
// recovery code at once (a double submit, two tabs) spend it once; the
// one that loses the race is refused, but its code was right a moment
// before: it counts no guess against the account's lockout and is not
// audited as a wrong code. The test holds the account's recovery codes
// until both requests wait for them, so the race happens every run.
func TestRecoveryCodeRaceLoserIsNoGuess(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// wait is what the second request waits at: the codes when each
		// request has a sign-in of its own, the challenge when both
		// finish one.
		wait      string
		waiters   int
		oneSignIn bool
	}{
		{name: "two sign-ins", wait: "UPDATE mfa_recovery_codes", waiters: 2},
		{name: "one sign-in twice", wait: "UPDATE mfa_challenges SET used_at", waiters: 1, oneSignIn: true},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			const email = "spent@example.com"
			tk, _, codes := e.mfaUser(t, email)
			uid := claims(t, tk.AccessToken)["sub"].(string)
			tokens := []string{e.challenge(t, email), e.challenge(t, email)}
			if tt.oneSignIn {
				tokens[1] = tokens[0]
			}
			codesHold := e.DB.Hold(t, `SELECT 1 FROM mfa_recovery_codes WHERE user_id = $1 FOR UPDATE`, uid)
			// Both requests past their challenge's claim of a try before
			// either finishes it.
			countHold := e.DB.Hold(t, `SELECT 1 FROM login_attempts FOR UPDATE`)
			var (
				wg  sync.WaitGroup
				res [2]apitest.Response
			)
			for i := range res {
				wg.Go(func() { res[i] = e.mfaOTP(t, tokens[i], codes[0]) })
			}
			e.DB.WaitForLockWaitersOn(t, "login_reserve", 2) // both count their try
			if err := countHold.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			// Both wait for the recovery code.
			e.DB.WaitForLockWaitersOn(t, "UPDATE mfa_recovery_codes", 1)
			e.DB.WaitForLockWaitersOn(t, tt.wait, tt.waiters)
			if err := codesHold.Commit(ctx); err != nil {
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
					if p := r.Problem(t); p.Code != "invalid_grant" {
						t.Errorf("refusal code %q, want invalid_grant", p.Code)
					}
				}
			}
			if ok != 1 || refused != 1 {
				t.Fatalf("answers %d %s and %d %s; want one sign-in and one refusal (400)", res[0].Status, res[0].Body, res[1].Status, res[1].Body)
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
