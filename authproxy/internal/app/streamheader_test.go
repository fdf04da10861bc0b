package app

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// pathUpstream answers each request with the answer for its path
// (scriptedUpstream); it returns its URL.
func pathUpstream(t *testing.T, answers map[string]string) string {
	return scriptedUpstream(t, func(path string) string { return answers[path] })
}

// cookieFields are Set-Cookie fields of about n bytes in all.
func cookieFields(n int) (string, []string) {
	var b strings.Builder
	var vals []string
	for i := 0; b.Len() < n; i++ {
		v := "c" + strconv.Itoa(i) + "=" + strings.Repeat(string(rune('a'+i%26)), 1000) + "; Path=/; HttpOnly"
		vals = append(vals, v)
		b.WriteString("Set-Cookie: " + v + "\r\n")
	}
	return b.String(), vals
}

// wsUpgrade is a client's WebSocket upgrade request for path.
func wsUpgrade(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
}

// Stream routes take an upstream's answer with as large a header as a
// forwarded request does (forward.ResponseHeaderBytes, 16 KiB: a few large
// Set-Cookie fields, a Content-Security-Policy): a WebSocket's 101 and an
// event stream's answer with 12 KiB of header reach the client whole, and
// so do the frame and the events the upstream sent in the same write (more
// than the header reader held past the header). They were refused (502)
// above 4 KiB, the size of the reader a stream keeps. A header over 16 KiB
// is still refused.
func TestStreamRoutesTakeLargeAnswerHeaders(t *testing.T) {
	t.Parallel()
	large, cookies := cookieFields(12 << 10)
	over, _ := cookieFields(forward.ResponseHeaderBytes + 1<<10)
	// An unmasked binary frame of 8 KiB, which ends past the reader's
	// 16 KiB: its start is read with the 101, its end from the connection.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 512)
	frame := append([]byte{0x82, 126, 0, 0}, payload...)
	binary.BigEndian.PutUint16(frame[2:4], uint16(len(payload)))
	const switching = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	event := "event: note\ndata: " + strings.Repeat("x", 6<<10) + "\n\n"
	chunked := fmt.Sprintf("%x\r\n%s\r\n", len(event), event) + "0\r\n\r\n"
	const sse = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	url := pathUpstream(t, map[string]string{
		"/ws/large":      switching + large + "\r\n" + string(frame),
		"/ws/over":       switching + over + "\r\n" + string(frame),
		"/events/large":  sse + "Transfer-Encoding: chunked\r\n" + large + "\r\n" + chunked,
		"/events/length": sse + "Content-Length: " + strconv.Itoa(len(event)) + "\r\n" + large + "\r\n" + event,
		"/events/over":   sse + "Transfer-Encoding: chunked\r\n" + over + "\r\n" + chunked,
	})
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /ws, upstream: notes, access: public, websocket: true}\n" +
		"  - {prefix: /events, upstream: notes, access: public, stream_timeout: 10s}\n"})
	wantCookies := func(t *testing.T, h http.Header) {
		t.Helper()
		got := h.Values("Set-Cookie")
		if len(got) != len(cookies) {
			t.Fatalf("%d Set-Cookie fields, want %d", len(got), len(cookies))
		}
		for i := range got {
			if got[i] != cookies[i] {
				t.Fatalf("Set-Cookie %d = %.40q…, want %.40q…", i, got[i], cookies[i])
			}
		}
	}
	t.Run("websocket", func(t *testing.T) {
		conn, br := dialProxy(t, e.addr)
		if _, err := io.WriteString(conn, wsUpgrade("/ws/large")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d, want 101", resp.StatusCode)
		}
		wantCookies(t, resp.Header)
		got := make([]byte, len(frame))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("first frame: %v", err)
		}
		if !bytes.Equal(got, frame) {
			t.Fatal("the first frame, sent with the 101, arrived changed")
		}
	})
	for _, path := range []string{"/events/large", "/events/length"} {
		t.Run(path, func(t *testing.T) {
			resp, err := e.client.Get("http://" + e.addr + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			wantCookies(t, resp.Header)
			body, err := io.ReadAll(resp.Body)
			if err != nil || string(body) != event {
				t.Fatalf("body of %d bytes (%v), want the %d-byte event", len(body), err, len(event))
			}
		})
	}
	t.Run("over 16 KiB", func(t *testing.T) {
		e.wantProblem(e.raw(wsUpgrade("/ws/over")), 502, problem.CodeUpstreamDown)
		e.wantProblem(e.raw("GET /events/over HTTP/1.1\r\nHost: x\r\n\r\n"), 502, problem.CodeUpstreamDown)
	})
	testenv.Eventually(t, func() error { return testenv.Want("open streams", e.app.Streams.Open(), 0) })
}
