// Package projection caches each user's auth projection per (user, tenant)
// and keeps the cache honest against invalidation events.
//
// Every entry records the generation counters it was fetched under: one
// for the user's stripe, one for the tenant's stripe (fixed arrays of
// counters, so memory does not grow with users) and a global one. An
// invalidation bumps a counter; a hit whose recorded generations differ
// from the current ones is a miss. The counters are read before a fetch and
// checked before the result is stored, so a fill that raced an invalidation
// is not kept; one stored after an invalidation all the same (which came
// after that check, or whose purge kept a Set it raced) carries the
// counters from before it, and is never served. The singleflight key
// includes them, so no request arriving after an invalidation joins a
// fetch started before it.
//
// While the invalidation feed is down, an entry is trusted only for a
// bounded time past max(fetch time, disconnect time); on reconnect
// everything is purged.
//
// Times kept for those bounds (fetch, expiry, disconnect) are durations
// since the cache was made, read from the monotonic clock (see ticks): a
// step of the wall clock (NTP, an operator, a VM's resume) neither
// lengthens a TTL nor the trust while the feed is down.
package projection

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/percpu"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"golang.org/x/sync/singleflight"
)

// Errors of Get.
var (
	// ErrNoMembership: coreapi knows no membership of the user in the tenant.
	ErrNoMembership = errors.New("projection: no membership")
	// ErrUnavailable: coreapi could not be reached or answered 5xx.
	ErrUnavailable = errors.New("projection: coreapi unavailable")
	// ErrUpstream: coreapi answered something unusable.
	ErrUpstream = errors.New("projection: bad answer from coreapi")
	// ErrOverloaded: MaxFetches fetches are already in flight. It wraps
	// ErrUnavailable (the client is told to retry: 503, Retry-After).
	ErrOverloaded = fmt.Errorf("%w: too many projection fetches in flight", ErrUnavailable)
)

// stripes is the number of generation counters per dimension (user,
// tenant, API key): an invalidation moves one, and every entry hashed to it
// misses. Anyone can sign up for a tenant and loop writes that invalidate
// its own users, tenants or keys (a role granted and revoked, a sign-in and
// a sign-out); each such invalidation makes 1/stripes of every other
// tenant's entries miss on every proxy, and coreapi fetch them again. At
// 1,024, a thousand such writes reached most of the fleet's cached users;
// at 65,536 an attacker's sustained 500 a second re-fetch an entry about
// every two minutes, of the order of its TTL
// (TestInvalidationsSpareOthers). The three arrays take 1.5 MB; a warm
// request reads two counters, of lines that a working set of thousands
// of users keeps in the CPU's second-level cache.
const stripes = 1 << 16

// Fetcher loads one projection from coreapi.
type Fetcher interface {
	Fetch(ctx context.Context, userID, tenantID, requestID string) (*identity.Projection, error)
}

// Entry is a cached projection with its header values prepared. Shared by
// all requests: never modify it.
type Entry struct {
	Sub, Tid string
	P        *identity.Projection
	Roles    string // comma list, as forwarded
	Perms    string
	// Lines are the entry's identity header lines, as a proxy writes them:
	// "X-Auth-Roles: ...\r\nX-Auth-Permissions: ...\r\n
	// X-Auth-Email-Verified: ...\r\n". Roles and Perms are parts of it,
	// so the values cost one allocation, and a warm request copies the
	// three headers of the user in one piece (valid only when neither list
	// holds a line break: the proxy checks).
	Lines string
	// active is P.Active(), worked out when the entry is made: a warm
	// request then reads one byte of the entry instead of three status
	// strings, each in memory of its own.
	active    bool
	err       error // ErrNoMembership for a remembered 404
	gens      [3]uint64
	us, ts    int   // the user's and the tenant's stripe
	fetchedAt int64 // ticks (Cache.ticks)
	expires   int64 // ticks: fetchedAt + TTL
}

// EntryBytes is the heap a cached projection costs with typical roles and
// permissions: the entry, the projection and its lists, the joined header
// values, and the cache's bookkeeping for it. It is measured by
// TestEntryBytesMeasured, which fails when the real cost drifts from it.
const EntryBytes = 1120

// Options configure a Cache.
type Options struct {
	// Size is the number of entries the cache holds (0: 100,000);
	// EntryCost the bytes charged for each (0: EntryBytes). The cache's
	// budget is their product.
	Size         int64
	EntryCost    int64
	TTL          time.Duration // positive entries
	NegativeTTL  time.Duration // remembered "no membership"
	MaxStaleness time.Duration // trust while the invalidation feed is down
	// MaxFetches bounds concurrent fetches (distinct misses; requests for
	// the same entry share one); a miss beyond it fails at once with
	// ErrOverloaded rather than piling onto a struggling coreapi. 0: no bound.
	MaxFetches int
	Now        func() time.Time
	// Keys resolves API keys (nil: GetKey answers ErrKeysUnsupported).
	// Key entries share the TTLs, the fetch bound and the user, tenant and
	// global invalidations with projections.
	Keys KeyFetcher
}

// Cache is the projection cache.
type Cache struct {
	opt   Options
	f     Fetcher
	cache *ristretto.Cache[uint64, *Entry]
	// open is passed by every use of cache: Close shuts it, waits for
	// those under way, and only then closes cache, whose Close shuts the
	// channels its Get, SetWithTTL and Clear send on (a send racing it
	// panics). Those that come later skip cache (see Close).
	open   *percpu.Gate
	seed   maphash.Seed
	user   [stripes]atomic.Uint64
	tenant [stripes]atomic.Uint64
	global atomic.Uint64
	// base is the origin of ticks: opt.Now() when the cache was made.
	base  time.Time
	down  atomic.Int64 // ticks of the disconnect; the constant connected while the feed is up
	sf    singleflight.Group
	slots chan struct{} // nil: no bound on fetches
	cc    metrics.CacheCounters
	kc    metrics.CacheCounters
	m     *metrics.Metrics
	keys  *keyTable
	// halfwayHook, when set (tests), runs between the two steps of an
	// invalidation: in a user or tenant one between the moves of its two
	// counters; in Reconnected between the purge and the end of the
	// bounded staleness.
	halfwayHook func()
	// checkedHook, when set (tests), runs in a fill (a projection's or an
	// API key's) between its check that nothing was invalidated while it
	// fetched and its store: an invalidation run there lands before the
	// store, as one arriving between the two would.
	checkedHook func()
}

// New returns a Cache reading through f.
func New(opt Options, f Fetcher, m *metrics.Metrics) (*Cache, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Size <= 0 {
		opt.Size = 100_000
	}
	if opt.EntryCost <= 0 {
		opt.EntryCost = EntryBytes
	}
	c := &Cache{opt: opt, f: f, seed: maphash.MakeSeed(), m: m, cc: m.Cache(metrics.CacheProjection),
		kc: m.Cache(metrics.CacheAPIKey), keys: &keyTable{f: opt.Keys}, base: opt.Now(), open: percpu.NewGate()}
	c.keys.uses.full, c.keys.uses.m = make(chan struct{}, 1), m
	c.down.Store(connected)
	if opt.MaxFetches > 0 {
		c.slots = make(chan struct{}, opt.MaxFetches)
	}
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *Entry]{
		NumCounters:        10 * opt.Size,
		MaxCost:            opt.Size * opt.EntryCost,
		BufferItems:        64,
		IgnoreInternalCost: true,
		OnEvict:            func(*ristretto.Item[*Entry]) { c.cc.Evictions.Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("projection cache: %w", err)
	}
	c.cache = rc
	m.CacheSize(metrics.CacheProjection, opt.EntryCost, rc.MaxCost, rc.RemainingCost)
	return c, nil
}

// Close stops the cache's goroutines, once the lookups, fills and purges
// under way have ended. It may run while requests or rechecks still use
// the cache (a projection fetch coreapi answers past the shutdown's
// bound): from then on a lookup misses and fetches, a fill is not kept
// and a purge has nothing to do. Calls after the first do nothing.
func (c *Cache) Close() {
	if c.open.Close() {
		c.cache.Close()
	}
}

// stored is the entry kept under k, if any (none once closed).
func (c *Cache) stored(k uint64) (*Entry, bool) {
	cell, ok := c.open.Enter()
	if !ok {
		return nil, false
	}
	e, ok := c.cache.Get(k)
	c.open.Leave(cell)
	return e, ok
}

// store offers e to the store under k for ttl (dropped once closed).
func (c *Cache) store(k uint64, e *Entry, ttl time.Duration) {
	cell, ok := c.open.Enter()
	if !ok {
		return
	}
	c.cache.SetWithTTL(k, e, c.opt.EntryCost, ttl)
	c.open.Leave(cell)
}

// clear empties the store (nothing to do once closed). Calls may overlap:
// the store's Clear stops its goroutine and starts it again, one Clear at
// a time. A Set it races may be lost or kept; what a purge keeps carries
// the generations the purge moved on (InvalidateAll), so it is never
// served.
func (c *Cache) clear() {
	cell, ok := c.open.Enter()
	if !ok {
		return
	}
	c.cache.Clear()
	c.open.Leave(cell)
}

// connected is the value of Cache.down while the invalidation feed is up.
const connected = math.MinInt64

// ticks is t as the cache counts time: nanoseconds since it was made, on
// the monotonic clock when t and the cache's origin both carry a reading
// of it (as time.Now's do), else on the wall clock. Unix nanoseconds
// followed the wall clock: set back an hour, it kept every entry an hour
// past its TTL, and past MAX_STALENESS while the feed was down.
func (c *Cache) ticks(t time.Time) int64 { return int64(t.Sub(c.base)) }

func (c *Cache) stripe(id string) int { return int(maphash.String(c.seed, id) % stripes) }

func (c *Cache) key(sub, tid string) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(sub)
	h.WriteByte(0)
	h.WriteString(tid)
	return h.Sum64()
}

func (c *Cache) gens(sub, tid string) [3]uint64 {
	return [3]uint64{c.user[c.stripe(sub)].Load(), c.tenant[c.stripe(tid)].Load(), c.global.Load()}
}

// live reports whether e may be served at now (ticks): within its TTL
// and, while the feed is down, its bounded staleness. Both on the cache's
// clock, as ValidStamp judges a kept entry: the store's own expiry of an
// entry (SetWithTTL) runs on the process's clock, and left alone it kept
// serving an entry past its TTL on an injected one.
func (c *Cache) live(e *Entry, now int64) bool {
	return now < e.expires && c.freshAt(e.fetchedAt, now)
}

// freshAt applies the bounded staleness while the feed is down to an
// entry fetched at fetchedAt, at now (ticks).
func (c *Cache) freshAt(fetchedAt, now int64) bool {
	down := c.down.Load()
	if down == connected {
		return true
	}
	return now-max(fetchedAt, down) <= int64(c.opt.MaxStaleness)
}

// Valid reports whether e, an entry Get returned earlier, still stands at
// now exactly as a cache hit would: within its TTL, no invalidation of its
// user, its tenant or everything since it was fetched, and trusted while
// the invalidation feed is down. A caller that keeps e (beside a cached
// token) checks it with Valid instead of a second cache lookup; true
// counts as a cache hit.
func (c *Cache) Valid(e *Entry, now time.Time) bool {
	s := e.Stamp()
	return c.ValidStamp(&s, now)
}

// Stamp is what Valid judges an entry by: its expiry, the generations it
// was fetched under and its time of fetching. A caller that keeps an entry
// can keep a copy of its stamp beside the rest of its own per-request
// state and check that (ValidStamp), so that a request reads nothing of
// the entry itself: one line of memory fewer to fetch, at the end of a
// chain of pointers, once the working set outgrows the CPU's caches.
type Stamp struct {
	expires   int64 // ticks (Cache.ticks)
	gens      [3]uint64
	us, ts    int32 // the user's and the tenant's stripe
	fetchedAt int64 // ticks
}

// Stamp is e's stamp.
func (e *Entry) Stamp() Stamp {
	return Stamp{expires: e.expires, gens: e.gens, us: int32(e.us), ts: int32(e.ts), fetchedAt: e.fetchedAt}
}

// ValidStamp is Valid for the entry whose stamp s is.
func (c *Cache) ValidStamp(s *Stamp, now time.Time) bool {
	n := c.ticks(now)
	if n < s.expires &&
		s.gens == [3]uint64{c.user[s.us].Load(), c.tenant[s.ts].Load(), c.global.Load()} && c.freshAt(s.fetchedAt, n) {
		c.cc.Hits.Inc()
		return true
	}
	return false
}

// Get returns the projection of sub in tid, from the cache or coreapi.
// requestID is propagated to coreapi on a miss.
func (c *Cache) Get(ctx context.Context, sub, tid, requestID string) (*Entry, error) {
	k := c.key(sub, tid)
	g := c.gens(sub, tid)
	if e, ok := c.stored(k); ok && e.Sub == sub && e.Tid == tid && e.gens == g && c.live(e, c.ticks(c.opt.Now())) {
		c.cc.Hits.Inc()
		if e.err != nil {
			return nil, e.err
		}
		return e, nil
	}
	c.cc.Misses.Inc()
	fk := sub + "\x00" + tid + "\x00" + strconv.FormatUint(g[0], 36) + "." + strconv.FormatUint(g[1], 36) + "." + strconv.FormatUint(g[2], 36)
	res, err, _ := c.sf.Do(fk, func() (any, error) {
		if err := c.takeSlot(); err != nil {
			return nil, err
		}
		defer c.releaseSlot()
		fetchedAt := c.ticks(c.opt.Now())
		p, err := c.f.Fetch(context.WithoutCancel(ctx), sub, tid, requestID)
		var e *Entry
		ttl := c.opt.TTL
		switch {
		case err == nil:
			if e, err = newEntry(sub, tid, p); err != nil {
				c.m.ProjectionFetches.WithLabelValues("bad").Inc()
				return nil, err
			}
			c.m.ProjectionFetches.WithLabelValues("ok").Inc()
		case errors.Is(err, ErrNoMembership):
			c.m.ProjectionFetches.WithLabelValues("not_found").Inc()
			e = &Entry{Sub: sub, Tid: tid, err: ErrNoMembership}
			ttl = c.opt.NegativeTTL
		default:
			c.m.ProjectionFetches.WithLabelValues("error").Inc()
			return nil, err
		}
		ttl = jittered(ttl)
		e.gens, e.fetchedAt, e.expires = g, fetchedAt, fetchedAt+int64(ttl)
		e.us, e.ts = c.stripe(sub), c.stripe(tid)
		// Keep the result only if nothing was invalidated meanwhile. The
		// cache admits it asynchronously; nothing waits for that: the
		// caller keeps e beside its token (checked with Valid), and a
		// request for the same entry meanwhile joins this fetch.
		// A fill can still land after an invalidation that follows the
		// check (or is kept by a purge it races: the store's Clear is not
		// atomic with a Set): e carries g, which that invalidation moved
		// on, so it is never served (Get's and ValidStamp's comparison).
		if c.gens(sub, tid) == g && ttl > 0 {
			c.checked()
			c.store(k, e, ttl)
		}
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	e := res.(*Entry)
	if e.err != nil {
		return nil, e.err
	}
	return e, nil
}

// ttlJitter: each entry's TTL is shortened by up to 1/ttlJitter of it, at
// random. Entries filled together (a proxy's start, a burst of sign-ins, a
// working set cached in one pass) then expire spread over that span instead
// of at one instant, when their refetches would all meet the
// PROJECTION_MAX_FETCHES bound at once and the surplus be shed with 503s.
// An entry never lives longer than the configured TTL.
const ttlJitter = 10

func jittered(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return ttl
	}
	return ttl - time.Duration(rand.Int64N(int64(ttl)/ttlJitter+1))
}

func newEntry(sub, tid string, p *identity.Projection) (*Entry, error) {
	if p.UserID != sub || p.TenantID != tid {
		return nil, fmt.Errorf("%w: projection for %s/%s, asked %s/%s", ErrUpstream, p.UserID, p.TenantID, sub, tid)
	}
	for _, l := range [][]string{p.Roles, p.Permissions} {
		for _, v := range l {
			if v == "" || strings.ContainsAny(v, ",\r\n") {
				return nil, fmt.Errorf("%w: list value %q", ErrUpstream, v)
			}
		}
	}
	return Of(p), nil
}

// Of is the entry of projection p (for p's user and tenant), with its
// header values and status worked out; p's lists must hold no empty value,
// comma or line break (newEntry checks those of a fetched projection).
// p is the entry's from then on (see Entry).
func Of(p *identity.Projection) *Entry {
	e := &Entry{Sub: p.UserID, Tid: p.TenantID, P: p, active: p.Active()}
	e.setLines()
	// The lists' values are parts of Lines from now on: the strings they
	// were decoded into are freed, and a cached projection holds each
	// role and permission once.
	shareValues(p.Roles, e.Roles)
	shareValues(p.Permissions, e.Perms)
	return e
}

// shareValues points each value of list at its copy in joined, which is
// identity.JoinList(list).
func shareValues(list []string, joined string) {
	at := 0
	for i, v := range list {
		list[i] = joined[at : at+len(v)]
		at += len(v) + 1
	}
}

// setLines sets Lines, Roles and Perms from e.P.
func (e *Entry) setLines() {
	var buf [512]byte // typical lists fit: built here, copied once
	b, roles := appendListLine(buf[:0], identity.HeaderRoles, e.P.Roles)
	b, perms := appendListLine(b, identity.HeaderPermissions, e.P.Permissions)
	e.Lines = string(identity.AppendHeaderLine(b, identity.HeaderEmailVerified, identity.BoolString(e.P.EmailVerified)))
	e.Roles, e.Perms = e.Lines[roles[0]:roles[1]], e.Lines[perms[0]:perms[1]]
}

// appendListLine appends the header line "name: a,b,...\r\n" of list
// (its value identity.JoinList(list)) and returns where the value lies in
// the result.
func appendListLine(dst []byte, name string, list []string) ([]byte, [2]int) {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	at := [2]int{len(dst), 0}
	dst = identity.AppendList(dst, list)
	at[1] = len(dst)
	return append(dst, "\r\n"...), at
}

// Active reports whether the user, the membership and the tenant are all
// active (identity.Projection.Active, as of when the entry was made).
func (e *Entry) Active() bool { return e.active }

// InvalidateUser makes every entry of the user a miss.
//
// The count of user and tenant invalidations (keyTable.ut) moves before
// the user's counter. An API-key fill learns its user and tenant only
// from the answer, reads their counters after it, and keeps its entry only
// if ut did not move since it started. With ut moved second, a fill that
// read the user's counter already moved and ut not yet was kept, stamped
// with the new generation, though what it fetched may predate the change:
// it was trusted for the whole TTL. Moved first, ut has moved for every
// fill that can see the new generation. So for InvalidateTenant.
func (c *Cache) InvalidateUser(id string) {
	s := c.stripe(id)
	c.keys.invalidated(false, s)
	c.halfway()
	c.user[s].Add(1)
}

// InvalidateTenant makes every entry of the tenant a miss (ut first, as
// in InvalidateUser).
func (c *Cache) InvalidateTenant(id string) {
	s := c.stripe(id)
	c.keys.invalidated(true, s)
	c.halfway()
	c.tenant[s].Add(1)
}

// checked runs the test hook of a fill that passed its check, if set.
func (c *Cache) checked() {
	if c.checkedHook != nil {
		c.checkedHook()
	}
}

// halfway runs the test hook of a half-applied invalidation or
// reconnection, if set.
func (c *Cache) halfway() {
	if c.halfwayHook != nil {
		c.halfwayHook()
	}
}

// InvalidateAll makes every entry a miss and frees them.
func (c *Cache) InvalidateAll() {
	c.global.Add(1)
	c.clear()
	for i := range c.keys.slots {
		if e := c.keys.slots[i].Swap(nil); e != nil {
			c.keys.leave(e) // its unreported use is kept
		}
	}
}

// Disconnected records that the invalidation feed went down at t; from
// then on entries are trusted only for MaxStaleness.
func (c *Cache) Disconnected(t time.Time) {
	c.down.CompareAndSwap(connected, max(c.ticks(t), connected+1))
}

// BoundedStaleness reports whether the cache is in the bounded-staleness
// mode: Disconnected was called and Reconnected not since.
func (c *Cache) BoundedStaleness() bool { return c.down.Load() != connected }

// Reconnected purges everything (events may have been missed) and ends the
// bounded-staleness mode, in that order: the other way round, an entry
// from before the outage, no longer trusted, would be trusted again until
// the purge (TestReconnectedPurgesFirst).
func (c *Cache) Reconnected() {
	c.InvalidateAll()
	c.halfway()
	c.down.Store(connected)
}

// takeSlot takes one of the fetch slots that the projection and key
// misses share, or counts the miss refused as overloaded (ErrOverloaded)
// when none is free; releaseSlot gives it back.
func (c *Cache) takeSlot() error {
	if c.slots == nil {
		return nil
	}
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
		c.m.ProjectionFetches.WithLabelValues("overloaded").Inc()
		return ErrOverloaded
	}
}

func (c *Cache) releaseSlot() {
	if c.slots != nil {
		<-c.slots
	}
}
