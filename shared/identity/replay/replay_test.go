package replay

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

func keyOf(i uint64) Key { return Key(i * 0x9E3779B97F4A7C15) } // spread over shards and buckets

func TestCache(t *testing.T) {
	t.Parallel()
	const now = 1_700_000_000_000
	const size = shards * ways * 4
	c := New(size)
	if !c.FirstUse(keyOf(1), now+30_000, now) {
		t.Fatal("first use refused")
	}
	if c.FirstUse(keyOf(1), now+30_000, now+29_000) {
		t.Fatal("second use within the window accepted")
	}
	if c.FirstUse(keyOf(1), now+30_000, now+30_000) {
		t.Fatal("second use at the end of the window accepted")
	}
	if !c.FirstUse(keyOf(2), now+30_000, now) {
		t.Fatal("another key refused")
	}

	t.Run("expired entries free their slots", func(t *testing.T) {
		c := New(size)
		for i := range uint64(100 * size) {
			// Each key's window has ended by the time the next arrives.
			if !c.FirstUse(keyOf(i), now+int64(i), now+int64(i)) {
				t.Fatalf("key %d refused", i)
			}
		}
		if got := c.Evicted(); got != 0 {
			t.Fatalf("evicted = %d, want 0 (nothing was live)", got)
		}
	})

	t.Run("memory is fixed; overflow forgets the oldest", func(t *testing.T) {
		c := New(size)
		const n = 10 * size
		for i := range uint64(n) {
			if !c.FirstUse(keyOf(i), now+30_000+int64(i), now) {
				t.Fatalf("key %d refused", i)
			}
		}
		if got := c.live(now); got != size {
			t.Fatalf("%d entries live, want the table's %d", got, size)
		}
		if got := c.Evicted(); got != n-size {
			t.Fatalf("evicted = %d, want %d", got, n-size)
		}
		// The newest are remembered (the oldest of a bucket goes first).
		for i := uint64(n - 8); i < n; i++ {
			if c.FirstUse(keyOf(i), now+30_000+int64(i), now) {
				t.Fatalf("recent key %d was forgotten", i)
			}
		}
	})
}

// TestFullBucketForgetsTheOneClosestToExpiry: a bucket whose eight slots
// hold live signatures makes room for a ninth by forgetting the one that
// expires first (whatever the order they came in), counts it, and keeps
// the other seven; the forgotten signature, sent again, is then accepted.
func TestFullBucketForgetsTheOneClosestToExpiry(t *testing.T) {
	t.Parallel()
	const now = 1_700_000_000_000
	c := New(shards * ways) // one bucket a shard
	if c.Size() != shards*ways {
		t.Fatalf("Size() = %d, want %d", c.Size(), shards*ways)
	}
	// Keys of one shard (same residue mod 32), hence of its one bucket.
	key := func(i int) Key { return Key(7 + shards*uint64(i)) }
	// Expiries out of arrival order; the fourth to come expires first.
	exps := []int64{25_000, 27_000, 21_000, 12_000, 29_000, 30_000, 18_000, 22_000}
	for i, e := range exps {
		if !c.FirstUse(key(i), now+e, now) {
			t.Fatalf("key %d refused", i)
		}
	}
	if got := c.Evicted(); got != 0 {
		t.Fatalf("evicted = %d with a bucket just full, want 0", got)
	}
	if !c.FirstUse(key(8), now+30_000, now) {
		t.Fatal("a ninth key refused")
	}
	if got := c.Evicted(); got != 1 {
		t.Fatalf("evicted = %d after the ninth, want 1", got)
	}
	for i := range exps {
		if i == 3 {
			continue
		}
		if c.FirstUse(key(i), now+exps[i], now) {
			t.Fatalf("key %d (expiring at +%d ms) was forgotten instead of key 3 (+12000)", i, exps[i])
		}
	}
	// Key 3 was forgotten: it is new again (and now forgets another).
	if !c.FirstUse(key(3), now+exps[3], now) {
		t.Fatal("key 3, the one closest to expiry, is still remembered")
	}
	if got := c.Evicted(); got != 2 {
		t.Fatalf("evicted = %d, want 2", got)
	}
	// Another shard is untouched by all this.
	if !c.FirstUse(Key(8), now+30_000, now) || c.Evicted() != 2 {
		t.Fatalf("a key of another shard: evicted = %d", c.Evicted())
	}
}

func TestNewSizes(t *testing.T) {
	t.Parallel()
	for size, want := range map[int]int{0: DefaultSize, -1: DefaultSize, 1: 256, 255: 256, 256: 256, 1000: 768, 1024: 1024} {
		if got := New(size).Size(); got != want {
			t.Errorf("New(%d).Size() = %d, want %d", size, got, want)
		}
	}
}

func sigOf(mac []byte) string {
	return identity.VersionV2 + "=" + base64.RawURLEncoding.EncodeToString(mac)
}

func TestKeyOf(t *testing.T) {
	t.Parallel()
	mac := make([]byte, 32)
	for i := range mac {
		mac[i] = byte(i*37 + 11)
	}
	k, ok := KeyOf(sigOf(mac))
	if !ok || k != Key(binary.LittleEndian.Uint64(mac[:8])) {
		t.Fatalf("KeyOf = %x, %v; want the first 8 bytes of the HMAC, %x", uint64(k), ok, binary.LittleEndian.Uint64(mac[:8]))
	}
	// Only the first 64 bits count.
	other := append([]byte(nil), mac...)
	other[8] ^= 0xff
	if k2, _ := KeyOf(sigOf(other)); k2 != k {
		t.Fatal("a change after the first 8 bytes changed the key")
	}
	other[7] ^= 1
	if k2, _ := KeyOf(sigOf(other)); k2 == k {
		t.Fatal("a change in the first 8 bytes kept the key")
	}
	for _, bad := range []string{"", "v2=", "v2=AAAAAAAAAAA", "v1=" + sigOf(mac)[3:], "v2=!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"} {
		if _, ok := KeyOf(bad); ok {
			t.Errorf("KeyOf(%q) ok", bad)
		}
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	c := New(0)
	now := time.UnixMilli(1_700_000_000_000)
	mac := make([]byte, 32)
	mac[0] = 1
	sig, ts := sigOf(mac), "1699999990000" // signed 10 s before now
	if err := c.Check(sig, ts, 30*time.Second, now); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := c.Check(sig, ts, 30*time.Second, now.Add(19*time.Second)); !errors.Is(err, identity.ErrReplayed) {
		t.Fatalf("again at the end of the window: %v, want ErrReplayed", err)
	}
	if got := identity.Reason(identity.ErrReplayed); got != "replay" {
		t.Fatalf("Reason(ErrReplayed) = %q, want replay (coreapi's metric label)", got)
	}
	// Remembered until the timestamp leaves the window, not for a window
	// from when it came.
	if err := c.Check(sig, ts, 30*time.Second, now.Add(21*time.Second)); err != nil {
		t.Fatalf("after the window (the signature would be expired by then): %v", err)
	}
	mac[0] = 2
	if err := c.Check(sigOf(mac), "x", 30*time.Second, now); !errors.Is(err, identity.ErrMalformed) {
		t.Fatalf("bad timestamp: %v", err)
	}
	if err := c.Check("v2=", ts, 30*time.Second, now); !errors.Is(err, identity.ErrMalformed) {
		t.Fatalf("bad signature: %v", err)
	}
}

// TestCheckV1: a v1 signature is remembered as a v2 one is, and only a
// v1 signature is read by CheckV1 (a v2 one by Check).
func TestCheckV1(t *testing.T) {
	t.Parallel()
	c := New(0)
	now := time.UnixMilli(1_700_000_000_000)
	mac := make([]byte, 32)
	mac[0] = 3
	v1, ts := identity.Version+"="+base64.RawURLEncoding.EncodeToString(mac), "1699999990000"
	if err := c.CheckV1(v1, ts, 30*time.Second, now); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := c.CheckV1(v1, ts, 30*time.Second, now.Add(19*time.Second)); !errors.Is(err, identity.ErrReplayed) {
		t.Fatalf("again in the window: %v, want ErrReplayed", err)
	}
	if err := c.Check(v1, ts, 30*time.Second, now); !errors.Is(err, identity.ErrMalformed) {
		t.Fatalf("Check of a v1 signature: %v, want ErrMalformed", err)
	}
	if err := c.CheckV1(sigOf(mac), ts, 30*time.Second, now); !errors.Is(err, identity.ErrMalformed) {
		t.Fatalf("CheckV1 of a v2 signature: %v, want ErrMalformed", err)
	}
}

// TestConcurrentFirstUse (run with -race): goroutines racing to record the
// same signatures accept each exactly once; distinct ones are all
// accepted.
func TestConcurrentFirstUse(t *testing.T) {
	t.Parallel()
	const now = 1_700_000_000_000
	c := New(0)
	const workers, keys = 8, 2000
	var accepted [keys]atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range keys {
				k := (i + w*keys/workers) % keys // each starts elsewhere
				if c.FirstUse(keyOf(uint64(k)), now+30_000, now) {
					accepted[k].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for k := range accepted {
		if n := accepted[k].Load(); n != 1 {
			t.Fatalf("key %d accepted %d times, want once", k, n)
		}
	}
	if c.Evicted() != 0 {
		t.Fatalf("evicted = %d", c.Evicted())
	}
}

func BenchmarkCache(b *testing.B) {
	c := New(DefaultSize)
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		i++
		now := int64(1_700_000_000_000 + i/8) // 8,000 a second
		c.FirstUse(keyOf(i), now+30_000, now)
	}
}

// BenchmarkCheck is what a middleware adds per verified request: the key
// from the signature header, the timestamp parsed, the table checked.
func BenchmarkCheck(b *testing.B) {
	c := New(DefaultSize)
	sigs := make([]string, 1<<16)
	for i := range sigs {
		mac := make([]byte, 32)
		_, _ = rand.Read(mac)
		sigs[i] = sigOf(mac)
	}
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		i++
		now := time.UnixMilli(1_700_000_000_000 + i/8)
		_ = c.Check(sigs[i%int64(len(sigs))], "1700000000000", 30*time.Second, now)
	}
}
