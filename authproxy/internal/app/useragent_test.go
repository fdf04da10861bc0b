package app

import (
	"strings"
	"testing"
)

// TestNoUserAgentAdded: a request without a User-Agent reaches the app
// without one, and one sent reaches it unchanged. The forwarding client's
// name was written as the User-Agent of every request that had none, so
// the app took the proxy for the client (and streams, forwarded without
// that client, did not do it).
func TestNoUserAgentAdded(t *testing.T) {
	t.Parallel()
	e, up := startRawApp(t)
	tok := e.token(nil)
	for _, tt := range []struct {
		name, path, auth, hdr, want string
	}{
		{name: "public", path: "/x"},
		{name: "protected", path: "/notes", auth: tok},
		{name: "sent", path: "/notes", auth: tok, hdr: "User-Agent: curl/8.5\r\n", want: "curl/8.5"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := "GET " + tt.path + " HTTP/1.1\r\nHost: x\r\n" + tt.hdr
			if tt.auth != "" {
				req += "Authorization: Bearer " + tt.auth + "\r\n"
			}
			hreq := forwardedAs(t, e, up, req, "")
			if ua := hreq.Header.Values("User-Agent"); strings.Join(ua, ",") != tt.want {
				t.Fatalf("User-Agent forwarded as %q, want %q", ua, tt.want)
			}
		})
	}
}
