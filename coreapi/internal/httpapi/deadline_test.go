package httpapi_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
)

// TestRequestDeadline: a statement that waits on a lock nobody releases
// (here the users table locked by another transaction, as a migration's
// ALTER TABLE does) is given up at the request's deadline: 503
// unavailable with Retry-After, and nothing the request wrote is kept.
// Without a deadline every such request held its pool connection until
// the lock went, and the pool filled up behind them; here more requests
// than the pool has connections all get their answer, and the server
// serves again as soon as the lock is gone.
func TestRequestDeadline(t *testing.T) {
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.RequestTimeout = 500 * time.Millisecond }})
	tn := e.SeedTenant(t, "Deadline")
	id := e.SeedUserIn(t, tn.ID, "deadline@example.com", "member")
	if r := e.Get(t, &id, "/api/v1/users/me"); r.Status != 200 {
		t.Fatalf("before: %d %s", r.Status, r.Body)
	}

	ctx := context.Background()
	lock := e.DB.Hold(t, `LOCK TABLE users IN ACCESS EXCLUSIVE MODE`)
	const n = 12 // more than the test server's pool (8 connections)
	answers := make(chan apitest.Response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				answers <- e.Get(t, &id, "/api/v1/users/me")
			} else {
				answers <- e.Send(t, &id, "PATCH", "/api/v1/users/me", map[string]string{"display_name": "Renamed"})
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		// Let them through, so that the test ends, and fail.
		_ = lock.Rollback(ctx)
		<-done
		t.Fatal("requests waiting on a lock were not answered at their deadline")
	}
	close(answers)
	for r := range answers {
		if r.Status != 503 {
			t.Errorf("a request behind the lock: %d %s, want 503", r.Status, r.Body)
			continue
		}
		if p := r.Problem(t); p.Code != "unavailable" || r.Header.Get("Retry-After") != "1" {
			t.Errorf("a request behind the lock: code %q, Retry-After %q; want unavailable, 1", p.Code, r.Header.Get("Retry-After"))
		}
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := e.DB.Pool.QueryRow(ctx, `SELECT display_name FROM users WHERE id = $1`, id.UserID).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name == "Renamed" {
		t.Error("a write answered 503 was kept")
	}
	// The pool's connections were given back (or replaced): served again.
	if r := e.Get(t, &id, "/api/v1/users/me"); r.Status != 200 {
		t.Fatalf("after the lock: %d %s", r.Status, r.Body)
	}
}
