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

// CheckLive is ErrEnded unless keyID is a key of userID in tenantID that
// is neither revoked nor expired, or is "" (not a key's request). One
// primary-key lookup; in a transaction after the tenant's lock
// (roles.LockTenant), which every revocation takes first, it sees a
// revocation committed meanwhile.
func CheckLive(ctx context.Context, q DB, tenantID, userID, keyID string) error {
	const qLive = `
SELECT EXISTS (SELECT 1 FROM api_keys WHERE id = $1 AND user_id = $2 AND tenant_id = $3
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()))`
	if keyID == "" {
		return nil
	}
	if !ids.Valid(keyID) || !ids.Valid(userID) || !ids.Valid(tenantID) {
		return ErrEnded
	}
	var live bool
	if err := q.QueryRow(ctx, qLive, keyID, userID, tenantID).Scan(&live); err != nil {
		return fmt.Errorf("check api key: %w", err)
	}
	if !live {
		return ErrEnded
	}
	return nil
}
