package tokens

import (
	"encoding/binary"
	"sync"
)

// storeShards splits a store so that fills and lookups of different
// tokens rarely share a lock.
const storeShards = 64

// store holds at most a fixed number of entries, each under its exact
// digest, and makes room with the CLOCK algorithm: a hit marks its entry
// referenced; to insert into a full shard the hand sweeps the shard's
// slots in insertion order, evicting the first entry that is expired or
// was not referenced since the hand last passed (and clearing the mark of
// those that were). Every entry offered is kept: there is no admission
// policy that may turn a new token away, so a working set that fits is
// held whole, and a burst of one-time tokens is swept out oldest first by
// the tokens that follow it, while tokens in use keep their place.
type store struct {
	shards    [storeShards]storeShard
	cap       int64
	evictions interface{ Inc() }
	// onEvict, when set, is told of every entry that leaves the store
	// (evicted, or replaced under its key), under its shard's lock.
	onEvict func(*Entry)
}

type storeShard struct {
	mu   sync.RWMutex
	m    map[uint64]*Entry // by the digest's first 64 bits; the full digest is compared on lookup
	ring []*Entry          // slots in insertion order, nil: free
	hand int
	n    int
	_    [64]byte // keep shards' locks on separate cache lines
}

// newStore returns a store of capacity entries (at least one a shard).
func newStore(capacity int64, evictions interface{ Inc() }) *store {
	s := &store{evictions: evictions}
	for i := range s.shards {
		n := capacity / storeShards
		if int64(i) < capacity%storeShards {
			n++
		}
		n = max(n, 1)
		s.cap += n
		s.shards[i].m = make(map[uint64]*Entry, min(n, 1024))
		s.shards[i].ring = make([]*Entry, n)
	}
	return s
}

func storeKey(d *Name) (shard int, k uint64) {
	return int(d[0] % storeShards), binary.LittleEndian.Uint64(d[0:8])
}

// get returns the entry of digest d, marked referenced; nil when none.
func (s *store) get(d *Name) *Entry {
	i, k := storeKey(d)
	sh := &s.shards[i]
	sh.mu.RLock()
	e := sh.m[k]
	sh.mu.RUnlock()
	if e == nil || e.digest != *d {
		return nil
	}
	e.touch()
	return e
}

// put stores e (replacing an entry under the same key), evicting one
// entry when its shard is full. now (unix nanos) tells expired entries.
func (s *store) put(e *Entry, now int64) {
	i, k := storeKey(&e.digest)
	sh := &s.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old := sh.m[k]; old != nil {
		e.slot = old.slot
		sh.ring[e.slot] = e
		sh.m[k] = e
		if s.onEvict != nil {
			s.onEvict(old)
		}
		return
	}
	for {
		cur := sh.ring[sh.hand]
		if cur == nil {
			break
		}
		if cur.ref.Load() == 0 || now >= cur.expires {
			delete(sh.m, binary.LittleEndian.Uint64(cur.digest[0:8]))
			sh.n--
			s.evictions.Inc()
			if s.onEvict != nil {
				s.onEvict(cur)
			}
			break
		}
		cur.ref.Store(0)
		sh.hand = (sh.hand + 1) % len(sh.ring)
	}
	e.slot = int32(sh.hand)
	sh.ring[sh.hand] = e
	sh.m[k] = e
	sh.n++
	sh.hand = (sh.hand + 1) % len(sh.ring)
}

// len is the number of entries held.
func (s *store) len() int64 {
	var n int64
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += int64(sh.n)
		sh.mu.RUnlock()
	}
	return n
}

// capacity is the number of entries the store holds at most.
func (s *store) capacity() int64 { return s.cap }

// clear drops every entry.
func (s *store) clear() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		clear(sh.m)
		clear(sh.ring)
		sh.n, sh.hand = 0, 0
		sh.mu.Unlock()
	}
}

// touch marks e referenced; written only when it was not, so a hot entry's
// cache line is not written on every hit.
func (e *Entry) touch() {
	if e.ref.Load() == 0 {
		e.ref.Store(1)
	}
}
