package auth_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestPasswordChangeNeedsTheSecondFactor: PUT /users/me/password of an
// account with an active second factor needs that factor given on the
// session within the last 5 minutes, as the account's deletion and its
// email change do; the proxy asks it, and coreapi now asks it too, with
// the account's row locked. A session signed in with the password alone
// (here the one the factor was enrolled with) and the current password
// changed it, signing every other session out. It is refused with the
// step-up answer (401 insufficient_user_authentication,
// acr_values="mfa", max_age=300), nothing changed;
// after a step-up the same session changes it. An account without a
// factor needs its current password only, however old its sign-in.
func TestPasswordChangeNeedsTheSecondFactor(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, _, codes := e.mfaUser(t, "pc-factor@example.com")
	as := e.identityFor(t, tk)
	const qHash = `SELECT count(*) FROM users WHERE id = $1 AND password_hash = (SELECT password_hash FROM users WHERE id = $1) AND token_version = $2`
	var tv int
	if err := e.DB.Pool.QueryRow(t.Context(), `SELECT token_version FROM users WHERE id = $1`, as.UserID).Scan(&tv); err != nil {
		t.Fatal(err)
	}
	change := func(body map[string]string) int {
		t.Helper()
		r := e.Send(t, as, http.MethodPut, "/api/v1/users/me/password", body)
		if r.Status == http.StatusUnauthorized {
			if got := r.Header.Get("WWW-Authenticate"); !strings.Contains(got, `acr_values="mfa"`) || !strings.Contains(got, "max_age=300") {
				t.Fatalf("WWW-Authenticate = %q, want acr_values=\"mfa\" and max_age=300", got)
			}
			if p := r.Problem(t); p.Code != "insufficient_user_authentication" || !strings.Contains(p.Detail, "mfa_otp") {
				t.Fatalf("problem %+v, want insufficient_user_authentication saying how to step up", p)
			}
		}
		return r.Status
	}
	if st := change(map[string]string{"current_password": pw, "new_password": "chosen without the factor"}); st != http.StatusUnauthorized {
		t.Fatalf("password-only session of an account with a factor: %d, want 401", st)
	}
	if n := e.count(t, qHash, as.UserID, tv); n != 1 {
		t.Fatalf("the password or token version changed after the refusal")
	}

	r := e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": codes[0]})
	wantStatus(t, "step up", r, http.StatusOK, "")
	var up tokens
	r.JSON(t, &up)
	as = e.identityFor(t, up)
	if st := change(map[string]string{"current_password": pw, "new_password": "chosen with the factor"}); st != http.StatusOK {
		t.Fatalf("after a step-up: %d, want 200", st)
	}

	// Without a factor: the current password, whatever the sign-in's age.
	plain := e.identityFor(t, e.signup(t, "pc-plain@example.com", "Plain"))
	if _, err := e.DB.Pool.Exec(t.Context(), `UPDATE sessions SET auth_time = now() - interval '1 hour' WHERE id = $1`, plain.SessionID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "account without a factor", e.Send(t, plain, http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": pw, "new_password": "a brand new password"}), http.StatusOK, "")
}
