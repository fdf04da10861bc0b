package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/migrations"
)

func migrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("migrate: want up, down or status")
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
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// A database that does not answer ends the command (and the migrate
	// init container) instead of holding it for ever, as it does the
	// server's connections (pgtrace.DefaultConnectTimeout).
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = pgtrace.DefaultConnectTimeout
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
	case "status":
	default:
		return fmt.Errorf("migrate: unknown action %q (want up, down or status)", action)
	}
	return migrations.Status(ctx, db, stdout)
}
