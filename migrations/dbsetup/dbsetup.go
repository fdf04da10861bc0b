// Package dbsetup creates a database of its own on a PostgreSQL server,
// applies every migration, and drops it afterwards: the one database set-up
// of coreapi's tests (coreapi/internal/dbtest) and of the load harness
// (deploy/loadtest).
package dbsetup

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate-auth/tollgate/migrations"
)

// DefaultURL is used when DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// AdminURL is the connection string of the server databases are created
// on: $DATABASE_URL, else DefaultURL.
func AdminURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Create creates a database named prefix_<random hex> on the server at
// adminURL and applies every migration. It returns the database's name,
// its connection string and the function that drops it (the caller runs
// it when done, after closing its connections).
func Create(ctx context.Context, adminURL, prefix string) (name, dbURL string, drop func(), err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", "", nil, fmt.Errorf("connect to %s (set DATABASE_URL, or run through `make test`): %w", Redact(adminURL), err)
	}
	defer admin.Close(ctx)

	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name = prefix + "_" + hex.EncodeToString(rnd[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", "", nil, fmt.Errorf("create database: %w", err)
	}
	drop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}

	u, err := url.Parse(adminURL)
	if err != nil {
		drop()
		return "", "", nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	u.Path = "/" + name
	dbURL = u.String()
	if err := Migrate(ctx, dbURL); err != nil {
		drop()
		return "", "", nil, err
	}
	return name, dbURL, drop, nil
}

// Migrate applies every migration to the database at dbURL.
func Migrate(ctx context.Context, dbURL string) error {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("parse url: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer func(db *sql.DB) { _ = db.Close() }(db)
	return migrations.Up(ctx, db)
}

// Redact hides the password of a connection string.
func Redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}
