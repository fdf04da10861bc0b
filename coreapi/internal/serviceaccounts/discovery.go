package serviceaccounts

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/gofiber/fiber/v2"
)

// Paths of the metadata document (RFC 8414 section 3; the OpenID Connect
// Discovery name serves the same document).
const (
	MetadataPath     = "/.well-known/oauth-authorization-server"
	OIDCMetadataPath = "/.well-known/openid-configuration"
)

// authMethods are the client authentication methods of every endpoint
// that authenticates clients (RFC 6749 section 2.3.1); these are functions,
// so that each caller gets a slice of its own.
func authMethods() []string { return []string{"client_secret_basic", "client_secret_post"} }

// publicAuthMethods add "none" (RFC 8414) for the endpoints public clients
// use without client authentication: the token endpoint (a signed-in
// app's refresh_token, oauth_handover, password and mfa_otp grants) and
// the revocation endpoint (such an app revokes its own refresh token).
func publicAuthMethods() []string { return append(authMethods(), "none") }

// codeChallengeMethods: the oauth_handover grant checks an RFC 7636
// code_verifier against the S256 challenge the sign-in started with
// (plain is refused at the start).
func codeChallengeMethods() []string { return []string{"S256"} }

// metadata is the authorization server metadata. No authorization
// endpoint exists (no redirect-based flows for third parties), so
// response_types_supported is empty; the S256 code_challenge that
// code_challenge_methods_supported names is the one an OAuth sign-in's
// start takes, checked by the oauth_handover grant. No ID tokens are
// issued, so there is no id_token_signing_alg_values_supported; the
// algorithms of the access tokens (JWT, RFC 9068) are in
// access_token_signing_alg_values_supported.
type metadata struct {
	Issuer                                    string   `json:"issuer"`
	JWKSURI                                   string   `json:"jwks_uri"`
	TokenEndpoint                             string   `json:"token_endpoint"`
	IntrospectionEndpoint                     string   `json:"introspection_endpoint"`
	RevocationEndpoint                        string   `json:"revocation_endpoint"`
	GrantTypesSupported                       []string `json:"grant_types_supported"`
	ResponseTypesSupported                    []string `json:"response_types_supported"`
	TokenEndpointAuthMethodsSupported         []string `json:"token_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethodsSupported []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported    []string `json:"revocation_endpoint_auth_methods_supported"`
	CodeChallengeMethodsSupported             []string `json:"code_challenge_methods_supported"`
	ScopesSupported                           []string `json:"scopes_supported"`
	SubjectTypesSupported                     []string `json:"subject_types_supported"`
	AccessTokenSigningAlgValuesSupported      []string `json:"access_token_signing_alg_values_supported"`
	// AuthorizationResponseIss (authorization_response_iss_parameter_
	// supported): the OAuth callback's redirect to return_to names this
	// issuer (iss, RFC 9207).
	AuthorizationResponseIss bool `json:"authorization_response_iss_parameter_supported"`
}

// buildMetadata checks that the document can be built (at start).
func (s *Service) buildMetadata() ([]byte, error) {
	b, err := json.Marshal(s.document())
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	return b, nil
}

func (s *Service) document() metadata {
	base := s.o.PublicBaseURL
	var algs []string
	for _, kid := range s.o.Keys.KeyIDs() {
		if _, alg, ok := s.o.Keys.PublicKey(kid); ok && !slices.Contains(algs, alg) {
			algs = append(algs, alg)
		}
	}
	slices.Sort(algs)
	return metadata{
		Issuer:                            s.o.Issuer,
		JWKSURI:                           base + "/.well-known/jwks.json",
		TokenEndpoint:                     base + "/api/v1/auth/token",
		IntrospectionEndpoint:             base + "/api/v1/auth/introspect",
		RevocationEndpoint:                base + "/api/v1/auth/revoke",
		GrantTypesSupported:               []string{"password", "refresh_token", "client_credentials", "mfa_otp", "oauth_handover"},
		ResponseTypesSupported:            []string{},
		TokenEndpointAuthMethodsSupported: publicAuthMethods(),
		IntrospectionEndpointAuthMethodsSupported: authMethods(),
		RevocationEndpointAuthMethodsSupported:    publicAuthMethods(),
		CodeChallengeMethodsSupported:             codeChallengeMethods(),
		AuthorizationResponseIss:                  true,
		ScopesSupported:                           s.o.Catalog.Names(),
		SubjectTypesSupported:                     []string{"public"},
		AccessTokenSigningAlgValuesSupported:      algs,
	}
}

// serveMetadata: GET /.well-known/oauth-authorization-server and
// /.well-known/openid-configuration. Built per request: the published
// keys (and so the algorithms) follow rotations.
func (s *Service) serveMetadata(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	return c.JSON(s.document())
}
