// Package schema compares the database's schema version with the one this
// build of coreapi needs (the newest embedded migration). `serve` refuses
// to start on an older schema and /readyz reports it, so a pod never takes
// traffic it would answer with 500s.
package schema

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-auth/tollgate/migrations"
)

// ErrOutdated: the database schema is older than the code needs (or not
// there at all). The error text says what to run.
var ErrOutdated = errors.New("database schema is older than this coreapi needs")

// Querier is what Check needs: a pool or a connection.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Needed is the schema version this build needs.
func Needed() int64 { return migrations.Latest() }

// Check returns nil when the schema is at least Needed(), an error
// wrapping ErrOutdated when it is older or absent, and another error when
// the database cannot be asked.
func Check(ctx context.Context, db Querier) error {
	var v int64
	err := db.QueryRow(ctx, migrations.VersionQuery).Scan(&v)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // no version table: never migrated
		v, err = 0, nil
	}
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if need := Needed(); v < need {
		return fmt.Errorf("%w: it is at version %d, this build needs %d; run `coreapi migrate up` against the same DATABASE_URL",
			ErrOutdated, v, need)
	}
	return nil
}
