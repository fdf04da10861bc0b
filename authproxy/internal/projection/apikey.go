package projection

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/apikey"
)

// Errors of GetKey. All mean "refused" (401) to the client.
var (
	// ErrKeyUnknown: coreapi knows no key with this public id.
	ErrKeyUnknown = errors.New("projection: no such API key")
	// ErrWrongSecret: the key exists; the secret presented is not its.
	ErrWrongSecret = errors.New("projection: wrong API key secret")
	// ErrKeyRevoked: the secret is right; the key is revoked or expired.
	ErrKeyRevoked = errors.New("projection: API key revoked or expired")
	// ErrKeysUnsupported: the cache has no KeyFetcher.
	ErrKeysUnsupported = fmt.Errorf("%w: API keys not configured", ErrUnavailable)
	// ErrKeyNotCached: CachedKey holds no answer for the key; only coreapi
	// has one.
	ErrKeyNotCached = errors.New("projection: API key not cached")
	// ErrReportRefused: coreapi refused a usage report for good (a 4xx
	// other than 408 and 429: a body it cannot take, an id it rejects);
	// sending it again would be refused again.
	ErrReportRefused = errors.New("projection: usage report refused")
)

// KeyFetcher resolves API keys at coreapi and reports their use.
type KeyFetcher interface {
	// FetchKey answers what key (the whole secret) may do, or ErrKeyUnknown,
	// ErrWrongSecret, ErrKeyRevoked, or an ErrUnavailable/ErrUpstream error.
	// clientIP is the address of the client whose request presented the
	// key ("": not known), which coreapi audits a revoked key's use with.
	FetchKey(ctx context.Context, key []byte, requestID, clientIP string) (*apikey.Projection, error)
	// ReportUsed tells coreapi the keys were used.
	ReportUsed(ctx context.Context, publicIDs []string) error
}

// KeyEntry is a resolved API key: the verified secret's digest, the
// projection of its user with the key's effective permissions (E, for
// the same decision as a token's), and a token entry standing for it
// (Token: synthetic claims of the acting user with the key's id in place
// of a session, on which the server keeps its warm signing state). Shared
// by all requests carrying the key: never modify it.
type KeyEntry struct {
	PublicID, KeyID, Kind string
	E                     *Entry
	Token                 *tokens.Entry
	digest                [sha256.Size]byte
	keyExpires            int64 // unix nanos; 0: never
	err                   error // ErrKeyUnknown (no digest) or ErrKeyRevoked
	gens                  [4]uint64
	us, ts, ks            int
	fetchedAt, expires    int64 // ticks (Cache.ticks)
	// used: the key authenticated a request since the last report. gone:
	// the entry left the table (another key's took its way, a purge, a
	// refill) or never entered it; its use is then held apart
	// (keyTable.uses), since no report finds it in the table.
	used, gone atomic.Bool
	t          *keyTable
}

// The table of resolved keys is set-associative: keyWays slots per set,
// keySlots in all. A key lives in the set its public id hashes to, in any
// of its ways, so keys whose ids share a set do not evict each other (as
// they would in a direct-mapped table, refetching on every other request)
// until more than keyWays of them are in use at once. At most keySlots
// entries are held (about 1.3 KB each with typical permissions).
const (
	keyWays  = 4
	keySlots = 1 << 14
	keySets  = keySlots / keyWays
)

// keyTable is the API-key half of the cache: the table of entries, the
// keys' own invalidation stripes, and the counter of user/tenant
// invalidations that tells a fill whether one raced it.
type keyTable struct {
	f     KeyFetcher
	slots [keySlots]atomic.Pointer[KeyEntry]
	key   [stripes]atomic.Uint64
	// ut counts user and tenant invalidations: a fill learns its user and
	// tenant only from the answer, so it keeps its entry only if no
	// invalidation of their stripes happened while it was fetched, which
	// recent tells for the last recentN of them.
	ut     atomic.Uint64
	recent recentInvalidations
	uses   pendingUses
}

// maxPendingUses bounds the keys whose use is held apart from the table
// until the next report: as many as the table holds (at most about 1 MB of
// public ids). Past it a use is dropped and counted.
const maxPendingUses = keySlots

// pendingUses holds the public ids of keys used since the last report
// whose entries left the table: evicted by keys of their set (more than
// keyWays in use at once), purged (InvalidateAll), or fetched but not kept.
// No report finds them in the table: without it an admin reading
// last_used_at could take a key in use (or a leaked one put to use) for an
// unused one.
type pendingUses struct {
	mu  sync.Mutex
	ids map[string]struct{}
	// dropped counts the uses lost with the set full; full is signalled
	// when it holds apikey.MaxUsedKeys ids (a report's worth): report
	// early (Cache.KeyUseFull).
	dropped atomic.Uint64
	m       *metrics.Metrics
	full    chan struct{}
}

// pend holds the use of key publicID apart from the table.
func (t *keyTable) pend(publicID string) {
	p := &t.uses
	p.mu.Lock()
	if _, ok := p.ids[publicID]; ok {
		p.mu.Unlock()
		return
	}
	if len(p.ids) >= maxPendingUses {
		p.mu.Unlock()
		p.dropped.Add(1)
		p.m.APIKeyUsesDropped.Inc()
		return
	}
	if p.ids == nil {
		p.ids = make(map[string]struct{})
	}
	p.ids[publicID] = struct{}{}
	n := len(p.ids)
	p.mu.Unlock()
	if n >= apikey.MaxUsedKeys {
		select {
		case p.full <- struct{}{}:
		default:
		}
	}
}

// takePending returns the uses held apart and empties the set.
func (t *keyTable) takePending() map[string]struct{} {
	t.uses.mu.Lock()
	defer t.uses.mu.Unlock()
	ids := t.uses.ids
	t.uses.ids = nil
	return ids
}

// leave marks e out of the table, holding its unreported use apart. With
// MarkUsed (used set, then gone read) one of the two sees the other's
// write: a use is never lost between them, at worst reported twice.
func (t *keyTable) leave(e *KeyEntry) {
	e.gone.Store(true)
	if e.used.Load() {
		t.pend(e.PublicID)
	}
}

// recentN is how many user and tenant invalidations a key's fill can look
// back on: a fill during which more happened is not kept.
const recentN = 256

// recentInvalidations remembers the stripes of the last recentN user and
// tenant invalidations, each under its count (keyTable.ut after it). Without
// it a fill was kept only if no invalidation of any user or tenant happened
// while it was fetched: with the fleet's logouts and revocations at a few
// hundred a second, almost no key fill was kept, and every API-key request
// went to coreapi.
type recentInvalidations struct {
	mu sync.Mutex // ut moves, and its slot is written, under mu
	at [recentN]struct {
		n      uint64 // the count this slot is for
		tenant bool
		stripe int
	}
}

// invalidated moves ut and records that invalidation's stripe, at once.
func (t *keyTable) invalidated(tenant bool, stripe int) {
	t.recent.mu.Lock()
	n := t.ut.Add(1)
	a := &t.recent.at[n%recentN]
	a.n, a.tenant, a.stripe = n, tenant, stripe
	t.recent.mu.Unlock()
}

// untouched reports whether no user or tenant invalidation after count
// since reached user stripe us or tenant stripe ts: false as well when more
// than recentN happened since.
func (t *keyTable) untouched(since uint64, us, ts int) bool {
	if t.ut.Load() == since {
		return true
	}
	t.recent.mu.Lock()
	defer t.recent.mu.Unlock()
	now := t.ut.Load()
	if now-since > recentN {
		return false
	}
	for n := since + 1; n <= now; n++ {
		a := &t.recent.at[n%recentN]
		if a.n != n || (a.tenant && a.stripe == ts) || (!a.tenant && a.stripe == us) {
			return false
		}
	}
	return true
}

// keySet returns the ways of the set publicID belongs to.
func (c *Cache) keySet(publicID []byte) []atomic.Pointer[KeyEntry] {
	i := int(maphash.Bytes(c.seed, publicID)%keySets) * keyWays
	return c.keys.slots[i : i+keyWays : i+keyWays]
}

// lookupKey returns the entry of publicID held in set, if any.
func lookupKey(set []atomic.Pointer[KeyEntry], publicID []byte) *KeyEntry {
	for i := range set {
		if e := set[i].Load(); e != nil && e.PublicID == string(publicID) {
			return e
		}
	}
	return nil
}

// storeKey puts e in its set: in place of the same key's entry, else in an
// empty way, else in place of the entry that expires first. It returns the
// entry it displaced (nil: the way was empty) and whether that was the
// same key's, as the swap itself read it: an entry a concurrent store put
// in the way meanwhile is displaced seen, its unreported use kept.
func storeKey(set []atomic.Pointer[KeyEntry], e *KeyEntry) (*KeyEntry, bool) {
	victim := 0
	for i := range set {
		old := set[i].Load()
		switch {
		case old != nil && old.PublicID == e.PublicID:
			return replaced(set[i].Swap(e), e)
		case old == nil:
			victim = i
			for j := i + 1; j < len(set); j++ { // the key may sit further on
				if o := set[j].Load(); o != nil && o.PublicID == e.PublicID {
					return replaced(set[j].Swap(e), e)
				}
			}
			return replaced(set[victim].Swap(e), e)
		case set[victim].Load() != nil && old.expires < set[victim].Load().expires:
			victim = i
		}
	}
	return replaced(set[victim].Swap(e), e)
}

func replaced(old, e *KeyEntry) (*KeyEntry, bool) {
	return old, old != nil && old.PublicID == e.PublicID
}

// validKey: within its time in the cache, nothing invalidated since it was
// fetched (user, tenant, key, everything), trusted while the feed is down.
// A refusal (e.err: revoked, expired or unknown) names no user or tenant,
// and no change of theirs undoes it: only the key's own invalidation and
// everything's end it before its time.
func (c *Cache) validKey(e *KeyEntry, now time.Time) bool {
	n := c.ticks(now)
	if e.err != nil {
		return n < e.expires && e.gens[2] == c.global.Load() && e.gens[3] == c.keys.key[e.ks].Load() &&
			c.freshAt(e.fetchedAt, n)
	}
	return n < e.expires &&
		e.gens == [4]uint64{c.user[e.us].Load(), c.tenant[e.ts].Load(), c.global.Load(), c.keys.key[e.ks].Load()} &&
		c.freshAt(e.fetchedAt, n)
}

// GetKey returns the entry of the API key whose whole text is key (its
// public id pid, its SHA-256 d), from the cache or coreapi. A cached key
// is checked by comparing d with the digest of the secret coreapi
// verified, in constant time: a warm key costs no fetch. A wrong secret
// for a cached key is refused without a fetch. key may alias request
// memory: it is not kept. clientIP is the address of the client whose
// request presented the key, told to coreapi when it is asked (the first
// of concurrent requests sharing a fetch names it); it may alias request
// memory too.
func (c *Cache) GetKey(ctx context.Context, key, pid []byte, d *[sha256.Size]byte, now time.Time, requestID, clientIP string) (*KeyEntry, error) {
	return c.GetKeyAdmitted(ctx, key, pid, d, now, requestID, clientIP, nil)
}

// Admission is asked by the request that resolves a key at coreapi (not
// by the requests that join its resolve) before the call; an error stops
// the resolve, and every request sharing it gets that error. done is
// called once the resolve is answered, unknown telling whether coreapi
// does not know the key.
type Admission func() (done func(unknown bool), err error)

// GetKeyAdmitted is GetKey whose resolve, if one is made, is first
// admitted by admit (nil: always).
func (c *Cache) GetKeyAdmitted(ctx context.Context, key, pid []byte, d *[sha256.Size]byte, now time.Time, requestID, clientIP string, admit Admission) (*KeyEntry, error) {
	if c.keys.f == nil {
		return nil, ErrKeysUnsupported
	}
	if e, err := c.CachedKey(pid, d, now); err != ErrKeyNotCached {
		return e, err
	}
	nowNs := now.UnixNano()
	set := c.keySet(pid)
	c.kc.Misses.Inc()
	ks := c.stripeBytes(pid)
	kg, gg, ut := c.keys.key[ks].Load(), c.global.Load(), c.keys.ut.Load()
	fk := string(pid) + hex.EncodeToString(d[:8]) + "." + strconv.FormatUint(kg, 36) + "." + strconv.FormatUint(gg, 36) + "." + strconv.FormatUint(ut, 36)
	res, err, _ := c.sf.Do(fk, func() (any, error) {
		// A fetch that ended between this request's lookup and its Do
		// has stored the entry: take it instead of fetching again.
		if e := lookupKey(set, pid); e != nil && c.validKey(e, c.opt.Now()) {
			return e, nil
		}
		if admit != nil {
			done, err := admit()
			if err != nil {
				return nil, err
			}
			unknown := false
			defer func() { done(unknown) }()
			e, err := c.resolveKey(ctx, key, pid, d, requestID, clientIP, set, ks, kg, gg, ut)
			unknown = errors.Is(err, ErrKeyUnknown) || err == nil && e.err == ErrKeyUnknown
			return e, err
		}
		return c.resolveKey(ctx, key, pid, d, requestID, clientIP, set, ks, kg, gg, ut)
	})
	if err != nil {
		return nil, err
	}
	e := res.(*KeyEntry)
	if e.err == ErrKeyUnknown {
		return nil, ErrKeyUnknown
	}
	return e.check(d, nowNs)
}

// resolveKey is GetKey's resolve at coreapi, made by one of the requests
// sharing it.
func (c *Cache) resolveKey(ctx context.Context, key, pid []byte, d *[sha256.Size]byte, requestID, clientIP string,
	set []atomic.Pointer[KeyEntry], ks int, kg, gg, ut uint64) (*KeyEntry, error) {
	if err := c.takeSlot(); err != nil {
		return nil, err
	}
	defer c.releaseSlot()
	fetchedAt := c.ticks(c.opt.Now())
	p, err := c.keys.f.FetchKey(context.WithoutCancel(ctx), key, requestID, clientIP)
	e := &KeyEntry{PublicID: string(pid), digest: *d, ks: ks, fetchedAt: fetchedAt, t: c.keys}
	ttl := c.opt.TTL
	switch {
	case err == nil:
		if err := e.fill(p); err != nil {
			c.m.ProjectionFetches.WithLabelValues("bad").Inc()
			return nil, err
		}
		c.m.ProjectionFetches.WithLabelValues("ok").Inc()
		e.us, e.ts = c.stripe(e.E.Sub), c.stripe(e.E.Tid)
	case errors.Is(err, ErrKeyUnknown), errors.Is(err, ErrKeyRevoked):
		c.m.ProjectionFetches.WithLabelValues("not_found").Inc()
		e.err = err
		ttl = c.opt.NegativeTTL
	case errors.Is(err, ErrWrongSecret):
		// Never cached: the right secret must still be resolved.
		c.m.ProjectionFetches.WithLabelValues("not_found").Inc()
		return nil, err
	default:
		c.m.ProjectionFetches.WithLabelValues("error").Inc()
		return nil, err
	}
	e.expires = fetchedAt + int64(jittered(ttl))
	e.gens = [4]uint64{c.user[e.us].Load(), c.tenant[e.ts].Load(), gg, kg}
	// A refusal is kept whatever users' and tenants' invalidations
	// came meanwhile (validKey): with the fleet's at a few hundred a
	// second, a leaked key's refusal was seldom kept, and the key
	// reached coreapi, its database and its audit log on almost every
	// request.
	// One landing after an invalidation that follows the check is kept,
	// but its generations, read before, no longer match (validKey).
	if ttl > 0 && c.keys.key[ks].Load() == kg && c.global.Load() == gg && (e.err != nil || c.keys.untouched(ut, e.us, e.ts)) {
		c.checked()
		switch old, same := storeKey(set, e); {
		case same:
			old.gone.Store(true)
			if old.used.Load() {
				e.used.Store(true) // a refill keeps the unreported use
			}
		case old != nil:
			c.keys.leave(old) // another key's entry, evicted
		}
	} else {
		e.gone.Store(true) // not kept: a use of it is held apart
	}
	return e, nil
}

// CachedKey is GetKey answered from the cache alone: ErrKeyNotCached
// where GetKey would ask coreapi.
func (c *Cache) CachedKey(pid []byte, d *[sha256.Size]byte, now time.Time) (*KeyEntry, error) {
	nowNs := now.UnixNano()
	if e := lookupKey(c.keySet(pid), pid); e != nil && c.validKey(e, now) {
		c.kc.Hits.Inc()
		return e.check(d, nowNs)
	}
	return nil, ErrKeyNotCached
}

// check answers a request presenting digest d to e.
func (e *KeyEntry) check(d *[sha256.Size]byte, now int64) (*KeyEntry, error) {
	if e.err == ErrKeyUnknown {
		return nil, ErrKeyUnknown
	}
	if subtle.ConstantTimeCompare(e.digest[:], d[:]) != 1 {
		return nil, ErrWrongSecret
	}
	if e.err != nil {
		return nil, e.err
	}
	if e.keyExpires != 0 && now >= e.keyExpires {
		return nil, ErrKeyRevoked
	}
	return e, nil
}

func (e *KeyEntry) fill(p *apikey.Projection) error {
	if !apikey.ValidPublicID(p.PublicID) || p.PublicID != e.PublicID {
		return fmt.Errorf("%w: API key %q answered for %q", ErrUpstream, p.PublicID, e.PublicID)
	}
	if !tokens.ValidID(p.UserID) || !tokens.ValidID(p.TenantID) || !tokens.ValidID(p.KeyID) {
		return fmt.Errorf("%w: API key %q of user %q in tenant %q", ErrUpstream, p.KeyID, p.UserID, p.TenantID)
	}
	ip := p.Projection
	ip.Roles = nil
	pe, err := newEntry(p.UserID, p.TenantID, &ip)
	if err != nil {
		return err
	}
	e.KeyID, e.Kind, e.E = p.KeyID, p.Kind, pe
	if p.ExpiresAt != nil {
		e.keyExpires = keyExpiry(*p.ExpiresAt)
	}
	// Synthetic claims: the acting user, and the key's id where a token
	// has its session (X-Auth-Session-Id of an api_key request names the
	// key, so an upstream's records say which key acted); a key is not
	// affected by the user's token version (sign-outs end sessions, not
	// keys) and carries no authentication methods. The key's projection
	// lists no revoked sessions, so its id is never taken for one.
	e.Token = tokens.NewEntry(&tokens.Claims{Sub: p.UserID, Tid: p.TenantID, Sid: p.KeyID, TV: math.MaxInt64})
	return nil
}

// lastNano is the latest time int64 unix nanoseconds hold (2262-04-11).
var lastNano = time.Unix(0, math.MaxInt64)

// keyExpiry is a key's expiry in unix nanoseconds, never 0 (which means
// "never"). coreapi accepts expiries up to the year 9999, past what
// UnixNano can count: it wrapped, so a key valid until 2300 or 9999 was
// taken as expired (or as expiring some other year) by every proxy. Such
// an expiry is later than any now the proxy can compare it with.
func keyExpiry(t time.Time) int64 {
	switch {
	case t.After(lastNano):
		return math.MaxInt64
	case !t.After(time.Unix(0, 0)):
		return 1 // long past
	}
	return t.UnixNano()
}

// MarkUsed records that e authenticated a request (reported to coreapi by
// ReportUsed). It writes only the first time between reports. The use of
// an entry out of the table is held apart (keyTable.leave).
func (e *KeyEntry) MarkUsed() {
	if e.used.Load() {
		return
	}
	e.used.Store(true)
	if e.gone.Load() && e.t != nil {
		e.t.pend(e.PublicID)
	}
}

// InvalidateAPIKey makes the key with this public id a miss.
func (c *Cache) InvalidateAPIKey(publicID string) { c.keys.key[c.stripe(publicID)].Add(1) }

func (c *Cache) stripeBytes(b []byte) int { return int(maphash.Bytes(c.seed, b) % stripes) }

// ReportUsed sends coreapi the public ids of the keys used since the last
// call (at most apikey.MaxUsedKeys per request): those of the table, and
// those whose entries left it meanwhile (held apart, up to maxPendingUses);
// run it about once a minute, and when KeyUseFull says. It returns how
// many keys it reported. The keys of a report that fails are kept for the
// next call: coreapi's last_used_at is how an admin tells a key in use (or
// a leaked one put to use) from one to revoke. Those of a report coreapi
// refuses for good (ErrReportRefused) are dropped and counted
// (authproxy_api_key_uses_refused_total), not held for a next call that
// would be refused the same, and the other reports still go out; the
// error returned is then the first refusal.
func (c *Cache) ReportUsed(ctx context.Context) (int, error) {
	if c.keys.f == nil {
		return 0, nil
	}
	held := c.keys.takePending()
	carry := make([]string, 0, len(held))
	for id := range held {
		carry = append(carry, id)
	}
	var ids []string
	var refused error
	n := 0
	report := func() error {
		err := c.keys.f.ReportUsed(ctx, ids)
		switch {
		case errors.Is(err, ErrReportRefused):
			c.m.APIKeyUsesRefused.Add(float64(len(ids)))
			if refused == nil {
				refused = fmt.Errorf("%w (%d key uses dropped)", err, len(ids))
			}
		case err != nil:
			for _, id := range ids {
				c.keys.pend(id)
			}
			return err
		default:
			n += len(ids)
		}
		ids = ids[:0]
		return nil
	}
	for i, id := range carry {
		ids = append(ids, id)
		if len(ids) == apikey.MaxUsedKeys {
			if err := report(); err != nil {
				for _, id := range carry[i+1:] {
					c.keys.pend(id)
				}
				return n, err
			}
		}
	}
	for i := range c.keys.slots {
		if e := c.keys.slots[i].Load(); e != nil && e.used.Load() && e.used.CompareAndSwap(true, false) {
			if _, ok := held[e.PublicID]; !ok {
				ids = append(ids, e.PublicID)
			}
		}
		if len(ids) == apikey.MaxUsedKeys || i == len(c.keys.slots)-1 && len(ids) > 0 {
			if err := report(); err != nil {
				return n, err
			}
		}
	}
	return n, refused
}

// KeyUseFull is signalled when the uses held apart from the table reach a
// report's worth (apikey.MaxUsedKeys): call ReportUsed before its time,
// so that none is dropped.
func (c *Cache) KeyUseFull() <-chan struct{} { return c.keys.uses.full }

// KeyUsesDropped is how many API-key uses went unreported since the cache
// was made because the set held apart from the table was full
// (authproxy_api_key_uses_dropped_total).
func (c *Cache) KeyUsesDropped() uint64 { return c.keys.uses.dropped.Load() }
