package serviceaccounts

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oautherr"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/shared/clip"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/jwtclaims"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// claims are the claims of a client_credentials access token: those of a
// user's token without session, tv the account's token version,
// "principal": "service", client_id (RFC 9068), csid the client secret it
// was obtained with (the proxy forwards it as X-Auth-Session-Id, so that
// coreapi refuses the token's writes once that secret is deleted), and
// scope when the client asked for less than it holds.
type claims struct {
	Issuer       string  `json:"iss"`
	Audience     string  `json:"aud"`
	Subject      string  `json:"sub"`
	TenantID     string  `json:"tid"`
	TokenVersion int64   `json:"tv"`
	IssuedAt     int64   `json:"iat"`
	NotBefore    int64   `json:"nbf"`
	Expires      int64   `json:"exp"`
	ID           string  `json:"jti"`
	Principal    string  `json:"principal"`
	ClientID     string  `json:"client_id"`
	SecretID     string  `json:"csid"`
	Scope        *string `json:"scope,omitempty"`
}

// tokenResponse is the RFC 6749 section 5.1 answer (no refresh token:
// the client authenticates again), plus the tenant.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
	TenantID    string `json:"tenant_id"`
}

// maxScope bounds the scope parameter.
const maxScope = 4096

// ClientCredentialsGrant implements auth.ClientCredentials: RFC 6749
// section 4.4.
func (s *Service) ClientCredentialsGrant(c *fiber.Ctx, r auth.ClientCredentialsRequest) error {
	cr, err := readCredentials(c, r.ClientID, r.ClientSecret)
	if err != nil {
		return err
	}
	if len(r.Scope) > maxScope {
		return oautherr.Problem(fiber.StatusBadRequest, problem.CodeInvalidScope, "scope is too long")
	}
	requested, err := parseScope(r.Scope)
	if err != nil {
		return err
	}
	cl, err := s.authenticate(c, cr)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	p, err := s.o.Projections.Get(ctx, cl.ID, cl.TenantID)
	switch {
	case errors.Is(err, projection.ErrNotFound):
		return oautherr.Problem(fiber.StatusBadRequest, problem.CodeUnauthorizedClient, "the service account is not a member of its tenant")
	case err != nil:
		return err
	case !p.Active():
		return oautherr.Problem(fiber.StatusBadRequest, problem.CodeUnauthorizedClient, "the service account or its tenant is not active")
	}
	// The token version read with the secret is the one signed: a secret
	// deleted after the check (which raises it) ends this token too. A
	// projection newer than the check says that happened: nothing is
	// issued, and a client whose secret is still live gets a token on its
	// next try.
	if p.TokenVersion > cl.TokenVersion {
		return invalidClient(c, cr.basic, "client authentication failed")
	}
	var scope *string
	granted := p.Permissions
	if len(requested) > 0 {
		slices.Sort(requested)
		requested = slices.Compact(requested)
		for _, sc := range requested {
			if !s.o.Catalog.Has(sc) {
				return oautherr.Problem(fiber.StatusBadRequest, problem.CodeInvalidScope, "unknown scope "+quote(sc))
			}
			if !slices.Contains(p.Permissions, sc) {
				return oautherr.Problem(fiber.StatusBadRequest, problem.CodeInvalidScope, "the client does not hold "+sc)
			}
		}
		granted = requested
		joined := strings.Join(requested, " ")
		scope = &joined
	}
	now := s.o.Now().Unix()
	ttl := int64(s.o.AccessTTL / time.Second)
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return fmt.Errorf("read random: %w", err)
	}
	payload, err := json.Marshal(claims{
		Issuer: s.o.Issuer, Audience: s.o.Audience, Subject: cl.ID, TenantID: cl.TenantID, TokenVersion: cl.TokenVersion,
		IssuedAt: now, NotBefore: now, Expires: now + ttl, ID: base64.RawURLEncoding.EncodeToString(jti[:]),
		Principal: identity.PrincipalService, ClientID: cl.ID, SecretID: cl.SecretID, Scope: scope,
	})
	if err != nil {
		return fmt.Errorf("encode claims: %w", err)
	}
	tok, err := s.o.Keys.Sign(payload)
	if err != nil {
		return err
	}
	return c.JSON(tokenResponse{AccessToken: string(tok), TokenType: "Bearer", ExpiresIn: ttl,
		Scope: strings.Join(granted, " "), TenantID: cl.TenantID})
}

// parseScope reads a scope parameter (RFC 6749 section 3.3): scope
// tokens of %x21 / %x23-5B / %x5D-7E separated by spaces (U+0020 only),
// split by jwtclaims.SplitScope as the proxy splits a token's scope.
// Empty tokens (spaces repeated, leading or trailing) are skipped; any
// other character, a tab, a line break or a Unicode space (NBSP, U+0085,
// which strings.Fields took for separators) among them, is 400
// invalid_scope naming it.
func parseScope(scope string) ([]string, error) {
	for i := 0; i < len(scope); i++ {
		if c := scope[i]; c != ' ' && (c < 0x21 || c > 0x7e || c == '"' || c == '\\') {
			r, _ := utf8.DecodeRuneInString(scope[i:])
			return nil, oautherr.Problem(fiber.StatusBadRequest, problem.CodeInvalidScope,
				fmt.Sprintf("scope holds %U, which no scope token may: tokens of printable ASCII but '\"' and '\\', separated by spaces (U+0020)", r))
		}
	}
	return jwtclaims.SplitScope(scope), nil
}

// quote shows a client-sent value in an error, bounded and printable.
// A value longer than 64 bytes is cut on a character boundary, so a
// cut never shows as a "\xc3" escape of half a character.
func quote(s string) string {
	return fmt.Sprintf("%q", clip.Mark(s, 64))
}
