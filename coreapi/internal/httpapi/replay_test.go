package httpapi

import "testing"

func keyOf(i uint64) replayKey { return replayKey(i * 0x9E3779B97F4A7C15) } // spread over shards and buckets

func TestReplayCache(t *testing.T) {
	t.Parallel()
	const now = 1_700_000_000_000
	const size = replayShards * replayWays * 4
	c := newReplayCache(size)
	if !c.firstUse(keyOf(1), now+30_000, now) {
		t.Fatal("first use refused")
	}
	if c.firstUse(keyOf(1), now+30_000, now+29_000) {
		t.Fatal("second use within the window accepted")
	}
	if c.firstUse(keyOf(1), now+30_000, now+30_000) {
		t.Fatal("second use at the end of the window accepted")
	}
	if !c.firstUse(keyOf(2), now+30_000, now) {
		t.Fatal("another key refused")
	}

	t.Run("expired entries free their slots", func(t *testing.T) {
		c := newReplayCache(size)
		for i := range uint64(100 * size) {
			// Each key's window has ended by the time the next arrives.
			if !c.firstUse(keyOf(i), now+int64(i), now+int64(i)) {
				t.Fatalf("key %d refused", i)
			}
		}
		if got := c.evicted.Load(); got != 0 {
			t.Fatalf("evicted = %d, want 0 (nothing was live)", got)
		}
	})

	t.Run("memory is fixed; overflow forgets the oldest", func(t *testing.T) {
		c := newReplayCache(size)
		const n = 10 * size
		for i := range uint64(n) {
			if !c.firstUse(keyOf(i), now+30_000+int64(i), now) {
				t.Fatalf("key %d refused", i)
			}
		}
		if got := c.live(now); got != size {
			t.Fatalf("%d entries live, want the table's %d", got, size)
		}
		if got := c.evicted.Load(); got != n-size {
			t.Fatalf("evicted = %d, want %d", got, n-size)
		}
		// The newest are remembered (the oldest of a bucket goes first).
		for i := uint64(n - 8); i < n; i++ {
			if c.firstUse(keyOf(i), now+30_000+int64(i), now) {
				t.Fatalf("recent key %d was forgotten", i)
			}
		}
	})
}

func BenchmarkReplayCache(b *testing.B) {
	c := newReplayCache(DefaultReplayCacheSize)
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		i++
		now := int64(1_700_000_000_000 + i/8) // 8,000 a second
		c.firstUse(keyOf(i), now+30_000, now)
	}
}

// TestMethodName: the standard methods are their constants (kept as metric
// labels, they must not alias the request buffer), others are copies.
func TestMethodName(t *testing.T) {
	buf := []byte("GET")
	m := methodName(string(buf))
	if m != "GET" {
		t.Fatalf("methodName(GET) = %q", m)
	}
	buf2 := []byte("PROPFIND")
	s := unsafeString(buf2)
	got := methodName(s)
	buf2[0] = 'X'
	if got != "PROPFIND" {
		t.Fatalf("methodName(PROPFIND) aliases its argument: %q", got)
	}
}
