package lifecycle_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
)

// These tests queue mails without sending them (the Sender runs only when
// a test flushes it), end the token their link carries, and check that
// the mail is gone from the queue while the others stay: a link revoked,
// withdrawn or replaced before its mail went out was still mailed.

// queued counts the mails of kind to addr still to go.
func (x *env) queued(t *testing.T, addr, kind string) int {
	t.Helper()
	return x.count(t, `SELECT count(*) FROM mail_queue WHERE lower(to_address) = lower($1) AND kind = $2 AND status = 'pending'`, addr, kind)
}

// queuedToken returns the token of the newest mail of kind to addr still
// to go, as its link will carry it.
func (x *env) queuedToken(t *testing.T, addr, kind string) string {
	t.Helper()
	x.lc.WaitResets()
	var tok string
	err := x.DB.Pool.QueryRow(context.Background(), `SELECT token FROM mail_queue
		WHERE lower(to_address) = lower($1) AND kind = $2 AND status = 'pending' ORDER BY id DESC LIMIT 1`, addr, kind).Scan(&tok)
	if errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("no %s mail to %s queued", kind, addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// wantQueued fails unless n mails of kind to addr are still to go.
func (x *env) wantQueued(t *testing.T, addr, kind string, n int, why string) {
	t.Helper()
	if got := x.queued(t, addr, kind); got != n {
		t.Errorf("%s: %d %s mails to %s queued, want %d", why, got, kind, addr, n)
	}
}

// verified signs up addr and verifies it from the queued mail.
func (x *env) verified(t *testing.T, addr string) account {
	t.Helper()
	a := x.signup(t, addr)
	wantStatus(t, x.verify(t, nil, x.queuedToken(t, addr, "verify_email"), "password", pw), http.StatusOK)
	return a
}

// TestSupersededVerificationMailIsDropped: a new verification link (an
// email change, a resend) ends the earlier ones; their mails still queued
// go with them.
func TestSupersededVerificationMailIsDropped(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	x.signup(t, "bystander@example.com")
	fresh := x.signup(t, "fresh@example.com")
	wantStatus(t, x.Send(t, &fresh.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil), http.StatusAccepted)
	x.wantQueued(t, "fresh@example.com", "verify_email", 1, "a resend")

	a := x.verified(t, "first@example.com")
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "second@example.com"}), http.StatusAccepted)
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "third@example.com"}), http.StatusAccepted)
	x.wantQueued(t, "second@example.com", "verify_email", 0, "a second email change")
	x.wantQueued(t, "third@example.com", "verify_email", 1, "a second email change")
	x.wantQueued(t, "bystander@example.com", "verify_email", 1, "another account's mail")

	x.flush(t)
	if n := x.mailsTo("second@example.com"); n != 0 {
		t.Errorf("%d mails to the address of the email change replaced, want 0", n)
	}
	if n := x.mailsTo("fresh@example.com"); n != 1 {
		t.Errorf("%d verification mails to an address whose link was resent, want 1 (the last)", n)
	}
}

// TestPasswordChangeDropsQueuedLinks: a password change ends the
// account's reset links and its pending email change; their mails still
// queued go with them.
func TestPasswordChangeDropsQueuedLinks(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	x.verified(t, "bystander@example.com")
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "bystander@example.com"}), http.StatusAccepted)
	a := x.verified(t, "owner@example.com")
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "owner@example.com"}), http.StatusAccepted)
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "elsewhere@example.com"}), http.StatusAccepted)
	x.wantQueued(t, "owner@example.com", "password_reset", 1, "before the change")

	wantStatus(t, x.Send(t, &a.id, http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": pw, "new_password": "the owner's new password"}), http.StatusOK)
	x.wantQueued(t, "owner@example.com", "password_reset", 0, "a password change")
	x.wantQueued(t, "elsewhere@example.com", "verify_email", 0, "a password change")
	x.wantQueued(t, "bystander@example.com", "password_reset", 1, "another account's mail")
}

// TestUsedResetLinkDropsTheOthersMails: a reset ends the account's other
// reset links and its pending email change; their mails still queued go
// with them.
func TestUsedResetLinkDropsTheOthersMails(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.verified(t, "owner@example.com")
	forgot := func() {
		wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "owner@example.com"}), http.StatusAccepted)
	}
	forgot()
	used := x.queuedToken(t, "owner@example.com", "password_reset")
	forgot()
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "elsewhere@example.com"}), http.StatusAccepted)
	x.wantQueued(t, "owner@example.com", "password_reset", 2, "before the reset")

	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": used, "new_password": "the new password"}), http.StatusNoContent)
	// The used link's own mail is queued still: it was read from the
	// queue, not mailed; the other link's is gone.
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'password_reset' AND status = 'pending' AND token <> $1`, used); n != 0 {
		t.Errorf("%d mails of the other reset link queued after a reset, want 0", n)
	}
	x.wantQueued(t, "elsewhere@example.com", "verify_email", 0, "a reset")
}

// TestConfirmedEmailChangeDropsQueuedResetLinks: confirming an email
// change ends the reset links mailed to the address left; their mails
// still queued go with them.
func TestConfirmedEmailChangeDropsQueuedResetLinks(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.verified(t, "owner@example.com")
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "new@example.com"}), http.StatusAccepted)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "owner@example.com"}), http.StatusAccepted)
	x.wantQueued(t, "owner@example.com", "password_reset", 1, "before the confirmation")

	wantStatus(t, x.verify(t, nil, x.queuedToken(t, "new@example.com", "verify_email"), "password", pw), http.StatusOK)
	x.wantQueued(t, "owner@example.com", "password_reset", 0, "a confirmed email change")
	x.wantQueued(t, "owner@example.com", "email_changed", 1, "the notice of the move")
}

// TestEndedInvitationMailIsDropped: an invitation withdrawn by a tenant
// admin, replaced by a resend, marked expired by a new one, or withdrawn
// by a member's addition, removal or change of address, an account's
// deletion or a reset that ends what an unproven account sent, takes its
// mail still queued with it; other invitations' mails stay.
func TestEndedInvitationMailIsDropped(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "own@invitations.test")
	other := x.signup(t, "own@other.test")
	const kind = "invitation"
	// Another tenant's invitations to the same addresses stay throughout.
	kept := []string{"revoked@example.com", "resent@example.com", "added@example.com", "moved.to@example.com", "gone@example.com"}
	for _, addr := range kept {
		x.invite(t, other.id, addr)
	}
	x.invite(t, owner.id, "bystander@example.com")
	wantKept := func(why string) {
		t.Helper()
		for _, addr := range kept {
			if n := x.count(t, `SELECT count(*) FROM mail_queue m JOIN invitations i ON i.token_hash = sha256(convert_to(m.token, 'UTF8'))
				WHERE i.tenant_id = $1 AND lower(m.to_address) = $2 AND m.status = 'pending'`, other.c.Tid, addr); n != 1 {
				t.Errorf("%s: another tenant's invitation mail to %s: %d queued, want 1", why, addr, n)
			}
		}
		x.wantQueued(t, "bystander@example.com", kind, 1, why+": another invitation")
	}

	t.Run("revoked", func(t *testing.T) {
		inv := x.invite(t, owner.id, "revoked@example.com")
		wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/invitations/"+inv.ID, nil), http.StatusNoContent)
		x.wantQueued(t, "revoked@example.com", kind, 1, "a withdrawal")
		wantKept("a withdrawal")
	})
	t.Run("resent", func(t *testing.T) {
		inv := x.invite(t, owner.id, "resent@example.com")
		wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil), http.StatusOK)
		if n := x.count(t, `SELECT count(*) FROM mail_queue m JOIN invitations i ON i.token_hash = sha256(convert_to(m.token, 'UTF8'))
			WHERE i.id = $1 AND m.status = 'pending'`, inv.ID); n != 1 {
			t.Errorf("mails of the resent link: %d queued, want 1", n)
		}
		x.wantQueued(t, "resent@example.com", kind, 2, "a resend (the other tenant's, and the new link)")
		wantKept("a resend")
	})
	t.Run("expired", func(t *testing.T) {
		inv := x.invite(t, owner.id, "expired@example.com")
		x.exec(t, `UPDATE invitations SET expires_at = now() - interval '1 second' WHERE id = $1`, inv.ID)
		x.invite(t, owner.id, "expired@example.com")
		x.wantQueued(t, "expired@example.com", kind, 1, "a new invitation after one expired")
		wantKept("an expiry")
	})
	t.Run("member added", func(t *testing.T) {
		x.invite(t, owner.id, "added@example.com")
		wantStatus(t, x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]string{"email": "added@example.com"}), http.StatusCreated)
		x.wantQueued(t, "added@example.com", kind, 1, "the address added as a member")
		wantKept("a member added")
	})
	t.Run("member removed", func(t *testing.T) {
		r := x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]string{"email": "member@example.com"})
		wantStatus(t, r, http.StatusCreated)
		var m struct{ ID string }
		r.JSON(t, &m)
		// The member came to hold an invited address (as an earlier
		// release's change of address left it).
		x.invite(t, owner.id, "removed@example.com")
		x.exec(t, `UPDATE users SET email = 'removed@example.com' WHERE id = $1`, m.ID)
		wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+m.ID, nil), http.StatusNoContent)
		x.wantQueued(t, "removed@example.com", kind, 0, "the member's removal")
		wantKept("a member removed")
	})
	t.Run("address changed", func(t *testing.T) {
		x.invite(t, owner.id, "moved.to@example.com")
		r := x.Send(t, &owner.id, http.MethodPost, "/api/v1/users", map[string]string{"email": "mover@example.com"})
		wantStatus(t, r, http.StatusCreated)
		var m struct{ ID string }
		r.JSON(t, &m)
		h, err := x.hasher.Hash(t.Context(), pw)
		if err != nil {
			t.Fatal(err)
		}
		x.exec(t, `UPDATE users SET password_hash = $2, password_set_by_admin = false WHERE id = $1`, m.ID, h)
		r = x.token(t, "mover@example.com", pw)
		wantStatus(t, r, http.StatusOK)
		var tk tokens
		r.JSON(t, &tk)
		mover := x.identity(t, claimsOf(t, tk.AccessToken))
		wantStatus(t, x.Send(t, &mover, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "moved.to@example.com"}), http.StatusAccepted)
		wantStatus(t, x.verify(t, nil, x.queuedToken(t, "moved.to@example.com", "verify_email"), "password", pw), http.StatusOK)
		x.wantQueued(t, "moved.to@example.com", kind, 1, "a member's move to the invited address")
		wantKept("a member's address changed")
	})
	t.Run("account deleted", func(t *testing.T) {
		a := x.signup(t, "leaver@example.com")
		x.invite(t, a.id, "gone@example.com")
		// The account came to hold an address its tenant invited.
		x.exec(t, `UPDATE users SET email = 'gone@example.com' WHERE id = $1`, a.c.Sub)
		wantStatus(t, x.Send(t, &a.id, http.MethodDelete, "/api/v1/users/me/account", nil), http.StatusNoContent)
		x.wantQueued(t, "gone@example.com", kind, 1, "the account's deletion (the other tenant's stays)")
		wantKept("an account deleted")
	})
	t.Run("unproven account reset", func(t *testing.T) {
		a := x.signup(t, "unproven@example.com")
		x.invite(t, a.id, "sent@example.com")
		wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "unproven@example.com"}), http.StatusAccepted)
		wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
			map[string]string{"token": x.queuedToken(t, "unproven@example.com", "password_reset"), "new_password": "the owner's password"}), http.StatusNoContent)
		x.wantQueued(t, "sent@example.com", kind, 0, "a reset proving the inviter's address")
		wantKept("a reset")
	})
}
