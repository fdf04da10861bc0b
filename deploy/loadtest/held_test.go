package main

import (
	"testing"
	"time"
)

// TestHeldLatenciesSplit: a connection's first request counts in the
// storm's figure, a request started in the hold's second half in the
// steady state's, and every request in the whole hold's.
func TestHeldLatenciesSplit(t *testing.T) {
	const hold = 60 * time.Second
	var a, b heldLatencies
	a.add(0, 500*time.Millisecond, hold, 2_000_000) // a first request, slow
	a.add(1, 2500*time.Millisecond, hold, 900_000)  // the storm's backlog: neither first nor late
	a.add(15, 30*time.Second, hold, 3_000)          // the second half starts at hold/2
	b.add(0, 1900*time.Millisecond, hold, 5_000)
	b.add(29, 59*time.Second, hold, 2_000)
	a.merge(&b)
	if len(a.all) != 5 || len(a.first) != 2 || len(a.late) != 2 {
		t.Fatalf("all %v, first %v, late %v; want 5, 2, 2 requests", a.all, a.first, a.late)
	}
	_, p99, mx := percentiles(a.first)
	if p99 != 5*time.Millisecond || mx != 2*time.Second {
		t.Fatalf("first requests: p99 %v, max %v; want 5ms (of 2 samples, index 0.99×1), 2s", p99, mx)
	}
	if _, _, mx := percentiles(a.late); mx != 3*time.Millisecond {
		t.Fatalf("second half max %v, want 3ms: the storm's requests left out", mx)
	}
}

func TestHeldReport(t *testing.T) {
	r := &report{held: &heldResult{target: 10000, established: 10000, requests: 299000, hold: time.Minute, interval: 2 * time.Second,
		p50: 2 * time.Millisecond, p99: 2300 * time.Millisecond, max: 3 * time.Second,
		firstP99: 2900 * time.Millisecond, firstMax: 3 * time.Second,
		lateN: 150000, lateP50: 2 * time.Millisecond, lateP99: 6 * time.Millisecond, lateMax: 30 * time.Millisecond}}
	out := r.markdown()
	reportHas(t, out,
		"| 10000 | 299000 | 0 | 2.00 ms | 2300.00 ms | 3000.00 ms |",
		"| 2900.00 ms | 3000.00 ms | 150000 | 2.00 ms | 6.00 ms | 30.00 ms |",
	)
}
