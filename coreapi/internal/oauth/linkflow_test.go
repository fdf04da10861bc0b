package oauth_test

import (
	"crypto/sha256"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

const linkPath = "/api/v1/users/me/identities/fake"

// startLink asks, as the owner's bearer, to link the fake provider to the
// account, opens the one-time URL it answers as the owner's browser does
// and returns the flow as that browser then holds it: the provider's
// authorization URL and the binding cookie.
func (x *env) startLink(t *testing.T, as *identity.Identity) started {
	t.Helper()
	return x.openLink(t, x.Send(t, as, http.MethodPost, linkPath, nil))
}

// openLink opens, as a browser's navigation, the one-time URL of a link's
// start r.
func (x *env) openLink(t *testing.T, r apitest.Response) started {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("start link: %d %s", r.Status, r.Body)
	}
	if got := r.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	var b struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	r.JSON(t, &b)
	u, err := url.Parse(b.AuthorizeURL)
	if err != nil || !strings.HasPrefix(b.AuthorizeURL, "http://localhost:8080/api/v1/auth/oauth/fake/link?ticket=") {
		t.Fatalf("authorize_url = %q, want the link URL beside the callback", b.AuthorizeURL)
	}
	nav := x.Do(t, apitest.Request{Method: http.MethodGet, Path: u.RequestURI()})
	if nav.Status != http.StatusFound {
		t.Fatalf("open link: %d %s", nav.Status, nav.Body)
	}
	loc, err := url.Parse(nav.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), x.idp.IssuerURL()+"/authorize?") {
		t.Fatalf("Location = %q, want the provider's authorization endpoint", nav.Header.Get("Location"))
	}
	st := started{loc: loc, state: loc.Query().Get("state")}
	for _, c := range (&http.Response{Header: nav.Header}).Cookies() {
		if c.Name == oauth.CookieName(st.state) {
			st.cookie = c
		}
	}
	if st.cookie == nil {
		t.Fatalf("open link set no binding cookie %s: %v", oauth.CookieName(st.state), nav.Header.Values("Set-Cookie"))
	}
	return st
}

// signedInOwner signs up email with a password, proves its address and
// returns the identity of the signup's session (signed in now).
func (x *env) signedInOwner(t *testing.T, email string) *identity.Identity {
	t.Helper()
	st := x.signup(t, email)
	x.exec(t, `UPDATE users SET email_verified_at = now() WHERE id = $1`, sub(t, st.AccessToken))
	return x.identityFor(t, st)
}

func (x *env) provide(subject, email string, verified bool) {
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email, x.idp.Verified = subject, email, verified
	x.idp.Mu.Unlock()
}

// TestLinkIdentityExplicitly: a signed-in owner links a provider to the
// account (POST /users/me/identities/{provider}, the provider's callback,
// then POST /users/me/identities/{provider}/confirm with the link code
// the callback handed over), whatever address the provider gives
// (unverified, another account's or none): the owner proved both. The
// callback links nothing; the confirmation links, clears the provider's
// unlink (which blocks only links by address), is audited and mailed to
// the owner; no session is opened and no hand-over code given.
// A sign-in through the provider then lands in the account.
func TestLinkIdentityExplicitly(t *testing.T) {
	x := start(t)
	me := x.signedInOwner(t, "linker@example.com")
	other := x.signedInOwner(t, "someone@example.com")
	x.exec(t, `INSERT INTO identity_unlinks (user_id, provider) VALUES ($1, 'fake')`, me.UserID)
	// The provider's account has another account's verified address: a
	// link by address would go there.
	x.provide("explicit-subject", "someone@example.com", false)
	sessions := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, me.UserID)

	st := x.startLink(t, me)
	cb := x.callback(t, x.approve(t, st), st.cookie)
	if strings.Contains(string(cb.Body), `"code"`) {
		t.Errorf("a link's callback handed over a code: %s", cb.Body)
	}
	code := linkCodeOf(t, cb)
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Fatalf("the callback linked %d identities before the confirmation", n)
	}
	r := x.confirmLink(t, me, map[string]string{"link_code": code})
	apitest.WantStatus(t, r, http.StatusOK)
	var got struct {
		Provider string  `json:"provider"`
		Email    *string `json:"email"`
		LinkedAt string  `json:"linked_at"`
	}
	r.JSON(t, &got)
	if got.Provider != "fake" || got.Email == nil || *got.Email != "someone@example.com" || got.LinkedAt == "" {
		t.Errorf("confirmation body = %s, want the linked identity", r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1 AND provider = 'fake' AND subject = 'explicit-subject'`, me.UserID); n != 1 {
		t.Fatalf("%d identities of the subject linked to the owner, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, other.UserID); n != 0 {
		t.Errorf("%d identities linked to the account of the provider's address", n)
	}
	if n := x.count(t, `SELECT count(*) FROM identity_unlinks WHERE user_id = $1`, me.UserID); n != 0 {
		t.Errorf("the provider's unlink stayed after the owner linked it")
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.identity_linked' AND target_id = $1
		AND actor_user_id = $1::uuid AND data->>'provider' = 'fake' AND data->>'subject' = 'explicit-subject'`, me.UserID); n != 1 {
		t.Errorf("%d identity_linked audit events, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked' AND to_address = 'linker@example.com'
		AND data->>'provider' = 'fake'`); n != 1 {
		t.Errorf("%d link notices to the owner, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked' AND to_address = 'someone@example.com'`); n != 0 {
		t.Errorf("%d link notices to the provider's address", n)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, me.UserID); n != sessions {
		t.Errorf("a link opened %d sessions", n-sessions)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_handovers`); n != 0 {
		t.Errorf("a link made %d hand-over codes", n)
	}

	// The provider now signs in to the owner's account.
	tk := x.finish(t, x.begin(t, ""))
	if got := sub(t, tk.AccessToken); got != me.UserID {
		t.Errorf("sign-in through the linked provider landed in %s, want the owner's %s", got, me.UserID)
	}

	// Linked again to the same subject: nothing more to link or tell.
	st = x.startLink(t, me)
	apitest.WantStatus(t, x.finishLink(t, me, x.approve(t, st), st.cookie), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`); n != 1 {
		t.Errorf("%d link notices after linking the same subject again, want 1", n)
	}
}

// TestLinkStateBoundToItsStarter: a link's state links only the account
// that started it, only in the browser that started it, and a sign-in's
// state never links: the callback reads the account from the state's
// row, never from the request. Another browser (without the cookie, or
// with its own) gets nothing linked. A sign-in started meanwhile in the
// owner's browser signs in and links nothing to the owner. The link's row
// does not hold the hash of its cookie as a sign-in's does, so a
// release that knows no links finds no state and signs nobody in.
func TestLinkStateBoundToItsStarter(t *testing.T) {
	x := start(t)
	me := x.signedInOwner(t, "starter@example.com")
	x.provide("bound-subject", "", false)
	st := x.startLink(t, me)
	sum := sha256.Sum256([]byte(st.cookie.Value))
	if n := x.count(t, `SELECT count(*) FROM oauth_states WHERE browser_hash = $1`, sum[:]); n != 0 {
		t.Errorf("the link's state holds its cookie's hash as a sign-in's does")
	}
	back := x.approve(t, st)
	apitest.WantProblem(t, x.callback(t, back, nil), http.StatusBadRequest, problem.CodeStateNotBound)
	// Another browser's own cookie for a sign-in it started.
	theirs := x.begin(t, "")
	forged := &http.Cookie{Name: st.cookie.Name, Value: theirs.cookie.Value}
	apitest.WantProblem(t, x.callback(t, back, forged), http.StatusBadRequest, problem.CodeInvalidState)
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Fatalf("%d identities linked from another browser", n)
	}

	// A sign-in in the owner's browser while the link is pending: a new
	// account of the provider's subject, nothing linked to the owner.
	x.provide("signin-subject", "fresh@example.com", true)
	tk := x.finish(t, x.begin(t, ""))
	if got := sub(t, tk.AccessToken); got == me.UserID {
		t.Fatalf("a sign-in's state landed in the account of a pending link")
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, me.UserID); n != 0 {
		t.Fatalf("a sign-in linked %d identities to the account of a pending link", n)
	}

	// The owner's browser finishes the link: the owner's account.
	x.provide("bound-subject", "", false)
	apitest.WantStatus(t, x.finishLink(t, me, back, st.cookie), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1 AND subject = 'bound-subject' AND email IS NULL`, me.UserID); n != 1 {
		t.Errorf("%d identities linked to the starter, want 1", n)
	}
}

// TestLinkIdentityInUse: a provider subject linked to another account is
// not moved (409 identity_in_use), nor is a second subject of the
// provider added to an account linked to one already (409
// account_linked_to_other_subject): nothing linked, audited or mailed,
// and the provider's unlink stays.
func TestLinkIdentityInUse(t *testing.T) {
	x := start(t)
	x.provide("taken-subject", "holder@example.com", true)
	holder := x.linkedAccount(t, "holder@example.com")
	me := x.signedInOwner(t, "wants@example.com")
	x.exec(t, `INSERT INTO identity_unlinks (user_id, provider) VALUES ($1, 'fake')`, me.UserID)
	notices := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`)

	st := x.startLink(t, me)
	apitest.WantProblem(t, x.finishLink(t, me, x.approve(t, st), st.cookie), http.StatusConflict, problem.CodeIdentityInUse)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, me.UserID); n != 0 {
		t.Errorf("%d identities linked to the second account", n)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1 AND subject = 'taken-subject'`, holder.UserID); n != 1 {
		t.Errorf("the holder's identity moved")
	}
	if n := x.count(t, `SELECT count(*) FROM identity_unlinks WHERE user_id = $1`, me.UserID); n != 1 {
		t.Errorf("a refused link cleared the unlink")
	}

	// The holder links another subject of the same provider.
	x.provide("second-subject", "holder@example.com", true)
	st = x.startLink(t, holder)
	apitest.WantProblem(t, x.finishLink(t, holder, x.approve(t, st), st.cookie), http.StatusConflict, problem.CodeOtherSubjectLinked)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, holder.UserID); n != 1 {
		t.Errorf("%d identities of the holder, want its 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`); n != notices {
		t.Errorf("%d link notices for refused links", n-notices)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.identity_linked' AND target_id = $1`, me.UserID); n != 0 {
		t.Errorf("%d link audit events for a refused link", n)
	}
}

// TestLinkGuards: starting a link needs what an unlink needs: a sign-in
// within the last 5 minutes (401 insufficient_user_authentication,
// max_age=300), with the second factor for an account that has one
// (acr_values="mfa"), of a live session still bound to the token's tenant
// (401 invalid_token), by an active account (403 user_disabled); API keys and
// service accounts are refused (403 principal_not_allowed), an unknown
// provider is 404 unknown_provider. None stores a state. A session
// ended between the start and the confirmation links nothing (401
// invalid_token), nor
// does one moved to another tenant meanwhile (400
// invalid_state: the code is of a link started in the first).
func TestLinkGuards(t *testing.T) {
	x := start(t)
	me := x.signedInOwner(t, "guard-link@example.com")
	post := func(as *identity.Identity) apitest.Response {
		return x.Send(t, as, http.MethodPost, linkPath, nil)
	}
	for _, p := range []string{identity.PrincipalAPIKey, identity.PrincipalService} {
		key := *me
		key.Principal = p
		apitest.WantProblem(t, post(&key), http.StatusForbidden, problem.CodePrincipalNotAllowed)
	}
	apitest.WantProblem(t, x.Send(t, me, http.MethodPost, "/api/v1/users/me/identities/nosuch", nil), http.StatusNotFound, problem.CodeUnknownProvider)

	x.exec(t, `UPDATE sessions SET auth_time = now() - interval '10 minutes' WHERE id = $1`, me.SessionID)
	r := post(me)
	apitest.WantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, "max_age=300") || strings.Contains(got, "acr_values") {
		t.Errorf("WWW-Authenticate = %q, want max_age=300 without acr_values", got)
	}
	x.exec(t, `UPDATE sessions SET auth_time = now() WHERE id = $1`, me.SessionID)

	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, me.UserID)
	r = post(me)
	apitest.WantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `acr_values="mfa"`) {
		t.Errorf("WWW-Authenticate = %q, want acr_values=\"mfa\"", got)
	}
	x.exec(t, `DELETE FROM mfa_totp WHERE user_id = $1`, me.UserID)

	x.exec(t, `UPDATE users SET status = 'disabled' WHERE id = $1`, me.UserID)
	apitest.WantProblem(t, post(me), http.StatusForbidden, problem.CodeUserDisabled)
	x.exec(t, `UPDATE users SET status = 'active' WHERE id = $1`, me.UserID)

	moved := *me
	second := x.SeedTenant(t, "Second")
	x.SeedMember(t, second.ID, me.UserID, "member")
	x.exec(t, `UPDATE sessions SET tenant_id = $2 WHERE id = $1`, me.SessionID, second.ID)
	apitest.WantProblem(t, post(&moved), http.StatusUnauthorized, problem.CodeInvalidToken)
	// A signed-out session has ended, however recent its sign-in was.
	x.exec(t, `UPDATE sessions SET tenant_id = $2, revoked_at = now() WHERE id = $1`, me.SessionID, me.TenantID)
	apitest.WantProblem(t, post(me), http.StatusUnauthorized, problem.CodeInvalidToken)
	x.exec(t, `UPDATE sessions SET tenant_id = $2, revoked_at = NULL WHERE id = $1`, me.SessionID, second.ID)
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Fatalf("%d states stored by refused starts", n)
	}

	// Started, then the session ends before the link is confirmed.
	moved.TenantID = second.ID
	x.provide("late-subject", "", false)
	st := x.startLink(t, &moved)
	code := linkCodeOf(t, x.callback(t, x.approve(t, st), st.cookie))
	x.exec(t, `UPDATE sessions SET revoked_at = now() WHERE id = $1`, me.SessionID)
	// 401 invalid_token: the session has ended, which its sign-in's
	// freshness does not mend.
	apitest.WantProblem(t, x.confirmLink(t, &moved, map[string]string{"link_code": code}), http.StatusUnauthorized, problem.CodeInvalidToken)
	// Started in one tenant, confirmed by the session moved to another.
	x.exec(t, `UPDATE sessions SET revoked_at = NULL, tenant_id = $2 WHERE id = $1`, me.SessionID, me.TenantID)
	st = x.startLink(t, me)
	code = linkCodeOf(t, x.callback(t, x.approve(t, st), st.cookie))
	x.exec(t, `UPDATE sessions SET tenant_id = $2 WHERE id = $1`, me.SessionID, second.ID)
	apitest.WantProblem(t, x.confirmLink(t, &moved, map[string]string{"link_code": code}), http.StatusBadRequest, problem.CodeInvalidState)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, me.UserID); n != 0 {
		t.Errorf("%d identities linked by the link of an ended session", n)
	}
}

// TestLinkNeedsAProvenAddressAndTheOwnersPassword: whoever holds the
// password of an account whose address was never proven (a squatter of
// someone's address) or that a tenant admin chose (POST /users) must not
// link a provider account of theirs: it would outlive the password reset
// by which the mailbox's owner takes the account back, as a link by
// address would (which is refused for both). The start is refused (409
// account_email_unverified, 409 account_password_set_by_admin), and so
// is the confirmation of a link started before the account came to be so.
func TestLinkNeedsAProvenAddressAndTheOwnersPassword(t *testing.T) {
	x := start(t)
	x.provide("squatter-subject", "", false)
	squatted := x.identityFor(t, x.signup(t, "squatted@example.com")) // address never proven
	apitest.WantProblem(t, x.Send(t, squatted, http.MethodPost, linkPath, nil), http.StatusConflict, problem.CodeVerifyBeforeLinking)

	me := x.signedInOwner(t, "admin-set@example.com")
	x.exec(t, `UPDATE users SET password_set_by_admin = true WHERE id = $1`, me.UserID)
	apitest.WantProblem(t, x.Send(t, me, http.MethodPost, linkPath, nil), http.StatusConflict, problem.CodeAdminPasswordBeforeLinking)
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Fatalf("%d states stored by refused starts", n)
	}

	// Started while the password was the owner's; an admin's since.
	x.exec(t, `UPDATE users SET password_set_by_admin = false WHERE id = $1`, me.UserID)
	st := x.startLink(t, me)
	back := x.approve(t, st)
	x.exec(t, `UPDATE users SET password_set_by_admin = true WHERE id = $1`, me.UserID)
	apitest.WantProblem(t, x.finishLink(t, me, back, st.cookie), http.StatusConflict, problem.CodeAdminPasswordBeforeLinking)
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("%d identities linked to accounts whose password is not their owner's", n)
	}
}

// TestLinkEndsAtTheListedReturnTo: with OAUTH_ALLOWED_RETURN_URLS, a link
// names one of them (400 return_to_not_allowed otherwise, nothing
// stored) and its callback redirects there with the link code added as
// link_code, the listed parameters kept, and no hand-over code: no
// session was opened. The app confirms the code with its bearer.
func TestLinkEndsAtTheListedReturnTo(t *testing.T) {
	const app = "https://app.example/linked?tab=security"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app} })
	me := x.signedInOwner(t, "return-to@example.com")
	x.provide("return-to-subject", "", false)
	for _, body := range []any{nil, map[string]string{"return_to": "https://evil.example/"}} {
		apitest.WantProblem(t, x.Send(t, me, http.MethodPost, linkPath, body), http.StatusBadRequest, problem.CodeReturnToNotAllowed)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Fatalf("%d states stored by refused starts", n)
	}
	st := x.openLink(t, x.Send(t, me, http.MethodPost, linkPath, map[string]string{"return_to": app}))
	cb := x.callback(t, x.approve(t, st), st.cookie)
	apitest.WantStatus(t, cb, http.StatusFound)
	loc := cb.Header.Get("Location")
	code, ok := strings.CutPrefix(loc, app+"&link_code=")
	if !ok || len(code) != 43 || strings.Contains(loc, "&code=") {
		t.Fatalf("Location = %q, want the listed %q with link_code added", loc, app)
	}
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Fatalf("the callback linked %d identities before the confirmation", n)
	}
	apitest.WantStatus(t, x.confirmLink(t, me, map[string]string{"link_code": code}), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1 AND subject = 'return-to-subject'`, me.UserID); n != 1 {
		t.Errorf("%d identities linked, want 1", n)
	}
}
