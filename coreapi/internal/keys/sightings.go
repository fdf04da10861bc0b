package keys

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
)

const (
	qRecordSightings = `
INSERT INTO signing_key_sightings (kid) SELECT unnest($1::text[])
ON CONFLICT (kid) DO NOTHING`
	qSightings = `SELECT kid, first_seen FROM signing_key_sightings WHERE kid = ANY($1::text[])`
)

// PGSightings keeps the keys' first sightings in the database
// (signing_key_sightings), by its clock: every replica, and every restart
// of one, gets the same time for a key.
func PGSightings(pool *pgxpool.Pool) Sightings {
	return func(ctx context.Context, kids []string) (map[string]time.Time, error) {
		if _, err := pool.Exec(ctx, qRecordSightings, kids); err != nil {
			return nil, fmt.Errorf("record key sightings: %w", err)
		}
		rows, err := pool.Query(ctx, qSightings, kids)
		if err != nil {
			return nil, fmt.Errorf("read key sightings: %w", err)
		}
		defer rows.Close()
		seen := make(map[string]time.Time, len(kids))
		for rows.Next() {
			var (
				kid string
				at  time.Time
			)
			if err := rows.Scan(&kid, &at); err != nil {
				return nil, fmt.Errorf("read key sightings: %w", err)
			}
			seen[kid] = at
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read key sightings: %w", err)
		}
		return seen, nil
	}
}

// SightingsKeep is how long the first sighting of a kid gone from the
// directory is kept at the least (see PruneSightings): far beyond the time
// a Secret takes to reach every pod.
const SightingsKeep = 24 * time.Hour

// PruneSightings deletes the first sightings of the kids that are not in
// kids (the keys of this coreapi's directory) and were first found more
// than keep ago, and returns how many it deleted. A sighting matters only
// while a pod may find its key in its directory; once the key is removed
// from the Secret, its row would stay for ever (one per rotation). A pod
// whose Secret lags behind may still hold a removed key: should it restart
// then, it records the key as found anew, and that key, on its way out,
// waits the activation delay again there. A key added recently is kept
// whatever this pod's directory says (keep, longer than any Secret takes
// to reach every pod, counts from the first find anywhere), so a pod whose
// Secret lacks it yet never deletes the sighting the others go by.
func PruneSightings(ctx context.Context, db sqldb.DB, kids []string, keep time.Duration) (int64, error) {
	const q = `
DELETE FROM signing_key_sightings
WHERE kid <> ALL($1::text[]) AND first_seen < now() - make_interval(secs => $2)`
	if kids == nil {
		kids = []string{} // <> ALL(NULL) would delete nothing
	}
	tag, err := db.Exec(ctx, q, kids, keep.Seconds())
	if err != nil {
		return 0, fmt.Errorf("prune key sightings: %w", err)
	}
	return tag.RowsAffected(), nil
}
