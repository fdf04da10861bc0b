package oauth_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestLinkAuditKeepsTheProvidersAddressPrivate: an owner links a provider
// account whose address is not the account's (a private one). Each of the
// account's tenants is told that an identity of the provider was linked,
// when and by whom (the audit row), but not that other address: a tenant's
// admins know the member by the account's address, and the provider's is
// the owner's to see (GET /users/me/identities), not every tenant's.
func TestLinkAuditKeepsTheProvidersAddressPrivate(t *testing.T) {
	x := start(t)
	me := x.signedInOwner(t, "work@example.com")
	ten := x.SeedTenant(t, "Shared")
	admin := x.SeedUserIn(t, ten.ID, "admin@example.com", "admin")
	x.SeedMember(t, ten.ID, me.UserID, "member")
	const private = "very.private@elsewhere.example"
	x.provide("private-subject", private, true)

	st := x.startLink(t, me)
	apitest.WantStatus(t, x.finishLink(t, me, x.approve(t, st), st.cookie), http.StatusOK)

	for _, as := range []struct {
		name, tenant string
		r            apitest.Response
	}{
		{"the shared tenant's admin", ten.ID, x.Get(t, &admin, "/api/v1/audit-events?limit=200")},
		{"the owner's own tenant", me.TenantID, x.Get(t, me, "/api/v1/audit-events?limit=200")},
	} {
		apitest.WantStatus(t, as.r, http.StatusOK)
		var list struct {
			Data []struct {
				Action      string         `json:"action"`
				ActorUserID *string        `json:"actor_user_id"`
				TargetID    *string        `json:"target_id"`
				Data        map[string]any `json:"data"`
			} `json:"data"`
		}
		as.r.JSON(t, &list)
		linked := 0
		for _, e := range list.Data {
			if e.Action != "user.identity_linked" {
				continue
			}
			linked++
			if e.Data["provider"] != "fake" || e.ActorUserID == nil || *e.ActorUserID != me.UserID ||
				e.TargetID == nil || *e.TargetID != me.UserID {
				t.Errorf("%s: identity_linked event %+v, want the provider, the owner as actor and target", as.name, e)
			}
		}
		if linked != 1 {
			t.Errorf("%s: %d identity_linked events, want 1", as.name, linked)
		}
		if strings.Contains(string(as.r.Body), private) {
			t.Errorf("%s reads the provider account's address in the audit log: %s", as.name, as.r.Body)
		}
	}

	// The owner still sees it on their own account.
	r := x.Get(t, me, "/api/v1/users/me/identities")
	apitest.WantStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.Body), private) {
		t.Errorf("GET /users/me/identities = %s, want the provider's address", r.Body)
	}
}
