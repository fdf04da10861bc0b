package httpapi_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// TestMeEchoesTheSignedIdentity: GET and PATCH /users/me report the roles
// and permissions of the verified identity (what the proxy's projection
// said when it signed the request), not a fresh read of the database: a
// role granted after the projection was built appears only once the
// identity carries it.
func TestMeEchoesTheSignedIdentity(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	me := func(r interface{ JSON(testing.TB, any) }) users.Me {
		var m users.Me
		r.JSON(t, &m)
		return m
	}
	stale := w.member // built from the projection before the grant
	wantStatus(t, w.e.Send(t, &w.owner, "PUT", "/api/v1/users/"+w.member.UserID+"/roles/admin", nil), 200)

	r := w.e.Get(t, &stale, "/api/v1/users/me")
	wantStatus(t, r, 200)
	if got := me(r); !equal(got.Roles, []string{"member"}) || !equal(got.Permissions, stale.Permissions) ||
		got.TenantID != w.a || got.MembershipStatus != "active" || got.Email != "member@acme.test" {
		t.Fatalf("with the identity signed before the grant: %s", r.Body)
	}

	fresh := w.e.IdentityOf(t, w.member.UserID, w.a) // the projection after the grant
	if !equal(fresh.Roles, []string{"admin", "member"}) {
		t.Fatalf("projection roles = %v", fresh.Roles)
	}
	r = w.e.Get(t, &fresh, "/api/v1/users/me")
	wantStatus(t, r, 200)
	if got := me(r); !equal(got.Roles, fresh.Roles) || !equal(got.Permissions, fresh.Permissions) {
		t.Fatalf("with the identity signed after the grant: %s", r.Body)
	}

	// Whatever the signed lists hold is echoed as it is, in its order;
	// none is an empty list, not null.
	odd := w.member
	odd.Roles, odd.Permissions = []string{"zeta", "alpha"}, []string{"users:read", "audit:read"}
	r = w.e.Get(t, &odd, "/api/v1/users/me")
	wantStatus(t, r, 200)
	if got := me(r); !equal(got.Roles, odd.Roles) || !equal(got.Permissions, odd.Permissions) {
		t.Fatalf("echo: %s", r.Body)
	}
	none := w.member
	none.Roles, none.Permissions = nil, nil
	r = w.e.Get(t, &none, "/api/v1/users/me")
	wantStatus(t, r, 200)
	if got := me(r); got.Roles == nil || got.Permissions == nil || len(got.Roles)+len(got.Permissions) != 0 {
		t.Fatalf("no roles: %s", r.Body)
	}

	// PATCH answers the same way.
	r = w.e.Send(t, &odd, "PATCH", "/api/v1/users/me", map[string]any{"display_name": "Mo"})
	wantStatus(t, r, 200)
	if got := me(r); !equal(got.Roles, odd.Roles) || !equal(got.Permissions, odd.Permissions) || got.DisplayName != "Mo" {
		t.Fatalf("patch: %s", r.Body)
	}
}
