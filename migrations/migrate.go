package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// NewProvider returns a goose provider over the embedded migrations, and
// those written in Go (goMigrations), for a PostgreSQL database. Up and
// Down hold a session-level advisory lock (pg_advisory_lock, per database)
// while they run, so several `coreapi migrate up` started together (one
// init container per new pod) apply each migration once: the others wait,
// then find nothing pending.
func NewProvider(db *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 600))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, mustSub(), goose.WithLogger(goose.NopLogger()),
		goose.WithSessionLocker(locker), goose.WithGoMigrations(goMigrations()...))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// Up applies every pending migration. It first checks what migration
// 00012 needs of the server, so that a database it cannot run on is left
// as it was rather than migrated up to 00011 (see checkServer).
func Up(ctx context.Context, db *sql.DB) error {
	p, err := NewProvider(db)
	if err != nil {
		return err
	}
	if err := checkServer(ctx, db); err != nil {
		return fmt.Errorf("migrations up: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrations up: %w", err)
	}
	return nil
}

// Retry paces UpRetrying's attempts after a migration gave up waiting for
// a lock.
type Retry struct {
	// Pause is the first pause; each next one is twice the one before, up
	// to MaxPause.
	Pause, MaxPause time.Duration
	// Waited, if set, is told before each pause which migration waited
	// (its file name, or its version and name for one in Go) and for how
	// long the next attempt is put off.
	Waited func(migration string, pause time.Duration)
}

// UpRetrying is Up for a database that serves while it is migrated, on
// connections with a lock_timeout. A migration whose statement waited for
// a lock longer than that (another session's long transaction holds the
// table) fails with lock_not_available and is rolled back: goose applies
// each migration, those in Go too (RunTx), in a transaction of its own,
// and ends Up there, which releases its advisory lock. UpRetrying then
// pauses, the queries that queued behind the waiting statement going
// through meanwhile (and another migrate up taking its turn), and runs Up
// again, which applies what is still pending. It does so until Up
// succeeds, fails otherwise, or ctx ends.
func UpRetrying(ctx context.Context, db *sql.DB, r Retry) error {
	pause := r.Pause
	for {
		err := Up(ctx, db)
		migration, waited := LockWaited(err)
		if !waited {
			return err
		}
		if r.Waited != nil {
			r.Waited(migration, pause)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w; not retried: %w", err, context.Cause(ctx))
		case <-t.C:
		}
		pause = min(2*pause, r.MaxPause)
	}
}

// LockWaited reports whether err is a statement's wait for a lock given up
// after lock_timeout (55P03, lock_not_available), and names the migration
// it was in ("" when it was none).
func LockWaited(err error) (migration string, waited bool) {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "55P03" {
		return "", false
	}
	var partial *goose.PartialError
	if errors.As(err, &partial) && partial.Failed != nil && partial.Failed.Source != nil {
		src := partial.Failed.Source
		if src.Type == goose.TypeGo {
			return fmt.Sprintf("%05d (Go) %s", src.Version, goMigrationName(src.Version)), true
		}
		return filepath.Base(src.Path), true
	}
	return "", true
}

// nfcVersion is migration 00012, the first that needs PostgreSQL 13 or
// later and a UTF8 database (normalize() and IS NFC NORMALIZED).
const nfcVersion = 12

// checkServer refuses, with migration 00012's own words, a server or
// database 00012 would stop on, while the schema is still behind it. goose
// applies each migration in a transaction of its own, so the migrations
// before 00012 would be applied and kept: from the first release's schema,
// 00003 among them, which drops the table the first release's pods still
// read for every sign-in of an unknown address, while the new pods, their
// init container failing, never start.
func checkServer(ctx context.Context, db *sql.DB) error {
	var known bool
	if err := db.QueryRowContext(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&known); err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	if known {
		var v int64
		if err := db.QueryRowContext(ctx, VersionQuery).Scan(&v); err != nil {
			return fmt.Errorf("schema version: %w", err)
		}
		if v >= nfcVersion {
			return nil
		}
	}
	const q = `SELECT current_setting('server_version_num')::int, current_setting('server_version'), current_setting('server_encoding')`
	var (
		num               int
		version, encoding string
	)
	if err := db.QueryRowContext(ctx, q).Scan(&num, &version, &encoding); err != nil {
		return fmt.Errorf("server version: %w", err)
	}
	if num < 130000 {
		return fmt.Errorf("migration 00012 cannot run, nothing was applied: Tollgate needs PostgreSQL 13 or later (Unicode normalization of email addresses); this server is %s", version)
	}
	if encoding != "UTF8" {
		return fmt.Errorf("migration 00012 cannot run, nothing was applied: Tollgate needs a UTF8 database (Unicode normalization of email addresses); this one is %s", encoding)
	}
	return nil
}

// Down rolls back the most recent migration; with all set, every one.
func Down(ctx context.Context, db *sql.DB, all bool) error {
	p, err := NewProvider(db)
	if err != nil {
		return err
	}
	if all {
		_, err = p.DownTo(ctx, 0)
	} else {
		_, err = p.Down(ctx)
	}
	if err != nil {
		return fmt.Errorf("migrations down: %w", err)
	}
	return nil
}

// Status writes one line per migration (version, state, applied time) to w.
func Status(ctx context.Context, db *sql.DB, w io.Writer) error {
	p, err := NewProvider(db)
	if err != nil {
		return err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return fmt.Errorf("migrations status: %w", err)
	}
	for _, s := range st {
		applied := "-"
		if !s.AppliedAt.IsZero() {
			applied = s.AppliedAt.UTC().Format("2006-01-02T15:04:05Z")
		}
		path := s.Source.Path
		if path == "" && s.Source.Type == goose.TypeGo {
			path = "(Go) " + goMigrationName(s.Source.Version)
		}
		fmt.Fprintf(w, "%05d  %-8s  %s  %s\n", s.Source.Version, s.State, applied, path)
	}
	return nil
}

// Latest is the highest migration version, of the embedded SQL files and
// of the migrations in Go: the schema this build of coreapi needs.
func Latest() int64 {
	entries, err := fs.ReadDir(mustSub(), ".")
	if err != nil {
		panic(err) // the embedded directory always reads
	}
	var v int64
	for _, e := range entries {
		n, err := goose.NumericComponent(e.Name())
		if err == nil && n > v {
			v = n
		}
	}
	for _, m := range goMigrations() {
		v = max(v, m.Version)
	}
	return v
}

// VersionQuery returns the version of the schema a database is at (0 when
// nothing is applied); it fails when the version table does not exist yet.
const VersionQuery = `SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied`
