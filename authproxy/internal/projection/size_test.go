package projection

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// liveHeap is the heap still in use after a full collection.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// typicalProjection is a member with a few roles and the permissions they
// grant, ids as coreapi makes them.
func typicalProjection(i int) identity.Projection {
	return identity.Projection{UserID: fmt.Sprintf("0193a1f2-7c4d-7e0a-9b1c-%012d", i),
		TenantID: "0193a1f2-7c4d-7e0a-9b1c-5d2e8f3a6b10", Email: fmt.Sprintf("user%06d@example.com", i),
		UserStatus: "active", MembershipStatus: "active", TenantStatus: "active",
		Roles: []string{"member", "editor"},
		Permissions: []string{"notes:read", "notes:write", "tenant:read", "users:read", "roles:read",
			"files:read", "files:write", "comments:write"},
		TokenVersion: 3, EmailVerified: true}
}

// EntryBytes is what a cached projection really costs: the live heap
// after filling a cache with n typical entries, over n. The budget is
// only as good as this figure.
func TestEntryBytesMeasured(t *testing.T) {
	const n = 20_000
	core := testenv.NewCore(t)
	signer, err := identity.NewKeySigner(testenv.CoreKey)
	if err != nil {
		t.Fatal(err)
	}
	ps := make([]identity.Projection, n)
	for i := range ps {
		ps[i] = typicalProjection(i)
		core.SetProjection(ps[i])
	}
	m := metrics.New()
	hc := forward.NewInternalClient(forward.Options{Addr: core.Addr, MaxConns: 4, MaxConnWait: time.Second,
		IdleTimeout: time.Minute, Timeout: 5 * time.Second})
	f := NewHTTPFetcher(hc, core.Addr, signer, 5*time.Second, m)
	ctx := context.Background()
	// The first fetch sets up the connection and its buffers.
	warm := typicalProjection(n)
	core.SetProjection(warm)
	if _, err := f.Fetch(ctx, warm.UserID, warm.TenantID, ""); err != nil {
		t.Fatal(err)
	}
	// Measured from before the cache exists: its admission sketch
	// (NumCounters, 10 per entry of Size) is part of an entry's cost.
	before := liveHeap()
	c, err := New(Options{Size: n + n/10, TTL: time.Hour, NegativeTTL: time.Hour, MaxStaleness: time.Minute}, f, m)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range ps[:n] {
		if _, err := c.Get(ctx, p.UserID, p.TenantID, ""); err != nil {
			t.Fatal(err)
		}
	}
	c.cache.Wait()
	after := liveHeap()
	held := 0
	for _, p := range ps[:n] {
		if _, ok := c.cache.Get(c.key(p.UserID, p.TenantID)); ok {
			held++
		}
	}
	if held < n*9/10 {
		t.Fatalf("the cache admitted %d of %d entries; the measurement would be off", held, n)
	}
	per := float64(after-before) / float64(held)
	t.Logf("a cached projection costs %.0f bytes (EntryBytes %d)", per, EntryBytes)
	if per < EntryBytes*0.7 || per > EntryBytes*1.3 {
		t.Fatalf("measured %.0f bytes per entry, EntryBytes is %d: set it to the measurement", per, EntryBytes)
	}
	runtime.KeepAlive(ps)
}
