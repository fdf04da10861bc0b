// Package decide makes the access decision for a request with a verified
// token from the token, the cached projection and the route's
// requirements. It is pure: no I/O, no clock, no allocation.
package decide

import (
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
)

// Outcome of a decision.
type Outcome int

// Outcomes. Everything but Allow, DenyScope and DenyEmailUnverified means
// the token no longer stands for a valid identity (401); those two are 403.
const (
	Allow Outcome = iota
	DenyInactive
	DenyTokenVersion
	DenySessionRevoked
	DenyScope
	DenyEmailUnverified
)

// Outcomes lists every outcome of Decide and Authn.
func Outcomes() []Outcome {
	return []Outcome{Allow, DenyInactive, DenyTokenVersion, DenySessionRevoked, DenyScope, DenyEmailUnverified, DenyMFAEnrollment, DenyStepUp}
}

// String is the outcome's metric label and problem detail key.
func (o Outcome) String() string {
	switch o {
	case Allow:
		return "allow"
	case DenyInactive:
		return "inactive"
	case DenyTokenVersion:
		return "token_version"
	case DenySessionRevoked:
		return "session_revoked"
	case DenyScope:
		return "insufficient_scope"
	case DenyEmailUnverified:
		return "email_unverified"
	case DenyMFAEnrollment:
		return "mfa_enrollment_required"
	case DenyStepUp:
		return "insufficient_user_authentication"
	}
	return "unknown"
}

// Decide applies, in order: user, membership and tenant active; the token's
// tv not older than the user's token_version; the session not revoked;
// every permission the route requires granted; and the email verified if
// the route requires it.
func Decide(c *tokens.Claims, e *projection.Entry, r *rules.Route) Outcome {
	p := e.P
	if !e.Active() {
		return DenyInactive
	}
	if c.TV < p.TokenVersion {
		return DenyTokenVersion
	}
	if p.SessionRevoked(c.Sid) {
		return DenySessionRevoked
	}
	for _, perm := range r.Permissions {
		if !p.HasPermission(perm) {
			return DenyScope
		}
	}
	if r.RequireVerifiedEmail && !p.EmailVerified {
		return DenyEmailUnverified
	}
	return Allow
}
