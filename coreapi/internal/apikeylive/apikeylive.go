// Package apikeylive tells whether the API key a request was made with
// still works. Revoking a key (explicitly, or with its creator's removal
// from the tenant or a service account's secret) tells every proxy, and
// an expired key is refused by them, but a proxy that has not yet heard
// (NATS late or partitioned, up to MAX_STALENESS) still forwards the
// key's requests from its cache: coreapi then refuses their writes
// itself, the key reaching it as the signed X-Auth-Session-Id of the
// api_key principal.
package apikeylive

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
)

// ErrEnded: the API key a request was made with has been revoked, has
// expired, or is no longer (its creator's account deleted).
var ErrEnded = errors.New("the API key this request was made with has been revoked or has expired")

// DB is what CheckLive runs on: a pool, or a transaction.
type DB interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// qLive finds the key $1 of user $2 in tenant $3 if it is neither revoked
// nor expired.
const qLive = `SELECT 1 FROM api_keys WHERE id = $1 AND user_id = $2 AND tenant_id = $3
  AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())`

// CheckLive is ErrEnded unless keyID is a key of userID in tenantID that
// is neither revoked nor expired, or is "" (not a key's request). One
// primary-key lookup, without a lock: the request's own check, before
// its transaction (Hold is the one inside it).
func CheckLive(ctx context.Context, q DB, tenantID, userID, keyID string) error {
	return check(ctx, q, qLive, tenantID, userID, keyID)
}

// Hold is CheckLive in tx, reading the key's row FOR SHARE, which it
// holds until tx ends: a revocation, which updates the row (whether it
// takes the tenant's lock first, as apikeys.Store.Revoke and
// RevokeUserKeys do, or not, as a revocation by the key's secret
// (apikeys.Store.RevokeSecret) does), either commits before and is seen
// here, waited for if it had not committed yet, or waits for tx to end.
// So no change a revoked key's check let through commits after the
// revocation has returned.
func Hold(ctx context.Context, tx pgx.Tx, tenantID, userID, keyID string) error {
	return check(ctx, tx, qLive+` FOR SHARE`, tenantID, userID, keyID)
}

func check(ctx context.Context, q DB, sql, tenantID, userID, keyID string) error {
	if keyID == "" {
		return nil
	}
	if !ids.Valid(keyID) || !ids.Valid(userID) || !ids.Valid(tenantID) {
		return ErrEnded
	}
	var one int
	err := q.QueryRow(ctx, sql, keyID, userID, tenantID).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrEnded
	}
	if err != nil {
		return fmt.Errorf("check api key: %w", err)
	}
	return nil
}
