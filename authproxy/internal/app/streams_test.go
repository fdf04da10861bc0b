package app

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// streamApp is an upstream app with WebSocket and event-stream routes: it
// verifies the identity headers of every request with the app key and
// records what it got.
type streamApp struct {
	t    testing.TB
	addr string
	v    *identity.Verifier

	mu   sync.Mutex
	got  []streamSeen
	conn []*websocket.Conn

	// events is what /notes/events sends, one write per value; closing it
	// ends the stream.
	events chan string
	// flood, when set, makes /notes/ws/flood write without end, counting
	// the bytes the proxy accepted.
	flooded atomic.Int64
	// stuck is told of each flood ("websocket", "sse") one of whose writes
	// took nothing for a second: every buffer on the way to a client that
	// reads nothing is full, and the proxy no longer reads the upstream.
	// The flood then writes no more and holds its connection open, as an
	// upstream blocked by the proxy would.
	stuck chan string
	// sseOpen counts the /notes/events and /notes/open-events handlers
	// running: one ends when the proxy closes its connection.
	sseOpen atomic.Int64
	// wsEnded gets the read error that ended each echoing WebSocket.
	wsEnded chan error
}

type streamSeen struct {
	path      string
	host      string
	header    http.Header
	identity  identity.Identity
	verifyErr error
}

func newStreamApp(t testing.TB) *streamApp {
	t.Helper()
	v, err := identity.NewVerifier(append([]identity.Key{testenv.AppKey}, testenv.OtherAppKeys...), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a := &streamApp{t: t, v: v, events: make(chan string, 16), stuck: make(chan string, 16), wsEnded: make(chan error, 16)}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = ln.Addr().String()
	srv := &http.Server{Handler: a, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		a.mu.Lock()
		for _, c := range a.conn {
			c.Close()
		}
		a.mu.Unlock()
	})
	return a
}

func (a *streamApp) rules(extra string) string {
	return "upstreams:\n  notes:\n    url: http://" + a.addr + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true}\n" +
		"  - {prefix: /notes/open-ws, methods: [GET], upstream: notes, access: public, websocket: true}\n" +
		"  - {prefix: /notes/events, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], stream_timeout: 2s}\n" +
		"  - {prefix: /notes, methods: [GET, POST], upstream: notes, access: protected, permissions: [notes:read]}\n" + extra
}

func (a *streamApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	get := func(n string) string { return r.Header.Get(n) }
	body, _ := io.ReadAll(r.Body)
	id, err := a.v.Verify(time.Now(), get, r.Method, r.URL.RequestURI(), sha256Sum(body))
	a.mu.Lock()
	a.got = append(a.got, streamSeen{path: r.URL.Path, host: r.Host, header: r.Header.Clone(), identity: id, verifyErr: err})
	a.mu.Unlock()
	switch {
	case r.URL.Path == "/notes/ws/refuse":
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "not for you")
	case strings.HasPrefix(r.URL.Path, "/notes/ws") || strings.HasPrefix(r.URL.Path, "/notes/open-ws"):
		if !websocket.IsWebSocketUpgrade(r) {
			_, _ = io.WriteString(w, "plain")
			return
		}
		up := websocket.Upgrader{Subprotocols: []string{"chat"}}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if r.URL.Path == "/notes/ws/deaf" {
			// Never reads what the client sends.
			a.mu.Lock()
			a.conn = append(a.conn, c)
			a.mu.Unlock()
			return
		}
		if r.URL.Path == "/notes/ws/linger" {
			// Never closes its end: the proxy must not wait for it.
			a.mu.Lock()
			a.conn = append(a.conn, c)
			a.mu.Unlock()
		} else {
			defer c.Close()
		}
		if r.URL.Path == "/notes/ws/flood" {
			read := make(chan struct{})
			go func() {
				defer close(read)
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
			msg := make([]byte, 256<<10)
			for {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					if a.floodStuck("websocket", err) {
						<-read
					}
					return
				}
				a.flooded.Add(int64(len(msg)))
			}
		}
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				select {
				case a.wsEnded <- err:
				default:
				}
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	case r.URL.Path == "/notes/events/flood":
		// Writes events without end, counting the bytes the proxy took.
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		ev := []byte("data: " + strings.Repeat("x", 16<<10) + "\n\n")
		for {
			_ = rc.SetWriteDeadline(time.Now().Add(time.Second))
			_, err := w.Write(ev)
			if err == nil {
				err = rc.Flush()
			}
			if err != nil {
				if a.floodStuck("sse", err) {
					<-r.Context().Done()
				}
				return
			}
			a.flooded.Add(int64(len(ev)))
		}
	case r.URL.Path == "/notes/events" || r.URL.Path == "/notes/open-events":
		a.sseOpen.Add(1)
		defer a.sseOpen.Add(-1)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev, ok := <-a.events:
				if !ok {
					return
				}
				if _, err := fmt.Fprintf(w, "event: note\ndata: %s\n\n", ev); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	default:
		_, _ = io.WriteString(w, "plain")
	}
}

// floodStuck reports whether err, that of a write of the flood kind, is
// its deadline's, and if so tells stuck.
func (a *streamApp) floodStuck(kind string, err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	select {
	case a.stuck <- kind:
	default:
	}
	return true
}

func (a *streamApp) last(t testing.TB) streamSeen {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.got) == 0 {
		t.Fatal("nothing reached the app")
	}
	return a.got[len(a.got)-1]
}

func (a *streamApp) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got)
}

func sha256Sum(b []byte) [32]byte {
	if len(b) == 0 {
		return identity.EmptyBodySHA256
	}
	return sha256.Sum256(b)
}

func startStreams(t *testing.T, vars map[string]string) (*env, *streamApp) {
	t.Helper()
	a := newStreamApp(t)
	e := start(t, envOpt{rules: a.rules(""), vars: vars})
	e.core.SetProjection(notesProjection())
	return e, a
}

func (e *env) dialWS(path string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: nil}
	return d.Dial("ws://"+e.addr+path, hdr)
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func echo(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	_, p, err := c.ReadMessage()
	if err != nil || string(p) != msg {
		t.Fatalf("echo = %q, %v; want %q", p, err, msg)
	}
}

// wantClosed waits for the proxy's close frame and returns its code and
// text.
func wantClosed(t *testing.T, c *websocket.Conn, within time.Duration) (int, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		t.Fatalf("read = %v, want a close frame", err)
	}
}

func TestWebSocketPassthrough(t *testing.T) {
	e, a := startStreams(t, nil)
	tok := e.token(nil)

	t.Run("bearer in Authorization: spliced, signed", func(t *testing.T) {
		c, resp, err := e.dialWS("/notes/ws?room=1", bearer(tok))
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, resp)
		}
		defer c.Close()
		echo(t, c, "hello")
		echo(t, c, strings.Repeat("x", 100<<10)) // larger than a relay buffer
		got := a.last(t)
		if got.verifyErr != nil || got.identity.UserID != userID || got.identity.KeyID != testenv.AppKey.ID {
			t.Fatalf("app saw %+v, %v", got.identity, got.verifyErr)
		}
		if got.header.Get("Authorization") != "" || got.path != "/notes/ws" {
			t.Fatalf("app got Authorization %q on %s", got.header.Get("Authorization"), got.path)
		}
	})
	t.Run("bearer as a subprotocol: taken out before the app", func(t *testing.T) {
		h := http.Header{"Sec-WebSocket-Protocol": {"chat, bearer." + tok}}
		c, resp, err := e.dialWS("/notes/ws", h)
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, resp)
		}
		defer c.Close()
		if c.Subprotocol() != "chat" {
			t.Fatalf("subprotocol = %q", c.Subprotocol())
		}
		echo(t, c, "hi")
		got := a.last(t)
		if got.verifyErr != nil || got.identity.UserID != userID {
			t.Fatalf("app saw %+v, %v", got.identity, got.verifyErr)
		}
		if p := got.header.Values("Sec-WebSocket-Protocol"); len(p) != 1 || p[0] != "chat" {
			t.Fatalf("app got Sec-WebSocket-Protocol %q", p)
		}
		if got.header.Get("Authorization") != "" {
			t.Fatal("the subprotocol bearer reached the app as Authorization")
		}
	})
	t.Run("a bearer subprotocol on a public route never reaches the app", func(t *testing.T) {
		h := http.Header{"Sec-WebSocket-Protocol": {"chat, bearer." + tok}}
		c, _, err := e.dialWS("/notes/open-ws", h)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echo(t, c, "x")
		got := a.last(t)
		if got.header.Get("Authorization") != "" || strings.Contains(fmt.Sprint(got.header), tok) {
			t.Fatalf("token reached the app: %v", got.header)
		}
		if got.identity.Principal != identity.PrincipalAnonymous || got.verifyErr != nil {
			t.Fatalf("identity = %+v, %v", got.identity, got.verifyErr)
		}
	})
	t.Run("no token: 401, nothing forwarded", func(t *testing.T) {
		n := a.count()
		_, resp, err := e.dialWS("/notes/ws", nil)
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("dial = %v, %v; want 401", err, resp)
		}
		if a.count() != n {
			t.Fatal("refused upgrade reached the app")
		}
	})
	t.Run("missing permission: 403", func(t *testing.T) {
		p := notesProjection()
		p.Permissions = []string{"tenant:read"}
		e.core.SetProjection(p)
		e.publishAndWait("auth.invalidate.user." + userID)
		defer func() {
			e.core.SetProjection(notesProjection())
			e.publishAndWait("auth.invalidate.user." + userID)
		}()
		_, resp, err := e.dialWS("/notes/ws", bearer(tok))
		if err == nil || resp == nil || resp.StatusCode != 403 {
			t.Fatalf("dial = %v, %v; want 403", err, resp)
		}
	})
	t.Run("identity headers smuggled in the upgrade are replaced", func(t *testing.T) {
		h := bearer(tok)
		h.Set("X-Auth-User-Id", "evil")
		h.Set("X-Auth-Permissions", "admin:all")
		c, _, err := e.dialWS("/notes/ws", h)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got := a.last(t)
		if got.verifyErr != nil || got.header.Values("X-Auth-User-Id")[0] != userID || len(got.header.Values("X-Auth-User-Id")) != 1 ||
			strings.Contains(got.header.Get("X-Auth-Permissions"), "admin") {
			t.Fatalf("app got %v (%v)", got.header, got.verifyErr)
		}
	})
	t.Run("upgrade on a route without websocket: plain request, never spliced", func(t *testing.T) {
		_, resp, err := e.dialWS("/notes/other", bearer(tok))
		if !errors.Is(err, websocket.ErrBadHandshake) || resp.StatusCode != 200 {
			t.Fatalf("dial = %v, %v; want a plain 200", err, resp)
		}
		got := a.last(t)
		if got.header.Get("Upgrade") != "" || strings.Contains(strings.ToLower(got.header.Get("Connection")), "upgrade") {
			t.Fatalf("upgrade headers reached the app: %v", got.header)
		}
	})
	t.Run("Upgrade: h2c refused", func(t *testing.T) {
		n := a.count()
		r := e.raw("GET /notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
			"\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
		e.wantProblem(r, 400, problem.CodeBadRequest)
		if a.count() != n {
			t.Fatal("h2c request reached the app")
		}
	})
	t.Run("upgrade with a body refused", func(t *testing.T) {
		n := a.count()
		r := e.raw("GET /notes/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
			"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n\r\nhello")
		e.wantProblem(r, 400, problem.CodeBadRequest)
		if a.count() != n {
			t.Fatal("upgrade with a body reached the app")
		}
	})
	t.Run("upstream refusing the upgrade: its answer passed through", func(t *testing.T) {
		_, resp, err := e.dialWS("/notes/ws/refuse", bearer(tok))
		if !errors.Is(err, websocket.ErrBadHandshake) || resp.StatusCode != 403 {
			t.Fatalf("dial = %v, %v; want the app's 403", err, resp)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "not for you" {
			t.Fatalf("body = %q", b)
		}
		testenv.Eventually(t, func() error { return testenv.Want("open streams after a refused upgrade", e.app.Streams.Open(), 0) })
	})
	t.Run("client going away ends the splice", func(t *testing.T) {
		c, _, err := e.dialWS("/notes/ws/linger", bearer(tok))
		if err != nil {
			t.Fatal(err)
		}
		echo(t, c, "x")
		if e.app.Streams.Open() != 1 {
			t.Fatalf("open = %d", e.app.Streams.Open())
		}
		c.UnderlyingConn().Close()
		testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
	})
}

// A client that never reads holds the upstream back (TCP backpressure
// through fixed buffers): the proxy does not buffer what the upstream
// sends.
func TestWebSocketClientNeverReads(t *testing.T) {
	e, a := startStreams(t, map[string]string{"STREAM_BUFFER_BYTES": "8192"})
	c, _, err := e.dialWS("/notes/ws/flood", bearer(e.token(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Let the upstream write until it blocks.
	floodBlocked(t, a, 1)
	// Socket buffers on three hops hold a few MiB at most; anything like
	// the whole flood would mean the proxy buffers.
	if n := a.flooded.Load(); n > 48<<20 {
		t.Fatalf("upstream wrote %d MiB to a client that reads nothing", n>>20)
	}
	t.Logf("upstream wrote %d KiB before blocking", a.flooded.Load()>>10)
}

// A half-closed client (FIN after its last frame) still gets the answer
// to what it sent.
func TestWebSocketHalfClose(t *testing.T) {
	e, _ := startStreams(t, nil)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET /notes/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+e.token(nil)+
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		b, _ := io.ReadAll(resp.Body)
		t.Logf("%s", b)
		t.Fatalf("handshake = %v, %v", resp, err)
	}
	// One masked text frame "ping", then FIN.
	frame := []byte{0x81, 0x84, 1, 2, 3, 4, 'p' ^ 1, 'i' ^ 2, 'n' ^ 3, 'g' ^ 4}
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("echo after half-close: %v", err)
	}
	if got[0] != 0x81 || got[1] != 4 || string(got[2:]) != "ping" {
		t.Fatalf("echo frame = %x", got)
	}
}

// An upstream that stops reading what the client sends, for longer than
// WRITE_TIMEOUT, ends the WebSocket (close 1011 error): the proxy went on
// reading the client's frames and dropping them, with the stream open and
// the upstream's direction still relayed, so the client's messages were
// lost without a word.
func TestWebSocketUpstreamThatStopsReadingEndsIt(t *testing.T) {
	e, _ := startStreams(t, map[string]string{"WRITE_TIMEOUT": "300ms"})
	c := e.openWS(t, "/notes/ws/deaf", e.token(nil))
	go func() {
		msg := make([]byte, 64<<10)
		for c.WriteMessage(websocket.BinaryMessage, msg) == nil {
		}
	}()
	if code, text := wantClosed(t, c, 10*time.Second); code != websocket.CloseInternalServerErr || text != "error" {
		t.Fatalf("close = %d %q", code, text)
	}
	testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
	if n := metricCount(t, e, `authproxy_streams_closed_total{kind="websocket",reason="error"}`); n != 1 {
		t.Fatalf("closed for error = %v, want 1", n)
	}
}

// An upgrade whose client also asks to close the connection
// ("Connection: close, Upgrade") is spliced like any other: the proxy
// answered 101 and then closed the client's connection without splicing,
// leaving the upstream's WebSocket open, and the stream counted against
// the caps, for UPSTREAM_TIMEOUT, with no client holding anything.
func TestWebSocketUpgradeWithConnectionClose(t *testing.T) {
	e, _ := startStreams(t, nil)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET /notes/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+e.token(nil)+
		"\r\nConnection: close, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake = %v, %v", resp, err)
	}
	if v := resp.Header.Values("Connection"); len(v) != 1 || !strings.EqualFold(v[0], "upgrade") || resp.Header.Get("X-Request-Id") == "" {
		t.Fatalf("101 header %v", resp.Header)
	}
	frame := []byte{0x81, 0x84, 1, 2, 3, 4, 'p' ^ 1, 'i' ^ 2, 'n' ^ 3, 'g' ^ 4}
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(br, got); err != nil || got[0] != 0x81 || string(got[2:]) != "ping" {
		t.Fatalf("echo = %x, %v", got, err)
	}
	conn.Close()
	testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
}

// TestStreamStripPrefixRewriteHost: a stream route with strip_prefix sends
// the path without its prefix on the upgrade and on the event stream's
// request, signed as sent, and an upstream with rewrite_host gets its own
// host as Host there too (the client's in X-Forwarded-Host).
func TestStreamStripPrefixRewriteHost(t *testing.T) {
	a := newStreamApp(t)
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: http://" + a.addr + "\n    key_id: app-notes\n    rewrite_host: true\nroutes:\n" +
		"  - {prefix: /x, methods: [GET], upstream: notes, access: protected, websocket: true, strip_prefix: true}\n" +
		"  - {prefix: /y, methods: [GET], upstream: notes, access: protected, stream_timeout: 2s, strip_prefix: true}\n"})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	want := func(kind, path string) {
		t.Helper()
		s := a.last(t)
		if s.path != path || s.verifyErr != nil || s.identity.UserID != userID {
			t.Fatalf("%s: app got %s (verify %v, identity %+v), want %s signed", kind, s.path, s.verifyErr, s.identity, path)
		}
		if s.host != a.addr || s.header.Get("X-Forwarded-Host") != e.addr {
			t.Fatalf("%s: Host %q, X-Forwarded-Host %q; want %q, %q", kind, s.host, s.header.Get("X-Forwarded-Host"), a.addr, e.addr)
		}
	}
	c, resp, err := e.dialWS("/x/notes/ws/a?q=1", bearer(tok))
	if err != nil {
		t.Fatalf("dial: %v, %v", err, resp)
	}
	echo(t, c, "hi")
	c.Close()
	want("websocket", "/notes/ws/a")
	s := e.openSSE(t, "/y/notes/events?z=2", tok)
	a.events <- "one"
	if got := s.next(t, 5*time.Second); got != "one" {
		t.Fatalf("event = %q", got)
	}
	want("event stream", "/notes/events")
}

// A WebSocket whose upstream ended ends within the second the client gets
// to answer the close (its connection half-closed), on a route with a
// stream_timeout too, and is counted as ended by the upstream: the relay of
// the client's bytes took that second for a silence and waited on for the
// rest of stream_timeout, the stream counted against the caps meanwhile,
// and then closed it as idle.
func TestWebSocketEndsWithItsUpstreamBeforeStreamTimeout(t *testing.T) {
	url := cannedUpstream(t, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x88\x02\x03\xe8")
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /ws, upstream: notes, access: public, websocket: true, stream_timeout: 20s}\n"})
	conn, br := dialProxy(t, e.addr)
	if _, err := io.WriteString(conn, wsUpgrade("/ws")); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake = %v, %v", resp, err)
	}
	// The upstream's close frame, then the proxy's half-close.
	if b, err := io.ReadAll(br); err != nil || string(b) != "\x88\x02\x03\xe8" {
		t.Fatalf("after the 101: %q, %v", b, err)
	}
	eventually.Within(t, 4*time.Second, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
	if n := metricCount(t, e, `authproxy_streams_closed_total{kind="websocket",reason="upstream"}`); n != 1 {
		t.Fatalf("closed by the upstream = %v, want 1", n)
	}
}
