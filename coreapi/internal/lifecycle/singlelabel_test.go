package lifecycle_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestMailToAStoredSingleLabelAddress: an account whose address was
// stored before single-label domains were refused ("lee@localhost") gets
// no mail, and no mail goes unseen: a reset asked for on the forgot
// route (which answers alike whatever the address) is parked with the
// reason, its token never stored or made, for the operator to see; a
// signed-in resend of the verification is refused with a reason that says
// what to do; nothing reaches the mail server.
func TestMailToAStoredSingleLabelAddress(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "lee@example.com")
	x.flush(t)
	const legacy = "lee@localhost"
	x.exec(t, `UPDATE users SET email = $2 WHERE id = $1`, a.c.Sub, legacy)
	x.exec(t, `DELETE FROM action_tokens WHERE user_id = $1`, a.c.Sub)

	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": legacy}), http.StatusAccepted)
	x.flush(t)
	var status, lastError string
	var hasToken bool
	if err := x.DB.Pool.QueryRow(t.Context(), `SELECT status, coalesce(last_error, ''), token IS NOT NULL FROM mail_queue
		WHERE to_address = $1 AND kind = 'password_reset'`, legacy).Scan(&status, &lastError, &hasToken); err != nil {
		t.Fatalf("the reset mail to %s: %v (want one row, parked)", legacy, err)
	}
	if status != "parked" || !strings.Contains(lastError, "single label") || hasToken {
		t.Errorf("the reset mail: status %q, last_error %q, token kept %v; want parked, naming the single label, no token", status, lastError, hasToken)
	}
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1`, a.c.Sub); n != 0 {
		t.Errorf("%d links made for an address no mail goes to", n)
	}

	r := x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil)
	wantProblem(t, r, http.StatusUnprocessableEntity, problem.CodeValidation)
	if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "email" || !strings.Contains(p.Errors[0].Message, "single label") ||
		!strings.Contains(p.Errors[0].Message, "change the address") {
		t.Errorf("the resend's refusal does not say why or what to do: %s", r.Body)
	}
	if n := x.mailsTo(legacy); n != 0 {
		t.Errorf("%d mails reached the server for %s", n, legacy)
	}
}

// TestEmailChangedNoticeToAStoredSingleLabelAddress: an account whose
// proven address was stored before single-label domains were refused
// moves to a new address; the notice its old address would get is parked
// with the reason, for the operator to see, not dropped unseen, and
// nothing reaches the mail server for the old address.
func TestEmailChangedNoticeToAStoredSingleLabelAddress(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "lee@example.com")
	x.flush(t)
	const legacy = "lee@localhost"
	x.exec(t, `UPDATE users SET email = $2, email_verified_at = now() WHERE id = $1`, a.c.Sub, legacy)

	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "lee.new@example.com"}), http.StatusAccepted)
	x.flush(t)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email",
		map[string]string{"token": x.mail(t, "lee.new@example.com", "Confirm").Token(), "password": pw}), http.StatusOK)
	x.flush(t)
	var status, lastError string
	if err := x.DB.Pool.QueryRow(t.Context(), `SELECT status, coalesce(last_error, '') FROM mail_queue
		WHERE to_address = $1 AND kind = 'email_changed'`, legacy).Scan(&status, &lastError); err != nil {
		t.Fatalf("the notice to %s: %v (want one row, parked)", legacy, err)
	}
	if status != "parked" || !strings.Contains(lastError, "single label") {
		t.Errorf("the notice: status %q, last_error %q; want parked, naming the single label", status, lastError)
	}
	if n := x.mailsTo(legacy); n != 0 {
		t.Errorf("%d mails reached the server for %s", n, legacy)
	}
}
