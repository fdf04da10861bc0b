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

// qLive finds the client secret $1 of service account $2.
const qLive = `SELECT 1 FROM service_account_secrets WHERE id = $1 AND user_id = $2`

// CheckLive is ErrDeleted unless secretID is a client secret of service
// account userID, or is "" (a token issued before tokens named their
// secret, or not a service token). One primary-key lookup, without a
// lock: the request's own check, before its transaction (Hold is the one
// inside it).
func CheckLive(ctx context.Context, q DB, userID, secretID string) error {
	return check(ctx, q, qLive, userID, secretID)
}

// Hold is CheckLive in tx, reading the secret's row FOR SHARE, which it
// holds until tx ends: a deletion of the secret (after the tenant's lock,
// which a change's transaction takes before it calls Hold, or not) either
// commits before and is seen here, waited for if it had not committed
// yet, or waits for tx to end. So no change a deleted secret's token let
// through commits after the deletion has returned.
func Hold(ctx context.Context, tx pgx.Tx, userID, secretID string) error {
	return check(ctx, tx, qLive+` FOR SHARE`, userID, secretID)
}

func check(ctx context.Context, q DB, sql, userID, secretID string) error {
	if secretID == "" {
		return nil
	}
	if !ids.Valid(secretID) || !ids.Valid(userID) {
		return ErrDeleted
	}
	var one int
	err := q.QueryRow(ctx, sql, secretID, userID).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrDeleted
	}
	if err != nil {
		return fmt.Errorf("check client secret: %w", err)
	}
	return nil
}
