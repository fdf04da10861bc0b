package decide

import (
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

func TestDecide(t *testing.T) {
	base := func() *identity.Projection {
		return &identity.Projection{UserStatus: "active", MembershipStatus: "active", TenantStatus: "active",
			Permissions: []string{"users:read", "tenant:read"}, TokenVersion: 3, RevokedSessions: []string{"s-old"}}
	}
	claims := &tokens.Claims{Sub: "u", Tid: "t", Sid: "s1", TV: 3}
	tests := []struct {
		name     string
		mod      func(p *identity.Projection, c *tokens.Claims)
		required []string
		want     Outcome
	}{
		{"allow", nil, nil, Allow},
		{"allow with permissions", nil, []string{"users:read", "tenant:read"}, Allow},
		{"newer tv in token", func(_ *identity.Projection, c *tokens.Claims) { c.TV = 4 }, nil, Allow},
		{"user disabled", func(p *identity.Projection, _ *tokens.Claims) { p.UserStatus = "disabled" }, nil, DenyInactive},
		{"membership suspended", func(p *identity.Projection, _ *tokens.Claims) { p.MembershipStatus = "suspended" }, nil, DenyInactive},
		{"tenant suspended", func(p *identity.Projection, _ *tokens.Claims) { p.TenantStatus = "suspended" }, nil, DenyInactive},
		{"stale tv", func(_ *identity.Projection, c *tokens.Claims) { c.TV = 2 }, nil, DenyTokenVersion},
		{"session revoked", func(_ *identity.Projection, c *tokens.Claims) { c.Sid = "s-old" }, nil, DenySessionRevoked},
		{"missing permission", nil, []string{"users:read", "users:write"}, DenyScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, c := base(), *claims
			if tt.mod != nil {
				tt.mod(p, &c)
			}
			if got := Decide(&c, &projection.Entry{P: p}, tt.required); got != tt.want {
				t.Fatalf("Decide() = %v, want %v", got, tt.want)
			}
		})
	}
}
