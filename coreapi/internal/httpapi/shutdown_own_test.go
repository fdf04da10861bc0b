package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestShutdownBeforeServe: a shutdown that runs before Serve has its
// listener (a SIGTERM right at the start) still ends Serve: fasthttp's own
// Shutdown closes only the listeners Serve has registered, and Serve would
// have accepted for ever.
func TestShutdownBeforeServe(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:1/unused") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Pool: pool,
		IdentityKeys: []identity.Key{{ID: "core", Secret: []byte("test-identity-key-0123456789abcdef")}}, CursorKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after Shutdown = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve after Shutdown still accepting after 10s")
	}
	if c, err := net.DialTimeout("tcp4", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts connections")
	}
}
