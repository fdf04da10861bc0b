package serviceaccounts_test

import (
	"net/http"
	"testing"
)

// TestIntrospectionAfterTenantSwitch: POST /auth/switch-tenant moves a
// session from tenant A to tenant B. An access token issued before the
// switch (tid A, the same sid) named a session that was still live, only
// in another tenant, and introspected active in A until it expired,
// though coreapi's own sensitive writes refuse it (sessions.LiveIn). Now
// introspection asks whether the session is live in the token's tenant:
// the old token is inactive, the new one (tid B) active.
func TestIntrospectionAfterTenantSwitch(t *testing.T) {
	e := start(t, startOpts{})
	tk, ownerA := e.owner(t, "switcher@example.com")
	b := e.SeedTenant(t, "B")
	e.SeedMember(t, b.ID, ownerA.UserID, "owner")
	ownerB := e.IdentityOf(t, ownerA.UserID, b.ID)
	inA := e.createSecret(t, ownerA, e.createAccount(t, ownerA, "a-introspector").ID)
	inB := e.createSecret(t, &ownerB, e.createAccount(t, &ownerB, "b-introspector").ID)

	if got := e.introspect(t, inA, tk.AccessToken); got["active"] != true {
		t.Fatalf("the token of tenant A before the switch: %v, want active", got)
	}
	r := e.Send(t, ownerA, http.MethodPost, "/api/v1/auth/switch-tenant",
		map[string]string{"tenant_id": b.ID, "refresh_token": tk.RefreshToken})
	if r.Status != http.StatusOK {
		t.Fatalf("switch: %d %s", r.Status, r.Body)
	}
	var switched tokens
	r.JSON(t, &switched)
	if sid := claimsOf(t, switched.AccessToken)["sid"]; sid != ownerA.SessionID {
		t.Fatalf("switched token's sid %v, want the same session %s", sid, ownerA.SessionID)
	}

	if got := e.introspect(t, inA, tk.AccessToken); got["active"] != false {
		t.Errorf("the token of tenant A after its session moved to B: %v, want inactive", got)
	}
	if got := e.introspect(t, inB, switched.AccessToken); got["active"] != true {
		t.Errorf("the token of tenant B after the switch: %v, want active", got)
	}
}
