package natsinv

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

func TestReconnectDelay(t *testing.T) {
	base, limit := 250*time.Millisecond, 5*time.Second
	tests := []struct {
		attempts int
		f        float64
		want     time.Duration
	}{
		{1, 0, 125 * time.Millisecond},
		{1, 0.5, 187500 * time.Microsecond},
		{2, 0, 250 * time.Millisecond},
		{3, 0, 500 * time.Millisecond},
		{5, 0, 2 * time.Second},
		{6, 0, 2500 * time.Millisecond}, // capped at 5 s
		{100, 0, 2500 * time.Millisecond},
		{100, 0.999999, 5 * time.Second},
	}
	for _, tt := range tests {
		if got := reconnectDelay(tt.attempts, base, limit, tt.f); got < tt.want-10*time.Microsecond || got > tt.want {
			t.Errorf("reconnectDelay(%d, f=%v) = %s, want %s", tt.attempts, tt.f, got, tt.want)
		}
	}
}

// recorder passes events to a real projection cache and notes when they
// arrived.
type recorder struct {
	*projection.Cache
	mu          sync.Mutex
	users       []string
	reconnected []time.Time
	purges      int
	block       chan struct{}
}

func (r *recorder) InvalidateAll() {
	r.Cache.InvalidateAll()
	r.mu.Lock()
	r.purges++
	r.mu.Unlock()
}

func (r *recorder) count() (reconnects, purges int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reconnected), r.purges
}

func (r *recorder) InvalidateUser(id string) {
	if r.block != nil {
		<-r.block
	}
	r.Cache.InvalidateUser(id)
	r.mu.Lock()
	r.users = append(r.users, id)
	r.mu.Unlock()
}

func (r *recorder) Reconnected() {
	r.Cache.Reconnected()
	r.mu.Lock()
	r.reconnected = append(r.reconnected, time.Now())
	r.mu.Unlock()
}

func newRecorder(t testing.TB) *recorder {
	c, err := projection.New(projection.Options{Size: 100, TTL: time.Minute, MaxStaleness: time.Second}, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &recorder{Cache: c}
}

func quiet() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

// connectWithPublisher connects a subscriber to n with o (its URL set
// here) for target, and a plain client to publish with; both close when
// the test ends (the subscriber first).
func connectWithPublisher(t testing.TB, n *testenv.NATS, o Options, target Target, m *metrics.Metrics) (*Subscriber, *nats.Conn) {
	t.Helper()
	return connectLogged(t, n, o, target, m, quiet())
}

// connectLogged is connectWithPublisher logging to log.
func connectLogged(t testing.TB, n *testenv.NATS, o Options, target Target, m *metrics.Metrics, log *slog.Logger) (*Subscriber, *nats.Conn) {
	t.Helper()
	o.URL = n.URL()
	s, err := Connect(o, target, log, m)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(n.URL())
	if err != nil {
		_ = s.Close(time.Second)
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	t.Cleanup(func() { _ = s.Close(time.Second) })
	return s, pub
}

// TestCloseLogsNoWarning: a shutdown's Close is no lost link: it logs no
// warning ("nats disconnected" with a null error, every clean stop), while
// a server that goes away still does.
func TestCloseLogsNoWarning(t *testing.T) {
	for _, serverStops := range []bool{false, true} {
		n := testenv.StartNATS(t)
		var buf logbuffer.Buffer
		s, err := Connect(Options{URL: n.URL()}, newRecorder(t), slog.New(slog.NewJSONHandler(&buf, nil)), metrics.New())
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
		warned := func() bool { return strings.Contains(buf.String(), `"level":"WARN","msg":"nats disconnected"`) }
		if serverStops {
			n.Stop()
			// The client reports the lost link from its callback goroutine,
			// after IsConnected already reads false: wait for the line.
			testenv.Eventually(t, func() error { return testenv.Want("warned", warned(), true) })
		}
		_ = s.Close(time.Second)
		if !serverStops && warned() {
			t.Errorf("a clean Close warned; log:\n%s", buf.String())
		}
	}
}

// TestReconnectWaitsTheJitteredDelay restarts a real NATS server: the
// subscriber's first attempt comes after the drawn delay (here fixed at
// the bottom of its window), not at once and not after the client's
// built-in 2 s default.
func TestReconnectWaitsTheJitteredDelay(t *testing.T) {
	n := testenv.StartNATS(t)
	r := newRecorder(t)
	s, err := Connect(Options{URL: n.URL(), ReconnectWait: 600 * time.Millisecond, MaxReconnect: time.Second,
		Rand: func() float64 { return 0 }}, r, quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	testenv.Eventually(t, func() error {
		n, _ := r.count()
		return testenv.WantAtLeast("the initial report", n, 1)
	})
	// Taken before the stop: the client may see its connection end while
	// Stop is still running, and its delay counts from then.
	down := time.Now()
	n.Stop()
	n.Start()
	// The first report after the stop.
	var took time.Duration
	testenv.Eventually(t, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, at := range r.reconnected {
			if at.After(down) {
				took = at.Sub(down)
				return nil
			}
		}
		return fmt.Errorf("no reconnection reported since the restart (%d reports before it)", len(r.reconnected))
	})
	if took < 300*time.Millisecond || took > 1800*time.Millisecond {
		t.Fatalf("reconnected %s after the restart, want ≈ 300 ms (the delay drawn for the first attempt)", took)
	}
}

// TestDroppedCountsSlowConsumerLosses blocks the cache while more events
// arrive than the pending limit: the excess is dropped and counted, and the
// cache is purged because what the lost events named is unknown.
func TestDroppedCountsSlowConsumerLosses(t *testing.T) {
	n := testenv.StartNATS(t)
	r := newRecorder(t)
	r.block = make(chan struct{})
	s, pub := connectWithPublisher(t, n, Options{PendingLimit: 10}, r, metrics.New())
	// The first connection is made in the background: an event published
	// before the subscription is live reaches nobody, neither applied nor
	// dropped.
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	const sent = 50
	for i := range sent {
		if err := pub.Publish(invalidation.UserSubject("u"+string(rune('a'+i%26))), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	// Every event was flushed to the server, so while the cache stays
	// blocked all of them reach the client: one in the handler, at most the
	// pending limit queued, the rest dropped. Unblocking at the first drop
	// would let late arrivals into the freed queue on a busy machine.
	testenv.Eventually(t, func() error { return testenv.WantAtLeast("dropped events", s.Dropped(), sent-11) })
	close(r.block)
	// Connecting purges through Reconnected, not InvalidateAll: any purge
	// counted here is the slow consumer's.
	testenv.Eventually(t, func() error {
		_, p := r.count()
		return testenv.WantAtLeast("purges for the slow consumer", p, 1)
	})
	testenv.Eventually(t, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		return testenv.Want("applied plus dropped events", len(r.users)+s.Dropped(), sent)
	})
	if d := s.Dropped(); d < sent-11 {
		t.Errorf("dropped %d of %d with a pending limit of 10, want at least %d", d, sent, sent-11)
	}
}

// countingFetcher answers every projection, counting the fetches.
type countingFetcher struct{ n atomic.Int64 }

func (f *countingFetcher) Fetch(_ context.Context, user, tenant, _ string) (*identity.Projection, error) {
	f.n.Add(1)
	return &identity.Projection{UserID: user, TenantID: tenant, UserStatus: identity.StatusActive,
		MembershipStatus: identity.StatusActive, TenantStatus: identity.StatusActive}, nil
}

// tenantBlocker holds every tenant event until block is closed and counts
// the tenant events applied and the purges.
type tenantBlocker struct {
	*projection.Cache
	block   chan struct{}
	tenants atomic.Int64
	purges  atomic.Int64
}

func (b *tenantBlocker) InvalidateTenant(id string) {
	<-b.block
	b.Cache.InvalidateTenant(id)
	b.tenants.Add(1)
}

func (b *tenantBlocker) InvalidateAll() {
	b.Cache.InvalidateAll()
	b.purges.Add(1)
}

// TestEventsDroppedAfterTheSlowConsumerPurge: the client reports a slow
// consumer once, at the first drop, and drops silently from then on until
// an event fits in its queue again. An entry filled after that first purge
// whose invalidation is among the later drops must not outlive them: the
// cache is purged again once more events were dropped.
func TestEventsDroppedAfterTheSlowConsumerPurge(t *testing.T) {
	n := testenv.StartNATS(t)
	f := &countingFetcher{}
	c, err := projection.New(projection.Options{Size: 100, TTL: time.Hour, MaxStaleness: time.Second}, f, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	b := &tenantBlocker{Cache: c, block: make(chan struct{})}
	s, pub := connectWithPublisher(t, n, Options{PendingLimit: 10}, b, metrics.New())
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	publish := func(subject string, times int) {
		t.Helper()
		for range times {
			if err := pub.Publish(subject, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// One event in the handler, ten queued, the rest dropped: the first
	// drop is reported and purges.
	const sent = 50
	publish(invalidation.TenantSubject("busy-tenant"), sent)
	testenv.Eventually(t, func() error { return testenv.WantAtLeast("dropped events", s.Dropped(), sent-11) })
	testenv.Eventually(t, func() error { return testenv.WantAtLeast("purges", b.purges.Load(), 1) })

	// Filled after that purge, while the consumer is still behind.
	get := func() {
		t.Helper()
		if _, err := c.Get(context.Background(), "victim", "t1", "rid"); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, func() error {
		before := f.n.Load()
		get()
		return testenv.Want("fetches of a cached entry", f.n.Load()-before, int64(0))
	})
	fetched := f.n.Load()

	// Its invalidation is dropped too (the queue is still full).
	dropped := s.Dropped()
	publish(invalidation.UserSubject("victim"), 1)
	testenv.Eventually(t, func() error { return testenv.Want("dropped events", s.Dropped(), dropped+1) })

	close(b.block)
	testenv.Eventually(t, func() error {
		return testenv.WantAtLeast("tenant events applied", b.tenants.Load(), int64(sent-s.Dropped()+1))
	})
	testenv.Eventually(t, func() error {
		get()
		return testenv.WantAbove("fetches of the entry whose event was dropped", f.n.Load(), fetched)
	})
}

// TestReconnectRefetchesKeys: an auth.keys.changed published while the
// proxy was cut off from NATS is lost like any event; the reconnection
// refetches the key set at once, as it purges the caches, instead of
// leaving a removed key verifying until the periodic refresh.
func TestReconnectRefetchesKeys(t *testing.T) {
	n := testenv.StartNATS(t)
	r := newRecorder(t)
	var refetches atomic.Int64
	s, err := Connect(Options{URL: n.URL(), ReconnectWait: 100 * time.Millisecond, MaxReconnect: 200 * time.Millisecond,
		KeysChanged: func(string) { refetches.Add(1) }}, r, quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	before := refetches.Load()
	n.Stop()
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), false) })
	n.Start()
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	testenv.Eventually(t, func() error { return testenv.WantAbove("key set refetches", refetches.Load(), before) })
}

// TestFirstConnectionRefetchesKeys: the first connection is made in the
// background (Connect returns at once, natsdial), so the key set the
// proxy fetches at start may be fetched before the subscriptions are
// live, and an auth.keys.changed sent meanwhile missed: the first
// connection fetches it again, once (the client's connect handler
// reports it, once Connect has subscribed), as a reconnection does; so does a
// first connection made only after start, NATS having been down.
func TestFirstConnectionRefetchesKeys(t *testing.T) {
	n := testenv.StartNATS(t)
	for i := range 8 {
		var refetches atomic.Int64
		r := newRecorder(t)
		s, err := Connect(Options{URL: n.URL(), KeysChanged: func(string) { refetches.Add(1) }}, r, quiet(), metrics.New())
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
		// Connected only once the caches were told.
		if got, _ := r.count(); got != 1 {
			t.Fatalf("connection %d: connected with %d live reports, want 1", i, got)
		}
		testenv.Eventually(t, func() error { return testenv.Want("key set refetches", refetches.Load(), int64(1)) })
		// Close returns once the client has run its closed handler, after
		// every handler it queued before: a late one's report is made.
		s.Close(time.Second)
		if got, _ := r.count(); got != 1 {
			t.Fatalf("connection %d: %d live reports, want 1", i, got)
		}
		if got := refetches.Load(); got != 1 {
			t.Fatalf("connection %d: %d key set refetches, want 1", i, got)
		}
	}

	n.Stop()
	var refetches atomic.Int64
	s, err := Connect(Options{URL: n.URL(), ReconnectWait: 50 * time.Millisecond, MaxReconnect: 100 * time.Millisecond,
		KeysChanged: func(string) { refetches.Add(1) }}, newRecorder(t), quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	if s.Connected() {
		t.Fatal("connected with NATS down")
	}
	n.Start()
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	testenv.Eventually(t, func() error { return testenv.WantAbove("key set refetches", refetches.Load(), 0) })
}

// gate is a slog handler that holds the "nats flush" warning until
// release is closed: it orders the connection's own report after the
// client's disconnect handler.
type gate struct {
	slog.Handler
	release <-chan struct{}
}

func (g gate) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "nats flush" {
		select {
		case <-g.release:
		case <-time.After(10 * time.Second):
		}
	}
	return g.Handler.Handle(ctx, r)
}

func (g gate) WithAttrs(as []slog.Attr) slog.Handler { return gate{g.Handler.WithAttrs(as), g.release} }
func (g gate) WithGroup(n string) slog.Handler       { return gate{g.Handler.WithGroup(n), g.release} }

// downCounter counts the disconnections the cache is told of.
type downCounter struct {
	*projection.Cache
	downs   atomic.Int64
	secondC chan struct{}
}

func (d *downCounter) Disconnected(at time.Time) {
	d.Cache.Disconnected(at)
	if d.downs.Add(1) == 2 {
		close(d.secondC)
	}
}

// oneShotNATS speaks just enough of the NATS protocol to let a client
// connect, then drops the connection at the client's next PING (Connect's
// flush of its subscription) and refuses every later connection.
func oneShotNATS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		ln.Close() // reconnections are refused
		fmt.Fprintf(c, "INFO {\"server_id\":\"fake\",\"version\":\"2.10.0\",\"proto\":1,\"headers\":true,\"max_payload\":1048576}\r\n")
		r := bufio.NewReader(c)
		pings := 0
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "PING") {
				if pings++; pings > 1 {
					return // the flush's PING: drop the connection
				}
				fmt.Fprintf(c, "PONG\r\n")
			}
		}
	}()
	return "nats://" + ln.Addr().String()
}

// TestConnectionLostDuringConnect: the connection breaks while Connect
// flushes its subscription, and the client reports the disconnection
// before Connect would report the connection. The cache must stay in
// bounded staleness (the feed is down), not be told the feed is live.
func TestConnectionLostDuringConnect(t *testing.T) {
	c, err := projection.New(projection.Options{Size: 100, TTL: time.Minute, MaxStaleness: time.Second}, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	d := &downCounter{Cache: c, secondC: make(chan struct{})}
	log := slog.New(gate{slog.NewJSONHandler(io.Discard, nil), d.secondC})
	s, err := Connect(Options{URL: oneShotNATS(t), ReconnectWait: time.Hour, MaxReconnect: time.Hour}, d, log, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	// The connection is made in the background, after Connect returned.
	testenv.Eventually(t, func() error {
		return testenv.WantAtLeast("disconnections reported (the start, the broken connection)", d.downs.Load(), 2)
	})
	if !c.BoundedStaleness() {
		t.Fatal("the cache trusts its entries without limit while the feed is down")
	}
	if s.Connected() {
		t.Fatal("Connected with the connection down")
	}
}

// TestUnknownSubjectPurges: an event under auth.invalidate.> whose subject
// the proxy does not understand (the design's auth.invalidate.session.<id>,
// which coreapi does not publish, a subject typed by hand, a kind a newer
// coreapi adds) names something that changed, the proxy cannot tell what:
// everything cached goes, as the relay publishes a row it cannot deliver
// as auth.invalidate.all. Dropped, a revocation announced that way was
// never applied and the entries it named were trusted for their TTL.
func TestUnknownSubjectPurges(t *testing.T) {
	n := testenv.StartNATS(t)
	f := &countingFetcher{}
	c, err := projection.New(projection.Options{Size: 100, TTL: time.Hour, MaxStaleness: time.Second}, f, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	m := metrics.New()
	s, pub := connectWithPublisher(t, n, Options{}, c, m)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	ctx := context.Background()
	for i, subject := range []string{
		"auth.invalidate.session.0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c",
		"auth.invalidate.user.u1.extra",
		"auth.invalidate.unheard-of.x",
	} {
		e, err := c.Get(ctx, "u1", "t1", "")
		if err != nil {
			t.Fatal(err)
		}
		if !c.Valid(e, time.Now()) {
			t.Fatalf("%s: the entry is not valid before the event", subject)
		}
		if err := pub.Publish(subject, []byte(`{"at":1}`)); err != nil {
			t.Fatal(err)
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, func() error { return testenv.Want(subject+": entry valid", c.Valid(e, time.Now()), false) })
		testenv.Eventually(t, func() error {
			return testenv.Want(subject+": unknown events counted", testutil.ToFloat64(m.Invalidations.WithLabelValues("unknown")), float64(i+1))
		})
	}
}

// TestKeysChangedNamesTheKeySet: the key set an auth.keys.changed names
// (its digest) reaches KeysChanged, so that a proxy holding that set does
// not fetch it again; an event naming none, or unreadable, hands on "".
func TestKeysChangedNamesTheKeySet(t *testing.T) {
	n := testenv.StartNATS(t)
	got := make(chan string, 4)
	s, err := Connect(Options{URL: n.URL(), KeysChanged: func(keys string) { got <- keys }}, newRecorder(t), quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	// The first connection's refetch (TestFirstConnectionRefetchesKeys).
	select {
	case keys := <-got:
		if keys != "" {
			t.Errorf("first connection: KeysChanged(%q), want \"\"", keys)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first connection: KeysChanged not called")
	}
	pub, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, c := range []struct{ body, want string }{
		{`{"at":1,"reason":"keys.changed","keys":"0c3b"}`, "0c3b"},
		{`{"at":1,"reason":"keys.changed"}`, ""},
		{`not json`, ""},
	} {
		if err := pub.Publish(invalidation.SubjectKeysChanged, []byte(c.body)); err != nil {
			t.Fatal(err)
		}
		select {
		case keys := <-got:
			if keys != c.want {
				t.Errorf("%s: KeysChanged(%q), want %q", c.body, keys, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: KeysChanged not called", c.body)
		}
	}
}
