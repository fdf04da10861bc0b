package e2e

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestAnonymousChangesWithNATSDownEnforcedAtOnceByTheForwardingProxy: a
// change whose request names no user (a password reset, sent without a
// token; an RFC 7009 revocation of a session's refresh token, sent by its
// holder without client credentials), forwarded by proxy A while NATS is
// down, is enforced by proxy A from the very next request: coreapi's
// answer names the user it invalidated (X-Auth-Invalidated), which proxy A
// evicts before answering, and removes from the answer. The old access
// token, cached at both proxies, is refused at A at once; proxy B keeps
// its cache until NATS is back (up to MAX_STALENESS), then refuses too.
func TestAnonymousChangesWithNATSDownEnforcedAtOnceByTheForwardingProxy(t *testing.T) {
	cases := []struct {
		name string
		// prepare, with NATS up, returns the access token the change ends
		// and the change, sent through proxy A while NATS is down.
		prepare func(t *testing.T, a account) (string, func() (int, http.Header))
		status  int
	}{
		{name: "password reset", status: http.StatusNoContent, prepare: func(t *testing.T, a account) (string, func() (int, http.Header)) {
			expect(t, call(t, "POST", sys.proxyA.url("/api/v1/auth/password/forgot"), "", map[string]string{"email": a.Email}), http.StatusAccepted)
			_, tok := linkParts(t, sys.mail.link(t, a.Email, "Reset your password"))
			return a.Tokens.AccessToken, func() (int, http.Header) {
				r := call(t, "POST", sys.proxyA.url("/api/v1/auth/password/reset"), "",
					map[string]string{"token": tok, "new_password": "a brand new passphrase " + randToken(4)})
				return r.Status, r.Header
			}
		}},
		{name: "refresh token revoked (RFC 7009)", status: http.StatusOK, prepare: func(t *testing.T, a account) (string, func() (int, http.Header)) {
			s := login(t, sys.proxyA, a) // a session of its own: the one revoked
			return s.AccessToken, func() (int, http.Header) {
				req, _ := http.NewRequest(http.MethodPost, sys.proxyA.url("/api/v1/auth/revoke"),
					strings.NewReader(url.Values{"token": {s.RefreshToken}}.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				_, _ = io.Copy(io.Discard, resp.Body)
				return resp.StatusCode, resp.Header
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := signup(t, sys.proxyA)
			tok, change := c.prepare(t, a)
			for _, px := range []*service{sys.proxyA, sys.proxyB} {
				waitCached(t, px, "the token answered from "+px.name+"'s cache", "GET", px.url("/api/v1/users/me"), tok, nil, http.StatusOK)
			}
			before, _, err := proxyMetric(sys.proxyA, localSeries)
			if err != nil {
				t.Fatal(err)
			}

			back := natsDown(t)
			status, h := change()
			if status != c.status {
				t.Fatalf("%s while NATS is down: %d, want %d", c.name, status, c.status)
			}
			if v := h.Values("X-Auth-Invalidated"); len(v) != 0 {
				t.Errorf("X-Auth-Invalidated %q reached the client", v)
			}
			if n, _, err := proxyMetric(sys.proxyA, localSeries); err != nil || n != before+1 {
				t.Errorf("proxy A %s %v -> %v (%v), want one more", localSeries, before, n, err)
			}
			// Proxy A: refused on the very next request, no waiting.
			expectProblem(t, call(t, "GET", sys.proxyA.url("/api/v1/users/me"), tok, nil), http.StatusUnauthorized)
			// Proxy B: not asserted while NATS is down; reported.
			t.Logf("proxy B while NATS is down: %d", call(t, "GET", sys.proxyB.url("/api/v1/users/me"), tok, nil).Status)

			back()
			for _, px := range []*service{sys.proxyB, sys.proxyA} {
				_, got := mustWaitStatus(t, "GET", px.url("/api/v1/users/me"), tok, http.StatusUnauthorized, propagation)
				expectProblem(t, got, http.StatusUnauthorized)
			}
		})
	}
}
