package app

import (
	"io"
	"net/http"
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
	t.Parallel()
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

// TestNoContentTypeAddedToAnswers: an upstream's answer with a body and no
// Content-Type reaches the client without one, as it came, on every kind
// of route (and to a HEAD, whose answer announces a body). fasthttp's
// writer named it "text/plain; charset=utf-8": a client then read a binary
// download as UTF-8 text, or took the body for text where it would have
// sniffed its type or refused it. One the upstream sent reaches the client
// unchanged.
func TestNoContentTypeAddedToAnswers(t *testing.T) {
	t.Parallel()
	answers := map[string]string{
		"/bare":  "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"/typed": "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: 3\r\n\r\nabc",
	}
	e := start(t, envOpt{rules: statusRules(scriptedUpstream(t, func(path string) string { return answers[path] }))})
	const upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, tt := range []struct {
		name, method, path, hdr, want string
	}{
		{name: "plain", method: "GET", path: "/bare"},
		{name: "plain HEAD", method: "HEAD", path: "/bare"},
		{name: "stream", method: "GET", path: "/s/bare"},
		{name: "refused upgrade", method: "GET", path: "/ws/bare", hdr: upgrade},
		{name: "sent", method: "GET", path: "/typed", want: "application/pdf"},
		{name: "sent on a stream", method: "GET", path: "/s/typed", want: "application/pdf"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, br := dialProxy(t, e.addr)
			if _, err := io.WriteString(conn, tt.method+" "+tt.path+" HTTP/1.1\r\nHost: x\r\n"+tt.hdr+"Connection: close\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: tt.method})
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || tt.method == "GET" && string(body) != "abc" {
				t.Fatalf("answer %d %q, want the upstream's 200 abc", resp.StatusCode, body)
			}
			if ct := resp.Header.Values("Content-Type"); strings.Join(ct, ",") != tt.want {
				t.Fatalf("Content-Type %q, want %q", ct, tt.want)
			}
		})
	}
}
