package httpapi_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// world is a typical setup: tenant A with an owner, an admin and a member,
// and tenant B with its own owner.
type world struct {
	e                    *apitest.Env
	a, b                 string // tenant ids
	owner, admin, member identity.Identity
	ownerB               identity.Identity
}

func newWorld(t *testing.T) *world {
	t.Helper()
	e := start(t, apitest.Options{})
	w := &world{e: e}
	w.a = e.SeedTenant(t, "Acme").ID
	w.b = e.SeedTenant(t, "Bravo").ID
	w.owner = e.SeedUserIn(t, w.a, "owner@acme.test", "owner")
	w.admin = e.SeedUserIn(t, w.a, "admin@acme.test", "admin")
	w.member = e.SeedUserIn(t, w.a, "member@acme.test", "member")
	w.ownerB = e.SeedUserIn(t, w.b, "owner@bravo.test", "owner")
	return w
}

// outboxSubjects returns the subjects written to the outbox so far, in order.
func outboxSubjects(t *testing.T, e *apitest.Env) []string {
	t.Helper()
	rows, err := e.DB.Pool.Query(context.Background(), `SELECT subject FROM outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// auditActions returns the tenant's audit actions, oldest first.
func auditActions(t *testing.T, e *apitest.Env, tenantID string) []string {
	t.Helper()
	rows, err := e.DB.Pool.Query(context.Background(), `SELECT action FROM audit_events WHERE tenant_id = $1 ORDER BY id`, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// suspend suspends a tenant the way `coreapi tenants suspend` does.
func suspend(t *testing.T, e *apitest.Env, tenantID string) {
	t.Helper()
	st := identity.StatusSuspended
	if _, err := tenants.NewStore(e.DB.Pool).Update(t.Context(), tenantID, roles.Actor{RequestID: "operator-test"}, tenants.Patch{Status: &st}); err != nil {
		t.Fatalf("suspend %s: %v", tenantID, err)
	}
}

func wantStatus(t *testing.T, r apitest.Response, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status = %d, want %d; body %s", r.Status, want, r.Body)
	}
}

func wantProblem(t *testing.T, r apitest.Response, status int, code string) {
	t.Helper()
	wantStatus(t, r, status)
	p := r.Problem(t)
	if p.Code != code {
		t.Fatalf("problem code = %q, want %q; body %s", p.Code, code, r.Body)
	}
	if p.RequestID == "" || p.Status != status {
		t.Fatalf("problem lacks request_id or status: %s", r.Body)
	}
}

func equal(a, b []string) bool { return slices.Equal(a, b) }

func apitestReq(method, path string, body any, as *identity.Identity, service bool) apitest.Request {
	return apitest.Request{Method: method, Path: path, Body: body, As: as, Service: service}
}

// metricValue returns the value of the counter or gauge name whose labels
// include the rendered pair label (e.g. `reason="replay"`); 0 when absent.
func metricValue(t *testing.T, e *apitest.Env, name, label string) float64 {
	t.Helper()
	mfs, err := e.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || lp.GetName()+`="`+lp.GetValue()+`"` == label
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
