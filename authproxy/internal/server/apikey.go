package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gofiber/fiber/v2"
	"github.com/tollgate-auth/tollgate/authproxy/internal/decide"
	"github.com/tollgate-auth/tollgate/authproxy/internal/headers"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/shared/accountroutes"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/clientkey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/valyala/fasthttp"
)

// Keys resolves API keys (the projection cache): GetKey from the cache or
// coreapi, CachedKey from the cache alone (projection.ErrKeyNotCached).
type Keys interface {
	GetKeyAdmitted(ctx context.Context, key, pid []byte, d *[sha256.Size]byte, now time.Time, requestID, clientIP string,
		admit projection.Admission) (*projection.KeyEntry, error)
	CachedKey(pid []byte, d *[sha256.Size]byte, now time.Time) (*projection.KeyEntry, error)
	// InvalidateAPIKey forgets the cached key with this public id (a
	// revocation coreapi's answer names: coreAnswered).
	InvalidateAPIKey(publicID string)
}

// Wrong-secret limits: after APIKeyFailures wrong secrets for one key from
// one client IP within APIKeyFailWindow, every attempt at that key from
// that IP is answered 429 until the window ends. Other IPs are not
// affected, so nobody can lock a real key out from elsewhere.
//
// Unknown keys are counted per client IP alone (each guess names a fresh
// public id, so a per-key count never grows, and each would cost a
// resolve at coreapi): after APIKeyFailures of them within the window,
// that IP's keys are answered from the proxy's cache only until the window
// ends; a key the cache does not hold gets 429 instead of a call. A key
// in use from there stays cached and keeps working.
const (
	DefaultAPIKeyFailures   = 10
	DefaultAPIKeyFailWindow = time.Minute
	// maxKeyFailPairs bounds the (key, IP) pairs remembered; beyond it an
	// arbitrary pair is forgotten.
	maxKeyFailPairs = 100_000
)

// Refusals of API keys.
var (
	errKeyInQuery = &httpError{status: 400, code: problem.CodeAPIKeyInQuery,
		detail: "API keys are not accepted in the query string (URLs end up in logs): send it as Authorization: Bearer or X-API-Key; this key should now be considered exposed"}
	// An access token of coreapi's in the query string (tokenInQuery): the
	// API key's refusal, its code included.
	errTokenInQuery = &httpError{status: 400, code: problem.CodeAPIKeyInQuery,
		detail: "access tokens are not accepted in the query string (URLs end up in logs): send it as Authorization: Bearer; this token should now be considered exposed"}
	errKeyAmbiguous = &httpError{status: 400, code: problem.CodeAmbiguousCredentials,
		detail: "send either X-API-Key or Authorization, not both"}
	errKeyMalformed = &httpError{status: 401, code: problem.CodeInvalidToken,
		detail: "malformed API key: want tg_ + 16 [a-z0-9] + _ + 43 [A-Za-z0-9]", wwwAuth: `Bearer error="invalid_token"`}
	errNotAKey = &httpError{status: 401, code: problem.CodeInvalidToken,
		detail: "X-API-Key holds no API key (tg_...); send access tokens as Authorization: Bearer", wwwAuth: `Bearer error="invalid_token"`}
	errKeyInvalid = &httpError{status: 401, code: problem.CodeInvalidToken,
		detail: "the API key is not valid", wwwAuth: `Bearer error="invalid_token"`}
	errKeyStream = &httpError{status: 403, code: problem.CodeForbidden,
		detail: "API keys cannot open WebSockets or event streams; use an access token"}
	errKeyStepUp = &httpError{status: 403, code: problem.CodeInsufficientUserAuthentication,
		detail: "this route needs a recent second factor, which an API key cannot give"}
)

// keyHygiene runs on every request before routing: a key or one of
// coreapi's access tokens in the query string is refused (queryRefused),
// X-API-Key is taken out of the request (copied into st; it never reaches
// an upstream), and X-API-Key with Authorization is refused.
func (s *Server) keyHygiene(c *fiber.Ctx, st *state) error {
	st.xkey, st.xkeyN = st.xkey[:0], 0
	if q := c.Request().URI().QueryString(); len(q) > 0 {
		if err := s.queryRefused(st, q); err != nil {
			return err
		}
	}
	if !st.seen.APIKey { // most requests: headers.Scan saw none
		return nil
	}
	h := &c.Request().Header
	err := s.apiKeyHeader(h, st)
	if st.xkeyN > 0 {
		headers.DelAPIKey(h)
	}
	return err
}

// apiKeyHeader copies the request's X-API-Key into st (xkey, xkeyN), and
// refuses it beside another X-API-Key or Authorization.
func (s *Server) apiKeyHeader(h *fasthttp.RequestHeader, st *state) error {
	v, n := headers.APIKey(h)
	if n == 0 {
		return nil
	}
	st.xkeyN = n
	if len(v) <= apikey.Len+1 { // longer is malformed: not worth a copy
		st.xkey = append(st.xkey, v...)
	} else {
		st.xkey = append(st.xkey, v[:apikey.Len+1]...)
	}
	if n > 1 || authorizationSent(h) {
		st.outcome = "ambiguous_credentials"
		s.d.Metrics.APIKeyRefusals.WithLabelValues("ambiguous").Inc()
		return errKeyAmbiguous
	}
	return nil
}

// keyAmbiguous reports whether apiKeyHeader refuses h's X-API-Key (if
// any) for another X-API-Key or an Authorization field beside it.
func keyAmbiguous(h *fasthttp.RequestHeader) bool {
	_, n := headers.APIKey(h)
	return n > 1 || n == 1 && authorizationSent(h)
}

// authorizationSent reports whether h has an Authorization field with a
// value: every field, as the first may be empty and a later one hold a
// bearer.
func authorizationSent(h *fasthttp.RequestHeader) bool {
	for _, a := range h.PeekAll(fiber.HeaderAuthorization) {
		if len(a) > 0 {
			return true
		}
	}
	return false
}

// queryRefused refuses a query string q that holds an API key (keyInQuery)
// or one of coreapi's access tokens (tokenInQuery): 400, before routing,
// on every route. An app would get the credential in its request target
// (and its access log), and a token is good at coreapi and every other
// app until it expires.
func (s *Server) queryRefused(st *state, q []byte) error {
	if keyInQuery(q) {
		st.outcome = "api_key_in_query"
		s.d.Metrics.APIKeyRefusals.WithLabelValues("in_query").Inc()
		return errKeyInQuery
	}
	if tokenInQuery(q, s.d.Verifier) {
		st.outcome = "token_in_query"
		return errTokenInQuery
	}
	return nil
}

// tokenInQuery reports whether a query parameter's name or value holds one
// of coreapi's access tokens (Verifier.Ours, in any token of it as
// headers.AnyToken splits it), percent-encoded or not: RFC 6750's
// access_token parameter, or any other. A query shorter than the shortest
// JWS Ours could take holds none, nor does one without "eyJ" (base64url
// of a protected header's `{"`) once its escapes are decoded: the raw
// scans are cheap; only a hit parses the query.
func tokenInQuery(q []byte, v Verifier) bool {
	if len(q) < minQueryToken {
		return false
	}
	if !bytes.Contains(q, []byte("eyJ")) && (bytes.IndexByte(q, '%') < 0 || !decodedContains(q, "eyJ")) {
		return false
	}
	var args fasthttp.Args
	args.ParseBytes(q)
	for k, val := range args.All() {
		if headers.AnyToken(k, v.Ours) || headers.AnyToken(val, v.Ours) {
			return true
		}
	}
	return false
}

// minQueryToken is the length of the shortest value Verifier.Ours can
// take: the protected header {"typ":"at+jwt"} in base64url and its dot.
const minQueryToken = len("eyJ0eXAiOiJhdCtqd3QifQ.")

// decodedContains reports whether q, its %XX escapes decoded, holds w (at
// most 8 bytes).
func decodedContains(q []byte, w string) bool {
	var last [8]byte // the bytes decoded last, the newest at the end
	n := 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '%' && i+2 < len(q) {
			var d [1]byte
			if _, err := hex.Decode(d[:], q[i+1:i+3]); err == nil {
				c = d[0]
				i += 2
			}
		}
		copy(last[:], last[1:])
		last[len(last)-1] = c
		n++
		if n >= len(w) && string(last[len(last)-len(w):]) == w {
			return true
		}
	}
	return false
}

// keyInQuery reports whether a query parameter's name or value starts as
// a key does (apikey.HasHead: "tg_", a public id, "_"; percent-encoded or
// not). "tg_" alone is not enough: one of coreapi's one-time tokens (a
// verification, reset or invitation link's, an OAuth state) in about
// 262,144 starts so, and its link was refused. The raw scan is cheap; only
// a hit parses the query.
func keyInQuery(q []byte) bool {
	if len(q) <= mayHoldTGMax && !mayHoldTG(q) { // most queries: short, neither
		return false
	}
	if !bytes.Contains(q, []byte("tg")) && (bytes.IndexByte(q, '%') < 0 || !decodedContains(q, "tg")) {
		return false
	}
	var args fasthttp.Args
	args.ParseBytes(q)
	for k, v := range args.All() {
		if apikey.HasHead(k) || apikey.HasHead(v) {
			return true
		}
	}
	return false
}

// mayHoldTG reports whether q holds "tg" or a '%', in one pass: for a
// short query (up to mayHoldTGMax bytes) cheaper than the two scans of the
// library's (TestMayHoldTG), whose set-up every query paid.
func mayHoldTG(q []byte) bool {
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case '%':
			return true
		case 't':
			if i+1 < len(q) && q[i+1] == 'g' {
				return true
			}
		}
	}
	return false
}

// mayHoldTGMax is the longest query mayHoldTG reads: a longer one is
// scanned by the library's vector loops.
const mayHoldTGMax = 64

// keyWarm is the warm state of a key entry (see warm): its principal is
// api_key and it has no authentication methods or time. Its stamp is left
// zero (never valid): the key entry's own validity is GetKey's to judge,
// and a key entry refetched comes with a token entry of its own, so the
// warm state (and its Subject) lives exactly as long as its E.
func keyWarm(e *projection.KeyEntry) *warm {
	cl := e.Token.Claims()
	return &warm{pe: e.E, sub: decide.NewSubject(cl, e.E), principal: identity.PrincipalAPIKey}
}

// authorizeKey authenticates a request carrying an API key (X-API-Key, or
// raw: the Authorization bearer starting with "tg_") and authorizes it as
// the key's user with the key's effective permissions.
func (s *Server) authorizeKey(c *fiber.Ctx, st *state, rt *Router, route *rules.Route, raw []byte) error {
	ke, w, err := s.resolveKey(c, st, raw)
	if err != nil {
		if keyRefusal(err) {
			return s.keyRefused(c, st, rt, route, err)
		}
		return err
	}
	out := w.sub.Decide(route)
	s.decidedAt(st)
	st.outcome = out.String()
	if out == decide.Allow {
		if route.Core {
			if err := s.coreRefusal(identity.PrincipalAPIKey, c.Request().Header.Method(), st.path); err != nil {
				st.outcome = "api_key_account_route"
				return err
			}
		}
		if out, _ = w.sub.Authn(route, b2s(c.Request().Header.Method()), b2s(st.path), st.authAt.Unix()); out != decide.Allow {
			st.outcome = out.String()
			s.decided(out)
			if out == decide.DenyMFAEnrollment {
				return errMFAEnrollment
			}
			return errKeyStepUp
		}
	}
	s.decided(out)
	if out != decide.Allow {
		return s.refused(c, st, rt, route, out, errKeyInvalid)
	}
	if st.upgrade == headers.UpgradeWebSocket && route.Websocket || route.StreamTimeout > 0 {
		// A stream outlives the request, and the streams are re-checked as
		// their user's, so a key's revocation would not end it.
		st.outcome = "api_key_stream"
		return errKeyStream
	}
	ke.MarkUsed()
	return s.forward(c, st, rt, route, ke.Token, w)
}

// resolveKey finds the entry of the request's API key (X-API-Key, or raw:
// the Authorization bearer starting with "tg_") and its warm state; or the
// answer when there is none: a refusal of the key itself (keyRefusal), a
// client IP locked out (429), or the identity service failing.
func (s *Server) resolveKey(c *fiber.Ctx, st *state, raw []byte) (*projection.KeyEntry, *warm, error) {
	key := raw
	if st.xkeyN > 0 {
		key = st.xkey
	}
	pid, ok := apikey.Parse(key)
	if !ok {
		st.outcome = "bad_api_key"
		if st.xkeyN > 0 && !apikey.HasPrefix(key) {
			s.d.Metrics.APIKeyRefusals.WithLabelValues("not_a_key").Inc()
			return nil, nil, errNotAKey
		}
		s.d.Metrics.APIKeyRefusals.WithLabelValues("malformed").Inc()
		return nil, nil, errKeyMalformed
	}
	st.ip = s.clientIP(c, st, st.ip[:0])
	if wait := s.keyLimit.locked(pid, st.ip, st.start); wait > 0 {
		st.outcome = "api_key_rate_limited"
		s.d.Metrics.APIKeyRefusals.WithLabelValues("rate_limited").Inc()
		return nil, nil, keyLimited(wait)
	}
	st.keyDigest = sha256.Sum256(key)
	ke, err := s.d.Keys.CachedKey(pid, &st.keyDigest, st.start)
	reserved := false
	if errors.Is(err, projection.ErrKeyNotCached) {
		// A resolve at coreapi is counted against the client IP's budget
		// of unknown keys before it is made (by the request that makes
		// it, not those that join it), and given back once answered
		// unless the key turns out unknown: counted only once answered, a
		// client sending its made-up keys (or wrong secrets) at once had
		// them all resolved (and held the shared fetch slots), however
		// small the budget. A wrong secret is given back here, and
		// counted per key below.
		reserved = true
		admit := func() (func(unknown bool), error) {
			window, wait := s.keyLimit.reserve(st.ip, st.start)
			if wait > 0 {
				return nil, &keysLimited{wait: wait}
			}
			return func(unknown bool) {
				if !unknown {
					s.keyLimit.release(st.ip, window)
				}
			}, nil
		}
		if st.trace.on {
			ke, err = s.tracedKey(st, key, pid, admit)
		} else {
			ke, err = s.d.Keys.GetKeyAdmitted(c.Context(), key, pid, &st.keyDigest, st.start, b2s(st.reqID), b2s(st.ip), admit)
		}
		if lim, ok := errors.AsType[*keysLimited](err); ok {
			return nil, nil, unknownKeysLimited(st, s, lim.wait)
		}
	}
	if err != nil {
		st.outcome = "api_key"
		switch {
		case errors.Is(err, projection.ErrWrongSecret):
			s.d.Metrics.APIKeyRefusals.WithLabelValues("wrong_secret").Inc()
			s.keyLimit.fail(pid, st.ip, st.start)
			s.logInvalid(c, st, err)
			return nil, nil, errKeyInvalid
		case errors.Is(err, projection.ErrKeyUnknown):
			s.d.Metrics.APIKeyRefusals.WithLabelValues("unknown").Inc()
			if !reserved { // remembered as unknown: no resolve, no reservation
				s.keyLimit.fail(nil, st.ip, st.start)
			}
			s.logInvalid(c, st, err)
			return nil, nil, errKeyInvalid
		case errors.Is(err, projection.ErrKeyRevoked):
			s.d.Metrics.APIKeyRefusals.WithLabelValues("revoked").Inc()
			s.logInvalid(c, st, err)
			return nil, nil, errKeyInvalid
		case errors.Is(err, projection.ErrUnavailable):
			s.logFailure(st, slog.LevelWarn, "api key fetch", "err", err, "request_id", string(st.reqID))
			return nil, nil, unavailable("identity service unavailable")
		}
		s.logFailure(st, slog.LevelError, "api key fetch", "err", err, "request_id", string(st.reqID))
		return nil, nil, &httpError{status: 502, code: problem.CodeUpstreamDown, detail: "identity service answered badly"}
	}
	w := (*warm)(ke.Token.Aux())
	if w == nil {
		w = keyWarm(ke)
		ke.Token.SetAux(unsafe.Pointer(w))
	}
	st.principal, st.claims = identity.PrincipalAPIKey, ke.Token.Claims()
	st.waited = true // a key may have been resolved by coreapi: read the clock
	return ke, w, nil
}

// tracedKey is GetKey for a traced request: a key the cache does not hold
// is resolved under a child span of the request's, "api key", whose
// context the resolve carries to coreapi (traceparent), as the projection
// fetch does; a cached key costs no span. Out of line (noinline): most
// requests are not traced.
//
//go:noinline
func (s *Server) tracedKey(st *state, key, pid []byte, admit projection.Admission) (*projection.KeyEntry, error) {
	if ke, err := s.d.Keys.CachedKey(pid, &st.keyDigest, st.start); !errors.Is(err, projection.ErrKeyNotCached) {
		return ke, err
	}
	ctx, span := s.traceChild(st, "api key")
	ke, err := s.d.Keys.GetKeyAdmitted(ctx, key, pid, &st.keyDigest, st.start, b2s(st.reqID), b2s(st.ip), admit)
	endChild(span, err)
	return ke, err
}

// keysLimited is the error of a resolve refused because the client IP
// spent its budget of unknown keys (wait is what is left of its window).
type keysLimited struct{ wait time.Duration }

func (e *keysLimited) Error() string { return "too many unknown API keys from this address" }

// keyRefusal reports whether err (resolveKey's) refuses the key itself:
// malformed, unknown, revoked or a wrong secret. A route that asks for it
// forwards such a request as anonymous (keyRefused).
func keyRefusal(err error) bool {
	return err == errKeyMalformed || err == errNotAKey || err == errKeyInvalid
}

// unknownKeysLimited answers a key the cache does not hold, from a client
// IP that sent too many unknown keys: wait is what is left of its window.
func unknownKeysLimited(st *state, s *Server, wait time.Duration) error {
	st.outcome = "api_key_rate_limited"
	s.d.Metrics.APIKeyRefusals.WithLabelValues("unknown_rate_limited").Inc()
	return keyLimited(wait)
}

// keyLimited is the 429 of a client IP locked out of API keys for wait
// (what is left of its window): its Retry-After and its detail name the
// same whole seconds, so that a client that honours the field comes back
// once the window has ended, not every second until then.
func keyLimited(wait time.Duration) *httpError {
	secs := int(wait/time.Second) + 1
	return &httpError{status: 429, code: problem.CodeTooManyRequests,
		detail:     "too many failed API key attempts from this address; retry after " + strconv.Itoa(secs) + " s",
		retryAfter: true, retrySeconds: secs}
}

// keyRefused answers a refused key: err, or an anonymous forward on routes
// that ask for one (Route.IgnoreBadBearer).
func (s *Server) keyRefused(c *fiber.Ctx, st *state, rt *Router, route *rules.Route, err error) error {
	if route.IgnoreBadBearer {
		return s.forwardAnonymous(c, st, rt, route)
	}
	return err
}

// accountRefusals are the refusals of principals on coreapi's account
// routes, for each principal some rule refuses (accountroutes.Bit not 0),
// by index in accountroutes.Rules: built with the Server
// (newAccountRefusals), so that a refusal allocates nothing, and read
// only afterwards.
type accountRefusals map[string][]*httpError

func newAccountRefusals() accountRefusals {
	r := accountRefusals{}
	for _, p := range []string{identity.PrincipalUser, identity.PrincipalAPIKey, identity.PrincipalService, identity.PrincipalAnonymous} {
		if accountroutes.Bit(p) == 0 {
			continue // no rule refuses p: accountroutes.Index never names one for it
		}
		errs := make([]*httpError, len(accountroutes.Rules))
		for i := range accountroutes.Rules {
			errs[i] = &httpError{status: 403, code: problem.CodePrincipalNotAllowed, detail: accountroutes.Detail(p, &accountroutes.Rules[i])}
		}
		r[p] = errs
	}
	return r
}

// coreRefusal is the refusal of a coreapi route that principal may not
// call (shared/accountroutes: an API key on the account's sign-in,
// sessions, credentials, address or invitations, or creating keys; a
// service account on what only a person does), nil for the others. A
// rule accountroutes.Index names refuses principal, so the refusals hold
// one for it (newAccountRefusals). coreapi refuses the same table again
// behind the proxy. Out of line (noinline): a user's request, the warm
// path, never calls it.
//
//go:noinline
func (s *Server) coreRefusal(principal string, method, path []byte) *httpError {
	i := accountroutes.Index(principal, method, path)
	if i < 0 {
		return nil
	}
	return s.refusals[principal][i]
}

// keyLimiter counts wrong secrets per (key public id, client IP) in fixed
// windows.
type keyLimiter struct {
	limit  int
	window int64 // nanoseconds
	seed   maphash.Seed
	n      atomic.Int64 // pairs held: 0 skips the lock on the warm path
	mu     sync.Mutex
	pairs  map[uint64]*failWindow
}

type failWindow struct {
	start int64 // unix nanos
	n     int
}

func newKeyLimiter(limit int, window time.Duration) *keyLimiter {
	if limit <= 0 {
		limit = DefaultAPIKeyFailures
	}
	if window <= 0 {
		window = DefaultAPIKeyFailWindow
	}
	return &keyLimiter{limit: limit, window: int64(window), seed: maphash.MakeSeed(), pairs: map[uint64]*failWindow{}}
}

// pair is the map key of (pid, ip); a nil pid is the IP's own count (of
// unknown keys), apart from every key's (a public id is never empty). An
// IPv6 client counts by its /64: a host is commonly given a whole /64,
// and counting each of its addresses would give it 2^64 budgets; one that
// embeds an IPv4 address (6to4, NAT64, Teredo) counts as that IPv4
// address, whose holder holds every /64 of it (clientkey.Prefix;
// coreapi's limits count the same way).
func (l *keyLimiter) pair(pid, ip []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	_, _ = h.Write(pid)
	_ = h.WriteByte(0)
	if a, err := netip.ParseAddr(b2s(ip)); err == nil {
		p := clientkey.Prefix(a)
		if p.Addr().Is4() {
			b := p.Addr().As4()
			_, _ = h.Write(b[:])
			_ = h.WriteByte('4')
			return h.Sum64()
		}
		b := p.Addr().As16()
		_, _ = h.Write(b[:8])
		_ = h.WriteByte('/')
		return h.Sum64()
	}
	_, _ = h.Write(ip)
	return h.Sum64()
}

// locked returns how long (pid, ip) is still locked out at now (0: not).
func (l *keyLimiter) locked(pid, ip []byte, now time.Time) time.Duration {
	if l.n.Load() == 0 {
		return 0
	}
	k, t := l.pair(pid, ip), now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.pairs[k]
	switch {
	case w == nil:
		return 0
	case t-w.start >= l.window:
		delete(l.pairs, k)
		l.n.Add(-1)
		return 0
	case w.n >= l.limit:
		return time.Duration(w.start + l.window - t)
	}
	return 0
}

// fail counts a wrong secret for (pid, ip) at now.
func (l *keyLimiter) fail(pid, ip []byte, now time.Time) {
	k, t := l.pair(pid, ip), now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.pairs[k]
	if w == nil || t-w.start >= l.window {
		if w == nil {
			if len(l.pairs) >= maxKeyFailPairs {
				l.evict(t)
			}
			l.n.Add(1)
		}
		w = &failWindow{start: t}
		l.pairs[k] = w
	}
	w.n++
}

// reserve counts one unknown key of ip at now, before its resolve, unless
// ip is locked out of resolves: then wait is what is left of its window.
// window names the count reserved on, for release.
func (l *keyLimiter) reserve(ip []byte, now time.Time) (window int64, wait time.Duration) {
	k, t := l.pair(nil, ip), now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.pairs[k]
	switch {
	case w == nil:
		if len(l.pairs) >= maxKeyFailPairs {
			l.evict(t)
		}
		l.n.Add(1)
		w = &failWindow{start: t}
		l.pairs[k] = w
	case t-w.start >= l.window:
		w.start, w.n = t, 0
	case w.n >= l.limit:
		return 0, time.Duration(w.start + l.window - t)
	}
	w.n++
	return w.start, 0
}

// release gives back a reservation of ip made in window whose key was
// not unknown (resolved, refused for another reason, or not answered).
func (l *keyLimiter) release(ip []byte, window int64) {
	k := l.pair(nil, ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	if w := l.pairs[k]; w != nil && w.start == window && w.n > 0 {
		// None left: forget the address, so that its keys' requests skip
		// the lock again (locked).
		if w.n--; w.n == 0 {
			delete(l.pairs, k)
			l.n.Add(-1)
		}
	}
}

// evict drops the pairs whose window ended, or else an arbitrary one.
func (l *keyLimiter) evict(now int64) {
	for k, w := range l.pairs {
		if now-w.start >= l.window {
			delete(l.pairs, k)
			l.n.Add(-1)
		}
	}
	for k := range l.pairs {
		if len(l.pairs) < maxKeyFailPairs {
			return
		}
		delete(l.pairs, k)
		l.n.Add(-1)
	}
}
