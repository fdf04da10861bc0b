package users

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestPatchMeEmailNeedsTheFactor: PatchMe starts an email change of an
// account with an active second factor only for a session that gave it
// within EmailMaxAge (else ErrNotFreshFactor, nothing written), whatever
// the handler checked before; a session signed in just now with the
// password alone passed. Without a factor a recent password sign-in is
// enough. The factor is looked for with the account's row locked: one
// confirmed while the change waits for the row (a confirmation locks it
// too) is seen, as the deletion of the account sees it.
func TestPatchMeEmailNeedsTheFactor(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	s := NewStore(db.Pool, nil, nil, Limits{})
	tenant := createTenants(t, ctx, db.Pool, "T")[0]
	account := func(email, amr string) identity.Identity {
		t.Helper()
		id := identity.Identity{Principal: identity.PrincipalUser, TenantID: tenant}
		if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email) VALUES ($1) RETURNING id::text`, email).Scan(&id.UserID); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Pool.Exec(ctx, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, tenant, id.UserID); err != nil {
			t.Fatal(err)
		}
		if err := db.Pool.QueryRow(ctx, `
INSERT INTO sessions (user_id, tenant_id, expires_at, token_version, amr, auth_time)
SELECT id, $2, now() + interval '1 day', token_version, $3::text[], now() FROM users WHERE id = $1
RETURNING id::text`, id.UserID, tenant, amr).Scan(&id.SessionID); err != nil {
			t.Fatal(err)
		}
		return id
	}
	const qFactor = `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`
	links := func(userID string) int {
		t.Helper()
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM action_tokens WHERE user_id = $1`, userID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	change := func(id identity.Identity, to string) error {
		_, err := s.PatchMe(ctx, id, MePatch{Email: &to, EmailMaxAge: 5 * time.Minute}, "")
		return err
	}

	pwd := account("pwd@example.com", "{pwd}")
	if _, err := db.Pool.Exec(ctx, qFactor, pwd.UserID); err != nil {
		t.Fatal(err)
	}
	if err := change(pwd, "pwd-new@example.net"); !errors.Is(err, ErrNotFreshFactor) {
		t.Fatalf("password-only session of an account with a factor: %v, want ErrNotFreshFactor", err)
	}
	if n := links(pwd.UserID); n != 0 {
		t.Fatalf("%d links after the refusal", n)
	}

	otp := account("otp@example.com", "{pwd,otp}")
	if _, err := db.Pool.Exec(ctx, qFactor, otp.UserID); err != nil {
		t.Fatal(err)
	}
	if err := change(otp, "otp-new@example.net"); err != nil {
		t.Fatalf("session with the factor: %v", err)
	}

	none := account("none@example.com", "{pwd}")
	if err := change(none, "none-new@example.net"); err != nil {
		t.Fatalf("account without a factor: %v", err)
	}

	// A factor confirmed while the change waits for the account's row.
	racing := account("racing@example.com", "{pwd}")
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, racing.UserID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, qFactor, racing.UserID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- change(racing, "racing-new@example.net") }()
	eventually.Within(t, 30*time.Second, func() error {
		var w int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&w); err != nil {
			return err
		}
		if w < 1 {
			return fmt.Errorf("the change does not wait for the account's row")
		}
		return nil
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrNotFreshFactor) {
		t.Fatalf("factor confirmed while the change waited: %v, want ErrNotFreshFactor", err)
	}
	if n := links(racing.UserID); n != 0 {
		t.Fatalf("%d links after the refusal", n)
	}
}
