package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/migrations"
)

// lockWait is how `migrate up` waits for the locks its migrations take
// on a database that serves meanwhile.
type lockWait struct {
	// timeout is the lock_timeout of its connections, unless DATABASE_URL
	// sets one: how long the queries on a table queue behind a migration's
	// statement that waits for a lock on it.
	timeout time.Duration
	// pause and maxPause pace the attempts after a migration gave up
	// waiting (migrations.Retry).
	pause, maxPause time.Duration
}

// defaultLockWait: a statement waits at most 5 s for its lock, then the
// migration is tried again after 1 s, 2 s, 4 s, ... at most 30 s.
func defaultLockWait() lockWait {
	return lockWait{timeout: 5 * time.Second, pause: time.Second, maxPause: 30 * time.Second}
}

func migrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	return migrateWith(ctx, args, getenv, stdout, defaultLockWait())
}

// migrateWith is migrate with the waits for locks of `migrate up` given.
func migrateWith(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, lw lockWait) error {
	if len(args) == 0 {
		return usageErrorf("migrate: want up, down, status or addresses")
	}
	action := args[0]
	name := "migrate " + action
	if strings.HasPrefix(action, "-") {
		name = "migrate"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	all := fs.Bool("all", false, "with down: roll back every migration")
	switch action {
	case "-h", "-help", "--h", "--help":
		return parseFlags(fs, args[:1], stdout)
	case "up", "down", "status", "addresses":
	default:
		if strings.HasPrefix(action, "-") {
			// `migrate -all down` took "-all" for the action.
			return usageErrorf("migrate: the action comes first, then its flags (migrate down -all), got %q", action)
		}
		return usageErrorf("migrate: unknown action %q (want up, down, status or addresses)", action)
	}
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
	}
	// -all means something to down only; elsewhere it was ignored, and
	// `migrate status -all` or `migrate up -all` ran as if it meant
	// something.
	if flagSet(fs, "all") && action != "down" {
		return usageErrorf("migrate %s: -all applies to down only (migrate down -all rolls back every migration)", action)
	}
	url, err := config.DatabaseURLFrom(getenv)
	if err != nil {
		return err
	}
	// A database that does not answer ends the command (and the migrate
	// init container) instead of holding it for ever, as it does the
	// server's connections (pgtrace.DefaultConnectTimeout).
	cc, err := pgtrace.ParseConnConfig(url)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// What a migration reports (RAISE NOTICE or WARNING: rows it had to
	// leave for the operator) goes to the output, before the status.
	var mu sync.Mutex
	cc.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, "%s: %s\n", n.Severity, n.Message)
	}
	// A migration's ALTER TABLE that waits for its lock behind a long
	// transaction (a session idle in transaction, a long report, a request
	// of a pod still serving) holds every later query on that table in
	// the queue behind it: the API would stall for as long as that
	// transaction lasts. With a lock_timeout the migration gives up
	// instead: up tries it again after a pause (UpRetrying); down and
	// addresses, run by hand, end with an error that says so (lockGaveUp),
	// their transaction rolled back.
	if !setsLockTimeout(cc) {
		cc.RuntimeParams["lock_timeout"] = fmt.Sprintf("%dms", lw.timeout.Milliseconds())
	}
	db := stdlib.OpenDB(*cc)
	defer func(db *sql.DB) { _ = db.Close() }(db)
	switch action {
	case "up":
		retry := migrations.Retry{Pause: lw.pause, MaxPause: lw.maxPause, Waited: func(migration string, pause time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			if migration == "" {
				migration = "a statement"
			}
			fmt.Fprintf(stdout, "migrate up: %s waited longer than lock_timeout for a lock another session's transaction holds, and was rolled back; retrying in %s\n", migration, pause)
		}}
		if err := migrations.UpRetrying(ctx, db, retry); err != nil {
			return err
		}
	case "down":
		if err := migrations.Down(ctx, db, *all); err != nil {
			return lockGaveUp(name, err)
		}
	case "addresses":
		// Migration 00044's rewrite again: after the operator resolved a
		// row it left, and once after the rollout (pods of the previous
		// release store a domain as it was typed until they are replaced).
		if err := rewriteAddresses(ctx, db, stdout); err != nil {
			return lockGaveUp(name, err)
		}
	}
	return migrations.Status(ctx, db, stdout)
}

// setsLockTimeout reports whether the connection string sets lock_timeout,
// as a parameter of its own or in options (-c lock_timeout=...; also from
// PGOPTIONS).
func setsLockTimeout(cc *pgx.ConnConfig) bool {
	_, ok := cc.RuntimeParams["lock_timeout"]
	return ok || strings.Contains(cc.RuntimeParams["options"], "lock_timeout")
}

// lockGaveUp says of err, when a statement of cmd (migrate down, migrate
// addresses) gave up waiting for a lock after lock_timeout, what happened
// and what to do; other errors are returned as they are. Unlike up, these
// commands are run by hand and are not retried: the operator runs them
// again once the transaction that holds the lock has ended.
func lockGaveUp(cmd string, err error) error {
	migration, waited := migrations.LockWaited(err)
	if !waited {
		return err
	}
	if migration == "" {
		migration = "a statement"
	}
	return fmt.Errorf("%s: %s waited longer than lock_timeout for a lock another session's transaction holds, and its transaction was rolled back; "+
		"run the command again once that transaction has ended (pg_stat_activity lists it): %w", cmd, migration, err)
}

// rewriteAddresses runs migrations.RewriteAddresses in a transaction of its
// own and prints what it did; its warnings (the rows it left) are printed
// before, as a migration's are.
func rewriteAddresses(ctx context.Context, db *sql.DB, stdout io.Writer) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate addresses: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	rewritten, left, err := migrations.RewriteAddresses(ctx, tx)
	if err != nil {
		return fmt.Errorf("migrate addresses: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate addresses: %w", err)
	}
	fmt.Fprintf(stdout, "addresses: %d rewritten, %d left\n", rewritten, left)
	return nil
}
