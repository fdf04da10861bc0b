package serviceaccounts_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestOAuthErrorsOnEveryAnswer: the token, introspection and revocation
// endpoints carry RFC 6749 error and error_description on every error
// answer, also those no handler wrote: the database gone away is 503
// temporarily_unavailable, which libraries retry.
func TestOAuthErrorsOnEveryAnswer(t *testing.T) {
	e := start(t, startOpts{})
	_, own := e.owner(t, "oautherr@example.com")
	acc := e.createAccount(t, own, "errors")
	s := e.createSecret(t, own, acc.ID)
	tok := e.clientToken(t, s, "")

	terminate := func() {
		t.Helper()
		const q = `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()`
		var n int
		if err := e.DB.Pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	recovered := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for e.form(t, "/api/v1/auth/introspect", url.Values{"token": {tok.AccessToken}}, basic(s.ClientID, s.ClientSecret)).Status != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatal("no recovery")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, c := range []struct {
		path string
		vals url.Values
	}{
		{"/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}}},
		{"/api/v1/auth/introspect", url.Values{"token": {tok.AccessToken}}},
		{"/api/v1/auth/revoke", url.Values{"token": {"not-a-refresh-token"}}},
	} {
		recovered()
		terminate()
		r := e.form(t, c.path, c.vals, basic(s.ClientID, s.ClientSecret))
		if r.Status != http.StatusServiceUnavailable {
			t.Fatalf("%s, database gone: %d %s, want 503", c.path, r.Status, r.Body)
		}
		oauthProblem(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")

	}
}

// A database failure while introspection or revocation checks that the
// authenticated client is active is the server's failure (503
// temporarily_unavailable), not the client's: answering invalid_client
// would tell a client with the right secret that its credentials are
// wrong. The check's query is held on a table only it reads, and its
// connection is then terminated.
func TestClientCheckDatabaseFailure(t *testing.T) {
	e := start(t, startOpts{})
	ctx := context.Background()
	_, own := e.owner(t, "clientcheck@example.com")
	acc := e.createAccount(t, own, "checker")
	s := e.createSecret(t, own, acc.ID)
	tok := e.clientToken(t, s, "")

	for _, path := range []string{"/api/v1/auth/introspect", "/api/v1/auth/revoke"} {
		hold := e.DB.Hold(t, `LOCK TABLE mfa_totp IN ACCESS EXCLUSIVE MODE`)
		answer := make(chan apitest.Response, 1)
		go func() {
			answer <- e.form(t, path, url.Values{"token": {tok.AccessToken}}, basic(s.ClientID, s.ClientSecret))
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var n int
			// Not in hold's transaction: pg_stat_activity is read once
			// per transaction.
			if err := e.DB.Pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the client check never waited on the lock")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := hold.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		r := <-answer
		if r.Status != http.StatusServiceUnavailable {
			t.Fatalf("%s, the client check failing: %d %s, want 503", path, r.Status, r.Body)
		}
		oauthProblem(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
	}
}
