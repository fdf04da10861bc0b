package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/migrations"
)

func migrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("migrate: want up, down, status or addresses")
	}
	action := args[0]
	fs := flag.NewFlagSet("migrate "+action, flag.ContinueOnError)
	all := fs.Bool("all", false, "with down: roll back every migration")
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
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
	db := stdlib.OpenDB(*cc)
	defer func(db *sql.DB) { _ = db.Close() }(db)
	switch action {
	case "up":
		if err := migrations.Up(ctx, db); err != nil {
			return err
		}
	case "down":
		if err := migrations.Down(ctx, db, *all); err != nil {
			return err
		}
	case "addresses":
		// Migration 00044's rewrite again: after the operator resolved a
		// row it left, and once after the rollout (pods of the previous
		// release store a domain as it was typed until they are replaced).
		if err := rewriteAddresses(ctx, db, stdout); err != nil {
			return err
		}
	case "status":
	default:
		return fmt.Errorf("migrate: unknown action %q (want up, down, status or addresses)", action)
	}
	return migrations.Status(ctx, db, stdout)
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
