package projection

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/apikey"
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
