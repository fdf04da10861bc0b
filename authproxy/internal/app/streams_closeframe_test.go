package app

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// rawWSApp is an upstream whose WebSocket handler writes the raw bytes
// its path names (never reading what the client sends) and holds the
// connection open until the test ends.
func rawWSApp(t *testing.T, send map[string][]byte) string {
	t.Helper()
	done := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := c.NetConn().Write(send[r.URL.Path]); err != nil {
			return
		}
		<-done
	}))
	t.Cleanup(func() { close(done); app.Close() })
	return app.URL
}

// rawWS opens a WebSocket through the proxy over a plain connection and
// returns it with its reader, past the 101.
func (e *env) rawWS(t *testing.T, path, tok string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake = %v, %v", resp, err)
	}
	return conn, br
}

// What the client reads of a WebSocket closed on revocation is always
// well formed: the proxy's close frame between two frames, never inside
// one; the connection's end alone (after the part of the frame already
// relayed, which the client reports as an abnormal closure) when the
// upstream was in the middle of a frame; and the connection's end alone
// too when the upstream had already sent its close frame: an endpoint
// sends one close frame, and a second one after it (the proxy's 1008)
// is no WebSocket.
func TestWebSocketRevokedMidFrameOrAfterTheUpstreamsClose(t *testing.T) {
	upClose := []byte{0x88, 0x05, 0x03, 0xe8, 'b', 'y', 'e'} // 1000 "bye"
	// A binary frame of 100000 bytes (64-bit length), of which 1000 are
	// sent.
	partial := append([]byte{0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x86, 0xa0}, bytes.Repeat([]byte{'x'}, 1000)...)
	whole := []byte{0x81, 0x02, 'h', 'i'}
	url := rawWSApp(t, map[string][]byte{"/ws/closed": upClose, "/ws/partial": partial, "/ws/whole": whole})
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /ws, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true}\n"})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	type stream struct {
		name       string
		br         *bufio.Reader
		sent, then []byte
	}
	var ss []stream
	for _, s := range []struct {
		path       string
		sent, then []byte
	}{
		{"/ws/whole", whole, []byte{0x88, 20, 0x03, 0xf0}}, // 1008 "insufficient_scope"
		{"/ws/partial", partial, nil},
		{"/ws/closed", upClose, nil},
	} {
		_, br := e.rawWS(t, s.path, tok)
		got := make([]byte, len(s.sent))
		if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, s.sent) {
			t.Fatalf("%s: relayed %x, %v", s.path, got, err)
		}
		ss = append(ss, stream{s.path, br, s.sent, s.then})
	}
	p := notesProjection()
	p.Permissions = []string{"tenant:read"}
	e.core.SetProjection(p)
	e.publish("auth.invalidate.user." + userID)
	for _, s := range ss {
		rest, err := io.ReadAll(s.br)
		if err != nil {
			t.Fatalf("%s: read after the revocation: %v", s.name, err)
		}
		if s.then != nil {
			if !bytes.HasPrefix(rest, s.then) || string(rest[len(s.then):]) != "insufficient_scope" {
				t.Fatalf("%s: then %q, want a close frame 1008 insufficient_scope", s.name, rest)
			}
			continue
		}
		if len(rest) != 0 {
			t.Fatalf("%s: then %x, want the connection's end alone", s.name, rest)
		}
	}
}
