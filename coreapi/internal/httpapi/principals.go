package httpapi

import (
	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/accountroutes"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// principalCheck returns the middleware refusing the principals that
// shared/accountroutes refuses on method and pattern (a route as
// registered), or nil when it lists none. The proxy refuses them first;
// this is the second wall behind it: whatever principal the signed
// identity names, an API key or a service account never reaches an
// account route's handler.
func principalCheck(method, pattern string) fiber.Handler {
	r := accountroutes.Find(method, pattern)
	if r == nil {
		return nil
	}
	return func(c *fiber.Ctx) error {
		p := IdentityOf(c).Principal
		if r.Refuse&accountroutes.Bit(p) != 0 {
			return problem.New(fiber.StatusForbidden, problem.CodePrincipalNotAllowed, accountroutes.Detail(p, r))
		}
		return c.Next()
	}
}
