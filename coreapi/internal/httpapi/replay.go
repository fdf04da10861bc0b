package httpapi

import (
	"sync"
	"sync/atomic"
)

// DefaultReplayCacheSize is how many accepted signatures a replica
// remembers when Options.ReplayCacheSize is 0: about 14 MB, enough for
// some 8,000 signed requests a second with the 30 s window before the
// oldest are forgotten early.
const DefaultReplayCacheSize = 1 << 18

// replayShards spreads the lock; a power of two.
const replayShards = 32

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
// Memory is bounded: each shard keeps a fixed ring of entries in arrival
// order; when it is full the oldest entry is forgotten before its time
// (counted in evicted). It is per process: see docs/security.md for why
// the replicas do not share it.
type replayCache struct {
	shards  [replayShards]replayShard
	evicted atomic.Uint64
}

type replayShard struct {
	mu   sync.Mutex
	seen map[replayKey]struct{}
	ring []replayEntry // FIFO of what seen holds, oldest at head
	head int
	n    int
}

type replayEntry struct {
	key replayKey
	exp int64 // unix ms after which the signature is stale anyway
}

func newReplayCache(size int) *replayCache {
	if size <= 0 {
		size = DefaultReplayCacheSize
	}
	per := max(size/replayShards, 1)
	c := &replayCache{}
	for i := range c.shards {
		c.shards[i].seen = make(map[replayKey]struct{}, per)
		c.shards[i].ring = make([]replayEntry, per)
	}
	return c
}

// firstUse records key until exp (unix ms) and reports whether it was new;
// false means the signature was seen before: a replay. now is unix ms.
func (c *replayCache) firstUse(key replayKey, exp, now int64) bool {
	s := &c.shards[key%replayShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.seen[key]; dup {
		return false
	}
	// Forget what expired; entries arrive roughly in timestamp order, so
	// looking at the head is enough to keep the ring from filling.
	for s.n > 0 && s.ring[s.head].exp < now {
		s.pop()
	}
	if s.n == len(s.ring) {
		s.pop()
		c.evicted.Add(1)
	}
	s.ring[(s.head+s.n)%len(s.ring)] = replayEntry{key: key, exp: exp}
	s.n++
	s.seen[key] = struct{}{}
	return true
}

func (s *replayShard) pop() {
	delete(s.seen, s.ring[s.head].key)
	s.head = (s.head + 1) % len(s.ring)
	s.n--
}

// len is the number of remembered signatures.
func (c *replayCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}
