package streams

import (
	"bufio"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/valyala/fasthttp"
)

// floodUpstream is an upstream that answers a WebSocket upgrade with its
// 101 and then writes frames without end, or another request with an
// event stream whose chunks never end, counting the bytes the proxy took;
// ended is closed when its connection's read ends (the proxy closed it).
type floodUpstream struct {
	addr    string
	flooded atomic.Int64
	ended   chan struct{}
}

func newFloodUpstream(t *testing.T) *floodUpstream {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &floodUpstream{addr: ln.Addr().String(), ended: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		f := frame(16<<10, false)
		if key := req.Header.Get("Sec-WebSocket-Key"); key != "" {
			d := sha1.New()
			d.Write([]byte(key + websocketGUID))
			accept := base64.StdEncoding.EncodeToString(d.Sum(nil))
			_, err = fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept)
		} else {
			_, err = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
			ev := "data: " + strings.Repeat("x", 16<<10) + "\n\n"
			f = fmt.Appendf(nil, "%x\r\n%s\r\n", len(ev), ev)
		}
		if err != nil {
			return
		}
		go func() {
			defer close(u.ended)
			_, _ = io.Copy(io.Discard, c)
		}()
		for {
			if _, err := c.Write(f); err != nil {
				return
			}
			u.flooded.Add(int64(len(f)))
		}
	}()
	return u
}

// blocked waits until the upstream's flood no longer gets anything
// through: every buffer on the way to the client is full, and the proxy's
// relay is blocked writing to it.
func (u *floodUpstream) blocked(t *testing.T) {
	t.Helper()
	var prev int64 = -1
	eventually.Within(t, 20*time.Second, func() error {
		time.Sleep(300 * time.Millisecond)
		n, was := u.flooded.Load(), prev
		prev = n
		if n != was || n == 0 {
			return fmt.Errorf("the upstream still writes: %d bytes, %d 300 ms before", n, was)
		}
		return nil
	})
}

// proxyStreams serves m's streams on a listener of its own, each request
// to addr on a route with websocket and a stream_timeout (an upgrade is
// spliced, another request streamed), and returns its address.
func proxyStreams(t *testing.T, m *Manager, addr string) string {
	t.Helper()
	return proxyStreamsTLS(t, m, addr, nil)
}

// proxyStreamsTLS is proxyStreams to an upstream that speaks TLS when cfg
// is set (its client configuration).
func proxyStreamsTLS(t *testing.T, m *Manager, addr string, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt := &rules.Route{Prefix: "/s", Websocket: true, StreamTimeout: time.Hour}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		r := Request{Ctx: ctx, Addr: addr, TLS: cfg, Route: rt, RequestID: "r", ClientIP: "127.0.0.1", Path: "/s", Method: "GET"}
		var err error
		if len(ctx.Request.Header.Peek("Upgrade")) > 0 {
			err = m.ServeWebSocket(r)
		} else {
			err = m.ServeStream(r)
		}
		if err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// deafClient opens a WebSocket (or an event stream) through the proxy at
// addr with a tiny receive buffer and never reads from it.
func deafClient(t *testing.T, addr string, ws bool) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return sendStreamRequest(t, &d, addr, ws)
}

// sendStreamRequest dials addr with d and sends a WebSocket handshake (or
// an event stream's GET) for /s; the connection is closed with the test.
func sendStreamRequest(t *testing.T, d *net.Dialer, addr string, ws bool) net.Conn {
	t.Helper()
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET /s HTTP/1.1\r\nHost: app\r\n\r\n"
	if ws {
		req = "GET /s HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	}
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c
}

// A stream closed while its client does not read releases its upstream
// connection at once: the relay blocked writing to the client gets
// CloseWait (here a minute, to tell the two apart) to finish, but nothing
// is relayed either way once the stream is closed. A WebSocket's upstream
// saw its connection closed only when that wait ran out.
func TestClosedStreamReleasesItsUpstreamAtOnce(t *testing.T) {
	for _, tc := range []struct {
		kind   string
		reason string
	}{
		{"websocket", ReasonShutdown}, {"websocket", "session_revoked"}, {"websocket", ReasonRouteChanged},
		{"websocket", ReasonTokenExpired}, {"sse", ReasonShutdown}, {"sse", "session_revoked"},
	} {
		reason := tc.reason
		t.Run(tc.kind+"/"+reason, func(t *testing.T) {
			m := New(Options{CloseWait: time.Minute, WriteTimeout: time.Minute}, nil,
				slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			up := newFloodUpstream(t)
			deafClient(t, proxyStreams(t, m, up.addr), tc.kind == "websocket")
			up.blocked(t)
			cs := m.snapshot(nil, "")
			if len(cs) != 1 || cs[0].kind != tc.kind {
				t.Fatalf("%d streams open, want one %s", len(cs), tc.kind)
			}
			cs[0].Close(reason)
			eventually.Within(t, 20*time.Second, func() error {
				select {
				case <-up.ended:
					return nil
				default:
					return fmt.Errorf("the upstream's connection is still open after the stream closed %s", reason)
				}
			})
			if r := cs[0].Reason(); r != reason {
				t.Fatalf("reason %q, want %q", r, reason)
			}
		})
	}
}
