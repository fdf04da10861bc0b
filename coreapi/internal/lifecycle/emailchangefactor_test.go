package lifecycle_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestEmailChangeNeedsTheSecondFactor: the address is where a password
// reset goes, so an account with an active second factor moves it only
// with that factor given in the last 5 minutes, as it deletes itself or
// unlinks a provider. A session signed in with the password alone, just
// now (before the factor was confirmed), is refused with the step-up
// answer (401 insufficient_user_authentication, acr_values="mfa",
// max_age=300): no link is made, mailed, audited or counted. It was
// accepted (a recent sign-in was all it needed), and whoever held such a
// session moved the account, and every later reset link, to a mailbox
// of theirs. After a step-up (grant_type=mfa_otp with the bearer) the
// same session changes it. Its display name needs no step-up, and an
// account without a factor changes its address as before.
func TestEmailChangeNeedsTheSecondFactor(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "two-factor-move@example.com")
	const code = "abcde-fghij"
	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, a.c.Sub)
	x.exec(t, `INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2)`, a.c.Sub, mfa.HashRecovery(a.c.Sub, code))
	const elsewhere = "two-factor-elsewhere@example.net"
	patch := func(id *identity.Identity, body map[string]string) apitest.Response {
		return x.Send(t, id, http.MethodPatch, "/api/v1/users/me", body)
	}
	audits := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.email_change_requested'`)
	// More refusals than the hourly limit of changes: none counts.
	for range 6 {
		r := patch(&a.id, map[string]string{"email": elsewhere})
		wantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
		if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `acr_values="mfa"`) || !strings.Contains(got, "max_age=300") {
			t.Fatalf("WWW-Authenticate = %q, want acr_values=\"mfa\" and max_age=300", got)
		}
		if p := r.Problem(t); !strings.Contains(p.Detail, "second factor") || !strings.Contains(p.Detail, "mfa_otp") {
			t.Fatalf("detail %q, want it to say how to step up", p.Detail)
		}
	}
	// The same with a new display name: all or nothing, so no name either.
	wantProblem(t, patch(&a.id, map[string]string{"email": elsewhere, "display_name": "Moved"}),
		http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = $2`, a.c.Sub, elsewhere); n != 0 {
		t.Fatalf("%d links to the new address after the refusals", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.email_change_requested'`); n != audits {
		t.Fatalf("%d email_change_requested events, want %d", n, audits)
	}
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND display_name = 'Moved'`, a.c.Sub); n != 0 {
		t.Fatalf("the display name changed with a refused email change")
	}
	// A display name alone needs no step-up.
	wantStatus(t, patch(&a.id, map[string]string{"display_name": "Renamed"}), http.StatusOK)

	// The step-up: the same session, with the second factor.
	r := x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": code})
	wantStatus(t, r, http.StatusOK)
	var up tokens
	r.JSON(t, &up)
	c := claimsOf(t, up.AccessToken)
	if c.Sid != a.c.Sid {
		t.Fatalf("the step-up's session is %s, want %s", c.Sid, a.c.Sid)
	}
	stepped := x.identity(t, c)
	stepped.AMR, stepped.AuthTime = c.Amr, c.AuthTime
	wantStatus(t, patch(&stepped, map[string]string{"email": elsewhere}), http.StatusAccepted)
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = $2`, a.c.Sub, elsewhere); n != 1 {
		t.Fatalf("%d links to the new address after the step-up, want 1", n)
	}

	// Without a factor, a recent password sign-in is enough, as before.
	b := x.signup(t, "one-factor-move@example.com")
	wantStatus(t, patch(&b.id, map[string]string{"email": "one-factor-elsewhere@example.net"}), http.StatusAccepted)
}
