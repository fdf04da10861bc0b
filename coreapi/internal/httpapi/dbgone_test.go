package httpapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestDatabaseGoneAway: when PostgreSQL drops the server's connections (an
// administrator shutdown, as in a restart or failover), a read gets a 503
// problem with Retry-After (validated against the OpenAPI document), and
// the next request after the pool reconnects succeeds.
func TestDatabaseGoneAway(t *testing.T) {
	e := start(t, apitest.Options{})
	tn := e.SeedTenant(t, "Gone")
	id := e.SeedUserIn(t, tn.ID, "gone@example.com", "member")
	if r := e.Get(t, &id, "/api/v1/users/me"); r.Status != 200 {
		t.Fatalf("before: %d %s", r.Status, r.Body)
	}
	// Terminate every connection of this database but ours: the server's
	// pooled connections now fail with 57P01 on their next use.
	const q = `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()`
	var n int
	if err := e.DB.Pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no server connection was terminated")
	}
	r := e.Get(t, &id, "/api/v1/users/me")
	if r.Status != 503 {
		t.Fatalf("after the connections were terminated: %d %s, want 503", r.Status, r.Body)
	}
	if r.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q, want 1", r.Header.Get("Retry-After"))
	}
	if p := r.Problem(t); p.Code != "unavailable" {
		t.Errorf("code = %q, want unavailable", p.Code)
	}
	// pgxpool replaces broken connections: the service recovers by itself.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.Get(t, &id, "/api/v1/users/me")
		if r.Status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %d %s", r.Status, r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
