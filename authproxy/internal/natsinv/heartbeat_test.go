package natsinv

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// downRecorder notes where each bounded staleness was put to start.
type downRecorder struct {
	*recorder
	mu    sync.Mutex
	downs []time.Time
}

func (d *downRecorder) Disconnected(at time.Time) {
	d.recorder.Disconnected(at)
	d.mu.Lock()
	d.downs = append(d.downs, at)
	d.mu.Unlock()
}

func (d *downRecorder) lastDown() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.downs[len(d.downs)-1]
}

// beats publishes a heartbeat every 20 ms until stop is called, which
// returns when the last one was published.
func beats(t *testing.T, nc *nats.Conn) (stop func() time.Time) {
	t.Helper()
	return every20ms(t, nc, invalidation.SubjectHeartbeat, []byte(`{"at":1}`))
}

// every20ms publishes body on subject every 20 ms until stop is called
// (at the latest when the test ends), which returns when the last one was
// published (the zero time when called again).
func every20ms(t *testing.T, nc *nats.Conn, subject string, body []byte) (stop func() time.Time) {
	t.Helper()
	done, last := make(chan struct{}), make(chan time.Time, 1)
	go func() {
		var at time.Time
		for {
			at = time.Now()
			if err := nc.Publish(subject, body); err != nil {
				t.Errorf("publish %s: %v", subject, err)
			}
			_ = nc.Flush()
			select {
			case <-done:
				last <- at
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var once atomic.Bool
	stop = func() time.Time {
		if once.CompareAndSwap(false, true) {
			close(done)
			return <-last
		}
		return time.Time{}
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestHeartbeatSilenceIsAnOutage: a connected feed that brings no outbox
// heartbeat for HeartbeatTimeout puts the caches in bounded staleness,
// counted from the last heartbeat (coreapi's relays may not be publishing
// although NATS is up for the proxy); the next heartbeat ends it with a
// purge, as a reconnection does (TestHeartbeatAfterSilencePurges). A NATS
// reconnection purges as ever and waits for a heartbeat afresh.
func TestHeartbeatSilenceIsAnOutage(t *testing.T) {
	n := testenv.StartNATS(t)
	r := &downRecorder{recorder: newRecorder(t)}
	m := metrics.New()
	const timeout = 600 * time.Millisecond
	s, pub := connectWithPublisher(t, n, Options{HeartbeatTimeout: timeout, DropCheck: 10 * time.Millisecond}, r, m)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })

	// Heartbeats keep the feed trusted well past the timeout.
	stop := beats(t, pub)
	time.Sleep(2 * timeout)
	if r.BoundedStaleness() || testutil.ToFloat64(m.FeedStale) != 0 {
		t.Fatal("stale while heartbeats arrive")
	}
	last := stop()
	testenv.Eventually(t, func() error { return testenv.Want("bounded staleness", r.BoundedStaleness(), true) })
	if at := r.lastDown(); at.Before(last) || at.After(last.Add(timeout)) {
		t.Fatalf("staleness counted from %s, want the last heartbeat's arrival (published %s)", at.Format(time.StampMicro), last.Format(time.StampMicro))
	}
	if testutil.ToFloat64(m.FeedStale) != 1 || testutil.ToFloat64(m.NATSConnected) != 1 {
		t.Fatal("authproxy_invalidation_feed_stale not 1, or authproxy_nats_connected not 1")
	}

	// A heartbeat ends it with one purge, and the heartbeats after it
	// purge no more.
	reconnects, _ := r.count()
	stop = beats(t, pub)
	testenv.Eventually(t, func() error { return testenv.Want("bounded staleness", r.BoundedStaleness(), false) })
	time.Sleep(timeout / 2)
	if rc, _ := r.count(); rc != reconnects+1 || testutil.ToFloat64(m.FeedStale) != 0 {
		t.Fatalf("heartbeats back with %d purges (feed stale %v), want 1 and 0", rc-reconnects, testutil.ToFloat64(m.FeedStale))
	}
	stop()
	reconnects++

	// Stale again, then NATS restarts: the reconnection purges and clears
	// the staleness, and the silence that follows makes it stale anew.
	testenv.Eventually(t, func() error { return testenv.Want("bounded staleness", r.BoundedStaleness(), true) })
	n.Stop()
	n.Start()
	testenv.Eventually(t, func() error {
		rc, _ := r.count()
		return testenv.WantAtLeast("reconnections", rc, reconnects+1)
	})
	testenv.Eventually(t, func() error { return testenv.Want("bounded staleness", r.BoundedStaleness(), true) })
	if at := r.lastDown(); at.Before(last.Add(timeout)) {
		t.Fatalf("stale after the reconnection from %s, before it", at.Format(time.StampMicro))
	}
}

// TestHeartbeatNotWatchedByDefault: without HeartbeatTimeout the feed is
// trusted however long no heartbeat comes.
func TestHeartbeatNotWatchedByDefault(t *testing.T) {
	n := testenv.StartNATS(t)
	r := newRecorder(t)
	s, err := Connect(Options{URL: n.URL(), DropCheck: 10 * time.Millisecond}, r, quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	time.Sleep(500 * time.Millisecond)
	if r.BoundedStaleness() {
		t.Fatal("stale without a heartbeat timeout")
	}
}

// TestHeartbeatAfterSilencePurges: the heartbeat that ends a silence
// proves no event before it was applied. Another relay may still hold an
// older row (claimed FOR UPDATE SKIP LOCKED, its publication failing) or
// have published it where this proxy never hears it, and even on one
// connection the heartbeat's subscription is served apart from the
// invalidations', so it can be acted on first. Here an invalidation goes
// out just before the heartbeat and its handler is held up: the caches
// may be trusted again only once purged, as after a reconnection.
func TestHeartbeatAfterSilencePurges(t *testing.T) {
	n := testenv.StartNATS(t)
	r := &downRecorder{recorder: newRecorder(t)}
	r.block = make(chan struct{})
	m := metrics.New()
	const timeout = time.Second // the window in which the heartbeat's effect is looked at
	s, pub := connectWithPublisher(t, n, Options{HeartbeatTimeout: timeout, DropCheck: 10 * time.Millisecond}, r, m)
	var unblock sync.Once
	release := func() { unblock.Do(func() { close(r.block) }) }
	t.Cleanup(release) // before the subscriber closes
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	testenv.Eventually(t, func() error { return testenv.Want("feed stale", testutil.ToFloat64(m.FeedStale), 1.0) })
	reconnects, _ := r.count()

	for _, subject := range []string{invalidation.UserSubject("u1"), invalidation.SubjectHeartbeat} {
		if err := pub.Publish(subject, []byte(`{"at":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, func() error { return testenv.Want("feed stale", testutil.ToFloat64(m.FeedStale), 0.0) })
	if r.BoundedStaleness() {
		t.Fatal("bounded staleness after the heartbeat")
	}
	r.recorder.mu.Lock()
	applied := len(r.users)
	r.recorder.mu.Unlock()
	if rc, _ := r.count(); applied == 0 && rc != reconnects+1 {
		t.Fatalf("trusted again with the invalidation before the heartbeat not applied, and %d purges, want 1", rc-reconnects)
	}
	release()
	testenv.Eventually(t, func() error {
		r.recorder.mu.Lock()
		defer r.recorder.mu.Unlock()
		return testenv.Want("users invalidated", len(r.users), 1)
	})
}

// TestHeartbeatStalenessEndsWithTheConnection: authproxy_invalidation_feed_stale
// says the relays are silent while NATS is up; once NATS is down too it
// is 0 (authproxy_nats_connected says why the caches are bounded), and the
// bound still counts from the last heartbeat.
func TestHeartbeatStalenessEndsWithTheConnection(t *testing.T) {
	n := testenv.StartNATS(t)
	r := &downRecorder{recorder: newRecorder(t)}
	m := metrics.New()
	s, _ := connectWithPublisher(t, n, Options{HeartbeatTimeout: 300 * time.Millisecond, DropCheck: 10 * time.Millisecond}, r, m)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	testenv.Eventually(t, func() error { return testenv.Want("feed stale", testutil.ToFloat64(m.FeedStale), 1.0) })
	n.Stop()
	testenv.Eventually(t, func() error { return testenv.Want("NATS connected", testutil.ToFloat64(m.NATSConnected), 0.0) })
	if v := testutil.ToFloat64(m.FeedStale); v != 0 {
		t.Fatalf("authproxy_invalidation_feed_stale %v with NATS down, want 0", v)
	}
	if !r.BoundedStaleness() {
		t.Fatal("not in bounded staleness with NATS down")
	}
	// Back, and still no heartbeat: stale again.
	n.Start()
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	testenv.Eventually(t, func() error { return testenv.Want("feed stale", testutil.ToFloat64(m.FeedStale), 1.0) })
}

// TestHeartbeatSilenceWithTheWallClockSetBack: the silence is timed on the
// monotonic clock. The last heartbeat's time was kept in unix nanoseconds,
// so a wall clock set back an hour after it (an NTP step, an operator, a
// VM resumed) hid an hour of silence: the caches stayed trusted all along
// while coreapi's relays published nothing.
func TestHeartbeatSilenceWithTheWallClockSetBack(t *testing.T) {
	n := testenv.StartNATS(t)
	r := &downRecorder{recorder: newRecorder(t)}
	var back atomic.Int64
	now := func() time.Time { return testenv.WallSetBack(time.Now(), time.Duration(back.Load())) }
	const timeout = 600 * time.Millisecond
	s, pub := connectWithPublisher(t, n, Options{HeartbeatTimeout: timeout, DropCheck: 10 * time.Millisecond, Now: now}, r, metrics.New())
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	stop := beats(t, pub)
	testenv.Eventually(t, func() error {
		return testenv.WantAtLeast("heartbeats", testutil.ToFloat64(s.m.Invalidations.WithLabelValues("heartbeat")), 2)
	})
	last := stop()
	back.Store(int64(time.Hour))
	testenv.Eventually(t, func() error { return testenv.Want("bounded staleness", r.BoundedStaleness(), true) })
	// Dated from the last heartbeat on the monotonic clock, not an hour off.
	if at := r.lastDown(); at.Sub(last) < 0 || at.Sub(last) > timeout {
		t.Fatalf("staleness counted from %v after the last heartbeat's publication, want within [0, %v]", at.Sub(last), timeout)
	}
}
