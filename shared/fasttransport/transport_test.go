package fasttransport

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/tollgate-auth/tollgate/shared/refused"
	"github.com/valyala/fasthttp"
)

// upstream is a scripted HTTP/1.1 server on a loopback port: answer writes
// the raw answer to each request (by path) and says whether to close the
// connection after it. It counts the connections it accepted.
type upstream struct {
	ln       net.Listener
	accepted atomic.Int64
	closed   atomic.Int64 // connections that ended (the client's EOF or ours)
}

func startUpstream(t testing.TB, answer func(r *http.Request, w *bufio.Writer) (closeAfter bool)) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startUpstreamOn(t, ln, answer)
}

// startUpstreamOn is startUpstream on ln.
func startUpstreamOn(t testing.TB, ln net.Listener, answer func(r *http.Request, w *bufio.Writer) (closeAfter bool)) *upstream {
	u := &upstream{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted.Add(1)
			go func() {
				defer u.closed.Add(1)
				defer c.Close()
				br := bufio.NewReader(c)
				bw := bufio.NewWriter(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, r.Body)
					closeAfter := answer(r, bw)
					if bw.Flush() != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return u
}

func (u *upstream) addr() string { return u.ln.Addr().String() }

func client(addr string) *fasthttp.HostClient {
	hc := &fasthttp.HostClient{
		Addr:                   addr,
		ReadTimeout:            5 * time.Second,
		WriteTimeout:           5 * time.Second,
		MaxIdleConnDuration:    time.Minute,
		DisablePathNormalizing: true,
		StreamResponseBody:     true,
	}
	hc.Transport = New(hc, nil)
	return hc
}

func get(t testing.TB, hc *fasthttp.HostClient, method, path string) (*fasthttp.Response, error) {
	t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://" + hc.Addr + path)
	req.Header.SetMethod(method)
	resp := fasthttp.AcquireResponse()
	t.Cleanup(func() { fasthttp.ReleaseResponse(resp) })
	return resp, hc.Do(req, resp)
}

func fixed(w *bufio.Writer, status int, body string) {
	w.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " X\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

func TestBufferedBodyKeepsTheConnection(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		fixed(w, 200, "hello "+r.URL.Path)
		return false
	})
	hc := client(u.addr())
	for i := range 20 {
		p := "/r" + strconv.Itoa(i)
		resp, err := get(t, hc, "GET", p)
		if err != nil {
			t.Fatal(err)
		}
		if resp.IsBodyStream() {
			t.Fatal("a body that arrived with its header was streamed")
		}
		if got := string(resp.Body()); got != "hello "+p {
			t.Fatalf("body %q", got)
		}
	}
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d connections for 20 sequential requests, want 1", n)
	}
}

func TestLargeBodyIsStreamedAndKeepsTheConnection(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB: more than a read buffer
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		fixed(w, 200, big)
		return false
	})
	hc := client(u.addr())
	for range 3 {
		resp, err := get(t, hc, "GET", "/big")
		if err != nil {
			t.Fatal(err)
		}
		if !resp.IsBodyStream() {
			t.Fatal("a 1 MiB body was buffered")
		}
		if got := resp.Body(); !bytes.Equal(got, []byte(big)) { // reads the stream to its end, then closes it
			t.Fatalf("body of %d bytes, want %d", len(got), len(big))
		}
		if n := hc.IdleConnsCount(); n != 1 {
			t.Fatalf("%d idle connections after the body was read, want 1", n)
		}
	}
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 (a body read to its end gives the connection back)", n)
	}
}

func TestChunkedBodyDecodedAndTrailerConsumed(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5;ext=1\r\nhello\r\n" + "7\r\n, world\r\n" + "0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n")
		return false
	})
	hc := client(u.addr())
	for range 3 {
		resp, err := get(t, hc, "GET", "/chunked")
		if err != nil {
			t.Fatal(err)
		}
		if got := string(resp.Body()); got != "hello, world" {
			t.Fatalf("body %q", got)
		}
	}
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 (the trailer read, the connection is reused)", n)
	}
}

func TestChunkedOversizedTrailerClosesTheConnection(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
		for range 2000 {
			w.WriteString("X-Pad: 0123456789\r\n")
		}
		w.WriteString("\r\n")
		return false
	})
	hc := client(u.addr())
	resp, err := get(t, hc, "GET", "/t")
	if err != nil {
		t.Fatal(err)
	}
	body, rerr := io.ReadAll(resp.BodyStream())
	if !errors.Is(rerr, errTrailer) || string(body) != "ok" {
		t.Fatalf("read %q, %v; want ok and the trailer refused", body, rerr)
	}
	_ = resp.CloseBodyStream()
	if _, err := get(t, hc, "GET", "/t"); err != nil {
		t.Fatal(err)
	}
	if n := u.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (a failed body closes its connection)", n)
	}
}

func TestBodyUntilCloseEndsTheConnection(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\n\r\n" + strings.Repeat("x", 100<<10))
		return true
	})
	hc := client(u.addr())
	for range 2 {
		resp, err := get(t, hc, "GET", "/eof")
		if err != nil {
			t.Fatal(err)
		}
		if got := len(resp.Body()); got != 100<<10 {
			t.Fatalf("body of %d bytes", got)
		}
	}
	if n := u.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

func TestUnreadBodyClosesTheConnection(t *testing.T) {
	big := strings.Repeat("z", 1<<20)
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		fixed(w, 200, big)
		return false
	})
	hc := client(u.addr())
	resp, err := get(t, hc, "GET", "/a")
	if err != nil {
		t.Fatal(err)
	}
	var p [10]byte
	if _, err := io.ReadFull(resp.BodyStream(), p[:]); err != nil {
		t.Fatal(err)
	}
	_ = resp.CloseBodyStream() // the rest is still on the connection
	if n := hc.IdleConnsCount(); n != 0 {
		t.Fatalf("%d idle connections after a body closed before its end, want 0", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for u.closed.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if u.closed.Load() < 1 {
		t.Fatal("the connection of the unread body was not closed")
	}
	resp2, err := get(t, hc, "GET", "/b")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp2.Body()) != len(big) {
		t.Fatal("second body short")
	}
	if n := u.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (a body closed before its end must not be reused)", n)
	}
}

func TestTruncatedBodyFails(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nonly this")
		return true
	})
	hc := client(u.addr())
	resp, err := get(t, hc, "GET", "/short")
	if err != nil {
		t.Fatal(err)
	}
	_, rerr := io.ReadAll(resp.BodyStream())
	if !errors.Is(rerr, io.ErrUnexpectedEOF) {
		t.Fatalf("read error %v, want io.ErrUnexpectedEOF", rerr)
	}
	_ = resp.CloseBodyStream()
}

func TestNoBody(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		switch r.URL.Path {
		case "/204":
			w.WriteString("HTTP/1.1 204 No Content\r\n\r\n")
		case "/304":
			w.WriteString("HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\n\r\n")
		default: // HEAD: the length of the body a GET would have had, no body
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
		}
		return false
	})
	hc := client(u.addr())
	for _, c := range []struct{ method, path string }{{"HEAD", "/h"}, {"GET", "/204"}, {"GET", "/304"}, {"HEAD", "/h"}} {
		resp, err := get(t, hc, c.method, c.path)
		if err != nil {
			t.Fatal(c, err)
		}
		if resp.IsBodyStream() || len(resp.Body()) != 0 {
			t.Fatalf("%v: a body", c)
		}
	}
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestInterimAnswersSkipped(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
		fixed(w, 201, "made")
		return false
	})
	hc := client(u.addr())
	resp, err := get(t, hc, "GET", "/i")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 201 || string(resp.Body()) != "made" {
		t.Fatalf("%d %q", resp.StatusCode(), resp.Body())
	}
}

func TestTooManyInterimAnswers(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		for range maxInterim + 2 {
			w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		}
		fixed(w, 200, "late")
		return true
	})
	hc := client(u.addr())
	hc.MaxIdemponentCallAttempts = 1
	if _, err := get(t, hc, "GET", "/i"); !errors.Is(err, ErrTooManyInterim) {
		t.Fatalf("err %v, want ErrTooManyInterim", err)
	}
}

func TestSwitchingProtocolsClosesTheConnection(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		if r.URL.Path == "/up" {
			w.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
			return false // the connection would now speak x
		}
		fixed(w, 200, "ok")
		return false
	})
	hc := client(u.addr())
	if resp, err := get(t, hc, "GET", "/up"); err != nil || resp.StatusCode() != 101 {
		t.Fatal(err)
	}
	if resp, err := get(t, hc, "GET", "/ok"); err != nil || string(resp.Body()) != "ok" {
		t.Fatal(err)
	}
	if n := u.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// TestTimeout: an answer that does not come within ReadTimeout is
// fasthttp.ErrTimeout (504 at the proxy), whether nothing of it came or
// part of its header (fasthttp wraps the read's error in its own then).
func TestTimeout(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		if r.URL.Path == "/half" {
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Le")
			_ = w.Flush()
		}
		time.Sleep(time.Second)
		return true
	})
	hc := client(u.addr())
	hc.ReadTimeout = 100 * time.Millisecond
	hc.RetryIfErr = func(*fasthttp.Request, int, error) (bool, bool) { return false, false }
	for _, p := range []string{"/slow", "/half"} {
		if _, err := get(t, hc, "GET", p); !errors.Is(err, fasthttp.ErrTimeout) {
			t.Fatalf("GET %s: err %v, want fasthttp.ErrTimeout", p, err)
		}
	}
}

func TestStaleConnectionRetried(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		fixed(w, 200, "ok")
		return true // closes without saying so: the pooled connection goes stale
	})
	hc := client(u.addr())
	for range 3 {
		resp, err := get(t, hc, "GET", "/s")
		if err != nil || string(resp.Body()) != "ok" {
			t.Fatalf("%v", err)
		}
		time.Sleep(20 * time.Millisecond) // the close reaches the client
	}
}

func TestUpstreamGone(t *testing.T) {
	addr := refused.Addr(t)
	if _, err := get(t, client(addr), "GET", "/"); err == nil {
		t.Fatal("no error from a closed port")
	}
}

// TestThroughAServer runs the transport as a proxy does: a fasthttp server
// forwards each request and writes the streamed answer out.
func TestThroughAServer(t *testing.T) {
	big := strings.Repeat("b", 300<<10)
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		switch r.URL.Path {
		case "/chunked":
			w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
		case "/big":
			fixed(w, 200, big)
		default:
			fixed(w, 200, "small")
		}
		return false
	})
	hc := client(u.addr())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error(err.Error(), 502)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	want := map[string]string{"/chunked": "abcdef", "/big": big, "/small": "small"}
	for range 3 {
		for p, w := range want {
			r, err := http.Get("http://" + ln.Addr().String() + p)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(r.Body)
			r.Body.Close()
			if err != nil || string(b) != w {
				t.Fatalf("%s: %d bytes, %v", p, len(b), err)
			}
		}
	}
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want 1", n)
	}
}

// TestNoAllocations: a forwarded request whose answer arrived whole
// allocates nothing (fasthttp's own transport: four objects).
func TestNoAllocations(t *testing.T) {
	addr, stop := fasthttpUpstream(t)
	defer stop()
	hc := client(addr)
	req := fasthttp.AcquireRequest()
	req.SetRequestURI("http://" + addr + "/x")
	resp := fasthttp.AcquireResponse()
	do := func() {
		if err := hc.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.Body()) != 512 {
			t.Fatal("body")
		}
	}
	for range 100 {
		do()
	}
	if n := testing.AllocsPerRun(1000, do); n != 0 {
		t.Fatalf("%v allocations per request, want 0", n)
	}
}

func fasthttpUpstream(t testing.TB) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("j"), 512)
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) }}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { _ = srv.Shutdown() }
}

// BenchmarkRoundTrip: one forwarded request over loopback, its 512-byte
// answer read, with fasthttp's transport and with this one.
func BenchmarkRoundTrip(b *testing.B) {
	for _, name := range []string{"fasthttp", "fasttransport"} {
		b.Run(name, func(b *testing.B) {
			addr, stop := fasthttpUpstream(b)
			defer stop()
			hc := client(addr)
			if name == "fasthttp" {
				hc.Transport = nil
			}
			req := fasthttp.AcquireRequest()
			req.SetRequestURI("http://" + addr + "/x")
			resp := fasthttp.AcquireResponse()
			b.ReportAllocs()
			for b.Loop() {
				if err := hc.Do(req, resp); err != nil {
					b.Fatal(err)
				}
				_ = resp.Body()
				resp.Reset()
			}
		})
	}
}

func TestMalformedChunkFailsAndClosesTheConnection(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		if r.URL.Path == "/bad" {
			w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nmore\r\n0\r\n\r\n")
		} else {
			fixed(w, 200, "ok")
		}
		return false
	})
	hc := client(u.addr())
	resp, err := get(t, hc, "GET", "/bad")
	if err != nil {
		t.Fatal(err)
	}
	body, rerr := io.ReadAll(resp.BodyStream())
	if rerr == nil || string(body) != "abc" {
		t.Fatalf("read %q, %v; want abc and an error", body, rerr)
	}
	_ = resp.CloseBodyStream()
	if n := hc.IdleConnsCount(); n != 0 {
		t.Fatalf("%d idle connections after a malformed body, want 0", n)
	}
	if resp, err := get(t, hc, "GET", "/ok"); err != nil || string(resp.Body()) != "ok" {
		t.Fatal(err)
	}
}

func TestMalformedStatusLine(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 OK\r\n\r\n")
		return true
	})
	hc := client(u.addr())
	hc.RetryIfErr = func(*fasthttp.Request, int, error) (bool, bool) { return false, false }
	if _, err := get(t, hc, "GET", "/"); err == nil {
		t.Fatal("no error for a malformed status line")
	}
	if n := hc.IdleConnsCount(); n != 0 {
		t.Fatalf("%d idle connections, want 0", n)
	}
}

// TestStatusBelow100: an answer whose status code is below 100 ("099") is
// an error, and its connection is closed. It was read as an answer without
// a body (as any status below 200 is), and its connection went back to the
// pool, to hand what the upstream sent next to the next request. So is one
// of "000" (fasthttp's unset status, reported as 200) and one above 599 (a
// code of no class).
func TestStatusBelow100(t *testing.T) {
	for _, status := range []string{"099", "000", "600", "999"} {
		t.Run(status, func(t *testing.T) { statusBelow100(t, status) })
	}
}

// TestStatusZeroSpellings: SkipInterim finds "000" wherever fasthttp's
// parser reads it, which skips empty lines before the status line and
// spaces after the version; it looked only for "HTTP/1.1 000" at the
// start, so those spellings reached the client as 200. Read whole or a
// byte at a time.
func TestStatusZeroSpellings(t *testing.T) {
	for answer, want := range map[string]bool{
		"HTTP/1.1 000 Odd\r\n\r\n":     true,
		"HTTP/1.1 000\r\n\r\n":         true,
		"HTTP/1.0 000 Odd\r\n\r\n":     true,
		"HTTP/1.1  000 Odd\r\n\r\n":    true,
		"HTTP/1.1   000\r\n\r\n":       true,
		"\r\nHTTP/1.1 000 Odd\r\n\r\n": true,
		"\n\r\n\nHTTP/1.1 000\n\n":     true,
		"HTTP/1.1 200 OK\r\n\r\n":      false,
		"HTTP/1.1 200\r\n\r\n":         false,
		"HTTP/1.1  200 OK\r\n\r\n":     false,
		"\r\nHTTP/1.1 204\r\n\r\n":     false,
		"HTTP/1.1 0000 Odd\r\n\r\n":    false,
		"HTTP/1.1 000x\r\n\r\n":        false,
		"HTTP/1.1 100 000\r\n\r\n":     false,
		"HTTP/1.1\r\n\r\n":             false,
		"":                             false,
	} {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(answer)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			var h fasthttp.ResponseHeader
			if got := errors.Is(SkipInterim(&h, bufio.NewReader(r)), ErrStatus); got != want {
				t.Errorf("SkipInterim(%q) refuses it as 000: %v (a byte at a time: %v), want %v", answer, got, oneByte, want)
			}
		}
	}
}

// TestSkipInterim: SkipInterim refuses a "000" after interim answers, which
// fasthttp's Response.Read would skip on its own and then read the "000"
// as 200, and leaves a final answer (a 101 among them) to be read.
func TestSkipInterim(t *testing.T) {
	const early = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
	for answer, want := range map[string]error{
		early + "HTTP/1.1 000 Odd\r\nContent-Length: 2\r\n\r\nok":                                    ErrStatus,
		early + "HTTP/1.1  000\r\nContent-Length: 2\r\n\r\nok":                                       ErrStatus,
		"HTTP/1.1 000 Odd\r\nContent-Length: 2\r\n\r\nok":                                            ErrStatus,
		early + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":                                     nil,
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n":                                     nil,
		strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", maxInterim+1) + "HTTP/1.1 200 OK\r\n\r\n": ErrTooManyInterim,
	} {
		br := bufio.NewReader(iotest.OneByteReader(strings.NewReader(answer)))
		var resp fasthttp.Response
		err := SkipInterim(&resp.Header, br)
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("SkipInterim(%.60q) = %v, want %v", answer, err, want)
		}
		if err != nil {
			continue
		}
		if err := resp.Read(br); err != nil {
			t.Fatalf("%.60q: the answer after SkipInterim: %v", answer, err)
		}
		if s := resp.StatusCode(); s != 200 && s != 101 || s == 200 && string(resp.Body()) != "ok" {
			t.Fatalf("%.60q: read %d %q after SkipInterim, want the final answer", answer, s, resp.Body())
		}
	}
}

func statusBelow100(t *testing.T, status string) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		if r.URL.Path == "/odd" {
			w.WriteString("HTTP/1.1 " + status + " Odd\r\n\r\n")
			_ = w.Flush()
			time.Sleep(20 * time.Millisecond)
			fixed(w, 200, "stray")
			return false
		}
		fixed(w, 200, "own "+r.URL.Path)
		return false
	})
	hc := client(u.addr())
	hc.RetryIfErr = func(*fasthttp.Request, int, error) (bool, bool) { return false, false }
	if _, err := get(t, hc, "GET", "/odd"); !errors.Is(err, ErrStatus) {
		t.Fatalf("err %v, want ErrStatus", err)
	}
	if n := hc.IdleConnsCount(); n != 0 {
		t.Fatalf("%d idle connections, want 0", n)
	}
	for i := range 2 {
		p := "/next" + strconv.Itoa(i)
		if resp, err := get(t, hc, "GET", p); err != nil || string(resp.Body()) != "own "+p {
			t.Fatalf("GET %s: %v", p, err)
		}
	}
}

// TestOtherClientsUseFasthttpsTransport: a client that buffers answers, or
// one the transport was not made for, goes through fasthttp's transport
// (which answers both correctly; this one's pool is not theirs).
func TestOtherClientsUseFasthttpsTransport(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
		return false
	})
	buffering := client(u.addr())
	buffering.StreamResponseBody = false
	other := client(u.addr())
	other.Transport = buffering.Transport // made for another client
	for _, hc := range []*fasthttp.HostClient{buffering, other} {
		resp, err := get(t, hc, "GET", "/")
		if err != nil {
			t.Fatal(err)
		}
		if resp.IsBodyStream() != hc.StreamResponseBody || string(resp.Body()) != "ok" {
			t.Fatalf("streamed %v, body %q", resp.IsBodyStream(), resp.Body())
		}
		if n := hc.IdleConnsCount(); n != 1 {
			t.Fatalf("%d idle connections in the client's own pool, want 1", n)
		}
	}
}

// TestBytesAfterAnAnswerCloseTheConnection: what an upstream sends after
// an answer's end (a body with an answer to HEAD or a 204, more than the
// Content-Length) belongs to no answer; pooled, the connection handed it
// to the next request as that request's answer, and every answer after it
// went to the request after its own. The connection is closed instead,
// and each request gets its own answer.
func TestBytesAfterAnAnswerCloseTheConnection(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
	pad := strings.Repeat("p", 64<<10) // past the read buffer: the rest waits in the socket
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		switch r.URL.Path {
		case "/head": // the body a GET would have had, sent anyway
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(pad)+len(stray)) + "\r\n\r\n" + pad + stray)
		case "/204": // a 204 announcing a body that follows later
			w.WriteString("HTTP/1.1 204 No Content\r\nContent-Length: " + strconv.Itoa(len(stray)) + "\r\n\r\n")
			_ = w.Flush()
			time.Sleep(20 * time.Millisecond)
			w.WriteString(stray)
		case "/long": // more than its Content-Length
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + pad + stray)
		case "/chunked": // more than its last chunk
			w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + stray)
		default:
			fixed(w, 200, "own "+r.URL.Path)
		}
		return false
	})
	for _, c := range []struct{ method, path string }{{"HEAD", "/head"}, {"GET", "/204"}, {"GET", "/long"}, {"GET", "/chunked"}} {
		hc := client(u.addr())
		// No retry: a request that reads stray bytes fails as it would
		// through the proxy (which retries a closed connection only).
		hc.RetryIfErr = func(*fasthttp.Request, int, error) (bool, bool) { return false, false }
		resp, err := get(t, hc, c.method, c.path)
		if err != nil {
			t.Fatal(c, err)
		}
		if resp.IsBodyStream() {
			_, _ = io.Copy(io.Discard, resp.BodyStream())
			_ = resp.CloseBodyStream()
		}
		for i := range 2 {
			p := "/next" + strconv.Itoa(i)
			resp, err := get(t, hc, "GET", p)
			if err != nil {
				t.Errorf("after %v: GET %s: %v", c, p, err)
			} else if got := string(resp.Body()); got != "own "+p {
				t.Errorf("after %v: GET %s answered %q", c, p, got)
			}
		}
	}
}

// TestBytesWhileIdleCloseTheConnection: what an upstream sends after an
// answer's end but later, in a segment of its own (the body of an answer
// to HEAD, of a 204 or a 304 without a length, the rest of a body past its
// Content-Length, a second answer, bytes after the last chunk), arrives
// while the connection is idle in the pool. Taken for the next request,
// it made that request's answer: another client's data, when it forms an
// answer. The connection is found with them before the next request is
// written on it, and closed; the request, a POST too, goes on a new
// connection and gets its own answer.
func TestBytesWhileIdleCloseTheConnection(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nsomeone-elses"
	cases := []struct {
		method, path, answer string
	}{
		{"HEAD", "/head", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"},
		{"GET", "/204", "HTTP/1.1 204 No Content\r\n\r\n"},
		{"GET", "/304", "HTTP/1.1 304 Not Modified\r\n\r\n"},
		{"GET", "/long", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"GET", "/twice", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"GET", "/chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
	}
	release, sent := make(chan struct{}), make(chan struct{}, 1)
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		for _, c := range cases {
			if r.URL.Path == c.path {
				w.WriteString(c.answer)
				_ = w.Flush()
				<-release // the client has read the answer
				w.WriteString(stray)
				_ = w.Flush()
				sent <- struct{}{}
				return false
			}
		}
		fixed(w, 200, "own "+r.URL.Path)
		return false
	})
	for _, c := range cases {
		hc := client(u.addr())
		var strays []Stray
		hc.Transport = New(hc, func(s Stray) { strays = append(strays, s) })
		hc.RetryIfErr = func(*fasthttp.Request, int, error) (bool, bool) { return false, false }
		resp, err := get(t, hc, c.method, c.path)
		if err != nil {
			t.Fatal(c.path, err)
		}
		if resp.IsBodyStream() {
			_, _ = io.Copy(io.Discard, resp.BodyStream())
			_ = resp.CloseBodyStream()
		}
		release <- struct{}{}
		<-sent
		time.Sleep(20 * time.Millisecond) // the stray bytes reach the pooled socket
		accepted := u.accepted.Load()
		for i, m := range []string{"POST", "GET"} {
			p := "/next" + strconv.Itoa(i)
			resp, err := get(t, hc, m, p)
			if err != nil {
				t.Errorf("after %s: %s %s: %v", c.path, m, p, err)
			} else if got := string(resp.Body()); got != "own "+p {
				t.Errorf("after %s: %s %s answered %q", c.path, m, p, got)
			}
		}
		if got := u.accepted.Load() - accepted; got != 1 {
			t.Errorf("after %s: %d new connections, want 1 (the idle one closed, its successor kept)", c.path, got)
		}
		if len(strays) != 1 || strays[0] != StrayWhileIdle {
			t.Errorf("after %s: told %v, want [idle]", c.path, strays)
		}
	}
}

// tlsUpstream is startUpstream serving TLS (version v) with httptest's
// certificate, and a client of it that trusts the certificate. Its
// connections write only part of each write while cut is set (cutConn).
func tlsUpstream(t *testing.T, v uint16, cut *atomic.Bool, answer func(r *http.Request, w *bufio.Writer) bool) (*upstream, *fasthttp.HostClient) {
	t.Helper()
	s := httptest.NewTLSServer(http.NotFoundHandler())
	cert, roots := s.TLS.Certificates[0], x509.NewCertPool()
	roots.AddCert(s.Certificate())
	s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = tls.NewListener(cutListener{ln, cut}, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: v, MaxVersion: v})
	u := startUpstreamOn(t, ln, answer)
	hc := &fasthttp.HostClient{
		Addr: u.addr(), IsTLS: true, TLSConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, MaxIdleConnDuration: time.Minute,
		DisablePathNormalizing: true, StreamResponseBody: true,
		RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
	}
	return u, hc
}

// cutListener's connections are cutConns.
type cutListener struct {
	net.Listener
	cut *atomic.Bool
}

func (l cutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: c, cut: l.cut}, nil
}

// cutConn writes only the first 7 bytes of each write while cut is set
// (and drops the rest): the peer gets part of a TLS record.
type cutConn struct {
	net.Conn
	cut *atomic.Bool
}

func (c *cutConn) Write(p []byte) (int, error) {
	if c.cut.Load() && len(p) > 7 {
		_, err := c.Conn.Write(p[:7])
		return len(p), err
	}
	return c.Conn.Write(p)
}

func getTLS(t *testing.T, hc *fasthttp.HostClient, method, path string) (*fasthttp.Response, error) {
	t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("https://" + hc.Addr + path)
	req.Header.SetMethod(method)
	resp := fasthttp.AcquireResponse()
	t.Cleanup(func() { fasthttp.ReleaseResponse(resp) })
	return resp, hc.Do(req, resp)
}

// TestTLSBytesWhileIdleCloseTheConnection: over TLS, stray bytes arriving
// while the connection is idle are found through the TLS client: a whole
// record of application data (a second answer), or part of a record,
// which the TLS client keeps until the rest comes. A TLS connection
// without stray bytes stays pooled, across the session tickets a TLS 1.3
// server sends after the handshake.
func TestTLSBytesWhileIdleCloseTheConnection(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		release, sent := make(chan struct{}), make(chan struct{}, 1)
		cut := new(atomic.Bool)
		u, hc := tlsUpstream(t, v, cut, func(r *http.Request, w *bufio.Writer) bool {
			switch r.URL.Path {
			case "/twice", "/part":
				fixed(w, 200, "ok")
				_ = w.Flush()
				<-release // the client has read the answer
				cut.Store(r.URL.Path == "/part")
				w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nsomeone-elses")
				_ = w.Flush()
				cut.Store(false)
				sent <- struct{}{}
			default:
				fixed(w, 200, "own "+r.URL.Path)
			}
			return false
		})
		var strays []Stray
		hc.Transport = New(hc, func(s Stray) { strays = append(strays, s) })
		for i := range 4 {
			p := "/plain" + strconv.Itoa(i)
			if resp, err := getTLS(t, hc, "GET", p); err != nil || string(resp.Body()) != "own "+p {
				t.Fatalf("TLS %x: GET %s: %v", v, p, err)
			}
		}
		if n := u.accepted.Load(); n != 1 || len(strays) != 0 {
			t.Fatalf("TLS %x: %d connections for 4 requests, told %v; want 1, none", v, n, strays)
		}
		for _, path := range []string{"/twice", "/part"} {
			if resp, err := getTLS(t, hc, "GET", path); err != nil || string(resp.Body()) != "ok" {
				t.Fatalf("TLS %x: GET %s: %v", v, path, err)
			}
			release <- struct{}{}
			<-sent
			time.Sleep(20 * time.Millisecond)
			accepted := u.accepted.Load()
			if resp, err := getTLS(t, hc, "POST", "/next"); err != nil || string(resp.Body()) != "own /next" {
				t.Errorf("TLS %x: after %s: POST /next: %v %q", v, path, err, resp.Body())
			}
			if got := u.accepted.Load() - accepted; got != 1 {
				t.Errorf("TLS %x: after %s: %d new connections, want 1", v, path, got)
			}
		}
		if len(strays) != 2 || strays[0] != StrayWhileIdle || strays[1] != StrayWhileIdle {
			t.Errorf("TLS %x: told %v, want [idle idle]", v, strays)
		}
	}
}

// TestIdlePastTheReadDeadline: a pooled connection idle for longer than
// the client's ReadTimeout (the read deadline of its last answer has
// passed) is looked at and used again, not taken for closed.
func TestIdlePastTheReadDeadline(t *testing.T) {
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		fixed(w, 200, "own "+r.URL.Path)
		return false
	})
	hc := client(u.addr())
	hc.ReadTimeout = 50 * time.Millisecond
	for i := range 3 {
		p := "/" + strconv.Itoa(i)
		if resp, err := get(t, hc, "GET", p); err != nil || string(resp.Body()) != "own "+p {
			t.Fatalf("GET %s: %v", p, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d connections for 3 requests, want 1", n)
	}
}

// TestTLSFailedWriteClosesAtOnce: a request whose write to a TLS upstream
// fails (here: times out, the upstream reading nothing after the request
// line) has its connection closed without the TLS close_notify alert. Go's
// tls.Conn.Close writes the alert with a deadline of 5 s of its own, and
// to an upstream that does not read, the write waited all of it before
// the request's error (504 at the proxy) came back. The test watches the
// socket: once a write on it has failed, nothing more is written on it
// while it is open.
func TestTLSFailedWriteClosesAtOnce(t *testing.T) {
	s := httptest.NewTLSServer(http.NotFoundHandler())
	cert, roots := s.TLS.Certificates[0], x509.NewCertPool()
	roots.AddCert(s.Certificate())
	s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = bufio.NewReader(c).ReadString('\n') // the request line, then nothing
				<-done
			}()
		}
	}()
	var w *watchedConn
	hc := &fasthttp.HostClient{
		Addr: ln.Addr().String(), IsTLS: true, TLSConfig: &tls.Config{RootCAs: roots},
		ReadTimeout: 5 * time.Second, WriteTimeout: 100 * time.Millisecond,
		DisablePathNormalizing: true, StreamResponseBody: true,
		RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		Dial:       watchedDial(&w),
	}
	hc.Transport = New(hc, nil)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("https://" + hc.Addr + "/upload")
	req.Header.SetMethod("POST")
	req.SetBody(make([]byte, 64<<20)) // more than the socket buffers hold
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := hc.Do(req, resp); !errors.Is(err, fasthttp.ErrTimeout) {
		t.Fatalf("err %v, want fasthttp.ErrTimeout", err)
	}
	if !w.failed.Load() || !w.closed.Load() {
		t.Fatalf("write failed %v, socket closed %v: want both", w.failed.Load(), w.closed.Load())
	}
	if n := w.late.Load(); n != 0 {
		t.Fatalf("%d writes on the open socket after a write failed (the close_notify alert, waited for)", n)
	}
}

// TestTLSUnreadBodyClosesAtOnce: a streamed body closed before its end
// (the client went away while the proxy wrote it out) has its TLS
// connection closed, and without the close_notify alert: an upstream still
// writing the body does not read it, and the alert's write could wait its
// 5 s on the goroutine that closed the body. The test watches the socket
// from the close on: nothing is written on it while it is open.
func TestTLSUnreadBodyClosesAtOnce(t *testing.T) {
	big := strings.Repeat("z", 4<<20) // more than the socket buffers hold
	u, hc := tlsUpstream(t, tls.VersionTLS13, new(atomic.Bool), func(r *http.Request, w *bufio.Writer) bool {
		fixed(w, 200, big)
		return false
	})
	var w *watchedConn
	hc.Dial = watchedDial(&w)
	hc.Transport = New(hc, nil)
	resp, err := getTLS(t, hc, "GET", "/big")
	if err != nil {
		t.Fatal(err)
	}
	var p [10]byte
	if _, err := io.ReadFull(resp.BodyStream(), p[:]); err != nil {
		t.Fatal(err)
	}
	w.watched.Store(true)
	_ = resp.CloseBodyStream() // the rest is still on the way
	if !w.closed.Load() || hc.ConnsCount() != 0 {
		t.Fatalf("socket closed %v, %d connections counted: want closed, 0", w.closed.Load(), hc.ConnsCount())
	}
	if n := w.late.Load(); n != 0 {
		t.Fatalf("%d writes on the open socket after the body was closed early (the close_notify alert)", n)
	}
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

// TestTLSHeaderTimeoutClosesAtOnce: an answer whose header does not come
// within ReadTimeout is fasthttp.ErrTimeout, and its TLS connection is
// closed without the close_notify alert, as after a failed write: the
// upstream may be stuck and not reading, and the alert's write could wait
// its 5 s before the 504. The test watches the socket from the read that
// timed out on: nothing is written on it while it is open.
func TestTLSHeaderTimeoutClosesAtOnce(t *testing.T) {
	done := make(chan struct{})
	_, hc := tlsUpstream(t, tls.VersionTLS13, new(atomic.Bool), func(r *http.Request, w *bufio.Writer) bool {
		<-done // no answer
		return true
	})
	t.Cleanup(func() { close(done) })
	var w *watchedConn
	hc.Dial = watchedDial(&w)
	hc.ReadTimeout = 100 * time.Millisecond
	hc.Transport = New(hc, nil)
	if _, err := getTLS(t, hc, "GET", "/slow"); !errors.Is(err, fasthttp.ErrTimeout) {
		t.Fatalf("err %v, want fasthttp.ErrTimeout", err)
	}
	if !w.timedOut.Load() || !w.closed.Load() || hc.ConnsCount() != 0 {
		t.Fatalf("read timed out %v, socket closed %v, %d connections counted: want true, true, 0",
			w.timedOut.Load(), w.closed.Load(), hc.ConnsCount())
	}
	if n := w.late.Load(); n != 0 {
		t.Fatalf("%d writes on the open socket after the header's read timed out (the close_notify alert)", n)
	}
}

// watchedDial is a HostClient's Dial that dials a watchedConn, kept in *w.
func watchedDial(w **watchedConn) fasthttp.DialFunc {
	return func(addr string) (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		*w = &watchedConn{TCPConn: c.(*net.TCPConn)}
		return *w, nil
	}
}

// watchedConn counts the writes begun on a socket that is still open once
// it is watched: after a write on it failed or a read on it timed out, or
// from when the test sets watched. Its SyscallConn is the socket's, so
// that the transport's dialer wraps it as it wraps any socket.
type watchedConn struct {
	*net.TCPConn
	failed, timedOut, closed, watched atomic.Bool
	late                              atomic.Int64
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.timedOut.Store(true)
		c.watched.Store(true)
	}
	return n, err
}

func (c *watchedConn) Write(p []byte) (int, error) {
	if c.watched.Load() && !c.closed.Load() {
		c.late.Add(1)
	}
	n, err := c.TCPConn.Write(p)
	if err != nil {
		c.failed.Store(true)
		c.watched.Store(true)
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.closed.Store(true)
	return c.TCPConn.Close()
}

// TestAwait: a streamed body's Await returns once its first bytes have
// arrived (of a chunked body, the first chunk's data), or its end, and
// takes nothing of the data: the body reads whole after it, and its
// connection is reused. A body whose first bytes never come (closed in
// or after the header or its first size line, a malformed size line)
// fails, as its first Read would, and its connection is closed.
func TestAwait(t *testing.T) {
	const chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	long := "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
	answers := map[string]string{
		"/chunked":             chunked + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
		"/chunked-empty":       chunked + "0\r\nX-T: 1\r\n\r\n",
		"/long":                long + strings.Repeat("l", 100000),
		"/until-close-empty":   "HTTP/1.1 200 OK\r\n\r\n",
		"/chunked-none":        chunked,
		"/chunked-size-only":   chunked + "5\r\n",
		"/chunked-not-hex":     chunked + "zz\r\nabc\r\n0\r\n\r\n",
		"/chunked-no-trailer":  chunked + "0\r\n",
		"/long-none":           long,
		"/until-close-partial": "HTTP/1.1 200 OK\r\n\r\nabc",
	}
	u := startUpstream(t, func(r *http.Request, w *bufio.Writer) bool {
		w.WriteString(answers[r.URL.Path])
		return strings.Contains(r.URL.Path, "-none") || strings.HasPrefix(r.URL.Path, "/until-close") ||
			strings.HasSuffix(r.URL.Path, "-only") || strings.HasSuffix(r.URL.Path, "-trailer")
	})
	hc := client(u.addr())
	for _, tc := range []struct {
		path, body string
		fails      bool
	}{
		{"/chunked", "hello world", false},
		{"/chunked", "hello world", false}, // on the same connection
		{"/chunked-empty", "", false},
		{"/long", strings.Repeat("l", 100000), false},
		{"/until-close-empty", "", false},
		{"/until-close-partial", "abc", false},
		{"/chunked-none", "", true},
		{"/chunked-size-only", "", true},
		{"/chunked-not-hex", "", true},
		{"/chunked-no-trailer", "", true},
		{"/long-none", "", true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			accepted := u.accepted.Load()
			resp, err := get(t, hc, "GET", tc.path)
			if err != nil {
				t.Fatal(err)
			}
			a, ok := resp.BodyStream().(interface{ Await() error })
			if !ok {
				t.Fatalf("body %T has no Await", resp.BodyStream())
			}
			err = a.Await()
			if tc.fails {
				if err == nil {
					t.Fatal("Await: nil, want the failure a Read meets")
				}
				if _, rerr := resp.BodyStream().Read(make([]byte, 8)); rerr == nil {
					t.Fatal("Read after a failed Await: nil error")
				}
				_ = resp.CloseBodyStream()
				return
			}
			if err != nil {
				t.Fatalf("Await: %v", err)
			}
			if got := string(resp.Body()); got != tc.body {
				t.Fatalf("body %.40q (%d bytes), want %.40q (%d)", got, len(got), tc.body, len(tc.body))
			}
			if tc.path == "/chunked" && u.accepted.Load() > max(accepted, 1) {
				t.Fatal("the connection was not reused after an awaited body")
			}
		})
	}
}
