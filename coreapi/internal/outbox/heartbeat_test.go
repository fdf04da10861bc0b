package outbox

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// TestBeatWritesOneHeartbeatPerInterval: a heartbeat row is written when
// there is none, or when the newest is older than the interval and
// published; never while the newest is young, or old but still pending
// (no relay could publish it: no pile-up for when one can).
func TestBeatWritesOneHeartbeatPerInterval(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{Heartbeat: time.Minute})
	ctx := context.Background()
	beat := func(want bool, when string) {
		t.Helper()
		wrote, err := r.Beat(ctx)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if wrote != want {
			t.Fatalf("%s: wrote %v, want %v", when, wrote, want)
		}
	}
	age := func(d time.Duration) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET created_at = created_at - make_interval(secs => $1) WHERE subject = $2`,
			d.Seconds(), invalidation.SubjectHeartbeat); err != nil {
			t.Fatal(err)
		}
	}
	beat(true, "no heartbeat yet")
	beat(false, "the newest pending and young")
	age(2 * time.Minute)
	beat(false, "the newest pending and old")
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	beat(true, "the newest published and old")
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	beat(false, "the newest published and young")
	var rows, pending int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox WHERE subject = $1`,
		invalidation.SubjectHeartbeat).Scan(&rows, &pending); err != nil {
		t.Fatal(err)
	}
	if rows != 2 || pending != 0 {
		t.Fatalf("%d heartbeat rows, %d pending; want 2, 0", rows, pending)
	}
}

// TestBeatDueAtTheNextTick: a relay looks every interval, and the row it
// wrote at one tick is due at the next even when that tick's statement
// starts a little sooner after the write than the interval (the write was
// held up by a drain, the database answered faster): it is due once three
// quarters of the interval have passed. Due only at the full interval, it
// was written at every other tick about half the time, one relay's
// heartbeats coming two intervals apart (12 in 4 s at 200 ms).
func TestBeatDueAtTheNextTick(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{Heartbeat: time.Minute})
	ctx := context.Background()
	setAge := func(d time.Duration) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET created_at = now() - make_interval(secs => $1) WHERE subject = $2`,
			d.Seconds(), invalidation.SubjectHeartbeat); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		age  time.Duration
		want bool
	}{{0, false}, {30 * time.Second, false}, {44 * time.Second, false}, {46 * time.Second, true}, {59 * time.Second, true}} {
		if _, err := db.Pool.Exec(ctx, `DELETE FROM outbox`); err != nil {
			t.Fatal(err)
		}
		if wrote, err := r.Beat(ctx); err != nil || !wrote {
			t.Fatalf("first heartbeat: %v, %v", wrote, err)
		}
		if err := r.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		setAge(c.age)
		wrote, err := r.Beat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if wrote != c.want {
			t.Fatalf("newest published %s ago, interval 1m: wrote %v, want %v", c.age, wrote, c.want)
		}
	}
}

// TestRelayPublishesHeartbeats: a running relay with a heartbeat interval
// writes heartbeat rows and publishes them on auth.outbox.heartbeat, with
// the row's creation time and its id; without one it writes none.
func TestRelayPublishesHeartbeats(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	got := make(chan *nats.Msg, 64)
	sub := connect(t, ns.ClientURL())
	if _, err := sub.Subscribe(invalidation.SubjectHeartbeat, func(m *nats.Msg) {
		select {
		case got <- m:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}

	startRelay(t, db.Pool, connect(t, ns.ClientURL()), RelayOptions{Poll: 20 * time.Millisecond})
	time.Sleep(300 * time.Millisecond)
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.SubjectHeartbeat).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d heartbeat rows (%v) from a relay without a heartbeat interval, want 0", n, err)
	}

	start := time.Now()
	startRelay(t, db.Pool, connect(t, ns.ClientURL()), RelayOptions{Poll: time.Hour, Heartbeat: 50 * time.Millisecond})
	for i := range 3 {
		select {
		case m := <-got:
			var ev invalidation.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil || ev.At < start.Add(-time.Second).UnixMilli() {
				t.Fatalf("heartbeat %d: body %s (%v), want the row's creation time", i, m.Data, err)
			}
			if m.Header.Get(MsgIDHeader) == "" {
				t.Fatalf("heartbeat %d without %s", i, MsgIDHeader)
			}
		case <-time.After(wait):
			t.Fatalf("%d heartbeats in %s, want 3", i, wait)
		}
	}
}
