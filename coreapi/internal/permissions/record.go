package permissions

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Record stores c's hash as the deployment's catalog if it differs from
// the stored one and, in the same transaction, queues an invalidation of
// every cached projection (auth.invalidate.all) through the outbox. It
// reports whether it stored a new hash. Replicas starting at once are
// serialised on the one row: of several starting with the same new
// catalog exactly one records it; during a rollout where replicas with
// different catalogs start, each one that replaces the hash publishes.
func Record(ctx context.Context, pool *pgxpool.Pool, c *Catalog) (bool, error) {
	// ON CONFLICT DO UPDATE locks the row and, under READ COMMITTED,
	// re-checks the WHERE against the newest committed hash: a replica
	// that waited behind another storing the same hash updates nothing.
	const q = `
INSERT INTO permission_catalog (id, hash) VALUES (true, $1)
ON CONFLICT (id) DO UPDATE SET hash = EXCLUDED.hash, updated_at = now()
WHERE permission_catalog.hash <> EXCLUDED.hash
RETURNING true`
	changed := false
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, q, c.Hash()).Scan(&changed)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.SubjectAll, Reason: invalidation.ReasonCatalogChanged})
	})
	if err != nil {
		return false, fmt.Errorf("record permission catalog: %w", err)
	}
	return changed, nil
}

// ErrRollout: the catalog recorded last is not this replica's. A catalog
// rollout is under way (or this replica has not recorded its own yet),
// and the replicas disagree on what the built-in roles hold: admin and
// owner every declared permission, member the member_default ones. A
// change that hands out or reshapes privileges, judged here by this
// replica's catalog, would let its caller give what the replicas of the
// other catalog grant and the caller does not hold; it is refused and
// retried on a replica whose catalog is the recorded one.
var ErrRollout = errors.New("the permission catalog is being rolled out and this replica's is not the current one; " +
	"nothing was changed: retry, and a replica with the current catalog will serve the request")

// CheckCurrent is ErrRollout unless c is the catalog recorded last
// (Record), read in tx with FOR SHARE: a replica storing another one
// waits for tx to end, and tx waits for one storing, then reads its hash,
// so no change judged by a catalog commits after another was recorded.
// None recorded yet (a database no replica started on) is nothing to
// disagree with; c nil is the built-in catalog. Changes that hand out or reshape privileges call it
// first in their transaction, after the tenant's lock; those that only
// take privileges away, and reads, do not.
func CheckCurrent(ctx context.Context, tx pgx.Tx, c *Catalog) error {
	const q = `SELECT hash FROM permission_catalog WHERE id FOR SHARE`
	if c == nil {
		c = Builtin()
	}
	var stored string
	err := tx.QueryRow(ctx, q).Scan(&stored)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("read permission catalog: %w", err)
	case stored != c.Hash():
		return ErrRollout
	}
	return nil
}
