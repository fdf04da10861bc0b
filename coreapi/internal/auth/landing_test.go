package auth_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestSecondStepThatCannotLandSpendsNoCode: a sign-in's second step
// whose sign-in can land nowhere now (the tenant it named no longer lets
// the user in: the membership disabled or removed, the tenant suspended;
// or, naming none, no active membership is left) is refused before its
// code is looked at, as a disabled account's is: the recovery code stays
// unspent and the mfa_token keeps its try, so the same code finishes the
// same sign-in once the user may sign in there again. The code was spent,
// and the challenge used up, for the refusal, which no code could change.
func TestSecondStepThatCannotLandSpendsNoCode(t *testing.T) {
	t.Parallel()
	const (
		qDisable = `UPDATE memberships SET status = 'disabled' WHERE user_id = $1 AND tenant_id = $2`
		qEnable  = `UPDATE memberships SET status = 'active' WHERE user_id = $1 AND tenant_id = $2`
		qSuspend = `UPDATE tenants SET status = 'suspended' WHERE id = $2 AND $1::uuid IS NOT NULL`
		qResume  = `UPDATE tenants SET status = 'active' WHERE id = $2 AND $1::uuid IS NOT NULL`
		qRemove  = `DELETE FROM memberships WHERE user_id = $1 AND tenant_id = $2`
		qReadd   = `INSERT INTO memberships (user_id, tenant_id) VALUES ($1, $2)`
	)
	for _, tt := range []struct {
		name     string
		named    bool
		off, on  string
		wantCode string
		recovery bool
	}{
		{"membership of the tenant named disabled", true, qDisable, qEnable, problem.CodeForbidden, true},
		{"tenant named suspended", true, qSuspend, qResume, problem.CodeForbidden, true},
		{"no tenant left", false, qRemove, qReadd, problem.CodeNoMembership, true},
		{"membership of the tenant named disabled, a TOTP code", true, qDisable, qEnable, problem.CodeForbidden, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			const email = "landing@example.com"
			tk, secret, codes := e.mfaUser(t, email)
			uid := claims(t, tk.AccessToken)["sub"].(string)
			body := map[string]string{"grant_type": "password", "email": email, "password": pw}
			if tt.named {
				body["tenant_id"] = tk.TenantID
			}
			r := e.token(t, body)
			wantStatus(t, "password step", r, http.StatusUnauthorized, problem.CodeMFARequired)
			var m mfaRequired
			r.JSON(t, &m)
			if _, err := e.DB.Pool.Exec(ctx, tt.off, uid, tk.TenantID); err != nil {
				t.Fatal(err)
			}
			code := codes[0]
			if !tt.recovery {
				code = codeAt(t, secret, time.Now().Add(30*time.Second))
			}
			wantStatus(t, "second step that cannot land", e.mfaOTP(t, m.MFAToken, code), http.StatusForbidden, tt.wantCode)
			if n := e.count(t, `SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NOT NULL`, uid); n != 0 {
				t.Errorf("%d recovery codes spent by a refused sign-in", n)
			}
			if n := e.count(t, `SELECT attempts FROM mfa_challenges WHERE user_id = $1 AND used_at IS NULL`, uid); n != 0 {
				t.Errorf("the challenge is used, or counts %d tries, after a refusal that looked at no code", n)
			}
			if _, err := e.DB.Pool.Exec(ctx, tt.on, uid, tk.TenantID); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, "the same code once the user may sign in there", e.mfaOTP(t, m.MFAToken, code), http.StatusOK, "")
		})
	}
}
