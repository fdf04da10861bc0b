package app

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// TestNoUserAgentAdded: a request without a User-Agent reaches the app
// without one, and one sent reaches it unchanged. The forwarding client's
// name was written as the User-Agent of every request that had none, so
// the app took the proxy for the client (and streams, forwarded without
// that client, did not do it).
func TestNoUserAgentAdded(t *testing.T) {
	up := newRawUpstream(t)
	e := start(t, envOpt{rules: "upstreams:\n  notes: {url: http://" + up.ln.Addr().String() + ", key_id: app-notes}\n" +
		"routes:\n" +
		"  - {prefix: /notes, upstream: notes, access: protected}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	tok := e.token(nil)
	for _, tt := range []struct {
		name, path, auth, hdr, want string
	}{
		{name: "public", path: "/x"},
		{name: "protected", path: "/notes", auth: tok},
		{name: "sent", path: "/notes", auth: tok, hdr: "User-Agent: curl/8.5\r\n", want: "curl/8.5"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := len(up.all())
			req := "GET " + tt.path + " HTTP/1.1\r\nHost: x\r\n" + tt.hdr
			if tt.auth != "" {
				req += "Authorization: Bearer " + tt.auth + "\r\n"
			}
			if resp := rawSend(t, e.addr, req+"Connection: close\r\n\r\n"); !strings.HasPrefix(resp, "HTTP/1.1 200 ") {
				t.Fatalf("answered %.80q", resp)
			}
			got := up.all()[n:]
			if len(got) != 1 {
				t.Fatalf("forwarded %d requests, want 1", len(got))
			}
			hreq, err := http.ReadRequest(bufio.NewReader(strings.NewReader(got[0])))
			if err != nil {
				t.Fatal(err)
			}
			if ua := hreq.Header.Values("User-Agent"); strings.Join(ua, ",") != tt.want {
				t.Fatalf("User-Agent forwarded as %q, want %q", ua, tt.want)
			}
		})
	}
}
