package scalesim

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// The CPU rows leave their start out: the first requests (connections
// opened, caches of new PostgreSQL backends filled) cost more than any
// after them, and a row's CPU per request is the steady one. Only the
// requests that end inside the window count, the failed ones apart.
func TestClosedLoopWarmsUp(t *testing.T) {
	var cpu atomic.Int64 // the "process's" CPU time, ns
	var calls atomic.Int64
	read := func(context.Context) (proxy, core, pg time.Duration, err error) {
		c := time.Duration(cpu.Load())
		return c, 2 * c, 0, nil
	}
	do := func(w, i int) error {
		if calls.Add(1) <= 40 {
			cpu.Add(int64(5 * time.Millisecond)) // a cold start
		} else {
			cpu.Add(int64(10 * time.Microsecond))
		}
		time.Sleep(200 * time.Microsecond)
		if i%10 == 9 {
			return errors.New("status 503")
		}
		return nil
	}
	r, err := closedLoop(context.Background(), "x", read, 4, 300*time.Millisecond, 500*time.Millisecond, do)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || r.Errors == 0 {
		t.Fatalf("%d served, %d failed", r.Requests, r.Errors)
	}
	// 10 µs for each request that ended in the window, served or failed,
	// over the served: 10 × 10/9; a request in flight at either edge moves
	// it by a little. The cold starts (200 ms of "CPU") are not in it.
	if got := r.PerRequest(r.Proxy); got < 9*time.Microsecond || got > 14*time.Microsecond {
		t.Fatalf("CPU per request %v over %d requests; want ≈ 11 µs, the cold starts left out", got, r.Requests)
	}
	if got := r.PerRequest(r.Core); got < 18*time.Microsecond || got > 28*time.Microsecond {
		t.Fatalf("coreapi CPU per request %v, want twice the proxy's", got)
	}
	if r.Wall < 500*time.Millisecond || r.Wall > 700*time.Millisecond {
		t.Fatalf("window %v, want the 500 ms measured", r.Wall)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := closedLoop(ctx, "x", read, 1, time.Second, time.Second, do); err == nil {
		t.Fatal("a cancelled row reported as measured")
	}
}
