package tenantapi_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestDemotedActorRefused: a request signed with the permissions its
// caller held before being demoted (one in flight as the demotion commits,
// or one a proxy authorized from a projection the demotion's invalidation
// has not reached yet) must not act with them. Two admins demoting each
// other at once both went through, leaving neither an admin although each
// change, serialised on the tenant's lock, came after the other's: the
// second was decided on the header's permissions alone. Every change of a
// member or role now narrows the caller's permissions to those its
// membership grants when the change runs.
func TestDemotedActorRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// stale is an admin's identity as signed before its demotion.
	newAdmin := func(t *testing.T, email string) identity.Identity {
		return w.E.SeedUserIn(t, w.A, email, "admin")
	}
	demote := func(t *testing.T, who identity.Identity) {
		t.Helper()
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+who.UserID+"/roles/admin", nil), 200)
	}
	holds := func(t *testing.T, userID, role string) bool {
		t.Helper()
		var m tenantapi.Member
		r := w.E.Get(t, &w.Owner, "/api/v1/users/"+userID)
		apitest.WantStatus(t, r, 200)
		r.JSON(t, &m)
		return slices.Contains(m.Roles, role)
	}
	var ro tenantapi.Role
	r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "auditor", "permissions": []string{"audit:read"}})
	apitest.WantStatus(t, r, 201)
	r.JSON(t, &ro)

	t.Run("revoke", func(t *testing.T) {
		stale := newAdmin(t, "revoke@acme.test")
		other := newAdmin(t, "revoke-other@acme.test")
		demote(t, stale)
		apitest.WantProblem(t, w.E.Send(t, &stale, "DELETE", "/api/v1/users/"+other.UserID+"/roles/admin", nil), 403, "forbidden")
		if !holds(t, other.UserID, "admin") {
			t.Error("a demoted admin revoked another admin's role")
		}
	})
	t.Run("grant", func(t *testing.T) {
		stale := newAdmin(t, "grant@acme.test")
		demote(t, stale)
		apitest.WantProblem(t, w.E.Send(t, &stale, "PUT", "/api/v1/users/"+stale.UserID+"/roles/admin", nil), 403, "forbidden")
		if holds(t, stale.UserID, "admin") {
			t.Error("a demoted admin granted itself admin back")
		}
	})
	t.Run("disable", func(t *testing.T) {
		stale := newAdmin(t, "disable@acme.test")
		other := newAdmin(t, "disable-other@acme.test")
		demote(t, stale)
		apitest.WantProblem(t, w.E.Send(t, &stale, "PATCH", "/api/v1/users/"+other.UserID, map[string]any{"membership_status": "disabled"}), 403, "forbidden")
	})
	t.Run("remove", func(t *testing.T) {
		stale := newAdmin(t, "remove@acme.test")
		other := newAdmin(t, "remove-other@acme.test")
		demote(t, stale)
		apitest.WantProblem(t, w.E.Send(t, &stale, "DELETE", "/api/v1/users/"+other.UserID, nil), 403, "forbidden")
		if !holds(t, other.UserID, "admin") {
			t.Error("a demoted admin removed another admin")
		}
	})
	t.Run("new member", func(t *testing.T) {
		stale := newAdmin(t, "create@acme.test")
		demote(t, stale)
		apitest.WantProblem(t, w.E.Send(t, &stale, "POST", "/api/v1/users", map[string]any{"email": "crony@acme.test", "roles": []string{"admin"}}), 403, "forbidden")
	})
	t.Run("disabled membership", func(t *testing.T) {
		stale := newAdmin(t, "disabled@acme.test")
		other := newAdmin(t, "disabled-other@acme.test")
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/users/"+stale.UserID, map[string]any{"membership_status": "disabled"}), 200)
		apitest.WantProblem(t, w.E.Send(t, &stale, "DELETE", "/api/v1/users/"+other.UserID+"/roles/admin", nil), 403, "forbidden")
	})
	t.Run("roles", func(t *testing.T) {
		stale := newAdmin(t, "roles@acme.test")
		demote(t, stale)
		apitest.WantProblem(t, w.E.Send(t, &stale, "POST", "/api/v1/roles", map[string]any{"name": "sneaky", "permissions": []string{"users:write"}}), 403, "forbidden")
		apitest.WantProblem(t, w.E.Send(t, &stale, "PATCH", "/api/v1/roles/"+ro.ID, map[string]any{"permissions": []string{"audit:read", "users:write"}}), 403, "forbidden")
		apitest.WantProblem(t, w.E.Send(t, &stale, "DELETE", "/api/v1/roles/"+ro.ID, nil), 403, "forbidden")
	})
	t.Run("tenant", func(t *testing.T) {
		// An owner demoted to admin no longer holds tenant:write.
		stale := w.E.SeedUserIn(t, w.A, "tenant@acme.test", "owner", "admin")
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+stale.UserID+"/roles/owner", nil), 200)
		apitest.WantProblem(t, w.E.Send(t, &stale, "PATCH", "/api/v1/tenant", map[string]any{"require_mfa": true}), 403, "forbidden")
		apitest.WantProblem(t, w.E.Send(t, &stale, "PATCH", "/api/v1/tenant", map[string]any{"name": "Renamed"}), 403, "forbidden")
		var tn tenantapi.Tenant
		r := w.E.Get(t, &w.Owner, "/api/v1/tenant")
		apitest.WantStatus(t, r, 200)
		r.JSON(t, &tn)
		if tn.Name == "Renamed" || tn.RequireMFA {
			t.Errorf("a demoted owner changed the tenant: %+v", tn)
		}
	})
	t.Run("custom role edited", func(t *testing.T) {
		// Demoted by an edit of the custom role that gave the power.
		r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "people", "permissions": []string{"users:read", "users:write"}})
		apitest.WantStatus(t, r, 201)
		var people tenantapi.Role
		r.JSON(t, &people)
		stale := w.E.SeedUserIn(t, w.A, "people@acme.test", "people", "member")
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+people.ID, map[string]any{"permissions": []string{"users:read"}}), 200)
		apitest.WantProblem(t, w.E.Send(t, &stale, "DELETE", "/api/v1/users/"+w.Member.UserID, nil), 403, "forbidden")
	})
}

// TestNewMemberRacingDemotion: an admin adds a member with the admin role
// while its own demotion is being committed. Its permissions read before
// the tenant's lock were those of before the demotion, and the new member
// got the role the demotion took; after the lock, the creation waits for
// the demotion and is refused.
func TestNewMemberRacingDemotion(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	admin := w.E.SeedUserIn(t, w.A, "racing@acme.test", "admin", "member")
	// The demotion, as users.Store.RevokeRole makes it: the tenant's lock,
	// then the grant's deletion, not yet committed.
	demotion, err := w.E.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer demotion.Rollback(ctx)
	if _, err := demotion.Exec(ctx, `SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE`, w.A); err != nil {
		t.Fatal(err)
	}
	const qDemote = `DELETE FROM membership_roles WHERE tenant_id = $1 AND user_id = $2
AND role_id = (SELECT id FROM roles WHERE tenant_id = $1 AND name = 'admin')`
	if _, err := demotion.Exec(ctx, qDemote, w.A, admin.UserID); err != nil {
		t.Fatal(err)
	}
	// Either the creation waits for the demotion, or it answered without.
	answer := dbtest.AnsweredOrWaiting(t, w.E.DB, func() apitest.Response {
		return w.E.Send(t, &admin, "POST", "/api/v1/users", map[string]any{"email": "crony@acme.test", "roles": []string{"admin"}})
	})
	if err := demotion.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := answer()
	apitest.WantProblem(t, r, 403, "forbidden")
}

// TestActorConfinedByTheMFAPolicyRefused: once the tenant requires a
// second factor, a member without one holds nothing but the enrolment
// routes (the proxy answers 403 mfa_enrollment_required everywhere
// else), so a request signed with the permissions it held before the
// policy (one in flight as the policy commits, or one a proxy authorized
// from a projection the policy's invalidation has not reached yet) must
// not act with them, as a demoted member's must not: an admin without a
// factor went on granting roles and adding members. A member with an
// active factor acts as before.
func TestActorConfinedByTheMFAPolicyRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	stale := w.E.SeedUserIn(t, w.A, "nofactor@acme.test", "admin")
	enrolled := w.E.SeedUserIn(t, w.A, "factor@acme.test", "admin")
	giveFactor(t, w, enrolled.UserID)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", map[string]any{"require_mfa": true}), 200)

	apitest.WantProblem(t, w.E.Send(t, &stale, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/admin", nil), 403, "forbidden")
	apitest.WantProblem(t, w.E.Send(t, &stale, "POST", "/api/v1/users", map[string]any{"email": "crony@acme.test", "roles": []string{"admin"}}), 403, "forbidden")
	apitest.WantProblem(t, w.E.Send(t, &stale, "POST", "/api/v1/roles", map[string]any{"name": "sneaky", "permissions": []string{"users:write"}}), 403, "forbidden")
	var m tenantapi.Member
	r := w.E.Get(t, &w.Owner, "/api/v1/users/"+w.Member.UserID)
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &m)
	if slices.Contains(m.Roles, "admin") {
		t.Fatal("an admin confined by the MFA policy granted a role")
	}
	apitest.WantStatus(t, w.E.Send(t, &enrolled, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/admin", nil), 200)
}
