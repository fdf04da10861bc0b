package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeylive"
	"github.com/tollgate-auth/tollgate/coreapi/internal/clientsecret"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oautherr"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// handleError turns every error into an application/problem+json
// response: those leaving a handler or middleware (accessLog), and those
// raised before any middleware ran (handleEarly, the Fiber ErrorHandler).
func (s *Server) handleError(c *fiber.Ctx, err error) error {
	p := s.mapError(c, err)
	rid := RequestIDOf(c) // set by requestID, or by handleEarly
	if p.OAuthError == "" && oautherr.Endpoint(c.Path()) {
		p = oautherr.Annotate(p)
	}
	p = p.With(rid, c.Path())
	c.Set(fiber.HeaderContentType, problem.ContentType)
	ProblemHeaders(c)
	return c.Status(p.Status).Send(p.JSON())
}

// ProblemHeaders keeps every problem answer out of caches, frames,
// Referer headers and content sniffing, whatever route raised it: the
// pages and the OAuth callback set such headers on their own answers, but
// an error raised before their handlers run (a method the route does not
// serve, a body over the limit, a refusal of the framework) never reached
// them, and their URLs hold link tokens and provider codes. An error is
// never worth caching either (a 404 of a route, a 503 of a failover).
// handleError sets them; a problem answer written by its handler (the
// token endpoint's mfa_required, which carries fields of its own) sets
// them through this function too.
func ProblemHeaders(c *fiber.Ctx) {
	PrivateHeaders(c)
	h := &c.Response().Header
	h.Set(fiber.HeaderXFrameOptions, "DENY")
	h.Set(fiber.HeaderContentSecurityPolicy, "default-src 'none'; frame-ancestors 'none'")
}

// PrivateHeaders marks an answer whose URL, Location or body holds a
// secret (a link's token, a provider's code, a hand-over code) private:
// no cache keeps it (Cache-Control: no-store), no Referer sends its URL on
// (Referrer-Policy: no-referrer), and no browser sniffs its body into
// another type than the one given (X-Content-Type-Options: nosniff). The
// pages, their redirects, the OAuth callback and every problem answer set
// it.
func PrivateHeaders(c *fiber.Ctx) {
	h := &c.Response().Header
	h.Set(fiber.HeaderCacheControl, "no-store")
	h.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	h.Set(fiber.HeaderReferrerPolicy, "no-referrer")
}

// noStore marks every answer of the API routes Cache-Control: no-store
// before their handler runs, which may set another (a public document's
// max-age). What they answer is their caller's (a member list with its
// addresses, audit events, the caller's sessions and keys), and a shared
// cache keyed on the URL alone (a CDN, an nginx proxy_cache, a Varnish
// that takes X-API-Key for no credential) would hand it to the next
// caller of the same URL; a browser would keep it on disk.
func noStore(c *fiber.Ctx) error {
	c.Response().Header.Set(fiber.HeaderCacheControl, "no-store")
	return c.Next()
}

// mapError is toProblem outside the recover middleware: handleError runs
// in accessLog, around it, and in handleEarly, before it, so a panic in a
// feature's ErrorMapper (or in a method of the error it inspects) would
// end the process. It is answered as a handler's panic is: a 500 problem
// and the panic logged with its stack.
func (s *Server) mapError(c *fiber.Ctx, err error) (p *problem.Problem) {
	defer func() {
		if r := recover(); r != nil {
			s.logPanic(c, r)
			p = problem.New(fiber.StatusInternalServerError, problem.CodeInternal, "")
		}
	}()
	return s.toProblem(c, err)
}

func (s *Server) toProblem(c *fiber.Ctx, err error) *problem.Problem {
	var p *problem.Problem
	if errors.As(err, &p) {
		return p
	}
	if errors.Is(err, password.ErrBusy) {
		// Every hash slot busy and the waiting room full: the password
		// was not looked at. Brief, like an overloaded database.
		c.Set(fiber.HeaderRetryAfter, "1")
		return problem.New(fiber.StatusServiceUnavailable, problem.CodeUnavailable, "too many passwords are being checked; retry shortly")
	}
	if errors.Is(err, permissions.ErrRollout) {
		// Another replica serves it: the client retries, and reaches one
		// whose catalog is the recorded one.
		c.Set(fiber.HeaderRetryAfter, "1")
		return problem.New(fiber.StatusServiceUnavailable, problem.CodeCatalogRollout, permissions.ErrRollout.Error())
	}
	if errors.Is(err, apikeylive.ErrEnded) {
		// Found after the tenant's lock (roles.Live): the key was revoked
		// since the request's own check (liveCredential).
		return keyEnded(c)
	}
	if errors.Is(err, clientsecret.ErrDeleted) {
		// Found after the tenant's lock (roles.Live): the token's client
		// secret was deleted since the request's own check.
		return secretDeleted(c)
	}
	if sqldb.Unavailable(err) {
		// Not the client's fault and usually brief (a failover, a restart):
		// tell clients and the proxy to come back, rather than a 500.
		s.logFailure(c.UserContext(), slog.LevelWarn, "database unavailable", failureAttrs(c, err)...)
		c.Set(fiber.HeaderRetryAfter, "1")
		return problem.New(fiber.StatusServiceUnavailable, problem.CodeUnavailable, "the database is unavailable; retry shortly")
	}
	if rf := (*ratelimit.Refused)(nil); errors.As(err, &rf) {
		return tooMany(c, rf.RetryAfter, rf.What)
	}
	for _, m := range s.mappers {
		if p := m(err); p != nil {
			return p
		}
	}
	if errors.Is(err, projection.ErrNotFound) {
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, projection.ErrNotFound.Error())
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case fiber.StatusNotFound:
			return problem.New(fe.Code, problem.CodeNotFound, "no such route")
		case fiber.StatusMethodNotAllowed:
			return problem.New(fe.Code, problem.CodeMethodNotAllowed, "method not allowed on this route")
		case fiber.StatusRequestEntityTooLarge:
			return problem.New(fe.Code, problem.CodeBodyTooLarge, "request body is larger than the limit")
		case fiber.StatusUnsupportedMediaType:
			return problem.New(fe.Code, problem.CodeUnsupportedMedia, fe.Message)
		}
		if fe.Code < 500 {
			return problem.New(fe.Code, problem.CodeBadRequest, http.StatusText(fe.Code))
		}
	}
	s.logFailure(c.UserContext(), slog.LevelError, "request failed", failureAttrs(c, err)...)
	return problem.New(fiber.StatusInternalServerError, problem.CodeInternal, "")
}

// failureAttrs are the attributes of a line about a request that err
// failed ("request failed", "database unavailable"): the request, its
// route, and err without the values it may quote. PostgreSQL's messages
// quote the statement's values (invalid input syntax for type uuid:
// "someone@example.com"), as pgx's and the features' errors may, so the
// text is redacted (logging.Redact: quoted text dropped, cut to 512
// bytes); what an operator needs of a PostgreSQL error is kept beside it
// as the server sent it apart: its SQLSTATE and the constraint, table and
// column it names (never its DETAIL, which holds the row's values).
func failureAttrs(c *fiber.Ctx, err error) []any {
	attrs := []any{"request_id", RequestIDOf(c), "method", methodName(c.Method()),
		"path", logging.ClipPath(c.Path()), "route", routeOf(c), "err", logging.Redact(err.Error())}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return attrs
	}
	attrs = append(attrs, "sqlstate", pe.Code)
	for _, a := range [...]struct{ key, v string }{{"constraint", pe.ConstraintName}, {"table", pe.TableName}, {"column", pe.ColumnName}} {
		if a.v != "" {
			attrs = append(attrs, a.key, a.v)
		}
	}
	return attrs
}

// NeedRecentSignIn is the RFC 9470 refusal of what (the act, "deleting
// the account") when it needs the caller to have signed in (or stepped
// up) within maxAge: 401 insufficient_user_authentication with a
// WWW-Authenticate that names the age, and no acr_values (a password
// sign-in of a user without a second factor is enough; a user with one
// signs in with it). The detail names maxAge as Window words it.
func NeedRecentSignIn(c *fiber.Ctx, maxAge time.Duration, what string) error {
	return insufficientAuth(c, "", maxAge, what+" needs a sign-in within the last "+Window(maxAge)+": sign in again")
}

// NeedRecentSecondFactor is NeedRecentSignIn for an act that needs a
// second factor given within maxAge: acr_values="mfa" (step up with
// grant_type=mfa_otp).
func NeedRecentSecondFactor(c *fiber.Ctx, maxAge time.Duration, what string) error {
	return insufficientAuth(c, `, acr_values="mfa"`, maxAge, what+" needs a second factor given in the last "+Window(maxAge)+"; step up with grant_type=mfa_otp")
}

// NeedRecentAuth refuses what, an act of a person's ways in that needs a
// recent sign-in, with the second factor for an account that has one
// (mfa): a step-up (NeedRecentSecondFactor) for such an account, a new
// sign-in (NeedRecentSignIn) for one without.
func NeedRecentAuth(c *fiber.Ctx, maxAge time.Duration, mfa bool, what string) error {
	if mfa {
		return NeedRecentSecondFactor(c, maxAge, what)
	}
	return NeedRecentSignIn(c, maxAge, what)
}

// Window words a recent-sign-in window for a problem's detail: "5
// minutes", "1 hour", "90 seconds" (in the largest unit that divides it,
// seconds rounded up).
func Window(d time.Duration) string {
	n, unit := int64((d+time.Second-1)/time.Second), "second"
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		n, unit = int64(d/time.Hour), "hour"
	case d >= time.Minute && d%time.Minute == 0:
		n, unit = int64(d/time.Minute), "minute"
	}
	if n != 1 {
		unit += "s"
	}
	return strconv.FormatInt(n, 10) + " " + unit
}

// NeedSecondFactorSignIn is the RFC 9470 refusal of an act that a
// password alone does not prove for an account with a second factor
// (accepting an invitation with the password): 401
// insufficient_user_authentication with WWW-Authenticate acr_values="mfa"
// and no max_age. The client signs in with the password and the second
// factor (grant_type=mfa_otp after mfa_required) and acts on the bearer
// token it gets.
func NeedSecondFactorSignIn(c *fiber.Ctx, detail string) error {
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer error="insufficient_user_authentication", acr_values="mfa"`)
	return problem.New(fiber.StatusUnauthorized, problem.CodeInsufficientUserAuthentication, detail)
}

func insufficientAuth(c *fiber.Ctx, acr string, maxAge time.Duration, detail string) error {
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer error="insufficient_user_authentication"`+acr+`, max_age=`+strconv.Itoa(int(maxAge/time.Second)))
	return problem.New(fiber.StatusUnauthorized, problem.CodeInsufficientUserAuthentication, detail)
}

// TooMany is the 429 answer of a rate limit that allows a hit again in wait:
// Retry-After in whole seconds (at least 1, rounded up), and what was
// refused in the detail ("too many sign-ups from this address").
func TooMany(c *fiber.Ctx, wait time.Duration, what string) error {
	return tooMany(c, wait, what)
}

func tooMany(c *fiber.Ctx, wait time.Duration, what string) *problem.Problem {
	secs := ratelimit.Seconds(wait)
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(secs))
	return problem.New(fiber.StatusTooManyRequests, problem.CodeTooManyRequests, what+"; retry after "+strconv.Itoa(secs)+" s")
}

// SecretDeleted refuses a request of a service account's access token
// obtained with a client secret since deleted (clientsecret.ErrDeleted),
// though the proxy that signed it had not yet heard: 401 invalid_token,
// with the RFC 6750 challenge a 401 to a bearer carries.
func SecretDeleted(c *fiber.Ctx) error { return secretDeleted(c) }

func secretDeleted(c *fiber.Ctx) *problem.Problem {
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer error="invalid_token", error_description="the access token has ended"`)
	return problem.New(fiber.StatusUnauthorized, problem.CodeInvalidToken, clientsecret.ErrDeleted.Error())
}

// keyEnded refuses a request of an API key since revoked or expired
// (apikeylive.ErrEnded), though the proxy that signed it had not yet
// heard: 401 invalid_token, with the RFC 6750 challenge a 401 to a
// bearer carries (a key may be presented as one).
func keyEnded(c *fiber.Ctx) *problem.Problem {
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer error="invalid_token", error_description="the API key has been revoked or has expired"`)
	return problem.New(fiber.StatusUnauthorized, problem.CodeInvalidToken, apikeylive.ErrEnded.Error())
}

// SessionEnded refuses a request whose bearer's session has ended
// (signed out, revoked by a password reset or a sign-out everywhere,
// expired, or stamped with an older token version than the user's; see
// sessions.CheckLive), though the proxy that signed it had not yet heard:
// 401 invalid_token, with the RFC 6750 challenge a 401 to a bearer
// carries.
func SessionEnded(c *fiber.Ctx) error {
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer error="invalid_token", error_description="the session has ended"`)
	return problem.New(fiber.StatusUnauthorized, problem.CodeInvalidToken, "the session has ended")
}
