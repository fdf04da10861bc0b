package tokens

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// defaultEntries is what the default CACHE_MEMORY_MB (256) holds: the
// app's budget over a token with its warm state (server.WarmBytes, 512)
// and a projection (projection.EntryBytes, 1,120), as app.CacheEntries
// splits it.
const defaultEntries = 256 << 20 / (EntryBytes + 512 + 1120)

// fillSynthetic puts n verified entries with distinct random digests into
// v (as if each had been verified) and returns their digests in a random
// order.
func fillSynthetic(t testing.TB, f *fixture, n int) []Name {
	t.Helper()
	key := f.v.keys.Current().Keys[f.key.Kid]
	if key == nil {
		t.Fatal("fixture key not in the key set")
	}
	now := time.Now()
	ds := make([]Name, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range ds {
		for j := 0; j < len(ds[i]); j += 8 {
			v := r.Uint64()
			for k := range 8 {
				ds[i][j+k] = byte(v >> (8 * k))
			}
		}
		c := &Claims{Sub: fmt.Sprintf("0193a1f2-7c4d-7e0a-9b1c-%012d", i), Tid: "0193a1f2-7c4d-7e0a-9b1c-5d2e8f3a6b10",
			Sid: fmt.Sprintf("0193a1f3-0000-7e0a-9b1c-%012d", i), Exp: now.Add(time.Hour).Unix(), Iat: now.Unix(), Key: key}
		f.v.remember(newEntry(&ds[i], c, now.Add(time.Hour).UnixNano()), now)
	}
	r.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	return ds
}

// BenchmarkWarmLookup is the lookup of a warm request (Cached) over a
// working set of 1,000 and of 100,000 tokens in a cache of the default
// size, every token in turn in a random order, as many distinct users'
// requests arrive: the per-request cost should not grow with the users.
// %front-table is the share of the working set the lock-free front table
// serves at the end (the rest is found in the cache's shards).
func BenchmarkWarmLookup(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			f := newFixtureSize(b, time.Second, defaultEntries)
			ds := fillSynthetic(b, f, n)
			now := time.Now()
			for i := range ds { // one pass, as the harness fills before it measures
				if _, hit, err := f.v.Cached(&ds[i], now); !hit || err != nil {
					b.Fatalf("entry %d: hit %v err %v", i, hit, err)
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, hit, _ := f.v.Cached(&ds[i], now); !hit {
					b.Fatal("miss")
				}
				if i++; i == len(ds) {
					i = 0
				}
			}
			b.StopTimer()
			front := 0
			for i := range ds {
				if e := f.v.hotSlot(&ds[i]).e.Load(); e != nil && e.digest == ds[i] {
					front++
				}
			}
			b.ReportMetric(100*float64(front)/float64(len(ds)), "%front-table")
		})
	}
}

// The front table follows the cache's size (two slots or more per entry),
// and keeps nothing the cache has evicted: after a flood of tokens four
// times the cache, every entry it holds is still in the cache, so the
// budget bounds its memory too.
func TestFrontTableFollowsCache(t *testing.T) {
	const size = 5000
	f := newFixtureSize(t, time.Second, size)
	if got := int64(len(f.v.hot)); got < hotPerEntry*f.v.cache.capacity() {
		t.Fatalf("front table of %d slots for a cache of %d entries, want at least %d a entry", got, f.v.cache.capacity(), hotPerEntry)
	}
	ds := fillSynthetic(t, f, 4*size)
	held, front := 0, 0
	for i := range f.v.hot {
		e := f.v.hot[i].e.Load()
		if e == nil {
			continue
		}
		front++
		if f.v.cache.get(&e.digest) != e {
			t.Fatalf("the front table holds an entry the cache evicted")
		}
	}
	for i := range ds {
		if f.v.cache.get(&ds[i]) != nil {
			held++
		}
	}
	if held != int(f.v.cache.capacity()) || front == 0 {
		t.Fatalf("cache holds %d of %d, front table %d", held, f.v.cache.capacity(), front)
	}
}
