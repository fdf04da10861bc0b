package tenantapi

import (
	"encoding/json"
	"time"
)

// The tenant API's response bodies. Each has exactly the fields of the
// domain type it shows (users.Member, users.Me, roles.Role, tenants.Tenant,
// tenants.Membership, audit.Record), in the same order, so a plain Go
// conversion turns one into the other and a field added to the domain type
// does not compile until it is given its JSON name here (and in the
// OpenAPI document).

// member is users.Member as the API writes it (AppendJSON in encode.go).
type member struct {
	ID          string    `json:"id"`
	Email       string    `json:"email"`
	DisplayName string    `json:"display_name"`
	Status      string    `json:"membership_status"` // membership status in this tenant (as in me)
	UserStatus  string    `json:"user_status"`       // the account's global status
	Roles       []string  `json:"roles"`
	CreatedAt   time.Time `json:"created_at"` // when they joined the tenant
	UpdatedAt   time.Time `json:"updated_at"`
}

// me is users.Me as the API writes it (AppendJSON in encode.go).
type me struct {
	ID               string    `json:"id"`
	Email            string    `json:"email"`
	EmailVerified    bool      `json:"email_verified"`
	DisplayName      string    `json:"display_name"`
	Status           string    `json:"status"`
	TenantID         string    `json:"tenant_id"`
	MembershipStatus string    `json:"membership_status"`
	Roles            []string  `json:"roles"`
	Permissions      []string  `json:"permissions"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	MFAEnabled       bool      `json:"mfa_enabled"`
}

// role is roles.Role as the API writes it.
type role struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Permissions []string  `json:"permissions"`
	Builtin     bool      `json:"builtin"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Tenant is tenants.Tenant as the API writes it; exported because signup's
// answer and the operator command print the same object.
type Tenant struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Status     string    `json:"status"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	RequireMFA bool      `json:"require_mfa"`
}

// membership is tenants.Membership (one of the caller's tenants) as the
// API writes it.
type membership struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	Status           string    `json:"status"`
	MembershipStatus string    `json:"membership_status"`
	Roles            []string  `json:"roles"`
	JoinedAt         time.Time `json:"joined_at"`
}

// auditEvent is audit.Record as the API writes it.
type auditEvent struct {
	ID          int64           `json:"id"`
	ActorUserID *string         `json:"actor_user_id"`
	APIKeyID    *string         `json:"api_key_id"`
	Action      string          `json:"action"`
	TargetType  string          `json:"target_type"`
	TargetID    string          `json:"target_id"`
	Data        json.RawMessage `json:"data"`
	RequestID   string          `json:"request_id"`
	CreatedAt   time.Time       `json:"created_at"`
}

// Invitation is invitations.Invitation as the API writes it; exported
// because POST /users answers one when the address already has an account,
// as the invitation routes do.
type Invitation struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Roles     []string  `json:"roles"`
	Status    string    `json:"status"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedAt time.Time `json:"created_at"`
	Refusal   *string   `json:"refusal"`
}
