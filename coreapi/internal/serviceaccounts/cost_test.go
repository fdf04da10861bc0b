package serviceaccounts_test

import (
	"net/http"
	"net/url"
	"testing"
)

// The database round trips of the machine endpoints, so a change that adds
// one is seen: the grant reserves the attempt, looks the secret up (and
// records its use, at most once a minute, in the same statement), releases
// the reservation and loads the projection; introspection adds the token's
// projection and, for a user's token, its session.
func TestMachineEndpointQueries(t *testing.T) {
	e := start(t, startOpts{})
	tk, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "counted")
	s := e.createSecret(t, owner, a.ID)
	cc := url.Values{"grant_type": {"client_credentials"}}
	for i := range 2 {
		r := e.form(t, "/api/v1/auth/token", cc, basic(s.ClientID, s.ClientSecret))
		if r.Status != http.StatusOK || r.Stats.Queries != 4 || r.Stats.Transactions != 0 {
			t.Errorf("grant %d: status %d, %d queries, %d transactions; want 4, 0", i, r.Status, r.Stats.Queries, r.Stats.Transactions)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM service_account_secrets WHERE id = $1 AND last_used_at IS NOT NULL`, s.ID); n != 1 {
		t.Fatal("the secret's use was not recorded")
	}
	r := e.form(t, "/api/v1/auth/introspect", url.Values{"token": {tk.AccessToken}}, basic(s.ClientID, s.ClientSecret))
	if r.Status != http.StatusOK || r.Stats.Queries != 6 {
		t.Errorf("introspection: status %d, %d queries, want 6", r.Status, r.Stats.Queries)
	}
}
