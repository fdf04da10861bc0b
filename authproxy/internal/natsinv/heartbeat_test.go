package natsinv

import (
	"sync"
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
	done, last := make(chan struct{}), make(chan time.Time, 1)
	go func() {
		var at time.Time
		for {
			at = time.Now()
			if err := nc.Publish(invalidation.SubjectHeartbeat, []byte(`{"at":1}`)); err != nil {
				t.Errorf("publish heartbeat: %v", err)
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
	return func() time.Time { close(done); return <-last }
}

// TestHeartbeatSilenceIsAnOutage: a connected feed that brings no outbox
// heartbeat for HeartbeatTimeout puts the caches in bounded staleness,
// counted from the last heartbeat (coreapi's relays may not be publishing
// although NATS is up for the proxy); the next heartbeat ends it without
// a purge (the outbox kept the events, and they arrived first). A NATS
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

	// A heartbeat ends it without a purge.
	reconnects, purges := r.count()
	stop = beats(t, pub)
	testenv.Eventually(t, func() error { return testenv.Want("bounded staleness", r.BoundedStaleness(), false) })
	if rc, p := r.count(); rc != reconnects || p != purges || testutil.ToFloat64(m.FeedStale) != 0 {
		t.Fatalf("caught up with %d reconnections and %d purges more (feed stale %v), want none and 0",
			rc-reconnects, p-purges, testutil.ToFloat64(m.FeedStale))
	}
	stop()

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
