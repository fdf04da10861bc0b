package oauth_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestLinkConfirmationNeedsARecentSignIn: the start of a link needs a
// sign-in within the last 5 minutes, and its state lives 10: the
// confirmation checks again, under the account's row lock, that the
// starting session's sign-in is still that recent (with the second
// factor, for an account that has one by then), or links nothing (401
// insufficient_user_authentication, as the start answers). A link
// confirmed 6 minutes after the sign-in, or after a factor was confirmed
// that the sign-in did not give, is refused; the refusal leaves the code,
// so the same session confirms it after signing in again (a step-up)
// within the code's minute.
func TestLinkConfirmationNeedsARecentSignIn(t *testing.T) {
	x := start(t)
	me := x.signedInOwner(t, "late-link@example.com")
	x.provide("late-link-subject", "", false)
	notices := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`)

	st := x.startLink(t, me)
	code := linkCodeOf(t, x.callback(t, x.approve(t, st), st.cookie))
	body := map[string]string{"link_code": code}
	// The confirmation comes 6 minutes after the sign-in.
	x.exec(t, `UPDATE sessions SET auth_time = now() - interval '6 minutes' WHERE id = $1`, me.SessionID)
	r := x.confirmLink(t, me, body)
	apitest.WantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, "max_age=300") {
		t.Errorf("WWW-Authenticate = %q, want max_age=300", got)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, me.UserID); n != 0 {
		t.Fatalf("%d identities linked 6 minutes after the sign-in", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.identity_linked' AND target_id = $1`, me.UserID); n != 0 {
		t.Errorf("%d link audit events for a refused link", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`); n != notices {
		t.Errorf("%d link notices for a refused link", n-notices)
	}

	// A second factor confirmed before the confirmation, which the
	// session's sign-in did not give.
	x.exec(t, `UPDATE sessions SET auth_time = now() WHERE id = $1`, me.SessionID)
	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, me.UserID)
	r = x.confirmLink(t, me, body)
	apitest.WantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `acr_values="mfa"`) {
		t.Errorf("WWW-Authenticate = %q, want acr_values=\"mfa\"", got)
	}
	x.exec(t, `DELETE FROM mfa_totp WHERE user_id = $1`, me.UserID)

	// Signed in again (a step-up) within the code's minute: the same code
	// links.
	apitest.WantStatus(t, x.confirmLink(t, me, body), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1 AND subject = 'late-link-subject'`, me.UserID); n != 1 {
		t.Errorf("%d identities linked within the bound, want 1", n)
	}
}
