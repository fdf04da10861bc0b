package oauth_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
)

// TestMalformedVerifierSpendsTheCode: an exchange of a hand-over code
// with a code_verifier that RFC 7636 (section 4.1) does not allow (too
// short, too long, a character outside [A-Za-z0-9-._~]) is refused as a
// wrong verifier is, and spends the code all the same (RFC 7636 section
// 4.6): whoever sent it may hold a code read from a URL, and must not be
// able to try again, nor leave the code for a later exchange. The app's
// own exchange then finds a spent code, and the session it opened ends.
func TestMalformedVerifierSpendsTheCode(t *testing.T) {
	const app = "https://app.example.com/signed-in"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app} })
	pk := newAppPKCE(t)
	for i, tc := range []struct{ name, verifier string }{
		{"too short", strings.Repeat("~", 42)},
		{"too long", strings.Repeat("a", 129)},
		{"a character outside the set", pk.verifier[:42] + "+"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := x.codeAt(t, x.begin(t, pk.query(app)))
			if r := x.exchangeWith(t, app, code, tc.verifier); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
				t.Fatalf("exchange with a malformed verifier: %d %s, want 400 invalid_grant", r.Status, r.Body)
			}
			if r := x.exchangeWith(t, app, code, pk.verifier); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
				t.Errorf("exchange with the right verifier after a malformed one: %d %s, want 400 invalid_grant (the code is spent)", r.Status, r.Body)
			}
			if n := x.count(t, `SELECT count(*) FROM sessions WHERE revoked_reason = $1`, sessions.ReasonHandoverReuse); n != i+1 {
				t.Errorf("%d sessions ended as %s, want %d: the spent code, presented again, ends its session", n, sessions.ReasonHandoverReuse, i+1)
			}
		})
	}
}
