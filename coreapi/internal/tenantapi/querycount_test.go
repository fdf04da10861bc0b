package tenantapi_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestReadsAreOneQuery: every read endpoint makes exactly one database
// round trip, whatever the page holds.
func TestReadsAreOneQuery(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	// 500 more members of A, each holding member plus a custom role.
	const seed = `
WITH r AS (
    INSERT INTO roles (tenant_id, name, permissions) VALUES ($1, 'viewer', '{users:read}') RETURNING id
), u AS (
    INSERT INTO users (email) SELECT 'bulk' || g || '@acme.test' FROM generate_series(1, 500) g RETURNING id
), m AS (
    INSERT INTO memberships (tenant_id, user_id) SELECT $1, id FROM u RETURNING user_id
)
INSERT INTO membership_roles (tenant_id, user_id, role_id)
SELECT $1, m.user_id, x.id FROM m, (SELECT id FROM r UNION ALL SELECT id FROM roles WHERE tenant_id = $1 AND name = 'member') x`
	if _, err := w.E.DB.Pool.Exec(ctx, seed, w.A); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": fmt.Sprintf("r%02d", i)}), 201)
	}
	w.E.SeedMember(t, w.B, w.Owner.UserID, "member")

	var first struct {
		NextCursor *string `json:"next_cursor"`
	}
	w.E.Get(t, &w.Owner, "/api/v1/users?limit=200").JSON(t, &first)
	var auditFirst struct {
		NextCursor *string `json:"next_cursor"`
	}
	w.E.Get(t, &w.Owner, "/api/v1/audit-events?limit=10").JSON(t, &auditFirst)

	// The roles of /users/me come from the identity: however many it
	// names, the answer is still the one read of the user row.
	manyRoles := w.Owner
	manyRoles.Roles = []string{"admin", "member", "owner", "viewer"}
	for i := range 30 {
		manyRoles.Roles = append(manyRoles.Roles, fmt.Sprintf("r%02d", i))
	}
	reads := []struct {
		name string
		req  apitest.Request
		rows int // members expected in data, -1: not a list
	}{
		{"users/me", apitest.Request{Method: "GET", Path: "/api/v1/users/me", As: &w.Owner}, -1},
		{"users/me as a member", apitest.Request{Method: "GET", Path: "/api/v1/users/me", As: &w.Member}, -1},
		{"users/me with 34 signed roles", apitest.Request{Method: "GET", Path: "/api/v1/users/me", As: &manyRoles}, -1},
		{"users/me/tenants", apitest.Request{Method: "GET", Path: "/api/v1/users/me/tenants?include_total=true", As: &w.Owner}, 2},
		{"tenant", apitest.Request{Method: "GET", Path: "/api/v1/tenant", As: &w.Owner}, -1},
		{"users limit 200", apitest.Request{Method: "GET", Path: "/api/v1/users?limit=200", As: &w.Owner}, 200},
		{"users page 2 with total", apitest.Request{Method: "GET", Path: "/api/v1/users?limit=200&include_total=true&cursor=" + *first.NextCursor, As: &w.Owner}, 200},
		{"users/{id}", apitest.Request{Method: "GET", Path: "/api/v1/users/" + w.Member.UserID, As: &w.Owner}, -1},
		{"roles", apitest.Request{Method: "GET", Path: "/api/v1/roles?limit=200&include_total=true", As: &w.Owner}, 34},
		{"audit-events", apitest.Request{Method: "GET", Path: "/api/v1/audit-events?include_total=true", As: &w.Owner}, 30},
		{"audit-events page 2", apitest.Request{Method: "GET", Path: "/api/v1/audit-events?limit=10&cursor=" + *auditFirst.NextCursor, As: &w.Owner}, 10},
		{"projection", apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + w.Owner.UserID + "?tenant_id=" + w.A, Service: true}, -1},
	}
	for _, rd := range reads {
		t.Run(rd.name, func(t *testing.T) {
			r := w.E.Do(t, rd.req)
			apitest.WantStatus(t, r, 200)
			if r.Stats.Queries != 1 || r.Stats.Transactions != 0 {
				t.Errorf("%s: %d queries, %d transactions; want 1, 0", rd.name, r.Stats.Queries, r.Stats.Transactions)
			}
			t.Logf("%-28s queries=%d prepares=%d", rd.name, r.Stats.Queries, r.Stats.Prepares)
			if rd.rows >= 0 {
				var l struct {
					Data []map[string]any `json:"data"`
				}
				r.JSON(t, &l)
				if len(l.Data) != rd.rows {
					t.Errorf("rows = %d, want %d", len(l.Data), rd.rows)
				}
			}
		})
	}
	t.Run("500 members listed with their roles in one query", func(t *testing.T) {
		var all []map[string]any
		cursor := ""
		queries := int64(0)
		requests := 0
		for {
			path := "/api/v1/users?limit=200"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			r := w.E.Get(t, &w.Owner, path)
			requests++
			queries += r.Stats.Queries
			var l struct {
				Data       []map[string]any `json:"data"`
				NextCursor *string          `json:"next_cursor"`
			}
			r.JSON(t, &l)
			all = append(all, l.Data...)
			if l.NextCursor == nil {
				break
			}
			cursor = *l.NextCursor
		}
		if len(all) != 503 || requests != 3 || queries != 3 {
			t.Fatalf("listed %d members in %d requests with %d queries; want 503, 3, 3", len(all), requests, queries)
		}
		for _, m := range all {
			if roles, _ := m["roles"].([]any); len(roles) == 0 {
				t.Fatalf("member without roles: %v", m)
			}
		}
		bulk := all[len(all)-1]
		if got := fmt.Sprint(bulk["roles"]); got != "[member viewer]" {
			t.Fatalf("bulk member roles = %s, want [member viewer]", got)
		}
	})
}

// TestWritesAreOneTransaction: every write endpoint runs in exactly one
// transaction.
func TestWritesAreOneTransaction(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	uid := w.Member.UserID
	var created struct {
		ID string `json:"id"`
	}
	writes := []struct {
		name   string
		method string
		path   func() string
		body   any
		status int
		after  func(r apitest.Response)
	}{
		{"patch me", "PATCH", func() string { return "/api/v1/users/me" }, map[string]any{"display_name": "x"}, 200, nil},
		{"patch tenant", "PATCH", func() string { return "/api/v1/tenant" }, map[string]any{"name": "Acme 2"}, 200, nil},
		{"create user", "POST", func() string { return "/api/v1/users" }, map[string]any{"email": "n@acme.test", "password": "correct horse battery"}, 201, nil},
		{"patch user", "PATCH", func() string { return "/api/v1/users/" + uid }, map[string]any{"membership_status": "disabled"}, 200, nil},
		{"grant role", "PUT", func() string { return "/api/v1/users/" + uid + "/roles/admin" }, nil, 200, nil},
		{"revoke role", "DELETE", func() string { return "/api/v1/users/" + uid + "/roles/admin" }, nil, 200, nil},
		{"create role", "POST", func() string { return "/api/v1/roles" }, map[string]any{"name": "x"}, 201, func(r apitest.Response) { r.JSON(t, &created) }},
		{"patch role", "PATCH", func() string { return "/api/v1/roles/" + created.ID }, map[string]any{"permissions": []string{"users:read"}}, 200, nil},
		{"delete role", "DELETE", func() string { return "/api/v1/roles/" + created.ID }, nil, 204, nil},
		{"delete user", "DELETE", func() string { return "/api/v1/users/" + uid }, nil, 204, nil},
		{"refused: last owner", "DELETE", func() string { return "/api/v1/users/" + w.Owner.UserID }, nil, 409, nil},
	}
	for _, wr := range writes {
		t.Run(wr.name, func(t *testing.T) {
			r := w.E.Send(t, &w.Owner, wr.method, wr.path(), wr.body)
			apitest.WantStatus(t, r, wr.status)
			if r.Stats.Transactions != 1 {
				t.Errorf("%s: %d transactions, want 1", wr.name, r.Stats.Transactions)
			}
			t.Logf("%-22s transactions=%d statements=%d", wr.name, r.Stats.Transactions, r.Stats.Queries)
			if wr.after != nil {
				wr.after(r)
			}
		})
	}
	// The new user's password was stored hashed with argon2id.
	var hash string
	if err := w.E.DB.Pool.QueryRow(context.Background(), `SELECT password_hash FROM users WHERE email = 'n@acme.test'`).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if len(hash) < 10 || hash[:10] != "$argon2id$" {
		t.Fatalf("password_hash = %q", hash)
	}
}
