package app

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStrayBytesReachNoOtherClient: an upstream that sends bytes outside
// an answer, with it or later, in a segment of its own (a body with an
// answer to HEAD, with a 204 or a 304, more than its Content-Length, a
// second answer, bytes after the last chunk). The proxy's pooled
// connection handed what arrived while it was idle to the next request on
// it as its answer: another client's, whose request read the first
// client's data. Each connection with stray bytes is closed, counted and
// logged; the next request, a POST from another client, goes out on a new
// connection and gets its own answer.
func TestStrayBytesReachNoOtherClient(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nsomeone-elses"
	cases := []struct {
		method, path, answer string
		later                bool // the stray bytes in a later segment
		status               int
	}{
		{"HEAD", "/head", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 200},
		{"GET", "/204", "HTTP/1.1 204 No Content\r\n\r\n", true, 204},
		{"GET", "/304", "HTTP/1.1 304 Not Modified\r\n\r\n", true, 304},
		{"GET", "/long", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true, 200},
		{"GET", "/chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", true, 200},
		{"GET", "/twice", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 200},
	}
	release, sent := make(chan struct{}), make(chan struct{}, 1)
	var accepted atomic.Int64
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					answered := false
					for _, tc := range cases {
						if req.URL.Path != tc.path {
							continue
						}
						if tc.later {
							_, _ = io.WriteString(c, tc.answer)
							<-release // the client has the answer
							_, _ = io.WriteString(c, stray)
						} else {
							_, _ = io.WriteString(c, tc.answer+stray)
						}
						sent <- struct{}{}
						answered = true
					}
					if !answered {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(req.URL.Path))+"\r\n\r\n"+req.URL.Path)
					}
				}
			}()
		}
	}()
	e := start(t, envOpt{rules: "upstreams:\n  notes:\n    url: http://" + ln.Addr().String() + "\n    key_id: app-notes\nroutes:\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	counted := func(when string) float64 {
		return testutil.ToFloat64(e.app.Metrics.UpstreamStray.WithLabelValues(when))
	}
	// A first connection, pooled.
	if r := e.raw("GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); r.status != 200 || string(r.body) != "/first" {
		t.Fatalf("GET /first answered %d %q", r.status, r.body)
	}
	for _, tc := range cases {
		when := "after_answer"
		if tc.later {
			when = "idle"
		}
		before := counted(when)
		if r := e.raw(tc.method + " " + tc.path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); r.status != tc.status {
			t.Fatalf("%s %s answered %d, want %d", tc.method, tc.path, r.status, tc.status)
		}
		if tc.later {
			release <- struct{}{}
		}
		<-sent
		time.Sleep(20 * time.Millisecond) // the stray bytes reach the proxy's socket
		conns := accepted.Load()
		// Another client's request, on the connection the proxy pooled.
		p := "/theirs" + tc.path
		r := e.raw("POST " + p + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
		if r.status != 200 || string(r.body) != p {
			t.Errorf("after %s %s: POST %s answered %d %q, want its own answer", tc.method, tc.path, p, r.status, r.body)
		}
		if n := accepted.Load() - conns; tc.later && n != 1 {
			t.Errorf("after %s %s: %d new upstream connections, want 1 (the one with stray bytes closed)", tc.method, tc.path, n)
		}
		if n := counted(when) - before; n != 1 {
			t.Errorf("after %s %s: authproxy_upstream_stray_closes_total{when=%q} rose by %v, want 1", tc.method, tc.path, when, n)
		}
	}
	var warned int
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, "upstream sent bytes outside an answer") {
			warned++
			if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, `"upstream":"notes"`) || strings.Contains(line, "someone-elses") {
				t.Errorf("log line %s: want a warning naming the upstream, without the bytes", line)
			}
		}
	}
	if warned != len(cases) {
		t.Errorf("%d warnings logged, want %d (one per connection closed)", warned, len(cases))
	}
}
