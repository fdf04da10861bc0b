package oauth_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
)

// exchangeAt exchanges a hand-over code as the app at redirectURI does
// (RFC 6749 section 4.1.3: the return_to its sign-in started with; "":
// none), with its verifier ("": none), as a form.
func (x *env) exchangeAt(t *testing.T, redirectURI, code, verifier string) apitest.Response {
	t.Helper()
	form := url.Values{"grant_type": {"oauth_handover"}, "code": {code}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	if redirectURI != "" {
		form.Set("redirect_uri", redirectURI)
	}
	return x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: form.Encode(),
		ContentType: "application/x-www-form-urlencoded"})
}

// TestHandoverBoundToItsReturnTo: a hand-over code is exchanged only by
// the app its sign-in ended at. The exchange names that app's return_to as
// redirect_uri (RFC 6749 section 4.1.3), equal to the one authorize was
// given; another listed app's (a code of app A handed to app B, which
// holds a verifier that matches because whoever built the sign-in's link
// chose it), none, or one for a code whose sign-in had none is 400
// invalid_grant, and the code is spent as a wrong verifier spends it.
func TestHandoverBoundToItsReturnTo(t *testing.T) {
	const appA, appB = "https://a.example.com/signed-in", "https://b.example.com/signed-in"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{appA, appB} })
	pk := newAppPKCE(t)

	for _, tc := range []struct{ name, redirectURI string }{
		{"another listed app's", appB},
		{"none", ""},
		{"the app's with a trailing slash", appA + "/"},
		{"the app's origin", "https://a.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := x.codeAt(t, x.begin(t, pk.query(appA)))
			if r := x.exchangeAt(t, tc.redirectURI, code, pk.verifier); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
				t.Fatalf("exchange of app A's code with redirect_uri %q: %d %s, want 400 invalid_grant", tc.redirectURI, r.Status, r.Body)
			}
			if r := x.exchangeAt(t, appA, code, pk.verifier); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
				t.Fatalf("a code refused for its redirect_uri works afterwards: %d %s", r.Status, r.Body)
			}
		})
	}
	if r := x.exchangeAt(t, appA, x.codeAt(t, x.begin(t, pk.query(appA))), pk.verifier); r.Status != http.StatusOK {
		t.Fatalf("exchange at the sign-in's own return_to: %d %s", r.Status, r.Body)
	}
	if r := x.exchangeAt(t, appB, x.codeAt(t, x.begin(t, pk.query(appB))), pk.verifier); r.Status != http.StatusOK {
		t.Fatalf("exchange at app B's own return_to: %d %s", r.Status, r.Body)
	}

	// Without an allow-list (development) a sign-in has no return_to: a
	// redirect_uri names an app whose sign-in this is not.
	y := start(t)
	code := func() string {
		st := y.begin(t, "")
		return handover(t, y.callback(t, y.approve(t, st), st.cookie))
	}
	if r := y.exchangeAt(t, appA, code(), ""); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Errorf("redirect_uri for a code of a sign-in without return_to: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}
	if r := y.exchangeAt(t, "", code(), ""); r.Status != http.StatusOK {
		t.Errorf("exchange of a code without return_to, none named: %d %s", r.Status, r.Body)
	}
}

// TestHandoverDuringTheReturnToRollout: the exchanges the rollout of
// migration 00057 depends on (docs/operations.md, "Hand-over codes bound
// to redirect_uri"). A code a pod of the previous release made keeps no
// return_to (NULL): a JSON exchange without redirect_uri, as apps send
// until every pod runs this release, gets its tokens. A code this release
// made stays bound: the same exchange of it is 400 invalid_grant, the
// code spent.
func TestHandoverDuringTheReturnToRollout(t *testing.T) {
	const app = "https://a.example.com/signed-in"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app} })
	pk := newAppPKCE(t)
	exchangeJSON := func(code string) apitest.Response {
		t.Helper()
		return x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token",
			Body: `{"grant_type":"oauth_handover","code":"` + code + `","code_verifier":"` + pk.verifier + `"}`, ContentType: "application/json"})
	}

	old := x.codeAt(t, x.begin(t, pk.query(app)))
	x.exec(t, `UPDATE oauth_handovers SET return_to = NULL`) // as a pod of the previous release stores it
	if r := exchangeJSON(old); r.Status != http.StatusOK {
		t.Errorf("JSON exchange, no redirect_uri, of a previous release's code: %d %s, want 200", r.Status, r.Body)
	}

	code := x.codeAt(t, x.begin(t, pk.query(app)))
	if r := exchangeJSON(code); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Fatalf("JSON exchange, no redirect_uri, of this release's code: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}
	if r := x.exchangeAt(t, app, code, pk.verifier); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Errorf("a code refused without its redirect_uri works afterwards: %d %s", r.Status, r.Body)
	}
}
