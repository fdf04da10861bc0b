package oauth_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestLoopbackReturnToAnyPort: a native app receives the hand-over on a
// loopback redirect whose port the system picks when the app runs (RFC
// 8252 section 7.3). A return_to listed as a loopback IP literal
// (127.0.0.1, [::1]) is met by that literal with any port, the scheme,
// path and query still byte for byte; never the name localhost (which a
// host file or resolver may point elsewhere, section 8.3), nor any other
// host, nor another spelling of the authority (userinfo, a port that is
// no port number).
func TestLoopbackReturnToAnyPort(t *testing.T) {
	const (
		v4     = "http://127.0.0.1/native/cb"
		v6     = "http://[::1]:8000/cb?app=desk"
		byName = "http://localhost:3000/cb"
		web    = "https://app.example.com/cb"
	)
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{v4, v6, byName, web} })
	pk := newAppPKCE(t)

	ip := 0
	authorize := func(returnTo string) (int, string) {
		ip++
		r := x.authorize(t, pk.query(returnTo), fmt.Sprintf("198.51.100.%d", ip))
		if r.Status == http.StatusFound {
			return r.Status, ""
		}
		return r.Status, r.Problem(t).Code
	}
	for _, ok := range []string{
		"http://127.0.0.1:51234/native/cb",
		"http://127.0.0.1:1/native/cb",
		"http://127.0.0.1:65535/native/cb",
		v4,
		"http://[::1]:49152/cb?app=desk",
		"http://[::1]/cb?app=desk",
		v6,
		byName,
		web,
	} {
		if status, code := authorize(ok); status != http.StatusFound {
			t.Errorf("return_to %s: %d %s, want 302 to the provider", ok, status, code)
		}
	}
	for _, tc := range []struct{ name, returnTo string }{
		{"localhost on another port", "http://localhost:3001/cb"},
		{"localhost without its port", "http://localhost/cb"},
		{"a web app on another port", "https://app.example.com:8443/cb"},
		{"the literal as userinfo", "http://127.0.0.1:80@evil.example/native/cb"},
		{"userinfo before the literal", "http://evil.example@127.0.0.1:5000/native/cb"},
		{"the literal as a subdomain", "http://127.0.0.1.evil.example:5000/native/cb"},
		{"another path", "http://127.0.0.1:5000/native/cb/x"},
		{"a prefix of the path", "http://127.0.0.1:5000/native"},
		{"the path in upper case", "http://127.0.0.1:5000/NATIVE/cb"},
		{"a query added", "http://127.0.0.1:5000/native/cb?x=1"},
		{"a fragment added", "http://127.0.0.1:5000/native/cb#x"},
		{"the other literal's path", "http://127.0.0.1:5000/cb?app=desk"},
		{"the other literal", "http://[::1]:5000/native/cb"},
		{"the v6 query left out", "http://[::1]:5000/cb"},
		{"another loopback address", "http://127.0.0.2:5000/native/cb"},
		{"the v4 literal in v6", "http://[::ffff:127.0.0.1]:5000/native/cb"},
		{"https for a listed http", "https://127.0.0.1:5000/native/cb"},
		{"the scheme in upper case", "HTTP://127.0.0.1:5000/native/cb"},
		{"port 0", "http://127.0.0.1:0/native/cb"},
		{"port past 65535", "http://127.0.0.1:65536/native/cb"},
		{"port with a leading zero", "http://127.0.0.1:05000/native/cb"},
		{"port with a sign", "http://127.0.0.1:+5000/native/cb"},
		{"empty port", "http://127.0.0.1:/native/cb"},
		{"two ports", "http://[::1]:5000:6000/cb?app=desk"},
		{"a name for a port", "http://127.0.0.1:http/native/cb"},
	} {
		if status, code := authorize(tc.returnTo); status != http.StatusBadRequest || code != problem.CodeReturnToNotAllowed {
			t.Errorf("return_to %s (%s): %d %s, want 400 %s", tc.returnTo, tc.name, status, code, problem.CodeReturnToNotAllowed)
		}
	}

	// The sign-in ends at the app's own port, and its code is exchanged
	// there: the port is part of the return_to it is bound to.
	const native = "http://127.0.0.1:50123/native/cb"
	st := x.beginFrom(t, pk.query(native), "198.51.100.200")
	r := x.callback(t, x.approve(t, st), st.cookie)
	loc := r.Header.Get("Location")
	if r.Status != http.StatusFound || !strings.HasPrefix(loc, native+"?code=") {
		t.Fatalf("callback: %d Location %q, want %s?code=...", r.Status, loc, native)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	if r := x.exchangeAt(t, v4, u.Query().Get("code"), pk.verifier); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Errorf("exchange naming the listed URL, not the port the sign-in ended at: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}
	st = x.beginFrom(t, pk.query(native), "198.51.100.201")
	if r := x.exchangeAt(t, native, x.codeAt(t, st), pk.verifier); r.Status != http.StatusOK {
		t.Errorf("exchange at the app's own port: %d %s", r.Status, r.Body)
	}
}
