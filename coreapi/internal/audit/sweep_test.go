package audit

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestSweep: the events older than the retention go, oldest first, more
// than one batch of them in one sweep; the newer ones, of every tenant,
// stay.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	var a, b string
	for _, id := range []*string{&a, &b} {
		if err := db.Pool.QueryRow(ctx, `INSERT INTO tenants (name) VALUES ('T') RETURNING id::text`).Scan(id); err != nil {
			t.Fatal(err)
		}
	}
	insert := func(tenant string, n int, age time.Duration) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, `
INSERT INTO audit_events (tenant_id, action, target_type, created_at)
SELECT $1, 'user.signed_in', 'user', now() - make_interval(secs => $3) FROM generate_series(1, $2)`, tenant, n, age.Seconds()); err != nil {
			t.Fatal(err)
		}
	}
	const keep = 30 * 24 * time.Hour
	insert(a, SweepBatch+7, keep+time.Hour) // old, more than one batch
	insert(b, 3, keep+24*time.Hour)         // old, another tenant
	insert(a, 5, keep-time.Hour)            // within the retention
	insert(b, 2, time.Minute)               // new
	n, err := Sweep(ctx, db.Pool, keep)
	if err != nil {
		t.Fatal(err)
	}
	if n != SweepBatch+10 {
		t.Errorf("swept %d, want %d", n, SweepBatch+10)
	}
	var left, old int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE created_at < now() - make_interval(secs => $1)) FROM audit_events`, keep.Seconds()).Scan(&left, &old); err != nil {
		t.Fatal(err)
	}
	if left != 7 || old != 0 {
		t.Errorf("%d events left (%d older than the retention), want 7 (0)", left, old)
	}
	if n, err := Sweep(ctx, db.Pool, keep); err != nil || n != 0 {
		t.Errorf("second sweep: %d, %v; want 0", n, err)
	}
}
