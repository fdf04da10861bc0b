package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// TestUsersDelete: the operator's `coreapi users delete` (an erasure
// request) deletes an account named by id or by address, as DELETE
// /users/me does but with no session to check: audited in each tenant
// with no acting user, announced, and the address free again. The last
// active owner of a tenant with other members is refused, naming the
// tenant, unless --force, which says which tenants it left without an
// owner. Nothing of another account changes.
func TestUsersDelete(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	q := func(sql string, args ...any) string { t.Helper(); return scanOne[string](t, db, sql, args...) }
	count := func(sql string, args ...any) int { t.Helper(); return scanOne[int](t, db, sql, args...) }
	ta := q(`INSERT INTO tenants (name) VALUES ('Acme') RETURNING id::text`)
	tb := q(`INSERT INTO tenants (name) VALUES ('Beta') RETURNING id::text`)
	seed := func(email, tid, role string) string {
		uid := q(`INSERT INTO users (email, email_verified_at) VALUES ($1, now()) RETURNING id::text`, email)
		q(`INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2) RETURNING user_id::text`, tid, uid)
		q(`INSERT INTO membership_roles (tenant_id, user_id, role_id) SELECT $1, $2, id FROM roles WHERE tenant_id = $1 AND name = $3 RETURNING user_id::text`, tid, uid, role)
		q(`INSERT INTO sessions (user_id, tenant_id, expires_at) VALUES ($1, $2, now() + interval '1 day') RETURNING id::text`, uid, tid)
		return uid
	}
	q(`WITH r AS (INSERT INTO roles (tenant_id, name, builtin) SELECT t.id, n.name, true FROM tenants t, (VALUES ('owner'), ('member')) n(name) RETURNING 1) SELECT 'ok'`)
	owner := seed("owner@acme.test", ta, "owner")
	gone := seed("gone@acme.test", ta, "member")
	q(`INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2) RETURNING user_id::text`, tb, gone)
	q(`INSERT INTO sessions (user_id, tenant_id, expires_at) VALUES ($1, $2, now() + interval '1 day') RETURNING id::text`, gone, tb)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})

	var out bytes.Buffer
	if err := run(ctx, []string{"users", "delete", "Gone@Acme.test"}, env, &out); err != nil {
		t.Fatalf("users delete: %v", err)
	}
	var d users.Deleted
	if err := json.Unmarshal(out.Bytes(), &d); err != nil || d.UserID != gone || d.SessionsEnded != 2 || !slices.Equal(d.Tenants, sortedPair(ta, tb)) {
		t.Fatalf("printed %q (%v), want the user, 2 sessions and both tenants", out.String(), err)
	}
	for _, c := range []struct {
		what, sql string
		want      int
	}{
		{"user row", `SELECT count(*) FROM users WHERE id::text = $1`, 0},
		{"sessions", `SELECT count(*) FROM sessions WHERE user_id::text = $1`, 0},
		{"audit events", `SELECT count(*) FROM audit_events WHERE target_id = $1 AND action = 'user.deleted' AND actor_user_id IS NULL
 AND data->>'by' = 'operator' AND request_id LIKE 'operator-%'`, 2},
		{"invalidations", `SELECT count(*) FROM outbox WHERE subject = 'auth.invalidate.user.' || $1 AND payload->>'reason' = 'user.deleted'`, 1},
		{"confirmation", `SELECT count(*) FROM mail_queue WHERE to_address = 'gone@acme.test' AND kind = 'account_deleted' AND $1 <> ''`, 1},
	} {
		if n := count(c.sql, gone); n != c.want {
			t.Errorf("%s: %d, want %d", c.what, n, c.want)
		}
	}
	q(`INSERT INTO users (email) VALUES ('gone@acme.test') RETURNING id::text`) // the address is free

	// The owner of Acme, which has another member now: refused, naming it.
	seed("staff@acme.test", ta, "member")
	err := run(ctx, []string{"users", "delete", owner}, env, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "Acme") || !strings.Contains(err.Error(), ta) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("users delete of the last owner = %v, want a refusal naming Acme and --force", err)
	}
	if n := count(`SELECT (SELECT count(*) FROM users WHERE id::text = $1) + (SELECT count(*) FROM sessions WHERE user_id::text = $1)
 + (SELECT count(*) FROM audit_events WHERE target_id = $1)`, owner); n != 2 {
		t.Fatalf("refused, yet the account and its session add up to %d rows, want 2 and no audit event", n)
	}
	out.Reset()
	if err := run(ctx, []string{"users", "delete", "--force", owner}, env, &out); err != nil {
		t.Fatalf("users delete --force: %v", err)
	}
	if err := json.Unmarshal(out.Bytes(), &d); err != nil || d.UserID != owner || len(d.LeftWithoutOwner) != 1 || d.LeftWithoutOwner[0].ID != ta {
		t.Fatalf("printed %q (%v), want Acme left without an owner", out.String(), err)
	}
	if n := count(`SELECT count(*) FROM audit_events WHERE target_id = $1 AND action = 'user.deleted' AND (data->>'left_without_owner')::bool`, owner); n != 1 {
		t.Errorf("%d audit events saying Acme was left without an owner, want 1", n)
	}
	if n := count(`SELECT count(*) FROM users WHERE email = 'staff@acme.test' AND $1 <> ''`, owner); n != 1 {
		t.Errorf("the other member: %d rows, want 1", n)
	}

	for _, b := range []struct {
		args []string
		want string
	}{
		{[]string{"users", "delete"}, "users delete [--force] USER_ID|EMAIL"},
		{[]string{"users", "delete", "--forse", gone}, "users delete [--force] USER_ID|EMAIL"},
		{[]string{"users", "delete", "00000000-0000-0000-0000-000000000001"}, "no user"},
		{[]string{"users", "delete", "nobody@acme.test"}, "no user"},
	} {
		if err := run(ctx, b.args, env, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("run(%v) = %v, want an error mentioning %q", b.args, err, b.want)
		}
	}
}
