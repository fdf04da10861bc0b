package httpapi

import (
	"math"
	"sync"
	"sync/atomic"
)

// DefaultReplayCacheSize is how many accepted signatures a replica
// remembers when Options.ReplayCacheSize is 0: 4 MB, enough for some 8,000
// signed requests a second with the 30 s window before entries start to be
// forgotten early.
const DefaultReplayCacheSize = 1 << 18

// replayShards spreads the lock; replayWays is the size of a bucket.
const (
	replayShards = 32
	replayWays   = 8
)

// replayKey identifies one accepted signature: the first 64 bits of its
// HMAC. Only signatures that verified are remembered, so nobody without
// the key can choose keys (no flooding, no collisions on purpose); by
// chance, two of a full cache's live signatures share 64 bits with a
// probability below 1e-8.
type replayKey uint64

// replayCache remembers the v2 signatures coreapi accepted until their
// timestamp leaves the window, so that a captured request sent again is
// refused. A signature covers the request id, the timestamp, the method,
// path and body digest, so the same bytes can only be a replay.
//
// It is a fixed, set-associative table: a key can live only in the eight
// slots of its bucket, and a slot whose entry has expired is free. Memory
// is fixed at 16 bytes a slot, nothing is ever deleted or rehashed, and a
// check reads two cache lines. When all eight slots of a bucket hold live
// entries, the one closest to expiry is forgotten early (counted in
// evicted). It is per process: see docs/security.md for why the replicas
// do not share it.
type replayCache struct {
	shards  [replayShards]replayShard
	evicted atomic.Uint64
}

type replayShard struct {
	mu      sync.Mutex
	buckets [][replayWays]replayEntry
}

type replayEntry struct {
	key replayKey
	exp int64 // unix ms after which the signature is stale anyway; 0: empty
}

func newReplayCache(size int) *replayCache {
	if size <= 0 {
		size = DefaultReplayCacheSize
	}
	per := max(size/(replayShards*replayWays), 1)
	c := &replayCache{}
	for i := range c.shards {
		c.shards[i].buckets = make([][replayWays]replayEntry, per)
	}
	return c
}

// firstUse records key until exp (unix ms) and reports whether it was new;
// false means the signature was seen before: a replay. now (unix ms) must
// be the time the signature's timestamp was checked against, so that an
// entry is live for as long as its signature is.
func (c *replayCache) firstUse(key replayKey, exp, now int64) bool {
	s := &c.shards[uint64(key)%replayShards]
	h := uint64(key) / replayShards
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
	b[free] = replayEntry{key: key, exp: exp}
	s.mu.Unlock()
	return true
}

// live counts the entries not expired at now (tests).
func (c *replayCache) live(now int64) int {
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
