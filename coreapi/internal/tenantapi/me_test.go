package tenantapi_test

import (
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
)

// TestMeEchoesTheSignedIdentity: GET and PATCH /users/me report the roles
// and permissions of the verified identity (what the proxy's projection
// said when it signed the request), not a fresh read of the database: a
// role granted after the projection was built appears only once the
// identity carries it.
func TestMeEchoesTheSignedIdentity(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	me := func(r interface{ JSON(testing.TB, any) }) tenantapi.Me {
		var m tenantapi.Me
		r.JSON(t, &m)
		return m
	}
	stale := w.Member // built from the projection before the grant
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/admin", nil), 200)

	r := w.E.Get(t, &stale, "/api/v1/users/me")
	apitest.WantStatus(t, r, 200)
	if got := me(r); !slices.Equal(got.Roles, []string{"member"}) || !slices.Equal(got.Permissions, stale.Permissions) ||
		got.TenantID != w.A || got.MembershipStatus != "active" || got.Email != "member@acme.test" {
		t.Fatalf("with the identity signed before the grant: %s", r.Body)
	}

	fresh := w.E.IdentityOf(t, w.Member.UserID, w.A) // the projection after the grant
	if !slices.Equal(fresh.Roles, []string{"admin", "member"}) {
		t.Fatalf("projection roles = %v", fresh.Roles)
	}
	r = w.E.Get(t, &fresh, "/api/v1/users/me")
	apitest.WantStatus(t, r, 200)
	if got := me(r); !slices.Equal(got.Roles, fresh.Roles) || !slices.Equal(got.Permissions, fresh.Permissions) {
		t.Fatalf("with the identity signed after the grant: %s", r.Body)
	}

	// Whatever the signed lists hold is echoed as it is, in its order;
	// none is an empty list, not null.
	odd := w.Member
	odd.Roles, odd.Permissions = []string{"zeta", "alpha"}, []string{"users:read", "audit:read"}
	r = w.E.Get(t, &odd, "/api/v1/users/me")
	apitest.WantStatus(t, r, 200)
	if got := me(r); !slices.Equal(got.Roles, odd.Roles) || !slices.Equal(got.Permissions, odd.Permissions) {
		t.Fatalf("echo: %s", r.Body)
	}
	none := w.Member
	none.Roles, none.Permissions = nil, nil
	r = w.E.Get(t, &none, "/api/v1/users/me")
	apitest.WantStatus(t, r, 200)
	if got := me(r); got.Roles == nil || got.Permissions == nil || len(got.Roles)+len(got.Permissions) != 0 {
		t.Fatalf("no roles: %s", r.Body)
	}

	// PATCH answers the same way.
	r = w.E.Send(t, &odd, "PATCH", "/api/v1/users/me", map[string]any{"display_name": "Mo"})
	apitest.WantStatus(t, r, 200)
	if got := me(r); !slices.Equal(got.Roles, odd.Roles) || !slices.Equal(got.Permissions, odd.Permissions) || got.DisplayName != "Mo" {
		t.Fatalf("patch: %s", r.Body)
	}
}
