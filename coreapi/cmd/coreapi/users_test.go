package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// TestUsersResetMFA: the operator's reset of a member of two tenants (whom
// no tenant admin may reset) deletes the factor and the recovery codes,
// ends every session, bumps the token version, audits it in both tenants
// with no acting user, and announces it through the outbox; nothing of
// another user changes.
func TestUsersResetMFA(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	q := func(sql string, args ...any) string { t.Helper(); return scanOne[string](t, db, sql, args...) }
	count := func(sql string, args ...any) int { t.Helper(); return scanOne[int](t, db, sql, args...) }
	ta := q(`INSERT INTO tenants (name) VALUES ('A') RETURNING id::text`)
	tb := q(`INSERT INTO tenants (name) VALUES ('B') RETURNING id::text`)
	seed := func(email string) string {
		uid := q(`INSERT INTO users (email) VALUES ($1) RETURNING id::text`, email)
		for _, tid := range []string{ta, tb} {
			q(`INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2) RETURNING user_id::text`, tid, uid)
			q(`INSERT INTO sessions (user_id, tenant_id, expires_at) VALUES ($1, $2, now() + interval '1 day') RETURNING id::text`, uid, tid)
		}
		q(`INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now()) RETURNING user_id::text`, uid)
		q(`INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, '\x01'), ($1, '\x02') RETURNING user_id::text`, uid)
		return uid
	}
	uid, other := seed("lost@example.com"), seed("other@example.com")
	// pending enrolled a factor and never confirmed it: it has none yet,
	// as DELETE /users/{id}/mfa holds.
	pending := seed("pending@example.com")
	q(`UPDATE mfa_totp SET status = 'pending', confirmed_at = NULL WHERE user_id = $1 RETURNING user_id::text`, pending)
	q(`WITH d AS (DELETE FROM mfa_recovery_codes WHERE user_id = $1) SELECT $1::text`, pending) // given at the confirmation
	q(`UPDATE users SET email_verified_at = now() WHERE id = $1 RETURNING id::text`, pending)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})

	var out bytes.Buffer
	if err := run(ctx, []string{"users", "reset-mfa", uid}, env, &out); err != nil {
		t.Fatalf("users reset-mfa: %v", err)
	}
	var r auth.Reset
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.UserID != uid || r.SessionsRevoked != 2 || !slices.Equal(r.Tenants, sortedPair(ta, tb)) {
		t.Fatalf("printed %q (%v), want the user, 2 sessions and both tenants", out.String(), err)
	}
	for _, c := range []struct {
		what, sql string
		want      int
	}{
		{"factor", `SELECT count(*) FROM mfa_totp WHERE user_id = $1`, 0},
		{"recovery codes", `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1`, 0},
		{"live sessions", `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL`, 0},
		{"sessions ended by the reset", `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_reason = 'mfa_reset'`, 2},
		{"token version", `SELECT token_version FROM users WHERE id = $1`, 1},
		{"audit events", `SELECT count(*) FROM audit_events WHERE target_id = $1 AND action = 'user.mfa_reset' AND actor_user_id IS NULL AND request_id LIKE 'operator-%'`, 2},
	} {
		if n := count(c.sql, uid); n != c.want {
			t.Errorf("%s: %d, want %d", c.what, n, c.want)
		}
	}
	if n := count(`SELECT count(DISTINCT tenant_id) FROM audit_events WHERE target_id = $1`, uid); n != 2 {
		t.Errorf("audited in %d tenants, want both", n)
	}
	if n := count(`SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`, invalidation.UserSubject(uid), invalidation.ReasonUserMFAReset); n != 1 {
		t.Errorf("outbox rows: %d, want 1", n)
	}
	// The other user is untouched.
	if n := count(`SELECT (SELECT count(*) FROM mfa_totp WHERE user_id = $1) + (SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1) +
		(SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL)`, other); n != 5 {
		t.Errorf("the other user's factor, codes and sessions: %d rows, want 5", n)
	}

	bad := []struct {
		args []string
		env  func(string) string
		want string
	}{
		{[]string{"users"}, env, "users reset-mfa USER_ID"},
		{[]string{"users", "reset-mfa"}, env, "users reset-mfa USER_ID"},
		{[]string{"users", "erase", uid}, env, "users reset-mfa USER_ID"},
		{[]string{"users", "reset-mfa", "lost@example.com"}, env, "not a user id"},
		{[]string{"users", "reset-mfa", "00000000-0000-0000-0000-000000000001"}, env, "no user"},
		{[]string{"users", "reset-mfa", uid}, env, "has no second factor"}, // done already
		{[]string{"users", "reset-mfa", uid}, envOf(nil), "DATABASE_URL"},
		{[]string{"users", "reset-mfa", pending}, env, "has no second factor"},
	}
	for _, b := range bad {
		if err := run(ctx, b.args, b.env, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("run(%v) = %v, want an error mentioning %q", b.args, err, b.want)
		}
	}
	// A refusal changes nothing: still one announcement.
	if n := count(`SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.UserSubject(uid)); n != 1 {
		t.Errorf("outbox rows after the refusals: %d, want 1", n)
	}
	// Nor does the refusal of a pending factor: its enrolment, the
	// sessions and the token version stay; nothing is audited, announced
	// or mailed.
	if n := count(`SELECT (SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'pending') +
		(SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL)`, pending); n != 3 {
		t.Errorf("the pending factor and sessions after its refusal: %d rows, want 3", n)
	}
	if n := count(`SELECT (SELECT token_version FROM users WHERE id::text = $1) +
		(SELECT count(*) FROM audit_events WHERE target_id = $1) +
		(SELECT count(*) FROM outbox WHERE subject = $2) +
		(SELECT count(*) FROM mail_queue WHERE to_address = 'pending@example.com')`, pending, invalidation.UserSubject(pending)); n != 0 {
		t.Errorf("the refusal of a pending factor: token version, audit events, outbox rows and mails add up to %d, want 0", n)
	}
}

func sortedPair(a, b string) []string {
	s := []string{a, b}
	slices.Sort(s)
	return s
}

// TestUsersResetMFAJoinedMeanwhile: an account that joins another tenant
// while the reset waits for its row (an invitation accepted there holds it)
// is audited in that tenant too: the tenants are read once the row is held,
// not as they were when the reset began waiting.
func TestUsersResetMFAJoinedMeanwhile(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	q := func(sql string, args ...any) string { t.Helper(); return scanOne[string](t, db, sql, args...) }
	ta := q(`INSERT INTO tenants (name) VALUES ('A') RETURNING id::text`)
	tb := q(`INSERT INTO tenants (name) VALUES ('B') RETURNING id::text`)
	uid := q(`INSERT INTO users (email) VALUES ('lost@example.com') RETURNING id::text`)
	q(`INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2) RETURNING user_id::text`, ta, uid)
	q(`INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now()) RETURNING user_id::text`, uid)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})

	join := db.Hold(t, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, tb, uid)
	var (
		wg     sync.WaitGroup
		out    bytes.Buffer
		runErr error
	)
	wg.Go(func() { runErr = run(ctx, []string{"users", "reset-mfa", uid}, env, &out) })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%FROM users%FOR UPDATE%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reset does not wait for the account's row")
		}
	}
	if err := join.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if runErr != nil {
		t.Fatalf("users reset-mfa: %v", runErr)
	}
	var r auth.Reset
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || !slices.Equal(r.Tenants, sortedPair(ta, tb)) {
		t.Errorf("printed %q (%v), want both tenants", out.String(), err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND target_id = $2 AND action = 'user.mfa_reset'`, tb, uid).Scan(&n); err != nil || n != 1 {
		t.Errorf("audit events in the tenant joined meanwhile: %d (%v), want 1", n, err)
	}
}

// scanOne is the one value sql's one row holds.
func scanOne[T any](t *testing.T, db *dbtest.DB, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := db.Pool.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}
