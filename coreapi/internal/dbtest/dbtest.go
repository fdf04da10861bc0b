// Package dbtest gives tests a freshly migrated PostgreSQL database of their
// own, reached over TCP, and drops it afterwards.
//
// The server comes from $DATABASE_URL (set by scripts/with-postgres.sh under
// `make test`), else postgres://postgres@127.0.0.1:5432/postgres. A server
// that cannot be reached fails the test: it is never skipped.
package dbtest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/migrations/dbsetup"
)

// DefaultURL is used when DATABASE_URL is unset.
const DefaultURL = dbsetup.DefaultURL

// AdminURL is the connection string of the server tests create databases on.
func AdminURL() string { return dbsetup.AdminURL() }

// DB is one test database.
type DB struct {
	Name string
	URL  string // connection string for this database
	Pool *pgxpool.Pool
}

// New creates a database with every migration applied (a copy of the
// server's template of the migrations, dbsetup.Create), opens a pool on
// it, and registers cleanup that closes the pool and starts the database's
// drop.
func New(t testing.TB) *DB {
	t.Helper()
	ctx := context.Background()
	d, _, err := Create(ctx, "t")
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	// Not Create's cleanup, which waits for the drop: the test does not
	// (dbsetup.StartDrop).
	t.Cleanup(func() {
		d.Pool.Close()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := dbsetup.StartDrop(ctx, AdminURL(), d.Name); err != nil {
			t.Logf("dbtest: %v", err)
		}
	})
	return d
}

// Create is New for callers without a testing.TB (TestMain): it returns a
// cleanup function that the caller must run.
func Create(ctx context.Context, prefix string) (*DB, func(), error) {
	name, dbURL, drop, err := dbsetup.Create(ctx, AdminURL(), prefix)
	if err != nil {
		return nil, nil, err
	}
	if err := noFlushWait(ctx, dbURL, name); err != nil {
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

// noFlushWait has every later connection to the database name at dbURL
// commit without waiting for the write-ahead log's flush to disk
// (synchronous_commit off): a test's database does not outlive the test,
// let alone a crash of the server, and that wait at every commit was much
// of a test's time on a server busy with other tests' writes.
func noFlushWait(ctx context.Context, dbURL, name string) error {
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" SET synchronous_commit = off"); err != nil {
		return fmt.Errorf("synchronous_commit: %w", err)
	}
	return nil
}

// Hold runs sql (a locking statement: SELECT ... FOR UPDATE, LOCK TABLE,
// an UPDATE) in a transaction it leaves open, for a test to race work
// against what it holds; the test commits or rolls it back, or it is
// rolled back when the test ends.
func (d *DB) Hold(t testing.TB, sql string, args ...any) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := d.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return tx
}

// LockWaiters is how many sessions of the database wait on a lock while
// running a statement whose text contains query ("": any statement).
func (d *DB) LockWaiters(t testing.TB, query string) int {
	t.Helper()
	const q = `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
	AND strpos(query, $1) > 0`
	var n int
	if err := d.Pool.QueryRow(context.Background(), q, query).Scan(&n); err != nil {
		t.Fatalf("count lock waiters: %v", err)
	}
	return n
}

// WaitForLockWaiters waits until at least n sessions of the database wait
// on a lock (work parked behind a row or table a test transaction holds),
// failing the test after 10 s.
func (d *DB) WaitForLockWaiters(t testing.TB, n int) {
	t.Helper()
	d.WaitForLockWaitersOn(t, "", n)
}

// WaitForLockWaitersOn is WaitForLockWaiters counting only the sessions
// whose statement contains query.
func (d *DB) WaitForLockWaitersOn(t testing.TB, query string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := d.LockWaiters(t, query)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions wait on a lock running %q, want %d", got, query, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// AnsweredOrWaiting runs send on a goroutine and returns once it has
// returned or a session of d's database waits on a lock: a request that
// a test transaction's lock holds back if, and only if, the code takes
// that lock. The returned function gives send's result, waiting for it
// (after the test released what it holds).
func AnsweredOrWaiting[T any](t testing.TB, d *DB, send func() T) func() T {
	t.Helper()
	return AnsweredOrWaitingFor(t, d, 1, send)
}

// AnsweredOrWaitingFor is AnsweredOrWaiting returning once send has
// returned or at least n sessions wait on a lock (for a test that has
// queued n-1 behind what it holds already), failing the test when
// neither happens within 10 s.
func AnsweredOrWaitingFor[T any](t testing.TB, d *DB, n int, send func() T) func() T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- send() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case r := <-done:
			return func() T { return r }
		default:
		}
		if d.LockWaiters(t, "") >= n {
			return func() T { return <-done }
		}
		if time.Now().After(deadline) {
			t.Fatalf("neither answered nor waiting on a lock (%d sessions wait, want %d)", d.LockWaiters(t, ""), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// QueueBehindUser holds user userID's row (FOR UPDATE) in a transaction of
// its own, starts each of sends on a goroutine, the next only once one
// more session waits on a lock (so they queue for the row in that order,
// each having done what it does before it takes the row), then commits
// and waits for them all: requests that take the same rows in different
// orders meet as they would in the worst interleaving, and a deadlock
// between them shows as an error of one.
func (d *DB) QueueBehindUser(t testing.TB, userID string, sends ...func()) {
	t.Helper()
	ctx := context.Background()
	hold, err := d.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hold.Rollback(ctx) }()
	if _, err := hold.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, userID); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, send := range sends {
		wg.Go(send)
		d.WaitForLockWaiters(t, i+1)
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// Plan returns the plan PostgreSQL makes for the statement q with args
// (EXPLAIN), one line a node: what a test of an index's use reads.
func (d *DB) Plan(t testing.TB, q string, args ...any) string {
	t.Helper()
	rows, err := d.Pool.Query(context.Background(), "EXPLAIN "+q, args...)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	return strings.Join(lines, "\n")
}

// DeletesPerTransaction records, from now on, how many rows of table each
// transaction deletes (a statement-level trigger reading the statement's
// deleted rows), and returns a function that reports the most rows one
// transaction deleted and how many transactions deleted any: a sweep over
// more rows than its batch must not delete them all in one.
func (d *DB) DeletesPerTransaction(t testing.TB, table string) func() (most, transactions int) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS dbtest_deletes (xid bigint NOT NULL, tbl text NOT NULL, n bigint NOT NULL)`,
		`CREATE OR REPLACE FUNCTION dbtest_count_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dbtest_deletes SELECT txid_current(), TG_TABLE_NAME, count(*) FROM gone;
    RETURN NULL;
END $$`,
		`CREATE TRIGGER dbtest_count_deletes AFTER DELETE ON ` + pgx.Identifier{table}.Sanitize() +
			` REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION dbtest_count_deletes()`,
	} {
		if _, err := d.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("count deletes of %s: %v", table, err)
		}
	}
	return func() (most, transactions int) {
		t.Helper()
		const q = `
SELECT coalesce(max(n), 0), count(*)
FROM (SELECT sum(n) AS n FROM dbtest_deletes WHERE tbl = $1 GROUP BY xid HAVING sum(n) > 0) per`
		if err := d.Pool.QueryRow(ctx, q, table).Scan(&most, &transactions); err != nil {
			t.Fatalf("deletes of %s per transaction: %v", table, err)
		}
		return most, transactions
	}
}

// SeedMailBacklog fills mail_queue with n mails still to go, each with a
// link's token (verification, reset and invitation mails in turn, each to
// its own address), and analyzes the table, so that a plan taken next is
// the one a queue that long during an SMTP outage would get.
func (d *DB) SeedMailBacklog(t testing.TB, n int) {
	t.Helper()
	ctx := context.Background()
	if _, err := d.Pool.Exec(ctx, `
INSERT INTO mail_queue (kind, to_address, token)
SELECT (ARRAY['verify_email', 'password_reset', 'invitation'])[i % 3 + 1], 'user' || i || '@example.com', md5(i::text)
FROM generate_series(1, $1::int) i`, n); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool.Exec(ctx, `ANALYZE mail_queue`); err != nil {
		t.Fatal(err)
	}
}
