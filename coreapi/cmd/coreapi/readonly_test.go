package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
)

// TestWritesRefusedAsReadOnlyAre503: a database that refuses writes as
// read-only (SQLSTATE 25006: a primary demoted to a standby by a
// failover, which the pool's connections still reach) is unavailable, as
// one that cannot be reached is: a write is answered 503 with Retry-After,
// which the proxy and clients retry, not 500. Here every connection's
// transactions are read-only (default_transaction_read_only).
func TestWritesRefusedAsReadOnlyAre503(t *testing.T) {
	u, err := url.Parse(dbtest.New(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	// pgx reads a query value's '+' as it is: the space is %20.
	u.RawQuery = strings.TrimPrefix(u.RawQuery+"&options=-c%20default_transaction_read_only%3Don", "&")
	var out testkit.LogBuffer
	env := serveEnv(t, u.String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, envOf(env), &out) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("run did not return after cancel")
		}
	}()

	addr := waitListening(t, &out, done)
	resp, err := http.Post("http://"+addr+"/api/v1/auth/signup", "application/json",
		strings.NewReader(`{"email":"ro@example.com","password":"a long enough password","tenant_name":"RO"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"unavailable"`) {
		t.Fatalf("signup on a read-only database = %d (Retry-After %q) %s, want 503 unavailable with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}
