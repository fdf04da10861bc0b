package auth_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail/mailtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// mailbox is an SMTP server in the test process and a sender of the test
// database's mail queue to it.
type mailbox struct {
	smtp   *mailtest.Server
	sender *mail.Sender
}

func (e *env) mailbox(t *testing.T) *mailbox {
	t.Helper()
	srv := mailtest.Start(t)
	tr, err := mail.ParseSMTPURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	s, err := mail.NewSender(mail.SenderOptions{Pool: e.DB.Pool, Transport: tr, From: "no-reply@example.com",
		Links: mail.DefaultLinks(issuer), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &mailbox{smtp: srv, sender: s}
}

// to sends what is queued and returns every mail rcpt has received but
// the sign-up's verification mail.
func (m *mailbox) to(t *testing.T, rcpt string) []mailtest.Message {
	t.Helper()
	for {
		n, err := m.sender.SendDue(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	var out []mailtest.Message
	for _, msg := range m.smtp.Messages() {
		if msg.Subject == "Confirm your email address" {
			continue
		}
		for _, r := range msg.Rcpt {
			if strings.EqualFold(r, rcpt) {
				out = append(out, msg)
			}
		}
	}
	return out
}

// one is the one mail rcpt has received since it had seen mails (the
// count before), failing unless there is exactly one more.
func (m *mailbox) one(t *testing.T, rcpt string, seen int) mailtest.Message {
	t.Helper()
	got := m.to(t, rcpt)
	if len(got) != seen+1 {
		t.Fatalf("%d mails to %s, want %d", len(got), rcpt, seen+1)
	}
	return got[seen]
}

// body is the raw mail with its quoted-printable encoding undone.
func body(m mailtest.Message) string {
	return strings.NewReplacer("=\r\n", "", "=3D", "=").Replace(m.Raw)
}

// wantNotice checks a security notice: its subject, what it says
// happened, that it happened between from and to, and that it points at
// the forgot page (no link with a token).
func wantNotice(t *testing.T, m mailtest.Message, subject, says string, from, to time.Time) {
	t.Helper()
	b := body(m)
	if !strings.Contains(m.Subject, subject) {
		t.Errorf("subject %q, want it to say %q", m.Subject, subject)
	}
	if !strings.Contains(b, says) {
		t.Errorf("the notice does not say %q:\n%s", says, b)
	}
	date := func(at time.Time) string { return at.UTC().Format("2 January 2006 15:04 MST") }
	if !strings.Contains(b, date(from)) && !strings.Contains(b, date(to)) {
		t.Errorf("the notice does not say when (%s):\n%s", date(from), b)
	}
	if !strings.Contains(b, issuer+"/reset-password") {
		t.Errorf("the notice does not point at the forgot page:\n%s", b)
	}
	if m.Token() != "" {
		t.Errorf("the notice carries a link with a token:\n%s", b)
	}
}

func (e *env) verifyAddress(t *testing.T, userID string) {
	t.Helper()
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, userID); err != nil {
		t.Fatal(err)
	}
}

// TestPasswordChangeNotice: a password change tells the account's
// verified address, in one mail queued in the change's transaction; a
// refused change, or one rolled back after the password was written (its
// session ended meanwhile), mails nothing, and neither does a change of
// an account whose address was never proven.
func TestPasswordChangeNotice(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	box := e.mailbox(t)
	const addr = "pc@example.com"
	tk := e.signup(t, addr, "PC")
	as := e.identityFor(t, tk)
	e.verifyAddress(t, as.UserID)
	change := func(as *identity.Identity, current, next string) int {
		return e.Send(t, as, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": current, "new_password": next}).Status
	}
	if st := change(as, "wrong one", "a brand new password"); st != http.StatusForbidden {
		t.Fatalf("wrong current password: %d", st)
	}
	// A second session, ended before its change: the change's transaction
	// writes the password, then finds the session gone and rolls back.
	ended := e.identityFor(t, e.login(t, addr))
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE sessions SET revoked_at = now() WHERE id = $1`, ended.SessionID); err != nil {
		t.Fatal(err)
	}
	if st := change(ended, pw, "a brand new password"); st != http.StatusUnauthorized {
		t.Fatalf("change with an ended session: %d, want 401", st)
	}
	if r := e.token(t, map[string]string{"grant_type": "password", "email": addr, "password": pw}); r.Status != http.StatusOK {
		t.Fatalf("the rolled-back change changed the password: %d", r.Status)
	}
	if n := len(box.to(t, addr)); n != 0 {
		t.Fatalf("%d mails after refused and rolled-back changes, want none", n)
	}

	from := time.Now()
	if st := change(as, pw, "a brand new password"); st != http.StatusOK {
		t.Fatalf("change: %d", st)
	}
	wantNotice(t, box.one(t, addr, 0), "password of your account was changed", "was changed on", from, time.Now())

	unproven := e.identityFor(t, e.signup(t, "unproven-pc@example.com", "U"))
	if st := change(unproven, pw, "a brand new password"); st != http.StatusOK {
		t.Fatalf("change of an unproven account: %d", st)
	}
	if n := len(box.to(t, "unproven-pc@example.com")); n != 0 {
		t.Errorf("%d mails to an address never proven, want none", n)
	}
}

// TestSecondFactorNotices: confirming a TOTP factor and disabling it each
// tell the account's verified address, once; a wrong confirmation code
// and a disable refused for want of a recent second factor mail nothing;
// an address never proven hears of neither.
func TestSecondFactorNotices(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	box := e.mailbox(t)
	const addr = "factor@example.com"
	tk := e.signup(t, addr, "F")
	as := e.identityFor(t, tk)
	e.verifyAddress(t, as.UserID)
	en := e.enrol(t, as)
	wantStatus(t, "wrong code", e.confirm(t, as, codeAt(t, en.Secret, time.Now().Add(-time.Hour))), http.StatusBadRequest, "invalid_mfa_code")
	if n := len(box.to(t, addr)); n != 0 {
		t.Fatalf("%d mails after a wrong code, want none", n)
	}
	from := time.Now()
	wantStatus(t, "confirm", e.confirm(t, as, codeAt(t, en.Secret, time.Now())), http.StatusOK, "")
	wantNotice(t, box.one(t, addr, 0), "second factor was set up", "was set up for", from, time.Now())

	del := func() apitest.Response { return e.Send(t, as, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil) }
	// The confirmation is no step-up: the session gave no second factor.
	wantStatus(t, "disable without a recent factor", del(), http.StatusUnauthorized, "insufficient_user_authentication")
	if n := len(box.to(t, addr)); n != 1 {
		t.Fatalf("%d mails after a refused disable, want 1 (the enrolment's)", n)
	}
	r := e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, en.Secret, time.Now().Add(30*time.Second))})
	wantStatus(t, "step up", r, http.StatusOK, "")
	from = time.Now()
	wantStatus(t, "disable", del(), http.StatusNoContent, "")
	wantNotice(t, box.one(t, addr, 1), "second factor of your account was turned off", "was turned off on", from, time.Now())

	e.mfaUser(t, "unproven-factor@example.com")
	if n := len(box.to(t, "unproven-factor@example.com")); n != 0 {
		t.Errorf("%d mails to an address never proven, want none", n)
	}
}

// TestRecoveryCodesNotice: new recovery codes tell the account's
// verified address, once, as a way past the second factor for whoever
// asked for them; a request refused for want of a recent second factor
// mails nothing, and an address never proven hears nothing.
func TestRecoveryCodesNotice(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	box := e.mailbox(t)
	regen := func(as *identity.Identity) apitest.Response {
		return e.Send(t, as, http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil)
	}
	stepUp := func(as *identity.Identity, secret string) {
		t.Helper()
		r := e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, secret, time.Now().Add(30*time.Second))})
		wantStatus(t, "step up", r, http.StatusOK, "")
	}
	const addr = "codes@example.com"
	tk, secret, _ := e.mfaUser(t, addr)
	as := e.identityFor(t, tk)
	// Proven after the enrolment, which so told nobody.
	e.verifyAddress(t, as.UserID)
	// The confirmation is no step-up: the session gave no second factor.
	wantStatus(t, "new codes without a recent factor", regen(as), http.StatusUnauthorized, "insufficient_user_authentication")
	if n := len(box.to(t, addr)); n != 0 {
		t.Fatalf("%d mails after a refused request, want none", n)
	}
	stepUp(as, secret)
	from := time.Now()
	wantStatus(t, "new codes", regen(as), http.StatusOK, "")
	wantNotice(t, box.one(t, addr, 0), "New recovery codes were made", "New recovery codes for the second factor", from, time.Now())

	const unproven = "unproven-codes@example.com"
	tk, secret, _ = e.mfaUser(t, unproven)
	as = e.identityFor(t, tk)
	stepUp(as, secret)
	wantStatus(t, "new codes of an unproven account", regen(as), http.StatusOK, "")
	if n := len(box.to(t, unproven)); n != 0 {
		t.Errorf("%d mails to an address never proven, want none", n)
	}
}

// TestAdminMFAResetNotice: a tenant admin's reset of a member's second
// factor tells the member's verified address that an administrator did
// it; a refused reset mails nothing.
func TestAdminMFAResetNotice(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	box := e.mailbox(t)
	_, ownerAs, member := e.ownerAndEnrolledMember(t)
	const addr = "member@example.com" // ownerAndEnrolledMember's
	// Proven after the enrolment, which so told nobody.
	e.verifyAddress(t, member.UserID)
	reset := func(as *identity.Identity) apitest.Response {
		return e.Send(t, as, http.MethodDelete, "/api/v1/users/"+member.UserID+"/mfa", nil)
	}
	// A member of another tenant too: the reset is refused, in its
	// transaction.
	elsewhere := e.SeedTenant(t, "Elsewhere")
	e.SeedMember(t, elsewhere.ID, member.UserID, "member")
	wantStatus(t, "member of another tenant", reset(ownerAs), http.StatusForbidden, "forbidden")
	if n := len(box.to(t, addr)); n != 0 {
		t.Fatalf("%d mails after a refused reset, want none", n)
	}
	if _, err := e.DB.Pool.Exec(context.Background(), `DELETE FROM memberships WHERE tenant_id = $1`, elsewhere.ID); err != nil {
		t.Fatal(err)
	}
	from := time.Now()
	wantStatus(t, "reset", reset(ownerAs), http.StatusNoContent, "")
	wantNotice(t, box.one(t, addr, 0), "removed by an administrator", "An administrator removed", from, time.Now())
	if n := len(box.to(t, "owner@example.com")); n != 0 {
		t.Errorf("%d mails to the admin who reset, want none", n)
	}
}

// TestOperatorMFAResetNotice: the operator's reset (coreapi users
// reset-mfa) tells the account's verified address as an admin's does;
// a service account, which has no mailbox, and an address never proven
// get nothing, and their resets go through.
func TestOperatorMFAResetNotice(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	box := e.mailbox(t)
	ctx := context.Background()
	seed := func(email, kind string, verified bool) string {
		t.Helper()
		var uid string
		if err := e.DB.Pool.QueryRow(ctx, `INSERT INTO users (email, kind, email_verified_at) VALUES ($1, $2, CASE WHEN $3 THEN now() END) RETURNING id::text`,
			email, kind, verified).Scan(&uid); err != nil {
			t.Fatal(err)
		}
		if _, err := e.DB.Pool.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, uid); err != nil {
			t.Fatal(err)
		}
		return uid
	}
	ss := sessions.New(e.DB.Pool, time.Hour, 10*time.Second)
	for _, c := range []struct {
		email, kind string
		verified    bool
		mails       int
	}{
		{"lost@example.com", "human", true, 1},
		{"unproven-lost@example.com", "human", false, 0},
		{"robot@service-accounts.invalid", "service", true, 0},
	} {
		uid := seed(c.email, c.kind, c.verified)
		from := time.Now()
		if _, err := auth.ResetMFA(ctx, e.DB.Pool, ss, uid, "operator-test"); err != nil {
			t.Fatalf("%s: reset: %v", c.email, err)
		}
		got := box.to(t, c.email)
		if len(got) != c.mails {
			t.Fatalf("%s: %d mails, want %d", c.email, len(got), c.mails)
		}
		if c.mails == 1 {
			wantNotice(t, got[0], "removed by an administrator", "An administrator removed", from, time.Now())
		}
	}
	if n := e.count(t, `SELECT count(*) FROM mail_queue`); n != 1 {
		t.Errorf("%d mails queued, want 1", n)
	}
}
