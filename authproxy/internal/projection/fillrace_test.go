package projection

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// raceInvalidation is one way an entry of user u1 in tenant t1 (or of a key
// of theirs, pid its public id) stops being trusted, which a fill of it may
// race.
type raceInvalidation struct {
	name string
	inv  func(c *Cache, pid string)
}

// raceInvalidations are the user's event, the tenant's, everything's and a
// reconnection's purge, and with keys the key's own event.
func raceInvalidations(keys bool) []raceInvalidation {
	r := []raceInvalidation{
		{"user", func(c *Cache, _ string) { c.InvalidateUser("u1") }},
		{"tenant", func(c *Cache, _ string) { c.InvalidateTenant("t1") }},
		{"all", func(c *Cache, _ string) { c.InvalidateAll() }},
		{"reconnect", func(c *Cache, _ string) { c.Disconnected(c.opt.Now()); c.Reconnected() }},
	}
	if keys {
		r = append(r, raceInvalidation{"key", func(c *Cache, pid string) { c.InvalidateAPIKey(pid) }})
	}
	return r
}

// gate is a gate for coreapi's answer to one fetch (testenv.Core's
// ProjectionGate, KeyGate) and the function that opens it; the test's end
// opens it too, so that a failed test leaves no fetch waiting.
func gate(t *testing.T) (*chan struct{}, func()) {
	ch := make(chan struct{})
	open := sync.OnceFunc(func() { close(ch) })
	t.Cleanup(open)
	return &ch, open
}

// receive waits for a value of ch, or gives up saying what did not happen.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing within 10 s", what)
		panic("unreachable")
	}
}

// TestFillRacingAnInvalidation: a projection fetch under way when the
// user's, the tenant's or everything's invalidation arrives (or a
// reconnection's purge) may have read the projection from before the
// change. Its entry answers the request that started it, but is neither
// trusted afterwards (it carries the generations read before the fetch,
// not after) nor kept, even when it ends last; and a request that comes
// after the invalidation fetches anew instead of joining it (the
// generations are part of the fetch's key). Each of the three, undone,
// leaves the raced entry trusted, kept or handed to a later request.
func TestFillRacingAnInvalidation(t *testing.T) {
	for _, tc := range raceInvalidations(false) {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			now := func() time.Time { return time.Unix(0, f.now.Load()) }
			started := make(chan struct{}, 2)
			f.core.ProjectionStarted.Store(&started)
			get := func(out chan<- *Entry) {
				e, err := f.c.Get(context.Background(), "u1", "t1", "rid")
				if err != nil {
					t.Errorf("Get: %v", err)
				}
				out <- e
			}
			before, after := make(chan *Entry, 1), make(chan *Entry, 1)
			gateBefore, openBefore := gate(t)
			f.core.ProjectionGate.Store(gateBefore)
			go get(before)
			receive(t, started, "the fetch before the invalidation started")
			tc.inv(f.c, "")
			gateAfter, openAfter := gate(t)
			f.core.ProjectionGate.Store(gateAfter)
			go get(after)
			receive(t, started, "the request after the invalidation fetched (it joined the fetch from before)")
			f.core.ProjectionStarted.Store(nil)
			f.core.ProjectionGate.Store(nil)
			// The fetch from after ends first and is kept; the one from
			// before ends last.
			openAfter()
			ea := receive(t, after, "the fetch after the invalidation answered")
			f.stored(t, "u1")
			openBefore()
			eb := receive(t, before, "the fetch before the invalidation answered")
			if eb == nil || ea == nil {
				t.FailNow()
			}
			if f.c.Valid(eb, now()) {
				t.Fatal("the entry fetched across the invalidation is trusted")
			}
			if !f.c.Valid(ea, now()) {
				t.Fatal("the entry fetched after the invalidation is not trusted")
			}
			e, err := f.c.Get(context.Background(), "u1", "t1", "rid")
			if err != nil {
				t.Fatal(err)
			}
			f.wantFetches(t, 2)
			if e != ea {
				t.Fatal("the entry cached is not the one fetched after the invalidation")
			}
		})
	}
}

// TestKeyFillRacingAnInvalidation: as TestFillRacingAnInvalidation, for an
// API key's resolve under way when the key's own invalidation (its
// revocation), its user's, its tenant's or everything's arrives, or a
// reconnection's purge: a request after it resolves the key anew rather
// than join that resolve (the key's and everything's generations and the
// count of user and tenant invalidations are part of the resolve's key),
// and the raced resolve, ending last, does not take the place of the
// later one (it is kept only if none of those moved).
func TestKeyFillRacingAnInvalidation(t *testing.T) {
	for _, tc := range raceInvalidations(true) {
		t.Run(tc.name, func(t *testing.T) {
			f := newKeyFixture(t)
			key, pid := apikey.New()
			f.core.SetAPIKey(key, keyOf("u1"), false)
			get := func(out chan<- *KeyEntry) {
				e, err := f.getKey(key)
				if err != nil {
					t.Errorf("GetKey: %v", err)
				}
				out <- e
			}
			before, after := make(chan *KeyEntry, 1), make(chan *KeyEntry, 1)
			gateBefore, openBefore := gate(t)
			f.core.KeyGate.Store(gateBefore)
			go get(before)
			testenv.Eventually(t, func() error { return testenv.Want("key resolves", f.core.KeyFetches.Load(), 1) })
			tc.inv(f.c, pid)
			gateAfter, openAfter := gate(t)
			f.core.KeyGate.Store(gateAfter)
			go get(after)
			testenv.Eventually(t, func() error {
				return testenv.Want("key resolves (the request after the invalidation joined the resolve from before)",
					f.core.KeyFetches.Load(), 2)
			})
			f.core.KeyGate.Store(nil)
			openAfter()
			ea := receive(t, after, "the resolve after the invalidation answered")
			openBefore()
			eb := receive(t, before, "the resolve before the invalidation answered")
			if eb == nil || ea == nil {
				t.FailNow()
			}
			e, err := f.getKey(key)
			if err != nil {
				t.Fatal(err)
			}
			if n := f.core.KeyFetches.Load(); n != 2 || e != ea {
				t.Fatalf("%d resolves, the cached entry the later resolve's: %v; want 2 and true (the raced resolve not kept)", n, e == ea)
			}
		})
	}
}

// TestFillLandingAfterAnInvalidation: a projection fill that found nothing
// invalidated while it fetched can still be stored after an invalidation
// that comes between its check and its store; and a purge's Clear, not
// atomic with the store's Set, may keep a Set it races. Either way the
// store holds what was read before the change, and the entry's
// generations, read before the fetch, are what keep it from being served:
// a request after the invalidation fetches anew, and the raced entry is no
// longer Valid. Without the comparison, the projection from before the
// change (here a role since revoked) was served until its TTL.
func TestFillLandingAfterAnInvalidation(t *testing.T) {
	for _, tc := range raceInvalidations(false) {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			now := func() time.Time { return time.Unix(0, f.now.Load()) }
			f.c.checkedHook = func() {
				f.core.SetProjection(identity.Projection{UserID: "u1", TenantID: "t1", UserStatus: "active",
					MembershipStatus: "active", TenantStatus: "active", Roles: []string{"revoked"}})
				tc.inv(f.c, "")
			}
			raced, err := f.c.Get(context.Background(), "u1", "t1", "rid")
			f.c.checkedHook = nil
			if err != nil {
				t.Fatal(err)
			}
			if raced.Roles != "member" {
				t.Fatalf("the raced fill read roles %q, want member (from before the change)", raced.Roles)
			}
			f.c.cache.Wait()
			if kept, ok := f.c.cache.Get(f.c.key("u1", "t1")); !ok || kept != raced {
				t.Fatal("the store did not keep the raced fill: the case under test did not happen")
			}
			if f.c.Valid(raced, now()) {
				t.Fatal("the entry stored after the invalidation is Valid")
			}
			e, err := f.c.Get(context.Background(), "u1", "t1", "rid")
			if err != nil {
				t.Fatal(err)
			}
			if e.Roles != "revoked" {
				t.Fatalf("roles %q after the invalidation, want revoked (the raced fill was served)", e.Roles)
			}
			f.wantFetches(t, 2)
		})
	}
}

// TestKeyFillLandingAfterAnInvalidation: as
// TestFillLandingAfterAnInvalidation, for an API key's resolve whose
// entry enters the table after the key's, its user's, its tenant's or
// everything's invalidation, or a reconnection's purge: it is not served
// (validKey compares the generations read with the fetch).
func TestKeyFillLandingAfterAnInvalidation(t *testing.T) {
	for _, tc := range raceInvalidations(true) {
		t.Run(tc.name, func(t *testing.T) {
			f := newKeyFixture(t)
			key, pid := apikey.New()
			f.core.SetAPIKey(key, keyOf("u1"), false)
			f.c.checkedHook = func() {
				p := keyOf("u1")
				p.Permissions = []string{}
				f.core.SetAPIKey(key, p, false)
				tc.inv(f.c, pid)
			}
			raced, err := f.getKey(key)
			f.c.checkedHook = nil
			if err != nil {
				t.Fatal(err)
			}
			if raced.E.Perms != "a:b" {
				t.Fatalf("the raced resolve read permissions %q, want a:b (from before the change)", raced.E.Perms)
			}
			if lookupKey(f.c.keySet([]byte(pid)), []byte(pid)) != raced {
				t.Fatal("the table did not keep the raced resolve: the case under test did not happen")
			}
			e, err := f.getKey(key)
			if err != nil {
				t.Fatal(err)
			}
			if n := f.core.KeyFetches.Load(); n != 2 || e.E.Perms != "" {
				t.Fatalf("%d resolves, permissions %q; want 2 and none (the raced resolve was served)", n, e.E.Perms)
			}
		})
	}
}

// versionedCore answers user "u<i>"'s projection in tenant "t" with the
// role "v<n>", n the version of the user's data that it read (ver[i]).
type versionedCore struct {
	ver []atomic.Int64
}

func (v *versionedCore) Fetch(_ context.Context, user, tenant, _ string) (*identity.Projection, error) {
	i, err := strconv.Atoi(strings.TrimPrefix(user, "u"))
	if err != nil || i >= len(v.ver) {
		return nil, fmt.Errorf("%w: no user %q", ErrNoMembership, user)
	}
	n := v.ver[i].Load()
	runtime.Gosched() // a change and its invalidation may come before the answer is stored
	return &identity.Projection{UserID: user, TenantID: tenant, UserStatus: identity.StatusActive,
		MembershipStatus: identity.StatusActive, TenantStatus: identity.StatusActive,
		Roles: []string{"v" + strconv.FormatInt(n, 10)}}, nil
}

// version is the version of the user's data that e was fetched with.
func version(t *testing.T, e *Entry) int64 {
	n, err := strconv.ParseInt(strings.TrimPrefix(e.Roles, "v"), 10, 64)
	if err != nil {
		t.Errorf("roles %q: %v", e.Roles, err)
	}
	return n
}

// TestInvalidationsRacingFillsUnderLoad: with fills, lookups, Valid checks
// and invalidations of every kind from many goroutines at once, including
// purges (InvalidateAll, Reconnected) from several at a time, whose
// store's Clear calls then overlap each other and the fills' Sets: once a
// change's invalidation has returned, no Get and no Valid entry answers
// the data from before the change. Each user's writer moves the user's
// version (the change) and then runs an invalidation covering it (its
// event); a reader notes the last version whose invalidation returned
// before it asks. Run under -race; a purge that hangs fails the test.
func TestInvalidationsRacingFillsUnderLoad(t *testing.T) {
	const (
		users   = 8
		readers = 8
		purgers = 2
		changes = 300 // per user
	)
	core := &versionedCore{ver: make([]atomic.Int64, users)}
	c, err := New(Options{Size: 1000, TTL: time.Hour, NegativeTTL: time.Hour, MaxStaleness: time.Hour}, core, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var (
		applied [users]atomic.Int64 // the last version whose invalidation returned
		stop    atomic.Bool
		writers sync.WaitGroup
		others  sync.WaitGroup
	)
	invalidations := []func(u string){
		func(u string) { c.InvalidateUser(u) },
		func(string) { c.InvalidateTenant("t") },
		func(string) { c.InvalidateAll() },
		func(string) { c.Disconnected(time.Now()); c.Reconnected() },
	}
	for i := range users {
		writers.Go(func() {
			u := "u" + strconv.Itoa(i)
			for n := range changes {
				v := core.ver[i].Add(1)
				invalidations[n%len(invalidations)](u)
				applied[i].Store(v)
			}
		})
	}
	for range purgers {
		others.Go(func() {
			for n := 0; !stop.Load(); n++ {
				if n%2 == 0 {
					c.InvalidateAll()
				} else {
					c.Reconnected()
				}
				runtime.Gosched()
			}
		})
	}
	for r := range readers {
		others.Go(func() {
			for n := r; !stop.Load(); n++ {
				i := n % users
				want := applied[i].Load()
				e, err := c.Get(context.Background(), "u"+strconv.Itoa(i), "t", "")
				if err != nil {
					t.Errorf("Get: %v", err)
					return
				}
				if got := version(t, e); got < want {
					t.Errorf("u%d: Get answered version %d after the invalidation of version %d", i, got, want)
					return
				}
				want = applied[i].Load()
				if got := version(t, e); c.Valid(e, time.Now()) && got < want {
					t.Errorf("u%d: version %d Valid after the invalidation of version %d", i, got, want)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		writers.Wait()
		stop.Store(true)
		others.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("invalidations, purges or lookups did not return within a minute")
	}
}
