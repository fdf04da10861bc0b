package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys/keytest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

func sealerOf(t *testing.T, text string) *mfa.Sealer {
	t.Helper()
	ks, err := mfa.ParseKeys(text)
	if err != nil {
		t.Fatal(err)
	}
	s, err := mfa.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// seedFactor adds a user with address email and an active second factor
// whose secret is sealed under the keys keyText names; it returns the
// user's id and the secret.
func seedFactor(t *testing.T, db *dbtest.DB, email, keyText string) (uid, secret string) {
	t.Helper()
	ctx := context.Background()
	if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email, display_name) VALUES ($1, '') RETURNING id::text`, email).Scan(&uid); err != nil {
		t.Fatal(err)
	}
	secret, _, err := mfa.NewSecret("Tollgate", email)
	if err != nil {
		t.Fatal(err)
	}
	id, sealed, err := sealerOf(t, keyText).Seal([]byte(secret), []byte(uid))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status) VALUES ($1, $2, $3, 'active')`, uid, id, sealed); err != nil {
		t.Fatal(err)
	}
	return uid, secret
}

// testRing is a signing key ring of one EdDSA key.
func testRing(t *testing.T) *keys.Ring {
	t.Helper()
	ring, _ := keytest.Ring(t)
	return ring
}

// TestTOTPKeyRotation: a secret sealed under a key that is no longer first
// still verifies, and is resealed under the first key when it is used, so
// the old key can be dropped once every active secret has been used (or
// never: a missing key is an error, never a silent mismatch).
func TestTOTPKeyRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	ring := testRing(t)
	k := func(id string, b byte) string {
		return id + ":" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b)), 32)))
	}
	svc := func(text string) *Service {
		s, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Pool: db.Pool, Keys: ring,
			Passwords: password.New(password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 0),
			Sessions:  sessions.New(db.Pool, time.Hour, time.Second), Issuer: "i", Audience: "a", AccessTTL: time.Minute,
			MFA: sealerOf(t, text)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	uid, secret := seedFactor(t, db, "r@example.com", k("k1", 1))
	keyID := func() string {
		var s string
		if err := db.Pool.QueryRow(ctx, `SELECT key_id FROM mfa_totp WHERE user_id = $1`, uid).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now()
	code := func(steps int) string {
		c, err := mfa.Code(secret, now.Add(time.Duration(steps)*mfa.Period*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Only the new key: the old secret cannot be read.
	_, err := svc(k("k2", 2)).checkTOTP(ctx, uid, code(-1), "active")
	if !errors.Is(err, mfa.ErrUnknownKey) {
		t.Fatalf("without k1: %v, want ErrUnknownKey", err)
	}
	// ... answered 503 mfa_unavailable with what to do, not 500.
	var p *problem.Problem
	if !errors.As(err, &p) || p.Status != 503 || p.Code != problem.CodeMFAUnavailable || !strings.Contains(p.Detail, "recovery code") {
		t.Fatalf("without k1: answered %+v, want 503 mfa_unavailable", p)
	}
	// Rotated list: verifies with k1, reseals with k2.
	ok, err := svc(k("k2", 2)+","+k("k1", 1)).checkTOTP(ctx, uid, code(-1), "active")
	if err != nil || !ok {
		t.Fatalf("rotated list: %v %v", ok, err)
	}
	if got := keyID(); got != "k2" {
		t.Fatalf("key_id after use = %s, want k2", got)
	}
	// Now k1 can go.
	ok, err = svc(k("k2", 2)).checkTOTP(ctx, uid, code(0), "active")
	if err != nil || !ok {
		t.Fatalf("k2 only, after reseal: %v %v", ok, err)
	}
	// The same code again (replay) and an older step are refused.
	for _, c := range []string{code(0), code(-1)} {
		if ok, err := svc(k("k2", 2)).checkTOTP(ctx, uid, c, "active"); ok || err != nil {
			t.Fatalf("replayed/older code accepted: %v %v", ok, err)
		}
	}
}

// TestChallengeAtStaleTokenVersion: a sign-in whose password was checked
// at a token version that has moved on since (a reset or a change committed
// in between) stores no challenge.
func TestChallengeAtStaleTokenVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	ring := testRing(t)
	s, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Pool: db.Pool, Keys: ring,
		Passwords: password.New(password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 0),
		Sessions:  sessions.New(db.Pool, time.Hour, time.Second), Issuer: "i", Audience: "a", AccessTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var uid, tid string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email, display_name, token_version) VALUES ('c@example.com', '', 1) RETURNING id::text`).Scan(&uid); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(ctx, `INSERT INTO tenants (name) VALUES ('T') RETURNING id::text`).Scan(&tid); err != nil {
		t.Fatal(err)
	}
	if err := s.challenge(ctx, users.Credentials{UserID: uid, TenantID: &tid, TokenVersion: 0}, amrPassword(), false); !errors.Is(err, errBadCredentials) {
		t.Fatalf("challenge at a stale token version: %v, want errBadCredentials", err)
	}
	var mr *mfaRequiredError
	if err := s.challenge(ctx, users.Credentials{UserID: uid, TenantID: &tid, TokenVersion: 1}, amrPassword(), false); !errors.As(err, &mr) {
		t.Fatalf("challenge at the current token version: %v, want mfa_required", err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM mfa_challenges WHERE user_id = $1`, uid).Scan(&n); err != nil || n != 1 {
		t.Fatalf("challenges stored: %d (%v), want 1", n, err)
	}
}

// TestTOTPEnrolmentRestartedWhileConfirming: a code of the first secret,
// matched while the enrolment is restarted (a second tab: a new secret,
// its steps unused), neither marks the new secret's step as used nor lets
// the confirmation activate the new secret, which nobody confirmed.
func TestTOTPEnrolmentRestartedWhileConfirming(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	sealer := sealerOf(t, "k1:"+base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", 32))))
	s, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Pool: db.Pool, Keys: testRing(t),
		Passwords: password.New(password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 0),
		Sessions:  sessions.New(db.Pool, time.Hour, time.Second), Issuer: "i", Audience: "a", AccessTTL: time.Minute,
		MFA: sealer})
	if err != nil {
		t.Fatal(err)
	}
	var uid string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email, display_name) VALUES ('e@example.com', '') RETURNING id::text`).Scan(&uid); err != nil {
		t.Fatal(err)
	}
	seal := func() (string, []byte, string) {
		secret, _, err := mfa.NewSecret("Tollgate", "e@example.com")
		if err != nil {
			t.Fatal(err)
		}
		keyID, sealed, err := sealer.Seal([]byte(secret), []byte(uid))
		if err != nil {
			t.Fatal(err)
		}
		return keyID, sealed, secret
	}
	// restart is what enrolTOTP's upsert does to a pending row.
	restart := func() {
		keyID, sealed, _ := seal()
		if _, err := db.Pool.Exec(ctx, `UPDATE mfa_totp SET key_id = $2, secret_sealed = $3, last_step = NULL WHERE user_id = $1 AND status = 'pending'`,
			uid, keyID, sealed); err != nil {
			t.Fatal(err)
		}
	}
	keyID, sealedA, secretA := seal()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed) VALUES ($1, $2, $3)`, uid, keyID, sealedA); err != nil {
		t.Fatal(err)
	}
	step, ok := mfa.Match(secretA, mustCode(t, secretA), time.Now())
	if !ok {
		t.Fatal("a fresh code does not match its secret")
	}

	// Matched against A, then the enrolment restarts before the step is
	// recorded: the step is not recorded on B.
	restart()
	if ok, err := s.consumeStep(ctx, uid, totpPending, sealedA, step, nil, nil); ok || err != nil {
		t.Fatalf("a step of the replaced secret recorded on the new one: %v %v", ok, err)
	}

	// Matched and recorded on A, then the enrolment restarts before the
	// activation: B is not activated.
	if _, err := db.Pool.Exec(ctx, `UPDATE mfa_totp SET secret_sealed = $2 WHERE user_id = $1`, uid, sealedA); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.consumeStep(ctx, uid, totpPending, sealedA, step, nil, nil); !ok || err != nil {
		t.Fatalf("recording a step of the current secret: %v %v", ok, err)
	}
	restart()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := activateTOTP(ctx, tx, uid); !errors.Is(err, errEnrolmentRestarted) {
		t.Fatalf("activation after a restart: %v; want errEnrolmentRestarted, the unconfirmed secret left pending", err)
	}
}

func mustCode(t *testing.T, secret string) string {
	t.Helper()
	c, err := mfa.Code(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTOTPStepRaceWhileResealing: of two requests matching the same code
// of a secret sealed under a retired key, the winner reseals it; the loser
// still finds its step used (errStepUsed, no wrong guess), though the
// sealed form it matched against is gone. A secret enrolled anew in the
// row is another one: a code of the old one is then just wrong.
func TestTOTPStepRaceWhileResealing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	k := func(id string, b byte) string {
		return id + ":" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b)), 32)))
	}
	s, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Pool: db.Pool, Keys: testRing(t),
		Passwords: password.New(password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 0),
		Sessions:  sessions.New(db.Pool, time.Hour, time.Second), Issuer: "i", Audience: "a", AccessTTL: time.Minute,
		MFA: sealerOf(t, k("k2", 2)+","+k("k1", 1))})
	if err != nil {
		t.Fatal(err)
	}
	uid, secret := seedFactor(t, db, "race@example.com", k("k1", 1))
	sec, found, err := s.openTOTP(ctx, uid, totpActive)
	if err != nil || !found {
		t.Fatalf("open: %v %v", found, err)
	}
	code, err := mfa.Code(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hold := db.Hold(t, `SELECT 1 FROM mfa_totp WHERE user_id = $1 FOR UPDATE`, uid)
	type result struct {
		ok  bool
		err error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			ok, err := s.matchTOTP(ctx, uid, totpActive, sec, code)
			results <- result{ok, err}
		}()
	}
	db.WaitForLockWaitersOn(t, "UPDATE mfa_totp SET last_step", 2) // both matches wait to spend the step
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a, b := <-results, <-results
	if a.ok == b.ok || (!a.ok && !errors.Is(a.err, errStepUsed)) || (!b.ok && !errors.Is(b.err, errStepUsed)) || (a.ok && a.err != nil) || (b.ok && b.err != nil) {
		t.Fatalf("results %+v and %+v; want one accepted and one errStepUsed", a, b)
	}
	var keyID string
	if err := db.Pool.QueryRow(ctx, `SELECT key_id FROM mfa_totp WHERE user_id = $1`, uid).Scan(&keyID); err != nil || keyID != "k2" {
		t.Fatalf("key id after the race %q, %v; want the secret resealed under k2", keyID, err)
	}
	// Another secret in the row (a reset and a new enrolment): the old
	// secret's used code is no code of it.
	other, _, err := mfa.NewSecret("Tollgate", "race@example.com")
	if err != nil {
		t.Fatal(err)
	}
	id, sealed, err := s.mfa.Seal([]byte(other), []byte(uid))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE mfa_totp SET key_id = $2, secret_sealed = $3 WHERE user_id = $1`, uid, id, sealed); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.matchTOTP(ctx, uid, totpActive, sec, code); ok || err != nil {
		t.Fatalf("a code of the replaced secret: %v %v; want a wrong code", ok, err)
	}
}
