package lifecycle_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestDemotedInviterRefused: a request signed with the permissions its
// caller held before being demoted or disabled (in flight as that
// committed, or authorized from a projection its invalidation had not
// reached) neither sends an invitation handing out what it lost nor
// resends or withdraws one: each reads what its caller holds when it
// runs, after the tenant's lock.
func TestDemotedInviterRefused(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "o@acme.test")
	tid := owner.c.Tid
	// stale is an admin's identity as signed before its demotion to
	// member, disabled one's before its membership was disabled.
	stale := x.SeedUserIn(t, tid, "stale@acme.test", "admin", "member")
	disabled := x.SeedUserIn(t, tid, "disabled@acme.test", "admin")
	wantStatus(t, x.Send(t, &owner.id, http.MethodDelete, "/api/v1/users/"+stale.UserID+"/roles/admin", nil), http.StatusOK)
	wantStatus(t, x.Send(t, &owner.id, http.MethodPatch, "/api/v1/users/"+disabled.UserID, map[string]any{"membership_status": "disabled"}), http.StatusOK)
	// A key acting as the demoted admin holds no more than it does now.
	asKey := x.AsKey(t, stale)
	pending := func(t *testing.T, id string) {
		t.Helper()
		if n := x.count(t, `SELECT count(*) FROM invitations WHERE id = $1 AND status = 'pending'`, id); n != 1 {
			t.Fatal("the invitation is no longer pending")
		}
	}

	for name, as := range map[string]identity.Identity{"demoted": stale, "disabled": disabled, "demoted-key": asKey} {
		t.Run(name+" invites", func(t *testing.T) {
			code := problem.CodeForbidden
			if as.Principal == identity.PrincipalAPIKey {
				code = problem.CodePrincipalNotAllowed // a key invites nobody, whatever it holds
			}
			wantProblem(t, x.Send(t, &as, http.MethodPost, "/api/v1/invitations",
				map[string]any{"email": "crony@example.com", "roles": []string{"admin"}}), 403, code)
			if n := x.count(t, `SELECT count(*) FROM invitations WHERE email = 'crony@example.com'`); n != 0 {
				t.Fatal("the invitation was stored")
			}
		})
		t.Run(name+" resends", func(t *testing.T) {
			inv := x.invite(t, owner.id, "resend-"+name+"@example.com", "admin")
			x.flush(t)
			code := problem.CodeForbidden
			if as.Principal == identity.PrincipalAPIKey {
				code = problem.CodePrincipalNotAllowed // nor resends one
			}
			wantProblem(t, x.Send(t, &as, http.MethodPost, "/api/v1/invitations/"+inv.ID+"/resend", nil), 403, code)
			x.flush(t)
			if n := x.mailsTo(inv.Email); n != 1 {
				t.Fatalf("%d mails, want 1 (no resend)", n)
			}
		})
		t.Run(name+" withdraws", func(t *testing.T) {
			inv := x.invite(t, owner.id, "revoke-"+name+"@example.com", "admin")
			wantProblem(t, x.Send(t, &as, http.MethodDelete, "/api/v1/invitations/"+inv.ID, nil), 403, problem.CodeForbidden)
			pending(t, inv.ID)
		})
	}
}

// TestInvitationRacingDemotion: an admin's invitation runs while its
// demotion is being committed. Read before the tenant's lock, its
// permissions were those of before the demotion, and it handed out the
// role the demotion took; after the lock, it waits for the demotion and
// is refused.
func TestInvitationRacingDemotion(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	ctx := context.Background()
	owner := x.signup(t, "o@acme.test")
	tid := owner.c.Tid
	admin := x.SeedUserIn(t, tid, "adm@acme.test", "admin", "member")
	// The demotion, as users.Store.RevokeRole makes it: the tenant's lock,
	// then the grant's deletion, not yet committed.
	demotion, err := x.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer demotion.Rollback(ctx)
	for _, q := range []string{
		`SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE`,
		`DELETE FROM membership_roles WHERE tenant_id = $1 AND user_id = $2 AND role_id = (SELECT id FROM roles WHERE tenant_id = $1 AND name = 'admin')`,
	} {
		args := []any{tid}
		if q[0] == 'D' {
			args = append(args, admin.UserID)
		}
		if _, err := demotion.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	// Either the invitation waits for the demotion, or it answered without.
	answer := dbtest.AnsweredOrWaiting(t, x.DB, func() apitest.Response {
		return x.Send(t, &admin, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "crony@example.com", "roles": []string{"admin"}})
	})
	if err := demotion.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := answer()
	wantProblem(t, r, 403, problem.CodeForbidden)
	if n := x.count(t, `SELECT count(*) FROM invitations WHERE email = 'crony@example.com'`); n != 0 {
		t.Fatal("the demoted admin's invitation was stored")
	}
}
