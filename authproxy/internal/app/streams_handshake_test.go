package app

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// httpAfter101Upstream answers an upgrade with a 101 that is no WebSocket
// handshake (answer), then goes on serving HTTP on the same connection,
// as a server does whose handler wrote a 101 status without switching:
// each request after it is answered with its path as the body. It
// returns its URL and the paths it served after the 101.
func httpAfter101Upstream(t *testing.T, answer string) (string, <-chan string) {
	t.Helper()
	served := make(chan string, 16)
	addr := serveRaw(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for first := true; ; first = false {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if first {
				_, _ = io.WriteString(c, answer)
				continue
			}
			served <- req.URL.Path
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(req.URL.Path))+"\r\n\r\n"+req.URL.Path)
		}
	})
	return "http://" + addr, served
}

// An upstream's 101 is spliced only when it completes the client's
// WebSocket handshake: Upgrade: websocket and the Sec-WebSocket-Accept
// of the client's key (RFC 6455 section 4.2.2). A 101 without them (a
// handler that answers a status chosen by the request, a server that
// wrote a 101 and went on speaking HTTP) is 502: it was spliced, and the
// client's connection then carried raw HTTP requests to the upstream past
// the proxy, to paths no route forwards and without identity headers (a
// WebSocket smuggling). An upgrade without a valid Sec-WebSocket-Key or
// with a Sec-WebSocket-Version other than 13, whose answer cannot be
// checked, is refused with 400 before anything reaches the upstream.
func TestWebSocketUpstreamHandshakeChecked(t *testing.T) {
	for _, tc := range []struct{ name, answer string }{
		{"no accept", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"wrong accept", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"},
		{"another protocol", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n" +
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"},
		{"no upgrade", "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, served := httpAfter101Upstream(t, tc.answer)
			e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
				"  - {prefix: /ws, methods: [GET], upstream: notes, access: public, websocket: true}\n"})
			conn, br := dialProxy(t, e.addr)
			// The upgrade and, right behind it, a plain request for a path
			// no route forwards.
			if _, err := io.WriteString(conn, wsUpgrade("/ws")+"GET /internal/admin HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode != 502 {
				next, _ := http.ReadResponse(br, nil)
				t.Fatalf("upgrade answered %d %q, then %v; want 502", resp.StatusCode, b, next)
			}
			select {
			case p := <-served:
				t.Fatalf("the upstream served %s past the proxy", p)
			default:
			}
			if n := e.app.Streams.Open(); n != 0 {
				t.Fatalf("open streams = %d", n)
			}
		})
	}
	t.Run("client handshake without a valid key or version", func(t *testing.T) {
		url, _ := httpAfter101Upstream(t, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
			"  - {prefix: /ws, methods: [GET], upstream: notes, access: public, websocket: true}\n"})
		const up = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
		for _, req := range []string{
			up + "Sec-WebSocket-Version: 13\r\n\r\n",
			up + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
			up + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n",
			up + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
			up + "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
			// Longer than a key, in base64: 21 and 768 bytes.
			up + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(make([]byte, 21)) + "\r\n\r\n",
			up + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(make([]byte, 768)) + "\r\n\r\n",
		} {
			r := e.raw(req)
			if r.status != 400 || !strings.Contains(string(r.body), problem.CodeBadRequest) {
				t.Fatalf("%q: %d %s; want 400", req, r.status, r.body)
			}
		}
		if strings.Contains(e.logs.String(), `"msg":"panic"`) {
			t.Fatalf("a handshake panicked: %s", e.logs.String())
		}
	})
}
