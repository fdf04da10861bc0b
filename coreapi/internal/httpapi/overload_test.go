package httpapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestProjectionOverload holds the only projection slot with a fetch that
// PostgreSQL keeps waiting on a table lock: the next fetch is answered 503
// with Retry-After after the bounded wait, not queued, and once the lock
// goes both the held fetch and new ones succeed.
func TestProjectionOverload(t *testing.T) {
	t.Parallel()
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) {
		o.ProjectionMaxInFlight = 1
		o.ProjectionMaxWait = 50 * time.Millisecond
	}})
	tid := e.SeedTenant(t, "Acme").ID
	u := e.SeedUserIn(t, tid, "owner@acme.test", "owner")
	get := func() apitest.Response {
		return e.Do(t, apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + u.UserID + "?tenant_id=" + tid, Service: true})
	}
	apitest.WantStatus(t, get(), 200)

	ctx := context.Background()
	tx, err := e.DB.Pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // released below on the happy path
	if _, err := tx.Exec(ctx, `LOCK TABLE memberships IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	held := make(chan apitest.Response, 1)
	go func() { held <- get() }()
	// Wait until that fetch is inside PostgreSQL, blocked on the lock.
	e.DB.WaitForLockWaiters(t, 1)

	r := get()
	apitest.WantProblem(t, r, 503, problem.CodeUnavailable)
	if ra := r.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
	if r.Stats.Queries != 0 {
		t.Errorf("a refused fetch made %d queries, want 0", r.Stats.Queries)
	}

	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	apitest.WantStatus(t, <-held, 200)
	apitest.WantStatus(t, get(), 200)
}
