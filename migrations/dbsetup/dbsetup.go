// Package dbsetup creates a database of its own on a PostgreSQL server,
// with every migration applied (copied from a template database migrated
// once per server and set of migrations), and drops it afterwards: the one
// database set-up of coreapi's tests (coreapi/internal/dbtest) and of the
// load harness (deploy/loadtest).
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
	"github.com/jackc/pgx/v5/pgconn"
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
// adminURL, with every migration applied: a copy of the server's template
// database of this build's migrations (TemplateName), which the first
// Create of the server builds (see ensureTemplate). Copying takes a
// fraction of the time that applying every migration took, which each
// test that wanted a database of its own spent. It returns the database's
// name, its connection string and the function that drops it (the caller
// runs it when done, after closing its connections).
func Create(ctx context.Context, adminURL, prefix string) (name, dbURL string, drop func(), err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", "", nil, fmt.Errorf("connect to %s (set DATABASE_URL, or run through `make test`): %w", Redact(adminURL), err)
	}
	defer admin.Close(ctx)
	if _, err := url.Parse(adminURL); err != nil {
		return "", "", nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	tmpl := TemplateName()
	if err := ensureTemplate(ctx, admin, adminURL, tmpl); err != nil {
		return "", "", nil, err
	}

	name = prefix + "_" + randomHex()
	q := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE " + pgx.Identifier{tmpl}.Sanitize()
	if _, err := admin.Exec(ctx, q); err != nil {
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
	return name, databaseURL(adminURL, name), drop, nil
}

// StartDrop sends DROP DATABASE name to the server at adminURL and returns
// once the server has it, without waiting for the drop to end (its answer
// is read on another goroutine). PostgreSQL forces a checkpoint for every
// dropped database, seconds on a server busy with other tests' writes,
// which a test that only wants its database gone spent waiting. The
// server ends the drop even when this process exits first: it reads the
// statement before the connection's end and looks at the client again
// only to answer.
func StartDrop(ctx context.Context, adminURL, name string) error {
	c, err := pgconn.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to drop %s: %w", name, err)
	}
	// Exec has sent the statement when it returns; ReadAll waits for
	// its answer.
	res := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	go func() {
		_, _ = res.ReadAll()
		_ = c.Close(context.Background())
	}()
	return nil
}

// templatePrefix begins the names of the template databases, one per set
// of migrations (migrations.Fingerprint), and buildPrefix those of the
// databases a template is migrated in before it takes its name.
const (
	templatePrefix = "tollgate_template_"
	buildPrefix    = "tollgate_template_build_"
)

// templateLock is the advisory lock (on the admin URL's database) that
// whoever builds a template holds, so that a server's packages, tested at
// once, build it once.
const templateLock int64 = 0x746f6c6c67617465 // "tollgate"

// TemplateName is the name of the template database of this build's
// migrations on any server. A template of other migrations (another
// checkout's, an earlier commit's) has another name, and stays on the
// server for the tests that use it: drop the tollgate_template_ databases
// when no test runs to reclaim their space.
func TemplateName() string { return templatePrefix + migrations.Fingerprint()[:16] }

// ensureTemplate makes sure the server has the template database tmpl.
// Built, under templateLock, in a database of another name (buildPrefix)
// that takes tmpl's only once migrated, marked a template and closed to
// connections (a session open on a template makes every copy of it fail,
// and one that wrote to it would write into every later copy), tmpl is
// complete whenever it exists: a build killed half-way leaves a build
// database, which the next build drops.
func ensureTemplate(ctx context.Context, admin *pgx.Conn, adminURL, tmpl string) error {
	exists := func() (bool, error) {
		var ok bool
		err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, tmpl).Scan(&ok)
		if err != nil {
			return false, fmt.Errorf("look up template database: %w", err)
		}
		return ok, nil
	}
	if ok, err := exists(); err != nil || ok {
		return err
	}
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock($1)`, templateLock); err != nil {
		return fmt.Errorf("lock template build: %w", err)
	}
	defer func() { _, _ = admin.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, templateLock) }()
	if ok, err := exists(); err != nil || ok {
		return err
	}
	// Under the lock no build is under way: a build database is a killed one's.
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, buildPrefix)
	if err != nil {
		return fmt.Errorf("list template builds: %w", err)
	}
	stale, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list template builds: %w", err)
	}
	for _, db := range stale {
		if err := dropTemplate(ctx, admin, db); err != nil {
			return fmt.Errorf("drop stale template build %s: %w", db, err)
		}
	}

	build := buildPrefix + randomHex()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{build}.Sanitize()); err != nil {
		return fmt.Errorf("create template database: %w", err)
	}
	err = Migrate(ctx, databaseURL(adminURL, build))
	if err == nil {
		_, err = admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{build}.Sanitize()+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
	}
	if err == nil {
		_, err = admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{build}.Sanitize()+" RENAME TO "+pgx.Identifier{tmpl}.Sanitize())
	}
	if err != nil {
		_ = dropTemplate(context.WithoutCancel(ctx), admin, build)
		return fmt.Errorf("template database: %w", err)
	}
	return nil
}

// dropTemplate drops the database name, a template or not.
func dropTemplate(ctx context.Context, admin *pgx.Conn, name string) error {
	db := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" WITH IS_TEMPLATE false"); err != nil {
		return err
	}
	_, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	return err
}

// databaseURL is adminURL naming the database name instead of its own.
func databaseURL(adminURL, name string) string {
	u, _ := url.Parse(adminURL) // parsed by Create already
	u.Path = "/" + name
	return u.String()
}

func randomHex() string {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return hex.EncodeToString(rnd[:])
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
