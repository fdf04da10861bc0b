package app

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// 400 answers carry fixed details, never the request's bytes; 413 and 431
// are full problem answers (request id, and the path as instance when the
// request line could be read), access-logged and counted like any other.
func TestRefusedRequests(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules, vars: map[string]string{"ACCESS_LOG": "true"}})
	tok := e.token(nil)
	count4xx := func() int {
		mfs, err := e.app.Metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "authproxy_request_duration_seconds" {
				continue
			}
			n := 0
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "code" && len(l.GetValue()) == 3 && l.GetValue()[0] == '4' {
						n += int(m.GetHistogram().GetSampleCount())
					}
				}
			}
			return n
		}
		return 0
	}
	tests := []struct {
		name     string
		req      string
		status   int
		code     string
		instance string
		secret   string
	}{
		{"malformed header line", "GET /notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nX-Evil-Header-Without-Colon\r\nConnection: close\r\n\r\n",
			400, problem.CodeBadRequest, "", "X-Evil"},
		{"bad content length", "POST /notes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 12x\r\nConnection: close\r\n\r\n",
			400, problem.CodeBadRequest, "", "12x"},
		{"headers too large", "GET /notes/public HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nX-Big: " + strings.Repeat("b", 20000) + "\r\nConnection: close\r\n\r\n",
			431, problem.CodeBadRequest, "", "bbbb"},
		{"body too large", "POST /notes/maybe HTTP/1.1\r\nHost: x\r\nX-Request-Id: client-id-413\r\nContent-Length: 70000\r\nConnection: close\r\n\r\n" + strings.Repeat("a", 70000),
			413, problem.CodeBodyTooLarge, "/notes/maybe", "aaaa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			before := count4xx()
			r := e.raw(tt.req)
			e.wantProblem(r, tt.status, tt.code)
			body := string(r.body)
			for _, leak := range []string{tok[:20], tt.secret, "buffer", "error when"} {
				if strings.Contains(body, leak) {
					t.Fatalf("answer echoes the request (%q): %s", leak, body)
				}
			}
			if r.prob.Instance != tt.instance {
				t.Fatalf("instance = %q, want %q", r.prob.Instance, tt.instance)
			}
			// The client's X-Request-Id, from a peer the proxy does not
			// trust, is not the request's: the answer names the proxy's.
			if tt.status == 413 && (r.prob.RequestID == "client-id-413" || r.prob.RequestID != r.header.Get("X-Request-Id")) {
				t.Fatalf("request_id = %q (header %q), want the proxy's", r.prob.RequestID, r.header.Get("X-Request-Id"))
			}
			if got := count4xx(); got != before+1 {
				t.Fatalf("4xx requests counted %d -> %d, want one more", before, got)
			}
			logged := false
			for _, line := range strings.Split(e.logs.String(), "\n") {
				logged = logged || strings.Contains(line, `"msg":"request"`) && strings.Contains(line, `"request_id":"`+r.prob.RequestID+`"`) &&
					strings.Contains(line, `"status":`+strconv.Itoa(tt.status))
			}
			if !logged {
				t.Fatalf("not access-logged: %s", e.logs.String())
			}
			e.wantNothingForwarded()
		})
	}
	if strings.Contains(e.logs.String(), tok) {
		t.Fatal("the bearer token reached the log")
	}
}

// A request fasthttp cannot read is logged with the reason only: none of
// its bytes, which may hold credentials of any kind (a bearer token whose
// tail alone falls in the quoted part, a WebSocket subprotocol's token, a
// cookie, another scheme's credentials), reach the log.
func TestRefusedRequestsLogNoRequestBytes(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules, vars: map[string]string{"LOG_LEVEL": "info"}})
	tok := e.token(nil)
	secrets := []string{tok[len(tok)-40:], tok[20:60], "COOKIESECRET", "TOKENSECRET"}
	for _, req := range []string{
		"GET /notes HTTP/1.1\r\nHost: x\r\nCookie: session=COOKIESECRET\r\nSec-WebSocket-Protocol: chat, bearer." + tok +
			"\r\nX-Header-Without-Colon\r\nConnection: close\r\n\r\n",
		"GET/notes HTTP/1.1\r\nHost: x\r\nAuthorization: Token TOKENSECRET\r\nX-Pad: " + strings.Repeat("p", 300) +
			"\r\nAuthorization: Bearer " + tok + "\r\n\r\n",
		"GET /notes HTTP/1.1\r\nHost: x\r\nCookie: session=COOKIESECRET\x01\r\nConnection: close\r\n\r\n",
	} {
		e.wantProblem(e.raw(req), 400, problem.CodeBadRequest)
	}
	logs := e.logs.String()
	if n := strings.Count(logs, `"msg":"request refused"`); n != 3 {
		t.Fatalf("%d refusals logged, want 3: %s", n, logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Fatalf("the log quotes the request (%q): %s", s, logs)
		}
	}
}

// An upstream answer fasthttp cannot read is logged with the reason only:
// its header bytes (a session cookie the upstream set, say) never reach
// the proxy's log.
func TestBadUpstreamAnswerLogsNoResponseBytes(t *testing.T) {
	t.Parallel()
	url := cannedUpstream(t, "HTTP/1.1 200 OK\r\nSet-Cookie: sid=UPSTREAMSECRET\r\nX-Broken-Without-Colon\r\n"+
		"X-Pad: "+strings.Repeat("p", 300)+"\r\nSet-Cookie: other=TAILSECRET\x01\r\nContent-Length: 0\r\n\r\n")
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + url + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /notes, upstream: notes, access: public}\n", vars: map[string]string{"LOG_LEVEL": "info"}})
	resp, err := e.client.Get("http://" + e.addr + "/notes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 502 {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"msg":"forward"`) {
		t.Fatalf("the failed forward is not logged: %s", logs)
	}
	for _, s := range []string{"UPSTREAMSECRET", "TAILSECRET"} {
		if strings.Contains(logs, s) {
			t.Fatalf("the log quotes the upstream's answer (%q): %s", s, logs)
		}
	}
}

// A request method the proxy does not know (outside the standard ones and
// named by no route: WebDAV's PROPPATCH where only PROPFIND is routed, a
// typo, a standard method in lower case, as methods are case-sensitive)
// is answered 501 like any other refusal, on any path: problem+json with
// the request id, counted, access-logged (the method clipped), and not
// forwarded. Fiber answered it by itself, in plain text, and nothing
// recorded it.
func TestUnknownMethodRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: davRules + "  - {prefix: /, upstream: notes, access: public}\n", vars: map[string]string{"ACCESS_LOG": "true"}})
	tok := e.token(nil)
	long := strings.Repeat("M", 200)
	for i, method := range []string{"PROPPATCH", "propfind", "get", long} {
		// A route naming other such methods, one naming only standard
		// ones, one without methods.
		path := []string{"/dav/x", "/dav/x", "/notes", "/elsewhere"}[i]
		e.reset()
		r := e.raw(method + " " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nConnection: close\r\n\r\n")
		e.wantProblem(r, 501, problem.CodeNotImplemented)
		if r.prob.RequestID == "" || r.prob.Instance != path {
			t.Fatalf("%.20s: request_id %q, instance %q", method, r.prob.RequestID, r.prob.Instance)
		}
		logged := false
		for _, line := range strings.Split(e.logs.String(), "\n") {
			logged = logged || strings.Contains(line, `"msg":"request"`) && strings.Contains(line, `"request_id":"`+r.prob.RequestID+`"`) &&
				strings.Contains(line, `"status":501`)
		}
		if !logged {
			t.Fatalf("%.20s: not access-logged: %s", method, e.logs.String())
		}
		e.wantNothingForwarded()
	}
	if strings.Contains(e.logs.String(), strings.Repeat("M", 33)) {
		t.Fatal("the log holds the long method whole")
	}
}

// TestUnreadableRequestDuration: a request fasthttp cannot read, sent on a
// keep-alive connection after it sat idle, is timed from when it came, not
// from the connection's previous request (fasthttp's request time is still
// that one's when the error handler runs): its access line's duration is
// within the time the client waited for its answer, which the idle time
// before it is not.
func TestUnreadableRequestDuration(t *testing.T) {
	e := start(t, envOpt{rules: notesRules, realClock: true, vars: map[string]string{"ACCESS_LOG": "true"}})
	conn, br := dialProxy(t, e.addr)
	fmt.Fprint(conn, "GET /notes/public HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswers(t, br, []string{"GET"}, []int{200})
	time.Sleep(500 * time.Millisecond) // the idle time: what is tested, not a wait for something
	sent := time.Now()
	fmt.Fprint(conn, "GET /notes/public HTTP/1.1\r\nHost: x\r\nX-Bad\x01: y\r\n\r\n")
	resp := readAnswers(t, br, []string{"GET"}, []int{400})[0]
	waited := time.Since(sent)
	line := accessLineOf(t, e, resp.Header.Get("X-Request-Id"))
	if d, ok := line["duration_ms"].(float64); !ok || d > float64(waited.Microseconds())/1000 {
		t.Fatalf("access line duration_ms %v, want at most the %v the client waited for the answer: %v", line["duration_ms"], waited, line)
	}
}
