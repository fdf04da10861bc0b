package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// uploadRules has an upload route whose limit (16 MiB) is far above
// MAX_BODY_BYTES (64 KiB in these tests), and public routes without a
// limit of their own.
const uploadRules = appUpstream + `
routes:
  - {prefix: /uploads, methods: [POST], upstream: notes, access: protected, max_body_bytes: 16777216}
  - {prefix: /notes/public, methods: [GET], upstream: notes, access: public}
  - {prefix: /forms, methods: [POST], upstream: notes, access: public}
`

// TestBodyNotHeldBeforeAuthorization: a request that declares a large
// body and sends none of it (or a first part) holds no buffer of the
// declared size, with or without a credential. fasthttp used to allocate
// the declared Content-Length (up to the route's max_body_bytes) as soon
// as the headers were read, before the handler ran: 16 such connections
// held 256 MiB here, without a token.
func TestBodyNotHeldBeforeAuthorization(t *testing.T) {
	e := start(t, envOpt{rules: uploadRules})
	tok := e.token(nil)
	const conns, declared = 16, 16 << 20
	runtime.GC()
	var before, now runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range conns {
		conn, _ := dialProxy(t, e.addr)
		auth := ""
		if i%2 == 1 { // allowed: its body is being read
			auth = "Authorization: Bearer " + tok + "\r\n"
		}
		fmt.Fprintf(conn, "POST /uploads/a HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n", auth, declared)
		if i%2 == 1 {
			_, _ = io.WriteString(conn, strings.Repeat("b", 12<<10))
		}
	}
	// The proxy serves another connection meanwhile.
	e.wantStatus(e.do("GET", "/notes/public/x", "", nil), 200)
	e.reset()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		runtime.GC() // what is live, not garbage of other work
		runtime.ReadMemStats(&now)
		if grew := int64(now.HeapAlloc) - int64(before.HeapAlloc); grew > conns*declared/8 {
			t.Fatalf("%d connections declaring %d bytes each: the heap grew by %d MiB", conns, declared, grew>>20)
		}
	}
	e.wantNothingForwarded()
}

// TestRefusedBodyReadAndDropped: a request refused before it is forwarded
// (no token, a bad one) has its body read and dropped, up to the route's
// limit: the client, which sends all of it before it reads, reads its
// 401, and the connection serves the next request.
func TestRefusedBodyReadAndDropped(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: uploadRules})
	body := strings.Repeat("u", 300_000) // over MAX_BODY_BYTES, within the route's limit
	for _, auth := range []string{"", "Authorization: Bearer not.a.token\r\n"} {
		conn, br := dialProxy(t, e.addr)
		for _, chunked := range []bool{false, true} {
			if chunked {
				fmt.Fprintf(conn, "POST /uploads/a HTTP/1.1\r\nHost: x\r\n%sTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", auth, len(body), body)
			} else {
				fmt.Fprintf(conn, "POST /uploads/a HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s", auth, len(body), body)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("auth %q, chunked %v: %v", auth, chunked, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 401 || resp.Close {
				t.Fatalf("auth %q, chunked %v: %d (close %v), want 401 on a connection kept", auth, chunked, resp.StatusCode, resp.Close)
			}
		}
		_, _ = io.WriteString(conn, "GET /notes/public/x HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("auth %q: the next request on the connection: %v, %v", auth, resp, err)
		}
		resp.Body.Close()
		if got := e.up.Received(); len(got) != 1 || got[0].Method != "GET" {
			t.Fatalf("auth %q: upstream received %d requests, want the GET alone", auth, len(got))
		}
		e.reset()
	}
}

// TestBodyReadFailures: an allowed request whose body stops arriving
// (READ_TIMEOUT), ends before its Content-Length, or whose chunked body
// runs past the route's limit is answered (408, 400, 413), forwards
// nothing, and ends its connection, whose position in the body is lost.
// The body past the limit is sent to a proxy whose READ_TIMEOUT leaves
// room for its 17 MiB on a loaded machine: it must meet the limit, not
// the timeout.
func TestBodyReadFailures(t *testing.T) {
	t.Parallel()
	short := start(t, envOpt{rules: uploadRules, vars: map[string]string{"READ_TIMEOUT": "1s"}})
	roomy := start(t, envOpt{rules: uploadRules, vars: map[string]string{"READ_TIMEOUT": "2m"}})
	head := func(e *env) string {
		return fmt.Sprintf("POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n", e.token(nil))
	}
	shortHead, roomyHead := head(short), head(roomy)
	for _, tc := range []struct {
		name   string
		roomy  bool
		send   func(conn net.Conn)
		status int
	}{
		{"stalls", false, func(conn net.Conn) {
			fmt.Fprintf(conn, "%sContent-Length: 100000\r\n\r\n%s", shortHead, strings.Repeat("s", 20_000))
		}, 408},
		{"ends early", false, func(conn net.Conn) {
			fmt.Fprintf(conn, "%sContent-Length: 100000\r\n\r\n%s", shortHead, strings.Repeat("s", 20_000))
			_ = conn.(*net.TCPConn).CloseWrite()
		}, 400},
		{"broken chunk", false, func(conn net.Conn) {
			fmt.Fprintf(conn, "%sTransfer-Encoding: chunked\r\n\r\n4e20\r\n%szz\r\n", shortHead, strings.Repeat("c", 20_000))
		}, 400},
		{"chunked past the limit", true, func(conn net.Conn) {
			fmt.Fprintf(conn, "%sTransfer-Encoding: chunked\r\n\r\n", roomyHead)
			chunk := strings.Repeat("c", 1<<20)
			for range 17 {
				if _, err := fmt.Fprintf(conn, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
					return // refused and closed while sending
				}
			}
		}, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := short
			if tc.roomy {
				e = roomy
			}
			e = e.with(t)
			e.reset()
			conn, br := dialProxy(t, e.addr)
			go tc.send(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			r := result{status: resp.StatusCode, header: resp.Header, body: b}
			_ = json.Unmarshal(b, &r.prob)
			if resp.StatusCode != tc.status || !resp.Close || r.prob.RequestID == "" {
				t.Fatalf("%d %s (close %v), want %d and the connection closed", resp.StatusCode, b, resp.Close, tc.status)
			}
			if tc.status == 413 && r.prob.Code != problem.CodeBodyTooLarge {
				t.Fatalf("code %q", r.prob.Code)
			}
			e.wantNothingForwarded()
		})
	}
}

// TestBodySignedAsOfItsEnd: a body that arrives after the request was
// allowed is signed as of its end, not of the decision: the signature's
// window (30 s) counts from its timestamp, and an upload may take as long
// as READ_TIMEOUT after its headers.
func TestBodySignedAsOfItsEnd(t *testing.T) {
	e := start(t, envOpt{rules: uploadRules})
	conn, br := dialProxy(t, e.addr)
	body := strings.Repeat("t", 100_000)
	fmt.Fprintf(conn, "POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s",
		e.token(nil), len(body), body[:20_000])
	time.Sleep(200 * time.Millisecond) // allowed meanwhile
	e.clock.Advance(10 * time.Second)
	sent := time.Now().Add(10 * time.Second)
	_, _ = io.WriteString(conn, body[20_000:])
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v, %v", resp, err)
	}
	resp.Body.Close()
	got := e.up.Last(t)
	ts, _ := strconv.ParseInt(strings.Join(got.Headers["X-Auth-Timestamp"], ""), 10, 64)
	if got.VerifyErr != nil || len(got.Body) != len(body) || ts < sent.Add(-time.Second).UnixMilli() {
		t.Fatalf("verify %v, body %d bytes, signed at %d, want at or after %d (the body's end)", got.VerifyErr, len(got.Body), ts, sent.UnixMilli())
	}
}

// TestOverLimitBodyAnswered: a client that sends its whole body before it
// reads the answer (no "Expect: 100-continue", as browsers do) reads the
// 413 for a body over the limit, declared or chunked, instead of a reset:
// the proxy answers, shuts its side and reads what still comes for a
// while before it closes. Closed at once with the body still arriving,
// the connection was reset, and the answer lost with it.
func TestOverLimitBodyAnswered(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: uploadRules})
	body := strings.Repeat("o", 2<<20) // MAX_BODY_BYTES is 64 KiB
	for _, tc := range []struct{ name, req string }{
		{"declared, no credential", fmt.Sprintf("POST /forms/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)},
		{"declared, over the route's limit", fmt.Sprintf("POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", e.token(nil), 17<<20, strings.Repeat(body, 9))},
		{"chunked", fmt.Sprintf("POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n", e.token(nil),
			strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", len(body), body), 9))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			conn, br := dialProxy(t, e.addr)
			if _, err := io.WriteString(conn, tc.req); err != nil {
				t.Fatalf("sending the body: %v", err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			var p problem.Problem
			_ = json.Unmarshal(b, &p)
			if resp.StatusCode != 413 || p.Code != problem.CodeBodyTooLarge || !resp.Close {
				t.Fatalf("%d %s (close %v), want 413 %s and the connection closed", resp.StatusCode, b, resp.Close, problem.CodeBodyTooLarge)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the answer: %v, want the end of the connection", err)
			}
			e.wantNothingForwarded()
		})
	}
}

// TestLingeringBounded: connections answered 413 for a body over the
// limit are read and dropped after the answer (counted in
// authproxy_lingering_connections) at most 512 at a time; past that they
// close at once. Each is counted until it ends, and no longer.
func TestLingeringBounded(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: uploadRules})
	const conns = 520
	var held []net.Conn
	for range conns {
		conn, br := dialProxy(t, e.addr)
		// A declared length over MAX_BODY_BYTES, its first 8 KiB sent
		// (fasthttp reads as much before the handler runs): the
		// connection lingers until it ends or 5 s pass.
		fmt.Fprintf(conn, "POST /forms/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", 1<<20, strings.Repeat("f", 8<<10))
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 413 || !resp.Close {
			t.Fatalf("%v, %v", resp, err)
		}
		held = append(held, conn)
	}
	lingering := func() float64 {
		_, body := get(t, "http://"+e.admin+"/metrics")
		return metricValue(body, "authproxy_lingering_connections")
	}
	if got := lingering(); got != 512 {
		t.Fatalf("lingering: %v, want 512", got)
	}
	for _, c := range held {
		c.Close()
	}
	testenv.Eventually(t, func() error {
		return testenv.Want("lingering once the clients closed", lingering(), 0.0)
	})
}

// readAnswers reads n answers from br (HEAD answers have no body), and
// fails unless their statuses are want.
func readAnswers(t *testing.T, br *bufio.Reader, methods []string, want []int) []*http.Response {
	t.Helper()
	var out []*http.Response
	for i, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want[i] {
			t.Fatalf("answer %d: %d, want %d (%s)", i, resp.StatusCode, want[i], b)
		}
		out = append(out, resp)
	}
	return out
}

// TestRefusedBodyPastLimitAnswered: a refused request (no credential, no
// route) whose chunked body runs past MAX_BODY_BYTES is answered, and the
// client, which sends all of it before it reads, reads that answer rather
// than a reset: the connection lingers as after a 413.
func TestRefusedBodyPastLimitAnswered(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: uploadRules + "  - {prefix: /private, methods: [POST], upstream: notes, access: protected}\n"})
	body := strings.Repeat("r", 20<<20)
	for _, tc := range []struct {
		path   string
		status int
	}{{"/private/a", 401}, {"/nowhere", 404}} {
		t.Run(tc.path, func(t *testing.T) {
			e := e.with(t)
			conn, br := dialProxy(t, e.addr)
			req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n", tc.path,
				strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", 64<<10, body[:64<<10]), len(body)/(64<<10)))
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatalf("sending the body: %v", err)
			}
			resp := readAnswers(t, br, []string{"POST"}, []int{tc.status})[0]
			if !resp.Close {
				t.Fatal("connection kept")
			}
			e.wantNothingForwarded()
		})
	}
}

// TestFailedBodyAnsweredAtOnce: an allowed request whose chunked body is
// broken, or runs past its limit while the client pauses, is answered at
// once, not after READ_TIMEOUT (two minutes here, to tell the two apart):
// nothing more of the body is waited for once it is known to be refused.
func TestFailedBodyAnsweredAtOnce(t *testing.T) {
	e := start(t, envOpt{rules: uploadRules, vars: map[string]string{"READ_TIMEOUT": "2m"}})
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"broken chunk", fmt.Sprintf("4e20\r\n%szz\r\n", strings.Repeat("c", 20_000)), 400},
		{"past the limit", strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", 50_000, strings.Repeat("c", 50_000)), 2), 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, br := dialProxy(t, e.addr)
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			fmt.Fprintf(conn, "POST /forms/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s", tc.body)
			begin := time.Now()
			resp := readAnswers(t, br, []string{"POST"}, []int{tc.status})[0]
			if took := time.Since(begin); took > 20*time.Second || !resp.Close {
				t.Fatalf("answered after %v (close %v), want at once", took, resp.Close)
			}
		})
	}
}

// TestExpectContinueRefusedFromHeaders: a request that waits for "100
// Continue" is answered from its headers when they decide the answer, and
// its client never sends the body: a protected route without any
// credential (401 with its challenge, as after the body), an API key in
// the query (400), X-API-Key beside Authorization (400), a malformed API
// key (401; the other refused credentials:
// TestExpectContinueInvalidCredentials). A request with a valid
// credential, or to a public route, is told to continue.
func TestExpectContinueRefusedFromHeaders(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: uploadRules})
	tok := e.token(nil)
	secret, _ := e.newAPIKey()
	for _, tc := range []struct {
		name, target, extra string
		status              int
		code                string
	}{
		{"no credential", "/uploads/a?name=x", "", 401, problem.CodeUnauthenticated},
		{"a key in the query", "/uploads/a?k=" + secret, "Authorization: Bearer " + tok + "\r\n", 400, problem.CodeAPIKeyInQuery},
		{"a bearer", "/uploads/a", "Authorization: Bearer " + tok + "\r\n", 100, ""},
		{"an API key", "/uploads/a", "X-API-Key: " + secret + "\r\n", 100, ""},
		{"a malformed API key", "/uploads/a", "X-API-Key: tg_x\r\n", 401, problem.CodeInvalidToken},
		{"an API key and a bearer", "/uploads/a", "X-API-Key: " + secret + "\r\nAuthorization: Bearer " + tok + "\r\n", 400, problem.CodeAmbiguousCredentials},
		{"a public route", "/forms/a", "", 100, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			conn, br := dialProxy(t, e.addr)
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: 50000\r\nExpect: 100-continue\r\n\r\n", tc.target, tc.extra)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer before the body: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %s, want %d", resp.StatusCode, b, tc.status)
			}
			if tc.status == 100 {
				return
			}
			var p problem.Problem
			_ = json.Unmarshal(b, &p)
			if p.Code != tc.code || p.RequestID == "" || !resp.Close {
				t.Fatalf("%d %s (close %v), want %s and the connection closed", resp.StatusCode, b, resp.Close, tc.code)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without its challenge")
			}
			e.wantNothingForwarded()
		})
	}
}

// TestBodyMemoryBounded: the body buffers of requests being read at once
// stay within BODY_MEMORY_MB (1 MiB here): a body that would pass it is
// refused 503 with Retry-After (the client reads it: the rest of its body
// is read and dropped), and every byte held is given back when a request
// ends (authproxy_request_body_bytes back at 0), so the next body is read.
func TestBodyMemoryBounded(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: uploadRules, vars: map[string]string{"BODY_MEMORY_MB": "1"}})
	tok := e.token(nil)
	held := func() float64 {
		_, body := get(t, "http://"+e.admin+"/metrics")
		return metricValue(body, "authproxy_request_body_bytes")
	}
	// A holds most of the budget: it declares 900 KiB and sends 750. Its
	// buffer holds at least what arrived, and at most the declared length:
	// where it stands between the two depends on the capacity the request's
	// pooled state started from (a buffer a previous request left), so B
	// must not fit beside the least of them.
	a, abr := dialProxy(t, e.addr)
	fmt.Fprintf(a, "POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", tok, 900<<10, strings.Repeat("a", 750<<10))
	testenv.Eventually(t, func() error {
		if v := held(); v < 750<<10 {
			return fmt.Errorf("held %v bytes, want A's body counted", v)
		}
		return nil
	})
	// B's 300 KiB does not fit beside it.
	body := strings.Repeat("b", 300<<10)
	send := func() *http.Response {
		t.Helper()
		b, bbr := dialProxy(t, e.addr)
		if _, err := fmt.Fprintf(b, "POST /uploads/b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", tok, len(body), body); err != nil {
			t.Fatalf("sending B: %v", err)
		}
		resp, err := http.ReadResponse(bbr, nil)
		if err != nil {
			t.Fatalf("B: no answer: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp
	}
	if resp := send(); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Fatalf("B beside A: %d (Retry-After %q, close %v), want 503 with Retry-After, the connection closed", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close)
	}
	e.wantNothingForwarded()
	// A ends its body: forwarded, and what it held given back.
	_, _ = io.WriteString(a, strings.Repeat("a", 150<<10))
	if resp, err := http.ReadResponse(abr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("A: %v, %v", resp, err)
	}
	if v := held(); v != 0 {
		t.Fatalf("held %v bytes once A ended, want 0", v)
	}
	if resp := send(); resp.StatusCode != 200 {
		t.Fatalf("B alone: %d, want 200", resp.StatusCode)
	}
	if v := held(); v != 0 {
		t.Fatalf("held %v bytes once B ended, want 0", v)
	}
}
