package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/schema"
	"github.com/tollgate-auth/tollgate/migrations"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// downTo rolls the schema of db back to version (the migrations after it
// undone), as an older release left it.
func downTo(t *testing.T, db *dbtest.DB, version int64) {
	t.Helper()
	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	p, err := migrations.NewProvider(sqlDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(context.Background(), version); err != nil {
		t.Fatalf("down to %d: %v", version, err)
	}
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func tableCount(t *testing.T, db *dbtest.DB) int {
	t.Helper()
	var n int
	const q = `SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> 'goose_db_version'`
	if err := db.Pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMigrateUpDownUp runs the migrate subcommand: the schema comes down
// completely and goes back up.
func TestMigrateUpDownUp(t *testing.T) {
	db := dbtest.New(t) // already migrated up
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	// The data model of 00001, login_failures (00002), replaced by
	// login_attempts, and oauth_handovers (00003), action_tokens,
	// invitations, mail_queue and rate_limits (00004), permission_catalog (00005),
	// mfa_totp, mfa_recovery_codes and mfa_challenges (00007), api_keys (00008),
	// service_accounts and service_account_secrets (00009),
	// tenant_member_counts (00011), outbox_relays (00017), invitation_roles (00040),
	// signing_key_sightings (00043), identity_unlinks (00052),
	// oauth_handover_uses (00054).
	const tables = 30
	if n := tableCount(t, db); n != tables {
		t.Fatalf("after up: %d tables, want %d", n, tables)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "down", "-all"}, env, &out); err != nil {
		t.Fatalf("migrate down: %v", err)
	}
	if n := tableCount(t, db); n != 0 {
		t.Fatalf("after down: %d tables, want 0", n)
	}
	if !strings.Contains(out.String(), "pending") {
		t.Errorf("status after down does not show pending migrations:\n%s", out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"migrate", "up"}, env, &out); err != nil {
		t.Fatalf("migrate up again: %v", err)
	}
	if n := tableCount(t, db); n != tables {
		t.Fatalf("after up again: %d tables, want %d", n, tables)
	}
	if strings.Contains(out.String(), "pending") || !strings.Contains(out.String(), "00001") || !strings.Contains(out.String(), "00002") || !strings.Contains(out.String(), "00003") {
		t.Errorf("status after up:\n%s", out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"migrate", "status"}, env, &out); err != nil || !strings.Contains(out.String(), "applied") {
		t.Fatalf("migrate status = %v:\n%s", err, out.String())
	}
	for _, bad := range [][]string{{"migrate"}, {"migrate", "sideways"}} {
		if err := run(ctx, bad, env, &out); err == nil {
			t.Errorf("run(%v) accepted", bad)
		}
	}
	if err := run(ctx, []string{"migrate", "status"}, envOf(nil), &out); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("migrate without DATABASE_URL = %v", err)
	}
}

// TestIndexes lists the indexes the queries rely on, and checks that every
// foreign key is covered by an index that starts with its columns.
func TestIndexes(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	want := map[string]string{
		"users_email_lower_key":            "users (lower(email)): sign-in and POST /users lookups",
		"memberships_pkey":                 "memberships (tenant_id, user_id): member get, projection",
		"memberships_user_id_idx":          "memberships (user_id): a user's tenants",
		"memberships_tenant_created_idx":   "memberships (tenant_id, created_at, user_id): member keyset pages",
		"roles_tenant_name_key":            "roles (tenant_id, name): role by name, keyset pages",
		"roles_tenant_id_id_key":           "roles (tenant_id, id): membership_roles FK target",
		"membership_roles_pkey":            "membership_roles (tenant_id, user_id, role_id): roles of a member",
		"membership_roles_role_idx":        "membership_roles (tenant_id, role_id): role deletion cascade",
		"membership_roles_user_idx":        "membership_roles (user_id)",
		"identities_provider_subject_key":  "identities (provider, subject): OIDC login",
		"identities_user_id_idx":           "identities (user_id)",
		"sessions_user_created_idx":        "sessions (user_id, created_at, id): a user's sessions",
		"sessions_tenant_id_idx":           "sessions (tenant_id)",
		"sessions_user_revoked_idx":        "sessions (user_id, revoked_at) partial: projection revoked list",
		"sessions_expires_at_idx":          "sessions (expires_at): sweeping",
		"sessions_revoked_at_idx":          "sessions (revoked_at) partial: sweeping",
		"api_keys_revoked_at_idx":          "api_keys (revoked_at) partial: sweeping",
		"api_keys_expires_at_idx":          "api_keys (expires_at) partial: sweeping",
		"mail_queue_parked_idx":            "mail_queue (created_at) parked: pruning",
		"refresh_tokens_token_hash_key":    "refresh_tokens (token_hash): refresh",
		"refresh_tokens_session_id_idx":    "refresh_tokens (session_id)",
		"refresh_tokens_parent_id_idx":     "refresh_tokens (parent_id)",
		"refresh_tokens_replaced_by_idx":   "refresh_tokens (replaced_by)",
		"refresh_tokens_expires_at_idx":    "refresh_tokens (expires_at): sweeping",
		"oauth_states_pkey":                "oauth_states (state_hash): consume once",
		"oauth_states_expires_at_idx":      "oauth_states (expires_at): sweeping",
		"oauth_states_tenant_id_idx":       "oauth_states (tenant_id)",
		"oauth_states_link_user_id_idx":    "oauth_states (link_user_id) partial: a link's account, user deletion cascade",
		"outbox_pending_idx":               "outbox (id) WHERE published_at IS NULL: relay",
		"outbox_published_at_idx":          "outbox (published_at): pruning",
		"audit_events_tenant_id_idx":       "audit_events (tenant_id, id DESC): audit keyset pages",
		"audit_events_actor_user_id_idx":   "audit_events (actor_user_id)",
		"audit_events_api_key_id_idx":      "audit_events (api_key_id) partial: what a key did",
		"login_attempts_pkey":              "login_attempts (email_hash, client_ip): reserve a sign-in attempt",
		"login_attempts_last_attempt_idx":  "login_attempts (last_attempt): sweeping",
		"oauth_handovers_pkey":             "oauth_handovers (code_hash): exchange once",
		"oauth_handovers_user_id_idx":      "oauth_handovers (user_id)",
		"oauth_handovers_session_id_idx":   "oauth_handovers (session_id)",
		"oauth_handovers_expires_at_idx":   "oauth_handovers (expires_at): sweeping",
		"oauth_handover_uses_pkey":         "oauth_handover_uses (code_hash): a code presented again",
		"oauth_handover_uses_session_idx":  "oauth_handover_uses (session_id): session deletion cascade",
		"oauth_handover_uses_expiry_idx":   "oauth_handover_uses (expires_at): sweeping",
		"permission_catalog_pkey":          "permission_catalog (id): the one stored catalog hash",
		"action_tokens_pkey":               "action_tokens (token_hash): consume a mailed token",
		"action_tokens_user_purpose_idx":   "action_tokens (user_id, purpose, created_at): a user's tokens",
		"action_tokens_expires_at_idx":     "action_tokens (expires_at): sweeping",
		"invitations_pkey":                 "invitations (id)",
		"invitations_token_hash_key":       "invitations (token_hash): accept",
		"invitations_tenant_email_nfc_key": "invitations (tenant_id, lower(normalize(email, NFC))) pending: one per address",
		"invitations_tenant_created_idx":   "invitations (tenant_id, created_at, id): keyset pages",
		"invitations_email_nfc_idx":        "invitations (lower(normalize(email, NFC))) pending: my invitations",
		"invitations_invited_by_idx":       "invitations (invited_by)",
		"invitations_accepted_by_idx":      "invitations (accepted_by)",
		"invitation_roles_pkey":            "invitation_roles (tenant_id, invitation_id, role_id): an invitation's roles",
		"invitation_roles_role_idx":        "invitation_roles (tenant_id, role_id): role deletion cascade",
		"mail_queue_pkey":                  "mail_queue (id)",
		"mail_queue_due_idx":               "mail_queue (next_attempt_at, id) pending: sender claim",
		"mail_queue_sent_at_idx":           "mail_queue (sent_at) sent: pruning",
		"mail_queue_user_id_idx":           "mail_queue (user_id) partial: an account's mails, its deletion",
		"mail_queue_to_address_lower_idx":  "mail_queue (lower(to_address)): an account's deletion",
		"mail_queue_token_digest_idx":      "mail_queue (mail_token_digest(token)) partial: mails of ended tokens, an account's deletion",
		"rate_limits_pkey":                 "rate_limits (key)",
		"rate_limits_kept_until_idx":       "rate_limits (window_start + 2 windows): sweeping",
		"identity_unlinks_pkey":            "identity_unlinks (user_id, provider): a provider the owner unlinked",
	}
	rows, err := db.Pool.Query(ctx, `SELECT indexname FROM pg_indexes WHERE schemaname = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		have[n] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for name, why := range want {
		if !have[name] {
			t.Errorf("missing index %s (%s)", name, why)
		}
	}

	// Every foreign key's columns are the leading columns of some index.
	const q = `
SELECT c.conrelid::regclass::text, c.conname
FROM pg_constraint c
WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
  AND NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = c.conrelid
      AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
      AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)`
	// The check itself must see an unindexed foreign key.
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE fk_probe (user_id uuid REFERENCES users (id))`); err != nil {
		t.Fatal(err)
	}
	var probe []string
	rows, err = db.Pool.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var table, fk string
		if err := rows.Scan(&table, &fk); err != nil {
			t.Fatal(err)
		}
		probe = append(probe, table)
	}
	if len(probe) != 1 || probe[0] != "fk_probe" {
		t.Fatalf("unindexed-FK query found %v, want [fk_probe]", probe)
	}
	if _, err := db.Pool.Exec(ctx, `DROP TABLE fk_probe`); err != nil {
		t.Fatal(err)
	}

	rows, err = db.Pool.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, fk string
		if err := rows.Scan(&table, &fk); err != nil {
			t.Fatal(err)
		}
		t.Errorf("foreign key %s on %s has no index starting with its columns", fk, table)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// emptyDatabase creates a database with no schema, named prefix and a
// random suffix, CREATE DATABASE taking with (such as an ENCODING), dropped
// in t.Cleanup, and returns its URL.
func emptyDatabase(t *testing.T, prefix, with string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dbtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name := prefix + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+with); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), dbtest.AdminURL())
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	u, err := url.Parse(dbtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// TestMigrateUpConcurrently: several `coreapi migrate up` on one empty
// database at once (the init containers of a rollout) all succeed and apply
// each migration once, because they take turns under an advisory lock.
func TestMigrateUpConcurrently(t *testing.T) {
	ctx := context.Background()
	dbURL := emptyDatabase(t, "coreapi_migrate_race_", "")
	env := envOf(map[string]string{"DATABASE_URL": dbURL})

	const n = 8
	errs := make(chan error, n)
	startGun := make(chan struct{})
	for range n {
		go func() {
			<-startGun
			errs <- run(ctx, []string{"migrate", "up"}, env, io.Discard)
		}()
	}
	close(startGun)
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("concurrent migrate up: %v", err)
		}
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := schema.Check(ctx, pool); err != nil {
		t.Fatalf("schema after concurrent migrate up: %v", err)
	}
	var applied, distinct int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0`).Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	// The SQL files and the migrations in Go.
	sqlDB := stdlib.OpenDBFromPool(pool)
	defer sqlDB.Close()
	p, err := migrations.NewProvider(sqlDB)
	if err != nil {
		t.Fatal(err)
	}
	all := len(p.ListSources())
	files, err := fs.Glob(migrations.FS, migrations.Dir+"/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if all <= len(files) {
		t.Errorf("%d migrations for %d SQL files: the migrations in Go are missing", all, len(files))
	}
	if applied != distinct || applied != all {
		t.Errorf("goose_db_version has %d rows for %d versions, want each of the %d migrations once", applied, distinct, all)
	}
}

// TestMigrateUpRefusesANonUTF8Database: migration 00012 needs a UTF8
// database (a cluster made by initdb in the C locale has SQL_ASCII ones).
// On another, `migrate up` from the first release's schema (00002) stops
// before it applies anything: applied one by one up to 00012, migrations
// 00003 to 00011 would stay, 00003 among them, which drops the table the
// first release's sign-in uses, while its pods keep serving and the new
// ones cannot start.
func TestMigrateUpRefusesANonUTF8Database(t *testing.T) {
	ctx := context.Background()
	dbURL := emptyDatabase(t, "coreapi_migrate_ascii_", " TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'")
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	sqlDB := stdlib.OpenDBFromPool(pool)
	defer sqlDB.Close()
	p, err := migrations.NewProvider(sqlDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 2); err != nil {
		t.Fatalf("up to the first release's schema: %v", err)
	}

	var out bytes.Buffer
	err = run(ctx, []string{"migrate", "up"}, envOf(map[string]string{"DATABASE_URL": dbURL}), &out)
	if err == nil || !strings.Contains(err.Error(), "Tollgate needs a UTF8 database") || !strings.Contains(err.Error(), "SQL_ASCII") {
		t.Fatalf("migrate up on a SQL_ASCII database = %v, want the refusal naming UTF8 and SQL_ASCII\n%s", err, out.String())
	}
	var version int64
	if err := pool.QueryRow(ctx, migrations.VersionQuery).Scan(&version); err != nil {
		t.Fatal(err)
	}
	var kept bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('login_failures') IS NOT NULL`).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if version != 2 || !kept {
		t.Errorf("after the refusal: schema version %d, login_failures kept %v; want 2 and true (nothing applied)", version, kept)
	}
}

// TestMigrateKeepsWhenSessionsSignedIn: migration 00007 gives the sessions
// of an older release the time their holder signed in (the session's
// creation: a refresh or a tenant switch authenticates no one), which their
// access tokens carry as auth_time from then on and routes with a
// max_auth_age compare; not the time of the migration, which made a
// session signed in weeks before pass as signed in just now.
func TestMigrateKeepsWhenSessionsSignedIn(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	downTo(t, db, 5)
	const (
		tenant  = "00000000-0000-0000-0000-0000000000aa"
		user    = "00000000-0000-0000-0000-000000000001"
		session = "00000000-0000-0000-0000-0000000000c1"
	)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO tenants (id, name) VALUES ($1, 'T')`, []any{tenant}},
		{`INSERT INTO users (id, email) VALUES ($1, 'ada@example.com')`, []any{user}},
		{`INSERT INTO sessions (id, user_id, tenant_id, created_at, last_used_at, expires_at)
VALUES ($1, $2, $3, now() - interval '20 days', now() - interval '1 minute', now() + interval '10 days')`, []any{session, user, tenant}},
	} {
		if _, err := db.Pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := run(ctx, []string{"migrate", "up"}, env, io.Discard); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	var signedIn bool
	var authTime string
	if err := db.Pool.QueryRow(ctx, `SELECT auth_time = created_at, auth_time::text FROM sessions WHERE id = $1`, session).Scan(&signedIn, &authTime); err != nil {
		t.Fatal(err)
	}
	if !signedIn {
		t.Errorf("session's auth_time after the migration: %s, want its creation, 20 days ago", authTime)
	}
}

// addressRig is the rig of a migration that rewrites stored addresses,
// on a database taken down to the version before it.
type addressRig struct {
	t   *testing.T
	db  *dbtest.DB
	env func(string) string
}

func (r addressRig) exec(q string, args ...any) {
	r.t.Helper()
	if _, err := r.db.Pool.Exec(context.Background(), q, args...); err != nil {
		r.t.Fatalf("%s: %v", q, err)
	}
}

// beside stores, besides the users, the addresses such a migration
// rewrites: tenant's invitations b1, b2 and b3, pending, to inv[0],
// inv[1] and inv[2], and b4, accepted, to inv[1]; a verification token of
// user to token; an identity of user with the address identity.
func (r addressRig) beside(tenant, user string, inv [3]string, token, identity string) {
	r.t.Helper()
	r.exec(`INSERT INTO tenants (id, name) VALUES ($1, 'T')`, tenant)
	r.exec(`INSERT INTO invitations (id, tenant_id, email, roles, token_hash, status, expires_at) VALUES
('00000000-0000-0000-0000-0000000000b1', $1, $2, '{member}', '\x01', 'pending', now() + interval '1 day'),
('00000000-0000-0000-0000-0000000000b2', $1, $3, '{member}', '\x02', 'pending', now() + interval '1 day'),
('00000000-0000-0000-0000-0000000000b3', $1, $4, '{member}', '\x03', 'pending', now() + interval '1 day'),
('00000000-0000-0000-0000-0000000000b4', $1, $3, '{member}', '\x04', 'accepted', now())`,
		tenant, inv[0], inv[1], inv[2])
	r.exec(`INSERT INTO action_tokens (token_hash, purpose, user_id, email, expires_at) VALUES ('\x01', 'verify_email', $1, $2, now() + interval '1 hour')`,
		user, token)
	r.exec(`INSERT INTO identities (user_id, provider, subject, email) VALUES ($1, 'p', 's', $2)`, user, identity)
}

// up runs `coreapi migrate up` and returns its output.
func (r addressRig) up() *bytes.Buffer {
	r.t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"migrate", "up"}, r.env, &out); err != nil {
		r.t.Fatalf("migrate up: %v\n%s", err, out.String())
	}
	return &out
}

// email is the address q selects for id.
func (r addressRig) email(q, id string) string {
	r.t.Helper()
	var e string
	if err := r.db.Pool.QueryRow(context.Background(), q, id).Scan(&e); err != nil {
		r.t.Fatalf("%s [%s]: %v", q, id, err)
	}
	return e
}

// TestMigrateEmailsToNFC: migration 00012 rewrites the stored addresses of
// an older release in NFC, except a row whose NFC form another row's
// address already is: that row is left as it was and reported in the
// output of `migrate up`, and normalize_emails() finishes the rewrite once
// the operator resolved the duplicate.
func TestMigrateEmailsToNFC(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	downTo(t, db, 11)
	const (
		alone      = "00000000-0000-0000-0000-000000000001" // NFD, no other spelling: rewritten
		zoeNFC     = "00000000-0000-0000-0000-000000000002" // NFC: keeps its address
		zoeNFD     = "00000000-0000-0000-0000-000000000003" // NFD of zoeNFC's, verified and older: left
		tranOld    = "00000000-0000-0000-0000-000000000004" // unverified, older: left
		tranVerifd = "00000000-0000-0000-0000-000000000005" // verified: gets the NFC spelling
		tenant     = "00000000-0000-0000-0000-0000000000aa"
	)
	r := addressRig{t: t, db: db, env: env}
	exec := r.exec
	exec(`INSERT INTO users (id, email, email_verified_at, created_at) VALUES
($1, $6, NULL, now()),
($2, $7, NULL, now()),
($3, $8, now(), now() - interval '1 day'),
($4, $9, NULL, now() - interval '1 day'),
($5, $10, now(), now())`,
		alone, zoeNFC, zoeNFD, tranOld, tranVerifd,
		"jose\u0301@example.com", "zo\u00eb@example.com", "ZOE\u0308@example.com",
		"tra\u0323\u0302n@example.com", "tra\u0302\u0323n@example.com") // both orders of the marks compose to U+1EAD
	r.beside(tenant, alone, [3]string{"jose\u0301@example.com", "ana\u0308@example.com", "an\u00e4@example.com"}, "ne\u0301w@example.com", "JOSE\u0301@example.com")
	out := r.up()
	exec, email := r.exec, r.email
	const qUser, qInv = `SELECT email FROM users WHERE id = $1`, `SELECT email FROM invitations WHERE id = $1`
	for id, want := range map[string]string{
		alone:      "jos\u00e9@example.com",
		zoeNFC:     "zo\u00eb@example.com",
		zoeNFD:     "ZOE\u0308@example.com",
		tranOld:    "tra\u0323\u0302n@example.com",
		tranVerifd: "tr\u1eadn@example.com",
	} {
		if got := email(qUser, id); got != want {
			t.Errorf("users %s: %+q, want %+q", id, got, want)
		}
	}
	for id, want := range map[string]string{
		"00000000-0000-0000-0000-0000000000b1": "jos\u00e9@example.com",
		"00000000-0000-0000-0000-0000000000b2": "ana\u0308@example.com", // left: b3 is pending to its NFC form
		"00000000-0000-0000-0000-0000000000b3": "an\u00e4@example.com",
		"00000000-0000-0000-0000-0000000000b4": "an\u00e4@example.com", // not pending: no uniqueness
	} {
		if got := email(qInv, id); got != want {
			t.Errorf("invitations %s: %+q, want %+q", id, got, want)
		}
	}
	if got := email(`SELECT email FROM action_tokens WHERE user_id = $1`, alone); got != "n\u00e9w@example.com" {
		t.Errorf("action token: %+q", got)
	}
	if got := email(`SELECT email FROM identities WHERE user_id = $1`, alone); got != "JOS\u00c9@example.com" {
		t.Errorf("identity: %+q", got)
	}
	// Every row left is reported, naming the row that has its NFC form.
	for _, want := range []string{
		"WARNING: normalize_emails: users " + zoeNFD, "address of users " + zoeNFC,
		"WARNING: normalize_emails: users " + tranOld, "address of users " + tranVerifd,
		"WARNING: normalize_emails: invitations 00000000-0000-0000-0000-0000000000b2",
		"address of pending invitations 00000000-0000-0000-0000-0000000000b3 of the same tenant",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate up output lacks %q:\n%s", want, out.String())
		}
	}
	if n := strings.Count(out.String(), "WARNING"); n != 3 {
		t.Errorf("%d warnings, want 3:\n%s", n, out.String())
	}

	// Migration 00051 withdrew the left invitation (b3 is pending to its
	// address): withdrawn, it is rewritten by the next run.
	if got := email(`SELECT status FROM invitations WHERE id = $1`, "00000000-0000-0000-0000-0000000000b2"); got != "revoked" {
		t.Errorf("the left invitation is %s after 00051, want revoked", got)
	}
	// The operator resolves a duplicate, then runs the function again.
	exec(`DELETE FROM users WHERE id = $1`, zoeNFC)
	var left int
	if err := db.Pool.QueryRow(ctx, `SELECT normalize_emails()`).Scan(&left); err != nil || left != 1 {
		t.Fatalf("normalize_emails() = %d, %v; want 1 left (the other duplicate account)", left, err)
	}
	if got := email(qInv, "00000000-0000-0000-0000-0000000000b2"); got != "an\u00e4@example.com" {
		t.Errorf("the withdrawn invitation after the run: %+q", got)
	}
	if got := email(qUser, zoeNFD); got != "ZO\u00cb@example.com" {
		t.Errorf("users %s after its duplicate went: %+q", zoeNFD, got)
	}
}

// TestMigrateAddressesToOneSpelling: migration 00044 rewrites the stored
// addresses of an older release with their domain in its one spelling
// (Unicode, lower case, no trailing dot), except a row whose canonical
// form another row's address already is: that row is left as it was and
// reported in the output of `migrate up`, and `migrate addresses`
// finishes the rewrite once the operator resolved the duplicate.
func TestMigrateAddressesToOneSpelling(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	downTo(t, db, 43)
	const (
		ada     = "00000000-0000-0000-0000-000000000001" // Punycode, alone: rewritten
		bo      = "00000000-0000-0000-0000-000000000002" // upper case and a trailing dot: rewritten
		cy      = "00000000-0000-0000-0000-000000000003" // an ideographic full stop: rewritten
		zoeUni  = "00000000-0000-0000-0000-000000000004" // canonical: keeps its address
		zoePuny = "00000000-0000-0000-0000-000000000005" // zoeUni's in Punycode, verified and older: left
		eveOld  = "00000000-0000-0000-0000-000000000006" // unverified, older: left
		eveVerd = "00000000-0000-0000-0000-000000000007" // verified: gets the canonical spelling
		plain   = "00000000-0000-0000-0000-000000000008" // ASCII, canonical: not touched
		under   = "00000000-0000-0000-0000-000000000009" // a domain IDNA refuses: loses its trailing dot
		tenant  = "00000000-0000-0000-0000-0000000000aa"
	)
	r := addressRig{t: t, db: db, env: env}
	exec := r.exec
	exec(`INSERT INTO users (id, email, email_verified_at, created_at, updated_at) VALUES
($1, $10, now(), now(), now() - interval '1 year'),
($2, $11, NULL, now(), now() - interval '1 year'),
($3, $12, NULL, now(), now() - interval '1 year'),
($4, $13, NULL, now(), now() - interval '1 year'),
($5, $14, now(), now() - interval '1 day', now() - interval '1 year'),
($6, $15, NULL, now() - interval '1 day', now() - interval '1 year'),
($7, $16, now(), now(), now() - interval '1 year'),
($8, $17, NULL, now(), now() - interval '1 year'),
($9, $18, NULL, now(), now() - interval '1 year')`,
		ada, bo, cy, zoeUni, zoePuny, eveOld, eveVerd, plain, under,
		"ada@xn--bcher-kva.example", "Bo@Example.COM.", "cy@b\u00fccher\u3002example",
		"zoe@b\u00fccher.example", "Zoe@XN--BCHER-KVA.example",
		"eve@xn--bcher-kva.example", "EVE@B\u00dcCHER.example.",
		"plain@example.com", "und@Under_Score.example.")
	r.beside(tenant, ada, [3]string{"al@xn--bcher-kva.example.", "ivy@xn--bcher-kva.example", "ivy@b\u00fccher.example"}, "new@xn--bcher-kva.example", "ADA@XN--BCHER-KVA.EXAMPLE")
	out := r.up()
	exec, email := r.exec, r.email
	const qUser, qInv = `SELECT email FROM users WHERE id = $1`, `SELECT email FROM invitations WHERE id = $1`
	for id, want := range map[string]string{
		ada:     "ada@b\u00fccher.example",
		bo:      "Bo@example.com",
		cy:      "cy@b\u00fccher.example",
		zoeUni:  "zoe@b\u00fccher.example",
		zoePuny: "Zoe@XN--BCHER-KVA.example",
		eveOld:  "eve@xn--bcher-kva.example",
		eveVerd: "EVE@b\u00fccher.example",
		plain:   "plain@example.com",
		under:   "und@Under_Score.example",
	} {
		if got := email(qUser, id); got != want {
			t.Errorf("users %s: %+q, want %+q", id, got, want)
		}
	}
	var touched int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE updated_at > now() - interval '1 hour'`).Scan(&touched); err != nil || touched != 5 {
		t.Errorf("%d users updated (%v), want the 5 rewritten", touched, err)
	}
	for id, want := range map[string]string{
		"00000000-0000-0000-0000-0000000000b1": "al@b\u00fccher.example",
		"00000000-0000-0000-0000-0000000000b2": "ivy@xn--bcher-kva.example", // left: b3 is pending to its canonical form
		"00000000-0000-0000-0000-0000000000b3": "ivy@b\u00fccher.example",
		"00000000-0000-0000-0000-0000000000b4": "ivy@b\u00fccher.example", // not pending: no uniqueness
	} {
		if got := email(qInv, id); got != want {
			t.Errorf("invitations %s: %+q, want %+q", id, got, want)
		}
	}
	if got := email(`SELECT email FROM action_tokens WHERE user_id = $1`, ada); got != "new@b\u00fccher.example" {
		t.Errorf("action token: %+q", got)
	}
	if got := email(`SELECT email FROM identities WHERE user_id = $1`, ada); got != "ADA@b\u00fccher.example" {
		t.Errorf("identity: %+q", got)
	}
	// Every row left is reported, naming the row that has its canonical form.
	for _, want := range []string{
		"WARNING: rewrite_addresses: users " + zoePuny + " keeps its address 'Zoe@XN--BCHER-KVA.example'",
		"its canonical form 'Zoe@b\u00fccher.example' is the address of users " + zoeUni,
		"WARNING: rewrite_addresses: users " + eveOld, "address of users " + eveVerd,
		"WARNING: rewrite_addresses: invitations 00000000-0000-0000-0000-0000000000b2",
		"address of pending invitations 00000000-0000-0000-0000-0000000000b3 of the same tenant",
		"(Go) rewrite_addresses",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate up output lacks %q:\n%s", want, out.String())
		}
	}
	if n := strings.Count(out.String(), "WARNING"); n != 3 {
		t.Errorf("%d warnings, want 3:\n%s", n, out.String())
	}
	if err := schema.Check(ctx, db.Pool); err != nil {
		t.Errorf("schema after migrate up: %v", err)
	}
	// The proxies' cached projections carry the address: each account
	// rewritten is announced on its subject, as an email change is.
	announced := func(id string) int {
		t.Helper()
		var n int
		const q = `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`
		if err := db.Pool.QueryRow(ctx, q, invalidation.UserSubject(id), invalidation.ReasonUserEmailChanged).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, id := range []string{ada, bo, cy, zoeUni, zoePuny, eveOld, eveVerd, plain, under} {
		want := 0
		if id == ada || id == bo || id == cy || id == eveVerd || id == under {
			want = 1
		}
		if n := announced(id); n != want {
			t.Errorf("users %s: %d invalidations after migrate up, want %d", id, n, want)
		}
	}

	// The operator resolves a duplicate, then runs the rewrite again.
	exec(`DELETE FROM users WHERE id = $1`, zoeUni)
	out.Reset()
	if err := run(ctx, []string{"migrate", "addresses"}, env, out); err != nil {
		t.Fatalf("migrate addresses: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "addresses: 1 rewritten, 2 left") || strings.Count(out.String(), "WARNING") != 2 {
		t.Errorf("migrate addresses output:\n%s", out.String())
	}
	if got := email(qUser, zoePuny); got != "Zoe@b\u00fccher.example" {
		t.Errorf("users %s after its duplicate went: %+q", zoePuny, got)
	}
	if n := announced(zoePuny); n != 1 {
		t.Errorf("users %s: %d invalidations after migrate addresses, want 1", zoePuny, n)
	}

	// Down changes nothing: each canonical spelling is the same address.
	downTo(t, db, 43)
	if got := email(qUser, ada); got != "ada@b\u00fccher.example" {
		t.Errorf("users %s after down: %+q", ada, got)
	}
}

// TestMigrateAddressesNamesAnUnexplainedDuplicate: a row left for a unique
// violation that no holders query explains (here a unique index an
// operator added on identities) is reported as a taken address, naming
// the index, not as an address too long.
func TestMigrateAddressesNamesAnUnexplainedDuplicate(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	const user = "00000000-0000-0000-0000-000000000001"
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO users (id, email) VALUES ($1, $2)`, []any{user, "ada@b\u00fccher.example"}},
		{`INSERT INTO identities (user_id, provider, subject, email) VALUES ($1, 'p', 's1', $2), ($1, 'p', 's2', $3)`,
			[]any{user, "ada@b\u00fccher.example", "ADA@XN--BCHER-KVA.EXAMPLE"}},
		{`CREATE UNIQUE INDEX identities_email_test_key ON identities (lower(email))`, nil},
	} {
		if _, err := db.Pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "addresses"}, env, &out); err != nil {
		t.Fatalf("migrate addresses: %v\n%s", err, out.String())
	}
	want := "WARNING: rewrite_addresses: identities "
	reason := "its canonical form 'ADA@b\u00fccher.example' is taken (identities_email_test_key)"
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), reason) || strings.Contains(out.String(), "too long") {
		t.Errorf("migrate addresses output, want %q with %q:\n%s", want, reason, out.String())
	}
	if !strings.Contains(out.String(), "addresses: 0 rewritten, 1 left") {
		t.Errorf("migrate addresses output:\n%s", out.String())
	}
}

// TestMigrateAddressesNamesAnNFCHolder: `migrate addresses` leaves a
// pending invitation whose canonical form is, in NFC, the address of
// another pending invitation of its tenant (one stored decomposed by a pod
// of an earlier release), which the unique index compares in NFC since
// migration 00051, and names that invitation in its report, as it names
// the holder of any other taken address; it compared lower(email) of the
// stored spellings, found no holder and named only the index. Neither
// becomes a second pending invitation to the address.
func TestMigrateAddressesNamesAnNFCHolder(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	const (
		tenant = "00000000-0000-0000-0000-0000000000aa"
		holder = "00000000-0000-0000-0000-0000000000c1" // NFD, its domain ASCII and canonical: not a candidate
		dotted = "00000000-0000-0000-0000-0000000000c2" // NFC, its domain with a trailing dot: left
	)
	r := addressRig{t: t, db: db, env: env}
	r.exec(`INSERT INTO tenants (id, name) VALUES ($1, 'T')`, tenant)
	r.exec(`INSERT INTO invitations (id, tenant_id, email, roles, token_hash, status, expires_at) VALUES
($1, $3, $4, '{member}', '\x01', 'pending', now() + interval '1 day'),
($2, $3, $5, '{member}', '\x02', 'pending', now() + interval '1 day')`,
		holder, dotted, tenant, "jose\u0301@example.com", "jos\u00e9@example.com.")
	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "addresses"}, env, &out); err != nil {
		t.Fatalf("migrate addresses: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"WARNING: rewrite_addresses: invitations " + dotted,
		"its canonical form 'jos\u00e9@example.com' is the address of pending invitations " + holder + " of the same tenant",
		"addresses: 0 rewritten, 1 left",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate addresses output lacks %q:\n%s", want, out.String())
		}
	}
	var pending int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM invitations WHERE tenant_id = $1 AND status = 'pending'
AND lower(normalize(email, NFC)) = lower($2)`, tenant, "jos\u00e9@example.com").Scan(&pending); err != nil || pending != 1 {
		t.Errorf("%d pending invitations to the NFC address (%v), want 1", pending, err)
	}
}

// TestMigrateRevokesFormerMembersKeys: migration 00013 revokes the live API
// keys an older release left to members removed from their tenant (each
// audited and announced as a removal now does), and nothing else.
func TestMigrateRevokesFormerMembersKeys(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	downTo(t, db, 12)
	const (
		tenant  = "00000000-0000-0000-0000-0000000000aa"
		other   = "00000000-0000-0000-0000-0000000000bb"
		member  = "00000000-0000-0000-0000-000000000001"
		removed = "00000000-0000-0000-0000-000000000002"
	)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO tenants (id, name) VALUES ($1, 'T'), ($2, 'O')`, tenant, other)
	exec(`INSERT INTO users (id, email) VALUES ($1, 'm@example.com'), ($2, 'r@example.com')`, member, removed)
	// removed left tenant but is still a member of other.
	exec(`INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2), ($3, $4)`, tenant, member, other, removed)
	exec(`INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, secret_hash, revoked_at) VALUES
('aaaaaaaaaaaaaaa1', $1, $2, 'tenant', 'kept', decode(repeat('01', 32), 'hex'), NULL),
('aaaaaaaaaaaaaaa2', $1, $3, 'tenant', 'orphan', decode(repeat('02', 32), 'hex'), NULL),
('aaaaaaaaaaaaaaa3', $1, $3, 'personal', 'orphan personal', decode(repeat('03', 32), 'hex'), NULL),
('aaaaaaaaaaaaaaa4', $1, $3, 'tenant', 'revoked before', decode(repeat('04', 32), 'hex'), now() - interval '1 day'),
('aaaaaaaaaaaaaaa5', $4, $3, 'tenant', 'still a member there', decode(repeat('05', 32), 'hex'), NULL)`,
		tenant, member, removed, other)

	if err := run(ctx, []string{"migrate", "up"}, env, io.Discard); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	rows, err := db.Pool.Query(ctx, `SELECT public_id FROM api_keys WHERE revoked_at IS NULL ORDER BY public_id`)
	if err != nil {
		t.Fatal(err)
	}
	live, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(live, ",") != "aaaaaaaaaaaaaaa1,aaaaaaaaaaaaaaa5" {
		t.Fatalf("live keys after the migration: %v; want the member's and the one where its creator is still a member", live)
	}
	var audited, announced int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked' AND tenant_id = $1
AND data->>'via' = 'member.removed' AND data->>'public_id' IN ('aaaaaaaaaaaaaaa2', 'aaaaaaaaaaaaaaa3')`, tenant).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE payload->>'reason' = 'api_key.revoked'
AND subject IN ('auth.invalidate.apikey.aaaaaaaaaaaaaaa2', 'auth.invalidate.apikey.aaaaaaaaaaaaaaa3')`).Scan(&announced); err != nil {
		t.Fatal(err)
	}
	var total int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked'`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if audited != 2 || announced != 2 || total != 2 {
		t.Fatalf("audit rows %d (of %d in all), outbox rows %d; want one each for the two revoked keys", audited, total, announced)
	}
}

// TestMigrateInvitationRolesToIDs: migration 00040 gives each pending
// invitation the roles its names are in its tenant (not another tenant's
// role of that name), reports one naming a role that no longer exists,
// leaves invitations no longer pending alone, and resolves the names of an
// invitation inserted afterwards with names only (as the previous release,
// serving during a rolling upgrade, inserts them). Down, a pending
// invitation names the roles it holds then.
func TestMigrateInvitationRolesToIDs(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	downTo(t, db, 31)
	const (
		tenant   = "00000000-0000-0000-0000-0000000000aa"
		other    = "00000000-0000-0000-0000-0000000000bb"
		auditor  = "00000000-0000-0000-0000-0000000000a1"
		member   = "00000000-0000-0000-0000-0000000000a2"
		elsewhre = "00000000-0000-0000-0000-0000000000b1" // other's auditor
		named    = "00000000-0000-0000-0000-0000000000c1" // pending, both roles exist
		gone     = "00000000-0000-0000-0000-0000000000c2" // pending, names a deleted role
		accepted = "00000000-0000-0000-0000-0000000000c3"
		later    = "00000000-0000-0000-0000-0000000000c4" // inserted after the migration, names only
	)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	roleIDs := func(inv string) string {
		t.Helper()
		var ids string
		if err := db.Pool.QueryRow(ctx, `SELECT coalesce(string_agg(role_id::text, ',' ORDER BY role_id), '')
FROM invitation_roles WHERE invitation_id = $1`, inv).Scan(&ids); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	exec(`INSERT INTO tenants (id, name) VALUES ($1, 'T'), ($2, 'O')`, tenant, other)
	exec(`INSERT INTO roles (id, tenant_id, name, builtin) VALUES ($1, $4, 'auditor', false), ($2, $4, 'member', true), ($3, $5, 'auditor', false)`,
		auditor, member, elsewhre, tenant, other)
	exec(`INSERT INTO invitations (id, tenant_id, email, roles, token_hash, status, expires_at) VALUES
($1, $4, 'a@example.com', '{auditor,member}', '\x01', 'pending', now() + interval '1 day'),
($2, $4, 'b@example.com', '{gone,member}', '\x02', 'pending', now() + interval '1 day'),
($3, $4, 'c@example.com', '{auditor}', '\x03', 'accepted', now())`, named, gone, accepted, tenant)

	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "up"}, env, &out); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out.String())
	}
	for inv, want := range map[string]string{named: auditor + "," + member, gone: member, accepted: ""} {
		if got := roleIDs(inv); got != want {
			t.Errorf("invitation %s holds roles %q, want %q", inv, got, want)
		}
	}
	if want := "NOTICE: invitation_roles: pending invitation " + gone + " names roles that no longer exist (gone)"; !strings.Contains(out.String(), want) {
		t.Errorf("migrate up output lacks %q:\n%s", want, out.String())
	}
	if n := strings.Count(out.String(), "invitation_roles:"); n != 1 {
		t.Errorf("%d invitations reported, want 1:\n%s", n, out.String())
	}

	exec(`INSERT INTO invitations (id, tenant_id, email, roles, token_hash, expires_at) VALUES ($1, $2, 'd@example.com', '{auditor}', '\x04', now() + interval '1 day')`, later, tenant)
	if got := roleIDs(later); got != auditor {
		t.Errorf("invitation inserted with names only holds roles %q, want %q", got, auditor)
	}

	// The role renamed, then the migration undone.
	exec(`UPDATE roles SET name = 'reviewer' WHERE id = $1`, auditor)
	downTo(t, db, 31)
	for inv, want := range map[string]string{named: "{member,reviewer}", gone: "{member}", accepted: "{auditor}", later: "{reviewer}"} {
		var got string
		if err := db.Pool.QueryRow(ctx, `SELECT roles::text FROM invitations WHERE id = $1`, inv).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("after down, invitation %s names %s, want %s", inv, got, want)
		}
	}
}

// TestMigrateOnePendingInvitationPerNFCAddress: migration 00051 makes the
// one-pending-invitation-per-address index compare the address as the
// queries do, in NFC and then lower case. Of each group of pending
// invitations of one tenant to one address in several normal forms
// (which the index on lower(email) let through), the one sent or resent
// last stays pending and the others are withdrawn, each audited; other
// tenants' invitations, withdrawn ones and other addresses stay as they
// were. After it, a second pending spelling of an address is refused.
func TestMigrateOnePendingInvitationPerNFCAddress(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	downTo(t, db, 50)
	const (
		tenant = "00000000-0000-0000-0000-0000000000aa"
		other  = "00000000-0000-0000-0000-0000000000bb"
		joseD  = "00000000-0000-0000-0000-0000000000c1" // NFD, newer, sent before joseC's resend: withdrawn
		joseC  = "00000000-0000-0000-0000-0000000000c2" // NFC, older, resent last: kept
		joseR  = "00000000-0000-0000-0000-0000000000c3" // NFD, revoked: stays so
		tranA  = "00000000-0000-0000-0000-0000000000d1" // three spellings of one address: the newest kept
		tranB  = "00000000-0000-0000-0000-0000000000d2"
		tranC  = "00000000-0000-0000-0000-0000000000d3"
		alone  = "00000000-0000-0000-0000-0000000000e1" // another address: stays
		elsewh = "00000000-0000-0000-0000-0000000000f1" // NFD in the other tenant: stays
	)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO tenants (id, name) VALUES ($1, 'T'), ($2, 'O')`, tenant, other)
	const (
		joseNFD, joseNFC            = "jose\u0301@example.com", "jos\u00e9@example.com"
		tranNFD1, tranNFD2, tranNFC = "tra\u0323\u0302n@example.com", "tra\u0302\u0323n@example.com", "tr\u1eadn@example.com"
	)
	exec(`INSERT INTO invitations (id, tenant_id, email, roles, token_hash, status, created_at, expires_at) VALUES
($1, $9, $11, '{member}', '\x01', 'pending', now() - interval '1 day', now() + interval '6 days'),
($2, $9, $12, '{member}', '\x02', 'pending', now() - interval '2 days', now() + interval '7 days'),
($3, $9, $11, '{member}', '\x03', 'revoked', now() - interval '3 days', now() + interval '4 days'),
($4, $9, $13, '{member}', '\x04', 'pending', now() - interval '3 days', now() + interval '4 days'),
($5, $9, $14, '{member}', '\x05', 'pending', now() - interval '2 days', now() + interval '5 days'),
($6, $9, $15, '{member}', '\x06', 'pending', now() - interval '1 day', now() + interval '6 days'),
($7, $9, 'zoe@example.com', '{member}', '\x07', 'pending', now(), now() + interval '7 days'),
($8, $10, $11, '{member}', '\x08', 'pending', now(), now() + interval '7 days')`,
		joseD, joseC, joseR, tranA, tranB, tranC, alone, elsewh, tenant, other, joseNFD, joseNFC, tranNFD1, tranNFD2, tranNFC)

	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "up"}, env, &out); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out.String())
	}
	status := func(id string) string {
		t.Helper()
		var s string
		if err := db.Pool.QueryRow(ctx, `SELECT status FROM invitations WHERE id = $1`, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	kept := map[string]string{joseD: joseC, tranA: tranC, tranB: tranC}
	for id, want := range map[string]string{joseD: "revoked", joseC: "pending", joseR: "revoked", tranA: "revoked", tranB: "revoked",
		tranC: "pending", alone: "pending", elsewh: "pending"} {
		if got := status(id); got != want {
			t.Errorf("invitation %s is %s, want %s", id, got, want)
		}
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE action = 'invitation.revoked' AND target_type = 'invitation'
AND target_id = $1 AND actor_user_id IS NULL AND tenant_id = $2 AND data->>'via' = 'invitation.created' AND data->>'kept' = $3
AND data->>'email' = (SELECT email FROM invitations WHERE id = $1::uuid)`, id, tenant, kept[id]).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1}[kept[id] != ""]; n != want {
			t.Errorf("invitation %s: %d audit rows of its withdrawal, want %d", id, n, want)
		}
	}
	var valid, unique bool
	if err := db.Pool.QueryRow(ctx, `SELECT x.indisvalid, x.indisunique FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
WHERE c.relname = 'invitations_tenant_email_nfc_key'`).Scan(&valid, &unique); err != nil || !valid || !unique {
		t.Fatalf("invitations_tenant_email_nfc_key: valid %v, unique %v, %v", valid, unique, err)
	}
	// Another spelling of a pending invitation's address is a second
	// pending invitation to it: refused, as POST /invitations answers.
	_, err := db.Pool.Exec(ctx, `INSERT INTO invitations (tenant_id, email, roles, token_hash, expires_at)
VALUES ($1, $2, '{member}', '\x09', now() + interval '1 day')`, tenant, "JOSE\u0301@example.com")
	if !isUniqueViolation(err) {
		t.Errorf("a second pending spelling of an address: %v, want a unique violation", err)
	}

	// Down: the index of lower(email) again; the withdrawn stay withdrawn.
	downTo(t, db, 50)
	if got := status(joseD); got != "revoked" {
		t.Errorf("after down, invitation %s is %s", joseD, got)
	}
	var names string
	if err := db.Pool.QueryRow(ctx, `SELECT coalesce(string_agg(indexname, ',' ORDER BY indexname), '') FROM pg_indexes
WHERE indexname IN ('invitations_pending_key', 'invitations_tenant_email_nfc_key')`).Scan(&names); err != nil || names != "invitations_pending_key" {
		t.Errorf("after down, the unique indexes of invitations are %q (%v), want invitations_pending_key", names, err)
	}
}

// isUniqueViolation: err is PostgreSQL's unique_violation (23505).
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// TestMigrateUpGivesWayToALongTransaction: a migration's ALTER TABLE that
// waits for a lock a long transaction holds (a session idle in
// transaction, a long report, a request of an old pod) gives up after
// lock_timeout and is tried again after a pause, so the other sessions'
// queries on that table, which queue behind the waiting ALTER, get
// through meanwhile instead of stalling for as long as the long
// transaction lasts. Two migrate up at once (the init containers of a
// rollout) take turns; one whose context ends stops. Once the long
// transaction ends, migrate up applies everything, each migration once.
func TestMigrateUpGivesWayToALongTransaction(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	downTo(t, db, 23) // 00024 alters oauth_states

	hold := db.Hold(t, `SELECT count(*) FROM oauth_states`)

	// The command's waits, shortened: 100 ms for a lock, then pauses of
	// 10 ms to 100 ms.
	lw := lockWait{timeout: 100 * time.Millisecond, pause: 10 * time.Millisecond, maxPause: 100 * time.Millisecond}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // before the database is dropped, after hold ended
	type migrateUp struct {
		out  outputBuffer
		err  error
		done chan struct{}
	}
	start := func(ctx context.Context) *migrateUp {
		m := &migrateUp{done: make(chan struct{})}
		wg.Go(func() {
			defer close(m.done)
			m.err = migrateWith(ctx, []string{"up"}, env, &m.out, lw)
		})
		return m
	}
	first, second := start(ctx), start(ctx)
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	stopped := start(stopCtx)
	// An ALTER TABLE waits behind hold: counted by its statement, since the
	// other two migrate ups wait too, on the advisory lock the first one
	// holds, and counting those let the probe below pass before any ALTER
	// had queued (nothing then gave up, and nothing said so).
	db.WaitForLockWaitersOn(t, "ALTER TABLE oauth_states", 1)
	// The locks of the test's database as the probe below got through,
	// logged if the test fails.
	var locks bytes.Buffer
	defer func() {
		if t.Failed() {
			t.Logf("locks as the probe got through:\n%s", locks.String())
		}
	}()

	// Each probe waits for the table at most 1 s (far longer than the
	// migration's lock_timeout here), and fails with lock_not_available
	// while it queues behind an ALTER that waits for ever.
	eventually.Within(t, 30*time.Second, func() error {
		return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '1s'`); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM oauth_states`).Scan(&n); err != nil {
				return fmt.Errorf("a query on oauth_states while the migration waits: %w", err)
			}
			locks.Reset()
			rows, err := db.Pool.Query(ctx, `
SELECT l.pid, l.locktype, coalesce(l.relation::regclass::text, ''), l.mode, l.granted, a.state, coalesce(a.wait_event_type, ''),
       left(regexp_replace(a.query, '\s+', ' ', 'g'), 80)
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND l.locktype IN ('relation', 'advisory')
  AND (l.relation IS NULL OR l.relation::regclass::text NOT LIKE 'pg\_%')`)
			if err != nil {
				fmt.Fprintf(&locks, "pg_locks: %v\n", err)
				return nil
			}
			defer rows.Close()
			for rows.Next() {
				var pid int
				var kind, rel, mode, state, wait, query string
				var granted bool
				if err := rows.Scan(&pid, &kind, &rel, &mode, &granted, &state, &wait, &query); err == nil {
					fmt.Fprintf(&locks, "%d %s %s %s granted=%v %s %s %s\n", pid, kind, rel, mode, granted, state, wait, query)
				}
			}
			return nil
		})
	})

	// The probe got through when a waiting ALTER gave up, which the
	// migrate up that ran it reports once it has read the ALTER's error.
	// The server grants the probe's lock as it sends that error, so the
	// report may come after the probe: wait for it before stopping one, as
	// a migrate up stopped before it read the error ends with
	// context.Canceled and reports nothing (then none did, and the others
	// applied everything without waiting once hold ended).
	outs := func() string { return first.out.String() + second.out.String() + stopped.out.String() }
	const gaveWay = "migrate up: 00024_oauth_max_age.sql waited longer than lock_timeout for a lock"
	eventually.Within(t, 30*time.Second, func() error {
		if o := outs(); !strings.Contains(o, gaveWay) {
			return fmt.Errorf("migrate up output lacks %q:\n%s", gaveWay, o)
		}
		return nil
	})

	// The one whose context ends stops, while hold still holds the table.
	stop()
	<-stopped.done
	if !errors.Is(stopped.err, context.Canceled) {
		t.Errorf("migrate up whose context ended = %v, want context.Canceled", stopped.err)
	}

	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, m := range []*migrateUp{first, second} {
		if m.err != nil {
			t.Fatalf("migrate up: %v\n%s", m.err, m.out.String())
		}
	}
	var version int64
	if err := db.Pool.QueryRow(ctx, migrations.VersionQuery).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != migrations.Latest() {
		t.Errorf("schema version %d after migrate up, want %d\n%s", version, migrations.Latest(), first.out.String())
	}
	if err := schema.Check(ctx, db.Pool); err != nil {
		t.Errorf("schema after migrate up: %v", err)
	}
	var applied, distinct int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0`).Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	if applied != distinct {
		t.Errorf("goose_db_version has %d rows for %d versions, want each migration once", applied, distinct)
	}
}

// outputBuffer is a command's output, read while the command writes it.
type outputBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *outputBuffer) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *outputBuffer) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// TestSetsLockTimeout: migrate up keeps a lock_timeout that DATABASE_URL
// sets, as a parameter of its own or in options (PGOPTIONS too), and sets
// its own otherwise.
func TestSetsLockTimeout(t *testing.T) {
	for _, tc := range []struct {
		name, url, pgoptions string
		want                 bool
	}{
		{"none", "postgres://u@db/tollgate", "", false},
		{"another option", "postgres://u@db/tollgate?options=-c%20statement_timeout%3D1min", "", false},
		{"parameter", "postgres://u@db/tollgate?lock_timeout=30s", "", true},
		{"off", "postgres://u@db/tollgate?lock_timeout=0", "", true},
		{"options", "postgres://u@db/tollgate?options=-c%20lock_timeout%3D30s", "", true},
		{"keywords", "host=db user=u dbname=tollgate lock_timeout=30s", "", true},
		{"PGOPTIONS", "postgres://u@db/tollgate", "-c lock_timeout=30s", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PGOPTIONS", tc.pgoptions)
			cc, err := pgx.ParseConfig(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if got := setsLockTimeout(cc); got != tc.want {
				t.Errorf("setsLockTimeout(%s) = %v, want %v", tc.url, got, tc.want)
			}
		})
	}
}

// TestMigrateDownAndAddressesGiveUpOnALongTransaction: migrate down and
// migrate addresses run with the lock_timeout of migrate up. A statement
// of theirs that waits for a lock a long transaction holds (a report on
// the table a down migration alters, a request that holds an account's
// row) gives up after it, instead of waiting for as long as that
// transaction lasts with every later query on the table queued behind
// it; the command ends with an error that says so, its transaction
// rolled back.
func TestMigrateDownAndAddressesGiveUpOnALongTransaction(t *testing.T) {
	db := dbtest.New(t)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	ctx := context.Background()
	downTo(t, db, 48) // migrate down rolls back 00048, which alters rate_limits
	const ada = "00000000-0000-0000-0000-000000000001"
	if _, err := db.Pool.Exec(ctx, `INSERT INTO users (id, email, created_at, updated_at) VALUES ($1, 'ada@Example.COM', now(), now())`, ada); err != nil {
		t.Fatal(err)
	}
	lw := lockWait{timeout: 100 * time.Millisecond, pause: 10 * time.Millisecond, maxPause: 100 * time.Millisecond}
	for _, tc := range []struct {
		args []string
		hold string
		want string
	}{
		{[]string{"down"}, `SELECT count(*) FROM rate_limits`, "migrate down: 00048_rate_limits_sliding.sql waited longer than lock_timeout"},
		{[]string{"addresses"}, `SELECT id FROM users WHERE id = '` + ada + `' FOR UPDATE`, "migrate addresses: a statement waited longer than lock_timeout"},
	} {
		t.Run(tc.args[0], func(t *testing.T) {
			hold := db.Hold(t, tc.hold)
			var out bytes.Buffer
			done := make(chan error, 1)
			go func() { done <- migrateWith(ctx, tc.args, env, &out, lw) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				// Let it finish before the database is dropped.
				_ = hold.Rollback(ctx)
				<-done
				t.Fatalf("migrate %s still waited for its lock after 10 s, with a lock_timeout of %s", tc.args[0], lw.timeout)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "SQLSTATE 55P03") {
				t.Fatalf("migrate %s behind a long transaction = %v, want an error saying %q", tc.args[0], err, tc.want)
			}
		})
	}
	// Nothing was changed: the schema is still at 00048, the address as
	// it was.
	var version int64
	if err := db.Pool.QueryRow(ctx, migrations.VersionQuery).Scan(&version); err != nil {
		t.Fatal(err)
	}
	var email string
	if err := db.Pool.QueryRow(ctx, `SELECT email FROM users WHERE id = $1`, ada).Scan(&email); err != nil {
		t.Fatal(err)
	}
	if version != 48 || email != "ada@Example.COM" {
		t.Errorf("after the commands gave up: schema version %d, address %q; want 48 and the address unchanged", version, email)
	}
}
