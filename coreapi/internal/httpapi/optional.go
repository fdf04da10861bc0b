package httpapi

import (
	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// optionalIdentity verifies the identity of an Optional route's caller
// when the request asserts a user (the proxy verified a bearer): then it
// must verify exactly as on a Protected route (401 otherwise). A request
// that asserts no user (public or anonymous) goes on without an identity.
func (s *Server) optionalIdentity(c *fiber.Ctx) error {
	if c.Get(identity.HeaderUserID) == "" || c.Get(identity.HeaderPrincipal) == identity.PrincipalAnonymous {
		return c.Next()
	}
	return s.requireIdentity(c)
}

// OptionalIdentityOf returns the verified identity of an Optional route's
// caller, and false when the request came without one.
func OptionalIdentityOf(c *fiber.Ctx) (identity.Identity, bool) {
	id, ok := c.Locals(keyIdentity).(identity.Identity)
	return id, ok && id.UserID != ""
}
