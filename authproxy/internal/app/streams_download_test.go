package app

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// holdingUpstream answers each request with the header of answer and the
// first bytes of its body, then sends nothing more and keeps its
// connection open until the proxy closes it; sent is told of each answer
// written.
func holdingUpstream(t *testing.T, answer func(path string) string) (url string, sent <-chan string) {
	t.Helper()
	ch := make(chan string, 16)
	addr := serveRaw(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, answer(req.URL.Path)); err != nil {
			return
		}
		ch <- req.URL.Path
		_, _ = io.Copy(io.Discard, c) // until the proxy closes it
	})
	return "http://" + addr, ch
}

// TestStreamEndedByTheProxyIsCutShortUnlessAnEventStream: an answer on a
// stream route that the proxy ends itself before the upstream's body
// ended (its stream_timeout passed in silence, its caller's access
// withdrawn, its token expired, a shutdown) reaches the client cut short,
// as one the upstream cuts short does: an HTTP/1.1 client gets no last
// chunk, an HTTP/1.0 one a reset. It ended with the last chunk, or a
// clean close, so that half a download (here 10 of its 100 bytes) read as
// the whole file. An event stream (text/event-stream) still ends cleanly:
// its client reconnects and is authorized anew.
func TestStreamEndedByTheProxyIsCutShortUnlessAnEventStream(t *testing.T) {
	const download = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n0123456789"
	const chunked = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
	const events = "HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
	url, sent := holdingUpstream(t, func(path string) string {
		switch {
		case strings.HasSuffix(path, "/events"):
			return events
		case strings.HasSuffix(path, "/chunked"):
			return chunked
		}
		return download
	})
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /idle, methods: [GET], upstream: notes, access: public, stream_timeout: 1s}\n" +
		"  - {prefix: /files, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], stream_timeout: 1h}\n"})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	restore := func() {
		e.core.SetProjection(notesProjection())
		e.publishAndWait("auth.invalidate.user." + userID)
	}
	// open sends the request and reads the answer's header and first ten
	// bytes (what the upstream sent): the stream is open.
	open := func(t *testing.T, path, version string) (io.Reader, net.Conn) {
		t.Helper()
		conn, br := dialProxy(t, e.addr)
		fmt.Fprintf(conn, "GET %s %s\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, version, tok)
		select {
		case <-sent:
		case <-time.After(10 * time.Second):
			t.Fatal("the request did not reach the upstream")
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		first := make([]byte, 10)
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "0123456789" {
			t.Fatalf("first bytes %q, %v", first, err)
		}
		_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
		return resp.Body, conn
	}
	// wantEnd reads the rest of the answer: nothing more, then a clean end
	// or one that tells the answer was cut short.
	wantEnd := func(t *testing.T, body io.Reader, version string, cut bool) {
		t.Helper()
		rest, err := io.ReadAll(body)
		if len(rest) != 0 {
			t.Fatalf("more bytes after the close: %q", rest)
		}
		// An HTTP/1.0 client reads until the close, or the upstream's
		// Content-Length when it sent one.
		got := errors.Is(err, io.ErrUnexpectedEOF) || version == "HTTP/1.0" && errors.Is(err, syscall.ECONNRESET)
		if got != cut || !cut && err != nil {
			t.Fatalf("the answer ended with %v, want cut short %v", err, cut)
		}
	}
	for _, version := range []string{"HTTP/1.1", "HTTP/1.0"} {
		for _, kind := range []string{"download", "chunked", "events"} {
			cut := kind != "events"
			t.Run(version+" "+kind+" idle", func(t *testing.T) {
				body, _ := open(t, "/idle/"+kind, version)
				wantEnd(t, body, version, cut)
			})
			t.Run(version+" "+kind+" access withdrawn", func(t *testing.T) {
				defer restore()
				body, _ := open(t, "/files/"+kind, version)
				p := notesProjection()
				p.Permissions = []string{"tenant:read"}
				e.core.SetProjection(p)
				e.publish("auth.invalidate.user." + userID)
				wantEnd(t, body, version, cut)
			})
		}
	}
	testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
}
