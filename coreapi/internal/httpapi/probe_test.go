package httpapi_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
)

// serveAdmin serves a on a loopback port until the test ends and returns
// a function that GETs /readyz and reports its status and duration.
func serveAdmin(t *testing.T, a *httpapi.Admin) func() (int, time.Duration) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return func() (int, time.Duration) {
		t.Helper()
		start := time.Now()
		resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
}

// TestReadinessDoesNotQueueBehindRequests: with every pool connection
// taken by requests (a load peak), readiness still answers 200 at once,
// within the kubelet's default probe timeout of 1 s: probing through the
// pool, it waited 2 s for a connection and answered 503, so that every
// busy replica left the Service together. It still fails when the
// database is gone, and recovers on the next probe after a restart.
func TestReadinessDoesNotQueueBehindRequests(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	probe := httpapi.NewDBProbe(pool)
	defer probe.Close()
	ready := serveAdmin(t, httpapi.NewAdmin(probe, prometheus.NewRegistry()))
	if code, _ := ready(); code != 200 {
		t.Fatalf("readyz = %d, want 200", code)
	}

	for range cfg.MaxConns { // held as by requests
		c, err := pool.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
	}
	if code, d := ready(); code != 200 || d > time.Second {
		t.Fatalf("readyz with the pool in use = %d after %v, want 200 within 1s", code, d)
	}

	// The server drops every connection (a restart): the probe's kept
	// one is broken, and the probe connects again instead of failing.
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if code, _ := ready(); code != 200 {
		t.Fatalf("readyz after the server dropped its connections = %d, want 200", code)
	}

	// No database at all: not ready.
	gone, err := pgxpool.New(context.Background(), "postgres://postgres@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	goneProbe := httpapi.NewDBProbe(gone)
	defer goneProbe.Close()
	if code, _ := serveAdmin(t, httpapi.NewAdmin(goneProbe, prometheus.NewRegistry()))(); code != 503 {
		t.Fatalf("readyz with no database = %d, want 503", code)
	}
}
