package audit

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestAuditListingWindow pins the window GET /audit-events documents: two
// changes run at once, the one whose event got the higher id commits
// first and is listed; the other's event then appears below it. A poller
// that asks only for what is newer than the newest event it had misses it;
// one that reads on down to a margin of created_at before that event, and
// skips the ids it has seen, as the API description says, gets it.
func TestAuditListingWindow(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	var tenant string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO tenants (name) VALUES ('T') RETURNING id::text`).Scan(&tenant); err != nil {
		t.Fatal(err)
	}
	begin := func() pgx.Tx {
		t.Helper()
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		return tx
	}
	write := func(tx pgx.Tx, target string) {
		t.Helper()
		if err := Write(ctx, tx, Event{TenantID: tenant, Action: ActionRoleCreated, TargetType: "role", TargetID: target}); err != nil {
			t.Fatal(err)
		}
	}
	store := NewStore(db.Pool)
	list := func() []Record {
		t.Helper()
		got, _, err := store.List(ctx, ListParams{TenantID: tenant, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	slow, fast := begin(), begin()
	write(slow, "slow") // the lower id
	write(fast, "fast")
	if err := fast.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	first := list()
	if len(first) != 1 || first[0].TargetID != "fast" {
		t.Fatalf("first poll = %v, want the committed event only", first)
	}
	newest := first[0]
	seen := []int64{newest.ID}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	var newer, caught []Record
	for _, r := range list() {
		if r.ID > newest.ID {
			newer = append(newer, r)
		}
		if r.CreatedAt.Before(newest.CreatedAt.Add(-time.Minute)) {
			break
		}
		if !slices.Contains(seen, r.ID) {
			caught = append(caught, r)
		}
	}
	if len(newer) != 0 {
		t.Fatalf("events above the newest one listed: %v, want none (the late one has a lower id)", newer)
	}
	if len(caught) != 1 || caught[0].TargetID != "slow" || caught[0].ID > newest.ID {
		t.Fatalf("read down to a minute before the newest: %v, want the late event, below it", caught)
	}
}
