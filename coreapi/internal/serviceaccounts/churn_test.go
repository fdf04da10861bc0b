package serviceaccounts_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
)

// TestSecretCreationsLimited: a service account gets at most
// Limits.SecretCreations.N client secrets in a window, and a tenant's
// accounts Limits.TenantSecretCreations.N together, deleted ones included, then 429 with
// Retry-After and nothing written; a creation refused otherwise (409 at
// MaxSecrets) is not counted, another tenant is not held back. Without it
// a create-and-delete loop ran without end, each deletion an invalidation
// every proxy receives.
func TestSecretCreationsLimited(t *testing.T) {
	e := start(t, startOpts{limits: serviceaccounts.Limits{
		SecretCreations:       ratelimit.Limit{N: 3, Window: time.Hour},
		TenantSecretCreations: ratelimit.Limit{N: 5, Window: time.Hour},
	}})
	_, owner := e.owner(t, "owner@example.com")
	_, other := e.owner(t, "other@example.com")
	a := e.createAccount(t, owner, "ci")
	b := e.createAccount(t, owner, "deploy")
	post := func(id string) apitest.Response {
		return e.Send(t, owner, http.MethodPost, "/api/v1/service-accounts/"+id+"/secrets", nil)
	}
	refused := func(id, what string) {
		t.Helper()
		before := e.count(t, `SELECT count(*) FROM service_account_secrets`)
		audits := e.count(t, `SELECT count(*) FROM audit_events WHERE action = $1`, serviceaccounts.ActionSecretCreated)
		r := post(id)
		apitest.WantProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After: %v", r.Header)
		}
		if d := r.Problem(t).Detail; !strings.Contains(d, what) {
			t.Errorf("detail %q does not say %q", d, what)
		}
		if n := e.count(t, `SELECT count(*) FROM service_account_secrets`); n != before {
			t.Errorf("%d secrets after the refusal, %d before", n, before)
		}
		if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = $1`, serviceaccounts.ActionSecretCreated); n != audits {
			t.Errorf("%d creation audits after the refusal, %d before", n, audits)
		}
	}
	// Three creations for a, each deleted but the last: the deleted ones count.
	for i := range 3 {
		s := e.createSecret(t, owner, a.ID)
		if i < 2 {
			if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID+"/secrets/"+s.ID, nil); r.Status != http.StatusNoContent {
				t.Fatalf("delete secret: %d %s", r.Status, r.Body)
			}
		}
	}
	refused(a.ID, "for this service account")
	// b fills its live secrets (refusals at MaxSecrets do not count) and
	// then the tenant's budget: 3 for a, 2 for b.
	if serviceaccounts.MaxSecrets < 2 {
		t.Fatal("MaxSecrets below 2")
	}
	e.exec(t, `INSERT INTO service_account_secrets (user_id, secret_hash)
SELECT $1, sha256(i::text::bytea) FROM generate_series(1, $2) i`, b.ID, serviceaccounts.MaxSecrets)
	if r := post(b.ID); r.Status != http.StatusConflict {
		t.Fatalf("secret beyond MaxSecrets: %d %s", r.Status, r.Body)
	}
	e.exec(t, `DELETE FROM service_account_secrets WHERE user_id = $1`, b.ID)
	e.createSecret(t, owner, b.ID)
	e.createSecret(t, owner, b.ID)
	refused(b.ID, "for this tenant's service accounts")
	// Another tenant has budgets of its own.
	c := e.createAccount(t, other, "ci")
	e.createSecret(t, other, c.ID)
}

// TestAccountCreationsLimited: a tenant creates at most
// Limits.AccountCreations.N service accounts in a window, deleted ones included,
// then 429 with Retry-After and nothing written; a creation refused
// otherwise is not counted, another tenant is not held back. Without it a
// create-and-delete loop ran without end, each deletion an invalidation
// every proxy receives.
func TestAccountCreationsLimited(t *testing.T) {
	e := start(t, startOpts{limits: serviceaccounts.Limits{AccountCreations: ratelimit.Limit{N: 3, Window: time.Hour}}})
	_, owner := e.owner(t, "owner@example.com")
	_, other := e.owner(t, "other@example.com")
	// Refused for another reason (the owner role is never handed): not counted.
	if r := e.Send(t, owner, http.MethodPost, "/api/v1/service-accounts",
		map[string]any{"name": "root", "roles": []string{"owner"}}); r.Status < 400 || r.Status == http.StatusTooManyRequests {
		t.Fatalf("an account with the owner role: %d %s", r.Status, r.Body)
	}
	for i := range 3 {
		a := e.createAccount(t, owner, "ci")
		if i < 2 {
			if r := e.Send(t, owner, http.MethodDelete, "/api/v1/service-accounts/"+a.ID, nil); r.Status != http.StatusNoContent {
				t.Fatalf("delete account: %d %s", r.Status, r.Body)
			}
		}
	}
	before := e.count(t, `SELECT count(*) FROM service_accounts`)
	r := e.Send(t, owner, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "ci"})
	apitest.WantProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After: %v", r.Header)
	}
	if d := r.Problem(t).Detail; !strings.Contains(d, "service accounts") {
		t.Errorf("detail %q does not name service accounts", d)
	}
	if n := e.count(t, `SELECT count(*) FROM service_accounts`); n != before {
		t.Errorf("%d accounts after the refusal, %d before", n, before)
	}
	e.createAccount(t, other, "ci")
}
