package users

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestMeMatchesPgxScan: Me decodes its row's binary values itself; every
// field must be what pgx's own scan of the same query gives (times in the
// same location, to the microsecond, around and far from PostgreSQL's
// epoch), in the cached-statement modes and with the simple protocol
// (text, scanned by pgx), and the strings must stay valid after the
// connection reads other rows. An infinite time is an error, as pgx's is.
func TestMeMatchesPgxScan(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	const seed = `
INSERT INTO users (email, display_name, status, email_verified_at, created_at, updated_at)
VALUES ('a@x.test', 'Zoë <"q">', 'active', now(), '2000-01-01 00:00:00+00', '2000-01-01 00:00:00.000001+00'),
       ('b@x.test', '', 'disabled', NULL, '1999-12-31 23:59:59.999999+00', '1970-01-01 00:00:00+00'),
       ('c@x.test', 'C', 'active', NULL, '0001-01-01 00:00:00+00', '9999-12-31 23:59:59.999999+00'),
       ('d@x.test', 'D', 'active', now(), '1492-10-12 13:14:15.161718+00', now()),
       ('e@x.test', 'E', 'active', NULL, now(), 'infinity'),
       ('f@x.test', 'F', 'active', NULL, '-infinity', now())
RETURNING id::text, email`
	rows, err := db.Pool.Query(ctx, seed)
	if err != nil {
		t.Fatal(err)
	}
	type seeded struct{ ID, Email string }
	users, err := pgx.CollectRows(rows, pgx.RowToStructByPos[seeded])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `
INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status)
SELECT id, 'k', '\x00', CASE WHEN email = 'a@x.test' THEN 'active' ELSE 'pending' END FROM users WHERE email IN ('a@x.test', 'b@x.test')`); err != nil {
		t.Fatal(err)
	}
	simple := simpleProtocolPool(t, ctx, db.URL)

	for name, pool := range map[string]*pgxpool.Pool{"cache_statement": db.Pool, "simple_protocol": simple} {
		s := NewStore(pool, nil, nil, Limits{})
		var got, want []Me
		for _, u := range users {
			id := identity.Identity{Principal: identity.PrincipalUser, UserID: u.ID, TenantID: "00000000-0000-0000-0000-00000000000a",
				Roles: []string{"member"}, Permissions: []string{"users:read"}}
			m, err := s.Me(ctx, id)
			w := meOf(id)
			werr := pool.QueryRow(ctx, qMe, id.UserID).Scan(&w.Email, &w.EmailVerified, &w.DisplayName, &w.Status,
				&w.CreatedAt, &w.UpdatedAt, &w.MFAEnabled)
			if u.Email == "e@x.test" || u.Email == "f@x.test" {
				if err == nil || werr == nil || !strings.Contains(werr.Error(), "nfinity") || !strings.Contains(err.Error(), "nfinity") {
					t.Fatalf("%s %s: err %v, pgx's %v; want both refusing an infinite time", name, u.Email, err, werr)
				}
				continue
			}
			if err != nil || werr != nil {
				t.Fatalf("%s %s: %v, pgx's %v", name, u.Email, err, werr)
			}
			got, want = append(got, m), append(want, w)
		}
		// Other rows through the same connections before the comparison.
		if _, err := pool.Exec(ctx, `SELECT repeat('x', 10000) FROM generate_series(1, 10)`); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %+v\nwant %+v", name, got, want)
		}
		if got[0].DisplayName != `Zoë <"q">` || !got[0].EmailVerified || !got[0].MFAEnabled || got[1].MFAEnabled ||
			got[1].Status != identity.StatusDisabled || got[1].DisplayName != "" || got[1].EmailVerified {
			t.Fatalf("%s: %+v", name, got)
		}
		if _, err := s.Me(ctx, identity.Identity{UserID: "00000000-0000-0000-0000-000000000001"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: no such user: %v, want ErrNotFound", name, err)
		}
	}
}
