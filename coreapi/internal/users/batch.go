package users

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tollgate-auth/tollgate/shared/logging"
)

// batchTimeout bounds each shared round trip. It carries several
// requests' reads, so no one request's deadline ends it (each read's
// caller waits for it only until its own); but a PostgreSQL that stops
// answering cannot hold a runner's slot for good.
const batchTimeout = 30 * time.Second

// reply is where a queued read is answered: each kind of read embeds it
// beside its own result fields, which are set before done is closed.
type reply struct {
	err  error
	done chan struct{}
}

func newReply() reply { return reply{done: make(chan struct{})} }

func (r *reply) answer() *reply { return r }

// fail answers the read with err, unless it is answered already.
func (r *reply) fail(err error) {
	select {
	case <-r.done:
	default:
		r.err = err
		close(r.done)
	}
}

// batcher coalesces concurrent reads of one kind into shared round trips,
// without waiting: a read goes out at once, alone, while fewer than
// runners round trips of its kind are in flight and none is queued;
// otherwise it queues, and the next round trip carries every queued read
// (up to maxBatch) in one statement. An idle server answers as before;
// batches form only when reads arrive faster than PostgreSQL answers them.
// For a read by key most of PostgreSQL's CPU is the round trip itself
// (waking the backend, a receive, a send), and so is much of coreapi's (the
// write to PostgreSQL and the read of its answer).
// Fewer runners make bigger batches, and so fewer round trips; but one
// round trip that hangs (a connection that stopped answering) would hold
// every read of its kind behind it. So a read that arrives when no round
// trip of the batcher has started or ended for stallAfter may start one of
// extra runners beyond runners, which carries what is queued: a hung round
// trip then delays the others by about stallAfter (under load reads keep
// arriving), not by batchTimeout.
// A read is a *T that carries a reply (P: T's pointer type).
type batcher[T any, P interface {
	*T
	answer() *reply
}] struct {
	runners  int
	maxBatch int
	// extra runners may start once nothing moved for stallAfter (0: none).
	extra      int
	stallAfter time.Duration
	clock      func() time.Time // time.Now when nil (tests set it)
	// send makes one round trip for batch and answers every read in it.
	send func(ctx context.Context, batch []*T)

	mu       sync.Mutex
	pending  []*T
	running  int
	spare    []*T      // a batch slice to reuse
	progress time.Time // when a round trip last started or ended (with extra)
}

func (b *batcher[T, P]) now() time.Time {
	if b.clock != nil {
		return b.clock()
	}
	return time.Now()
}

// free reports whether a runner may start now, and takes its slot; b.mu
// is held.
func (b *batcher[T, P]) free() bool {
	if b.running >= b.runners && (b.running >= b.runners+b.extra || b.now().Sub(b.progress) < b.stallAfter) {
		return false
	}
	b.running++
	b.moved()
	return true
}

// moved records that a round trip started or ended (only kept with extra
// runners).
func (b *batcher[T, P]) moved() {
	if b.extra > 0 {
		b.progress = b.now()
	}
}

// alone reports whether the caller may send its read alone now; it then
// holds a runner's slot until it calls finish.
func (b *batcher[T, P]) alone() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending) == 0 && b.free()
}

// queue adds c to the next batch. When a runner's slot is free it starts
// that runner, in a goroutine of its own as finish does, which sends what
// is queued. The caller then waits for c's reply, or for its request's
// deadline: a batch carries other reads and waits up to batchTimeout for
// its round trip, which is no deadline of the caller's (a caller that sent
// it itself answered its request only when the round trip ended).
func (b *batcher[T, P]) queue(c *T) {
	b.mu.Lock()
	b.pending = append(b.pending, c)
	lead := b.free()
	b.mu.Unlock()
	if lead {
		go b.run(context.Background())
	}
}

// finish is called by a runner whose own read is answered: with reads
// queued meanwhile it keeps its slot and sends them in a goroutine of its
// own, so that the request it served is not held by the others' reads.
// Those round trips belong to no request: they are in no request's
// db_queries or trace (the reads they carry count none).
func (b *batcher[T, P]) finish() {
	b.mu.Lock()
	b.moved()
	if len(b.pending) == 0 {
		b.running--
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	go b.run(context.Background())
}

// run sends queued reads, a batch per round trip, until none is queued,
// then gives its runner's slot back.
func (b *batcher[T, P]) run(ctx context.Context) {
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		n := min(len(b.pending), b.maxBatch)
		batch := append(b.spare[:0], b.pending[:n]...)
		b.spare = nil
		rest := copy(b.pending, b.pending[n:])
		clear(b.pending[rest:])
		b.pending = b.pending[:rest]
		b.mu.Unlock()

		b.sendBounded(ctx, batch)

		clear(batch)
		b.mu.Lock()
		b.spare = batch[:0]
		b.moved()
		b.mu.Unlock()
	}
}

// sendBounded is send within batchTimeout. A panic in send answers every
// read of the batch not yet answered with an error, instead of leaving
// them, and the runner's slot, waiting for good. The error carries the
// panic's value redacted and cut (logging.Redact), as a recovered panic
// is logged: each read's request logs it as its error.
func (b *batcher[T, P]) sendBounded(ctx context.Context, batch []*T) {
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err := errors.New("users: batched read failed: " + logging.Redact(fmt.Sprint(r)))
			for _, c := range batch {
				P(c).answer().fail(err)
			}
		}
	}()
	b.send(ctx, batch)
}
