package tokens

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func storeEntry(i int, expires int64) *Entry {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return &Entry{digest: spreadName(b[:]), expires: expires}
}

// spreadName is a cache name for the store's tests: the same in every run,
// and spread over the shards as the names of real tokens are. Digest of
// inputs that differ in a few bits is neither: a GMAC tag is linear (over
// GF(2)) in its input, so the tags of 4,000 consecutive integers take the
// shard bits of a few dozen input bits through a linear map drawn anew with
// each process's key, which now and then sends them to half the shards or
// fewer. A JWT's signature bytes make its tag uniform.
func spreadName(b []byte) Name {
	sum := sha256.Sum256(b)
	return Name(sum[:NameSize])
}

// The scenario behind the cache's design: a flood of one-time tokens fills
// the cache, then a working set that fits arrives and is used over and
// over. Every entry of the working set must be held (no admission policy
// turning newcomers away), the flood is evicted oldest first, and tokens
// in use throughout keep their place.
func TestStoreHoldsAWorkingSetAfterAFlood(t *testing.T) {
	const capacity, flood, working, inUse = 6400, 9000, 4000, 100
	ev := prometheus.NewCounter(prometheus.CounterOpts{Name: "ev"})
	s := newStore(capacity, ev)
	exp := time.Now().Add(time.Hour).UnixNano()
	now := time.Now().UnixNano()
	var hot []*Entry
	for i := range inUse {
		e := storeEntry(i, exp)
		s.put(e, now)
		hot = append(hot, e)
	}
	use := func() {
		for _, e := range hot {
			if s.get(&e.digest) != e {
				t.Fatal("an entry in use was evicted")
			}
		}
	}
	for i := range flood {
		s.put(storeEntry(1_000_000+i, exp), now)
		if i%500 == 0 {
			use()
		}
	}
	if got := s.len(); got > capacity {
		t.Fatalf("%d entries held, capacity %d", got, capacity)
	}
	var ws []*Entry
	for i := range working {
		e := storeEntry(2_000_000+i, exp)
		s.put(e, now)
		ws = append(ws, e)
		if i%500 == 0 {
			use()
		}
	}
	for _, e := range ws {
		if s.get(&e.digest) != e {
			t.Fatal("an entry of the working set is missing")
		}
	}
	use()
	if got := s.len(); got != capacity {
		t.Fatalf("%d entries held, want the capacity %d", got, capacity)
	}
	if got, want := testutil.ToFloat64(ev), float64(inUse+flood+working-capacity); got != want {
		t.Fatalf("evictions = %v, want %v", got, want)
	}
}

// An expired entry is evicted before a live unreferenced one, and a put
// under the same digest replaces the entry without growing the store.
func TestStoreEvictsExpiredFirstAndReplaces(t *testing.T) {
	s := newStore(storeShards, prometheus.NewCounter(prometheus.CounterOpts{Name: "ev"})) // one slot a shard
	now := time.Now().UnixNano()
	a := storeEntry(1, now+int64(time.Hour))
	s.put(a, now)
	a2 := &Entry{digest: a.digest, expires: now + int64(2*time.Hour)}
	s.put(a2, now)
	if s.len() != 1 || s.get(&a.digest) != a2 {
		t.Fatalf("replace: len %d, entry %p want %p", s.len(), s.get(&a.digest), a2)
	}
	// Another entry of the same shard takes the one slot, referenced or not.
	var b *Entry
	for i := 2; b == nil; i++ {
		if e := storeEntry(i, now+int64(time.Hour)); e.digest[0]%storeShards == a.digest[0]%storeShards {
			b = e
		}
	}
	s.put(b, now)
	if s.get(&a.digest) != nil || s.get(&b.digest) != b || s.len() != 1 {
		t.Fatal("a full shard did not make room")
	}
	s.clear()
	if s.len() != 0 || s.get(&b.digest) != nil {
		t.Fatal("clear left entries")
	}
}

// Refused tokens are remembered apart: however many there are, they never
// push a verified token out of the cache.
func TestRefusalsDoNotEvictVerifiedTokens(t *testing.T) {
	f := newFixtureSize(t, time.Minute, 200)
	good := f.mint(t, "good")
	if _, err := f.v.Verify(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := f.v.Verify(context.Background(), []byte(fmt.Sprintf("x.y.z%d", i))); err == nil {
			t.Fatal("garbage accepted")
		}
	}
	d := Digest(good)
	if f.v.cache.get(&d) == nil {
		t.Fatal("refused tokens evicted a verified one")
	}
	if got := f.v.negs.len(); got > f.v.negs.capacity() || got == 0 {
		t.Fatalf("refusals held: %d (capacity %d)", got, f.v.negs.capacity())
	}
}

// A verifier whose cache holds the working set verifies each token once,
// even after a flood of one-time tokens larger than the cache.
func TestVerifierWorkingSetAfterFlood(t *testing.T) {
	const size = 6400
	f := newFixtureSize(t, time.Second, size)
	flood := make([][]byte, size*5/4)
	for i := range flood {
		flood[i] = f.mint(t, fmt.Sprint("flood", i))
	}
	working := make([][]byte, size/2)
	for i := range working {
		working[i] = f.mint(t, fmt.Sprint("user", i))
	}
	for _, tok := range flood {
		if _, err := f.v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	for _, tok := range working { // the fill
		if _, err := f.v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	n := f.verifications()
	for range 3 {
		for _, tok := range working {
			if _, err := f.v.Verify(context.Background(), tok); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := f.verifications() - n; got != 0 {
		t.Fatalf("%v verifications over 3 rounds of a working set that fits, want 0", got)
	}
}
