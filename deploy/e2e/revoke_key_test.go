package e2e

import (
	"net/http"
	"net/url"
	"testing"
)

// TestRevokeAPIKeyByRFC7009: a service account of the key's tenant revokes
// an API key at the standard revocation endpoint (through proxy B); the key
// is then refused at both proxies. The same request from another tenant's
// service account answers 200 (RFC 7009) and revokes nothing.
func TestRevokeAPIKeyByRFC7009(t *testing.T) {
	owner := signup(t, sys.proxyA)
	stranger := signup(t, sys.proxyA)
	client := func(u account) (id, secret string) {
		t.Helper()
		r := call(t, "POST", sys.proxyA.url("/api/v1/service-accounts"), u.Tokens.AccessToken, map[string]any{"name": "revoker", "roles": []string{"member"}})
		expect(t, r, http.StatusCreated)
		acc := decode[struct{ ID string }](t, r)
		r = call(t, "POST", sys.proxyA.url("/api/v1/service-accounts/"+acc.ID+"/secrets"), u.Tokens.AccessToken, nil)
		expect(t, r, http.StatusCreated)
		s := decode[struct {
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
		}](t, r)
		return s.ClientID, s.ClientSecret
	}
	r := call(t, "POST", sys.proxyA.url("/api/v1/api-keys"), owner.Tokens.AccessToken,
		map[string]any{"name": "to revoke", "permissions": []string{"notes:read"}})
	expect(t, r, http.StatusCreated)
	k := decode[createdKey](t, r)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		if r, err := keyGet(p.url("/notes"), k.Secret); err != nil || r.Status != http.StatusOK {
			t.Fatalf("the new key at %s: %v %v", p.url(""), r, err)
		}
	}

	// Another tenant's client: 200, nothing revoked.
	sid, ssecret := client(stranger)
	expect(t, postForm(t, sys.proxyB.url("/api/v1/auth/revoke"), sid, ssecret, url.Values{"token": {k.Secret}}), http.StatusOK)
	if r, err := keyGet(sys.proxyB.url("/notes"), k.Secret); err != nil || r.Status != http.StatusOK {
		t.Fatalf("after another tenant's revocation request the key must still work: %v %v", r, err)
	}

	id, secret := client(owner)
	expect(t, postForm(t, sys.proxyB.url("/api/v1/auth/revoke"), id, secret,
		url.Values{"token": {k.Secret}, "token_type_hint": {"refresh_token"}}), http.StatusOK)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		mustWaitStatus(t, "GET", p.url("/notes"), k.Secret, http.StatusUnauthorized, propagation)
	}
}
