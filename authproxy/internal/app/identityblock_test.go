package app

import (
	"strings"
	"testing"
)

// A projection value with a line break (a role name here) is refused
// when the projection is read, so it never reaches a header: the request
// is answered 502 and nothing is forwarded. (The identity block checks for
// line breaks again before writing a warm state's values as lines:
// server.TestIdentityLineBreakSetOneByOne.)
func TestLineBreakInProjectionValueRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	p := defaultProjection()
	p.Roles = []string{"member\r\nX-Auth-Roles: admin"}
	e.core.SetProjection(p)
	r := e.do("GET", "/api/v1/users/me", e.token(nil), nil)
	e.wantStatus(r, 502)
	e.wantNothingForwarded()
}

// A warm request's identity headers, written as one block, reach the
// upstream as separate, verifiable headers, each once.
func TestWarmIdentityHeadersEachOnce(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	for range 2 {
		e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
		got := e.wantSigned()
		for name, vs := range got.Headers {
			if strings.HasPrefix(name, "X-Auth-") && len(vs) != 1 {
				t.Fatalf("%s sent %d times: %q", name, len(vs), vs)
			}
		}
		for _, name := range []string{"X-Auth-Key-Id", "X-Auth-Principal", "X-Auth-User-Id", "X-Auth-Tenant-Id", "X-Auth-Session-Id",
			"X-Auth-Roles", "X-Auth-Permissions", "X-Auth-Email-Verified", "X-Auth-Client-Ip", "X-Auth-Timestamp", "X-Auth-Signature"} {
			if len(got.Headers[name]) != 1 {
				t.Fatalf("%s missing upstream: %v", name, got.Headers)
			}
		}
	}
}
