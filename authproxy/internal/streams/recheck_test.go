package streams

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// slowCore answers every projection after a delay, with the tenant's
// status of the moment.
type slowCore struct{ suspended atomic.Bool }

func (f *slowCore) Fetch(_ context.Context, user, tenant, _ string) (*identity.Projection, error) {
	time.Sleep(20 * time.Millisecond)
	st := identity.StatusActive
	if f.suspended.Load() {
		st = "suspended"
	}
	return &identity.Projection{UserID: user, TenantID: tenant, UserStatus: identity.StatusActive,
		MembershipStatus: identity.StatusActive, TenantStatus: st}, nil
}

// A tenant's suspension closes every stream of the tenant, even when its
// users' streams outnumber the projection fetches the cache runs at once
// (the surplus of a recheck is refused as overloaded and tried again).
func TestRecheckBeyondFetchBound(t *testing.T) {
	core := &slowCore{}
	pc, err := projection.New(projection.Options{TTL: time.Minute, MaxStaleness: time.Minute, MaxFetches: 2}, core, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	pc.Reconnected()
	m := New(Options{}, pc, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	var cs []*Conn
	defer func() { closeAfterDrain(t, m, pc, cs...) }()
	for i := range 10 {
		c, err := m.reserveAt("sse", "/x", &tokens.Claims{Sub: fmt.Sprintf("u%d", i), Tid: "t", Sid: fmt.Sprintf("s%d", i)}, rt, "r", origin{path: "/x", method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		m.start(c, func(reason string) { m.release(c, reason) })
		cs = append(cs, c)
	}
	core.suspended.Store(true)
	inv := Invalidator{Target: pc, Streams: m}
	inv.InvalidateTenant("t")
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range cs {
		for c.Reason() == "" && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if c.Reason() != "inactive" {
			t.Errorf("stream of %s: reason %q, want inactive", c.claims.Sub, c.Reason())
		}
	}
}

// downCore answers no projection: coreapi is unreachable.
type downCore struct{}

func (downCore) Fetch(context.Context, string, string, string) (*identity.Projection, error) {
	return nil, projection.ErrUnavailable
}

// While the cache cannot answer, a recheck retries until it can; every
// further invalidation naming the stream must not start another one
// beside it. Fifty purges (a flapping NATS link, a burst of tenant
// events) over twenty streams started a thousand goroutines, each
// retrying for as long as coreapi stayed away.
func TestRechecksOfAStreamDoNotPileUp(t *testing.T) {
	pc, err := projection.New(projection.Options{TTL: time.Minute, MaxStaleness: time.Minute}, downCore{}, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	pc.Reconnected()
	m := New(Options{}, pc, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	const streams = 20
	var cs []*Conn
	defer func() { closeAfterDrain(t, m, pc, cs...) }()
	for i := range streams {
		c, err := m.reserveAt("sse", "/x", &tokens.Claims{Sub: fmt.Sprintf("u%d", i), Tid: "t", Sid: fmt.Sprintf("s%d", i)}, rt, "r", origin{path: "/x", method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		m.start(c, func(reason string) { m.release(c, reason) })
		cs = append(cs, c)
	}
	inv := Invalidator{Target: pc, Streams: m}
	for range 50 {
		inv.InvalidateAll()
	}
	// Counted by what they run, not by the process's total, which other
	// goroutines (the cache's, the runtime's, earlier tests' winding
	// down) move as well; and within a moment: a recheck that just handed
	// over to the one a purge started is still on its way out. Piled up,
	// they would all stay, each retrying while coreapi is away.
	eventually.Within(t, 5*time.Second, func() error {
		if n := rechecking(); n > streams {
			return fmt.Errorf("%d rechecks running after 50 purges over %d streams, want at most one per stream", n, streams)
		}
		return nil
	})
}

// TestUnansweredRecheckClosesTheStream: an event asked for a stream to be
// decided again while coreapi is unreachable: the user's requests get 503
// unavailable, and the stream, unanswered for RecheckFor, is closed
// ("unavailable", WebSocket 1013) instead of staying open for as long as
// coreapi stays away. Without a bound it stays open.
func TestUnansweredRecheckClosesTheStream(t *testing.T) {
	for _, bound := range []time.Duration{300 * time.Millisecond, 0} {
		t.Run(fmt.Sprintf("RecheckFor=%v", bound), func(t *testing.T) { unansweredRecheck(t, bound) })
	}
}

func unansweredRecheck(t *testing.T, bound time.Duration) {
	pc, err := projection.New(projection.Options{TTL: time.Minute, MaxStaleness: time.Minute}, downCore{}, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	pc.Reconnected()
	var logs logbuffer.Buffer
	m := New(Options{RecheckFor: bound}, pc, slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	c, err := m.reserveAt("sse", "/x", &tokens.Claims{Sub: "u", Tid: "t", Sid: "s"}, rt, "r", origin{path: "/x", method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAfterDrain(t, m, pc, c)
	closed := make(chan string, 1)
	m.start(c, func(reason string) {
		closed <- reason
		m.release(c, reason)
	})
	start := time.Now()
	Invalidator{Target: pc, Streams: m}.InvalidateUser("u")
	select {
	case reason := <-closed:
		if bound == 0 {
			t.Fatalf("closed (%s) without a bound", reason)
		}
		if reason != ReasonUnavailable || time.Since(start) < bound {
			t.Fatalf("closed %q after %v, want %q after at least %v", reason, time.Since(start), ReasonUnavailable, bound)
		}
		if !strings.Contains(logs.String(), "stream closed: its access could not be checked") {
			t.Fatalf("no log line:\n%s", logs.String())
		}
	case <-time.After(3 * time.Second):
		if bound != 0 {
			t.Fatalf("still open 3 s after a recheck bounded to %v could not be answered", bound)
		}
	}
}

// rechecking is the number of goroutines running a stream's recheck
// (Manager.schedule's).
func rechecking() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "streams.(*Manager).schedule.func1") {
			count++
		}
	}
	return count
}

// gatedCore answers with the tenant's status as of the start of the
// fetch; once armed, its next fetch says so on started and waits for
// release before answering.
type gatedCore struct {
	suspended atomic.Bool
	armed     atomic.Bool
	started   chan struct{}
	release   chan struct{}
}

func (f *gatedCore) Fetch(_ context.Context, user, tenant, _ string) (*identity.Projection, error) {
	st := identity.StatusActive
	if f.suspended.Load() {
		st = "suspended"
	}
	if f.armed.CompareAndSwap(true, false) {
		close(f.started)
		<-f.release
	}
	return &identity.Projection{UserID: user, TenantID: tenant, UserStatus: identity.StatusActive,
		MembershipStatus: identity.StatusActive, TenantStatus: st}, nil
}

// An invalidation that arrives while a recheck of the stream is running,
// its fetch from before the change, is not lost: the stream is decided
// once more after it.
func TestRecheckAskedDuringARecheck(t *testing.T) {
	core := &gatedCore{started: make(chan struct{}), release: make(chan struct{})}
	pc, err := projection.New(projection.Options{TTL: time.Minute, MaxStaleness: time.Minute}, core, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	pc.Reconnected()
	if _, err := pc.Get(context.Background(), "u", "t", ""); err != nil { // the stream's opening decision
		t.Fatal(err)
	}
	m := New(Options{}, pc, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	c, err := m.reserveAt("sse", "/x", &tokens.Claims{Sub: "u", Tid: "t", Sid: "s"}, rt, "r", origin{path: "/x", method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAfterDrain(t, m, pc, c)
	m.start(c, func(reason string) { m.release(c, reason) })
	deadline := time.Now().Add(5 * time.Second)
	for c.rechecking.Load() && time.Now().Before(deadline) { // the decision once registered
		time.Sleep(time.Millisecond)
	}
	inv := Invalidator{Target: pc, Streams: m}
	core.armed.Store(true)
	inv.InvalidateTenant("t") // a recheck starts; its fetch reads "active"
	<-core.started
	core.suspended.Store(true)
	inv.InvalidateTenant("t") // while it runs
	close(core.release)
	deadline = time.Now().Add(5 * time.Second)
	for c.Reason() == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Reason() != "inactive" {
		t.Fatalf("reason %q, want inactive: the second invalidation was not decided", c.Reason())
	}
}

// stuckCore is a projection cache whose coreapi takes a connection and
// does not answer: each lookup fails only after its fetch's timeout.
type stuckCore struct {
	noStamps
	timeout time.Duration
}

func (p stuckCore) Get(context.Context, string, string, string) (*projection.Entry, error) {
	time.Sleep(p.timeout)
	return nil, projection.ErrUnavailable
}

// TestStuckRecheckClosedWithinItsBound: a recheck whose lookups coreapi
// never answers (each fails only at the fetch's timeout, longer than
// RecheckFor) closes the stream "unavailable" once RecheckFor has passed
// since it began, not once a lookup comes back. RecheckFor was counted
// from the end of the first failed lookup and checked only as one ended:
// the stream stayed open two fetch timeouts past it.
func TestStuckRecheckClosedWithinItsBound(t *testing.T) {
	const bound = 300 * time.Millisecond
	m := New(Options{RecheckFor: bound, HandshakeTimeout: time.Minute}, stuckCore{timeout: 3 * time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	rt := &rules.Route{Prefix: "/x", StreamTimeout: time.Minute}
	start := time.Now()
	c, err := m.reserveAt("sse", "/x", &tokens.Claims{Sub: "u", Tid: "t", Sid: "s"}, rt, "r", origin{path: "/x", method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan string, 1)
	m.start(c, func(reason string) { closed <- reason })
	defer c.Close("test")
	select {
	case reason := <-closed:
		if reason != ReasonUnavailable || time.Since(start) < bound {
			t.Fatalf("closed %q after %v, want %q after at least %v", reason, time.Since(start), ReasonUnavailable, bound)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("still open %v after its recheck began, RecheckFor %v", time.Since(start).Round(time.Millisecond), bound)
	}
}
