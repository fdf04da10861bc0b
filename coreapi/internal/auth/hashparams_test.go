package auth_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// TestPasswordCheckCostTellsNoHashParameters: with the parameters of the
// stored hashes read from the database at start (users.
// StoredPasswordParams, password.Hasher.SetStored, as serve does), a
// wrong password costs the same argon2 work for an unknown address, an
// account whose hash has the current parameters and one whose hash was
// made with older ones. Checked against the dummy hash alone, an unknown
// address cost the current parameters' work and such an account its
// older ones': timing sign-ins told the two apart. The right password
// still signs the older account in, and its hash is made again.
func TestPasswordCheckCostTellsNoHashParameters(t *testing.T) {
	ctx := context.Background()
	e := start(t, cheap)
	older := password.Params{Memory: 2 * cheap.Memory, Time: cheap.Time + 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	for _, email := range []string{"new@example.com", "old@example.com"} {
		r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
			map[string]string{"email": email, "password": "right password 1", "tenant_name": "T", "display_name": "D"})
		if r.Status != http.StatusCreated {
			t.Fatalf("signup %s: %d %s", email, r.Status, r.Body)
		}
	}
	oldHash, err := password.New(older, 1).Hash(ctx, "right password 1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE users SET password_hash = $1 WHERE email = 'old@example.com'`, oldHash); err != nil {
		t.Fatal(err)
	}
	stored, err := users.StoredPasswordParams(ctx, e.DB.Pool)
	if err != nil {
		t.Fatal(err)
	}
	e.passwords.SetStored(stored)

	signIn := func(email, pw string) (status int, work int64) {
		t.Helper()
		before := e.passwords.Work()
		st := e.token(t, map[string]string{"grant_type": "password", "email": email, "password": pw}).Status
		return st, e.passwords.Work() - before
	}
	_, unknown := signIn("nobody@example.com", "wrong password 1")
	if want := int64(cheap.Memory*cheap.Time + older.Memory*older.Time); unknown != want {
		t.Errorf("unknown address: work %d, want %d (a run with each stored parameter set)", unknown, want)
	}
	for _, email := range []string{"new@example.com", "old@example.com"} {
		if st, w := signIn(email, "wrong password 1"); st != http.StatusBadRequest || w != unknown {
			t.Errorf("%s, wrong password: %d after work %d; want 400 after %d, as an unknown address", email, st, w, unknown)
		}
	}
	if st, _ := signIn("old@example.com", "right password 1"); st != http.StatusOK {
		t.Fatalf("old@example.com, right password: %d", st)
	}
	var now string
	if err := e.DB.Pool.QueryRow(ctx, `SELECT password_hash FROM users WHERE email = 'old@example.com'`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	if e.passwords.NeedsRehash(now) {
		t.Errorf("the older hash was not made again: %s", now)
	}
}
