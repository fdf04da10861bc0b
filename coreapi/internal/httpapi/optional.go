package httpapi

import (
	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// OptionalIdentityOf returns the verified identity of an Optional route's
// caller, and false when the request asserts no user (unsigned, or the
// anonymous principal).
func OptionalIdentityOf(c *fiber.Ctx) (identity.Identity, bool) {
	id := IdentityOf(c)
	return id, id.UserID != "" && id.Principal != identity.PrincipalAnonymous
}
