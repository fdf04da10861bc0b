package lifecycle_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestResetHashesOnlyWhatItSets: a reset link that the reset refuses
// while leaving it usable (a disabled account's, one whose address
// changed since the mail) is refused before the new password is hashed,
// however often it is sent, and charges nothing; an accepted reset's hash
// counts against the client's PASSWORD_CHECKS_PER_HOUR, past which the
// reset is 429 with Retry-After, unhashed, and the link stays usable.
func TestResetHashesOnlyWhatItSets(t *testing.T) {
	t.Parallel()
	h := password.New(cheap, 0)
	x := startOpts(t, startOptions{hasher: h, checks: 1})
	charged := func() int {
		return x.count(t, `SELECT coalesce((SELECT hits FROM rate_limits WHERE key = $1), 0)`,
			ratelimit.PasswordChecksKey(apitest.DefaultClientIP))
	}
	resetLink := func(email string) string {
		t.Helper()
		wantStatus(t, x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": email}), http.StatusAccepted)
		x.flush(t)
		return x.mail(t, email, "Reset").Token()
	}
	reset := func(tok string) apitest.Response {
		return x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": tok, "new_password": "a brand new passphrase"})
	}

	a := x.signup(t, "hash-reset@example.com")
	tok := resetLink(a.email)
	before := h.Made()
	x.exec(t, `UPDATE users SET status = 'disabled' WHERE id = $1`, a.c.Sub)
	for range 3 {
		wantProblem(t, reset(tok), http.StatusForbidden, problem.CodeUserDisabled)
	}
	if n := h.Made() - before; n != 0 {
		t.Fatalf("a disabled account's link hashed %d passwords, want 0", n)
	}
	x.exec(t, `UPDATE users SET status = 'active', email = 'moved-reset@example.com' WHERE id = $1`, a.c.Sub)
	wantProblem(t, reset(tok), http.StatusBadRequest, problem.CodeLinkInvalid)
	if n := h.Made() - before; n != 0 {
		t.Fatalf("a link to a changed address hashed %d passwords, want 0", n)
	}
	if n := charged(); n != 0 {
		t.Fatalf("refused resets charged %d hashes, want 0", n)
	}
	x.exec(t, `UPDATE users SET email = $2 WHERE id = $1`, a.c.Sub, a.email)

	// Accepted: one hash, charged. The budget (1) is then spent: the next
	// reset is refused unhashed, its link kept.
	wantStatus(t, reset(tok), http.StatusNoContent)
	if n, c := h.Made()-before, charged(); n != 1 || c != 1 {
		t.Fatalf("an accepted reset: %d hashes, %d charged; want 1, 1", n, c)
	}
	tok = resetLink(a.email)
	r := reset(tok)
	wantProblem(t, r, http.StatusTooManyRequests, problem.CodeTooManyRequests)
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if n := h.Made() - before; n != 1 {
		t.Fatalf("a reset past the budget hashed: %d hashes, want 1", n)
	}
	if n := x.count(t, `SELECT count(*) FROM action_tokens WHERE user_id = $1 AND purpose = 'password_reset'`, a.c.Sub); n != 1 {
		t.Fatalf("the refused reset used the link up (%d left)", n)
	}
}
