package lifecycle_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
)

// movedAccount signs up first@example.com, verifies it, asks for a reset
// link, moves the account to second@example.com (a verification to the
// new address, then the notice of the move to the old one) and asks to
// move it again to third@example.com, which stays pending: the account's
// mails have gone to three addresses, only one of which is its address
// now. Every mail is sent (the verification to third@ too: its link no
// longer in the row) but the last, a reset link to second@ still queued.
func movedAccount(t *testing.T, x *env) account {
	t.Helper()
	a := x.signup(t, "first@example.com")
	wantStatus(t, x.verify(t, nil, x.mail(t, "first@example.com", "Confirm").Token(), "password", pw), http.StatusOK)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "first@example.com"}), http.StatusAccepted)
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "second@example.com"}), http.StatusAccepted)
	wantStatus(t, x.verify(t, nil, x.mail(t, "second@example.com", "Confirm").Token(), "password", pw), http.StatusOK)
	x.flush(t)
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "third@example.com"}), http.StatusAccepted)
	x.flush(t)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "second@example.com"}), http.StatusAccepted)
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE lower(to_address) IN ('first@example.com', 'third@example.com')`); n < 4 {
		t.Fatalf("%d mails to the account's former and pending addresses, want 4 or more: the test no longer shows what it checks", n)
	}
	return a
}

// TestDeletedAccountLeavesNoAddressInTheMailQueue: an account's deletion
// erases every row of mail_queue the account caused, to whichever
// address it went: the verification and reset mails and the notice of
// the move sent to its former address, the verification of an address
// change not yet confirmed, not only the mails to its address of the
// moment (which the confirmation of the deletion goes to, and which
// leaves once sent). They stayed until the retention sweep, days later.
func TestDeletedAccountLeavesNoAddressInTheMailQueue(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := movedAccount(t, x)
	x.signup(t, "bystander@example.com")

	wantStatus(t, x.Send(t, &a.id, http.MethodDelete, "/api/v1/users/me/account", nil), http.StatusNoContent)

	for _, addr := range []string{"first@example.com", "third@example.com"} {
		if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE lower(to_address) = $1`, addr); n != 0 {
			t.Errorf("%d rows of mail_queue hold the deleted account's address %s, want 0", n, addr)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE lower(to_address) = 'second@example.com' AND kind <> 'account_deleted'`); n != 0 {
		t.Errorf("%d rows of mail_queue hold the deleted account's current address, want 0 but the confirmation", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE user_id IS NOT NULL AND user_id::text = $1`, a.c.Sub); n != 0 {
		t.Errorf("%d rows of mail_queue name the deleted account, want 0", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE to_address = 'second@example.com' AND kind = 'account_deleted'`); n != 1 {
		t.Errorf("%d confirmations of the deletion, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE to_address = 'bystander@example.com'`); n != 1 {
		t.Errorf("another account's mails: %d rows, want 1 (kept)", n)
	}
	x.mail(t, "second@example.com", "deleted")
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE lower(to_address) IN ('first@example.com', 'second@example.com', 'third@example.com')`); n != 0 {
		t.Errorf("%d rows of mail_queue hold an address of the deleted account once the confirmation is sent, want 0", n)
	}
}

// TestAccountMailsNameTheirAccount: every mail queued about an account
// (verification of a new account's address and of an address to change
// to, reset link, notice of a move to the previous address, security
// notice of a password change) names it in mail_queue.user_id, whichever
// address it goes to: that is what the account's deletion finds them by.
func TestAccountMailsNameTheirAccount(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := movedAccount(t, x)
	wantStatus(t, x.Send(t, &a.id, http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": pw, "new_password": "the owner's new password"}), http.StatusOK)
	// The reset link to second@, still queued, went with the password
	// change, which ended it; the one to first@ was sent.
	want := map[string]int{"verify_email": 3, "password_reset": 1, "email_changed": 1, "password_changed": 1}
	for kind, n := range want {
		if got := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = $1 AND user_id::text = $2`, kind, a.c.Sub); got != n {
			t.Errorf("%d %s mails name the account, want %d", got, kind, n)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE user_id IS NULL`); n != 0 {
		t.Errorf("%d mails name no account, want 0", n)
	}
}
