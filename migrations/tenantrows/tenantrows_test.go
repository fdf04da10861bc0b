package tenantrows

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/migrations/dbsetup"
)

// TestSnapshot: a tenant's snapshot holds its own rows (the tenant's
// tables, its members' accounts), none of another tenant's, leaves the
// Churn tables out, and Diff names the table a change touched.
func TestSnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, dbURL, drop, err := dbsetup.Create(ctx, dbsetup.AdminURL(), "tenantrows")
	if err != nil {
		t.Fatal(err)
	}
	defer drop()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	const (
		tenantA = "00000000-0000-4000-8000-00000000000a"
		tenantB = "00000000-0000-4000-8000-00000000000b"
		userA   = "00000000-0000-4000-8000-0000000000a1"
		userB   = "00000000-0000-4000-8000-0000000000b1"
	)
	for _, q := range []string{
		`INSERT INTO tenants (id, name) VALUES ('` + tenantA + `', 'tenant-a'), ('` + tenantB + `', 'tenant-b')`,
		`INSERT INTO users (id, email) VALUES ('` + userA + `', 'a@example.com'), ('` + userB + `', 'b@example.com')`,
		`INSERT INTO memberships (tenant_id, user_id) VALUES ('` + tenantA + `', '` + userA + `'), ('` + tenantB + `', '` + userB + `')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	a, err := Snapshot(ctx, conn, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	for tbl, id := range map[string]string{"tenants": tenantA, "users": userA, "memberships": userA} {
		if !strings.Contains(a[tbl], id) {
			t.Errorf("snapshot of A: %s = %s, want A's row", tbl, a[tbl])
		}
	}
	for tbl, rows := range a {
		if strings.Contains(rows, tenantB) || strings.Contains(rows, userB) {
			t.Errorf("snapshot of A: %s holds B's row: %s", tbl, rows)
		}
	}
	for tbl := range Churn {
		if _, ok := a[tbl]; ok {
			t.Errorf("snapshot holds churn table %s", tbl)
		}
	}
	if d := Diff(a, a); d != "" {
		t.Errorf("Diff of a snapshot with itself: %q", d)
	}
	if _, err := conn.Exec(ctx, `UPDATE users SET email = 'a2@example.com' WHERE id = $1`, userA); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE users SET email = 'b2@example.com' WHERE id = $1`, userB); err != nil {
		t.Fatal(err)
	}
	after, err := Snapshot(ctx, conn, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(a, after); !strings.HasPrefix(d, "users: before ") || !strings.Contains(d, "a2@example.com") || strings.Contains(d, "b2@") {
		t.Errorf("Diff after A's user changed: %q, want the users table with A's new address only", d)
	}
}
