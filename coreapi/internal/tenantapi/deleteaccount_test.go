package tenantapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

func execSQL(t *testing.T, e *apitest.Env, q string, args ...any) {
	t.Helper()
	if _, err := e.DB.Pool.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func countSQL(t *testing.T, e *apitest.Env, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.DB.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// TestDeleteMyAccount: DELETE /users/me/account deletes the caller's
// account in one transaction: its row (the address is free again), sessions, API keys
// (each revoked, audited and announced first), memberships, linked
// identities, second factor and queued mails that carry a token; it is
// audited as user.deleted in each of its tenants, with the events it
// caused before keeping it as their actor, announced on the user's
// invalidation subject, and confirmed to the verified address. The
// invitations it sent stay the tenant's. Nobody else changes.
func TestDeleteMyAccount(t *testing.T) {
	e := start(t, apitest.Options{})
	ta, tb := e.SeedTenant(t, "A"), e.SeedTenant(t, "B")
	e.SeedUserIn(t, ta.ID, "owner@a.test", "owner")
	other := e.SeedUserIn(t, ta.ID, "other@a.test", "member")
	me := e.SeedUserIn(t, ta.ID, "Leaving@a.test", "admin")
	// The only member of B, and its owner: B has nobody else to hand over to.
	e.SeedMember(t, tb.ID, me.UserID, "owner")
	e.SeedSession(t, me.UserID, tb.ID)
	execSQL(t, e, `UPDATE users SET email_verified_at = now() WHERE id = $1`, me.UserID)
	execSQL(t, e, `INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, secret_hash)
VALUES ('aaaaaaaaaaaaaaaa', $1, $2, 'personal', 'mine', decode(repeat('00', 32), 'hex')),
       ('bbbbbbbbbbbbbbbb', $1, $2, 'tenant', 'made', decode(repeat('01', 32), 'hex')),
       ('cccccccccccccccc', $1, $3, 'personal', 'theirs', decode(repeat('02', 32), 'hex'))`, ta.ID, me.UserID, other.UserID)
	execSQL(t, e, `INSERT INTO identities (user_id, provider, subject, email) VALUES ($1, 'fake', 'sub-1', 'leaving@a.test')`, me.UserID)
	execSQL(t, e, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status) VALUES ($1, 'k', '\x00', 'pending')`, me.UserID)
	execSQL(t, e, `INSERT INTO mail_queue (kind, to_address, token) VALUES ('password_reset', 'leaving@a.test', 'raw'), ('password_reset', 'other@a.test', 'raw2')`)
	execSQL(t, e, `INSERT INTO invitations (tenant_id, email, roles, token_hash, invited_by, expires_at)
VALUES ($1, 'friend@a.test', '{member}', decode(repeat('03', 32), 'hex'), $2, now() + interval '1 day')`, ta.ID, me.UserID)
	execSQL(t, e, `INSERT INTO audit_events (tenant_id, actor_user_id, action, target_type) VALUES ($1, $2, 'tenant.updated', 'tenant')`, ta.ID, me.UserID)

	apitest.WantStatus(t, e.Send(t, &me, http.MethodDelete, "/api/v1/users/me/account", nil), http.StatusNoContent)

	for _, c := range []struct {
		what, q string
		want    int
	}{
		{"user row", `SELECT count(*) FROM users WHERE id = $1`, 0},
		{"sessions", `SELECT count(*) FROM sessions WHERE user_id = $1`, 0},
		{"api keys", `SELECT count(*) FROM api_keys WHERE user_id = $1`, 0},
		{"memberships", `SELECT count(*) FROM memberships WHERE user_id = $1`, 0},
		{"identities", `SELECT count(*) FROM identities WHERE user_id = $1`, 0},
		{"factor", `SELECT count(*) FROM mfa_totp WHERE user_id = $1`, 0},
		{"user.deleted events", `SELECT count(*) FROM audit_events WHERE action = 'user.deleted' AND target_id = $1 AND actor_user_id::text = $1 AND data->>'by' = 'self'`, 2},
		{"events it caused before, actor kept", `SELECT count(*) FROM audit_events WHERE action = 'tenant.updated' AND actor_user_id = $1`, 1},
		{"key revocations audited", `SELECT count(*) FROM audit_events WHERE action = 'api_key.revoked' AND actor_user_id = $1 AND data->>'via' = 'user.deleted'`, 2},
		{"invalidation", `SELECT count(*) FROM outbox WHERE subject = 'auth.invalidate.user.' || $1 AND payload->>'reason' = 'user.deleted'`, 1},
		{"invitation it sent, kept", `SELECT count(*) FROM invitations WHERE email = 'friend@a.test' AND status = 'pending' AND invited_by IS NULL AND $1::text <> ''`, 1},
	} {
		if n := countSQL(t, e, c.q, me.UserID); n != c.want {
			t.Errorf("%s: %d, want %d", c.what, n, c.want)
		}
	}
	if n := countSQL(t, e, `SELECT count(DISTINCT tenant_id) FROM audit_events WHERE action = 'user.deleted'`); n != 2 {
		t.Errorf("user.deleted in %d tenants, want 2", n)
	}
	if n := countSQL(t, e, `SELECT count(*) FROM outbox WHERE subject LIKE 'auth.invalidate.apikey.%'`); n != 2 {
		t.Errorf("%d key invalidations, want 2", n)
	}
	if n := countSQL(t, e, `SELECT count(*) FROM mail_queue WHERE lower(to_address) = 'leaving@a.test' AND token IS NOT NULL`); n != 0 {
		t.Errorf("%d mails with a token left to the address, want 0", n)
	}
	if n := countSQL(t, e, `SELECT count(*) FROM mail_queue WHERE to_address = 'Leaving@a.test' AND kind = 'account_deleted' AND token IS NULL`); n != 1 {
		t.Errorf("%d confirmations, want 1", n)
	}
	// Nobody else changed.
	if n := countSQL(t, e, `SELECT (SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL)
 + (SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL)
 + (SELECT count(*) FROM mail_queue WHERE to_address = 'other@a.test' AND token IS NOT NULL)`, other.UserID); n != 3 {
		t.Errorf("the other member: %d keys, sessions and mails, want 3", n)
	}
	if n := countSQL(t, e, `SELECT count(*) FROM tenants WHERE id IN ($1, $2)`, ta.ID, tb.ID); n != 2 {
		t.Errorf("%d tenants left, want both", n)
	}
	// The address is free: an account can be made with it again.
	e.SeedUser(t, "leaving@a.test", "")
}

// TestDeleteMyAccountSoleOwner: an account that is the last active owner
// of a tenant with other members is not deleted (409 sole_owner, naming the
// tenant): the tenant would be left with nobody to administer it. Once
// another owner is named, it is.
func TestDeleteMyAccountSoleOwner(t *testing.T) {
	e := start(t, apitest.Options{})
	ta := e.SeedTenant(t, "Acme")
	me := e.SeedUserIn(t, ta.ID, "boss@acme.test", "owner")
	m := e.SeedUserIn(t, ta.ID, "staff@acme.test", "member")
	r := e.Send(t, &me, http.MethodDelete, "/api/v1/users/me/account", nil)
	apitest.WantProblem(t, r, http.StatusConflict, problem.CodeSoleOwner)
	if p := r.Problem(t); !strings.Contains(p.Detail, ta.ID) || !strings.Contains(p.Detail, "Acme") {
		t.Errorf("detail %q does not name the tenant", p.Detail)
	}
	if n := countSQL(t, e, `SELECT (SELECT count(*) FROM users WHERE id = $1) + (SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL)
 + (SELECT count(*) FROM outbox) + (SELECT count(*) FROM audit_events WHERE action = 'user.deleted')`, me.UserID); n != 2 {
		t.Fatalf("refused, yet %d rows of account, sessions, outbox and audit, want 2", n)
	}
	// A disabled owner does not count as the other owner.
	x := e.SeedUserIn(t, ta.ID, "gone@acme.test", "owner")
	execSQL(t, e, `UPDATE memberships SET status = 'disabled' WHERE user_id = $1`, x.UserID)
	apitest.WantProblem(t, e.Send(t, &me, http.MethodDelete, "/api/v1/users/me/account", nil), http.StatusConflict, problem.CodeSoleOwner)
	execSQL(t, e, `INSERT INTO membership_roles (tenant_id, user_id, role_id) SELECT $1, $2, id FROM roles WHERE tenant_id = $1 AND name = 'owner'`, ta.ID, m.UserID)
	apitest.WantStatus(t, e.Send(t, &me, http.MethodDelete, "/api/v1/users/me/account", nil), http.StatusNoContent)
}

// TestDeleteMyAccountGuards: DELETE /users/me/account needs what the other
// changes of a person's sign-in need: a sign-in within 5 minutes, with the second
// factor for an account that has one, a session still bound to the
// token's tenant, an active account; API keys and service accounts are
// refused (403 principal_not_allowed). Each refusal deletes nothing.
func TestDeleteMyAccountGuards(t *testing.T) {
	e := start(t, apitest.Options{})
	ta := e.SeedTenant(t, "Acme")
	me := e.SeedUserIn(t, ta.ID, "careful@acme.test", "member")
	del := func(as *identity.Identity) apitest.Response {
		return e.Send(t, as, http.MethodDelete, "/api/v1/users/me/account", nil)
	}
	for _, p := range []string{identity.PrincipalAPIKey, identity.PrincipalService} {
		key := me
		key.Principal = p
		apitest.WantProblem(t, del(&key), http.StatusForbidden, problem.CodePrincipalNotAllowed)
	}
	execSQL(t, e, `UPDATE sessions SET auth_time = now() - interval '10 minutes' WHERE id = $1`, me.SessionID)
	r := del(&me)
	apitest.WantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, "max_age=300") {
		t.Errorf("WWW-Authenticate = %q, want max_age=300", got)
	}
	execSQL(t, e, `UPDATE sessions SET auth_time = now() WHERE id = $1`, me.SessionID)

	execSQL(t, e, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, me.UserID)
	r = del(&me)
	apitest.WantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `acr_values="mfa"`) {
		t.Errorf("WWW-Authenticate = %q, want acr_values=\"mfa\"", got)
	}
	execSQL(t, e, `DELETE FROM mfa_totp WHERE user_id = $1`, me.UserID)

	execSQL(t, e, `UPDATE users SET status = 'disabled' WHERE id = $1`, me.UserID)
	apitest.WantProblem(t, del(&me), http.StatusForbidden, problem.CodeUserDisabled)
	execSQL(t, e, `UPDATE users SET status = 'active' WHERE id = $1`, me.UserID)

	// The session signed out: answered as ended, not as one to step up,
	// which it never could.
	execSQL(t, e, `UPDATE sessions SET revoked_at = now() WHERE id = $1`, me.SessionID)
	apitest.WantProblem(t, del(&me), http.StatusUnauthorized, problem.CodeInvalidToken)
	execSQL(t, e, `UPDATE sessions SET revoked_at = NULL WHERE id = $1`, me.SessionID)

	// The session moved to another tenant than the token's.
	tb := e.SeedTenant(t, "Second")
	e.SeedMember(t, tb.ID, me.UserID, "member")
	execSQL(t, e, `UPDATE sessions SET tenant_id = $2 WHERE id = $1`, me.SessionID, tb.ID)
	apitest.WantProblem(t, del(&me), http.StatusUnauthorized, problem.CodeInvalidToken)

	if n := countSQL(t, e, `SELECT count(*) FROM users WHERE id = $1`, me.UserID); n != 1 {
		t.Fatalf("the account is gone after refusals")
	}
	if n := countSQL(t, e, `SELECT count(*) FROM outbox`); n != 0 {
		t.Fatalf("%d outbox rows after refusals, want 0", n)
	}
	me.SessionID = e.SeedSession(t, me.UserID, ta.ID)
	apitest.WantStatus(t, del(&me), http.StatusNoContent)
}

// TestDeleteMyAccountDropsItsPendingEmailChange: the verification link of
// an email change the account had asked for (PATCH /users/me {email}) is
// queued to the new address, not the account's: the deletion drops that
// mail too (it kept it, and sent it after the erasure, the new address
// and a raw token of the erased account in the queue until then). Mails
// of others to that address stay: another account's email change to the
// same address (its token is another account's action token), and a mail
// whose token is no action token at all.
func TestDeleteMyAccountDropsItsPendingEmailChange(t *testing.T) {
	e := start(t, apitest.Options{})
	ta := e.SeedTenant(t, "A")
	me := e.SeedUserIn(t, ta.ID, "moving@a.test", "member")
	other := e.SeedUserIn(t, ta.ID, "also-moving@a.test", "member")
	for _, who := range []*identity.Identity{&me, &other} {
		apitest.WantStatus(t, e.Send(t, who, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "moved@b.test"}), http.StatusAccepted)
	}
	if n := countSQL(t, e, `SELECT count(*) FROM mail_queue WHERE to_address = 'moved@b.test' AND token IS NOT NULL`); n != 2 {
		t.Fatalf("%d verification mails to the new address, want 2", n)
	}
	execSQL(t, e, `INSERT INTO mail_queue (kind, to_address, token) VALUES ('verify_email', 'moved@b.test', 'someone-else')`)

	apitest.WantStatus(t, e.Send(t, &me, http.MethodDelete, "/api/v1/users/me/account", nil), http.StatusNoContent)

	const ofUser = `SELECT count(*) FROM mail_queue m WHERE m.to_address = 'moved@b.test' AND EXISTS (
  SELECT 1 FROM action_tokens t WHERE t.user_id = $1 AND t.token_hash = sha256(convert_to(m.token, 'UTF8')))`
	if n := countSQL(t, e, `SELECT count(*) FROM mail_queue WHERE to_address = 'moved@b.test'`); n != 2 {
		t.Errorf("%d mails to the address left, want 2 (the deleted account's email change gone)", n)
	}
	if n := countSQL(t, e, ofUser, other.UserID); n != 1 {
		t.Errorf("%d mails of the other account's email change to the address, want 1 (kept)", n)
	}
	if n := countSQL(t, e, `SELECT count(*) FROM mail_queue WHERE to_address = 'moved@b.test' AND token = 'someone-else'`); n != 1 {
		t.Errorf("%d mails of others to the address, want 1", n)
	}
}

// TestDeleteMyAccountUnderTheMFAPolicy: a member of a tenant that requires
// a second factor, who has none (the proxy lets DELETE /users/me/account
// through its mfa_enrollment_required gate), deletes their account with
// the proof the route asks of anyone without a factor: a sign-in within
// DeleteMaxAge (401 insufficient_user_authentication, max_age=300 and no
// acr_values, when older), without enrolling one.
func TestDeleteMyAccountUnderTheMFAPolicy(t *testing.T) {
	e := start(t, apitest.Options{})
	ta := e.SeedTenant(t, "Strict")
	e.SeedUserIn(t, ta.ID, "owner@strict.test", "owner")
	me := e.SeedUserIn(t, ta.ID, "confined@strict.test", "member")
	execSQL(t, e, `UPDATE tenants SET require_mfa = true WHERE id = $1`, ta.ID)
	del := func() apitest.Response {
		return e.Send(t, &me, http.MethodDelete, "/api/v1/users/me/account", nil)
	}
	execSQL(t, e, `UPDATE sessions SET auth_time = now() - interval '10 minutes' WHERE id = $1`, me.SessionID)
	r := del()
	apitest.WantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, "max_age=300") || strings.Contains(got, "acr_values") {
		t.Errorf("WWW-Authenticate = %q, want max_age=300 and no acr_values", got)
	}
	execSQL(t, e, `UPDATE sessions SET auth_time = now() WHERE id = $1`, me.SessionID)
	apitest.WantStatus(t, del(), http.StatusNoContent)
	if n := countSQL(t, e, `SELECT count(*) FROM users WHERE id = $1`, me.UserID); n != 0 {
		t.Fatalf("the account is still there")
	}
}
