package tenantapi_test

import (
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestExecModes runs reads and writes under every DB_EXEC_MODE, so the
// PgBouncer-friendly modes (no server-side prepared statements) work with
// every query's parameter types.
func TestExecModes(t *testing.T) {
	t.Parallel()
	modes := map[string]pgx.QueryExecMode{
		"cache_statement": pgx.QueryExecModeCacheStatement,
		"cache_describe":  pgx.QueryExecModeCacheDescribe,
		"describe_exec":   pgx.QueryExecModeDescribeExec,
		"exec":            pgx.QueryExecModeExec,
		"simple_protocol": pgx.QueryExecModeSimpleProtocol,
	}
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			e := start(t, apitest.Options{ExecMode: mode})
			ten := e.SeedTenant(t, "Acme")
			owner := e.SeedUserIn(t, ten.ID, "o@acme.test", "owner")
			for _, email := range []string{"a@acme.test", "b@acme.test", "c@acme.test"} {
				apitest.WantStatus(t, e.Send(t, &owner, "POST", "/api/v1/users", map[string]any{"email": email, "roles": []string{"member", "admin"}}), 201)
			}
			var l memberList
			e.Get(t, &owner, "/api/v1/users?limit=2&include_total=true").JSON(t, &l)
			if len(l.Data) != 2 || l.NextCursor == nil || *l.Total != 4 {
				t.Fatalf("page 1: %+v", l)
			}
			e.Get(t, &owner, "/api/v1/users?limit=2&cursor="+*l.NextCursor).JSON(t, &l)
			if len(l.Data) != 2 || l.NextCursor != nil {
				t.Fatalf("page 2: %+v", l)
			}
			target := l.Data[1].ID
			apitest.WantStatus(t, e.Send(t, &owner, "PATCH", "/api/v1/users/"+target, map[string]any{"membership_status": "disabled"}), 200)
			apitest.WantStatus(t, e.Send(t, &owner, "DELETE", "/api/v1/users/"+target+"/roles/admin", nil), 200)
			apitest.WantStatus(t, e.Send(t, &owner, "POST", "/api/v1/roles", map[string]any{"name": "x", "permissions": []string{"users:read"}}), 201)
			apitest.WantStatus(t, e.Get(t, &owner, "/api/v1/roles?include_total=true"), 200)
			apitest.WantStatus(t, e.Get(t, &owner, "/api/v1/audit-events?limit=2"), 200)
			apitest.WantStatus(t, e.Get(t, &owner, "/api/v1/users/me/tenants"), 200)
			apitest.WantStatus(t, e.Send(t, &owner, "PATCH", "/api/v1/tenant", map[string]any{"name": "Acme 2"}), 200)
			e.Suspend(t, ten.ID)
			r := e.Do(t, apitest.Request{Method: "GET", Path: identity.ProjectionPath + "/" + target + "?tenant_id=" + ten.ID, Service: true})
			apitest.WantStatus(t, r, 200)
			var p identity.Projection
			r.JSON(t, &p)
			if p.MembershipStatus != "disabled" || p.TenantStatus != "suspended" || !slices.Equal(p.Roles, []string{"member"}) {
				t.Fatalf("projection = %+v", p)
			}
			// Only the cached modes prepare or describe statements on the server.
			noPrepare := mode == pgx.QueryExecModeExec || mode == pgx.QueryExecModeSimpleProtocol
			if noPrepare && r.Stats.Prepares != 0 {
				t.Errorf("%s prepared %d statements", name, r.Stats.Prepares)
			}
			if r.Stats.Queries != 1 {
				t.Errorf("projection: %d queries, want 1", r.Stats.Queries)
			}
		})
	}
}
