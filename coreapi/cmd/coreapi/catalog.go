package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
)

// catalogRetryEvery paces attempts to record the catalog while the
// database is unreachable (coreapi starts without it, like without NATS).
const catalogRetryEvery = 2 * time.Second

// catalogRereadEvery paces the readings of the recorded catalog after the
// start (rereadCatalog): a replica shows it fell behind (the
// coreapi_permission_catalog_behind gauge) within this of a rollout's
// new replica recording its catalog.
const catalogRereadEvery = 30 * time.Second

// recordCatalog returns the worker that records the permission catalog this
// replica started with: a new one replaces the stored hash and queues the
// invalidation of every cached projection, one behind a recorded catalog
// of a higher version leaves it (see permissions.Record). It retries
// until it succeeds, closes recorded, then ends.
func recordCatalog(c *permissions.Catalog, pool *pgxpool.Pool, log *slog.Logger, recorded chan<- struct{}) worker {
	return func(ctx context.Context) error {
		for {
			out, err := permissions.Record(ctx, pool, c)
			if err == nil {
				if out == permissions.Behind {
					// A newer catalog is recorded: this replica serves, and
					// refuses what hands out privileges (catalog_rollout).
					log.Warn("permission catalog behind the recorded one; not recorded", "hash", c.Hash(), "version", c.Version())
				} else {
					log.Info("permission catalog recorded", "hash", c.Hash(), "version", c.Version(), "entries", len(c.Entries()), "changed", out == permissions.Stored)
				}
				close(recorded)
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

// rereadCatalog returns the worker that, once recorded is closed
// (recordCatalog), reads the recorded catalog every interval into c's
// Standing, the gauges' source: a replica whose catalog was the recorded
// one at its start becomes behind when a rollout's new replica records
// another, which it would otherwise learn only from a guarded change
// (permissions.CheckCurrent). A failed reading is logged at debug level
// and tried again at the next tick; the last reading stands meanwhile.
func rereadCatalog(c *permissions.Catalog, pool *pgxpool.Pool, log *slog.Logger, interval time.Duration, recorded <-chan struct{}) worker {
	return func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case <-recorded:
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if err := permissions.Reread(ctx, pool, c); err != nil && ctx.Err() == nil {
				log.Debug("permission catalog not read again", "err", err)
			}
		}
	}
}

// catalogRecorded is the readiness check of a replica's catalog: until
// recordCatalog has recorded it, a replica starting with another catalog
// than the stored one refuses every change that hands out privileges (503
// catalog_rollout, permissions.CheckCurrent), so it takes no traffic yet.
func catalogRecorded(recorded <-chan struct{}) func() error {
	return func() error {
		select {
		case <-recorded:
			return nil
		default:
			return errors.New("permission catalog not recorded yet")
		}
	}
}
