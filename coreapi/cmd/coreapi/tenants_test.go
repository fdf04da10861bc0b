package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// TestTenantsSuspendReactivate: the operator commands change the status,
// audit it with no acting user, and announce it through the outbox; asked
// for the status the tenant has, they succeed and write nothing.
func TestTenantsSuspendReactivate(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	var id string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO tenants (name) VALUES ('Acme') RETURNING id::text`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	for _, step := range []struct{ cmd, status, action string }{
		{"suspend", identity.StatusSuspended, "tenant.suspended"},
		{"reactivate", identity.StatusActive, "tenant.reactivated"},
	} {
		var out bytes.Buffer
		if err := run(ctx, []string{"tenants", step.cmd, id}, env, &out); err != nil {
			t.Fatalf("tenants %s: %v", step.cmd, err)
		}
		var got tenantapi.Tenant
		if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.ID != id || got.Status != step.status {
			t.Fatalf("tenants %s printed %q (%v), want the tenant with status %s", step.cmd, out.String(), err, step.status)
		}
		if strings.Contains(out.String(), "unchanged") {
			t.Errorf("tenants %s printed %q: a change is not unchanged", step.cmd, out.String())
		}
		var status string
		if err := db.Pool.QueryRow(ctx, `SELECT status FROM tenants WHERE id = $1`, id).Scan(&status); err != nil || status != step.status {
			t.Fatalf("after %s: status %q (%v), want %s", step.cmd, status, err, step.status)
		}
		var actor *string
		var rid string
		const qAudit = `SELECT actor_user_id::text, request_id FROM audit_events WHERE tenant_id = $1 AND action = $2`
		if err := db.Pool.QueryRow(ctx, qAudit, id, step.action).Scan(&actor, &rid); err != nil {
			t.Fatalf("audit row %s: %v", step.action, err)
		}
		if actor != nil || !strings.HasPrefix(rid, "operator-") {
			t.Errorf("audit %s: actor %v, request id %q; want no user and an operator- request id", step.action, actor, rid)
		}
		var n int
		const qOutbox = `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`
		if err := db.Pool.QueryRow(ctx, qOutbox, invalidation.TenantSubject(id), "tenant."+step.status).Scan(&n); err != nil || n != 1 {
			t.Errorf("outbox rows for %s: %d (%v), want 1", step.cmd, n, err)
		}
	}
	// Reactivating an active tenant, or suspending a suspended one, changes
	// nothing: it succeeds, says so, and neither audits nor announces.
	for _, step := range []struct {
		cmd, status string
		unchanged   bool
	}{
		{"reactivate", identity.StatusActive, true},
		{"suspend", identity.StatusSuspended, false},
		{"suspend", identity.StatusSuspended, true},
	} {
		var out bytes.Buffer
		if err := run(ctx, []string{"tenants", step.cmd, id}, env, &out); err != nil {
			t.Fatalf("tenants %s: %v", step.cmd, err)
		}
		var got struct {
			tenantapi.Tenant
			Unchanged bool `json:"unchanged"`
		}
		if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.ID != id || got.Status != step.status {
			t.Fatalf("tenants %s printed %q (%v), want the tenant with status %s", step.cmd, out.String(), err, step.status)
		}
		if got.Unchanged != step.unchanged {
			t.Errorf("tenants %s printed %q: unchanged = %v, want %v", step.cmd, out.String(), got.Unchanged, step.unchanged)
		}
	}
	var suspended, reactivated, announced int
	const qCounts = `
SELECT (SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'tenant.suspended'),
       (SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'tenant.reactivated'),
       (SELECT count(*) FROM outbox)`
	if err := db.Pool.QueryRow(ctx, qCounts, id).Scan(&suspended, &reactivated, &announced); err != nil {
		t.Fatal(err)
	}
	// Two suspensions and one reactivation changed the status; the other
	// two commands did not.
	if suspended != 2 || reactivated != 1 || announced != 3 {
		t.Errorf("audit rows: %d tenant.suspended, %d tenant.reactivated; %d outbox rows; want 2, 1, 3",
			suspended, reactivated, announced)
	}

	bad := []struct {
		args []string
		env  func(string) string
		want string
	}{
		{[]string{"tenants"}, env, "tenants suspend ID"},
		{[]string{"tenants", "suspend"}, env, "tenants suspend ID"},
		{[]string{"tenants", "delete", id}, env, "tenants suspend ID"},
		{[]string{"tenants", "suspend", "acme"}, env, "not a tenant id"},
		{[]string{"tenants", "suspend", "00000000-0000-0000-0000-000000000001"}, env, "no tenant"},
		{[]string{"tenants", "suspend", id}, envOf(nil), "DATABASE_URL"},
	}
	for _, b := range bad {
		if err := run(ctx, b.args, b.env, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("run(%v) = %v, want an error mentioning %q", b.args, err, b.want)
		}
	}
}
