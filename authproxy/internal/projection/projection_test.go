package projection

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

type fixture struct {
	c    *Cache
	core *testenv.Core
	now  atomic.Int64 // unix nanos
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{core: testenv.NewCore(t)}
	f.now.Store(time.Now().UnixNano())
	signer, err := identity.NewKeySigner(testenv.CoreKey)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	hc := forward.NewInternalClient(forward.Options{Addr: f.core.Addr, MaxConns: 16, MaxConnWait: time.Second,
		IdleTimeout: time.Second, Timeout: 2 * time.Second})
	f.c, err = New(Options{Size: 100, TTL: time.Hour, NegativeTTL: time.Hour, MaxStaleness: 30 * time.Second,
		Now: func() time.Time { return time.Unix(0, f.now.Load()) }},
		NewHTTPFetcher(hc, f.core.Addr, signer, 2*time.Second, m), m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.c.Close)
	for _, u := range []string{"u1", "u2"} {
		f.core.SetProjection(identity.Projection{UserID: u, TenantID: "t1", UserStatus: "active",
			MembershipStatus: "active", TenantStatus: "active", Roles: []string{"member"}})
	}
	return f
}

func (f *fixture) advance(d time.Duration) { f.now.Add(int64(d)) }

func (f *fixture) get(t *testing.T, user string) {
	t.Helper()
	if _, err := f.c.Get(context.Background(), user, "t1", "rid"); err != nil {
		t.Fatalf("Get(%s): %v", user, err)
	}
	f.stored(t, user)
}

// stored waits until the cache holds an entry of user in t1 under the
// current generations: a fill is admitted asynchronously, and the fetch
// counts below are about the cache, not about its admission delay.
func (f *fixture) stored(t *testing.T, user string) {
	t.Helper()
	testenv.Eventually(t, func() error {
		e, ok := f.c.cache.Get(f.c.key(user, "t1"))
		if !ok {
			return fmt.Errorf("no entry of %s in the cache", user)
		}
		if want := f.c.gens(user, "t1"); e.gens != want {
			return fmt.Errorf("the entry of %s has generations %v, want %v", user, e.gens, want)
		}
		return nil
	})
}

func (f *fixture) wantFetches(t *testing.T, n int64) {
	t.Helper()
	if got := f.core.ProjectionFetches.Load(); got != n {
		t.Fatalf("fetches = %d, want %d", got, n)
	}
}

// While the feed is down an entry is trusted until MaxStaleness past the
// later of its fetch and the disconnect.
func TestStalenessWhileDisconnected(t *testing.T) {
	f := newFixture(t)
	f.get(t, "u1") // fetched before the disconnect
	f.wantFetches(t, 1)
	if f.c.BoundedStaleness() {
		t.Fatal("bounded staleness before any disconnect")
	}
	f.c.Disconnected(time.Unix(0, f.now.Load()))
	if !f.c.BoundedStaleness() {
		t.Fatal("no bounded staleness after the disconnect")
	}
	f.advance(20 * time.Second)
	f.get(t, "u1")
	f.get(t, "u2") // fetched 20 s into the outage
	f.wantFetches(t, 2)
	f.advance(15 * time.Second) // 35 s since the disconnect, 15 s since u2's fetch
	f.get(t, "u1")
	f.wantFetches(t, 3) // u1: too old
	f.get(t, "u2")
	f.wantFetches(t, 3) // u2: still within 30 s of its fetch
	f.advance(16 * time.Second)
	f.get(t, "u2")
	f.wantFetches(t, 4)
	// Reconnect purges everything and ends the bound.
	f.c.Reconnected()
	if f.c.BoundedStaleness() {
		t.Fatal("bounded staleness after the reconnect")
	}
	f.get(t, "u1")
	f.get(t, "u2")
	f.wantFetches(t, 6)
	f.advance(10 * time.Minute)
	f.get(t, "u1")
	f.get(t, "u2")
	f.wantFetches(t, 6)
}

// TestReconnectedPurgesFirst: a reconnection purges the cache before it
// trusts entries again. An entry from before the outage, projection or
// API key, past the staleness bound, is not trusted at any moment of it:
// ended the other way round, the bounded staleness would leave such an
// entry trusted until the purge.
func TestReconnectedPurgesFirst(t *testing.T) {
	f := newKeyFixture(t)
	now := func() time.Time { return time.Unix(0, f.now.Load()) }
	f.core.SetProjection(identity.Projection{UserID: "u1", TenantID: "t1", UserStatus: "active",
		MembershipStatus: "active", TenantStatus: "active", Roles: []string{"member"}})
	e, err := f.c.Get(context.Background(), "u1", "t1", "rid")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := apikey.New()
	f.core.SetAPIKey(key, keyOf("u1"), false)
	ke, err := f.getKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f.c.Disconnected(now())
	f.advance(31 * time.Second)
	trusted := func() string {
		switch {
		case f.c.Valid(e, now()):
			return "projection"
		case f.c.validKey(ke, now()):
			return "API key"
		}
		return ""
	}
	if what := trusted(); what != "" {
		t.Fatalf("%s entry trusted past the staleness bound", what)
	}
	ran := false
	f.c.halfwayHook = func() {
		ran = true
		if what := trusted(); what != "" {
			t.Errorf("%s entry from before the outage trusted while the reconnection is under way", what)
		}
	}
	f.c.Reconnected()
	f.c.halfwayHook = nil
	if !ran {
		t.Fatal("the reconnection ran no hook")
	}
	if what := trusted(); what != "" {
		t.Fatalf("%s entry from before the outage trusted after the reconnection", what)
	}
}

func TestInvalidationScopes(t *testing.T) {
	f := newFixture(t)
	f.get(t, "u1")
	f.get(t, "u2")
	f.wantFetches(t, 2)
	f.c.InvalidateUser("u1")
	f.get(t, "u1")
	f.wantFetches(t, 3)
	f.c.InvalidateTenant("t1")
	f.get(t, "u1")
	f.get(t, "u2")
	f.wantFetches(t, 5)
	f.c.InvalidateAll()
	f.get(t, "u1")
	f.wantFetches(t, 6)
}

func TestNoMembershipRemembered(t *testing.T) {
	f := newFixture(t)
	for i := range 3 {
		if _, err := f.c.Get(context.Background(), "nobody", "t1", ""); err != ErrNoMembership {
			t.Fatalf("Get(nobody) = %v, want ErrNoMembership", err)
		}
		if i == 0 {
			f.stored(t, "nobody")
		}
	}
	f.wantFetches(t, 1)
	// Adding the membership comes with a user event.
	f.core.SetProjection(identity.Projection{UserID: "nobody", TenantID: "t1", UserStatus: "active",
		MembershipStatus: "active", TenantStatus: "active"})
	f.c.InvalidateUser("nobody")
	if _, err := f.c.Get(context.Background(), "nobody", "t1", ""); err != nil {
		t.Fatalf("after the event: %v", err)
	}
}

// TestProjectionAnswerNotCoreapis: a 404 of the projection fetch means no
// membership only with coreapi's problem code for it (no_membership).
// IDENTITY_URL naming another service, or a coreapi without the route
// (404 not_found "no such route"), answered every fetch 404, which was
// taken for no membership: remembered for NEGATIVE_CACHE_TTL and every
// user refused, nothing logged. It is a bad answer (ErrUpstream), counted,
// and not remembered.
func TestProjectionAnswerNotCoreapis(t *testing.T) {
	for _, a := range []testenv.Answer{
		{Status: 404, ContentType: "text/html", Body: "<h1>Not Found</h1>"},
		{Status: 404, ContentType: "application/problem+json", Body: `{"status":404,"code":"not_found","detail":"no such route"}`},
		{Status: 404, ContentType: "application/json", Body: `{"error":"not found"}`},
		// Another service's code of any length is quoted cut short.
		{Status: 404, ContentType: "application/problem+json; a long code", Body: `{"code":"` + strings.Repeat("x", 100000) + `"}`},
	} {
		t.Run(a.ContentType, func(t *testing.T) {
			f := newFixture(t)
			f.core.ProjectionAnswer.Store(&a)
			before := testutil.ToFloat64(f.c.m.UpstreamErrors.WithLabelValues("projection", "status_other"))
			if _, err := f.c.Get(context.Background(), "u1", "t1", "rid"); !errors.Is(err, ErrUpstream) || errors.Is(err, ErrNoMembership) {
				t.Fatalf("fetch answered %d %s: %v, want ErrUpstream", a.Status, a.Body, err)
			} else if len(err.Error()) > 200 {
				t.Fatalf("fetch answered a %d-byte body: an error message of %d bytes, want the code cut short", len(a.Body), len(err.Error()))
			}
			if got := testutil.ToFloat64(f.c.m.UpstreamErrors.WithLabelValues("projection", "status_other")); got != before+1 {
				t.Errorf("upstream_errors{status_other} = %v, want %v", got, before+1)
			}
			f.core.ProjectionAnswer.Store(nil)
			if e, err := f.c.Get(context.Background(), "u1", "t1", "rid"); err != nil || e.Sub != "u1" {
				t.Fatalf("Get once coreapi answers = %+v, %v (the bad answer was remembered)", e, err)
			}
			f.wantFetches(t, 2)
		})
	}
	f := newFixture(t)
	if _, err := f.c.Get(context.Background(), "nobody", "t1", "rid"); !errors.Is(err, ErrNoMembership) {
		t.Fatalf("no membership: %v, want ErrNoMembership", err)
	}
}

// Beyond MaxFetches distinct fetches in flight a miss fails at once with
// ErrOverloaded (an ErrUnavailable: the client retries), while a request
// for an entry already being fetched joins that fetch.
func TestMaxFetches(t *testing.T) {
	core := testenv.NewCore(t)
	signer, err := identity.NewKeySigner(testenv.CoreKey)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	hc := forward.NewInternalClient(forward.Options{Addr: core.Addr, MaxConns: 16, MaxConnWait: time.Second,
		IdleTimeout: time.Second, Timeout: 5 * time.Second})
	c, err := New(Options{Size: 100, TTL: time.Hour, NegativeTTL: time.Hour, MaxFetches: 2},
		NewHTTPFetcher(hc, core.Addr, signer, 5*time.Second, m), m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	for _, u := range []string{"u1", "u2", "u3"} {
		core.SetProjection(identity.Projection{UserID: u, TenantID: "t1", UserStatus: "active",
			MembershipStatus: "active", TenantStatus: "active", Roles: []string{"member"}})
	}
	gate, started := make(chan struct{}), make(chan struct{}, 4)
	core.ProjectionGate.Store(&gate)
	core.ProjectionStarted.Store(&started)

	errs := make(chan error, 3)
	for _, u := range []string{"u1", "u2", "u1"} {
		go func() {
			_, err := c.Get(context.Background(), u, "t1", "")
			errs <- err
		}()
		if u == "u2" {
			<-started
			<-started
		}
	}
	if _, err := c.Get(context.Background(), "u3", "t1", ""); !errors.Is(err, ErrOverloaded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("third distinct fetch: err = %v, want ErrOverloaded (an ErrUnavailable)", err)
	}
	if got := core.ProjectionFetches.Load(); got != 2 {
		t.Fatalf("fetches at coreapi = %d, want 2", got)
	}
	close(gate)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("fetch in flight (or joined to one): %v", err)
		}
	}
	if _, err := c.Get(context.Background(), "u3", "t1", ""); err != nil {
		t.Fatalf("after the fetches finished: %v", err)
	}
}

// Valid holds a kept entry to exactly what a cache hit would: every kind of
// invalidation, the TTL and the bounded staleness while the feed is down.
func TestValidFollowsInvalidation(t *testing.T) {
	f := newFixture(t)
	now := func() time.Time { return time.Unix(0, f.now.Load()) }
	get := func() *Entry {
		t.Helper()
		e, err := f.c.Get(context.Background(), "u1", "t1", "rid")
		if err != nil {
			t.Fatal(err)
		}
		if !f.c.Valid(e, now()) {
			t.Fatal("fresh entry not valid")
		}
		return e
	}
	for name, invalidate := range map[string]func(){
		"user":          func() { f.c.InvalidateUser("u1") },
		"tenant":        func() { f.c.InvalidateTenant("t1") },
		"all":           f.c.InvalidateAll,
		"reconnect":     f.c.Reconnected,
		"ttl":           func() { f.advance(time.Hour) },
		"feed down 31s": func() { f.c.Disconnected(now()); f.advance(31 * time.Second) },
	} {
		e := get()
		invalidate()
		if f.c.Valid(e, now()) {
			t.Errorf("%s: entry still valid", name)
		}
		f.c.Reconnected()
	}
	// Another user's invalidation (in another stripe) leaves it standing.
	e := get()
	other := "u2"
	for i := 0; f.c.stripe(other) == f.c.stripe("u1"); i++ {
		other = "u2-" + strconv.Itoa(i)
	}
	f.c.InvalidateUser(other)
	if !f.c.Valid(e, now()) {
		t.Fatal("entry invalidated by another user's event")
	}
}

// Entries fetched at the same instant do not all expire at the same one:
// each TTL is shortened by up to a tenth, at random, and never lengthened;
// projections and API-key entries alike.
func TestTTLJitterSpreadsExpiry(t *testing.T) {
	const n = 40
	// spread checks the lifetimes of n entries fetched while the fixture's
	// clock stands still.
	spread := func(t *testing.T, ttl time.Duration, fetch func(i int) (fetchedAt, expires int64)) {
		t.Helper()
		seen := map[int64]bool{}
		for i := range n {
			fetchedAt, expires := fetch(i)
			if life := time.Duration(expires - fetchedAt); life > ttl || life < ttl-ttl/ttlJitter {
				t.Fatalf("entry %d lives %v, want within [%v, %v]", i, life, ttl-ttl/ttlJitter, ttl)
			}
			seen[expires] = true
		}
		if len(seen) < n/2 {
			t.Fatalf("%d entries filled at one instant expire at only %d instants", n, len(seen))
		}
	}
	t.Run("projections", func(t *testing.T) {
		f := newFixture(t)
		spread(t, f.c.opt.TTL, func(i int) (int64, int64) {
			u := "jitter" + strconv.Itoa(i)
			f.core.SetProjection(identity.Projection{UserID: u, TenantID: "t1", UserStatus: "active",
				MembershipStatus: "active", TenantStatus: "active", Roles: []string{"member"}})
			e, err := f.c.Get(context.Background(), u, "t1", "rid")
			if err != nil {
				t.Fatal(err)
			}
			return e.fetchedAt, e.expires
		})
	})
	t.Run("api keys", func(t *testing.T) {
		f := newKeyFixture(t)
		spread(t, f.c.opt.TTL, func(i int) (int64, int64) {
			key, _ := apikey.New()
			f.core.SetAPIKey(key, keyOf("jitter"+strconv.Itoa(i)), false)
			e, err := f.getKey(key)
			if err != nil {
				t.Fatal(err)
			}
			return e.fetchedAt, e.expires
		})
	})
	if jittered(0) != 0 || jittered(-time.Second) != -time.Second {
		t.Fatal("a TTL of zero or less is not jittered")
	}
}

// TestFetchWithoutRequestID: a fetch for no client request (the scale
// simulator's, a tool's) gets a request id of its own. coreapi refuses a
// signed request without one, and every such fetch was a 401.
func TestFetchWithoutRequestID(t *testing.T) {
	f := newFixture(t)
	if _, err := f.c.Get(context.Background(), "u1", "t1", ""); err != nil {
		t.Fatalf("Get without a request id: %v", err)
	}
	f.wantFetches(t, 1)
}

// TestInvalidationsSpareOthers: an invalidation moves one stripe of
// generations, and every entry hashed to that stripe is fetched again. A
// tenant anyone can sign up for could loop writes that each invalidate one
// of its own users, tenants or keys (a role granted and revoked, a sign-in
// and sign-out, a key created and revoked); with few stripes each such
// write made a share of every other tenant's cached entries miss on every
// proxy of the fleet, and coreapi fetch them again. 2,000 such
// invalidations reach a few percent of bystanders (86 % with 1,024
// stripes).
func TestInvalidationsSpareOthers(t *testing.T) {
	f := newFixture(t)
	c := f.c
	const n = 1000
	users := make([][3]uint64, n)
	keys := make([]uint64, n)
	for i := range n {
		users[i] = c.gens("bystander-"+strconv.Itoa(i), "bystander-tenant-"+strconv.Itoa(i))
		keys[i] = c.keys.key[c.stripe("bystanderkey"+strconv.Itoa(i))].Load()
	}
	for i := range n {
		c.InvalidateUser("attacker-" + strconv.Itoa(i))
		c.InvalidateTenant("attacker-tenant-" + strconv.Itoa(i))
		c.InvalidateAPIKey("attackerkey" + strconv.Itoa(i))
	}
	hitUsers, hitKeys := 0, 0
	for i := range n {
		if c.gens("bystander-"+strconv.Itoa(i), "bystander-tenant-"+strconv.Itoa(i)) != users[i] {
			hitUsers++
		}
		if c.keys.key[c.stripe("bystanderkey"+strconv.Itoa(i))].Load() != keys[i] {
			hitKeys++
		}
	}
	// Expected with 65,536 stripes: about 3 % and 1.5 %.
	if hitUsers > n/10 || hitKeys > n/10 {
		t.Fatalf("%d of %d bystanders' projections and %d of %d bystander keys invalidated by others' invalidations", hitUsers, n, hitKeys, n)
	}
}

// TestFetchesOwnRequestIDs: a projection fetch is signed, and coreapi
// refuses a signature it accepted before (a replay). The fetch carried
// the client's X-Request-Id, so two fetches of one projection in the same
// millisecond, by two proxies (or by one, its first answer not kept) for
// requests whose client reuses its request id, were signed alike and the
// second was refused, a 502 to the client. Each fetch has a request id of
// its own.
func TestFetchesOwnRequestIDs(t *testing.T) {
	core := testenv.NewCore(t)
	core.SetProjection(identity.Projection{UserID: "u1", TenantID: "t1", UserStatus: "active",
		MembershipStatus: "active", TenantStatus: "active", Roles: []string{"member"}})
	at := time.Now()
	a, b := newTestFetcher(t, core.Addr), newTestFetcher(t, core.Addr)
	a.now = func() time.Time { return at }
	b.now = a.now
	for i, f := range []*HTTPFetcher{a, b, a} { // two proxies, then one twice
		if _, err := f.Fetch(context.Background(), "u1", "t1", "client-rid"); err != nil {
			t.Fatalf("fetch %d in the same millisecond: %v", i+1, err)
		}
	}
}
