package app

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestLargeMaxTokenBytes: a bearer token up to MAX_TOKEN_BYTES is read and
// verified, whatever the setting, with ordinary headers beside it. The
// request headers were read into a fixed 16 KiB buffer, so with
// MAX_TOKEN_BYTES=32768 a valid token of 20,000 bytes (a token with many
// claims) was refused 431 "request header fields too large" before the
// proxy looked at it, and one beyond the setting got that 431 too instead
// of 401 invalid_token.
func TestLargeMaxTokenBytes(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"MAX_TOKEN_BYTES": "65536"}})
	sized := func(n int) string {
		tok := e.token(func(c testenv.Claims) { c["pad"] = "" })
		tok = e.token(func(c testenv.Claims) { c["pad"] = strings.Repeat("x", (n-len(tok))*3/4) })
		if len(tok) < n-8 || len(tok) > n+8 {
			t.Fatalf("token of %d bytes, want about %d", len(tok), n)
		}
		return tok
	}
	big := sized(65_500)
	e.wantStatus(e.do("GET", "/api/v1/users/me", sized(20_000), nil), 200)
	e.wantSigned()
	e.wantStatus(e.do("GET", "/api/v1/users/me", big, nil), 200)
	// A few ordinary headers beside it, as a browser sends.
	hdr := map[string]string{"Cookie": strings.Repeat("c", 4000), "User-Agent": strings.Repeat("u", 300), "Accept-Language": "en-GB,en;q=0.9"}
	e.wantStatus(e.do("GET", "/api/v1/users/me", big, hdr), 200)
	// Beyond the setting: a refused token, not headers too large.
	over := sized(66_000)
	e.wantProblem(e.do("GET", "/api/v1/users/me", over, nil), 401, problem.CodeInvalidToken)
}
