package pgtrace

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
)

func TestCounter(t *testing.T) {
	db := dbtest.New(t)
	pool, err := NewPool(context.Background(), db.URL, PoolOptions{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	c := &Counter{}
	ctx := WithCounter(context.Background(), c)

	var n int
	if err := pool.QueryRow(ctx, `SELECT 1`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if c.Queries() != 1 || c.Transactions() != 0 || c.Prepares() != 1 {
		t.Fatalf("after one query: %d queries, %d tx, %d prepares; want 1, 0, 1", c.Queries(), c.Transactions(), c.Prepares())
	}
	// The same statement again on a one-connection pool is cached.
	if err := pool.QueryRow(ctx, `SELECT 1`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if c.Queries() != 2 || c.Prepares() != 1 {
		t.Fatalf("after a cached query: %d queries, %d prepares; want 2, 1", c.Queries(), c.Prepares())
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT 1`)
	b.Queue(`SELECT 2`)
	b.Queue(`SELECT 3`)
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	if c.Queries() != 3 {
		t.Fatalf("a batch of 3 counted as %d round trips, want 1", c.Queries()-2)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// begin + select + commit
	if c.Queries() != 6 || c.Transactions() != 1 {
		t.Fatalf("after a transaction: %d queries, %d tx; want 6, 1", c.Queries(), c.Transactions())
	}
	// Without a counter in the context nothing is counted (and nothing fails).
	if err := pool.QueryRow(context.Background(), `SELECT 1`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if c.Queries() != 6 {
		t.Fatalf("a query without the counter was counted")
	}
}

func TestPoolCollector(t *testing.T) {
	db := dbtest.New(t)
	pool, err := NewPool(context.Background(), db.URL, PoolOptions{MaxConns: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(context.Background(), `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewPoolCollector(pool))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if m.GetGauge() != nil {
			got[mf.GetName()] = m.GetGauge().GetValue()
		} else {
			got[mf.GetName()] = m.GetCounter().GetValue()
		}
	}
	if got["coreapi_db_pool_max_conns"] != 9 || got["coreapi_db_pool_acquires_total"] < 1 || got["coreapi_db_pool_conns"] < 1 {
		t.Fatalf("metrics = %v", got)
	}
}

// TestNewContext: the counter made with its context is found directly, and
// through a context derived from it; a parent's value stays visible.
func TestNewContext(t *testing.T) {
	type other struct{}
	parent := context.WithValue(context.Background(), other{}, "v")
	ctx, c := NewContext(parent)
	if FromContext(ctx) != c {
		t.Fatal("FromContext(ctx) is not the new counter")
	}
	derived, cancel := context.WithCancel(ctx)
	defer cancel()
	if FromContext(derived) != c {
		t.Fatal("FromContext(derived) is not the new counter")
	}
	if derived.Value(other{}) != "v" {
		t.Fatal("the parent's value is lost")
	}
	if FromContext(parent) != nil {
		t.Fatal("a context without a counter has one")
	}
	Tracer{}.TraceQueryStart(derived, nil, pgx.TraceQueryStartData{SQL: "BEGIN"})
	if c.Queries() != 1 || c.Transactions() != 1 {
		t.Fatalf("%d queries, %d transactions; want 1, 1", c.Queries(), c.Transactions())
	}
}
