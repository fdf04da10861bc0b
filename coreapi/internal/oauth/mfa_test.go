package oauth_test

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestExternalSignInAsksForTheSecondFactor: an OIDC sign-in of a user with
// MFA hands over no tokens: the exchange answers mfa_required, the
// callback's session ends, and the mfa_otp grant opens a new one. The
// tokens say how the user signed in: amr ["fed"] (no password was given),
// then ["fed","otp"], also after a refresh.
func TestExternalSignInAsksForTheSecondFactor(t *testing.T) {
	x := start(t)
	first := x.finish(t, x.begin(t, ""))
	uid := sub(t, first.AccessToken)
	if amr, acr := amrOf(t, first.AccessToken); !slices.Equal(amr, []string{"fed"}) || acr != "pwd" {
		t.Fatalf("OIDC sign-in: amr %v acr %s, want [fed] pwd", amr, acr)
	}
	ctx := context.Background()
	// The user has an active factor (the secret is never opened here: the
	// code given is a recovery code).
	if _, err := x.DB.Pool.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status) VALUES ($1, 'k', '\x00', 'active')`, uid); err != nil {
		t.Fatal(err)
	}
	if _, err := x.DB.Pool.Exec(ctx, `INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2)`, uid, mfa.HashRecovery(uid, "abcde-fghij")); err != nil {
		t.Fatal(err)
	}
	st := x.begin(t, "")
	code := handover(t, x.callback(t, x.approve(t, st), st.cookie))
	r := x.exchange(t, code)
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("exchange of an MFA user: %d %s, want 401", r.Status, r.Body)
	}
	var ch struct {
		Code, Error string
		MFAToken    string `json:"mfa_token"`
	}
	r.JSON(t, &ch)
	if ch.Code != "mfa_required" || ch.Error != "mfa_required" || ch.MFAToken == "" {
		t.Fatalf("exchange body %s", r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_reason = 'replaced_after_second_factor'`, uid); n != 1 {
		t.Fatalf("%d callback sessions ended, want 1", n)
	}
	r = x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "mfa_token": ch.MFAToken, "code": "abcde-fghij"})
	if r.Status != http.StatusOK {
		t.Fatalf("mfa_otp: %d %s", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	if sub(t, tk.AccessToken) != uid {
		t.Fatal("the second factor signed in someone else")
	}
	if amr, acr := amrOf(t, tk.AccessToken); !slices.Equal(amr, []string{"fed", "otp"}) || acr != "mfa" {
		t.Fatalf("OIDC sign-in with a second factor: amr %v acr %s, want [fed otp] mfa", amr, acr)
	}
	r = x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken})
	if r.Status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	var rt tokens
	r.JSON(t, &rt)
	if amr, acr := amrOf(t, rt.AccessToken); !slices.Equal(amr, []string{"fed", "otp"}) || acr != "mfa" {
		t.Fatalf("refreshed: amr %v acr %s, want [fed otp] mfa", amr, acr)
	}
}

// TestHandoverOfAnEndedSessionAsksForNothing: an OIDC sign-in whose session
// ended between the callback and the exchange (a password reset, a global
// sign-out, the session revoked) gets nothing: a user with MFA no
// mfa_token (no challenge is stored, so no code can turn it into a
// session), and a user without MFA no tokens, also when the session was
// stamped with an older token version without being revoked (a callback
// that raced a reset).
func TestHandoverOfAnEndedSessionAsksForNothing(t *testing.T) {
	const qSession = `(SELECT session_id FROM oauth_handovers WHERE code_hash = sha256(convert_to($1, 'UTF8')))`
	for _, tt := range []struct {
		name, q string
		noMFA   bool
	}{
		{"session revoked", `UPDATE sessions SET revoked_at = now(), revoked_reason = 'logout' WHERE id = ` + qSession, false},
		// What a password reset does: the token version moves on, every
		// session ends and the pending challenges go.
		{"password reset", `WITH u AS (UPDATE users SET token_version = token_version + 1 WHERE id = (SELECT user_id FROM sessions WHERE id = ` + qSession + `) RETURNING id),
			c AS (DELETE FROM mfa_challenges WHERE user_id = (SELECT id FROM u))
			UPDATE sessions SET revoked_at = now(), revoked_reason = 'password_reset' WHERE user_id = (SELECT id FROM u) AND revoked_at IS NULL`, false},
		// A session stamped with an older token version is dead too (a
		// sign-in that raced a reset), even if nothing revoked it.
		{"token version moved on", `UPDATE users SET token_version = token_version + 1 WHERE id = (SELECT user_id FROM sessions WHERE id = ` + qSession + `)`, false},
		{"token version moved on, no MFA", `UPDATE users SET token_version = token_version + 1 WHERE id = (SELECT user_id FROM sessions WHERE id = ` + qSession + `)`, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x := start(t)
			first := x.finish(t, x.begin(t, ""))
			uid := sub(t, first.AccessToken)
			ctx := context.Background()
			if !tt.noMFA {
				if _, err := x.DB.Pool.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status) VALUES ($1, 'k', '\x00', 'active')`, uid); err != nil {
					t.Fatal(err)
				}
			}
			st := x.begin(t, "")
			code := handover(t, x.callback(t, x.approve(t, st), st.cookie))
			if _, err := x.DB.Pool.Exec(ctx, tt.q, code); err != nil {
				t.Fatal(err)
			}
			r := x.exchange(t, code)
			if r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
				t.Fatalf("exchange of an ended session: %d %s, want 400 invalid_grant", r.Status, r.Body)
			}
			if n := x.count(t, `SELECT count(*) FROM mfa_challenges WHERE user_id = $1`, uid); n != 0 {
				t.Fatalf("%d challenges stored for an ended session", n)
			}
		})
	}
}

// TestExternalMFAStepAfterTheTenantIsLeft: an OIDC sign-in waiting for
// its second factor, whose user is removed from the session's tenant
// before the code, is answered as the password grant's is: started for no
// tenant, it lands in the user's next active tenant; started for that
// tenant, it is 403 forbidden. It was bound to the tenant the callback
// picked either way (403 user_disabled). A tenant named at the exchange
// (tenant_id of grant_type=oauth_handover) binds it as one asked for at
// the start does.
func TestExternalMFAStepAfterTheTenantIsLeft(t *testing.T) {
	const atStart, atExchange = "tenant asked", "tenant named at the exchange"
	for _, name := range []string{"no tenant asked", atStart, atExchange} {
		named := name != "no tenant asked"
		t.Run(name, func(t *testing.T) {
			x := start(t)
			first := x.finish(t, x.begin(t, ""))
			uid := sub(t, first.AccessToken)
			second := x.SeedTenant(t, "Second")
			x.SeedMember(t, second.ID, uid, "member")
			ctx := context.Background()
			if _, err := x.DB.Pool.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status) VALUES ($1, 'k', '\x00', 'active')`, uid); err != nil {
				t.Fatal(err)
			}
			if _, err := x.DB.Pool.Exec(ctx, `INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2)`, uid, mfa.HashRecovery(uid, "abcde-fghij")); err != nil {
				t.Fatal(err)
			}
			query := ""
			if name == atStart {
				query = "?tenant_id=" + first.TenantID
			}
			st := x.begin(t, query)
			code := handover(t, x.callback(t, x.approve(t, st), st.cookie))
			var r apitest.Response
			if name == atExchange {
				r = x.exchangeNaming(t, code, first.TenantID)
			} else {
				r = x.exchange(t, code)
			}
			var ch struct {
				MFAToken string `json:"mfa_token"`
			}
			r.JSON(t, &ch)
			if r.Status != http.StatusUnauthorized || ch.MFAToken == "" {
				t.Fatalf("exchange of an MFA user: %d %s, want 401 mfa_required", r.Status, r.Body)
			}
			if _, err := x.DB.Pool.Exec(ctx, `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`, first.TenantID, uid); err != nil {
				t.Fatal(err)
			}
			r = x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "mfa_token": ch.MFAToken, "code": "abcde-fghij"})
			if named {
				if r.Status != http.StatusForbidden || r.Problem(t).Code != problem.CodeForbidden {
					t.Fatalf("mfa_otp: %d %s, want 403 %s", r.Status, r.Body, problem.CodeForbidden)
				}
				return
			}
			if r.Status != http.StatusOK {
				t.Fatalf("mfa_otp: %d %s, want 200 in the other tenant", r.Status, r.Body)
			}
			var tk tokens
			r.JSON(t, &tk)
			if tk.TenantID != second.ID {
				t.Errorf("signed in to %s, want the other tenant %s", tk.TenantID, second.ID)
			}
			if amr, acr := amrOf(t, tk.AccessToken); !slices.Equal(amr, []string{"fed", "otp"}) || acr != "mfa" {
				t.Errorf("amr %v acr %s, want [fed otp] mfa", amr, acr)
			}
		})
	}
}
