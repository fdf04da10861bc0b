package app

import (
	"strings"
	"testing"
)

// TestCookiesForwardedAsSent: the client's Cookie field reaches the app as
// the client sent it, on public and protected routes alike. fasthttp parses
// a request's cookies as soon as its fields are iterated (which the proxy
// does on every request), and writes the parsed cookies back: a cookie
// whose value holds '"' or '\' was dropped (Python's http.cookies quotes a
// value with a comma or a space and escapes it as "a\054b": Django's
// messages cookie, say), a quoted value lost its quotes, and spaces were
// trimmed. Several Cookie lines are joined with "; " (RFC 9113 section
// 8.2.3, as HTTP/2 to HTTP/1.1 gateways join them).
func TestCookiesForwardedAsSent(t *testing.T) {
	t.Parallel()
	e, up := startRawApp(t)
	tok := e.token(nil)
	const quoted = `a=1; messages="9f2c$[[\"__json_message\"\0540\05420\054\"Saved\"]]"; q="x y"; flag;  sp = v `
	for _, tt := range []struct {
		name, path, auth string
		lines            []string
		want             string
	}{
		{"public", "/x", "", []string{quoted}, quoted},
		{"protected", "/notes", tok, []string{quoted}, quoted},
		{"public two lines", "/x", "", []string{`a="1"`, `b=\2`}, `a="1"; b=\2`},
		{"protected two lines", "/notes/1", tok, []string{`a="1"`, `b=\2`}, `a="1"; b=\2`},
		{"plain", "/x", "", []string{"a=1; b=2"}, "a=1; b=2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := "GET " + tt.path + " HTTP/1.1\r\nHost: x\r\n"
			for _, l := range tt.lines {
				req += "Cookie: " + l + "\r\n"
			}
			if tt.auth != "" {
				req += "Authorization: Bearer " + tt.auth + "\r\n"
			}
			hreq := forwardedAs(t, e, up, req, "")
			if c := hreq.Header.Values("Cookie"); len(c) != 1 || c[0] != strings.TrimSpace(tt.want) {
				t.Fatalf("Cookie forwarded as %q, want %q", c, tt.want)
			}
		})
	}
}
