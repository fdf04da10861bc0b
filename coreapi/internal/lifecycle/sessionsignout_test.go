package lifecycle_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestSigningASessionOutEndsItsEmailChange: the owner of an account with
// a second factor signs out a session that is not theirs (DELETE
// /users/me/sessions/{id}: whoever phished the password and the session
// just after its second factor, say), which had asked to move the
// account to an address of its holder's. The link mailed there no longer
// moves the account, not even with the password that holder knows (a
// verification asks for no second factor): the change ended with the
// session, as a sign-out everywhere ends it. It moved the account, and
// every later reset link with it, to that mailbox. A link of the
// account's own address, and the owner's own session, stay.
func TestSigningASessionOutEndsItsEmailChange(t *testing.T) {
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "kai@example.com")
	const code = "abcde-fghij"
	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, owner.c.Sub)
	x.exec(t, `INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2)`, owner.c.Sub, mfa.HashRecovery(owner.c.Sub, code))

	// The other session: the password and the second factor, just given.
	r := x.token(t, owner.email, pw)
	if r.Status != http.StatusUnauthorized || r.Problem(t).Code != "mfa_required" {
		t.Fatalf("password grant of an MFA user: %d %s, want 401 mfa_required", r.Status, r.Body)
	}
	var ch struct {
		MFAToken string `json:"mfa_token"`
	}
	r.JSON(t, &ch)
	r = x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "mfa_token": ch.MFAToken, "code": code})
	wantStatus(t, r, http.StatusOK)
	var tk tokens
	r.JSON(t, &tk)
	other := x.identity(t, claimsOf(t, tk.AccessToken))
	const intruder = "intruder@example.net"
	wantStatus(t, x.Send(t, &other, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": intruder}), http.StatusAccepted)
	change := x.mail(t, intruder, "Confirm").Token()

	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/me/sessions/"+other.SessionID, nil), http.StatusNoContent)

	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": change, "password": pw}),
		http.StatusBadRequest, problem.CodeLinkInvalid)
	var email string
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT email FROM users WHERE id = $1`, owner.c.Sub).Scan(&email); err != nil {
		t.Fatal(err)
	}
	if email != owner.email {
		t.Fatalf("the address moved to %s after the owner signed out the session that asked for it", email)
	}
	// The owner's session goes on, and asks for a change of its own.
	wantStatus(t, x.Get(t, &owner.id, "/api/v1/users/me"), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, owner.c.Sid); n != 1 {
		t.Errorf("the owner's own session ended too")
	}
}

// TestRefreshReuseEndsTheEmailChange: a refresh token presented again
// after its rotation's grace window ends its session as stolen; the email
// change that session asked for ends with it, as when the owner signs it
// out, so whoever held it cannot confirm it afterwards with the password
// alone. It stayed, and moved the account.
func TestRefreshReuseEndsTheEmailChange(t *testing.T) {
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "kai@example.com")
	const intruder = "intruder@example.net"
	wantStatus(t, x.Send(t, &owner.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": intruder}), http.StatusAccepted)
	change := x.mail(t, intruder, "Confirm").Token()

	refresh := func(rt string) apitest.Response {
		return x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": rt})
	}
	wantStatus(t, refresh(owner.tok.RefreshToken), http.StatusOK)
	// The grace window is over.
	x.exec(t, `UPDATE refresh_tokens SET rotated_at = now() - interval '1 hour' WHERE rotated_at IS NOT NULL`)
	wantProblem(t, refresh(owner.tok.RefreshToken), http.StatusBadRequest, problem.CodeInvalidGrant)
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_reason = 'refresh_token_reuse'`, owner.c.Sid); n != 1 {
		t.Fatalf("the session was not ended as reused")
	}

	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": change, "password": pw}),
		http.StatusBadRequest, problem.CodeLinkInvalid)
	var email string
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT email FROM users WHERE id = $1`, owner.c.Sub).Scan(&email); err != nil {
		t.Fatal(err)
	}
	if email != owner.email {
		t.Fatalf("the address moved to %s after the session that asked for it was ended as stolen", email)
	}
}
