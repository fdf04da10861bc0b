// Package oautherr gives the answers of the OAuth endpoints (token,
// introspection, revocation) the RFC 6749 section 5.2 fields, error and
// error_description, beside the problem+json fields, so that standard
// OAuth client libraries understand them.
package oautherr

import (
	"errors"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// RFC 6749 section 5.2 error codes (and RFC 7009's).
const (
	InvalidRequest       = "invalid_request"
	InvalidClient        = "invalid_client"
	InvalidGrant         = "invalid_grant"
	UnauthorizedClient   = "unauthorized_client"
	UnsupportedGrantType = "unsupported_grant_type"
	InvalidScope         = "invalid_scope"
	UnsupportedTokenType = "unsupported_token_type"
	// server_error and temporarily_unavailable: problem.OAuthErrorOfStatus.
)

// Of is the RFC 6749 error code of a problem.
func Of(p *problem.Problem) string {
	switch p.Code {
	case problem.CodeInvalidRequest, problem.CodeInvalidGrant, problem.CodeUnsupportedGrantType,
		problem.CodeInvalidClient, problem.CodeInvalidScope, problem.CodeUnauthorizedClient,
		problem.CodeUnsupportedTokenType, problem.CodeMFARequired:
		return p.Code
	case problem.CodeInvalidMFACode, problem.CodeInvalidToken, problem.CodeUserDisabled, problem.CodeNoMembership:
		// A code, a bearer (step-up) or an account that is no good: the
		// grant is what failed.
		return InvalidGrant
	}
	return problem.OAuthErrorOfStatus(p.Status)
}

// Annotate returns a copy of p with the RFC 6749 fields set (p may be a
// shared value: it is never modified).
func Annotate(p *problem.Problem) *problem.Problem {
	q := *p
	q.OAuthError = Of(p)
	if q.Status == fiber.StatusUnprocessableEntity {
		// RFC 6749 section 5.2 answers a request it cannot use with 400,
		// whether a field is unknown or of the wrong type.
		q.Status, q.Title = fiber.StatusBadRequest, utils.StatusMessage(fiber.StatusBadRequest)
	}
	q.OAuthErrorDescription = p.Detail
	if q.OAuthErrorDescription == "" {
		q.OAuthErrorDescription = p.Title
	}
	return &q
}

// Endpoint reports whether path is one of the OAuth endpoints
// (problem.IsOAuthEndpoint). The server's error handler annotates the
// errors no handler wrapped there (the database gone away, a body above
// the limit, an internal error), so that these endpoints answer every
// error in the RFC 6749 shape.
func Endpoint(path string) bool { return problem.IsOAuthEndpoint(path) }

// Wrap returns h with the problems it returns annotated (a problem
// wrapped in another error is annotated too, and the wrapper dropped).
// Other errors go on to the error handler unchanged.
func Wrap(h fiber.Handler) fiber.Handler {
	return func(c *fiber.Ctx) error {
		err := h(c)
		if err == nil {
			return nil
		}
		var p *problem.Problem
		if errors.As(err, &p) {
			return Annotate(p)
		}
		return err
	}
}

// Problem is a new problem with the RFC 6749 fields set: error is code.
func Problem(status int, code, detail string) *problem.Problem {
	return Annotate(problem.New(status, code, detail))
}
