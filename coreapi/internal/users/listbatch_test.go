package users

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// seedMembersOf adds n members holding the member role to each tenant.
func seedMembersOf(t testing.TB, ctx context.Context, pool *pgxpool.Pool, n int, tenants ...string) {
	t.Helper()
	const seed = `
WITH u AS (
    INSERT INTO users (email, display_name)
    SELECT 'm' || g || '-' || $3 || '@x.test', 'Member ' || g FROM generate_series(1, $2) g
    RETURNING id
), m AS (
    INSERT INTO memberships (tenant_id, user_id) SELECT $1, id FROM u RETURNING user_id
)
INSERT INTO membership_roles (tenant_id, user_id, role_id)
SELECT $1, m.user_id, r.id FROM m JOIN roles r ON r.tenant_id = $1 AND r.name = 'member'`
	for _, tid := range tenants {
		if _, err := pool.Exec(ctx, seed, tid, n, tid); err != nil {
			t.Fatal(err)
		}
	}
}

// TestListPagesQueuedMeanwhileShareOneRoundTrip: while a member-list read
// holds the only round trip allowed, the pages asked for meanwhile (two
// tenants, first pages and pages after a cursor, with and without a
// total, one past the end) queue, and the next round trip carries all of
// them as one statement; each page is exactly what List's own query
// answers, in the cached-statement mode and with the simple protocol.
func TestListPagesQueuedMeanwhileShareOneRoundTrip(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	tids := createTenants(t, ctx, db.Pool, "Acme", "Bravo")
	seedMembersOf(t, ctx, db.Pool, 30, tids[0])
	seedMembersOf(t, ctx, db.Pool, 7, tids[1])

	alone := NewStore(db.Pool, nil, nil, Limits{})
	first, _, err := alone.List(ctx, ListParams{TenantID: tids[0], Limit: 10})
	if err != nil || len(first) != 10 {
		t.Fatalf("first page: %d members, %v", len(first), err)
	}
	last := first[9]
	queued := []ListParams{
		{TenantID: tids[0], Limit: 10, After: last.CreatedAt, AfterID: last.ID},
		{TenantID: tids[1], Limit: 50, IncludeTotal: true},
		{TenantID: tids[0], Limit: 1, IncludeTotal: true, After: last.CreatedAt, AfterID: last.ID},
		{TenantID: tids[1], Limit: 5},
		{TenantID: tids[0], Limit: 10, IncludeTotal: true, After: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), AfterID: last.ID}, // past the end
		{TenantID: tids[0], Limit: 200, IncludeTotal: true},
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			type page struct {
				out   []Member
				total int64
				err   error
			}
			want := make([]page, len(queued))
			for i, p := range queued {
				want[i].out, want[i].total, want[i].err = alone.List(ctx, p)
				if want[i].err != nil {
					t.Fatal(want[i].err)
				}
			}

			var q queryCounter
			pool := onePool(t, db, mode, &q)
			s := NewStore(pool, nil, nil, Limits{})
			s.list.b.runners = 1
			held, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]page, len(queued))
			var wg sync.WaitGroup
			wg.Go(func() { _, _, _ = s.List(ctx, ListParams{TenantID: tids[0], Limit: 10}) })
			waitState(t, &s.list.b, 1, 0)
			for i, p := range queued {
				wg.Go(func() { got[i].out, got[i].total, got[i].err = s.List(ctx, p) })
			}
			waitState(t, &s.list.b, 1, len(queued))
			before := len(q.sent())
			held.Release()
			wg.Wait()

			sent := q.sent()[before:]
			// The page past the end has no row to carry its total: it is
			// counted on its own.
			if len(sent) != 3 || sent[0] != qList || sent[1] != qListBatch || sent[2] != qMemberCount {
				t.Fatalf("statements sent: %d, want qList, one qListBatch, then qMemberCount: %q", len(sent), sent)
			}
			if want[4].total != 30 {
				t.Errorf("page past the end: total %d, want 30", want[4].total)
			}
			for i := range queued {
				if got[i].err != nil || got[i].total != want[i].total || !reflect.DeepEqual(got[i].out, want[i].out) {
					t.Errorf("page %d (%+v):\n got %d members, total %d, %v: %+v\nwant %d members, total %d: %+v",
						i, queued[i], len(got[i].out), got[i].total, got[i].err, got[i].out, len(want[i].out), want[i].total, want[i].out)
				}
				if got[i].out == nil {
					t.Errorf("page %d: nil members, want an empty list", i)
				}
			}
			if len(want[4].out) != 0 || want[1].total != 7 || len(want[5].out) != 30 {
				t.Errorf("the pages are not the ones the test means: %d, %d, %d", len(want[4].out), want[1].total, len(want[5].out))
			}
		})
	}
}

// BenchmarkListParallel is Store.List (a first page of 50 with its total)
// from 64 goroutines at once over a pool of 8 connections, as the full
// stack drives it: round-trips/op is the statements sent per page (1
// without batching).
func BenchmarkListParallel(b *testing.B) {
	db := dbtest.New(b)
	ctx := context.Background()
	var tid string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO tenants (name) VALUES ('Bench') RETURNING id::text`).Scan(&tid); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO roles (tenant_id, name, builtin) VALUES ($1, 'member', true)`, tid); err != nil {
		b.Fatal(err)
	}
	seedMembersOf(b, ctx, db.Pool, 1000, tid)
	if _, err := db.Pool.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		b.Fatal(err)
	}
	var q queryCounter
	s := NewStore(countedPool(b, db, 8, pgx.QueryExecModeCacheStatement, &q), nil, nil, Limits{})
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if out, _, err := s.List(ctx, ListParams{TenantID: tid, Limit: 50, IncludeTotal: true}); err != nil || len(out) != 50 {
				b.Errorf("%d members, %v", len(out), err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(len(q.sent()))/float64(b.N), "round-trips/op")
}
