package tenantapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestAuditAddressesNeedUsersRead: the audit trail shows account
// addresses (data.email, the from and to of user.email_changed) only to a
// caller who may also read the members (users:read), who sees them in the
// member list anyway. A caller with audit:read alone read every address
// the tenant's events named, which GET /users refuses them.
func TestAuditAddressesNeedUsersRead(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Send(t, &w.Owner, "POST", "/api/v1/users", map[string]any{"email": "new.member@acme.test"})
	apitest.WantStatus(t, r, 201)
	const q = `
INSERT INTO audit_events (tenant_id, actor_user_id, action, target_type, target_id, data, request_id)
VALUES ($1, $2::uuid, 'user.email_changed', 'user', $2::text, '{"from": "member@acme.test", "to": "moved@acme.test"}', 'r1'),
       ($1, $2::uuid, 'user.identity_linked', 'user', $2::text, '{"provider": "google", "subject": "s1", "email": "private@mail.test"}', 'r2')`
	if _, err := w.E.DB.Pool.Exec(context.Background(), q, w.A, w.Member.UserID); err != nil {
		t.Fatal(err)
	}
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PATCH", "/api/v1/tenant", map[string]any{"name": "Acme 2"}), 200)
	addresses := []string{"new.member@acme.test", "member@acme.test", "moved@acme.test", "private@mail.test"}

	full := w.E.Get(t, &w.Owner, "/api/v1/audit-events?limit=100")
	apitest.WantStatus(t, full, 200)
	for _, a := range addresses {
		if !strings.Contains(string(full.Body), `"`+a+`"`) {
			t.Errorf("with users:read: %s not shown in %s", a, full.Body)
		}
	}

	auditor := w.Member
	auditor.Permissions = []string{"audit:read"}
	r = w.E.Get(t, &auditor, "/api/v1/audit-events?limit=100")
	apitest.WantStatus(t, r, 200)
	if strings.Contains(string(r.Body), "@") {
		t.Errorf("with audit:read alone: an address shown in %s", r.Body)
	}
	// The rest of each event stays: the tenant's rename and the provider.
	for _, want := range []string{`"from":{"name":"Acme"`, `"provider":"google"`, `"user.email_changed"`, `"member.added"`} {
		if !strings.Contains(strings.ReplaceAll(string(r.Body), " ", ""), want) {
			t.Errorf("with audit:read alone: %s missing from %s", want, r.Body)
		}
	}
}
