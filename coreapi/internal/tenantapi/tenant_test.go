package tenantapi_test

import (
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

func TestTenant(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Get(t, &w.Member, "/api/v1/tenant")
	apitest.WantStatus(t, r, 200)
	var ten tenantapi.Tenant
	r.JSON(t, &ten)
	if ten.ID != w.A || ten.Name != "Acme" || ten.Status != "active" {
		t.Fatalf("tenant = %+v", ten)
	}
	r = w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", map[string]any{"name": "Acme Corp"})
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &ten)
	if ten.Name != "Acme Corp" {
		t.Fatalf("renamed = %+v", ten)
	}
	if got := w.E.OutboxSubjects(t); len(got) != 0 {
		t.Fatalf("a rename wrote outbox rows: %v", got)
	}
	// A tenant's status is not the API's to change: an owner who suspended
	// their own tenant would have no way back.
	for _, body := range []map[string]any{{"status": "suspended"}, {"status": "active"}, {"name": "X", "status": "suspended"}} {
		r = w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", body)
		apitest.WantProblem(t, r, 403, problem.CodeOperatorOnly)
	}
	w.E.Get(t, &w.Owner, "/api/v1/tenant").JSON(t, &ten)
	if ten.Status != "active" || ten.Name != "Acme Corp" {
		t.Fatalf("after refused status changes: %+v", ten)
	}
	if got := w.E.OutboxSubjects(t); len(got) != 0 {
		t.Fatalf("a refused status change wrote outbox rows: %v", got)
	}
	// The operator's suspension is announced on the tenant's subject.
	w.E.Suspend(t, w.A)
	if got, want := w.E.OutboxSubjects(t), []string{invalidation.TenantSubject(w.A)}; !slices.Equal(got, want) {
		t.Fatalf("outbox = %v, want %v", got, want)
	}
	var payload struct {
		Reason string `json:"reason"`
		At     int64  `json:"at"`
	}
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT payload->>'reason', (payload->>'at')::bigint FROM outbox`).Scan(&payload.Reason, &payload.At); err != nil {
		t.Fatal(err)
	}
	if payload.Reason != "tenant.suspended" || payload.At <= 0 {
		t.Fatalf("payload = %+v", payload)
	}
	for _, bad := range []map[string]any{{"name": ""}, {}, {"name": longString(201)}} {
		apitest.WantProblem(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", bad), 422, "validation_failed")
	}
	// B is untouched.
	w.E.Get(t, &w.OwnerB, "/api/v1/tenant").JSON(t, &ten)
	if ten.Name != "Bravo" || ten.Status != "active" {
		t.Fatalf("B = %+v", ten)
	}
}

func TestAuditEvents(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, name := range []string{"alpha", "beta", "gamma"} {
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": name}), 201)
	}
	apitest.WantStatus(t, w.E.Send(t, &w.OwnerB, "POST", "/api/v1/roles", map[string]any{"name": "other"}), 201)
	var l struct {
		Data       []tenantapi.AuditEvent `json:"data"`
		NextCursor *string                `json:"next_cursor"`
		Total      *int64                 `json:"total"`
	}
	r := w.E.Do(t, apitestReq("GET", "/api/v1/audit-events?limit=2&include_total=true", nil, &w.Admin, false))
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &l)
	if len(l.Data) != 2 || l.NextCursor == nil || l.Total == nil || *l.Total != 3 {
		t.Fatalf("page 1 = %s", r.Body)
	}
	if l.Data[0].ID <= l.Data[1].ID || l.Data[0].Action != "role.created" || l.Data[0].ActorUserID == nil || *l.Data[0].ActorUserID != w.Owner.UserID {
		t.Fatalf("page 1 order/actor = %s", r.Body)
	}
	first := l.Data[0].RequestID
	if first == "" {
		t.Error("audit row lacks the request id")
	}
	cursor := *l.NextCursor
	l.NextCursor, l.Total = nil, nil
	w.E.Get(t, &w.Admin, "/api/v1/audit-events?limit=2&cursor="+cursor).JSON(t, &l)
	if len(l.Data) != 1 || l.NextCursor != nil {
		t.Fatalf("page 2 = %+v", l)
	}
	if string(l.Data[0].Data) != `{"name":"alpha","description":"","permissions":[]}` {
		t.Errorf("data = %s", l.Data[0].Data)
	}
}

func longString(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'x'
	}
	return string(b)
}

// TestTenantRequireMFA: the MFA policy is a tenant setting; switching it
// invalidates every projection of the tenant (which carries it), and
// setting it to what it already is announces nothing.
func TestTenantRequireMFA(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var ten tenantapi.Tenant
	w.E.Get(t, &w.Member, "/api/v1/tenant").JSON(t, &ten)
	if ten.RequireMFA {
		t.Fatal("a new tenant requires MFA")
	}
	apitest.WantProblem(t, w.E.Send(t, &w.Member, "PATCH", "/api/v1/tenant", map[string]any{"require_mfa": true}), 403, problem.CodeInsufficientScope)
	for _, bad := range []map[string]any{{"require_mfa": "yes"}, {"require_mfa": 1}} {
		r := w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", bad)
		if r.Status != 400 && r.Status != 422 {
			t.Fatalf("require_mfa %v: %d %s", bad["require_mfa"], r.Status, r.Body)
		}
	}
	r := w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", map[string]any{"require_mfa": true})
	apitest.WantStatus(t, r, 200)
	r.JSON(t, &ten)
	if !ten.RequireMFA || ten.Name != "Acme" {
		t.Fatalf("tenant = %+v", ten)
	}
	if got, want := w.E.OutboxSubjects(t), []string{invalidation.TenantSubject(w.A)}; !slices.Equal(got, want) {
		t.Fatalf("outbox = %v, want %v", got, want)
	}
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", map[string]any{"require_mfa": true}), 200)
	if got := w.E.OutboxSubjects(t); len(got) != 1 {
		t.Fatalf("an unchanged policy wrote outbox rows: %v", got)
	}
	pr := w.E.Do(t, apitest.Request{Method: "GET", Service: true,
		Path: identity.ProjectionPath + "/" + w.Member.UserID + "?tenant_id=" + w.A})
	var p identity.Projection
	pr.JSON(t, &p)
	if !p.TenantRequireMFA || p.MFAEnabled {
		t.Fatalf("projection: tenant_require_mfa %v mfa_enabled %v", p.TenantRequireMFA, p.MFAEnabled)
	}
	var n int
	if err := w.E.DB.Pool.QueryRow(t.Context(), `SELECT count(*) FROM audit_events WHERE action = 'tenant.updated' AND data->>'require_mfa' = 'true'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("%d tenant.updated audit events with require_mfa, want 2", n)
	}
}
