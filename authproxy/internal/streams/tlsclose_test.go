package streams

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// A stream (a WebSocket, an event stream) to a TLS upstream that ends
// otherwise than by the upstream's end (revoked, shut down, a write to the
// upstream timed out) has its
// upstream connection closed without TLS's close_notify alert: Go's
// tls.Conn.Close writes it with a deadline of 5 s of its own, and to an
// upstream that stopped reading that write waited all of it, on the
// goroutine that closed the stream (a revocation's, a drain's, one stream
// after another). The test watches the socket under the proxy's tls.Conn:
// an alert record written on it while it is open is the alert sent (or
// waited for). A stream the upstream ended still gets it.
func TestTLSStreamClosedWithoutCloseNotify(t *testing.T) {
	cert, roots := testCert(t)
	for _, tc := range []struct {
		kind, end string // end: how the stream ends
		reason    string
		alerts    int64
	}{
		{"websocket", "revoke", "session_revoked", 0},
		{"websocket", "drain", ReasonShutdown, 0},
		{"websocket", "write_timeout", ReasonError, 0},
		{"websocket", "upstream", ReasonUpstream, 1},
		{"sse", "revoke", "session_revoked", 0},
		{"sse", "drain", ReasonShutdown, 0},
		{"sse", "upstream", ReasonUpstream, 1},
	} {
		t.Run(tc.kind+"/"+tc.end, func(t *testing.T) {
			m := New(Options{CloseWait: 100 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}, nil,
				slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			var w atomic.Pointer[alertConn]
			m.netDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				ac := &alertConn{TCPConn: c.(*net.TCPConn)}
				w.Store(ac)
				return ac, nil
			}
			up := newTLSUpstream(t, cert)
			cli := openStream(t, proxyStreamsTLS(t, m, up.addr, &tls.Config{RootCAs: roots}), tc.kind == "websocket")
			cs := m.snapshot(nil, "")
			if len(cs) != 1 {
				t.Fatalf("%d streams open, want 1", len(cs))
			}
			switch tc.end {
			case "revoke":
				cs[0].Close(tc.reason)
			case "drain":
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := m.Drain(ctx); err != nil {
					t.Fatal(err)
				}
			case "write_timeout": // the upstream reads nothing of what the client sends
				go func() {
					b := make([]byte, 256<<10)
					for {
						if _, err := cli.Write(b); err != nil {
							return
						}
					}
				}()
			case "upstream":
				close(up.end)
			}
			eventually.Within(t, 20*time.Second, func() error {
				if n := m.Open(); n != 0 {
					return fmt.Errorf("%d streams open", n)
				}
				return nil
			})
			if r := cs[0].Reason(); r != tc.reason {
				t.Fatalf("reason %q, want %q", r, tc.reason)
			}
			ac := w.Load()
			if !ac.closed.Load() {
				t.Fatal("the upstream's socket is still open")
			}
			if n := ac.alerts.Load(); n != tc.alerts {
				t.Fatalf("%d alerts written on the open upstream socket, want %d", n, tc.alerts)
			}
		})
	}
}

// testCert is a certificate for 127.0.0.1 and the pool that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	s := httptest.NewTLSServer(http.NotFoundHandler())
	cert, roots := s.TLS.Certificates[0], x509.NewCertPool()
	roots.AddCert(s.Certificate())
	s.Close()
	return cert, roots
}

// tlsUpstream speaks TLS 1.2 (whose alerts are records of their own type
// on the wire, where TLS 1.3 hides them among data records). It answers a
// WebSocket upgrade with its 101, another request with an event stream's
// header and a first event, then reads nothing more; once end is closed,
// it ends the answer (the last chunk of the event stream) and closes the
// connection (with its close_notify).
type tlsUpstream struct {
	addr string
	end  chan struct{}
}

func newTLSUpstream(t *testing.T, cert tls.Certificate) *tlsUpstream {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12})
	u := &tlsUpstream{addr: ln.Addr().String(), end: make(chan struct{})}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
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
		key := req.Header.Get("Sec-WebSocket-Key")
		if key != "" {
			d := sha1.New()
			d.Write([]byte(key + websocketGUID))
			_, err = fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
				base64.StdEncoding.EncodeToString(d.Sum(nil)))
		} else {
			ev := "data: x\n\n"
			_, err = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(ev), ev)
		}
		if err != nil {
			return
		}
		select {
		case <-done:
		case <-u.end:
			if key == "" {
				_, _ = io.WriteString(c, "0\r\n\r\n")
			}
		}
	}()
	return u
}

// openStream opens a WebSocket (or an event stream) through the proxy at
// addr and reads the answer's header.
func openStream(t *testing.T, addr string, ws bool) net.Conn {
	t.Helper()
	c := sendStreamRequest(t, &net.Dialer{}, addr, ws)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]string{true: " 101 ", false: " 200 "}[ws]; !strings.Contains(status, want) {
		t.Fatalf("status line %q", status)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

// alertConn counts the TLS 1.2 alert records whose write began on the
// socket while it was open.
type alertConn struct {
	*net.TCPConn
	closed atomic.Bool
	alerts atomic.Int64
}

func (c *alertConn) Write(p []byte) (int, error) {
	if len(p) > 0 && p[0] == 21 && !c.closed.Load() { // 21: an alert record
		c.alerts.Add(1)
	}
	return c.TCPConn.Write(p)
}

func (c *alertConn) Close() error {
	c.closed.Store(true)
	return c.TCPConn.Close()
}
