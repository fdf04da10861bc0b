package main

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/migrations/dbsetup"
)

// TestSeedMembersLeavesTheTablesVacuumed: the seeded members hold the
// member role, and the member list's tables are vacuumed afterwards (every
// page all-visible), as autovacuum would leave them, not full of the dead
// first versions the role_names trigger leaves behind.
func TestSeedMembersLeavesTheTablesVacuumed(t *testing.T) {
	ctx := context.Background()
	_, dbURL, drop, err := dbsetup.Create(ctx, dbsetup.AdminURL(), "seed")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var tenant string
	if err := pool.QueryRow(ctx, `
WITH t AS (INSERT INTO tenants (name) VALUES ('Seed') RETURNING id)
INSERT INTO roles (tenant_id, name, builtin) SELECT id, 'member', true FROM t RETURNING tenant_id::text`).Scan(&tenant); err != nil {
		t.Fatal(err)
	}
	ids, err := seedMembers(ctx, pool, 500, tenant, "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 500 {
		t.Fatalf("%d members, want 500", len(ids))
	}
	var withRole int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM memberships WHERE tenant_id = $1 AND role_names = '{member}'`, tenant).Scan(&withRole); err != nil {
		t.Fatal(err)
	}
	if withRole != 500 {
		t.Errorf("%d memberships with role_names {member}, want 500", withRole)
	}
	for _, table := range []string{"memberships", "users"} {
		var pages, visible int
		if err := pool.QueryRow(ctx, `SELECT relpages, relallvisible FROM pg_class WHERE oid = $1::regclass`, table).Scan(&pages, &visible); err != nil {
			t.Fatal(err)
		}
		if pages == 0 || visible != pages {
			t.Errorf("%s: %d of %d pages all-visible, want every one (vacuumed)", table, visible, pages)
		}
	}
}
