// Package decide makes the access decision for a request with a verified
// token from the token, the cached projection and the route's
// requirements. It is pure: no I/O, no clock, no allocation.
package decide

import (
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/identity"
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

// Named is the refusal whose String is name (a stream's close reason),
// false when no outcome other than Allow has that name.
func Named(name string) (Outcome, bool) {
	for _, o := range Outcomes() {
		if o != Allow && o.String() == name {
			return o, true
		}
	}
	return Allow, false
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
	s := NewSubject(c, e)
	return s.Decide(r)
}

// Subject is what Decide and Authn read of a token's claims and of its
// projection, worked out once from the two: the checks that do not depend
// on the route are already applied. A proxy keeps one beside each cached
// token's warm state, so that a warm request reads neither the claims nor
// the projection (each a line of memory at the end of a pointer) unless
// its route requires permissions. It is immutable; a new projection makes
// a new Subject.
type Subject struct {
	// p is read only for a route that requires permissions.
	p *identity.Projection
	// authTime is the token's auth_time (unix seconds; 0: none).
	authTime int64
	// pre is the outcome before the route's own requirements: Allow,
	// DenyInactive, DenyTokenVersion or DenySessionRevoked (a byte, so
	// that the struct packs into 24 bytes).
	pre                                         uint8
	emailVerified, mfaEnabled, tenantRequireMFA bool
	// service: the principal is a service account; otp: "otp" is among
	// the token's amr.
	service, otp bool
}

// NewSubject is the subject of the token with claims c acting with the
// projection e (already narrowed to the token's scope, if it has one).
func NewSubject(c *tokens.Claims, e *projection.Entry) Subject {
	p := e.P
	s := Subject{p: p, authTime: c.AuthTime, emailVerified: p.EmailVerified, mfaEnabled: p.MFAEnabled,
		tenantRequireMFA: p.TenantRequireMFA, service: c.Principal == identity.PrincipalService, otp: hasOTP(c.AMR)}
	switch {
	case !e.Active():
		s.pre = uint8(DenyInactive)
	case c.TV < p.TokenVersion:
		s.pre = uint8(DenyTokenVersion)
	case p.SessionRevoked(c.Sid):
		s.pre = uint8(DenySessionRevoked)
	}
	return s
}

// Decide is Decide for the route r.
func (s *Subject) Decide(r *rules.Route) Outcome {
	if s.pre != uint8(Allow) {
		return Outcome(s.pre)
	}
	for _, perm := range r.Permissions {
		if !s.p.HasPermission(perm) {
			return DenyScope
		}
	}
	if r.RequireVerifiedEmail && !s.emailVerified {
		return DenyEmailUnverified
	}
	return Allow
}
