package serviceaccounts_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestDemotedActorRefused: a request signed with the permissions its
// caller held before being demoted or disabled (in flight as that
// committed, or authorized from a projection its invalidation had not
// reached) neither creates a service account with roles nor creates or
// deletes a client secret nor deletes an account: each change reads what
// its caller holds when it runs, after the tenant's lock.
func TestDemotedActorRefused(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	tid := owner.TenantID
	// stale is an admin's identity as signed before its demotion to
	// member, disabled one's before its membership was disabled.
	stale := e.SeedUserIn(t, tid, "stale@example.com", "admin", "member")
	disabled := e.SeedUserIn(t, tid, "disabled@example.com", "admin")
	apitest.WantStatus(t, e.Send(t, owner, http.MethodDelete, "/api/v1/users/"+stale.UserID+"/roles/admin", nil), 200)
	apitest.WantStatus(t, e.Send(t, owner, http.MethodPatch, "/api/v1/users/"+disabled.UserID, map[string]any{"membership_status": "disabled"}), 200)
	// A key acting as the demoted admin holds no more than it does now
	// (keys may delete accounts and secrets, not create them).
	asKey := e.AsKey(t, stale)

	for name, as := range map[string]identity.Identity{"demoted": stale, "disabled": disabled, "demoted's key": asKey} {
		if as.Principal != identity.PrincipalAPIKey {
			t.Run(name+" creates an account", func(t *testing.T) {
				before := e.count(t, `SELECT count(*) FROM service_accounts`)
				apitest.WantProblem(t, e.Send(t, &as, http.MethodPost, "/api/v1/service-accounts",
					map[string]any{"name": "crony", "roles": []string{"admin"}}), 403, "forbidden")
				if n := e.count(t, `SELECT count(*) FROM service_accounts`); n != before {
					t.Fatal("an account was created")
				}
			})
			t.Run(name+" creates a secret", func(t *testing.T) {
				acc := e.createAccount(t, owner, "bot", "admin")
				apitest.WantProblem(t, e.Send(t, &as, http.MethodPost, "/api/v1/service-accounts/"+acc.ID+"/secrets", nil), 403, "forbidden")
				if n := e.count(t, `SELECT count(*) FROM service_account_secrets WHERE user_id = $1`, acc.ID); n != 0 {
					t.Fatalf("%d secrets created", n)
				}
			})
		}
		t.Run(name+" deletes a secret", func(t *testing.T) {
			acc := e.createAccount(t, owner, "bot", "member")
			s := e.createSecret(t, owner, acc.ID)
			apitest.WantProblem(t, e.Send(t, &as, http.MethodDelete, "/api/v1/service-accounts/"+acc.ID+"/secrets/"+s.ID, nil), 403, "forbidden")
			if n := e.count(t, `SELECT count(*) FROM service_account_secrets WHERE id = $1`, s.ID); n != 1 {
				t.Fatal("the secret was deleted")
			}
		})
		t.Run(name+" deletes an account", func(t *testing.T) {
			acc := e.createAccount(t, owner, "bot", "member")
			apitest.WantProblem(t, e.Send(t, &as, http.MethodDelete, "/api/v1/service-accounts/"+acc.ID, nil), 403, "forbidden")
			if n := e.count(t, `SELECT count(*) FROM service_accounts WHERE user_id = $1`, acc.ID); n != 1 {
				t.Fatal("the account was deleted")
			}
		})
	}
}
