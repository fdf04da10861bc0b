package sessions

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

type fixture struct {
	db     *dbtest.DB
	pool   *pgxpool.Pool
	store  *Store
	user   string
	tenant string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	db := dbtest.New(t)
	f := &fixture{db: db, pool: db.Pool, store: New(db.Pool, time.Hour, 10*time.Second)}
	f.user, f.tenant = addMember(t, db.Pool, "a@example.com")
	return f
}

func addMember(t *testing.T, pool *pgxpool.Pool, email string) (user, tenant string) {
	t.Helper()
	ctx := context.Background()
	if err := pool.QueryRow(ctx, `INSERT INTO tenants (name) VALUES ('t') RETURNING id`).Scan(&tenant); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO users (email) VALUES ($1) RETURNING id`, email).Scan(&user); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, tenant, user); err != nil {
		t.Fatal(err)
	}
	return user, tenant
}

func (f *fixture) create(t *testing.T) Issued {
	t.Helper()
	is, err := f.store.Create(context.Background(), f.pool, f.user, f.tenant, "ua", "127.0.0.1")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return is
}

func (f *fixture) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (f *fixture) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// reissue runs Reissue in a transaction of its own.
func (f *fixture) reissue(t *testing.T, userID, sessionID string) (string, error) {
	t.Helper()
	var tok string
	err := pgx.BeginFunc(context.Background(), f.pool, func(tx pgx.Tx) error {
		var err error
		tok, _, err = f.store.Reissue(context.Background(), tx, userID, sessionID)
		return err
	})
	return tok, err
}

func TestCreateStoresOnlyHash(t *testing.T) {
	f := setup(t)
	is := f.create(t)
	if len(is.RefreshToken) != 43 {
		t.Errorf("token length = %d, want 43 (32 bytes base64url)", len(is.RefreshToken))
	}
	if n := f.count(t, `SELECT count(*) FROM refresh_tokens WHERE token_hash = $1 AND session_id = $2`, Hash(is.RefreshToken), is.SessionID); n != 1 {
		t.Errorf("rows with the token's SHA-256 = %d, want 1", n)
	}
	if n := f.count(t, `SELECT count(*) FROM refresh_tokens WHERE position(convert_to($1, 'UTF8') in token_hash) > 0`, is.RefreshToken); n != 0 {
		t.Error("plaintext token found in storage")
	}
}

func TestCreateClipsLongUserAgentOnACharacter(t *testing.T) {
	f := setup(t)
	// 511 ASCII bytes then a 2-byte character: a byte cut at 512 would
	// store half of it, which PostgreSQL refuses.
	ua := strings.Repeat("a", 511) + "é and more"
	is, err := f.store.Create(context.Background(), f.pool, f.user, f.tenant, ua, "127.0.0.1")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	var got string
	if err := f.pool.QueryRow(context.Background(), `SELECT user_agent FROM sessions WHERE id = $1`, is.SessionID).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != strings.Repeat("a", 511) {
		t.Errorf("stored user agent is %d bytes (%q...), want the 511 bytes before the cut character", len(got), got[len(got)-3:])
	}
}

func TestRotate(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	is := f.create(t)
	r, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if r.RefreshToken == is.RefreshToken || len(r.RefreshToken) != 43 {
		t.Errorf("successor = %q, want a new 43-char token", r.RefreshToken)
	}
	if r.SessionID != is.SessionID || r.UserID != f.user || r.TenantID != f.tenant || r.TokenVersion != 0 {
		t.Errorf("rotation = %+v, want session %s user %s tenant %s tv 0", r, is.SessionID, f.user, f.tenant)
	}
	// The successor rotates in turn.
	r2, err := f.store.Rotate(ctx, r.RefreshToken, Presenter{})
	if err != nil {
		t.Fatalf("Rotate successor: %v", err)
	}
	if r2.RefreshToken == r.RefreshToken {
		t.Error("second rotation returned the same token")
	}
	if n := f.count(t, `SELECT count(*) FROM refresh_tokens WHERE session_id = $1`, is.SessionID); n != 3 {
		t.Errorf("tokens in the chain = %d, want 3", n)
	}
}

// TestConcurrentRefreshSameSuccessor: 20 clients (say, browser tabs)
// refresh with the same token at once; all succeed with one successor and
// nobody is logged out.
func TestConcurrentRefreshSameSuccessor(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	is := f.create(t)
	const n = 20
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		got   = make([]Rotation, n)
		errs  = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = f.store.Rotate(ctx, is.RefreshToken, Presenter{})
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("refresh %d: %v", i, errs[i])
		}
		if got[i].RefreshToken != got[0].RefreshToken {
			t.Errorf("refresh %d successor differs from refresh 0's", i)
		}
	}
	if c := f.count(t, `SELECT count(*) FROM refresh_tokens WHERE session_id = $1`, is.SessionID); c != 2 {
		t.Errorf("tokens in the session = %d, want 2 (one rotation)", c)
	}
	if c := f.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, is.SessionID); c != 1 {
		t.Error("session revoked by concurrent refreshes")
	}
	if _, err := f.store.Rotate(ctx, got[0].RefreshToken, Presenter{}); err != nil {
		t.Errorf("the shared successor does not refresh: %v", err)
	}
}

// TestConcurrentRefreshWithoutGraceIsNoReuse: with no grace window
// (REFRESH_REUSE_GRACE=0), two refreshes that both read the token live
// (a client that retries at once, two tabs) race for its rotation:
// exactly one wins, and the other is refused as expired. It presented
// the token before it was rotated, so it is no reuse: it used to revoke
// the session and audit a theft, signing its legitimate holder out with
// the winner's successor in hand. A token presented again after its
// rotation still is reuse.
func TestConcurrentRefreshWithoutGraceIsNoReuse(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.store = New(f.pool, time.Hour, 0)
	is := f.create(t)
	hold, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	// Both refreshes look the token up, then wait for the session's row.
	if _, err := hold.Exec(ctx, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, is.SessionID); err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		got  [2]Rotation
		errs [2]error
	)
	for i := range 2 {
		wg.Go(func() { got[i], errs[i] = f.store.Rotate(ctx, is.RefreshToken, Presenter{}) })
	}
	f.db.WaitForLockWaiters(t, 2)
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won < 0:
			won = i
		case err == nil:
			t.Fatal("both refreshes won the rotation")
		case !errors.Is(err, ErrExpired):
			t.Errorf("the refresh that lost the race: %v, want ErrExpired", err)
		}
	}
	if won < 0 {
		t.Fatalf("no refresh won: %v", errs)
	}
	if c := f.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, is.SessionID); c != 1 {
		t.Fatal("the session was revoked by two refreshes that raced")
	}
	if c := f.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.refresh_token_reused' AND target_id = $1`, is.SessionID); c != 0 {
		t.Errorf("%d reuse audit rows for a race", c)
	}
	if _, err := f.store.Rotate(ctx, got[won].RefreshToken, Presenter{}); err != nil {
		t.Fatalf("the winner's successor: %v", err)
	}
	// Presented again after its rotation, the token is reuse.
	if _, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{}); !errors.Is(err, ErrReused) {
		t.Fatalf("the rotated token presented again: %v, want ErrReused", err)
	}
}

// TestRotateInAnotherTenant: a refresh that names another tenant than its
// session's is ErrOtherTenant and leaves the token as it was, live or in
// its grace window; a token rotated before the grace window is reuse
// whatever tenant the request names.
func TestRotateInAnotherTenant(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	_, other := addMember(t, f.pool, "b@example.com")
	is := f.create(t)
	if _, err := f.store.RotateIn(ctx, is.RefreshToken, other, Presenter{}); !errors.Is(err, ErrOtherTenant) {
		t.Fatalf("RotateIn another tenant: %v, want ErrOtherTenant", err)
	}
	if n := f.count(t, `SELECT count(*) FROM refresh_tokens WHERE token_hash = $1 AND replaced_by IS NULL AND rotated_at IS NULL`, Hash(is.RefreshToken)); n != 1 {
		t.Fatal("a refresh naming another tenant spent the token")
	}
	r, err := f.store.RotateIn(ctx, is.RefreshToken, f.tenant, Presenter{})
	if err != nil || r.TenantID != f.tenant {
		t.Fatalf("RotateIn its own tenant: %+v, %v", r, err)
	}
	// Within the grace window: refused too, the successor not handed out.
	if _, err := f.store.RotateIn(ctx, is.RefreshToken, other, Presenter{}); !errors.Is(err, ErrOtherTenant) {
		t.Fatalf("RotateIn another tenant within the grace: %v, want ErrOtherTenant", err)
	}
	f.exec(t, `UPDATE refresh_tokens SET rotated_at = now() - interval '1 minute' WHERE token_hash = $1`, Hash(is.RefreshToken))
	if _, err := f.store.RotateIn(ctx, is.RefreshToken, other, Presenter{}); !errors.Is(err, ErrReused) {
		t.Fatalf("a token rotated before the grace, naming another tenant: %v, want ErrReused", err)
	}
	if n := f.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_reason = $2`, is.SessionID, ReasonReuse); n != 1 {
		t.Error("the reuse did not end the session")
	}
}

func TestReuseAfterGraceRevokesSession(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	is := f.create(t)
	r, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{})
	if err != nil {
		t.Fatal(err)
	}
	// Inside the grace window the old token yields the same successor.
	again, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{})
	if err != nil || again.RefreshToken != r.RefreshToken {
		t.Fatalf("reuse within grace = %v, %v; want the same successor", again.RefreshToken == r.RefreshToken, err)
	}
	// Move the rotation out of the grace window.
	f.exec(t, `UPDATE refresh_tokens SET rotated_at = now() - interval '1 minute' WHERE token_hash = $1`, Hash(is.RefreshToken))
	thief := Presenter{RequestID: "req-reuse-1", IP: "203.0.113.7"}
	if _, err := f.store.Rotate(ctx, is.RefreshToken, thief); !errors.Is(err, ErrReused) {
		t.Fatalf("reuse after grace = %v, want ErrReused", err)
	}
	var reason string
	if err := f.pool.QueryRow(ctx, `SELECT revoked_reason FROM sessions WHERE id = $1 AND revoked_at IS NOT NULL`, is.SessionID).Scan(&reason); err != nil {
		t.Fatalf("session not revoked: %v", err)
	}
	if reason != ReasonReuse {
		t.Errorf("revoked_reason = %q, want %q", reason, ReasonReuse)
	}
	if c := f.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = 'session.revoked'`, invalidation.UserSubject(f.user)); c != 1 {
		t.Errorf("outbox rows for the user = %d, want 1", c)
	}
	// A theft signal: audited in the session's tenant, with the request
	// that presented the token and its address.
	if c := f.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.refresh_token_reused' AND target_type = 'session'
		AND target_id = $1 AND tenant_id = $2 AND data->>'user_id' = $3
		AND request_id = $4 AND data->>'client_ip' = $5`, is.SessionID, f.tenant, f.user, thief.RequestID, thief.IP); c != 1 {
		t.Errorf("audit rows for the reuse = %d, want 1 with its request id and client IP", c)
	}
	if _, err := f.store.Rotate(ctx, r.RefreshToken, Presenter{}); !errors.Is(err, ErrRevoked) {
		t.Errorf("successor after the session was revoked = %v, want ErrRevoked", err)
	}
}

// TestReuseEndsTheSessionWhateverElseStands: a rotated token presented
// after the grace window is theft whatever else holds at that moment. The
// account, its membership or its tenant being inactive (a member disabled
// while the theft is looked into, a tenant suspended for a while), or the
// token's own lifetime being over, used to answer first: the session
// stayed, and the thief's live successor refreshed again once the member
// or the tenant was active again.
func TestReuseEndsTheSessionWhateverElseStands(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ name, end, undo string }{
		{"membership disabled",
			`UPDATE memberships SET status = 'disabled' WHERE user_id = $1`,
			`UPDATE memberships SET status = 'active' WHERE user_id = $1`},
		{"tenant suspended",
			`UPDATE tenants SET status = 'suspended' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`,
			`UPDATE tenants SET status = 'active' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`},
		{"account disabled",
			`UPDATE users SET status = 'disabled' WHERE id = $1`,
			`UPDATE users SET status = 'active' WHERE id = $1`},
		{"token's lifetime over",
			`UPDATE refresh_tokens SET expires_at = now() - interval '1 second'
			 WHERE replaced_by IS NOT NULL AND session_id IN (SELECT id FROM sessions WHERE user_id = $1)`,
			`SELECT $1::uuid`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			is := f.create(t)
			thief, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{})
			if err != nil {
				t.Fatal(err)
			}
			f.exec(t, `UPDATE refresh_tokens SET rotated_at = now() - interval '1 minute' WHERE token_hash = $1`, Hash(is.RefreshToken))
			f.exec(t, tc.end, f.user)
			if _, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{RequestID: "req-reuse", IP: "203.0.113.7"}); !errors.Is(err, ErrReused) {
				t.Fatalf("rotated token after the grace window = %v, want ErrReused", err)
			}
			if c := f.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_reason = $2`, is.SessionID, ReasonReuse); c != 1 {
				t.Fatal("the session was not revoked for the reuse")
			}
			if c := f.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.refresh_token_reused' AND target_id = $1`, is.SessionID); c != 1 {
				t.Errorf("reuse audit rows = %d, want 1", c)
			}
			f.exec(t, tc.undo, f.user)
			if _, err := f.store.Rotate(ctx, thief.RefreshToken, Presenter{}); !errors.Is(err, ErrRevoked) {
				t.Errorf("the live successor once active again = %v, want ErrRevoked", err)
			}
		})
	}
}

func TestRotateRejects(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	tests := []struct {
		name    string
		prepare func(t *testing.T) string
		want    error
	}{
		{"empty", func(*testing.T) string { return "" }, ErrInvalidToken},
		{"malformed", func(*testing.T) string { return "not-a-token" }, ErrInvalidToken},
		{"bad base64 of the right length", func(*testing.T) string { return "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" }, ErrInvalidToken},
		{"unknown", func(*testing.T) string { tok, _, _ := newToken(); return tok }, ErrInvalidToken},
		{"expired token", func(t *testing.T) string {
			is := f.create(t)
			f.exec(t, `UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE session_id = $1`, is.SessionID)
			return is.RefreshToken
		}, ErrExpired},
		{"expired session", func(t *testing.T) string {
			is := f.create(t)
			f.exec(t, `UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1`, is.SessionID)
			return is.RefreshToken
		}, ErrExpired},
		{"revoked session", func(t *testing.T) string {
			is := f.create(t)
			if n, err := f.store.Revoke(ctx, f.pool, f.user, is.SessionID, ReasonLogout); n != 1 || err != nil {
				t.Fatalf("Revoke = %d, %v", n, err)
			}
			return is.RefreshToken
		}, ErrRevoked},
		{"disabled user", func(t *testing.T) string {
			u, tn := addMember(t, f.pool, "disabled@example.com")
			is, err := f.store.Create(ctx, f.pool, u, tn, "", "")
			if err != nil {
				t.Fatal(err)
			}
			f.exec(t, `UPDATE users SET status = 'disabled' WHERE id = $1`, u)
			return is.RefreshToken
		}, ErrInactive},
		{"removed from tenant", func(t *testing.T) string {
			u, tn := addMember(t, f.pool, "removed@example.com")
			is, err := f.store.Create(ctx, f.pool, u, tn, "", "")
			if err != nil {
				t.Fatal(err)
			}
			f.exec(t, `DELETE FROM memberships WHERE user_id = $1`, u)
			return is.RefreshToken
		}, ErrInactive},
		{"suspended tenant", func(t *testing.T) string {
			u, tn := addMember(t, f.pool, "suspended@example.com")
			is, err := f.store.Create(ctx, f.pool, u, tn, "", "")
			if err != nil {
				t.Fatal(err)
			}
			f.exec(t, `UPDATE tenants SET status = 'suspended' WHERE id = $1`, tn)
			return is.RefreshToken
		}, ErrInactive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := tt.prepare(t)
			if _, err := f.store.Rotate(ctx, tok, Presenter{}); !errors.Is(err, tt.want) {
				t.Errorf("Rotate = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReissueAndMove(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	is := f.create(t)
	_, other := addMember(t, f.pool, "b@example.com")
	f.exec(t, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, other, f.user)

	err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		if err := f.store.MoveTenant(ctx, tx, f.user, is.SessionID, other); err != nil {
			return err
		}
		tok, _, err := f.store.Reissue(ctx, tx, f.user, is.SessionID)
		is.RefreshToken = tok
		return err
	})
	if err != nil {
		t.Fatalf("move + reissue: %v", err)
	}
	r, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{})
	if err != nil {
		t.Fatalf("Rotate reissued token: %v", err)
	}
	if r.TenantID != other {
		t.Errorf("tenant after move = %s, want %s", r.TenantID, other)
	}
	if c := f.count(t, `SELECT count(*) FROM refresh_tokens WHERE session_id = $1 AND replaced_by IS NULL AND expires_at > now()`, is.SessionID); c != 1 {
		t.Errorf("live tokens in the session = %d, want 1", c)
	}
	if _, err := f.reissue(t, "00000000-0000-0000-0000-000000000000", is.SessionID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Reissue by another user = %v, want ErrNotFound", err)
	}
	if err := f.store.MoveTenant(ctx, f.pool, f.user, "nope", other); !errors.Is(err, ErrNotFound) {
		t.Errorf("MoveTenant(bad id) = %v, want ErrNotFound", err)
	}
}

func TestReissueEndsOldToken(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	is := f.create(t)
	if _, err := f.reissue(t, f.user, is.SessionID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{}); !errors.Is(err, ErrExpired) {
		t.Errorf("old token after reissue = %v, want ErrExpired", err)
	}
}

// TestGraceEndsWithReissue: a token rotated moments ago yields its
// successor only while that successor is live. After a reissue (a password
// change keeping the session, a tenant switch) ended it, the old token must
// not open the session again, whoever presents it within the grace window.
func TestGraceEndsWithReissue(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	is := f.create(t)
	if _, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reissue(t, f.user, is.SessionID); err != nil {
		t.Fatal(err)
	}
	if r, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{}); !errors.Is(err, ErrExpired) {
		t.Fatalf("rotated token within the grace window after a reissue = %+v, %v; want ErrExpired", r, err)
	}
	if c := f.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, is.SessionID); c != 1 {
		t.Error("the session was revoked")
	}
}

// TestGraceEndsWithReissueDeeperInTheChain: a reissue ends the whole
// chain, not only its last token. A thief who rotated a stolen token twice
// within the grace window (T0 to T1 to T2) still holds T0, whose successor
// T1 was rotated and so was never ended by the reissue: presented after
// the reissue (a password change keeping the session, a step-up), T0 must
// not yield T1, nor with it an access token of the current token version
// (and of the step-up's second factor) that outlives the reissue.
func TestGraceEndsWithReissueDeeperInTheChain(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	is := f.create(t)
	r1, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f.store.Rotate(ctx, r1.RefreshToken, Presenter{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.reissue(t, f.user, is.SessionID); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"T0": is.RefreshToken, "T1": r1.RefreshToken, "T2": r2.RefreshToken} {
		if r, err := f.store.Rotate(ctx, tok, Presenter{}); !errors.Is(err, ErrExpired) {
			t.Errorf("%s within the grace window after a reissue = %+v, %v; want ErrExpired", name, r, err)
		}
	}
	if c := f.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, is.SessionID); c != 1 {
		t.Error("the session was revoked")
	}
	// Without a reissue, the same chain still yields the successor within
	// the grace window: two tabs that raced a refresh are not signed out.
	g := setup(t)
	js := g.create(t)
	s1, err := g.store.Rotate(ctx, js.RefreshToken, Presenter{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.store.Rotate(ctx, s1.RefreshToken, Presenter{}); err != nil {
		t.Fatal(err)
	}
	if again, err := g.store.Rotate(ctx, js.RefreshToken, Presenter{}); err != nil || again.RefreshToken != s1.RefreshToken {
		t.Fatalf("T0 within grace, no reissue = %v, %v; want its successor", again.RefreshToken == s1.RefreshToken, err)
	}
}

func TestRevokeAllListSweep(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	var ids []string
	for range 5 {
		ids = append(ids, f.create(t).SessionID)
	}
	other, otherTenant := addMember(t, f.pool, "c@example.com")
	if _, err := f.store.Create(ctx, f.pool, other, otherTenant, "", ""); err != nil {
		t.Fatal(err)
	}

	// Keyset pages of 2: 5 sessions, newest first.
	var seen []string
	var cur *Cursor
	for page := 0; ; page++ {
		list, err := f.store.List(ctx, f.user, 2, cur)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if s.UserID != f.user {
				t.Errorf("listed another user's session %s", s.ID)
			}
			seen = append(seen, s.ID)
		}
		if len(list) < 2 || page > 5 {
			break
		}
		last := list[len(list)-1]
		cur = &Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	if len(seen) != 5 {
		t.Errorf("listed %d sessions, want 5", len(seen))
	}

	n, err := f.store.RevokeAll(ctx, f.pool, f.user, ids[0], ReasonPasswordChange)
	if err != nil || n != 4 {
		t.Fatalf("RevokeAll = %d, %v; want 4", n, err)
	}
	list, err := f.store.List(ctx, f.user, 10, nil)
	if err != nil || len(list) != 1 || list[0].ID != ids[0] {
		t.Errorf("after RevokeAll keep: %d sessions, %v; want only %s", len(list), err, ids[0])
	}
	if c := f.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL`, other); c != 1 {
		t.Error("RevokeAll touched another user's session")
	}
	if n, _ := f.store.Revoke(ctx, f.pool, other, ids[0], ReasonRevoked); n != 0 {
		t.Error("a user revoked another user's session")
	}

	f.exec(t, `UPDATE sessions SET revoked_at = now() - interval '2 hours' WHERE id = $1`, ids[1])
	swept, err := f.store.Sweep(ctx, time.Hour)
	if err != nil || swept != 1 {
		t.Errorf("Sweep = %d, %v; want 1", swept, err)
	}
}

// BenchmarkRotate is the database cost of one refresh (lookup + rotation).
func BenchmarkRotate(b *testing.B) {
	ctx := context.Background()
	db := dbtest.New(b)
	var tenant, user string
	_ = db.Pool.QueryRow(ctx, `INSERT INTO tenants (name) VALUES ('t') RETURNING id`).Scan(&tenant)
	_ = db.Pool.QueryRow(ctx, `INSERT INTO users (email) VALUES ('b@example.com') RETURNING id`).Scan(&user)
	_, _ = db.Pool.Exec(ctx, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, tenant, user)
	s := New(db.Pool, time.Hour, 10*time.Second)
	is, err := s.Create(ctx, db.Pool, user, tenant, "", "")
	if err != nil {
		b.Fatal(err)
	}
	tok := is.RefreshToken
	b.ReportAllocs()
	for b.Loop() {
		r, err := s.Rotate(ctx, tok, Presenter{})
		if err != nil {
			b.Fatal(err)
		}
		tok = r.RefreshToken
	}
}

// FuzzDecode: no input panics, and only 43-char base64url strings of 32
// bytes are accepted (and round-trip).
func FuzzDecode(f *testing.F) {
	tok, _, _ := newToken()
	for _, s := range []string{tok, "", "a", strings.Repeat("A", 43), strings.Repeat("/", 43), tok + "="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		raw, ok := decode(s)
		if !ok {
			return
		}
		if len(raw) != tokenBytes || base64.RawURLEncoding.EncodeToString(raw) != s {
			t.Errorf("decode(%q) accepted a non-canonical token", s)
		}
	})
}

// A sign-in that checked the password under token version N opens its
// session after a reset moved the user to N+1 (the race): the session
// cannot be refreshed. Reissue (password change keeps the caller's
// session) restamps the session, so that one stays usable.
func TestSessionOpenedUnderAnOldTokenVersion(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.exec(t, `UPDATE users SET token_version = 1 WHERE id = $1`, f.user)
	stale, err := f.store.CreateAt(ctx, f.pool, f.user, f.tenant, "ua", "ip", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Rotate(ctx, stale.RefreshToken, Presenter{}); !errors.Is(err, ErrRevoked) {
		t.Errorf("refresh of a session opened under an old token version = %v, want ErrRevoked", err)
	}
	// Nor is it live for anything else: a tenant switch (whose Reissue
	// would stamp it anew and hand out a refresh token) and the recent
	// sign-in an email change or a second factor's enrolment asks for.
	_, other := addMember(t, f.pool, "other-tenant@example.com")
	f.exec(t, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, other, f.user)
	if err := f.store.MoveTenant(ctx, f.pool, f.user, stale.SessionID, other); !errors.Is(err, ErrNotFound) {
		t.Errorf("MoveTenant of a session opened under an old token version = %v, want ErrNotFound", err)
	}
	if fresh, err := Fresh(ctx, f.pool, identity.Identity{UserID: f.user, SessionID: stale.SessionID}, time.Hour, false); err != nil || fresh {
		t.Errorf("Fresh of a session opened under an old token version = %v, %v; want false", fresh, err)
	}
	current, err := f.store.CreateAt(ctx, f.pool, f.user, f.tenant, "ua", "ip", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Rotate(ctx, current.RefreshToken, Presenter{}); err != nil {
		t.Errorf("refresh of a current session: %v", err)
	}
	if fresh, err := Fresh(ctx, f.pool, identity.Identity{UserID: f.user, SessionID: current.SessionID}, time.Hour, false); err != nil || !fresh {
		t.Errorf("Fresh of a current session = %v, %v; want true", fresh, err)
	}
	if err := f.store.MoveTenant(ctx, f.pool, f.user, current.SessionID, other); err != nil {
		t.Errorf("MoveTenant of a current session: %v", err)
	}
	// Create stamps the current version; a bump then Reissue keeps it.
	kept := f.create(t)
	f.exec(t, `UPDATE users SET token_version = 2 WHERE id = $1`, f.user)
	tok, err := f.reissue(t, f.user, kept.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := f.store.Rotate(ctx, tok, Presenter{}); err != nil || r.TokenVersion != 2 {
		t.Errorf("refresh after Reissue = %+v, %v; want token version 2", r, err)
	}
	// Sessions from before the column (NULL) are not checked.
	legacy := f.create(t)
	f.exec(t, `UPDATE sessions SET token_version = NULL WHERE id = $1`, legacy.SessionID)
	f.exec(t, `UPDATE users SET token_version = 3 WHERE id = $1`, f.user)
	if _, err := f.store.Rotate(ctx, legacy.RefreshToken, Presenter{}); err != nil {
		t.Errorf("refresh of a session without a stamp: %v", err)
	}
}

// TestRotationRacingReissue: a refresh in flight while a reissue (a
// password change keeping the session, a tenant switch) ends the
// session's tokens must not leave a token that still refreshes: after
// both, only the reissued token works, whichever went first. The
// session's row is held by another transaction until both wait for it.
func TestRotationRacingReissue(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	for round := range 6 {
		reissueFirst := round%2 == 1
		is := f.create(t)
		hold, err := f.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hold.Exec(ctx, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, is.SessionID); err != nil {
			t.Fatal(err)
		}
		var (
			wg       sync.WaitGroup
			rot      Rotation
			rotErr   error
			reissued string
			reErr    error
		)
		rotate := func() { rot, rotErr = f.store.Rotate(ctx, is.RefreshToken, Presenter{}) }
		reissue := func() { reissued, reErr = f.reissue(t, f.user, is.SessionID) }
		first, second := rotate, reissue
		if reissueFirst {
			first, second = reissue, rotate
		}
		wg.Go(first)
		f.db.WaitForLockWaiters(t, 1)
		wg.Go(second)
		f.db.WaitForLockWaiters(t, 2)
		if err := hold.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if reErr != nil {
			t.Fatalf("round %d: reissue: %v", round, reErr)
		}
		if rotErr == nil {
			if r, err := f.store.Rotate(ctx, rot.RefreshToken, Presenter{}); err == nil {
				t.Fatalf("round %d (reissue first: %v): the racing refresh's token still refreshes after the reissue (%+v)", round, reissueFirst, r)
			}
		} else if !errors.Is(rotErr, ErrExpired) {
			t.Fatalf("round %d: racing refresh: %v, want success or ErrExpired", round, rotErr)
		}
		if _, err := f.store.Rotate(ctx, reissued, Presenter{}); err != nil {
			t.Fatalf("round %d: the reissued token: %v", round, err)
		}
	}
}

// TestRotationRacingRevocation: a refresh that read the session as live
// just before a sign-out revoked it must not answer with tokens of the
// ended session.
func TestRotationRacingRevocation(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	is := f.create(t)
	revoke, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer revoke.Rollback(ctx)
	if n, err := f.store.Revoke(ctx, revoke, f.user, is.SessionID, ReasonLogout); n != 1 || err != nil {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	var (
		wg     sync.WaitGroup
		rot    Rotation
		rotErr error
	)
	wg.Go(func() { rot, rotErr = f.store.Rotate(ctx, is.RefreshToken, Presenter{}) })
	f.db.WaitForLockWaiters(t, 1)
	if err := revoke.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if rotErr == nil {
		t.Fatalf("a refresh racing the sign-out succeeded: %+v", rot)
	}
	if _, err := f.store.Rotate(ctx, rot.RefreshToken, Presenter{}); err == nil {
		t.Fatal("a token of the revoked session refreshes")
	}
}

// TestCreateRacingRemoval: a sign-in that checked the membership just
// before the user's removal from the tenant must not leave a live session
// bound to the tenant: the removal ends the member's sessions there for
// good, and this one would refresh again once the user is added back.
// The removal (as users.Remove does it: the membership locked and
// deleted, then the sessions in the tenant revoked) is held uncommitted
// while the session is created.
func TestCreateRacingRemoval(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	remove, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = remove.Rollback(ctx) }()
	if _, err := remove.Exec(ctx, `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`, f.tenant, f.user); err != nil {
		t.Fatal(err)
	}
	if err := RevokeInTenant(ctx, remove, f.user, f.tenant); err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		is      Issued
		cErr    error
		created = make(chan struct{})
	)
	wg.Go(func() {
		defer close(created)
		is, cErr = f.store.CreateAt(ctx, f.pool, f.user, f.tenant, "ua", "ip", 0)
	})
	// The sign-in either waits for the removal or has run past it.
	deadline := time.Now().Add(10 * time.Second)
	for waiting := false; !waiting; {
		select {
		case <-created:
			waiting = true
			continue
		default:
		}
		waiting = f.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) > 0
		if time.Now().After(deadline) {
			t.Fatal("the sign-in neither waited nor finished")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := remove.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if cErr == nil {
		f.exec(t, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, f.tenant, f.user)
		if _, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{}); err == nil {
			t.Fatal("a session created while the user was being removed from its tenant refreshes once the user is added back")
		}
		return
	}
	if !errors.Is(cErr, ErrNoMembership) {
		t.Fatalf("CreateAt racing the removal = %v, want ErrNoMembership or a session the removal ended", cErr)
	}
	if _, err := f.store.Create(ctx, f.pool, f.user, f.tenant, "ua", "ip"); !errors.Is(err, ErrNoMembership) {
		t.Errorf("Create without a membership = %v, want ErrNoMembership", err)
	}
}

// TestReissuedTokenReusedAfterGrace: a reissue (a tenant switch, a
// step-up, a password change keeping the session) hands the session a new
// refresh token and ends the old one, as a rotation does. Presented after
// the grace window, the token it ended is reuse like a rotated one: whoever
// switched the session with a stolen refresh token must not keep it from
// its owner, whose next refresh would otherwise be refused as merely
// expired while the thief's token lives on.
func TestReissuedTokenReusedAfterGrace(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	is := f.create(t)
	next, err := f.reissue(t, f.user, is.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	// Within the grace window: expired, the session stays (another tab of
	// the owner refreshing as the switch happened).
	if _, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{}); !errors.Is(err, ErrExpired) {
		t.Fatalf("reissued token within grace = %v, want ErrExpired", err)
	}
	if c := f.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, is.SessionID); c != 1 {
		t.Fatal("the session was revoked within the grace window")
	}
	f.exec(t, `UPDATE refresh_tokens SET rotated_at = now() - interval '1 minute' WHERE token_hash = $1`, Hash(is.RefreshToken))
	by := Presenter{RequestID: "req-reissued-1", IP: "203.0.113.9"}
	if _, err := f.store.Rotate(ctx, is.RefreshToken, by); !errors.Is(err, ErrReused) {
		t.Fatalf("reissued token after grace = %v, want ErrReused", err)
	}
	var reason string
	if err := f.pool.QueryRow(ctx, `SELECT revoked_reason FROM sessions WHERE id = $1 AND revoked_at IS NOT NULL`, is.SessionID).Scan(&reason); err != nil {
		t.Fatalf("session not revoked: %v", err)
	}
	if reason != ReasonReuse {
		t.Errorf("revoked_reason = %q, want %q", reason, ReasonReuse)
	}
	if c := f.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.refresh_token_reused' AND target_id = $1
		AND request_id = $2 AND data->>'client_ip' = $3`, is.SessionID, by.RequestID, by.IP); c != 1 {
		t.Errorf("audit rows for the reuse = %d, want 1", c)
	}
	if _, err := f.store.Rotate(ctx, next, Presenter{}); !errors.Is(err, ErrRevoked) {
		t.Errorf("the reissued successor after the reuse = %v, want ErrRevoked", err)
	}
	// A token that merely ran out of time is no reuse.
	g := setup(t)
	js := g.create(t)
	g.exec(t, `UPDATE refresh_tokens SET expires_at = now() - interval '1 minute' WHERE token_hash = $1`, Hash(js.RefreshToken))
	if _, err := g.store.Rotate(ctx, js.RefreshToken, Presenter{}); !errors.Is(err, ErrExpired) {
		t.Errorf("expired token = %v, want ErrExpired", err)
	}
	if c := g.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, js.SessionID); c != 1 {
		t.Error("an expired token revoked its session")
	}
}

// TestSessionMaxAge: a session ends SetMaxAge after its creation however
// often it is refreshed or reissued: each refresh moved its end
// REFRESH_TOKEN_TTL on, so a refresh token taken from an owner who stopped
// using it kept the session for ever. No refresh, and no reissue, sets a
// session's or a token's end past that bound; a session older than it
// (one created before the bound was set) is refused as expired.
func TestSessionMaxAge(t *testing.T) {
	ctx := context.Background()
	f := setup(t) // REFRESH_TOKEN_TTL 1h
	f.store.SetMaxAge(90 * time.Minute)
	is := f.create(t)
	bound := `SELECT count(*) FROM sessions s WHERE s.id = $1 AND s.expires_at <= s.created_at + interval '90 minutes'
  AND NOT EXISTS (SELECT 1 FROM refresh_tokens rt WHERE rt.session_id = s.id AND rt.replaced_by IS NULL
    AND rt.expires_at > now() AND rt.expires_at > s.created_at + interval '90 minutes')`
	// An hour on, a refresh: the session's end is its 90th minute, not
	// the refresh's 60 minutes on.
	f.exec(t, `UPDATE sessions SET created_at = created_at - interval '60 minutes' WHERE id = $1`, is.SessionID)
	var end int64 // the bound, as Rotation.Ends names it
	if err := f.pool.QueryRow(ctx, `SELECT floor(extract(epoch FROM created_at + interval '90 minutes'))::bigint FROM sessions WHERE id = $1`,
		is.SessionID).Scan(&end); err != nil {
		t.Fatal(err)
	}
	r, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if n := f.count(t, bound, is.SessionID); n != 1 {
		t.Fatal("a refresh set the session's or its token's end past its bound")
	}
	if r.Ends != end {
		t.Errorf("the rotation names the session's end %d, want its bound %d", r.Ends, end)
	}
	// The successor handed out again within the grace window names it too.
	if again, err := f.store.Rotate(ctx, is.RefreshToken, Presenter{}); err != nil || again.Ends != end {
		t.Errorf("the successor again: ends %d, %v; want %d", again.Ends, err, end)
	}
	err = pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		_, ends, err := f.store.Reissue(ctx, tx, f.user, is.SessionID)
		if err == nil && ends != end {
			t.Errorf("the reissue names the session's end %d, want its bound %d", ends, end)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Reissue: %v", err)
	}
	if n := f.count(t, bound, is.SessionID); n != 1 {
		t.Fatal("a reissue set the session's or its token's end past its bound")
	}
	// A session past the bound, whatever its expires_at says, refreshes
	// no more.
	s2 := f.create(t)
	f.exec(t, `UPDATE sessions SET created_at = now() - interval '91 minutes' WHERE id = $1`, s2.SessionID)
	if _, err := f.store.Rotate(ctx, s2.RefreshToken, Presenter{}); !errors.Is(err, ErrExpired) {
		t.Fatalf("Rotate of a session past its bound: %v, want ErrExpired", err)
	}

}

// TestTokenThatNamesNoMethod: an access token that carries its sign-in's
// time but no method (tokenAuth) counts for nothing in what a session
// opened on its strength inherits (InheritAuth takes the bearer's
// session's methods and time), but has not given the second factor a
// route asks for (Fresh with otp is false, though its session gave it).
func TestTokenThatNamesNoMethod(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	from := f.create(t)
	f.exec(t, `UPDATE sessions SET amr = '{pwd,otp}', auth_time = date_trunc('second', now()) WHERE id = $1`, from.SessionID)
	var sessionAt int64
	if err := f.pool.QueryRow(ctx, `SELECT floor(extract(epoch FROM auth_time))::bigint FROM sessions WHERE id = $1`, from.SessionID).Scan(&sessionAt); err != nil {
		t.Fatal(err)
	}
	tokenAt := sessionAt - 60
	for _, c := range []struct {
		what    string
		amr     []string
		wantAMR []string
		wantAt  int64
		fresh   bool
	}{
		{"a token naming its methods", []string{"pwd", "otp"}, []string{"pwd", "otp"}, tokenAt, true},
		{"a token naming the password only", []string{"pwd"}, []string{"pwd"}, tokenAt, false},
		{"a token naming no method", nil, []string{"pwd", "otp"}, sessionAt, false},
		{"a token naming an empty list", []string{}, []string{"pwd", "otp"}, sessionAt, false},
	} {
		id := identity.Identity{UserID: f.user, SessionID: from.SessionID, AMR: c.amr, AuthTime: tokenAt}
		if fresh, err := Fresh(ctx, f.pool, id, time.Hour, true); err != nil || fresh != c.fresh {
			t.Errorf("%s: Fresh with otp = %v, %v; want %v", c.what, fresh, err, c.fresh)
		}
		to := f.create(t)
		amr, at, err := InheritAuth(ctx, f.pool, f.user, id, to.SessionID)
		if err != nil || !slices.Equal(amr, c.wantAMR) || at != c.wantAt {
			t.Errorf("%s: InheritAuth = %v %d, %v; want %v %d", c.what, amr, at, err, c.wantAMR, c.wantAt)
		}
	}
}

// TestCreateRefusesWhatASignInRefuses: a session is created only for an
// active account with an active membership in an active tenant, as the
// sign-in that asks for it checked a moment before: a member disabled in
// the tenant, a tenant suspended or an account disabled since that check
// got a session and refresh token, answered with tokens the proxy and the
// refresh then refused, where a sign-in just after the change is refused.
// The disabled account is told apart (ErrAccountDisabled), since the
// sign-ins answer it whatever the memberships.
func TestCreateRefusesWhatASignInRefuses(t *testing.T) {
	for _, c := range []struct {
		name, change, undo string
		want               error
	}{
		{"membership disabled", `UPDATE memberships SET status = 'disabled' WHERE user_id = $1 AND tenant_id = $2`,
			`UPDATE memberships SET status = 'active' WHERE user_id = $1 AND tenant_id = $2`, ErrNoMembership},
		{"tenant suspended", `UPDATE tenants SET status = 'suspended' WHERE id = $2 AND $1::uuid IS NOT NULL`,
			`UPDATE tenants SET status = 'active' WHERE id = $2 AND $1::uuid IS NOT NULL`, ErrNoMembership},
		{"account disabled", `UPDATE users SET status = 'disabled' WHERE id = $1 AND $2::uuid IS NOT NULL`,
			`UPDATE users SET status = 'active' WHERE id = $1 AND $2::uuid IS NOT NULL`, ErrAccountDisabled},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f := setup(t)
			f.exec(t, c.change, f.user, f.tenant)
			_, err := f.store.CreateAt(ctx, f.pool, f.user, f.tenant, "ua", "ip", 0)
			if !errors.Is(err, c.want) {
				t.Errorf("CreateAt = %v, want %v", err, c.want)
			}
			if n := f.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, f.user); n != 0 {
				t.Errorf("sessions = %d, want 0", n)
			}
			f.exec(t, c.undo, f.user, f.tenant)
			f.create(t) // active again: a session, as before
		})
	}
}

// insertSessions inserts n sessions of the fixture's user, expiring at
// now() + expires and revoked at now() + revoked ("": not revoked).
func (f *fixture) insertSessions(t *testing.T, n int, expires, revoked string) {
	t.Helper()
	f.exec(t, `
INSERT INTO sessions (user_id, tenant_id, expires_at, revoked_at)
SELECT $1, $2, now() + $3::interval, now() + NULLIF($4, '')::interval FROM generate_series(1, $5)`,
		f.user, f.tenant, expires, revoked, n)
}

// TestSweepInBatches: a sweep over more ended sessions than a batch
// deletes all of them, and their refresh tokens, each batch in a
// transaction of its own, none larger than sweep.Batch; the live
// sessions, those revoked or expired within keep among them, stay.
func TestSweepInBatches(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	live := f.create(t).SessionID
	f.insertSessions(t, 2*sweep.Batch, "-2 hours", "")
	f.insertSessions(t, 500, "1 day", "-3 hours")
	f.insertSessions(t, 7, "-10 minutes", "")
	f.insertSessions(t, 5, "1 day", "-10 minutes")
	ended := f.create(t).SessionID
	f.exec(t, `UPDATE sessions SET expires_at = now() - interval '2 hours' WHERE id = $1`, ended)
	deletes := f.db.DeletesPerTransaction(t, "sessions")

	n, err := f.store.Sweep(ctx, time.Hour)
	if want := int64(2*sweep.Batch + 500 + 1); err != nil || n != want {
		t.Fatalf("Sweep = %d, %v; want %d", n, err, want)
	}
	if c := f.count(t, `SELECT count(*) FROM sessions`); c != 1+7+5 {
		t.Errorf("%d sessions left, want the live one and the 12 ended within keep", c)
	}
	if c := f.count(t, `SELECT count(*) FROM sessions WHERE id = $1`, live); c != 1 {
		t.Error("the live session was swept")
	}
	if c := f.count(t, `SELECT count(*) FROM refresh_tokens WHERE session_id = $1`, ended); c != 0 {
		t.Errorf("%d refresh tokens of a swept session left", c)
	}
	most, txs := deletes()
	if most > sweep.Batch || txs < 3 {
		t.Errorf("one transaction deleted %d sessions (%d transactions), want at most %d each", most, txs, sweep.Batch)
	}
	if n, err := f.store.Sweep(ctx, time.Hour); err != nil || n != 0 {
		t.Errorf("second Sweep = %d, %v; want 0", n, err)
	}
}

// TestSweepHoldsOnlyItsBatch: while a batch of the sweep is under way, it
// holds the rows of that batch and no other: an UPDATE of a live session
// goes through, and the ended sessions not in the batch can be locked by
// anyone. A single statement over every ended session held them all
// until the last was deleted.
func TestSweepHoldsOnlyItsBatch(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	live := f.create(t).SessionID
	const ended = 2*sweep.Batch + 10
	f.insertSessions(t, ended, "-2 hours", "")
	// The first batch's statement, its rows deleted, waits for an
	// advisory lock the test holds, before it commits.
	f.exec(t, `CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock(4747); RETURN NULL; END $$`)
	f.exec(t, `CREATE TRIGGER stall AFTER DELETE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION stall()`)
	hold := f.db.Hold(t, `SELECT pg_advisory_xact_lock(4747)`)
	done := make(chan error, 1)
	go func() {
		_, err := f.store.Sweep(ctx, time.Hour)
		done <- err
	}()
	f.db.WaitForLockWaiters(t, 1)

	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '2s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE sessions SET last_used_at = now() WHERE id = $1`, live); err != nil {
		t.Errorf("UPDATE of a live session beside the sweep: %v", err)
	}
	var free int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM sessions
WHERE expires_at < now() - interval '1 hour' FOR UPDATE SKIP LOCKED) free`).Scan(&free); err != nil {
		t.Fatal(err)
	}
	if want := ended - sweep.Batch; free != want {
		t.Errorf("%d ended sessions free while the first batch is under way, want %d (all but the batch's)", free, want)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if c := f.count(t, `SELECT count(*) FROM sessions`); c != 1 {
		t.Errorf("%d sessions left, want the live one", c)
	}
}

// TestSweepStopsWhenCancelled: a sweep whose context ends runs no
// further batch.
func TestSweepStopsWhenCancelled(t *testing.T) {
	f := setup(t)
	f.insertSessions(t, 2*sweep.Batch, "-2 hours", "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := f.store.Sweep(ctx, time.Hour); !errors.Is(err, context.Canceled) || n != 0 {
		t.Errorf("Sweep with its context ended = %d, %v; want 0, context.Canceled", n, err)
	}
	if c := f.count(t, `SELECT count(*) FROM sessions`); c != 2*sweep.Batch {
		t.Errorf("%d sessions left, want %d", c, 2*sweep.Batch)
	}
}
