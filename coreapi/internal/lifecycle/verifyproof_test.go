package lifecycle_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// verify posts a verification link's token with body's other fields
// (the password), as as (nil: no bearer).
func (x *env) verify(t *testing.T, as *identity.Identity, token string, kv ...string) apitest.Response {
	t.Helper()
	body := map[string]string{"token": token}
	for i := 0; i+1 < len(kv); i += 2 {
		body[kv[i]] = kv[i+1]
	}
	return x.Send(t, as, http.MethodPost, "/api/v1/auth/verify-email", body)
}

// wantLinkKept fails unless the user's verification links still hold
// token: a refused verification must not use it up.
func (x *env) wantLinkKept(t *testing.T, userID, token string) {
	t.Helper()
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND purpose = 'verify_email'
		AND token_hash = sha256(convert_to($2, 'UTF8'))`, userID, token); n != 1 {
		t.Fatalf("the refused verification used the link up (%d left)", n)
	}
}

// wantUnverified fails if a's address was verified.
func (x *env) wantUnverified(t *testing.T, a account) {
	t.Helper()
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND email_verified_at IS NOT NULL`, a.c.Sub); n != 0 {
		t.Fatal("the address was verified")
	}
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
		invalidation.UserSubject(a.c.Sub), invalidation.ReasonUserEmailVerified); n != 0 {
		t.Fatal("a verification was announced")
	}
}

// TestVerifyNeedsProofOfTheAccount: the sign-up's link alone no longer
// verifies: whoever signed up with someone else's address chose the
// password, and the mailbox's owner opening the link would vouch for
// them. Without the password or a bearer the answer is 401
// account_proof_required, a wrong password the password grant's 400
// invalid_grant; neither uses the link up, and the right password then
// verifies.
func TestVerifyNeedsProofOfTheAccount(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "proof@example.com")
	tok := x.mail(t, a.email, "Confirm").Token()

	for name, kv := range map[string][]string{"no proof": nil, "an empty password": {"password", ""}} {
		r := x.verify(t, nil, tok, kv...)
		wantProblem(t, r, http.StatusUnauthorized, problem.CodeAccountProofRequired)
		if !strings.Contains(r.Problem(t).Detail, "password") {
			t.Errorf("%s: the refusal does not say what proves the account: %s", name, r.Body)
		}
		x.wantLinkKept(t, a.c.Sub, tok)
	}
	x.wantUnverified(t, a)

	r := x.verify(t, nil, tok, "password", "not the password")
	wantProblem(t, r, http.StatusBadRequest, problem.CodeInvalidGrant)
	x.wantLinkKept(t, a.c.Sub, tok)
	x.wantUnverified(t, a)

	wantStatus(t, x.verify(t, nil, tok, "password", pw), http.StatusOK)
	if m := x.me(t, a); !m.EmailVerified {
		t.Fatalf("not verified with the password: %+v", m)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.email_verified' AND target_id = $1
		AND data->>'proof' = 'password'`, a.c.Sub); n != 1 {
		t.Errorf("%d email_verified audits naming the password as proof, want 1", n)
	}
	wantProblem(t, x.verify(t, nil, tok, "password", pw), http.StatusBadRequest, problem.CodeLinkInvalid)
}

// TestVerifyPasswordGuessesCountWithSignIn: a password sent with a link
// is a guess like a sign-in's, counted under the account's address with
// the sign-in's failures: the link cannot be used to guess faster than
// the password grant allows. Locked, the right password is refused (429,
// Retry-After) at both, and the link stays usable with a bearer.
func TestVerifyPasswordGuessesCountWithSignIn(t *testing.T) {
	t.Parallel()
	x := startOpts(t, startOptions{hasher: password.New(cheap, 0),
		lockout: auth.Lockout{Threshold: 3, Base: time.Hour, Max: time.Hour, Window: time.Hour}})
	a := x.signup(t, "guess@example.com")
	tok := x.mail(t, a.email, "Confirm").Token()

	wantProblem(t, x.token(t, a.email, "wrong one"), http.StatusBadRequest, problem.CodeInvalidGrant)
	for range 2 {
		wantProblem(t, x.verify(t, nil, tok, "password", "wrong two"), http.StatusBadRequest, problem.CodeInvalidGrant)
	}
	for name, r := range map[string]apitest.Response{
		"verification": x.verify(t, nil, tok, "password", pw),
		"sign-in":      x.token(t, a.email, pw),
	} {
		wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: 429 without Retry-After", name)
		}
	}
	x.wantLinkKept(t, a.c.Sub, tok)
	x.wantUnverified(t, a)
	// The bearer guesses nothing.
	wantStatus(t, x.verify(t, &a.id, tok), http.StatusOK)
}

// TestVerifyWithBearer: signed in as the account the link was sent for,
// the bearer proves it (its session live when the link is used); another
// account's bearer is refused (403 link_account_mismatch), an ended
// session 401 invalid_token, an API key or a service account 403
// principal_not_allowed; none of them uses the link up.
func TestVerifyWithBearer(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "bearer@example.com")
	other := x.signup(t, "other@example.com")
	tok := x.mail(t, a.email, "Confirm").Token()

	wantProblem(t, x.verify(t, &other.id, tok), http.StatusForbidden, problem.CodeLinkAccountMismatch)
	// Nor with the account's password beside the other's bearer: the
	// bearer says who asks.
	wantProblem(t, x.verify(t, &other.id, tok, "password", pw), http.StatusForbidden, problem.CodeLinkAccountMismatch)
	x.wantLinkKept(t, a.c.Sub, tok)

	for _, p := range []string{identity.PrincipalAPIKey, identity.PrincipalService} {
		as := a.id
		as.Principal, as.SessionID = p, ""
		wantProblem(t, x.verify(t, &as, tok), http.StatusForbidden, problem.CodePrincipalNotAllowed)
	}
	x.wantLinkKept(t, a.c.Sub, tok)

	// A second session of the account, signed out: its bearer, which the
	// proxy may still let through, proves nothing.
	r := x.token(t, a.email, pw)
	wantStatus(t, r, http.StatusOK)
	var second tokens
	r.JSON(t, &second)
	ended := x.identity(t, claimsOf(t, second.AccessToken))
	wantStatus(t, x.Send(t, &ended, http.MethodPost, "/api/v1/auth/logout", map[string]string{"scope": "local"}), http.StatusNoContent)
	r = x.verify(t, &ended, tok)
	wantProblem(t, r, http.StatusUnauthorized, problem.CodeInvalidToken)
	if h := r.Header.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
		t.Errorf("WWW-Authenticate %q", h)
	}
	x.wantLinkKept(t, a.c.Sub, tok)
	x.wantUnverified(t, a)

	wantStatus(t, x.verify(t, &a.id, tok), http.StatusOK)
	if m := x.me(t, a); !m.EmailVerified {
		t.Fatalf("not verified with the bearer: %+v", m)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.email_verified' AND target_id = $1
		AND data->>'proof' = 'session'`, a.c.Sub); n != 1 {
		t.Errorf("%d email_verified audits naming the session as proof, want 1", n)
	}
}

// TestEmailChangeNeedsProofOfTheAccount: the attack through an email
// change. Signed in to their own account, someone asks to move it to the
// victim's address; the victim opens the link. Without proof of the
// account (which the victim has not) the account keeps its address and
// the link stays; with the account's own password or bearer the change
// goes through, as before.
func TestEmailChangeNeedsProofOfTheAccount(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	attacker := x.signup(t, "attacker@example.net")
	victim := x.signup(t, "someone@example.org")
	const target = "victim@example.com"
	wantStatus(t, x.Send(t, &attacker.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": target}), http.StatusAccepted)
	tok := x.mail(t, target, "Confirm").Token()

	wantProblem(t, x.verify(t, nil, tok), http.StatusUnauthorized, problem.CodeAccountProofRequired)
	wantProblem(t, x.verify(t, nil, tok, "password", "the victim's guess"), http.StatusBadRequest, problem.CodeInvalidGrant)
	wantProblem(t, x.verify(t, &victim.id, tok), http.StatusForbidden, problem.CodeLinkAccountMismatch)
	x.wantLinkKept(t, attacker.c.Sub, tok)
	if m := x.me(t, attacker); m.Email != attacker.email {
		t.Fatalf("the account moved to %s without proof", m.Email)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.email_changed'`); n != 0 {
		t.Fatalf("%d email changes audited", n)
	}

	// The account's holder (in truth: a change the owner asked for).
	wantStatus(t, x.verify(t, nil, tok, "password", pw), http.StatusOK)
	if m := x.me(t, attacker); m.Email != target || !m.EmailVerified {
		t.Errorf("after the change with the password: %+v", m)
	}
	wantStatus(t, x.Send(t, &victim.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "moved@example.org"}), http.StatusAccepted)
	wantStatus(t, x.verify(t, &victim.id, x.mail(t, "moved@example.org", "Confirm").Token()), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.email_changed' AND target_id = $1
		AND data->>'proof' = 'session'`, victim.c.Sub); n != 1 {
		t.Errorf("%d email_changed audits naming the session as proof, want 1", n)
	}
}

// TestVerifyFederatedAccountNeedsBearer: an account without a password
// that signs in through an identity provider proves itself by its bearer
// only: a password is refused without being counted (401
// account_proof_required, saying so), as no proof is.
func TestVerifyFederatedAccountNeedsBearer(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "fed@example.com")
	x.exec(t, `UPDATE users SET password_hash = NULL, email_verified_at = now() WHERE id = $1`, a.c.Sub)
	x.exec(t, `INSERT INTO identities (user_id, provider, subject, email, issuer) VALUES ($1, 'acme', 'sub-fed', $2, 'https://idp.example')`,
		a.c.Sub, a.email)
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "fed-new@example.com"}), http.StatusAccepted)
	tok := x.mail(t, "fed-new@example.com", "Confirm").Token()

	for _, kv := range [][]string{nil, {"password", pw}} {
		r := x.verify(t, nil, tok, kv...)
		wantProblem(t, r, http.StatusUnauthorized, problem.CodeAccountProofRequired)
		if !strings.Contains(r.Problem(t).Detail, "no password") {
			t.Errorf("the refusal does not say the account has no password: %s", r.Body)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM login_attempts`); n != 0 {
		t.Errorf("%d lockout rows: a password was counted for an account without one", n)
	}
	x.wantLinkKept(t, a.c.Sub, tok)
	wantStatus(t, x.verify(t, &a.id, tok), http.StatusOK)
	if m := x.me(t, a); m.Email != "fed-new@example.com" {
		t.Errorf("address after the bearer's verification: %s", m.Email)
	}
}

// TestVerifyAccountNobodyHolds: a member a tenant admin added without a
// password, who never signed in, is an account nobody holds (no
// password, no identity): there is nobody to tell the mailbox's owner
// from, and the link alone verifies it, as the member's way in (an
// identity provider links only to a verified address). A member added
// with a password the admin chose needs that password.
func TestVerifyAccountNobodyHolds(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	admin := x.signup(t, "admin@example.com")
	wantStatus(t, x.Send(t, &admin.id, http.MethodPost, "/api/v1/users", map[string]any{"email": "plain@example.com"}), http.StatusCreated)
	wantStatus(t, x.verify(t, nil, x.mail(t, "plain@example.com", "Confirm").Token()), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM users WHERE lower(email) = 'plain@example.com' AND email_verified_at IS NOT NULL`); n != 1 {
		t.Error("the member without a password is not verified")
	}
	// Something typed into the page's password field changes nothing.
	wantStatus(t, x.Send(t, &admin.id, http.MethodPost, "/api/v1/users", map[string]any{"email": "typed@example.com"}), http.StatusCreated)
	wantStatus(t, x.verify(t, nil, x.mail(t, "typed@example.com", "Confirm").Token(), "password", "anything"), http.StatusOK)

	wantStatus(t, x.Send(t, &admin.id, http.MethodPost, "/api/v1/users",
		map[string]any{"email": "given@example.com", "password": "chosen by the admin"}), http.StatusCreated)
	tok := x.mail(t, "given@example.com", "Confirm").Token()
	wantProblem(t, x.verify(t, nil, tok), http.StatusUnauthorized, problem.CodeAccountProofRequired)
	wantStatus(t, x.verify(t, nil, tok, "password", "chosen by the admin"), http.StatusOK)
}

// TestVerifyPasswordChangedMeanwhile: the password is checked before the
// link is used, the account's row locked after; a password change that
// commits in between makes the checked password no proof (400
// invalid_grant, the link kept).
func TestVerifyPasswordChangedMeanwhile(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "race@example.com")
	tok := x.mail(t, a.email, "Confirm").Token()
	var change, verify apitest.Response
	x.DB.QueueBehindUser(t, a.c.Sub,
		func() { // the change, at the account's row
			change = x.Send(t, &a.id, http.MethodPut, "/api/v1/users/me/password",
				map[string]string{"current_password": pw, "new_password": "changed meanwhile"})
		},
		func() { // the verification, its password checked, behind it
			verify = x.verify(t, nil, tok, "password", pw)
		},
	)
	wantStatus(t, change, http.StatusOK)
	wantProblem(t, verify, http.StatusBadRequest, problem.CodeInvalidGrant)
	x.wantLinkKept(t, a.c.Sub, tok)
	wantStatus(t, x.verify(t, nil, tok, "password", "changed meanwhile"), http.StatusOK)
}

// TestSquattedAddressStaysUnproven: the whole attack. Someone signs up
// with the victim's address and a password of their own, and plants what
// outlives a password. The victim, mailed the verification link, opens
// its page and confirms: without the squatter's password nothing is
// verified (the page says what is needed and keeps the link), so the
// address stays unproven; the victim's password reset then clears what
// the squatter planted, as for any unproven address.
func TestSquattedAddressStaysUnproven(t *testing.T) {
	t.Parallel()
	x := startWide(t)
	squat := x.signup(t, "victim@example.com") // the squatter's password: pw
	p := x.plant(t, squat)
	link := x.mail(t, "victim@example.com", "Confirm")
	tok := link.Token()

	page := x.Get(t, nil, "/verify-email?token="+tok)
	wantStatus(t, page, http.StatusOK)
	if body := string(page.Body); !strings.Contains(body, `name="password"`) || !strings.Contains(body, "if you did not create this one, do not confirm it") {
		t.Errorf("the page asks for no password or does not say why:\n%s", body)
	}
	for _, f := range []string{form("token", tok), form("token", tok, "password", "the+victim%27s+own+password")} {
		r := postForm(t, x, "/api/v1/auth/verify-email", f)
		loc := r.Header.Get("Location")
		if r.Status != http.StatusSeeOther || !strings.HasPrefix(loc, "/verify-email?error=") || !strings.HasSuffix(loc, "&token="+tok) {
			t.Errorf("the victim's form post %q: %d Location %q", f, r.Status, loc)
		}
	}
	wantProblem(t, x.verify(t, nil, tok), http.StatusUnauthorized, problem.CodeAccountProofRequired)
	x.wantUnverified(t, squat)
	x.wantLinkKept(t, squat.c.Sub, tok)

	x.resetByMail(t, "victim@example.com", "the victim's own password")
	for name, k := range map[string]string{"the account's tenant key": p.ownKey, "its personal key": p.personalKey,
		"the key its service account minted": p.saKey} {
		if st := x.resolveKey(t, k); st != http.StatusGone {
			t.Errorf("%s resolves %d after the reset, want 410 (revoked)", name, st)
		}
	}
	if r := x.clientCredentials(t, p); r.Status == http.StatusOK {
		t.Error("the planted client secret still obtains tokens after the reset")
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.unverified_access_cleared' AND target_id = $1`, squat.c.Sub); n != 1 {
		t.Errorf("%d audits of the cleared access, want 1", n)
	}
	wantProblem(t, x.token(t, "victim@example.com", pw), http.StatusBadRequest, problem.CodeInvalidGrant)
	wantStatus(t, x.token(t, "victim@example.com", "the victim's own password"), http.StatusOK)
}

// TestVerifyDisabledAccount: a disabled account's link neither confirms
// its address nor changes it, whatever proves the account: 403
// user_disabled (the sign-in's answer, and only to whoever proved the
// account: without proof the answer is still the proof's), the row, the
// audit and the outbox untouched, the link kept for an account enabled
// again. The page's form says so.
func TestVerifyDisabledAccount(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "off@example.com")
	tok := x.mail(t, a.email, "Confirm").Token()
	b := x.signup(t, "moving@example.com")
	wantStatus(t, x.Send(t, &b.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "moved@example.com"}), http.StatusAccepted)
	change := x.mail(t, "moved@example.com", "Confirm").Token()
	x.exec(t, `UPDATE users SET status = 'disabled' WHERE id IN ($1, $2)`, a.c.Sub, b.c.Sub)
	audits := x.count(t, `SELECT count(*) FROM audit_events`)
	outbox := x.count(t, `SELECT count(*) FROM outbox`)

	wantProblem(t, x.verify(t, nil, tok), http.StatusUnauthorized, problem.CodeAccountProofRequired)
	for name, r := range map[string]apitest.Response{
		"password": x.verify(t, nil, tok, "password", pw),
		"bearer":   x.verify(t, &a.id, tok),
		"change":   x.verify(t, nil, change, "password", pw),
	} {
		wantProblem(t, r, http.StatusForbidden, problem.CodeUserDisabled)
		if !strings.Contains(r.Problem(t).Detail, "disabled") {
			t.Errorf("%s: the refusal does not say why: %s", name, r.Body)
		}
	}
	x.wantLinkKept(t, a.c.Sub, tok)
	x.wantLinkKept(t, b.c.Sub, change)
	x.wantUnverified(t, a)
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND email = $2 AND email_verified_at IS NULL`, b.c.Sub, b.email); n != 1 {
		t.Error("the disabled account's address changed")
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events`); n != audits {
		t.Errorf("%d audit events, want %d", n, audits)
	}
	if n := x.count(t, `SELECT count(*) FROM outbox`); n != outbox {
		t.Errorf("%d outbox rows, want %d", n, outbox)
	}
	// The page's form comes back to the page, which says why.
	r := postForm(t, x, "/api/v1/auth/verify-email", form("token", tok, "password", strings.ReplaceAll(pw, " ", "+")))
	loc := r.Header.Get("Location")
	if r.Status != http.StatusSeeOther || !strings.HasPrefix(loc, "/verify-email?error=user_disabled") {
		t.Fatalf("the form of a disabled account: %d Location %q", r.Status, loc)
	}
	if page := string(x.Get(t, nil, loc).Body); !strings.Contains(page, "This account is disabled.") {
		t.Errorf("the page after the form:\n%s", page)
	}
	x.wantUnverified(t, a)

	// Enabled again, the same link confirms.
	x.exec(t, `UPDATE users SET status = 'active' WHERE id = $1`, a.c.Sub)
	wantStatus(t, x.verify(t, nil, tok, "password", pw), http.StatusOK)
}
