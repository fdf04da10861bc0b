package natsinv

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
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

// feed drives a subscriber on a clock of its own. The test moves the
// clock and publishes what arrives, and each step waits for its effect
// rather than for a while: a heartbeat or a relay's beat until it is
// taken in, a move of the clock until the subscriber has looked at the
// feed since (watchDrops). What must not happen is proved not to have
// happened by those looks, however loaded the machine.
type feed struct {
	t      *testing.T
	s      *Subscriber
	pub    *nats.Conn
	m      *metrics.Metrics
	base   time.Time
	offset atomic.Int64
	// wallBack is how far the clock's wall reading is set back (an NTP
	// step, an operator, a VM resumed); its monotonic reading goes on.
	wallBack atomic.Int64
	looks    chan struct{}
}

// startFeed connects a subscriber with o (its clock, hook and DropCheck
// set here) for target, logging to log, and waits until it is connected.
func startFeed(t *testing.T, n *testenv.NATS, o Options, target Target, m *metrics.Metrics, log *slog.Logger) *feed {
	t.Helper()
	return startFeedAt(t, n.URL(), n.URL(), o, target, m, log)
}

// startFeedAt is startFeed with the subscriber connected to url and the
// publisher to pubURL (a server's other user).
func startFeedAt(t *testing.T, url, pubURL string, o Options, target Target, m *metrics.Metrics, log *slog.Logger) *feed {
	t.Helper()
	f := &feed{t: t, m: m, base: time.Now(), looks: make(chan struct{})}
	o.URL, o.Now, o.checked, o.DropCheck = url, f.now, f.checked, 10*time.Millisecond
	s, err := Connect(o, target, log, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(time.Second) })
	pub, err := nats.Connect(pubURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close) // before the subscriber closes
	f.s, f.pub = s, pub
	testenv.Eventually(t, func() error { return testenv.Want("connected", f.s.Connected(), true) })
	return f
}

func (f *feed) now() time.Time {
	return testenv.WallSetBack(f.base.Add(time.Duration(f.offset.Load())), time.Duration(f.wallBack.Load()))
}

// checked is the subscriber's hook after each look: it tells a test
// waiting in looked, if one is.
func (f *feed) checked() {
	select {
	case f.looks <- struct{}{}:
	default:
	}
}

// looked waits until the subscriber has looked at the feed wholly after
// the call: two looks end, the second begun once the first ended.
func (f *feed) looked() {
	f.t.Helper()
	for range 2 {
		select {
		case <-f.looks:
		case <-time.After(10 * time.Second):
			f.t.Fatal("the subscriber did not look at the feed within 10 s")
		}
	}
}

// advance moves the clock on by d and waits until the subscriber has
// looked at the feed since.
func (f *feed) advance(d time.Duration) {
	f.t.Helper()
	f.offset.Add(int64(d))
	f.looked()
}

// heartbeat publishes a heartbeat straight from a relay (no Nats-Msg-Id:
// the list of relays stays as it is), and returns its arrival once it is
// taken in.
func (f *feed) heartbeat() time.Time {
	f.t.Helper()
	return f.takenIn("heartbeat", &nats.Msg{Subject: invalidation.SubjectHeartbeat, Data: []byte(`{"at":1}`)})
}

// row publishes a heartbeat row listing relays, and returns its arrival
// once it is taken in.
func (f *feed) row(relays ...string) time.Time {
	f.t.Helper()
	return f.rowOf(invalidation.Event{Relays: relays})
}

// rowOf publishes ev as a heartbeat row (its At set here), and returns its
// arrival once it is taken in.
func (f *feed) rowOf(ev invalidation.Event) time.Time {
	f.t.Helper()
	ev.At = f.now().UnixMilli()
	b, _ := json.Marshal(ev)
	msg := &nats.Msg{Subject: invalidation.SubjectHeartbeat, Data: b, Header: nats.Header{}}
	msg.Header.Set(nats.MsgIdHdr, "row-"+strconv.FormatInt(rowID.Add(1), 10))
	return f.takenIn("heartbeat", msg)
}

// relay publishes relay's beat, and returns its arrival once it is taken
// in.
func (f *feed) relay(relay string) time.Time {
	f.t.Helper()
	b, _ := json.Marshal(invalidation.Event{At: f.now().UnixMilli(), Relay: relay})
	return f.takenIn("relay", &nats.Msg{Subject: invalidation.SubjectRelay, Data: b})
}

// takenIn publishes msg and waits until the subscriber counts one more
// event of kind (counted once its effects are in place); it returns the
// clock's time, that of the arrival.
func (f *feed) takenIn(kind string, msg *nats.Msg) time.Time {
	f.t.Helper()
	counted := func() float64 { return testutil.ToFloat64(f.m.Invalidations.WithLabelValues(kind)) }
	before := counted()
	if err := f.pub.PublishMsg(msg); err != nil {
		f.t.Fatal(err)
	}
	if err := f.pub.Flush(); err != nil {
		f.t.Fatal(err)
	}
	testenv.Eventually(f.t, func() error { return testenv.Want(kind+" events taken in", counted(), before+1) })
	return f.now()
}

// wantStale fails the test unless the caches are in bounded staleness
// with authproxy_invalidation_feed_stale and authproxy_outbox_relays_unheard
// as given, NATS connected; when says at which step.
func (f *feed) wantStale(r *downRecorder, stale bool, unheard float64, when string) {
	f.t.Helper()
	feedStale := map[bool]float64{true: 1}[stale]
	if r.BoundedStaleness() != stale || testutil.ToFloat64(f.m.FeedStale) != feedStale ||
		testutil.ToFloat64(f.m.RelaysUnheard) != unheard || testutil.ToFloat64(f.m.NATSConnected) != 1 {
		f.t.Fatalf("%s: bounded staleness %v, feed stale %v, relays unheard %v, NATS connected %v; want %v, %v, %v, 1", when,
			r.BoundedStaleness(), testutil.ToFloat64(f.m.FeedStale), testutil.ToFloat64(f.m.RelaysUnheard),
			testutil.ToFloat64(f.m.NATSConnected), stale, feedStale, unheard)
	}
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
	const timeout = 600 * time.Millisecond
	f := startFeed(t, n, Options{HeartbeatTimeout: timeout}, r, metrics.New(), quiet())

	// Heartbeats each within the timeout of the one before keep the feed
	// trusted well past it.
	for i := range 4 {
		f.advance(timeout - time.Millisecond)
		f.wantStale(r, false, 0, fmt.Sprintf("heartbeat %d due", i+1))
		f.heartbeat()
	}
	last := f.heartbeat()
	f.advance(timeout - time.Millisecond)
	f.wantStale(r, false, 0, "the timeout not yet over")
	f.advance(2 * time.Millisecond)
	f.wantStale(r, true, 0, "the timeout over")
	if at := r.lastDown(); !at.Equal(last) {
		t.Fatalf("staleness counted from %s, want the last heartbeat's arrival, %s", at.Format(time.StampMicro), last.Format(time.StampMicro))
	}

	// A heartbeat ends it with one purge, and the heartbeats after it
	// purge no more.
	reconnects, _ := r.count()
	f.heartbeat()
	f.wantStale(r, false, 0, "a heartbeat back")
	for range 3 {
		f.advance(timeout / 2)
		f.heartbeat()
	}
	if rc, _ := r.count(); rc != reconnects+1 {
		t.Fatalf("heartbeats back with %d purges, want 1", rc-reconnects)
	}

	// Stale again, then NATS restarts: the reconnection purges and clears
	// the staleness, and the silence that follows makes it stale anew,
	// counted from the reconnection.
	f.advance(timeout + time.Millisecond)
	f.wantStale(r, true, 0, "silent again")
	reconnects, _ = r.count()
	n.Stop()
	n.Start()
	testenv.Eventually(t, func() error {
		rc, _ := r.count()
		return testenv.WantAtLeast("reconnections", rc, reconnects+1)
	})
	testenv.Eventually(t, func() error { return testenv.Want("connected", f.s.Connected(), true) })
	live := f.now()
	f.advance(timeout - time.Millisecond)
	f.wantStale(r, false, 0, "reconnected, the timeout not yet over")
	f.advance(2 * time.Millisecond)
	f.wantStale(r, true, 0, "reconnected, the timeout over")
	if at := r.lastDown(); !at.Equal(live) {
		t.Fatalf("stale after the reconnection from %s, want the reconnection, %s", at.Format(time.StampMicro), live.Format(time.StampMicro))
	}
}

// TestHeartbeatNotWatchedByDefault: without HeartbeatTimeout the feed is
// trusted however long no heartbeat comes.
func TestHeartbeatNotWatchedByDefault(t *testing.T) {
	n := testenv.StartNATS(t)
	r := &downRecorder{recorder: newRecorder(t)}
	f := startFeed(t, n, Options{}, r, metrics.New(), quiet())
	f.advance(time.Hour)
	f.wantStale(r, false, 0, "an hour without a heartbeat")
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
	const timeout = 600 * time.Millisecond
	f := startFeed(t, n, Options{HeartbeatTimeout: timeout}, r, metrics.New(), quiet())
	f.advance(timeout / 2)
	last := f.heartbeat()
	f.wallBack.Store(int64(time.Hour))
	f.advance(timeout - time.Millisecond)
	f.wantStale(r, false, 0, "the wall clock set back, the timeout not yet over")
	f.advance(2 * time.Millisecond)
	f.wantStale(r, true, 0, "the wall clock set back, the timeout over")
	// Dated from the last heartbeat on the monotonic clock, not an hour off.
	if at := r.lastDown(); at.Sub(last) != 0 {
		t.Fatalf("staleness counted from %v after the last heartbeat's arrival, want 0", at.Sub(last))
	}
}
