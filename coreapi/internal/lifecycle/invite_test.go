package lifecycle_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/argon2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

type invitation struct {
	ID     string   `json:"id"`
	Email  string   `json:"email"`
	Roles  []string `json:"roles"`
	Status string   `json:"status"`
}

func (x *env) invite(t *testing.T, as identity.Identity, email string, roles ...string) invitation {
	t.Helper()
	body := map[string]any{"email": email}
	if roles != nil {
		body["roles"] = roles
	}
	r := x.Send(t, &as, http.MethodPost, "/api/v1/invitations", body)
	wantStatus(t, r, http.StatusCreated)
	var inv invitation
	r.JSON(t, &inv)
	return inv
}

func (x *env) accept(t *testing.T, as *identity.Identity, body map[string]string) (tokens, int, string) {
	t.Helper()
	r := x.Send(t, as, http.MethodPost, "/api/v1/invitations/accept", body)
	if r.Status != http.StatusOK {
		return tokens{}, r.Status, r.Problem(t).Code
	}
	var tk tokens
	r.JSON(t, &tk)
	return tk, r.Status, ""
}

func (x *env) isMember(t *testing.T, tenantID, email string) bool {
	return x.count(t, `SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND lower(u.email) = lower($2)`, tenantID, email) == 1
}

func TestInviteNewAddress(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	inv := x.invite(t, owner.id, "newbie@example.com", "admin")
	if inv.Status != "pending" || inv.Email != "newbie@example.com" || len(inv.Roles) != 1 || inv.Roles[0] != "admin" {
		t.Fatalf("invitation = %+v", inv)
	}
	if x.isMember(t, owner.c.Tid, "newbie@example.com") {
		t.Fatal("inviting added somebody")
	}
	m := x.mail(t, "newbie@example.com", "T of owner@acme.test")
	if !strings.Contains(m.Raw, "http://localhost:8080/accept-invitation?token=") {
		t.Fatalf("no accept link:\n%s", m.Raw)
	}
	// A new address needs a password for its account.
	if _, st, code := x.accept(t, nil, map[string]string{"token": m.Token()}); st != 422 || code != problem.CodeValidation {
		t.Errorf("accept without a password: %d %s", st, code)
	}
	// A name that shows as none is no name.
	if _, st, code := x.accept(t, nil, map[string]string{"token": m.Token(), "password": "newbie's password", "display_name": "\u200b\u0301"}); st != 422 || code != problem.CodeValidation {
		t.Errorf("accept with an invisible display name: %d %s", st, code)
	}
	tk, st, code := x.accept(t, nil, map[string]string{"token": m.Token(), "password": "newbie's password", "display_name": "Newbie"})
	if st != 200 {
		t.Fatalf("accept: %d %s", st, code)
	}
	c := claimsOf(t, tk.AccessToken)
	if tk.TenantID != owner.c.Tid || c.Tid != owner.c.Tid {
		t.Errorf("tokens for tenant %s, want the inviting %s", tk.TenantID, owner.c.Tid)
	}
	id := x.identity(t, c)
	if got := x.me(t, account{id: id}); !got.EmailVerified || got.Email != "newbie@example.com" {
		t.Errorf("new account: %+v; want verified (the link proved the mailbox)", got)
	}
	if len(id.Roles) != 1 || id.Roles[0] != "admin" {
		t.Errorf("roles %v, want [admin]", id.Roles)
	}
	wantStatus(t, x.token(t, "newbie@example.com", "newbie's password"), 200)
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'invitation.accepted' AND tenant_id = $1`, owner.c.Tid); n != 1 {
		t.Errorf("accept audited %d times", n)
	}
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.UserSubject(c.Sub)); n != 1 {
		t.Errorf("%d invalidations for the new member", n)
	}
	// Used: a second accept fails.
	if _, st, code := x.accept(t, nil, map[string]string{"token": m.Token(), "password": "whatever long"}); st != 410 || code != problem.CodeInvitationNotActive {
		t.Errorf("second accept: %d %s", st, code)
	}
}

// The attack: an owner adds an existing account to their tenant. It is
// invited instead; only that account's owner can accept, with the link
// and its own credentials.
func TestInviteExistingAccountNeedsConsent(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	attacker := x.signup(t, "attacker@evil.test")
	victim := x.signup(t, "victim@example.com")
	x.flush(t)

	r := x.Send(t, &attacker.id, http.MethodPost, "/api/v1/users", map[string]string{"email": "victim@example.com"})
	wantStatus(t, r, http.StatusAccepted)
	for _, leak := range []string{victim.c.Sub, "D victim@example.com", "user_status", victim.c.Tid} {
		if strings.Contains(string(r.Body), leak) {
			t.Errorf("the answer leaks %q: %s", leak, r.Body)
		}
	}
	if x.isMember(t, attacker.c.Tid, "victim@example.com") {
		t.Fatal("the victim was attached without consent")
	}
	tl := x.Get(t, &victim.id, "/api/v1/users/me/tenants")
	if strings.Contains(string(tl.Body), attacker.c.Tid) {
		t.Errorf("the attacker's tenant is in the victim's list: %s", tl.Body)
	}
	// Same address invited twice.
	wantProblem(t, x.Send(t, &attacker.id, http.MethodPost, "/api/v1/invitations", map[string]string{"email": "VICTIM@example.com"}),
		http.StatusConflict, problem.CodeInvitationPending)

	tok := x.mail(t, "victim@example.com", "You are invited").Token()
	// Existing account, no credentials: refused.
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok}); st != 401 || code != problem.CodeAccountExists {
		t.Errorf("accept without credentials: %d %s", st, code)
	}
	// Wrong password: the sign-in answer (and it counts as a failure).
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "not the password"}); st != 400 || code != "invalid_grant" {
		t.Errorf("accept with a wrong password: %d %s", st, code)
	}
	// Somebody else's bearer: the invited address is not theirs.
	if _, st, code := x.accept(t, &attacker.id, map[string]string{"token": tok}); st != 403 || code != problem.CodeInvitationMismatch {
		t.Errorf("accept as another account: %d %s", st, code)
	}
	if x.isMember(t, attacker.c.Tid, "victim@example.com") {
		t.Fatal("a refused accept attached the victim")
	}
	// The victim, signed in, consents.
	tk, st, code := x.accept(t, &victim.id, map[string]string{"token": tok})
	if st != 200 || tk.TenantID != attacker.c.Tid {
		t.Fatalf("the victim's accept: %d %s tenant %s", st, code, tk.TenantID)
	}
	if !x.isMember(t, attacker.c.Tid, "victim@example.com") {
		t.Error("accepted but not a member")
	}
	if !x.me(t, victim).EmailVerified {
		t.Error("accepting through the mailed link did not verify the address")
	}
}

// TestInviteAcceptNeedsTheOwnersPassword: a tenant admin who created a
// member's account with a password of their choosing (POST /users) knows
// it; the account must not join another tenant while it holds that
// password, or the first tenant's admin could sign in to the second as the
// member. The member changes the password, then accepts.
func TestInviteAcceptNeedsTheOwnersPassword(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	first := x.signup(t, "first@acme.test")
	other := x.signup(t, "other@beta.test")
	const addr, adminPW = "hired@example.com", "the first admin's choice"
	wantStatus(t, x.Send(t, &first.id, http.MethodPost, "/api/v1/users", map[string]string{"email": addr, "password": adminPW}), http.StatusCreated)
	x.invite(t, other.id, addr)
	tok := x.mail(t, addr, "You are invited").Token()

	r := x.token(t, addr, adminPW) // the member, or the first tenant's admin
	wantStatus(t, r, http.StatusOK)
	var tk tokens
	r.JSON(t, &tk)
	member := x.identity(t, claimsOf(t, tk.AccessToken))
	for name, how := range map[string]struct {
		as   *identity.Identity
		body map[string]string
	}{
		"bearer":   {&member, map[string]string{"token": tok}},
		"password": {nil, map[string]string{"token": tok, "password": adminPW}},
	} {
		if _, st, code := x.accept(t, how.as, how.body); st != http.StatusConflict || code != problem.CodeAdminPasswordBeforeLinking {
			t.Errorf("accept with %s while the password is the admin's: %d %s", name, st, code)
		}
	}
	if x.isMember(t, other.c.Tid, addr) {
		t.Fatal("the account joined another tenant with the admin's password")
	}

	// A change proves only the current password, which the admin knows:
	// changed to another of the admin's, the account would join with a
	// password the admin keeps. It is still refused.
	r = x.Send(t, &member, http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": adminPW, "new_password": "the admin's second choice"})
	wantStatus(t, r, http.StatusOK)
	r.JSON(t, &tk)
	member = x.identity(t, claimsOf(t, tk.AccessToken))
	if _, st, code := x.accept(t, &member, map[string]string{"token": tok}); st != http.StatusConflict || code != problem.CodeAdminPasswordBeforeLinking {
		t.Fatalf("accept after a password change: %d %s, want 409 %s", st, code, problem.CodeAdminPasswordBeforeLinking)
	}
	// A reset proves the mailbox: the owner's.
	member = x.resetPassword(t, addr, "the member's own choice")
	if tk, st, code := x.accept(t, &member, map[string]string{"token": tok}); st != http.StatusOK || tk.TenantID != other.c.Tid {
		t.Fatalf("accept after the password reset: %d %s tenant %s", st, code, tk.TenantID)
	}
}

// resetPassword resets addr's password to pw through the mailed link, and
// returns the identity of a new sign-in with it (the reset ends every
// session).
func (x *env) resetPassword(t *testing.T, addr, pw string) identity.Identity {
	t.Helper()
	x.resetByMail(t, addr, pw)
	r := x.token(t, addr, pw)
	wantStatus(t, r, http.StatusOK)
	var tk tokens
	r.JSON(t, &tk)
	return x.identity(t, claimsOf(t, tk.AccessToken))
}

// TestMyInvitationsNeedTheOwnersPassword: an account whose password a
// tenant admin chose (POST /users with password) does not list the
// invitations sent to its address until its owner changes the password:
// the admin can sign in with it, and the list (other tenants' names, ids
// and the roles they offer) is no more theirs to read than those
// invitations are theirs to accept. The address was verified: the member
// used the link coreapi mailed them.
func TestMyInvitationsNeedTheOwnersPassword(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	first := x.signup(t, "first@acme.test")
	other := x.signup(t, "other@beta.test")
	const addr, adminPW = "hired@example.com", "the first admin's choice"
	wantStatus(t, x.Send(t, &first.id, http.MethodPost, "/api/v1/users", map[string]string{"email": addr, "password": adminPW}), http.StatusCreated)
	x.exec(t, `UPDATE users SET email_verified_at = now() WHERE lower(email) = $1`, addr)
	x.invite(t, other.id, addr)

	r := x.token(t, addr, adminPW) // the member, or the first tenant's admin
	wantStatus(t, r, http.StatusOK)
	var tk tokens
	r.JSON(t, &tk)
	member := x.identity(t, claimsOf(t, tk.AccessToken))
	r = x.Get(t, &member, "/api/v1/users/me/invitations")
	wantProblem(t, r, http.StatusConflict, problem.CodeAdminPasswordBeforeLinking)
	if strings.Contains(string(r.Body), other.c.Tid) || strings.Contains(string(r.Body), "beta") {
		t.Errorf("the refusal names the inviting tenant: %s", r.Body)
	}

	// A change proves only the current password, which the admin knows.
	r = x.Send(t, &member, http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": adminPW, "new_password": "the admin's second choice"})
	wantStatus(t, r, http.StatusOK)
	r.JSON(t, &tk)
	member = x.identity(t, claimsOf(t, tk.AccessToken))
	wantProblem(t, x.Get(t, &member, "/api/v1/users/me/invitations"), http.StatusConflict, problem.CodeAdminPasswordBeforeLinking)
	// A reset proves the mailbox: the owner's.
	member = x.resetPassword(t, addr, "the member's own choice")
	r = x.Get(t, &member, "/api/v1/users/me/invitations")
	wantStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.Body), other.c.Tid) {
		t.Errorf("after the password reset, the list lacks the invitation: %s", r.Body)
	}
}

func TestInviteAcceptWithPassword(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "own@acme.test")
	x.signup(t, "pat@example.com")
	x.invite(t, owner.id, "pat@example.com")
	tok := x.mail(t, "pat@example.com", "You are invited").Token()
	tk, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": pw})
	if st != 200 || tk.TenantID != owner.c.Tid {
		t.Fatalf("accept with the account's password: %d %s", st, code)
	}
	id := x.identity(t, claimsOf(t, tk.AccessToken))
	if len(id.Roles) != 1 || id.Roles[0] != "member" {
		t.Errorf("roles %v, want the default [member]", id.Roles)
	}
}

// TestInviteAcceptWithPasswordUpgradesPreNFKCHash: accepting an invitation
// with the password of an account whose hash was stored before passwords
// were normalized (it holds the password as typed, here with a decomposed
// é) replaces that hash with the NFKC form's, as a sign-in does, so the
// password's precomposed spelling signs in afterwards.
func TestInviteAcceptWithPasswordUpgradesPreNFKCHash(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "own@acme.test")
	x.signup(t, "pat@example.com")
	const typed, nfkc = "cafe\u0301 au lait 42", "caf\u00e9 au lait 42"
	salt := []byte("0123456789abcdef")
	b64 := base64.RawStdEncoding
	old := fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, cheap.Memory, cheap.Time, cheap.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(argon2.IDKey([]byte(typed), salt, cheap.Time, cheap.Memory, cheap.Threads, cheap.KeyLen)))
	x.exec(t, `UPDATE users SET password_hash = $1 WHERE email = 'pat@example.com'`, old)
	x.invite(t, owner.id, "pat@example.com")
	tok := x.mail(t, "pat@example.com", "You are invited").Token()
	if tk, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": typed}); st != 200 || tk.TenantID != owner.c.Tid {
		t.Fatalf("accept with the password as typed: %d %s", st, code)
	}
	var got string
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT password_hash FROM users WHERE email = 'pat@example.com'`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if m, err := x.hasher.Verify(context.Background(), typed, got); m != password.MatchNFKC || err != nil {
		t.Errorf("the hash after accepting verifies as %v, %v, want %v", m, err, password.MatchNFKC)
	}
	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "password", "email": "pat@example.com", "password": nfkc})
	if r.Status != http.StatusOK {
		t.Errorf("sign-in with the precomposed spelling after accepting: %d %s", r.Status, r.Body)
	}
}

// TestInviteAcceptWithPasswordNeedsTheSecondFactor: the password alone of
// an account with a second factor opens no session through an invitation
// (else whoever knows it, e.g. after resetting it from the mailbox, would
// get a session without the factor by inviting the address to a tenant of
// their own, then switch into the account's other tenants). The answer
// tells the client what to do instead: 401 insufficient_user_authentication
// with WWW-Authenticate acr_values="mfa" (sign in with the second factor,
// then accept with the bearer), and the page says so rather than asking
// for the password just given. Nothing is created, and the invitation
// stays usable for the account signed in.
func TestInviteAcceptWithPasswordNeedsTheSecondFactor(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	victim := x.signup(t, "victim@example.com")
	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, victim.c.Sub)
	if r := x.token(t, "victim@example.com", pw); r.Status != http.StatusUnauthorized || r.Problem(t).Code != "mfa_required" {
		t.Fatalf("password grant of an MFA user: %d %s, want 401 mfa_required", r.Status, r.Body)
	}
	other := x.signup(t, "other@evil.test")
	x.invite(t, other.id, "victim@example.com")
	tok := x.mail(t, "victim@example.com", "You are invited").Token()
	sessions := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, victim.c.Sub)
	r := x.Send(t, nil, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": tok, "password": pw})
	wantProblem(t, r, http.StatusUnauthorized, problem.CodeInsufficientUserAuthentication)
	if h := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer ") || !strings.Contains(h, `error="insufficient_user_authentication"`) ||
		!strings.Contains(h, `acr_values="mfa"`) {
		t.Errorf("WWW-Authenticate %q, want a bearer with insufficient_user_authentication and acr_values=\"mfa\"", h)
	}
	if p := r.Problem(t); !strings.Contains(p.Detail, "second factor") || !strings.Contains(p.Detail, "mfa_otp") {
		t.Errorf("detail %q does not say to sign in with the second factor", p.Detail)
	}
	// The page's form: back to the page, which says what to do.
	r = postForm(t, x, "/api/v1/invitations/accept", form("token", tok, "password", strings.ReplaceAll(pw, " ", "+")))
	loc := r.Header.Get("Location")
	if r.Status != http.StatusSeeOther || loc != "/accept-invitation?error=insufficient_user_authentication&token="+tok {
		t.Fatalf("accept form with the password of an MFA account: %d Location %q", r.Status, loc)
	}
	if page := string(x.Get(t, nil, loc).Body); !strings.Contains(page, "second factor") || strings.Contains(page, "enter its password") {
		t.Errorf("the page after the form:\n%s", page)
	}
	if x.isMember(t, other.c.Tid, "victim@example.com") {
		t.Error("the refused accept added the account to the tenant")
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, victim.c.Sub); n != sessions {
		t.Errorf("sessions of the account: %d, want %d (none opened)", n, sessions)
	}
	// A wrong password is still just that (no hint of the second factor).
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "not the password"}); st != http.StatusBadRequest || code != "invalid_grant" {
		t.Fatalf("accept with a wrong password: %d %s, want 400 invalid_grant", st, code)
	}
	// Signed in (the bearer's identity), the account accepts.
	if _, st, code := x.accept(t, &victim.id, map[string]string{"token": tok}); st != http.StatusOK {
		t.Fatalf("accept signed in: %d %s", st, code)
	}
	if !x.isMember(t, other.c.Tid, "victim@example.com") {
		t.Error("accepted signed in, but not a member")
	}
}

// TestInviteAcceptWithPasswordRacingReset: an invitation accepted with the
// account's old password while the owner resets it (the password checked
// before the reset commits, the account's row read after) must neither
// add the account to the tenant nor open a session the reset did not end:
// stamped with the token version read after the reset, that session
// outlived it. The reset (its first statements, as resetPassword runs
// them) is held uncommitted while the accept waits for the account's row.
func TestInviteAcceptWithPasswordRacingReset(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := t.Context()
	victim := x.signup(t, "victim@example.com")
	other := x.signup(t, "other@evil.test")
	x.invite(t, other.id, "victim@example.com")
	tok := x.mail(t, "victim@example.com", "You are invited").Token()
	newHash, err := x.hasher.Hash(ctx, "the owner's new password")
	if err != nil {
		t.Fatal(err)
	}
	reset, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reset.Rollback(context.Background()) }()
	if _, err := reset.Exec(ctx, `UPDATE users SET password_hash = $2, token_version = token_version + 1 WHERE id = $1`, victim.c.Sub, newHash); err != nil {
		t.Fatal(err)
	}
	if _, err := sessions.New(x.DB.Pool, time.Hour, 0).RevokeAll(ctx, reset, victim.c.Sub, "", "password_reset"); err != nil {
		t.Fatal(err)
	}
	got := x.acceptBehind(t, reset, map[string]string{"token": tok, "password": pw}) // the accept waits at the account's row
	if got.status == http.StatusOK {
		c := claimsOf(t, got.tk.AccessToken)
		var tv int64
		if err := x.DB.Pool.QueryRow(ctx, `SELECT token_version FROM users WHERE id = $1`, victim.c.Sub).Scan(&tv); err != nil {
			t.Fatal(err)
		}
		t.Errorf("accept with the password the reset replaced: 200, a session stamped tv %d (the account's is %d)", c.Tv, tv)
	} else if got.status != http.StatusBadRequest || got.code != problem.CodeInvalidGrant {
		t.Errorf("accept with the password the reset replaced: %d %s, want 400 %s", got.status, got.code, problem.CodeInvalidGrant)
	}
	if x.isMember(t, other.c.Tid, "victim@example.com") {
		t.Error("the old password added the account to the tenant")
	}
	// The invitation is still there for the owner, with the new password.
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "the owner's new password"}); st != http.StatusOK {
		t.Fatalf("accept with the new password: %d %s", st, code)
	}
}

// TestInviteAcceptWithPasswordRacingConfirmation: an invitation accepted
// with the account's password while its owner confirms a second factor
// (the password checked before the confirmation commits, the account's
// row read after) must neither add the account to the tenant nor open a
// session without the factor, which the confirmation's end of the other
// sessions never saw. The confirmation (its statements, as confirmTOTP
// runs them) is held uncommitted while the accept waits for the
// account's row.
func TestInviteAcceptWithPasswordRacingConfirmation(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := t.Context()
	victim := x.signup(t, "victim@example.com")
	other := x.signup(t, "other@evil.test")
	x.invite(t, other.id, "victim@example.com")
	tok := x.mail(t, "victim@example.com", "You are invited").Token()
	confirm, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = confirm.Rollback(context.Background()) }()
	if _, err := confirm.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE`, victim.c.Sub); err != nil {
		t.Fatal(err)
	}
	if _, err := confirm.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, victim.c.Sub); err != nil {
		t.Fatal(err)
	}
	if _, err := sessions.New(x.DB.Pool, time.Hour, 0).RevokeAll(ctx, confirm, victim.c.Sub, victim.c.Sid, sessions.ReasonMFAEnabled); err != nil {
		t.Fatal(err)
	}
	got := x.acceptBehind(t, confirm, map[string]string{"token": tok, "password": pw}) // the accept waits at the account's row
	if got.status == http.StatusOK {
		t.Errorf("accept with the password alone after the factor was confirmed: 200, a session of amr %v", claimsOf(t, got.tk.AccessToken).Amr)
	} else if got.status != http.StatusUnauthorized || got.code != problem.CodeInsufficientUserAuthentication {
		t.Errorf("accept with the password alone after the factor was confirmed: %d %s, want 401 %s", got.status, got.code, problem.CodeInsufficientUserAuthentication)
	}
	if x.isMember(t, other.c.Tid, "victim@example.com") {
		t.Error("the password alone added the account with a second factor to the tenant")
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND id <> $2`, victim.c.Sub, victim.c.Sid); n != 0 {
		t.Errorf("%d live sessions besides the confirming one, want 0", n)
	}
}

// TestInviteAcceptSignedInKeepsTheAuthentication: accepting signed in is
// no new authentication. The session it opens carries the bearer's
// session's methods and time (amr, auth_time), in its tokens and after a
// refresh: an account that signed in with its second factor two hours ago
// is neither stripped of it nor made to look as if it had signed in just
// now (a route's max_auth_age must not pass). A bearer whose session has
// ended since opens none.
func TestInviteAcceptSignedInKeepsTheAuthentication(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	victim := x.signup(t, "victim@example.com")
	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, victim.c.Sub)
	x.exec(t, `UPDATE sessions SET amr = '{pwd,otp}', auth_time = now() - interval '2 hours' WHERE id = $1`, victim.c.Sid)
	var signedIn int64
	if err := x.DB.Pool.QueryRow(t.Context(), `SELECT floor(extract(epoch FROM auth_time))::bigint FROM sessions WHERE id = $1`, victim.c.Sid).Scan(&signedIn); err != nil {
		t.Fatal(err)
	}
	other := x.signup(t, "other@example.com")
	x.invite(t, other.id, "victim@example.com")
	tok := x.mail(t, "victim@example.com", "You are invited").Token()

	// A bearer whose session ended since: nothing happens.
	ended := x.signup(t, "ended@example.com")
	x.invite(t, other.id, "ended@example.com")
	endedTok := x.mail(t, "ended@example.com", "You are invited").Token()
	x.exec(t, `UPDATE sessions SET revoked_at = now(), revoked_reason = 'logout' WHERE id = $1`, ended.c.Sid)
	if _, st, code := x.accept(t, &ended.id, map[string]string{"token": endedTok}); st != http.StatusUnauthorized || code != problem.CodeInvalidToken {
		t.Errorf("accept with the bearer of an ended session: %d %s, want 401 %s", st, code, problem.CodeInvalidToken)
	}
	if x.isMember(t, other.c.Tid, "ended@example.com") {
		t.Error("the bearer of an ended session joined")
	}

	tk, st, code := x.accept(t, &victim.id, map[string]string{"token": tok})
	if st != http.StatusOK {
		t.Fatalf("accept signed in: %d %s", st, code)
	}
	check := func(what string, c claims) {
		t.Helper()
		if c.Sid == victim.c.Sid {
			t.Fatalf("%s: the accept reused the bearer's session", what)
		}
		if !slices.Equal(c.Amr, []string{"pwd", "otp"}) || c.AuthTime != signedIn {
			t.Errorf("%s: amr %v auth_time %d, want the bearer's session's [pwd otp] %d", what, c.Amr, c.AuthTime, signedIn)
		}
	}
	check("accept", claimsOf(t, tk.AccessToken))
	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken})
	wantStatus(t, r, http.StatusOK)
	var rt tokens
	r.JSON(t, &rt)
	check("refresh of the accept's session", claimsOf(t, rt.AccessToken))
}

// TestInviteAcceptFormWithAnEndedSessionsBearer: an accept through a form
// (which opens no session) with the bearer of a session that has ended
// since (signed out, or ended by a password reset, and forwarded by a
// proxy that has not yet heard of it) joins nobody, as the API's accept
// with such a bearer does not: the form's never looked at the session,
// and the account joined the tenant and had its address marked proven on
// its say. A bearer whose session is live joins through the form.
func TestInviteAcceptFormWithAnEndedSessionsBearer(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	other := x.signup(t, "other@example.com")
	ended := x.signup(t, "ended@example.com")
	live := x.signup(t, "live@example.com")
	x.invite(t, other.id, "ended@example.com")
	x.invite(t, other.id, "live@example.com")
	endedTok := x.mail(t, "ended@example.com", "You are invited").Token()
	liveTok := x.mail(t, "live@example.com", "You are invited").Token()
	x.exec(t, `UPDATE sessions SET revoked_at = now(), revoked_reason = 'logout' WHERE id = $1`, ended.c.Sid)
	accept := func(as *identity.Identity, tok string) apitest.Response {
		t.Helper()
		r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/invitations/accept", As: as,
			Body: form("token", tok), ContentType: "application/x-www-form-urlencoded"})
		if r.Status != http.StatusSeeOther {
			t.Fatalf("accept form: %d %s, want 303", r.Status, r.Body)
		}
		return r
	}
	r := accept(&ended.id, endedTok)
	if loc := r.Header.Get("Location"); !strings.HasPrefix(loc, "/accept-invitation?error="+problem.CodeInvalidToken+"&") {
		t.Errorf("accept form with the bearer of an ended session: Location %q, want error=%s", loc, problem.CodeInvalidToken)
	}
	if x.isMember(t, other.c.Tid, "ended@example.com") {
		t.Error("the bearer of an ended session joined through the form")
	}
	r = accept(&live.id, liveTok)
	if loc := r.Header.Get("Location"); loc != "/accept-invitation?done=1" {
		t.Fatalf("accept form with a live bearer: Location %q", loc)
	}
	if !x.isMember(t, other.c.Tid, "live@example.com") {
		t.Error("a live bearer did not join through the form")
	}
}

// TestInviteAcceptRacingSignOut: the session an acceptance opens, signed
// out before its access token was signed (a sign-out everywhere, a
// password reset), gives no token: one issued after revoked_at would
// outlive the projection's revoked list. The answer is an ended
// session's; the account has joined.
func TestInviteAcceptRacingSignOut(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	for _, tc := range []struct {
		name string
		// setup invites email and returns the bearer (nil: none) and the
		// body that accept.
		setup func(t *testing.T, email string) (*identity.Identity, map[string]string)
	}{
		{"new account", func(t *testing.T, email string) (*identity.Identity, map[string]string) {
			x.invite(t, owner.id, email)
			return nil, map[string]string{"token": x.mail(t, email, "You are invited").Token(), "password": "a new account's password"}
		}},
		{"password", func(t *testing.T, email string) (*identity.Identity, map[string]string) {
			x.signup(t, email)
			x.invite(t, owner.id, email)
			return nil, map[string]string{"token": x.mail(t, email, "You are invited").Token(), "password": pw}
		}},
		{"bearer", func(t *testing.T, email string) (*identity.Identity, map[string]string) {
			a := x.signup(t, email)
			x.invite(t, owner.id, email)
			return &a.id, map[string]string{"token": x.mail(t, email, "You are invited").Token()}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			email := strings.ReplaceAll(tc.name, " ", "-") + "@example.com"
			as, body := tc.setup(t, email)
			revoked := make(chan string, 1)
			f := func(sessionID string) {
				select {
				case revoked <- sessionID:
				default:
				}
				const q = `UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = 'logout' WHERE id = $1`
				if _, err := x.DB.Pool.Exec(context.Background(), q, sessionID); err != nil {
					t.Error(err) // not Fatal: the hook runs in the server's goroutine
				}
			}
			x.beforeIssue.Store(&f)
			r := x.Send(t, as, http.MethodPost, "/api/v1/invitations/accept", body)
			x.beforeIssue.Store(nil)
			select {
			case <-revoked:
			default:
				t.Fatalf("no token was issued: %d %s", r.Status, r.Body)
			}
			if r.Status != http.StatusUnauthorized || r.Problem(t).Code != problem.CodeInvalidToken {
				t.Fatalf("accept whose session was signed out before the signing: %d %s, want 401 %s", r.Status, r.Body, problem.CodeInvalidToken)
			}
			if strings.Contains(string(r.Body), "access_token") {
				t.Errorf("answer carries an access token: %s", r.Body)
			}
			// The RFC 6750 challenge answers a bearer, and only a bearer.
			want := ""
			if as != nil {
				want = `Bearer error="invalid_token", error_description="the session has ended"`
			}
			if h := r.Header.Get("WWW-Authenticate"); h != want {
				t.Errorf("WWW-Authenticate %q, want %q", h, want)
			}
		})
	}
}

// TestInviteAcceptSignedInTakesTheTokensAuthentication: the session an
// acceptance with a bearer opens takes the authentication of the access
// token the request carries (as the proxy signs it), not the bearer's
// session's, which a step-up renews after the token was issued: a token
// of a sign-in ten minutes old, held by someone else while its owner
// stepped the session up, must not open a session that gave the second
// factor just now (a route's max_auth_age, the step-up routes).
func TestInviteAcceptSignedInTakesTheTokensAuthentication(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	victim := x.signup(t, "victim@example.com")
	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, victim.c.Sub)
	// The owner stepped the session up just now.
	x.exec(t, `UPDATE sessions SET amr = '{pwd,otp}', auth_time = now() WHERE id = $1`, victim.c.Sid)
	other := x.signup(t, "other@example.com")
	x.invite(t, other.id, "victim@example.com")
	tok := x.mail(t, "victim@example.com", "You are invited").Token()
	// The bearer: a token of the session issued before the step-up, of a
	// sign-in ten minutes ago with the password only.
	bearer := victim.id
	signedIn := time.Now().Add(-10 * time.Minute).Unix()
	bearer.AMR, bearer.AuthTime = []string{"pwd"}, signedIn
	tk, st, code := x.accept(t, &bearer, map[string]string{"token": tok})
	if st != http.StatusOK {
		t.Fatalf("accept signed in: %d %s", st, code)
	}
	c := claimsOf(t, tk.AccessToken)
	if !slices.Equal(c.Amr, []string{"pwd"}) || c.AuthTime != signedIn {
		t.Errorf("accept: amr %v auth_time %d, want the bearer token's [pwd] %d", c.Amr, c.AuthTime, signedIn)
	}
}

func TestInvitationLifecycle(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "boss@acme.test")
	first := x.invite(t, owner.id, "a1@example.com")
	x.invite(t, owner.id, "a2@example.com")
	x.invite(t, owner.id, "a3@example.com")

	t.Run("list pages", func(t *testing.T) {
		r := x.Get(t, &owner.id, "/api/v1/invitations?limit=2")
		wantStatus(t, r, 200)
		var page struct {
			Data       []invitation `json:"data"`
			NextCursor *string      `json:"next_cursor"`
		}
		r.JSON(t, &page)
		if len(page.Data) != 2 || page.NextCursor == nil || page.Data[0].ID != first.ID {
			t.Fatalf("first page = %+v", page)
		}
		r = x.Get(t, &owner.id, "/api/v1/invitations?limit=2&cursor="+*page.NextCursor)
		r.JSON(t, &page)
		if len(page.Data) != 1 || page.NextCursor != nil || page.Data[0].Email != "a3@example.com" {
			t.Errorf("second page = %+v", page)
		}
		wantProblem(t, x.Get(t, &owner.id, "/api/v1/invitations?cursor=forged"), 400, "invalid_cursor")
		for _, q := range []string{"limit=0", "limit=201", "limit=x", "include_total=maybe", "include_total=true"} {
			wantProblem(t, x.Get(t, &owner.id, "/api/v1/invitations?"+q), 400, "invalid_query")
		}
		wantNoTotal(t, x.Get(t, &owner.id, "/api/v1/invitations?include_total=true"))
		wantStatus(t, x.Get(t, &owner.id, "/api/v1/invitations?include_total=false"), 200)
	})

	t.Run("revoked before accept", func(t *testing.T) {
		tok := x.mail(t, "a1@example.com", "invited").Token()
		wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+first.ID, nil), http.StatusNoContent)
		if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != 410 || code != problem.CodeInvitationNotActive {
			t.Errorf("accept of a revoked invitation: %d %s", st, code)
		}
		wantProblem(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+first.ID, nil), 409, problem.CodeInvitationNotActive)
		wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+first.ID+"/resend", nil), 409, problem.CodeInvitationNotActive)
		if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'invitation.revoked'`); n != 1 {
			t.Errorf("revoke audited %d times", n)
		}
		// Revoked: the address can be invited again.
		x.invite(t, owner.id, "a1@example.com")
	})

	t.Run("resend replaces the link", func(t *testing.T) {
		old := x.mail(t, "a2@example.com", "invited").Token()
		var inv invitation
		r := x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+x.invitationID(t, "a2@example.com")+"/resend", nil)
		wantStatus(t, r, 200)
		r.JSON(t, &inv)
		x.flush(t)
		if n := x.mailsTo("a2@example.com"); n != 2 {
			t.Fatalf("%d mails after resend, want 2", n)
		}
		if _, st, code := x.accept(t, nil, map[string]string{"token": old, "password": "a long password"}); st != 400 || code != problem.CodeLinkInvalid {
			t.Errorf("accept with the replaced link: %d %s", st, code)
		}
		if _, st, code := x.accept(t, nil, map[string]string{"token": x.mail(t, "a2@example.com", "invited").Token(), "password": "a long password"}); st != 200 {
			t.Errorf("accept with the new link: %d %s", st, code)
		}
	})

	t.Run("expired", func(t *testing.T) {
		tok := x.mail(t, "a3@example.com", "invited").Token()
		x.exec(t, `UPDATE invitations SET expires_at = now() - interval '1 second' WHERE email = 'a3@example.com'`)
		if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != 410 || code != problem.CodeLinkExpired {
			t.Errorf("accept of an expired invitation: %d %s", st, code)
		}
		r := x.Get(t, &owner.id, "/api/v1/invitations?limit=200")
		if !strings.Contains(string(r.Body), `"expired"`) {
			t.Errorf("the expired invitation is not shown expired: %s", r.Body)
		}
		// An expired invitation does not block a new one, which marks it
		// expired; its link still says so, not that it was used.
		x.invite(t, owner.id, "a3@example.com")
		if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != 410 || code != problem.CodeLinkExpired {
			t.Errorf("accept of an expired invitation a new one replaced: %d %s, want 410 %s", st, code, problem.CodeLinkExpired)
		}
		if body := string(x.Get(t, nil, "/accept-invitation?token="+tok).Body); !strings.Contains(body, "has expired") {
			t.Errorf("the page of an expired invitation a new one replaced:\n%s", body)
		}
	})

	t.Run("tampered and unknown tokens", func(t *testing.T) {
		for _, tok := range []string{"nope", strings.Repeat("x", 300)} {
			if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != 400 || code != problem.CodeLinkInvalid {
				t.Errorf("accept(%.10q): %d %s", tok, st, code)
			}
		}
		if _, st, code := x.accept(t, nil, map[string]string{}); st != 422 || code != problem.CodeValidation {
			t.Errorf("accept without a token: %d %s", st, code)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		member := x.SeedUserIn(t, owner.c.Tid, "plain@acme.test", "member")
		admin := x.SeedUserIn(t, owner.c.Tid, "adm@acme.test", "admin")
		for _, tt := range []struct {
			name   string
			as     identity.Identity
			body   map[string]any
			status int
			code   string
		}{
			{"no users:write", member, map[string]any{"email": "z1@example.com"}, 403, problem.CodeInsufficientScope},
			{"roles above the inviter's", admin, map[string]any{"email": "z2@example.com", "roles": []string{"owner"}}, 403, problem.CodeForbidden},
			{"unknown role", owner.id, map[string]any{"email": "z3@example.com", "roles": []string{"wizard"}}, 422, problem.CodeValidation},
			{"bad role name", owner.id, map[string]any{"email": "z3@example.com", "roles": []string{"Bad Name"}}, 422, problem.CodeValidation},
			{"header injection", owner.id, map[string]any{"email": "z4@example.com\r\nBcc: evil@example.com"}, 422, problem.CodeValidation},
			{"two addresses", owner.id, map[string]any{"email": "z5@example.com, evil@example.com"}, 422, problem.CodeValidation},
			{"already a member", owner.id, map[string]any{"email": "plain@acme.test"}, 409, "already_member"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				wantProblem(t, x.Send(t, &tt.as, http.MethodPost, "/api/v1/invitations", tt.body), tt.status, tt.code)
			})
		}
		wantProblem(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/00000000-0000-0000-0000-000000000001", nil), 404, problem.CodeNotFound)
		// Another tenant's admin cannot see or touch these.
		other := x.signup(t, "else@other.test")
		wantProblem(t, x.Send(t, &other.id, http.MethodPost, "/api/v1/invitations/"+x.invitationID(t, "a3@example.com")+"/resend", nil), 404, problem.CodeNotFound)
	})
}

// keepPending puts invitation id back to pending after POST /users added
// its address as a member, which withdraws it: the state a member whose
// address changed to an invited one leaves (and an earlier release's POST
// /users left), which these tests start from.
func (x *env) keepPending(t *testing.T, id string) {
	t.Helper()
	x.exec(t, `UPDATE invitations SET status = 'pending' WHERE id = $1`, id)
}

func (x *env) invitationID(t *testing.T, email string) string {
	t.Helper()
	var id string
	if err := x.DB.Pool.QueryRow(t.Context(), `SELECT id::text FROM invitations WHERE email = $1 AND status = 'pending'`, email).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// Roles are checked again at accept: an inviter demoted meanwhile can no
// longer hand out what the invitation names.
func TestInviteRolesRecheckedAtAccept(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	admin := x.SeedUserIn(t, owner.c.Tid, "adm@acme.test", "admin")
	x.invite(t, admin, "newadmin@example.com", "admin")
	// Mailed first: a queued mail whose inviter was demoted is dropped
	// (TestQueuedMailOfADeadLinkIsNotSent).
	tok := x.mail(t, "newadmin@example.com", "invited").Token()
	x.exec(t, `DELETE FROM membership_roles mr USING roles r WHERE mr.role_id = r.id AND mr.user_id = $1 AND r.name = 'admin'`, admin.UserID)
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != 403 || code != problem.CodeForbidden {
		t.Errorf("accept after the inviter was demoted: %d %s", st, code)
	}
	if x.isMember(t, owner.c.Tid, "newadmin@example.com") {
		t.Error("joined anyway")
	}
}

// TestAcceptRacingRoleEscalation: an invitation accepted while an owner's
// change adds to its role a permission the inviting admin does not hold.
// The accept checked the role's permissions unlocked, then waited on the
// role's row for its foreign key until the change committed, and the
// invitee joined with tenant:write from an admin who never held it. The
// role is now locked as it is checked: the accept waits for the change
// and is refused, as it is once the change has committed.
func TestAcceptRacingRoleEscalation(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := t.Context()
	owner := x.signup(t, "o@acme.test")
	admin := x.SeedUserIn(t, owner.c.Tid, "adm@acme.test", "admin")
	r := x.Send(t, &owner.id, http.MethodPost, "/api/v1/roles", map[string]any{"name": "ops", "permissions": []string{"audit:read"}})
	wantStatus(t, r, http.StatusCreated)
	var ops struct{ ID string }
	r.JSON(t, &ops)
	x.invite(t, admin, "newbie@example.com", "ops")
	tok := x.mail(t, "newbie@example.com", "invited").Token()
	// The owner's PATCH in flight: the role locked and changed, not yet
	// committed.
	hold, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(context.Background())
	if _, err := hold.Exec(ctx, `SELECT 1 FROM roles WHERE id = $1 FOR UPDATE`, ops.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `UPDATE roles SET permissions = '{audit:read,tenant:write}' WHERE id = $1`, ops.ID); err != nil {
		t.Fatal(err)
	}
	if got := x.acceptBehind(t, hold, map[string]string{"token": tok, "password": "a long password"}); got.status != 403 || got.code != problem.CodeForbidden {
		t.Errorf("accept of a role that now carries tenant:write: %d %s, want 403 %s", got.status, got.code, problem.CodeForbidden)
	}
	if x.isMember(t, owner.c.Tid, "newbie@example.com") {
		t.Error("joined anyway")
	}
}

// Withdrawing or resending an invitation needs every permission its roles
// grant, as making it did: an admin can neither cancel an owner's
// invitation of another owner nor keep it alive past its expiry with a
// new link. An invitation within the caller's own permissions is theirs to
// withdraw or resend.
func TestRevokeAndResendNeedTheInvitationsPermissions(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	admin := x.SeedUserIn(t, owner.c.Tid, "adm@acme.test", "admin")
	boss := x.invite(t, owner.id, "boss@example.com", "owner")
	helper := x.invite(t, owner.id, "helper@example.com", "admin")
	x.flush(t)
	audited := x.count(t, `SELECT count(*) FROM audit_events`)

	wantProblem(t, x.Send(t, &admin, http.MethodPost, "/api/v1/invitations/"+boss.ID+"/resend", nil), 403, problem.CodeForbidden)
	wantProblem(t, x.Send(t, &admin, http.MethodDelete, "/api/v1/invitations/"+boss.ID, nil), 403, problem.CodeForbidden)
	x.flush(t)
	if n := x.mailsTo("boss@example.com"); n != 1 {
		t.Errorf("%d mails to the owner's invitee, want 1 (no resend)", n)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE id = $1 AND status = 'pending'`, boss.ID); n != 1 {
		t.Error("the owner's invitation is no longer pending")
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events`); n != audited {
		t.Errorf("refused changes wrote %d audit rows", n-audited)
	}

	wantStatus(t, x.Send(t, &admin, http.MethodPost, "/api/v1/invitations/"+helper.ID+"/resend", nil), http.StatusOK)
	wantStatus(t, x.Send(t, &admin, http.MethodDelete, "/api/v1/invitations/"+helper.ID, nil), http.StatusNoContent)
	wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+boss.ID+"/resend", nil), http.StatusOK)
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+boss.ID, nil), http.StatusNoContent)
}

// TestResendToAMemberRefused: resending an invitation to an address that
// has become a member's since it was sent (added with POST /users, or a
// member's address changed to it) is 409 already_member, as inviting that
// address is, and writes, mails and audits nothing: the link it would mail
// could only be refused at accept. The resend mailed a new link to the
// member all the same.
func TestResendToAMemberRefused(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	const addr = "eve@example.com"
	inv := x.invite(t, owner.id, addr)
	wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]string{"email": addr}), http.StatusCreated)
	x.keepPending(t, inv.ID)
	wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]string{"email": addr}), http.StatusConflict, problem.CodeAlreadyMember)
	x.flush(t)
	mails := x.mailsTo(addr)
	audited := x.count(t, `SELECT count(*) FROM audit_events`)
	var hash []byte
	if err := x.DB.Pool.QueryRow(t.Context(), `SELECT token_hash FROM invitations WHERE id = $1`, inv.ID).Scan(&hash); err != nil {
		t.Fatal(err)
	}

	wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil), http.StatusConflict, problem.CodeAlreadyMember)
	x.flush(t)
	if n := x.mailsTo(addr); n != mails {
		t.Errorf("%d mails to the member after the refused resend, want %d", n, mails)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events`); n != audited {
		t.Errorf("the refused resend wrote %d audit rows", n-audited)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE id = $1 AND status = 'pending' AND token_hash = $2`, inv.ID, hash); n != 1 {
		t.Error("the refused resend changed the invitation")
	}
}

func TestMyInvitations(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	me := x.signup(t, "me@example.com")
	x.invite(t, owner.id, "me@example.com")
	// Unverified: someone who signed up with another's address must not
	// read that person's invitations.
	wantProblem(t, x.Get(t, &me.id, "/api/v1/users/me/invitations"), 403, problem.CodeEmailUnverified)
	x.exec(t, `UPDATE users SET email_verified_at = now() WHERE id = $1`, me.c.Sub)
	r := x.Get(t, &me.id, "/api/v1/users/me/invitations")
	wantStatus(t, r, 200)
	var list struct {
		Data []struct {
			TenantID   string `json:"tenant_id"`
			TenantName string `json:"tenant_name"`
		} `json:"data"`
	}
	r.JSON(t, &list)
	if len(list.Data) != 1 || list.Data[0].TenantID != owner.c.Tid || list.Data[0].TenantName != "T of o@acme.test" {
		t.Errorf("my invitations = %+v", list)
	}
}

// TestMyInvitationsPages: an address invited by more tenants than a page
// holds sees every invitation, page by page (newest first, ties on the
// creation time broken by id), with no repeat or gap when invitations come
// and go between pages; cursors are the caller's own.
func TestMyInvitationsPages(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	me := x.signup(t, "many@example.com")
	other := x.signup(t, "other@example.com")
	x.exec(t, `UPDATE users SET email_verified_at = now() WHERE id = ANY($1::uuid[])`, []string{me.c.Sub, other.c.Sub})
	// 105 tenants invite the address, three at each instant, each by an
	// admin who may still send the invitation (the list shows only what
	// an accept would take).
	inviter := x.SeedUser(t, "inviter@example.com", "")
	x.exec(t, `INSERT INTO tenants (name) SELECT 'Inviter ' || g FROM generate_series(1, 105) g`)
	x.exec(t, `INSERT INTO roles (tenant_id, name, builtin) SELECT t.id, n, true FROM tenants t, unnest('{admin,member}'::text[]) n
		WHERE t.name LIKE 'Inviter %'`)
	x.exec(t, `INSERT INTO memberships (tenant_id, user_id) SELECT id, $1 FROM tenants WHERE name LIKE 'Inviter %'`, inviter)
	x.exec(t, `INSERT INTO membership_roles (tenant_id, user_id, role_id) SELECT r.tenant_id, $1, r.id FROM roles r
		JOIN tenants t ON t.id = r.tenant_id WHERE t.name LIKE 'Inviter %' AND r.name = 'admin'`, inviter)
	x.exec(t, `
INSERT INTO invitations (tenant_id, email, roles, token_hash, invited_by, expires_at, created_at)
SELECT id, 'many@example.com', '{member}', decode(md5(id::text), 'hex'), $1, now() + interval '1 day',
       timestamptz '2026-01-01 00:00:00Z' + (split_part(name, ' ', 2)::int / 3) * interval '1 second'
FROM tenants WHERE name LIKE 'Inviter %'`, inviter)
	type page struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
		NextCursor *string `json:"next_cursor"`
	}
	var firstCursor string
	seen := map[string]bool{}
	path := "/api/v1/users/me/invitations?limit=7"
	for pages := 0; ; pages++ {
		if pages > 30 {
			t.Fatal("no last page")
		}
		r := x.Get(t, &me.id, path)
		wantStatus(t, r, http.StatusOK)
		var p page
		r.JSON(t, &p)
		if p.NextCursor != nil && len(p.Data) != 7 {
			t.Fatalf("page %d holds %d invitations, want 7", pages, len(p.Data))
		}
		for _, inv := range p.Data {
			if seen[inv.ID] {
				t.Errorf("invitation %s listed twice", inv.ID)
			}
			seen[inv.ID] = true
		}
		if pages == 1 {
			// Between pages: a newer invitation (it belongs before the
			// cursor, so on no later page) and a withdrawn one.
			late := x.SeedTenant(t, "Latecomer")
			x.SeedMember(t, late.ID, inviter, "admin")
			x.exec(t, `INSERT INTO invitations (tenant_id, email, roles, token_hash, invited_by, expires_at)
				VALUES ($1::uuid, 'many@example.com', '{member}', decode(md5($1::text), 'hex'), $2, now() + interval '1 day')`, late.ID, inviter)
			x.exec(t, `UPDATE invitations SET status = 'revoked' WHERE id = (
  SELECT id FROM invitations WHERE status = 'pending' ORDER BY created_at, id LIMIT 1)`)
		}
		if p.NextCursor == nil {
			break
		}
		if firstCursor == "" {
			firstCursor = *p.NextCursor
		}
		path = "/api/v1/users/me/invitations?limit=7&cursor=" + url.QueryEscape(*p.NextCursor)
	}
	// The oldest was withdrawn before its page came: every other seeded
	// one, and nothing else, was listed.
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE status = 'pending' AND created_at < '2026-06-01' AND NOT id = ANY($1::uuid[])`, idsOf(seen)); n != 0 || len(seen) != 104 {
		t.Errorf("listed %d invitations, %d pending ones missing; want the 104 still pending", len(seen), n)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE id = ANY($1::uuid[]) AND created_at > '2026-06-01'`, idsOf(seen)); n != 0 {
		t.Errorf("the invitation made between pages was listed on a later page")
	}
	wantProblem(t, x.Get(t, &other.id, "/api/v1/users/me/invitations?cursor="+url.QueryEscape(firstCursor)), http.StatusBadRequest, problem.CodeInvalidCursor)
	wantProblem(t, x.Get(t, &me.id, "/api/v1/users/me/invitations?limit=201"), http.StatusBadRequest, problem.CodeInvalidQuery)
	wantNoTotal(t, x.Get(t, &me.id, "/api/v1/users/me/invitations?include_total=1"))
}

// wantNoTotal checks the answer of a list without a total to
// include_total=true: 400 invalid_query naming the parameter.
func wantNoTotal(t *testing.T, r apitest.Response) {
	t.Helper()
	wantProblem(t, r, http.StatusBadRequest, problem.CodeInvalidQuery)
	if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "include_total" || !strings.Contains(p.Errors[0].Message, "no total") {
		t.Errorf("errors = %+v, want include_total: this list has no total", p.Errors)
	}
}

func idsOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// CR/LF in a tenant name and a display name (both chosen by users) never
// reach a mail header: refused when sent, and a name stored before they
// were (written here directly) is still kept out of the headers.
func TestInvitationHeaderInjection(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup", map[string]string{"email": "inj@example.com", "password": pw,
		"tenant_name": "Acme\r\nBcc: evil@example.com", "display_name": "Ann\r\nX-Evil: 1"})
	wantProblem(t, r, http.StatusUnprocessableEntity, "validation_failed")
	r = x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup", map[string]string{"email": "inj@example.com", "password": pw,
		"tenant_name": "Acme", "display_name": "Ann"})
	wantStatus(t, r, http.StatusCreated)
	var tk tokens
	r.JSON(t, &tk)
	owner := x.identity(t, claimsOf(t, tk.AccessToken))
	x.exec(t, `UPDATE tenants SET name = $2 WHERE id = $1`, owner.TenantID, "Acme\r\nBcc: evil@example.com")
	x.exec(t, `UPDATE users SET display_name = $2 WHERE id = $1`, owner.UserID, "Ann\r\nX-Evil: 1")
	x.invite(t, owner, "target@example.com")
	m := x.mail(t, "target@example.com", "Acme")
	if len(m.Rcpt) != 1 || m.Header.Get("Bcc") != "" || m.Header.Get("X-Evil") != "" || strings.ContainsAny(m.Subject, "\r\n") {
		t.Errorf("injected into the invitation mail: rcpt %v subject %q headers %v", m.Rcpt, m.Subject, m.Header)
	}
	for _, got := range x.smtp.Messages() {
		for _, rc := range got.Rcpt {
			if strings.Contains(rc, "evil") {
				t.Errorf("a mail went to %s", rc)
			}
		}
	}
}

// billingCatalog declares a permission beyond the built-in ones, held by
// owner and admin (every catalog permission) but by no custom role unless
// given.
const billingCatalog = `permissions:
  - name: billing:admin
    description: Manage billing
`

// An invitation's built-in roles grant what the live catalog gives them,
// so an inviter must hold that, at invite and again at accept: a custom
// role holding every built-in permission but billing:admin cannot hand out
// owner or admin (which hold billing:admin).
func TestInviteChecksTheCatalogsPermissions(t *testing.T) {
	t.Parallel()
	cat, err := permissions.Parse([]byte(billingCatalog), "test")
	if err != nil {
		t.Fatal(err)
	}
	x := startWith(t, lifecycle.Limits{}, cat)
	owner := x.signup(t, "owner@acme.test")
	tid := owner.c.Tid
	wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/roles",
		map[string]any{"name": "deputy", "permissions": permissions.Builtin().Names()}), http.StatusCreated)
	deputy := x.SeedUserIn(t, tid, "deputy@acme.test", "deputy")
	if slices.Contains(deputy.Permissions, "billing:admin") || !slices.Contains(deputy.Permissions, "users:write") {
		t.Fatalf("deputy holds %v", deputy.Permissions)
	}

	for _, role := range []string{"owner", "admin"} {
		wantProblem(t, x.Send(t, &deputy, http.MethodPost, "/api/v1/invitations",
			map[string]any{"email": role + "@example.com", "roles": []string{role}}), http.StatusForbidden, problem.CodeForbidden)
		if n := x.count(t, `SELECT count(*) FROM invitations WHERE tenant_id = $1`, tid); n != 0 {
			t.Fatalf("a refused invitation was stored (%d)", n)
		}
		// Adding an existing account invites it: the same check.
		wantProblem(t, x.Send(t, &deputy, http.MethodPost, "/api/v1/users",
			map[string]any{"email": "owner@acme.test", "roles": []string{role}}), http.StatusForbidden, problem.CodeForbidden)
	}
	x.invite(t, deputy, "plain@example.com", "member")

	// An admin invites as admin, then is made a deputy: the accept is
	// refused, since the inviter no longer holds billing:admin.
	admin := x.SeedUserIn(t, tid, "admin@acme.test", "admin")
	x.invite(t, admin, "second@example.com", "admin")
	tok := x.mail(t, "second@example.com", "You are invited").Token() // before the demotion, which drops a queued mail
	wantStatus(t, x.Send(t, &owner.id, http.MethodPut, "/api/v1/users/"+admin.UserID+"/roles/deputy", nil), http.StatusOK)
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+admin.UserID+"/roles/admin", nil), http.StatusOK)
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "second's password"}); st != 403 || code != problem.CodeForbidden {
		t.Fatalf("accept of a demoted inviter's admin invitation: %d %s", st, code)
	}
	if x.isMember(t, tid, "second@example.com") {
		t.Fatal("the refused accept added a member")
	}
	// The owner, who holds billing:admin, can invite an admin, who can
	// accept.
	x.invite(t, owner.id, "third@example.com", "admin")
	tok = x.mail(t, "third@example.com", "You are invited").Token()
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "third's password"}); st != 200 {
		t.Fatalf("accept of the owner's invitation: %d %s", st, code)
	}
}

// An invitation into a tenant suspended since it was sent is not accepted:
// the operator's suspension admits nobody and opens no session there (the
// password grant and the hand-over refuse such a tenant too). The
// invitation stays pending for after a reactivation.
func TestInviteAcceptRefusedInSuspendedTenant(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "own@acme.test")
	x.signup(t, "pat@example.com")
	x.invite(t, owner.id, "pat@example.com")
	x.invite(t, owner.id, "newbie@example.com")
	patTok := x.mail(t, "pat@example.com", "You are invited").Token()
	newTok := x.mail(t, "newbie@example.com", "You are invited").Token()
	x.exec(t, `UPDATE tenants SET status = 'suspended' WHERE id = $1`, owner.c.Tid)
	for _, c := range []struct {
		name, email string
		body        map[string]string
	}{
		{"existing account", "pat@example.com", map[string]string{"token": patTok, "password": pw}},
		{"new account", "newbie@example.com", map[string]string{"token": newTok, "password": "a long password"}},
	} {
		if _, st, code := x.accept(t, nil, c.body); st != http.StatusForbidden || code != problem.CodeForbidden {
			t.Errorf("%s: accept into a suspended tenant: %d %s, want 403 forbidden", c.name, st, code)
		}
		if x.isMember(t, owner.c.Tid, c.email) {
			t.Errorf("%s: joined the suspended tenant", c.name)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE tenant_id = $1 AND user_id <> $2`, owner.c.Tid, owner.c.Sub); n != 0 {
		t.Errorf("%d sessions opened in the suspended tenant", n)
	}
	if n := x.count(t, `SELECT count(*) FROM users WHERE lower(email) = 'newbie@example.com'`); n != 0 {
		t.Errorf("an account was created for the refused accept")
	}
	x.exec(t, `UPDATE tenants SET status = 'active' WHERE id = $1`, owner.c.Tid)
	if _, st, code := x.accept(t, nil, map[string]string{"token": patTok, "password": pw}); st != http.StatusOK {
		t.Fatalf("accept after the reactivation: %d %s", st, code)
	}
}

// TestRemovedMemberSessionsStayEnded: the sessions a member had in a
// tenant end with the removal and stay ended if they are added again (as
// their API keys do): a refresh token taken from their device before the
// removal must not come back to life with a later invitation.
func TestRemovedMemberSessionsStayEnded(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "own@rejoin.test")
	x.signup(t, "ron@example.com")
	x.invite(t, owner.id, "ron@example.com")
	tk, st, code := x.accept(t, nil, map[string]string{"token": x.mail(t, "ron@example.com", "You are invited").Token(), "password": pw})
	if st != http.StatusOK {
		t.Fatalf("accept: %d %s", st, code)
	}
	c := claimsOf(t, tk.AccessToken)
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+c.Sub, nil), http.StatusNoContent)
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, c.Sid); n != 0 {
		t.Error("the removed member's session in the tenant is still live")
	}

	// Added again (the member consents once more).
	x.invite(t, owner.id, "ron@example.com")
	if _, st, code := x.accept(t, nil, map[string]string{"token": x.mail(t, "ron@example.com", "You are invited").Token(), "password": pw}); st != http.StatusOK {
		t.Fatalf("accept again: %d %s", st, code)
	}
	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken})
	wantProblem(t, r, http.StatusBadRequest, "invalid_grant")
	if p := x.projection(t, account{c: c}); !p.SessionRevoked(c.Sid) {
		t.Error("the projection does not list the ended session as revoked")
	}
}

// TestInvitationMailsLimited: each invitation and each resend mails the
// address, and anyone can sign up and own a tenant; a tenant could mail
// one address without end (resend after resend, or withdraw and invite
// again, through POST /invitations or POST /users). Now a tenant sends an
// address at most invitations.Limits.Mail invitation mails per window, then
// gets 429 with Retry-After and nothing is written or mailed; another
// tenant's invitations to the address are not held back.
func TestInvitationMailsLimited(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	x.signup(t, "victim@example.com") // an account: POST /users invites it
	inv := x.invite(t, owner.id, "victim@example.com")
	// Each mail is sent before the next: a resend drops the mail of the
	// link it replaces while it is still queued.
	x.flush(t)
	resend := func() apitest.Response {
		return x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil)
	}
	for range invitations.DefaultLimits().Mail.N - 1 {
		wantStatus(t, resend(), http.StatusOK)
		x.flush(t)
	}
	wantRefused := func(r apitest.Response) {
		t.Helper()
		wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After")
		}
	}
	wantRefused(resend())
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+inv.ID, nil), http.StatusNoContent)
	wantRefused(x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "victim@example.com"}))
	wantRefused(x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]any{"email": "Victim@Example.com"}))
	// A subaddress is the same inbox: no fresh budget.
	wantRefused(x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "victim+1@example.com"}))
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE lower(email) = 'victim+1@example.com'`); n != 0 {
		t.Fatalf("an invitation to a subaddress of a limited inbox was written")
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'invitation' AND lower(to_address) = 'victim@example.com'`); n != invitations.DefaultLimits().Mail.N {
		t.Fatalf("%d invitation mails queued, want %d", n, invitations.DefaultLimits().Mail.N)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE lower(email) = 'victim@example.com' AND status = 'pending'`); n != 0 {
		t.Fatalf("%d pending invitations after the refusals", n)
	}
	other := x.signup(t, "owner@bravo.test")
	x.invite(t, other.id, "victim@example.com")
}

// TestInvitationMailsPerInboxLimited: Limits.Mail bounds the invitation
// mails one tenant sends to an address, but anyone can sign up, without
// proving an address, and own a tenant: each tenant signed up was a fresh
// budget for one mailbox, so accounts signed up at the sign-up limit's
// pace mailed it more invitations every hour, without bound. Now the
// invitation mails to one inbox (mail.Inbox: a "+tag" is no other inbox),
// over every tenant, stop at invitations.Limits.InboxMail per window: the
// next gets 429 with Retry-After and nothing is written or mailed;
// another inbox is not held back.
func TestInvitationMailsPerInboxLimited(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	n := invitations.DefaultLimits().InboxMail.N
	var last account
	wantLimited(t, n, func(i int) apitest.Response {
		last = x.signup(t, fmt.Sprintf("owner%d@spam.test", i))
		return x.Send(t, &last.id, http.MethodPost, "/api/v1/invitations", map[string]any{"email": fmt.Sprintf("victim+%d@example.com", i)})
	})
	if got := x.count(t, `SELECT count(*) FROM invitations WHERE email LIKE 'victim+%@example.com'`); got != n {
		t.Fatalf("%d invitations to one inbox, want %d (nothing written past the limit)", got, n)
	}
	if got := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'invitation' AND to_address LIKE 'victim+%@example.com'`); got != n {
		t.Fatalf("%d invitation mails to one inbox, want %d", got, n)
	}
	x.invite(t, last.id, "someone@example.com")
}

// TestNewMembersPerInboxLimited: a tenant's POST /users of a new account
// mails a verification link to an address nobody there has proven, and
// each "+tag" of one inbox is a new account: those mails count against
// the inbox's limit over every account (onetime.AddressMailLimit), as an
// email change's do, not only against the tenant's.
func TestNewMembersPerInboxLimited(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@tags.test")
	n := onetime.AddressMailLimit().N
	wantLimited(t, n, func(i int) apitest.Response {
		return x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]any{"email": fmt.Sprintf("victim+%d@example.org", i)})
	})
	if got := x.count(t, `SELECT count(*) FROM users WHERE email LIKE 'victim+%@example.org'`); got != n {
		t.Fatalf("%d accounts made, want %d (nothing written past the limit)", got, n)
	}
	if got := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'verify_email' AND to_address LIKE 'victim+%@example.org'`); got != n {
		t.Fatalf("%d verification mails to one inbox, want %d", got, n)
	}
	// Another inbox is not held back.
	wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]any{"email": "someone@example.org"}), http.StatusCreated)
}

// TestTenantMailsLimited: Limits.Mail bounds one address, but a tenant
// (anyone can sign up and own one) could mail any number of addresses of
// its choosing, an invitation or a new account's verification mail each,
// its own name in every one. Now the mails a tenant causes, over every
// address together, stop at invitations.Limits.TenantMail per window: the
// next invitation, resend or POST /users of a new account gets 429 with
// Retry-After and the tenant's limit named, and nothing is written or
// mailed; another tenant is not held back, and a refused request does not
// count.
func TestTenantMailsLimited(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{Invitations: invitations.Limits{TenantMail: ratelimit.Limit{N: 3, Window: time.Hour}}})

	owner := x.signup(t, "owner@spam.test")
	tenant := owner.id.TenantID
	queued := func() int {
		return x.count(t, `SELECT count(*) FROM mail_queue WHERE kind IN ('invitation', 'verify_email') AND to_address <> 'owner@spam.test'`)
	}
	inv := x.invite(t, owner.id, "a@example.com")
	x.invite(t, owner.id, "b@example.com")
	// A new account created by the tenant: its verification mail counts.
	wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]any{"email": "c@example.com"}), http.StatusCreated)
	if n := queued(); n != 3 {
		t.Fatalf("%d mails queued before the limit, want 3", n)
	}
	wantRefused := func(r apitest.Response) {
		t.Helper()
		wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After")
		}
		if d := r.Problem(t).Detail; !strings.Contains(d, "TENANT_MAILS_PER_HOUR") {
			t.Errorf("detail %q does not name the tenant's limit", d)
		}
	}
	wantRefused(x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "d@example.com"}))
	wantRefused(x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil))
	wantRefused(x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]any{"email": "e@example.com"}))
	if n := queued(); n != 3 {
		t.Fatalf("%d mails queued after the refusals, want 3", n)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE tenant_id = $1 AND lower(email) = 'd@example.com'`, tenant); n != 0 {
		t.Fatalf("a refused invitation was written")
	}
	if n := x.count(t, `SELECT count(*) FROM users WHERE lower(email) = 'e@example.com'`); n != 0 {
		t.Fatalf("a refused account was written")
	}
	// The refusals did not count: a server on the same database with a
	// limit one higher lets one more through, and no other.
	y := startOpts(t, startOptions{limits: lifecycle.Limits{Invitations: invitations.Limits{TenantMail: ratelimit.Limit{N: 4, Window: time.Hour}}},
		hasher: x.hasher, db: x.DB})
	wantStatus(t, y.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "d@example.com"}), http.StatusCreated)
	wantRefused(y.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "f@example.com"}))
	wantRefused(x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "f@example.com"}))

	other := x.signup(t, "owner@bravo.test")
	x.invite(t, other.id, "a@example.com")
}

// TestRemovalWithdrawsPendingInvitations: an address can become a member
// while an invitation to it is pending (an admin invites it, then adds it
// with POST /users, or a member changes their address to an invited one).
// That invitation's link must not outlive the member's removal: kept
// pending, it let the removed member join again, with its roles, with no
// one inviting them anew. The removal withdraws it, audited as such.
func TestRemovalWithdrawsPendingInvitations(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := t.Context()
	owner := x.signup(t, "own@removal.test")
	const addr = "eve@example.com"
	inv := x.invite(t, owner.id, addr, "admin")
	tok := x.mail(t, addr, "You are invited").Token()
	r := x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]string{"email": addr})
	wantStatus(t, r, http.StatusCreated)
	x.keepPending(t, inv.ID)
	var eve struct{ ID string }
	r.JSON(t, &eve)
	// Eve chooses her password (as a reset from her mailbox would set it).
	h, err := x.hasher.Hash(ctx, pw)
	if err != nil {
		t.Fatal(err)
	}
	x.exec(t, `UPDATE users SET password_hash = $2, password_set_by_admin = false WHERE id = $1`, eve.ID, h)
	// A pending invitation to another address stays.
	other := x.invite(t, owner.id, "someone-else@example.com")

	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+eve.ID, nil), http.StatusNoContent)
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusGone || code != problem.CodeInvitationNotActive {
		t.Errorf("the removed member accepts the invitation pending before: %d %s, want 410 %s", st, code, problem.CodeInvitationNotActive)
	}
	if x.isMember(t, owner.c.Tid, addr) {
		t.Fatal("the removed member joined again")
	}
	status := func(id string) string {
		var s string
		if err := x.DB.Pool.QueryRow(ctx, `SELECT status FROM invitations WHERE id = $1`, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := status(inv.ID); s != invitations.StatusRevoked {
		t.Errorf("the removed member's invitation is %s, want %s", s, invitations.StatusRevoked)
	}
	if s := status(other.ID); s != invitations.StatusPending {
		t.Errorf("another address's invitation is %s, want %s", s, invitations.StatusPending)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'invitation.revoked' AND target_id = $2
		AND actor_user_id = $3 AND data->>'via' = 'member.removed'`, owner.c.Tid, inv.ID, owner.c.Sub); n != 1 {
		t.Errorf("audit rows of the withdrawal: %d, want 1", n)
	}
	// Invited anew, the address joins again.
	x.invite(t, owner.id, addr)
	if _, st, code := x.accept(t, nil, map[string]string{"token": x.mail(t, addr, "You are invited").Token(), "password": pw}); st != http.StatusOK {
		t.Fatalf("accept of a new invitation: %d %s", st, code)
	}
}

// TestRemovalWithdrawsInvitationsToAnAddressLeft: a member who changes
// their address away from one a pending invitation of their tenant is
// addressed to leaves that invitation behind, matched by no address of a
// member. The removal withdrew only the invitations to the member's
// current address, so the removed member, who still reads the mailbox
// they left, accepted the invitation with it (as a new account) and was a
// member again, with its roles. Moving away from the address withdraws
// the tenant's invitations to it, audited as such.
func TestRemovalWithdrawsInvitationsToAnAddressLeft(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := t.Context()
	owner := x.signup(t, "own@left.test")
	const addr, moved = "eve@example.com", "eve.elsewhere@example.com"
	inv := x.invite(t, owner.id, addr, "admin")
	tok := x.mail(t, addr, "You are invited").Token()
	r := x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]string{"email": addr})
	wantStatus(t, r, http.StatusCreated)
	x.keepPending(t, inv.ID)
	var eve struct{ ID string }
	r.JSON(t, &eve)
	h, err := x.hasher.Hash(ctx, pw)
	if err != nil {
		t.Fatal(err)
	}
	x.exec(t, `UPDATE users SET password_hash = $2, password_set_by_admin = false WHERE id = $1`, eve.ID, h)
	// Another tenant's invitation to the address left stays: it is not
	// the member's to end.
	other := x.signup(t, "own@other.test")
	kept := x.invite(t, other.id, addr)

	// Eve signs in and moves her account to another address.
	r = x.token(t, addr, pw)
	wantStatus(t, r, http.StatusOK)
	var et tokens
	r.JSON(t, &et)
	eveID := x.identity(t, claimsOf(t, et.AccessToken))
	wantStatus(t, x.Send(t, &eveID, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": moved}), http.StatusAccepted)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email",
		map[string]string{"token": x.mail(t, moved, "Confirm").Token(), "password": pw}), http.StatusOK)

	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+eve.ID, nil), http.StatusNoContent)
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusGone || code != problem.CodeInvitationNotActive {
		t.Errorf("the removed member accepts the invitation to the address she left: %d %s, want 410 %s", st, code, problem.CodeInvitationNotActive)
	}
	if x.isMember(t, owner.c.Tid, addr) {
		t.Fatal("the removed member joined again through the address she left")
	}
	status := func(id string) string {
		var s string
		if err := x.DB.Pool.QueryRow(ctx, `SELECT status FROM invitations WHERE id = $1`, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := status(inv.ID); s != invitations.StatusRevoked {
		t.Errorf("the invitation to the address left is %s, want %s", s, invitations.StatusRevoked)
	}
	if s := status(kept.ID); s != invitations.StatusPending {
		t.Errorf("another tenant's invitation to the address is %s, want %s", s, invitations.StatusPending)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'invitation.revoked' AND target_id = $2
		AND actor_user_id = $3 AND data->>'via' = 'user.email_changed'`, owner.c.Tid, inv.ID, eve.ID); n != 1 {
		t.Errorf("audit rows of the withdrawal: %d, want 1", n)
	}
}

// TestAcceptNeedsAnInviterWhoMayStillInvite: an invitation is accepted
// only while whoever sent it may still send it: an active member holding
// users:write, as well as every permission its roles grant. The accept
// checked the roles' permissions alone, so an admin removed from the
// tenant (or left without users:write) who had invited an address of
// their own to a role granting nothing (one with no permissions, or one
// deleted since: the invitee joins without it) came back as a member,
// able to reach the tenant's app routes that need no permission.
func TestAcceptNeedsAnInviterWhoMayStillInvite(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	tid := owner.c.Tid
	for _, tc := range []struct {
		name string
		// role is the role invited to; demote takes users:write from the
		// admin after the invitation was sent.
		role   string
		demote func(t *testing.T, admin identity.Identity, role string)
	}{
		{"role granting nothing, inviter removed", "guest", func(t *testing.T, admin identity.Identity, _ string) {
			wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+admin.UserID, nil), http.StatusNoContent)
		}},
		{"role deleted since, inviter removed", "temp", func(t *testing.T, admin identity.Identity, role string) {
			var id string
			if err := x.DB.Pool.QueryRow(t.Context(), `SELECT id::text FROM roles WHERE tenant_id = $1 AND name = $2`, tid, role).Scan(&id); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/roles/"+id, nil), http.StatusNoContent)
			wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+admin.UserID, nil), http.StatusNoContent)
		}},
		{"member role, inviter kept tenant:read only", "member", func(t *testing.T, admin identity.Identity, _ string) {
			wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+admin.UserID+"/roles/admin", nil), http.StatusOK)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.role + "-alt@example.com"
			admin := x.SeedUserIn(t, tid, "adm-"+tc.role+"@acme.test", "admin", "member")
			if tc.role != "member" {
				r := x.Send(t, &admin, http.MethodPost, "/api/v1/roles", map[string]any{"name": tc.role, "permissions": []string{}})
				wantStatus(t, r, http.StatusCreated)
			}
			x.invite(t, admin, addr, tc.role)
			tok := x.mail(t, addr, "invited").Token()
			tc.demote(t, admin, tc.role)
			if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != http.StatusForbidden || code != problem.CodeForbidden {
				t.Errorf("accept: %d %s, want 403 %s", st, code, problem.CodeForbidden)
			}
			if x.isMember(t, tid, addr) {
				t.Error("joined anyway")
			}
		})
	}
	// An inviter who still may: the invitation is accepted.
	admin := x.SeedUserIn(t, tid, "adm-kept@acme.test", "admin")
	x.invite(t, admin, "kept@example.com")
	if _, st, code := x.accept(t, nil, map[string]string{"token": x.mail(t, "kept@example.com", "invited").Token(), "password": "a long password"}); st != http.StatusOK {
		t.Fatalf("accept: %d %s, want 200", st, code)
	}
}

// TestAcceptNeedsAnInviterTheMFAPolicyLeavesTheirRights: once the tenant
// requires a second factor, an inviter without one holds nothing there
// (the proxy confines them to enrolling one, and a new invitation or a
// resend of theirs is refused), so an invitation they sent before the
// policy is not accepted either. The accept read the inviter's roles
// whatever the policy said, and the invitee joined as an admin on the say
// of a member who could send nothing. One sent by an inviter with a
// factor is accepted as before.
func TestAcceptNeedsAnInviterTheMFAPolicyLeavesTheirRights(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	tid := owner.c.Tid
	stale := x.SeedUserIn(t, tid, "nofactor@acme.test", "admin")
	enrolled := x.SeedUserIn(t, tid, "factor@acme.test", "admin")
	x.invite(t, stale, "crony@example.com", "admin")
	x.invite(t, enrolled, "hire@example.com", "admin")
	tok := x.mail(t, "crony@example.com", "invited").Token() // before the policy, which drops a queued mail of crony's inviter
	for _, uid := range []string{owner.id.UserID, enrolled.UserID} {
		x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, uid)
	}
	wantStatus(t, x.Send(t, &owner.id, http.MethodPatch, "/api/v1/tenant", map[string]any{"require_mfa": true}), http.StatusOK)

	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != http.StatusForbidden || code != problem.CodeForbidden {
		t.Errorf("accept of an invitation from an inviter without a factor: %d %s, want 403 %s", st, code, problem.CodeForbidden)
	}
	if x.isMember(t, tid, "crony@example.com") {
		t.Error("joined on the say of an inviter the policy confines")
	}
	tok = x.mail(t, "hire@example.com", "invited").Token()
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != http.StatusOK {
		t.Fatalf("accept of an invitation from an inviter with a factor: %d %s, want 200", st, code)
	}
}

// TestAcceptWaitsForADemotionUnderWay: an accept is ordered after a change
// of the inviter's rights that holds the tenant's lock (as every change of
// a membership or role does) and commits while the accept runs: it reads
// the inviter's rights after it, not beside it, and is refused. Without
// the tenant's lock the accept read the rights the demotion was taking
// away, before it committed, and joined.
func TestAcceptWaitsForADemotionUnderWay(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	tid := owner.c.Tid
	admin := x.SeedUserIn(t, tid, "adm@acme.test", "admin")
	x.invite(t, admin, "racing@example.com")
	tok := x.mail(t, "racing@example.com", "invited").Token()

	ctx := t.Context()
	demotion, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer demotion.Rollback(ctx)
	if err := roles.LockTenant(ctx, demotion, tid); err != nil {
		t.Fatal(err)
	}
	if _, err := demotion.Exec(ctx, `DELETE FROM membership_roles WHERE tenant_id = $1 AND user_id = $2
		AND role_id = (SELECT id FROM roles WHERE tenant_id = $1 AND name = 'admin')`, tid, admin.UserID); err != nil {
		t.Fatal(err)
	}
	type result struct {
		status int
		body   string
	}
	done := make(chan result, 1)
	go func() {
		r := x.Send(t, nil, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": tok, "password": "a long password"})
		done <- result{r.Status, string(r.Body)}
	}()
	// The accept either finished (it did not wait for the demotion) or
	// waits for a lock.
	var early *result
	eventually.Within(t, 10*time.Second, func() error {
		select {
		case r := <-done:
			early = &r
			return nil
		default:
		}
		if n := x.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`); n == 0 {
			return errors.New("the accept neither finished nor waits for a lock")
		}
		return nil
	})
	if early != nil {
		t.Fatalf("the accept finished beside the demotion under way: %d %s", early.status, early.body)
	}
	if err := demotion.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.status != http.StatusForbidden || !strings.Contains(r.body, `"code":"forbidden"`) {
		t.Fatalf("accept after the inviter's demotion: %d %s, want 403 forbidden", r.status, r.body)
	}
	if x.isMember(t, tid, "racing@example.com") {
		t.Error("joined anyway")
	}
}

// TestResentInvitationIsTheResenders: resending an invitation hands its
// roles out again on the resender's say (who must hold them), and the mail
// names the resender as the inviter; so the accept checks the resender,
// not whoever first sent it. An invitation whose first sender was removed
// since, resent by the owner, was mailed again (200) and then refused at
// accept (403: "whoever sent this invitation can no longer grant its
// roles"), so a resend could never revive it.
func TestResentInvitationIsTheResenders(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	tid := owner.c.Tid
	admin := x.SeedUserIn(t, tid, "adm@acme.test", "admin")
	inv := x.invite(t, admin, "revived@example.com", "member")
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+admin.UserID, nil), http.StatusNoContent)
	wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil), http.StatusOK)
	tok := x.mail(t, "revived@example.com", "invited").Token()
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != http.StatusOK {
		t.Fatalf("accept of the resent invitation: %d %s, want 200", st, code)
	}
	if !x.isMember(t, tid, "revived@example.com") {
		t.Fatal("not a member after the accept")
	}

	// The other way round: once resent, the resender's rights decide. A
	// resender demoted since cannot have it accepted, though whoever
	// first sent it still could.
	inv = x.invite(t, owner.id, "second@example.com", "member")
	helper := x.SeedUserIn(t, tid, "helper@acme.test", "admin")
	wantStatus(t, x.Send(t, &helper, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil), http.StatusOK)
	tok = x.mail(t, "second@example.com", "invited").Token()
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+helper.UserID+"/roles/admin", nil), http.StatusOK)
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": "a long password"}); st != http.StatusForbidden || code != problem.CodeForbidden {
		t.Errorf("accept after the resender's demotion: %d %s, want 403 %s", st, code, problem.CodeForbidden)
	}
}

// Neither an API key nor a service account resends an invitation, as
// neither sends one: a resend mails a new link and makes its caller the
// sender whom the accept checks, so a pending invitation whose sender was
// removed (to an address of their own, say) came back to life on a
// machine's say, and the person who joined outlived the key's revocation
// and the service account's deletion. A person may still resend it.
func TestMachinesResendNoInvitation(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	tid := owner.c.Tid
	admin := x.SeedUserIn(t, tid, "adm@acme.test", "admin")
	inv := x.invite(t, admin, "left-behind@example.com", "admin")
	x.flush(t) // mailed before its sender goes (a queued mail of theirs would be dropped)
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+admin.UserID, nil), http.StatusNoContent)
	for _, p := range []string{identity.PrincipalAPIKey, identity.PrincipalService} {
		as := owner.id
		as.Principal = p
		wantProblem(t, x.Send(t, &as, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil), http.StatusForbidden, problem.CodePrincipalNotAllowed)
	}
	x.flush(t)
	if n := x.mailsTo("left-behind@example.com"); n != 1 {
		t.Fatalf("%d mails to the invitee, want the first one only", n)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE id = $1 AND invited_by = $2`, inv.ID, admin.UserID); n != 1 {
		t.Fatal("a refused resend changed the invitation's sender")
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'invitation.resent'`); n != 0 {
		t.Fatalf("%d resends audited", n)
	}
	wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil), http.StatusOK)
}

// TestServiceAccountSendsNoInvitation: an invitation whose sender is a
// service account (one it resent before machines were refused resends) is
// not accepted: a person invited by a machine would outlive the account,
// and the accept checks the sender as one who may still send it.
func TestServiceAccountSendsNoInvitation(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	owner := x.signup(t, "o@acme.test")
	inv := x.invite(t, owner.id, "newbie@example.com", "member")
	saID := x.createServiceAccount(t, &owner.id, "ci", "admin")
	m := x.mail(t, "newbie@example.com", "") // mailed first: a queued mail a service account sent is dropped
	x.exec(t, `UPDATE invitations SET invited_by = $2 WHERE id = $1`, inv.ID, saID)
	if _, st, code := x.accept(t, nil, map[string]string{"token": m.Token(), "password": "newbie's password"}); st != http.StatusForbidden || code != problem.CodeForbidden {
		t.Fatalf("accept of an invitation a service account sent: %d %s", st, code)
	}
	if x.isMember(t, owner.c.Tid, "newbie@example.com") {
		t.Fatal("the invitee joined")
	}
}

// acceptResult is what an invitation's accept answered.
type acceptResult struct {
	tk     tokens
	status int
	code   string
}

// acceptBehind sends the accept of body while hold, an open transaction,
// holds a row it needs: it waits until the accept waits on a lock, then
// commits hold and returns the accept's answer.
func (x *env) acceptBehind(t *testing.T, hold pgx.Tx, body map[string]string) acceptResult {
	t.Helper()
	done := make(chan acceptResult, 1)
	go func() {
		tk, st, code := x.accept(t, nil, body)
		done <- acceptResult{tk, st, code}
	}()
	x.DB.WaitForLockWaiters(t, 1)
	if err := hold.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	return <-done
}

// wantLimited sends n+1 requests (send(i) for i from 0): the first n are
// 201, the last 429 too_many_requests with Retry-After.
func wantLimited(t *testing.T, n int, send func(i int) apitest.Response) {
	t.Helper()
	for i := range n + 1 {
		r := send(i)
		if i < n {
			wantStatus(t, r, http.StatusCreated)
			continue
		}
		wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
		if r.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
}

// TestInviteAcceptFormOpensNoSession: the page's form ends in a redirect
// to the page, which shows no token, so accepting there opens no session.
// It opened one and threw its tokens away: a session nobody could use,
// listed among the account's sessions until it expired. The account then
// signs in as any other; the API's accept still signs in at once.
func TestInviteAcceptFormOpensNoSession(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@example.com")
	x.invite(t, owner.id, "newcomer@example.com")
	tok := x.mail(t, "newcomer@example.com", "You are invited").Token()
	r := postForm(t, x, "/api/v1/invitations/accept", form("token", tok, "password", strings.ReplaceAll(pw, " ", "+")))
	if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || loc != "/accept-invitation?done=1" {
		t.Fatalf("accept form: %d Location %q", r.Status, loc)
	}
	if !x.isMember(t, owner.c.Tid, "newcomer@example.com") {
		t.Fatal("accepted through the form, but not a member")
	}
	const q = `SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = 'newcomer@example.com'`
	if n := x.count(t, q); n != 0 {
		t.Errorf("%d sessions opened by the form's accept, want none", n)
	}
	wantStatus(t, x.token(t, "newcomer@example.com", pw), http.StatusOK)
	if n := x.count(t, q); n != 1 {
		t.Errorf("%d sessions after the sign-in, want 1", n)
	}

	// The API's accept signs the account in.
	x.invite(t, owner.id, "apiuser@example.com")
	tok = x.mail(t, "apiuser@example.com", "You are invited").Token()
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusOK {
		t.Fatalf("API accept: %d %s", st, code)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = 'apiuser@example.com'`); n != 1 {
		t.Errorf("%d sessions after the API's accept, want 1", n)
	}
}
