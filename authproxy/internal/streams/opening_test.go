package streams

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/valyala/fasthttp"
)

// heldRevocation is a projection cache whose user is active until
// revoked; from then on each lookup says so on entered and waits for
// release before answering "no membership", as a fetch from a slow
// coreapi does after the invalidation made the entry a miss.
type heldRevocation struct {
	noStamps
	revoked atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (p *heldRevocation) Get(context.Context, string, string, string) (*projection.Entry, error) {
	if !p.revoked.Load() {
		return projection.Of(&identity.Projection{UserID: "alice", TenantID: "t", UserStatus: identity.StatusActive,
			MembershipStatus: identity.StatusActive, TenantStatus: identity.StatusActive}), nil
	}
	p.entered <- struct{}{}
	<-p.release
	return nil, projection.ErrNoMembership
}

// TestRevokedBeforeItStartsIsRefused: the user is revoked after the
// stream registered and was decided once more (allowed), while its
// upstream has not answered yet; the recheck the event starts is still
// waiting for coreapi when the upstream answers. The stream is refused
// (a ClosedError: its client gets what a request gets now), its upstream
// connection closed, nothing of the answer passed on. It was started
// with the answer on its way to the client, and closed only once the
// recheck came back.
func TestRevokedBeforeItStartsIsRefused(t *testing.T) {
	for _, kind := range []string{"sse", "websocket"} {
		t.Run(kind, func(t *testing.T) {
			proj := &heldRevocation{entered: make(chan struct{}, 4), release: make(chan struct{})}
			released := false
			defer func() {
				if !released {
					close(proj.release)
				}
			}()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			// The upstream reads the request, then answers when told to.
			got, answer := make(chan net.Conn, 1), make(chan struct{})
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Read(make([]byte, 4096))
				got <- c
				<-answer
				if kind == "websocket" {
					_, _ = c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
						"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi"))
					return
				}
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
					"b\r\ndata: hi\n\n\r\n"))
			}()
			m, ctx, done := serveAlice(kind, proj, ln.Addr().String())
			var up net.Conn
			select {
			case up = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("the request did not reach the upstream")
			}
			defer up.Close()
			// Registered, and decided once more: allowed.
			cs := m.snapshot(nil, "")
			if len(cs) != 1 {
				t.Fatalf("%d streams registered, want 1", len(cs))
			}
			eventually.Within(t, 5*time.Second, func() error {
				if cs[0].rechecking.Load() {
					return errors.New("the decision on registering still running")
				}
				return nil
			})
			// Revoked: the event's recheck waits for coreapi.
			proj.revoked.Store(true)
			m.RecheckUser("alice")
			<-proj.entered
			close(answer)
			// Whatever decides the stream before it starts waits for the
			// same answer; once it asks, coreapi answers.
			var serr error
			select {
			case serr = <-done:
			case <-proj.entered:
				close(proj.release)
				released = true
				serr = <-done
			case <-time.After(10 * time.Second):
				t.Fatal("serve neither returned nor decided the stream")
			}
			var ce *ClosedError
			if !errors.As(serr, &ce) || ce.Reason != ReasonNoMembership {
				t.Fatalf("serve = %v, want a ClosedError %q: the stream was started for a revoked user", serr, ReasonNoMembership)
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

// serveAlice serves a stream of kind ("sse" or "websocket") on the route
// /x for alice (tenant t, session s) to the upstream at addr, through a
// new manager over proj; ctx is the client's request and answer, done
// gets what the serve returns.
func serveAlice(kind string, proj Projections, addr string) (m *Manager, ctx *fasthttp.RequestCtx, done <-chan error) {
	m = New(Options{HandshakeTimeout: time.Minute}, proj, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute, Websocket: kind == "websocket"}
	ctx = &fasthttp.RequestCtx{}
	ctx.Request.SetRequestURI("/x/events")
	ctx.Request.Header.SetHost("app")
	r := Request{Ctx: ctx, Addr: addr, Route: rt, RequestID: "r",
		Claims: &tokens.Claims{Sub: "alice", Tid: "t", Sid: "s", Exp: time.Now().Add(time.Hour).Unix()}, Path: "/x/events", Method: "GET"}
	serve := m.ServeStream
	if kind == "websocket" {
		ctx.Request.Header.Set("Sec-WebSocket-Version", "13")
		ctx.Request.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		serve = m.ServeWebSocket
	}
	c := make(chan error, 1)
	go func() { c <- serve(r) }()
	return m, ctx, c
}
