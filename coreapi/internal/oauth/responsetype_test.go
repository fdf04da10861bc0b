package oauth_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestAuthorizeRefusesOtherFlows: the sign-in is the authorization code
// flow, answered in the query of the redirect to return_to. A client
// library that asks for another response_type (implicit, hybrid: tokens
// in the redirect) or response_mode (fragment, form_post) would wait for
// an answer that never comes in the form it reads: it is refused, 400
// unsupported_response_type or unsupported_response_mode, before a flow
// is stored or a cookie set. response_type=code and response_mode=query
// (or none given) start the sign-in as before.
func TestAuthorizeRefusesOtherFlows(t *testing.T) {
	const app = "https://app.example.com/signed-in"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app} })
	pk := newAppPKCE(t)
	for _, tc := range []struct{ name, query, code string }{
		{"implicit", "&response_type=token", problem.CodeUnsupportedResponseType},
		{"an ID token", "&response_type=id_token", problem.CodeUnsupportedResponseType},
		{"hybrid", "&response_type=" + url.QueryEscape("code id_token"), problem.CodeUnsupportedResponseType},
		{"code in capitals", "&response_type=CODE", problem.CodeUnsupportedResponseType},
		{"response_type twice", "&response_type=code&response_type=token", problem.CodeInvalidRequest},
		{"fragment", "&response_mode=fragment", problem.CodeUnsupportedResponseMode},
		{"form_post", "&response_type=code&response_mode=form_post", problem.CodeUnsupportedResponseMode},
		{"response_mode twice", "&response_mode=query&response_mode=fragment", problem.CodeInvalidRequest},
	} {
		r := x.authorize(t, pk.query(app)+tc.query, "192.0.2.8")
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != tc.code {
			t.Errorf("%s: %d %s, want 400 %s", tc.name, r.Status, r.Body, tc.code)
		}
		if c := r.Header.Get("Set-Cookie"); c != "" {
			t.Errorf("%s: a refused start set a cookie: %s", tc.name, c)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Fatalf("refused starts left %d state rows", n)
	}
	for _, q := range []string{"&response_type=code", "&response_mode=query", "&response_type=code&response_mode=query"} {
		st := x.begin(t, pk.query(app)+q)
		if r := x.exchangeWith(t, app, x.codeAt(t, st), pk.verifier); r.Status != http.StatusOK {
			t.Errorf("sign-in started with %s: exchange %d %s", q, r.Status, r.Body)
		}
	}
}

// TestPromptNone: coreapi keeps no browser session of its own, so a
// sign-in always goes through the provider, which may show its pages:
// prompt=none (OpenID Connect Core 3.1.2.1) cannot be honoured. With an
// allow-list the answer is the OAuth error response at return_to
// (3.1.2.6): error=login_required, with iss and the app's state, which a
// library's silent sign-in reads; without one (development), 400
// login_required. Either way nothing is stored and no cookie set. The
// other prompt values are passed on to the provider.
func TestPromptNone(t *testing.T) {
	const app = "https://app.example.com/signed-in?from=tollgate"
	x := start(t, func(o *oauth.Options) {
		o.AllowedReturnURLs = []string{app}
		o.Issuer = "http://localhost:8080"
	})
	pk := newAppPKCE(t)

	r := x.authorize(t, pk.query(app)+"&prompt=none&state=silent-1", "192.0.2.9")
	if r.Status != http.StatusFound {
		t.Fatalf("prompt=none: %d %s, want 302 to return_to with an error", r.Status, r.Body)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || loc.Scheme+"://"+loc.Host+loc.Path != "https://app.example.com/signed-in" {
		t.Fatalf("prompt=none: Location = %q, want return_to", r.Header.Get("Location"))
	}
	q := loc.Query()
	if q.Get("error") != "login_required" || q.Get("state") != "silent-1" || q.Get("iss") != "http://localhost:8080" ||
		q.Get("from") != "tollgate" || q.Has("code") {
		t.Errorf("prompt=none: Location = %q, want error=login_required, the app's state, iss and the listed parameters", loc)
	}
	if c := r.Header.Get("Set-Cookie"); c != "" {
		t.Errorf("prompt=none set a cookie: %s", c)
	}

	// A prompt=none with what authorize refuses anyway is refused as
	// before: the error goes only to a listed return_to.
	for _, tc := range []struct{ name, query, code string }{
		{"no return_to", "?prompt=none&code_challenge=" + pk.challenge + "&code_challenge_method=S256", problem.CodeReturnToNotAllowed},
		{"another return_to", pk.query("https://evil.example/cb") + "&prompt=none", problem.CodeReturnToNotAllowed},
		{"none with another value", pk.query(app) + "&prompt=" + url.QueryEscape("none login"), problem.CodeInvalidRequest},
		{"an unknown value", pk.query(app) + "&prompt=silent", problem.CodeInvalidRequest},
	} {
		r := x.authorize(t, tc.query, "192.0.2.9")
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != tc.code {
			t.Errorf("%s: %d %s, want 400 %s", tc.name, r.Status, r.Body, tc.code)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Fatalf("prompt=none left %d state rows", n)
	}

	for _, prompt := range []string{"login", "consent", "select_account", "login consent"} {
		st := x.begin(t, pk.query(app)+"&prompt="+url.QueryEscape(prompt))
		if got := st.loc.Query().Get("prompt"); got != prompt {
			t.Errorf("prompt=%s: the provider was asked prompt=%q", prompt, got)
		}
		if r := x.exchangeWith(t, app, x.codeAt(t, st), pk.verifier); r.Status != http.StatusOK {
			t.Errorf("prompt=%s: exchange %d %s", prompt, r.Status, r.Body)
		}
	}
	if got := x.begin(t, pk.query(app)).loc.Query(); got.Has("prompt") {
		t.Errorf("no prompt given: the provider was asked prompt=%q", got.Get("prompt"))
	}

	dev := start(t)
	r = dev.authorize(t, "?prompt=none", "192.0.2.9")
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeLoginRequired {
		t.Errorf("prompt=none without an allow-list: %d %s, want 400 %s", r.Status, r.Body, problem.CodeLoginRequired)
	}
	if n := dev.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Errorf("prompt=none left %d state rows", n)
	}
}
