package projection

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// newTestFetcher is a fetcher of its own (a proxy) calling the Core at
// addr.
func newTestFetcher(t *testing.T, addr string) *HTTPFetcher {
	t.Helper()
	signer, err := identity.NewKeySigner(testenv.CoreKey)
	if err != nil {
		t.Fatal(err)
	}
	hc := forward.NewInternalClient(forward.Options{Addr: addr, MaxConns: 4, MaxConnWait: time.Second,
		IdleTimeout: time.Second, Timeout: 2 * time.Second})
	return NewHTTPFetcher(hc, addr, signer, 2*time.Second, metrics.New())
}

func newKeyFixture(t *testing.T) *fixture { return newKeyFixtureClock(t, nil) }

// newKeyFixtureClock is newKeyFixture whose cache reads now (nil: the
// fixture's clock, f.now).
func newKeyFixtureClock(t *testing.T, now func() time.Time) *fixture {
	t.Helper()
	f := &fixture{core: testenv.NewCore(t)}
	f.now.Store(time.Now().UnixNano())
	if now == nil {
		now = func() time.Time { return time.Unix(0, f.now.Load()) }
	}
	signer, err := identity.NewKeySigner(testenv.CoreKey)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	hc := forward.NewInternalClient(forward.Options{Addr: f.core.Addr, MaxConns: 64, MaxConnWait: time.Second,
		IdleTimeout: time.Second, Timeout: 2 * time.Second})
	fetcher := NewHTTPFetcher(hc, f.core.Addr, signer, 2*time.Second, m)
	f.c, err = New(Options{Size: 100, TTL: time.Hour, NegativeTTL: time.Hour, MaxStaleness: 30 * time.Second,
		Now: now, Keys: fetcher}, fetcher, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.c.Close)
	return f
}

func keyOf(userID string) apikey.Projection {
	return apikey.Projection{KeyID: "k", Kind: "tenant", Projection: identity.Projection{UserID: userID, TenantID: "t1",
		UserStatus: "active", MembershipStatus: "active", TenantStatus: "active", Roles: []string{}, Permissions: []string{"a:b"}}}
}

func (f *fixture) getKey(key string) (*KeyEntry, error) {
	pid, ok := apikey.Parse([]byte(key))
	if !ok {
		panic("not a key")
	}
	d := sha256.Sum256([]byte(key))
	return f.c.GetKey(context.Background(), []byte(key), pid, &d, time.Unix(0, f.now.Load()), "rid", "")
}

// TestKeysDoNotThrash: many keys in use at once are each fetched once; a
// direct-mapped table would have some evict each other on every request.
func TestKeysDoNotThrash(t *testing.T) {
	f := newKeyFixture(t)
	const n = 400
	keys := make([]string, n)
	for i := range keys {
		keys[i], _ = apikey.New()
		f.core.SetAPIKey(keys[i], keyOf("u"+keys[i][3:19]), false)
	}
	for round := range 3 {
		for _, k := range keys {
			if _, err := f.getKey(k); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	if got := f.core.KeyFetches.Load(); got != n {
		t.Fatalf("%d fetches for %d keys used 3 times each, want %d", got, n, n)
	}
}

// TestKeyAnswerNamesTheKey: the key's id goes out as the session field
// of its requests' identity, so an answer whose key id is missing or not
// an id (a line break would end the header) is a bad answer, as one whose
// user or tenant is.
func TestKeyAnswerNamesTheKey(t *testing.T) {
	f := newKeyFixture(t)
	for _, id := range []string{"", "k\nX-Auth-Principal: user", "k k"} {
		key, _ := apikey.New()
		p := keyOf("u1")
		p.KeyID = id
		f.core.SetAPIKey(key, p, false)
		if _, err := f.getKey(key); !errors.Is(err, ErrUpstream) {
			t.Fatalf("key id %q: %v, want ErrUpstream", id, err)
		}
	}
}

// TestKeyEntryChecks: a wrong secret of a cached key is refused without a
// fetch; an invalidation of the key, its user, its tenant or everything
// makes it a miss; a fill that raced a user invalidation is not kept.
func TestKeyEntryChecks(t *testing.T) {
	f := newKeyFixture(t)
	key, pid := apikey.New()
	f.core.SetAPIKey(key, keyOf("u1"), false)
	e, err := f.getKey(key)
	if err != nil || e.E.Sub != "u1" || e.E.Perms != "a:b" || e.Token.Claims().Sub != "u1" || e.Token.Claims().Sid != "k" {
		t.Fatalf("GetKey = %+v, %v", e, err)
	}
	wrong := key[:apikey.Len-1] + map[bool]string{true: "b", false: "a"}[key[apikey.Len-1] == 'a']
	if _, err := f.getKey(wrong); !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("wrong secret: %v", err)
	}
	if n := f.core.KeyFetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	fetches := int64(1)
	for name, inv := range map[string]func(){
		"key": func() { f.c.InvalidateAPIKey(pid) }, "user": func() { f.c.InvalidateUser("u1") },
		"tenant": func() { f.c.InvalidateTenant("t1") }, "all": f.c.InvalidateAll,
	} {
		inv()
		if _, err := f.getKey(key); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fetches++
		if n := f.core.KeyFetches.Load(); n != fetches {
			t.Fatalf("after a %s invalidation: %d fetches, want %d", name, n, fetches)
		}
	}
	// Another key's invalidation leaves it alone. Keys share 1,024
	// counters by a hash seeded per process: one that shares the key's
	// counter invalidates it too (safe, and 1 in 1,024), so the other key
	// is picked off it.
	other := "zzzzzzzzzzzzzzzz"
	for i := 0; f.c.stripe(other) == f.c.stripe(pid); i++ {
		other = fmt.Sprintf("zzzzzzzzzzzz%04d", i)
	}
	f.c.InvalidateAPIKey(other)
	if _, err := f.getKey(key); err != nil || f.core.KeyFetches.Load() != fetches {
		t.Fatalf("after another key's invalidation: %v, %d fetches", err, f.core.KeyFetches.Load())
	}
	// Revoked: remembered with the key's digest.
	f.core.SetAPIKey(key, keyOf("u1"), true)
	f.c.InvalidateAPIKey(pid)
	for range 3 {
		if _, err := f.getKey(key); !errors.Is(err, ErrKeyRevoked) {
			t.Fatalf("revoked: %v", err)
		}
	}
	if _, err := f.getKey(wrong); !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("wrong secret of a revoked key: %v", err)
	}
	if n := f.core.KeyFetches.Load(); n != fetches+1 {
		t.Fatalf("%d fetches, want %d", n, fetches+1)
	}
	unknown, _ := apikey.New()
	for range 2 {
		if _, err := f.getKey(unknown); !errors.Is(err, ErrKeyUnknown) {
			t.Fatalf("unknown: %v", err)
		}
	}
	if n := f.core.KeyFetches.Load(); n != fetches+2 {
		t.Fatalf("unknown key fetched %d times, want once", n-fetches-1)
	}
}

// TestKeyResolveRefusedSignature: a 401 of the resolve is a wrong secret
// only when coreapi says so (problem code invalid_token); a 401 refusing
// the proxy's own signature is a bad answer (ErrUpstream), not a refusal
// of the key, and is not remembered.
func TestKeyResolveRefusedSignature(t *testing.T) {
	f := newKeyFixture(t)
	key, _ := apikey.New()
	f.core.SetAPIKey(key, keyOf("u1"), false)
	f.core.Skew.Store(int64(time.Hour)) // past the signature's window
	if _, err := f.getKey(key); !errors.Is(err, ErrUpstream) || errors.Is(err, ErrWrongSecret) {
		t.Fatalf("resolve refused for its signature: %v, want ErrUpstream", err)
	}
	f.core.Skew.Store(0)
	if e, err := f.getKey(key); err != nil || e.E.Sub != "u1" {
		t.Fatalf("GetKey once the signature is accepted = %+v, %v", e, err)
	}
	wrong := key[:apikey.Len-1] + map[bool]string{true: "b", false: "a"}[key[apikey.Len-1] == 'a']
	f.c.InvalidateAll()
	if _, err := f.getKey(wrong); !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("wrong secret: %v, want ErrWrongSecret", err)
	}
}

// TestKeyResolveAnswerNotCoreapis: a 404 (or 410) of the resolve means
// an unknown (or revoked) key only with coreapi's problem code for it.
// IDENTITY_URL naming another service, or a coreapi without the route
// (404 not_found "no such route"), answered every key 404, which was
// taken for an unknown key: remembered for NEGATIVE_CACHE_TTL and refused
// 401. It is a bad answer (ErrUpstream), counted, and not remembered.
func TestKeyResolveAnswerNotCoreapis(t *testing.T) {
	for _, a := range []testenv.Answer{
		{Status: 404, ContentType: "text/html", Body: "<h1>Not Found</h1>"},
		{Status: 404, ContentType: "application/problem+json", Body: `{"status":404,"code":"not_found","detail":"no such route"}`},
		{Status: 404, ContentType: "application/json", Body: `{"error":"not found"}`},
		{Status: 410, ContentType: "text/plain", Body: "gone"},
	} {
		t.Run(fmt.Sprintf("%d %s", a.Status, a.ContentType), func(t *testing.T) {
			f := newKeyFixture(t)
			key, _ := apikey.New()
			f.core.SetAPIKey(key, keyOf("u1"), false)
			f.core.KeyAnswer.Store(&a)
			before := testutil.ToFloat64(f.c.m.UpstreamErrors.WithLabelValues("projection", "status_other"))
			if _, err := f.getKey(key); !errors.Is(err, ErrUpstream) || errors.Is(err, ErrKeyUnknown) || errors.Is(err, ErrKeyRevoked) {
				t.Fatalf("resolve answered %d %s: %v, want ErrUpstream", a.Status, a.Body, err)
			}
			if got := testutil.ToFloat64(f.c.m.UpstreamErrors.WithLabelValues("projection", "status_other")); got != before+1 {
				t.Errorf("upstream_errors{status_other} = %v, want %v", got, before+1)
			}
			f.core.KeyAnswer.Store(nil)
			if e, err := f.getKey(key); err != nil || e.E.Sub != "u1" {
				t.Fatalf("GetKey once coreapi answers = %+v, %v (the bad answer was remembered)", e, err)
			}
		})
	}
	f := newKeyFixture(t)
	unknown, _ := apikey.New()
	if _, err := f.getKey(unknown); !errors.Is(err, ErrKeyUnknown) {
		t.Fatalf("unknown key: %v, want ErrKeyUnknown", err)
	}
	revoked, _ := apikey.New()
	f.core.SetAPIKey(revoked, keyOf("u1"), true)
	if _, err := f.getKey(revoked); !errors.Is(err, ErrKeyRevoked) {
		t.Fatalf("revoked key: %v, want ErrKeyRevoked", err)
	}
	// coreapi's answer to a key past its expiry: refused and remembered
	// as a revoked one, not an upstream fault.
	expired, _ := apikey.New()
	f.core.SetAPIKey(expired, keyOf("u1"), false)
	f.core.KeyAnswer.Store(&testenv.Answer{Status: 410, ContentType: "application/problem+json", Body: `{"status":410,"code":"api_key_expired"}`})
	if _, err := f.getKey(expired); !errors.Is(err, ErrKeyRevoked) {
		t.Fatalf("expired key: %v, want ErrKeyRevoked", err)
	}
}

// TestKeyResolvesOwnRequestIDs: the proxy's resolves are signed, and
// coreapi refuses a signature it accepted before (a replay). The resolve
// carried the client's X-Request-Id, so two resolves of one key for one
// client address in the same millisecond, by two proxies (or by one, its
// first answer not kept) for requests whose client reuses its request id,
// were signed alike and the second was refused, a 502 to the client. Each
// resolve has a request id of its own that starts with the client's.
func TestKeyResolvesOwnRequestIDs(t *testing.T) {
	core := testenv.NewCore(t)
	key, _ := apikey.New()
	core.SetAPIKey(key, keyOf("u1"), false)
	at := time.Now()
	a, b := newTestFetcher(t, core.Addr), newTestFetcher(t, core.Addr)
	a.now = func() time.Time { return at }
	b.now = a.now
	for i, f := range []*HTTPFetcher{a, b, a} { // two proxies, then one twice
		if _, err := f.FetchKey(context.Background(), []byte(key), "client-rid", "198.51.100.7"); err != nil {
			t.Fatalf("resolve %d in the same millisecond: %v", i+1, err)
		}
	}
	ids := core.KeyRequestIDs()
	for _, id := range ids {
		if !strings.HasPrefix(id, "client-rid.") {
			t.Errorf("resolve request id %q, want the client's first", id)
		}
	}
	if len(ids) != 3 || ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] {
		t.Errorf("resolve request ids %q, want three different ones", ids)
	}
}

// TestKeyFarExpiry: a key that expires after 2262 (coreapi accepts up to
// the year 9999), past what int64 nanoseconds count, works until then;
// one that expired works no more.
func TestKeyFarExpiry(t *testing.T) {
	f := newKeyFixture(t)
	for _, exp := range []time.Time{
		time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2700, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
	} {
		key, _ := apikey.New()
		p := keyOf("u1")
		p.ExpiresAt = &exp
		f.core.SetAPIKey(key, p, false)
		if _, err := f.getKey(key); err != nil {
			t.Errorf("a key expiring at %s: %v", exp, err)
		}
	}
	key, _ := apikey.New()
	p := keyOf("u1")
	past := time.Unix(0, f.now.Load()).Add(-time.Second)
	p.ExpiresAt = &past
	f.core.SetAPIKey(key, p, false)
	if _, err := f.getKey(key); !errors.Is(err, ErrKeyRevoked) {
		t.Fatalf("an expired key: %v", err)
	}
}

// TestKeyFillRacingInvalidation: a user invalidation during a key's fetch
// keeps the answer out of the cache (the next request fetches again).
func TestKeyFillRacingInvalidation(t *testing.T) {
	if n := fillDuring(t, func(c *Cache) { c.InvalidateUser("u1") }); n != 2 {
		t.Fatalf("%d fetches, want 2 (the raced fill not kept)", n)
	}
}

// fillDuring runs inv while a key of user u1 (tenant t1) is fetched, then
// asks for the key again, and returns how many fetches coreapi answered:
// 1 when the fill was kept, 2 when it was not.
func fillDuring(t *testing.T, inv func(c *Cache)) int64 {
	t.Helper()
	f := newKeyFixture(t)
	key, _ := apikey.New()
	f.core.SetAPIKey(key, keyOf("u1"), false)
	gate := make(chan struct{})
	f.core.KeyGate.Store(&gate)
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := f.getKey(key); err != nil {
			t.Errorf("racing fill: %v", err)
		}
	})
	testenv.Eventually(t, func() error { return testenv.Want("key fetches", f.core.KeyFetches.Load(), 1) })
	inv(f.c)
	f.core.KeyGate.Store(nil)
	close(gate)
	wg.Wait()
	if _, err := f.getKey(key); err != nil {
		t.Fatal(err)
	}
	return f.core.KeyFetches.Load()
}

// TestKeyFillKeptBesideOthersInvalidations: invalidations of other users
// and tenants during a key's fetch (the fleet's logouts and revocations)
// leave the fill kept, unless more happened than a fill can look back on;
// one of the key's own user or tenant among them still keeps it out.
func TestKeyFillKeptBesideOthersInvalidations(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inv       func(c *Cache)
		wantFetch int64 // fetches after a second request
	}{
		{"other users and tenants", func(c *Cache) {
			for i := range 20 {
				if id := fmt.Sprint("other-", i); c.stripe(id) != c.stripe("u1") && c.stripe(id) != c.stripe("t1") {
					c.InvalidateUser(id)
					c.InvalidateTenant(id)
				}
			}
		}, 1},
		{"more than it can look back on", func(c *Cache) {
			for i := range recentN + 1 {
				if id := fmt.Sprint("other-", i); c.stripe(id) != c.stripe("u1") {
					c.InvalidateUser(id)
				} else {
					c.InvalidateUser("x" + id)
				}
			}
		}, 2},
		{"its tenant among others", func(c *Cache) {
			c.InvalidateUser("someone")
			c.InvalidateTenant("t1")
			c.InvalidateUser("someone else")
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := fillDuring(t, tc.inv); n != tc.wantFetch {
				t.Fatalf("%d fetches, want %d", n, tc.wantFetch)
			}
		})
	}
}

// TestKeyFillDuringAnInvalidation: a key's fill that ends while a user or
// tenant invalidation is half applied (one of its two counters moved) is
// not kept. The user's counter moved first, and a fill reading it then,
// before the count of invalidations moved, was kept stamped with the new
// generation: the permissions it fetched before the change stood for the
// whole TTL.
func TestKeyFillDuringAnInvalidation(t *testing.T) {
	for name, inv := range map[string]func(c *Cache){
		"user":   func(c *Cache) { c.InvalidateUser("u1") },
		"tenant": func(c *Cache) { c.InvalidateTenant("t1") },
	} {
		t.Run(name, func(t *testing.T) {
			f := newKeyFixture(t)
			key, _ := apikey.New()
			f.core.SetAPIKey(key, keyOf("u1"), false)
			gate := make(chan struct{})
			f.core.KeyGate.Store(&gate)
			filled := make(chan struct{})
			go func() {
				defer close(filled)
				if _, err := f.getKey(key); err != nil {
					t.Errorf("racing fill: %v", err)
				}
			}()
			testenv.Eventually(t, func() error { return testenv.Want("key fetches", f.core.KeyFetches.Load(), 1) })
			// The key loses its permission; the fill under way answers
			// what it read before.
			mid, cont := make(chan struct{}), make(chan struct{})
			f.c.halfwayHook = func() { close(mid); <-cont }
			invalidated := make(chan struct{})
			go func() {
				defer close(invalidated)
				inv(f.c)
			}()
			<-mid
			f.core.KeyGate.Store(nil)
			close(gate)
			<-filled
			close(cont)
			<-invalidated
			f.c.halfwayHook = nil
			p := keyOf("u1")
			p.Permissions = []string{}
			f.core.SetAPIKey(key, p, false)
			e, err := f.getKey(key)
			if err != nil {
				t.Fatal(err)
			}
			if n := f.core.KeyFetches.Load(); n != 2 || e.E.Perms != "" {
				t.Fatalf("%d fetches, permissions %q; want 2 and none (the raced fill not kept)", n, e.E.Perms)
			}
		})
	}
}

// TestKeyUseKeptWhenAReportFails: a usage report coreapi does not take
// (restarting, unreachable) leaves the keys it named to the next report;
// they were forgotten, so a key used only then kept an older
// last_used_at, and one that a leak had put to use could look unused.
func TestKeyUseKeptWhenAReportFails(t *testing.T) {
	f := newKeyFixture(t)
	var pids []string
	for range 2 {
		key, pid := apikey.New()
		f.core.SetAPIKey(key, keyOf("u"+pid), false)
		e, err := f.getKey(key)
		if err != nil {
			t.Fatal(err)
		}
		e.MarkUsed()
		pids = append(pids, pid)
	}
	f.core.UsedStatus.Store(503)
	if n, err := f.c.ReportUsed(context.Background()); err == nil {
		t.Fatalf("ReportUsed to a failing coreapi = %d, nil", n)
	}
	f.core.UsedStatus.Store(0)
	n, err := f.c.ReportUsed(context.Background())
	if err != nil || n != len(pids) {
		t.Fatalf("the next ReportUsed = %d, %v; want %d", n, err, len(pids))
	}
	got := f.core.UsedKeys()
	slices.Sort(got)
	slices.Sort(pids)
	if !slices.Equal(got, pids) {
		t.Fatalf("reported %v, want %v", got, pids)
	}
	if n, err := f.c.ReportUsed(context.Background()); n != 0 || err != nil {
		t.Fatalf("a report after that = %d, %v; want nothing", n, err)
	}
}

// TestKeyUseDroppedWhenAReportIsRefused: a usage report coreapi refuses
// for good (a 4xx other than 408 and 429, such as 422 for an id it does
// not take) is dropped and counted (authproxy_api_key_uses_refused_total),
// not held: it was put back and sent, and refused, every minute for
// ever, its keys held with it. A 408, a 429 or a 5xx still leaves the
// keys to the next report.
func TestKeyUseDroppedWhenAReportIsRefused(t *testing.T) {
	for _, st := range []int{400, 404, 413, 422, 408, 429, 500, 503} {
		t.Run(strconv.Itoa(st), func(t *testing.T) {
			f := newKeyFixture(t)
			var pids []string
			for range 2 {
				key, pid := apikey.New()
				f.core.SetAPIKey(key, keyOf("u"+pid), false)
				e, err := f.getKey(key)
				if err != nil {
					t.Fatal(err)
				}
				e.MarkUsed()
				pids = append(pids, pid)
			}
			refused := st != 408 && st != 429 && st < 500
			f.core.UsedStatus.Store(int32(st))
			n, err := f.c.ReportUsed(context.Background())
			if err == nil || n != 0 || errors.Is(err, ErrReportRefused) != refused {
				t.Fatalf("ReportUsed answered %d = %d, %v; want an error, refused for good %v", st, n, err, refused)
			}
			want := 0.0
			if refused {
				want = float64(len(pids))
			}
			if got := testutil.ToFloat64(f.c.m.APIKeyUsesRefused); got != want {
				t.Fatalf("authproxy_api_key_uses_refused_total = %v, want %v", got, want)
			}
			f.core.UsedStatus.Store(0)
			n, err = f.c.ReportUsed(context.Background())
			if refused {
				if n != 0 || err != nil || len(f.core.UsedKeys()) != 0 {
					t.Fatalf("the next ReportUsed = %d, %v, reported %v; want nothing", n, err, f.core.UsedKeys())
				}
				return
			}
			got := f.core.UsedKeys()
			slices.Sort(got)
			slices.Sort(pids)
			if err != nil || n != len(pids) || !slices.Equal(got, pids) {
				t.Fatalf("the next ReportUsed = %d, %v, reported %v; want %v", n, err, got, pids)
			}
		})
	}
}

// sameSetKeys returns n API keys (and their public ids) whose entries
// share one set of the key table, each known to the fixture's coreapi.
func (f *fixture) sameSetKeys(t *testing.T, n int) (keys, pids []string) {
	t.Helper()
	for len(keys) < n {
		key, pid := apikey.New()
		if len(keys) > 0 && &f.c.keySet([]byte(pid))[0] != &f.c.keySet([]byte(pids[0]))[0] {
			continue
		}
		f.core.SetAPIKey(key, keyOf("u"+pid), false)
		keys, pids = append(keys, key), append(pids, pid)
	}
	return keys, pids
}

// reported is what the fixture's coreapi was told were used, sorted.
func (f *fixture) reported() []string {
	got := f.core.UsedKeys()
	slices.Sort(got)
	return got
}

// TestKeyUseKeptWhenTheEntryLeaves: the use of a key whose entry leaves
// the table before the next report (evicted by keys of its set, purged,
// fetched but not kept) is reported all the same; it was lost, so a key
// in use could look unused to an admin reading last_used_at.
func TestKeyUseKeptWhenTheEntryLeaves(t *testing.T) {
	t.Run("evicted", func(t *testing.T) {
		f := newKeyFixture(t)
		keys, pids := f.sameSetKeys(t, 2*keyWays)
		for _, k := range keys {
			e, err := f.getKey(k)
			if err != nil {
				t.Fatal(err)
			}
			e.MarkUsed()
		}
		if n, err := f.c.ReportUsed(context.Background()); err != nil || n != len(keys) {
			t.Fatalf("ReportUsed = %d, %v; want %d", n, err, len(keys))
		}
		slices.Sort(pids)
		if got := f.reported(); !slices.Equal(got, pids) {
			t.Fatalf("reported %v, want %v", got, pids)
		}
		if n, err := f.c.ReportUsed(context.Background()); n != 0 || err != nil {
			t.Fatalf("a report after that = %d, %v; want nothing", n, err)
		}
	})
	t.Run("purged", func(t *testing.T) {
		f := newKeyFixture(t)
		key, pid := apikey.New()
		f.core.SetAPIKey(key, keyOf("u1"), false)
		e, err := f.getKey(key)
		if err != nil {
			t.Fatal(err)
		}
		e.MarkUsed()
		f.c.InvalidateAll()
		// A request holding the purged entry marks it after the purge.
		key2, pid2 := apikey.New()
		f.core.SetAPIKey(key2, keyOf("u2"), false)
		e2, err := f.getKey(key2)
		if err != nil {
			t.Fatal(err)
		}
		f.c.InvalidateAll()
		e2.MarkUsed()
		if n, err := f.c.ReportUsed(context.Background()); err != nil || n != 2 {
			t.Fatalf("ReportUsed = %d, %v; want 2", n, err)
		}
		want := []string{pid, pid2}
		slices.Sort(want)
		if got := f.reported(); !slices.Equal(got, want) {
			t.Fatalf("reported %v, want %v", got, want)
		}
	})
}

// TestKeyUseOverflowCounted: past maxPendingUses keys held apart from the
// table, a use is dropped, counted (authproxy_api_key_uses_dropped_total)
// and not silent; a report's worth held apart asks for an early report
// (KeyUseFull), which reports every one held and frees the set.
func TestKeyUseOverflowCounted(t *testing.T) {
	f := newKeyFixture(t)
	select {
	case <-f.c.KeyUseFull():
		t.Fatal("an early report asked for with nothing held")
	default:
	}
	for i := range maxPendingUses + 2 {
		f.c.keys.pend(fmt.Sprintf("k%015d", i))
	}
	if got := f.c.KeyUsesDropped(); got != 2 {
		t.Fatalf("KeyUsesDropped = %d, want 2", got)
	}
	if got := testutil.ToFloat64(f.c.m.APIKeyUsesDropped); got != 2 {
		t.Fatalf("authproxy_api_key_uses_dropped_total = %v, want 2", got)
	}
	select {
	case <-f.c.KeyUseFull():
	default:
		t.Fatal("no early report asked for with the set full")
	}
	if n, err := f.c.ReportUsed(context.Background()); err != nil || n != maxPendingUses {
		t.Fatalf("ReportUsed = %d, %v; want %d", n, err, maxPendingUses)
	}
	f.c.keys.pend("again")
	if got := f.c.KeyUsesDropped(); got != 2 {
		t.Fatalf("after a report: KeyUsesDropped = %d, want 2 (room again)", got)
	}
}

// TestRefusedKeyRememberedThroughOthersInvalidations: a revoked (or
// expired) key's refusal, and an unknown key's, is remembered for the
// negative TTL whatever users' and tenants' invalidations come meanwhile,
// during its fetch or after: no change of a user or tenant undoes a
// revocation, an expiry or an unknown public id. Such a fill was not kept
// when any user or tenant invalidation happened while it was fetched, and
// a kept one was dropped by every invalidation of the first user or tenant
// counter (a refusal names no user or tenant): with the fleet's logouts
// and revocations at a few hundred a second, a leaked key still in use
// reached coreapi, its database and its audit log on almost every request.
func TestRefusedKeyRememberedThroughOthersInvalidations(t *testing.T) {
	f := newKeyFixture(t)
	revoked, pid := apikey.New()
	f.core.SetAPIKey(revoked, keyOf("u1"), true)
	unknown, _ := apikey.New()
	want := map[string]error{revoked: ErrKeyRevoked, unknown: ErrKeyUnknown}
	ask := func(when string) {
		t.Helper()
		for k, werr := range want {
			if _, err := f.getKey(k); !errors.Is(err, werr) {
				t.Fatalf("%s: %v, want %v", when, err, werr)
			}
		}
	}
	// Both fetched while other users and tenants are invalidated.
	gate := make(chan struct{})
	f.core.KeyGate.Store(&gate)
	var wg sync.WaitGroup
	wg.Go(func() { ask("racing fill") })
	testenv.Eventually(t, func() error { return testenv.Want("key fetches", f.core.KeyFetches.Load(), 1) })
	f.c.InvalidateUser("someone")
	f.c.InvalidateTenant("somewhere")
	f.core.KeyGate.Store(nil)
	close(gate)
	wg.Wait()
	if n := f.core.KeyFetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	ask("after the fills")
	if n := f.core.KeyFetches.Load(); n != 2 {
		t.Fatalf("refusals fetched during others' invalidations not kept: %d fetches, want 2", n)
	}
	// Every user and tenant counter moves: the fleet's traffic.
	for i := 0; i < 20*stripes; i++ {
		f.c.InvalidateUser(fmt.Sprint("user-", i))
		f.c.InvalidateTenant(fmt.Sprint("tenant-", i))
	}
	ask("after others' invalidations")
	if n := f.core.KeyFetches.Load(); n != 2 {
		t.Fatalf("refusals dropped by others' invalidations: %d fetches, want 2", n)
	}
	// The key's own invalidation, and everything's, still make it a miss.
	f.c.InvalidateAPIKey(pid)
	if _, err := f.getKey(revoked); !errors.Is(err, ErrKeyRevoked) || f.core.KeyFetches.Load() != 3 {
		t.Fatalf("after the key's invalidation: %v, %d fetches, want 3", err, f.core.KeyFetches.Load())
	}
	f.c.InvalidateAll()
	ask("after everything's invalidation")
	if n := f.core.KeyFetches.Load(); n != 5 {
		t.Fatalf("after everything's invalidation: %d fetches, want 5", n)
	}
}
