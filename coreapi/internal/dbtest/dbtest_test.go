package dbtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestCreateMigratesAndDrops(t *testing.T) {
	ctx := context.Background()
	db, cleanup, err := Create(ctx, "dbtest")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM tenants").Scan(&n); err != nil {
		t.Fatalf("migrated schema missing: %v", err)
	}
	cleanup()

	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db.Name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s still exists after cleanup", db.Name)
	}
}

// A test does not wait for its database's drop, which forces a checkpoint
// (seconds on a server busy with other tests' writes), yet the database
// goes once the drop can run. Here a transaction holds the database
// against the drop until the test has ended.
func TestNewDropsWithoutWaiting(t *testing.T) {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var name string
	var hold pgx.Tx
	start := time.Now()
	t.Run("test", func(t *testing.T) {
		name = New(t).Name
		if hold, err = admin.Begin(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := hold.Exec(ctx, "COMMENT ON DATABASE "+pgx.Identifier{name}.Sanitize()+" IS 'held'"); err != nil {
			t.Fatal(err)
		}
	})
	took := time.Since(start)
	if hold == nil {
		t.FailNow()
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if took > 10*time.Second {
		t.Errorf("the test took %v: its end waited for its database's drop", took)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var exists bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if !exists {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("database %s still exists 30 s after its test", name)
		}
	}
}

// A test's database commits without waiting for the server's disk: it
// does not outlive the test, let alone a crash of the server, and a wait
// for the write-ahead log's flush at every commit was much of a test's
// time on a server busy with other tests' writes. Every connection to it
// has the setting, the server's own pools' too.
func TestNewCommitsWithoutWaitingForTheDisk(t *testing.T) {
	ctx := context.Background()
	db := New(t)
	c, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for _, q := range []func() pgx.Row{
		func() pgx.Row { return db.Pool.QueryRow(ctx, `SHOW synchronous_commit`) },
		func() pgx.Row { return c.QueryRow(ctx, `SHOW synchronous_commit`) },
	} {
		var got string
		if err := q().Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != "off" {
			t.Errorf("synchronous_commit = %s, want off", got)
		}
	}
}
