package natsinv

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// keysRecorder is a KeysChanged that records the digests it is called
// with and, when held, blocks its next call until released.
type keysRecorder struct {
	mu      sync.Mutex
	got     []string
	hold    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newKeysRecorder() *keysRecorder {
	return &keysRecorder{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (k *keysRecorder) keys(digest string) {
	k.mu.Lock()
	k.got = append(k.got, digest)
	k.mu.Unlock()
	if k.hold.CompareAndSwap(true, false) {
		k.entered <- struct{}{}
		<-k.release
	}
}

func (k *keysRecorder) calls() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.got)
}

func (k *keysRecorder) reset() {
	k.mu.Lock()
	k.got = nil
	k.mu.Unlock()
}

// TestKeysChangedFloodCoalesced: auth.keys.changed events that queue up
// while the key set is being fetched (a burst from whoever may publish on
// the subject, or many replicas announcing at once) cost one more fetch
// between them, not one each: every one of them is answered by a fetch
// that starts after it arrived. That fetch is told the digest they name
// when they all name the same one (so that a proxy holding that set
// fetches nothing), and none ("") when they differ. Each event is still
// counted.
func TestKeysChangedFloodCoalesced(t *testing.T) {
	const burst = 500
	n := testenv.StartNATS(t)
	for _, tc := range []struct {
		name    string
		digests func(i int) string
		want    string
	}{
		{"one set named", func(int) string { return "sha256:bb" }, "sha256:bb"},
		{"sets differ", func(i int) string { return fmt.Sprintf("sha256:%02x", i%3) }, ""},
		{"none named", func(int) string { return "" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New()
			k := newKeysRecorder()
			s, pub := connectWithPublisher(t, n, Options{KeysChanged: k.keys}, newRecorder(t), m)
			testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
			// The first connection's own refetch.
			testenv.Eventually(t, func() error { return testenv.Want("key set refetches", len(k.calls()), 1) })
			k.reset()
			events := func() float64 { return testutil.ToFloat64(m.Invalidations.WithLabelValues("keys")) }
			k.hold.Store(true)
			publishEvent(t, pub, invalidation.SubjectKeysChanged, invalidation.Event{Keys: "sha256:aa"})
			select { // the first event's fetch runs, and takes its time
			case <-k.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("auth.keys.changed: no key set refetch")
			}
			for i := range burst {
				b, _ := json.Marshal(invalidation.Event{At: time.Now().UnixMilli(), Keys: tc.digests(i)})
				if err := pub.Publish(invalidation.SubjectKeysChanged, b); err != nil {
					t.Fatal(err)
				}
			}
			if err := pub.Flush(); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, func() error {
				queued, _, err := s.ks.Load().Pending()
				if err != nil {
					return err
				}
				// The client counts the event being handled as pending
				// until its handler returns.
				return testenv.Want("events pending (the one handled and those queued behind it)", queued, burst+1)
			})
			close(k.release)
			testenv.Eventually(t, func() error { return testenv.Want("events counted", events(), float64(burst+1)) })
			testenv.Eventually(t, func() error { return testenv.WantAtLeast("key set refetches", len(k.calls()), 2) })
			if got, want := k.calls(), []string{"sha256:aa", tc.want}; !slices.Equal(got, want) {
				if len(got) > 5 {
					got = append(got[:5], fmt.Sprintf("... %d in all", len(got)))
				}
				t.Fatalf("key set refetches = %q, want %q", got, want)
			}
		})
	}
}

// TestKeysChangedRefetchesSpaced: a stream of auth.keys.changed events,
// each arriving once the refetch for the one before has returned, costs a
// refetch per KeysChangedGap at most, not one per event; the last event
// is still answered, once the gap is over.
func TestKeysChangedRefetchesSpaced(t *testing.T) {
	const gap = 300 * time.Millisecond
	n := testenv.StartNATS(t)
	var mu sync.Mutex
	var at []time.Time
	keys := func(string) { mu.Lock(); at = append(at, time.Now()); mu.Unlock() }
	calls := func() []time.Time { mu.Lock(); defer mu.Unlock(); return slices.Clone(at) }
	s, pub := connectWithPublisher(t, n, Options{KeysChanged: keys, KeysChangedGap: gap}, newRecorder(t), metrics.New())
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	testenv.Eventually(t, func() error { return testenv.Want("key set refetches", len(calls()), 1) })
	for i := 1; i <= 3; i++ {
		publishEvent(t, pub, invalidation.SubjectKeysChanged, invalidation.Event{Keys: "sha256:aa"})
		testenv.Eventually(t, func() error { return testenv.Want("key set refetches", len(calls()), 1+i) })
	}
	got := calls()[1:]
	for i := 1; i < len(got); i++ {
		if d := got[i].Sub(got[i-1]); d < gap {
			t.Fatalf("refetch %d came %s after the one before, want at least %s", i+1, d, gap)
		}
	}
}
