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

// CaseMapping reports whether the database lowercases letters beyond
// ASCII (its LC_CTYPE maps Unicode case, as C.UTF-8 or en_US.UTF-8 do;
// "C" and "POSIX" lowercase ASCII only), with the LC_CTYPE it has. Email
// addresses are unique, and looked up, by lower() in the database, and
// coreapi decides in Go whether two are one the same way
// (mail.SameAddress, strings.ToLower): under an ASCII-only LC_CTYPE the
// two disagree on addresses that differ in the case of a non-ASCII
// letter, the database taking them for two accounts.
func CaseMapping(ctx context.Context, db Querier) (ok bool, ctype string, err error) {
	const q = `SELECT lower(U&'\00C4\0394') = U&'\00E4\03B4', current_setting('lc_ctype')`
	if err := db.QueryRow(ctx, q).Scan(&ok, &ctype); err != nil {
		return false, "", fmt.Errorf("check the database's case mapping: %w", err)
	}
	return ok, ctype, nil
}
