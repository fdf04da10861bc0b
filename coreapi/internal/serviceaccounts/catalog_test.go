package serviceaccounts_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// notesCatalog is the example app's catalog.
const notesCatalog = `
permissions:
  - name: notes:read
    description: Read notes
    member_default: true
  - name: notes:write
    description: Create notes
`

// TestSecretUnderAnotherCatalog: a client secret hands out the account's
// power, so a replica whose catalog does not declare a permission a
// custom role of the account stores (the replicas of the other version
// during a rollout declare it) must not make one on the say of a caller
// who does not hold that permission. It judged the account by what its
// own catalog declares, so a delegate with users:write and without
// notes:write made a secret for an account holding "writer" through an
// old replica, and every new replica then gave its tokens notes:write.
// Such an account gets a secret only from a replica that can judge it:
// here, 403 forbidden for everyone, nothing made; the new replica still
// makes one for a caller who holds what the account holds.
func TestSecretUnderAnotherCatalog(t *testing.T) {
	cat, err := permissions.Parse([]byte(notesCatalog), "test")
	if err != nil {
		t.Fatal(err)
	}
	newer := start(t, startOpts{catalog: cat})
	older := start(t, startOpts{db: newer.DB}) // the built-in catalog: no notes:*
	_, owner := newer.owner(t, "owner@example.com")
	tid := owner.TenantID
	apitest.WantStatus(t, newer.Send(t, owner, http.MethodPost, "/api/v1/roles",
		map[string]any{"name": "writer", "permissions": []string{"notes:write"}}), 201)
	apitest.WantStatus(t, newer.Send(t, owner, http.MethodPost, "/api/v1/roles",
		map[string]any{"name": "delegate", "permissions": []string{"tenant:read", "users:read", "users:write"}}), 201)
	del := newer.SeedUserIn(t, tid, "delegate@example.com", "delegate")
	acc := newer.createAccount(t, owner, "bot", "writer")

	for _, c := range []struct {
		name string
		as   *identity.Identity
	}{{"delegate", &del}, {"owner", owner}} {
		t.Run(c.name+" on the older replica", func(t *testing.T) {
			apitest.WantProblem(t, older.Send(t, c.as, http.MethodPost, "/api/v1/service-accounts/"+acc.ID+"/secrets", nil), 403, "forbidden")
			if n := newer.count(t, `SELECT count(*) FROM service_account_secrets WHERE user_id = $1`, acc.ID); n != 0 {
				t.Fatalf("%d secrets made for the account", n)
			}
		})
	}
	// The replica that declares the permission judges the account in full.
	apitest.WantProblem(t, newer.Send(t, &del, http.MethodPost, "/api/v1/service-accounts/"+acc.ID+"/secrets", nil), 403, "forbidden")
	s := newer.createSecret(t, owner, acc.ID)
	if got := strings.Fields(newer.clientToken(t, s, "").Scope); !slices.Contains(got, "notes:write") {
		t.Fatalf("the account's token holds %v, want notes:write among them", got)
	}
}

// TestCredentialsDuringCatalogRollout: while a rollout adds notes:read to
// the built-in member role (member_default), a replica still on the old
// catalog judged the member role by it, and the credentials it made (a
// service account holding member, a client secret for one, an API key)
// were judged without the permission the replicas of the new catalog then
// granted. A replica whose catalog is not the recorded one now makes no
// credential (503 catalog_rollout with Retry-After, nothing made), nor
// deletes an account, which needs what the account holds (it deleted it
// on the say of a caller judged by its own catalog); the replica with the
// recorded catalog makes and deletes them. Deleting a client secret only
// ends access, and must work while a rollout runs (a leaked secret is
// deleted at once, whichever replica serves it): every replica deletes
// one, judged by its own catalog, as it revokes an API key.
func TestCredentialsDuringCatalogRollout(t *testing.T) {
	cat, err := permissions.Parse([]byte(notesCatalog), "test")
	if err != nil {
		t.Fatal(err)
	}
	newer := start(t, startOpts{catalog: cat, keyRoutes: true})
	older := start(t, startOpts{db: newer.DB, keyRoutes: true}) // the built-in catalog: no notes:*
	if _, err := permissions.Record(context.Background(), newer.DB.Pool, cat); err != nil {
		t.Fatal(err)
	}
	_, owner := newer.owner(t, "owner@example.com")
	acc := newer.createAccount(t, owner, "bot", "member")
	sec := newer.createSecret(t, owner, acc.ID)
	const qMade = `SELECT (SELECT count(*) FROM users WHERE kind = 'service') + (SELECT count(*) FROM service_account_secrets)
    + (SELECT count(*) FROM api_keys) + (SELECT count(*) FROM audit_events)`
	before := newer.count(t, qMade)

	for _, c := range []struct {
		name, path string
		body       any
	}{
		{"service account", "/api/v1/service-accounts", map[string]any{"name": "bot2", "roles": []string{"member"}}},
		{"client secret", "/api/v1/service-accounts/" + acc.ID + "/secrets", nil},
		{"tenant API key", "/api/v1/api-keys", map[string]any{"name": "ci", "permissions": []string{"tenant:read"}}},
		{"personal API key", "/api/v1/users/me/api-keys", map[string]any{"name": "mine", "permissions": []string{"tenant:read"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := older.Send(t, owner, http.MethodPost, c.path, c.body)
			apitest.WantProblem(t, r, http.StatusServiceUnavailable, problem.CodeCatalogRollout)
			if got := r.Header.Get("Retry-After"); got != "1" {
				t.Errorf("Retry-After = %q, want 1", got)
			}
		})
	}
	if after := newer.count(t, qMade); after != before {
		t.Fatalf("the refusals made something: %d rows before, %d after", before, after)
	}
	// Deleting the account is judged by what the account holds (member:
	// notes:read under the recorded catalog), which this replica's
	// catalog does not say: refused, nothing deleted.
	path := "/api/v1/service-accounts/" + acc.ID
	r := older.Send(t, owner, http.MethodDelete, path, nil)
	apitest.WantProblem(t, r, http.StatusServiceUnavailable, problem.CodeCatalogRollout)
	if got := r.Header.Get("Retry-After"); got != "1" {
		t.Errorf("DELETE %s: Retry-After = %q, want 1", path, got)
	}
	if after := newer.count(t, qMade); after != before {
		t.Fatalf("the refused deletion deleted something: %d rows before, %d after", before, after)
	}
	// Deleting its secret ends access only: the old replica deletes it,
	// the account's tokens end and a token of the secret writes nothing.
	const qInvalidations = `SELECT count(*) FROM outbox WHERE subject = $1`
	invalidations := newer.count(t, qInvalidations, invalidation.UserSubject(acc.ID))
	apitest.WantStatus(t, older.Send(t, owner, http.MethodDelete, path+"/secrets/"+sec.ID, nil), http.StatusNoContent)
	if n := newer.count(t, `SELECT count(*) FROM service_account_secrets WHERE id = $1`, sec.ID); n != 0 {
		t.Fatal("the secret was not deleted")
	}
	if n := newer.count(t, qInvalidations, invalidation.UserSubject(acc.ID)); n != invalidations+1 {
		t.Fatalf("%d invalidations of the account written with the deletion, want 1", n-invalidations)
	}
	apitest.WantProblem(t, older.Send(t, newer.tokenIdentity(t, acc.ID, owner.TenantID, sec.ID), http.MethodPost, "/api/v1/api-keys",
		map[string]any{"name": "late", "permissions": []string{"tenant:read"}}), http.StatusUnauthorized, "invalid_token")
	// The replica with the recorded catalog deletes the account, and makes.
	apitest.WantStatus(t, newer.Send(t, owner, http.MethodDelete, path, nil), http.StatusNoContent)
	newer.createSecret(t, owner, newer.createAccount(t, owner, "bot3", "member").ID)
	newer.mintKey(t, owner, "ci")
}
