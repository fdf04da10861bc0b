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

func TestAdminReadiness(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	pool, err := pgxpool.New(context.Background(), db.URL)
	if err != nil {
		t.Fatal(err)
	}
	a := httpapi.NewAdmin(pool, prometheus.NewRegistry())
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
	base := "http://" + ln.Addr().String()
	status := func(path string) int {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("/readyz"); got != 200 {
		t.Fatalf("readyz = %d, want 200", got)
	}
	pool.Close()
	if got := status("/readyz"); got != 503 {
		t.Fatalf("readyz with the pool closed = %d, want 503", got)
	}
	if got := status("/healthz"); got != 200 {
		t.Fatalf("healthz = %d, want 200 (liveness does not depend on the database)", got)
	}

	pool2, err := pgxpool.New(context.Background(), db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool2.Close()
	b := httpapi.NewAdmin(pool2, prometheus.NewRegistry())
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.Serve(ln2) }()
	defer b.Shutdown(context.Background())
	base = "http://" + ln2.Addr().String()
	if got := status("/readyz"); got != 200 {
		t.Fatalf("readyz = %d, want 200", got)
	}
	b.SetNotReady()
	if got := status("/readyz"); got != 503 {
		t.Fatalf("readyz after SetNotReady = %d, want 503", got)
	}
}
