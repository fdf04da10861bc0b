package app

import (
	"testing"
)

// The request line reaches the upstream exactly as signed, whether the
// proxy keeps the client's (origin form, nothing to normalize) or writes
// its own (absolute form, which may carry a host and userinfo of its own);
// the Host header stays the client's but for an absolute-form target,
// whose authority it becomes (RFC 9112 section 3.2.2), and userinfo never
// becomes an Authorization header upstream.
func TestForwardedRequestLine(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	for _, tc := range []struct {
		name, line, host, wantURI, wantHost string
	}{
		{"origin form kept", "/api/v1/users/me?a=%41&b=c+d&", "Proxy.Example:8080", "/api/v1/users/me?a=%41&b=c+d&", "Proxy.Example:8080"},
		{"origin form normalized", "/api/v1/./users//me?a=1", "x", "/api/v1/users/me?a=1", "x"},
		// An empty query is none: a verifier that reads the target as a
		// path and a query (ASGI's raw_path and query_string) cannot tell
		// "/me?" from "/me", so neither may be signed for the other.
		{"empty query dropped", "/api/v1/users/me?", "x", "/api/v1/users/me", "x"},
		// Bytes no request-target may carry raw: percent-encoded, as a
		// browser sends them (Node's parser refuses them with 400).
		{"query outside ASCII encoded", "/api/v1/users/me?q=caf\xc3\xa9&e=%C3%A9", "x", "/api/v1/users/me?q=caf%C3%A9&e=%C3%A9", "x"},
		{"absolute form", "http://user:pw@Other.Example/api/v1/users/me?a=1", "x", "/api/v1/users/me?a=1", "other.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			e.core.Reset()
			r := e.raw("GET " + tc.line + " HTTP/1.1\r\nHost: " + tc.host + "\r\nAuthorization: Bearer " + e.token(nil) + "\r\nConnection: close\r\n\r\n")
			e.wantStatus(r, 200)
			got := e.wantSigned()
			if got.URI != tc.wantURI {
				t.Fatalf("forwarded URI = %q, want %q", got.URI, tc.wantURI)
			}
			if h := got.Headers["Host"]; len(h) != 1 || h[0] != tc.wantHost {
				t.Fatalf("forwarded Host = %q, want %q", h, tc.wantHost)
			}
			if a := got.Headers["Authorization"]; len(a) != 0 {
				t.Fatalf("Authorization forwarded: %q", a)
			}
		})
	}
}
