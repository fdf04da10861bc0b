package app

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// After a user or session event, that user's token gets 401 or
// 403 on the next request.
func TestInvalidationEvents(t *testing.T) {
	t.Parallel()
	rulesFile := appUpstream + "routes:\n  - prefix: /notes\n    methods: [GET]\n    upstream: notes\n    access: protected\n    permissions: [notes:read]\n"
	tests := []struct {
		name    string
		subject string
		change  func(p *identity.Projection)
		path    string
		status  int
		code    string
	}{
		{"session revoked (user event)", invalidation.UserSubject(userID),
			func(p *identity.Projection) { p.RevokedSessions = []string{sessionID} }, "/api/v1/users/me", 401, problem.CodeInvalidToken},
		{"password changed: token version (user event)", invalidation.UserSubject(userID),
			func(p *identity.Projection) { p.TokenVersion = 5 }, "/api/v1/users/me", 401, problem.CodeInvalidToken},
		{"user disabled (user event)", invalidation.UserSubject(userID),
			func(p *identity.Projection) { p.UserStatus = "disabled" }, "/api/v1/users/me", 401, problem.CodeInvalidToken},
		{"role revoked (user event)", invalidation.UserSubject(userID),
			func(p *identity.Projection) { p.Permissions = []string{"tenant:read"} }, "/notes", 403, problem.CodeInsufficientScope},
		{"tenant suspended (tenant event)", invalidation.TenantSubject(tenantID),
			func(p *identity.Projection) { p.TenantStatus = "suspended" }, "/api/v1/users/me", 401, problem.CodeInvalidToken},
		{"everything (all event)", invalidation.SubjectAll,
			func(p *identity.Projection) { p.MembershipStatus = "disabled" }, "/api/v1/users/me", 401, problem.CodeInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, envOpt{rules: rulesFile})
			p := defaultProjection()
			p.Permissions = []string{"tenant:read", "notes:read"}
			e.core.SetProjection(p)
			tok := e.token(nil)
			e.wantStatus(e.do("GET", tt.path, tok, nil), 200)
			e.wantStatus(e.do("GET", tt.path, tok, nil), 200) // cached
			tt.change(&p)
			e.core.SetProjection(p)
			// Without an event the cached projection still answers.
			e.wantStatus(e.do("GET", tt.path, tok, nil), 200)
			e.publishAndWait(tt.subject)
			e.reset()
			e.wantProblem(e.do("GET", tt.path, tok, nil), tt.status, tt.code)
			e.wantNothingForwarded()
		})
	}
	t.Run("event for another user keeps the entry", func(t *testing.T) {
		e := start(t, envOpt{})
		tok := e.token(nil)
		e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
		n := e.core.ProjectionFetches.Load()
		e.publishAndWait(invalidation.UserSubject("someone-else-entirely"))
		e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
		// A stripe collision could cost one refetch; the other user's event
		// must not be able to cause more than that.
		if got := e.core.ProjectionFetches.Load() - n; got > 1 {
			t.Fatalf("projection fetches = %d, want at most 1", got)
		}
	})
}

// An invalidation arriving during a slow fetch must not leave a
// stale entry behind.
func TestInvalidationDuringSlowFetch(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	e.core.ProjectionGate.Store(&gate)
	e.core.ProjectionStarted.Store(&started)
	first := make(chan result, 1)
	go func() { first <- e.do("GET", "/api/v1/users/me", tok, nil) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("projection fetch did not start")
	}
	// While coreapi is answering the old projection, the session is revoked
	// and the event arrives.
	p := defaultProjection()
	p.RevokedSessions = []string{sessionID}
	e.core.ProjectionStarted.Store(nil)
	e.publishAndWait(invalidation.UserSubject(userID))
	e.core.ProjectionGate.Store(nil)
	close(gate) // the old answer goes out (it was read before the change)
	if r := <-first; r.status != 200 {
		t.Fatalf("first request: %d", r.status)
	}
	e.core.SetProjection(p)
	e.core.Reset()
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
	e.wantNothingForwarded()
	if n := e.core.ProjectionFetches.Load(); n != 2 {
		t.Fatalf("projection fetches = %d, want 2 (the raced fill must not be cached)", n)
	}
}

// While NATS is down, entries are trusted for MAX_STALENESS only;
// on reconnect everything is purged; the subscription comes back.
func TestNATSOutage(t *testing.T) {
	e := start(t, envOpt{vars: map[string]string{"MAX_STALENESS": "30s"}})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	fetches := func() int64 { return e.core.ProjectionFetches.Load() }
	if fetches() != 1 {
		t.Fatalf("fetches = %d, want 1", fetches())
	}

	e.nats.Stop()
	testenv.Eventually(t, func() error { return testenv.Want("NATS connected", e.app.Subscriber.Connected(), false) })
	// The client reads as disconnected before its disconnect handler has
	// run; the staleness bound counts from the handler's mark, so the
	// clock moves only once the cache has it.
	testenv.Eventually(t, func() error {
		return testenv.Want("bounded staleness", e.app.Projections.BoundedStaleness(), true)
	})
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	if fetches() != 1 {
		t.Fatalf("fetches within staleness = %d, want 1 (cached)", fetches())
	}
	e.clock.Advance(31 * time.Second)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	if fetches() != 2 {
		t.Fatalf("fetches after staleness bound = %d, want 2", fetches())
	}
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	if fetches() != 2 {
		t.Fatalf("fresh entry refetched: %d fetches, want 2", fetches())
	}

	// An event published while the proxy is disconnected is lost; the
	// purge on reconnect covers it.
	p := defaultProjection()
	p.RevokedSessions = []string{sessionID}
	e.core.SetProjection(p)
	e.nats.Start() // same port
	testenv.Eventually(t, func() error { return testenv.Want("NATS connected", e.app.Subscriber.Connected(), true) })
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
	if fetches() != 3 {
		t.Fatalf("fetches after reconnect = %d, want 3 (purged)", fetches())
	}

	// The subscription is back: events apply again.
	e.core.SetProjection(defaultProjection())
	e.publishAndWait(invalidation.UserSubject(userID))
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	// And with the feed up, staleness no longer expires entries.
	e.clock.Advance(time.Minute)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	if fetches() != 4 {
		t.Fatalf("fetches = %d, want 4", fetches())
	}
}

// TestHeartbeatSilence: with NATS connected all along, a proxy that hears
// no outbox heartbeat for NATS_HEARTBEAT_TIMEOUT (coreapi's relays cannot
// publish: a revocation waits in the outbox) trusts its cached projections
// only for MAX_STALENESS, as in an outage, and says so in
// authproxy_invalidation_feed_stale; the next heartbeat ends that with a
// purge, as a reconnection does.
func TestHeartbeatSilence(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"MAX_STALENESS": "30s", "NATS_HEARTBEAT_TIMEOUT": "5s"}})
	stale := func() float64 {
		_, body := get(t, "http://"+e.admin+"/metrics")
		return metricValue(body, "authproxy_invalidation_feed_stale")
	}
	tok := e.token(nil)
	fetches := func() int64 { return e.core.ProjectionFetches.Load() }
	e.publish(invalidation.SubjectHeartbeat)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	if fetches() != 1 || stale() != 0 {
		t.Fatalf("fetches = %d, feed stale %v; want 1, 0", fetches(), stale())
	}

	// The relays stop publishing; the session is revoked meanwhile.
	p := defaultProjection()
	p.RevokedSessions = []string{sessionID}
	e.core.SetProjection(p)
	e.clock.Advance(6 * time.Second)
	testenv.Eventually(t, func() error { return testenv.Want("feed stale", stale(), 1) })
	if !e.app.Subscriber.Connected() {
		t.Fatal("NATS disconnected")
	}
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200) // within the bound
	e.clock.Advance(25 * time.Second)                            // 31 s past the last heartbeat
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
	if fetches() != 2 {
		t.Fatalf("fetches past the bound = %d, want 2", fetches())
	}

	// The relays publish again: the heartbeat ends the staleness, and
	// purges.
	e.publish(invalidation.SubjectHeartbeat)
	testenv.Eventually(t, func() error { return testenv.Want("feed stale", stale(), 0) })
	if e.app.Projections.BoundedStaleness() {
		t.Fatal("bounded staleness after the heartbeat")
	}
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
	if fetches() != 3 {
		t.Fatalf("fetches once the heartbeat is back = %d, want 3 (purged)", fetches())
	}
}

// TestHeartbeatAfterLostRevocation: the relays go silent, a session is
// revoked, and its event never reaches the proxy (published into a NATS
// node cut off from the proxy's, or held by a relay whose publication
// keeps failing while another publishes the heartbeats); the heartbeat
// comes back before the staleness bound ran out. The projection cached
// before the revocation is not trusted again for its TTL: the heartbeat's
// purge makes the proxy ask coreapi.
func TestHeartbeatAfterLostRevocation(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"MAX_STALENESS": "30s", "NATS_HEARTBEAT_TIMEOUT": "5s"}})
	tok := e.token(nil)
	e.publish(invalidation.SubjectHeartbeat)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)

	p := defaultProjection()
	p.RevokedSessions = []string{sessionID}
	e.core.SetProjection(p)
	e.clock.Advance(6 * time.Second)
	testenv.Eventually(t, func() error {
		return testenv.Want("bounded staleness", e.app.Projections.BoundedStaleness(), true)
	})
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200) // within the bound
	e.publish(invalidation.SubjectHeartbeat)
	testenv.Eventually(t, func() error {
		return testenv.Want("bounded staleness", e.app.Projections.BoundedStaleness(), false)
	})
	// Heartbeats every 4 s of the clock from here: the feed stays live,
	// past NATS_HEARTBEAT_TIMEOUT + MAX_STALENESS since the revocation.
	beats := e.app.Metrics.Invalidations.WithLabelValues("heartbeat")
	for range 10 {
		n := testutil.ToFloat64(beats)
		e.publish(invalidation.SubjectHeartbeat)
		testenv.Eventually(t, func() error { return testenv.WantAtLeast("heartbeats", testutil.ToFloat64(beats), n+1) })
		e.clock.Advance(4 * time.Second)
	}
	if e.app.Projections.BoundedStaleness() {
		t.Fatal("bounded staleness with heartbeats every 4 s")
	}
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
}

// TestUnheardRelay: the heartbeats keep coming, but one relay the
// heartbeat rows list (r2) is never heard on auth.outbox.relay: connected
// to a NATS node that lost its route to the proxy's, it publishes (a
// revocation among it) into the void while its server accepts. After
// NATS_HEARTBEAT_TIMEOUT the feed is stale (authproxy_invalidation_feed_stale,
// authproxy_outbox_relays_unheard), cached projections are trusted for
// MAX_STALENESS only, and r2's beat ends it with a purge.
func TestUnheardRelay(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"MAX_STALENESS": "30s", "NATS_HEARTBEAT_TIMEOUT": "5s"}})
	metric := func(name string) float64 {
		_, body := get(t, "http://"+e.admin+"/metrics")
		return metricValue(body, name)
	}
	// wait publishes with publish and waits until the proxy took it in
	// (its count of kind went up).
	wait := func(kind string, publish func()) {
		t.Helper()
		c := e.app.Metrics.Invalidations.WithLabelValues(kind)
		n := testutil.ToFloat64(c)
		publish()
		testenv.Eventually(t, func() error { return testenv.WantAtLeast(kind, testutil.ToFloat64(c), n+1) })
	}
	beat := func(relay string) {
		wait("relay", func() { e.publishMsg(invalidation.SubjectRelay, invalidation.Event{Relay: relay}, nil) })
	}
	// Every 4 s of the clock: a heartbeat (straight from a relay: it
	// leaves the list as it is) and r1's beat.
	tick := func() {
		e.clock.Advance(4 * time.Second)
		wait("heartbeat", func() { e.publish(invalidation.SubjectHeartbeat) })
		beat("r1")
	}
	tok := e.token(nil)
	fetches := func() int64 { return e.core.ProjectionFetches.Load() }
	wait("heartbeat", func() { e.publishHeartbeatRow("r1", "r2") })
	beat("r1")
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	if fetches() != 1 || metric("authproxy_invalidation_feed_stale") != 0 {
		t.Fatalf("fetches = %d, feed stale %v; want 1, 0", fetches(), metric("authproxy_invalidation_feed_stale"))
	}

	// The session is revoked; r2's event never arrives.
	p := defaultProjection()
	p.RevokedSessions = []string{sessionID}
	e.core.SetProjection(p)
	tick()
	e.clock.Advance(2 * time.Second) // r2 listed 6 s ago, the heartbeat and r1 heard 2 s ago
	testenv.Eventually(t, func() error { return testenv.Want("feed stale", metric("authproxy_invalidation_feed_stale"), 1) })
	if v := metric("authproxy_outbox_relays_unheard"); v != 1 {
		t.Fatalf("authproxy_outbox_relays_unheard = %v, want 1", v)
	}
	if !e.app.Subscriber.Connected() {
		t.Fatal("NATS disconnected")
	}
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200) // within the bound
	for range 6 {
		tick()
	}
	// 30 s since r2 was listed, heartbeats all along: past the bound.
	e.clock.Advance(time.Second)
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
	if fetches() != 2 {
		t.Fatalf("fetches past the bound = %d, want 2", fetches())
	}

	// r2 is heard: the staleness ends with a purge.
	beat("r2")
	testenv.Eventually(t, func() error { return testenv.Want("feed stale", metric("authproxy_invalidation_feed_stale"), 0) })
	if e.app.Projections.BoundedStaleness() || metric("authproxy_outbox_relays_unheard") != 0 {
		t.Fatal("bounded staleness, or a relay unheard, once r2 is heard")
	}
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
	if fetches() != 3 {
		t.Fatalf("fetches once r2 is heard = %d, want 3 (purged)", fetches())
	}
}
