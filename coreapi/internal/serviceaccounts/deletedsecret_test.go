package serviceaccounts_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/clientsecret"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// tokenIdentity is the identity the proxy forwards for a service
// account's access token obtained with client secret secretID: the
// token's csid claim as X-Auth-Session-Id.
func (e *env) tokenIdentity(t testing.TB, id, tenantID, secretID string) *identity.Identity {
	t.Helper()
	sid := e.IdentityOf(t, id, tenantID)
	sid.Principal, sid.SessionID = identity.PrincipalService, secretID
	return &sid
}

// TestNothingDoneWithADeletedSecret: a service account holds two client
// secrets and one of them, not the last, is deleted. A request signed
// with the identity of a token obtained with it (by a proxy that has not
// yet heard of the deletion: NATS late, partitioned, or the event
// missed) neither mints an API key nor changes anything else (401
// invalid_token, nothing written); the same requests of a token of the
// live secret go through, and reads of the stale one are left to the
// proxies (no query is added to them).
func TestNothingDoneWithADeletedSecret(t *testing.T) {
	e := start(t, startOpts{keyRoutes: true})
	_, owner := e.owner(t, "owner@example.com")
	tid := owner.TenantID
	a := e.createAccount(t, owner, "ci", "admin")
	leaked := e.createSecret(t, owner, a.ID)
	kept := e.createSecret(t, owner, a.ID)
	if csid := claimsOf(t, e.clientToken(t, leaked, "").AccessToken)["csid"]; csid != leaked.ID {
		t.Fatalf("token csid = %v, want the secret's id %s", csid, leaked.ID)
	}
	stale := e.tokenIdentity(t, a.ID, tid, leaked.ID)
	live := e.tokenIdentity(t, a.ID, tid, kept.ID)
	member := e.SeedUserIn(t, tid, "member@example.com", "member")

	outbox := `SELECT count(*) FROM outbox WHERE subject = $1`
	before := e.count(t, outbox, invalidation.UserSubject(a.ID))
	apitest.WantStatus(t, e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID+"/secrets/"+leaked.ID, nil), http.StatusNoContent)
	if n := e.count(t, outbox, invalidation.UserSubject(a.ID)); n != before+1 {
		t.Fatalf("%d invalidations of the account written with the deletion, want 1", n-before)
	}

	r := e.Send(t, stale, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "persist", "permissions": []string{"users:read"}})
	apitest.WantProblem(t, r, http.StatusUnauthorized, "invalid_token")
	if r.Header.Get("WWW-Authenticate") == "" {
		t.Error("a 401 to a bearer without a challenge")
	}
	if n := e.count(t, `SELECT count(*) FROM api_keys WHERE user_id = $1`, a.ID); n != 0 {
		t.Fatalf("%d keys minted with the deleted secret's token", n)
	}
	grant := "/api/v1/users/" + member.UserID + "/roles/admin"
	apitest.WantProblem(t, e.Send(t, stale, http.MethodPut, grant, nil), http.StatusUnauthorized, "invalid_token")
	if n := e.count(t, `SELECT count(*) FROM membership_roles mr JOIN roles r ON r.id = mr.role_id
		WHERE mr.user_id = $1 AND r.name = 'admin'`, member.UserID); n != 0 {
		t.Fatal("the deleted secret's token granted a role")
	}
	apitest.WantStatus(t, e.Send(t, stale, http.MethodGet, "/api/v1/users/"+member.UserID, nil), http.StatusOK)

	// The other secret's tokens act.
	apitest.WantStatus(t, e.Send(t, live, http.MethodPut, grant, nil), http.StatusOK)
	e.wantKey(t, e.mintKey(t, live, "kept"), http.StatusOK, "")
}

// TestKeyCreationChecksTheSecretInItsTransaction: the key store checks
// the creator's secret after the tenant's lock, which a secret's deletion
// takes first, so a creation that got past the request's own check
// before the deletion committed (a race the proxy's delay leaves open)
// mints nothing either.
func TestKeyCreationChecksTheSecretInItsTransaction(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "ci", "admin")
	leaked := e.createSecret(t, owner, a.ID)
	kept := e.createSecret(t, owner, a.ID)
	apitest.WantStatus(t, e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID+"/secrets/"+leaked.ID, nil), http.StatusNoContent)

	ks, err := apikeys.New(apikeys.Options{Logger: slog.New(slog.DiscardHandler), Pool: e.DB.Pool, Pepper: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	key := func(secretID string) error {
		_, _, err := ks.Store().Create(context.Background(), apikeys.NewKey{TenantID: owner.TenantID, UserID: a.ID, Kind: apikeys.KindTenant,
			Name: "k", Permissions: []string{"users:read"}, SecretID: secretID, Held: []string{"api-keys:write", "users:read"}})
		return err
	}
	if err := key(leaked.ID); !errors.Is(err, clientsecret.ErrDeleted) {
		t.Fatalf("key of the deleted secret's token: %v, want clientsecret.ErrDeleted", err)
	}
	if n := e.count(t, `SELECT count(*) FROM api_keys WHERE user_id = $1`, a.ID); n != 0 {
		t.Fatalf("%d keys minted", n)
	}
	if err := key(kept.ID); err != nil {
		t.Fatalf("key of the live secret's token: %v", err)
	}
}

// TestWriteChecksTheSecretInItsTransaction: a write of a token whose
// secret existed when the request's own check ran (liveCredential), and
// that then waits for the tenant's lock a deletion of the secret holds,
// finds the secret gone once it has the lock: 401 invalid_token, nothing
// written, as when the deletion had committed before the request came.
// Without the check in the transaction it granted the role after the
// deletion had returned.
func TestWriteChecksTheSecretInItsTransaction(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	tid := owner.TenantID
	a := e.createAccount(t, owner, "ci", "admin")
	leaked := e.createSecret(t, owner, a.ID)
	e.createSecret(t, owner, a.ID)
	member := e.SeedUserIn(t, tid, "member@example.com", "member")
	stale := e.tokenIdentity(t, a.ID, tid, leaked.ID)

	// The deletion's transaction: the tenant's lock first
	// (Store.DeleteSecret), held while the write comes.
	del := e.DB.Hold(t, `SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE`, tid)
	grant := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response {
		return e.Send(t, stale, http.MethodPut, "/api/v1/users/"+member.UserID+"/roles/admin", nil)
	})
	ctx := context.Background()
	if _, err := del.Exec(ctx, `DELETE FROM service_account_secrets WHERE id = $1`, leaked.ID); err != nil {
		t.Fatal(err)
	}
	if err := del.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	apitest.WantProblem(t, grant(), http.StatusUnauthorized, "invalid_token")
	if n := e.count(t, `SELECT count(*) FROM membership_roles mr JOIN roles r ON r.id = mr.role_id
		WHERE mr.user_id = $1 AND r.name = 'admin'`, member.UserID); n != 0 {
		t.Fatal("the deleted secret's token granted a role")
	}
}
