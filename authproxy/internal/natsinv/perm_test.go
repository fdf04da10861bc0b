package natsinv

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// TestRefusedSubscriptionIsNoFeed: the NATS server's permissions refuse
// the proxy's subscription to auth.invalidate.> (a deployment that
// restricts subjects and forgot the proxy's). The connection is up, but no
// invalidation will ever arrive: the caches must stay in bounded
// staleness and the feed must not read as connected, where the proxy
// trusted its caches for their whole TTL and said nothing but a warning.
func TestRefusedSubscriptionIsNoFeed(t *testing.T) {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: "proxy", Password: "pw", Permissions: &natsserver.Permissions{
			Subscribe: &natsserver.SubjectPermission{Allow: []string{invalidation.SubjectKeysChanged, "_INBOX.>"}},
		}}}}
	ns := startServer(t, opts)

	c, err := projection.New(projection.Options{Size: 100, TTL: time.Minute, MaxStaleness: time.Second}, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	m := metrics.New()
	var logs logbuffer.Buffer
	s, err := Connect(Options{URL: "nats://proxy:pw@" + ns.Addr().String(), KeysChanged: func(string) {}}, c,
		slog.New(slog.NewJSONHandler(&logs, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	// The refusal is the connection's last word: the client hands it on
	// after the connect handler, so nothing on this connection reports
	// the feed live after it.
	const line = `"level":"ERROR","msg":"nats refuses the subscription to invalidations`
	testenv.Eventually(t, func() error {
		if err := testenv.Want("nats connected", s.nc.IsConnected(), true); err != nil {
			return err
		}
		return testenv.Want("errors for the refused subscription", strings.Count(logs.String(), line), 1)
	})
	if s.Connected() || !c.BoundedStaleness() || testutil.ToFloat64(m.NATSConnected) != 0 {
		t.Fatalf("connected = %v, bounded staleness = %v, authproxy_nats_connected = %v: the feed reads live with its subscription refused",
			s.Connected(), c.BoundedStaleness(), testutil.ToFloat64(m.NATSConnected))
	}
}

// startServer runs a NATS server with opts as they are (users and their
// permissions), shut down when the test ends.
func startServer(t *testing.T, opts *natsserver.Options) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// startAuthNATS runs a NATS server on port (-1: a free one) that admits
// user proxy with password pw only, and returns it with its port.
func startAuthNATS(t *testing.T, port int, pw string) (*natsserver.Server, int) {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: "proxy", Password: pw}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return ns, ns.Addr().(*net.TCPAddr).Port
}

// TestReconnectOutlastsRefusedCredentials: NATS comes back from a restart
// refusing the proxy's credentials for a while (an account resolver or an
// auth callout not ready yet, a configuration rolled back), then admits
// them again. The client's default gives up for good after the same
// authorization error twice from a server: the subscriber would stay
// closed, its caches in bounded staleness until the proxy restarts.
func TestReconnectOutlastsRefusedCredentials(t *testing.T) {
	ns, port := startAuthNATS(t, -1, "pw")
	r := newRecorder(t)
	url := "nats://proxy:pw@127.0.0.1:" + strconv.Itoa(port)
	s, err := Connect(Options{URL: url, ReconnectWait: 20 * time.Millisecond, MaxReconnect: 50 * time.Millisecond}, r, quiet(), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })

	ns.Shutdown()
	ns.WaitForShutdown()
	refusing, _, attempts := startRefusingServer(t, port)
	// Several reconnection attempts are refused: the client's default
	// gave up at the second.
	awaitAttempts(t, attempts, 3)
	refusing.Shutdown()
	refusing.WaitForShutdown()
	ns, _ = startAuthNATS(t, port, "pw")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	testenv.Eventually(t, func() error {
		if err := testenv.Want("connected", s.Connected(), true); err != nil {
			return err
		}
		return testenv.Want("bounded staleness", r.BoundedStaleness(), false)
	})
	publish(t, url, invalidation.UserSubject("u1"))
	testenv.Eventually(t, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		return testenv.Want("users invalidated", len(r.users), 1)
	})
}

// TestRefusedRelaySubscriptionIsNotStale: the NATS server's permissions
// refuse the proxy's subscription to auth.outbox.relay (a deployment that
// has not granted the subject yet). The relays' beats cannot be heard, so
// a relay the heartbeat rows list must not make the feed stale: that
// would leave every proxy trusting its caches only for the staleness
// bound. The refusal is logged as an error once, and the heartbeat is
// still watched.
func TestRefusedRelaySubscriptionIsNotStale(t *testing.T) {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{
			{Username: "proxy", Password: "pw", Permissions: &natsserver.Permissions{
				Subscribe: &natsserver.SubjectPermission{Allow: []string{invalidation.SubjectWildcard, invalidation.SubjectKeysChanged,
					invalidation.SubjectHeartbeat, "_INBOX.>"}},
			}},
			{Username: "coreapi", Password: "pw"},
		}}
	ns := startServer(t, opts)

	r := &downRecorder{recorder: newRecorder(t)}
	var logs logbuffer.Buffer
	const timeout = 300 * time.Millisecond
	f := startFeedAt(t, "nats://proxy:pw@"+ns.Addr().String(), "nats://coreapi:pw@"+ns.Addr().String(),
		Options{HeartbeatTimeout: timeout}, r, metrics.New(), slog.New(slog.NewJSONHandler(&logs, nil)))
	const refusal = `"level":"ERROR","msg":"nats refuses the subscription to auth.outbox.relay`
	testenv.Eventually(t, func() error {
		return testenv.Want("errors for the refused relay subscription", strings.Count(logs.String(), refusal), 1)
	})

	// r2 is listed and never heard, the heartbeats go on: fresh well past
	// the timeout.
	f.row("r2")
	for i := range 4 {
		f.advance(timeout / 2)
		f.wantStale(r, false, 0, fmt.Sprintf("heartbeat %d due, r2 listed", i+1))
		f.heartbeat()
	}
	if n := strings.Count(logs.String(), refusal); n != 1 {
		t.Errorf("%d errors for the refused relay subscription, want 1; log:\n%s", n, logs.String())
	}

	// The heartbeat is still watched.
	f.advance(timeout + time.Millisecond)
	f.wantStale(r, true, 0, "no heartbeat")
}

// TestRefusedKeysChangedSubscriptionIsAnError: the NATS server's
// permissions refuse the proxy's subscription to auth.keys.changed (a
// deployment that granted auth.invalidate.> only). Invalidations still
// arrive, so the feed is live; but a signing key coreapi removes keeps
// verifying tokens on this proxy until its next regular JWKS refresh. The
// refusal is an error naming the subject and what it costs, once, not
// one of the client's passing warnings.
func TestRefusedKeysChangedSubscriptionIsAnError(t *testing.T) {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: "proxy", Password: "pw", Permissions: &natsserver.Permissions{
			Subscribe: &natsserver.SubjectPermission{Allow: []string{invalidation.SubjectWildcard, "_INBOX.>"}},
		}}}}
	ns := startServer(t, opts)

	r := newRecorder(t)
	var logs logbuffer.Buffer
	s, err := Connect(Options{URL: "nats://proxy:pw@" + ns.Addr().String(), KeysChanged: func(string) {}},
		r, slog.New(slog.NewJSONHandler(&logs, nil)), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(time.Second) })
	const line = `"level":"ERROR","msg":"nats refuses the subscription to auth.keys.changed; a signing key removed from coreapi keeps verifying tokens`
	testenv.Eventually(t, func() error {
		if err := testenv.Want("connected", s.Connected(), true); err != nil {
			return err
		}
		return testenv.Want("errors for the refused subscription", strings.Count(logs.String(), line), 1)
	})
	if r.BoundedStaleness() {
		t.Fatal("the feed is not live although invalidations are delivered")
	}
}

// TestSubscriptionOverTheLimitIsNoFeed: the NATS server refuses one of the
// proxy's subscriptions for its max_subscriptions limit. Its error names
// no subject, and the client sends the subscriptions of a new connection
// in no set order, so at some reconnection the one refused is the
// subscription to invalidations while the others are served: the proxy
// read its feed as live, hearing no invalidation, and trusted its caches
// for their whole TTL with nothing but a warning logged. Whichever is
// refused, the feed must not read as live: each connection is refused one
// (two subscriptions, a limit of one), and the test reconnects a dozen
// times, at some of which the refused one is the invalidations'.
func TestSubscriptionOverTheLimitIsNoFeed(t *testing.T) {
	opts := func(port int) *natsserver.Options {
		return &natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true, MaxSubs: 1}
	}
	ns := startServer(t, opts(-1))
	port := ns.Addr().(*net.TCPAddr).Port
	url := "nats://127.0.0.1:" + strconv.Itoa(port)

	r := newRecorder(t)
	var logs logbuffer.Buffer
	s, err := Connect(Options{URL: url, KeysChanged: func(string) {}, ReconnectWait: 20 * time.Millisecond, MaxReconnect: 50 * time.Millisecond},
		r, slog.New(slog.NewJSONHandler(&logs, nil)), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	const refusal = `"level":"ERROR","msg":"nats refuses a subscription: maximum subscriptions exceeded`
	for i := range 12 {
		if i > 0 {
			ns.Shutdown()
			ns.WaitForShutdown()
			ns = startServer(t, opts(port))
		}
		// Every connection has one subscription refused (the limit is one),
		// and the refusal, the connection's last word, is one error.
		testenv.Eventually(t, func() error {
			if err := testenv.Want("nats connected", s.nc.IsConnected(), true); err != nil {
				return err
			}
			return testenv.Want("errors for the refused subscriptions", strings.Count(logs.String(), refusal), i+1)
		})
		if !s.Connected() && r.BoundedStaleness() {
			continue
		}
		// Read as live: the invalidations must come.
		r.mu.Lock()
		before := len(r.users)
		r.mu.Unlock()
		publish(t, url, invalidation.UserSubject("u1"))
		testenv.Eventually(t, func() error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.users) > before {
				return nil
			}
			return fmt.Errorf("connection %d: connected = %v, bounded staleness = %v, and the invalidation published is not applied: the feed reads live with its subscription refused",
				i, s.Connected(), r.BoundedStaleness())
		})
	}
	if s.Connected() || !r.BoundedStaleness() {
		t.Fatalf("connected = %v, bounded staleness = %v: the feed reads live with a subscription refused", s.Connected(), r.BoundedStaleness())
	}
}

// TestDeniedKindOfInvalidationIsNoFeed: the NATS server's permissions let
// the proxy subscribe to auth.invalidate.> but deny a kind under it (here
// auth.invalidate.tenant.>, a deny meant for another client or a narrowed
// grant). The server accepts the wildcard subscription without a word and
// drops every tenant event at delivery, while the other kinds (and the
// heartbeats) keep coming: the proxy read its feed as live and kept a
// suspended tenant's projections for their whole TTL, with nothing logged
// or counted. The feed must not read as live, and the refusal is an error
// naming the kind, once per connection.
func TestDeniedKindOfInvalidationIsNoFeed(t *testing.T) {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: "proxy", Password: "pw", Permissions: &natsserver.Permissions{
			Subscribe: &natsserver.SubjectPermission{
				Allow: []string{invalidation.SubjectWildcard, invalidation.SubjectKeysChanged, "_INBOX.>"},
				Deny:  []string{invalidation.SubjectPrefix + "tenant.>"},
			},
		}}}}
	ns := startServer(t, opts)

	c, err := projection.New(projection.Options{Size: 100, TTL: time.Minute, MaxStaleness: time.Second}, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	m := metrics.New()
	var logs logbuffer.Buffer
	s, err := Connect(Options{URL: "nats://proxy:pw@" + ns.Addr().String(), KeysChanged: func(string) {}}, c,
		slog.New(slog.NewJSONHandler(&logs, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	const line = `"level":"ERROR","msg":"nats denies this proxy a kind of invalidation under auth.invalidate.>`
	testenv.Eventually(t, func() error {
		if err := testenv.Want("connected", s.Connected(), false); err != nil {
			return err
		}
		if err := testenv.Want("bounded staleness", c.BoundedStaleness(), true); err != nil {
			return err
		}
		if err := testenv.Want("authproxy_nats_connected", testutil.ToFloat64(m.NATSConnected), 0.0); err != nil {
			return err
		}
		return testenv.Want("errors naming the denied kind", strings.Count(logs.String(), line), 1)
	})
	if !strings.Contains(logs.String(), `"subject":"auth.invalidate.tenant.*"`) {
		t.Errorf("the error does not name the denied kind; log:\n%s", logs.String())
	}
}

// TestRefusedSubscriptionNeverLive: a connection on which the NATS server
// refuses the subscription to invalidations (its permissions) is never
// reported live, not even for a moment. The client runs its connect or
// reconnect handler before it hands on the server's refusal, and the
// handler called the feed live (the caches purged, out of bounded
// staleness) as soon as the server had answered the subscriptions: until
// the refusal was handled, entries fetched meanwhile were trusted as if
// invalidations were flowing. Here the first connection, and a
// reconnection after a connection that is live, meet a refusing server:
// the caches are told the feed is live for the live connection alone.
func TestRefusedSubscriptionNeverLive(t *testing.T) {
	opts := func(port int, allow ...string) *natsserver.Options {
		return &natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
			Users: []*natsserver.User{{Username: "proxy", Password: "pw", Permissions: &natsserver.Permissions{
				Subscribe: &natsserver.SubjectPermission{Allow: allow},
			}}}}
	}
	refusing := func(port int) *natsserver.Options {
		return opts(port, invalidation.SubjectKeysChanged, "_INBOX.>")
	}
	ns := startServer(t, refusing(-1))
	port := ns.Addr().(*net.TCPAddr).Port
	url := "nats://proxy:pw@127.0.0.1:" + strconv.Itoa(port)

	r := newRecorder(t)
	m := metrics.New()
	var logs logbuffer.Buffer
	s, err := Connect(Options{URL: url, KeysChanged: func(string) {}, ReconnectWait: 20 * time.Millisecond, MaxReconnect: 50 * time.Millisecond},
		r, slog.New(slog.NewJSONHandler(&logs, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	const refusal = `"level":"ERROR","msg":"nats refuses the subscription to invalidations`
	// wantNotLive waits for the refusal of the connection in hand (the
	// errors logged reach n: the client hands it on after the connection's
	// handler) and checks that the caches were told the feed is live
	// exactly lives times.
	wantNotLive := func(n, lives int, when string) {
		t.Helper()
		testenv.Eventually(t, func() error {
			if err := testenv.Want("nats connected", s.nc.IsConnected(), true); err != nil {
				return err
			}
			return testenv.Want("errors for the refused subscription", strings.Count(logs.String(), refusal), n)
		})
		if got, _ := r.count(); got != lives {
			t.Fatalf("%s: the caches were told the feed is live %d times, want %d: the feed was called live with its subscription refused", when, got, lives)
		}
		if s.Connected() || !r.BoundedStaleness() || testutil.ToFloat64(m.NATSConnected) != 0 {
			t.Fatalf("%s: connected = %v, bounded staleness = %v, authproxy_nats_connected = %v: the feed reads live with its subscription refused",
				when, s.Connected(), r.BoundedStaleness(), testutil.ToFloat64(m.NATSConnected))
		}
	}
	restart := func(o *natsserver.Options) {
		ns.Shutdown()
		ns.WaitForShutdown()
		ns = startServer(t, o)
	}

	wantNotLive(1, 0, "first connection refused")

	restart(opts(port, invalidation.SubjectWildcard, invalidation.SubjectKeysChanged, "_INBOX.>"))
	testenv.Eventually(t, func() error {
		if err := testenv.Want("connected", s.Connected(), true); err != nil {
			return err
		}
		n, _ := r.count()
		return testenv.Want("live reports", n, 1)
	})

	for i := range 3 {
		restart(refusing(port))
		wantNotLive(2+i, 1, fmt.Sprintf("reconnection %d refused", i+1))
	}
}
