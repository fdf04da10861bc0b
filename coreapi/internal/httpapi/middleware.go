package httpapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"
	"unsafe"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeylive"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/clientsecret"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

type localKey int

const (
	keyRequestID localKey = iota
	keyIdentity
	// keyEarly marks a request answered by handleEarly, outside the
	// router, where c.Route() is the request's own path.
	keyEarly
)

// RequestIDOf returns the request's id (set by the first middleware).
func RequestIDOf(c *fiber.Ctx) string {
	id, _ := c.Locals(keyRequestID).(string)
	return id
}

// requestID accepts a sane client X-Request-Id or makes one, and echoes it.
func (s *Server) requestID(c *fiber.Ctx) error {
	setRequestID(c)
	return c.Next()
}

// setRequestID gives the request its id (the client's X-Request-Id when
// sane, else a new one) and sets it on the response.
func setRequestID(c *fiber.Ctx) {
	id := requestid.From(strings.Clone(c.Get(requestid.Header)))
	c.Locals(keyRequestID, id)
	c.Set(requestid.Header, id)
}

// requestContext is a request's context: its count of database round
// trips and its collector of the invalidations it writes, allocated
// together, once per request.
type requestContext struct {
	context.Context
	queries pgtrace.Counter
	writes  outbox.Collector
}

// Value answers the request's counter and collector without a lookup up
// the chain.
func (rc *requestContext) Value(key any) any {
	switch key.(type) {
	case pgtrace.ContextKey:
		return &rc.queries
	case outbox.ContextKey:
		return &rc.writes
	}
	return rc.Context.Value(key)
}

// accessLog gives the request its deadline (Options.RequestTimeout), times
// the whole request, counts its database round trips, turns
// a returned error into the response (so the status is final), names what
// the request invalidated (setInvalidated), then logs, records metrics and
// reports to Options.Observe.
func (s *Server) accessLog(c *fiber.Ctx) error {
	start := time.Now()
	ctx, cancel := context.WithDeadline(c.UserContext(), start.Add(s.timeout))
	defer cancel()
	rc := &requestContext{Context: ctx}
	c.SetUserContext(rc)
	counter := &rc.queries
	if err := c.Next(); err != nil {
		if herr := s.handleError(c, err); herr != nil {
			c.Status(fiber.StatusInternalServerError)
		}
	}
	setInvalidated(c, &rc.writes)
	s.record(c, start, routeOf(c), counter)
	return nil
}

// routeOf is the route template the request matched, "unmatched" when
// none did (only middleware matched, or the request was refused before
// routing: handleEarly): a bounded metric label.
func routeOf(c *fiber.Ctx) string {
	if early, _ := c.Locals(keyEarly).(bool); early {
		return "unmatched"
	}
	if route := c.Route().Path; route != "/" {
		return route
	}
	return "unmatched"
}

// setInvalidated names in the answer what the request invalidated
// (invalidation.HeaderInvalidated: the subjects of the outbox rows it
// wrote), whatever its status: a refresh token's reuse is answered 400
// after its session's revocation committed. The proxy that forwarded the
// request evicts them before it answers, without waiting for the NATS
// events, and removes the header. A request that wrote no row gets none
// (a read costs one check of an empty list).
func setInvalidated(c *fiber.Ctx, w *outbox.Collector) {
	if v := w.Header(); v != "" {
		c.Response().Header.Set(invalidation.HeaderInvalidated, v)
	}
}

// handleEarly is the Fiber ErrorHandler: it answers the errors raised
// before any middleware ran (a body over the limit, header fields too
// large, a malformed request), a method the server does not know and the
// target "*" (refuseEarly), and records them as accessLog records the
// others (an access line, the metrics, Observe) and traces them as the
// tracing middleware traces the others, on the route "unmatched".
func (s *Server) handleEarly(c *fiber.Ctx, err error) error {
	start := time.Now()
	// The client's sane id all the same, as requestID would have taken
	// it, so that the answer's id is the one the proxy signed and logged.
	// The header fields may not have been read (431): a new id then.
	setRequestID(c)
	c.Locals(keyEarly, true)
	var span trace.Span
	if s.tracer != nil {
		span = s.tracer.start(c)
	}
	herr := s.handleError(c, err)
	if herr != nil {
		c.Status(fiber.StatusInternalServerError)
	}
	// Not c.Route(): outside the router it is the request's own path.
	s.record(c, start, "unmatched", &pgtrace.Counter{})
	if span != nil {
		s.tracer.end(c, span, "unmatched")
	}
	return nil
}

// record logs, counts and reports a request answered since start.
func (s *Server) record(c *fiber.Ctx, start time.Time, route string, counter *pgtrace.Counter) {
	d := time.Since(start)
	status := c.Response().StatusCode()
	method := methodName(c.Method())
	s.metrics.observe(method, route, status, d, counter.Queries())
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	if s.accessLogger.Enabled(c.UserContext(), level) && s.accessLineDue(c.UserContext(), level) {
		s.logRequest(c, level, method, route, status, d, counter)
	}
	if s.observe != nil {
		s.observe(RequestStats{
			RequestID: RequestIDOf(c), Method: method, Route: route, Status: status,
			Duration: d, Queries: counter.Queries(), Transactions: counter.Transactions(), Prepares: counter.Prepares(),
		})
	}
}

// accessLineDue reports whether the access line of a request, at level,
// is to be written. At info every request has one (the access log); a
// 5xx's line, at error, is there below info only because it is an error,
// and it is then one of the lines logFailure bounds: while the database
// is down every request answers 503, and at LOG_LEVEL=warn each wrote an
// error line, as many as clients sent requests.
func (s *Server) accessLineDue(ctx context.Context, level slog.Level) bool {
	if level < slog.LevelError || s.accessLogger.Enabled(ctx, slog.LevelInfo) {
		return true
	}
	return s.failureLogs.Allow(time.Now(), level)
}

// logFailure writes a warning or error about a request answered 5xx
// ("database unavailable", "request failed", "panic"), at most
// FailureLogsPerSecond of them a second together with the 5xx access
// lines written below info: while the database is down, or a handler
// fails on some request, a client repeating it as fast as it likes
// wrote a line or two each, whatever LOG_LEVEL said. The first line of a
// later second is preceded by one counting those left out, written on its
// own about a second after the last when none comes
// (coreapi_http_request_duration_seconds_count counts every request, by
// route and code).
func (s *Server) logFailure(ctx context.Context, level slog.Level, msg string, args ...any) {
	if s.log.Enabled(ctx, level) && s.failureLogs.Allow(time.Now(), level) {
		s.log.Log(ctx, level, msg, args...)
	}
}

// FailureLogsPerSecond bounds the lines about requests answered 5xx a
// second (logFailure), as authproxy bounds its upstream failures.
const FailureLogsPerSecond = 100

// logRequest writes the access log line of a finished request (only
// built when the level is enabled: most deployments log requests at info
// only while debugging).
func (s *Server) logRequest(c *fiber.Ctx, level slog.Level, method, route string, status int, d time.Duration, counter *pgtrace.Counter) {
	id := IdentityOf(c)
	if method == otherMethod {
		// The line names the method as sent, clipped as authproxy clips
		// it (its client chooses the length).
		method = strings.Clone(c.Method()[:min(len(c.Method()), 32)])
	}
	// trace_id is added by tracing.LogHandler from the context when the
	// request is traced.
	s.accessLogger.LogAttrs(c.UserContext(), level, "request",
		slog.String("request_id", RequestIDOf(c)),
		slog.String("method", method),
		slog.String("path", logging.ClipPath(c.Path())),
		slog.String("route", route),
		slog.Int("status", status),
		slog.String("principal", id.Principal),
		slog.String("user_id", id.UserID),
		slog.String("tenant_id", id.TenantID),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.Int64("db_queries", counter.Queries()),
		slog.Int64("db_transactions", counter.Transactions()),
		slog.Int64("db_prepares", counter.Prepares()),
	)
}

// methodName returns a request method as a string that stays unchanged
// (c.Method() aliases the request's buffer): the constant for the
// standard methods, a copy for the other methods the server routes
// (CONNECT, TRACE), and otherMethod for any other (answered 501), whose
// name a client chooses: it is a metric label.
func methodName(m string) string {
	for _, std := range [...]string{fiber.MethodGet, fiber.MethodPost, fiber.MethodPatch, fiber.MethodPut,
		fiber.MethodDelete, fiber.MethodHead, fiber.MethodOptions} {
		if m == std {
			return std
		}
	}
	if !problem.KnownMethod([]byte(m)) {
		return otherMethod
	}
	return strings.Clone(m)
}

// otherMethod stands for a request method the server does not know
// (OpenTelemetry's name for one outside the known set).
const otherMethod = "_OTHER"

// recover turns a handler panic into a 500 problem and logs it.
func (s *Server) recover(c *fiber.Ctx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logPanic(c, r)
			err = problem.New(fiber.StatusInternalServerError, problem.CodeInternal, "")
		}
	}()
	return c.Next()
}

// logPanic logs a recovered panic r with the stack that raised it (call
// it in the deferred function that recovered).
func (s *Server) logPanic(c *fiber.Ctx, r any) {
	s.logFailure(c.UserContext(), slog.LevelError, "panic", "request_id", RequestIDOf(c), "method", methodName(c.Method()),
		"path", logging.ClipPath(c.Path()), "panic", logging.Redact(fmt.Sprint(r)), "stack", logging.ClipStack(debug.Stack()))
}

var errNoIdentity = problem.New(fiber.StatusUnauthorized, problem.CodeUnauthenticated,
	"missing or invalid identity signature")

// errV1Refused: a v1 signature while IDENTITY_ACCEPT_V1 is false.
var errV1Refused = errors.New("identity: v1 signatures are not accepted")

// access is what a route group asks of the identity headers.
type access int

const (
	// accessPublic: a signature is required unless v1 is accepted
	// (Options.AcceptV1), when an unsigned request is served as the
	// anonymous principal; one that is sent must verify and name valid
	// ids (its identity and client IP are then available).
	accessPublic access = iota
	// accessProtected: a verified, non-anonymous caller with a user and
	// tenant.
	accessProtected
	// accessInternal: the proxy's own calls, signed with a core key over
	// the anonymous, empty identity and without a client IP.
	accessInternal
	// accessOptional: like accessPublic (routes that serve both anonymous
	// callers and users).
	accessOptional
)

// verified is what the identity middleware stores for the handlers.
type verified struct {
	id       identity.Identity
	clientIP string // the signed X-Auth-Client-Ip; "" for v1
	// apiKeyID is the key of an api_key principal: the proxy sends it as
	// X-Auth-Session-Id, which id.SessionID then leaves empty (a key has
	// no session; see identityHeaders).
	apiKeyID string
	// secretID is, the same way, the client secret a service principal's
	// token was obtained with ("" for a token issued without one).
	secretID string
}

// IdentityOf returns the verified identity of the caller: always set on
// Protected routes; on Public routes it is the anonymous principal unless
// the request carried a valid signature. Its strings are owned copies,
// safe to keep.
func IdentityOf(c *fiber.Ctx) identity.Identity {
	if v, ok := c.Locals(keyIdentity).(*verified); ok {
		return v.id
	}
	return identity.Identity{Principal: identity.PrincipalAnonymous}
}

// APIKeyOf is the id of the API key that authenticated the caller: ""
// for any principal but api_key.
func APIKeyOf(c *fiber.Ctx) string {
	if v, ok := c.Locals(keyIdentity).(*verified); ok {
		return v.apiKeyID
	}
	return ""
}

// ClientSecretOf is the id of the client secret the caller's access token
// was obtained with: "" for any principal but service, and for a service
// token issued without one.
func ClientSecretOf(c *fiber.Ctx) string {
	if v, ok := c.Locals(keyIdentity).(*verified); ok {
		return v.secretID
	}
	return ""
}

// SessionOf is the session the caller's request was signed with: ""
// for a caller that has none (a service account, an API key).
func SessionOf(c *fiber.Ctx) string {
	id := IdentityOf(c)
	if id.Principal == identity.PrincipalAPIKey || id.Principal == identity.PrincipalService {
		return ""
	}
	return id.SessionID
}

// ClientIP is the one place coreapi learns where a request comes from (for
// sessions, audit, lockout and rate limits): the X-Auth-Client-Ip of a
// verified v2 signature, else the address of the connection's peer.
// X-Forwarded-For and any other client-supplied header are never read:
// only the proxy knows which hops to trust (TRUSTED_PROXY_CIDRS), and it
// signs its answer. The string is an owned copy.
func ClientIP(c *fiber.Ctx) string {
	if v, ok := c.Locals(keyIdentity).(*verified); ok && v.clientIP != "" {
		return v.clientIP
	}
	a, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if !ok {
		return ""
	}
	return a.Unmap().String()
}

// identityHeaders returns the middleware that verifies the identity headers
// of a route group; a missing (where required), forged, stale or replayed
// signature is 401.
func (s *Server) identityHeaders(a access) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if (a == accessPublic || a == accessOptional) && s.v1 != nil && len(c.Request().Header.Peek(identity.HeaderSignature)) == 0 {
			// What a v1 proxy forwards on its public routes (the token
			// endpoint, optional now, among them): served as anonymous,
			// with the peer's address, while v1 is accepted only. Once
			// it is not, every proxy signs every request it forwards, and
			// an unsigned one bypassed the proxy: 401 (missing) below.
			return c.Next()
		}
		v, err := s.verifyIdentity(c)
		if err != nil {
			s.metrics.identityRejected(reason(err))
			return errNoIdentity
		}
		id := &v.id
		switch a {
		// Ids in lower case only: handlers compare them as text with the
		// ids coreapi wrote (uid == id.UserID), so another spelling of the
		// caller's own id would read as someone else's.
		case accessPublic, accessOptional:
			// IdentityOf reports the ids on these routes too (and the
			// span records them): the anonymous identity, which the proxy
			// signs where it forwards no bearer, names none.
			if id.Principal == identity.PrincipalAnonymous && (id.UserID != "" || id.TenantID != "" || id.SessionID != "") ||
				id.Principal != identity.PrincipalAnonymous && (!ids.Canonical(id.UserID) || !ids.Canonical(id.TenantID) ||
					(id.SessionID != "" && !ids.Canonical(id.SessionID))) {
				s.metrics.identityRejected("bad_ids")
				return errNoIdentity
			}
		case accessProtected:
			if id.Principal == identity.PrincipalAnonymous || !ids.Canonical(id.UserID) || !ids.Canonical(id.TenantID) ||
				(id.SessionID != "" && !ids.Canonical(id.SessionID)) {
				s.metrics.identityRejected("bad_ids")
				return errNoIdentity
			}
		case accessInternal:
			// The proxy's own calls carry no client IP; every request it
			// forwards does (an anonymous client's on a public route is
			// signed with the same key over the same empty identity), so
			// one that names a client is a client's, never the proxy's.
			if id.Principal != identity.PrincipalAnonymous || id.UserID != "" || id.TenantID != "" || id.SessionID != "" ||
				len(id.Roles) > 0 || len(id.Permissions) > 0 || id.EmailVerified || len(id.AMR) > 0 || id.AuthTime != 0 ||
				v.clientIP != "" {
				s.metrics.identityRejected("not_service")
				return errNoIdentity
			}
		}
		if id.Principal == identity.PrincipalAPIKey && id.SessionID != "" {
			// An API key's X-Auth-Session-Id names the key (the proxy has
			// no session to name). Kept apart, so that nothing that reads
			// the caller's session takes the key's id for one, and handed
			// to the audit log, whose events of this request record it.
			v.apiKeyID, id.SessionID = id.SessionID, ""
			c.SetUserContext(audit.WithAPIKey(c.UserContext(), id.UserID, v.apiKeyID))
		}
		if id.Principal == identity.PrincipalService && id.SessionID != "" {
			// A service token's X-Auth-Session-Id names the client secret
			// it was obtained with (its csid claim): kept apart as the
			// key's id is, for the writes' check (liveCredential).
			v.secretID, id.SessionID = id.SessionID, ""
		}
		c.Locals(keyIdentity, v)
		return c.Next()
	}
}

// liveCredential refuses the writes (Protected routes but GET) of a
// request whose credential has ended though the proxy that signed it has
// not yet heard (NATS late or partitioned, the event missed: up to
// MAX_STALENESS): a service principal whose access token was obtained
// with a client secret since deleted, or an API key since revoked or
// expired. Neither may mint a key, grant a role or change anything else
// on the say of a credential ended because it may have leaked. One
// primary-key lookup, for the writes of those principals only: reads
// cost nothing more, and end at the proxies.
//
// A write of either principal that names no credential (a proxy of the
// first release forwards neither id; a service token issued before tokens
// named their secret has none) cannot be checked: it is counted
// (coreapi_machine_writes_unchecked_total), so an operator can tell when
// every proxy forwards them, and let through as before.
func (s *Server) liveCredential(c *fiber.Ctx) error {
	v, ok := c.Locals(keyIdentity).(*verified)
	switch {
	case !ok:
	case v.id.Principal == identity.PrincipalAPIKey && v.apiKeyID == "":
		s.metrics.uncheckedKey.Inc()
	case v.id.Principal == identity.PrincipalService && v.secretID == "":
		s.metrics.uncheckedToken.Inc()
	case v.secretID != "":
		switch err := clientsecret.CheckLive(c.UserContext(), s.pool, v.id.UserID, v.secretID); {
		case errors.Is(err, clientsecret.ErrDeleted):
			return SecretDeleted(c)
		case err != nil:
			return err
		}
	case v.apiKeyID != "":
		switch err := apikeylive.CheckLive(c.UserContext(), s.pool, v.id.TenantID, v.id.UserID, v.apiKeyID); {
		case errors.Is(err, apikeylive.ErrEnded):
			return keyEnded(c)
		case err != nil:
			return err
		}
	}
	return c.Next()
}

// verifyIdentity checks the signed identity headers of one request: v2
// against the core keys, over the method, path and query as received and
// the SHA-256 of the body as received, once only (replays are refused
// within the window); v1 only while accepted (Options.AcceptV1), once only
// too.
func (s *Server) verifyIdentity(c *fiber.Ctx) (*verified, error) {
	sig := c.Get(identity.HeaderSignature)
	if strings.HasPrefix(sig, identity.Version+"=") {
		if s.v1 == nil {
			return nil, errV1Refused
		}
		id := readIdentityV1(c)
		now, ts := s.now(), c.Get(identity.HeaderTimestamp)
		if err := s.v1.Verify(now, ts, sig, c.Method(), c.OriginalURL(), id); err != nil {
			return nil, err
		}
		// The same filter as v2's: a captured v1 request sent again, with
		// this body or another (v1 signs none), is refused in the window.
		if err := s.replays.CheckV1(sig, ts, identity.DefaultWindow, now); err != nil {
			return nil, err
		}
		id.Principal = identity.PrincipalAnonymous
		if id.UserID != "" {
			id.Principal = identity.PrincipalUser
		}
		return &verified{id: id}, nil
	}
	body := identity.EmptyBodySHA256
	if b := c.Request().Body(); len(b) > 0 { // raw: c.Body() would decompress
		body = sha256.Sum256(b)
	}
	var hs headerSet
	hs.read(&c.Request().Header)
	if hs.repeated {
		return nil, identity.ErrMalformed
	}
	now := s.now()
	id, err := s.verifier.Verify(now, hs.get, c.Method(), c.OriginalURL(), body)
	if err != nil {
		return nil, err
	}
	// Verify refused a request without a request id, which is what makes
	// two identical requests' signatures differ.
	// Verified above, the signature and timestamp are well-formed.
	if err := s.replays.Check(hs.get(identity.HeaderSignature), hs.get(identity.HeaderTimestamp), s.verifier.Window(), now); err != nil {
		return nil, err
	}
	// Copy what is kept out of fasthttp's buffers. Principal is one of
	// four constants (Verify checked): use them, not copies.
	for _, p := range [...]string{identity.PrincipalUser, identity.PrincipalAPIKey, identity.PrincipalService, identity.PrincipalAnonymous} {
		if id.Principal == p {
			id.Principal = p
		}
	}
	v := &verified{id: id, clientIP: hs.get(identity.HeaderClientIP)}
	v.own()
	return v, nil
}

// own copies the strings of v that alias fasthttp's buffers (the ids, the
// lists' items and the client IP) into one allocation: a request of an
// owner carries a dozen permissions.
func (v *verified) own() {
	id := &v.id
	lists := [...][]string{id.Roles, id.Permissions, id.AMR}
	n := len(id.UserID) + len(id.TenantID) + len(id.SessionID) + len(v.clientIP)
	for _, l := range lists {
		for _, s := range l {
			n += len(s)
		}
	}
	o := owner{buf: make([]byte, 0, n)}
	id.UserID, id.TenantID, id.SessionID, v.clientIP = o.copy(id.UserID), o.copy(id.TenantID), o.copy(id.SessionID), o.copy(v.clientIP)
	for _, l := range lists {
		for i := range l {
			l[i] = o.copy(l[i])
		}
	}
}

// owner hands out strings copied into buf, which is sized for all of
// them up front and never written below its length again.
type owner struct{ buf []byte }

func (o *owner) copy(s string) string {
	if s == "" {
		return ""
	}
	from := len(o.buf)
	o.buf = append(o.buf, s...)
	return unsafeString(o.buf[from:])
}

// Indexes of the v2 identity headers in a headerSet.
const (
	hdrKeyID = iota
	hdrPrincipal
	hdrUserID
	hdrTenantID
	hdrSessionID
	hdrRoles
	hdrPermissions
	hdrEmailVerified
	hdrAMR
	hdrAuthTime
	hdrClientIP
	hdrTimestamp
	hdrSignature
	hdrRequestID
	hdrCount
)

// headerIndex maps a header name, as fasthttp stores it (normalized), to
// its index; -1 for any other header.
func headerIndex(name string) int {
	switch name {
	case identity.HeaderKeyID:
		return hdrKeyID
	case identity.HeaderPrincipal:
		return hdrPrincipal
	case identity.HeaderUserID:
		return hdrUserID
	case identity.HeaderTenantID:
		return hdrTenantID
	case identity.HeaderSessionID:
		return hdrSessionID
	case identity.HeaderRoles:
		return hdrRoles
	case identity.HeaderPermissions:
		return hdrPermissions
	case identity.HeaderEmailVerified:
		return hdrEmailVerified
	case identity.HeaderAMR:
		return hdrAMR
	case identity.HeaderAuthTime:
		return hdrAuthTime
	case identity.HeaderClientIP:
		return hdrClientIP
	case identity.HeaderTimestamp:
		return hdrTimestamp
	case identity.HeaderSignature:
		return hdrSignature
	case identity.HeaderRequestID:
		return hdrRequestID
	}
	return -1
}

// headerSet holds the identity headers of one request, found in a single
// pass over the headers: fasthttp's Peek normalizes the name and scans
// every header on each call, which for fourteen headers costs more than
// the HMAC. Values alias fasthttp's buffers; the first occurrence of a
// header wins, as with Peek, and repeated says another one came.
type headerSet struct {
	raw [hdrCount][]byte
	// repeated: a signed header came twice. The proxy sends each once; a
	// second line (one added to a captured request) is what another
	// reader of the request could take instead of the signed one, so the
	// request is refused as malformed, as the app SDKs refuse it.
	repeated bool
}

func (hs *headerSet) read(h *fasthttp.RequestHeader) {
	for k, v := range h.All() {
		if len(k) < len("X-Auth-Amr") || (k[0] != 'X' && k[0] != 'x') {
			continue
		}
		if i := headerIndex(string(k)); i >= 0 {
			if hs.raw[i] != nil {
				hs.repeated = true
				continue
			}
			hs.raw[i] = v
			if v == nil {
				hs.raw[i] = []byte{}
			}
		}
	}
}

// get is the identity.Headers view of the set (unsafe strings: copy what
// is kept).
func (hs *headerSet) get(name string) string {
	if i := headerIndex(name); i >= 0 {
		return unsafeString(hs.raw[i])
	}
	return ""
}

func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// readIdentityV1 copies the v1 identity headers out of fasthttp's buffers.
func readIdentityV1(c *fiber.Ctx) identity.Identity {
	return identity.Identity{
		UserID:      strings.Clone(c.Get(identity.HeaderUserID)),
		TenantID:    strings.Clone(c.Get(identity.HeaderTenantID)),
		SessionID:   strings.Clone(c.Get(identity.HeaderSessionID)),
		Roles:       identity.SplitList(strings.Clone(c.Get(identity.HeaderRoles))),
		Permissions: identity.SplitList(strings.Clone(c.Get(identity.HeaderPermissions))),
	}
}

// reason names a refusal for identity_rejected_total: coreapi's own
// (v1 refused), else the identity package's name for the error (replay
// for identity.ErrReplayed).
func reason(err error) string {
	if errors.Is(err, errV1Refused) {
		return "v1_refused"
	}
	return identity.Reason(err)
}

// RequirePermission returns middleware that answers 403 insufficient_scope
// (the code the proxy and the SDK use for a missing permission) unless the
// verified identity holds perm. Use it after the identity middleware
// (Protected routes).
func RequirePermission(perm string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if !IdentityOf(c).Has(perm) {
			return problem.New(fiber.StatusForbidden, problem.CodeInsufficientScope, "requires permission "+perm)
		}
		return c.Next()
	}
}

// Me stands for the caller's own user id wherever a path takes a user id
// (/users/me/roles/{role}, ...).
const Me = "me"

// UserIDParam returns the user id of a path parameter: a UUID, or me for
// the verified caller.
func UserIDParam(c *fiber.Ctx, name string) (string, error) {
	if c.Params(name) == Me {
		return IdentityOf(c).UserID, nil
	}
	u, ok := ids.Parse(c.Params(name))
	if !ok {
		return "", problem.New(fiber.StatusBadRequest, problem.CodeInvalidID, name+" must be a user id (a UUID) or me")
	}
	return u, nil
}

// PathUUID returns a path parameter that must be a UUID, as an owned,
// lower-case string, or a 400 problem.
func PathUUID(c *fiber.Ctx, name string) (string, error) {
	u, ok := ids.Parse(c.Params(name))
	if !ok {
		return "", problem.New(fiber.StatusBadRequest, problem.CodeInvalidID, name+" must be a UUID")
	}
	return u, nil
}
