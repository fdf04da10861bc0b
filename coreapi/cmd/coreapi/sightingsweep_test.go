package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// TestSweepSightings: the first sightings of signing keys gone from the
// directory stayed for ever, one row per rotation. The worker deletes
// those first found longer than keep ago, and keeps the sightings of the
// keys in the directory, however old, and of keys gone from it but found
// recently (a key just added, which this pod's Secret may lack yet).
func TestSweepSightings(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	dir := t.TempDir()
	present, err := keys.Generate(dir, keys.AlgEdDSA, time.Now().Add(-30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Load(dir, keys.AlgEdDSA, keys.WithSightings(keys.PGSightings(db.Pool)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.SightingsErr(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `
UPDATE signing_key_sightings SET first_seen = now() - interval '30 days';
INSERT INTO signing_key_sightings (kid, first_seen) VALUES
    ('20260101T000000Z-00000000', now() - interval '3 days'),
    ('20260102T000000Z-00000000', now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	kids := func() []string {
		t.Helper()
		var kids []string
		if err := db.Pool.QueryRow(ctx, `SELECT coalesce(array_agg(kid ORDER BY kid), '{}') FROM signing_key_sightings`).Scan(&kids); err != nil {
			t.Fatal(err)
		}
		return kids
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- sweepSightings(wctx, slog.New(slog.NewTextHandler(io.Discard, nil)), db.Pool, ring, 48*time.Hour, 10*time.Millisecond)
	}()
	want := []string{"20260102T000000Z-00000000", present}
	eventually.Within(t, 10*time.Second, func() error {
		if got := kids(); !slices.Equal(got, want) {
			return fmt.Errorf("sightings of %v, want %v", got, want)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
