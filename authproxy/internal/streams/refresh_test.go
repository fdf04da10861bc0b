package streams

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

// countedCache is a projection cache that counts each user's lookups.
type countedCache struct {
	*projection.Cache
	mu   sync.Mutex
	gets map[string]int
}

func (c *countedCache) Get(ctx context.Context, sub, tid, requestID string) (*projection.Entry, error) {
	c.mu.Lock()
	c.gets[sub]++
	c.mu.Unlock()
	return c.Cache.Get(ctx, sub, tid, requestID)
}

func (c *countedCache) count(sub string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets[sub]
}

// TestRefreshDecidesOnlyStreamsWhoseEntryIsOutdated: each Refresh period
// decides again the streams whose projection entry no longer stands (past
// its TTL, invalidated, or beyond the bounded staleness of a feed
// outage), as a request would find it: one whose entry still stands
// would be decided on that same entry, which admitted it, and keeps its
// access without a lookup. Every open stream was decided again each
// period, a lookup and a decision each, whatever its entry.
func TestRefreshDecidesOnlyStreamsWhoseEntryIsOutdated(t *testing.T) {
	pc, err := projection.New(projection.Options{TTL: time.Hour, MaxStaleness: time.Minute}, &slowCore{}, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.Reconnected()
	cc := &countedCache{Cache: pc, gets: map[string]int{}}
	m := New(Options{Refresh: 5 * time.Millisecond}, cc, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	// Drained before the cache closes, as the proxy does: the rechecks
	// read it.
	defer drainNow(t, m)
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	for _, sub := range []string{"kept", "moved"} {
		c, err := m.reserveAt("sse", "/x", &tokens.Claims{Sub: sub, Tid: "t", Sid: "s-" + sub}, rt, "r", origin{path: "/x", method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		m.start(c, func(reason string) { m.release(c, reason) })
	}
	eventually.Within(t, 5*time.Second, func() error {
		if cc.count("kept") == 0 || cc.count("moved") == 0 {
			return fmt.Errorf("lookups on registration: kept %d, moved %d", cc.count("kept"), cc.count("moved"))
		}
		return nil
	})
	// A period: moved's entry is invalidated (no event rechecks it), and
	// a period's recheck looks it up again.
	period := func() {
		n := cc.count("moved")
		pc.InvalidateUser("moved")
		eventually.Within(t, 5*time.Second, func() error {
			if cc.count("moved") == n {
				return fmt.Errorf("no lookup of moved's invalidated entry")
			}
			return nil
		})
	}
	period()
	period() // kept's decision on registration is in by now
	kept := cc.count("kept")
	period()
	period()
	if n := cc.count("kept"); n != kept {
		t.Fatalf("kept's entry, still valid, was looked up %d more times over two periods", n-kept)
	}
}
