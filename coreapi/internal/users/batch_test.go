package users

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/logging"
)

// testCall is a read for the batcher alone, without a database.
type testCall struct{ reply }

func newTestBatcher(send func(context.Context, []*testCall)) *batcher[testCall, *testCall] {
	return &batcher[testCall, *testCall]{runners: 1, maxBatch: 8, send: send}
}

// queueAll queues calls while the only runner's slot is held, then lets
// the holder finish, which sends them as one batch.
func queueAll(t *testing.T, b *batcher[testCall, *testCall], n int) []*testCall {
	t.Helper()
	if !b.alone() {
		t.Fatal("an idle batcher refused a read alone")
	}
	calls := make([]*testCall, n)
	for i := range calls {
		calls[i] = &testCall{newReply()}
		b.queue(calls[i]) // the slot is held: queued only
	}
	b.finish()
	for _, c := range calls {
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Fatal("a queued read was never answered")
		}
	}
	return calls
}

// A batch whose round trip panics answers each of its reads with an error
// and frees its runner's slot: later reads are not left waiting.
func TestBatcherPanicAnswersEveryRead(t *testing.T) {
	panicked := false
	b := newTestBatcher(func(_ context.Context, batch []*testCall) {
		if !panicked {
			panicked = true
			panic("decoder bug")
		}
		for _, c := range batch {
			close(c.done)
		}
	})
	for _, c := range queueAll(t, b, 3) {
		if c.err == nil || !strings.Contains(c.err.Error(), "decoder bug") {
			t.Fatalf("read of the panicked batch: err %v", c.err)
		}
	}
	waitState(t, b, 0, 0)
	for _, c := range queueAll(t, b, 2) {
		if c.err != nil {
			t.Fatalf("read after the panic: %v", c.err)
		}
	}
}

// A panic's value may quote a request (a credential in a formatted error)
// and be of any size: the error each read of the batch gets, which its
// request logs, carries it redacted and cut, as a recovered panic is
// logged.
func TestBatcherPanicValueIsRedacted(t *testing.T) {
	const token = "eyJhbGciOiJFZERTQSJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"
	b := newTestBatcher(func(context.Context, []*testCall) {
		panic(fmt.Errorf("decoder bug for Authorization: Bearer %s %s", token, strings.Repeat("x", 10<<10)))
	})
	const prefix = "users: batched read failed: "
	for _, c := range queueAll(t, b, 2) {
		msg := c.err.Error()
		if strings.Contains(msg, token) || !strings.HasPrefix(msg, prefix+"decoder bug for Authorization: Bearer [redacted] xxx") {
			t.Errorf("read of the panicked batch: err %.200q..., want the value redacted", msg)
		}
		if limit := len(prefix) + logging.MaxRedactedBytes + len("..."); len(msg) > limit {
			t.Errorf("err of %d bytes, want at most %d", len(msg), limit)
		}
	}
}

// A shared round trip ends by batchTimeout whatever its reads' requests
// do: its context has a deadline, and no request's cancellation.
func TestBatcherRoundTripBounded(t *testing.T) {
	var deadline time.Time
	var hasDeadline bool
	b := newTestBatcher(func(ctx context.Context, batch []*testCall) {
		deadline, hasDeadline = ctx.Deadline()
		for _, c := range batch {
			close(c.done)
		}
	})
	start := time.Now()
	queueAll(t, b, 2)
	if !hasDeadline || deadline.Before(start) || deadline.After(time.Now().Add(batchTimeout)) {
		t.Fatalf("round trip deadline %v (set %v)", deadline, hasDeadline)
	}
	waitState(t, b, 0, 0)
}

// waitState waits until b has running runners and pending queued reads.
func waitState[T any, P interface {
	*T
	answer() *reply
}](t *testing.T, b *batcher[T, P], running, pending int) {
	t.Helper()
	for n := 0; ; n++ {
		b.mu.Lock()
		r, q := b.running, len(b.pending)
		b.mu.Unlock()
		if r == running && q == pending {
			return
		}
		if n > 50_000_000 {
			t.Fatalf("batcher: %d running, %d pending; want %d and %d", r, q, running, pending)
		}
		runtime.Gosched()
	}
}

// Only a UUID in its 36-character form (either case) is batched; any
// other spelling PostgreSQL or uuid.Parse may accept is read alone, so
// that PostgreSQL answers it as it always did.
func TestCanonicalUUID(t *testing.T) {
	const id = "0193a1f2-7c4d-7e0a-9b1c-5d2e8f3a6b10"
	for _, ok := range []string{id, strings.ToUpper(id)} {
		if k, err := canonicalUUID(ok); err != nil || k[0] != 0x01 || k[15] != 0x10 {
			t.Errorf("%q: %x, %v", ok, k, err)
		}
	}
	for _, bad := range []string{"", "0193a1f27c4d7e0a9b1c5d2e8f3a6b10", "{" + id + "}", "urn:uuid:" + id, id[:35] + "g", " " + id[1:]} {
		if _, err := canonicalUUID(bad); err == nil {
			t.Errorf("%q batched", bad)
		}
	}
}

// With extra runners, a read that arrives while the only runner's round
// trip is in flight queues for it, until that round trip has gone on for
// stallAfter without anything else moving: then the read starts a runner
// of its own, which carries what is queued, and a hung round trip holds
// the others for stallAfter, not batchTimeout. Once the runners are done
// the slots are free again, and the next read goes alone.
func TestBatcherExtraRunnerAfterAStall(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var batches [][]*testCall
	b := newTestBatcher(func(_ context.Context, batch []*testCall) {
		batches = append(batches, append([]*testCall(nil), batch...))
		for _, c := range batch {
			close(c.done)
		}
	})
	b.extra, b.stallAfter, b.clock = 1, 50*time.Millisecond, clock

	if !b.alone() { // the round trip that hangs: its slot is held
		t.Fatal("an idle batcher refused a read alone")
	}
	first := &testCall{newReply()}
	advance(49 * time.Millisecond)
	b.queue(first) // not yet a stall: queued only
	waitState(t, b, 1, 1)
	if b.alone() {
		t.Fatal("a read went alone before the round trip in flight stalled")
	}

	advance(time.Millisecond) // stallAfter since the hung round trip started
	second := &testCall{newReply()}
	b.queue(second) // starts the extra runner, sends both
	for _, c := range []*testCall{first, second} {
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Fatal("a queued read waited for the hung round trip")
		}
	}
	if len(batches) != 1 || len(batches[0]) != 2 {
		t.Fatalf("batches %v, want one of the two queued reads", batches)
	}
	waitState(t, b, 1, 0) // the hung one still holds its slot
	third := &testCall{newReply()}
	b.queue(third) // the extra runner just moved: queued
	waitState(t, b, 1, 1)

	b.finish() // the hung round trip ends: its runner sends what is queued
	select {
	case <-third.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the read queued behind the hung round trip was never sent")
	}
	waitState(t, b, 0, 0)
	if !b.alone() {
		t.Fatal("the idle batcher refused a read alone")
	}
	b.finish()
	waitState(t, b, 0, 0)
}

// Without extra runners, no stall lets a read past the runners' slots.
func TestBatcherNoExtraRunnerByDefault(t *testing.T) {
	b := newTestBatcher(func(_ context.Context, batch []*testCall) {
		for _, c := range batch {
			close(c.done)
		}
	})
	if !b.alone() {
		t.Fatal("an idle batcher refused a read alone")
	}
	time.Sleep(2 * time.Millisecond)
	c := &testCall{newReply()}
	b.queue(c)
	waitState(t, b, 1, 1)
	b.finish()
	<-c.done
	waitState(t, b, 0, 0)
}

// Extra runners are bounded: with the runner and the extra one both held,
// however long nothing moves, a read queues.
func TestBatcherExtraRunnersBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := newTestBatcher(func(_ context.Context, batch []*testCall) {
		for _, c := range batch {
			close(c.done)
		}
	})
	b.extra, b.stallAfter, b.clock = 1, 50*time.Millisecond, func() time.Time { return now }
	if !b.alone() {
		t.Fatal("an idle batcher refused a read alone")
	}
	now = now.Add(50 * time.Millisecond)
	if !b.alone() {
		t.Fatal("the extra runner did not start after a stall")
	}
	now = now.Add(time.Hour)
	c := &testCall{newReply()}
	b.queue(c)
	waitState(t, b, 2, 1)
	b.finish() // one held round trip ends: its runner sends the queued read
	<-c.done
	waitState(t, b, 1, 0)
	b.finish()
	waitState(t, b, 0, 0)
}
