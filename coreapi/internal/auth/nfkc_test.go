package auth_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"testing"

	"golang.org/x/crypto/argon2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
)

// preNFKCHash is the PHC string of pw as typed, made as passwords were
// hashed before they were normalized to NFKC.
func preNFKCHash(pw string) string {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte(pw), salt, cheap.Time, cheap.Memory, cheap.Threads, cheap.KeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, cheap.Memory, cheap.Time, cheap.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// TestSignInUpgradesPreNFKCHash: a hash stored before passwords were
// normalized holds the password as typed then. Signing in with it replaces
// the hash with that of its NFKC form, and nothing else: the token
// version, the sessions, updated_at, the audit trail and the outbox stay as
// they were. The next sign-in then matches the NFKC form at the first
// comparison, and the password's other Unicode forms sign in too.
func TestSignInUpgradesPreNFKCHash(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	h := password.New(cheap, 1)
	for i, tt := range []struct{ typed, other string }{
		{"cafe\u0301 au lait 42", "caf\u00e9 au lait 42"}, // decomposed é; precomposed
		{"Ｐａｓｓ　ｗｏｒｄ　４２", "Pass word 42"},                  // full-width; ASCII
	} {
		email := fmt.Sprintf("old%d@example.com", i)
		e.signup(t, email, "Old")
		old := preNFKCHash(tt.typed)
		if _, err := e.DB.Pool.Exec(ctx, `UPDATE users SET password_hash = $1 WHERE email = $2`, old, email); err != nil {
			t.Fatal(err)
		}
		// All but the hash: none of it moves on an upgrade.
		state := func() (s string) {
			t.Helper()
			err := e.DB.Pool.QueryRow(ctx, `
SELECT format('token_version=%s updated_at=%s revoked_sessions=%s audit=%s outbox=%s', u.token_version, u.updated_at,
       (SELECT count(*) FROM sessions WHERE user_id = u.id AND revoked_at IS NOT NULL),
       (SELECT count(*) FROM audit_events), (SELECT count(*) FROM outbox))
FROM users u WHERE email = $1`, email).Scan(&s)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		hashOf := func() (s string) {
			t.Helper()
			if err := e.DB.Pool.QueryRow(ctx, `SELECT password_hash FROM users WHERE email = $1`, email).Scan(&s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		if m, err := h.Verify(ctx, tt.typed, old); m != password.MatchAsTyped || err != nil {
			t.Fatalf("%+q: the seeded hash verifies as %v, %v, want %v", tt.typed, m, err, password.MatchAsTyped)
		}
		before := state()
		signIn := func(pw string) int {
			t.Helper()
			return e.token(t, map[string]string{"grant_type": "password", "email": email, "password": pw}).Status
		}
		// Until the upgrade, the hash holds only the form typed then.
		if st := signIn(tt.other); st != http.StatusBadRequest {
			t.Fatalf("%+q: sign-in as %+q before the upgrade: %d, want 400", tt.typed, tt.other, st)
		}
		if st := signIn(tt.typed); st != http.StatusOK {
			t.Fatalf("%+q: sign-in as typed: %d", tt.typed, st)
		}
		got := hashOf()
		if got == old {
			t.Fatalf("%+q: the hash stored before normalization was kept", tt.typed)
		}
		if m, err := h.Verify(ctx, tt.typed, got); m != password.MatchNFKC || err != nil {
			t.Errorf("%+q: the new hash verifies as %v, %v, want %v", tt.typed, m, err, password.MatchNFKC)
		}
		if after := state(); after != before {
			t.Errorf("%+q: the upgrade changed more than the hash:\n before %s\n after  %s", tt.typed, before, after)
		}
		if st := signIn(tt.typed); st != http.StatusOK {
			t.Errorf("%+q: sign-in as typed after the upgrade: %d", tt.typed, st)
		}
		if st := signIn(tt.other); st != http.StatusOK {
			t.Errorf("%+q: sign-in as %+q after the upgrade: %d", tt.typed, tt.other, st)
		}
		if now := hashOf(); now != got {
			t.Errorf("%+q: the upgraded hash was replaced again", tt.typed)
		}
	}
}

// TestPasswordCheckCostTellsNoAccountState: how many argon2 runs a
// wrong password costs depends on the password alone, never on the
// account: one for a password NFKC leaves as it is, two for one NFKC
// changes (here with a decomposed é), for an unknown address, an account
// whose hash coreapi made, one whose hash predates normalization (checked
// in both forms until a sign-in replaces it) and one whose NFKC hash was
// not vouched for (users.password_nfkc_hash, migration 00058). Two for
// only the accounts of the third kind told anyone timing sign-ins which
// addresses had such an old account. A correct password costs what a
// wrong one does, plus the replacement of a hash from before
// normalization (one run, seen only by whoever knows the password); an
// unvouched NFKC hash is vouched for without a new hash.
func TestPasswordCheckCostTellsNoAccountState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	const (
		nfkc, typed         = "caf\u00e9 au lait 42", "cafe\u0301 au lait 42"
		wrongNFKC, wrongTyp = "caf\u00e9 au lait 43", "cafe\u0301 au lait 43"
	)
	signIn := func(email, pw string) (status int, runs int64) {
		t.Helper()
		before := e.passwords.Derivations()
		st := e.token(t, map[string]string{"grant_type": "password", "email": email, "password": pw}).Status
		return st, e.passwords.Derivations() - before
	}
	want := func(what string, status int, runs int64, wantStatus int, wantRuns int64) {
		t.Helper()
		if status != wantStatus || runs != wantRuns {
			t.Errorf("%s: %d after %d argon2 runs, want %d after %d", what, status, runs, wantStatus, wantRuns)
		}
	}
	signup := func(email string) {
		t.Helper()
		r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
			map[string]string{"email": email, "password": nfkc, "tenant_name": "T", "display_name": "D"})
		if r.Status != http.StatusCreated {
			t.Fatalf("signup %s: %d %s", email, r.Status, r.Body)
		}
	}
	setHash := func(email, hash string) {
		t.Helper()
		if _, err := e.DB.Pool.Exec(ctx, `UPDATE users SET password_hash = $1 WHERE email = $2`, hash, email); err != nil {
			t.Fatal(err)
		}
	}
	signup("new@example.com")
	signup("old@example.com")
	setHash("old@example.com", preNFKCHash(typed))
	// A hash of the NFKC form that coreapi did not vouch for (written by a
	// pod of the previous release).
	signup("prev@example.com")
	prev, err := password.New(cheap, 1).Hash(ctx, nfkc)
	if err != nil {
		t.Fatal(err)
	}
	setHash("prev@example.com", prev)

	for _, email := range []string{"nobody@example.com", "new@example.com", "old@example.com", "prev@example.com"} {
		st, n := signIn(email, wrongTyp)
		want(email+", wrong password that NFKC changes", st, n, http.StatusBadRequest, 2)
		st, n = signIn(email, wrongNFKC)
		want(email+", wrong password that NFKC keeps", st, n, http.StatusBadRequest, 1)
	}

	st, n := signIn("new@example.com", typed)
	want("right password, decomposed", st, n, http.StatusOK, 2)
	st, n = signIn("new@example.com", nfkc)
	want("right password, as stored", st, n, http.StatusOK, 1)

	st, n = signIn("old@example.com", typed)
	want("pre-NFKC hash, as typed (and its replacement)", st, n, http.StatusOK, 3)
	st, n = signIn("old@example.com", wrongTyp)
	want("replaced hash, wrong password", st, n, http.StatusBadRequest, 2)

	st, n = signIn("prev@example.com", typed)
	want("unvouched NFKC hash, decomposed", st, n, http.StatusOK, 2)
	var now string
	if err := e.DB.Pool.QueryRow(ctx, `SELECT password_hash FROM users WHERE email = 'prev@example.com'`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	if now != prev {
		t.Errorf("an NFKC hash was made again; only its form needed recording")
	}
	st, n = signIn("prev@example.com", wrongTyp)
	want("vouched NFKC hash, wrong password", st, n, http.StatusBadRequest, 2)
}
