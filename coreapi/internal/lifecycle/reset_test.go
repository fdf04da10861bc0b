package lifecycle_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

func TestForgotAndReset(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "eve@example.com")
	second := x.token(t, "eve@example.com", pw) // a second session
	wantStatus(t, second, 200)
	var tv0 int64
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT token_version FROM users WHERE id = $1`, a.c.Sub).Scan(&tv0); err != nil {
		t.Fatal(err)
	}

	known := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "EVE@example.com"})
	unknown := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "nobody@example.com"})
	wantStatus(t, known, http.StatusAccepted)
	wantStatus(t, unknown, http.StatusAccepted)
	if !bytes.Equal(known.Body, unknown.Body) {
		t.Errorf("forgot answers differ: %s vs %s", known.Body, unknown.Body)
	}
	x.flush(t)
	if n := x.mailsTo("nobody@example.com"); n != 0 {
		t.Errorf("%d mails to an address without an account", n)
	}
	first := x.mail(t, "eve@example.com", "Reset").Token()
	// A second request mails another link and leaves the first valid
	// (anyone may ask, and must not kill the link its owner is about to
	// open); using either ends both (below).
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "eve@example.com"}), 202)
	x.flush(t)
	tok := x.mail(t, "eve@example.com", "Reset").Token()
	if tok == first {
		t.Fatal("the second request mailed the same token")
	}
	if n := x.liveLinks(t, a.c.Sub, "password_reset"); n != 2 {
		t.Fatalf("%d live reset links after two requests, want 2", n)
	}

	// A weak password is refused and does not burn the token.
	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "short"}), 422, problem.CodeValidation)
	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "        "}), 422, problem.CodeValidation)

	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": tok, "new_password": "the new password"})
	wantStatus(t, r, http.StatusNoContent)

	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL`, a.c.Sub); n != 0 {
		t.Errorf("%d sessions survived the reset", n)
	}
	p := x.projection(t, a)
	if p.TokenVersion <= tv0 || !p.EmailVerified {
		t.Errorf("projection after reset: token_version %d (was %d), verified %v", p.TokenVersion, tv0, p.EmailVerified)
	}
	// The signup's tokens are refused by the version the reset bumped (so
	// the projection need not list the session, and does not).
	if a.c.Tv >= p.TokenVersion && !p.SessionRevoked(a.c.Sid) {
		t.Errorf("the signup's tokens (tv %d) are still accepted: token_version %d, session not listed", a.c.Tv, p.TokenVersion)
	}
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = 'user.password_reset'`, invalidation.UserSubject(a.c.Sub)); n != 1 {
		t.Errorf("%d invalidations for the reset, want 1", n)
	}
	for _, action := range []string{"user.password_reset_requested", "user.password_reset"} {
		if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = $1 AND target_id = $2`, action, a.c.Sub); n == 0 {
			t.Errorf("no audit %s", action)
		}
	}
	// The old refresh token is dead; the old password no longer works, the
	// new one does.
	rr := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": a.tok.RefreshToken})
	wantProblem(t, rr, 400, "invalid_grant")
	wantProblem(t, x.token(t, "eve@example.com", pw), 400, "invalid_grant")
	wantStatus(t, x.token(t, "eve@example.com", "the new password"), 200)
	// Single use, and the other link mailed died with it.
	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "yet another one"}), 400, problem.CodeLinkInvalid)
	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": first, "new_password": "yet another one"}), 400, problem.CodeLinkInvalid)
}

// TestForgotAnswersBeforeTheReset: the answer to a forgot request does not
// wait for the work a known address costs (its token, mail row, audit and
// commit), so its time says nothing about which addresses have accounts.
// The account's row is held locked, which holds that work up: the answer
// comes anyway, and the link follows once the lock is gone.
func TestForgotAnswersBeforeTheReset(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "mo@example.com")
	ctx := context.Background()
	tx, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, a.c.Sub); err != nil {
		t.Fatal(err)
	}
	answered := make(chan int, 1)
	go func() {
		r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/password/forgot", Body: map[string]string{"email": "mo@example.com"}})
		answered <- r.Status
	}()
	select {
	case st := <-answered:
		if st != http.StatusAccepted {
			t.Fatalf("forgot: %d, want 202", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the forgot answer for an address with an account waited for its reset work")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	tok := x.mail(t, "mo@example.com", "Reset").Token()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "the new password"}), http.StatusNoContent)
}

// TestResetClearsAnAdminSetPassword: a password a tenant admin chose for a
// new member (POST /users) is marked so, which keeps OIDC sign-ins from
// linking to the account; the member's reset replaces it with their own
// and clears the mark.
func TestResetClearsAnAdminSetPassword(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	admin := x.signup(t, "boss@example.com")
	wantStatus(t, x.Send(t, &admin.id, http.MethodPost, "/api/v1/users",
		map[string]string{"email": "hire@example.com", "password": "the admin's choice"}), http.StatusCreated)
	byAdmin := `SELECT count(*) FROM users WHERE email = 'hire@example.com' AND password_set_by_admin`
	if n := x.count(t, byAdmin); n != 1 {
		t.Fatalf("the member's password is not marked as set by an admin (%d rows)", n)
	}
	if n := x.count(t, `SELECT count(*) FROM users WHERE password_set_by_admin`); n != 1 {
		t.Fatalf("%d accounts marked, want only the member's (a signup chooses its own)", n)
	}
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "hire@example.com"}), 202)
	tok := x.mail(t, "hire@example.com", "Reset").Token()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "the member's own choice"}), http.StatusNoContent)
	if n := x.count(t, byAdmin); n != 0 {
		t.Fatal("the reset left the mark of an admin-set password")
	}
}

func TestResetBadInput(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	x.signup(t, "fay@example.com")
	verify := x.mail(t, "fay@example.com", "Confirm").Token()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "fay@example.com"}), 202)
	tok := x.mail(t, "fay@example.com", "Reset").Token()
	for _, tt := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"verification token", map[string]string{"token": verify, "new_password": "long enough pw"}, 400, problem.CodeLinkInvalid},
		{"tampered", map[string]string{"token": tok + "x", "new_password": "long enough pw"}, 400, problem.CodeLinkInvalid},
		{"no token", map[string]string{"new_password": "long enough pw"}, 422, problem.CodeValidation},
		{"no password", map[string]string{"token": tok}, 422, problem.CodeValidation},
		{"common password", map[string]string{"token": tok, "new_password": "Password123"}, 422, problem.CodeValidation},
		{"too long password", map[string]any{"token": tok, "new_password": string(bytes.Repeat([]byte("a"), 1025))}, 422, problem.CodeValidation},
		{"not an object", []byte(`["x"]`), 422, problem.CodeValidation},
		{"malformed", []byte(`{"token":`), 400, "malformed_json"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", tt.body), tt.status, tt.code)
		})
	}
	t.Run("the refusal says why", func(t *testing.T) {
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": tok, "new_password": "QWERTYUIOP"})
		if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "new_password" || !strings.Contains(p.Errors[0].Message, "common") {
			t.Errorf("common password refusal: %s", r.Body)
		}
	})
	t.Run("forgot without address", func(t *testing.T) {
		wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": " "}), 422, problem.CodeValidation)
	})
	t.Run("expired", func(t *testing.T) {
		x.exec(t, `UPDATE action_tokens SET expires_at = now() - interval '1 second' WHERE purpose = 'password_reset'`)
		wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
			map[string]string{"token": tok, "new_password": "long enough pw"}), 400, problem.CodeLinkExpired)
	})
}

func TestForgotRateLimits(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{ForgotPerAddress: limit(2), ForgotPerIP: limit(4)})
	x.signup(t, "gil@example.com")
	var bodies [][]byte
	for range 3 {
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "gil@example.com"})
		wantStatus(t, r, http.StatusAccepted)
		bodies = append(bodies, r.Body)
	}
	if !bytes.Equal(bodies[0], bodies[2]) {
		t.Errorf("the over-limit answer differs: %s vs %s", bodies[2], bodies[0])
	}
	x.flush(t)
	resets := 0
	for _, m := range x.smtp.Messages() {
		if m.Subject == "Reset your password" {
			resets++
		}
	}
	if resets != 2 {
		t.Errorf("%d reset mails, want 2 (the per-address limit)", resets)
	}
	// Per client IP: the 5th request from this address is 429, whatever
	// the email.
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "other@example.com"}), 202)
	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "third@example.com"})
	wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// The page's form is sent back to the page with the error, not
	// answered with the JSON problem a browser would show as it is.
	r = postForm(t, x, "/api/v1/auth/password/forgot", form("email", "fourth%40example.com"))
	if loc := r.Header.Get("Location"); r.Status != http.StatusSeeOther || loc != "/reset-password?error=too_many_requests" {
		t.Errorf("over-limit form: %d Location %q, want 303 to the page with the error", r.Status, loc)
	}
	// Another client IP (as forwarded by the proxy) is not limited.
	r = x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/password/forgot",
		Body: map[string]string{"email": "third@example.com"}, ClientIP: "192.0.2.7"})
	wantStatus(t, r, http.StatusAccepted)
}

// The per-address limit on reset mails counts the inbox: accounts at
// "gus+a@…", "gus+b@…" and "gus+c@…" (anyone may sign them up) share the
// inbox's budget rather than have one each.
func TestForgotLimitPerInbox(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{ForgotPerAddress: limit(2), ForgotPerIP: limit(100)})
	for _, tag := range []string{"a", "b", "c"} {
		x.signup(t, "gus+"+tag+"@example.com")
	}
	for _, tag := range []string{"a", "b", "C"} {
		r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "Gus+" + tag + "@example.com"})
		wantStatus(t, r, http.StatusAccepted)
	}
	x.flush(t)
	resets := 0
	for _, m := range x.smtp.Messages() {
		if m.Subject == "Reset your password" {
			resets++
		}
	}
	if resets != 2 {
		t.Errorf("%d reset mails to one inbox, want 2 (the per-address limit)", resets)
	}
}

// A password reset racing a sign-in with the old password: whichever
// wins, no session opened with the old password survives the reset, and
// none can be refreshed.
func TestResetRacingLogin(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{ForgotPerAddress: limit(100)})
	a := x.signup(t, "hal@example.com")
	for i := range 5 {
		wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "hal@example.com"}), 202)
		tok := x.mail(t, "hal@example.com", "Reset").Token()
		newPW := "new password number " + string(rune('a'+i))
		var (
			wg    sync.WaitGroup
			login apitest.Response
			reset apitest.Response
		)
		wg.Add(2)
		go func() { defer wg.Done(); login = x.token(t, "hal@example.com", currentPW(i)) }()
		go func() {
			defer wg.Done()
			reset = x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": tok, "new_password": newPW})
		}()
		wg.Wait()
		wantStatus(t, reset, http.StatusNoContent)
		if login.Status != http.StatusOK {
			continue // the reset won outright
		}
		var tk tokens
		login.JSON(t, &tk)
		c := claimsOf(t, tk.AccessToken)
		p := x.projection(t, a)
		if c.Tv >= p.TokenVersion && !p.SessionRevoked(c.Sid) {
			t.Fatalf("round %d: the racing sign-in's access token (tv %d, session %s) is still accepted (projection tv %d)", i, c.Tv, c.Sid, p.TokenVersion)
		}
		rr := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken})
		if rr.Status == http.StatusOK {
			t.Fatalf("round %d: the racing sign-in's session can still be refreshed", i)
		}
	}
}

func currentPW(round int) string {
	if round == 0 {
		return pw
	}
	return "new password number " + string(rune('a'+round-1))
}

// A service account (a user row of kind 'service') is never sent a reset
// link: it has no password, and its address is no mailbox.
func TestForgotIgnoresServiceAccounts(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	const addr = "0b7e7a2c-0000-4000-8000-000000000001@example.com"
	x.exec(t, `INSERT INTO users (email, display_name, kind, email_verified_at) VALUES ($1, 'bot', 'service', now())`, addr)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": addr}), http.StatusAccepted)
	if n := x.count(t, `SELECT count(*) FROM mail_queue`); n != 0 {
		t.Fatalf("%d mails queued for a service account", n)
	}
	// The same address as a person's gets its mail (the check above can fail).
	x.exec(t, `UPDATE users SET kind = 'human' WHERE email = $1`, addr)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": addr}), http.StatusAccepted)
	if n := x.count(t, `SELECT count(*) FROM mail_queue`); n != 1 {
		t.Fatalf("%d mails queued for a person, want 1", n)
	}
}

// A sign-in of an MFA account that checked the old password and waits for
// its second factor (an mfa_token) must not outlive a password reset:
// whoever knew the old password would otherwise open a session, with the
// new token version, after the owner took the account back.
func TestResetEndsPendingSecondFactorSignIn(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "ida@example.com")
	const code = "abcde-fghij"
	x.exec(t, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, a.c.Sub)
	x.exec(t, `INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2)`, a.c.Sub, mfa.HashRecovery(a.c.Sub, code))
	r := x.token(t, "ida@example.com", pw)
	if r.Status != http.StatusUnauthorized || r.Problem(t).Code != "mfa_required" {
		t.Fatalf("password grant of an MFA user: %d %s, want 401 mfa_required", r.Status, r.Body)
	}
	var ch struct {
		MFAToken string `json:"mfa_token"`
	}
	r.JSON(t, &ch)

	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "ida@example.com"}), 202)
	tok := x.mail(t, "ida@example.com", "Reset").Token()
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "the new password"}), http.StatusNoContent)

	r = x.Send(t, nil, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "mfa_otp", "mfa_token": ch.MFAToken, "code": code})
	wantProblem(t, r, http.StatusBadRequest, "invalid_grant")
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL`, a.c.Sub); n != 0 {
		t.Errorf("%d live sessions after the reset", n)
	}
}

// A password change kills the reset links mailed before it: a link that
// someone else got hold of must not undo the change (and sign the owner
// out) afterwards.
func TestPasswordChangeKillsResetLinks(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "joe@example.com")
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "joe@example.com"}), 202)
	tok := x.mail(t, "joe@example.com", "Reset").Token()
	r := x.Send(t, &a.id, http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": pw, "new_password": "the owner's new password"})
	wantStatus(t, r, http.StatusOK)
	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "the intruder's password"}), 400, problem.CodeLinkInvalid)
	wantStatus(t, x.token(t, "joe@example.com", "the owner's new password"), http.StatusOK)
}

// Concurrent forgot requests for one address each mail a link, as
// sequential ones do, and the first of them used ends every other.
func TestForgotConcurrentLinksEndTogether(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{ForgotPerAddress: limit(100), ForgotPerIP: limit(100)})
	a := x.signup(t, "kim@example.com")
	atOnce(8, func() {
		x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "kim@example.com"})
	})
	if n := x.liveLinks(t, a.c.Sub, "password_reset"); n != 8 {
		t.Fatalf("%d live reset links, want 8", n)
	}
	mails := x.resetMails(t)
	if len(mails) != 8 {
		t.Fatalf("%d reset mails, want 8", len(mails))
	}
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": mails[3].Token(), "new_password": "the new password"}), http.StatusNoContent)
	if n := x.liveLinks(t, a.c.Sub, "password_reset"); n != 0 {
		t.Fatalf("%d live reset links after one was used, want 0", n)
	}
}

// TestResetExpiredLinkCostsNoHash: an expired reset link is refused
// before the new password is hashed, each time it is sent.
func TestResetExpiredLinkCostsNoHash(t *testing.T) {
	t.Parallel()
	x := startHasher(t, lifecycle.Limits{}, nil, password.New(cheap, 1))
	a := x.signup(t, "lou@example.com")
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "lou@example.com"}), 202)
	tok := x.mail(t, "lou@example.com", "Reset").Token()
	x.exec(t, `UPDATE action_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1`, a.c.Sub)

	// Hold the hasher's only slot with a slow verification: a request
	// that hashes waits for it.
	slow := "$argon2id$v=19$m=16384,t=100,p=1$" + strings.Repeat("A", 22) + "$" + strings.Repeat("A", 43)
	held := make(chan struct{})
	go func() {
		defer close(held)
		_, _ = x.hasher.Verify(context.Background(), "x", slow)
	}()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, err := x.hasher.Hash(ctx, "probe password")
		cancel()
		if err != nil {
			break // the slot is taken
		}
	}
	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": tok, "new_password": "long enough pw"})
	select {
	case <-held:
		t.Error("the expired link waited for a password hash")
	default:
	}
	wantProblem(t, r, 400, problem.CodeLinkExpired)
	// Kept, known as expired, until the sweep (its page names whose it
	// was: TestExpiredLinkPagesNameTheAddress).
	wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "long enough pw"}), 400, problem.CodeLinkExpired)
	<-held
}

// An email change requested by whoever held a session, and not yet
// confirmed, must not outlive the owner taking the account back with a
// password reset, a password change or a sign-out everywhere: its link
// would otherwise move the account to the intruder's mailbox afterwards,
// and with it every later reset link. A verification link of the
// account's own address still works.
func TestPasswordRecoveryKillsPendingEmailChange(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"reset", "change", "logout"} {
		t.Run(how, func(t *testing.T) {
			x := start(t, lifecycle.Limits{})
			a := x.signup(t, "kai-"+how+"@example.com")
			intruder := "intruder-" + how + "@example.net"
			wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": intruder}), http.StatusAccepted)
			change := x.mail(t, intruder, "Confirm").Token()
			// A link of the account's own address, issued after the
			// change's request (which killed the signup's link).
			x.exec(t, `INSERT INTO action_tokens (token_hash, purpose, user_id, email, expires_at)
				VALUES ($1, 'verify_email', $2, $3, now() + interval '1 hour')`, onetime.Hash("own-"+how), a.c.Sub, a.email)

			// The password the owner holds afterwards: the link's proof.
			owners := "the owner's new password"
			switch how {
			case "reset":
				wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": a.email}), 202)
				tok := x.mail(t, a.email, "Reset").Token()
				wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
					map[string]string{"token": tok, "new_password": "the owner's new password"}), http.StatusNoContent)
			case "change":
				wantStatus(t, x.Send(t, &a.id, http.MethodPut, "/api/v1/users/me/password",
					map[string]string{"current_password": pw, "new_password": "the owner's new password"}), http.StatusOK)
			case "logout":
				wantStatus(t, x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/logout", map[string]string{"scope": "global"}), http.StatusNoContent)
				owners = pw
			}

			wantProblem(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": change}),
				http.StatusBadRequest, problem.CodeLinkInvalid)
			var email string
			if err := x.DB.Pool.QueryRow(context.Background(), `SELECT email FROM users WHERE id = $1`, a.c.Sub).Scan(&email); err != nil {
				t.Fatal(err)
			}
			if email != a.email {
				t.Fatalf("the address moved to %s after the owner took the account back", email)
			}
			wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": "own-" + how, "password": owners}), http.StatusOK)
		})
	}
}

// The per-IP limit of forgot-password counts an IPv6 client by its /64:
// requests from one address of the network use up its neighbour's
// allowance, not another /64's.
func TestForgotPerIPLimitGroupsIPv6By64(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{ForgotPerAddress: limit(100), ForgotPerIP: limit(2)})
	forgot := func(ip, email string) apitest.Response {
		return x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/password/forgot",
			Body: map[string]string{"email": email}, ClientIP: ip})
	}
	for _, email := range []string{"a@example.com", "b@example.com"} {
		wantStatus(t, forgot("2001:db8:1:2::1", email), http.StatusAccepted)
	}
	wantProblem(t, forgot("2001:db8:1:2::2", "c@example.com"), http.StatusTooManyRequests, problem.CodeTooManyRequests)
	wantStatus(t, forgot("2001:db8:1:3::1", "c@example.com"), http.StatusAccepted)
}

// TestEmailChangeRacingReset: an email change whose recent-sign-in check
// passed just before a password reset committed must not be stored after
// the reset revoked the pending changes: it would move the account to the
// requester's mailbox once its link is used, though the reset ended the
// session that asked for it. The reset (its first statements, as
// resetPassword runs them) is held uncommitted while the change waits for
// the account's row. The change is answered as the ended session it
// came with (401 invalid_token), as every account route answers one, not
// asked for a newer sign-in.
func TestEmailChangeRacingReset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "kai-race@example.com")
	const intruder = "intruder-race@example.net"
	reset := x.DB.Hold(t, `UPDATE users SET token_version = token_version + 1 WHERE id = $1`, a.c.Sub)
	if _, err := sessions.New(x.DB.Pool, time.Hour, 0).RevokeAll(ctx, reset, a.c.Sub, "", "password_reset"); err != nil {
		t.Fatal(err)
	}
	if err := onetime.RevokeEmailChanges(ctx, reset, a.c.Sub); err != nil {
		t.Fatal(err)
	}
	var (
		wg sync.WaitGroup
		r  apitest.Response
	)
	wg.Go(func() {
		r = x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": intruder})
	})
	x.DB.WaitForLockWaiters(t, 1) // the change, at the account's row
	if err := reset.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND lower(email) = $2`, a.c.Sub, intruder); n != 0 {
		t.Errorf("email changes to %s pending after the reset: %d, want 0 (answer %d %s)", intruder, n, r.Status, r.Body)
	}
	wantProblem(t, r, http.StatusUnauthorized, problem.CodeInvalidToken)
}

// TestEmailChangeConfirmRacingReset: the link of an email change and a
// reset link of the old address used at once. Each consumed its own token
// and then waited for the account's row, and each then deletes the
// other's tokens (the change the reset links, the reset the pending
// changes): whichever got the row waited for the other's token, which
// waited for the row, and PostgreSQL ended one of them as a deadlock (500).
// Both now lock the account's row before they consume: one runs after the
// other, and the second finds its link gone. Something else holding the
// row (here the test) lines them up: the change first.
func TestEmailChangeConfirmRacingReset(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "kim@example.com")
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "kim@example.com"}), 202)
	resetTok := x.mail(t, "kim@example.com", "Reset").Token()
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "kim-new@example.net"}), http.StatusAccepted)
	verifyTok := x.mail(t, "kim-new@example.net", "Confirm").Token()

	var verify, reset apitest.Response
	x.DB.QueueBehindUser(t, a.c.Sub,
		func() { // the change, at the account's row
			verify = x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": verifyTok})
		},
		func() { // and the reset
			reset = x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": resetTok, "new_password": "a brand new password"})
		},
	)
	wantStatus(t, verify, http.StatusOK)
	wantProblem(t, reset, http.StatusBadRequest, problem.CodeLinkInvalid)
	if m := x.me(t, a); m.Email != "kim-new@example.net" {
		t.Errorf("address %s after the change, want kim-new@example.net", m.Email)
	}
}

// TestLogoutGlobalRacingReset: a sign-out everywhere and a reset at once.
// The sign-out ended the sessions first and then waited for the account's
// row, which the reset held while it waited to end those same sessions:
// PostgreSQL ended one of them as a deadlock (500). The sign-out now takes
// the account's row first, as the reset does. Something else holding the
// row (here the test) lines them up: the reset first.
func TestLogoutGlobalRacingReset(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "lou@example.com")
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "lou@example.com"}), 202)
	resetTok := x.mail(t, "lou@example.com", "Reset").Token()

	var reset, logout apitest.Response
	x.DB.QueueBehindUser(t, a.c.Sub,
		func() { // the reset, at the account's row
			reset = x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": resetTok, "new_password": "a brand new password"})
		},
		func() { // and the sign-out
			logout = x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/logout", map[string]string{"scope": "global"})
		},
	)
	wantStatus(t, reset, http.StatusNoContent)
	wantStatus(t, logout, http.StatusNoContent)
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL`, a.c.Sub); n != 0 {
		t.Errorf("%d sessions live after both", n)
	}
}

// TestResetOfADisabledAccount: a reset link mailed while the account was
// active sets no password once the account is disabled: 403
// user_disabled, the password, the address's proof, the sessions, the
// audit and the outbox untouched, and the link kept for an account
// enabled again, where it works. The page's form says why.
func TestResetOfADisabledAccount(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "off-reset@example.com")
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": a.email}), http.StatusAccepted)
	x.flush(t)
	tok := x.mail(t, a.email, "Reset").Token()
	x.exec(t, `UPDATE users SET status = 'disabled' WHERE id = $1`, a.c.Sub)
	audits := x.count(t, `SELECT count(*) FROM audit_events`)
	outbox := x.count(t, `SELECT count(*) FROM outbox`)

	r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": tok, "new_password": "the stranger's password"})
	wantProblem(t, r, http.StatusForbidden, problem.CodeUserDisabled)
	if !strings.Contains(r.Problem(t).Detail, "disabled") {
		t.Errorf("the refusal does not say why: %s", r.Body)
	}
	x.wantUnverified(t, a)
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL`, a.c.Sub); n == 0 {
		t.Error("the refused reset ended the sessions")
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events`); n != audits {
		t.Errorf("%d audit events, want %d", n, audits)
	}
	if n := x.count(t, `SELECT count(*) FROM outbox`); n != outbox {
		t.Errorf("%d outbox rows, want %d", n, outbox)
	}
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND purpose = 'password_reset'
		AND token_hash = sha256(convert_to($2, 'UTF8'))`, a.c.Sub, tok); n != 1 {
		t.Fatalf("the refused reset used the link up (%d left)", n)
	}
	// The page's form comes back to the page, which says why.
	f := postForm(t, x, "/api/v1/auth/password/reset", form("token", tok, "new_password", "the+stranger's+password"))
	loc := f.Header.Get("Location")
	if f.Status != http.StatusSeeOther || !strings.HasPrefix(loc, "/reset-password?error=user_disabled") {
		t.Fatalf("the form of a disabled account: %d Location %q", f.Status, loc)
	}
	if page := string(x.Get(t, nil, loc).Body); !strings.Contains(page, "This account is disabled.") {
		t.Errorf("the page after the form:\n%s", page)
	}

	// Enabled again, the owner's password still signs in, and the same
	// link resets it.
	x.exec(t, `UPDATE users SET status = 'active' WHERE id = $1`, a.c.Sub)
	wantStatus(t, x.token(t, a.email, pw), http.StatusOK)
	wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "the owner's new password"}), http.StatusNoContent)
}

// TestSweepBesideATokenRevocation: the sweep of expired one-time tokens
// passes over the tokens another transaction holds, so it cannot deadlock
// with a revocation of a user's tokens (a password reset or change, an
// email's verification), which reaches them by user, newest first, while
// the sweep took them by expiry, oldest first: each held a token the other
// waited for, and PostgreSQL failed one of them (the reset with a 500).
func TestSweepBesideATokenRevocation(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := context.Background()
	uid := x.SeedUser(t, "ada@example.test", "Ada")
	other := x.SeedUser(t, "bob@example.test", "Bob")
	// Two expired reset links of Ada's, the older one written first.
	older, newer := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	x.exec(t, `INSERT INTO action_tokens (token_hash, purpose, user_id, email, created_at, expires_at)
VALUES ($1, 'password_reset', $3, 'ada@example.test', now() - interval '2 hours', now() - interval '90 minutes'),
       ($2, 'password_reset', $3, 'ada@example.test', now() - interval '1 hour', now() - interval '30 minutes')`, older, newer, uid)
	// Live tokens enough of another user's that each statement reads its
	// rows through its index, as on a server: the sweep by expiry, the
	// revocation by user.
	x.exec(t, `INSERT INTO action_tokens (token_hash, purpose, user_id, email, expires_at)
SELECT sha256(i::text::bytea), 'verify_email', $1, 'bob@example.test', now() + interval '1 day' FROM generate_series(1, 5000) i`, other)
	x.exec(t, `ANALYZE action_tokens`)
	hold := x.DB.Hold(t, `SELECT 1 FROM action_tokens WHERE token_hash = $1 FOR UPDATE`, newer)
	revoked := make(chan error, 1)
	go func() {
		revoked <- pgx.BeginFunc(ctx, x.DB.Pool, func(tx pgx.Tx) error {
			return onetime.Revoke(ctx, tx, uid, onetime.PasswordReset)
		})
	}()
	x.DB.WaitForLockWaiters(t, 1)
	swept := dbtest.AnsweredOrWaitingFor(t, x.DB, 2, func() error {
		_, err := x.lc.Sweep(ctx)
		return err
	})
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if sweepErr := swept(); sweepErr != nil {
		t.Errorf("Sweep beside a revocation = %v", sweepErr)
	}
	if err := <-revoked; err != nil {
		t.Errorf("Revoke beside the sweep = %v", err)
	}
	var n int
	if err := x.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM action_tokens WHERE user_id = $1`, uid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d tokens of Ada's left, want 0", n)
	}
}
