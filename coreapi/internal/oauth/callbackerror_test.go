package oauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestCallbackErrorsReachTheApp: with OAUTH_ALLOWED_RETURN_URLS, a sign-in
// that ends in a refusal once its state is spent and the provider's answer
// checked goes back to the app, as an OAuth error response at return_to
// (RFC 6749 section 4.1.2.1), with iss and the app's own state, so that
// its library regains control: the provider's refusal as its own error
// when RFC 6749 or OpenID Connect Core 3.1.2.6 defines it for the app
// (access_denied, login_required, ...), server_error otherwise; a refusal
// of coreapi's as access_denied (server_error for a 5xx), its problem code
// in error_code. It was answered as problem+json on the API's host, where
// the app never saw its state again. The state is spent either way.
func TestCallbackErrorsReachTheApp(t *testing.T) {
	const (
		app    = "https://app.example.com/signed-in?from=tollgate"
		issuer = "https://auth.example.com"
	)
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app}; o.Issuer = issuer })
	pk := newAppPKCE(t)
	errorAt := func(t *testing.T, r http.Response, appState string) url.Values {
		t.Helper()
		if r.StatusCode != http.StatusFound {
			t.Fatalf("callback: %d, want 302 to return_to with the error", r.StatusCode)
		}
		loc, err := url.Parse(r.Header.Get("Location"))
		if err != nil || loc.Scheme+"://"+loc.Host+loc.Path != "https://app.example.com/signed-in" {
			t.Fatalf("Location = %q, want return_to", r.Header.Get("Location"))
		}
		q := loc.Query()
		if len(q["state"]) != 1 || q.Get("state") != appState || q.Get("iss") != issuer || q.Get("from") != "tollgate" || q.Has("code") {
			t.Errorf("Location = %q, want the app's state %q, iss, the listed parameters and no code", loc, appState)
		}
		if got := r.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control = %q, want no-store", got)
		}
		return q
	}
	refusal := func(st started, code string) string {
		return "/api/v1/auth/oauth/fake/callback?error=" + url.QueryEscape(code) + "&error_description=user+said+no&state=" + url.QueryEscape(st.state)
	}

	t.Run("provider refusal", func(t *testing.T) {
		for _, tc := range []struct{ sent, want string }{
			{"access_denied", "access_denied"},
			{"login_required", "login_required"},
			{"consent_required", "consent_required"},
			{"temporarily_unavailable", "temporarily_unavailable"},
			// Of coreapi's request to the provider, not of the app's.
			{"invalid_scope", "server_error"},
			{"unauthorized_client", "server_error"},
			{"made_up", "server_error"},
			{"bad\x01code", "server_error"},
		} {
			st := x.begin(t, pk.query(app)+"&state=app-"+tc.want)
			r := x.callback(t, refusal(st, tc.sent), st.cookie)
			q := errorAt(t, http.Response{StatusCode: r.Status, Header: r.Header}, "app-"+tc.want)
			if q.Get("error") != tc.want || q.Get("error_code") != problem.CodeProviderError {
				t.Errorf("provider's %q: error=%q error_code=%q, want %q and %s", tc.sent, q.Get("error"), q.Get("error_code"), tc.want, problem.CodeProviderError)
			}
			if d := q.Get("error_description"); strings.ContainsAny(d, "\x01\"\\") {
				t.Errorf("provider's %q: error_description %q has characters RFC 6749 does not allow", tc.sent, d)
			}
			if c := r.Header.Get("Set-Cookie"); !strings.Contains(c, oauth.CookieName(st.state)+"=;") {
				t.Errorf("provider's %q: binding cookie not cleared: %q", tc.sent, c)
			}
		}
		if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
			t.Errorf("state rows = %d, want 0 (each flow is spent)", n)
		}
	})

	t.Run("coreapi's refusal", func(t *testing.T) {
		x.provide("unverified-subject", "unverified@example.com", false)
		st := x.begin(t, pk.query(app)+"&state=app-unverified")
		r := x.callback(t, x.approve(t, st), st.cookie)
		q := errorAt(t, http.Response{StatusCode: r.Status, Header: r.Header}, "app-unverified")
		if q.Get("error") != "access_denied" || q.Get("error_code") != problem.CodeEmailNotVerified || q.Get("error_description") == "" {
			t.Errorf("email not verified: Location %q, want error=access_denied, error_code=%s and a description", r.Header.Get("Location"), problem.CodeEmailNotVerified)
		}
		if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
			t.Errorf("users = %d, want 0", n)
		}

		// A 5xx of coreapi's (the ID token is not for this flow's client).
		x.provide("idp-user-1", "oidc@example.com", true)
		x.idp.Mu.Lock()
		x.idp.Claims = map[string]any{"aud": []string{x.idp.ClientID, "another-client"}}
		x.idp.Mu.Unlock()
		st = x.begin(t, pk.query(app)+"&state=app-5xx")
		r = x.callback(t, x.approve(t, st), st.cookie)
		x.idp.Mu.Lock()
		x.idp.Claims = nil
		x.idp.Mu.Unlock()
		q = errorAt(t, http.Response{StatusCode: r.Status, Header: r.Header}, "app-5xx")
		if q.Get("error") != "server_error" || q.Get("error_code") != problem.CodeInvalidIDToken {
			t.Errorf("ID token of another client: Location %q, want error=server_error, error_code=%s", r.Header.Get("Location"), problem.CodeInvalidIDToken)
		}
		if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
			t.Errorf("state rows = %d, want 0", n)
		}
	})

	// Before the state is known and the answer checked, nothing names
	// a trusted return_to: problem+json as before, never a redirect.
	t.Run("untrusted", func(t *testing.T) {
		x.provide("idp-user-1", "oidc@example.com", true)
		st := x.begin(t, pk.query(app)+"&state=app-spent")
		back := x.approve(t, st)
		if r := x.callback(t, back, st.cookie); r.Status != http.StatusFound {
			t.Fatalf("callback: %d %s", r.Status, r.Body)
		}
		for _, tc := range []struct {
			name, path string
			cookie     *http.Cookie
			code       string
		}{
			{"spent state", back, st.cookie, problem.CodeInvalidState},
			{"spent state, error response", refusal(st, "access_denied"), st.cookie, problem.CodeInvalidState},
			{"no binding cookie", refusal(st, "access_denied"), nil, problem.CodeStateNotBound},
		} {
			r := x.callback(t, tc.path, tc.cookie)
			if r.Status != http.StatusBadRequest || r.Header.Get("Location") != "" || r.Problem(t).Code != tc.code {
				t.Errorf("%s: %d %q %s, want 400 %s and no redirect", tc.name, r.Status, r.Header.Get("Location"), r.Body, tc.code)
			}
		}
		for _, errResp := range []bool{false, true} {
			st := x.begin(t, pk.query(app)+"&state=app-mixup")
			path := x.approve(t, st)
			if errResp {
				path = refusal(st, "access_denied")
			}
			r := x.callback(t, path+"&iss="+url.QueryEscape("https://evil.example"), st.cookie)
			if r.Status != http.StatusBadRequest || r.Header.Get("Location") != "" || r.Problem(t).Code != problem.CodeInvalidRequest {
				t.Errorf("another issuer (error response %v): %d %q %s, want 400 %s and no redirect", errResp, r.Status, r.Header.Get("Location"), r.Body, problem.CodeInvalidRequest)
			}
		}
	})
}

// TestCallbackErrorsWithoutAllowList: without OAUTH_ALLOWED_RETURN_URLS
// (development) a refusal at the callback stays problem+json.
func TestCallbackErrorsWithoutAllowList(t *testing.T) {
	x := start(t)
	x.provide("unverified-subject", "unverified@example.com", false)
	st := x.begin(t, "?state=dev")
	r := x.callback(t, x.approve(t, st), st.cookie)
	if r.Status != http.StatusForbidden || r.Header.Get("Location") != "" || r.Problem(t).Code != problem.CodeEmailNotVerified {
		t.Errorf("email not verified: %d %q %s, want 403 %s", r.Status, r.Header.Get("Location"), r.Body, problem.CodeEmailNotVerified)
	}
}

// TestLinkCallbackErrorReachesTheApp: a link its owner started ends at its
// listed return_to when the provider refuses too, with error and iss (a
// link's start takes no app state), and no link code.
func TestLinkCallbackErrorReachesTheApp(t *testing.T) {
	const (
		app    = "https://app.example.com/linked"
		issuer = "https://auth.example.com"
	)
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app}; o.Issuer = issuer })
	me := x.signedInOwner(t, "link-refused@example.com")
	st := x.openLink(t, x.Send(t, me, http.MethodPost, linkPath, map[string]string{"return_to": app}))
	r := x.callback(t, "/api/v1/auth/oauth/fake/callback?error=access_denied&state="+url.QueryEscape(st.state), st.cookie)
	if r.Status != http.StatusFound {
		t.Fatalf("callback: %d %s, want 302 to return_to with the error", r.Status, r.Body)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || loc.Scheme+"://"+loc.Host+loc.Path != app {
		t.Fatalf("Location = %q, want return_to", r.Header.Get("Location"))
	}
	if q := loc.Query(); q.Get("error") != "access_denied" || q.Get("iss") != issuer || q.Has("link_code") || q.Has("state") {
		t.Errorf("Location = %q, want error=access_denied and iss only", loc)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Errorf("state rows = %d, want 0 (the flow is spent)", n)
	}
}
