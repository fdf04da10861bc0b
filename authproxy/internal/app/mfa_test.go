package app

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestStepUpAtTheEdge: require_mfa / max_auth_age routes, coreapi's
// built-in step-up routes for users with MFA, and the tenant's MFA policy
// are decided at the proxy from the token and the projection.
func TestStepUpAtTheEdge(t *testing.T) {
	t.Parallel()
	rulesFile := appUpstream + `
routes:
  - prefix: /notes
    upstream: notes
    access: protected
  - prefix: /notes/secure
    upstream: notes
    access: protected
    require_mfa: true
    max_auth_age: 5m
  - prefix: /notes/recent
    upstream: notes
    access: protected
    max_auth_age: 1m
  - prefix: /notes/mfa
    upstream: notes
    access: protected
    require_mfa: true
`
	now := time.Now().Unix()
	pwd := func(c testenv.Claims) { c["amr"] = []string{"pwd"}; c["auth_time"] = now - 10 }
	otp := func(c testenv.Claims) { c["amr"] = []string{"pwd", "otp"}; c["auth_time"] = now - 10 }
	oldOTP := func(c testenv.Claims) { c["amr"] = []string{"pwd", "otp"}; c["auth_time"] = now - 600 }
	mfaUser := func(p *identity.Projection) { p.MFAEnabled = true }
	policy := func(p *identity.Projection) { p.TenantRequireMFA = true }
	tests := []struct {
		name         string
		mod          func(p *identity.Projection)
		claims       func(c testenv.Claims)
		method, path string
		status       int
		code         string
		wwwAuth      string
	}{
		{"app route, password", nil, pwd, "GET", "/notes", 200, "", ""},
		{"require_mfa, password only", nil, pwd, "GET", "/notes/secure", 401, problem.CodeInsufficientUserAuthentication,
			`Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=300`},
		{"require_mfa, no amr claim", nil, nil, "GET", "/notes/secure", 401, problem.CodeInsufficientUserAuthentication, ""},
		{"require_mfa, old second factor", nil, oldOTP, "GET", "/notes/secure", 401, problem.CodeInsufficientUserAuthentication, ""},
		{"require_mfa, fresh second factor", nil, otp, "GET", "/notes/secure", 200, "", ""},
		// No age applies: the challenge names none (RFC 9470 max_age only
		// "when relevant").
		{"require_mfa alone, password only", nil, pwd, "GET", "/notes/mfa", 401, problem.CodeInsufficientUserAuthentication,
			`Bearer error="insufficient_user_authentication", acr_values="mfa"`},
		{"require_mfa alone, old second factor", nil, oldOTP, "GET", "/notes/mfa", 200, "", ""},
		{"max_auth_age, no auth_time claim", nil, func(c testenv.Claims) { c["amr"] = []string{"pwd", "otp"} }, "GET", "/notes/recent", 401,
			problem.CodeInsufficientUserAuthentication, `Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=60`},
		{"max_auth_age, recent password", nil, pwd, "GET", "/notes/recent", 200, "", ""},
		{"max_auth_age, old sign-in", nil, oldOTP, "GET", "/notes/recent", 401, problem.CodeInsufficientUserAuthentication,
			`Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=60`},
		{"password change, no MFA", nil, pwd, "PUT", "/api/v1/users/me/password", 200, "", ""},
		{"password change, MFA user, password only", mfaUser, pwd, "PUT", "/api/v1/users/me/password", 401, problem.CodeInsufficientUserAuthentication,
			`Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=300`},
		{"password change, MFA user, stepped up", mfaUser, otp, "PUT", "/api/v1/users/me/password", 200, "", ""},
		{"disable MFA, old factor", mfaUser, oldOTP, "DELETE", "/api/v1/users/me/mfa/totp", 401, problem.CodeInsufficientUserAuthentication, ""},
		{"delete user, MFA user", mfaUser, pwd, "DELETE", "/api/v1/users/8d3c2f0e-51a8-4bb9-9d4e-0f1f6b1c2d3e", 401, problem.CodeInsufficientUserAuthentication, ""},
		{"create api key, MFA user", mfaUser, pwd, "POST", "/api/v1/api-keys", 401, problem.CodeInsufficientUserAuthentication, ""},
		{"tenant policy, MFA user, password only", mfaUser, pwd, "PATCH", "/api/v1/tenant", 401, problem.CodeInsufficientUserAuthentication,
			`Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=300`},
		{"tenant policy, MFA user, stepped up", mfaUser, otp, "PATCH", "/api/v1/tenant", 200, "", ""},
		{"grant role, MFA user, old factor", mfaUser, oldOTP, "PUT", "/api/v1/users/8d3c2f0e-51a8-4bb9-9d4e-0f1f6b1c2d3e/roles/admin", 401, problem.CodeInsufficientUserAuthentication, ""},
		{"grant role, MFA user, stepped up", mfaUser, otp, "PUT", "/api/v1/users/8d3c2f0e-51a8-4bb9-9d4e-0f1f6b1c2d3e/roles/admin", 200, "", ""},
		{"invite, MFA user", mfaUser, pwd, "POST", "/api/v1/invitations", 401, problem.CodeInsufficientUserAuthentication, ""},
		{"resend invitation, MFA user", mfaUser, pwd, "POST", "/api/v1/invitations/8d3c2f0e-51a8-4bb9-9d4e-0f1f6b1c2d3e/resend", 401, problem.CodeInsufficientUserAuthentication,
			`Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=300`},
		{"resend invitation, MFA user, stepped up", mfaUser, otp, "POST", "/api/v1/invitations/8d3c2f0e-51a8-4bb9-9d4e-0f1f6b1c2d3e/resend", 200, "", ""},
		{"grant role, no MFA", nil, pwd, "PUT", "/api/v1/users/8d3c2f0e-51a8-4bb9-9d4e-0f1f6b1c2d3e/roles/admin", 200, "", ""},
		{"policy, not enrolled, tenant", policy, pwd, "GET", "/api/v1/tenant", 403, problem.CodeMFAEnrollmentRequired, ""},
		{"policy, not enrolled, app", policy, pwd, "GET", "/notes", 403, problem.CodeMFAEnrollmentRequired, ""},
		{"policy, not enrolled, me", policy, pwd, "GET", "/api/v1/users/me", 200, "", ""},
		{"policy, not enrolled, enrol", policy, pwd, "POST", "/api/v1/users/me/mfa/totp", 200, "", ""},
		{"policy, not enrolled, logout", policy, pwd, "POST", "/api/v1/auth/logout", 200, "", ""},
		// Erasing one's own account needs no factor enrolled first: what
		// the route asks of anyone (a recent sign-in) is coreapi's to check.
		{"policy, not enrolled, delete own account", policy, pwd, "DELETE", "/api/v1/users/me/account", 200, "", ""},
		{"policy, enrolled", func(p *identity.Projection) { p.TenantRequireMFA, p.MFAEnabled = true, true }, otp, "GET", "/api/v1/tenant", 200, "", ""},
	}
	e := start(t, envOpt{rules: rulesFile})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			p := defaultProjection()
			if tt.mod != nil {
				tt.mod(&p)
			}
			e.core.SetProjection(p)
			e.publishAndWait("auth.invalidate.all")
			r := e.do(tt.method, tt.path, e.token(tt.claims), nil)
			if tt.status == 200 {
				e.wantStatus(r, 200)
				up, key := e.core, "core"
				if strings.HasPrefix(tt.path, "/notes") {
					up, key = e.up, testenv.AppKey.ID
				}
				got := e.wantSignedAt(up, key)
				if tt.claims != nil {
					c := testenv.Claims{}
					tt.claims(c)
					if !slices.Equal(got.Identity.AMR, c["amr"].([]string)) || got.Identity.AuthTime != c["auth_time"].(int64) {
						t.Fatalf("forwarded amr %v auth_time %d, want %v %v", got.Identity.AMR, got.Identity.AuthTime, c["amr"], c["auth_time"])
					}
				}
				return
			}
			e.wantProblem(r, tt.status, tt.code)
			if tt.wwwAuth != "" {
				if got := r.header.Get("WWW-Authenticate"); got != tt.wwwAuth {
					t.Fatalf("WWW-Authenticate = %q, want %q", got, tt.wwwAuth)
				}
			}
			e.wantNothingForwarded()
		})
	}
}

// TestMFAPolicyConfinesSignedInMembers: switching the tenant's policy on
// confines a signed-in member without MFA at their next request, once the
// invalidation arrives.
func TestMFAPolicyConfinesSignedInMembers(t *testing.T) {
	e := start(t, envOpt{})
	tok := e.token(func(c testenv.Claims) { c["amr"] = []string{"pwd"}; c["auth_time"] = time.Now().Unix() })
	e.wantStatus(e.do("GET", "/api/v1/tenant", tok, nil), 200)
	p := defaultProjection()
	p.TenantRequireMFA = true
	e.core.SetProjection(p)
	start := time.Now()
	e.publish("auth.invalidate.tenant." + tenantID)
	testenv.Eventually(t, func() error {
		return testenv.Want("GET /api/v1/tenant status", e.do("GET", "/api/v1/tenant", tok, nil).status, http.StatusForbidden)
	})
	t.Logf("confined %v after the invalidation was published", time.Since(start))
	e.wantProblem(e.do("GET", "/api/v1/tenant", tok, nil), 403, problem.CodeMFAEnrollmentRequired)
	e.wantStatus(e.do("POST", "/api/v1/users/me/mfa/totp/confirm", tok, nil), 200)
}

// TestMFATokenIsNotAnAccessToken: the mfa_token of a sign-in challenge is
// refused as a bearer.
func TestMFATokenIsNotAnAccessToken(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	e.wantProblem(e.do("GET", "/api/v1/users/me", "mfa_dGhpcyBpcyBub3QgYSBqd3QgYXQgYWxsLCBqdXN0IGJ5dGVz", nil), 401, problem.CodeInvalidToken)
	e.wantNothingForwarded()
}
