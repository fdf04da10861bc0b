package auth_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestSignupRefusesLookAlikeAddresses: a sign-up whose address's local
// part could pass for another's (a full-width letter, a Cyrillic or Greek
// letter among Latin ones) is refused as any other invalid address is
// (422 validation_failed on the field email), and creates nothing; the
// plain address is taken. An account stored with such an address before
// still signs in, and a sign-in with a look-alike that has no account is
// answered as a wrong password.
func TestSignupRefusesLookAlikeAddresses(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "admin-x@example.com", "Plain")
	for _, addr := range []string{
		"\uff41dmin-x@example.com", // full-width a
		"\u0430dmin-x@example.com", // Cyrillic a
		"\u03b1dmin-x@example.com", // Greek alpha
		"of\ufb01ce@example.com",   // ﬁ ligature
	} {
		r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
			map[string]string{"email": addr, "password": pw, "tenant_name": "Look-alike"})
		if r.Status != http.StatusUnprocessableEntity {
			t.Errorf("signup %+q: %d %s, want 422", addr, r.Status, r.Body)
			continue
		}
		if p := r.Problem(t); p.Code != problem.CodeValidation || len(p.Errors) != 1 || p.Errors[0].Field != "email" {
			t.Errorf("signup %+q: %s %+v, want %s on email", addr, p.Code, p.Errors, problem.CodeValidation)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM users`); n != 1 {
		t.Errorf("%d accounts, want the plain address's alone", n)
	}

	// Sign-in: a look-alike without an account is a wrong password.
	wrong := e.token(t, map[string]string{"grant_type": "password", "email": "admin-x@example.com", "password": pw + "x"})
	none := e.token(t, map[string]string{"grant_type": "password", "email": "\u0430dmin-x@example.com", "password": pw})
	if wrong.Status != none.Status || wrong.Problem(t).Code != none.Problem(t).Code {
		t.Errorf("sign-in with a look-alike: %d %s; a wrong password: %d %s", none.Status, none.Body, wrong.Status, wrong.Body)
	}
	// An account stored with a look-alike before the check signs in.
	const old = "\u0430dmin-y@example.com"
	e.signup(t, "admin-y@example.com", "Old")
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE users SET email = $1 WHERE email = 'admin-y@example.com'`, old); err != nil {
		t.Fatal(err)
	}
	e.login(t, old)
}
