package oauth_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
)

// TestHandoverRedirectNamesTheIssuer: the callback's redirect to return_to
// is the authorization response an app receives, and it names its issuer
// (RFC 9207's iss, TOKEN_ISSUER), exactly once: an app that signs in
// through more than one authorization server, all answering at one
// return_to, tells this one's code from another's by it and never sends
// the code and its code_verifier to another server's token endpoint
// (mix-up, RFC 9700 section 4.4), where the code would be exchanged here
// for the victim's session. An iss of the listed URL's own is left out,
// as a code of its own is, so the app reads only this one.
func TestHandoverRedirectNamesTheIssuer(t *testing.T) {
	const issuer = "https://auth.example.com"
	for _, tc := range []struct{ name, app string }{
		{"plain", "https://app.example.com/signed-in"},
		{"an iss of its own", "https://app.example.com/signed-in?iss=https%3A%2F%2Fevil.example&a=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{tc.app}; o.Issuer = issuer })
			pk := newAppPKCE(t)
			st := x.begin(t, pk.query(tc.app))
			r := x.callback(t, x.approve(t, st), st.cookie)
			if r.Status != http.StatusFound {
				t.Fatalf("callback: %d %s", r.Status, r.Body)
			}
			loc, err := url.Parse(r.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			q := loc.Query()
			if got := q["iss"]; len(got) != 1 || got[0] != issuer {
				t.Errorf("Location %q: iss = %q, want [%s]", loc, got, issuer)
			}
			if len(q["code"]) != 1 {
				t.Fatalf("Location %q: want one code", loc)
			}
			if r := x.exchangeWith(t, tc.app, q.Get("code"), pk.verifier); r.Status != http.StatusOK {
				t.Errorf("exchange: %d %s", r.Status, r.Body)
			}
		})
	}
}
