package app

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// uploadRouteRules: a public upload route of up to 64 MiB in front of the
// app at url.
func uploadRouteRules(url string) string {
	return "upstreams:\n  up: {url: '" + url + "', key_id: app-notes}\nroutes:\n" +
		"  - {prefix: /up, upstream: up, access: public, max_body_bytes: 67108864}\n"
}

// upload sends method with a body of size bytes to path through the proxy
// and reads the whole answer.
func upload(t *testing.T, e *env, method, path string, size int) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.addr+path, bytes.NewReader(make([]byte, size)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s (%d bytes): %v", method, path, size, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s (%d bytes): the answer's body: %v", method, path, size, err)
	}
	return resp, body
}

// uploadCases are the uploads of the tests below: larger than the socket
// buffers between the proxy and the app hold, so that the app's early
// answer and close come while the proxy is still writing the body (for
// 32 MiB always; 4 MiB may fit in them, the write then complete, and the
// answer an ordinary one, the client's connection kept).
var uploadCases = []struct {
	method string
	size   int
}{{"POST", 4 << 20}, {"PUT", 4 << 20}, {"POST", 32 << 20}, {"PUT", 32 << 20}}

// TestEarlyAnswerToUploadPassedOn: an app that refuses an upload without
// reading its body (a 415 from a Go net/http handler, which then reads at
// most 256 KiB of the body and closes, a reset for the proxy still
// writing) has its answer passed on to the client, with the connection
// closed after it, and receives the request once. The proxy took the
// failed write for a connection closed before an answer: the client got
// 503 with Retry-After, and a PUT was sent to the app twice.
func TestEarlyAnswerToUploadPassedOn(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnsupportedMediaType)
		_, _ = io.WriteString(w, "unsupported upload")
	}))
	t.Cleanup(app.Close)
	e := start(t, envOpt{rules: uploadRouteRules(app.URL), vars: map[string]string{"BODY_MEMORY_MB": "256"}})
	for _, tc := range uploadCases {
		name := fmt.Sprintf("%s %d MiB", tc.method, tc.size>>20)
		before, retries := calls.Load(), testutil.ToFloat64(e.app.Metrics.UpstreamRetries)
		resp, body := upload(t, e, tc.method, "/up/x", tc.size)
		if resp.StatusCode != http.StatusUnsupportedMediaType || string(body) != "unsupported upload" {
			t.Errorf("%s: answered %d %q, want the app's 415 \"unsupported upload\"", name, resp.StatusCode, body)
		}
		if tc.size > 4<<20 && !resp.Close {
			t.Errorf("%s: the client's connection is kept, want Connection: close", name)
		}
		if n := calls.Load() - before; n != 1 {
			t.Errorf("%s: the app received the request %d times, want 1", name, n)
		}
		if n := testutil.ToFloat64(e.app.Metrics.UpstreamRetries) - retries; n != 0 {
			t.Errorf("%s: %v retries counted, want none", name, n)
		}
	}
}

// rawUpload is an app that reads a request's header and then as many bytes
// of its body as read says, writes answer (when not empty), and resets the
// connection (a close with unread bytes, or SO_LINGER 0). It counts the
// requests it read.
func rawUpload(t *testing.T, calls *atomic.Int64, read int, answer string) string {
	return "http://" + serveRaw(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		calls.Add(1)
		_, _ = io.CopyN(io.Discard, br, int64(read))
		if answer != "" {
			_, _ = io.WriteString(c, answer)
		}
		_ = c.(*net.TCPConn).SetLinger(0)
	})
}

// TestEarlyAnswerThenResetPassedOn: an app that answers while the body is
// still coming and then resets the connection (nothing of the body read,
// or part of it) has its answer passed on, the client's connection closed
// after it, and the request is never sent again.
func TestEarlyAnswerThenResetPassedOn(t *testing.T) {
	t.Parallel()
	const answer = "HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\ntoo big!"
	for _, read := range []int{0, 1 << 20} {
		var calls atomic.Int64
		e := start(t, envOpt{rules: uploadRouteRules(rawUpload(t, &calls, read, answer)), vars: map[string]string{"BODY_MEMORY_MB": "256"}})
		for _, tc := range uploadCases {
			name := fmt.Sprintf("%s %d MiB, %d bytes read", tc.method, tc.size>>20, read)
			before := calls.Load()
			resp, body := upload(t, e, tc.method, "/up/x", tc.size)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "too big!" {
				t.Errorf("%s: answered %d %q, want the app's 413 \"too big!\"", name, resp.StatusCode, body)
			}
			if tc.size > 4<<20 && !resp.Close {
				t.Errorf("%s: the client's connection is kept, want Connection: close", name)
			}
			if n := calls.Load() - before; n != 1 {
				t.Errorf("%s: the app received the request %d times, want 1", name, n)
			}
		}
	}
}

// TestResetWithoutAnswerMidUpload: an app that resets the connection while
// the body is being written, without answering, is an upstream failure
// (503 closed, as before), and the request, whose body the app may have
// read in part, is not sent again, PUT included: the app would get it
// twice. (32 MiB: the write is cut whatever the socket buffers hold. A
// body they hold whole is written whole, and a PUT whose connection then
// ends before an answer is retried as before, the stale connection's
// case: TestStalePooledPutRetried.)
func TestResetWithoutAnswerMidUpload(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	e := start(t, envOpt{rules: uploadRouteRules(rawUpload(t, &calls, 1<<20, "")), vars: map[string]string{"BODY_MEMORY_MB": "256"}})
	for _, tc := range uploadCases {
		if tc.size <= 4<<20 {
			continue
		}
		name := fmt.Sprintf("%s %d MiB", tc.method, tc.size>>20)
		before, retries := calls.Load(), testutil.ToFloat64(e.app.Metrics.UpstreamRetries)
		req, err := http.NewRequest(tc.method, "http://"+e.addr+"/up/x", bytes.NewReader(make([]byte, tc.size)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), problem.CodeUpstreamDown) {
			t.Errorf("%s: answered %d %s, want 503 %s", name, resp.StatusCode, body, problem.CodeUpstreamDown)
		}
		if n := calls.Load() - before; n != 1 {
			t.Errorf("%s: the app received the request %d times, want 1", name, n)
		}
		if n := testutil.ToFloat64(e.app.Metrics.UpstreamRetries) - retries; n != 0 {
			t.Errorf("%s: %v retries counted, want none", name, n)
		}
	}
}

// TestStalePooledPutRetried: a PUT written whole on a pooled connection
// that the app then closes without reading or answering it (a keep-alive
// timeout that crossed the request) is still sent once more on a fresh
// connection, as before.
func TestStalePooledPutRetried(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	addr := serveRaw(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			calls.Add(1)
			if i == 1 { // the connection's second request: closed unread
				return
			}
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	e := start(t, envOpt{rules: uploadRouteRules("http://" + addr)})
	if resp, body := upload(t, e, "PUT", "/up/a", 1000); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("first PUT: %d %q", resp.StatusCode, body)
	}
	retries := testutil.ToFloat64(e.app.Metrics.UpstreamRetries)
	resp, body := upload(t, e, "PUT", "/up/b", 1000)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("PUT on the stale connection: %d %q, want 200 \"ok\" from a retry", resp.StatusCode, body)
	}
	if n := testutil.ToFloat64(e.app.Metrics.UpstreamRetries) - retries; n != 1 {
		t.Errorf("%v retries counted, want 1", n)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("the app read %d requests, want 3 (the retry's included)", n)
	}
}

// TestEarlyAnswerOnStreamRoutePassedOn: on a route with a stream_timeout
// (its answers relayed as streams), an app that answers an upload while
// the body is still coming (after reading part of it, or none) and then
// resets the connection has its answer passed on as on any route, the
// client's connection closed after it, and gets the request once. The
// proxy answered 502: the failed write was taken for an upstream failure.
func TestEarlyAnswerOnStreamRoutePassedOn(t *testing.T) {
	t.Parallel()
	const answer = "HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\ntoo big!"
	for _, read := range []int{0, 1 << 20} {
		var calls atomic.Int64
		url := rawUpload(t, &calls, read, answer)
		e := start(t, envOpt{vars: map[string]string{"BODY_MEMORY_MB": "256"},
			rules: "upstreams:\n  up: {url: '" + url + "', key_id: app-notes}\nroutes:\n" +
				"  - {prefix: /up, upstream: up, access: public, max_body_bytes: 67108864, stream_timeout: 1m}\n"})
		for _, method := range []string{"POST", "PUT"} {
			name := fmt.Sprintf("%s 32 MiB, %d bytes read", method, read)
			before := calls.Load()
			resp, body := upload(t, e, method, "/up/x", 32<<20)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "too big!" {
				t.Errorf("%s: answered %d %q, want the app's 413 \"too big!\"", name, resp.StatusCode, body)
			}
			if !resp.Close {
				t.Errorf("%s: the client's connection is kept, want Connection: close", name)
			}
			if n := calls.Load() - before; n != 1 {
				t.Errorf("%s: the app received the request %d times, want 1", name, n)
			}
		}
	}
}
