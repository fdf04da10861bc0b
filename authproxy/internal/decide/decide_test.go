package decide

import (
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
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
		verified bool
		want     Outcome
	}{
		{"allow", nil, nil, false, Allow},
		{"allow with permissions", nil, []string{"users:read", "tenant:read"}, false, Allow},
		{"newer tv in token", func(_ *identity.Projection, c *tokens.Claims) { c.TV = 4 }, nil, false, Allow},
		{"user disabled", func(p *identity.Projection, _ *tokens.Claims) { p.UserStatus = "disabled" }, nil, false, DenyInactive},
		{"membership suspended", func(p *identity.Projection, _ *tokens.Claims) { p.MembershipStatus = "suspended" }, nil, false, DenyInactive},
		{"tenant suspended", func(p *identity.Projection, _ *tokens.Claims) { p.TenantStatus = "suspended" }, nil, false, DenyInactive},
		{"stale tv", func(_ *identity.Projection, c *tokens.Claims) { c.TV = 2 }, nil, false, DenyTokenVersion},
		{"session revoked", func(_ *identity.Projection, c *tokens.Claims) { c.Sid = "s-old" }, nil, false, DenySessionRevoked},
		{"missing permission", nil, []string{"users:read", "users:write"}, false, DenyScope},
		{"email unverified", nil, nil, true, DenyEmailUnverified},
		{"email verified", func(p *identity.Projection, _ *tokens.Claims) { p.EmailVerified = true }, nil, true, Allow},
		{"scope checked before email", nil, []string{"users:write"}, true, DenyScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, c := base(), *claims
			if tt.mod != nil {
				tt.mod(p, &c)
			}
			if got := Decide(&c, projection.Of(p), &rules.Route{Permissions: tt.required, RequireVerifiedEmail: tt.verified}); got != tt.want {
				t.Fatalf("Decide() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestOutcomes: Outcomes lists every outcome once, each with a label of
// its own (the proxy counts decisions by them), up to the last one.
func TestOutcomes(t *testing.T) {
	seen := map[string]bool{}
	for _, o := range Outcomes() {
		s := o.String()
		if s == "unknown" || seen[s] {
			t.Errorf("outcome %d: label %q", o, s)
		}
		seen[s] = true
	}
	if Outcome(DenyStepUp+1).String() != "unknown" || !seen[DenyStepUp.String()] || !seen[DenyEmailUnverified.String()] || Outcome(DenyEmailUnverified+1).String() != "unknown" {
		t.Errorf("Outcomes %v misses an outcome", Outcomes())
	}
}

// TestNamed: Named reads every refusal back from its label, and nothing
// else (Allow, a stream's close reasons of its own).
func TestNamed(t *testing.T) {
	for _, o := range Outcomes() {
		got, ok := Named(o.String())
		if want := o != Allow; ok != want || ok && got != o {
			t.Errorf("Named(%q) = %v %v", o.String(), got, ok)
		}
	}
	for _, name := range []string{"no_membership", "token_expired", "shutdown", "unknown", ""} {
		if o, ok := Named(name); ok {
			t.Errorf("Named(%q) = %v", name, o)
		}
	}
}
