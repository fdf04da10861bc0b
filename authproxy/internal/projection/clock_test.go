package projection

import (
	"context"
	"crypto/sha256"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// steppedClock is a clock whose wall time can be stepped back (as NTP, an
// operator or a VM's resume does) while its monotonic reading goes on, as
// time.Now's readings do then.
type steppedClock struct {
	origin  time.Time // time.Now(): carries a monotonic reading
	elapsed atomic.Int64
	back    atomic.Int64 // how far the wall clock was set back
}

func (c *steppedClock) now() time.Time {
	return testenv.WallSetBack(c.origin.Add(time.Duration(c.elapsed.Load())), time.Duration(c.back.Load()))
}

// TestWallClockStepBack: setting the wall clock back lengthens neither an
// entry's TTL nor its trust while the invalidation feed is down. Both were
// counted in unix nanoseconds: an hour back, a projection or an API key
// revoked meanwhile was served for an hour past either bound.
func TestWallClockStepBack(t *testing.T) {
	clk := &steppedClock{origin: time.Now()}
	// The clock behaves as one stepped back: its wall time went back,
	// its monotonic reading on.
	clk.elapsed.Store(int64(time.Minute))
	clk.back.Store(int64(time.Hour))
	if got := clk.now().Sub(clk.origin); got != time.Minute {
		t.Fatalf("monotonic reading moved %v, want 1m", got)
	}
	if got := time.Duration(clk.now().UnixNano() - clk.origin.UnixNano()); got != time.Minute-time.Hour {
		t.Fatalf("wall clock moved %v, want -59m", got)
	}
	clk.elapsed.Store(0)
	clk.back.Store(0)

	setup := func(t *testing.T) (*fixture, string, func() (*Entry, *KeyEntry, error)) {
		f := newKeyFixtureClock(t, clk.now)
		f.core.SetProjection(identity.Projection{UserID: "u1", TenantID: "t1", UserStatus: "active",
			MembershipStatus: "active", TenantStatus: "active", Roles: []string{"member"}})
		key, _ := apikey.New()
		f.core.SetAPIKey(key, keyOf("u1"), false)
		pid, _ := apikey.Parse([]byte(key))
		d := sha256.Sum256([]byte(key))
		get := func() (*Entry, *KeyEntry, error) {
			e, err := f.c.Get(context.Background(), "u1", "t1", "rid")
			if err != nil {
				return nil, nil, err
			}
			ke, err := f.c.GetKey(context.Background(), []byte(key), pid, &d, clk.now(), "rid", "")
			return e, ke, err
		}
		return f, key, get
	}
	cachedKey := func(f *fixture, key string) bool {
		pid, _ := apikey.Parse([]byte(key))
		d := sha256.Sum256([]byte(key))
		_, err := f.c.CachedKey(pid, &d, clk.now())
		return err == nil
	}

	t.Run("ttl", func(t *testing.T) {
		clk.elapsed.Store(0)
		clk.back.Store(0)
		f, key, get := setup(t)
		e, _, err := get()
		if err != nil {
			t.Fatal(err)
		}
		if !f.c.Valid(e, clk.now()) || !cachedKey(f, key) {
			t.Fatal("fresh entries not valid")
		}
		// An hour and a minute later by the monotonic clock, the wall
		// clock set back an hour meanwhile: past the TTL (1 h).
		clk.elapsed.Store(int64(time.Hour + time.Minute))
		clk.back.Store(int64(time.Hour))
		if f.c.Valid(e, clk.now()) {
			t.Error("projection valid past its TTL")
		}
		if cachedKey(f, key) {
			t.Error("API key cached past its TTL")
		}
	})
	t.Run("staleness", func(t *testing.T) {
		clk.elapsed.Store(0)
		clk.back.Store(0)
		f, key, get := setup(t)
		e, _, err := get()
		if err != nil {
			t.Fatal(err)
		}
		f.c.Disconnected(clk.now())
		// 31 s into the outage (MaxStaleness 30 s), the wall clock set
		// back an hour meanwhile.
		clk.elapsed.Store(int64(31 * time.Second))
		clk.back.Store(int64(time.Hour))
		if f.c.Valid(e, clk.now()) {
			t.Error("projection trusted past MaxStaleness")
		}
		if cachedKey(f, key) {
			t.Error("API key trusted past MaxStaleness")
		}
		before := f.core.ProjectionFetches.Load()
		if _, _, err := get(); err != nil {
			t.Fatal(err)
		}
		if got := f.core.ProjectionFetches.Load(); got != before+1 {
			t.Errorf("projection fetches %d, want %d: the stale entry was a hit", got, before+1)
		}
	})
}

// TestGetExpiresOnTheInjectedClock: Get holds an entry, positive or a
// remembered "no membership", for its TTL on the cache's clock
// (Options.Now), as Valid does. A hit was judged by the store's own
// expiry, on the process's clock: moved past the TTL, the cache's clock
// still got the old entry from Get while Valid refused it.
func TestGetExpiresOnTheInjectedClock(t *testing.T) {
	f := newFixture(t)
	f.get(t, "u1")
	f.wantFetches(t, 1)
	if _, err := f.c.Get(context.Background(), "nobody", "t1", "rid"); err != ErrNoMembership {
		t.Fatalf("Get(nobody) = %v, want ErrNoMembership", err)
	}
	f.stored(t, "nobody")
	f.wantFetches(t, 2)
	f.advance(30 * time.Minute) // within both TTLs (1 h)
	f.get(t, "u1")
	if _, err := f.c.Get(context.Background(), "nobody", "t1", "rid"); err != ErrNoMembership {
		t.Fatalf("Get(nobody) = %v, want ErrNoMembership", err)
	}
	f.wantFetches(t, 2)
	f.advance(31 * time.Minute) // past both
	f.get(t, "u1")
	f.wantFetches(t, 3)
	f.core.SetProjection(identity.Projection{UserID: "nobody", TenantID: "t1", UserStatus: "active",
		MembershipStatus: "active", TenantStatus: "active"})
	if _, err := f.c.Get(context.Background(), "nobody", "t1", "rid"); err != nil {
		t.Fatalf("Get(nobody) past the negative TTL: %v, want the new membership", err)
	}
	f.wantFetches(t, 4)
}
