package dbtest

import (
	"context"
	"testing"

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
