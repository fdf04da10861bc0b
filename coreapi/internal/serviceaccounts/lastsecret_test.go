package serviceaccounts_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestNoKeyMintedAfterTheLastSecret: once a service account's last
// client secret is deleted, every access token it obtained has ended, so
// a key creation signed with one (by a proxy that has not yet heard of
// the deletion, or one that waited on the tenant's lock the deletion
// held) is refused, 401 invalid_token, and creates nothing: the key would
// outlive the secret, which was deleted because it may have leaked.
func TestNoKeyMintedAfterTheLastSecret(t *testing.T) {
	e := start(t, startOpts{keyRoutes: true})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "ci", "admin")
	leaked := e.createSecret(t, owner, a.ID)
	stale := e.serviceIdentity(t, a.ID, owner.TenantID)
	e.mintKey(t, stale, "before")

	apitest.WantStatus(t, e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID+"/secrets/"+leaked.ID, nil), http.StatusNoContent)
	r := e.Send(t, stale, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "persist", "permissions": []string{"users:read"}})
	apitest.WantProblem(t, r, http.StatusUnauthorized, "invalid_token")
	if wa := r.Header.Get("WWW-Authenticate"); wa == "" {
		t.Error("a 401 to a bearer without a challenge")
	}
	if n := e.count(t, `SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL`, a.ID); n != 0 {
		t.Fatalf("%d live keys of the account after its last secret's deletion", n)
	}

	// A new secret, and tokens obtained with it, mint again.
	e.clientToken(t, e.createSecret(t, owner, a.ID), "")
	e.wantKey(t, e.mintKey(t, stale, "after a new secret"), http.StatusOK, "")
}
