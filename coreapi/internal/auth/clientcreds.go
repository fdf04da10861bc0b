package auth

import (
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

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

// errResponseWritten: a grant wrote its response itself.
var errResponseWritten = errors.New("auth: response written")

// clientCredentialsGrant is the grantTypes entry of client_credentials,
// whose implementation writes the response itself.
func (s *Service) clientCredentialsGrant(c *fiber.Ctx, req tokenRequest) (TokenResponse, error) {
	if err := s.clientCredentials(c, req); err != nil {
		return TokenResponse{}, err
	}
	return TokenResponse{}, errResponseWritten
}

func (s *Service) clientCredentials(c *fiber.Ctx, req tokenRequest) error {
	if s.cc == nil {
		return problem.New(fiber.StatusBadRequest, problem.CodeUnsupportedGrantType, "grant_type client_credentials is not enabled")
	}
	return s.cc.ClientCredentialsGrant(c, ClientCredentialsRequest{ClientID: req.ClientID, ClientSecret: req.ClientSecret, Scope: req.Scope})
}
