package streams

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// Once a WebSocket is closed (here for a revocation), what its client
// still sends is read and dropped, not relayed: the proxy reads on only
// to see the client's close frame. The stream's close closes its upstream
// connection too, but the client's bytes may be read in between: the
// test holds that close of the upstream connection until the proxy has
// read everything the client sent after the stream closed (its message,
// then its half-close, which the proxy passes on), and wants none of it
// to have reached the upstream.
func TestClosedWebSocketRelaysNoMoreFromTheClient(t *testing.T) {
	m := New(Options{CloseWait: 5 * time.Second, WriteTimeout: time.Minute}, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	var held *heldConn
	dialed := make(chan struct{})
	m.netDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		held = &heldConn{TCPConn: c.(*net.TCPConn), closing: make(chan struct{}), release: make(chan struct{}),
			halfClosed: make(chan struct{})}
		close(dialed)
		return held, nil
	}
	up := newReadingUpstream(t)
	cli := openStream(t, proxyStreams(t, m, up.addr), true)
	<-dialed
	t.Cleanup(held.releaseClose)

	if _, err := cli.Write(clientFrame("before")); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 20*time.Second, func() error {
		if got := up.read(); !bytes.Contains(got, []byte("before")) {
			return fmt.Errorf("the upstream got %q, want the message sent before the close", got)
		}
		return nil
	})

	cs := m.snapshot(nil, "")
	if len(cs) != 1 {
		t.Fatalf("%d streams open, want 1", len(cs))
	}
	go cs[0].Close("session_revoked")
	wait(t, held.closing, "the stream's close to close its upstream connection")
	if _, err := cli.Write(clientFrame("after")); err != nil {
		t.Fatal(err)
	}
	if err := cli.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wait(t, held.halfClosed, "the proxy to read the client's half-close")
	held.releaseClose()
	wait(t, up.ended, "the upstream's connection to end")
	if got := up.read(); bytes.Contains(got, []byte("after")) {
		t.Fatalf("the upstream got %q: a message the client sent after the proxy closed the stream", got)
	}
}

// wait waits for ch to be closed, for what.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("waited 20 s for %s", what)
	}
}

// clientFrame is a client's (masked) text frame of payload, its mask all
// zeroes: the payload goes on the wire as it is.
func clientFrame(payload string) []byte {
	return append([]byte{0x81, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

// heldConn is a stream's upstream connection whose Close waits, once
// closing is closed, until release is; halfClosed is closed when the
// proxy passes on the client's half-close.
type heldConn struct {
	*net.TCPConn
	closeOnce, halfOnce, releaseOnce sync.Once
	closing, release, halfClosed     chan struct{}
}

func (c *heldConn) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	<-c.release
	return c.TCPConn.Close()
}

func (c *heldConn) CloseWrite() error {
	c.halfOnce.Do(func() { close(c.halfClosed) })
	return c.TCPConn.CloseWrite()
}

func (c *heldConn) releaseClose() { c.releaseOnce.Do(func() { close(c.release) }) }

// readingUpstream answers a WebSocket upgrade with its 101, then reads
// what comes until its connection ends (ended is closed then).
type readingUpstream struct {
	addr  string
	mu    sync.Mutex
	got   []byte
	ended chan struct{}
}

func newReadingUpstream(t *testing.T) *readingUpstream {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &readingUpstream{addr: ln.Addr().String(), ended: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		defer close(u.ended)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		d := sha1.New()
		d.Write([]byte(req.Header.Get("Sec-WebSocket-Key") + websocketGUID))
		if _, err := fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(d.Sum(nil))); err != nil {
			return
		}
		b := make([]byte, 4<<10)
		for {
			n, err := br.Read(b)
			u.mu.Lock()
			u.got = append(u.got, b[:n]...)
			u.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return u
}

// read is what the upstream has read so far.
func (u *readingUpstream) read() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return bytes.Clone(u.got)
}
