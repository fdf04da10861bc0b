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

// Outcome is what Record did with a replica's catalog.
type Outcome int

// Outcomes of Record.
const (
	// Current: the catalog was already the recorded one (its version is
	// stored if higher); nothing published.
	Current Outcome = iota
	// Stored: the catalog replaced the recorded one (or was the first),
	// and auth.invalidate.all was queued.
	Stored
	// Behind: a catalog of a higher version is recorded and was kept; the
	// replica refuses the changes that hand out privileges
	// (CheckCurrent) until it is replaced by one with a current catalog.
	Behind
)

func (o Outcome) String() string {
	switch o {
	case Current:
		return "current"
	case Stored:
		return "stored"
	case Behind:
		return "behind"
	}
	return "unknown"
}

// Record stores c as the deployment's catalog (its hash and version)
// unless the recorded one has a higher version, and, in the same
// transaction, queues an invalidation of every cached projection
// (auth.invalidate.all) through the outbox when the hash changes.
// Replicas starting at once are serialised on the one row: of several
// starting with the same new catalog exactly one stores it. During a
// rollout the version orders the catalogs: an old replica restarting
// after a newer catalog was recorded keeps it (Behind) instead of
// recording its own again. Catalogs of the same version (0 when a
// catalog declares none) replace each other, the last to start winning,
// each replacing one publishing. What is recorded afterwards is c's
// Standing.
func Record(ctx context.Context, pool *pgxpool.Pool, c *Catalog) (Outcome, error) {
	const qLock = `SELECT hash, version FROM permission_catalog WHERE id FOR UPDATE`
	// DO NOTHING waits for a replica inserting at the same moment; the
	// loop then locks the row it committed.
	const qInsert = `INSERT INTO permission_catalog (id, hash, version) VALUES (true, $1, $2) ON CONFLICT (id) DO NOTHING`
	const qUpdate = `UPDATE permission_catalog SET hash = $1, version = $2, updated_at = now() WHERE id`
	var out Outcome
	var hash string // what is recorded once the transaction commits
	var version int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for {
			err := tx.QueryRow(ctx, qLock).Scan(&hash, &version)
			if errors.Is(err, pgx.ErrNoRows) {
				hash, version = c.Hash(), c.Version()
				tag, err := tx.Exec(ctx, qInsert, c.Hash(), c.Version())
				if err != nil {
					return err
				}
				if tag.RowsAffected() == 0 {
					continue
				}
				out = Stored
				return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.SubjectAll, Reason: invalidation.ReasonCatalogChanged})
			}
			if err != nil {
				return err
			}
			switch {
			case c.Version() < version:
				out = Behind
				return nil
			case hash == c.Hash():
				out = Current
				if c.Version() == version {
					return nil
				}
				version = c.Version()
				_, err := tx.Exec(ctx, qUpdate, hash, version)
				return err
			}
			hash, version = c.Hash(), c.Version()
			if _, err := tx.Exec(ctx, qUpdate, hash, version); err != nil {
				return err
			}
			out = Stored
			return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.SubjectAll, Reason: invalidation.ReasonCatalogChanged})
		}
	})
	if err != nil {
		return 0, fmt.Errorf("record permission catalog: %w", err)
	}
	c.saw(hash, version)
	return out, nil
}

// ErrRollout: the catalog recorded last is not this replica's. A catalog
// rollout is under way (or this replica has not recorded its own yet, or
// its catalog is behind the recorded one's version),
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
// disagree with; c nil is the built-in catalog. Changes that hand out or
// reshape privileges call it in their transaction, after the tenant's
// lock and before they judge; so do those that take privileges away on
// the say of a caller who must hold what their target holds (revoking,
// disabling, removing, deleting a role or a service account), which
// follows the catalog too. Reads, and changes judged by nothing the
// catalog shapes, do not. What it read is c's Standing.
func CheckCurrent(ctx context.Context, tx pgx.Tx, c *Catalog) error {
	const q = `SELECT hash, version FROM permission_catalog WHERE id FOR SHARE`
	if c == nil {
		c = Builtin()
	}
	var stored string
	var version int64
	err := tx.QueryRow(ctx, q).Scan(&stored, &version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("read permission catalog: %w", err)
	}
	c.saw(stored, version)
	if stored != c.Hash() {
		return ErrRollout
	}
	return nil
}

// Reread reads the recorded catalog (no lock) into c's Standing: a
// replica whose catalog was the recorded one at its start learns that a
// rollout recorded another (and one behind, that the recorded catalog
// became its own again) without waiting for a guarded change. Nothing
// recorded leaves the Standing as it was.
func Reread(ctx context.Context, pool *pgxpool.Pool, c *Catalog) error {
	const q = `SELECT hash, version FROM permission_catalog WHERE id`
	var hash string
	var version int64
	err := pool.QueryRow(ctx, q).Scan(&hash, &version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("read permission catalog: %w", err)
	}
	c.saw(hash, version)
	return nil
}
