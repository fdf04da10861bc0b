package natsinv

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// link is a TCP relay between the subscriber and a real NATS server that
// can go silent (a partition: nothing passes, nothing is closed), hold
// what the client sends for a while (a slow path to the server), or break
// its connections.
type link struct {
	t      *testing.T
	ln     net.Listener
	target string
	// silent: nothing is forwarded any more, either way; the sockets stay
	// open.
	silent atomic.Bool
	// delayUp holds each chunk the client sends this long before the
	// server gets it (connections accepted from then on).
	delayUp atomic.Int64
	// delayUpLater is added to delayUp for what a connection sends after
	// its first PING (the handshake's: the connection is made promptly).
	delayUpLater atomic.Int64
	mu           sync.Mutex
	conns        []net.Conn
}

func newLink(t *testing.T, natsURL string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{t: t, ln: ln, target: natsURL[len("nats://"):]}
	t.Cleanup(func() {
		ln.Close()
		l.breakAll()
	})
	go l.accept()
	return l
}

func (l *link) URL() string { return "nats://" + l.ln.Addr().String() }

func (l *link) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", l.target)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		l.conns = append(l.conns, c, s)
		l.mu.Unlock()
		go l.pipe(s, c, time.Duration(l.delayUp.Load()), time.Duration(l.delayUpLater.Load()))
		go l.pipe(c, s, 0, 0)
	}
}

// pipe copies src to dst, each chunk delay after it was read (delay+later
// after the first PING), until either side ends; nothing passes while the
// link is silent.
func (l *link) pipe(dst, src net.Conn, delay, later time.Duration) {
	type chunk struct {
		at time.Time
		b  []byte
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 && !l.silent.Load() {
				q <- chunk{time.Now().Add(delay), b[:n]}
				if later > 0 && bytes.Contains(b[:n], []byte("PING")) { // the handshake's
					delay, later = delay+later, 0
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if l.silent.Load() {
			continue
		}
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
	dst.Close()
}

// breakAll closes every connection through the link.
func (l *link) breakAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

// publish sends one invalidation straight to the server (as coreapi's
// relay does, on a connection of its own) and waits until the server has
// it.
func publish(t *testing.T, natsURL, subject string) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish(subject, []byte(`{"at":0}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestSilentLinkLossBoundsStaleness: the link to NATS dies without closing
// (a partition), and an invalidation published meanwhile never arrives.
// The client must notice from its unanswered pings, and the cached entry
// must stop being served within MAX_STALENESS of the loss (counted from
// the last moment the feed was known to deliver, not from when the loss
// was noticed), with the client's two-minute default ping it was served
// for its whole TTL.
func TestSilentLinkLossBoundsStaleness(t *testing.T) {
	const (
		ping      = 300 * time.Millisecond
		staleness = 900 * time.Millisecond
	)
	n := testenv.StartNATS(t)
	l := newLink(t, n.URL())
	f := &countingFetcher{}
	c, err := projection.New(projection.Options{Size: 100, TTL: time.Hour, MaxStaleness: staleness}, f, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s, err := Connect(Options{URL: l.URL(), PingInterval: ping, ReconnectWait: time.Hour, MaxReconnect: time.Hour},
		c, quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	ctx := context.Background()
	if _, err := c.Get(ctx, "u1", "t1", ""); err != nil {
		t.Fatal(err)
	}

	lost := time.Now()
	l.silent.Store(true)
	publish(t, n.URL(), invalidation.UserSubject("u1")) // lost with the link

	var servedUntil time.Duration
	testenv.Eventually(t, func() error {
		if _, err := c.Get(ctx, "u1", "t1", ""); err != nil {
			return err
		}
		if f.n.Load() < 2 {
			return errors.New("the entry cached before the link died is still served")
		}
		servedUntil = time.Since(lost)
		return nil
	})
	// The link is declared dead within DeadAfter(ping) = 900 ms of the
	// loss; the cache's trust ends on its own clock (the last answered
	// ping), which may come first.
	eventually.Within(t, 2*time.Second, func() error { return testenv.Want("connected with the link dead", s.Connected(), false) })
	// Noticed within DeadAfter(ping) = 900 ms, and trusted only up to
	// staleness past the last answered ping, itself before the loss
	// (counted from when the loss was noticed, it was served for
	// 1.5-1.8 s).
	if limit := staleness + 450*time.Millisecond; servedUntil > limit {
		t.Fatalf("the entry was served %s after the link died, want at most MAX_STALENESS (%s) and some slack (%s)",
			servedUntil, staleness, limit)
	}
}

// TestPingIntervalFor: an outage is noticed within half the staleness
// bound.
func TestPingIntervalFor(t *testing.T) {
	tests := []struct{ staleness, want time.Duration }{
		{30 * time.Second, 5 * time.Second},
		{0, 100 * time.Millisecond},
		{time.Hour, 2 * time.Minute},
	}
	for _, tt := range tests {
		if got := PingIntervalFor(tt.staleness); got != tt.want {
			t.Errorf("PingIntervalFor(%s) = %s, want %s", tt.staleness, got, tt.want)
		}
	}
	if d := DeadAfter(PingIntervalFor(30 * time.Second)); d != 15*time.Second {
		t.Errorf("DeadAfter(PingIntervalFor(30s)) = %s, want 15s", d)
	}
}

// TestReconnectLiveOnceSubscribed: after a reconnection the client sends
// its subscription again and runs its handler without waiting for the
// server to act on it. Over a slow path the handler ran (caches purged,
// the feed called live) before the server had the subscription, and an
// invalidation published in between was lost while the caches refilled as
// if it could not be. The feed is live only once the server has it.
func TestReconnectLiveOnceSubscribed(t *testing.T) {
	n := testenv.StartNATS(t)
	l := newLink(t, n.URL())
	r := newRecorder(t)
	s, err := Connect(Options{URL: l.URL(), ReconnectWait: 50 * time.Millisecond, MaxReconnect: 100 * time.Millisecond},
		r, quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	testenv.Eventually(t, func() error {
		n, _ := r.count()
		return testenv.Want("live reports", n, 1)
	})

	// The next connection's bytes reach the server 500 ms late.
	l.delayUp.Store(int64(500 * time.Millisecond))
	l.breakAll()
	testenv.Eventually(t, func() error {
		n, _ := r.count()
		if err := testenv.Want("live reports", n, 2); err != nil {
			return err
		}
		return testenv.Want("connected", s.Connected(), true)
	})
	publish(t, n.URL(), invalidation.UserSubject("u1"))
	deadline := time.Now().Add(3 * time.Second)
	for {
		r.mu.Lock()
		got := len(r.users)
		r.mu.Unlock()
		if got == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an invalidation published after the feed was reported live never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConnectLiveOnceSubscribed: the first connection's confirmation that
// the server has the subscription (a flush) times out while the connection
// stays up. No handler of the client will report this connection again,
// and the feed was called live at once: an invalidation published
// before the server had the subscription was lost. The feed is live only
// once the server has it.
func TestConnectLiveOnceSubscribed(t *testing.T) {
	n := testenv.StartNATS(t)
	l := newLink(t, n.URL())
	// The handshake passes at once; the subscription and the flush reach
	// the server 3 s later, after Connect's flush gave up (2 s).
	l.delayUpLater.Store(int64(3 * time.Second))
	r := newRecorder(t)
	s, err := Connect(Options{URL: l.URL()}, r, quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	publish(t, n.URL(), invalidation.UserSubject("u1"))
	testenv.Eventually(t, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		return testenv.Want("invalidations applied", len(r.users), 1)
	})
}
