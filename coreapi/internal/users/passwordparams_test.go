package users_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// TestStoredPasswordParams: the parameter sets of the stored hashes, each
// once, whatever their salts; accounts without a password and a hash that
// does not parse add none.
func TestStoredPasswordParams(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	older := password.Params{Memory: 32, Time: 3, Threads: 1, SaltLen: 16, KeyLen: 32}
	current := password.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	var hashes []string
	for _, p := range []password.Params{older, older, current} {
		h, err := password.New(p, 1).Hash(ctx, "a password 1")
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, h)
	}
	hashes = append(hashes, "garbage")
	const q = `
INSERT INTO users (email, display_name, password_hash)
SELECT 'u' || i || '@example.test', 'U', h FROM unnest($1::text[]) WITH ORDINALITY AS x(h, i)
UNION ALL SELECT 'nopw@example.test', 'N', NULL`
	if _, err := db.Pool.Exec(ctx, q, hashes); err != nil {
		t.Fatal(err)
	}
	got, err := users.StoredPasswordParams(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b password.Params) int { return int(a.Memory) - int(b.Memory) })
	if !slices.Equal(got, []password.Params{older, current}) {
		t.Errorf("StoredPasswordParams = %+v, want %+v", got, []password.Params{older, current})
	}
}
