package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// linkParts splits a mailed link into the path a browser opens (through the
// proxy the link names) and its token.
func linkParts(t *testing.T, link string) (*url.URL, string) {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatalf("mailed link %q: %v", link, err)
	}
	tok := u.Query().Get("token")
	if tok == "" {
		t.Fatalf("mailed link %q has no token", link)
	}
	return u, tok
}

type verifiedMe struct {
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
}

// Sign up, read the verification mail from the real SMTP server, open its
// link through the proxy and post the page's form: without the account's
// password the page comes back asking for it (the link kept); with it,
// the address is verified.
func TestSignupThenVerifyByMailedLink(t *testing.T) {
	a := signup(t, sys.proxyB)
	if m := decode[verifiedMe](t, call(t, "GET", sys.proxyB.url("/api/v1/users/me"), a.Tokens.AccessToken, nil)); m.EmailVerified {
		t.Fatalf("verified before the link was used: %+v", m)
	}
	link := sys.mail.link(t, a.Email, "Confirm your email")
	u, tok := linkParts(t, link)
	if u.Host != sys.proxyA.addr || u.Path != "/verify-email" {
		t.Errorf("link %q does not open the verify page on PUBLIC_BASE_URL (proxy A)", link)
	}
	page := call(t, "GET", link, "", nil)
	if page.Status != http.StatusOK || !strings.Contains(string(page.Body), `action="/api/v1/auth/verify-email"`) ||
		!strings.Contains(string(page.Body), `name="password"`) {
		t.Fatalf("the link's page through the proxy: %s", page)
	}
	post := call(t, "POST", sys.proxyA.url("/api/v1/auth/verify-email"), "", url.Values{"token": {tok}})
	if loc := post.Header.Get("Location"); post.Status != http.StatusSeeOther || loc != "/verify-email?error=account_proof_required&token="+tok {
		t.Fatalf("the page's form post without the password: %s (Location %q)", post, loc)
	}
	post = call(t, "POST", sys.proxyA.url("/api/v1/auth/verify-email"), "", url.Values{"token": {tok}, "password": {a.Password}})
	if post.Status != http.StatusSeeOther || post.Header.Get("Location") != "/verify-email?done=1" {
		t.Fatalf("the page's form post: %s (Location %q)", post, post.Header.Get("Location"))
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		if m := decode[verifiedMe](t, call(t, "GET", p.url("/api/v1/users/me"), a.Tokens.AccessToken, nil)); !m.EmailVerified {
			t.Errorf("%s: not verified after the link: %+v", p.name, m)
		}
	}
	// The link is single use.
	again := call(t, "POST", sys.proxyB.url("/api/v1/auth/verify-email"), "", map[string]string{"token": tok, "password": a.Password})
	if p := expectProblem(t, again, http.StatusBadRequest); p.Code != "link_invalid" {
		t.Errorf("reused link: %s", again)
	}
}

// An app's own page posts the link's token with the signed-in user's
// bearer: the proxy forwards it as the identity (the route is optional),
// and coreapi verifies the address only for the account the link was
// sent for.
func TestVerifyWithBearerThroughTheProxy(t *testing.T) {
	a := signup(t, sys.proxyA)
	other := signup(t, sys.proxyB)
	_, tok := linkParts(t, sys.mail.link(t, a.Email, "Confirm your email"))
	wrong := call(t, "POST", sys.proxyB.url("/api/v1/auth/verify-email"), other.Tokens.AccessToken, map[string]string{"token": tok})
	if p := expectProblem(t, wrong, http.StatusForbidden); p.Code != "link_account_mismatch" {
		t.Errorf("another account's bearer: %s", wrong)
	}
	none := call(t, "POST", sys.proxyB.url("/api/v1/auth/verify-email"), "", map[string]string{"token": tok})
	if p := expectProblem(t, none, http.StatusUnauthorized); p.Code != "account_proof_required" {
		t.Errorf("no proof: %s", none)
	}
	ok := call(t, "POST", sys.proxyB.url("/api/v1/auth/verify-email"), a.Tokens.AccessToken, map[string]string{"token": tok})
	expect(t, ok, http.StatusOK)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		if m := decode[verifiedMe](t, call(t, "GET", p.url("/api/v1/users/me"), a.Tokens.AccessToken, nil)); !m.EmailVerified {
			t.Errorf("%s: not verified after the bearer's verification: %+v", p.name, m)
		}
	}
}

// Forgot → reset through the proxies: every old session is refused at
// both proxies at once, the new password works.
func TestForgotResetEvictsSessionsAtBothProxies(t *testing.T) {
	a := signup(t, sys.proxyA)
	onB := login(t, sys.proxyB, a)
	for _, tok := range []string{a.Tokens.AccessToken, onB.AccessToken} {
		for _, p := range []*service{sys.proxyA, sys.proxyB} {
			me(t, p, tok) // cached at both proxies
		}
	}
	first := call(t, "POST", sys.proxyB.url("/api/v1/auth/password/forgot"), "", map[string]string{"email": a.Email})
	unknown := call(t, "POST", sys.proxyB.url("/api/v1/auth/password/forgot"), "", map[string]string{"email": "nobody-" + randToken(5) + "@example.com"})
	expect(t, first, http.StatusAccepted)
	expect(t, unknown, http.StatusAccepted)
	if string(first.Body) != string(unknown.Body) {
		t.Errorf("forgot answers differ for a known and an unknown address: %s / %s", first.Body, unknown.Body)
	}
	_, tok := linkParts(t, sys.mail.link(t, a.Email, "Reset your password"))

	reset := call(t, "POST", sys.proxyA.url("/api/v1/auth/password/reset"), "", map[string]string{"token": tok, "new_password": "a brand new passphrase"})
	expect(t, reset, http.StatusNoContent)
	for _, old := range []string{a.Tokens.AccessToken, onB.AccessToken} {
		for _, p := range []*service{sys.proxyA, sys.proxyB} {
			took, _ := mustWaitStatus(t, "GET", p.url("/api/v1/users/me"), old, http.StatusUnauthorized, 2*time.Second)
			t.Logf("%s refused an old session %v after the reset answered", p.name, took)
		}
	}
	if r := call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{"grant_type": "refresh_token", "refresh_token": onB.RefreshToken}); r.Status == http.StatusOK {
		t.Errorf("an old refresh token still works after the reset: %s", r)
	}
	a.Password = "a brand new passphrase"
	me(t, sys.proxyB, login(t, sys.proxyB, a).AccessToken)
}

// Invite a new address and an existing account; both accept through the
// proxy. POST /users for an existing account invites it without saying
// anything of it, and nobody is attached before accepting.
func TestInvitationsAcceptedThroughTheProxy(t *testing.T) {
	owner := signup(t, sys.proxyA)
	other := signup(t, sys.proxyB) // an existing account elsewhere

	newcomer := "new-" + randToken(5) + "@example.com"
	r := call(t, "POST", sys.proxyA.url("/api/v1/invitations"), owner.Tokens.AccessToken, map[string]any{"email": newcomer, "roles": []string{"admin"}})
	expect(t, r, http.StatusCreated)
	_, tok := linkParts(t, sys.mail.link(t, newcomer, "You are invited"))
	acc := call(t, "POST", sys.proxyB.url("/api/v1/invitations/accept"), "", map[string]string{"token": tok, "password": testPassword, "display_name": "Newcomer"})
	expect(t, acc, http.StatusOK)
	tr := decode[tokenResponse](t, acc)
	tr.check(t, acc)
	if got := me(t, sys.proxyA, tr.AccessToken); got.TenantID != owner.TenantID || !hasAll(got.Roles, "admin") {
		t.Errorf("newcomer after accept: %+v", got)
	}

	// The attach-without-consent attack: the answer carries nothing of the
	// account and the tenant does not appear in the victim's list.
	r = call(t, "POST", sys.proxyA.url("/api/v1/users"), owner.Tokens.AccessToken, map[string]any{"email": other.Email})
	expect(t, r, http.StatusAccepted)
	if strings.Contains(string(r.Body), other.UserID) || strings.Contains(string(r.Body), other.TenantID) {
		t.Errorf("the answer for an existing account leaks it: %s", r.Body)
	}
	tenants := call(t, "GET", sys.proxyB.url("/api/v1/users/me/tenants"), other.Tokens.AccessToken, nil)
	if strings.Contains(string(tenants.Body), owner.TenantID) {
		t.Fatalf("attached without consent: %s", tenants.Body)
	}
	_, tok = linkParts(t, sys.mail.link(t, other.Email, "You are invited"))
	wrong := call(t, "POST", sys.proxyA.url("/api/v1/invitations/accept"), "", map[string]string{"token": tok})
	if p := expectProblem(t, wrong, http.StatusUnauthorized); p.Code != "account_exists" {
		t.Errorf("accept without credentials: %s", wrong)
	}
	acc = call(t, "POST", sys.proxyA.url("/api/v1/invitations/accept"), "", map[string]string{"token": tok, "password": other.Password})
	expect(t, acc, http.StatusOK)
	tr = decode[tokenResponse](t, acc)
	if tr.TenantID != owner.TenantID {
		t.Errorf("accepted into %s, want %s", tr.TenantID, owner.TenantID)
	}
	me(t, sys.proxyB, tr.AccessToken)
}

// The linking takeover: someone signs up with the victim's address and a
// password they chose; the victim's first OIDC sign-in must not enter that
// account.
func TestLinkingTakeoverFails(t *testing.T) {
	victim := "victim-" + randToken(5) + "@example.com"
	squat := call(t, "POST", sys.proxyA.url("/api/v1/auth/signup"), "", map[string]string{
		"email": victim, "password": testPassword, "tenant_name": "Squat"})
	expect(t, squat, http.StatusCreated)
	attacker := decode[tokenResponse](t, squat)

	sys.oidc.loginAs(oidcUser{Subject: "sub-" + randToken(6), Email: victim, Name: "Victim"})
	fl := startOAuth(t, sys.proxyA)
	done := browserGet(t, fl.callback, fl.cookie)
	if code := appRefusal(t, done); code != "account_email_unverified" {
		t.Errorf("refusal: %s (Location %q), want error_code account_email_unverified", done, done.Header.Get("Location"))
	}
	// The squatter's account holds no identity of the victim: a second
	// try is refused the same way, and the squatter's session is its own.
	me(t, sys.proxyB, attacker.AccessToken)
	_ = sys.oidc.takeProblems()
}
