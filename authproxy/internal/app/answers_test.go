package app

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// keptUpstream is an app that keeps its connections alive and answers each
// request by its path: with answers[path] when there is one (written to
// the connection; it says whether to close the connection after), else
// with "own <path>". It returns its URL.
func keptUpstream(t *testing.T, answers map[string]func(c net.Conn) (closeAfter bool)) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, r.Body)
					if answer := answers[r.URL.Path]; answer != nil {
						if answer(c) {
							return
						}
						continue
					}
					own := "own " + r.URL.Path
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(own))+"\r\n\r\n"+own); err != nil {
						return
					}
				}
			})
		}
	})
	return "http://" + ln.Addr().String()
}

// TestMalformedUpstreamAnswers: what a buggy or compromised app sends back
// reaches the client as a well-formed answer, or cut short on a connection
// the proxy closes, and never as (part of) another request's answer: the
// next request on the client's connection, when it stays open, and
// requests from another client through the upstream's pooled connections
// each get their own answer. No token is logged.
func TestMalformedUpstreamAnswers(t *testing.T) {
	// write answers with raw as it is.
	write := func(raw string) func(net.Conn) bool {
		return func(c net.Conn) bool { _, _ = io.WriteString(c, raw); return false }
	}
	// pause writes first, waits past UPSTREAM_TIMEOUT, then writes rest.
	pause := func(first, rest string) func(net.Conn) bool {
		return func(c net.Conn) bool {
			_, _ = io.WriteString(c, first)
			time.Sleep(600 * time.Millisecond)
			_, _ = io.WriteString(c, rest)
			return false
		}
	}
	// thenClose writes raw and closes the connection.
	thenClose := func(raw string) func(net.Conn) bool {
		return func(c net.Conn) bool { _, _ = io.WriteString(c, raw); return true }
	}
	// thenReset writes raw and, once the proxy has had time to read it,
	// resets the connection.
	thenReset := func(raw string) func(net.Conn) bool {
		return func(c net.Conn) bool {
			_, _ = io.WriteString(c, raw)
			time.Sleep(100 * time.Millisecond)
			_ = c.(*net.TCPConn).SetLinger(0)
			return true
		}
	}
	const ok = "HTTP/1.1 200 OK\r\n"
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
	chunked := ok + "Transfer-Encoding: chunked\r\n\r\n"
	cases := []struct {
		name   string
		method string
		answer func(net.Conn) bool
		// status and body the client reads, its connection kept; status 0:
		// the answer is cut short (or missing) and the connection closed.
		status int
		body   string
	}{
		// Framing: chunked wins over a Content-Length; the client never
		// gets both. Anything else ambiguous is 502.
		{"length-and-chunked", "GET", write(ok + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), 200, "hello"},
		{"two-lengths", "GET", write(ok + "Content-Length: 3\r\nContent-Length: 5\r\n\r\nhello"), 502, ""},
		{"same-length-twice", "GET", write(ok + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), 502, ""},
		{"length-list", "GET", write(ok + "Content-Length: 5, 5\r\n\r\nhello"), 502, ""},
		{"signed-length", "GET", write(ok + "Content-Length: +5\r\n\r\nhello"), 502, ""},
		{"negative-length", "GET", write(ok + "Content-Length: -1\r\n\r\nhello"), 502, ""},
		{"gzip-coding", "GET", write(ok + "Transfer-Encoding: gzip\r\n\r\nhello"), 502, ""},
		{"coding-list", "GET", write(ok + "Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), 502, ""},
		{"identity-coding", "GET", write(ok + "Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello"), 502, ""},
		// Header fields.
		{"bare-cr", "GET", write(ok + "X-A: a\rX-Auth-User-Id: u\r\nContent-Length: 5\r\n\r\nhello"), 502, ""},
		{"nul", "GET", write(ok + "X-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello"), 502, ""},
		{"header-past-16KiB", "GET", write(ok + "X-Big: " + strings.Repeat("b", 16<<10) + "\r\nContent-Length: 5\r\n\r\nhello"), 502, ""},
		{"status-without-code", "GET", write("HTTP/1.1 OK\r\nContent-Length: 5\r\n\r\nhello"), 502, ""},
		{"not-http", "GET", write("ICY 200 OK\r\nContent-Length: 5\r\n\r\nhello"), 502, ""},
		// Informational answers: skipped, their fields not the answer's.
		{"interim", "GET", write("HTTP/1.1 100 Continue\r\nX-Interim: 1\r\nSet-Cookie: i=1\r\n\r\n" +
			"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
			ok + "Content-Length: 5\r\n\r\nhello"), 200, "hello"},
		{"interim-with-body", "GET", write("HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello" + ok + "Content-Length: 5\r\n\r\nhello"), 502, ""},
		// Bodies: cut short, broken chunking, trailers. A body of up to
		// 4 KiB is read whole before the answer goes out: cut short, it
		// is 502 (it was an empty reply); a longer one goes out cut short.
		{"shorter-than-length", "GET", thenClose(ok + "Content-Length: 100\r\n\r\nabc"), 502, ""},
		{"long-shorter-than-length", "GET", thenClose(ok + "Content-Length: 100000\r\n\r\n" + strings.Repeat("l", 50000)), 0, ""},
		{"cut-mid-chunk", "GET", thenClose(chunked + "10\r\nabc"), 0, ""},
		{"cut-after-chunk", "GET", thenClose(chunked + "3\r\nabc\r\n"), 0, ""},
		{"chunk-without-crlf", "GET", write(chunked + "3\r\nabcXX0\r\n\r\n"), 0, ""},
		// A streamed body (chunked, or longer than 4 KiB) that fails before
		// its first bytes: nothing of the answer has gone out, and it is
		// 502 (504 when they do not come in time), where the client got an
		// empty reply (fasthttp wrote the header into its buffer, failed
		// on the first read of the body and closed the connection).
		{"chunked-cut-before-first-chunk", "GET", thenClose(chunked), 502, ""},
		{"chunked-reset-before-first-chunk", "GET", thenReset(chunked), 502, ""},
		{"chunked-cut-in-size-line", "GET", thenClose(chunked + "5"), 502, ""},
		{"chunked-cut-after-size-line", "GET", thenClose(chunked + "5\r\n"), 502, ""},
		{"long-cut-before-body", "GET", thenClose(ok + "Content-Length: 100000\r\n\r\n"), 502, ""},
		{"long-reset-before-body", "GET", thenReset(ok + "Content-Length: 100000\r\n\r\n"), 502, ""},
		{"chunk-size-not-hex", "GET", write(chunked + "zz\r\nabc\r\n0\r\n\r\n"), 502, ""},
		{"chunk-size-overflow", "GET", write(chunked + "fffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), 502, ""},
		{"chunk-size-negative", "GET", write(chunked + "-3\r\nabc\r\n0\r\n\r\n"), 502, ""},
		{"chunked-empty", "GET", write(chunked + "0\r\n\r\n"), 200, ""},
		{"until-close-empty", "GET", thenClose(ok + "\r\n"), 200, ""},
		{"trailer-fields", "GET", write(chunked + "3\r\nabc\r\n0\r\nX-Auth-User-Id: u\r\nSet-Cookie: t=1\r\n\r\n"), 200, "abc"},
		// Answers to HEAD carry no body to the client (this one longer
		// than the proxy's read buffer: the rest waits on the connection).
		{"head-with-body", "HEAD", write(ok + "Content-Length: 70005\r\n\r\n" + strings.Repeat("p", 70000) + stray), 200, ""},
		{"head-with-chunks", "HEAD", write(chunked + "5\r\nhello\r\n0\r\n\r\n" + stray), 200, ""},
		// Slow upstreams: what comes after UPSTREAM_TIMEOUT goes nowhere.
		{"no-answer", "GET", pause("", stray), 504, ""},
		{"header-then-silence", "GET", pause(ok+"Content-Length: 10\r\n\r\nabc", "defghij"+stray), 504, ""}, // a short body: read whole first
		{"half-a-header", "GET", pause(ok+"Content-Le", "ngth: 5\r\n\r\nhello"+stray), 504, ""},             // timed out, as with no answer
		{"chunked-header-then-silence", "GET", pause(chunked, "5\r\nhello\r\n0\r\n\r\n"+stray), 504, ""},    // nothing of the body in time
	}
	late := map[string]bool{"no-answer": true, "header-then-silence": true, "half-a-header": true, "chunked-header-then-silence": true}
	answers := map[string]func(net.Conn) bool{}
	for _, c := range cases {
		answers["/"+c.name] = c.answer
	}
	// The slow upstreams' cases run through a proxy whose
	// UPSTREAM_TIMEOUT they outlast; the others through one whose timeout
	// no answer comes near, however loaded the machine: a reset the
	// upstream sends 100 ms after its header must be read as a reset
	// (502), not outlasted by a short timeout (504).
	proxy := func(timeout string) (*env, string) {
		e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + keptUpstream(t, answers) + "\n    key_id: app-notes\nroutes:\n" +
			"  - {prefix: /, upstream: notes, access: protected}\n", vars: map[string]string{"UPSTREAM_TIMEOUT": timeout, "LOG_LEVEL": "info"}})
		return e, e.token(nil)
	}
	eLate, tokLate := proxy("300ms")
	eMain, tokMain := proxy("1m")
	for _, c := range cases {
		e, tok := eMain, tokMain
		if late[c.name] {
			e, tok = eLate, tokLate
		}
		request := func(method, path string) string {
			return method + " " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n\r\n"
		}
		t.Run(c.name, func(t *testing.T) {
			conn, _ := dialProxy(t, e.addr)
			var raw strings.Builder
			br := bufio.NewReader(io.TeeReader(conn, &raw))
			if _, err := io.WriteString(conn, request(c.method, "/"+c.name)); err != nil {
				t.Fatal(err)
			}
			var head *http.Request
			if c.method == "HEAD" {
				head = &http.Request{Method: "HEAD"}
			}
			resp, err := http.ReadResponse(br, head)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
			}
			if c.status == 0 {
				if err == nil {
					t.Fatalf("answered %d %q, want it cut short", resp.StatusCode, body)
				}
				if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
					t.Fatalf("after a cut answer: %v, want the connection closed", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != c.status || c.status < 300 && string(body) != c.body {
					t.Fatalf("answered %d %q, want %d %q", resp.StatusCode, body, c.status, c.body)
				}
				if c.status >= 500 && !strings.Contains(string(body), `"code":"`+problem.CodeUpstreamDown+`"`) {
					t.Fatalf("%d answer %q, want a problem", resp.StatusCode, body)
				}
				hdr := strings.ToLower(raw.String()[:strings.Index(raw.String(), "\r\n\r\n")])
				if strings.Contains(hdr, "content-length:") && strings.Contains(hdr, "transfer-encoding:") {
					t.Fatalf("answer framed twice: %q", hdr)
				}
				for _, leak := range []string{"x-interim", "set-cookie", "link:", "x-auth-", "trailer"} {
					if strings.Contains(hdr, leak) {
						t.Fatalf("%q in the answer's header %q", leak, hdr)
					}
				}
				if len(resp.Trailer) > 0 {
					t.Fatalf("trailers %v reached the client", resp.Trailer)
				}
				// The client's connection goes on with the next answer.
				if _, err := io.WriteString(conn, request("GET", "/after")); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("next request on the connection: %v", err)
				}
				if body, _ := io.ReadAll(resp.Body); string(body) != "own /after" {
					t.Fatalf("next request on the connection answered %q", body)
				}
			}
			// Other clients, through the upstream's pooled connections, get
			// their own answers, also once late bytes have come.
			if late[c.name] {
				time.Sleep(400 * time.Millisecond)
			}
			for i := range 3 {
				p := "/other-" + strconv.Itoa(i)
				if r := e.do("GET", p, tok, nil); r.status != 200 || string(r.body) != "own "+p {
					t.Fatalf("GET %s from another client answered %d %q", p, r.status, r.body)
				}
			}
		})
	}
	for _, p := range []struct {
		e   *env
		tok string
	}{{eMain, tokMain}, {eLate, tokLate}} {
		logs := p.e.logs.String()
		if !strings.Contains(logs, `"msg":"forward"`) {
			t.Fatalf("no failed forward logged: %s", logs)
		}
		if strings.Contains(logs, p.tok[strings.LastIndexByte(p.tok, '.')+1:]) {
			t.Fatalf("the token's signature is in the log: %s", logs)
		}
	}
}

// TestChunkedAnswerNotHeldBack: waiting for a chunked answer's first bytes
// before its header goes out (TestMalformedUpstreamAnswers: an answer cut
// before them is 502) holds nothing back that the client would have had:
// an event stream on a forwarded route whose first event comes with its
// header, or after a pause, reaches the client while the upstream holds
// the stream open for its next event (which never comes: a proxy that
// held the event back would pass it on at the stream's end, or at
// UPSTREAM_TIMEOUT, two minutes here); and so does an HTTP/1.0 client's.
func TestChunkedAnswerNotHeldBack(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	const event = "data: first\n\n"
	chunk := strconv.FormatInt(int64(len(event)), 16) + "\r\n" + event + "\r\n"
	const pause = 300 * time.Millisecond
	hold := make(chan struct{})
	answers := map[string]func(net.Conn) bool{
		"/with-header": func(c net.Conn) bool {
			_, _ = io.WriteString(c, head+chunk)
			<-hold
			return true
		},
		"/after-a-pause": func(c net.Conn) bool {
			_, _ = io.WriteString(c, head)
			time.Sleep(pause)
			_, _ = io.WriteString(c, chunk)
			<-hold
			return true
		},
	}
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: " + keptUpstream(t, answers) + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /, upstream: notes, access: public}\n", vars: map[string]string{"UPSTREAM_TIMEOUT": "2m"}})
	t.Cleanup(func() { close(hold) })
	for _, path := range []string{"/with-header", "/after-a-pause"} {
		for _, version := range []string{"HTTP/1.1", "HTTP/1.0"} {
			t.Run(path+" "+version, func(t *testing.T) {
				conn, br := dialProxy(t, e.addr)
				_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.WriteString(conn, "GET "+path+" "+version+"\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("no answer while the upstream holds its stream open: %v", err)
				}
				defer resp.Body.Close()
				defer conn.Close() // first: the stream never ends, and Close would read it to its end
				got := make([]byte, len(event))
				if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != event {
					t.Fatalf("status %d, read %q (%v), want the first event %q while the upstream holds its stream open", resp.StatusCode, got, err, event)
				}
			})
		}
	}
}
