package lifecycle_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestDisplayNameOfAnInactiveAccount: PATCH /users/me with display_name
// alone is refused for an account that is disabled, disabled in the
// session's tenant, or of a suspended tenant (403 user_disabled, as the
// email change is), whose bearer a proxy that has not yet heard of the
// change still forwards: it was answered 200, the name changed and
// audited. Nothing is written; once active, the name changes.
func TestDisplayNameOfAnInactiveAccount(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "inactive-rename@example.com")
	audits := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.profile_updated'`)
	for _, tc := range inactiveStates() {
		t.Run(tc.name, func(t *testing.T) {
			x.exec(t, tc.off, a.c.Sub)
			defer x.exec(t, tc.on, a.c.Sub)
			r := x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Renamed"})
			wantProblem(t, r, http.StatusForbidden, problem.CodeUserDisabled)
		})
	}
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND display_name = 'Renamed'`, a.c.Sub); n != 0 {
		t.Fatal("the display name changed while the account could not sign in")
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.profile_updated'`); n != audits {
		t.Errorf("%d profile_updated events, want %d", n, audits)
	}
	// Active again: the name changes.
	wantStatus(t, x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Renamed"}), http.StatusOK)
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND display_name = 'Renamed'`, a.c.Sub); n != 1 {
		t.Fatal("the display name did not change once the account was active")
	}
}

// TestDisplayNameBehindADisabling: a display-name change that waits for
// the account's row while the account is being disabled reads the
// account's status after the lock, and is refused (403 user_disabled)
// once the disabling commits, nothing written.
func TestDisplayNameBehindADisabling(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "racing-rename@example.com")
	hold, err := x.DB.Pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(context.Background())
	if _, err := hold.Exec(t.Context(), `UPDATE users SET status = 'disabled' WHERE id = $1`, a.c.Sub); err != nil {
		t.Fatal(err)
	}
	done := make(chan apitest.Response, 1)
	go func() {
		done <- x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Renamed"})
	}()
	x.DB.WaitForLockWaiters(t, 1)
	if err := hold.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, <-done, http.StatusForbidden, problem.CodeUserDisabled)
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND display_name = 'Renamed'`, a.c.Sub); n != 0 {
		t.Fatal("the display name changed behind the disabling")
	}
}

// TestDisplayNameWithAMovedSession: a display-name change is not made
// with an access token of the tenant its session has since switched away
// from (401 invalid_token, as an email change and a second factor's
// enrolment are refused): the session is no longer the one the token was
// issued for. Nothing is written; the token of the switch renames.
func TestDisplayNameWithAMovedSession(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	a := x.signup(t, "moved-rename@example.com")
	second := x.SeedTenant(t, "Second")
	x.SeedMember(t, second.ID, a.c.Sub, "member")
	r := x.Send(t, &a.id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": a.tok.RefreshToken})
	wantStatus(t, r, http.StatusOK)
	var sw tokens
	r.JSON(t, &sw)
	after := x.identity(t, claimsOf(t, sw.AccessToken))
	audits := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.profile_updated'`)

	r = x.Send(t, &a.id, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Renamed"})
	wantProblem(t, r, http.StatusUnauthorized, problem.CodeInvalidToken)
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND display_name = 'Renamed'`, a.c.Sub); n != 0 {
		t.Fatal("the display name changed with the token of the tenant the session left")
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.profile_updated'`); n != audits {
		t.Errorf("%d profile_updated events, want %d", n, audits)
	}
	wantStatus(t, x.Send(t, &after, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Renamed"}), http.StatusOK)
}
