package lifecycle_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// inactiveStates are the ways an account comes to be unable to sign in
// (its status, its membership's, its tenant's), each with the statement
// that brings it about (off) and the one that ends it (on), both taking
// the user's id.
func inactiveStates() []struct{ name, off, on string } {
	return []struct{ name, off, on string }{
		{"disabled account", `UPDATE users SET status = 'disabled' WHERE id = $1`, `UPDATE users SET status = 'active' WHERE id = $1`},
		{"disabled membership", `UPDATE memberships SET status = 'disabled' WHERE user_id = $1`, `UPDATE memberships SET status = 'active' WHERE user_id = $1`},
		{"suspended tenant", `UPDATE tenants SET status = 'suspended' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`,
			`UPDATE tenants SET status = 'active' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`},
	}
}

// TestEmailChangeOfAnInactiveAccount: an email change is not asked for by
// an account that is disabled, disabled in the session's tenant, or of a
// suspended tenant (403 user_disabled, as a second factor's enrolment and
// a password change are refused), whose bearer a proxy that has not yet
// heard of the change still forwards: whoever held it would have a link
// mailed to an address of theirs, refused while the account is disabled
// but ready to move it the moment it is active again. No link is made,
// nothing is mailed, audited or counted against the user's email changes;
// once active, the change is asked for.
func TestEmailChangeOfAnInactiveAccount(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "inactive-move@example.com")
	audits := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.email_change_requested'`)
	// More refusals than the hourly limit of changes: none counts.
	for range 2 {
		for _, tc := range inactiveStates() {
			x.exec(t, tc.off, a.c.Sub)
			r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "elsewhere@example.net"})
			wantProblem(t, r, http.StatusForbidden, problem.CodeUserDisabled)
			x.exec(t, tc.on, a.c.Sub)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = 'elsewhere@example.net'`, a.c.Sub); n != 0 {
		t.Fatalf("%d links to the new address after the refusals", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE to_address = 'elsewhere@example.net'`); n != 0 {
		t.Fatalf("%d mails to the new address after the refusals", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.email_change_requested'`); n != audits {
		t.Errorf("%d email_change_requested events, want %d", n, audits)
	}
	// Active again: the change is asked for.
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "elsewhere@example.net"}), http.StatusAccepted)
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = 'elsewhere@example.net'`, a.c.Sub); n != 1 {
		t.Fatalf("%d links to the new address once active, want 1", n)
	}
}

// TestEmailChangeWithAMovedSession: an email change is not asked for with
// an access token of the tenant its session has since switched away from
// (401 invalid_token, as a second factor's enrolment is refused): the
// session is no longer the one the token was issued for. No link is made;
// the token of the switch asks for it.
func TestEmailChangeWithAMovedSession(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "moved-move@example.com")
	second := x.SeedTenant(t, "Second")
	x.SeedMember(t, second.ID, a.c.Sub, "member")
	r := x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": a.tok.RefreshToken})
	wantStatus(t, r, http.StatusOK)
	var sw tokens
	r.JSON(t, &sw)
	after := x.identity(t, claimsOf(t, sw.AccessToken))

	r = x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "elsewhere@example.net"})
	wantProblem(t, r, http.StatusUnauthorized, problem.CodeInvalidToken)
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = 'elsewhere@example.net'`, a.c.Sub); n != 0 {
		t.Fatalf("%d links to the new address after the refusal", n)
	}
	wantStatus(t, x.Send(t, &after, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "elsewhere@example.net"}), http.StatusAccepted)
}

// TestEmailChangeFromAnEndedSession: an email change asked for with the
// access token of a session that has ended (signed out, or revoked where
// a proxy has not yet heard of it) is answered 401 invalid_token, as
// every other account route answers it, whatever the age of its sign-in:
// the session is checked before the sign-in's age, which an ended
// session never has recent (it was answered 401
// insufficient_user_authentication, asking for a sign-in that would not
// help the token). No link is made.
func TestEmailChangeFromAnEndedSession(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	for _, end := range []struct {
		name, email string
		end         func(t *testing.T, a *account)
	}{
		{"signed out", "ended-out@example.com", func(t *testing.T, a *account) {
			wantStatus(t, x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/logout", nil), http.StatusNoContent)
		}},
		{"revoked, sign-in old", "ended-revoked@example.com", func(t *testing.T, a *account) {
			x.exec(t, `UPDATE sessions SET revoked_at = now(), auth_time = now() - interval '1 hour' WHERE id = $1`, a.id.SessionID)
		}},
	} {
		t.Run(end.name, func(t *testing.T) {
			a := x.signup(t, end.email)
			end.end(t, &a)
			r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "elsewhere@example.net"})
			wantProblem(t, r, http.StatusUnauthorized, problem.CodeInvalidToken)
			if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
				t.Errorf("WWW-Authenticate = %q, want error=\"invalid_token\"", got)
			}
			if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = 'elsewhere@example.net'`, a.c.Sub); n != 0 {
				t.Fatalf("%d links after the refusal", n)
			}
		})
	}
}

// TestResendWithAMovedOrEndedSession: a verification link is not mailed
// again (POST /auth/verify-email/resend) with an access token of the
// tenant its session has since switched away from, nor of a session that
// has ended (401 invalid_token, as the email change itself is refused):
// the session is no longer the one the token was issued for. No link is
// made or mailed; the token of the switch has it mailed.
func TestResendWithAMovedOrEndedSession(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "moved-resend@example.com")
	const pending = "moved-resend-new@example.net"
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": pending}), http.StatusAccepted)
	second := x.SeedTenant(t, "Second")
	x.SeedMember(t, second.ID, a.c.Sub, "member")
	r := x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": a.tok.RefreshToken})
	wantStatus(t, r, http.StatusOK)
	var sw tokens
	r.JSON(t, &sw)
	after := x.identity(t, claimsOf(t, sw.AccessToken))
	const qLinks = `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = $2`
	links := x.count(t, qLinks, a.c.Sub, pending)

	wantProblem(t, x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil), http.StatusUnauthorized, problem.CodeInvalidToken)
	if n := x.count(t, qLinks, a.c.Sub, pending); n != links {
		t.Fatalf("%d links to the pending address after the refusal, want %d", n, links)
	}
	wantStatus(t, x.Send(t, &after, http.MethodPost, "/api/v1/auth/verify-email/resend", nil), http.StatusAccepted)

	// Ended: the session's row revoked (a sign-out a proxy has not yet
	// heard of).
	x.exec(t, `UPDATE sessions SET revoked_at = now() WHERE id = $1`, after.SessionID)
	links = x.count(t, qLinks, a.c.Sub, pending)
	wantProblem(t, x.Send(t, &after, http.MethodPost, "/api/v1/auth/verify-email/resend", nil), http.StatusUnauthorized, problem.CodeInvalidToken)
	if n := x.count(t, qLinks, a.c.Sub, pending); n != links {
		t.Fatalf("%d links to the pending address after the refusal of an ended session, want %d", n, links)
	}
}
