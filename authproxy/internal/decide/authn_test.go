package decide

import (
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

func TestAuthn(t *testing.T) {
	const now = 1_800_000_000
	pwd := tokens.Claims{AMR: []string{"pwd"}, AuthTime: now - 60}
	mfaFresh := tokens.Claims{AMR: []string{"pwd", "otp"}, AuthTime: now - 60}
	mfaOld := tokens.Claims{AMR: []string{"pwd", "otp"}, AuthTime: now - 301}
	noClaims := tokens.Claims{}
	core := &rules.Route{Core: true}
	app := &rules.Route{}
	tests := []struct {
		name         string
		p            identity.Projection
		c            tokens.Claims
		r            *rules.Route
		method, path string
		want         Outcome
		wantMaxAge   int64
	}{
		{"plain route", identity.Projection{}, pwd, app, "GET", "/notes", Allow, 0},
		{"require_mfa without otp", identity.Projection{}, pwd, &rules.Route{RequireMFA: true}, "GET", "/notes", DenyStepUp, 0},
		{"require_mfa with otp", identity.Projection{}, mfaOld, &rules.Route{RequireMFA: true}, "GET", "/notes", Allow, 0},
		{"require_mfa, no amr claim", identity.Projection{}, noClaims, &rules.Route{RequireMFA: true}, "GET", "/notes", DenyStepUp, 0},
		{"max_auth_age met", identity.Projection{}, pwd, &rules.Route{MaxAuthAge: 2 * time.Minute}, "GET", "/notes", Allow, 0},
		{"max_auth_age exceeded", identity.Projection{}, pwd, &rules.Route{MaxAuthAge: 30 * time.Second}, "GET", "/notes", DenyStepUp, 30},
		{"max_auth_age, no auth_time", identity.Projection{}, noClaims, &rules.Route{MaxAuthAge: time.Hour}, "GET", "/notes", DenyStepUp, 3600},
		{"both, old otp", identity.Projection{}, mfaOld, &rules.Route{RequireMFA: true, MaxAuthAge: 5 * time.Minute}, "GET", "/notes", DenyStepUp, 300},
		{"both, fresh otp", identity.Projection{}, mfaFresh, &rules.Route{RequireMFA: true, MaxAuthAge: 5 * time.Minute}, "GET", "/notes", Allow, 0},

		{"core password change, user without MFA", identity.Projection{}, pwd, core, "PUT", "/api/v1/users/me/password", Allow, 0},
		{"core password change, MFA user, password only", identity.Projection{MFAEnabled: true}, pwd, core, "PUT", "/api/v1/users/me/password", DenyStepUp, 300},
		{"core password change, MFA user, old otp", identity.Projection{MFAEnabled: true}, mfaOld, core, "PUT", "/api/v1/users/me/password", DenyStepUp, 300},
		{"core password change, MFA user, fresh otp", identity.Projection{MFAEnabled: true}, mfaFresh, core, "PUT", "/api/v1/users/me/password", Allow, 0},
		{"core disable MFA", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/me/mfa/totp", DenyStepUp, 300},
		{"core new recovery codes", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/users/me/mfa/recovery-codes", DenyStepUp, 300},
		{"core api key", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/api-keys", DenyStepUp, 300},
		{"core own api key", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/users/me/api-keys", DenyStepUp, 300},
		{"core service account", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/service-accounts", DenyStepUp, 300},
		{"core service account secret", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/service-accounts/0b7e/secrets", DenyStepUp, 300},
		{"core service account secret, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "POST", "/api/v1/service-accounts/0b7e/secrets", Allow, 0},
		{"core service account secret, user without MFA", identity.Projection{}, pwd, core, "POST", "/api/v1/service-accounts/0b7e/secrets", Allow, 0},
		{"core service account, other sub-path", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/service-accounts/0b7e/other", Allow, 0},
		{"core list service accounts", identity.Projection{MFAEnabled: true}, pwd, core, "GET", "/api/v1/service-accounts", Allow, 0},
		{"core delete user", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/0b7e", DenyStepUp, 300},
		{"core reset member MFA", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/0b7e/mfa", DenyStepUp, 300},
		{"core delete me (the caller's own membership)", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/me", DenyStepUp, 300},
		{"core delete me, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "DELETE", "/api/v1/users/me", Allow, 0},
		{"core delete my account", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/me/account", DenyStepUp, 300},
		{"core delete my account, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "DELETE", "/api/v1/users/me/account", Allow, 0},
		{"core delete my account, no MFA", identity.Projection{}, pwd, core, "DELETE", "/api/v1/users/me/account", Allow, 0},
		{"core delete my account, trailing path", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/me/account/x", Allow, 0},
		{"core delete own session", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/me/sessions/0b7e", Allow, 0},
		// A sign-in provider unlinked: one of the account's ways in.
		{"core unlink provider", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/me/identities/google", DenyStepUp, 300},
		{"core unlink provider, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "DELETE", "/api/v1/users/me/identities/google", Allow, 0},
		{"core unlink provider, user without MFA", identity.Projection{}, pwd, core, "DELETE", "/api/v1/users/me/identities/google", Allow, 0},
		// A sign-in provider linked: a way in of whoever follows the link.
		{"core link provider", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/users/me/identities/google", DenyStepUp, 300},
		{"core link provider, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "POST", "/api/v1/users/me/identities/google", Allow, 0},
		{"core link provider, user without MFA", identity.Projection{}, pwd, core, "POST", "/api/v1/users/me/identities/google", Allow, 0},
		{"core link without a provider", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/users/me/identities/", Allow, 0},
		// Its confirmation, where the link is made: the same step-up.
		{"core confirm link", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/users/me/identities/google/confirm", DenyStepUp, 300},
		{"core confirm link, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "POST", "/api/v1/users/me/identities/google/confirm", Allow, 0},
		{"core confirm link, user without MFA", identity.Projection{}, pwd, core, "POST", "/api/v1/users/me/identities/google/confirm", Allow, 0},
		{"core confirm link without a provider", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/users/me/identities//confirm", Allow, 0},
		{"core POST under a link's confirmation", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/users/me/identities/google/confirm/x", Allow, 0},
		{"core list own identities", identity.Projection{MFAEnabled: true}, pwd, core, "GET", "/api/v1/users/me/identities", Allow, 0},
		{"core unlink without a provider", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/me/identities/", Allow, 0},
		{"core delete role of user", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/users/0b7e/roles/admin", Allow, 0},
		{"core grant role", identity.Projection{MFAEnabled: true}, pwd, core, "PUT", "/api/v1/users/0b7e/roles/admin", DenyStepUp, 300},
		{"core grant role, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "PUT", "/api/v1/users/0b7e/roles/admin", Allow, 0},
		{"core grant role, user without MFA", identity.Projection{}, pwd, core, "PUT", "/api/v1/users/0b7e/roles/admin", Allow, 0},
		{"core PUT under a role, not a grant", identity.Projection{MFAEnabled: true}, pwd, core, "PUT", "/api/v1/users/0b7e/roles/admin/x", Allow, 0},
		{"core PUT of a user's roles without one", identity.Projection{MFAEnabled: true}, pwd, core, "PUT", "/api/v1/users/0b7e/roles", Allow, 0},
		{"core tenant policy", identity.Projection{MFAEnabled: true}, pwd, core, "PATCH", "/api/v1/tenant", DenyStepUp, 300},
		{"core tenant policy, old factor", identity.Projection{MFAEnabled: true}, mfaOld, core, "PATCH", "/api/v1/tenant", DenyStepUp, 300},
		{"core tenant policy, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "PATCH", "/api/v1/tenant", Allow, 0},
		{"core read tenant", identity.Projection{MFAEnabled: true}, pwd, core, "GET", "/api/v1/tenant", Allow, 0},
		{"core member status", identity.Projection{MFAEnabled: true}, pwd, core, "PATCH", "/api/v1/users/0b7e", DenyStepUp, 300},
		{"core own profile", identity.Projection{MFAEnabled: true}, pwd, core, "PATCH", "/api/v1/users/me", Allow, 0},
		{"core role edit", identity.Projection{MFAEnabled: true}, pwd, core, "PATCH", "/api/v1/roles/0b7e", DenyStepUp, 300},
		{"core role creation", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/roles", Allow, 0},
		{"core add member", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/users", DenyStepUp, 300},
		{"core invite", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/invitations", DenyStepUp, 300},
		{"core invite, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "POST", "/api/v1/invitations", Allow, 0},
		// A resend makes its caller the sender and mails a new link: it
		// hands the invitation's roles out again, as the invite does.
		{"core resend invitation", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/invitations/0b7e/resend", DenyStepUp, 300},
		{"core resend invitation, old factor", identity.Projection{MFAEnabled: true}, mfaOld, core, "POST", "/api/v1/invitations/0b7e/resend", DenyStepUp, 300},
		{"core resend invitation, fresh factor", identity.Projection{MFAEnabled: true}, mfaFresh, core, "POST", "/api/v1/invitations/0b7e/resend", Allow, 0},
		{"core resend invitation, user without MFA", identity.Projection{}, pwd, core, "POST", "/api/v1/invitations/0b7e/resend", Allow, 0},
		{"core invitation, other sub-path", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/invitations/0b7e/other", Allow, 0},
		{"core resend without an id", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/invitations//resend", Allow, 0},
		{"core withdraw invitation", identity.Projection{MFAEnabled: true}, pwd, core, "DELETE", "/api/v1/invitations/0b7e", Allow, 0},
		{"core accept invitation", identity.Projection{MFAEnabled: true}, pwd, core, "POST", "/api/v1/invitations/accept", Allow, 0},
		{"core list api keys", identity.Projection{MFAEnabled: true}, pwd, core, "GET", "/api/v1/api-keys", Allow, 0},
		{"core read me", identity.Projection{MFAEnabled: true}, pwd, core, "GET", "/api/v1/users/me", Allow, 0},
		{"app route with a core-like path", identity.Projection{MFAEnabled: true}, pwd, app, "PUT", "/api/v1/users/me/password", Allow, 0},

		{"policy, enrolled", identity.Projection{TenantRequireMFA: true, MFAEnabled: true}, mfaFresh, app, "GET", "/notes", Allow, 0},
		{"policy, not enrolled, app", identity.Projection{TenantRequireMFA: true}, pwd, app, "GET", "/notes", DenyMFAEnrollment, 0},
		{"policy, not enrolled, tenant", identity.Projection{TenantRequireMFA: true}, pwd, core, "GET", "/api/v1/tenant", DenyMFAEnrollment, 0},
		{"policy, not enrolled, sessions", identity.Projection{TenantRequireMFA: true}, pwd, core, "GET", "/api/v1/users/me/sessions", DenyMFAEnrollment, 0},
		{"policy, not enrolled, me", identity.Projection{TenantRequireMFA: true}, pwd, core, "GET", "/api/v1/users/me", Allow, 0},
		{"policy, not enrolled, enrol", identity.Projection{TenantRequireMFA: true}, pwd, core, "POST", "/api/v1/users/me/mfa/totp", Allow, 0},
		{"policy, not enrolled, confirm", identity.Projection{TenantRequireMFA: true}, pwd, core, "POST", "/api/v1/users/me/mfa/totp/confirm", Allow, 0},
		{"policy, not enrolled, logout", identity.Projection{TenantRequireMFA: true}, pwd, core, "POST", "/api/v1/auth/logout", Allow, 0},
		{"policy, not enrolled, look-alike", identity.Projection{TenantRequireMFA: true}, pwd, core, "GET", "/api/v1/users/me/mfax", DenyMFAEnrollment, 0},
		// The account's own erasure: only DELETE, only that path.
		{"policy, not enrolled, delete own account", identity.Projection{TenantRequireMFA: true}, pwd, core, "DELETE", "/api/v1/users/me/account", Allow, 0},
		{"policy, not enrolled, other method on the account", identity.Projection{TenantRequireMFA: true}, pwd, core, "GET", "/api/v1/users/me/account", DenyMFAEnrollment, 0},
		{"policy, not enrolled, under the account", identity.Projection{TenantRequireMFA: true}, pwd, core, "DELETE", "/api/v1/users/me/account/x", DenyMFAEnrollment, 0},
		{"policy, not enrolled, delete own account, app route", identity.Projection{TenantRequireMFA: true}, pwd, app, "DELETE", "/api/v1/users/me/account", DenyMFAEnrollment, 0},
		// The policy is about people: a service account has no factor to enrol.
		{"policy, service account", identity.Projection{TenantRequireMFA: true}, tokens.Claims{Principal: identity.PrincipalService}, app, "GET", "/notes", Allow, 0},
		{"policy, service account, require_mfa route", identity.Projection{TenantRequireMFA: true}, tokens.Claims{Principal: identity.PrincipalService}, &rules.Route{RequireMFA: true}, "GET", "/notes", DenyStepUp, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, c := tt.p, tt.c
			got, age := Authn(&c, projection.Of(&p), tt.r, tt.method, tt.path, now)
			if got != tt.want || age != tt.wantMaxAge {
				t.Fatalf("Authn() = %v, %d; want %v, %d", got, age, tt.want, tt.wantMaxAge)
			}
		})
	}
}

func BenchmarkAuthn(b *testing.B) {
	p := identity.Projection{MFAEnabled: true}
	c := tokens.Claims{AMR: []string{"pwd", "otp"}, AuthTime: 1_800_000_000}
	e := projection.Of(&p)
	r := &rules.Route{Core: true}
	b.ReportAllocs()
	for b.Loop() {
		if o, _ := Authn(&c, e, r, "GET", "/api/v1/users/0b7e/roles", 1_800_000_010); o != Allow {
			b.Fatal(o)
		}
	}
}
