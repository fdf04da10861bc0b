package users

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
)

// qListBefore and qGetBefore are the member list and member queries as they
// were before role names moved onto the membership row: a roles subquery
// per member, scanned by reflection. The golden test holds the new ones to
// the same answers.
const (
	rolesOfBefore = `ARRAY(
    SELECT r.name FROM membership_roles mr
    JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
    WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id
    ORDER BY r.name)`
	colsBefore  = `u.id::text, u.email, u.display_name, m.status, u.status, ` + rolesOfBefore + `, m.created_at, GREATEST(m.updated_at, u.updated_at)`
	qListBefore = `
SELECT ` + colsBefore + `, 0::bigint
FROM (
    SELECT tenant_id, user_id, status, created_at, updated_at
    FROM memberships
    WHERE tenant_id = $1 AND (created_at, user_id) > ($2, $3::uuid)
    ORDER BY created_at, user_id
    LIMIT $4
) m
JOIN users u ON u.id = m.user_id
ORDER BY m.created_at, m.user_id`
	qListTotalBefore = `
SELECT ` + colsBefore + `, m.total
FROM (
    SELECT * FROM (
        SELECT tenant_id, user_id, status, created_at, updated_at, count(*) OVER () AS total
        FROM memberships
        WHERE tenant_id = $1
    ) w
    WHERE (created_at, user_id) > ($2, $3::uuid)
    ORDER BY created_at, user_id
    LIMIT $4
) m
JOIN users u ON u.id = m.user_id
ORDER BY m.created_at, m.user_id`
	qGetBefore = `
SELECT ` + colsBefore + `, 0::bigint
FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.tenant_id = $1 AND m.user_id = $2`
)

// TestListMatchesTheQueryItReplaced: on seeded data (members with no role,
// one, several, custom roles, disabled memberships and accounts, several
// tenants, equal join times), every page of the member list, with and
// without a total, and every single member, are what the per-row subquery
// returned, field for field and byte for byte once encoded.
func TestListMatchesTheQueryItReplaced(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	tids := createTenants(t, ctx, db.Pool, "Acme", "Bravo")
	const seed = `
WITH cr AS (
    INSERT INTO roles (tenant_id, name, permissions)
    SELECT $1, n, '{users:read}' FROM unnest('{viewer,z.last,a_first,billing-1}'::text[]) n
), u AS (
    INSERT INTO users (email, display_name, status)
    SELECT 'm' || g || '@' || $2 || '.test', CASE WHEN g % 7 = 0 THEN 'Zoë <"q">' ELSE 'User ' || g END,
           CASE WHEN g % 11 = 0 THEN 'disabled' ELSE 'active' END
    FROM generate_series(1, 137) g
    RETURNING id, email
)
INSERT INTO memberships (tenant_id, user_id, status, created_at)
SELECT $1, id, CASE WHEN email LIKE 'm1%' THEN 'disabled' ELSE 'active' END,
       -- groups of equal join times exercise the user_id tie-break
       timestamptz '2026-01-01' + (hashtext(email) % 40) * interval '1 minute'
FROM u`
	const grant = `
INSERT INTO membership_roles (tenant_id, user_id, role_id)
SELECT m.tenant_id, m.user_id, r.id
FROM memberships m JOIN roles r ON r.tenant_id = m.tenant_id
WHERE m.tenant_id = $1 AND abs(hashtext(m.user_id::text || r.name)) % 3 = 0`
	for i, tid := range tids {
		if _, err := db.Pool.Exec(ctx, seed, tid, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Pool.Exec(ctx, grant, tid); err != nil {
			t.Fatal(err)
		}
	}
	var none int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM memberships m WHERE NOT EXISTS (SELECT 1 FROM membership_roles mr WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id)`).Scan(&none); err != nil || none == 0 {
		t.Fatalf("seed has %d members without roles (%v); want some", none, err)
	}

	// The list reads ids and role names in binary by hand; the simple
	// protocol sends them as text, which pgx scans.
	simple := simpleProtocolPool(t, ctx, db.URL)
	// before runs an old query (member columns, then the total).
	before := func(q string, args ...any) ([]Member, int64) {
		t.Helper()
		type counted struct {
			Member
			Total int64
		}
		rows, _ := db.Pool.Query(ctx, q, args...)
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[counted])
		if err != nil {
			t.Fatal(err)
		}
		out, total := []Member{}, int64(0)
		for _, c := range got {
			out, total = append(out, c.Member), c.Total
		}
		return out, total
	}
	same := func(what string, got, want []Member) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
		}
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		if string(gj) != string(wj) {
			t.Fatalf("%s: JSON differs:\n got %s\nwant %s", what, gj, wj)
		}
	}
	for _, pool := range []*pgxpool.Pool{db.Pool, simple} {
		s := NewStore(pool, nil, nil, Limits{})
		for _, tid := range tids {
			for _, total := range []bool{false, true} {
				for _, limit := range []int{1, 7, 51, 500} {
					q := qListBefore
					if total {
						q = qListTotalBefore
					}
					after, afterID, pages, seen := time.Time{}, "", 0, 0
					for {
						got, gotTotal, err := s.List(ctx, ListParams{TenantID: tid, After: after, AfterID: afterID, Limit: limit, IncludeTotal: total})
						if err != nil {
							t.Fatal(err)
						}
						a, aid := after, afterID
						if aid == "" {
							a, aid = time.Time{}, "00000000-0000-0000-0000-000000000000"
						}
						what := fmt.Sprintf("tenant %s total %v limit %d page %d", tid, total, limit, pages)
						want, wantTotal := before(q, tid, a, aid, limit)
						same(what, got, want)
						if len(got) > 0 && gotTotal != wantTotal {
							t.Fatalf("%s: total %d, want %d", what, gotTotal, wantTotal)
						}
						seen += len(got)
						pages++
						if len(got) < limit {
							break
						}
						last := got[len(got)-1]
						after, afterID = last.CreatedAt, last.ID
					}
					if seen != 137 {
						t.Fatalf("listed %d members, want 137", seen)
					}
				}
			}
			all, _, err := s.List(ctx, ListParams{TenantID: tid, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range all {
				got, err := s.Get(ctx, tid, m.ID)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := before(qGetBefore, tid, m.ID)
				same("get "+m.ID, []Member{got}, want)
			}
		}
	}
}

// TestMemberCountFollowsMemberships: the counter behind the list's total
// (tenant_member_counts, kept by triggers) equals count(*) of the tenant's
// memberships after bulk and single inserts, concurrent inserts, deletes,
// a tenant's deletion and a truncate; List reports it as the total.
func TestMemberCountFollowsMemberships(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	tids := createTenants(t, ctx, db.Pool, "Acme", "Bravo", "Empty")
	check := func(when string) {
		t.Helper()
		rows, err := db.Pool.Query(ctx, `
SELECT t.id::text, (SELECT count(*) FROM memberships m WHERE m.tenant_id = t.id),
       coalesce((SELECT c.members FROM tenant_member_counts c WHERE c.tenant_id = t.id), 0)
FROM tenants t`)
		if err != nil {
			t.Fatal(err)
		}
		type row struct {
			ID          string
			Want, Count int64
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			if r.Count != r.Want {
				t.Fatalf("%s: tenant %s counter %d, count(*) %d", when, r.ID, r.Count, r.Want)
			}
		}
	}
	const addUsers = `
WITH u AS (
    INSERT INTO users (email, display_name)
    SELECT 'c' || g || '-' || $3 || '@count.test', 'U' FROM generate_series(1, $2) g RETURNING id
)
INSERT INTO memberships (tenant_id, user_id) SELECT $1, id FROM u`
	for i, tid := range tids[:2] {
		if _, err := db.Pool.Exec(ctx, addUsers, tid, 40+i, fmt.Sprint("bulk", i)); err != nil {
			t.Fatal(err)
		}
	}
	check("after bulk inserts")

	// Concurrent single inserts into one tenant all count.
	errs := make(chan error, 20) // and 12 below
	for i := range 20 {
		go func() {
			_, err := db.Pool.Exec(ctx, addUsers, tids[0], 1, fmt.Sprint("one", i))
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	check("after concurrent inserts")
	s := NewStore(db.Pool, nil, nil, Limits{})
	if _, total, err := s.List(ctx, ListParams{TenantID: tids[0], Limit: 5, IncludeTotal: true}); err != nil || total != 60 {
		t.Fatalf("List total = %d, %v; want 60", total, err)
	}

	if _, err := db.Pool.Exec(ctx, `DELETE FROM memberships WHERE tenant_id = $1 AND user_id IN (SELECT user_id FROM memberships WHERE tenant_id = $1 LIMIT 7)`, tids[0]); err != nil {
		t.Fatal(err)
	}
	check("after a delete")
	if _, total, err := s.List(ctx, ListParams{TenantID: tids[0], Limit: 5, IncludeTotal: true}); err != nil || total != 53 {
		t.Fatalf("List total = %d, %v; want 53", total, err)
	}
	// A deleted user leaves every tenant: users of both tenants deleted
	// one by one, concurrently (each delete updates two counters).
	rows, err := db.Pool.Query(ctx, `
WITH u AS (
    INSERT INTO users (email, display_name) SELECT 'both' || g || '@count.test', 'B' FROM generate_series(1, 12) g RETURNING id
), m AS (
    INSERT INTO memberships (tenant_id, user_id) SELECT t, u.id FROM u CROSS JOIN unnest($1::uuid[]) t RETURNING user_id
)
SELECT DISTINCT user_id::text FROM m`, tids[:2])
	if err != nil {
		t.Fatal(err)
	}
	both, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(both) != 12 {
		t.Fatalf("users in both tenants: %d, %v", len(both), err)
	}
	check("after members of both tenants added")
	for _, id := range both {
		go func() {
			_, err := db.Pool.Exec(ctx, `DELETE FROM users WHERE id = $1`, id)
			errs <- err
		}()
	}
	for range both {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	check("after users deleted concurrently")
	if _, err := db.Pool.Exec(ctx, `DELETE FROM users WHERE email LIKE 'c1-%@count.test'`); err != nil {
		t.Fatal(err)
	}
	check("after users deleted")
	if _, err := db.Pool.Exec(ctx, `DELETE FROM tenants WHERE id = $1`, tids[1]); err != nil {
		t.Fatal(err)
	}
	check("after a tenant deleted")
	var left int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM tenant_member_counts WHERE tenant_id = $1`, tids[1]).Scan(&left); err != nil || left != 0 {
		t.Fatalf("deleted tenant's counter: %d rows, %v", left, err)
	}
	if _, err := db.Pool.Exec(ctx, `TRUNCATE memberships CASCADE`); err != nil {
		t.Fatal(err)
	}
	check("after truncate")
	if _, err := db.Pool.Exec(ctx, addUsers, tids[2], 3, "again"); err != nil {
		t.Fatal(err)
	}
	check("after inserts following the truncate")
}

// simpleProtocolPool is a pool on url whose queries use the simple
// protocol, so their results come back as text (the hand-written binary
// readers are bypassed and pgx scans).
func simpleProtocolPool(t *testing.T, ctx context.Context, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// createTenants creates a tenant per name and returns their ids in order.
func createTenants(t *testing.T, ctx context.Context, pool *pgxpool.Pool, names ...string) []string {
	t.Helper()
	var tids []string
	for _, name := range names {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			tn, err := tenants.Create(ctx, tx, name)
			tids = append(tids, tn.ID)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return tids
}
