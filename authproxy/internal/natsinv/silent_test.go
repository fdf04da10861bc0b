package natsinv

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/silent"
)

// TestConnectWaitsOnNoSilentServer: Connect tried every server of the URL
// before it returned, and a server that accepts and never answers (a
// partition, a stale address) held it 2 s each, so a NATS_URL of three
// such servers kept the proxy from listening for 6 s. Connect now returns
// at once, whatever the servers do; the first connection is made in the
// background, to the server that answers, and the feed goes live there
// (the caches purged, the key set fetched again, as after an outage).
func TestConnectWaitsOnNoSilentServer(t *testing.T) {
	n := testenv.StartNATS(t)
	url := strings.Join([]string{"nats://" + silent.Addr(t), "nats://" + silent.Addr(t), "nats://" + silent.Addr(t), n.URL()}, ",")
	r := newRecorder(t)
	refetched := make(chan string, 8)
	begin := time.Now()
	s, err := Connect(Options{URL: url, KeysChanged: func(keys string) { refetched <- keys }}, r, quiet(), metrics.New())
	took := time.Since(begin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	t.Logf("Connect returned after %v", took)
	if took > 500*time.Millisecond {
		t.Errorf("Connect returned after %v with three silent servers, want at once", took)
	}
	// The silent servers are tried in the background, 2 s each at most,
	// in the client's random order.
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 15 s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	eventually("the feed live", s.Connected)
	select {
	case <-refetched:
	case <-time.After(5 * time.Second):
		t.Error("the key set was not fetched again when the feed went live")
	}
	if reconnects, _ := r.count(); reconnects == 0 {
		t.Error("the caches were not told the feed went live (Reconnected: they purge)")
	}
}

// slowPurge is a cache whose purge (Reconnected) waits for release once
// armed, as a large cache's takes milliseconds.
type slowPurge struct {
	*recorder
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (p *slowPurge) Reconnected() {
	if p.armed.Load() {
		p.entered <- struct{}{}
		<-p.release
	}
	p.recorder.Reconnected()
}

// TestConnectedOnceCachesTold: Connected reported the feed live before the
// caches were told (its purge still running), so a caller that went on at
// Connected, now that the first connection is made in the background,
// found them still in bounded staleness, and what it cached then was not
// purged by the heartbeat that followed. Shown at a reconnection, whose
// report runs on the client's goroutine, not inside Connect.
func TestConnectedOnceCachesTold(t *testing.T) {
	n := testenv.StartNATS(t)
	p := &slowPurge{recorder: newRecorder(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	s, err := Connect(Options{URL: n.URL(), ReconnectWait: 50 * time.Millisecond, MaxReconnect: 100 * time.Millisecond}, p, quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	n.Stop()
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), false) })
	p.armed.Store(true)
	n.Start()
	select {
	case <-p.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the caches were not told the feed is live again")
	}
	if s.Connected() {
		t.Error("Connected while the caches' purge is still running")
	}
	close(p.release)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	if p.BoundedStaleness() {
		t.Error("Connected with the caches in bounded staleness")
	}
}
