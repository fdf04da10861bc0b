package app

import (
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// A service account's client_credentials token is forwarded with
// X-Auth-Principal service and no session (its csid, the client secret
// it was obtained with, in the session's place); its scope claim narrows the
// permissions forwarded and checked and forwards no roles; the tenant's
// MFA policy does not confine it.
func TestServiceTokenForwardedAsService(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	p := defaultProjection()
	p.Permissions = []string{"notes:read", "tenant:read"}
	p.TenantRequireMFA = true
	e.core.SetProjection(p)
	service := func(scope any) string {
		return e.token(func(c testenv.Claims) {
			delete(c, "sid")
			c["principal"] = "service"
			c["client_id"] = userID
			if scope != nil {
				c["scope"] = scope
			}
		})
	}
	e.wantStatus(e.do("GET", "/api/v1/users/me", service(nil), nil), 200)
	r := e.core.Last(t)
	if !r.Signed || r.VerifyErr != nil {
		t.Fatalf("signature: %v %v", r.Signed, r.VerifyErr)
	}
	id := r.Identity
	if id.Principal != identity.PrincipalService || id.UserID != userID || id.TenantID != tenantID || id.SessionID != "" ||
		!slices.Equal(id.Permissions, []string{"notes:read", "tenant:read"}) || !slices.Equal(id.Roles, p.Roles) || len(p.Roles) == 0 {
		t.Fatalf("identity = %+v", id)
	}
	if got := r.Headers["X-Auth-Principal"]; len(got) != 1 || got[0] != "service" {
		t.Fatalf("X-Auth-Principal = %q", got)
	}

	e.wantStatus(e.do("GET", "/notes", service(nil), nil), 200)
	// Narrowed to tenant:read: notes:read is neither forwarded nor granted.
	scoped := service("tenant:read")
	e.wantStatus(e.do("GET", "/api/v1/tenant", scoped, nil), 200)
	r = e.core.Last(t)
	if got := r.Identity.Permissions; !slices.Equal(got, []string{"tenant:read"}) {
		t.Fatalf("scoped permissions = %q", got)
	}
	// No roles: a role's name stands for all it grants, more than the
	// scope (an app authorizing by role would let the token act as one).
	if got := r.Identity.Roles; len(got) != 0 || len(r.Headers["X-Auth-Roles"]) != 1 || r.Headers["X-Auth-Roles"][0] != "" {
		t.Fatalf("scoped roles = %q (header %q), want none", got, r.Headers["X-Auth-Roles"])
	}
	e.wantProblem(e.do("GET", "/notes", scoped, nil), 403, "insufficient_scope")
	// The unscoped token's entry is not affected by the scoped one's.
	e.wantStatus(e.do("GET", "/notes", service(nil), nil), 200)

	// A token naming its client secret (csid) is forwarded with it as the
	// signed X-Auth-Session-Id, for coreapi to refuse its writes once
	// the secret is deleted.
	const secretID = "0b6a3a52-4f7e-4d1c-9a52-6c1f3e2d1b0a"
	e.wantStatus(e.do("GET", "/api/v1/users/me", e.token(func(c testenv.Claims) {
		delete(c, "sid")
		c["principal"], c["client_id"], c["csid"] = "service", userID, secretID
	}), nil), 200)
	if r := e.core.Last(t); r.VerifyErr != nil || r.Identity.Principal != identity.PrincipalService || r.Identity.SessionID != secretID {
		t.Fatalf("identity of a token naming its secret = %+v (%v), want session id %s", r.Identity, r.VerifyErr, secretID)
	}

	// A user of the same tenant, without MFA, is confined by the policy.
	e.wantProblem(e.do("GET", "/api/v1/tenant", e.token(nil), nil), 403, "mfa_enrollment_required")
	// A token claiming another principal, or a service with a session, is refused.
	e.wantStatus(e.do("GET", "/api/v1/tenant", e.token(func(c testenv.Claims) { c["principal"] = "api_key" }), nil), 401)
	e.wantStatus(e.do("GET", "/api/v1/tenant", e.token(func(c testenv.Claims) { c["principal"] = "service" }), nil), 401)
}
