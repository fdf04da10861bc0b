package lifecycle_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestAcceptByADeletedAccount: the bearer of an account deleted since
// (which a proxy that has not yet heard of the deletion still forwards)
// is answered as an ended session, 401 invalid_token; an acceptance with
// the password of an account deleted while it was under way is refused
// as a password checked before a reset is (400 invalid_grant). Both
// answered 500: the account's row, read under its lock, was gone. The
// invitation stays pending in both cases, and the address, which has no
// account now, accepts it with a new one.
func TestAcceptByADeletedAccount(t *testing.T) {
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@example.com")

	gone := x.signup(t, "gone@example.com")
	x.invite(t, owner.id, "gone@example.com")
	tok := x.mail(t, "gone@example.com", "You are invited").Token()
	wantStatus(t, x.Send(t, &gone.id, http.MethodDelete, "/api/v1/users/me/account", nil), http.StatusNoContent)
	r := x.Send(t, &gone.id, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": tok})
	wantProblem(t, r, http.StatusUnauthorized, problem.CodeInvalidToken)
	if r.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 to a bearer without a WWW-Authenticate challenge")
	}
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusOK {
		t.Fatalf("accept by the address after the deletion: %d %s", st, code)
	}
	if !x.isMember(t, owner.c.Tid, "gone@example.com") {
		t.Error("the address's new account is no member")
	}

	racing := x.signup(t, "racing@example.com")
	x.invite(t, owner.id, "racing@example.com")
	tok = x.mail(t, "racing@example.com", "You are invited").Token()
	hold := x.DB.Hold(t, `DELETE FROM users WHERE id = $1`, racing.c.Sub)
	res := x.acceptBehind(t, hold, map[string]string{"token": tok, "password": pw})
	if res.status != http.StatusBadRequest || res.code != problem.CodeInvalidGrant {
		t.Fatalf("accept with the password of an account deleted meanwhile: %d %s, want 400 %s", res.status, res.code, problem.CodeInvalidGrant)
	}
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE lower(email) = 'racing@example.com' AND status = 'pending'`); n != 1 {
		t.Errorf("%d pending invitations to the address after the refusal, want 1", n)
	}
	if _, st, code := x.accept(t, nil, map[string]string{"token": tok, "password": pw}); st != http.StatusOK {
		t.Fatalf("accept again, by the address that has no account now: %d %s", st, code)
	}
}

// TestMyInvitationsOfADeletedAccount: GET /users/me/invitations with the
// bearer of an account deleted since is 401 invalid_token, as every
// other route of the account answers a session that has ended; it
// answered 500.
func TestMyInvitationsOfADeletedAccount(t *testing.T) {
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "gone@example.com")
	wantStatus(t, x.Send(t, &a.id, http.MethodDelete, "/api/v1/users/me/account", nil), http.StatusNoContent)
	r := x.Get(t, &a.id, "/api/v1/users/me/invitations")
	wantProblem(t, r, http.StatusUnauthorized, problem.CodeInvalidToken)
}

// TestResendRacingTheAccountsDeletion: a resend of the verification link
// whose account is deleted while it waits for the account's row is 401
// invalid_token (its session ended with the account), nothing queued; it
// answered 500.
func TestResendRacingTheAccountsDeletion(t *testing.T) {
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "gone@example.com")
	x.flush(t)
	hold := x.DB.Hold(t, `DELETE FROM users WHERE id = $1`, a.c.Sub)
	done := make(chan apitest.Response, 1)
	go func() { done <- x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil) }()
	x.DB.WaitForLockWaitersOn(t, "FOR UPDATE", 1)
	if err := hold.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, <-done, http.StatusUnauthorized, problem.CodeInvalidToken)
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE status = 'pending'`); n != 0 {
		t.Errorf("%d mails queued for a deleted account", n)
	}
}
