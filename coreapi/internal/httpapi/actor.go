package httpapi

import (
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
)

// ActorOf is the caller of c as roles.Actor: who it is, what it holds,
// and the credential it acts with (its session, API key or client
// secret, which roles.Live checks are still live), with the request's
// id. The strings are copied out of the request's buffers, so the actor
// may outlive the handler (a transaction retried, a log line).
func ActorOf(c *fiber.Ctx) roles.Actor {
	id := IdentityOf(c)
	return roles.Actor{
		UserID:      id.UserID,
		Permissions: id.Permissions,
		RequestID:   strings.Clone(RequestIDOf(c)),
		SessionID:   strings.Clone(SessionOf(c)),
		APIKeyID:    strings.Clone(APIKeyOf(c)),
		SecretID:    strings.Clone(ClientSecretOf(c)),
	}
}
