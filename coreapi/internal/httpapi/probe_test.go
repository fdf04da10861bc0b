package httpapi_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
)

// serveAdmin serves a on a loopback port until the test ends and returns
// a function that GETs /readyz and reports its status and duration.
func serveAdmin(t *testing.T, a *httpapi.Admin) func() (int, time.Duration) {
	t.Helper()
	ready := serveAdminBody(t, a)
	return func() (int, time.Duration) {
		t.Helper()
		start := time.Now()
		code, _ := ready()
		return code, time.Since(start)
	}
}

// serveAdminBody serves a on a loopback port until the test ends and
// returns a function that GETs /readyz and reports its status and body.
func serveAdminBody(t *testing.T, a *httpapi.Admin) func() (int, string) {
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
	return func() (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
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

// TestReadinessReadOnlyDatabase: a failover that leaves the pod's
// database address on a server that refuses writes (a primary demoted
// to a standby, reached again once it restarted; DNS not yet moved on)
// answered every write 503 while /readyz, a ping, stayed 200, so the
// pod stayed in the Service and nothing told the operator why. Readiness
// now asks whether the connection's transactions are read-only: 503
// "database is read-only" then, and ready again once the address reaches
// a server that takes writes. Here the database's sessions are read-only
// by default (default_transaction_read_only) and its connections ended,
// as a demotion ends them.
func TestReadinessReadOnlyDatabase(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	probe := httpapi.NewDBProbe(db.Pool)
	defer probe.Close()
	ready := serveAdminBody(t, httpapi.NewAdmin(probe, prometheus.NewRegistry()))
	if code, body := ready(); code != 200 {
		t.Fatalf("readyz = %d %q, want 200", code, body)
	}

	ctx := context.Background()
	name := pgx.Identifier{db.Name}.Sanitize()
	setDefault := func(q string) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	setDefault("ALTER DATABASE " + name + " SET default_transaction_read_only = on")
	setDefault(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if code, body := ready(); code != 503 || body != "database is read-only\n" {
		t.Fatalf("readyz on a read-only database = %d %q, want 503 %q", code, body, "database is read-only\n")
	}

	// The address reaches a server that takes writes again: ready, without
	// waiting for the probe's connection to break.
	setDefault("ALTER DATABASE " + name + " RESET default_transaction_read_only")
	if code, body := ready(); code != 200 {
		t.Fatalf("readyz once the database takes writes = %d %q, want 200", code, body)
	}
}
