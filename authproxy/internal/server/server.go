// Package server is the proxy's HTTP layer: the Fiber app with its
// middleware in a fixed order (request id and access log/timing outermost,
// then header hygiene, then path normalization), the authorization handler
// that ties the route table, token verifier and projection cache together,
// forwarding with identity headers signed per upstream, and the admin
// endpoints.
package server

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gofiber/fiber/v2"
	"github.com/tollgate-auth/tollgate/authproxy/internal/decide"
	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/headers"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/natsinv"
	"github.com/tollgate-auth/tollgate/authproxy/internal/pathnorm"
	"github.com/tollgate-auth/tollgate/authproxy/internal/percpu"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/streams"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/clip"
	"github.com/tollgate-auth/tollgate/shared/fasttransport"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
)

// Verifier verifies bearer tokens and caches the outcome by digest.
type Verifier interface {
	// CachedAux: e's Aux (the *warm attached to it) comes with it.
	CachedAux(d *tokens.Name, now time.Time) (e *tokens.Entry, aux unsafe.Pointer, hit bool, err error)
	VerifyEntry(ctx context.Context, token []byte, d *tokens.Name) (*tokens.Entry, error)
	// Ours: token has the shape of one of coreapi's access tokens (a key
	// id of the current set, or coreapi's issuer whatever the key id);
	// nothing is verified or fetched.
	Ours(token []byte) bool
}

// Projections returns the projection of a user in a tenant, and forgets
// what coreapi's answer to a request the proxy forwarded names as
// invalidated (coreAnswered), as the NATS event will (natsinv.Evicter).
type Projections interface {
	Get(ctx context.Context, sub, tid, requestID string) (*projection.Entry, error)
	// ValidStamp reports whether the entry Get returned whose stamp s is
	// still stands at now.
	ValidStamp(s *projection.Stamp, now time.Time) bool
	natsinv.Evicter
}

// warm is what the server keeps on a cached token's entry: the projection
// it was last authorized with, the header values taken from the token, and
// the signing state after the identity block for the upstream key last
// used. It is immutable: a change replaces it.
//
// A warm request reads this struct and its block of header lines, and of
// the token's entry only what the lookup compares: not the claims, nor
// the projection (unless its route requires permissions). Each of those is
// a line of memory at the end of one more pointer, and once the working
// set outgrows the CPU's caches (other processes evict it between two
// requests) every such line is a cache miss that the next one waits for.
type warm struct {
	// stamp is the projection's, checked with Projections.ValidStamp on
	// each use (so one cache lookup serves a warm request); sub the
	// decision's inputs from the token and the projection.
	stamp projection.Stamp
	sub   decide.Subject
	// principal is X-Auth-Principal: user, or api_key (apikey.go).
	principal string
	// tok, once signed, are the identity header lines the token itself
	// decides, as identityBlock writes them: "X-Auth-Key-Id", principal,
	// user, tenant, session, amr and auth time, each "Name: value\r\n".
	// peLines is the projection's Lines (its header here, so that the
	// lines' memory is one pointer away from this struct, as tok's is).
	tok, peLines string
	// lines: no identity header value of this state (nor the signer's key
	// id) holds a CR or LF, so its headers can be written as one block of
	// lines (identityBlock); otherwise they are set one by one, and
	// fasthttp turns each line break into a space.
	lines bool
	// mac is held in the struct, not behind a pointer: a warm request
	// reads the state it signs with from the same memory as the rest
	// (mac.Signer() is nil until the state is made).
	mac identity.IdentityMAC
	pe  *projection.Entry // nil: the anonymous identity (newAnonymous)
}

// WarmBytes is the heap the warm state of a cached token costs (on top of
// tokens.EntryBytes), signed for one upstream: the struct, its header
// values and the HMAC state. It is measured by TestWarmBytesMeasured,
// which fails when the real cost drifts from it.
const WarmBytes = 512

// newWarm is the warm state of a token with claims cl and projection e,
// not yet signed for an upstream.
func newWarm(cl *tokens.Claims, e *projection.Entry) *warm {
	if cl.Scope != nil {
		e = e.Narrow(cl.Scope)
	}
	return &warm{pe: e, stamp: e.Stamp(), sub: decide.NewSubject(cl, e), principal: cl.Principal}
}

// signed is w with the HMAC state over the identity block for signer and
// the identity header lines (tok, block) under its key id.
func (w *warm) signed(cl *tokens.Claims, signer *identity.KeySigner) *warm {
	e := w.pe
	id := identity.Identity{Principal: w.principal, UserID: cl.Sub, TenantID: cl.Tid, SessionID: cl.Sid,
		Roles: e.P.Roles, Permissions: e.P.Permissions, EmailVerified: e.P.EmailVerified, AMR: cl.AMR, AuthTime: cl.AuthTime}
	amr, authTime := identity.JoinList(cl.AMR), identity.FormatAuthTime(cl.AuthTime)
	lines := !anyLineBreak(signer.KeyID(), w.principal, cl.Sub, cl.Tid, cl.Sid, e.Roles, e.Perms, amr, authTime)
	n := &warm{pe: w.pe, stamp: w.stamp, sub: w.sub, mac: *signer.NewIdentityMAC(&id),
		principal: w.principal, peLines: e.Lines, lines: lines}
	n.setLines(signer.KeyID(), cl, amr, authTime)
	return n
}

// setLines sets w.tok.
func (w *warm) setLines(keyID string, cl *tokens.Claims, amr, authTime string) {
	var buf [384]byte // the lines of usual ids fit: built here, copied once
	b := appendLine(buf[:0], identity.HeaderKeyID, keyID)
	b = appendLine(b, identity.HeaderPrincipal, w.principal)
	b = appendLine(b, identity.HeaderUserID, cl.Sub)
	b = appendLine(b, identity.HeaderTenantID, cl.Tid)
	b = appendLine(b, identity.HeaderSessionID, cl.Sid)
	if amr != "" {
		b = appendLine(b, identity.HeaderAMR, amr)
	}
	if authTime != "" {
		b = appendLine(b, identity.HeaderAuthTime, authTime)
	}
	w.tok = string(b)
}

// anyLineBreak reports whether any of vs holds a CR or LF.
func anyLineBreak(vs ...string) bool {
	for _, v := range vs {
		if strings.ContainsAny(v, "\r\n") {
			return true
		}
	}
	return false
}

// Deps are what the app needs; all but Now are required.
type Deps struct {
	Log          *slog.Logger
	Metrics      *metrics.Metrics
	Router       *Router
	Verifier     Verifier
	Projections  Projections
	Keys         Keys // API keys (apikey.go)
	TrustedCIDRs []netip.Prefix
	Now          func() time.Time
	// Streams carries WebSocket upgrades and stream routes; nil: none.
	Streams *streams.Manager
	// Tracing traces requests; nil: off (trace.go).
	Tracing *Tracing
	// Lines is Log's output, when it is one: access lines are encoded by
	// the proxy and buffered there (accesslog.go); nil: written through
	// Log.
	Lines *logging.Lines
}

// Router is a route table with, per upstream, its client and the signer of
// its identity headers. It is immutable; a reload swaps in a new one, and a
// request keeps the one it started with.
type Router struct {
	Table   *rules.Table
	Clients []*fasthttp.HostClient // by upstream index
	Signers []*identity.KeySigner  // by upstream index

	anonOnce sync.Once
	anon     []*warm // by upstream index (anonymous)
}

// anonymous is the warm state of the anonymous identity for upstream i:
// its identity header lines and the signing state after them, made once
// per router, so that an anonymous request (a public route, an optional
// one without a token) is signed and written like a warm one.
func (r *Router) anonymous(i int) *warm {
	r.anonOnce.Do(func() {
		r.anon = make([]*warm, len(r.Signers))
		for j, signer := range r.Signers {
			r.anon[j] = newAnonymous(signer)
		}
	})
	return r.anon[i]
}

// newAnonymous is the anonymous identity's warm state under signer: no
// projection; its lines (tok) are the key id, the principal and email
// verified (false), as setIdentity sets them.
func newAnonymous(signer *identity.KeySigner) *warm {
	id := identity.Identity{Principal: identity.PrincipalAnonymous}
	w := &warm{mac: *signer.NewIdentityMAC(&id), principal: id.Principal, lines: !anyLineBreak(signer.KeyID())}
	b := appendLine(nil, identity.HeaderKeyID, signer.KeyID())
	b = appendLine(b, identity.HeaderPrincipal, id.Principal)
	b = appendLine(b, identity.HeaderEmailVerified, identity.BoolString(false))
	w.tok = string(b)
	return w
}

// HeaderAllowance is the room the request header buffer keeps beside the
// largest accepted bearer token, for the request line and the other
// headers (cookies, a User-Agent, trace context).
const HeaderAllowance = 12 << 10

// ReadBufferSize is the listener's per-connection read buffer, which
// bounds a request's header (beyond it: 431): 16 KiB, or more when
// MAX_TOKEN_BYTES needs it, so that every token the setting accepts can
// be read with ordinary headers beside it.
func ReadBufferSize(maxTokenBytes int) int {
	return max(16<<10, maxTokenBytes+HeaderAllowance)
}

// Options are the app's limits.
type Options struct {
	MaxBodyBytes int
	// BodyMemory bounds the bytes of the body buffers readBody holds at
	// once (0: no bound).
	BodyMemory    int64
	MaxTokenBytes int
	ReadTimeout   time.Duration
	WriteTimeout  time.Duration
	IdleTimeout   time.Duration
	AccessLog     bool
	// APIKeyFailures wrong secrets per key and client IP within
	// APIKeyFailWindow lock the pair out (0: the defaults, apikey.go).
	APIKeyFailures   int
	APIKeyFailWindow time.Duration
	CORS             *CORS // nil: off (cors.go)
	// Linger bounds how long a connection answered 413 is read before it
	// is closed (0: DefaultLinger, body.go).
	Linger time.Duration
}

// Server is the public app.
type Server struct {
	d        Deps
	tracing  *Tracing
	o        Options
	app      *fiber.App
	pool     sync.Pool // of *state
	router   atomic.Pointer[Router]
	draining atomic.Bool
	// refusals of principals on coreapi's account routes (coreRefusal).
	refusals accountRefusals
	// lingering counts the connections in lingerClose (body.go).
	lingering atomic.Int64
	// bodyBytes counts the bytes of the body buffers readBody holds.
	bodyBytes atomic.Int64
	idPrefix  string
	idSeq     *percpu.Sequence
	// xffWarnAt is when (unix ns) the next untrusted-X-Forwarded-For
	// warning may be logged.
	xffWarnAt atomic.Int64
	// refusalLogs bounds the "token refused" log lines (logInvalid).
	refusalLogs logging.Budget
	// failureLogs bounds the warnings and errors about requests whose
	// call to an upstream or coreapi failed (logFailure).
	failureLogs logging.Budget
	keyLimit    *keyLimiter
	// ctxClock: Deps.Now is the real clock, so a request's start can be
	// fasthttp's reading of it (RequestCtx.Time).
	ctxClock bool
	// decisions are authproxy_decisions_total's counters, indexed by
	// outcome, resolved once so that counting neither allocates nor
	// looks anything up.
	decisions []*metrics.Counter
}

// decided counts an access decision (Decide, then Authn when it allowed).
func (s *Server) decided(out decide.Outcome) {
	if int(out) >= 0 && int(out) < len(s.decisions) && s.decisions[out] != nil {
		s.decisions[out].Inc()
	}
}

// xffWarnEvery spaces the untrusted-X-Forwarded-For warnings.
const xffWarnEvery = time.Minute

// state is the per-request scratch space, pooled so that a warm request
// allocates almost nothing.
type state struct {
	start  time.Time
	authAt time.Time
	// waited: the request verified a token or fetched a projection, so
	// the clock is read again for its access decision (see authorize).
	waited    bool
	reqID     []byte
	path      []byte
	lpath     []byte // scratch of route matching
	uri       []byte
	sig       []byte
	ts        []byte
	ip        []byte
	ipOf      netip.Addr // the client address ipText is the text of
	ipText    []byte
	hdr       []byte            // the identity block (identityBlock)
	hdrFwd    int               // the forwarding lines' length at the start of hdr
	xff       []byte            // a trusted peer's X-Forwarded-For, extended (setForwarded)
	xfp       []byte            // a trusted peer's X-Forwarded-Prefix, extended (setForwardedPrefix)
	line      []byte            // the access line (accessLine)
	times     logging.TimeCache // the access line's time, formatted once a second
	sentReqID bool              // the client sent an X-Request-Id

	// clientReqID is the X-Request-Id a client sent that did not become
	// the request's id (an untrusted peer's, or a malformed one), cut to
	// requestid.MaxLen bytes: logged apart (client_request_id).
	clientReqID []byte

	mac       identity.MACScratch
	digest    tokens.Name       // the bearer token's cache name
	keyDigest [sha256.Size]byte // an API key's SHA-256 (apikey.go)
	closeConn bool
	trusted   bool
	unparsed  bool // refused before fasthttp read the request line
	upgrade   headers.Upgrade
	// seen is what headers.Scan found among the client's fields, at the
	// start (its RequestID is copied to reqID and dropped).
	seen headers.Seen
	// edited: a stage changed the client's fields since headers.Scan
	// (seen's Authorization may no longer be the header's).
	edited   bool
	wsBearer bool   // Authorization came from Sec-WebSocket-Protocol
	cookie   []byte // the client's Cookie fields, as sent (begin)
	xkey     []byte // X-API-Key's value, copied (apikey.go)
	xkeyN    int    // X-API-Key headers sent
	// body holds a streamed request body readBody read (reused by the
	// next request up to maxKeptBody); bodyHeld is the bytes of it
	// counted in Server.bodyBytes (not 0 once readBody used it: the
	// request's body may be it); bodyLimit is the route's max_body_bytes
	// (0: none or not routed).
	body      []byte
	bodyHeld  int64
	bodyLimit int
	// linger: refused for a body over its limit, which may still be
	// arriving; the connection ends after the answer (linger).
	linger bool
	// manyFields: refused for more than headers.MaxFields fields, whose
	// table observe drops (dropFields).
	manyFields bool
	// untilClose: an HTTP/1.0 request's answer streamed without a length,
	// written until the connection closes (closeDelimited).
	untilClose bool
	// answer holds a short streamed answer body readAnswer read (reused).
	answer  []byte
	route   string
	outcome string
	// Who the request was for, for the access log and the span: the
	// principal, and the claims its user and tenant ids are read from
	// (ids), only when a line is written: a warm request does not read
	// the claims themselves (see warm).
	principal  string
	claims     *tokens.Claims
	upstream   string
	tokenCache string // "hit" or "miss" when a bearer was looked up
	trace      reqTrace
}

// ids are the user and tenant the request was for ("" when anonymous).
func (st *state) ids() (userID, tenantID string) {
	if st.claims == nil {
		return "", ""
	}
	return st.claims.Sub, st.claims.Tid
}

// New builds the app.
func New(d Deps, o Options) *Server {
	// With the real clock, a request's start is the time fasthttp read for
	// it before calling the handler: one clock read fewer per request.
	ctxClock := d.Now == nil
	if d.Now == nil {
		d.Now = time.Now
	}
	o.Linger = cmp.Or(o.Linger, DefaultLinger)
	var b [8]byte
	_, _ = rand.Read(b[:])
	s := &Server{d: d, o: o, refusals: newAccountRefusals(), ctxClock: ctxClock, tracing: d.Tracing, idPrefix: hex.EncodeToString(b[:]) + "-", idSeq: percpu.NewSequence(), keyLimit: newKeyLimiter(o.APIKeyFailures, o.APIKeyFailWindow),
		refusalLogs: logging.Budget{PerSecond: refusalLogsPerSecond}, failureLogs: logging.Budget{PerSecond: refusalLogsPerSecond}}
	// A count no later line takes is written about a second after the
	// burst's last refusal.
	s.refusalLogs.Report = logging.CountLine(d.Log, "token refusals not logged", refusalLogsPerSecond)
	s.failureLogs.Report = logging.CountLine(d.Log, "upstream failures not logged", refusalLogsPerSecond)
	s.router.Store(d.Router)
	d.Metrics.Lingering(s.lingering.Load)
	d.Metrics.BodyBytes(s.bodyBytes.Load)
	for _, out := range decide.Outcomes() {
		for int(out) >= len(s.decisions) {
			s.decisions = append(s.decisions, nil)
		}
		s.decisions[out] = d.Metrics.Decisions.WithLabelValues(out.String())
	}
	s.pool.New = func() any {
		return &state{reqID: make([]byte, 0, 64), path: make([]byte, 0, 256), lpath: make([]byte, 0, 256),
			uri: make([]byte, 0, 512), sig: make([]byte, 0, 64), ts: make([]byte, 0, 20), ip: make([]byte, 0, 64), xkey: make([]byte, 0, 80), line: make([]byte, 0, 512)}
	}
	s.app = fiber.New(fiber.Config{
		AppName:                      "tollgate-authproxy",
		DisableStartupMessage:        true,
		BodyLimit:                    o.MaxBodyBytes,
		ReadTimeout:                  o.ReadTimeout,
		WriteTimeout:                 o.WriteTimeout,
		IdleTimeout:                  o.IdleTimeout,
		ReadBufferSize:               ReadBufferSize(o.MaxTokenBytes),
		Network:                      fiber.NetworkTCP,
		DisablePreParseMultipartForm: true,
		// Bodies are read once a request is allowed (body.go).
		StreamRequestBody: true,
		ErrorHandler:      s.errorHandler,
	})
	// fasthttp's errors about a request it could not read would quote up
	// to 200 bytes from each end of its headers (where a token's tail or
	// a cookie may be); what it quotes even so, logging.Redact drops.
	s.app.Server().SecureErrorLogMessage = true
	// A request that waits for "100 Continue" before sending its body is
	// refused from its headers instead, when they decide the answer (its
	// Content-Length over the limit, its credential refused).
	s.app.Server().ExpectHandler = s.expectContinue
	// One handler for every request: observe runs the stages in order
	// (stages), each given the request's state directly.
	s.app.Use(s.observe)
	// A method Fiber does not know (PROPFIND, a typo) would be answered by
	// Fiber itself, in plain text, before any handler ran: no request id,
	// problem body, metrics or access log. One that no route names is
	// refused here like any other request the proxy cannot serve: 501
	// (RFC 9110 section 9.1); one a route names runs the stages as any
	// request does (extensionMethod). A request line's HTTP version the
	// proxy does not speak is refused too (httpVersion).
	fiberHandler := s.app.Server().Handler
	s.app.Server().Handler = func(ctx *fasthttp.RequestCtx) {
		known := problem.KnownMethod(ctx.Method())
		if !known && !s.router.Load().Table.Knows(ctx.Method()) {
			s.unknownMethod(ctx)
			return
		}
		if !ctx.Request.Header.IsHTTP11() && !s.httpVersion(ctx) {
			return
		}
		if !known {
			s.extensionMethod(ctx)
			return
		}
		fiberHandler(ctx)
	}
	return s
}

// extensionMethod runs the stages for a request whose method is outside
// the standard ones and named by a route (PROPFIND, QUERY), which Fiber's
// router would refuse: the proxy's one handler (observe) is called
// directly, with a context of the app as Fiber's router gives it.
//
//go:noinline
func (s *Server) extensionMethod(ctx *fasthttp.RequestCtx) {
	c := s.app.AcquireCtx(ctx)
	defer s.app.ReleaseCtx(c)
	_ = s.observe(c) // observe renders its errors itself
}

// expectContinue is the listener's hook for a request with "Expect:
// 100-continue", whose client waits for a "100 Continue" before it sends
// the body (RFC 9110 section 10.1.1), answered from the headers alone
// when they decide the answer, as for a request whose body was read (the
// same problem, request id, metrics and access line), the body never
// sent; fasthttp then closes the connection:
//   - a method neither Fiber nor the route table knows: 501, as the
//     listener's handler answers it before anything else;
//   - what hygiene refuses from the fields as sent (fieldsRefused: a
//     folded field line or one ended by a bare LF, a Transfer-Encoding
//     other than chunked, a Host no host has, a field name with a space,
//     trailers, h2c, too many fields or fields to remove): 400 or 431,
//     as the handler answers it;
//   - a path normalization refuses (expectPath): 400, as normalize
//     answers it;
//   - an API key or an access token in the query string: 400, as
//     keyHygiene answers it (queryRefused);
//   - X-API-Key beside another X-API-Key or an Authorization field: 400
//     ambiguous_credentials, as keyHygiene answers it before routing
//     (expectKeyHeader);
//   - no route for the path 404, a method its routes do not take 405
//     (501 for one the table does not know), as authorize answers them;
//   - a Content-Length over its route's limit (or MAX_BODY_BYTES): 413;
//   - on a protected or optional route, what authorize would answer the
//     request's credential (expectAuth): none on a protected route 401;
//     a bearer token that does not verify or is remembered as refused,
//     or an API key malformed, unknown or revoked, 401 invalid_token; a
//     credential whose cached projection lacks a permission or a
//     verified address 403; the signing keys not loaded or the identity
//     service failing 503 (or 502). A client would otherwise upload its
//     whole body (up to the route's limit) to be refused.
//
// Any other request is told to continue, and so is one the handler must
// judge itself: a CORS preflight from an allowed origin (answered once
// routed, no credential looked at), on a route that ignores a bad bearer (the token
// endpoint), or with fields hygiene may change first (expectAuth,
// expectKeyHeader). Its
// body is read once the request is allowed (readBody). A valid credential
// is continued and judged again by the handler, from the caches the hook
// filled.
func (s *Server) expectContinue(ctx *fasthttp.RequestCtx) int {
	c := s.app.AcquireCtx(ctx)
	defer s.app.ReleaseCtx(c)
	st := s.pool.Get().(*state)
	s.beginOutside(c, st)
	if m := ctx.Method(); !problem.KnownMethod(m) && !s.router.Load().Table.Knows(m) {
		// The listener's handler answers it first (unknownMethod).
		return s.expectRefused(c, st, errNotImplemented)
	}
	if err := s.expectFields(c, st); err != nil {
		return s.expectRefused(c, st, err)
	}
	h := &ctx.Request.Header
	// The handler's order: the path (normalize), the query and X-API-Key
	// (keyHygiene), the route, a preflight, the method.
	p, err := expectPath(h)
	if err != nil {
		return s.expectRefused(c, st, err)
	}
	if q := ctx.URI().QueryString(); len(q) > 0 {
		if err := s.queryRefused(st, q); err != nil {
			return s.expectRefused(c, st, err)
		}
	}
	if st.seen.APIKey {
		judged, err := s.expectKeyHeader(h, st)
		if err != nil {
			return s.expectRefused(c, st, err)
		}
		if !judged {
			return s.expectContinued(st)
		}
	}
	// The request is routed here, on the router of the moment, and the
	// handler takes the same one (routerOf): a reload between the two
	// must not judge its headers by one route table and its body by
	// another.
	rt := s.router.Load()
	ctx.SetUserValue(expectRouter{}, rt)
	var route *rules.Route
	if p != nil {
		g, _ := rt.Table.Match(p, nil)
		if g == nil {
			st.outcome = "no_route"
			return s.expectRefused(c, st, errNotFound)
		}
		st.route = g.Prefix
		if h.IsOptions() && s.isPreflight(h) {
			// Answered by the handler once routed, before any credential
			// (preflight): a preflight carries none.
			return s.expectContinued(st)
		}
		if route = g.Pick(h.Method()); route == nil {
			return s.expectRefused(c, st, methodNotAllowed(st, rt, g, h.Method()))
		}
	}
	n := h.ContentLength() // -1 chunked: refused while read, past the limit
	limit := s.o.MaxBodyBytes
	if n > 0 && route != nil && route.MaxBodyBytes > 0 {
		limit = route.MaxBodyBytes
	}
	if n > limit {
		st.outcome = "refused"
		return s.expectRefused(c, st, errTooLarge)
	}
	if route == nil || route.Access != rules.Protected && route.Access != rules.Optional || route.IgnoreBadBearer {
		// A refused credential on a route that ignores it goes on as
		// anonymous: the handler judges it, once.
		return s.expectContinued(st)
	}
	if err := s.expectJudged(c, st, route); err != nil {
		return s.expectRefused(c, st, err)
	}
	return s.expectContinued(st)
}

// expectKeyHeader is keyHygiene's refusal (err) of an X-API-Key beside
// another one or an Authorization field (apiKeyHeader), which the handler
// answers before routing. judged is false when hygiene may add or remove
// one of those fields first and so change the answer: a WebSocket
// subprotocol's bearer (protocolBearer), or a Connection naming either
// field when they are ambiguous as sent; the handler judges such a
// request itself. A Connection naming neither leaves them as they are.
//
//go:noinline
func (s *Server) expectKeyHeader(h *fasthttp.RequestHeader, st *state) (judged bool, err error) {
	if st.seen.WSProtocol {
		return false, nil
	}
	if st.seen.Hops > 0 && (headers.ConnectionNames(h, headers.APIKeyHeader) || headers.ConnectionNames(h, fiber.HeaderAuthorization)) &&
		keyAmbiguous(h) {
		return false, nil
	}
	return true, s.apiKeyHeader(h, st)
}

// expectContinued gives back the state of a request the hook tells to
// continue (the handler begins it anew).
func (s *Server) expectContinued(st *state) int {
	st.seen.Authorization, st.claims = nil, nil // not kept in the pooled state
	st.manyFields = false
	s.pool.Put(st)
	return fasthttp.StatusContinue
}

// expectRefused answers err from the headers of a request waiting for
// "100 Continue", as observe would, and returns the status; fasthttp
// closes the connection. A request refused for its number of fields gives
// up their table, as observe has it do.
//
//go:noinline
func (s *Server) expectRefused(c *fiber.Ctx, st *state, err error) int {
	many := st.manyFields
	st.manyFields = false // the pooled state: not the next request's
	s.respond(c, st, err)
	if many {
		dropFields(&c.Request().Header)
	}
	return c.Response().StatusCode()
}

// expectFields runs fieldsRefused, turning a panic into a 500, as
// expectJudged does.
func (s *Server) expectFields(c *fiber.Ctx, st *state) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.panicked(c, st, r)
		}
	}()
	return s.fieldsRefused(c, st)
}

// expectJudged runs expectAuth, turning a panic into a 500, as next does
// for the handler: the hook runs the handler's steps, outside its
// recovery.
func (s *Server) expectJudged(c *fiber.Ctx, st *state, route *rules.Route) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.panicked(c, st, r)
		}
	}()
	return s.expectAuth(c, st, route)
}

// expectAuth is the answer authorize would give the credential of a
// request on route (protected or optional, not ignoring bad bearers),
// from its headers; nil when it would go on (a valid credential, or none
// on an optional route), or when stages before authorize may change what
// it reads (hygiene: a Connection naming fields, trailers, an upgrade, a
// WebSocket subprotocol; a CORS preflight), which the handler then
// decides. The credential is judged by the handler's own steps (token,
// resolveKey), which cache their outcome: a valid one costs the handler
// a cache hit. Permissions are judged only when the cached projection
// is at hand (as for a warm request); the rest of the decision (a second
// factor, the principal's coreapi routes, a key's streams) is left to
// the handler, as is anything the signing keys or the identity service
// could not decide.
func (s *Server) expectAuth(c *fiber.Ctx, st *state, route *rules.Route) error {
	h := &c.Request().Header
	if st.seen.Authorizations == 0 && !st.seen.APIKey && !st.seen.WSProtocol {
		if route.Access == rules.Protected {
			st.outcome = "no_token"
			return errNoToken
		}
		return nil
	}
	if st.seen.Upgrade || st.seen.WSProtocol || s.o.CORS != nil && h.IsOptions() ||
		st.seen.Hops > 0 && (headers.HasTrailers(h) || headers.ConnectionDrops(h)) {
		return nil
	}
	st.trusted = s.trusted(c)
	st.xkey, st.xkeyN = st.xkey[:0], 0
	if st.seen.APIKey {
		if err := s.apiKeyHeader(h, st); err != nil {
			return err
		}
	}
	raw, haveD := st.seen.BearerCandidate(s.o.MaxTokenBytes)
	if st.xkeyN > 0 || haveD && apikey.HasPrefix(raw) {
		_, w, err := s.resolveKey(c, st, raw)
		if err != nil {
			return err
		}
		return s.expectDecision(c, st, route, w, errKeyInvalid)
	}
	te, w, err := s.token(c, st, h, raw, haveD)
	if te == nil {
		if f, err := noTokenFallback(st, route, err); f == refuse {
			return err
		}
		return nil
	}
	if w == nil || !s.d.Projections.ValidStamp(&w.stamp, st.start) {
		return nil // the projection is fetched by the handler
	}
	st.principal, st.claims = w.principal, te.Claims()
	return s.expectDecision(c, st, route, w, errInvalidToken)
}

// expectDecision is the refusal of route by the credential's cached
// decision inputs w (invalid: the credential's 401), counted as authorize
// counts it; nil when they allow it, which the handler then decides
// whole.
func (s *Server) expectDecision(c *fiber.Ctx, st *state, route *rules.Route, w *warm, invalid *httpError) error {
	out := w.sub.Decide(route)
	if out == decide.Allow {
		return nil
	}
	s.decidedAt(st)
	st.outcome = out.String()
	s.decided(out)
	return s.refusal(c, st, out, invalid)
}

// beginOutside is begin for a request answered outside observe (the
// expectation hook, the error handler), where fasthttp's request time
// (RequestCtx.Time) is still the connection's previous request's, or its
// opening's: the start is read here, or the answer would take the
// connection's idle time as its duration.
func (s *Server) beginOutside(c *fiber.Ctx, st *state) {
	s.begin(c, st)
	st.start = s.d.Now()
}

// expectPath is the path of a request normalized from its headers, as
// the handler's normalize has it (the request target parsed as fasthttp
// parses it for the handler: an absolute-form target's path, without its
// query or fragment), or the handler's refusal of it (pathRefused: 400,
// "*" among them); nil and no error for a target fasthttp does not parse,
// which the handler judges.
//
//go:noinline
func expectPath(h *fasthttp.RequestHeader) ([]byte, error) {
	u := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(u)
	if err := u.Parse(h.Host(), h.RequestURI()); err != nil {
		return nil, nil
	}
	p, err := pathnorm.Append(nil, u.PathOriginal())
	if err != nil {
		return nil, pathRefused(h, err)
	}
	return p, nil
}

// expectRouter is the key of the router expectContinue routed a request
// with, among the request's user values.
type expectRouter struct{}

// routerOf is the router of a request: the one the expectation hook
// routed it with, if it ran (expectContinue), else the current one.
func (s *Server) routerOf(ctx *fasthttp.RequestCtx) *Router {
	if rt, ok := ctx.UserValue(expectRouter{}).(*Router); ok {
		return rt
	}
	return s.router.Load()
}

// errNotImplemented refuses a request method the proxy does not know.
var errNotImplemented = &httpError{status: 501, code: problem.CodeNotImplemented, detail: "request method not implemented"}

// unknownMethod answers a request whose method Fiber does not know, as
// errorHandler answers the requests fasthttp could not read.
//
//go:noinline
func (s *Server) unknownMethod(ctx *fasthttp.RequestCtx) {
	c := s.app.AcquireCtx(ctx)
	defer s.app.ReleaseCtx(c)
	_ = s.errorHandler(c, errNotImplemented)
}

// errVersion refuses a request line whose HTTP version is not 1.x.
var errVersion = &httpError{status: 505, code: problem.CodeBadRequest, detail: "HTTP version not supported"}

// httpVersion checks the version of a request line that is not HTTP/1.1
// (fasthttp reads any "HTTP/d.d" and keeps it, and the forwarded request
// line would carry it to the upstream as the client wrote it): HTTP/1.0
// goes on; a later 1.x is read as 1.1 and forwarded as HTTP/1.1 (RFC 9110
// section 2.5: an intermediary sends its own version); any other major
// version (HTTP/0.9, HTTP/2.0 spelled as HTTP/1 text) is refused with 505
// and reaches no upstream. It reports whether the request goes on.
//
//go:noinline
func (s *Server) httpVersion(ctx *fasthttp.RequestCtx) bool {
	p := ctx.Request.Header.Protocol()
	switch {
	case string(p) == "HTTP/1.0":
		return true
	case len(p) == len("HTTP/1.1") && string(p[:len("HTTP/1.")]) == "HTTP/1.":
		ctx.Request.Header.SetProtocol("HTTP/1.1")
		return true
	}
	c := s.app.AcquireCtx(ctx)
	defer s.app.ReleaseCtx(c)
	_ = s.errorHandler(c, errVersion)
	return false
}

// Handler is the request handler the proxy's listener runs: Fiber's,
// behind the check of the request method (benchmarks and tests drive it
// directly).
func (s *Server) Handler() fasthttp.RequestHandler {
	s.app.Handler() // builds the route tree, as the listener does at start
	return s.app.Server().Handler
}

// App is the Fiber app (tests drive app.Handler() directly).
func (s *Server) App() *fiber.App { return s.app }

// SetRouter swaps in a new router; requests already routed keep theirs.
func (s *Server) SetRouter(r *Router) { s.router.Store(r) }

// Router is the current router.
func (s *Server) Router() *Router { return s.router.Load() }

// Drain makes new requests on kept-alive connections close them, ahead of
// ShutdownWithContext.
func (s *Server) Drain() { s.draining.Store(true) }

// observe is the outermost stage: request id, timing, access log, and
// the single place where errors become responses.
func (s *Server) observe(c *fiber.Ctx) error {
	st := s.pool.Get().(*state)
	s.begin(c, st)
	if s.tracing != nil {
		s.traceBegin(c, st)
	}
	err := s.next(c, st)
	if c.Request().IsBodyStream() { // refused before its body was read
		s.discardBody(c, st)
	}
	if err != nil {
		s.render(c, st, err)
	}
	s.finish(c, st)
	if st.bodyHeld != 0 { // readBody used the state's buffer
		c.Request().SetBodyRaw(nil) // no longer pointing at it
		s.bodyBytes.Add(-st.bodyHeld)
		st.bodyHeld = 0
	}
	if st.linger {
		st.linger = false
		if !s.draining.Load() {
			s.linger(c)
		} else {
			c.Response().SetConnectionClose()
		}
	}
	if st.manyFields {
		// The connection ends after the answer: the request's header, and
		// with it its Connection field and HTTP version, which fasthttp
		// reads after the handler, is gone.
		st.manyFields = false
		dropFields(&c.Request().Header)
		c.Response().SetConnectionClose()
	}
	if st.untilClose {
		st.untilClose = false
		s.closeDelimited(c)
	}
	s.pool.Put(st)
	return nil
}

// dropFields gives up the field table of h, which fasthttp's Reset keeps
// at its largest for the connection's next requests (and, once the
// connection ends, for another's, the context being pooled). Only its
// method is still read, by fasthttp (a HEAD's answer has no body).
func dropFields(h *fasthttp.RequestHeader) {
	head := h.IsHead()
	*h = fasthttp.RequestHeader{}
	if head {
		h.SetMethod(fasthttp.MethodHead)
	}
}

// stages runs the request's stages in order: hygiene, normalization, then
// routing and authorization, which forwards (or answers a CORS preflight
// once routed). Order matters: rules and authorization see only the clean
// request. A stage's error ends the request (observe renders it).
func (s *Server) stages(c *fiber.Ctx, st *state) error {
	if err := s.hygiene(c, st); err != nil {
		return err
	}
	if err := s.normalize(c, st); err != nil {
		return err
	}
	return s.authorize(c, st)
}

// begin starts a request's timer and gives it its id.
func (s *Server) begin(c *fiber.Ctx, st *state) {
	st.start = time.Time{}
	if s.ctxClock {
		st.start = c.Context().Time()
	}
	if st.start.IsZero() {
		st.start = s.d.Now()
	}
	st.waited = false
	st.route, st.outcome, st.closeConn, st.trusted = "", "", false, false
	st.principal, st.claims, st.upstream, st.tokenCache = identity.PrincipalAnonymous, nil, "", ""
	st.authAt = time.Time{}
	st.bodyLimit = 0
	st.path = st.path[:0]
	st.unparsed = false
	st.upgrade, st.wsBearer = headers.UpgradeNone, false
	h := &c.Request().Header
	// The cookies as the client sent them: Scan's iteration makes fasthttp
	// parse them, and forward its parse (headers.RawCookie).
	var cookie bool
	st.cookie, cookie = headers.RawCookie(st.cookie[:0], h)
	st.seen = headers.Scan(h)
	if cookie {
		headers.SetRawCookie(h, st.cookie)
	}
	in := st.seen.RequestID
	st.seen.RequestID = nil // request memory: not kept in the pooled state
	st.edited = st.seen.Upgrade || st.seen.WSProtocol || st.seen.APIKey
	st.sentReqID = in != nil
	st.clientReqID = st.clientReqID[:0]
	// The id the services log, audit rows record and the signature binds
	// comes from the client only through a trusted proxy in front (as
	// X-Forwarded-For does): anyone else could give its requests another
	// client's id.
	if in != nil && requestid.Valid(b2s(in)) && s.trusted(c) {
		st.reqID = append(st.reqID[:0], in...)
	} else {
		if in != nil {
			st.clientReqID = append(st.clientReqID, in[:min(len(in), requestid.MaxLen)]...)
		}
		// Unique, not secret: a random per-process prefix and a number
		// from a per-CPU sequence (no counter shared by the cores).
		st.reqID = append(st.reqID[:0], s.idPrefix...)
		st.reqID = appendHex(st.reqID, s.idSeq.Next())
	}
}

// appendHex appends v in lower-case hex without leading zeros
// (strconv.AppendUint(dst, v, 16), TestAppendHex): a shift and a table load
// a digit, where the library's loop for any base costs several times that.
func appendHex(dst []byte, v uint64) []byte {
	var b [16]byte
	i := len(b)
	for {
		i--
		b[i] = "0123456789abcdef"[v&15]
		v >>= 4
		if v == 0 {
			return append(dst, b[i:]...)
		}
	}
}

// finish sets the request id and connection handling on the response, and
// records the request in the metrics and the access log.
func (s *Server) finish(c *fiber.Ctx, st *state) {
	// Set last: forwarding replaces the whole response.
	c.Response().Header.SetCanonical(requestIDKey, st.reqID)
	if s.o.CORS != nil {
		s.corsHeaders(c)
	}
	if st.closeConn || s.draining.Load() {
		c.Response().SetConnectionClose()
	}
	status := c.Response().StatusCode()
	var d time.Duration
	if s.ctxClock {
		d = time.Since(st.start) // the monotonic clock alone: one read
	} else {
		d = s.d.Now().Sub(st.start)
	}
	s.d.Metrics.ObserveRequest(status, d.Seconds())
	// Checked first: the attributes below would be built (and allocate)
	// even when the level drops the record.
	if s.o.AccessLog && s.d.Log.Enabled(c.Context(), slog.LevelInfo) {
		if s.d.Lines != nil {
			s.accessLine(c, st, status, d)
		} else {
			s.accessLog(c, st, status, d)
		}
	}
	if st.trace.on {
		s.traceEnd(c, st, status)
	}
	st.seen.Authorization, st.claims = nil, nil // not kept in the pooled state
}

// logMethod is a request's method for the access log: a method the proxy
// does not know (answered 501) is clipped to 32 bytes, as a client chooses
// its length.
func logMethod(m []byte) string {
	if len(m) > 32 {
		m = m[:32]
	}
	return b2s(m)
}

// next runs the stages, turning a panic into a 500 so that one bad
// request cannot take the sidecar down.
func (s *Server) next(c *fiber.Ctx, st *state) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.panicked(c, st, r)
		}
	}()
	return s.stages(c, st)
}

// panicked logs a panic recovered while a request was judged (r) and
// clears whatever answer it had begun: the request is answered 500.
//
//go:noinline
func (s *Server) panicked(c *fiber.Ctx, st *state, r any) error {
	s.d.Log.Error("panic", st.logArgs("panic", logging.Redact(fmt.Sprint(r)), "stack", logging.ClipStack(debug.Stack()))...)
	c.Response().Reset()
	return errPanic
}

// hygiene refuses what fieldsRefused refuses, takes a WebSocket's bearer
// from its subprotocols (protocolBearer), and cleans the client's fields
// (headers.Sanitize). What headers.Scan saw decides which of these have
// anything to do: most requests carry no field any of them reads or
// removes.
func (s *Server) hygiene(c *fiber.Ctx, st *state) error {
	if err := s.fieldsRefused(c, st); err != nil {
		return err
	}
	h := &c.Request().Header
	if st.seen.WSProtocol {
		if err := s.protocolBearer(h, st); err != nil {
			return err
		}
	}
	if !st.seen.NeedsSanitize(st.trusted) {
		st.closeConn = h.ConnectionClose()
		return nil
	}
	st.edited = true
	var droppedXFF bool
	st.closeConn, droppedXFF = headers.Sanitize(h, st.trusted)
	if droppedXFF {
		s.untrustedXFF(c, st)
	}
	return nil
}

// fieldsRefused refuses, from the fields as the client sent them and
// changing none, more than headers.MaxFields fields, a field name with a
// space, a folded field line (headers.Folded), a field line ended by a
// bare LF (headers.BareLF), a Transfer-Encoding other
// than chunked, an HTTP/1.0 request
// without Host, a Host with a byte no host holds (userinfo among them),
// trailers, h2c, a bearer subprotocol that is no element of its own
// (headers.ProtocolBearerMalformed) and more fields to remove than
// headers.MaxRemoved; it
// notes the request's upgrade and whether its peer is trusted. Both the
// handler (hygiene) and the expectation hook (expectContinue) refuse so,
// the hook before a "100 Continue".
func (s *Server) fieldsRefused(c *fiber.Ctx, st *state) error {
	h := &c.Request().Header
	if st.seen.Fields > headers.MaxFields {
		st.outcome, st.manyFields = "bad_header", true
		return errTooManyFields
	}
	if st.seen.SpaceInName {
		st.outcome = "bad_header"
		return errSpaceInName
	}
	// One count of the header's lines tells the checks below that most
	// requests have nothing for them to read.
	ends := headers.LineEnds(h)
	plain := headers.LinePerField(h, st.seen.Fields, ends)
	if headers.Folded(h, plain) {
		// Its fields, and so its framing, may not be what a front that
		// does not join folded lines read: nothing after the header is
		// read as a request.
		st.outcome, st.closeConn = "bad_header", true
		return errFolded
	}
	if headers.BareLF(h, ends) {
		// Likewise for a front that does not end a line at a bare LF.
		st.outcome, st.closeConn = "bad_header", true
		return errBareLF
	}
	if headers.TransferNotChunked(h, plain) {
		// The body's end is not known: nothing after the header is read
		// as a request.
		st.outcome, st.closeConn = "bad_header", true
		return errTransferCoding
	}
	host := h.Host()
	// No Host: fasthttp refuses an HTTP/1.1 request without one, not an
	// HTTP/1.0 one. Forwarded, it would name the host it is for after
	// the proxy's own choice (the upstream's address, in Host and
	// X-Forwarded-Host), which an app takes for the client's.
	if len(host) == 0 {
		st.outcome = "bad_header"
		return errNoHost
	}
	// A byte no Host value holds (RFC 9110 section 7.2): userinfo
	// ("u:p@a"), which fasthttp reads as the target's and its client
	// writes as "Authorization: Basic" to the upstream, after the client's
	// own field was removed; markup or a path, forwarded in Host and
	// X-Forwarded-Host to an app that builds its links from them.
	if !headers.ValidHost(host) || !validTargetHost(c.Request()) {
		st.outcome = "bad_header"
		return errBadHost
	}
	if st.seen.Hops > 0 && headers.HasTrailers(h) { // a trailer announcement is a hop-by-hop field
		st.outcome = "trailers"
		return errTrailers
	}
	if err := s.upgradeRefused(h, st); err != nil {
		return err
	}
	// A bearer in Sec-WebSocket-Protocol that is no element of its own
	// ("chat bearer.<token>"): protocolBearer could not take it out.
	if st.seen.WSProtocol && headers.ProtocolBearerMalformed(h) {
		st.outcome = "bad_header"
		return errProtocolBearer
	}
	st.trusted = s.trusted(c)
	if st.seen.NeedsSanitize(st.trusted) && st.seen.TooManyRemovals(h, st.trusted) {
		st.outcome = "bad_header"
		return errTooManyRemovals
	}
	return nil
}

// validTargetHost reports whether the authority of a request target in
// absolute form ("GET http://a.example/x"), which the proxy forwards as
// the request's Host (absoluteHost), holds only what headers.ValidHost
// lets a Host field hold. fasthttp's parse of it lets a comma, a quote and
// angle brackets through, and decodes percent-encoded bytes outside ASCII:
// checked in the Host field alone, they reached the app in Host and
// X-Forwarded-Host from the target. Any other target's host is the Host
// field's, checked before.
func validTargetHost(req *fasthttp.Request) bool {
	if raw := req.Header.RequestURI(); len(raw) == 0 || raw[0] == '/' {
		return true
	}
	return headers.ValidHost(req.URI().Host())
}

// untrustedXFF counts a request whose X-Forwarded-For came from a peer
// outside TRUSTED_PROXY_CIDRS and, the first time and then at most once
// per xffWarnEvery, says so in the log: behind a load balancer or ingress
// that is not listed, every client shares the balancer's address, and
// coreapi's lockout and rate limits key on it.
func (s *Server) untrustedXFF(c *fiber.Ctx, st *state) {
	s.d.Metrics.UntrustedXFF.Inc()
	now := st.start.UnixNano()
	next := s.xffWarnAt.Load()
	if now < next || !s.xffWarnAt.CompareAndSwap(next, now+int64(xffWarnEvery)) {
		return
	}
	s.d.Log.Warn("X-Forwarded-For from a peer outside TRUSTED_PROXY_CIDRS ignored: the peer's address is taken as the client IP; if this peer is a load balancer or ingress, set TRUSTED_PROXY_CIDRS to include it (repeated at most once a minute; authproxy_untrusted_forwarded_for_total counts every such request)",
		"peer", c.Context().RemoteIP().String())
}

func (s *Server) trusted(c *fiber.Ctx) bool {
	if len(s.d.TrustedCIDRs) == 0 {
		return false
	}
	a, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if !ok {
		return false
	}
	return s.isTrusted(a.Unmap())
}

func (s *Server) isTrusted(a netip.Addr) bool {
	for _, p := range s.d.TrustedCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (s *Server) normalize(c *fiber.Ctx, st *state) error {
	p, err := pathnorm.Append(st.path[:0], c.Request().URI().PathOriginal())
	st.path = p
	if err != nil {
		return pathRefused(&c.Request().Header, err)
	}
	return nil
}

// errOptionsAsterisk refuses "OPTIONS *" (RFC 9110 section 9.3.7: the
// options of the server as a whole), which no route describes: the
// proxy has none of its own to tell, and which app's to give is not
// known without a path.
var errOptionsAsterisk = &httpError{status: 400, code: problem.CodeBadPath,
	detail: "OPTIONS * (the server's options as a whole) is not served: send OPTIONS with the path of a route"}

// pathRefused is the answer to a request whose path pathnorm refused with
// err. Out of line (noinline): rare.
//
//go:noinline
func pathRefused(h *fasthttp.RequestHeader, err error) error {
	if string(h.RequestURI()) == "*" && h.IsOptions() {
		return errOptionsAsterisk
	}
	return &httpError{status: 400, code: problem.CodeBadPath, detail: "path not accepted: " + err.Error()}
}

// authorize routes the request and, for protected routes (and optional
// ones with a bearer), authenticates and authorizes it; then it forwards.
func (s *Server) authorize(c *fiber.Ctx, st *state) error {
	h := &c.Request().Header
	// One router: the request keeps it to the end, whatever a reload swaps
	// in meanwhile; a request that waited for "100 Continue" keeps the one
	// it was told to continue on.
	rt := s.routerOf(c.Context())
	if err := s.keyHygiene(c, st); err != nil {
		return err
	}
	var g *rules.Group
	g, st.lpath = rt.Table.Match(st.path, st.lpath)
	if g == nil {
		st.outcome = "no_route"
		return errNotFound
	}
	st.route = g.Prefix
	if h.IsOptions() && s.isPreflight(h) {
		return s.preflight(c, st, rt, g)
	}
	route := g.Pick(h.Method())
	if route == nil {
		return methodNotAllowed(st, rt, g, h.Method())
	}
	st.bodyLimit = route.MaxBodyBytes
	if bodyOver(c.Request(), cmp.Or(route.MaxBodyBytes, s.o.MaxBodyBytes)) {
		// Its declared length, before any credential is looked at: the
		// body is read only once the request is allowed (readBody).
		st.outcome = "refused"
		return errTooLarge
	}
	var raw []byte
	var haveD bool
	if st.edited { // a stage changed the fields since headers.Scan
		raw, haveD = headers.BearerCandidate(h, s.o.MaxTokenBytes)
	} else {
		raw, haveD = st.seen.BearerCandidate(s.o.MaxTokenBytes)
	}
	switch route.Access {
	case rules.Public:
		st.outcome = "public"
		// The upstream never sees a key, even in a field the strict
		// parser would refuse (two fields, a tab, two spaces). Nor does
		// an app see one of coreapi's access tokens: it gets identities
		// through optional routes, signed with its own key, while a token
		// is good at coreapi and every other app until it expires.
		if (st.edited || st.seen.Authorizations > 0) && s.publicDrops(h, route) {
			h.Del(fiber.HeaderAuthorization)
		}
		return s.forward(c, st, rt, route, nil, nil)
	case rules.Optional, rules.Protected:
	default:
		st.outcome = "no_route"
		return errNotFound
	}
	if st.xkeyN > 0 || haveD && apikey.HasPrefix(raw) {
		return s.authorizeKey(c, st, rt, route, raw)
	}
	te, w, err := s.token(c, st, h, raw, haveD)
	if te == nil {
		return s.noToken(c, st, h, rt, route, err)
	}
	// A warm request reads w alone: not the claims (see warm).
	if w == nil || !s.d.Projections.ValidStamp(&w.stamp, st.start) {
		if w, err = s.refresh(c, st, te, te.Claims()); err != nil {
			return s.projectionFailed(c, st, rt, route, err)
		}
	}
	st.principal, st.claims = w.principal, te.Claims()
	out := w.sub.Decide(route)
	s.decidedAt(st)
	st.outcome = out.String()
	if out == decide.Allow && route.Core && w.principal != identity.PrincipalUser {
		if err := s.coreRefusal(w.principal, h.Method(), st.path); err != nil {
			st.outcome = "principal_not_allowed"
			return err
		}
	}
	if out == decide.Allow {
		var maxAge int64
		if out, maxAge = w.sub.Authn(route, b2s(h.Method()), b2s(st.path), st.authAt.Unix()); out != decide.Allow {
			st.outcome = out.String()
			s.decided(out)
			return authnError(out, maxAge)
		}
	}
	s.decided(out)
	if out != decide.Allow {
		return s.refused(c, st, rt, route, out, errInvalidToken)
	}
	return s.forward(c, st, rt, route, te, w)
}

// publicDrops reports whether a public route must drop the request's
// Authorization fields: one carries an API key, or, for an app's route, one
// of coreapi's access tokens. A key is a token with a key's head
// (apikey.HasHead) anywhere in a field, or one meant as a key ("tg_") where
// the field's credentials are (headers.AnyCredential's lead): another
// scheme's parameter that merely starts with "tg_" (Digest's
// username="tg_admin") is that scheme's, and goes on.
//
//go:noinline
func (s *Server) publicDrops(h *fasthttp.RequestHeader, route *rules.Route) bool {
	return headers.AnyCredential(h, func(cred []byte, lead bool) bool {
		return apikey.HasHead(cred) || lead && apikey.HasPrefix(cred) || !route.Core && s.d.Verifier.Ours(cred)
	})
}

// methodNotAllowed answers a request whose method the matched prefix's
// routes exclude: 405 with Allow, or 501 for a method the table does not
// know (one a route named when the request came in, and that a reload
// has dropped since). Out of line (noinline), like the other refusals
// below: the code a warm request runs then spans fewer cache lines.
//
//go:noinline
func methodNotAllowed(st *state, rt *Router, g *rules.Group, method []byte) error {
	if !rt.Table.Knows(method) {
		st.outcome = "method_not_implemented"
		return errNotImplemented
	}
	st.outcome = "method_not_allowed"
	return &httpError{status: 405, code: problem.CodeMethodNotAllowed, detail: "method not allowed on this route", allow: g.Allow}
}

// refused answers an access decision other than Allow (refusal), or
// forwards the request as anonymous when the projection refused its
// credential on a route that asks for it (Route.IgnoreBadBearer).
//
//go:noinline
func (s *Server) refused(c *fiber.Ctx, st *state, rt *Router, route *rules.Route, out decide.Outcome, invalid *httpError) error {
	err := s.refusal(c, st, out, invalid)
	if err == invalid && route.IgnoreBadBearer {
		return s.forwardAnonymous(c, st, rt, route)
	}
	return err
}

// refusal is the answer to an access decision other than Allow: 403 for
// a missing permission or an unverified address; invalid (the credential's
// 401) when the projection refuses the credential (inactive, revoked),
// whose reason is logged.
func (s *Server) refusal(c *fiber.Ctx, st *state, out decide.Outcome, invalid *httpError) *httpError {
	switch out {
	case decide.DenyScope:
		return errScope
	case decide.DenyEmailUnverified:
		return errEmailUnverified
	}
	s.logInvalid(c, st, errors.New(denyDetail(out)))
	return invalid
}

// refresh fetches the projection of a token's user (its entry had none,
// or an outdated one) and attaches the new warm state to the entry. Out of
// line (noinline), like projectionFailed: a warm request runs neither.
//
//go:noinline
func (s *Server) refresh(c *fiber.Ctx, st *state, te *tokens.Entry, claims *tokens.Claims) (*warm, error) {
	st.principal, st.claims = claims.Principal, claims // for the failures' logs
	ctx := context.Context(c.Context())
	var span trace.Span
	if st.trace.on {
		ctx, span = s.traceChild(st, "projection")
	}
	st.waited = true
	e, err := s.d.Projections.Get(ctx, claims.Sub, claims.Tid, b2s(st.reqID))
	var w *warm
	if err == nil {
		w = newWarm(claims, e)
		te.SetAux(unsafe.Pointer(w))
	}
	if span != nil {
		endChild(span, err)
	}
	return w, err
}

// projectionFailed answers a request whose projection could not be had.
//
//go:noinline
func (s *Server) projectionFailed(c *fiber.Ctx, st *state, rt *Router, route *rules.Route, err error) error {
	st.outcome = "projection"
	switch {
	case errors.Is(err, projection.ErrNoMembership):
		s.logInvalid(c, st, err)
		if route.IgnoreBadBearer {
			return s.forwardAnonymous(c, st, rt, route)
		}
		return errInvalidToken
	case errors.Is(err, projection.ErrUnavailable):
		s.logFailure(st, slog.LevelWarn, "projection fetch", st.logArgs("err", err)...)
		return unavailable("identity service unavailable")
	}
	s.logFailure(st, slog.LevelError, "projection fetch", st.logArgs("err", err)...)
	return &httpError{status: 502, code: problem.CodeUpstreamDown, detail: "identity service answered badly"}
}

// decidedAt records when the access decision was made, for the auth
// duration metric, the auth-age checks and the signature's timestamp. A
// request answered from the caches reads no clock for it: its auth work
// (a few µs) is below the histogram's first bucket (50 µs), so it is
// recorded at its start; one that verified a token or fetched a
// projection reads the clock again.
func (s *Server) decidedAt(st *state) {
	st.authAt = st.start
	if st.waited {
		st.authAt = s.d.Now()
	}
	s.d.Metrics.AuthDuration.Observe(st.authAt.Sub(st.start).Seconds())
}

// forwardAnonymous forwards a request whose bearer was refused as an
// anonymous one, on a route that asks for it (Route.IgnoreBadBearer).
func (s *Server) forwardAnonymous(c *fiber.Ctx, st *state, rt *Router, route *rules.Route) error {
	st.outcome = "anonymous_bad_bearer"
	// As forwarded: the refused credential's principal and claims (set
	// before the projection refused it) are not the request's.
	st.principal, st.claims = identity.PrincipalAnonymous, nil
	c.Request().Header.Del(fiber.HeaderAuthorization)
	return s.forward(c, st, rt, route, nil, nil)
}

// token returns the cache entry of the request's valid bearer token and
// its warm state; or nil and why not: headers.ErrNoToken or
// headers.ErrScheme when there is no bearer token (noTokenFallback),
// errInvalidToken, or the answer when the token could not be judged (the
// signing keys not loaded). A token whose digest hits the cache skips the
// syntax check: only a token that passed it was ever cached.
func (s *Server) token(c *fiber.Ctx, st *state, h *fasthttp.RequestHeader, raw []byte, haveD bool) (*tokens.Entry, *warm, error) {
	d := &st.digest // in the pooled state: a local would escape
	if haveD {
		tokens.DigestTo(d, raw)
		te, aux, hit, err := s.d.Verifier.CachedAux(d, st.start)
		st.tokenCache = "miss"
		if hit {
			st.tokenCache = "hit"
			if err != nil {
				st.outcome = "bad_token"
				s.logInvalid(c, st, err)
				return nil, nil, errInvalidToken
			}
			return te, (*warm)(aux), nil
		}
	}
	tok, err := headers.Bearer(h, s.o.MaxTokenBytes)
	if err != nil {
		if noBearer(err) {
			return nil, nil, err
		}
		st.outcome = "bad_token"
		s.logInvalid(c, st, err)
		return nil, nil, errInvalidToken
	}
	if !haveD || len(tok) != len(raw) || unsafe.SliceData(tok) != unsafe.SliceData(raw) {
		tokens.DigestTo(d, tok)
	}
	st.tokenCache = "miss"
	var span trace.Span
	if st.trace.on {
		_, span = s.traceChild(st, "verify token")
	}
	st.waited = true
	te, err := s.d.Verifier.VerifyEntry(c.Context(), tok, d)
	if span != nil {
		endChild(span, err)
	}
	if err != nil {
		st.outcome = "bad_token"
		if errors.Is(err, tokens.ErrKeysUnavailable) {
			return nil, nil, unavailable("signing keys not loaded")
		}
		s.logInvalid(c, st, err)
		return nil, nil, errInvalidToken
	}
	return te, (*warm)(te.Aux()), nil
}

// noBearer reports whether token's err says the request has no bearer
// token: no Authorization field (or an empty one), or another scheme's.
func noBearer(err error) bool {
	return errors.Is(err, headers.ErrNoToken) || errors.Is(err, headers.ErrScheme)
}

// fallback is what becomes of a request whose bearer token was not found
// valid (noTokenFallback).
type fallback uint8

const (
	refuse             fallback = iota // answered with the error
	anonymous                          // an optional route without a bearer: forwarded as it came
	anonymousBadBearer                 // a refused bearer on a route that asks for it (forwardAnonymous)
)

// noTokenFallback is what becomes of a request on a route that is not
// public when token found no valid token (err), and the error to answer
// when it is refused: the handler (noToken) and the expectation hook
// (expectAuth) both go by it.
func noTokenFallback(st *state, route *rules.Route, err error) (fallback, error) {
	switch {
	case noBearer(err):
		if route.Access == rules.Optional {
			st.outcome = "anonymous"
			return anonymous, err
		}
		st.outcome = "no_token"
		return refuse, errNoToken
	case err == errInvalidToken && route.IgnoreBadBearer:
		return anonymousBadBearer, err
	}
	return refuse, err
}

// noToken answers a request for which token found no valid token (err),
// or forwards it as anonymous (noTokenFallback).
//
//go:noinline
func (s *Server) noToken(c *fiber.Ctx, st *state, h *fasthttp.RequestHeader, rt *Router, route *rules.Route, err error) error {
	f, err := noTokenFallback(st, route, err)
	switch f {
	case anonymous:
		// Another scheme's credentials go on as they came, as on a public
		// route: but an API key or one of coreapi's tokens under another
		// scheme or none ("token tg_...") never reaches the upstream.
		if errors.Is(err, headers.ErrScheme) && s.publicDrops(h, route) {
			h.Del(fiber.HeaderAuthorization)
		}
		return s.forward(c, st, rt, route, nil, nil)
	case anonymousBadBearer:
		return s.forwardAnonymous(c, st, rt, route)
	}
	return err
}

// logInvalid logs why a token was refused: clients get one description
// for every reason, so the detail lives only here.
func (s *Server) logInvalid(c *fiber.Ctx, st *state, err error) {
	if !s.d.Log.Enabled(c.Context(), slog.LevelInfo) {
		return
	}
	// A client sends as many bad tokens as it likes: at most
	// refusalLogsPerSecond lines a second, then one line saying how many
	// went unlogged (the metrics count every refusal).
	if s.refusalLogs.Allow(st.start, slog.LevelInfo) {
		s.d.Log.LogAttrs(c.Context(), slog.LevelInfo, "token refused",
			slog.String("request_id", b2s(st.reqID)), slog.String("reason", err.Error()), st.traceAttr())
	}
}

// logFailure writes a warning or error about a request whose call to an
// upstream or coreapi failed (forward, stream, projection fetch, api key
// fetch), at most refusalLogsPerSecond of them a second: while an
// upstream is down, or answers some request badly, a client sending such
// requests as fast as it can wrote a line with each, LOG_LEVEL=warn and
// ACCESS_LOG=false notwithstanding. The first line of a later second is
// preceded by one counting those left out, written on its own about a
// second after the last when none comes (the metrics count every
// failure: authproxy_upstream_errors_total, the request durations). A
// line below LOG_LEVEL takes nothing from the budget: it would not have
// been written, and is not counted as left out.
//
//go:noinline
func (s *Server) logFailure(st *state, level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if s.d.Log.Enabled(ctx, level) && s.failureLogs.Allow(st.start, level) {
		s.d.Log.Log(ctx, level, msg, args...)
	}
}

// CloseLogs writes the counts of lines the log budgets left out that no
// line took yet (logging.Budget.Close). Called once the requests are
// done, it puts them before the proxy's last lines and before its log's
// output is flushed and closed, where a timer could write them late or
// not at all.
func (s *Server) CloseLogs() {
	s.refusalLogs.Close()
	s.failureLogs.Close()
}

// refusalLogsPerSecond bounds the "token refused" lines a second, and
// those logFailure writes.
const refusalLogsPerSecond = 100

// denyDetail is what the "token refused" line says of a refusal out.
func denyDetail(out decide.Outcome) string {
	switch out {
	case decide.DenyInactive:
		return "user, membership or tenant not active"
	case decide.DenyTokenVersion:
		return "token revoked"
	case decide.DenySessionRevoked:
		return "session revoked"
	}
	return ""
}

// strippedInternal refuses (404, outcome no_route) a request on a route
// that strips its prefix when what the strip leaves of its path lies under
// /internal, which is never forwarded (Match refuses it whole), in any
// case, Unicode's included: nil otherwise. A preflight (preflight) gets
// the refusal the request it announces would (forward).
func strippedInternal(st *state, route *rules.Route) error {
	// Match left st.path spelling the prefix exactly, up to a segment
	// boundary.
	if route.StripPrefix && rules.IsInternalFolded(st.path[len(route.Prefix):]) {
		st.outcome = "no_route"
		return errNotFound
	}
	return nil
}

// forward rewrites the request line to the normalized path, adds the
// forwarding headers and the signed identity headers (an anonymous
// identity when te is nil; else the token's, with w attached to te), and
// streams the upstream's answer back.
func (s *Server) forward(c *fiber.Ctx, st *state, rt *Router, route *rules.Route, te *tokens.Entry, w *warm) error {
	var cl *tokens.Claims
	if te != nil {
		cl = te.Claims()
	}
	req := c.Request()
	h := &req.Header
	if req.IsBodyStream() {
		if err := s.readBody(c, st, cmp.Or(route.MaxBodyBytes, s.o.MaxBodyBytes)); err != nil {
			// Read as far as it could be: not read again (discardBody)
			// before the answer, which would wait for more of a body
			// already refused or lost.
			_ = req.CloseBodyStream()
			return err
		}
	}
	hc := rt.Clients[route.Upstream]
	if err := strippedInternal(st, route); err != nil {
		return err
	}
	if route.StripPrefix {
		st.uri = append(st.uri[:0], st.path[len(route.Prefix):]...)
		if len(st.uri) == 0 {
			st.uri = append(st.uri, '/')
		}
	} else {
		st.uri = append(st.uri[:0], st.path...)
	}
	if q := req.URI().QueryString(); len(q) > 0 {
		st.uri = appendQuery(append(st.uri, '?'), q)
	}
	setRequestURI(req, st.uri)
	// A body without a Content-Type goes on without one: fasthttp's writer
	// would name it application/octet-stream.
	h.SetNoDefaultContentType(true)
	// Every name written or looked up from here to the upstream call is a
	// constant in canonical form (the form fasthttp stored the client's
	// headers in): used as it is, not re-normalized on each call.
	renorm := !h.DisableNormalizing()
	signer := rt.Signers[route.Upstream]
	if cl == nil {
		w = rt.anonymous(route.Upstream)
	} else if w.mac.Signer() != signer {
		w = w.signed(cl, signer)
		te.SetAux(unsafe.Pointer(w))
	}
	// A request's identity headers are written as one block of lines
	// (identityBlock), and from an untrusted peer (the usual case) its
	// forwarding headers too (forwardedLines), unless a value holds a line
	// break: then they are set one by one.
	fwdBlock := w.lines && !st.trusted && !hasLineBreak(h.Host())
	if st.sentReqID {
		// The client's X-Request-Id (every one it sent): the request's
		// own id, the one it is signed with, is written below.
		h.DelBytes(requestIDKey)
	}
	if !fwdBlock {
		s.setForwarded(c, st)
		h.SetCanonical(requestIDKey, st.reqID)
	}
	st.ip = s.clientIP(c, st, st.ip[:0])
	if st.authAt.IsZero() { // not authenticated: signed as of its start
		st.authAt = st.start
	}
	st.hdr = st.hdr[:0]
	if fwdBlock {
		st.hdr = forwardedLines(st.hdr, st.ip, scheme(c), h.Host(), st.reqID)
	}
	if route.StripPrefix {
		s.setForwardedPrefix(h, st, st.path[:len(route.Prefix)], fwdBlock)
	}
	st.hdrFwd = len(st.hdr)
	s.sign(c, st, w, cl, nil)
	up := &rt.Table.Upstreams[route.Upstream]
	st.upstream = up.Name
	if up.Host != "" { // rewrite_host: after X-Forwarded-Host took the client's
		setHost(h, up.Host)
	}
	if st.trace.on {
		s.traceInject(h, st)
	}
	if renorm {
		h.EnableNormalizing()
	}
	if st.upgrade == headers.UpgradeWebSocket && route.Websocket || route.StreamTimeout > 0 {
		return s.streamFrom(c, st, rt, route, cl)
	}
	if hc.IsTLS {
		tlsScheme(req)
	}
	resp := c.Response()
	if err := hc.Do(req, resp); err != nil {
		if err = s.retry(c, st, hc, w, cl, err); err != nil {
			return s.forwardFailed(st, resp, err)
		}
	}
	if resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		return s.switched(st, resp)
	}
	if route.Core {
		s.coreAnswered(st, &resp.Header)
	}
	headers.SanitizeResponse(&resp.Header) // and X-Auth-Invalidated, whoever sent it
	if resp.IsBodyStream() {
		n := resp.Header.ContentLength()
		if n > 0 && n <= answerReadAhead {
			if err := s.readAnswer(st, resp, n); err != nil {
				return s.forwardFailed(st, resp, err)
			}
			return nil
		}
		if err := awaitAnswer(resp); err != nil {
			return s.forwardFailed(st, resp, err)
		}
		if n < 0 && !h.IsHTTP11() {
			st.untilClose = true // fasthttp would chunk it (closeDelimited)
		}
	}
	return nil
}

// awaiter is a streamed answer body that can wait for its first bytes
// (fasttransport's).
type awaiter interface{ Await() error }

// awaitAnswer waits until the first bytes of an answer's streamed body
// (chunked, delimited by the connection's end, or longer than
// answerReadAhead) have arrived, or its end, before the answer goes out;
// the upstream's read deadline (UPSTREAM_TIMEOUT) bounds the wait. Its
// header is written with those bytes anyway (fasthttp sends it with the
// first chunk, closeDelimited with the first bytes), so nothing reaches
// the client later for it: an event stream's first event goes out as it
// arrives. An answer that fails before them (its connection closed or
// reset, a malformed chunk size line) is then a 502, as one cut short
// within readAnswer's reach, and one whose first bytes do not come in
// time a 504, where the client got an empty reply: fasthttp wrote the
// header into the listener's buffer, failed on the first read of the body
// and closed the connection with nothing sent. Once bytes have gone out,
// an answer cut short reaches the client cut short (readAnswer).
//
//go:noinline
func awaitAnswer(resp *fasthttp.Response) error {
	a, ok := resp.BodyStream().(awaiter)
	if !ok {
		return nil
	}
	err := a.Await()
	if err == nil || errors.Is(err, fasthttp.ErrTimeout) {
		return err
	}
	// Not wrapped: a reset after the header is no stale connection
	// (forward.Classify's 503), but an answer that failed (502).
	return fmt.Errorf("answer cut short before its body: %s", err.Error())
}

// answerReadAhead bounds the answers whose body, streamed because it had
// not all arrived with the header, readAnswer reads whole before the
// answer goes out: the listener's write buffer (fasthttp's default, which
// Fiber keeps). fasthttp writes such an answer into that buffer, which
// goes out when full or once the answer is complete, so the client saw
// nothing of it before its last byte anyway.
const answerReadAhead = 4 << 10

// readAnswer reads the streamed body of n bytes of an upstream's answer
// (n at most answerReadAhead) before the answer goes out. An answer the
// upstream cuts short (its connection closed or reset before the
// Content-Length) is then a 502, as any other failed forward, where it was
// an empty reply: fasthttp wrote its header into the listener's buffer,
// failed on the body, and closed the connection with nothing sent. (A
// longer body is streamed, once its first bytes have come (awaitAnswer):
// what went out of it is the client's, and the
// client's connection is closed when the upstream's body ends early, so
// that the client sees it cut short, as nginx and Envoy do.) A timeout
// is answered 504.
//
//go:noinline
func (s *Server) readAnswer(st *state, resp *fasthttp.Response, n int) error {
	if cap(st.answer) < n {
		st.answer = make([]byte, 0, answerReadAhead) // kept in the pooled state
	}
	b := st.answer[:n]
	got, err := io.ReadFull(resp.BodyStream(), b)
	if err != nil {
		if errors.Is(err, fasthttp.ErrTimeout) {
			return err
		}
		// Not wrapped: a reset after the header is no stale connection
		// (forward.Classify's 503), but an answer that failed (502).
		return fmt.Errorf("answer cut short: %d of its %d bytes: %s", got, n, err.Error())
	}
	// Copied into the answer's pooled buffer; the stream, read to its end,
	// gives its connection back.
	resp.SetBody(b)
	return nil
}

// sign writes the request's identity headers, signed as of st.authAt: for
// a warm state whose values allow it (w.lines), as one block of lines after
// the forwarding lines st.hdr starts with (st.hdrFwd bytes), else each
// header on its own. It runs again, with
// a later st.authAt, for a request that is retried (retry): the headers
// written then replace the first ones, a block through stored, the name
// of the block written before as fasthttp holds it.
func (s *Server) sign(c *fiber.Ctx, st *state, w *warm, cl *tokens.Claims, stored []byte) {
	req := c.Request()
	h := &req.Header
	now := st.authAt.UnixMilli()
	rq := identity.Request{Timestamp: now, RequestID: b2s(st.reqID), ClientIP: b2s(st.ip), Method: b2s(h.Method()), PathQuery: b2s(st.uri)}
	if body := req.Body(); len(body) > 0 {
		rq.BodySHA256 = sha256.Sum256(body)
	} else {
		rq.BodySHA256 = identity.EmptyBodySHA256
	}
	st.sig = w.mac.AppendSignatureWith(st.sig[:0], &rq, &st.mac)
	st.ts = append(st.ts[:0], st.mac.Timestamp()...) // formatted once, for the tail
	if cl != nil || st.wsBearer {
		// The upstream never reads the token: the signed identity replaces
		// it, and the token stays out of the upstream's logs. (On a public
		// route, a WebSocket's bearer was never needed.)
		h.Del(fiber.HeaderAuthorization)
	}
	if w.lines {
		st.hdr = identityBlock(st.hdr[:st.hdrFwd], w, st)
		if stored != nil {
			// fasthttp cannot delete a header whose name holds a line
			// break (its lookups turn them into spaces): the name written
			// before, of the same length (retry), is rewritten where
			// fasthttp keeps it, and the write below replaces its value.
			copy(stored, st.hdr)
		}
		// The block is the name of one header whose value is the
		// signature: fasthttp writes a name as it is, so the upstream
		// receives the same lines as from setForwarded and setIdentity,
		// with one header write instead of seventeen
		// (TestIdentityBlockMatchesHeaders).
		h.SetCanonical(st.hdr, st.sig)
	} else {
		setIdentity(h, w.mac.Signer().KeyID(), cl, w, st)
	}
}

// retry sends a request once more after its upstream call failed with err,
// when forward.Retry allows it (the connection was stale; see there), and
// returns the second call's error; else it returns err. An upstream that
// answered before it read the whole request and then reset or closed its
// connection (fasttransport.ErrAnsweredEarly: an upload refused early)
// has its answer, in the response, passed on (nil), never retried, and
// the client's connection closed after it. The request is
// signed anew for the retry: an upstream may have read the first attempt
// before its connection closed, and an app that refuses a signature it has
// already accepted (the SDKs' replay filter) would refuse the same
// signature sent again.
//
//go:noinline
func (s *Server) retry(c *fiber.Ctx, st *state, hc *fasthttp.HostClient, w *warm, cl *tokens.Claims, err error) error {
	if errors.Is(err, fasttransport.ErrAnsweredEarly) {
		st.closeConn = true
		return nil
	}
	req := c.Request()
	if !forward.Retry(hc, req, err) {
		return err
	}
	h := &req.Header
	// A signature of another millisecond: the timestamp is signed.
	next := st.authAt.Add(time.Millisecond)
	if now := s.d.Now(); now.After(next) {
		next = now
	}
	var stored []byte
	if w.lines {
		for k := range h.All() {
			if bytes.Equal(k, st.hdr) {
				stored = k
				break
			}
		}
		// The block's one variable length is the timestamp's digits (13
		// from 2001 to 2286).
		var digits [20]byte
		if stored == nil || len(strconv.AppendInt(digits[:0], next.UnixMilli(), 10)) != len(st.ts) {
			return err
		}
	}
	st.authAt = next
	renorm := !h.DisableNormalizing() // the names below are canonical
	s.sign(c, st, w, cl, stored)
	if renorm {
		h.EnableNormalizing()
	}
	s.d.Metrics.UpstreamRetries.Inc()
	return hc.Do(req, c.Response())
}

// tlsScheme marks a request to an https:// upstream as https: fasthttp's
// client refuses a request whose scheme is not its own (the scheme is not
// written: the request line holds the path and query only).
//
//go:noinline
func tlsScheme(req *fasthttp.Request) { req.URI().SetScheme("https") }

// setHost names the upstream as the request's Host (rewrite_host). Out
// of line (noinline), as are the other rare branches of forward.
//
//go:noinline
func setHost(h *fasthttp.RequestHeader, addr string) { h.SetHost(addr) }

// streamFrom forwards a request of a stream (a WebSocket, or a route with
// stream_timeout) over a connection of its own.
//
//go:noinline
func (s *Server) streamFrom(c *fiber.Ctx, st *state, rt *Router, route *rules.Route, cl *tokens.Claims) error {
	c.Request().SetRequestURIBytes(st.uri) // the streams write the header's request line
	return s.stream(c, st, rt, route, cl)
}

// coreAnswered evicts, before the answer goes on, what coreapi's answer
// names as invalidated by the request (invalidation.HeaderInvalidated: the
// subjects of the outbox rows the request wrote, whatever its status),
// as their NATS events will once they arrive: the next request through
// this proxy, and the streams the eviction re-decides, see the change,
// NATS up or down. Only coreapi's answers are read (route.Core): an app
// naming subjects would have the proxy's caches thrashed at its word.
// The header is removed from every answer (headers.SanitizeResponse).
func (s *Server) coreAnswered(st *state, h *fasthttp.ResponseHeader) {
	// PeekCanonical: the name is looked up as it is, not copied and
	// normalized on every answer of coreapi's (PeekBytes: some 500
	// instructions a request).
	if v := h.PeekCanonical(invalidatedKey); len(v) > 0 {
		s.evictNamed(st, v)
	}
}

// evictNamed evicts what each subject of v names (natsinv.Evict, as the
// subscriber does), counting each one applied as local in
// authproxy_invalidations_received_total. A subject it does not
// understand evicts nothing (not everything, as such an event does: the
// list is coreapi's answer, not the feed), and is counted as
// local_unknown and logged.
//
//go:noinline
func (s *Server) evictNamed(st *state, v []byte) {
	var key func(string)
	if s.d.Keys != nil {
		key = s.d.Keys.InvalidateAPIKey
	}
	for subject := range strings.FieldsSeq(b2s(v)) {
		if natsinv.Evict(s.d.Projections, key, subject) == "" {
			s.d.Metrics.Invalidations.WithLabelValues("local_unknown").Inc()
			s.logFailure(st, slog.LevelWarn, "invalidation not understood; nothing evicted",
				st.logArgs("subject", strings.Clone(clip.Mark(subject, 256)), "header", invalidation.HeaderInvalidated)...)
			continue
		}
		s.d.Metrics.Invalidations.WithLabelValues("local").Inc()
	}
}

// forwardFailed answers a forward whose upstream call failed with err. It
// is kept out of forward (noinline), as are the other rare branches of the
// warm path: the code a request runs then spans fewer cache lines.
//
//go:noinline
func (s *Server) forwardFailed(st *state, resp *fasthttp.Response, err error) error {
	resp.Reset()
	kind, label := forward.Classify(err)
	s.d.Metrics.UpstreamErrors.WithLabelValues("forward", label).Inc()
	// logging.Redact: fasthttp still quotes the line of an answer it refuses.
	s.logFailure(st, slog.LevelWarn, "forward", st.logArgs("err", logging.Redact(err.Error()), "upstream", st.upstream)...)
	switch kind {
	case forward.Unavailable:
		return unavailable("upstream unavailable")
	case forward.Timeout:
		return &httpError{status: 504, code: problem.CodeUpstreamDown, detail: "upstream timed out"}
	}
	return &httpError{status: 502, code: problem.CodeUpstreamDown, detail: "upstream failed"}
}

// errSwitched is the error logged for an upstream's 101 to a forwarded
// request.
var errSwitched = errors.New("upstream answered 101 Switching Protocols to a request without an upgrade")

// switched refuses an upstream's 101 (Switching Protocols) to a forwarded
// request: the request asked for no upgrade (the client's Upgrade is a
// hop-by-hop field, removed), so the upstream broke the exchange, and its
// 101 must not reach the client, whose connection goes on speaking HTTP
// with the proxy (a front proxy that saw the client ask for an upgrade
// would take the 101 as leave to tunnel the connection). The transport
// has closed the upstream's connection.
//
//go:noinline
func (s *Server) switched(st *state, resp *fasthttp.Response) error {
	resp.Reset()
	s.d.Metrics.UpstreamErrors.WithLabelValues("forward", "transport").Inc()
	s.logFailure(st, slog.LevelWarn, "forward", st.logArgs("err", errSwitched.Error(), "upstream", st.upstream)...)
	return &httpError{status: 502, code: problem.CodeUpstreamDown, detail: "upstream failed"}
}

// clientIP appends the client's address: the peer's, or, when the peer is
// a trusted proxy, the rightmost X-Forwarded-For hop that is not itself a
// trusted proxy (hops that do not parse or carry an IPv6 zone end the
// walk; a hop's port, as some balancers write it, is left out).
func (s *Server) clientIP(c *fiber.Ctx, st *state, dst []byte) []byte {
	peer, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if !ok {
		return append(dst, "unknown"...)
	}
	ip := peer.Unmap()
	if st.trusted {
		ip = s.forwardedClient(c.Request().Header.Peek("X-Forwarded-For"), ip)
	}
	if ip != st.ipOf { // most requests come from the address before
		st.ipText, st.ipOf = ip.AppendTo(st.ipText[:0]), ip
	}
	return append(dst, st.ipText...)
}

// forwardedClient is the client behind the trusted peer ip: the rightmost
// hop of xff (the request's X-Forwarded-For) that is not itself a trusted
// proxy (hops that do not parse, or carry an IPv6 zone, end the walk). Out
// of line: most peers are not trusted.
//
//go:noinline
func (s *Server) forwardedClient(xff []byte, ip netip.Addr) netip.Addr {
	// setForwarded appended the (trusted) peer last: the walk passes it.
	for end := len(xff); end > 0; {
		i := end - 1
		for i >= 0 && xff[i] != ',' {
			i--
		}
		hop := xff[i+1 : end]
		for len(hop) > 0 && (hop[0] == ' ' || hop[0] == '\t') {
			hop = hop[1:]
		}
		for len(hop) > 0 && (hop[len(hop)-1] == ' ' || hop[len(hop)-1] == '\t') {
			hop = hop[:len(hop)-1]
		}
		end = max(i, 0)
		a, err := netip.ParseAddr(b2s(hop))
		if err != nil {
			// Some balancers (Azure Application Gateway, some ingress
			// controllers) write the client's port too: "ip:port",
			// "[v6]:port". Ending the walk there took the balancer for
			// the client, and every client behind it shared one address.
			ap, perr := netip.ParseAddrPort(b2s(hop))
			if perr != nil {
				break
			}
			a = ap.Addr()
		}
		if a.Zone() != "" {
			// fe80::1%eth0 names an interface of the host that wrote
			// it, no address of a client: as a hop that does not parse.
			// Taken, the text after the % went out as the client IP
			// (signed, logged, rate limited on): one host under as many
			// addresses as zones written.
			break
		}
		ip = a.Unmap()
		if !s.isTrusted(ip) {
			break
		}
	}
	return ip
}

// setForwarded writes X-Forwarded-For/-Proto/-Host. From an untrusted peer
// the client's values were removed by hygiene; from a trusted one they are
// extended.
func (s *Server) setForwarded(c *fiber.Ctx, st *state) {
	h := &c.Request().Header
	var ipb [64]byte
	ipStr := appendIP(ipb[:0], c.Context().RemoteIP())
	proto := scheme(c)
	if !st.trusted {
		setForwardedOnce(h, ipStr, proto)
		return
	}
	// Every X-Forwarded-For line, in order, as one list (RFC 9110 5.3: a
	// trusted hop may add a line of its own rather than extend the
	// client's), then the peer; written back as one line, which
	// forwardedClient walks from the right. Reading the first line alone
	// would let the client's own line stand for the hop's. Empty lines
	// name no hop.
	v := st.xff[:0] // the state's buffer: no allocation per request
	for _, prior := range h.PeekAll("X-Forwarded-For") {
		if len(prior) > 0 {
			v = append(append(v, prior...), ", "...)
		}
	}
	v = append(v, ipStr...)
	st.xff = v
	h.Del("X-Forwarded-For")
	h.SetBytesV("X-Forwarded-For", v)
	if len(h.Peek("X-Forwarded-Proto")) == 0 {
		h.Set("X-Forwarded-Proto", proto)
	}
	if len(h.Peek("X-Forwarded-Host")) == 0 {
		h.SetBytesV("X-Forwarded-Host", h.Host())
	}
}

// setForwardedOnce sets X-Forwarded-For/-Proto/-Host for an untrusted
// peer: hygiene removed the client's own, so each is set once.
func setForwardedOnce(h *fasthttp.RequestHeader, ip []byte, proto string) {
	h.SetCanonical(s2b("X-Forwarded-For"), ip)
	setHeader(h, "X-Forwarded-Proto", proto)
	h.SetCanonical(s2b("X-Forwarded-Host"), h.Host())
}

// forwardedLines appends the lines setForwardedOnce and the request id
// write, in the same order, for identityBlock's block.
func forwardedLines(dst, ip []byte, proto string, host, reqID []byte) []byte {
	return identity.AppendParts(dst, "X-Forwarded-For: ", b2s(ip), "\r\nX-Forwarded-Proto: ", proto,
		"\r\nX-Forwarded-Host: ", b2s(host), "\r\n"+requestid.Header+": ", b2s(reqID), "\r\n")
}

// setForwardedPrefix tells the app behind a strip_prefix route which
// prefix the proxy removed (prefix: the normalized path's start, as the
// route matched it, never ending in "/"), in X-Forwarded-Prefix, the
// name Traefik's StripPrefix writes and Spring, ASP.NET Core and
// Werkzeug's ProxyFix read, so that it can write its external links and
// redirects. With block (an untrusted peer, the usual case), as one more
// line of st.hdr's forwarding lines; from an untrusted peer otherwise,
// set once (hygiene removed the client's). From a trusted peer, an outer
// proxy that stripped a prefix of its own: the app's base is that prefix
// followed by ours, written as one value (appendOuterPrefixes). Out of
// line: routes without strip_prefix pay one test of the flag.
//
//go:noinline
func (s *Server) setForwardedPrefix(h *fasthttp.RequestHeader, st *state, prefix []byte, block bool) {
	switch {
	case block:
		st.hdr = identity.AppendParts(st.hdr, "X-Forwarded-Prefix: ", b2s(prefix), "\r\n")
	case !st.trusted:
		h.SetCanonical(s2b("X-Forwarded-Prefix"), prefix)
	default:
		v := st.xfp[:0] // the state's buffer: no allocation per request
		for _, line := range h.PeekAll("X-Forwarded-Prefix") {
			v = appendOuterPrefixes(v, line)
		}
		v = append(v, prefix...)
		st.xfp = v
		h.Del("X-Forwarded-Prefix")
		h.SetCanonical(s2b("X-Forwarded-Prefix"), v)
	}
}

// appendOuterPrefixes appends the prefixes of a trusted peer's
// X-Forwarded-Prefix value to dst, one path after the other: each element
// of the comma list, in order, without the spaces around it and its
// trailing slashes, with a "/" in front when it has none; an empty
// element (or "/") adds nothing. "/eu, /shop/" appends "/eu/shop": the
// app then gets one value, the whole base, and reads it alike whether it
// takes the last value of a list (Werkzeug's ProxyFix, ASP.NET Core) or
// joins them all (Spring).
func appendOuterPrefixes(dst, v []byte) []byte {
	for len(v) > 0 {
		el := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			el, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		el = bytes.Trim(el, " \t")
		el = bytes.TrimRight(el, "/")
		if len(el) == 0 {
			continue
		}
		if el[0] != '/' {
			dst = append(dst, '/')
		}
		dst = append(dst, el...)
	}
	return dst
}

// scheme is the scheme the client used. A connection of the listener's
// own kind, TCP, is told by its type: fasthttp's IsTLS asserts an
// interface type, and the cache of such an assertion at its call site is
// filled at random, about once in a thousand calls, so a process paid a
// runtime call on every request until it was (some 100 instructions a
// request, in some processes and not in others).
func scheme(c *fiber.Ctx) string {
	if _, ok := c.Context().Conn().(*net.TCPConn); ok {
		return "http"
	}
	if c.Context().IsTLS() {
		return "https"
	}
	return "http"
}

// hasLineBreak reports whether b holds a CR or LF.
func hasLineBreak(b []byte) bool {
	return bytes.IndexByte(b, '\r') >= 0 || bytes.IndexByte(b, '\n') >= 0
}

func appendIP(dst []byte, ip []byte) []byte {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return append(dst, "unknown"...)
	}
	return a.Unmap().AppendTo(dst)
}

// httpError is an error that knows its HTTP answer.
type httpError struct {
	status     int
	code       string
	detail     string
	wwwAuth    string
	allow      string
	retryAfter bool
	// retrySeconds is Retry-After's value when retryAfter (0: 1, the
	// answers that end with no known window: overload, shutdown).
	retrySeconds int
}

func (e *httpError) Error() string { return e.code + ": " + e.detail }

var (
	errPanic    = &httpError{status: 500, code: problem.CodeInternal, detail: "internal error"}
	errTrailers = &httpError{status: 400, code: problem.CodeBadRequest, detail: "request trailers are not accepted"}
	// A field name with a space (headers.Seen.SpaceInName).
	errSpaceInName = &httpError{status: 400, code: problem.CodeBadRequest, detail: "malformed header field name"}
	// A Host field with userinfo ("u:p@a").
	errBadHost = &httpError{status: 400, code: problem.CodeBadRequest, detail: "malformed Host field"}
	// A field line folded onto the next (headers.Folded).
	errFolded = &httpError{status: 400, code: problem.CodeBadRequest, detail: "folded header field line (obs-fold) not accepted"}
	// A field line ended by a LF alone (headers.BareLF).
	errBareLF = &httpError{status: 400, code: problem.CodeBadRequest, detail: "header field line ended by a bare LF (not CRLF) not accepted"}
	// A Transfer-Encoding whose coding is not chunked
	// (headers.TransferNotChunked).
	errTransferCoding = &httpError{status: 400, code: problem.CodeBadRequest, detail: "unsupported Transfer-Encoding: only chunked is accepted"}
	// An HTTP/1.0 request without a Host field (fasthttp refuses an
	// HTTP/1.1 one).
	errNoHost = &httpError{status: 400, code: problem.CodeBadRequest, detail: "missing Host field: a request must name the host it is for"}
	// More fields to remove than headers.MaxRemoved.
	errTooManyRemovals = &httpError{status: 431, code: problem.CodeBadRequest, detail: "too many connection, identity or forwarding fields"}
	errTooManyFields   = &httpError{status: 431, code: problem.CodeBadRequest, detail: "too many header fields"}
	errNotFound        = &httpError{status: 404, code: problem.CodeNotFound, detail: "no such route"}
	errTooLarge        = &httpError{status: 413, code: problem.CodeBodyTooLarge, detail: "request body too large"}
	errNoToken         = &httpError{status: 401, code: problem.CodeUnauthenticated, detail: "bearer token required",
		wwwAuth: `Bearer realm="tollgate"`}
	errScope = &httpError{status: 403, code: problem.CodeInsufficientScope, detail: "missing a required permission",
		wwwAuth: `Bearer error="insufficient_scope"`}
	errEmailUnverified = &httpError{status: 403, code: problem.CodeEmailUnverified, detail: "this route requires a verified email address"}
	// errInvalidToken is the one answer for every refused token: which
	// check failed is logged, never told to the client.
	errInvalidToken = &httpError{status: 401, code: problem.CodeInvalidToken, detail: "the access token is not valid",
		wwwAuth: `Bearer error="invalid_token"`}
)

// authnError answers an Authn refusal: 403 for the tenant's MFA policy,
// 401 with the RFC 9470 challenge for a missing or stale second factor.
func authnError(out decide.Outcome, maxAge int64) *httpError {
	if out == decide.DenyMFAEnrollment {
		return errMFAEnrollment
	}
	he := &httpError{status: 401, code: problem.CodeInsufficientUserAuthentication,
		detail:  "this route needs a (more recent) second factor; step up with grant_type=mfa_otp",
		wwwAuth: `Bearer error="insufficient_user_authentication", acr_values="mfa"`}
	if maxAge > 0 {
		he.wwwAuth += ", max_age=" + strconv.FormatInt(maxAge, 10)
	}
	return he
}

var errMFAEnrollment = &httpError{status: 403, code: problem.CodeMFAEnrollmentRequired,
	detail: "this tenant requires a second factor: enrol at /api/v1/users/me/mfa/totp"}

func unavailable(detail string) *httpError {
	return &httpError{status: 503, code: problem.CodeUpstreamDown, detail: detail, retryAfter: true}
}

// render writes err as problem+json. It is the one place statuses are set
// for errors. Client-facing details are fixed strings: errors raised while
// parsing the request carry its raw bytes (headers, a bearer token), which
// go to the log only.
func (s *Server) render(c *fiber.Ctx, st *state, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		var fe *fiber.Error
		switch {
		case errors.As(err, &fe) && fe.Code == fiber.StatusRequestEntityTooLarge:
			he = errTooLarge
		case errors.As(err, &fe) && fe.Code == fiber.StatusRequestHeaderFieldsTooLarge:
			he = &httpError{status: 431, code: problem.CodeBadRequest, detail: "request header fields too large"}
		case errors.As(err, &fe) && fe.Code == fiber.StatusRequestTimeout:
			he = &httpError{status: 408, code: problem.CodeBadRequest, detail: "request timed out"}
		case errors.As(err, &fe) && fe.Code < 500:
			s.d.Log.Info("request refused", st.logArgs("status", fe.Code, "err", logging.Redact(fe.Message))...)
			he = &httpError{status: 400, code: problem.CodeBadRequest, detail: "malformed request"}
		default:
			s.d.Log.Error("request", st.logArgs("err", logging.Redact(err.Error()))...)
			he = &httpError{status: 500, code: problem.CodeInternal, detail: "internal error"}
		}
		st.outcome = "refused"
	}
	if len(st.path) == 0 && !st.unparsed {
		// Refused before normalization: name the path if it is sound.
		st.path, _ = pathnorm.Append(st.path[:0], c.Request().URI().PathOriginal())
	}
	p := problem.New(he.status, he.code, he.detail).With(string(st.reqID), string(st.path))
	if problem.IsOAuthEndpoint(b2s(st.path)) {
		// coreapi's OAuth endpoints answer every error with the RFC 6749
		// fields; the proxy's own answers there (coreapi unreachable, a
		// body too large, a malformed request) carry them too, so that an
		// OAuth library can tell a retry from a request to fix.
		p.OAuthError, p.OAuthErrorDescription = problem.OAuthErrorOfStatus(he.status), he.detail
	}
	resp := c.Response()
	resp.SetStatusCode(he.status)
	resp.Header.SetContentType(problem.ContentType)
	if he.wwwAuth != "" {
		resp.Header.Set(fiber.HeaderWWWAuthenticate, he.wwwAuth)
	}
	if he.allow != "" {
		resp.Header.Set(fiber.HeaderAllow, he.allow)
	}
	if he.retryAfter {
		retryAfter(&resp.Header, he.retrySeconds)
	}
	resp.SetBodyRaw(p.JSON())
}

// retryAfter sets Retry-After to secs, or to 1 when secs is 0.
func retryAfter(h *fasthttp.ResponseHeader, secs int) {
	if secs <= 0 {
		h.Set(fiber.HeaderRetryAfter, "1")
		return
	}
	h.Set(fiber.HeaderRetryAfter, strconv.Itoa(secs))
}

// errorHandler answers requests refused before the middleware chain ran
// (fasthttp could not read them: a body over the limit, headers too large,
// malformed framing), with the same problem body, request id, instance,
// metrics and access log as any other answer. (observe renders every
// other error itself and always returns nil.)
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	st := s.pool.Get().(*state)
	s.beginOutside(c, st)
	s.respond(c, st, err)
	return nil
}

// respond answers err outside observe for a request whose state st has
// begun (the error handler, and the expectation hook), and gives st back.
func (s *Server) respond(c *fiber.Ctx, st *state, err error) {
	if s.tracing != nil {
		s.traceBegin(c, st)
	}
	// Headers too large or malformed: the request line was never read, and
	// the path fasthttp reports is a default, not the client's.
	st.unparsed = len(c.Request().Header.RawHeaders()) == 0
	s.render(c, st, err)
	s.finish(c, st)
	s.pool.Put(st)
}

func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// s2b is s as bytes, for fasthttp calls that copy and never write them.
func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// setHeader sets a header whose name is a constant in canonical form
// (names_test.go checks each), without fasthttp's per-byte validation and
// re-casing of the name.
func setHeader(h *fasthttp.RequestHeader, name, value string) { h.SetCanonical(s2b(name), s2b(value)) }

// setIdentity sets the identity headers one by one: the anonymous
// identity when cl is nil, else the token's with its warm state w.
// SetCanonical: the names are constants in canonical form, so fasthttp
// neither re-validates nor re-cases them (Add does both, per byte, on
// every call); hygiene removed every client X-Auth-* header, so each is
// set once.
func setIdentity(h *fasthttp.RequestHeader, keyID string, cl *tokens.Claims, w *warm, st *state) {
	setHeader(h, identity.HeaderKeyID, keyID)
	emailVerified := false
	if cl == nil {
		setHeader(h, identity.HeaderPrincipal, identity.PrincipalAnonymous)
	} else {
		e := w.pe
		emailVerified = e.P.EmailVerified
		setHeader(h, identity.HeaderPrincipal, w.principal)
		setHeader(h, identity.HeaderUserID, cl.Sub)
		setHeader(h, identity.HeaderTenantID, cl.Tid)
		setHeader(h, identity.HeaderSessionID, cl.Sid)
		if amr := identity.JoinList(cl.AMR); amr != "" { // allocates: values with line breaks are rare
			setHeader(h, identity.HeaderAMR, amr)
		}
		if authTime := identity.FormatAuthTime(cl.AuthTime); authTime != "" {
			setHeader(h, identity.HeaderAuthTime, authTime)
		}
		setHeader(h, identity.HeaderRoles, e.Roles)
		setHeader(h, identity.HeaderPermissions, e.Perms)
	}
	setHeader(h, identity.HeaderEmailVerified, identity.BoolString(emailVerified))
	h.SetCanonical(s2b(identity.HeaderClientIP), st.ip)
	h.SetCanonical(s2b(identity.HeaderTimestamp), st.ts)
	h.SetCanonical(s2b(identity.HeaderSignature), st.sig)
}

// identityBlock appends the lines setIdentity writes for a token (or the
// anonymous identity: w from Router.anonymous), in the
// same order, up to the signature header's name: "Name: value\r\n" for
// each header but the last, whose value (the signature) fasthttp adds.
// Only for a warm state whose values hold no line break (warm.lines); the
// request's own values (client IP, timestamp) are formatted by the proxy.
func identityBlock(dst []byte, w *warm, st *state) []byte {
	return identity.AppendParts(dst, w.tok, w.peLines, identity.HeaderClientIP+": ", b2s(st.ip),
		"\r\n"+identity.HeaderTimestamp+": ", b2s(st.ts), "\r\n"+identity.HeaderSignature)
}

// appendLine appends the header line "name: value\r\n".
func appendLine(dst []byte, name, value string) []byte {
	return identity.AppendHeaderLine(dst, name, value)
}
