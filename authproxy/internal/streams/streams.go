// Package streams carries the proxy's long-lived connections: WebSocket
// upgrades spliced to the upstream after its 101, and streamed responses
// (server-sent events) of routes with a stream_timeout, flushed as they
// arrive. It keeps an index of the open ones by user, session and tenant so
// that an invalidation (or a local logout) re-evaluates them and closes
// those no longer allowed, enforces the per-proxy and per-user caps and,
// on anonymous streams, the per-client-address one, closes a connection
// when its access token expires, and ends them all on shutdown.
package streams

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/decide"
	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/jwks"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/clientkey"
	"github.com/tollgate-auth/tollgate/shared/fasttransport"
)

// Close reasons: the "reason" label of the closed-streams metric, and the
// text of a WebSocket close frame.
const (
	ReasonClient       = "client"        // the client went away
	ReasonUpstream     = "upstream"      // the upstream ended it
	ReasonIdle         = "idle"          // nothing for stream_timeout
	ReasonTokenExpired = "token_expired" // the access token expired
	ReasonShutdown     = "shutdown"      // the proxy is stopping
	ReasonError        = "error"         // a transport error
	// ReasonRouteChanged: a rules reload no longer routes the stream the
	// way it was opened (route gone, websocket or stream_timeout dropped,
	// no longer open to an anonymous caller).
	ReasonRouteChanged = "route_changed"
	// Access withdrawn: the decision outcomes (decide.Outcome.String())
	// inactive, token_version, session_revoked, insufficient_scope,
	// email_unverified, and "no_membership".
	ReasonNoMembership = "no_membership"
	// ReasonKeyRemoved: the key that signed the stream's token left the
	// published key set (a rotation's removal, a compromised key).
	ReasonKeyRemoved = "key_removed"
	// ReasonUnavailable: an event asked for the stream to be decided
	// again and the projection could not be had for Options.RecheckFor
	// (coreapi unreachable), where a request gets 503 unavailable.
	ReasonUnavailable = "unavailable"
	// ReasonRefused: the upstream answered a WebSocket upgrade with
	// another status than 101 (passed on to the client).
	ReasonRefused = "refused"
)

// Errors Serve returns before anything was sent to the client.
var (
	// ErrProxyLimit: the proxy holds MaxConns streams (503).
	ErrProxyLimit = errors.New("streams: proxy stream limit reached")
	// ErrUserLimit: the user holds MaxPerUser streams here (429).
	ErrUserLimit = errors.New("streams: per-user stream limit reached")
	// ErrIPLimit: the client's address holds MaxPerIP anonymous streams
	// here (429).
	ErrIPLimit = errors.New("streams: per-address stream limit reached")
	// ErrDraining: the proxy is shutting down (503).
	ErrDraining = errors.New("streams: shutting down")
	// ErrDial: the upstream could not be reached (503).
	ErrDial = errors.New("streams: upstream unreachable")
	// ErrUpstream: the upstream broke the exchange before answering (502).
	ErrUpstream = errors.New("streams: upstream failed")
)

// ClosedError is what Serve returns for a stream closed (Conn.Close)
// before anything was sent to the client: during its upstream handshake,
// or as it registered. Its upstream connection is closed; the client is
// to be answered as a request refused for Reason would be (the stream's
// request was allowed, the user's requests no longer are).
type ClosedError struct {
	Reason string
	// MaxAuthAge is the max_auth_age of the stream's route, announced
	// with an insufficient_user_authentication refusal.
	MaxAuthAge time.Duration
}

func (e *ClosedError) Error() string {
	return "streams: closed before the upstream answered: " + e.Reason
}

// Projections is the projection cache (re-evaluation reads through it; an
// invalidation has already made the entry a miss).
type Projections interface {
	Get(ctx context.Context, sub, tid, requestID string) (*projection.Entry, error)
	// ValidStamp reports whether the entry whose stamp s is still stands
	// at now, as a cache hit would (the periodic rechecks skip the
	// streams last decided on such an entry).
	ValidStamp(s *projection.Stamp, now time.Time) bool
}

// Options configure a Manager.
type Options struct {
	MaxConns    int           // per proxy; 0: no limit
	MaxPerUser  int           // per user on this proxy; 0: no limit
	MaxPerIP    int           // anonymous ones per client address (clientKey) on this proxy; 0: no limit
	BufferBytes int           // per direction and connection
	DialTimeout time.Duration // upstream connect
	// HandshakeTimeout bounds the upstream's answer to the upgrade or the
	// headers of a streamed response, unless the request sets its own
	// (Request.Timeout).
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one write to the client.
	WriteTimeout time.Duration
	// CloseWait is how long a closed WebSocket waits for the client to
	// answer the close frame before the connection is dropped, and how
	// long a closed stream's writes to the client (one in progress, the
	// close frame, the last chunk) may take instead of WriteTimeout.
	CloseWait time.Duration
	// DownRecheck: while the invalidation feed is down (no event can
	// come), every open stream is decided again this often, through the
	// projection cache, which then trusts an entry only for a bounded
	// staleness (DownRecheckFor); one whose entry still stands is passed
	// (outdated). 0: never.
	DownRecheck time.Duration
	// Refresh: every open stream is decided again this often, through
	// the projection cache, which holds an entry for its TTL at most (an
	// entry past it is fetched again): a stream does not keep what a
	// projection allowed longer than a request may trust that
	// projection, whether or not an event said it changed. One whose
	// entry still stands is passed (outdated). 0: never.
	Refresh time.Duration
	// RecheckFor bounds how long a recheck the projection cache cannot
	// answer is tried again before the stream is closed
	// (ReasonUnavailable): an event said its user's access changed, and
	// what it changed to cannot be known. 0: tried until answered.
	RecheckFor time.Duration
	// Table and Keys are the current route table and signing key set
	// (nil: not checked). A stream registered after a reload (Reroute) or
	// a key set (KeySet) that its request was decided before is held to
	// them as it registers: Reroute and KeySet found nothing to apply to
	// it.
	Table func() *rules.Table
	Keys  func() *jwks.Set
	// Leeway is the token verifier's (TOKEN_LEEWAY): a stream's token
	// expires, as its requests' do, at exp plus it.
	Leeway time.Duration
	Now    func() time.Time
	// Rechecked, when set (tests), runs after each recheck of an open
	// stream has decided (recheckConn), with the reason it closed the
	// stream for ("" kept), once that close is done; a recheck of a
	// stream closed otherwise meanwhile decides nothing.
	Rechecked func(reason string)
}

// Manager holds the open streams.
type Manager struct {
	o     Options
	log   *slog.Logger
	proj  Projections
	m     *metricSet
	mu    sync.Mutex
	all   map[*Conn]struct{}
	users map[string]map[*Conn]struct{}
	ips   map[string]map[*Conn]struct{} // anonymous streams, by clientKey
	tens  map[string]map[*Conn]struct{}
	drain atomic.Bool
	done  chan struct{} // closed when draining and the last stream ends
	pool  sync.Pool     // of *[]byte, BufferBytes each
	seq   atomic.Uint64
	// netDial connects to an upstream (a net.Dialer's; tests watch the
	// socket under a stream's TLS).
	netDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// downStop ends the periodic rechecks of a feed outage (nil: none
	// running); guarded by downMu.
	downMu   sync.Mutex
	downStop chan struct{}
	// refreshOnce starts the periodic rechecks (Options.Refresh) at the
	// first authenticated stream; stopRefresh, closed by Drain, ends them.
	refreshOnce sync.Once
	stopOnce    sync.Once
	stopRefresh chan struct{}
	// bg counts the goroutines that read the projection cache (rechecks,
	// their lookups, the periodic rechecks), so that the cache is closed
	// only once they end (WaitRechecks); none is started once stopped
	// (set by Drain). Both guarded by bgMu.
	bgMu    sync.Mutex
	stopped bool
	bg      sync.WaitGroup
	// routeMu orders the route changes of a stream: Reroute's, and its
	// registration's (a stream routed by a table that is no longer
	// current), so that a stream ends on the route of the newest table.
	routeMu sync.Mutex
}

// New returns a Manager registering its metrics on reg.
func New(o Options, proj Projections, log *slog.Logger, reg prometheus.Registerer) *Manager {
	if o.BufferBytes <= 0 {
		o.BufferBytes = 8 << 10
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.CloseWait <= 0 {
		o.CloseWait = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Manager{o: o, log: log, proj: proj, m: newMetrics(reg), all: map[*Conn]struct{}{},
		users: map[string]map[*Conn]struct{}{}, ips: map[string]map[*Conn]struct{}{}, tens: map[string]map[*Conn]struct{}{},
		done: make(chan struct{}), stopRefresh: make(chan struct{}), netDial: (&net.Dialer{}).DialContext}
	m.pool.New = func() any { b := make([]byte, o.BufferBytes); return &b }
	return m
}

// Open counts the open streams.
func (m *Manager) Open() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.all)
}

// Conn is one open stream. Its identity fields never change.
type Conn struct {
	id       uint64
	kind     string // "websocket" | "sse"
	route    string
	claims   *tokens.Claims // nil: anonymous
	client   string         // an anonymous stream's key in the per-address index (clientKey)
	rt       atomic.Pointer[rules.Route]
	path     string // normalized, for rerouting after a reload
	method   string
	addr     string // the upstream it was opened to (host:port), "" unknown
	tls      bool   // over TLS
	host     string // the upstream's rewrite_host Host it was opened with ("" the client's)
	opened   int64  // unix seconds: the clock step-up ages are read at
	reqID    string
	traceID  string // "" untraced
	expiry   *time.Timer
	once     sync.Once
	closed   chan struct{} // closed by Close
	reason   atomic.Pointer[string]
	smu      sync.Mutex          // closed and shutdown
	shutdown func(reason string) // ends the transport (set by start; nil before)
	// retime has the transport's reads wait for the stream_timeout of
	// the route Reroute just gave the stream (set before start; nil: it
	// reads the route at each wait anyway).
	retime func()

	// rechecking is set while a recheck of the stream runs (schedule):
	// another one asked meanwhile sets again instead of starting its own,
	// and the running one decides once more when it is done.
	rechecking atomic.Bool
	again      atomic.Bool
	// stamp is the stamp of the projection entry the stream's last
	// decision read (nil: none yet): a periodic recheck passes a stream
	// whose entry still stands (outdated).
	stamp atomic.Pointer[projection.Stamp]

	// ended is told how the stream ended, once it opened (started, set
	// by start); nil: nobody is.
	ended   func(End)
	started atomic.Bool
	// toClient and toUpstream count the bytes relayed each way, each by
	// the one goroutine that relays it; read as the stream is released,
	// after those goroutines are done.
	toClient, toUpstream int64
}

// End is how a stream that opened (its 101 or its answer's header passed
// on to the client) ended: Request.Ended is told once, as it is released.
type End struct {
	// Kind is "websocket" or "event_stream" (a streamed answer of a
	// route with a stream_timeout; the metrics' "sse").
	Kind string
	// Reason is the closed-streams metric's reason label.
	Reason string
	// ToClient and ToUpstream are the bytes relayed each way once the
	// stream opened, as authproxy_streams_bytes_total counts them: an
	// event stream relays nothing to the upstream after its request.
	ToClient, ToUpstream int64
}

// Reason is why the connection was closed ("" while open).
func (c *Conn) Reason() string {
	if p := c.reason.Load(); p != nil {
		return *p
	}
	return ""
}

// Close ends the stream for reason (first call wins). A stream closed
// during its upstream handshake wakes it (handshaking): its request is
// refused (refuse) unless the upstream's answer is in and the stream
// starts meanwhile, which then ends it (start).
func (c *Conn) Close(reason string) {
	c.once.Do(func() {
		c.reason.Store(&reason)
		c.smu.Lock()
		close(c.closed)
		f := c.shutdown
		c.smu.Unlock()
		if f != nil {
			f(reason)
		}
	})
}

// handshaking has a Close until the stream starts wake its upstream
// handshake on up (a dial, a write of the request, a read of the answer,
// each bounded only by its timeout, up to a route's hour): up's deadline
// is set in the past, so whatever waits on it returns at once. Closed
// already, it is woken now.
func (c *Conn) handshaking(up net.Conn) {
	wake := func(string) { _ = up.SetDeadline(time.Unix(1, 0)) }
	c.smu.Lock()
	c.shutdown = wake
	c.smu.Unlock()
	if c.Reason() != "" {
		wake("")
	}
}

// setRetime sets the transport's retime.
func (c *Conn) setRetime(f func()) {
	c.smu.Lock()
	c.retime = f
	c.smu.Unlock()
}

// retimed has the open transport wait for its route's new
// stream_timeout.
func (c *Conn) retimed() {
	c.smu.Lock()
	f := c.retime
	c.smu.Unlock()
	select {
	case <-c.closed:
		return
	default:
	}
	if f != nil {
		f()
	}
}

// reserve counts a new stream against the caps; the returned Conn must be
// registered or released.
func (m *Manager) reserve(kind, route string, cl *tokens.Claims, rt *rules.Route, reqID string) (*Conn, error) {
	return m.reserveAt(kind, route, cl, rt, reqID, origin{})
}

// origin is where a stream was opened: its request's normalized path and
// method, the upstream it goes to and the table that routed it, which a
// rules reload reads (Reroute); its request's trace id, which its log
// lines carry (set before the stream is registered: a recheck may log at
// once); and the client it came from (clientKey), which an anonymous
// stream counts against MaxPerIP under.
type origin struct {
	path, method, addr string
	tls                bool
	traceID            string
	table              *rules.Table
	client             string
	ended              func(End)
}

// originOf is r's origin. An anonymous stream counts under its client's
// key (clientkey.Of, as the proxy's API key limits and coreapi's count):
// an IPv6 address by its /64, one that embeds an IPv4 address as that
// address.
func originOf(r *Request) origin {
	return origin{path: r.Path, method: r.Method, addr: r.Addr, tls: r.TLS != nil, traceID: r.TraceID, table: r.Table,
		client: clientkey.Of(r.ClientIP), ended: r.Ended}
}

func (m *Manager) reserveAt(kind, route string, cl *tokens.Claims, rt *rules.Route, reqID string, at origin) (*Conn, error) {
	if cl != nil {
		// A copy: the stream outlives the request, the verifier's cached
		// claims may not.
		cp := *cl
		cl = &cp
	}
	c := &Conn{id: m.seq.Add(1), kind: kind, route: route, claims: cl, reqID: reqID, path: at.path, method: at.method,
		addr: at.addr, tls: at.tls, traceID: at.traceID, opened: m.o.Now().Unix(), closed: make(chan struct{}), ended: at.ended}
	if cl == nil {
		c.client = at.client
	}
	if at.table != nil && rt != nil && rt.Upstream >= 0 && rt.Upstream < len(at.table.Upstreams) {
		c.host = at.table.Upstreams[rt.Upstream].Host
	}
	c.rt.Store(rt)
	m.mu.Lock()
	switch {
	case m.drain.Load():
		m.mu.Unlock()
		return nil, ErrDraining
	case m.o.MaxConns > 0 && len(m.all) >= m.o.MaxConns:
		m.mu.Unlock()
		m.m.refused.WithLabelValues("proxy_limit").Inc()
		return nil, ErrProxyLimit
	case cl != nil && m.o.MaxPerUser > 0 && len(m.users[cl.Sub]) >= m.o.MaxPerUser:
		m.mu.Unlock()
		m.m.refused.WithLabelValues("user_limit").Inc()
		return nil, ErrUserLimit
	case cl == nil && m.o.MaxPerIP > 0 && len(m.ips[c.client]) >= m.o.MaxPerIP:
		m.mu.Unlock()
		m.m.refused.WithLabelValues("ip_limit").Inc()
		return nil, ErrIPLimit
	}
	m.all[c] = struct{}{}
	if cl != nil {
		add(m.users, cl.Sub, c)
		add(m.tens, cl.Tid, c)
	} else {
		add(m.ips, c.client, c)
	}
	m.m.open.WithLabelValues(kind, route).Inc()
	m.mu.Unlock()
	c.armExpiry(m.o.Now(), m.o.Leeway)
	// The request was decided before the stream joined the indexes
	// above: a rules reload, a key set or an invalidation in between
	// found nothing to apply to it. Each is applied from here on (a
	// reload or a key set made current later finds the stream).
	if at.table != nil && m.o.Table != nil && !m.routeNew(c, at.table) {
		return c, nil // closed: route_changed
	}
	if m.o.Keys != nil {
		if s := m.o.Keys(); s != nil && keyRemoved(c, s) {
			m.log.Info("stream closed: signing key removed", c.logArgs("kid", c.claims.Key.Kid, "route", c.route)...)
			c.Close(ReasonKeyRemoved)
			return c, nil
		}
	}
	if cl != nil && m.proj != nil {
		// Deciding once more sees an invalidation (a cache hit, the
		// decision's own entry, when there was none).
		m.schedule(c)
		m.startRefresh()
	}
	return c, nil
}

// routeNew routes c again if the current table is not the one (was) that
// routed its request: a reload made it current after the request was
// routed, and its Reroute may have run before c was registered. It
// reports whether c stays open.
func (m *Manager) routeNew(c *Conn, was *rules.Table) bool {
	m.routeMu.Lock()
	defer m.routeMu.Unlock()
	t := m.o.Table()
	if t == nil || t == was {
		return true
	}
	return m.reroute(c, t)
}

// admit decides an authenticated c once more as its upstream's answer is
// in, before anything of it goes to the client, and closes it if its
// access is withdrawn: the caller then refuses it (start reports it
// closed). An event that withdrew it after the stream registered has its
// recheck running, which waits for coreapi (the event made the entry a
// miss) and could come back only once the stream was open, its answer
// passed on, and the upstream's bytes relayed meanwhile; this lookup
// joins that fetch. A lookup the cache cannot answer leaves c to be
// decided again until answered (schedule), as an event's recheck does.
func (m *Manager) admit(c *Conn) {
	if c.claims == nil || m.proj == nil || c.Reason() != "" {
		return
	}
	reason, err := m.decideWithin(c, m.o.HandshakeTimeout)
	switch {
	case err != nil:
		m.schedule(c)
	case reason != "":
		m.log.Info("stream refused: access withdrawn", c.logArgs("reason", reason, "route", c.route)...)
		c.Close(reason)
	}
}

// armExpiry has c closed when its access token expires (at once if it
// has, by now), from its registration on: a token that expires while the
// upstream has not answered yet wakes the handshake (Conn.handshaking),
// and the stream is refused as a request with it would be, where armed
// only once the stream started it held its upstream connection, and the
// client, up to the upstream's timeout, then opened the stream to close
// it at once. The token expires at exp plus leeway, when the verifier
// starts refusing it: a stream opened with one past exp but within the
// leeway, which its request was allowed with, is not closed as it
// registers.
func (c *Conn) armExpiry(now time.Time, leeway time.Duration) {
	if c.claims != nil && c.claims.Exp > 0 {
		d := time.Unix(c.claims.Exp, 0).Add(leeway).Sub(now)
		c.expiry = time.AfterFunc(max(d, 0), func() { c.Close(ReasonTokenExpired) })
	}
}

// start hands c the close of its transport. It reports false if c is
// closed already (during the handshake, or as it was admitted): shutdown
// has then run, and the caller refuses c, to whose client nothing went
// yet.
func (m *Manager) start(c *Conn, shutdown func(string)) bool {
	c.smu.Lock()
	c.shutdown = shutdown
	select {
	case <-c.closed: // closed during the handshake
		c.smu.Unlock()
		shutdown(c.Reason())
		return false
	default:
	}
	c.smu.Unlock()
	c.started.Store(true)
	return true
}

// refuse releases c, closed before anything went to the client (up, its
// upstream connection, if dialled, is closed), and returns the error that
// has its request answered as a refusal for its reason.
func (m *Manager) refuse(c *Conn, up net.Conn) error {
	if up != nil {
		fasttransport.Abandon(up)
	}
	m.release(c, ReasonError)
	return &ClosedError{Reason: c.Reason(), MaxAuthAge: c.rt.Load().MaxAuthAge}
}

// release forgets c; reason labels the closed-streams metric. A stream
// that opened (start) has its end told (Conn.ended) first, so that its
// line is written before the metric counts it and before a drain waiting
// for the last stream returns.
func (m *Manager) release(c *Conn, reason string) {
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if r := c.Reason(); r != "" {
		reason = r
	}
	m.mu.Lock()
	if _, ok := m.all[c]; !ok {
		m.mu.Unlock()
		return
	}
	delete(m.all, c)
	if cl := c.claims; cl != nil {
		del(m.users, cl.Sub, c)
		del(m.tens, cl.Tid, c)
	} else {
		del(m.ips, c.client, c)
	}
	last := len(m.all) == 0 && m.drain.Load()
	m.mu.Unlock()
	if c.ended != nil && c.started.Load() {
		kind := c.kind
		if kind == "sse" {
			kind = "event_stream"
		}
		c.ended(End{Kind: kind, Reason: reason, ToClient: c.toClient, ToUpstream: c.toUpstream})
	}
	m.m.open.WithLabelValues(c.kind, c.route).Dec()
	m.m.closed.WithLabelValues(c.kind, reason).Inc()
	if last {
		m.closeDone()
	}
}

func (m *Manager) closeDone() {
	select {
	case <-m.done:
	default:
		close(m.done)
	}
}

func add(idx map[string]map[*Conn]struct{}, k string, c *Conn) {
	s := idx[k]
	if s == nil {
		s = map[*Conn]struct{}{}
		idx[k] = s
	}
	s[c] = struct{}{}
}

func del(idx map[string]map[*Conn]struct{}, k string, c *Conn) {
	if s := idx[k]; s != nil {
		delete(s, c)
		if len(s) == 0 {
			delete(idx, k)
		}
	}
}

func (m *Manager) snapshot(idx map[string]map[*Conn]struct{}, k string) []*Conn {
	m.mu.Lock()
	defer m.mu.Unlock()
	var src map[*Conn]struct{}
	if idx == nil {
		src = m.all
	} else {
		src = idx[k]
	}
	out := make([]*Conn, 0, len(src))
	for c := range src {
		out = append(out, c)
	}
	return out
}

// RecheckUser re-evaluates the user's streams (the projection cache has
// already dropped the user's entries).
func (m *Manager) RecheckUser(id string) { m.recheck(m.snapshot(m.users, id)) }

// RecheckTenant re-evaluates the tenant's streams.
func (m *Manager) RecheckTenant(id string) { m.recheck(m.snapshot(m.tens, id)) }

// KeySet closes the streams opened with a token whose signing key is not
// in s, the key set just made current: a request with such a token is
// refused from then on (tokens.Verifier's cached entries check the same
// key pointer), and so is its stream. A stream authenticated otherwise
// (an API key, anonymous) is not affected.
func (m *Manager) KeySet(s *jwks.Set) {
	for _, c := range m.snapshot(nil, "") {
		if !keyRemoved(c, s) {
			continue
		}
		m.log.Info("stream closed: signing key removed", c.logArgs("kid", c.claims.Key.Kid, "route", c.route)...)
		c.Close(ReasonKeyRemoved)
	}
}

// keyRemoved reports whether c was opened with a token whose signing key
// is not in s.
func keyRemoved(c *Conn, s *jwks.Set) bool {
	return c.claims != nil && c.claims.Key != nil && s.Keys[c.claims.Key.Kid] != c.claims.Key
}

// RecheckAll re-evaluates every authenticated stream.
func (m *Manager) RecheckAll() { m.recheck(m.snapshot(nil, "")) }

// recheck decides again for each connection, concurrently (the cache
// coalesces fetches of one user), and closes those now refused. It returns
// at once.
func (m *Manager) recheck(cs []*Conn) {
	for _, c := range cs {
		if c.claims == nil {
			continue
		}
		m.schedule(c)
	}
}

// schedule has c decided again, on a goroutine, unless a recheck of c is
// already running: that one then decides once more when it is done, since
// it may have read the projection from before the invalidation that asked
// for this one. So a stream has at most one recheck at a time, however
// many events name it while the cache cannot answer (each recheck retries
// until it can).
func (m *Manager) schedule(c *Conn) {
	c.again.Store(true)
	if !c.rechecking.CompareAndSwap(false, true) {
		return
	}
	if !m.goBg(func() {
		for {
			c.again.Store(false)
			m.recheckConn(c)
			c.rechecking.Store(false)
			// Asked again meanwhile: decide once more, unless the ask
			// found rechecking unset and started a goroutine of its own.
			if !c.again.Load() || !c.rechecking.CompareAndSwap(false, true) {
				return
			}
		}
	}) {
		c.rechecking.Store(false) // draining: no recheck starts
	}
}

// goBg runs f on a goroutine counted in bg, unless Drain has begun: it
// reports whether f runs.
func (m *Manager) goBg(f func()) bool {
	m.bgMu.Lock()
	defer m.bgMu.Unlock()
	if m.stopped {
		return false
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		f()
	}()
	return true
}

// stopRechecks has no recheck start from now on (Drain).
func (m *Manager) stopRechecks() {
	m.bgMu.Lock()
	m.stopped = true
	m.bgMu.Unlock()
}

// WaitRechecks waits, once Drain has begun, until no recheck of a stream
// reads the projection cache any more, or until ctx ends: a recheck's
// lookup waits for its fetch from coreapi, whose stream may be gone, and
// the cache is to be closed only after it. Drain waits for them itself;
// WaitRechecks waits for those a Drain cut short by its ctx left.
func (m *Manager) WaitRechecks(ctx context.Context) error {
	m.stopRechecks() // a Wait must not run beside an Add of a new one
	done := make(chan struct{})
	go func() {
		m.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("streams: rechecks still running: %w", ctx.Err())
	}
}

// DownRecheckFor is Options.DownRecheck for a projection cache that trusts
// an entry for maxStaleness while the feed is down: a tenth of it, at
// least a second. Each entry stops being trusted at a moment of its own
// (its fetch, or the outage's start, plus maxStaleness), which a recheck
// finds at most one period later: a stream loses its access at most that
// long after its requests do. Decided again only each maxStaleness, a
// revoked user's stream outlived their requests by up to maxStaleness.
func DownRecheckFor(maxStaleness time.Duration) time.Duration {
	return max(maxStaleness/10, time.Second)
}

// RecheckForStaleness is Options.RecheckFor for a projection cache that
// trusts an entry for maxStaleness while the feed is down: maxStaleness,
// and at least recheckRetryMin. With MAX_STALENESS=0 nothing cached is
// trusted once the feed is down and a request whose projection cannot be
// had gets 503 at once: a stream whose recheck cannot be answered is
// closed at its first retry that is not answered either, not tried until
// answered (RecheckFor's 0), which kept it open for as long as coreapi
// stayed away, whatever the event that asked for the recheck had changed.
func RecheckForStaleness(maxStaleness time.Duration) time.Duration {
	return max(maxStaleness, recheckRetryMin)
}

// RefreshFor is Options.Refresh for a projection cache whose entries live
// for ttl (PROJECTION_CACHE_TTL): a tenth of it, at least a second. A
// stream then loses what its projection allowed at most that long after
// the user's requests do, when no event reached the proxy (a change
// answered by a replica still on an older permission catalog after the
// new one's auth.invalidate.all, an outbox that cannot publish while no
// heartbeat is watched). Decided again only on events, it kept it until
// its token expired.
func RefreshFor(ttl time.Duration) time.Duration {
	return max(ttl/10, time.Second)
}

// startRefresh starts deciding every stream again each Refresh, until
// Drain: at the first authenticated stream, so that a proxy that carries
// none runs nothing for it.
func (m *Manager) startRefresh() {
	if m.o.Refresh <= 0 {
		return
	}
	m.refreshOnce.Do(func() { m.goBg(func() { m.recheckEvery(m.o.Refresh, m.stopRefresh) }) })
}

// feedDown starts deciding every stream again each DownRecheck, until
// feedUp: with the feed down no event will say that one lost its access.
func (m *Manager) feedDown() {
	if m.o.DownRecheck <= 0 {
		return
	}
	m.downMu.Lock()
	defer m.downMu.Unlock()
	if m.downStop != nil || m.drain.Load() { // Drain sets drain, then calls feedUp
		return
	}
	stop := make(chan struct{})
	if m.goBg(func() { m.recheckEvery(m.o.DownRecheck, stop) }) {
		m.downStop = stop
	}
}

// feedUp stops the rechecks feedDown started.
func (m *Manager) feedUp() {
	m.downMu.Lock()
	defer m.downMu.Unlock()
	if m.downStop != nil {
		close(m.downStop)
		m.downStop = nil
	}
}

// recheckEvery decides every stream again each d, until stop is closed:
// the periodic rechecks of Options.Refresh and of a feed outage.
func (m *Manager) recheckEvery(d time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			m.recheck(m.outdated(m.snapshot(nil, "")))
		}
	}
}

// outdated returns those of cs that were not yet decided, or whose last
// decision read a projection entry that no longer stands (past its TTL,
// invalidated, beyond the bounded staleness of a feed outage): one that
// stands would be the lookup's answer again, and the decision the same
// (a rules reload decides the streams again itself).
func (m *Manager) outdated(cs []*Conn) []*Conn {
	now := m.o.Now()
	out := cs[:0]
	for _, c := range cs {
		if s := c.stamp.Load(); s == nil || !m.proj.ValidStamp(s, now) {
			out = append(out, c)
		}
	}
	return out
}

// Retry bounds of a recheck the projection cache could not answer.
const (
	recheckRetryMin = 100 * time.Millisecond
	recheckRetryMax = 5 * time.Second
)

// recheckConn decides again for c until the projection cache answers (a
// refused fetch, e.g. beyond PROJECTION_MAX_FETCHES when many users'
// streams are rechecked at once, or coreapi briefly unreachable, is tried
// again after a jittered backoff: no later event may come to decide it),
// or c ends. Unanswered for RecheckFor, c is closed (ReasonUnavailable):
// what asked for the recheck may have withdrawn its access, and the
// requests of its user get 503 meanwhile; the stream was kept open for as
// long as coreapi stayed away.
//
// RecheckFor counts from the recheck's start, and bounds each lookup too
// (attemptFor): a coreapi that takes the connection and never answers
// fails a lookup only at PROJECTION_TIMEOUT, and counted from the first
// failure, checked as each one came back, the stream stayed open up to
// two of those past RecheckFor.
func (m *Manager) recheckConn(c *Conn) {
	wait := recheckRetryMin
	since := m.o.Now()
	warned := false
	for {
		reason, err := m.decideWithin(c, m.attemptFor(since))
		if errors.Is(err, ErrDraining) { // Drain closes c
			return
		}
		if err == nil {
			open := c.Reason() == "" // else closed meanwhile: nothing was decided
			if reason != "" {
				m.log.Info("stream closed: access withdrawn", c.logArgs("reason", reason, "route", c.route)...)
				c.Close(reason)
			}
			if open {
				m.rechecked(reason)
			}
			return
		}
		now := m.o.Now()
		if m.o.RecheckFor > 0 && now.Sub(since) >= m.o.RecheckFor {
			m.log.Warn("stream closed: its access could not be checked", c.logArgs("err", err, "for", now.Sub(since).Round(time.Millisecond), "route", c.route)...)
			open := c.Reason() == ""
			c.Close(ReasonUnavailable)
			if open {
				m.rechecked(ReasonUnavailable)
			}
			return
		}
		if !warned { // once per recheck: retries are not news
			warned = true
			m.log.Warn("stream recheck", c.logArgs("err", err)...)
		}
		t := time.NewTimer(wait/2 + rand.N(wait/2))
		select {
		case <-c.closed:
			t.Stop()
			return
		case <-t.C:
		}
		if !m.holds(c) { // released without a Close (its hijack never ran)
			return
		}
		wait = min(wait*2, recheckRetryMax)
	}
}

// rechecked runs Options.Rechecked, if set, for a recheck that decided
// reason.
func (m *Manager) rechecked(reason string) {
	if m.o.Rechecked != nil {
		m.o.Rechecked(reason)
	}
}

// holds reports whether c is still open here.
func (m *Manager) holds(c *Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.all[c]
	return ok
}

// attemptFor bounds one lookup of a recheck that began at since:
// HandshakeTimeout, and within RecheckFor what is left of it, at least
// recheckRetryMin (a lookup the cache answers at once is not cut short).
func (m *Manager) attemptFor(since time.Time) time.Duration {
	d := m.o.HandshakeTimeout
	if m.o.RecheckFor > 0 {
		d = min(d, max(m.o.RecheckFor-m.o.Now().Sub(since), recheckRetryMin))
	}
	return d
}

// errLookupTimeout: the projection cache did not answer a stream's lookup
// within its bound.
var errLookupTimeout = fmt.Errorf("%w: stream's projection lookup timed out", projection.ErrUnavailable)

// decideWithin is decide given up after d, or once c is closed ("",
// nil: nothing left to decide). The cache's lookup waits for its fetch
// whatever its context says (requests for one entry share it): it is
// waited for here on a goroutine of its own, which ends with the fetch
// (and which Drain waits for). Once Drain has begun, nothing is looked up
// (ErrDraining).
func (m *Manager) decideWithin(c *Conn, d time.Duration) (string, error) {
	type result struct {
		reason string
		err    error
	}
	if c.Reason() != "" {
		return "", nil
	}
	done := make(chan result, 1)
	if !m.goBg(func() {
		reason, err := m.decide(c, d)
		done <- result{reason, err}
	}) {
		return "", ErrDraining
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-done:
		return r.reason, r.err
	case <-c.closed:
		return "", nil
	case <-t.C:
		return "", errLookupTimeout
	}
}

// decide returns why c is no longer allowed, or "", or the error of a
// projection cache that could not answer (try again later), its context
// bounded by d.
func (m *Manager) decide(c *Conn, d time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	e, err := m.proj.Get(ctx, c.claims.Sub, c.claims.Tid, c.reqID)
	switch {
	case errors.Is(err, projection.ErrNoMembership):
		return ReasonNoMembership, nil
	case err != nil:
		return "", err
	}
	s := e.Stamp()
	c.stamp.Store(&s)
	return admits(c, e), nil
}

// admits returns why the projection e, as c's token sees it, would no
// longer admit c on its route (or ""): what a request decides, the token's
// scope narrowing e and the route's second-factor requirements included.
// Ages are read at the stream's opening: a stream is one long request, so
// a max_auth_age met then is met for its whole life, while a route that
// now requires a second factor the token lacks closes it.
func admits(c *Conn, e *projection.Entry) string {
	if c.claims.Scope != nil {
		e = e.Narrow(c.claims.Scope)
	}
	s := decide.NewSubject(c.claims, e)
	rt := c.rt.Load()
	out := s.Decide(rt)
	if out == decide.Allow {
		out, _ = s.Authn(rt, c.method, c.path, c.opened)
	}
	if out != decide.Allow {
		return out.String()
	}
	return ""
}

// Reroute applies a reloaded route table to the open streams: each is
// matched again by its path and method; one the table no longer routes
// the way it was opened is closed (route_changed): its route is gone, no
// longer streams, no longer admits an anonymous caller, now goes to
// another upstream address (the stream's connection is to the old one),
// or would now reach the upstream at another path (strip_prefix, or a
// prefix it strips, changed) or with another Host (rewrite_host changed):
// the stream is to the resource the old route named, not the new one.
// The others take their new route, its stream_timeout included, and are
// decided again (permissions may have changed).
func (m *Manager) Reroute(t *rules.Table) {
	m.routeMu.Lock()
	defer m.routeMu.Unlock()
	var keep []*Conn
	for _, c := range m.snapshot(nil, "") {
		if c.path != "" && m.reroute(c, t) {
			keep = append(keep, c)
		}
	}
	m.recheck(keep)
}

// reroute matches c again in t: it closes c (route_changed) if t no
// longer routes it the way it was opened, else gives it its route in t.
// It reports whether c stays open. Called with routeMu held.
func (m *Manager) reroute(c *Conn, t *rules.Table) bool {
	var r *rules.Route
	if g, _ := t.Match([]byte(c.path), nil); g != nil {
		r = g.Pick([]byte(c.method))
	}
	switch {
	case r == nil, c.kind == "websocket" && !r.Websocket, c.kind == "sse" && r.StreamTimeout == 0,
		c.claims == nil && r.Access != rules.Public && r.Access != rules.Optional,
		c.addr != "" && movedFrom(c, t, r), forwardedElsewhere(c.rt.Load(), r):
		c.Close(ReasonRouteChanged)
		return false
	}
	// A new stream_timeout applies to the open stream too: from now on
	// it waits at most the new one (a silence already longer ends it at
	// once).
	if old := c.rt.Swap(r); old == nil || old.StreamTimeout != r.StreamTimeout {
		c.retimed()
	}
	return true
}

// movedFrom reports whether route r of table t sends c's requests to
// another upstream address (or scheme) than the one c was opened to.
func movedFrom(c *Conn, t *rules.Table, r *rules.Route) bool {
	if r.Upstream < 0 || r.Upstream >= len(t.Upstreams) {
		return true
	}
	up := t.Upstreams[r.Upstream]
	return up.Addr != c.addr || up.TLS != c.tls || up.Host != c.host
}

// forwardedElsewhere reports whether route r forwards a path to another
// upstream path than old does: one strips its prefix and the other not,
// or both strip prefixes that differ.
func forwardedElsewhere(old, r *rules.Route) bool {
	return old != nil && (old.StripPrefix != r.StripPrefix || r.StripPrefix && old.Prefix != r.Prefix)
}

// Drain refuses new streams and rechecks, closes the open streams
// (WebSocket close 1001, SSE end) and waits until ctx ends for them to
// finish and for the rechecks running to end (WaitRechecks): the
// projection cache they read is closed after.
func (m *Manager) Drain(ctx context.Context) error {
	m.mu.Lock()
	m.drain.Store(true)
	empty := len(m.all) == 0
	m.mu.Unlock()
	m.stopRechecks()
	m.feedUp()
	m.stopOnce.Do(func() { close(m.stopRefresh) })
	if empty {
		m.closeDone()
	}
	for _, c := range m.snapshot(nil, "") {
		c.Close(ReasonShutdown)
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return m.WaitRechecks(ctx)
}

func (m *Manager) buf() *[]byte  { return m.pool.Get().(*[]byte) }
func (m *Manager) put(b *[]byte) { m.pool.Put(b) }

// headerReaders are the readers of an upstream's answer header, each
// forward.ResponseHeaderBytes: a stream takes as large a header as a
// forwarded request (a few large Set-Cookie fields, a
// Content-Security-Policy), but holds its reader only while the header is
// read, not for as long as it is open.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, forward.ResponseHeaderBytes) }}

// headerReader is a pooled reader of r for an answer's header.
func headerReader(r io.Reader) *bufio.Reader {
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// releaseHeader returns br to the pool and what it had read past the
// header (the first bytes of the body or of the upgraded connection, sent
// with the answer), copied; nil if nothing.
func releaseHeader(br *bufio.Reader) []byte {
	var rest []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		rest = bytes.Clone(b)
	}
	br.Reset(nil)
	headerReaders.Put(br)
	return rest
}

// after is r preceded by rest (r itself if rest is empty): the bytes read
// along with an answer's header, then the connection they came from.
func after(rest []byte, r io.Reader) io.Reader {
	if len(rest) == 0 {
		return r
	}
	return io.MultiReader(bytes.NewReader(rest), r) // drops rest once read
}

// dial connects to the upstream at addr for the stream s, over TLS when
// cfg is set (the handshake within the same DialTimeout). A certificate
// that does not verify is a failed connection, as a refused one is. The
// connection's deadline is then set at handshake from now, for the
// upstream's answer. A Close of s gives up the dial at once; once
// connected, it wakes the rest of the handshake (Conn.handshaking): the
// deadline is set before, so that it does not undo a wake.
func (m *Manager) dial(s *Conn, addr string, cfg *tls.Config, handshake time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.o.DialTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	c, err := m.netDial(ctx, "tcp", addr)
	if err == nil && cfg != nil {
		cfg = cfg.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(c, cfg)
		if err = tc.HandshakeContext(ctx); err != nil {
			c.Close()
		}
		c = tc
	}
	if err != nil {
		return nil, errors.Join(ErrDial, err)
	}
	_ = c.SetDeadline(m.o.Now().Add(handshake))
	s.handshaking(c)
	return c, nil
}

// closeUpstream closes a stream's upstream connection as the stream's
// reason says: with TLS's close_notify when the upstream ended it, else
// without (fasttransport.Abandon: revoked, expired, shut down, idle, a
// write or read that failed or timed out, the client gone). Go's
// tls.Conn.Close writes the alert with a deadline of its own, 5 s, and to
// an upstream that stopped reading (its receive window full) that write
// waited all of it, on the goroutine that closed the stream: a
// revocation's, a drain's, which close streams one after another.
func closeUpstream(c net.Conn, reason string) {
	if reason == ReasonUpstream {
		_ = c.Close()
		return
	}
	fasttransport.Abandon(c)
}

// Reset ends a client's connection c with a reset (RST) instead of the
// orderly close (FIN) that ends a body read until the close: an HTTP/1.0
// client reading an answer without a length learns that way that it was
// cut short, where a close would have it take what came for the whole
// body. c is fasthttp's hijacked connection; one whose TCP connection it
// cannot reach is closed as usual.
func Reset(c net.Conn) {
	raw := c
	if u, ok := raw.(interface{ UnsafeConn() net.Conn }); ok {
		raw = u.UnsafeConn()
	}
	if l, ok := raw.(interface{ SetLinger(sec int) error }); ok && l.SetLinger(0) == nil {
		_ = raw.Close()
		return
	}
	_ = c.Close()
}

type metricSet struct {
	open    *prometheus.GaugeVec   // kind, route
	closed  *prometheus.CounterVec // kind, reason
	refused *prometheus.CounterVec // reason
	bytes   *prometheus.CounterVec // direction
	down    prometheus.Counter     // upstream to client
	upBytes prometheus.Counter     // client to upstream
}

func newMetrics(reg prometheus.Registerer) *metricSet {
	s := &metricSet{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authproxy_streams_open", Help: "Open long-lived connections (WebSocket, streamed responses), by route prefix.",
		}, []string{"kind", "route"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_streams_closed_total", Help: "Long-lived connections closed, by reason.",
		}, []string{"kind", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_streams_refused_total", Help: "Long-lived connections refused by a cap.",
		}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_streams_bytes_total", Help: "Bytes relayed on long-lived connections, by direction.",
		}, []string{"direction"}),
	}
	// Each cap's refusals are exported at zero, so that an alert on
	// their increase sees the first one.
	for _, r := range []string{"proxy_limit", "user_limit", "ip_limit"} {
		s.refused.WithLabelValues(r)
	}
	s.down = s.bytes.WithLabelValues("to_client")
	s.upBytes = s.bytes.WithLabelValues("to_upstream")
	if reg != nil {
		reg.MustRegister(s.open, s.closed, s.refused, s.bytes)
	}
	return s
}

// Target is the projection cache as the invalidation feed and the server
// see it.
type Target interface {
	Get(ctx context.Context, sub, tid, requestID string) (*projection.Entry, error)
	// ValidStamp reports whether the entry Get returned whose stamp s is
	// still stands at now (the server's warm path checks it instead of a
	// second lookup).
	ValidStamp(s *projection.Stamp, now time.Time) bool
	InvalidateUser(id string)
	InvalidateTenant(id string)
	InvalidateAll()
	Disconnected(at time.Time)
	Reconnected()
}

// Invalidator passes every invalidation to the cache first, then has the
// affected streams re-evaluated (through the cache, now a miss).
type Invalidator struct {
	Target
	Streams *Manager
}

// InvalidateUser evicts the user and re-evaluates the user's streams. A
// session's revocation arrives as the user's event.
func (i Invalidator) InvalidateUser(id string) {
	i.Target.InvalidateUser(id)
	i.Streams.RecheckUser(id)
}

// InvalidateTenant evicts the tenant and re-evaluates its streams.
func (i Invalidator) InvalidateTenant(id string) {
	i.Target.InvalidateTenant(id)
	i.Streams.RecheckTenant(id)
}

// InvalidateAll evicts everything and re-evaluates every stream.
func (i Invalidator) InvalidateAll() {
	i.Target.InvalidateAll()
	i.Streams.RecheckAll()
}

// Disconnected puts the cache in bounded staleness and has every stream
// decided again periodically (Options.DownRecheck) until Reconnected.
func (i Invalidator) Disconnected(at time.Time) {
	i.Target.Disconnected(at)
	i.Streams.feedDown()
}

// Reconnected purges the cache (events may have been missed) and
// re-evaluates every stream.
func (i Invalidator) Reconnected() {
	i.Target.Reconnected()
	i.Streams.feedUp()
	i.Streams.RecheckAll()
}

// logArgs are a log line's pairs and the stream's request id and, when
// its request was traced, trace id.
func (c *Conn) logArgs(kv ...any) []any {
	kv = append(kv, "request_id", c.reqID)
	if c.traceID != "" {
		kv = append(kv, "trace_id", c.traceID)
	}
	return kv
}
