package auth_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestDisableRacingSignOutEverywhere: disabling the second factor is
// decided on the session's recent factor, checked before the factor is
// removed; a sign-out everywhere (the owner taking the account back) that
// commits in between must stop it, as it stops new recovery codes: the
// session that asked is ended, and the factor stays. The request is held
// at the account's row, which the test locks and, in that transaction,
// signs the account out everywhere as the sign-out does (its token
// version moved on, its sessions revoked) before it commits.
func TestDisableRacingSignOutEverywhere(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	uid, as, hold := e.holdFactorSession(t, "disable-race@example.com", `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`)
	var (
		wg       sync.WaitGroup
		disabled apitest.Response
	)
	wg.Go(func() { disabled = e.Send(t, as, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil) })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%FROM users%'`) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the disable does not wait at the account's row")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := hold.Exec(ctx, `UPDATE users SET token_version = token_version + 1 WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = 'logout_global'
		WHERE user_id = $1 AND revoked_at IS NULL`, uid); err != nil {
		t.Fatal(err)
	}
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

// TestDisableHoldsTheAccountAgainstSignOutEverywhere: once the disable
// (or a request for new recovery codes) has checked the session again, a
// sign-out everywhere (which moves the account's token version on) waits
// for it to commit, so the two happen in one order or the other: never a
// sign-out that answered while the factor was still being removed, or
// codes made, on the say of the session it ended. The request is held
// after its check, at the recovery codes it deletes (which the test
// locks).
func TestDisableHoldsTheAccountAgainstSignOutEverywhere(t *testing.T) {
	t.Parallel()
	for i, route := range []struct{ method, path string }{
		{http.MethodDelete, "/api/v1/users/me/mfa/totp"}, {http.MethodPost, "/api/v1/users/me/mfa/recovery-codes"},
	} {
		t.Run(route.method+" "+route.path, func(t *testing.T) {
			holdsTheAccount(t, fmt.Sprintf("hold-%d@example.com", i), route.method, route.path)
		})
	}
}

func holdsTheAccount(t *testing.T, email, method, path string) {
	ctx := context.Background()
	e := start(t, cheap)
	_, as, hold := e.holdFactorSession(t, email, `SELECT 1 FROM mfa_recovery_codes WHERE user_id = $1 FOR UPDATE`)
	waiting := func(like string) int {
		return e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE $1`, like)
	}
	var (
		wg       sync.WaitGroup
		disabled apitest.Response
		signOut  apitest.Response
		signedAt = make(chan struct{})
	)
	wg.Go(func() { disabled = e.Send(t, as, method, path, nil) })
	for deadline := time.Now().Add(10 * time.Second); waiting("%mfa_recovery_codes%") == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the request does not wait at the recovery codes")
		}
	}
	wg.Go(func() {
		signOut = e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout",
			Body: map[string]string{"scope": "global"}, As: as})
		close(signedAt)
	})
	// The sign-out either answers or waits for a lock the disable holds.
	signedOutFirst := false
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		select {
		case <-signedAt:
			signedOutFirst = true
		default:
		}
		if signedOutFirst || waiting("%token_version%") > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sign-out everywhere neither answered nor waited")
		}
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	wantStatus(t, "sign out everywhere", signOut, http.StatusNoContent, "")
	if signedOutFirst && disabled.Status/100 == 2 {
		t.Fatalf("the sign-out everywhere answered while the request was under way, which then succeeded (%d) on the say of the session it ended", disabled.Status)
	}
}

// holdFactorSession makes an account with an active second factor and a
// session signed in with both factors (which may disable the factor or
// ask for new recovery codes), and opens a transaction that has run lock
// (with the account's id as $1), rolled back when the test ends. It
// returns the account's id, the session's identity and the transaction.
func (e *env) holdFactorSession(t *testing.T, email, lock string) (string, *identity.Identity, pgx.Tx) {
	t.Helper()
	ctx := context.Background()
	tk, _, codes := e.mfaUser(t, email)
	uid := claims(t, tk.AccessToken)["sub"].(string)
	r := e.mfaOTP(t, e.challenge(t, email), codes[0])
	wantStatus(t, "sign-in with the second factor", r, http.StatusOK, "")
	var signedIn tokens
	r.JSON(t, &signedIn)
	hold, err := e.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Rollback(ctx) })
	if _, err := hold.Exec(ctx, lock, uid); err != nil {
		t.Fatal(err)
	}
	return uid, e.identityFor(t, signedIn), hold
}
