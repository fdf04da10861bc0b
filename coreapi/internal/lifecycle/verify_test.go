package lifecycle_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail/mailtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

func TestSignupVerification(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "ada@example.com")
	if m := x.me(t, a); m.EmailVerified {
		t.Fatal("a fresh signup is verified")
	}
	if x.projection(t, a).EmailVerified {
		t.Fatal("the projection says verified before the link was used")
	}
	m := x.mail(t, "ada@example.com", "Confirm your email")
	tok := m.Token()
	if tok == "" || !strings.Contains(m.Raw, "http://localhost:8080/verify-email?token=") {
		t.Fatalf("no verification link in:\n%s", m.Raw)
	}
	// The queue row no longer holds the raw token; the token row holds
	// only its hash.
	if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE token IS NOT NULL`); n != 0 {
		t.Errorf("%d mail rows still hold a raw token after sending", n)
	}
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, tok); n != 1 {
		t.Error("the token is not stored as its SHA-256")
	}

	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": tok, "password": pw})
	wantStatus(t, r, http.StatusOK)
	if got := x.me(t, a); !got.EmailVerified || got.Email != "ada@example.com" {
		t.Errorf("after verify: %+v", got)
	}
	if !x.projection(t, a).EmailVerified {
		t.Error("projection not verified after verify")
	}
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = 'user.email_verified'`, invalidation.UserSubject(a.c.Sub)); n != 1 {
		t.Errorf("%d invalidations for the verification, want 1", n)
	}
	for _, action := range []string{"user.verification_sent", "user.email_verified"} {
		if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = $1 AND target_id = $2`, action, a.c.Sub); n != 1 {
			t.Errorf("audit %s: %d rows, want 1", action, n)
		}
	}
	// Single use.
	r = x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": tok})
	wantProblem(t, r, http.StatusBadRequest, problem.CodeLinkInvalid)
}

func TestVerifyBadTokens(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "bob@example.com")
	tok := x.mail(t, "bob@example.com", "Confirm").Token()
	last := byte('A')
	if tok[len(tok)-1] == 'A' {
		last = 'B'
	}
	tampered := tok[:len(tok)-1] + string(last)
	if tampered == tok {
		t.Fatal("tampering failed")
	}
	for _, tt := range []struct {
		name, token string
		status      int
		code        string
	}{
		{"tampered", tampered, 400, problem.CodeLinkInvalid},
		{"unknown", "nope", 400, problem.CodeLinkInvalid},
		{"too long", strings.Repeat("a", 300), 400, problem.CodeLinkInvalid},
		{"empty", "", 422, problem.CodeValidation},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": tt.token})
			wantProblem(t, r, tt.status, tt.code)
		})
	}
	t.Run("not json", func(t *testing.T) {
		r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/verify-email", Body: "token=x", ContentType: "text/plain"})
		wantProblem(t, r, http.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia)
	})
	t.Run("unknown field", func(t *testing.T) {
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": tok, "email": "x@example.com"})
		wantProblem(t, r, http.StatusUnprocessableEntity, "unknown_field")
	})
	t.Run("a reset token", func(t *testing.T) {
		wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "bob@example.com"}), 202)
		reset := x.mail(t, "bob@example.com", "Reset").Token()
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": reset})
		wantProblem(t, r, http.StatusBadRequest, problem.CodeLinkInvalid)
		// ... and the refused attempt did not burn it for its own purpose.
		wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": reset, "new_password": "another long one"}), 204)
	})
	t.Run("expired", func(t *testing.T) {
		x.exec(t, `UPDATE action_tokens SET expires_at = now() - interval '1 second' WHERE purpose = 'verify_email'`)
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": tok})
		wantProblem(t, r, http.StatusBadRequest, problem.CodeLinkExpired)
		// Still expired, not unknown, until the sweep deletes it.
		r = x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": tok})
		wantProblem(t, r, http.StatusBadRequest, problem.CodeLinkExpired)
	})
	// The reset verified the address (the link reached it); the tampered,
	// unknown and expired tokens changed nothing else.
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE payload->>'reason' = 'user.email_verified'`); n != 0 {
		t.Errorf("a refused token verified something (%d rows)", n)
	}
	_ = a
}

func TestResendVerification(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{Resend: limit(2)})
	a := x.signup(t, "cy@example.com")
	first := x.mail(t, "cy@example.com", "Confirm").Token()
	r := x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil)
	wantStatus(t, r, http.StatusAccepted)
	x.flush(t)
	if n := x.mailsTo("cy@example.com"); n != 2 {
		t.Fatalf("%d mails, want 2", n)
	}
	second := x.mail(t, "cy@example.com", "Confirm").Token()
	if second == first {
		t.Fatal("resend mailed the same token")
	}
	// Only the newest link works.
	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": first}), 400, problem.CodeLinkInvalid)
	// Rate limit: the second resend passes, the third is 429.
	wantStatus(t, x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil), http.StatusAccepted)
	r = x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil)
	wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	third := x.mail(t, "cy@example.com", "Confirm").Token()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": third, "password": pw}), 200)
	b := x.signup(t, "dee@example.com")
	x.exec(t, `UPDATE users SET email_verified_at = now() WHERE id = $1`, b.c.Sub)
	wantProblem(t, x.Send(t, &b.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil), http.StatusConflict, problem.CodeAlreadyVerified)
}

// TestPendingEmailChangeKeptFromTheAudit: a pending email change is
// audited in every tenant of the user (user.verification_sent with
// email_change, and user.email_change_requested), including tenants other
// than the one it was asked in, on the request and on a resend; none of
// them gets the new address, not even masked (its first character and
// its domain), until it is confirmed: a typo or someone else's mailbox, or
// a private address the owner never confirms, would otherwise reach every
// admin of every tenant through GET /audit-events. The completed change
// (user.email_changed) names it: it is the account's address then, which
// each tenant's member list shows.
func TestPendingEmailChangeKeptFromTheAudit(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "mover@example.com")
	b := x.signup(t, "neighbour@example.com")
	x.exec(t, `INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)`, b.c.Tid, a.c.Sub)
	const secret = "private.new@elsewhere.example"
	const domain = "elsewhere.example"

	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": secret}), http.StatusAccepted)
	// Sent before the resend, which drops the mail of the link it
	// replaces while it is still queued.
	x.flush(t)
	wantStatus(t, x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil), http.StatusAccepted)
	x.flush(t)
	if n := x.mailsTo(secret); n != 2 {
		t.Fatalf("%d mails to the new address, want 2 (request and resend)", n)
	}
	for _, as := range []struct {
		name, tenant string
		who          account
	}{
		{"the other tenant's owner", b.c.Tid, b},
		{"the mover in their own tenant", a.c.Tid, a},
	} {
		r := x.Get(t, &as.who.id, "/api/v1/audit-events?limit=200")
		wantStatus(t, r, http.StatusOK)
		var list struct {
			Data []struct {
				Action   string         `json:"action"`
				TargetID *string        `json:"target_id"`
				Data     map[string]any `json:"data"`
			} `json:"data"`
		}
		r.JSON(t, &list)
		sent, requested := 0, 0
		for _, e := range list.Data {
			if e.TargetID == nil || *e.TargetID != a.c.Sub {
				continue
			}
			switch e.Action {
			case "user.verification_sent":
				if e.Data["email_change"] != true {
					// The sign-up's link, to the account's own address,
					// which the member list shows: named.
					if e.Data["email"] != "mover@example.com" {
						t.Errorf("%s: verification_sent of the account's address: %v, want it named", as.name, e.Data)
					}
					continue
				}
				sent++
				if _, ok := e.Data["email"]; ok {
					t.Errorf("%s: verification_sent of the change names an address: %v", as.name, e.Data)
				}
			case "user.email_change_requested":
				requested++
			}
		}
		if sent != 2 || requested != 1 {
			t.Errorf("%s: %d verification_sent events of the change (want 2: request and resend), %d email_change_requested (want 1)",
				as.name, sent, requested)
		}
		if body := strings.ToLower(string(r.Body)); strings.Contains(body, domain) {
			t.Errorf("%s reads the unconfirmed address (or its domain) in the audit log: %s", as.name, r.Body)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE strpos(lower(data::text), $1) > 0`, domain); n != 0 {
		t.Fatalf("%d audit events hold the unconfirmed address or its domain", n)
	}

	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": x.mail(t, secret, "Confirm").Token(), "password": pw}), 200)
	for _, tid := range []string{a.c.Tid, b.c.Tid} {
		if n := x.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'user.email_changed'
			AND data->>'from' = 'mover@example.com' AND data->>'to' = $2`, tid, secret); n != 1 {
			t.Errorf("tenant %s: %d email_changed events naming the confirmed address, want 1", tid, n)
		}
	}
}

func TestEmailChange(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "old@example.com")
	other := x.signup(t, "taken@example.com")
	// A reset link mailed to the old address, outstanding.
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "old@example.com"}), 202)
	reset := x.mail(t, "old@example.com", "Reset").Token()

	r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "new@example.com"})
	wantStatus(t, r, http.StatusAccepted)
	if m := x.me(t, a); m.Email != "old@example.com" {
		t.Fatalf("the address changed before it was verified: %+v", m)
	}
	m := x.mail(t, "new@example.com", "Confirm")
	if !strings.Contains(m.Raw, "change the email address") {
		t.Errorf("not an email-change mail:\n%s", m.Raw)
	}
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": m.Token(), "password": pw}), 200)
	if got := x.me(t, a); got.Email != "new@example.com" || !got.EmailVerified {
		t.Errorf("after verify: %+v", got)
	}
	if p := x.projection(t, a); p.Email != "new@example.com" || !p.EmailVerified {
		t.Errorf("projection after the change: %+v", p)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.email_changed' AND target_id = $1`, a.c.Sub); n != 1 {
		t.Errorf("email change audited %d times", n)
	}
	// The reset link of the old address died with it.
	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": reset, "new_password": "brand new password"}), 400, problem.CodeLinkInvalid)

	t.Run("address of another account", func(t *testing.T) {
		r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "TAKEN@example.com"})
		wantProblem(t, r, http.StatusConflict, problem.CodeEmailTaken)
	})
	t.Run("taken between request and verify", func(t *testing.T) {
		wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "race@example.com"}), 202)
		tok := x.mail(t, "race@example.com", "Confirm").Token()
		x.exec(t, `UPDATE users SET email = 'race@example.com' WHERE id = $1`, other.c.Sub)
		wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": tok, "password": pw}), 409, problem.CodeEmailTaken)
		if got := x.me(t, a); got.Email != "new@example.com" {
			t.Errorf("address after the refused change: %s", got.Email)
		}
	})
	for _, bad := range []string{"new@example.com\r\nBcc: evil@example.com", "Eve <e@example.com>", "not an address", "a@b.c, d@e.f"} {
		t.Run("bad address "+strings.ReplaceAll(bad, "\r\n", `\r\n`), func(t *testing.T) {
			r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": bad})
			wantProblem(t, r, http.StatusUnprocessableEntity, problem.CodeValidation)
		})
	}
	t.Run("same address", func(t *testing.T) {
		r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "NEW@example.com"})
		wantProblem(t, r, http.StatusUnprocessableEntity, problem.CodeValidation)
	})
	t.Run("empty body", func(t *testing.T) {
		r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{})
		wantProblem(t, r, http.StatusUnprocessableEntity, problem.CodeValidation)
	})
}

// TestEmailChangeSameAddressAsTheDatabaseSeesIt: whether an email change
// names the account's own address is decided as the database decides who
// holds an address (unique on lower(email)). There "İnci" (U+0130) is
// "inci": sign-up with it is refused as taken, so a change to it is the
// same address (422, as "INCI" is), not a change that mails a link, moves
// the account to "another" address and tells the old one. "ſam" (U+017F
// LONG S) is not "sam" to the database, which strings.EqualFold, which
// decided before, said it was; it is a look-alike of "sam" (NFKC makes it
// "sam"), so neither a change to it nor a sign-up with it is taken
// (mail.ValidNewAddress; mail's TestSameAddressIsLower keeps the
// comparison itself).
func TestEmailChangeSameAddressAsTheDatabaseSeesIt(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	t.Run("dotted capital I is i", func(t *testing.T) {
		inci := x.signup(t, "inci@example.com")
		wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
			map[string]string{"email": "\u0130nci@example.com", "password": pw, "tenant_name": "T"}), http.StatusConflict, problem.CodeEmailTaken)
		r := x.Send(t, &inci.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "\u0130nci@example.com"})
		wantProblem(t, r, http.StatusUnprocessableEntity, problem.CodeValidation)
		if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND purpose = 'verify_email' AND email <> 'inci@example.com'`, inci.c.Sub); n != 0 {
			t.Errorf("%d verification links to another spelling of the account's own address", n)
		}
	})
	t.Run("long s is a look-alike of s", func(t *testing.T) {
		sam := x.signup(t, "sam@example.com")
		r := x.Send(t, &sam.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "\u017fam@example.com"})
		wantProblem(t, r, http.StatusUnprocessableEntity, problem.CodeValidation)
		x.signup(t, "sim@example.com")
		wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
			map[string]string{"email": "\u017fim@example.com", "password": pw, "tenant_name": "T"}), http.StatusUnprocessableEntity, problem.CodeValidation)
	})
}

// TestEmailChangeNoticeToTheOldAddress: a confirmed email change tells the
// account's previous address, when it was proven, that the account moved
// (to the new address, masked), in a mail without a link: whoever signed
// in with the password and moved the account to their mailbox, after
// which every reset link goes there, does not do it unnoticed. An address
// never proven gets no such mail (it may be anyone's).
func TestEmailChangeNoticeToTheOldAddress(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "owner@example.com")
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email",
		map[string]string{"token": x.mail(t, "owner@example.com", "Confirm").Token(), "password": pw}), 200)
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "thief@example.net"}), http.StatusAccepted)
	x.flush(t)
	if n := x.mailsTo("owner@example.com"); n != 1 {
		t.Fatalf("%d mails to the old address before the change was confirmed, want 1 (its verification)", n)
	}
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email",
		map[string]string{"token": x.mail(t, "thief@example.net", "Confirm").Token(), "password": pw}), 200)
	n := x.mail(t, "owner@example.com", "changed")
	if !strings.Contains(n.Raw, "t***@example.net") {
		t.Errorf("the notice does not name the new address, masked:\n%s", n.Raw)
	}
	if strings.Contains(n.Raw, "thief@") || n.Token() != "" {
		t.Errorf("the notice shows the new address in full, or carries a link:\n%s", n.Raw)
	}

	b := x.signup(t, "unproven@example.com")
	// Its verification is sent before the change, which drops it while
	// it is still queued.
	x.flush(t)
	wantStatus(t, x.Send(t, &b.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "moved@example.net"}), http.StatusAccepted)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email",
		map[string]string{"token": x.mail(t, "moved@example.net", "Confirm").Token(), "password": pw}), 200)
	x.flush(t)
	if n := x.mailsTo("unproven@example.com"); n != 1 {
		t.Errorf("%d mails to an address never proven, want 1 (its verification): no notice", n)
	}
}

// Each email change mails someone: at most 5 an hour per user.
func TestEmailChangeRateLimited(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "kim@example.com")
	for i := range 5 {
		r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "kim" + string(rune('a'+i)) + "@example.com"})
		wantStatus(t, r, http.StatusAccepted)
	}
	r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "kimz@example.com"})
	wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// A display-name change is not limited.
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Kim"}), http.StatusOK)
}

// TestVerificationMailsPerAddressLimited: email changes and resends mail
// an address nobody has proven, and each account's own limits say
// nothing of the address. Accounts signed up for the purpose, each asking
// to move to one mailbox, mail it at most onetime.AddressMailLimit times
// an hour together (429 after, nothing mailed), and a resend to it is
// refused too; another address is not held back.
func TestVerificationMailsPerAddressLimited(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	const victim = "inbox@example.org"
	n := onetime.AddressMailLimit().N
	var first account
	for i := range n + 1 {
		a := x.signup(t, fmt.Sprintf("flood%d@example.com", i))
		if i == 0 {
			first = a
		}
		r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": victim})
		if i < n {
			wantStatus(t, r, http.StatusAccepted)
			continue
		}
		wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
		if r.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		// Another address is not held back by this one's limit.
		wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "elsewhere@example.org"}), http.StatusAccepted)
	}
	// A resend of a pending change to the address counts with them.
	r := x.Send(t, &first.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil)
	wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
	x.flush(t)
	if got := x.mailsTo(victim); got != n {
		t.Fatalf("%d verification mails to %s, want %d", got, victim, n)
	}
}

// The limit is the inbox's, not the address's: accounts moved to
// "inbox+1@…", "inbox+2@…" and so on all mail one inbox, and each tag
// used to be a fresh budget of AddressMailLimit mails.
func TestVerificationMailsPerInboxLimited(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	n := onetime.AddressMailLimit().N
	for i := range n + 1 {
		a := x.signup(t, fmt.Sprintf("tagflood%d@example.com", i))
		r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": fmt.Sprintf("Inbox+%d@example.org", i)})
		if i < n {
			wantStatus(t, r, http.StatusAccepted)
			continue
		}
		wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
		// Another inbox is not held back by this one's limit.
		wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "inbox2+1@example.org"}), http.StatusAccepted)
	}
	if got := x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'verify_email' AND lower(to_address) LIKE 'inbox+%@example.org'`); got != n {
		t.Fatalf("%d verification mails to one inbox, want %d", got, n)
	}
}

// The inbox's domain is one however it is spelled: in Unicode or in
// Punycode, in any letter case, or in the fullwidth letters IDNA maps to
// it. Each spelling used to be an inbox of its own, with a budget of
// AddressMailLimit mails.
func TestVerificationMailsPerInboxAcrossDomainSpellings(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	spellings := []string{
		"inbox@b\u00fccher.example",
		"inbox@xn--bcher-kva.example",
		"inbox+a@B\u00dcCHER.example",
		"inbox+a@XN--BCHER-KVA.example",
		"inbox+b@\uff42\u00fc\uff43\uff48\uff45\uff52.example",
		"inbox+c@xn--bcher-kva.example",
		"inbox+c@b\u00fccher.example",
	}
	n := onetime.AddressMailLimit().N
	if len(spellings) <= n {
		t.Fatalf("%d spellings for a limit of %d", len(spellings), n)
	}
	for i, addr := range spellings[:n+1] {
		a := x.signup(t, fmt.Sprintf("idnflood%d@example.com", i))
		r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": addr})
		if i < n {
			wantStatus(t, r, http.StatusAccepted)
			continue
		}
		wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
		// Another domain is not held back by this one's limit.
		wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "inbox@b\u00fccher2.example"}), http.StatusAccepted)
	}
}

// Concurrent resends leave one working verification link, as sequential
// ones do.
func TestResendConcurrentLeavesOneLink(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{Resend: limit(100)})
	a := x.signup(t, "liv@example.com")
	atOnce(8, func() { x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil) })
	if n := x.liveLinks(t, a.c.Sub, "verify_email"); n != 1 {
		t.Fatalf("%d live verification links, want 1", n)
	}
}

// A mail to an address nobody has proven greets nobody by name: the name
// is whatever the one who signed up with the address (or asked to move an
// account to it) typed, and anyone can have the service mail it there, a
// password reset mail as often as the address's limit allows. Once the
// address is proven, the reset mail greets its owner by name again.
func TestUnprovenAddressMailsCarryNoName(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	const words = "Wirethefeeto4477"
	body := func(m mailtest.Message) string {
		return strings.ReplaceAll(m.Raw, "=\r\n", "") // undo quoted-printable soft breaks
	}
	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
		map[string]string{"email": "vic@example.com", "password": pw, "tenant_name": "T", "display_name": words})
	wantStatus(t, r, http.StatusCreated)
	verify := x.mail(t, "vic@example.com", "Confirm")
	if strings.Contains(body(verify), words) {
		t.Errorf("the sign-up's verification mail carries the name typed at sign-up:\n%s", verify.Raw)
	}
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "vic@example.com"}), 202)
	if m := x.mail(t, "vic@example.com", "Reset"); strings.Contains(body(m), words) {
		t.Errorf("the reset mail of an unverified account carries its name:\n%s", m.Raw)
	}

	// An account moving to someone else's address.
	a := x.signup(t, "mover@example.com")
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": words}), 200)
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "other@example.com"}), 202)
	if m := x.mail(t, "other@example.com", "Confirm"); strings.Contains(body(m), words) {
		t.Errorf("the email change's mail to the new address carries the account's name:\n%s", m.Raw)
	}

	// Proven: the owner is greeted by name.
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": verify.Token(), "password": pw}), 200)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "vic@example.com"}), 202)
	if m := x.mail(t, "vic@example.com", "Reset"); !strings.Contains(body(m), "Hello "+words) {
		t.Errorf("the reset mail of a verified account does not greet its owner by name:\n%s", m.Raw)
	}
}

// TestResendAndEmailChangeTakeLocksInOneOrder: an email change locks the
// account's row, then counts its mail against the address; a resend of
// that pending change counts against the same address. Were the resend to
// take the address's count first and the account's row after, the two
// would each wait for the other (a deadlock PostgreSQL ends by failing
// one of them). Here a transaction holds the account's row as an email
// change does while a resend starts, then counts a mail to the address:
// both succeed.
func TestResendAndEmailChangeTakeLocksInOneOrder(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "lockstep@example.com")
	const moved = "lockstep.new@example.com"
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": moved}), http.StatusAccepted)

	ctx := context.Background()
	tx, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, a.c.Sub); err != nil {
		t.Fatal(err)
	}
	done := make(chan apitest.Response, 1)
	go func() { done <- x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil) }()
	// Wait until the resend waits on a lock (or has finished, which it
	// cannot while the row is held).
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := x.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the resend never waited on a lock while the account's row was held")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := onetime.CountAddressMail(ctx, tx, moved); err != nil {
		t.Fatalf("counting a mail to the address while a resend waits: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	wantStatus(t, <-done, http.StatusAccepted)
}

// TestEmailChangeOfAnInactiveAccount: a disabled account, or one disabled
// in the session's tenant (or of a suspended tenant), can neither start an
// email change nor have the link of a pending one mailed again, with a
// bearer that a proxy which has not yet heard of the change still
// forwards: the link outlives the disabling (its verification is refused
// only while the account is disabled), and whoever held the session the
// account was disabled over would move it, and every later reset link, to
// their mailbox once it is enabled again. Nothing is mailed or stored, as
// for a password change; once active again both go through.
func TestEmailChangeAndItsResendOfAnInactiveAccount(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{Resend: limit(10)})
	a := x.signup(t, "inactive-move@example.com")
	states := []struct{ name, off, on string }{
		{"disabled account", `UPDATE users SET status = 'disabled' WHERE id = $1`, `UPDATE users SET status = 'active' WHERE id = $1`},
		{"disabled membership", `UPDATE memberships SET status = 'disabled' WHERE user_id = $1`, `UPDATE memberships SET status = 'active' WHERE user_id = $1`},
		{"suspended tenant", `UPDATE tenants SET status = 'suspended' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`,
			`UPDATE tenants SET status = 'active' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`},
	}
	const qLinks = `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND email = $2`
	for _, tc := range states {
		to := "moved-while-" + strings.ReplaceAll(tc.name, " ", "-") + "@example.com"
		x.exec(t, tc.off, a.c.Sub)
		wantProblem(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": to}),
			http.StatusForbidden, problem.CodeUserDisabled)
		x.exec(t, tc.on, a.c.Sub)
		if n := x.count(t, qLinks, a.c.Sub, to); n != 0 {
			t.Errorf("%s: %d links to the new address after a refused change", tc.name, n)
		}
		if n := x.count(t, `SELECT count(*) FROM mail_queue WHERE to_address = $1`, to); n != 0 {
			t.Errorf("%s: %d mails to the new address after a refused change", tc.name, n)
		}
	}
	// A change asked for while active is not mailed again while inactive.
	const pending = "pending-move@example.com"
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": pending}), http.StatusAccepted)
	first := x.mail(t, pending, "Confirm").Token()
	for _, tc := range states {
		x.exec(t, tc.off, a.c.Sub)
		wantProblem(t, x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil),
			http.StatusForbidden, problem.CodeUserDisabled)
		x.exec(t, tc.on, a.c.Sub)
	}
	x.flush(t)
	if n := x.mailsTo(pending); n != 1 {
		t.Fatalf("%d mails to the pending address, want the 1 of the change", n)
	}
	// The refusals left the change's link as it was.
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE token_hash = $1`, onetime.Hash(first)); n != 1 {
		t.Errorf("the pending change's link is gone after refused resends")
	}
	wantStatus(t, x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email/resend", nil), http.StatusAccepted)
	x.flush(t)
	if n := x.mailsTo(pending); n != 2 {
		t.Errorf("%d mails to the pending address once active, want 2", n)
	}
}
