package auth

import (
	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// grantList names the grants of the token endpoint in its errors.
const grantList = "password, refresh_token, oauth_handover, mfa_otp or client_credentials"

// ClientCredentialsRequest is what the token endpoint read from the body
// for grant_type=client_credentials (RFC 6749 section 4.4); HTTP Basic
// credentials are the grant's to read.
type ClientCredentialsRequest struct {
	ClientID     string
	ClientSecret string
	Scope        string
}

// ClientCredentials serves grant_type=client_credentials: it writes the
// token response, or returns the error to answer with.
type ClientCredentials interface {
	ClientCredentialsGrant(c *fiber.Ctx, r ClientCredentialsRequest) error
}

func (s *Service) clientCredentials(c *fiber.Ctx, req tokenRequest) error {
	if s.cc == nil {
		return problem.New(fiber.StatusBadRequest, problem.CodeUnsupportedGrantType, "grant_type client_credentials is not enabled")
	}
	return s.cc.ClientCredentialsGrant(c, ClientCredentialsRequest{ClientID: req.ClientID, ClientSecret: req.ClientSecret, Scope: req.Scope})
}
