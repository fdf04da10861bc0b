package app

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// An app upstream at an IPv6 address (url: http://[::1]:port in the rules
// file) is reached: fasthttp's own dial resolves IPv4 only, and every
// request to it was 502 ("couldn't find dns entries").
func TestIPv6Upstream(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: keyRules, ipv6App: true})
	if !strings.HasPrefix(e.up.URL(), "http://[::1]:") {
		t.Fatalf("app URL %s", e.up.URL())
	}
	for range 3 { // on fresh and pooled connections alike
		e.wantStatus(e.do("GET", "/notes/1", e.token(nil), nil), 200)
		e.wantSignedAt(e.up, testenv.AppKey.ID)
		e.up.Reset()
	}
	secret, _ := e.newAPIKey("tenant:read")
	e.wantStatus(e.do("GET", "/notes/1", secret, nil), 200)
	e.wantKeyIdentity(e.up, testenv.AppKey.ID, "tenant:read")
}

// An IDENTITY_URL at an IPv6 address (http://[::1]:port, or https://
// with coreapi's certificate issued for ::1) is reached by the proxy's
// own calls (a projection fetch, an API-key resolution) and by the
// forwarding of coreapi's routes: each failed before (the key set, which
// comes through Go's HTTP client, was fetched, and the proxy was ready).
func TestIPv6IdentityURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"http", false}, {"https", true}} {
		t.Run(tc.name, func(t *testing.T) {
			o := envOpt{rules: keyRules, ipv6Core: true, tlsCore: tc.tls}
			if tc.tls {
				o.prepare = func(e *env, vars map[string]string) { vars["IDENTITY_CA_FILE"] = e.coreCA.WriteCA(t) }
			}
			e := start(t, o)
			if want := tc.name + "://[::1]:"; !strings.HasPrefix(e.core.URL(), want) {
				t.Fatalf("core URL %s, want %s...", e.core.URL(), want)
			}
			e.wantStatus(e.do("GET", "/api/v1/users/me", e.token(nil), nil), 200)
			if n := e.core.ProjectionFetches.Load(); n != 1 {
				t.Fatalf("projection fetches = %d, want 1", n)
			}
			e.wantSigned()

			secret, _ := e.newAPIKey("tenant:read")
			e.wantStatus(e.do("GET", "/notes/1", secret, nil), 200)
			if n := e.core.KeyFetches.Load(); n != 1 {
				t.Fatalf("API-key resolutions = %d, want 1", n)
			}
			e.wantKeyIdentity(e.up, testenv.AppKey.ID, "tenant:read")
		})
	}
}
