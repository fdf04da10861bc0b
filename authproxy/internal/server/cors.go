package server

import (
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
)

// CORS is the proxy's cross-origin policy (CORS_ALLOWED_ORIGINS): one
// policy for every route, coreapi's and the apps', since browsers see one
// origin. Nil: no CORS headers at all (same-origin deployments).
type CORS struct {
	// Origins are exact origins (scheme://host[:port]); "*" alone allows
	// any origin, and is then never combined with credentials.
	Origins []string
	// Credentials sends Access-Control-Allow-Credentials: true (cookies;
	// bearer tokens do not need it).
	Credentials bool
	MaxAge      time.Duration
	// AllowHeaders are the request headers a browser may send
	// cross-origin, ExposeHeaders the response headers its scripts may
	// read: each the value of its Access-Control-* header.
	AllowHeaders, ExposeHeaders string
}

// allowed returns the Access-Control-Allow-Origin value for origin, or ""
// when origin is not allowed.
func (p *CORS) allowed(origin []byte) string {
	if len(origin) == 0 {
		return ""
	}
	for _, o := range p.Origins {
		if o == "*" {
			return "*"
		}
		if o == string(origin) {
			return o
		}
	}
	return ""
}

// preflight answers a CORS preflight (OPTIONS with Origin and
// Access-Control-Request-Method) from an allowed origin itself, once
// routed (authorize: its path normalized and matched to g), no credential
// looked at: browsers send preflights without credentials. It answers
// what the request it announces would get before any credential: 405
// with Allow when g's routes refuse the announced method (501 when no
// route names it), 404 when the route strips its prefix and what is left
// lies under /internal; else 204 with the announced method's route's
// methods in Access-Control-Allow-Methods. A path no route covers (404) or
// that is malformed (400) was answered before. A preflight from another
// origin is routed like any request and gets no CORS headers.
//
//go:noinline
func (s *Server) preflight(c *fiber.Ctx, st *state, rt *Router, g *rules.Group) error {
	method := c.Request().Header.Peek(fiber.HeaderAccessControlRequestMethod)
	route := g.Pick(method)
	if route == nil {
		return methodNotAllowed(st, rt, g, method)
	}
	if err := strippedInternal(st, route); err != nil {
		return err
	}
	st.outcome = "preflight"
	r := &c.Response().Header
	r.Set(fiber.HeaderAccessControlAllowMethods, route.AllowMethods())
	r.Set(fiber.HeaderAccessControlAllowHeaders, s.o.CORS.AllowHeaders)
	if s.o.CORS.MaxAge > 0 {
		r.Set(fiber.HeaderAccessControlMaxAge, strconv.Itoa(int(s.o.CORS.MaxAge/time.Second)))
	}
	c.Status(fiber.StatusNoContent)
	return nil
}

// isPreflight reports whether h, an OPTIONS request (the callers ask that
// first: a warm request pays one method compare), is a CORS preflight from
// an allowed origin, which preflight answers (CORS configured).
func (s *Server) isPreflight(h *fasthttp.RequestHeader) bool {
	return s.o.CORS != nil && len(h.Peek(fiber.HeaderAccessControlRequestMethod)) > 0 &&
		s.o.CORS.allowed(h.Peek(fiber.HeaderOrigin)) != ""
}

// corsHeaders sets the CORS response headers last (forwarding replaces
// the whole response): the proxy's policy replaces any an upstream sent.
func (s *Server) corsHeaders(c *fiber.Ctx) {
	r := &c.Response().Header
	for _, k := range []string{fiber.HeaderAccessControlAllowOrigin, fiber.HeaderAccessControlAllowCredentials, fiber.HeaderAccessControlExposeHeaders} {
		r.Del(k)
	}
	if !c.Request().Header.IsOptions() {
		r.Del(fiber.HeaderAccessControlAllowMethods)
		r.Del(fiber.HeaderAccessControlAllowHeaders)
		r.Del(fiber.HeaderAccessControlMaxAge)
	}
	r.Add(fiber.HeaderVary, fiber.HeaderOrigin)
	allow := s.o.CORS.allowed(c.Request().Header.Peek(fiber.HeaderOrigin))
	if allow == "" {
		return
	}
	r.Set(fiber.HeaderAccessControlAllowOrigin, allow)
	if s.o.CORS.Credentials && allow != "*" {
		r.Set(fiber.HeaderAccessControlAllowCredentials, "true")
	}
	r.Set(fiber.HeaderAccessControlExposeHeaders, s.o.CORS.ExposeHeaders)
}
