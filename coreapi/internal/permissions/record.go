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
