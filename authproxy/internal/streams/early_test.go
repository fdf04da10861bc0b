package streams

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
)

// noStamps: a fake projection cache's entries never stand past their
// lookup (ValidStamp), as an entry past its TTL does not.
type noStamps struct{}

func (noStamps) ValidStamp(*projection.Stamp, time.Time) bool { return false }

type noMembership struct{ noStamps }

func (noMembership) Get(context.Context, string, string, string) (*projection.Entry, error) {
	return nil, projection.ErrNoMembership
}

// unavailable is a projection cache that cannot answer (coreapi down).
type unavailable struct{ noStamps }

func (unavailable) Get(context.Context, string, string, string) (*projection.Entry, error) {
	return nil, projection.ErrUnavailable
}

// revocable is a projection cache that cannot answer (a stream's recheck
// is tried again, the stream stays open) until revoked, then finds no
// membership.
type revocable struct {
	noStamps
	revoked atomic.Bool
}

func (p *revocable) Get(context.Context, string, string, string) (*projection.Entry, error) {
	if p.revoked.Load() {
		return nil, projection.ErrNoMembership
	}
	return nil, projection.ErrUnavailable
}

// A stream revoked (or drained) while the upstream has not answered yet is
// refused at once, WebSocket and event stream alike: Serve returns a
// ClosedError with the reason (nothing went to the client), its upstream
// connection is closed and it no longer counts. The close only marked it
// closed: the handshake went on until the upstream answered or
// HandshakeTimeout passed.
func TestClosedDuringHandshake(t *testing.T) {
	rev := &revocable{}
	for _, tc := range []struct {
		name  string
		proj  Projections
		close func(m *Manager)
		want  string
	}{
		{"recheck", rev, func(m *Manager) {
			rev.revoked.Store(true)
			m.RecheckUser("alice")
		}, ReasonNoMembership},
		// The projection cache cannot answer the recheck on opening: the
		// drain closes the stream.
		{"drain", unavailable{}, func(m *Manager) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m.Drain(ctx); err != nil {
				t.Errorf("drain: %v", err)
			}
		}, ReasonShutdown},
	} {
		for _, kind := range []string{"sse", "websocket"} {
			t.Run(tc.name+" "+kind, func(t *testing.T) {
				rev.revoked.Store(false)
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				// The upstream reads the request and never answers.
				got := make(chan net.Conn, 1)
				go func() {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					_, _ = c.Read(make([]byte, 4096))
					got <- c
				}()
				m, ctx, done := serveAlice(kind, tc.proj, ln.Addr().String())
				var up net.Conn
				select {
				case up = <-got:
				case <-time.After(10 * time.Second):
					t.Fatal("the request did not reach the upstream")
				}
				defer up.Close()
				tc.close(m)
				select {
				case err := <-done:
					var ce *ClosedError
					if !errors.As(err, &ce) || ce.Reason != tc.want {
						t.Fatalf("serve = %v, want a ClosedError %q", err, tc.want)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("serve still waiting for the upstream's answer 5 s after the close")
				}
				if ctx.Response.StatusCode() != fasthttp.StatusOK || len(ctx.Response.Header.Peek("Upgrade")) != 0 || ctx.IsBodyStream() {
					t.Fatalf("response set: %s", ctx.Response.Header.Header())
				}
				_ = up.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := up.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("upstream connection: %v, want closed", err)
				}
				if n := m.Open(); n != 0 {
					t.Fatalf("open streams = %d, want 0", n)
				}
			})
		}
	}
}
