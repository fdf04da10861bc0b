package httpapi

import "testing"

func keyOf(i uint64) replayKey { return replayKey(i * 0x9E3779B97F4A7C15) } // spread over the shards

func TestReplayCache(t *testing.T) {
	t.Parallel()
	const now = 1_700_000_000_000
	c := newReplayCache(replayShards * 4)
	if !c.firstUse(keyOf(1), now+30_000, now) {
		t.Fatal("first use refused")
	}
	if c.firstUse(keyOf(1), now+30_000, now+29_000) {
		t.Fatal("second use within the window accepted")
	}
	if !c.firstUse(keyOf(2), now+30_000, now) {
		t.Fatal("another key refused")
	}

	t.Run("expired entries are dropped", func(t *testing.T) {
		c := newReplayCache(replayShards * 4)
		for i := range uint64(1000) {
			if !c.firstUse(keyOf(i), now+int64(i), now+int64(i)) {
				t.Fatalf("key %d refused", i)
			}
		}
		// Each key expired right after the next arrived: at most the
		// last few per shard remain.
		if n := c.len(); n > 2*replayShards {
			t.Fatalf("%d entries kept, want expired ones dropped", n)
		}
		if got := c.evicted.Load(); got != 0 {
			t.Fatalf("evicted = %d, want 0 (nothing was live)", got)
		}
	})

	t.Run("memory is bounded", func(t *testing.T) {
		c := newReplayCache(replayShards * 4)
		const n = 10_000
		for i := range uint64(n) {
			if !c.firstUse(keyOf(i), now+30_000, now) {
				t.Fatalf("key %d refused", i)
			}
		}
		if got := c.len(); got > replayShards*4 {
			t.Fatalf("%d entries kept, want at most %d", got, replayShards*4)
		}
		if got := c.evicted.Load(); got != n-uint64(c.len()) {
			t.Fatalf("evicted = %d, want %d", got, n-uint64(c.len()))
		}
		// The newest are still remembered.
		if c.firstUse(keyOf(n-1), now+30_000, now) {
			t.Fatal("the newest key was forgotten")
		}
	})
}

func BenchmarkReplayCache(b *testing.B) {
	c := newReplayCache(DefaultReplayCacheSize)
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		i++
		c.firstUse(keyOf(i), 1_700_000_030_000+int64(i/1000), 1_700_000_000_000+int64(i/1000))
	}
}
