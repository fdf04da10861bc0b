package app

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// framingRules: uploadRules, and a public route of every method.
const framingRules = uploadRules + "  - {prefix: /any, upstream: notes, access: public}\n"

// smuggled is a request hidden in a body: it must never reach an upstream.
const smuggled = "GET /notes/public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// wantForwarded fails unless the app upstream received exactly these
// requests, "METHOD URI BODY" each, in order.
func wantForwarded(t *testing.T, e *env, want ...string) {
	t.Helper()
	var got []string
	for _, r := range e.up.Received() {
		got = append(got, r.Method+" "+r.URI+" "+string(r.Body))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("upstream received:\n%s\nwant:\n%s", summary(got), summary(want))
	}
	for _, r := range e.up.Received() {
		if r.VerifyErr != nil || !r.Signed {
			t.Fatalf("%s %s: signature %v (signed %v)", r.Method, r.URI, r.VerifyErr, r.Signed)
		}
		if te := r.Headers["Transfer-Encoding"]; len(te) > 0 {
			t.Fatalf("%s %s: forwarded with Transfer-Encoding %q", r.Method, r.URI, te)
		}
	}
}

// summary is a list of forwarded requests, each clipped, for a failure.
func summary(reqs []string) string {
	var b strings.Builder
	for _, r := range reqs {
		if len(r) > 80 {
			r = fmt.Sprintf("%s... (%d bytes)", r[:80], len(r))
		}
		b.WriteString(strings.ReplaceAll(r, "\r\n", `\r\n`) + "\n")
	}
	return b.String()
}

// TestPipelinedBodiesKeepFraming: requests sent back to back in one write
// are each read to the end of their own body, whatever happened to it:
// read ahead by fasthttp (small), read once allowed (chunked, with chunk
// extensions, the next request in the same packet), read and dropped
// after a refusal (declared and chunked, a body that holds what looks
// like a request), GET and HEAD with a body. Nothing of a body is taken
// for a request, and each forwarded body is the one sent, with its length.
func TestPipelinedBodiesKeepFraming(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: framingRules})
	hidden := strings.Repeat(smuggled, 100_000/len(smuggled))
	var w strings.Builder
	add := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	add("POST /forms/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	add("POST /uploads/a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(hidden), hidden)
	add("POST /uploads/b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\nTransfer-Encoding: chunked\r\n\r\n%x;ext=\"a b\"\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n",
		len(smuggled), smuggled, len(hidden), hidden)
	add("POST /forms/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c\r\nhello\r\n6 \r\n world\r\n0\r\n\r\n")
	add("GET /any/get HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
	add("HEAD /any/head HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz")
	big := strings.Repeat("B", 30_000) // past what fasthttp reads ahead
	add("PUT /any/big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(big), big)
	add("GET /notes/public/end HTTP/1.1\r\nHost: x\r\n\r\n")
	conn, br := dialProxy(t, e.addr)
	go func() { _, _ = io.WriteString(conn, w.String()) }()
	readAnswers(t, br, []string{"POST", "POST", "POST", "POST", "GET", "HEAD", "PUT", "GET"}, []int{200, 401, 401, 200, 200, 200, 200, 200})
	wantForwarded(t, e, "POST /forms/a hello", "POST /forms/b hello world", "GET /any/get abcd", "HEAD /any/head xyz",
		"PUT /any/big "+big, "GET /notes/public/end ")
}

// TestChunkedEndAndNextRequestInOnePacket: the end of an allowed chunked
// body read after the decision (past fasthttp's read-ahead), its last
// chunk and the next request arriving in the same write, after a pause.
func TestChunkedEndAndNextRequestInOnePacket(t *testing.T) {
	e := start(t, envOpt{rules: framingRules})
	tok := e.token(nil)
	part := strings.Repeat("p", 20_000)
	conn, br := dialProxy(t, e.addr)
	fmt.Fprintf(conn, "POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", tok, len(part), part)
	time.Sleep(100 * time.Millisecond) // allowed meanwhile, reading the body
	fmt.Fprintf(conn, "3\r\nend\r\n0\r\n\r\n%sPOST /any/next HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok", smuggled)
	readAnswers(t, br, []string{"POST", "GET", "POST"}, []int{200, 200, 200})
	wantForwarded(t, e, "POST /uploads/a "+part+"end", "GET /notes/public/smuggled ", "POST /any/next ok")
}

// TestContentLengthAndChunked: a request with both Content-Length and
// Transfer-Encoding: chunked is read as chunked (RFC 9112 section 6.3),
// forwarded with the length of what was read, and its connection ends
// after the answer: the bytes after it are never read as a request,
// allowed or refused.
func TestContentLengthAndChunked(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: framingRules})
	for _, tc := range []struct {
		name, head string
		status     int
		forwarded  []string
	}{
		{"allowed", "POST /forms/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 200, []string{"POST /forms/a hello"}},
		{"allowed, chunked first", "POST /forms/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 200, []string{"POST /forms/a hello"}},
		{"refused", "POST /uploads/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 401, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			conn, br := dialProxy(t, e.addr)
			fmt.Fprintf(conn, "%s5\r\nhello\r\n0\r\n\r\n%s", tc.head, smuggled)
			resp := readAnswers(t, br, []string{"POST"}, []int{tc.status})[0]
			if !resp.Close {
				t.Fatal("connection kept")
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the answer: %v, want the end of the connection", err)
			}
			wantForwarded(t, e, tc.forwarded...)
		})
	}
}

// TestTransferEncodingNotChunkedRefused: a request whose Transfer-Encoding
// does not end in chunked has no length that can be determined (RFC 9112
// section 6.3): it is refused with 400 and its connection closed, whatever
// the coding and the field's spelling, with a Content-Length or without,
// by POST or GET, on a public or a protected route; nothing is forwarded, and nothing
// after its header is read as a request. fasthttp refuses every coding
// but identity, and took "Transfer-Encoding: identity" for no field at
// all: the body read by its Content-Length (the connection closed after
// it), or none without one, and the bytes after the header, which a front
// proxy may have sent as this request's body, read and forwarded as the
// next request.
func TestTransferEncodingNotChunkedRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: framingRules})
	tok := e.token(nil)
	for _, field := range []string{"Transfer-Encoding: identity", "transfer-encoding: Identity", "TRANSFER-ENCODING: IDENTITY",
		"Transfer-Encoding: gzip", "Transfer-Encoding: chunked, identity", "Transfer-Encoding: identity, chunked"} {
		for _, route := range []string{"/forms/a", "/uploads/a"} {
			for _, length := range []string{"", fmt.Sprintf("Content-Length: %d\r\n", len(smuggled))} {
				for _, method := range []string{"POST", "GET"} {
					name := fmt.Sprintf("%s %s %s %q", method, route, field, length)
					t.Run(name, func(t *testing.T) {
						e := e.with(t)
						e.reset()
						auth := ""
						if route == "/uploads/a" {
							auth = "Authorization: Bearer " + tok + "\r\n"
						}
						conn, br := dialProxy(t, e.addr)
						fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\n%s%s\r\n%s\r\n%s", method, route, auth, field, length, smuggled)
						if resp := readAnswers(t, br, []string{method}, []int{400})[0]; !resp.Close {
							t.Fatal("connection kept")
						}
						if _, err := br.ReadByte(); err != io.EOF {
							t.Fatalf("after the answer: %v, want the end of the connection", err)
						}
						e.wantNothingForwarded()
					})
				}
			}
		}
	}
}

// TestHTTP10Bodies: an HTTP/1.0 request's body is read by its
// Content-Length, on a connection kept when it asks for it; one with
// Transfer-Encoding (which HTTP/1.0 does not have) is refused and its
// connection closed; one with neither has no body (RFC 9112 section 6.3):
// what follows its headers is the next request's.
func TestHTTP10Bodies(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: framingRules})
	big := strings.Repeat("h", 20_000)
	conn, br := dialProxy(t, e.addr)
	fmt.Fprintf(conn, "POST /forms/a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n%s", len(big), big)
	fmt.Fprintf(conn, "POST /forms/b HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
	fmt.Fprintf(conn, "POST /uploads/c HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello")
	fmt.Fprintf(conn, "POST /forms/d HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n%s", smuggled)
	answers := readAnswers(t, br, []string{"POST", "POST", "POST", "POST"}, []int{200, 200, 401, 400})
	if answers[2].Close || !answers[3].Close {
		t.Fatalf("close: %v, %v", answers[2].Close, answers[3].Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the refusal of Transfer-Encoding: %v, want the end of the connection", err)
	}
	wantForwarded(t, e, "POST /forms/a "+big, "POST /forms/b ")
}

// TestAfterOverLimitNothingRead: after a 413 for a body over the limit,
// declared or chunked, nothing more is read from the connection as a
// request, whether the next request follows in the same write or the
// body holds what looks like one.
func TestAfterOverLimitNothingRead(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: framingRules})
	over := strings.Repeat(smuggled, (70<<10)/len(smuggled)+1) // MAX_BODY_BYTES is 64 KiB
	for _, tc := range []struct{ name, method, req string }{
		{"declared", "POST", fmt.Sprintf("POST /forms/a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s%s", len(over), over, smuggled)},
		{"HEAD", "HEAD", fmt.Sprintf("HEAD /any/a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s%s", len(over), over, smuggled)},
		{"HTTP/1.0", "POST", fmt.Sprintf("POST /forms/a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n%s%s", len(over), over, smuggled)},
		{"declared, a part sent", "POST", fmt.Sprintf("POST /forms/a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(over), over[:10<<10])},
		{"chunked", "POST", fmt.Sprintf("POST /forms/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n%s", len(over), over, smuggled)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			conn, br := dialProxy(t, e.addr)
			go func() { _, _ = io.WriteString(conn, tc.req) }()
			if resp := readAnswers(t, br, []string{tc.method}, []int{413})[0]; !resp.Close {
				t.Fatal("connection kept")
			}
			if _, err := br.ReadByte(); err != io.EOF { // one answer, nothing after it
				t.Fatalf("after the answer: %v, want the end of the connection", err)
			}
			e.wantNothingForwarded()
		})
	}
}

// TestSmallBodyLimit: with MAX_BODY_BYTES below what fasthttp reads ahead
// (8 KiB), a body up to the limit is forwarded whole, declared or
// chunked, on a connection kept; one past it is refused 413, declared or
// chunked, with or without a credential; a route's own larger limit
// takes bodies past MAX_BODY_BYTES and what fasthttp read ahead.
func TestSmallBodyLimit(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: uploadRules + "  - {prefix: /mid, methods: [POST], upstream: notes, access: public, max_body_bytes: 20000}\n",
		vars: map[string]string{"MAX_BODY_BYTES": "1000"}})
	tok := e.token(nil)
	send := func(path, auth string, n int, chunked bool) (int, bool) {
		body := strings.Repeat("s", n)
		conn, br := dialProxy(t, e.addr)
		go func() {
			if chunked {
				fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\n%sTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", path, auth, n, body)
			} else {
				fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s", path, auth, n, body)
			}
		}()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s %d bytes (chunked %v): %v", path, n, chunked, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Close
	}
	for _, chunked := range []bool{false, true} {
		for _, tc := range []struct {
			path, auth string
			n, status  int
		}{
			{"/forms/a", "", 500, 200},
			{"/forms/a", "", 1000, 200},
			{"/forms/a", "", 1001, 413},
			{"/forms/a", "", 9000, 413},
			{"/uploads/a", "Authorization: Bearer " + tok + "\r\n", 9000, 200},
			{"/uploads/a", "", 9000, 401},
			{"/mid/a", "", 1001, 200},
			{"/mid/a", "", 9000, 200},
			{"/mid/a", "", 20000, 200},
			{"/mid/a", "", 20001, 413},
		} {
			e.reset()
			status, closed := send(tc.path, tc.auth, tc.n, chunked)
			if status != tc.status || closed != (status == 413) {
				t.Fatalf("%s %d bytes (chunked %v): %d (close %v), want %d", tc.path, tc.n, chunked, status, closed, tc.status)
			}
			if status != 200 {
				e.wantNothingForwarded()
				continue
			}
			if got := e.up.Last(t); len(got.Body) != tc.n || strings.Trim(string(got.Body), "s") != "" || got.VerifyErr != nil {
				t.Fatalf("%s %d bytes (chunked %v): upstream got %d bytes (verify %v)", tc.path, tc.n, chunked, len(got.Body), got.VerifyErr)
			}
		}
	}
}

// TestBodyBufferNotShared: one connection's requests, of bodies read
// after the decision and of decreasing sizes (the proxy reuses the buffer
// a body was read into), and a body that failed half read, each reach the
// upstream as sent: nothing of an earlier body is forwarded with a later
// one.
func TestBodyBufferNotShared(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: framingRules})
	conn, br := dialProxy(t, e.addr)
	var want []string
	for i, n := range []int{60_000, 40_000, 9_000, 30_000, 8_193} {
		body := strings.Repeat(string(rune('a'+i)), n)
		if i%2 == 0 {
			fmt.Fprintf(conn, "POST /any/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", i, n, body)
		} else {
			fmt.Fprintf(conn, "POST /any/%d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", i, n, body)
		}
		readAnswers(t, br, []string{"POST"}, []int{200})
		want = append(want, fmt.Sprintf("POST /any/%d %s", i, body))
	}
	// A body that ends early, then one on a new connection.
	conn2, br2 := dialProxy(t, e.addr)
	fmt.Fprintf(conn2, "POST /any/short HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n%s", strings.Repeat("z", 30_000))
	_ = conn2.(*net.TCPConn).CloseWrite()
	readAnswers(t, br2, []string{"POST"}, []int{400})
	fmt.Fprintf(conn, "POST /any/last HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2710\r\n%s\r\n0\r\n\r\n", strings.Repeat("y", 10_000))
	readAnswers(t, br, []string{"POST"}, []int{200})
	want = append(want, "POST /any/last "+strings.Repeat("y", 10_000))
	wantForwarded(t, e, want...)
}

// TestExpectContinueBodies: a client that waits for "100 Continue" on a
// protected route without any credential is answered 401 from its
// headers, and never asked for the body (TestExpectContinueRefusedFromHeaders);
// with a token it is told to continue and the body is forwarded, and so
// it is when the client sends it without waiting. A declared length over
// the limit is refused without a 100, and the body is never asked for.
func TestExpectContinueBodies(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: framingRules})
	tok := e.token(nil)
	body := strings.Repeat("e", 100_000)
	conn, br := dialProxy(t, e.addr)
	fmt.Fprintf(conn, "POST /uploads/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(body))
	if resp := readAnswers(t, br, []string{"POST"}, []int{401})[0]; !resp.Close {
		t.Fatal("connection kept after a 401 from the headers (the body may be on its way)")
	}
	conn, br = dialProxy(t, e.addr)
	fmt.Fprintf(conn, "POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", tok, len(body))
	readAnswers(t, br, []string{"POST"}, []int{100})
	go func() { _, _ = io.WriteString(conn, body) }()
	if resp := readAnswers(t, br, []string{"POST"}, []int{200})[0]; resp.Close {
		t.Fatal("200: connection closed")
	}
	// Sent without waiting: the 100, then the answer.
	go fmt.Fprintf(conn, "POST /uploads/b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n%s", tok, len(body), body)
	readAnswers(t, br, []string{"POST", "POST"}, []int{100, 200})
	wantForwarded(t, e, "POST /uploads/a "+body, "POST /uploads/b "+body)
	e.reset()
	fmt.Fprintf(conn, "POST /uploads/c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", tok, 17<<20)
	if resp := readAnswers(t, br, []string{"POST"}, []int{413})[0]; !resp.Close {
		t.Fatal("connection kept after a 413")
	}
	e.wantNothingForwarded()
}

// TestBodiesOnEveryRouteKind: a body reaches the upstream as sent, or is
// refused on a connection that goes on serving, whatever the request's
// kind: an API key (X-API-Key or a tg_ bearer; a wrong one refused), an
// event-stream route, a WebSocket upgrade with a body (refused), a CORS
// preflight with a body (answered, not forwarded), a request from a
// trusted proxy.
func TestBodiesOnEveryRouteKind(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: framingRules +
		"  - {prefix: /events, methods: [POST], upstream: notes, access: public, stream_timeout: 5s}\n" +
		"  - {prefix: /ws, methods: [GET], upstream: notes, access: public, websocket: true}\n",
		vars: map[string]string{"CORS_ALLOWED_ORIGINS": appOrigin, "TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}})
	secret, _ := e.newAPIKey()
	body := strings.Repeat("k", 30_000)
	chunked := fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	declared := fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	conn, br := dialProxy(t, e.addr)
	var w strings.Builder
	add := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	add("POST /uploads/key1 HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\n%s", secret, chunked)
	add("POST /uploads/key2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s", secret, declared)
	add("POST /uploads/key3 HTTP/1.1\r\nHost: x\r\nX-API-Key: %sx\r\n%s", secret, chunked)
	add("GET /ws/a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s", declared)
	add("OPTIONS /uploads/a HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\nAccess-Control-Request-Method: POST\r\n%s", appOrigin, chunked)
	add("OPTIONS /uploads/b HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\nAccess-Control-Request-Method: POST\r\n%s", appOrigin, declared)
	add("POST /forms/proxied HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n%s", chunked)
	go func() { _, _ = io.WriteString(conn, w.String()) }()
	readAnswers(t, br, []string{"POST", "POST", "POST", "GET", "OPTIONS", "OPTIONS", "POST"}, []int{200, 200, 401, 400, 204, 204, 200})
	wantForwarded(t, e, "POST /uploads/key1 "+body, "POST /uploads/key2 "+body, "POST /forms/proxied "+body)
	if ip := e.up.Last(t).Headers["X-Auth-Client-Ip"]; len(ip) != 1 || ip[0] != "203.0.113.9" {
		t.Fatalf("client IP %q", ip)
	}
	e.reset()
	// An event stream's request carries its body (the connection is the
	// stream's to the end).
	fmt.Fprintf(conn, "POST /events/a HTTP/1.1\r\nHost: x\r\n%s", chunked)
	readAnswers(t, br, []string{"POST"}, []int{200})
	wantForwarded(t, e, "POST /events/a "+body)
}

// TestReloadWhileBodyArrives: a request keeps the route it was allowed
// on while its body arrives: a reload that lowers the route's
// max_body_bytes meanwhile does not cut it (the limit it was checked
// against is the one it is read to); the next request has the new limit.
func TestReloadWhileBodyArrives(t *testing.T) {
	e := start(t, envOpt{rules: uploadRules})
	tok := e.token(nil)
	body := strings.Repeat("l", 200_000)
	conn, br := dialProxy(t, e.addr)
	fmt.Fprintf(conn, "POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", tok, len(body), body[:20_000])
	time.Sleep(100 * time.Millisecond) // allowed meanwhile
	e.writeRules(strings.Replace(uploadRules, "max_body_bytes: 16777216", "max_body_bytes: 100000", 1))
	testenv.Eventually(t, func() error { return testenv.Want("rules generation", e.generation(), 2) })
	_, _ = io.WriteString(conn, body[20_000:])
	readAnswers(t, br, []string{"POST"}, []int{200})
	wantForwarded(t, e, "POST /uploads/a "+body)
	e.reset()
	go fmt.Fprintf(conn, "POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", tok, len(body), body)
	readAnswers(t, br, []string{"POST"}, []int{413})
	e.wantNothingForwarded()
}

// TestRetriedRequestKeepsItsBody: an idempotent request whose pooled
// upstream connection turns out closed is retried on a fresh one with the
// same body, read after the decision: the body it was signed with, not
// another request's.
func TestRetriedRequestKeepsItsBody(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	bodies := make(chan string, 8)
	go func() {
		for first := true; ; first = false {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(first bool) {
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, _ := io.ReadAll(req.Body)
					bodies <- string(b)
					if first && n == 1 {
						return // the first connection's second request: closed unanswered
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}(first)
		}
	}()
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: http://" + ln.Addr().String() + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	conn, br := dialProxy(t, e.addr)
	var want []string
	for i, n := range []int{40_000, 20_000} {
		body := strings.Repeat(string(rune('a'+i)), n)
		fmt.Fprintf(conn, "PUT /r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", n, body)
		readAnswers(t, br, []string{"PUT"}, []int{200})
		want = append(want, body)
	}
	want = append(want, want[1]) // the retry
	for i, body := range want {
		select {
		case got := <-bodies:
			if got != body {
				t.Fatalf("upstream request %d: %d bytes of %.1q, want %d of %.1q", i, len(got), got, len(body), body)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("upstream request %d never came", i)
		}
	}
}

// lingering is authproxy_lingering_connections.
func (e *env) lingering(t *testing.T) float64 {
	t.Helper()
	_, body := get(t, "http://"+e.admin+"/metrics")
	return metricValue(body, "authproxy_lingering_connections")
}

// TestLingerEnds: a connection answered 413 whose client goes on sending
// is read (the proxy's side shut: the client reads the answer, then its
// end) for the linger (Hooks.Linger; 5 s by default, TestLingerDefault),
// then closed: the client's writes are taken until the linger is up, fail
// from then on, and nothing is held after it.
func TestLingerEnds(t *testing.T) {
	const linger = 500 * time.Millisecond
	e := start(t, envOpt{rules: framingRules, linger: linger})
	conn, br := dialProxy(t, e.addr)
	_ = conn.SetDeadline(time.Now().Add(time.Minute)) // the proxy's side ends it, not the test's
	begin := time.Now()                               // before the proxy starts to linger
	fmt.Fprintf(conn, "POST /forms/a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", 100<<20, strings.Repeat("g", 10<<10))
	readAnswers(t, br, []string{"POST"}, []int{413})
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the answer: %v, want the end of the proxy's side", err)
	}
	chunk := strings.Repeat("g", 1<<10)
	var err error
	for err == nil && time.Since(begin) < 20*time.Second { // 40 lingers
		_, err = io.WriteString(conn, chunk)
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(begin); err == nil {
		t.Fatalf("writes still taken %v after the request, want them refused once the %v linger is up", d, linger)
	} else if d < linger {
		t.Fatalf("writes failed after %v (%v), before the %v linger was up", d, err, linger)
	}
	testenv.Eventually(t, func() error { return testenv.Want("lingering", e.lingering(t), 0.0) })
}

// TestShutdownWhileLingering: connections lingering after a 413 do not
// hold a shutdown back (they end on their own, TestLingerEnds); a 413
// answered while the proxy drains closes its connection at once, without
// lingering. The linger and the shutdown's deadline are two minutes here,
// so that waiting for either tells.
func TestShutdownWhileLingering(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: framingRules, linger: 2 * time.Minute, vars: map[string]string{"SHUTDOWN_TIMEOUT": "2m"}})
	over := fmt.Sprintf("POST /forms/a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", 1<<20, strings.Repeat("s", 10<<10))
	conn, br := dialProxy(t, e.addr)
	kept, kbr := dialProxy(t, e.addr) // a keep-alive connection, for a request during the drain
	_, _ = io.WriteString(kept, "GET /notes/public/x HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswers(t, kbr, []string{"GET"}, []int{200})
	_, _ = io.WriteString(conn, over)
	readAnswers(t, br, []string{"POST"}, []int{413})
	if n := e.lingering(t); n != 1 {
		t.Fatalf("lingering: %v", n)
	}
	e.app.Server.Drain()
	_, _ = io.WriteString(kept, over)
	readAnswers(t, kbr, []string{"POST"}, []int{413})
	if _, err := kbr.ReadByte(); err != io.EOF {
		t.Fatalf("draining, after the 413: %v, want the end of the connection", err)
	}
	// A connection that lingers is counted before its answer goes out.
	if n := e.lingering(t); n != 1 {
		t.Fatalf("draining, lingering after a 413: %v, want 1 (the first): the 413's connection lingers", n)
	}
	e.cancel()
	select {
	case <-e.done:
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return: the shutdown waits for the lingering connection")
	}
	e.done <- nil // for the cleanup, which waits for Serve to return
}
