// Package httpapi is coreapi's HTTP framework: the Fiber server, its
// middleware (request id, access log with db_queries, body limit,
// identity-header verification, permission checks), strict JSON decoding
// and field checks, opaque list cursors, the single error handler that
// turns errors into problem+json, the projection route the proxies call,
// and the admin server (/healthz, /readyz, /metrics).
//
// Features (the tenant API, sign-in, the account lifecycle...) live in
// their own packages and add routes through Options.Register and their
// errors' mapping through Options.ErrorMappers; see Routes.
package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/coreapi/internal/openapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/replay"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// Options configure a Server. Logger, Pool, IdentityKeys and CursorKey
// are required.
type Options struct {
	Logger *slog.Logger
	// AccessLogger writes the access lines (one per request); nil:
	// Logger. The command gives it a buffered output (logging.Lines).
	AccessLogger *slog.Logger
	Pool         *pgxpool.Pool
	// IdentityKeys are the core keys (shared with the proxies only) that
	// v2 identity signatures are verified against; all of them are
	// accepted, so a key can be rotated without downtime.
	IdentityKeys []identity.Key
	// AcceptV1 also accepts v1 signatures, made with the first key's
	// secret, during the release that retires them (IDENTITY_ACCEPT_V1).
	// v1 binds neither the body nor a request id. It also lets unsigned
	// requests through on Public and Optional routes, as a v1 proxy sends
	// them; without it those are 401.
	AcceptV1 bool
	// ReplayCacheSize bounds how many accepted v2 signatures are
	// remembered to refuse replays; 0 means replay.DefaultSize.
	ReplayCacheSize int
	// CursorKey authenticates pagination cursors; derive it from the
	// first identity key with DeriveCursorKey. The cursors of the keys
	// derived from the others of IdentityKeys decode too (never made), so
	// a next_cursor outlives a rotation of the core key.
	CursorKey []byte
	// Registerer receives the HTTP metrics; nil means none are exported.
	Registerer prometheus.Registerer
	// MaxBodyBytes bounds request bodies (413 above it); 0 means 1 MiB.
	MaxBodyBytes int
	// AccessTokenTTL bounds the revoked sessions listed in projections.
	AccessTokenTTL time.Duration
	// TokenMaxLeeway is the largest clock leeway a proxy may accept past
	// exp (TOKEN_MAX_LEEWAY): revoked sessions stay listed for
	// AccessTokenTTL + TokenMaxLeeway, so a revoked token cannot come back
	// after a refetch while a proxy still accepts it.
	TokenMaxLeeway time.Duration
	// Catalog is the live permission catalog (nil: the built-in
	// permissions only): what built-in roles hold in the projections.
	Catalog *permissions.Catalog
	// Now is the clock used to check identity timestamps; nil means
	// time.Now.
	Now func() time.Time
	// ProjectionMaxInFlight bounds concurrent projection fetches (the
	// proxies' cache misses); 0 means the pool's MaxConns. One more waits
	// up to ProjectionMaxWait (0: 100 ms; negative: not at all) for a slot
	// and is then answered 503 with Retry-After, so a fleet of cold proxies
	// meets quick refusals instead of an unbounded queue on the pool.
	ProjectionMaxInFlight int
	ProjectionMaxWait     time.Duration

	// RequestTimeout bounds each request's work (its context's deadline);
	// 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration

	// Register adds the features' routes (the tenant API, sign-in, JWKS,
	// sessions...). Each is called once, in order; register a static path
	// (/users/me) before a parameter at the same place (/users/:id).
	Register []func(Routes)
	// ErrorMappers turn the features' errors into problems; the first
	// non-nil answer wins. They run after *problem.Problem and the
	// database-unavailable check, before the framework's own mapping.
	ErrorMappers []func(error) *problem.Problem
	// Observe, if set, is called once per request after the response is
	// ready (tests use it to count queries per request).
	Observe func(RequestStats)
	// Tracing gives each request a span (tracing.go); nil: off.
	Tracing *tracing.Provider
}

// RequestStats describes one finished request.
type RequestStats struct {
	RequestID    string
	Method       string
	Route        string
	Status       int
	Duration     time.Duration
	Queries      int64 // statements and batches sent (see pgtrace.Counter)
	Transactions int64
	Prepares     int64 // statement-cache misses (an extra round trip each)
}

// InternalPrefix is where the Internal group is mounted.
const InternalPrefix = "/internal/v1"

// Routes are the route groups offered to Options.Register hooks.
//
//   - Public: under /api/v1, no user needed (signup, token, OAuth
//     callbacks). Register e.g. Public.Post("/auth/token", h). The v2
//     proxy signs every request it forwards, anonymous ones included; the
//     signature must verify and name valid ids (none for the anonymous
//     principal), and ClientIP(c) and IdentityOf(c) report what it
//     asserts. An unsigned request (a v1 proxy's public route) is served
//     as the anonymous principal with the peer's address while v1 is
//     accepted (Options.AcceptV1) only; else it is 401.
//   - Protected: under /api/v1, a verified identity with a user and tenant is
//     required (401 otherwise); read it with IdentityOf(c). Add
//     RequirePermission(p) in front of a handler for a permission check.
//   - Optional: under /api/v1, a verified identity when the request carries
//     a user's (read it with OptionalIdentityOf), anonymous otherwise; a
//     forged or stale signature is 401 (accepting an invitation with or
//     without a bearer). Unsigned requests as on Public.
//   - Root: at /, no identity checked at all (e.g. /.well-known/jwks.json);
//     ClientIP(c) is the peer there.
//   - Internal: under /internal/v1, signed with a core key over the
//     anonymous, empty identity (the proxy's service calls).
//
// Handlers decode bodies with DecodeJSON, validate with Checks, read path
// ids with PathUUID, and return errors: *problem.Problem, or their own
// errors mapped by Options.ErrorMappers. Lists read ParsePage, page with
// Cursors (every cursor opaque and tamper-evident) and answer Page's
// ListResponse.
type Routes struct {
	Public    *Group
	Protected *Group
	Optional  *Group
	Root      *Group
	Internal  *Group
	Cursors   *Cursors
	// CloseAtShutdown hands Shutdown a feature's log budget: Shutdown
	// closes it once the requests are done (logging.Budget.Close), so the
	// count of the lines it left out comes before a stopping process's
	// last line, not on a timer after it.
	CloseAtShutdown func(*logging.Budget)
}

// Server is coreapi's public HTTP server.
type Server struct {
	app *fiber.App
	// lnMu guards ln and closed: fasthttp's Shutdown closes only the
	// listeners Serve has registered, so a Shutdown that runs before Serve
	// got that far (a SIGTERM right at the start) would leave Serve
	// accepting for ever; Shutdown closes the listener itself, and a Serve
	// after it returns at once.
	lnMu         sync.Mutex
	ln           net.Listener
	closed       bool
	log          *slog.Logger
	accessLogger *slog.Logger // the access lines (Options.AccessLogger)
	verifier     *identity.Verifier
	v1           *identity.Signer // nil unless v1 is accepted
	replays      *replay.Cache
	now          func() time.Time
	cursor       cursorCodec
	metrics      *metrics
	observe      func(RequestStats)
	mappers      []func(error) *problem.Problem
	projector    *projection.Store
	pool         *pgxpool.Pool // liveCredential's
	projLimit    *limiter
	chunked      chunkedHeads
	tracer       *requestTracer // nil: requests are not traced
	// failureLogs bounds the lines about requests answered 5xx
	// (logFailure).
	failureLogs logging.Budget
	// handshakeLogs bounds the warnings about failed TLS handshakes
	// (handshakeFailed), handshakeFailures counts them.
	handshakeLogs     logging.Budget
	handshakeFailures atomic.Int64
	// budgets are closed by Shutdown: failureLogs, handshakeLogs and the
	// features' (Routes.CloseAtShutdown).
	budgets []*logging.Budget
	// timeout is each request's deadline (Options.RequestTimeout).
	timeout time.Duration
}

// DefaultRequestTimeout bounds the work of one request: a statement that
// waits on a lock nobody releases (a migration's ACCESS EXCLUSIVE lock, a
// forgotten transaction) or on a database that stopped answering without
// closing the connection (a partition, a failover to a stale address)
// fails with 503 and Retry-After at this deadline instead of holding its
// pool connection until TCP gives up (many minutes), the pool filling up
// behind it. It is below the proxy's default UPSTREAM_TIMEOUT (30 s), so
// coreapi answers, with its problem and access line, before the proxy
// gives up on it; and within the server's WriteTimeout.
const DefaultRequestTimeout = 25 * time.Second

// New builds the server and its routes.
func New(o Options) (*Server, error) {
	if o.Logger == nil || o.Pool == nil || len(o.IdentityKeys) == 0 || len(o.CursorKey) == 0 {
		return nil, errors.New("httpapi: Logger, Pool, IdentityKeys and CursorKey are required")
	}
	verifier, err := identity.NewVerifier(o.IdentityKeys, identity.DefaultWindow)
	if err != nil {
		return nil, fmt.Errorf("httpapi: identity keys: %w", err)
	}
	var v1 *identity.Signer
	if o.AcceptV1 {
		if v1, err = identity.NewSigner(o.IdentityKeys[0].Secret, identity.DefaultWindow); err != nil {
			return nil, fmt.Errorf("httpapi: v1 identity key: %w", err)
		}
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AccessTokenTTL <= 0 {
		o.AccessTokenTTL = 15 * time.Minute
	}
	if o.ProjectionMaxInFlight <= 0 {
		o.ProjectionMaxInFlight = int(o.Pool.Config().MaxConns)
	}
	if o.ProjectionMaxWait == 0 {
		o.ProjectionMaxWait = 100 * time.Millisecond
	}
	if o.Catalog == nil {
		o.Catalog = permissions.Builtin()
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	replays := replay.New(o.ReplayCacheSize)
	m, err := newMetrics(o.Registerer, replays, o.Catalog)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:          o.Logger,
		accessLogger: cmp.Or(o.AccessLogger, o.Logger),
		verifier:     verifier,
		v1:           v1,
		replays:      replays,
		now:          o.Now,
		cursor:       newCursorCodec(o.CursorKey, cursorKeys(o.IdentityKeys)...),
		metrics:      m,
		observe:      o.Observe,
		mappers:      o.ErrorMappers,
		projLimit:    newLimiter(o.ProjectionMaxInFlight, o.ProjectionMaxWait),
		pool:         o.Pool,
		projector:    projection.NewStore(o.Pool, o.AccessTokenTTL+max(o.TokenMaxLeeway, 0), o.Catalog),
		failureLogs:  logging.Budget{PerSecond: FailureLogsPerSecond},
		timeout:      o.RequestTimeout,
	}
	s.failureLogs.Report = logging.CountLine(s.log, "request failures not logged", FailureLogsPerSecond)
	s.handshakeLogs.PerSecond = HandshakeLogsPerSecond
	s.handshakeLogs.Report = logging.CountLine(s.log, "TLS handshake failures not logged", HandshakeLogsPerSecond)
	s.app = fiber.New(fiber.Config{
		AppName:               "coreapi",
		BodyLimit:             o.MaxBodyBytes,
		ErrorHandler:          s.handleEarly,
		DisableStartupMessage: true,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		// Longer than authproxy's idle timeout, so the proxy closes first.
		IdleTimeout:       120 * time.Second,
		ReadBufferSize:    16 << 10,
		StrictRouting:     false,
		CaseSensitive:     true,
		UnescapePath:      false,
		EnablePrintRoutes: false,
		// The identity signature covers the body's bytes: a multipart
		// body parsed as it is read would be kept as its parsed form and
		// handed out re-encoded (another digest, and parts reordered).
		// Handlers that read a form parse it from the bytes on demand.
		DisablePreParseMultipartForm: true,
	})
	if o.Tracing != nil {
		s.tracer = newRequestTracer(o.Tracing)
		s.app.Use(s.requestID, s.tracer.middleware, s.accessLog, s.recover, boundQuery)
	} else {
		s.app.Use(s.requestID, s.accessLog, s.recover, boundQuery)
	}
	// A method Fiber does not know (PROPFIND, a lower-case get) would be
	// answered by Fiber itself, before any middleware, as a plain-text
	// "400 Invalid http method" without a request id or problem body. It
	// is refused here as authproxy refuses it: 501 not_implemented (RFC
	// 9110 section 9.1), problem+json with its request id.
	fiberHandler := s.app.Server().Handler
	s.app.Server().Handler = func(ctx *fasthttp.RequestCtx) {
		s.chunked.forget(&ctx.Request.Header)
		if !problem.KnownMethod(ctx.Method()) {
			s.refuseEarly(ctx, errNotImplemented)
			return
		}
		if string(ctx.Request.Header.RequestURI()) == "*" {
			s.refuseEarly(ctx, errAsteriskForm)
			return
		}
		fiberHandler(ctx)
	}
	// A chunked body over the limit is refused with the request's own id
	// and path (chunked.go).
	s.app.Server().HeaderReceived = s.chunked.received
	fiberErrors := s.app.Server().ErrorHandler
	s.app.Server().ErrorHandler = func(ctx *fasthttp.RequestCtx, err error) {
		if s.handshakeFailed(ctx, err) {
			return
		}
		s.chunked.restore(ctx, err)
		fiberErrors(ctx, err)
	}

	// Every answer under /api/v1 and /internal is the caller's alone
	// (noStore) unless its handler says otherwise; the Root group's
	// documents and pages set their own.
	rt := Routes{
		Public:    &Group{r: s.app.Group("/api/v1"), prefix: "/api/v1", mw: []fiber.Handler{noStore, s.identityHeaders(accessPublic)}},
		Protected: &Group{r: s.app.Group("/api/v1"), prefix: "/api/v1", mw: []fiber.Handler{noStore, s.identityHeaders(accessProtected)}, writes: s.liveCredential},
		Optional:  &Group{r: s.app.Group("/api/v1"), prefix: "/api/v1", mw: []fiber.Handler{noStore, s.identityHeaders(accessOptional)}},
		Root:      &Group{r: s.app},
		Internal:  &Group{r: s.app.Group(InternalPrefix), prefix: InternalPrefix, mw: []fiber.Handler{noStore, s.identityHeaders(accessInternal)}},
		Cursors:   &Cursors{cc: s.cursor},
		CloseAtShutdown: func(b *logging.Budget) {
			s.budgets = append(s.budgets, b)
		},
	}
	s.budgets = append(s.budgets, &s.failureLogs, &s.handshakeLogs)
	serveDoc := func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, "application/json")
		c.Set(fiber.HeaderCacheControl, "public, max-age=300")
		return c.Send(openapi.Document())
	}
	// authproxy routes both paths of the document, and /api/v1/health, to
	// coreapi as public routes (no identity needed to read them).
	rt.Root.Get("/openapi.json", serveDoc)
	rt.Root.Get("/api/v1/openapi.json", serveDoc)
	rt.Root.Get("/api/v1/health", health)
	s.internalRoutes(rt)
	for _, reg := range o.Register {
		reg(rt)
	}
	return s, nil
}

// health answers GET /api/v1/health, which authproxy routes to coreapi as
// a public route: an external check through the proxy sees the proxy and
// coreapi answer. It checks no dependency (the admin port's /readyz pings
// the database), so a database outage does not take the path down with
// it: requests that need the database say so themselves (503).
func health(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.SendString(`{"status":"ok"}`)
}

// errNotImplemented refuses a request method the server does not know.
var errNotImplemented = problem.New(fiber.StatusNotImplemented, problem.CodeNotImplemented, "request method not implemented")

// errAsteriskForm refuses OPTIONS *, the request target "*" (RFC 9112
// section 3.2.4; fasthttp refuses it with any other method), which asks
// about the server rather than a resource: coreapi serves paths only.
// authproxy, the one exposed, refuses it with the same 400 bad_path, so a
// client meets one answer at either.
var errAsteriskForm = problem.New(fiber.StatusBadRequest, problem.CodeBadPath, "path not accepted: the request target * is not served")

// refuseEarly answers a request with err before Fiber routes it (a method
// Fiber does not know, which it would answer itself in plain text; the
// target "*"), as handleEarly answers the requests refused before any
// middleware ran (with the request id requestID would have given it, an
// access line, the metrics and a span).
func (s *Server) refuseEarly(ctx *fasthttp.RequestCtx, err error) {
	c := s.app.AcquireCtx(ctx)
	defer s.app.ReleaseCtx(c)
	_ = s.handleEarly(c, err)
}

// App exposes the Fiber app (for in-process tests and extra middleware).
func (s *Server) App() *fiber.App { return s.app }

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.lnMu.Lock()
	closed := s.closed
	s.ln = ln
	s.lnMu.Unlock()
	if closed {
		_ = ln.Close()
		return nil
	}
	// A listener closed by Shutdown ends this with nil (fasthttp reads
	// its Accept error as the end).
	if err := s.app.Listener(ln); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx expires; a Serve not yet started, or not yet accepting,
// returns too. Then it writes the counts of log lines left out that no
// line took yet.
func (s *Server) Shutdown(ctx context.Context) error {
	s.lnMu.Lock()
	s.closed = true
	ln := s.ln
	s.lnMu.Unlock()
	err := s.app.ShutdownWithContext(ctx)
	if ln != nil {
		_ = ln.Close() // closed already unless Serve had not registered it
	}
	for _, b := range s.budgets {
		b.Close()
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// Group registers routes under a prefix with middleware that runs only for
// those routes (unlike fiber's Group, whose middleware applies to every
// path under the prefix, including other groups' routes). A route of
// shared/accountroutes gets its principal check (principals.go) after the
// identity middleware.
type Group struct {
	r      fiber.Router
	prefix string
	mw     []fiber.Handler
	// writes, when set, runs after mw and the principal check on the
	// routes registered with Post, Put, Patch and Delete (liveCredential).
	writes fiber.Handler
}

func (g *Group) chain(method, path string, h []fiber.Handler) []fiber.Handler {
	out := make([]fiber.Handler, 0, len(g.mw)+2+len(h))
	out = append(out, g.mw...)
	if pc := principalCheck(method, g.prefix+path); pc != nil {
		out = append(out, pc)
	}
	if g.writes != nil && method != fiber.MethodGet {
		out = append(out, g.writes)
	}
	return append(out, h...)
}

// Get registers a GET (and HEAD) route.
func (g *Group) Get(path string, h ...fiber.Handler) {
	g.r.Get(path, g.chain(fiber.MethodGet, path, h)...)
}

// GetOnly registers a GET route whose answer has effects (it writes):
// HEAD, which Get would also accept, is not routed, so it is refused with
// 405 and Allow: GET rather than run the handler for an answer nobody
// reads. Link checkers, mail scanners and prefetchers send HEAD; they must
// not start or finish anything. Any other method is refused with the same
// Allow: GET (no HEAD route is there to be listed).
func (g *Group) GetOnly(path string, h ...fiber.Handler) {
	g.r.Add(fiber.MethodGet, path, g.chain(fiber.MethodGet, path, h)...)
}

// Post registers a POST route.
func (g *Group) Post(path string, h ...fiber.Handler) {
	g.r.Post(path, g.chain(fiber.MethodPost, path, h)...)
}

// Put registers a PUT route.
func (g *Group) Put(path string, h ...fiber.Handler) {
	g.r.Put(path, g.chain(fiber.MethodPut, path, h)...)
}

// Patch registers a PATCH route.
func (g *Group) Patch(path string, h ...fiber.Handler) {
	g.r.Patch(path, g.chain(fiber.MethodPatch, path, h)...)
}

// Delete registers a DELETE route.
func (g *Group) Delete(path string, h ...fiber.Handler) {
	g.r.Delete(path, g.chain(fiber.MethodDelete, path, h)...)
}
