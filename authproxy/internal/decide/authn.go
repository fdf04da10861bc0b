package decide

import (
	"slices"
	"strings"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
)

// Outcomes of Authn.
const (
	// DenyMFAEnrollment: the tenant requires a second factor, the caller
	// has none, and the route is not one of the enrolment routes (403
	// mfa_enrollment_required).
	DenyMFAEnrollment Outcome = iota + 100
	// DenyStepUp: the route needs a second factor, or a more recent
	// authentication, than the token carries (401
	// insufficient_user_authentication, RFC 9470).
	DenyStepUp
)

// CoreStepUpAge is the freshness of the second factor coreapi's sensitive
// routes require of a user who has one.
const CoreStepUpAge = 5 * time.Minute

// AMR value of a one-time-password second factor.
const amrOTP = "otp"

// Authn is the authentication step, after Decide allowed the request: a
// member of a tenant that requires MFA and who has none reaches only
// /api/v1/users/me, /api/v1/users/me/mfa/..., /api/v1/auth/logout and
// the deletion of their own account (DELETE /api/v1/users/me/account); a
// route's require_mfa needs "otp" among the token's amr and max_auth_age an
// auth_time no older than that. coreapi's sensitive operations (coreStepUp)
// need a second factor within CoreStepUpAge from users who have one. method and path are the request's
// (the path normalized); now is unix seconds. It returns the outcome and,
// for DenyStepUp, the max_age to announce (0: none).
func Authn(c *tokens.Claims, e *projection.Entry, r *rules.Route, method, path string, now int64) (Outcome, int64) {
	s := NewSubject(c, e)
	return s.Authn(r, method, path, now)
}

// Authn is Authn for the route r.
func (s *Subject) Authn(r *rules.Route, method, path string, now int64) (Outcome, int64) {
	// The tenant's MFA policy is about people: a service account proves
	// itself with a client secret and has no second factor to enrol.
	if s.tenantRequireMFA && !s.mfaEnabled && !s.service && !enrolmentPath(path) && !(r.Core && ownErasure(method, path)) {
		return DenyMFAEnrollment, 0
	}
	needMFA, maxAge := r.RequireMFA, r.MaxAuthAge
	if r.Core && s.mfaEnabled && coreStepUp(method, path) {
		needMFA = true
		if maxAge == 0 || maxAge > CoreStepUpAge {
			maxAge = CoreStepUpAge
		}
	}
	if !needMFA && maxAge == 0 {
		return Allow, 0
	}
	age := int64(maxAge / time.Second)
	if needMFA && !s.otp {
		return DenyStepUp, age
	}
	if maxAge > 0 && (s.authTime <= 0 || now-s.authTime > age) {
		return DenyStepUp, age
	}
	return Allow, 0
}

func hasOTP(amr []string) bool {
	return slices.Contains(amr, amrOTP)
}

// enrolmentPath: the routes a member confined by the tenant's MFA policy
// may use (and the token endpoint, public anyway, which an optional bearer
// must not close).
func enrolmentPath(path string) bool {
	return path == "/api/v1/users/me" || path == "/api/v1/auth/logout" || path == "/api/v1/auth/token" ||
		path == "/api/v1/users/me/mfa" || strings.HasPrefix(path, "/api/v1/users/me/mfa/")
}

// ownErasure: the deletion of the caller's own account, which a member
// confined by the tenant's MFA policy may ask for without enrolling a
// factor first: erasure must not depend on enrolling one. coreapi asks of
// them what it asks of anyone (a recent sign-in, of a live session).
func ownErasure(method, path string) bool {
	return method == "DELETE" && path == "/api/v1/users/me/account"
}

// subResource: path is prefix + a non-empty id + "/" + sub.
func subResource(path, prefix, sub string) bool {
	rest, ok := strings.CutPrefix(path, prefix)
	id, got, _ := strings.Cut(rest, "/")
	return ok && id != "" && got == sub
}

// coreStepUp: coreapi's operations that need a fresh second factor from a
// user who has one: those that change the account's credentials, hand out
// access that outlasts the session (API keys, client secrets, permissions
// for another account: a member added, invited, an invitation resent, a
// member re-enabled or granted a role, a role's permissions widened),
// link or remove one of the caller's sign-in providers, remove a member,
// delete the caller's account, or change the tenant's policy. A stolen access token
// of an admin who has a second factor is then not turned into lasting
// access for its thief.
func coreStepUp(method, path string) bool {
	switch method {
	case "PUT":
		if path == "/api/v1/users/me/password" {
			return true
		}
		// PUT /api/v1/users/{id}/roles/{role}: a grant.
		rest, ok := strings.CutPrefix(path, "/api/v1/users/")
		id, sub, _ := strings.Cut(rest, "/")
		role, found := strings.CutPrefix(sub, "roles/")
		return ok && id != "" && found && role != "" && !strings.Contains(role, "/")
	case "PATCH":
		// The tenant's name or MFA policy; a member's status (PATCH
		// /api/v1/users/me is the caller's own profile, another route);
		// a role's permissions.
		if path == "/api/v1/tenant" {
			return true
		}
		if id, ok := strings.CutPrefix(path, "/api/v1/users/"); ok {
			return id != "" && id != "me" && !strings.Contains(id, "/")
		}
		id, ok := strings.CutPrefix(path, "/api/v1/roles/")
		return ok && id != "" && !strings.Contains(id, "/")
	case "POST":
		// Credentials that outlast the session: API keys, a service
		// account with its first client secret or a further one, new
		// recovery codes (a way past the second factor); a member added
		// with roles, or invited to join with them, or an invitation
		// resent (its caller becomes the sender, and a new link hands
		// its roles out again).
		switch path {
		case "/api/v1/api-keys", "/api/v1/users/me/api-keys", "/api/v1/service-accounts", "/api/v1/users", "/api/v1/invitations",
			"/api/v1/users/me/mfa/recovery-codes":
			return true
		}
		if subResource(path, "/api/v1/service-accounts/", "secrets") || subResource(path, "/api/v1/invitations/", "resend") {
			return true
		}
		// A sign-in provider linked to the caller's account: a way in of
		// whoever completes the link, which a stolen token must not add;
		// its start, and its confirmation (…/{provider}/confirm), where
		// the link is made.
		p, ok := strings.CutPrefix(path, "/api/v1/users/me/identities/")
		p, _ = strings.CutSuffix(p, "/confirm")
		return ok && p != "" && !strings.Contains(p, "/")
	case "DELETE":
		if path == "/api/v1/users/me/mfa/totp" {
			return true
		}
		// A sign-in provider unlinked from the caller's account: one of
		// its ways in, which a stolen token must not take from its owner.
		if p, ok := strings.CutPrefix(path, "/api/v1/users/me/identities/"); ok {
			return p != "" && !strings.Contains(p, "/")
		}
		// The deletion of the caller's account.
		if path == "/api/v1/users/me/account" {
			return true
		}
		// DELETE /api/v1/users/{id} and /api/v1/users/{id}/mfa (an
		// admin's reset of a member's second factor); {id} "me" too, which
		// coreapi reads as the caller's own id.
		rest, ok := strings.CutPrefix(path, "/api/v1/users/")
		if !ok {
			return false
		}
		id, sub, _ := strings.Cut(rest, "/")
		return id != "" && (sub == "" && !strings.HasSuffix(rest, "/") || sub == "mfa")
	}
	return false
}
