package httpapi_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
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
	var notYet atomic.Bool
	notYet.Store(true)
	c := httpapi.NewAdmin(pool2, prometheus.NewRegistry())
	c.AddCheck(func() error {
		if notYet.Load() {
			return errors.New("signing keys: first sightings not looked up")
		}
		return nil
	})
	ln3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Serve(ln3) }()
	defer c.Shutdown(context.Background())
	base = "http://" + ln3.Addr().String()
	if got := status("/readyz"); got != 503 {
		t.Fatalf("readyz with a check failing = %d, want 503", got)
	}
	notYet.Store(false)
	if got := status("/readyz"); got != 200 {
		t.Fatalf("readyz with the check passing = %d, want 200", got)
	}
	base = "http://" + ln2.Addr().String()
	b.SetNotReady()
	if got := status("/readyz"); got != 503 {
		t.Fatalf("readyz after SetNotReady = %d, want 503", got)
	}
}
