package keys

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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
