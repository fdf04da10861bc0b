package httpapi_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit/tcplink"
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

// TestConnectionLostMidTransaction: the server's connection to PostgreSQL
// breaks while a request holds its transaction (a network outage, a
// server stopped with -m immediate: the socket closes with no error
// message first). The driver reports what the read got (an unexpected
// EOF); the request is answered 503 unavailable with Retry-After, like
// every other request while the database is away, not 500.
func TestConnectionLostMidTransaction(t *testing.T) {
	db := dbtest.New(t)
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	link := tcplink.New(t, u.Host)
	u.Host = link.Addr()
	// The server's pool goes through the link; seeding and the test's
	// lock go straight to PostgreSQL.
	e := start(t, apitest.Options{DB: &dbtest.DB{Name: db.Name, URL: u.String(), Pool: db.Pool}})
	tn := e.SeedTenant(t, "Cut")
	admin := e.SeedUserIn(t, tn.ID, "admin@example.com", "admin")
	member := e.SeedUserIn(t, tn.ID, "member@example.com", "member", "admin")
	hold := db.Hold(t, `SELECT 1 FROM memberships WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE`, tn.ID, member.UserID)
	answer := dbtest.AnsweredOrWaiting(t, db, func() apitest.Response {
		return e.Send(t, &admin, "DELETE", "/api/v1/users/"+member.UserID+"/roles/admin", nil)
	})
	if db.LockWaiters(t, "") == 0 {
		t.Fatalf("answered before waiting on the member's row: %+v", answer())
	}
	link.Drop()
	if err := hold.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := answer()
	if r.Status != 503 {
		t.Fatalf("connection lost mid-transaction: %d %s, want 503", r.Status, r.Body)
	}
	if r.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q, want 1", r.Header.Get("Retry-After"))
	}
	if p := r.Problem(t); p.Code != "unavailable" {
		t.Errorf("code = %q, want unavailable", p.Code)
	}
}
