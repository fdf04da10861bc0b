package serviceaccounts_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// A client_credentials grant that checks a secret while the secret's
// deletion is committing gets no token that outlives the deletion: it
// signs the token version read with the secret, and a deletion that
// committed between the check and the signing (the account's projection
// shows the raised version) is 401 invalid_client, no token. The deletion is held just before its commit (the tenant's
// API-key lock, which it takes last, is held here), the grant then waits
// on the secret row the deletion holds, and the deletion commits.
func TestSecretDeletedDuringGrant(t *testing.T) {
	e := start(t, startOpts{})
	ctx := context.Background()
	_, owner := e.owner(t, "race@example.com")
	a := e.createAccount(t, owner, "racer")
	leaked := e.createSecret(t, owner, a.ID)
	other := e.createSecret(t, owner, a.ID)

	waiting := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var w int
			if err := e.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&w); err != nil {
				t.Fatal(err)
			}
			if w >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d backends waiting on a lock, want %d", w, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	hold := e.DB.Hold(t, `SELECT pg_advisory_xact_lock(hashtextextended('api_keys:' || $1, 0))`, owner.TenantID)
	deleted := make(chan apitest.Response, 1)
	go func() {
		deleted <- e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID+"/secrets/"+leaked.ID, nil)
	}()
	waiting(1) // the deletion: secret deleted, token version raised, not committed
	granted := make(chan apitest.Response, 1)
	go func() {
		granted <- e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}}, basic(leaked.ClientID, leaked.ClientSecret))
	}()
	waiting(2) // the grant: on the secret row the deletion holds
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-deleted; r.Status != http.StatusNoContent {
		t.Fatalf("delete secret: %d %s", r.Status, r.Body)
	}
	r := <-granted
	if r.Status == http.StatusOK {
		var tk tokens
		r.JSON(t, &tk)
		if m := e.introspect(t, other, tk.AccessToken); m["active"] != false {
			t.Fatalf("a token obtained with the deleted secret is active after the deletion: %v", m)
		}
		t.Fatal("a token was issued for a secret whose deletion committed before the signing")
	}
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	// The deleted secret obtains nothing more; the other one does.
	oauthProblem(t, e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}}, basic(leaked.ClientID, leaked.ClientSecret)),
		http.StatusUnauthorized, "invalid_client")
	e.clientToken(t, other, "")
}
