package tenantapi_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestLeaveWithMeKeepsTheAccount: DELETE /users/me is DELETE /users/{id}
// for the caller: it removes the caller from the token's tenant only
// (member.removed), and the account stays, with its other tenants, its
// sessions there and its address. Deleting the account is another route
// (DELETE /users/me/account), which a client leaving a tenant never sends.
func TestLeaveWithMeKeepsTheAccount(t *testing.T) {
	e := start(t, apitest.Options{})
	ta, tb := e.SeedTenant(t, "A"), e.SeedTenant(t, "B")
	e.SeedUserIn(t, ta.ID, "owner@a.test", "owner")
	me := e.SeedUserIn(t, ta.ID, "leaver@a.test", "admin")
	e.SeedMember(t, tb.ID, me.UserID, "owner")
	inB := e.IdentityOf(t, me.UserID, tb.ID)

	apitest.WantStatus(t, e.Send(t, &me, http.MethodDelete, "/api/v1/users/me", nil), http.StatusNoContent)

	for _, c := range []struct {
		what, q string
		args    []any
		want    int
	}{
		{"user row", `SELECT count(*) FROM users WHERE id = $1`, []any{me.UserID}, 1},
		{"membership in A", `SELECT count(*) FROM memberships WHERE user_id = $1 AND tenant_id = $2`, []any{me.UserID, ta.ID}, 0},
		{"membership in B", `SELECT count(*) FROM memberships WHERE user_id = $1 AND tenant_id = $2`, []any{me.UserID, tb.ID}, 1},
		{"member.removed in A", `SELECT count(*) FROM audit_events WHERE action = 'member.removed' AND tenant_id = $1`, []any{ta.ID}, 1},
		{"user.deleted", `SELECT count(*) FROM audit_events WHERE action = 'user.deleted'`, nil, 0},
		{"account_deleted mails", `SELECT count(*) FROM mail_queue WHERE kind = 'account_deleted'`, nil, 0},
	} {
		if n := countSQL(t, e, c.q, c.args...); n != c.want {
			t.Errorf("%s: %d, want %d", c.what, n, c.want)
		}
	}
	// The account still works in the tenant it did not leave.
	apitest.WantStatus(t, e.Get(t, &inB, "/api/v1/users/me"), http.StatusOK)
}
