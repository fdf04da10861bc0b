package app

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// TestCredentialInPathNotRecorded: a path segment that holds one of our
// credentials (an API key, an access token, a refresh or one-time link
// token: 256 random bits in base64url) is recorded as "[redacted]" in the
// access line, buffered or through the logger, and in the span's
// url.path, while the request is forwarded with its path as it came. The
// access log names the path without its query so that a mailed link's
// token is recorded nowhere; a client (or an app's links) may put the
// same secrets in the path, and they were written out whole.
func TestCredentialInPathNotRecorded(t *testing.T) {
	t.Parallel()
	sum := sha256.Sum256([]byte("a refresh token"))
	refresh := base64.RawURLEncoding.EncodeToString(sum[:])
	key := "tg_abcdefghij012345_Q7xk2LmN9pRsT4vWyZ1aBcDeFgHiJkLmNoPqRsTuVwX"
	if len(key) != 63 || len(refresh) != 43 {
		t.Fatalf("key of %d bytes, refresh token of %d", len(key), len(refresh))
	}
	for _, slogAccess := range []bool{false, true} {
		t.Run(fmt.Sprintf("slog=%v", slogAccess), func(t *testing.T) {
			p, exp := memTracer(t, "always_on")
			e := start(t, envOpt{rules: notesRules, tracing: p, slogAccess: slogAccess, vars: map[string]string{"ACCESS_LOG": "true"}})
			jwt := e.token(nil)
			for _, tc := range []struct{ name, cred, secret string }{
				{"api key", key, key[len("tg_abcdefghij012345_"):]},
				{"access token", jwt, jwt[strings.LastIndexByte(jwt, '.')+1:]},
				{"refresh token", refresh, refresh},
				{"api key inside a segment", "key=" + key + ",v=1", key[len("tg_abcdefghij012345_"):]},
			} {
				exp.Reset()
				path := "/notes/public/x/" + tc.cred
				e.wantStatus(e.do("GET", path, "", nil), 200)
				if got := e.up.Last(t).URI; got != path {
					t.Fatalf("%s: forwarded %s, want %s", tc.name, got, path)
				}
				if got := attr(spanNamed(t, exp.GetSpans(), "GET /notes/public"), "url.path"); got != "/notes/public/x/[redacted]" {
					t.Errorf("%s: span url.path %q", tc.name, got)
				}
				testenv.Eventually(t, func() error {
					lines := accessLines(t, e)
					if len(lines) == 0 {
						return fmt.Errorf("no access line")
					}
					return testenv.Want("access line path", lines[len(lines)-1]["path"], any("/notes/public/x/[redacted]"))
				})
				if strings.Contains(e.logs.String(), tc.secret) {
					t.Errorf("%s written to the log:\n%s", tc.name, e.logs.String())
				}
			}
			// What only looks like one stays: ids, slugs, digests.
			for _, path := range []string{"/notes/public/3f2504e0-4f89-41d3-9a5c-0305e82c3301",
				"/notes/public/" + strings.Repeat("a-long-lower-case-slug-", 3),
				"/notes/public/" + fmt.Sprintf("%x", sum)} {
				e.wantStatus(e.do("GET", path, "", nil), 200)
				testenv.Eventually(t, func() error {
					lines := accessLines(t, e)
					return testenv.Want("access line path", lines[len(lines)-1]["path"], any(path))
				})
			}
		})
	}
}
