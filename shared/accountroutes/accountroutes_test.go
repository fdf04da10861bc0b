package accountroutes

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

func TestRefuses(t *testing.T) {
	for _, c := range []struct {
		principal, method, path string
		want                    bool
		detail                  string
	}{
		{identity.PrincipalAPIKey, "PUT", "/api/v1/users/me/password", true, "API keys cannot"},
		{identity.PrincipalService, "PUT", "/api/v1/users/me/password", true, "service accounts cannot"},
		{identity.PrincipalUser, "PUT", "/api/v1/users/me/password", false, ""},
		{identity.PrincipalAnonymous, "POST", "/api/v1/invitations/accept", false, ""},
		{identity.PrincipalAPIKey, "DELETE", "/api/v1/users/me/sessions/0b0d3c4e-0000-4000-8000-000000000001", true, "API keys cannot"},
		{identity.PrincipalAPIKey, "DELETE", "/api/v1/users/me/sessions/", false, ""}, // no id: not the route
		{identity.PrincipalAPIKey, "DELETE", "/api/v1/users/me/sessions/a/b", false, ""},
		{identity.PrincipalAPIKey, "POST", "/api/v1/api-keys", true, "cannot create API keys"},
		{identity.PrincipalService, "POST", "/api/v1/api-keys", false, ""},
		{identity.PrincipalAPIKey, "GET", "/api/v1/users/me/api-keys", false, ""},
		{identity.PrincipalService, "HEAD", "/api/v1/users/me/api-keys", true, "service accounts cannot"},
		{identity.PrincipalAPIKey, "GET", "/api/v1/users/me", false, ""},
		{identity.PrincipalAPIKey, "PATCH", "/api/v1/users/me", true, "API keys cannot"},
		{identity.PrincipalAPIKey, "POST", "/api/v1/users/me/identities/google/confirm", true, "API keys cannot"},
		{identity.PrincipalService, "POST", "/api/v1/users/me/identities/google/confirm", true, "service accounts cannot"},
		{identity.PrincipalUser, "POST", "/api/v1/users/me/identities/google/confirm", false, ""},
		{identity.PrincipalAPIKey, "PATCH", "/api/v1/users/me2", false, ""},
		{identity.PrincipalAPIKey, "PATCH", "/api/v1/users/m", false, ""},
		{"bogus", "PATCH", "/api/v1/users/me", false, ""},
		// The account's deletion is refused; leaving the tenant (DELETE
		// /users/me, i.e. /users/{id}) is not an account route.
		{identity.PrincipalAPIKey, "DELETE", "/api/v1/users/me/account", true, "API keys cannot"},
		{identity.PrincipalService, "DELETE", "/api/v1/users/me/account", true, "service accounts cannot"},
		{identity.PrincipalUser, "DELETE", "/api/v1/users/me/account", false, ""},
		{identity.PrincipalAPIKey, "DELETE", "/api/v1/users/me", false, ""},
		{identity.PrincipalService, "DELETE", "/api/v1/users/me", false, ""},
		{identity.PrincipalService, "POST", "/api/v1/users", true, "cannot add or invite members"},
		{identity.PrincipalAPIKey, "POST", "/api/v1/invitations", true, "cannot add or invite members"},
		{identity.PrincipalUser, "POST", "/api/v1/users", false, ""},
		{identity.PrincipalService, "GET", "/api/v1/users", false, ""},
		{identity.PrincipalAPIKey, "POST", "/api/v1/invitations/0b0d3c4e-0000-4000-8000-000000000001/resend", true, "cannot add or invite members"},
		{identity.PrincipalService, "POST", "/api/v1/invitations/0b0d3c4e-0000-4000-8000-000000000001/resend", true, "cannot add or invite members"},
		{identity.PrincipalAPIKey, "DELETE", "/api/v1/invitations/0b0d3c4e-0000-4000-8000-000000000001", false, ""},
		{identity.PrincipalAPIKey, "POST", "/api/v1/invitations/0b0d3c4e-0000-4000-8000-000000000001", false, ""},
		{identity.PrincipalAPIKey, "DELETE", "/api/v1/users/0b0d3c4e-0000-4000-8000-000000000001/mfa", true, "cannot reset a member's second factor"},
		{identity.PrincipalService, "DELETE", "/api/v1/users/0b0d3c4e-0000-4000-8000-000000000001/mfa", true, "cannot reset a member's second factor"},
		{identity.PrincipalUser, "DELETE", "/api/v1/users/0b0d3c4e-0000-4000-8000-000000000001/mfa", false, ""},
		{identity.PrincipalService, "DELETE", "/api/v1/users/0b0d3c4e-0000-4000-8000-000000000001", false, ""},
	} {
		i := Index(c.principal, []byte(c.method), []byte(c.path))
		got, detail := i >= 0, ""
		if got {
			detail = Detail(c.principal, &Rules[i])
		}
		if got != c.want || !strings.Contains(detail, c.detail) {
			t.Errorf("%s %s %s = %v %q, want %v %q", c.principal, c.method, c.path, got, detail, c.want, c.detail)
		}
	}
}

// TestRulesWellFormed: one rule per route, each refusing someone, every
// pattern under /api/v1 and matching itself.
func TestRulesWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Rules {
		k := r.Method + " " + r.Path
		if seen[k] {
			t.Errorf("%s: listed twice", k)
		}
		seen[k] = true
		if r.Refuse == 0 || r.Refuse&^(APIKey|Service) != 0 {
			t.Errorf("%s: Refuse = %b", k, r.Refuse)
		}
		if !strings.HasPrefix(r.Path, "/api/v1/") || strings.HasSuffix(r.Path, "/") {
			t.Errorf("%s: not a coreapi route pattern", k)
		}
		if Find(r.Method, r.Path) == nil {
			t.Errorf("%s: Find misses it", k)
		}
	}
}

func TestRefusesNoAlloc(t *testing.T) {
	m, p := []byte("DELETE"), []byte("/api/v1/users/me/api-keys/0b0d3c4e-0000-4000-8000-000000000001")
	if n := testing.AllocsPerRun(100, func() { Index(identity.PrincipalService, m, p) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}
