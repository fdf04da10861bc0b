package forward

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// A hung upstream (connections accepted, nothing answered) must cost one
// timeout, not one per retry attempt.
func TestHungUpstreamTimesOutOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns = append(conns, c) // read nothing, answer nothing
		}
	}()
	const timeout = 300 * time.Millisecond
	hc := NewHostClient(Options{Addr: ln.Addr().String(), MaxConns: 4, MaxConnWait: time.Second, IdleTimeout: time.Second, Timeout: timeout})
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + ln.Addr().String() + "/api/v1/users/me")
	req.Header.SetMethod(fasthttp.MethodGet)

	err = hc.Do(req, resp)
	if !errors.Is(err, fasthttp.ErrTimeout) {
		t.Fatalf("Do = %v, want ErrTimeout", err)
	}
	if f, _ := Classify(err); f != Timeout {
		t.Errorf("Classify(%v) = %v, want Timeout", err, f)
	}
	// A retry would need a new connection (the timed-out one is closed).
	if n := accepted.Load(); n != 1 {
		t.Errorf("connections to the hung upstream = %d, want 1: the GET was retried after its timeout", n)
	}
}

// upstream is a real HTTP server on loopback whose connections the test
// can close, with or without stopping it.
type upstream struct {
	ln       net.Listener
	srv      *fasthttp.Server
	mu       sync.Mutex
	conns    []net.Conn
	accepted atomic.Int64
	gate     atomic.Pointer[chan struct{}] // answers wait for it when set
	waiting  atomic.Int64                  // answers waiting for the gate
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln}
	u.srv = &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if g := u.gate.Load(); g != nil {
			u.waiting.Add(1)
			<-*g
			u.waiting.Add(-1)
		}
		ctx.SetBodyString("ok")
	}}
	go func() { _ = u.srv.Serve(u) }()
	t.Cleanup(u.stop)
	return u
}

// Accept makes u the server's listener, recording every connection.
func (u *upstream) Accept() (net.Conn, error) {
	c, err := u.ln.Accept()
	if err == nil {
		u.accepted.Add(1)
		u.mu.Lock()
		u.conns = append(u.conns, c)
		u.mu.Unlock()
	}
	return c, err
}
func (u *upstream) Close() error   { return u.ln.Close() }
func (u *upstream) Addr() net.Addr { return u.ln.Addr() }

// closeConns closes every connection accepted so far, as an upstream
// that restarted or timed its idle connections out.
func (u *upstream) closeConns() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.conns {
		c.Close()
	}
	u.conns = nil
}

// stop closes the listener and every connection: the process is gone.
func (u *upstream) stop() {
	u.ln.Close()
	u.closeConns()
}

// pool opens n connections from hc to u (n requests at once, answered
// together), left idle in hc's pool.
func (u *upstream) pool(t *testing.T, hc *fasthttp.HostClient, n int) {
	t.Helper()
	gate := make(chan struct{})
	u.gate.Store(&gate)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := do(hc, u, fasthttp.MethodGet); err != nil {
				t.Error(err)
			}
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); hc.ConnsCount() < n && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	close(gate)
	wg.Wait()
	u.gate.Store(nil)
	if got := hc.ConnsCount(); got != n {
		t.Fatalf("pooled connections = %d, want %d", got, n)
	}
}

// do sends one request and reads the whole (streamed) answer.
// do sends a request as the proxy does: once more when Retry allows.
func do(hc *fasthttp.HostClient, u *upstream, method string) error {
	_, err := doRetrying(hc, u, method)
	return err
}

// doRetrying is do, and returns the first attempt's error too.
func doRetrying(hc *fasthttp.HostClient, u *upstream, method string) (first, err error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + u.Addr().String() + "/x")
	req.Header.SetMethod(method)
	if method == fasthttp.MethodPost {
		req.SetBodyString("{}")
	}
	if first = hc.Do(req, resp); first != nil {
		if !Retry(hc, req, first) {
			return first, first
		}
		if err = hc.Do(req, resp); err != nil {
			return first, err
		}
	}
	return first, answeredOK(resp)
}

func answeredOK(resp *fasthttp.Response) error {
	if string(resp.Body()) != "ok" {
		return errors.New("unexpected answer " + string(resp.Body()))
	}
	return nil
}

func newTestClient(u *upstream) *fasthttp.HostClient {
	return NewHostClient(Options{Addr: u.Addr().String(), MaxConns: 16, MaxConnWait: time.Second, IdleTimeout: time.Minute, Timeout: 5 * time.Second})
}

// An upstream that stopped while the client held idle keep-alive
// connections to it is unavailable (503) from the first request on: no
// request is failed by a stale connection as a transport error (502), GET
// or POST.
func TestStoppedUpstreamWithPooledConns(t *testing.T) {
	u := startUpstream(t)
	hc := newTestClient(u)
	const n = 8
	u.pool(t, hc, n)
	u.stop()
	for i, m := range []string{fasthttp.MethodGet, fasthttp.MethodPost, fasthttp.MethodGet, fasthttp.MethodGet, fasthttp.MethodPost} {
		err := do(hc, u, m)
		if err == nil {
			t.Fatalf("request %d (%s) to a stopped upstream succeeded", i, m)
		}
		if f, label := Classify(err); f != Unavailable {
			t.Errorf("request %d (%s): %v classified %v (%s), want Unavailable", i, m, err, f, label)
		}
	}
}

// A pool gone stale while the upstream is up (it restarted, or timed the
// connections out): each closed connection is found closed before a
// request is written on it and dropped, and the request, a POST too, goes
// out on a fresh connection.
func TestStalePoolWhileUpstreamUp(t *testing.T) {
	u := startUpstream(t)
	hc := newTestClient(u)
	const n = 4
	u.pool(t, hc, n)
	u.closeConns()
	time.Sleep(50 * time.Millisecond) // the FINs reach the client's sockets

	if err := do(hc, u, fasthttp.MethodPost); err != nil {
		t.Fatalf("POST on a stale pool: %v, want it sent on a fresh connection", err)
	}
	if got := u.accepted.Load(); got != n+1 {
		t.Errorf("connections accepted = %d, want %d (one fresh connection)", got, n+1)
	}
	if got := hc.ConnsCount(); got != 1 {
		t.Errorf("pooled connections after the POST = %d, want 1 (the stale ones closed)", got)
	}
	for range 3 {
		if err := do(hc, u, fasthttp.MethodGet); err != nil {
			t.Fatal(err)
		}
	}
}

// A connection the upstream closes after the request went out, before
// answering: a GET is retried once, on a fresh connection, and succeeds;
// a POST is not retried (it may have been received) and is answered as
// unavailable. The client does not retry on its own: the proxy signs a
// retry anew, so the first attempt's error comes back to it.
func TestClosedBeforeAnswer(t *testing.T) {
	u := startUpstream(t)
	hc := newTestClient(u)
	u.pool(t, hc, 1)
	for _, m := range []string{fasthttp.MethodPost, fasthttp.MethodGet} {
		// The previous request's handler has left the gate.
		for deadline := time.Now().Add(5 * time.Second); u.waiting.Load() != 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		before := u.accepted.Load()
		gate := make(chan struct{})
		u.gate.Store(&gate)
		done := make(chan error, 1)
		var first error
		go func() {
			var err error
			first, err = doRetrying(hc, u, m)
			done <- err
		}()
		for deadline := time.Now().Add(5 * time.Second); u.waiting.Load() == 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		u.gate.Store(nil)
		u.closeConns() // the request is in, its answer held back
		close(gate)
		err := <-done
		if m == fasthttp.MethodGet {
			if err != nil {
				t.Errorf("GET closed before its answer: %v, want a retry on a fresh connection", err)
			}
			if !Stale(first) {
				t.Errorf("GET's first attempt: %v, want the stale connection's error (the client retried on its own)", first)
			}
			continue
		}
		if f, label := Classify(err); err == nil || f != Unavailable || label != "closed" {
			t.Errorf("POST closed before its answer: %v, classified %v (%s); want Unavailable (closed)", err, f, label)
		}
		if got := u.accepted.Load(); got != before {
			t.Errorf("connections accepted = %d, want %d: the POST was retried", got, before)
		}
	}
}

// A failed TLS handshake with an https:// upstream (a certificate that
// does not verify, a server that does not speak TLS) is Unavailable,
// labelled tls.
func TestClassifyTLS(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer plain.Close()
	untrusted := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0) // its side of the refused handshakes
	untrusted.StartTLS()
	defer untrusted.Close()
	for _, srv := range []*httptest.Server{plain, untrusted} {
		hc := NewHostClient(Options{Addr: srv.Listener.Addr().String(), MaxConns: 1, Timeout: 5 * time.Second,
			TLS: &tls.Config{MinVersion: tls.VersionTLS12}})
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("https://" + srv.Listener.Addr().String() + "/")
		err := hc.Do(req, resp)
		if f, label := Classify(err); err == nil || f != Unavailable || label != "tls" {
			t.Errorf("%s: Classify(%v) = %v %s, want Unavailable tls", srv.URL, err, f, label)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}

// A call of the internal client to an https:// coreapi whose exchange
// failed (a write or a read that timed out) closes its connection without
// TLS's close_notify alert: Go's tls.Conn.Close writes it with a deadline
// of 5 s of its own, and to a coreapi that stopped reading the call's
// error waited all of it. The test watches the socket under the tls.Conn:
// once a read or write on it has failed, nothing more is written on it
// while it is open. A connection closed after a complete exchange still
// sends the alert.
func TestInternalTLSFailedExchangeClosesAtOnce(t *testing.T) {
	s := httptest.NewTLSServer(http.NotFoundHandler())
	cert, roots := s.TLS.Certificates[0], x509.NewCertPool()
	roots.AddCert(s.Certificate())
	s.Close()
	for _, tc := range []struct {
		name   string
		server string // deaf: reads the request line only; silent: the header, answers nothing; else answers
		method string
		body   int
		alerts int64 // alert records written on the open socket
	}{
		{"write timed out", "deaf", "POST", 64 << 20, 0}, // more than the socket buffers hold
		{"read timed out", "silent", "GET", 0, 0},
		{"complete exchange", "answers", "GET", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			// TLS 1.2: its alerts are records of their own type on the wire.
			ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12})
			done := make(chan struct{})
			t.Cleanup(func() { close(done); ln.Close() })
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				for l := ""; l != "\r\n"; {
					if l, err = br.ReadString('\n'); err != nil || tc.server == "deaf" {
						break
					}
				}
				if tc.server == "answers" {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					_, _ = io.Copy(io.Discard, br)
				}
				<-done
			}()
			var w *watchedConn
			hc := newInternalClient(Options{Addr: ln.Addr().String(), MaxConns: 1, Timeout: 200 * time.Millisecond,
				TLS: &tls.Config{RootCAs: roots}}, func(addr string, timeout time.Duration) (net.Conn, error) {
				c, err := net.DialTimeout("tcp", addr, timeout)
				if err != nil {
					return nil, err
				}
				w = &watchedConn{TCPConn: c.(*net.TCPConn)}
				return w, nil
			})
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("https://" + hc.Addr + "/internal")
			req.Header.SetMethod(tc.method)
			req.SetBody(make([]byte, tc.body))
			err = hc.Do(req, resp)
			if tc.server == "answers" {
				if err != nil || resp.StatusCode() != 200 {
					t.Fatalf("%d, %v: want 200", resp.StatusCode(), err)
				}
				hc.CloseIdleConnections()
			} else if !errors.Is(err, fasthttp.ErrTimeout) {
				t.Fatalf("err %v, want fasthttp.ErrTimeout", err)
			}
			if !w.closed.Load() {
				t.Fatal("the socket is still open")
			}
			if tc.server != "answers" && !w.failed.Load() {
				t.Fatal("no read or write failed on the socket")
			}
			if n := w.late.Load(); n != 0 {
				t.Fatalf("%d writes on the open socket after a read or write failed (the close_notify alert)", n)
			}
			if n := w.alerts.Load(); n != tc.alerts {
				t.Fatalf("%d alerts written on the open socket, want %d", n, tc.alerts)
			}
		})
	}
}

// watchedConn counts the writes begun on a socket that is still open after
// a read or write on it failed, and the TLS 1.2 alert records written on
// it while open.
type watchedConn struct {
	*net.TCPConn
	failed, closed atomic.Bool
	late, alerts   atomic.Int64
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if err != nil {
		c.failed.Store(true)
	}
	return n, err
}

func (c *watchedConn) Write(p []byte) (int, error) {
	if !c.closed.Load() {
		if c.failed.Load() {
			c.late.Add(1)
		}
		if len(p) > 0 && p[0] == 21 { // an alert record
			c.alerts.Add(1)
		}
	}
	n, err := c.TCPConn.Write(p)
	if err != nil {
		c.failed.Store(true)
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.closed.Store(true)
	return c.TCPConn.Close()
}

// TestInternalTLSOverIPv6: the internal client's own dialer (a TLS
// client's, which leaves the TLS close_notify alert out after a failed
// exchange) reaches an https IDENTITY_URL at an IPv6 address, as newDial
// does; fasthttp's default dial is IPv4 only.
func TestInternalTLSOverIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	s.Listener.Close()
	s.Listener = ln
	s.StartTLS()
	t.Cleanup(s.Close)
	roots := x509.NewCertPool()
	roots.AddCert(s.Certificate())
	hc := NewInternalClient(Options{Addr: ln.Addr().String(), MaxConns: 1, Timeout: 5 * time.Second,
		TLS: &tls.Config{RootCAs: roots}})
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("https://" + hc.Addr + "/internal")
	if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 || string(resp.Body()) != "ok" {
		t.Fatalf("GET over IPv6: %d %q, %v: want 200 ok", resp.StatusCode(), resp.Body(), err)
	}
}
