package app

import (
	"strconv"
	"strings"
	"testing"
)

// TestNoContentTypeAdded: a request with a body and no Content-Type reaches
// the upstream without one, as it came. fasthttp's writer gave it
// "application/octet-stream", which an app that reads a body without a
// type in its own way (sniffing it, or refusing it with a message of its
// own) then took for the client's; one sent reaches it unchanged.
func TestNoContentTypeAdded(t *testing.T) {
	e, up := startRawApp(t)
	tok := e.token(nil)
	for _, tt := range []struct {
		name, path, auth, hdr, body, want string
	}{
		{name: "public", path: "/x", body: "abc"},
		{name: "protected", path: "/notes", auth: tok, body: "abc"},
		{name: "chunked", path: "/notes", auth: tok, hdr: "Transfer-Encoding: chunked\r\n", body: "3\r\nabc\r\n0\r\n\r\n"},
		{name: "large", path: "/x", body: strings.Repeat("a", 20<<10)},
		{name: "sent", path: "/x", hdr: "Content-Type: text/plain\r\n", body: "abc", want: "text/plain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := "POST " + tt.path + " HTTP/1.1\r\nHost: x\r\n" + tt.hdr
			if tt.auth != "" {
				req += "Authorization: Bearer " + tt.auth + "\r\n"
			}
			if tt.hdr == "" || !strings.Contains(tt.hdr, "chunked") {
				req += "Content-Length: " + strconv.Itoa(len(tt.body)) + "\r\n"
			}
			hreq := forwardedAs(t, e, up, req, tt.body)
			if ct := hreq.Header.Values("Content-Type"); strings.Join(ct, ",") != tt.want {
				t.Fatalf("Content-Type forwarded as %q, want %q", ct, tt.want)
			}
			if hreq.ContentLength != 3 && tt.name != "large" {
				t.Fatalf("Content-Length %d, want 3", hreq.ContentLength)
			}
		})
	}
}
