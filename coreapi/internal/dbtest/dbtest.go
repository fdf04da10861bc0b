// Package dbtest gives tests a freshly migrated PostgreSQL database of their
// own, reached over TCP, and drops it afterwards.
//
// The server comes from $DATABASE_URL (set by scripts/with-postgres.sh under
// `make test`), else postgres://postgres@127.0.0.1:5432/postgres. A server
// that cannot be reached fails the test: it is never skipped.
package dbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate-auth/tollgate/migrations"
)

// DefaultURL is used when DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// AdminURL is the connection string of the server tests create databases on.
func AdminURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// DB is one test database.
type DB struct {
	Name string
	URL  string // connection string for this database
	Pool *pgxpool.Pool
}

// New creates a database named after the test, applies every migration,
// opens a pool on it, and registers cleanup that closes the pool and drops
// the database.
func New(t testing.TB) *DB {
	t.Helper()
	db, cleanup, err := Create(context.Background(), "t")
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	t.Cleanup(cleanup)
	return db
}

// Create is New for callers without a testing.TB (TestMain): it returns a
// cleanup function that the caller must run.
func Create(ctx context.Context, prefix string) (*DB, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s (set DATABASE_URL or run tests through `make test`): %w", redact(AdminURL()), err)
	}
	defer admin.Close(ctx)

	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := prefix + "_" + hex.EncodeToString(rnd[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, nil, fmt.Errorf("create database: %w", err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, AdminURL())
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}

	u, err := url.Parse(AdminURL())
	if err != nil {
		drop()
		return nil, nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	u.Path = "/" + name
	dbURL := u.String()

	if err := Migrate(ctx, dbURL); err != nil {
		drop()
		return nil, nil, err
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		drop()
		return nil, nil, fmt.Errorf("open pool: %w", err)
	}
	return &DB{Name: name, URL: dbURL, Pool: pool}, func() { pool.Close(); drop() }, nil
}

// Migrate applies every migration to the database at dbURL.
func Migrate(ctx context.Context, dbURL string) error {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("parse url: %w", err)
	}
	sqldb := stdlib.OpenDB(*cfg)
	defer func(db *sql.DB) { _ = db.Close() }(sqldb)
	if err := migrations.Up(ctx, sqldb); err != nil {
		return err
	}
	return nil
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}
