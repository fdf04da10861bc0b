package auth

import (
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oautherr"
)

// JWKSPath is where the public keys are served.
const JWKSPath = "/.well-known/jwks.json"

// Register adds the sign-in routes (an httpapi.Options.Register hook).
func (s *Service) Register(rt httpapi.Routes) {
	s.cursors = rt.Cursors
	rt.Root.Get(JWKSPath, s.jwks)
	rt.Public.Post("/auth/signup", s.signup)
	rt.Optional.Post("/auth/token", oautherr.Wrap(s.token))
	rt.Protected.Post("/auth/logout", s.logout)
	rt.Protected.Post("/auth/switch-tenant", s.switchTenant)
	rt.Protected.Put("/users/me/password", s.changePassword)
	rt.Protected.Get("/users/me/sessions", s.listSessions)
	rt.Protected.Delete("/users/me/sessions/:id", s.revokeSession)
	s.registerMFA(rt)
}

func (s *Service) jwks(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, "application/json")
	// A cached copy must expire before a key published after it signs,
	// and soon after a key is removed (keys.Ring.JWKSMaxAge). The proxies
	// do not cache over HTTP: they refetch on auth.keys.changed.
	c.Set(fiber.HeaderCacheControl, "public, max-age="+strconv.Itoa(int(s.keys.JWKSMaxAge()/time.Second)))
	return c.Send(s.keys.JWKS())
}

// client describes where a sign-in comes from (copied out of Fiber's
// buffers). The address is httpapi.ClientIP's: the proxy's signed client
// IP, never X-Forwarded-For.
func client(c *fiber.Ctx) (ua, ip string) {
	return strings.Clone(c.Get(fiber.HeaderUserAgent)), httpapi.ClientIP(c)
}
