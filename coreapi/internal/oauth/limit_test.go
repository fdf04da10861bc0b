package oauth

import (
	"fmt"
	"testing"
	"time"
)

// TestFullLimiterRefusesWithoutScanning: a table full of live windows
// (a client with as many addresses) refuses each newcomer at once, with
// no walk of every window under the lock per request; a newcomer is
// admitted once the earliest window has ended, and pruning then starts
// from it.
func TestFullLimiterRefusesWithoutScanning(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	now := t0
	l := newLimiter(2, time.Minute, 100, func() time.Time { return now })
	for i := range 100 {
		now = t0.Add(time.Duration(i) * 100 * time.Millisecond)
		if ok, _ := l.allow(fmt.Sprint("a", i)); !ok {
			t.Fatalf("client %d refused below the cap", i)
		}
	}
	if l.scans != 0 {
		t.Fatalf("%d scans before the table was full", l.scans)
	}
	now = t0.Add(30 * time.Second)
	for i := range 1000 {
		if ok, wait := l.allow(fmt.Sprint("b", i)); ok || wait != time.Minute {
			t.Fatalf("newcomer %d: allowed %v, wait %v; want refused for a window", i, ok, wait)
		}
	}
	if l.scans != 1 {
		t.Fatalf("%d scans for 1000 refusals of a full table, want 1", l.scans)
	}
	// A client already counted still gets its budget.
	if ok, _ := l.allow("a99"); !ok {
		t.Fatal("a known client refused because the table is full")
	}
	// The first window (a0's) ends at t0+1m: a newcomer takes its place.
	now = t0.Add(time.Minute)
	if ok, _ := l.allow("c"); !ok {
		t.Fatal("newcomer refused after the earliest window ended")
	}
	if _, ok := l.windows["a0"]; ok || len(l.windows) != 100 {
		t.Fatalf("a0 kept %v, %d windows; want a0 pruned, 100", ok, len(l.windows))
	}
	// The next window (a1's) ends 100 ms later: until then no scan.
	scans := l.scans
	if ok, _ := l.allow("d"); ok {
		t.Fatal("newcomer allowed into a full table")
	}
	if l.scans != scans {
		t.Fatal("a refusal before the next window's end scanned the table")
	}
	now = t0.Add(time.Minute + 100*time.Millisecond)
	if ok, _ := l.allow("d"); !ok {
		t.Fatal("newcomer refused after the next window ended")
	}
}

func BenchmarkFullLimiterRefusal(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	l := newLimiter(2, time.Minute, limiterKeys, func() time.Time { return now })
	for i := range limiterKeys {
		l.allow(fmt.Sprint("a", i))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if ok, _ := l.allow(fmt.Sprint("b", i)); ok {
			b.Fatal("allowed")
		}
	}
}
