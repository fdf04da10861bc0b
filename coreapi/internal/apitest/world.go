package apitest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// World is a typical setup: tenant A with an owner, an admin and a member,
// and tenant B with its own owner.
type World struct {
	E                    *Env
	A, B                 string // tenant ids
	Owner, Admin, Member identity.Identity
	OwnerB               identity.Identity
}

// SeedWorld seeds the World's tenants and members on e.
func SeedWorld(t testing.TB, e *Env) *World {
	t.Helper()
	w := &World{E: e}
	w.A = e.SeedTenant(t, "Acme").ID
	w.B = e.SeedTenant(t, "Bravo").ID
	w.Owner = e.SeedUserIn(t, w.A, "owner@acme.test", "owner")
	w.Admin = e.SeedUserIn(t, w.A, "admin@acme.test", "admin")
	w.Member = e.SeedUserIn(t, w.A, "member@acme.test", "member")
	w.OwnerB = e.SeedUserIn(t, w.B, "owner@bravo.test", "owner")
	return w
}

// OutboxSubjects returns the subjects written to the outbox so far, in order.
func (e *Env) OutboxSubjects(t testing.TB) []string {
	t.Helper()
	return e.Strings(t, `SELECT subject FROM outbox ORDER BY id`)
}

// AuditActions returns the tenant's audit actions, oldest first.
func (e *Env) AuditActions(t testing.TB, tenantID string) []string {
	t.Helper()
	return e.Strings(t, `SELECT action FROM audit_events WHERE tenant_id = $1 ORDER BY id`, tenantID)
}

// Strings runs q, a query of one text column, on the test database and
// returns its rows.
func (e *Env) Strings(t testing.TB, q string, args ...any) []string {
	t.Helper()
	rows, err := e.DB.Pool.Query(context.Background(), q, args...)
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
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Suspend suspends a tenant the way `coreapi tenants suspend` does.
func (e *Env) Suspend(t testing.TB, tenantID string) {
	t.Helper()
	st := identity.StatusSuspended
	if _, _, err := tenants.NewStore(e.DB.Pool).Update(t.Context(), tenantID, roles.Actor{RequestID: "operator-test"}, tenants.Patch{Status: &st}); err != nil {
		t.Fatalf("suspend %s: %v", tenantID, err)
	}
}

// WantStatus fails the test unless r has the status want.
func WantStatus(t testing.TB, r Response, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status = %d, want %d; body %s", r.Status, want, r.Body)
	}
}

// ProblemHeaders are the headers every problem answer carries
// (httpapi.ProblemHeaders), with their values.
var ProblemHeaders = map[string]string{
	"Cache-Control":           "no-store",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"X-Frame-Options":         "DENY",
	"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}

// WantProblemHeaders reports (t.Errorf) each of ProblemHeaders that r
// lacks or carries with another value; what names the request.
func WantProblemHeaders(t testing.TB, what string, r Response) {
	t.Helper()
	for k, v := range ProblemHeaders {
		if got := r.Header.Get(k); got != v {
			t.Errorf("%s (%d): %s = %q, want %q", what, r.Status, k, got, v)
		}
	}
}

// WantProblem fails the test unless r is a problem with the status and
// code, carrying its request id.
func WantProblem(t testing.TB, r Response, status int, code string) {
	t.Helper()
	WantStatus(t, r, status)
	p := r.Problem(t)
	if p.Code != code {
		t.Fatalf("problem code = %q, want %q; body %s", p.Code, code, r.Body)
	}
	if p.RequestID == "" || p.Status != status {
		t.Fatalf("problem lacks request_id or status: %s", r.Body)
	}
	// A client shows a validation failure beside the fields it names.
	if code == problem.CodeValidation && len(p.Errors) == 0 {
		t.Fatalf("validation_failed names no field in errors: %s", r.Body)
	}
}

// HoldRemoval removes userID from tenantID as DELETE /users/{id} does
// (the membership, and the member's sessions there revoked) in a
// transaction it leaves open, for a test to race something against the
// removal; the test commits it, or it is rolled back when the test ends.
func (e *Env) HoldRemoval(t testing.TB, tenantID, userID string) pgx.Tx {
	t.Helper()
	tx := e.DB.Hold(t, `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`, tenantID, userID)
	if err := sessions.RevokeInTenant(context.Background(), tx, userID, tenantID); err != nil {
		t.Fatal(err)
	}
	return tx
}

// AsKey is as, a member's identity, turned into the identity a proxy
// forwards for a request made with a live tenant key of that member in
// as's tenant, seeded for it (its secret unknown to anyone): principal
// api_key, the key's id as X-Auth-Session-Id, the permissions as's.
func (e *Env) AsKey(t testing.TB, as identity.Identity) identity.Identity {
	t.Helper()
	const q = `
INSERT INTO api_keys (public_id, tenant_id, user_id, kind, name, permissions, secret_hash)
VALUES (substr(md5(random()::text), 1, 16), $1, $2, 'tenant', 'seeded', $3, sha256(gen_random_uuid()::text::bytea))
RETURNING id::text`
	perms := as.Permissions
	if perms == nil {
		perms = []string{}
	}
	var id string
	if err := e.DB.Pool.QueryRow(context.Background(), q, as.TenantID, as.UserID, perms).Scan(&id); err != nil {
		t.Fatalf("seed api key: %v", err)
	}
	as.Principal, as.SessionID = identity.PrincipalAPIKey, id
	return as
}
