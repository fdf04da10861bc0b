package app

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// hopAnswer is an upstream's answer that carries what belongs to its own
// connection with the proxy: a Connection field that closes it and names
// another field, Keep-Alive, Proxy-Connection, Upgrade and an announced
// trailer (the proxy forwards no trailers).
const hopAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Upstream-Hop\r\n" +
	"X-Upstream-Hop: internal\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n" +
	"Trailer: X-Checksum\r\nX-App: kept\r\n\r\nok"

// dialProxy opens a raw connection to the proxy at addr, closed when the
// test ends, with a deadline that bounds a test that would hang.
func dialProxy(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn, bufio.NewReader(conn)
}

// cannedUpstream answers every request, its header read, with answer as
// it is, then closes the connection; it returns its URL.
func cannedUpstream(t *testing.T, answer string) string {
	return scriptedUpstream(t, func(string) string { return answer })
}

// scriptedUpstream answers each request, its header read, with
// answer(its path), written at once (header and first bytes of what
// follows in one write), then closes the connection; it returns its URL.
func scriptedUpstream(t *testing.T, answer func(path string) string) string {
	t.Helper()
	addr := serveRaw(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		path := ""
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if path == "" {
				if f := strings.Fields(line); len(f) > 1 {
					path = f[1]
				}
			}
			if line == "\r\n" {
				break
			}
		}
		_, _ = io.WriteString(c, answer(path))
	})
	return "http://" + addr
}

// The fields of an upstream's answer that belong to its connection with
// the proxy (RFC 9110 section 7.6.1) never reach the client: neither the
// hop-by-hop ones nor those its Connection names, and its wish to close
// that connection does not close the client's. Stream routes too.
func TestUpstreamHopByHopAnswerFieldsRemoved(t *testing.T) {
	t.Parallel()
	url := cannedUpstream(t, hopAnswer)
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /events, upstream: notes, access: public, stream_timeout: 10s}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	check := func(t *testing.T, resp *http.Response) {
		t.Helper()
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("status %d, body %q", resp.StatusCode, body)
		}
		for _, name := range []string{"X-Upstream-Hop", "Keep-Alive", "Proxy-Connection", "Upgrade", "Trailer"} {
			if v, ok := resp.Header[name]; ok {
				t.Errorf("%s: %v reached the client", name, v)
			}
		}
		if len(resp.Trailer) > 0 { // net/http moves an announced Trailer there
			t.Errorf("Trailer: %v announced to the client", resp.Trailer)
		}
		for _, v := range resp.Header.Values("Connection") {
			if strings.Contains(strings.ToLower(v), "x-upstream-hop") {
				t.Errorf("Connection: %s reached the client", v)
			}
		}
		if resp.Header.Get("X-App") != "kept" {
			t.Errorf("X-App = %q, want the upstream's end-to-end field kept", resp.Header.Get("X-App"))
		}
	}
	t.Run("forwarded", func(t *testing.T) {
		conn, br := dialProxy(t, e.addr)
		// Two requests on one kept-alive connection: the upstream's close
		// is its own connection's, not the client's.
		for i := range 2 {
			if _, err := io.WriteString(conn, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			check(t, resp)
			if resp.Close {
				t.Fatalf("request %d: the proxy closes the client's connection because the upstream closed its own", i)
			}
		}
	})
	t.Run("stream route", func(t *testing.T) {
		resp, err := e.client.Get("http://" + e.addr + "/events")
		if err != nil {
			t.Fatal(err)
		}
		check(t, resp)
	})
}

// Every spelling of a hop-by-hop field in an upstream's answer is removed
// ('_' for '-' in any case, as headers.SanitizeResponse reads the names),
// however many of them the answer carries: one pass per hop-by-hop name,
// nine, left the fields of a tenth spelling (here Proxy-Authenticate,
// Upgrade and the upstream's "Connection: close", which then closed the
// client's connection) to reach the client.
func TestUpstreamHopByHopAnswerFieldsRemovedInEverySpelling(t *testing.T) {
	t.Parallel()
	url := cannedUpstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"+
		"Keep_Alive: a\r\nProxy_Connection: b\r\nProxy_Authenticate: c\r\nProxy_Authorization: d\r\nTransfer_Encoding: e\r\n"+
		"Te: f\r\nKeep-Alive: g\r\nProxy-Connection: h\r\nProxy-Authorization: i\r\n"+
		"Proxy-Authenticate: Basic realm=\"upstream\"\r\nUpgrade: h2c\r\nConnection: close\r\nX-App: kept\r\n\r\nok")
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /events, upstream: notes, access: public, stream_timeout: 10s}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	for _, path := range []string{"/x", "/events"} {
		conn, br := dialProxy(t, e.addr)
		if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("%s: status %d, body %q", path, resp.StatusCode, body)
		}
		for k, v := range resp.Header {
			switch strings.ToLower(strings.ReplaceAll(k, "_", "-")) {
			case "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "transfer-encoding", "te", "upgrade":
				t.Errorf("%s: %s: %v reached the client", path, k, v)
			}
		}
		if path == "/x" && resp.Close {
			t.Errorf("%s: the proxy closes the client's connection because the upstream closed its own", path)
		}
		if resp.Header.Get("X-App") != "kept" {
			t.Errorf("%s: X-App = %q, want the upstream's end-to-end field kept", path, resp.Header.Get("X-App"))
		}
	}
}

// An app's diagnostic answer fields (its trace and span ids in
// traceresponse and its tracer's own formats, its Server-Timing) stop at
// the proxy, on forwarded and stream routes alike; its other fields pass.
func TestUpstreamDiagnosticAnswerFieldsRemoved(t *testing.T) {
	t.Parallel()
	url := cannedUpstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"+
		"traceresponse: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"+
		"Server-Timing: db;dur=53;desc=\"orders-primary\", cache;dur=2\r\nServer-Timing: total;dur=61\r\n"+
		"X-Amzn-Trace-Id: Root=1-67891233-abcdef012345678912345678\r\nX-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\n"+
		"uber-trace-id: 80f198ee56343ba8:e457b5a2e4d86bd1:0:1\r\nX-App: kept\r\n\r\nok")
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /events, upstream: notes, access: public, stream_timeout: 10s}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	for _, path := range []string{"/x", "/events"} {
		resp, err := e.client.Get("http://" + e.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("%s: status %d, body %q", path, resp.StatusCode, body)
		}
		for _, name := range []string{"Traceresponse", "Server-Timing", "X-Amzn-Trace-Id", "X-B3-Traceid", "Uber-Trace-Id"} {
			if v, ok := resp.Header[name]; ok {
				t.Errorf("%s: %s: %v reached the client", path, name, v)
			}
		}
		if resp.Header.Get("X-App") != "kept" {
			t.Errorf("%s: X-App = %q, want the app's other fields kept", path, resp.Header.Get("X-App"))
		}
	}
}

// An upstream's 101 to a WebSocket upgrade is cleaned as its other answers
// are: the hop-by-hop fields and those its Connection names are removed,
// the status line is the proxy's, and its wish to close its connection is
// not passed on; the 101 says that the connection is upgraded, to the
// upstream's protocol, with the upstream's end-to-end fields. They reached
// the client as the upstream wrote them, with a second Connection field,
// "close", from an HTTP/1.0 upstream.
func TestUpstreamSwitchingProtocolsCleaned(t *testing.T) {
	t.Parallel()
	url := cannedUpstream(t, "HTTP/1.0 101 Switching \x01Protocols\r\nConnection: Upgrade, X-Upstream-Hop\r\nUpgrade: websocket\r\n"+
		"X-Upstream-Hop: internal\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\n"+
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-App: kept\r\n\r\n")
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /ws, upstream: notes, access: public, websocket: true}\n"})
	conn, _ := dialProxy(t, e.addr)
	var raw strings.Builder
	br := bufio.NewReader(io.TeeReader(conn, &raw))
	if _, err := io.WriteString(conn, wsUpgrade("/ws")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, line := raw.String(), "HTTP/1.1 101 Switching Protocols\r\n"; !strings.HasPrefix(got, line) {
		t.Fatalf("answer %q, want it to start with %q", got[:min(len(got), 40)], line)
	}
	for _, name := range []string{"X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate", "Trailer"} {
		if v, ok := resp.Header[name]; ok {
			t.Errorf("%s: %v reached the client", name, v)
		}
	}
	if c := resp.Header.Values("Connection"); len(c) != 1 || c[0] != "Upgrade" {
		t.Errorf("Connection: %q, want Upgrade alone", c)
	}
	if resp.Header.Get("Upgrade") != "websocket" || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" ||
		resp.Header.Get("X-App") != "kept" || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("101 header %v", resp.Header)
	}
}

// An answer without a body (204, the status that tells an EventSource to
// stop reconnecting, and 304) on a stream route is passed on as any other
// answer, and the client's connection stays usable; a 101 to a request
// that asked for no upgrade is refused with 502. The proxy streamed a body
// that was not there and stopped with a nil pointer: the process ended.
func TestStreamRouteAnswerWithoutBody(t *testing.T) {
	t.Parallel()
	up := func(answer, key string) string {
		return "    url: " + cannedUpstream(t, answer) + "\n    key_id: " + key + "\n"
	}
	e := start(t, envOpt{rules: "upstreams:\n" +
		"  nocontent:\n" + up("HTTP/1.1 204 No Content\r\nX-App: kept\r\n\r\n", testenv.AppKey.ID) +
		"  notmodified:\n" + up("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nX-App: kept\r\n\r\n", testenv.OtherAppKeys[0].ID) +
		"  switched:\n" + up("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nnot http", testenv.OtherAppKeys[1].ID) +
		"routes:\n" +
		"  - {prefix: /nocontent, upstream: nocontent, access: public, stream_timeout: 10s}\n" +
		"  - {prefix: /notmodified, upstream: notmodified, access: public, stream_timeout: 10s}\n" +
		"  - {prefix: /switched, upstream: switched, access: public, stream_timeout: 10s}\n"})
	for _, c := range []struct {
		path   string
		status int
	}{{"/nocontent", 204}, {"/notmodified", 304}} {
		t.Run(c.path, func(t *testing.T) {
			conn, br := dialProxy(t, e.addr)
			// Twice on one connection: nothing follows the first answer.
			for i := range 2 {
				if _, err := io.WriteString(conn, "GET "+c.path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != c.status || len(body) != 0 || resp.Header.Get("X-App") != "kept" {
					t.Fatalf("request %d: status %d, body %q, header %v", i, resp.StatusCode, body, resp.Header)
				}
			}
		})
	}
	t.Run("/switched", func(t *testing.T) {
		e.wantProblem(e.raw("GET /switched HTTP/1.1\r\nHost: x\r\n\r\n"), 502, problem.CodeUpstreamDown)
	})
	testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
}

// An upstream's 101 (Switching Protocols) to a forwarded request, which
// asked for no upgrade (the client's Upgrade is removed on a route without
// websocket), is refused with 502: passed on, it told the client (and any
// front proxy that saw the client ask for an upgrade) that the connection
// had left HTTP, while the proxy went on reading requests from it.
func TestUpstreamSwitchingProtocolsRefused(t *testing.T) {
	t.Parallel()
	url := cannedUpstream(t, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-App: kept\r\n\r\nnot http")
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	conn, br := dialProxy(t, e.addr)
	for i, upgrade := range []string{"", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"} {
		if _, err := io.WriteString(conn, "GET /x HTTP/1.1\r\nHost: x\r\n"+upgrade+"\r\n"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.ReadAll(resp.Body)
		if resp.StatusCode != 502 || resp.Header.Get("X-App") != "" || resp.Header.Get("Upgrade") != "" {
			t.Fatalf("request %d: status %d, header %v; want 502 without the upstream's fields", i, resp.StatusCode, resp.Header)
		}
	}
	if n := metricCount(t, e, `authproxy_upstream_errors_total{kind="transport",target="forward"}`); n != 2 {
		t.Fatalf("upstream errors = %v, want 2", n)
	}
}

// TestStreamCutShortIsCutShortForTheClient: on a stream route, an answer
// the upstream cuts short (its connection closed before the Content-Length
// or the last chunk) reaches the client cut short too, its connection
// closed without the last chunk, so that a client does not take it for
// whole; a whole answer (by its length, or one that ends with the
// connection) still ends with the last chunk.
func TestStreamCutShortIsCutShortForTheClient(t *testing.T) {
	t.Parallel()
	keys := append([]string{testenv.AppKey.ID}, testenv.OtherAppKeys[0].ID, testenv.OtherAppKeys[1].ID)
	answers := []struct {
		name, answer, body string
		cut                bool
	}{
		{"cut-chunked", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata:1\r\n", "data:1", true},
		{"cut-length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", "abc", true},
		{"whole-length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", "abc", false},
	}
	rules := "upstreams:\n"
	routes := "routes:\n"
	for i, a := range answers {
		rules += "  " + a.name + ":\n    url: " + cannedUpstream(t, a.answer) + "\n    key_id: " + keys[i] + "\n"
		routes += "  - {prefix: /" + a.name + ", upstream: " + a.name + ", access: public, stream_timeout: 10s}\n"
	}
	e := start(t, envOpt{rules: rules + routes})
	for _, a := range answers {
		t.Run(a.name, func(t *testing.T) {
			conn, br := dialProxy(t, e.addr)
			if _, err := io.WriteString(conn, "GET /"+a.name+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if string(body) != a.body {
				t.Fatalf("body %q, want %q", body, a.body)
			}
			if cut := errors.Is(err, io.ErrUnexpectedEOF); cut != a.cut || (!a.cut && err != nil) {
				t.Fatalf("read error %v, want cut short %v", err, a.cut)
			}
		})
	}
	testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
}

// TestStrayUpstreamBytesReachNoOtherRequest: bytes an upstream sends after
// an answer's end (here the body a 204 announces) are no answer's. The
// proxy pooled the connection, and the next request through it, from
// another client, got them as its answer, and every answer after that went
// to the request after its own.
func TestStrayUpstreamBytesReachNoOtherRequest(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nsomeone-elses"
	addr := serveRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if req.URL.Path == "/nocontent" {
				_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\nContent-Length: 31\r\n\r\n")
				time.Sleep(20 * time.Millisecond)
				_, _ = io.WriteString(c, stray)
				continue
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(req.URL.Path))+"\r\n\r\n"+req.URL.Path)
		}
	})
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: http://" + addr + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	if r := e.raw("GET /nocontent HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); r.status != 204 {
		t.Fatalf("status %d, want 204", r.status)
	}
	for _, p := range []string{"/mine", "/also-mine"} {
		if r := e.raw("GET " + p + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); r.status != 200 || string(r.body) != p {
			t.Fatalf("GET %s answered %d %q", p, r.status, r.body)
		}
	}
}

// statusRules routes "/" to one upstream as a forwarded route, "/s" as a
// stream route and "/ws" as a WebSocket route (both with the prefix
// stripped, so that the upstream sees the same paths).
func statusRules(url string) string {
	return "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /, upstream: notes, access: public}\n" +
		"  - {prefix: /s, upstream: notes, access: public, stream_timeout: 10s, strip_prefix: true}\n" +
		"  - {prefix: /ws, upstream: notes, access: public, websocket: true, strip_prefix: true}\n"
}

// TestHTTP10ClientSeesCutShortAnswerCutShort: an HTTP/1.0 client reads an
// answer without a length until the connection closes, so a close is all
// that tells it the body ended. When the upstream cut its answer short (its
// connection closed before the last chunk), the proxy closed the client's
// connection as cleanly as after a whole answer: a truncated download, or
// half a JSON document, read as whole. The connection is reset instead, as
// the last chunk is withheld from an HTTP/1.1 client
// (TestStreamCutShortIsCutShortForTheClient); a whole answer still ends with
// a clean close. Routes of both kinds: forwarded, and stream routes.
func TestHTTP10ClientSeesCutShortAnswerCutShort(t *testing.T) {
	t.Parallel()
	answers := map[string]string{
		"/cut":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
		"/whole": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	}
	e := start(t, envOpt{rules: statusRules(scriptedUpstream(t, func(path string) string { return answers[path] }))})
	for _, path := range []string{"/cut", "/whole", "/s/cut", "/s/whole"} {
		t.Run(path, func(t *testing.T) {
			conn, _ := dialProxy(t, e.addr)
			fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path)
			raw, err := io.ReadAll(conn)
			if _, body, _ := strings.Cut(string(raw), "\r\n\r\n"); body != "hello" {
				t.Fatalf("answer %q, want the upstream's body %q", raw, "hello")
			}
			cut := strings.HasSuffix(path, "/cut")
			if reset := errors.Is(err, syscall.ECONNRESET); reset != cut || !cut && err != nil {
				t.Fatalf("read ended with %v, want a reset %v (an answer cut short), else a clean close", err, cut)
			}
		})
	}
}

// The status line a client gets is the proxy's: HTTP/1.1 and the code's
// own reason phrase, whatever version and reason phrase the upstream
// answered with. The proxy wrote back the upstream's: an HTTP/1.0 answer
// without a length reached the client as "HTTP/1.0 200 OK" with chunked
// framing on a connection kept alive, which a client (Go's among them)
// reads until the connection closes, chunk sizes included; "HTTP/0.9" and
// "HTTP/2.0" status lines went out over HTTP/1.1 text, and a reason
// phrase's control bytes to the client's terminal or log.
func TestUpstreamStatusLineIsTheProxys(t *testing.T) {
	t.Parallel()
	answers := map[string]string{
		"/http10": "HTTP/1.0 200 OK\r\nX-App: kept\r\n\r\nhello", // until the connection closes
		"/http09": "HTTP/0.9 200 OK\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
		"/http20": "HTTP/2.0 201 Created\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
		"/reason": "HTTP/1.1 404 No\x00t \x1b[2JFound\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
	}
	wantLine := map[string]string{"/http10": "HTTP/1.1 200 OK\r\n", "/http09": "HTTP/1.1 200 OK\r\n",
		"/http20": "HTTP/1.1 201 Created\r\n", "/reason": "HTTP/1.1 404 Not Found\r\n"}
	e := start(t, envOpt{rules: statusRules(scriptedUpstream(t, func(path string) string { return answers[path] }))})
	for _, route := range []string{"", "/s"} {
		for path, line := range wantLine {
			t.Run(route+path, func(t *testing.T) {
				conn, _ := dialProxy(t, e.addr)
				_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
				var raw strings.Builder
				br := bufio.NewReader(io.TeeReader(conn, &raw))
				// Twice on one connection (a stream closes it after one).
				for i := range 2 {
					raw.Reset()
					if _, err := io.WriteString(conn, "GET "+route+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
					body, err := io.ReadAll(resp.Body)
					if err != nil || string(body) != "hello" || resp.Header.Get("X-App") != "kept" {
						t.Fatalf("request %d: body %q (%v), header %v", i, body, err, resp.Header)
					}
					if got := raw.String(); !strings.HasPrefix(got, line) {
						t.Fatalf("request %d: answer %q, want it to start with %q", i, got[:min(len(got), 40)], line)
					}
					if route != "" {
						break
					}
				}
			})
		}
	}
}

// An upstream status code below 100 ("099", "001": fasthttp reads any three
// digits) is refused with 502 on every route kind. It reached the client as
// a status line of two or one digits ("HTTP/1.1 99 X"), on a forwarded
// route without the body, whose connection the proxy then kept for the next
// request, and on a stream route with a chunked body that no
// Transfer-Encoding announced. So are "000" (fasthttp's unset status,
// reported as 200) and codes above 599, which have no class to read them by.
func TestUpstreamStatusBelow100Refused(t *testing.T) {
	t.Parallel()
	answers := map[string]string{
		"/099": "HTTP/1.1 099 Odd\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
		"/001": "HTTP/1.1 001 Odd\r\nX-App: kept\r\n\r\n",
		// fasthttp reads "000" as its unset status, which it reports as 200.
		"/000": "HTTP/1.1 000 Odd\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
		// Spelled as fasthttp also reads it: spaces after the version, an
		// empty line before the status line.
		"/000-spaces": "HTTP/1.1   000 Odd\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
		"/000-line":   "\r\nHTTP/1.1 000 Odd\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
		// After an interim answer, which fasthttp's Response.Read, reading
		// a stream route's answer and a WebSocket's, skips on its own.
		"/103-000": "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 000 Odd\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
		// Above 599: a code of no class (RFC 9110 section 15).
		"/600": "HTTP/1.1 600 Odd\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
		"/999": "HTTP/1.1 999 Odd\r\nX-App: kept\r\n\r\n",
	}
	e := start(t, envOpt{rules: statusRules(scriptedUpstream(t, func(path string) string { return answers[path] }))})
	upgrade := "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, route := range []struct{ prefix, header string }{{"", ""}, {"/s", ""}, {"/ws", upgrade}} {
		for path := range answers {
			t.Run(route.prefix+path, func(t *testing.T) {
				r := e.with(t).raw("GET " + route.prefix + path + " HTTP/1.1\r\nHost: x\r\n" + route.header + "\r\n")
				e.with(t).wantProblem(r, 502, problem.CodeUpstreamDown)
				if r.header.Get("X-App") != "" {
					t.Fatalf("the upstream's answer reached the client: %v", r.header)
				}
			})
		}
	}
}

// TestHTTP10ClientGetsUnchunkedBody: an HTTP/1.0 client gets an answer
// whose body came without a length (chunked by the upstream, or until its
// connection's end) as HTTP/1.0 reads one: no Transfer-Encoding, the body's
// bytes until the connection closes. fasthttp chunked it, and the client
// read the chunk sizes as part of the body. An answer with a length keeps
// it, and an HTTP/1.1 client still gets chunks. Stream routes too.
func TestHTTP10ClientGetsUnchunkedBody(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("0123456789abcdef", 4096) // 64 KiB: streamed, not buffered whole
	answers := map[string]string{
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-App: kept\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
		"/close":   "HTTP/1.0 200 OK\r\nX-App: kept\r\n\r\n" + big, // until the connection closes
		"/length":  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: kept\r\n\r\nhello",
	}
	want := map[string]string{"/chunked": "hello world", "/close": big, "/length": "hello"}
	e := start(t, envOpt{rules: statusRules(scriptedUpstream(t, func(path string) string { return answers[path] }))})
	// The same through a stream route (stream_timeout, prefix stripped).
	for _, path := range []string{"/chunked", "/close", "/length", "/s/chunked", "/s/close", "/s/length"} {
		t.Run(path, func(t *testing.T) {
			conn, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path)
			raw, err := io.ReadAll(conn) // to the close: HTTP/1.0 keeps no connection here
			if err != nil {
				t.Fatalf("read: %v (%d bytes)", err, len(raw))
			}
			head, body, ok := strings.Cut(string(raw), "\r\n\r\n")
			if !ok {
				t.Fatalf("no header end in %.200q", raw)
			}
			lower := strings.ToLower(head)
			if !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || strings.Contains(lower, "transfer-encoding") || !strings.Contains(head, "X-App: kept") {
				t.Fatalf("header %q, want 200, the app's fields and no Transfer-Encoding", head)
			}
			if strings.HasSuffix(path, "/length") != strings.Contains(lower, "content-length: 5") {
				t.Fatalf("header %q: Content-Length only when the upstream gave one", head)
			}
			if w := want[strings.TrimPrefix(path, "/s")]; body != w {
				t.Fatalf("body %d bytes %.60q, want %d bytes %.60q", len(body), body, len(w), w)
			}
		})
	}
	// An HTTP/1.1 client still gets the chunks.
	r := e.raw("GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	e.wantStatus(r, 200)
}

// TestUpstreamAnswerCutShort: an upstream answer whose body ends before its
// Content-Length (the upstream's connection closed early). A short one
// (up to the 4 KiB the proxy's write buffer holds, so nothing of it had
// gone out) is refused with 502, as any other failed forward: the client
// got an empty reply, its connection closed with nothing written (fasthttp
// failed on the body after writing the header into its buffer). A longer
// one, streamed, reaches the client cut short: the bytes the upstream sent,
// never more, then the end of the connection, never a body padded or
// completed. Whole answers, short and long, pass, and the client's
// connection goes on after a 502.
func TestUpstreamAnswerCutShort(t *testing.T) {
	t.Parallel()
	large := strings.Repeat("0123456789abcdef", 200_000/16)
	head := func(n int) string {
		return "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-App: kept\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n"
	}
	answers := map[string]string{
		"/small":        head(100) + "abc",
		"/small-none":   head(100),
		"/edge":         head(4096) + large[:4000],
		"/small-whole":  head(3) + "abc",
		"/large":        head(len(large)) + large[:len(large)/2],
		"/large-whole":  head(len(large)) + large,
		"/after-502/ok": head(2) + "ok",
	}
	e := start(t, envOpt{rules: statusRules(scriptedUpstream(t, func(path string) string { return answers[path] }))})
	fetch := func(t *testing.T, conn net.Conn, br *bufio.Reader, path string) (*http.Response, []byte, error) {
		t.Helper()
		if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, body, err
	}
	for _, path := range []string{"/small", "/small-none", "/edge"} {
		t.Run(path, func(t *testing.T) {
			conn, br := dialProxy(t, e.addr)
			resp, body, err := fetch(t, conn, br, path)
			if err != nil || resp.StatusCode != 502 || resp.Header.Get("Content-Type") != problem.ContentType || resp.Header.Get("X-App") != "" {
				t.Fatalf("status %d, header %v, body %.200q (%v); want a 502 problem without the upstream's fields", resp.StatusCode, resp.Header, body, err)
			}
			if !strings.Contains(string(body), `"code":"`+problem.CodeUpstreamDown+`"`) {
				t.Fatalf("body %s, want code %s", body, problem.CodeUpstreamDown)
			}
			if resp, body, err := fetch(t, conn, br, "/after-502/ok"); err != nil || resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("the next request on the connection: %d %q (%v)", resp.StatusCode, body, err)
			}
		})
	}
	for _, path := range []string{"/small-whole", "/large-whole"} {
		t.Run(path, func(t *testing.T) {
			conn, br := dialProxy(t, e.addr)
			resp, body, err := fetch(t, conn, br, path)
			want := answers[path][strings.Index(answers[path], "\r\n\r\n")+4:]
			if err != nil || resp.StatusCode != 200 || string(body) != want || resp.Header.Get("X-App") != "kept" {
				t.Fatalf("status %d, %d bytes (%v), want 200 and the %d bytes sent", resp.StatusCode, len(body), err, len(want))
			}
		})
	}
	t.Run("/large", func(t *testing.T) {
		conn, br := dialProxy(t, e.addr)
		resp, body, err := fetch(t, conn, br, "/large")
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(large)) {
			t.Fatalf("status %d, Content-Length %d: want the upstream's 200 and length", resp.StatusCode, resp.ContentLength)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) > len(large)/2 || string(body) != large[:len(body)] {
			t.Fatalf("read %d bytes (%v), want at most the %d the upstream sent, then the connection's end", len(body), err, len(large)/2)
		}
	})
	if n := metricCount(t, e, `authproxy_upstream_errors_total{kind="transport",target="forward"}`); n != 3 {
		t.Fatalf("upstream errors = %v, want 3 (the short answers cut short)", n)
	}
}
