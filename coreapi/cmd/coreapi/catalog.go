package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
)

// catalogRetryEvery paces attempts to record the catalog while the
// database is unreachable (coreapi starts without it, like without NATS).
const catalogRetryEvery = 2 * time.Second

// recordCatalog returns the worker that records the permission catalog this
// replica started with: a new one replaces the stored hash and queues the
// invalidation of every cached projection (see permissions.Record). It
// retries until it succeeds, then ends.
func recordCatalog(c *permissions.Catalog, pool *pgxpool.Pool, log *slog.Logger) worker {
	return func(ctx context.Context) error {
		for {
			changed, err := permissions.Record(ctx, pool, c)
			if err == nil {
				log.Info("permission catalog recorded", "hash", c.Hash(), "entries", len(c.Entries()), "changed", changed)
				return nil
			}
			log.Warn("permission catalog not recorded yet; retrying", "err", err, "retry_in", catalogRetryEvery)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(catalogRetryEvery):
			}
		}
	}
}
