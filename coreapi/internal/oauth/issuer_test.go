package oauth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth/oidctest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// exchanges is how many token requests the provider has had.
func (x *env) exchanges() int {
	x.idp.Mu.Lock()
	defer x.idp.Mu.Unlock()
	return x.idp.Exchanges
}

// refusedBeforeExchange checks that a callback was refused with 400
// invalid_request and that its code never went to the token endpoint.
func refusedBeforeExchange(t *testing.T, x *env, name string, before int, r apitest.Response) {
	t.Helper()
	if r.Status != http.StatusBadRequest {
		t.Fatalf("%s: status %d, want 400", name, r.Status)
	}
	if p := r.Problem(t); p.Code != problem.CodeInvalidRequest || !strings.Contains(p.Detail, "issuer") {
		t.Fatalf("%s: problem %+v, want invalid_request about the issuer", name, p)
	}
	if n := x.exchanges(); n != before {
		t.Fatalf("%s: %d code exchanges, want none: the code went to the token endpoint", name, n-before)
	}
}

// TestCallbackIssuer: an authorization response that names its issuer
// (RFC 9207's iss) must name the provider's own, exactly; the code of one
// that names another (a mix-up of two providers) is never exchanged. A
// response without iss from a provider that does not promise it is taken.
func TestCallbackIssuer(t *testing.T) {
	x := start(t)
	for _, iss := range []string{"https://evil.example", x.idp.URL + "/", strings.ToUpper(x.idp.URL)} {
		st := x.begin(t, "")
		back := x.approve(t, st)
		before := x.exchanges()
		r := x.callback(t, back+"&iss="+url.QueryEscape(iss), st.cookie)
		refusedBeforeExchange(t, x, "iss "+iss, before, r)
	}
	st := x.begin(t, "")
	back := x.approve(t, st)
	handover(t, x.callback(t, back+"&iss="+url.QueryEscape(x.idp.URL), st.cookie))
	st = x.begin(t, "")
	handover(t, x.callback(t, x.approve(t, st), st.cookie))
}

// TestCallbackIssuerRequired: a provider whose discovery document says it
// names its issuer in every authorization response
// (authorization_response_iss_parameter_supported) must: a response
// without iss is refused before its code is exchanged.
func TestCallbackIssuerRequired(t *testing.T) {
	x := start(t)
	x.idp.Mu.Lock()
	x.idp.IssParam = true
	x.idp.Mu.Unlock()
	st := x.begin(t, "")
	back, err := url.Parse(x.approve(t, st))
	if err != nil {
		t.Fatal(err)
	}
	q := back.Query()
	if q.Get("iss") != x.idp.URL {
		t.Fatalf("the provider's redirect %s names no iss", back)
	}
	q.Del("iss")
	back.RawQuery = q.Encode()
	before := x.exchanges()
	r := x.callback(t, back.RequestURI(), st.cookie)
	refusedBeforeExchange(t, x, "no iss", before, r)
	st = x.begin(t, "")
	handover(t, x.callback(t, x.approve(t, st), st.cookie))
}

// TestCallbackIssuerOfAnErrorResponse: an error response is an
// authorization response too (RFC 9207 section 2): one that names another
// issuer than the provider's, or none from a provider that promises it,
// is refused as a successful one is, not answered as this provider's
// refusal with the error and the description it carries, which another
// configured provider chose. The state is spent either way: the flow is
// over.
func TestCallbackIssuerOfAnErrorResponse(t *testing.T) {
	x := start(t)
	denied := func(st started, iss string) string {
		p := "/api/v1/auth/oauth/fake/callback?error=access_denied&error_description=sign+in+at+evil.example&state=" + url.QueryEscape(st.state)
		if iss != "" {
			p += "&iss=" + url.QueryEscape(iss)
		}
		return p
	}
	st := x.begin(t, "")
	before := x.exchanges()
	refusedBeforeExchange(t, x, "error response of another issuer", before, x.callback(t, denied(st, "https://evil.example"), st.cookie))
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Errorf("state rows = %d, want 0 (the flow is over)", n)
	}
	st = x.begin(t, "")
	r := x.callback(t, denied(st, x.idp.URL), st.cookie)
	if p := r.Problem(t); r.Status != http.StatusBadRequest || p.Code != problem.CodeProviderError {
		t.Fatalf("error response of the provider's issuer: %d %s, want 400 %s", r.Status, r.Body, problem.CodeProviderError)
	}
	// A provider whose discovery document promises iss (read at the
	// start of the sign-in).
	x2 := start(t)
	x2.idp.Mu.Lock()
	x2.idp.IssParam = true
	x2.idp.Mu.Unlock()
	st = x2.begin(t, "")
	refusedBeforeExchange(t, x2, "error response without iss", x2.exchanges(), x2.callback(t, denied(st, ""), st.cookie))
}

// TestCallbackIssuerOfAnErrorResponseOnAnotherInstance: whether a
// provider promises iss is read from its discovery document, which each
// instance fetches on first use. An error response finished on an
// instance that had not fetched it yet (another replica than the one that
// started the sign-in, or one restarted in between) took the provider to
// promise nothing, and answered a response without iss as this
// provider's refusal, passing on an error and description that another
// configured provider chose. The callback now reads the document before
// it checks an error response's iss, as it does for one with a code.
func TestCallbackIssuerOfAnErrorResponseOnAnotherInstance(t *testing.T) {
	x := start(t)
	x.idp.Mu.Lock()
	x.idp.IssParam = true
	x.idp.Mu.Unlock()
	other := x.second(t)
	st := x.begin(t, "") // started (and the provider discovered) on the first instance
	req, err := http.NewRequest(http.MethodGet, other+"/api/v1/auth/oauth/fake/callback?error=access_denied&error_description=sign+in+at+evil.example&state="+url.QueryEscape(st.state), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: st.cookie.Name, Value: st.cookie.Value})
	resp, err := x.noFollow.Do(req) // finished on the second
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p problem.Problem
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || p.Code != problem.CodeInvalidRequest || !strings.Contains(p.Detail, "issuer") {
		t.Fatalf("error response without iss on another instance: %d %s %q, want 400 %s about the issuer", resp.StatusCode, p.Code, p.Detail, problem.CodeInvalidRequest)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Errorf("state rows = %d, want 0 (the flow is over)", n)
	}
}

// TestGoogleIssuerInEitherSpelling: Google's ID tokens name their issuer
// as https://accounts.google.com or as accounts.google.com, and go-oidc
// takes either from the provider whose issuer is the former. The identity
// recorded the token's spelling, and the next sign-in in the other one
// was refused as a subject of another issuer (409 conflict): the account
// was locked out whenever Google changed spellings. A sign-in now counts
// as through the provider's issuer whichever spelling its token has, and
// an identity recorded without the scheme is that issuer's.
func TestGoogleIssuerInEitherSpelling(t *testing.T) {
	const google = "https://accounts.google.com"
	x := start(t, func(o *oauth.Options) {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: oidctest.Route(google, o.Providers[0].Issuer)}
		o.Providers[0].Issuer = google
	})
	x.idp.Mu.Lock()
	x.idp.Issuer = google
	x.idp.Mu.Unlock()
	x.noFollow.Transport = oidctest.Route(google, x.idp.URL)
	signIn := func(t *testing.T, iss string) string {
		t.Helper()
		x.idp.Mu.Lock()
		x.idp.Claims = map[string]any{"iss": iss}
		x.idp.Mu.Unlock()
		st := x.begin(t, "")
		r := x.callback(t, x.approve(t, st), st.cookie)
		if r.Status != http.StatusOK {
			t.Fatalf("sign-in with an ID token of iss %q: %d %s, want 200", iss, r.Status, r.Body)
		}
		ex := x.exchange(t, handover(t, r))
		if ex.Status != http.StatusOK {
			t.Fatalf("exchange: %d %s", ex.Status, ex.Body)
		}
		var tk tokens
		ex.JSON(t, &tk)
		return sub(t, tk.AccessToken)
	}
	owner := signIn(t, google)
	for _, iss := range []string{"accounts.google.com", google, "accounts.google.com"} {
		if got := signIn(t, iss); got != owner {
			t.Fatalf("sign-in with iss %q: user %s, want the account %s", iss, got, owner)
		}
	}
	// An identity recorded in the spelling without the scheme.
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE identities SET issuer = 'accounts.google.com'`); err != nil {
		t.Fatal(err)
	}
	for _, iss := range []string{google, "accounts.google.com"} {
		if got := signIn(t, iss); got != owner {
			t.Fatalf("sign-in with iss %q of an identity recorded without the scheme: user %s, want %s", iss, got, owner)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM users`); n != 1 {
		t.Errorf("users = %d, want 1", n)
	}
}
