package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-auth/tollgate/migrations"
)

// reservedDatabases are never written to by the stack: they belong to the
// server (postgres is its default maintenance database).
var reservedDatabases = []string{"postgres", "template0", "template1"}

// databaseURL is serverURL (any database on the server the stack found)
// with its database replaced by name. Reserved names are refused.
func databaseURL(serverURL, name string) (string, error) {
	if name == "" {
		return "", errors.New("empty database name")
	}
	for _, r := range reservedDatabases {
		if strings.EqualFold(name, r) {
			return "", fmt.Errorf("database %q belongs to the server; the stack uses a database of its own (-database)", name)
		}
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", fmt.Errorf("DATABASE_URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("DATABASE_URL: want a postgres:// URL, got scheme %q", u.Scheme)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// permanentDBError reports whether err is an answer of the server that
// waiting cannot change: authentication failed, unknown role or database,
// no permission to connect. A refused or dropped connection is not: the
// server may still be starting.
func permanentDBError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch {
	case strings.HasPrefix(pe.Code, "28"): // invalid_authorization_specification, invalid_password
		return true
	case pe.Code == "3D000": // invalid_catalog_name: the database does not exist
		return true
	case pe.Code == "42501": // insufficient_privilege
		return true
	}
	return false
}

type dbWaitKey struct{}

// withDBWaitNote returns ctx carrying note, which waitDB calls once, with
// the error and how long it will keep trying, when the database does not
// answer at the first attempt: a server that is down, or a DATABASE_URL
// naming the wrong host or port, otherwise kept `make run` silent for the
// whole -ready-timeout.
func withDBWaitNote(ctx context.Context, note func(err error, wait time.Duration)) context.Context {
	return context.WithValue(ctx, dbWaitKey{}, note)
}

// waitDB calls try until it succeeds, fails permanently (at once, with the
// server's message), ctx ends or wait passes (with the last error).
func waitDB(ctx context.Context, wait time.Duration, try func(context.Context) error) error {
	note, _ := ctx.Value(dbWaitKey{}).(func(error, time.Duration))
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		err := try(ctx)
		if err == nil {
			return nil
		}
		if permanentDBError(err) {
			return fmt.Errorf("database refused: %w", err)
		}
		if note != nil && ctx.Err() == nil {
			note(err, wait)
			note = nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("database unreachable: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// withServer runs try on a connection to the server of serverURL, each
// attempt within timeout, waiting up to wait (waitDB) for the server to
// accept it.
func withServer(ctx context.Context, serverURL string, wait, timeout time.Duration, try func(context.Context, *pgx.Conn) error) error {
	return waitDB(ctx, wait, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		conn, err := pgx.Connect(cctx, serverURL)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		return try(cctx, conn)
	})
}

// ensureDatabase creates database name on the server of serverURL unless
// it exists, connecting to serverURL's own database for that, and returns
// the URL of name.
func ensureDatabase(ctx context.Context, serverURL, name string, wait time.Duration) (string, bool, error) {
	target, err := databaseURL(serverURL, name)
	if err != nil {
		return "", false, err
	}
	var created bool
	err = withServer(ctx, serverURL, wait, 5*time.Second, func(cctx context.Context, conn *pgx.Conn) error {
		var exists bool
		if err := conn.QueryRow(cctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		_, err := conn.Exec(cctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P04" { // duplicate_database: created meanwhile
			return nil
		}
		if err == nil {
			created = true
		}
		return err
	})
	if err != nil {
		return "", false, err
	}
	return target, created, nil
}

// dropDatabase removes database name from the server of serverURL, if it
// exists (for `make reset`).
func dropDatabase(ctx context.Context, serverURL, name string, wait time.Duration) error {
	if _, err := databaseURL(serverURL, name); err != nil {
		return err
	}
	return withServer(ctx, serverURL, wait, 30*time.Second, func(cctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(cctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		return err
	})
}

// databaseSessions is the number of sessions connected to database name
// on the server of serverURL (0 when it does not exist).
func databaseSessions(ctx context.Context, serverURL, name string, wait time.Duration) (int, error) {
	var n int
	err := withServer(ctx, serverURL, wait, 10*time.Second, func(cctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(cctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name).Scan(&n)
	})
	return n, err
}

// migrate applies pending migrations, waiting up to wait for the database
// to accept connections; a permanent error fails at once.
func migrate(ctx context.Context, dbURL string, wait time.Duration) error {
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	if err := waitDB(ctx, wait, db.PingContext); err != nil {
		return err
	}
	return migrations.Up(ctx, db)
}
