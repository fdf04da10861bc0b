package sqldb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/tollgate-auth/tollgate/shared/refused"
)

func TestUnavailable(t *testing.T) {
	// A real connection error: nothing listens on this port.
	addr := refused.Addr(t)
	_, connErr := pgx.Connect(context.Background(), "postgres://postgres@"+addr+"/postgres?connect_timeout=2")
	if connErr == nil {
		t.Fatal("connect to a closed port succeeded")
	}

	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"connect refused", fmt.Errorf("get me: %w", connErr), true},
		{"admin shutdown", fmt.Errorf("q: %w", &pgconn.PgError{Code: "57P01"}), true},
		{"connection exception", &pgconn.PgError{Code: "08006"}, true},
		{"read-only (a demoted primary)", fmt.Errorf("write outbox: %w", &pgconn.PgError{Code: "25006"}), true},
		{"reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"closed under a query", fmt.Errorf("claim: %w", pgconn.ErrConnClosed), true},
		{"socket ended mid-message", fmt.Errorf("revoke role: %w", io.ErrUnexpectedEOF), true},
		{"socket ended", fmt.Errorf("commit: %w", io.EOF), true},
		{"deadline", fmt.Errorf("acquire: %w", context.DeadlineExceeded), true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"syntax error", &pgconn.PgError{Code: "42601"}, false},
		{"no rows", pgx.ErrNoRows, false},
		{"other", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Unavailable(tt.err); got != tt.want {
				t.Fatalf("Unavailable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
