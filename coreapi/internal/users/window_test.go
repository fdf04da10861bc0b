package users

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestMemberListingWindow pins the window GET /users documents: members
// are ordered by the membership's created_at, the start of the
// transaction that added it, and listed once it commits. Two members are
// added at once; the one whose transaction started later adds its member
// and commits first and is listed, and the other then appears before it. A poller that goes on
// from its last cursor misses it; one that re-reads from the cursor of a
// page that ended a margin (a minute) before the newest member it had, and
// skips the ids it has seen, as the API description says, gets it.
func TestMemberListingWindow(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	tenant := createTenants(t, ctx, db.Pool, "T")[0]
	user := func(email string) string {
		t.Helper()
		var id string
		if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email) VALUES ($1) RETURNING id::text`, email).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	const qJoin = `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`
	if _, err := db.Pool.Exec(ctx, `INSERT INTO memberships (tenant_id, user_id, created_at) VALUES ($1, $2, now() - interval '1 hour')`,
		tenant, user("old@example.com")); err != nil {
		t.Fatal(err)
	}
	begin := func() pgx.Tx {
		t.Helper()
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		// now(), the membership's created_at, is the transaction's start.
		if _, err := tx.Exec(ctx, `SELECT now()`); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	slowID, fastID := user("slow@example.com"), user("fast@example.com")
	// slow starts first (the earlier created_at) but adds its member only
	// after fast has added its own and committed (additions in one tenant
	// queue on its member count, so the later one is the one that waits).
	slow := begin()
	fast := begin()
	if _, err := fast.Exec(ctx, qJoin, tenant, fastID); err != nil {
		t.Fatal(err)
	}
	if err := fast.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Exec(ctx, qJoin, tenant, slowID); err != nil {
		t.Fatal(err)
	}

	s := NewStore(db.Pool, nil, nil, Limits{})
	list := func(after *Member) []Member {
		t.Helper()
		p := ListParams{TenantID: tenant, Limit: 1}
		if after != nil {
			p.After, p.AfterID = after.CreatedAt, after.ID
		}
		var out []Member
		for {
			page, _, err := s.List(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, page...)
			if len(page) < p.Limit {
				return out
			}
			p.After, p.AfterID = page[len(page)-1].CreatedAt, page[len(page)-1].ID
		}
	}
	ids := func(ms []Member) (out []string) {
		for _, m := range ms {
			out = append(out, m.Email)
		}
		return out
	}

	first := list(nil)
	if got := ids(first); !slices.Equal(got, []string{"old@example.com", "fast@example.com"}) {
		t.Fatalf("first poll = %v, want the committed members only", got)
	}
	old, newest := first[0], first[1]
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	if got := ids(list(&newest)); len(got) != 0 {
		t.Fatalf("members after the last cursor: %v, want none (the late one joined before it)", got)
	}
	if !old.CreatedAt.Before(newest.CreatedAt.Add(-time.Minute)) {
		t.Fatalf("the old member joined at %v, want a minute before the newest (%v)", old.CreatedAt, newest.CreatedAt)
	}
	seen := []string{old.ID, newest.ID}
	var caught []string
	for _, m := range list(&old) {
		if !slices.Contains(seen, m.ID) {
			caught = append(caught, m.Email)
		}
	}
	if !slices.Equal(caught, []string{"slow@example.com"}) {
		t.Fatalf("re-read from a page a minute before the newest: %v, want the late member", caught)
	}
}
