// Package decide makes the access decision for a protected request from the
// verified token, the cached projection and the route's required
// permissions. It is pure: no I/O, no clock, no allocation.
package decide

import (
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
)

// Outcome of a decision.
type Outcome int

// Outcomes. Everything but Allow and DenyScope means the token no longer
// stands for a valid identity (401); DenyScope is 403.
const (
	Allow Outcome = iota
	DenyInactive
	DenyTokenVersion
	DenySessionRevoked
	DenyScope
)

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
	}
	return "unknown"
}

// Decide applies, in order: user, membership and tenant active; the token's
// tv not older than the user's token_version; the session not revoked; and
// every required permission granted.
func Decide(c *tokens.Claims, e *projection.Entry, required []string) Outcome {
	p := e.P
	if !p.Active() {
		return DenyInactive
	}
	if c.TV < p.TokenVersion {
		return DenyTokenVersion
	}
	if p.SessionRevoked(c.Sid) {
		return DenySessionRevoked
	}
	for _, perm := range required {
		if !p.HasPermission(perm) {
			return DenyScope
		}
	}
	return Allow
}
