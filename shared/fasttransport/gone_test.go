package fasttransport

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// goneConn dials a loopback listener, has its side of the connection do
// what peer says, and returns the client's side.
func goneConn(t *testing.T, peer func(c *net.TCPConn)) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { s.Close() })
	peer(s.(*net.TCPConn))
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// reset closes c with SO_LINGER 0: the peer gets a reset.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// TestGone drives each way a connection ends through real loopback
// sockets, and each way an exchange fails otherwise, and asks Gone: the
// one list the transport (cutFailed) and the forwarding client (Stale)
// both use.
func TestGone(t *testing.T) {
	one := make([]byte, 1)
	for _, tc := range []struct {
		name string
		err  func(t *testing.T) error
		want bool
	}{
		{"read after the peer's close: io.EOF", func(t *testing.T) error {
			c := goneConn(t, func(c *net.TCPConn) { c.Close() })
			_, err := c.Read(one)
			return err
		}, true},
		{"read after the peer's reset: ECONNRESET", func(t *testing.T) error {
			c := goneConn(t, reset)
			_, err := c.Read(one)
			return err
		}, true},
		{"write after the peer's reset: EPIPE", func(t *testing.T) error {
			c := goneConn(t, reset)
			if _, err := c.Read(one); !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read: %v, want ECONNRESET first", err)
			}
			_, err := c.Write(one)
			if !errors.Is(err, syscall.EPIPE) {
				t.Fatalf("write: %v, want EPIPE", err)
			}
			return err
		}, true},
		{"write on a connection closed here: net.ErrClosed", func(t *testing.T) error {
			c := goneConn(t, func(*net.TCPConn) {})
			c.Close()
			_, err := c.Write(one)
			return err
		}, true},
		{"read on a connection closed here: net.ErrClosed", func(t *testing.T) error {
			c := goneConn(t, func(*net.TCPConn) {})
			c.Close()
			_, err := c.Read(one)
			return err
		}, true},
		{"a request the upstream read and closed on: fasthttp.ErrConnectionClosed", func(t *testing.T) error {
			u := startUpstream(t, func(*http.Request, *bufio.Writer) bool { return true })
			hc := &fasthttp.HostClient{Addr: u.addr(), ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
				RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false }}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + u.addr() + "/")
			err := hc.Do(req, resp)
			if !errors.Is(err, fasthttp.ErrConnectionClosed) {
				t.Fatalf("err %v, want fasthttp.ErrConnectionClosed", err)
			}
			return err
		}, true},
		{"a read that timed out", func(t *testing.T) error {
			c := goneConn(t, func(*net.TCPConn) {})
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			_, err := c.Read(one)
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read: %v, want a timeout", err)
			}
			return err
		}, false},
		{"an answer cut in its header: io.ErrUnexpectedEOF", func(t *testing.T) error {
			c := goneConn(t, func(c *net.TCPConn) {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Le")
				c.Close()
			})
			_, err := io.ReadFull(c, make([]byte, 64))
			return err
		}, false},
		{"a broken answer", func(*testing.T) error { return ErrStatus }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err(t)
			if err == nil {
				t.Fatal("no error")
			}
			if got := Gone(err); got != tc.want {
				t.Errorf("Gone(%v) = %v, want %v", err, got, tc.want)
			}
		})
	}
}
