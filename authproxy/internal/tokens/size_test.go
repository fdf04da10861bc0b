package tokens

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

// liveHeap is the heap still in use after a full collection.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// EntryBytes is what a cached verified token really costs: the live heap
// after verifying n typical tokens (ids as coreapi makes them, an amr and
// an auth_time), over the entries held. The budget is only as good as this
// figure.
func TestEntryBytesMeasured(t *testing.T) {
	const n = 20_000
	// Everything but the verifier first: the key set, the tokens.
	f := newFixtureSize(t, time.Second, 1)
	now := time.Now()
	toks := make([][]byte, n)
	for i := range toks {
		c := testenv.DefaultClaims(now, fmt.Sprintf("0193a1f2-7c4d-7e0a-9b1c-%012d", i),
			"0193a1f2-7c4d-7e0a-9b1c-5d2e8f3a6b10", fmt.Sprintf("0193a1f3-0000-7e0a-9b1c-%012d", i))
		c["amr"], c["auth_time"] = []string{"pwd"}, now.Unix()
		toks[i] = []byte(testenv.Sign(t, f.key, c, nil))
	}
	opt := f.v.opt
	opt.CacheSize = n + n/4 // room in every shard
	// Measured from before the cache exists: its maps, rings and front
	// table are part of an entry's cost.
	before := liveHeap()
	v, err := New(opt, f.v.keys, f.m)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, tok := range toks {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	after := liveHeap()
	held := 0
	for _, tok := range toks {
		d := Digest(tok)
		if v.cache.get(&d) != nil {
			held++
		}
	}
	if held != n {
		t.Fatalf("the cache holds %d of %d entries; the measurement would be off", held, n)
	}
	per := float64(after-before) / float64(held)
	t.Logf("a cached token costs %.0f bytes (EntryBytes %d)", per, EntryBytes)
	if per < EntryBytes*0.7 || per > EntryBytes*1.3 {
		t.Fatalf("measured %.0f bytes per entry, EntryBytes is %d: set it to the measurement", per, EntryBytes)
	}
	runtime.KeepAlive(toks)
}

// gauge reads a gauge of the token cache from the registry.
func gauge(t *testing.T, f *fixture, name string) float64 {
	t.Helper()
	return gaugeOf(t, f, name, "token")
}

// gaugeOf reads a gauge of the named cache from the registry.
func gaugeOf(t *testing.T, f *fixture, name, cache string) float64 {
	t.Helper()
	mfs, err := f.m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cache" && l.GetValue() == cache {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{cache=%q} not exported", name, cache)
	return 0
}

// The working set is exported: entries held, the bytes charged for them,
// and the budget.
func TestCacheSizeMetrics(t *testing.T) {
	f := newFixtureSize(t, time.Second, 1000)
	if got := gauge(t, f, "authproxy_cache_budget_bytes"); got != 1000*EntryBytes {
		t.Fatalf("budget = %v, want %d", got, 1000*EntryBytes)
	}
	if got := gauge(t, f, "authproxy_cache_entries"); got != 0 {
		t.Fatalf("entries of an empty cache = %v", got)
	}
	for i := range 3 {
		if _, err := f.v.Verify(context.Background(), f.mint(t, fmt.Sprint("u", i))); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, func() error {
		return testenv.Want("authproxy_cache_entries", gauge(t, f, "authproxy_cache_entries"), 3)
	})
	if got := gauge(t, f, "authproxy_cache_cost_bytes"); got != 3*EntryBytes {
		t.Fatalf("cost = %v, want %d", got, 3*EntryBytes)
	}
	// Refusals are counted apart, against their own (smaller) budget.
	if _, err := f.v.Verify(context.Background(), []byte("x.y.z")); err == nil {
		t.Fatal("garbage accepted")
	}
	if got := gaugeOf(t, f, "authproxy_cache_entries", "token_negative"); got != 1 {
		t.Fatalf("remembered refusals = %v, want 1", got)
	}
	if got := gauge(t, f, "authproxy_cache_entries"); got != 3 {
		t.Fatalf("token entries after a refusal = %v, want 3", got)
	}
	if got, want := gaugeOf(t, f, "authproxy_cache_budget_bytes", "token_negative"), float64(f.v.negs.capacity()*NegativeEntryBytes); got != want {
		t.Fatalf("refusals' budget = %v, want %v", got, want)
	}
	f.v.purge()
	if got := gauge(t, f, "authproxy_cache_entries"); got != 0 {
		t.Fatalf("entries after Purge = %v", got)
	}
}

// NegativeEntryBytes is what a remembered refusal really costs in its
// store.
func TestNegativeEntryBytesMeasured(t *testing.T) {
	const n = 20_000
	before := liveHeap()
	s := newStore(n+n/4, prometheus.NewCounter(prometheus.CounterOpts{Name: "ev"}))
	now := time.Now()
	for i := range n {
		d := spreadName([]byte(fmt.Sprint("refused ", i))) // every one held: see spreadName
		s.put(&Entry{digest: d, err: ErrSignature, expires: now.Add(time.Minute).UnixNano()}, now.UnixNano())
	}
	after := liveHeap()
	if s.len() != n {
		t.Fatalf("the store holds %d of %d entries; the measurement would be off", s.len(), n)
	}
	per := float64(after-before) / n
	t.Logf("a remembered refusal costs %.0f bytes (NegativeEntryBytes %d)", per, NegativeEntryBytes)
	if per < NegativeEntryBytes*0.7 || per > NegativeEntryBytes*1.3 {
		t.Fatalf("measured %.0f bytes per entry, NegativeEntryBytes is %d: set it to the measurement", per, NegativeEntryBytes)
	}
	runtime.KeepAlive(s)
}
