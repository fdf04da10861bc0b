package lifecycle_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestQueuedMailOfADeadLinkIsNotSent: a mail still queued when its link
// stopped working without its token being ended (an invitation whose
// tenant was deleted, whose sender lost the right to send it, one of
// whose roles was deleted, whose address became a member's, or which
// expired; a verification or reset link past its expiry: a backlog after
// an outage of the mail server) is deleted at its turn, not sent: its
// link would only open a page saying it no longer works. An invitation
// still acceptable, and one into a suspended tenant (the operator may
// reactivate it), go out.
func TestQueuedMailOfADeadLinkIsNotSent(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@acme.test")
	other := x.signup(t, "owner@other.test")
	paused := x.signup(t, "owner@paused.test")
	x.flush(t)
	tid := owner.c.Tid

	type invited struct {
		name, email string
		sender      identity.Identity
		spoil       func(t *testing.T, email string, sender identity.Identity)
		mailed      bool
	}
	cases := []*invited{
		{name: "acceptable", mailed: true},
		{name: "tenant deleted", sender: other.id, spoil: func(t *testing.T, _ string, _ identity.Identity) {
			x.exec(t, `DELETE FROM tenants WHERE id = $1`, other.c.Tid)
		}},
		{name: "tenant suspended", sender: paused.id, mailed: true, spoil: func(t *testing.T, _ string, _ identity.Identity) {
			x.Suspend(t, paused.c.Tid)
		}},
		{name: "sender's right to invite removed", spoil: func(t *testing.T, _ string, sender identity.Identity) {
			x.exec(t, `DELETE FROM membership_roles WHERE tenant_id = $1 AND user_id = $2`, tid, sender.UserID)
		}},
		{name: "role deleted since", spoil: func(t *testing.T, _ string, _ identity.Identity) {
			x.exec(t, `DELETE FROM roles WHERE tenant_id = $1 AND name = 'temp'`, tid)
		}},
		{name: "address a member's", spoil: func(t *testing.T, email string, _ identity.Identity) {
			x.SeedMember(t, tid, x.SeedUser(t, email, ""), "member")
		}},
		{name: "expired", spoil: func(t *testing.T, email string, _ identity.Identity) {
			x.exec(t, `UPDATE invitations SET expires_at = now() - interval '1 second' WHERE email = $1`, email)
		}},
	}
	for i, c := range cases {
		c.email = "invitee" + string(rune('a'+i)) + "@example.com"
		roleNames := []string{"member"}
		if c.sender.UserID == "" {
			c.sender = x.SeedUserIn(t, tid, "sender"+string(rune('a'+i))+"@acme.test", "admin")
			if c.name == "role deleted since" {
				x.exec(t, `INSERT INTO roles (tenant_id, name, permissions) VALUES ($1, 'temp', '{}')`, tid)
				roleNames = append(roleNames, "temp")
			}
		}
		x.invite(t, c.sender, c.email, roleNames...)
		x.wantQueued(t, c.email, "invitation", 1, c.name)
	}

	// A verification link and a reset link that expired in the queue.
	x.signup(t, "late@example.com")
	x.exec(t, `UPDATE action_tokens SET expires_at = now() - interval '1 second' WHERE email = 'late@example.com'`)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "owner@acme.test"}), http.StatusAccepted)
	x.queuedToken(t, "owner@acme.test", "password_reset")
	x.exec(t, `UPDATE action_tokens SET expires_at = now() - interval '1 second' WHERE email = 'owner@acme.test' AND purpose = 'password_reset'`)

	for _, c := range cases {
		if c.spoil != nil {
			c.spoil(t, c.email, c.sender)
		}
	}
	x.flush(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := 0
			if c.mailed {
				want = 1
			}
			if got := x.mailsTo(c.email); got != want {
				t.Errorf("%d invitation mails to %s, want %d", got, c.email, want)
			}
			if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE to_address = $1 AND status <> 'sent'`, c.email); n != 0 {
				t.Errorf("%d mails to %s left unsent in the queue, want 0", n, c.email)
			}
		})
	}
	if got := x.mailsTo("late@example.com"); got != 0 {
		t.Errorf("%d mails with an expired verification link, want 0", got)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'password_reset'`); n != 0 {
		t.Errorf("%d reset mails with an expired link left in the queue, want 0", n)
	}
	for _, m := range x.smtp.Messages() {
		if strings.Contains(m.Subject, "Reset") {
			t.Errorf("a reset mail went to %v: its link had expired", m.Rcpt)
		}
	}
}

// TestQueuedEmailChangeToATakenAddressIsDropped: the verification mail of
// an email change still queued when another account has since taken the
// new address (in any letter case, as the address's uniqueness compares
// them) is deleted at its turn, not sent: its confirmation would be
// refused (409 email_taken). The other account's own mail to the address
// goes out, and so does an email change to an address nobody took.
func TestQueuedEmailChangeToATakenAddressIsDropped(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.verified(t, "owner@example.com")
	b := x.verified(t, "other@example.com")
	x.flush(t)
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "wanted@example.com"}), http.StatusAccepted)
	wantStatus(t, x.Send(t, &b.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "free@example.com"}), http.StatusAccepted)
	x.wantQueued(t, "wanted@example.com", "verify_email", 1, "the email change")
	x.signup(t, "Wanted@Example.com")
	x.wantQueued(t, "wanted@example.com", "verify_email", 2, "the email change and the sign-up")

	x.flush(t)
	if n := x.mailsTo("wanted@example.com"); n != 1 {
		t.Errorf("%d mails to the address taken, want 1 (the sign-up's, not the email change's)", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE lower(to_address) = 'wanted@example.com' AND status <> 'sent'`); n != 0 {
		t.Errorf("%d mails to the address taken left unsent in the queue, want 0", n)
	}
	if n := x.mailsTo("free@example.com"); n != 1 {
		t.Errorf("%d mails of the email change to a free address, want 1", n)
	}
}
