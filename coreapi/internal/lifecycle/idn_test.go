package lifecycle_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/migrations"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// The one mailbox ada@bücher.example, its domain in Unicode and in
// Punycode (the form the mail server is given).
const (
	adaUnicode  = "ada@b\u00fccher.example"
	adaPunycode = "ada@xn--bcher-kva.example"
)

// TestOneAccountPerDomainSpelling: an address whose domain is spelled
// another way (Punycode, an ideographic full stop, a trailing dot, upper
// case) is the address itself: a second sign-up is 409 email_taken, and
// sign-in and a password reset by any spelling reach the one account,
// stored under the Unicode spelling.
func TestOneAccountPerDomainSpelling(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ada := x.signup(t, adaPunycode)
	if m := x.me(t, ada); m.Email != adaUnicode {
		t.Errorf("address stored as %+q, want %+q", m.Email, adaUnicode)
	}
	for _, other := range []string{adaUnicode, "ada@B\u00dcCHER.example", "ada@b\u00fccher\u3002example", adaPunycode + "."} {
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
			map[string]string{"email": other, "password": pw, "tenant_name": "T2", "display_name": "D2"})
		wantProblem(t, r, http.StatusConflict, problem.CodeEmailTaken)
		wantStatus(t, x.token(t, other, pw), http.StatusOK)
	}
	if n := x.count(t, `SELECT count(*) FROM users WHERE kind = 'human'`); n != 1 {
		t.Fatalf("%d accounts for one mailbox, want 1", n)
	}

	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "ada@xn--bcher-kva.example."}), http.StatusAccepted)
	if n := x.liveLinks(t, ada.c.Sub, "password_reset"); n != 1 {
		t.Fatalf("%d reset links for the account after a forgot with another spelling, want 1", n)
	}
	tok := x.mail(t, adaPunycode, "Reset").Token()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "the new password"}), http.StatusNoContent)
	wantStatus(t, x.token(t, adaUnicode, "the new password"), http.StatusOK)
}

// TestInvitationsCompareDomainSpelling: an invitation to the Punycode
// spelling of an account's address is that account's: POST /users
// invites it (no second account), a second invitation by the Unicode
// spelling is pending, and the account accepts.
func TestInvitationsCompareDomainSpelling(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	ada := x.signup(t, adaUnicode)

	wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]string{"email": adaPunycode}), http.StatusAccepted)
	if n := x.count(t, `SELECT count(*) FROM users WHERE kind = 'human'`); n != 2 {
		t.Fatalf("%d accounts after POST /users with the Punycode spelling of an account's address, want 2", n)
	}
	wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]string{"email": adaUnicode}),
		http.StatusConflict, problem.CodeInvitationPending)
	tk, st, code := x.accept(t, &ada.id, map[string]string{"token": x.mail(t, adaPunycode, "You are invited").Token()})
	if st != http.StatusOK || tk.TenantID != owner.c.Tid {
		t.Fatalf("the account accepts its invitation: %d %s", st, code)
	}

	// An address without an account, invited by one spelling then another.
	if inv := x.invite(t, owner.id, "zoe@xn--bcher-kva.example."); inv.Email != "zoe@b\u00fccher.example" {
		t.Errorf("invitation answered as %+q, want zoe@b\u00fccher.example", inv.Email)
	}
	wantProblem(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations", map[string]string{"email": "zoe@B\u00dcCHER\u3002example"}),
		http.StatusConflict, problem.CodeInvitationPending)
}

// TestEmailChangeComparesDomainSpelling: an email change to another
// spelling of an account's address is taken.
func TestEmailChangeComparesDomainSpelling(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "old@example.com")
	x.signup(t, adaUnicode)
	wantProblem(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": adaPunycode}),
		http.StatusConflict, problem.CodeEmailTaken)
}

// TestStoredPunycodeAccountAfterMigration: an account an older release
// stored with its domain in Punycode is found by neither spelling once
// addresses are looked up in their canonical form, until migration 00044
// rewrites it: then sign-in and a password reset by either spelling reach
// it.
func TestStoredPunycodeAccountAfterMigration(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ada := x.signup(t, adaUnicode)
	ctx := context.Background()
	sqlDB := stdlib.OpenDBFromPool(x.DB.Pool)
	defer sqlDB.Close()
	p, err := migrations.NewProvider(sqlDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, migrations.AddressesVersion-1); err != nil {
		t.Fatal(err)
	}
	// This code counts its rate limits (a reset's) with the columns of
	// 00048 and 00049, and queues its mails with mail_queue.user_id
	// (00060), which went down with the rest: they stand in until Up.
	const qLimits = `ALTER TABLE rate_limits ADD COLUMN prev_hits integer NOT NULL DEFAULT 0, ADD COLUMN refused boolean NOT NULL DEFAULT false,
    ADD COLUMN window_s integer NOT NULL DEFAULT 86400;
ALTER TABLE mail_queue ADD COLUMN user_id uuid`
	if _, err := x.DB.Pool.Exec(ctx, qLimits); err != nil {
		t.Fatal(err)
	}
	// As an older release stored it.
	if _, err := x.DB.Pool.Exec(ctx, `UPDATE users SET email = $2 WHERE id = $1`, ada.c.Sub, adaPunycode); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": adaUnicode}), http.StatusAccepted)
	if n := x.liveLinks(t, ada.c.Sub, "password_reset"); n != 0 {
		t.Fatalf("%d reset links for an account stored in Punycode before the migration: the test no longer shows what it fixes", n)
	}

	if _, err := x.DB.Pool.Exec(ctx, `ALTER TABLE rate_limits DROP COLUMN prev_hits, DROP COLUMN refused, DROP COLUMN window_s;
ALTER TABLE mail_queue DROP COLUMN user_id`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if m := x.me(t, ada); m.Email != adaUnicode {
		t.Errorf("address after the migration %+q, want %+q", m.Email, adaUnicode)
	}
	for _, spelling := range []string{adaUnicode, adaPunycode} {
		wantStatus(t, x.token(t, spelling, pw), http.StatusOK)
	}
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": adaPunycode}), http.StatusAccepted)
	if n := x.liveLinks(t, ada.c.Sub, "password_reset"); n != 1 {
		t.Fatalf("%d reset links after the migration, want 1", n)
	}
}
