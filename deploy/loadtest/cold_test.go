package main

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The cold row's pool grows with the machine's warm rate: the 2026-12-02
// run (warm 41,666 req/s, cold 12,727 req/s over 12 s) ran out of a fixed
// pool of 150,000 and reused 3,322 tokens.
func TestColdPoolSize(t *testing.T) {
	window := 12 * time.Second
	if got := coldPoolSize(41666, window, 150000); got < 12727*12 || got != 299995 {
		t.Errorf("fast machine: pool %d, want 0.6 × the warm rate × the window, above the cold row's 152,724 requests", got)
	}
	if got := coldPoolSize(17000, window, 150000); got != 150000 {
		t.Errorf("slow machine: pool %d, want the floor 150000", got)
	}
	if got := coldPoolSize(0, window, 30000); got != 30000 {
		t.Errorf("no warm rate: pool %d, want the floor 30000", got)
	}
}

// once hands out each request once, then counts every reuse.
func TestOnceCountsReuse(t *testing.T) {
	reqs := [][]byte{[]byte("a"), []byte("b")}
	var reused atomic.Int64
	next := once(reqs, &reused)
	var got []string
	for i := range 5 {
		got = append(got, string(next(0, i)))
	}
	if want := "ababa"; strings.Join(got, "") != want || reused.Load() != 3 {
		t.Errorf("requests %q, reused %d; want %q and 3", got, reused.Load(), want)
	}
}
