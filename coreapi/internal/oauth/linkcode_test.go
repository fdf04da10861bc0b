package oauth_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// linkCodeOf reads the link code of a link's callback without return_to.
func linkCodeOf(t *testing.T, r apitest.Response) string {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("link callback: %d %s", r.Status, r.Body)
	}
	var b struct {
		LinkCode string `json:"link_code"`
	}
	r.JSON(t, &b)
	if len(b.LinkCode) != 43 {
		t.Fatalf("link callback body %s: want {link_code} with a 256-bit code", r.Body)
	}
	return b.LinkCode
}

// confirmLink posts a link code (nil body: none) as the bearer as.
func (x *env) confirmLink(t *testing.T, as *identity.Identity, body any) apitest.Response {
	t.Helper()
	return x.Send(t, as, http.MethodPost, linkPath+"/confirm", body)
}

// finishLink sends the browser back from the provider to the callback
// with cookie and confirms the link code it gets as the bearer as: the
// confirmation's answer.
func (x *env) finishLink(t *testing.T, as *identity.Identity, back string, cookie *http.Cookie) apitest.Response {
	t.Helper()
	code := linkCodeOf(t, x.callback(t, back, cookie))
	return x.confirmLink(t, as, map[string]string{"link_code": code})
}

// signInAgain opens another session of the account of email (password
// grant) and returns its identity.
func (x *env) signInAgain(t *testing.T, email string) *identity.Identity {
	t.Helper()
	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "password", "email": email, "password": "a long password"})
	if r.Status != http.StatusOK {
		t.Fatalf("password grant: %d %s", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	return x.identityFor(t, tk)
}

// TestLinkFinishesOnlyInTheStartersSession: the one-time URL of a link's
// start does not tell whose browser opens it. Its starter sends it to
// someone else, whose browser opens it within the minute and whose
// provider signs them in without asking: the callback links nothing (it
// would have linked their provider account to the starter's account, to
// which they would then sign in through the provider: a login CSRF). It
// hands a one-time link code to the browser that is there, which only
// the session that started the link can confirm: their bearer, or
// another session of the starter's, is refused, and the starter, who
// never sees the code, confirms nothing without it.
func TestLinkFinishesOnlyInTheStartersSession(t *testing.T) {
	x := start(t)
	starter := x.signedInOwner(t, "csrf-starter@example.com")
	victim := x.signedInOwner(t, "csrf-victim@example.com")
	otherSession := x.signInAgain(t, "csrf-starter@example.com")
	if otherSession.SessionID == starter.SessionID {
		t.Fatal("the second sign-in reused the starter's session")
	}

	// The starter's start; the victim's browser opens its URL (x.openLink
	// is any browser: it holds no cookie of the starter's) and the
	// provider signs the victim in.
	st := x.openLink(t, x.Send(t, starter, http.MethodPost, linkPath, nil))
	x.provide("csrf-victim-subject", "csrf-victim@example.com", true)
	cb := x.callback(t, x.approve(t, st), st.cookie)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, starter.UserID); n != 0 {
		t.Fatalf("the callback in another browser linked %d identities of its provider account to the starter's account", n)
	}
	code := linkCodeOf(t, cb)
	if n := x.count(t, `SELECT count(*) FROM oauth_states s WHERE strpos(s::text, $1) > 0`, code); n != 0 {
		t.Errorf("a state row holds the link code as it is")
	}

	// The victim's app, signed in as the victim, confirms the code it got:
	// not the starting session's.
	for _, as := range []*identity.Identity{victim, otherSession} {
		apitest.WantProblem(t, x.confirmLink(t, as, map[string]string{"link_code": code}), http.StatusBadRequest, problem.CodeInvalidState)
	}
	// The starter, without the code.
	for _, body := range []any{nil, map[string]string{}, map[string]string{"link_code": strings.Repeat("A", 43)}} {
		r := x.confirmLink(t, starter, body)
		if r.Status != http.StatusBadRequest {
			t.Errorf("confirm without the code (%v): %d %s, want 400", body, r.Status, r.Body)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Fatalf("%d identities linked without the starter's session and code", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.identity_linked'`); n != 0 {
		t.Errorf("%d identity_linked audit events, want none", n)
	}
	// The victim's sign-in through the provider does not land in the
	// starter's account.
	tk := x.finish(t, x.begin(t, ""))
	if got := sub(t, tk.AccessToken); got == starter.UserID {
		t.Fatalf("the victim's provider account signs in to the starter's account")
	}
}

// TestLinkCodeOnceWithinAMinute: a link code is stored only as a hash,
// confirms once, and only within 60 s of the callback (400 expired_state
// after, nothing linked).
func TestLinkCodeOnceWithinAMinute(t *testing.T) {
	x := start(t)
	me := x.signedInOwner(t, "code-once@example.com")
	x.provide("code-once-subject", "", false)

	st := x.startLink(t, me)
	code := linkCodeOf(t, x.callback(t, x.approve(t, st), st.cookie))
	if n := x.count(t, `SELECT count(*) FROM oauth_states WHERE link_user_id = $1 AND expires_at <= now() + interval '60 seconds'`, me.UserID); n != 1 {
		t.Errorf("%d link codes of the owner living at most 60 s, want 1", n)
	}
	body := map[string]string{"link_code": code}
	apitest.WantStatus(t, x.confirmLink(t, me, body), http.StatusOK)
	apitest.WantProblem(t, x.confirmLink(t, me, body), http.StatusBadRequest, problem.CodeInvalidState)
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`); n != 1 {
		t.Errorf("%d link notices, want 1", n)
	}

	x.exec(t, `DELETE FROM identities WHERE user_id = $1`, me.UserID)
	st = x.startLink(t, me)
	code = linkCodeOf(t, x.callback(t, x.approve(t, st), st.cookie))
	x.exec(t, `UPDATE oauth_states SET expires_at = now() - interval '1 second' WHERE link_user_id = $1`, me.UserID)
	apitest.WantProblem(t, x.confirmLink(t, me, map[string]string{"link_code": code}), http.StatusBadRequest, problem.CodeExpiredState)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, me.UserID); n != 0 {
		t.Errorf("%d identities linked by an expired code", n)
	}
}
