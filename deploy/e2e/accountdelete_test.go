package e2e

import (
	"net/http"
	"testing"
)

// TestDeletedAccountRefusedThroughTheProxy: a person deletes their account
// (DELETE /users/me/account) through proxy A; its tokens, cached at both proxies
// with sessions opened through each, are refused by both right after
// (the deletion's invalidation, through the outbox and NATS), its refresh
// tokens too, and its address signs up again as a new account. The
// tenant's owner is not touched.
func TestDeletedAccountRefusedThroughTheProxy(t *testing.T) {
	owner := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member")
	second := login(t, sys.proxyB, m)
	tokens := []tokenResponse{m.Tokens, second}
	for _, px := range []*service{sys.proxyA, sys.proxyB} {
		for _, tk := range tokens {
			me(t, px, tk.AccessToken) // live and cached at both proxies
		}
	}

	expect(t, call(t, "DELETE", sys.proxyA.url("/api/v1/users/me/account"), m.Tokens.AccessToken, nil), http.StatusNoContent)

	for _, px := range []*service{sys.proxyA, sys.proxyB} {
		for i, tk := range tokens {
			_, r := mustWaitStatus(t, "GET", px.url("/api/v1/users/me"), tk.AccessToken, http.StatusUnauthorized, propagation)
			if p := expectProblem(t, r, http.StatusUnauthorized); p.Code == "" {
				t.Errorf("%s, session %d: %s", px.name, i, r)
			}
		}
	}
	for i, tk := range tokens {
		r := call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken})
		if r.Status != http.StatusBadRequest && r.Status != http.StatusUnauthorized {
			t.Errorf("refresh of session %d after the deletion: %s, want 400 or 401", i, r)
		}
	}
	r := call(t, "POST", sys.proxyA.url("/api/v1/auth/token"), "", map[string]string{"grant_type": "password", "email": m.Email, "password": m.Password})
	if p := expectProblem(t, r, http.StatusBadRequest); p.Code != "invalid_grant" {
		t.Errorf("sign-in after the deletion: %s, want 400 invalid_grant as for an unknown address", r)
	}

	// The address is free: it signs up again, a new account.
	r = call(t, "POST", sys.proxyB.url("/api/v1/auth/signup"), "", map[string]string{
		"email": m.Email, "password": testPassword, "tenant_name": "E2E again " + randToken(3)})
	expect(t, r, http.StatusCreated)
	again := decode[tokenResponse](t, r)
	if got := me(t, sys.proxyA, again.AccessToken); got.ID == m.UserID {
		t.Errorf("the new account has the deleted one's id %s", got.ID)
	}
	me(t, sys.proxyA, owner.Tokens.AccessToken)
	me(t, sys.proxyB, owner.Tokens.AccessToken)
}
