package oauth_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestLinkCallbackNeedsARecentSignIn: the start of a link needs a sign-in
// within the last 5 minutes, and its state lives 10: the callback checks
// again, under the account's row lock, that the starting session's
// sign-in is still that recent (with the second factor, for an account
// that has one by then), or links nothing (400 expired_state). A link
// finished 6 minutes after the sign-in, or after a factor was confirmed
// that the sign-in did not give, is refused; one whose session signed in
// again meanwhile (a step-up) finishes.
func TestLinkCallbackNeedsARecentSignIn(t *testing.T) {
	x := start(t)
	me := x.signedInOwner(t, "late-link@example.com")
	x.provide("late-link-subject", "", false)
	notices := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`)

	st := x.startLink(t, me)
	back := x.approve(t, st)
	// The provider's answer comes 6 minutes after the sign-in.
	x.exec(t, `UPDATE sessions SET auth_time = now() - interval '6 minutes' WHERE id = $1`, me.SessionID)
	apitest.WantProblem(t, x.callback(t, back, st.cookie), http.StatusBadRequest, problem.CodeExpiredState)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, me.UserID); n != 0 {
		t.Fatalf("%d identities linked 6 minutes after the sign-in", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.identity_linked' AND target_id = $1`, me.UserID); n != 0 {
		t.Errorf("%d link audit events for a refused link", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`); n != notices {
		t.Errorf("%d link notices for a refused link", n-notices)
	}

	// Started within the bound; a second factor confirmed before the
	// provider's answer, which the session's sign-in did not give.
	x.exec(t, `UPDATE sessions SET auth_time = now() WHERE id = $1`, me.SessionID)
	st = x.startLink(t, me)
	back = x.approve(t, st)
	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, me.UserID)
	apitest.WantProblem(t, x.callback(t, back, st.cookie), http.StatusBadRequest, problem.CodeExpiredState)
	x.exec(t, `DELETE FROM mfa_totp WHERE user_id = $1`, me.UserID)

	// Started 4 minutes after the sign-in; the session signed in again
	// (a step-up) before the provider's answer, 6 minutes after the first.
	x.exec(t, `UPDATE sessions SET auth_time = now() - interval '4 minutes' WHERE id = $1`, me.SessionID)
	st = x.startLink(t, me)
	back = x.approve(t, st)
	x.exec(t, `UPDATE sessions SET auth_time = now() - interval '1 minute' WHERE id = $1`, me.SessionID)
	apitest.WantStatus(t, x.callback(t, back, st.cookie), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1 AND subject = 'late-link-subject'`, me.UserID); n != 1 {
		t.Errorf("%d identities linked within the bound, want 1", n)
	}
}
