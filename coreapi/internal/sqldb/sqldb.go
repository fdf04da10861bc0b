// Package sqldb names what coreapi's stores run statements on.
package sqldb

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Unavailable reports whether err means the database could not be reached
// or is not accepting work (a failover, a restart, a network outage), as
// opposed to a statement that failed: a connection that could not be made
// or broke (the driver closed it: the server went away under it; or the
// socket ended mid-message, io.ErrUnexpectedEOF or io.EOF as pgconn
// returns them from a read, which is what a server stopped with
// -m immediate or a cut link leaves: no error message comes first),
// connection-class and shutdown SQLSTATEs, timeouts, and a write refused
// as read-only (25006: a primary demoted to a standby by a failover,
// which the pool's connections still reach; nothing commits through it).
// A connection lost during COMMIT counts too: whether the transaction
// committed is unknown, and the caller answers as for any other outage
// (docs/operations.md).
func Unavailable(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || errors.Is(err, pgconn.ErrConnClosed) {
		return true
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" || pe.Code == "25006"
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return true
	}
	return pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded)
}

// DB is what a store method needs for its statements: a pool or a
// transaction (both satisfy it), so that the caller decides whether the
// statements join a larger transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Split separates the rows of a page query whose last column is the count
// of every row of the list (a window count, or 0 without one): it returns
// the rows and the count, read from the first row. C is the row type with
// the count (the row's struct embedded, then Total int64), so that
// pgx.RowToStructByPos reads the whole row.
func Split[C, T any](rows []C, split func(C) (T, int64)) ([]T, int64, error) {
	out := make([]T, len(rows))
	var total int64
	for i, r := range rows {
		var n int64
		out[i], n = split(r)
		if i == 0 {
			total = n
		}
	}
	return out, total, nil
}

// Count runs sql, a query of one row with one count column, for a page
// that came back empty after a cursor: the list's count rides on a page's
// rows (Split), so a page past the end (its later rows removed since the
// cursor was issued) has none to read it from. q needs only Query (a pool,
// a transaction, a connection).
func Count(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, sql string, args ...any) (int64, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
}
