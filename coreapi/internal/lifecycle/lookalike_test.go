package lifecycle_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
)

// TestAccountAddressesAreNoLookAlikes: a new account, a new member, an
// invitation or an email change to an address whose local part could pass
// for another's ("ａda", a full-width a; "аda", a Cyrillic a among Latin
// letters; "ﬁ", a ligature) is refused as any bad address there is, 422
// validation_failed naming email, and nothing is written or mailed. An
// account stored with such an address before keeps its ways in: a password
// reset mails it its link, and the forgot route answers alike for it, for
// a look-alike without an account and for a plain unknown address.
func TestAccountAddressesAreNoLookAlikes(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@example.com")
	for _, addr := range []string{"\uff41da@look.example", "\u0430da@look.example", "ad\u03b1@look.example", "o\ufb01ce@look.example"} {
		for _, req := range []apitest.Request{
			{Method: "POST", Path: "/api/v1/auth/signup", Body: map[string]string{"email": addr, "password": pw, "tenant_name": "Look"}},
			{Method: "POST", Path: "/api/v1/users", Body: map[string]any{"email": addr}, As: &owner.id},
			{Method: "POST", Path: "/api/v1/invitations", Body: map[string]any{"email": addr, "roles": []string{"member"}}, As: &owner.id},
			{Method: "PATCH", Path: "/api/v1/users/me", Body: map[string]any{"email": addr}, As: &owner.id},
		} {
			r := x.Do(t, req)
			if r.Status != 422 {
				t.Errorf("%s %s with %+q: %d, want 422; body %s", req.Method, req.Path, addr, r.Status, r.Body)
				continue
			}
			apitest.WantProblem(t, r, 422, "validation_failed")
			if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "email" {
				t.Errorf("%s %s with %+q: errors %+v, want one naming email", req.Method, req.Path, addr, p.Errors)
			}
		}
	}
	x.flush(t)
	for what, q := range map[string]string{
		"accounts":      `SELECT count(*) FROM users WHERE email LIKE '%@look.example'`,
		"invitations":   `SELECT count(*) FROM invitations WHERE email LIKE '%@look.example'`,
		"mails":         `SELECT count(*) FROM mail_queue WHERE to_address LIKE '%@look.example'`,
		"email changes": `SELECT count(*) FROM users WHERE email <> 'owner@example.com'`,
		"action tokens": `SELECT count(*) FROM action_tokens WHERE email LIKE '%@look.example'`,
	} {
		if n := x.count(t, q); n != 0 {
			t.Errorf("%d %s for refused look-alikes", n, what)
		}
	}

	// An account stored with a look-alike before the check.
	const old = "\u0430da@old.example"
	stored := x.signup(t, "ada@old.example")
	x.exec(t, `UPDATE users SET email = $1 WHERE id = $2`, old, stored.c.Sub)
	forgot := func(addr string) apitest.Response {
		t.Helper()
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": addr})
		wantStatus(t, r, http.StatusAccepted)
		return r
	}
	known, lookAlike, unknown := forgot(old), forgot("\uff41da@old.example"), forgot("nobody@old.example")
	if !bytes.Equal(known.Body, lookAlike.Body) || !bytes.Equal(known.Body, unknown.Body) {
		t.Errorf("forgot answers differ: %s, %s, %s", known.Body, lookAlike.Body, unknown.Body)
	}
	if tok := x.mail(t, old, "Reset").Token(); tok == "" {
		t.Errorf("no reset link mailed to an account stored with a look-alike")
	}
	wantStatus(t, x.token(t, old, pw), http.StatusOK)
}

// TestOldInvitationToALookAlikeMakesNoAccount: an invitation sent to a
// look-alike address before the check (stored as the database held it)
// is refused when accepting it would create the account, with the 422
// validation_failed naming email that sign-up and the invitation itself
// now give, and nothing is created; an account stored with that address
// before accepts its own invitation as it always could.
func TestOldInvitationToALookAlikeMakesNoAccount(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@example.com")
	invite := func(addr string) (token, id string) {
		t.Helper()
		raw, hash, err := onetime.New()
		if err != nil {
			t.Fatal(err)
		}
		if err := x.DB.Pool.QueryRow(t.Context(), `INSERT INTO invitations (tenant_id, email, roles, token_hash, invited_by, expires_at)
VALUES ($1, $2, '{member}', $3, $4, now() + interval '1 day') RETURNING id::text`, owner.c.Tid, addr, hash, owner.c.Sub).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return raw, id
	}

	const lookAlike = "\u0430da@look.example" // a Cyrillic a among Latin letters
	raw, id := invite(lookAlike)
	r := x.Send(t, nil, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": raw, "password": pw})
	apitest.WantProblem(t, r, http.StatusUnprocessableEntity, "validation_failed")
	if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "email" {
		t.Errorf("errors %+v, want one naming email", p.Errors)
	}
	if n := x.count(t, `SELECT count(*) FROM users WHERE email LIKE '%@look.example'`); n != 0 {
		t.Errorf("%d accounts made by accepting an invitation to a look-alike, want 0", n)
	}
	if got := x.invitationStatus(t, id); got != invitations.StatusPending {
		t.Errorf("the refused invitation is %q, want %q", got, invitations.StatusPending)
	}

	// An account stored with a look-alike before the check joins.
	const old = "\u0430da@old.example"
	stored := x.signup(t, "ada@old.example")
	x.exec(t, `UPDATE users SET email = $1 WHERE id = $2`, old, stored.c.Sub)
	raw, _ = invite(old)
	if tk, st, code := x.accept(t, nil, map[string]string{"token": raw, "password": pw}); st != http.StatusOK || claimsOf(t, tk.AccessToken).Sub != stored.c.Sub {
		t.Errorf("the stored account's accept: %d %s, want 200 as that account", st, code)
	}
}
