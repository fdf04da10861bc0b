package identity

import "slices"

// Status values shared by users, memberships and tenants.
const (
	StatusActive    = "active"
	StatusDisabled  = "disabled"
	StatusSuspended = "suspended"
)

// ProjectionPath is coreapi's internal endpoint serving a Projection:
// GET ProjectionPath + "/{user_id}?tenant_id={tenant_id}", authenticated with
// identity headers carrying an empty Identity.
const ProjectionPath = "/internal/v1/projections"

// Projection is the small auth view of one user in one tenant that the proxy
// caches. It is everything the proxy needs to decide a request; the proxy
// never loads a whole user.
type Projection struct {
	UserID           string   `json:"user_id"`
	TenantID         string   `json:"tenant_id"`
	Email            string   `json:"email"`
	UserStatus       string   `json:"user_status"`
	MembershipStatus string   `json:"membership_status"`
	TenantStatus     string   `json:"tenant_status"`
	Roles            []string `json:"roles"`
	Permissions      []string `json:"permissions"`
	TokenVersion     int64    `json:"token_version"`
	// EmailVerified is whether the user proved control of Email; route
	// rules may require it, and it travels as X-Auth-Email-Verified.
	EmailVerified bool `json:"email_verified"`
	// MFAEnabled is whether the user has an active second factor: the
	// built-in step-up routes require a fresh one only then.
	MFAEnabled bool `json:"mfa_enabled"`
	// TenantRequireMFA is the tenant's policy: a member without a second
	// factor reaches only the enrolment routes.
	TenantRequireMFA bool `json:"tenant_require_mfa"`
	// RevokedSessions lists the ids of this user's sessions revoked within
	// the last access-token lifetime: tokens naming them are refused at once.
	RevokedSessions []string `json:"revoked_sessions"`
}

// Active reports whether user, membership and tenant are all active.
func (p *Projection) Active() bool {
	return p.UserStatus == StatusActive && p.MembershipStatus == StatusActive && p.TenantStatus == StatusActive
}

// SessionRevoked reports whether sid is among the recently revoked sessions.
func (p *Projection) SessionRevoked(sid string) bool {
	return slices.Contains(p.RevokedSessions, sid)
}

// HasPermission reports whether the projection grants permission perm.
func (p *Projection) HasPermission(perm string) bool {
	return slices.Contains(p.Permissions, perm)
}
