package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

type localKey int

const (
	keyRequestID localKey = iota
	keyIdentity
)

// RequestIDOf returns the request's id (set by the first middleware).
func RequestIDOf(c *fiber.Ctx) string {
	id, _ := c.Locals(keyRequestID).(string)
	return id
}

// IdentityOf returns the verified identity of a Protected route's caller.
// Its strings are owned copies, safe to keep.
func IdentityOf(c *fiber.Ctx) identity.Identity {
	id, _ := c.Locals(keyIdentity).(identity.Identity)
	return id
}

// requestID accepts a sane client X-Request-Id or makes one, and echoes it.
func (s *Server) requestID(c *fiber.Ctx) error {
	id := requestid.From(strings.Clone(c.Get(requestid.Header)))
	c.Locals(keyRequestID, id)
	c.Set(requestid.Header, id)
	return c.Next()
}

// accessLog times the whole request, counts its database round trips, turns
// a returned error into the response (so the status is final), then logs,
// records metrics and reports to Options.Observe.
func (s *Server) accessLog(c *fiber.Ctx) error {
	start := time.Now()
	counter := &pgtrace.Counter{}
	c.SetUserContext(pgtrace.WithCounter(c.UserContext(), counter))
	if err := c.Next(); err != nil {
		if herr := s.handleError(c, err); herr != nil {
			c.Status(fiber.StatusInternalServerError)
		}
	}
	d := time.Since(start)
	status := c.Response().StatusCode()
	route := c.Route().Path
	if route == "/" { // only middleware matched: keep metric labels bounded
		route = "unmatched"
	}
	method := strings.Clone(c.Method())
	s.metrics.observe(method, route, status, d, counter.Queries())
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	s.log.LogAttrs(c.UserContext(), level, "request",
		slog.String("request_id", RequestIDOf(c)),
		slog.String("method", method),
		slog.String("path", c.Path()),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.Int64("db_queries", counter.Queries()),
		slog.Int64("db_transactions", counter.Transactions()),
		slog.Int64("db_prepares", counter.Prepares()),
	)
	if s.observe != nil {
		s.observe(RequestStats{
			RequestID: RequestIDOf(c), Method: method, Route: route, Status: status,
			Duration: d, Queries: counter.Queries(), Transactions: counter.Transactions(), Prepares: counter.Prepares(),
		})
	}
	return nil
}

// recover turns a handler panic into a 500 problem and logs it.
func (s *Server) recover(c *fiber.Ctx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic", "request_id", RequestIDOf(c), "panic", fmt.Sprint(r))
			err = problem.New(fiber.StatusInternalServerError, problem.CodeInternal, "")
		}
	}()
	return c.Next()
}

var (
	errNoIdentity = problem.New(fiber.StatusUnauthorized, problem.CodeUnauthenticated,
		"missing or invalid identity signature")
)

// readIdentity copies the identity headers out of fasthttp's buffers.
func readIdentity(c *fiber.Ctx) identity.Identity {
	return identity.Identity{
		UserID:      strings.Clone(c.Get(identity.HeaderUserID)),
		TenantID:    strings.Clone(c.Get(identity.HeaderTenantID)),
		SessionID:   strings.Clone(c.Get(identity.HeaderSessionID)),
		Roles:       identity.SplitList(strings.Clone(c.Get(identity.HeaderRoles))),
		Permissions: identity.SplitList(strings.Clone(c.Get(identity.HeaderPermissions))),
	}
}

// requireIdentity verifies the signed identity headers of a protected
// route: a missing, forged or stale signature is 401. The user and tenant
// must be UUIDs.
func (s *Server) requireIdentity(c *fiber.Ctx) error {
	id := readIdentity(c)
	err := s.signer.Verify(s.now(), c.Get(identity.HeaderTimestamp), c.Get(identity.HeaderSignature),
		c.Method(), c.OriginalURL(), id)
	if err != nil {
		s.metrics.identityRejected(reason(err))
		return errNoIdentity
	}
	if !isUUID(id.UserID) || !isUUID(id.TenantID) || (id.SessionID != "" && !isUUID(id.SessionID)) {
		s.metrics.identityRejected("bad_ids")
		return errNoIdentity
	}
	c.Locals(keyIdentity, id)
	return c.Next()
}

// optionalIdentity is requireIdentity for routes that also serve anonymous
// callers: without identity headers the request goes on with none.
func (s *Server) optionalIdentity(c *fiber.Ctx) error {
	if c.Get(identity.HeaderSignature) == "" && c.Get(identity.HeaderUserID) == "" {
		return c.Next()
	}
	return s.requireIdentity(c)
}

// requireServiceSignature verifies a signature over an empty identity:
// the proxy's own calls to internal endpoints.
func (s *Server) requireServiceSignature(c *fiber.Ctx) error {
	err := s.signer.Verify(s.now(), c.Get(identity.HeaderTimestamp), c.Get(identity.HeaderSignature),
		c.Method(), c.OriginalURL(), identity.Identity{})
	if err != nil {
		s.metrics.identityRejected(reason(err))
		return errNoIdentity
	}
	return c.Next()
}

func reason(err error) string {
	switch {
	case errors.Is(err, identity.ErrMissing):
		return "missing"
	case errors.Is(err, identity.ErrExpired):
		return "expired"
	case errors.Is(err, identity.ErrSignature):
		return "signature"
	}
	return "malformed"
}

// RequirePermission returns middleware that answers 403 unless the verified
// identity holds perm. Use it after the identity middleware (Protected
// routes).
func RequirePermission(perm string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if !IdentityOf(c).Has(perm) {
			return problem.New(fiber.StatusForbidden, problem.CodeForbidden, "requires permission "+perm)
		}
		return c.Next()
	}
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

// pathUUID returns a path parameter that must be a UUID, as an owned,
// lower-case string, or a 400 problem.
func pathUUID(c *fiber.Ctx, name string) (string, error) {
	v := c.Params(name)
	if len(v) != 36 {
		return "", problem.New(fiber.StatusBadRequest, "invalid_id", name+" must be a UUID")
	}
	u, err := uuid.Parse(v)
	if err != nil {
		return "", problem.New(fiber.StatusBadRequest, "invalid_id", name+" must be a UUID")
	}
	return u.String(), nil
}
