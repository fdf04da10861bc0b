package auth_test

import (
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
)

// TestSessionsRevokedCountedPerTenant: the user.mfa_enabled row of a
// factor's confirmation and the user.mfa_reset rows of the operator's
// reset are written in every tenant of the account, and each said how many
// sessions the change ended over all of them: a tenant's admins learned
// how many sessions the account had open in its other tenants. Each row
// now counts the sessions bound to its own tenant.
func TestSessionsRevokedCountedPerTenant(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "spread@example.com", "Home")
	as := e.identityFor(t, tk)
	away := e.SeedTenant(t, "Away").ID
	e.SeedMember(t, away, as.UserID, "member")
	// Besides the confirming session: one more at home, two away.
	e.SeedSession(t, as.UserID, as.TenantID)
	e.SeedSession(t, as.UserID, away)
	e.SeedSession(t, as.UserID, away)
	counted := func(action, tenantID string) []int {
		t.Helper()
		rows, err := e.DB.Pool.Query(t.Context(), `SELECT (data->>'sessions_revoked')::int FROM audit_events
WHERE action = $1 AND tenant_id = $2 AND target_id = $3 ORDER BY id`, action, tenantID, as.UserID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []int
		for rows.Next() {
			var n int
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			out = append(out, n)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := func(action string, home, there int) {
		t.Helper()
		for _, c := range []struct {
			tenant string
			n      int
		}{{as.TenantID, home}, {away, there}} {
			if got := counted(action, c.tenant); len(got) != 1 || got[0] != c.n {
				t.Errorf("%s in tenant %s: sessions_revoked %v, want [%d]", action, c.tenant, got, c.n)
			}
		}
	}

	en := e.enrol(t, as)
	wantStatus(t, "confirm", e.confirm(t, as, codeAt(t, en.Secret, time.Now())), 200, "")
	want("user.mfa_enabled", 1, 2)

	// The operator's reset ends every session: the confirming one at
	// home, one more opened there and one away.
	e.SeedSession(t, as.UserID, away)
	r, err := auth.ResetMFA(t.Context(), e.DB.Pool, sessions.New(e.DB.Pool, time.Hour, 10*time.Second), as.UserID, "operator-test")
	if err != nil {
		t.Fatal(err)
	}
	if r.SessionsRevoked != 2 {
		t.Errorf("the operator is told of %d sessions ended, want 2 (every tenant's)", r.SessionsRevoked)
	}
	want("user.mfa_reset", 1, 1)
}
