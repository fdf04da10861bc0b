// Package replay remembers the v2 identity signatures a service accepted
// until their timestamp leaves the window, so that a captured request sent
// again unchanged is refused (identity.ErrReplayed). A signature covers the
// request id, the timestamp, the method, path and body digest, so the same
// signature can only come from the same bytes sent again: authproxy signs
// every request it forwards anew.
//
// Only signatures that verified may be recorded: nobody without the key can
// then choose what is remembered (no flooding, no collisions on purpose).
// coreapi and the app SDKs (package verify and fiberid) check with a Cache
// after the signature verified.
//
// The memory is per process: a replica does not know what another one
// accepted (see docs/security.md, "Replayed requests").
package replay

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// DefaultSize is how many accepted signatures a Cache remembers when New
// is given 0: 16 MiB, enough for some 7,000 signed requests a second with
// the 30 s window (under 0.1 % of them forgotten early).
//
// A key can live only in the eight slots of its bucket, so buckets fill
// long before the table does: the share forgotten early depends on the
// load (live signatures, rate × window, per slot): about 0.02 % at 0.2,
// 0.1 % at 0.25, 1.3 % at 0.4, 4 % at 0.5, 35 % at 0.9
// (TestDefaultSizeHoldsTheDocumentedRate, TestSizingRule). Size a Cache at
// 5 × rate × window slots. At 262,144 slots (4 MiB), said to hold 8,000 a
// second, that rate lost 36 %.
const DefaultSize = 1 << 20

// MaxSize is the most slots a Cache is given by those that take its size
// from a setting (verify.Config.ReplayCacheSize, coreapi's
// IDENTITY_REPLAY_CACHE_SIZE): 16 GiB, allocated whole by New, which a
// mistyped size would otherwise ask for at start.
const MaxSize = 1 << 30

// shards spreads the lock; ways is the size of a bucket.
const (
	shards = 32
	ways   = 8
)

// Key identifies one accepted signature: the first 64 bits of its HMAC. By
// chance, two of a full cache's live signatures share 64 bits with a
// probability below 1e-8 (the second of them is then refused).
type Key uint64

// Cache remembers accepted signatures until they expire. It is safe for
// concurrent use.
//
// It is a fixed, set-associative table: a key can live only in the eight
// slots of its bucket, and a slot whose entry has expired is free. Memory
// is fixed at 16 bytes a slot, allocated by New; nothing is ever deleted or
// rehashed, and a check reads two cache lines under one of 32 locks. When
// all eight slots of a bucket hold live entries, the one closest to expiry
// is forgotten early (counted by Evicted): a replay of that request is then
// accepted. That happens well before every slot is live: see DefaultSize
// for the load a Cache takes.
type Cache struct {
	shards  [shards]shard
	evicted atomic.Uint64
}

type shard struct {
	mu      sync.Mutex
	buckets [][ways]entry
}

type entry struct {
	key Key
	exp int64 // unix ms after which the signature is stale anyway; 0: empty
}

// New returns a Cache of size slots: 0 (or less) selects DefaultSize;
// others are rounded down to a multiple of 256 (32 shards of buckets of
// 8), at least 256.
func New(size int) *Cache {
	if size <= 0 {
		size = DefaultSize
	}
	per := max(size/(shards*ways), 1)
	c := &Cache{}
	for i := range c.shards {
		c.shards[i].buckets = make([][ways]entry, per)
	}
	return c
}

// Size is how many signatures the cache can hold.
func (c *Cache) Size() int { return shards * ways * len(c.shards[0].buckets) }

// Evicted counts the signatures forgotten before they expired because
// their bucket was full of live ones: a service that sees it grow needs a
// larger cache.
func (c *Cache) Evicted() uint64 { return c.evicted.Load() }

// FirstUse records key until exp (unix ms) and reports whether it was new;
// false means the signature was seen before: a replay. now (unix ms) must
// be the time the signature's timestamp was checked against, so that an
// entry is live for as long as its signature is.
func (c *Cache) FirstUse(key Key, exp, now int64) bool {
	s := &c.shards[uint64(key)%shards]
	h := uint64(key) / shards
	s.mu.Lock()
	b := &s.buckets[h%uint64(len(s.buckets))]
	free, oldest := -1, -1
	oldestExp := int64(math.MaxInt64)
	for i := range b {
		e := &b[i]
		switch {
		case e.exp < now: // empty or expired
			if free < 0 {
				free = i
			}
		case e.key == key:
			s.mu.Unlock()
			return false
		case e.exp < oldestExp:
			oldest, oldestExp = i, e.exp
		}
	}
	if free < 0 {
		free = oldest
		c.evicted.Add(1)
	}
	b[free] = entry{key: key, exp: exp}
	s.mu.Unlock()
	return true
}

// Check records a v2 signature that verified at now, signature and
// timestamp being its X-Auth-Signature and X-Auth-Timestamp values and
// window the verifier's: it is remembered until its timestamp leaves the
// window. It returns identity.ErrReplayed when the signature was accepted
// before and is still remembered, identity.ErrMalformed when the values
// are not those of a v2 signature (Check does not verify anything: call
// it only once the signature verified).
func (c *Cache) Check(signature, timestamp string, window time.Duration, now time.Time) error {
	return c.check(identity.VersionV2, signature, timestamp, window, now)
}

// CheckV1 is Check for a v1 signature ("v1=" and the base64url HMAC), which
// coreapi accepts for one release (IDENTITY_ACCEPT_V1). v1 signs neither a
// request id nor the body, so two identical requests a v1 proxy signs in
// the same millisecond share a signature and the second reads as a replay;
// a captured one sent again, with any body, is refused.
func (c *Cache) CheckV1(signature, timestamp string, window time.Duration, now time.Time) error {
	return c.check(identity.Version, signature, timestamp, window, now)
}

func (c *Cache) check(version, signature, timestamp string, window time.Duration, now time.Time) error {
	key, ok := versionKey(version, signature)
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if !ok || err != nil {
		return identity.ErrMalformed
	}
	if !c.FirstUse(key, ts+window.Milliseconds(), now.UnixMilli()) {
		return identity.ErrReplayed
	}
	return nil
}

// KeyOf returns the key of a v2 X-Auth-Signature value ("v2=" and the
// base64url HMAC), and false when the value does not start like one.
func KeyOf(signature string) (Key, bool) {
	return versionKey(identity.VersionV2, signature)
}

// versionKey is KeyOf for a signature of version ("v1" or "v2"): the two
// HMACs are over canonical strings that differ from their first line.
func versionKey(version, signature string) (Key, bool) {
	n := len(version) + 1 // and "="
	// 12 characters are 9 bytes; the key is the first 8.
	if len(signature) < n+12 || !strings.HasPrefix(signature, version) || signature[n-1] != '=' {
		return 0, false
	}
	var b [9]byte
	if _, err := base64.RawURLEncoding.Decode(b[:], []byte(signature[n:n+12])); err != nil {
		return 0, false
	}
	return Key(binary.LittleEndian.Uint64(b[:8])), true
}

// live counts the entries not expired at now (tests).
func (c *Cache) live(now int64) int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for _, b := range s.buckets {
			for _, e := range b {
				if e.exp >= now {
					n++
				}
			}
		}
		s.mu.Unlock()
	}
	return n
}
