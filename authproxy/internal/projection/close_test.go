package projection

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// activeCore answers every projection at once, active.
type activeCore struct{}

func (activeCore) Fetch(_ context.Context, user, tenant, _ string) (*identity.Projection, error) {
	return &identity.Projection{UserID: user, TenantID: tenant, UserStatus: identity.StatusActive,
		MembershipStatus: identity.StatusActive, TenantStatus: identity.StatusActive}, nil
}

// TestUseRacingClose: lookups, fills and purges that run while the cache
// closes, or after (a projection fetch coreapi answered only once the
// shutdown's bound had passed), neither crash the proxy nor lose their
// answer: a fill is dropped, a lookup misses and fetches. The store's
// Close shuts the channels its Set, Get and Clear send on: a fill racing
// it could panic (send on closed channel) and the race detector reports
// it.
func TestUseRacingClose(t *testing.T) {
	c, err := New(Options{Size: 1000, TTL: time.Minute, MaxStaleness: time.Minute}, activeCore{}, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	c.Reconnected()
	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		lookups atomic.Int64
	)
	use := func(g int) {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			sub := "u" + strconv.Itoa(g) + "-" + strconv.Itoa(i%5000)
			e, err := c.Get(context.Background(), sub, "t", "")
			if err != nil || e.Sub != sub {
				t.Errorf("Get(%s): %v, %v", sub, e, err)
				return
			}
			if i%500 == 0 {
				c.InvalidateAll()
			}
			lookups.Add(1)
		}
	}
	for g := range 8 {
		wg.Add(1)
		go use(g)
	}
	for lookups.Load() < 2000 {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	closedAt := lookups.Load()
	for lookups.Load() < closedAt+2000 {
		time.Sleep(time.Millisecond)
	}
	c.Close() // twice: a no-op
	stop.Store(true)
	wg.Wait()
	if _, err := c.Get(context.Background(), "late", "t", ""); err != nil {
		t.Fatalf("Get after Close: %v", err)
	}
	c.InvalidateAll()
}
