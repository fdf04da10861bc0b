package users

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
)

// StoredPasswordParams returns the argon2 parameters of the password
// hashes the accounts hold, each set once (password.Hasher.SetStored):
// those of hashes made before the parameters changed, until each
// account's next sign-in replaces its hash. A hash that does not parse is
// left out (its check costs what a dummy's does). One read of the users
// table, made at start.
func StoredPasswordParams(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) ([]password.Params, error) {
	const q = `
SELECT DISTINCT ON (split_part(password_hash, '$', 4)) password_hash
FROM users
WHERE password_hash IS NOT NULL`
	rows, err := db.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("stored password parameters: %w", err)
	}
	hashes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("stored password parameters: %w", err)
	}
	var out []password.Params
	for _, h := range hashes {
		if p, err := password.ParamsOf(h); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}
