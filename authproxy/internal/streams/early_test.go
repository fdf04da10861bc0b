package streams

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/valyala/fasthttp"
)

type noMembership struct{}

func (noMembership) Get(context.Context, string, string, string) (*projection.Entry, error) {
	return nil, projection.ErrNoMembership
}

// unavailable is a projection cache that cannot answer (coreapi down).
type unavailable struct{}

func (unavailable) Get(context.Context, string, string, string) (*projection.Entry, error) {
	return nil, projection.ErrUnavailable
}

// A stream revoked (or drained) while the upstream has not answered yet is
// closed once it starts, and the proxy does not fall over meanwhile.
func TestClosedDuringHandshake(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proj  Projections
		close func(m *Manager)
		want  string
	}{
		{"recheck", noMembership{}, func(m *Manager) { m.RecheckUser("alice") }, ReasonNoMembership},
		// The projection cache cannot answer the recheck on opening: the
		// drain closes the stream.
		{"drain", unavailable{}, func(m *Manager) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			_ = m.Drain(ctx)
		}, ReasonShutdown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got, answer := make(chan net.Conn, 1), make(chan struct{})
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Read(make([]byte, 4096))
				got <- c
				<-answer
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"))
			}()
			m := New(Options{HandshakeTimeout: time.Second}, tc.proj, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
			ctx := &fasthttp.RequestCtx{}
			ctx.Request.SetRequestURI("/x/events")
			ctx.Request.Header.SetHost("app")
			done := make(chan error, 1)
			go func() {
				done <- m.ServeStream(Request{Ctx: ctx, Addr: ln.Addr().String(), Route: rt, RequestID: "r",
					Claims: &tokens.Claims{Sub: "alice", Tid: "t", Sid: "s", Exp: time.Now().Add(time.Hour).Unix()}, Path: "/x/events", Method: "GET"})
			}()
			up := <-got
			defer up.Close()
			tc.close(m)
			time.Sleep(50 * time.Millisecond) // the recheck runs
			close(answer)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// The stream was closed before it started: its upstream connection
			// is closed at once.
			_ = up.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := up.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("upstream connection: %v, want closed", err)
			}
			cs := m.snapshot(nil, "")
			if len(cs) != 1 || cs[0].Reason() != tc.want {
				t.Fatalf("streams %d, reason %q", len(cs), cs[0].Reason())
			}
		})
	}
}
