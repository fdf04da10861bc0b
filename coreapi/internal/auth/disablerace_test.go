package auth_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestDisableRacingSignOutEverywhere: disabling the second factor is
// decided on the session's recent factor, checked before the factor is
// removed; a sign-out everywhere (the owner taking the account back) that
// commits in between must stop it, as it stops new recovery codes: the
// session that asked is ended, and the factor stays. The request is held
// at the factor's row (which the test locks) while the sign-out commits.
func TestDisableRacingSignOutEverywhere(t *testing.T) {
	ctx := context.Background()
	e := start(t, cheap)
	const email = "disable-race@example.com"
	tk, _, codes := e.mfaUser(t, email)
	uid := claims(t, tk.AccessToken)["sub"].(string)
	// A session signed in with both factors: it may disable the factor.
	r := e.mfaOTP(t, e.challenge(t, email), codes[0])
	wantStatus(t, "sign-in with the second factor", r, http.StatusOK, "")
	var signedIn tokens
	r.JSON(t, &signedIn)
	as := e.identityFor(t, signedIn)

	hold, err := e.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Rollback(ctx) })
	if _, err := hold.Exec(ctx, `SELECT 1 FROM mfa_totp WHERE user_id = $1 FOR UPDATE`, uid); err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		disabled apitest.Response
	)
	wg.Go(func() { disabled = e.Send(t, as, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil) })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%mfa_totp%'`) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the disable does not wait at the factor's row")
		}
		time.Sleep(5 * time.Millisecond)
	}
	wantStatus(t, "sign out everywhere", e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout",
		Body: map[string]string{"scope": "global"}, As: as}), http.StatusNoContent, "")
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := e.count(t, `SELECT count(*) FROM mfa_totp WHERE user_id = $1 AND status = 'active'`, uid); n != 1 {
		t.Errorf("active factors after the sign-out everywhere: %d, want 1 (the disable answered %d %s)", n, disabled.Status, disabled.Body)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.mfa_disabled'`); n != 0 {
		t.Errorf("%d user.mfa_disabled events, want 0", n)
	}
	wantStatus(t, "disable by the session signed out", disabled, http.StatusUnauthorized, "insufficient_user_authentication")
}
