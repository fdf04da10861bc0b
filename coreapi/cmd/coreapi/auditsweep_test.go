package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

// TestSweepAudit: with AUDIT_RETENTION set, the worker deletes the events
// older than it and keeps the newer; with 0 it returns at once and
// deletes nothing.
func TestSweepAudit(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	var tenant string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO tenants (name) VALUES ('T') RETURNING id::text`).Scan(&tenant); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `
INSERT INTO audit_events (tenant_id, action, target_type, created_at)
VALUES ($1, 'old', 'user', now() - interval '3 days'), ($1, 'new', 'user', now())`, tenant); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	count := func() (n int) {
		t.Helper()
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE tenant_id = $1`, tenant).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := sweepAudit(ctx, log, db.Pool, 0, time.Millisecond); err != nil || count() != 2 {
		t.Fatalf("retention 0: %v, %d events left; want nil, 2", err, count())
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sweepAudit(wctx, log, db.Pool, 48*time.Hour, 10*time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for count() != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var left string
	if err := db.Pool.QueryRow(ctx, `SELECT string_agg(action, ',') FROM audit_events WHERE tenant_id = $1`, tenant).Scan(&left); err != nil || left != "new" {
		t.Fatalf("events left %q, %v; want only the new one", left, err)
	}
}
