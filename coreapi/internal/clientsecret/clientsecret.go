// Package clientsecret tells whether the client secret a service
// account's access token was obtained with still exists. Deleting a
// secret ends the account's tokens (its token version moves on and every
// proxy is told), but a proxy that has not yet heard of it still forwards
// them: coreapi then refuses their writes itself, the token's secret
// reaching it as the signed X-Auth-Session-Id of the service principal.
package clientsecret

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
)

// ErrDeleted: the client secret a service token was obtained with has
// been deleted, and with it every token obtained with it.
var ErrDeleted = errors.New("the client secret this access token was obtained with has been deleted: the token has ended")

// DB is what CheckLive runs on: a pool, or a transaction.
type DB interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CheckLive is ErrDeleted unless secretID is a client secret of service
// account userID, or is "" (a token issued before tokens named their
// secret, or not a service token). One primary-key lookup; in a
// transaction after the tenant's lock, which a secret's deletion takes
// first, it sees a deletion committed meanwhile.
func CheckLive(ctx context.Context, q DB, userID, secretID string) error {
	const qLive = `SELECT EXISTS (SELECT 1 FROM service_account_secrets WHERE id = $1 AND user_id = $2)`
	if secretID == "" {
		return nil
	}
	if !ids.Valid(secretID) || !ids.Valid(userID) {
		return ErrDeleted
	}
	var live bool
	if err := q.QueryRow(ctx, qLive, secretID, userID).Scan(&live); err != nil {
		return fmt.Errorf("check client secret: %w", err)
	}
	if !live {
		return ErrDeleted
	}
	return nil
}
