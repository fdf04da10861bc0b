package tenantapi_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// roleNamesDrift lists the memberships whose role_names differ from their
// roles in membership_roles and roles, the source of truth.
func roleNamesDrift(t *testing.T, e *apitest.Env) []string {
	t.Helper()
	const q = `
SELECT m.user_id::text || ' has ' || m.role_names::text || ', source ' || src.names::text
FROM memberships m
CROSS JOIN LATERAL (SELECT ARRAY(
    SELECT r.name FROM membership_roles mr JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
    WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id ORDER BY r.name) AS names) src
WHERE m.role_names IS DISTINCT FROM src.names`
	return e.Strings(t, q)
}

// TestRoleNamesFollowEveryRoleChange: the role names stored on each
// membership (what the member list reads) equal its roles after every
// write that changes a member's roles, through the API and through plain
// SQL (seeds), including concurrent grants to one member.
func TestRoleNamesFollowEveryRoleChange(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	e := w.E
	ctx := context.Background()
	check := func(step string) {
		t.Helper()
		if d := roleNamesDrift(t, e); len(d) > 0 {
			t.Fatalf("after %s, role_names differs from the roles: %v", step, d)
		}
	}
	memberRoles := func(uid string) string {
		t.Helper()
		var s string
		if err := e.DB.Pool.QueryRow(ctx, `SELECT role_names::text FROM memberships WHERE tenant_id = $1 AND user_id = $2`, w.A, uid).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	check("seeding (tenants.AddMember)")
	if got := memberRoles(w.Owner.UserID); got != "{owner}" {
		t.Fatalf("owner role_names = %s", got)
	}

	var viewer struct {
		ID string `json:"id"`
	}
	r := e.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "viewer", "permissions": []string{"users:read"}})
	apitest.WantStatus(t, r, 201)
	r.JSON(t, &viewer)

	var created struct {
		ID string `json:"id"`
	}
	r = e.Send(t, &w.Owner, "POST", "/api/v1/users", map[string]any{"email": "new@acme.test", "roles": []string{"viewer", "admin"}})
	apitest.WantStatus(t, r, 201)
	r.JSON(t, &created)
	check("POST /users with roles")
	if got := memberRoles(created.ID); got != "{admin,viewer}" {
		t.Fatalf("created member role_names = %s", got)
	}

	uid := w.Member.UserID
	apitest.WantStatus(t, e.Send(t, &w.Owner, "PUT", "/api/v1/users/"+uid+"/roles/viewer", nil), 200)
	check("grant")
	apitest.WantStatus(t, e.Send(t, &w.Owner, "PUT", "/api/v1/users/"+uid+"/roles/viewer", nil), 200)
	check("repeated grant")
	apitest.WantStatus(t, e.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+uid+"/roles/member", nil), 200)
	check("revoke")
	if got := memberRoles(uid); got != "{viewer}" {
		t.Fatalf("member role_names = %s, want {viewer}", got)
	}
	apitest.WantStatus(t, e.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+viewer.ID, map[string]any{"name": "auditor"}), 200)
	check("role rename")
	if got := memberRoles(uid); got != "{auditor}" {
		t.Fatalf("after rename role_names = %s, want {auditor}", got)
	}
	apitest.WantStatus(t, e.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+viewer.ID, map[string]any{"description": "reads", "permissions": []string{"audit:read"}}), 200)
	check("role update without rename")
	apitest.WantStatus(t, e.Send(t, &w.Owner, "DELETE", "/api/v1/roles/"+viewer.ID, nil), 204)
	check("role deletion")
	if got := memberRoles(uid); got != "{}" {
		t.Fatalf("after deletion role_names = %s, want {}", got)
	}
	apitest.WantStatus(t, e.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+created.ID, nil), 204)
	check("member removal")

	// Concurrent grants of different roles to one member: none is lost.
	const n = 8
	for i := range n {
		apitest.WantStatus(t, e.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": fmt.Sprintf("c%d", i)}), 201)
	}
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.Send(t, &w.Owner, "PUT", fmt.Sprintf("/api/v1/users/%s/roles/c%d", uid, i), nil).Status
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Fatalf("concurrent grant %d: status %d", i, s)
		}
	}
	check("concurrent grants")
	if got := memberRoles(uid); got != "{c0,c1,c2,c3,c4,c5,c6,c7}" {
		t.Fatalf("after concurrent grants role_names = %s", got)
	}

	// Plain SQL, as seeds write: a bulk insert of members with roles, a
	// bulk revoke, a rename of a built-in row's name by hand.
	const seed = `
WITH u AS (
    INSERT INTO users (email) SELECT 'seed' || g || '@acme.test' FROM generate_series(1, 50) g RETURNING id
), m AS (
    INSERT INTO memberships (tenant_id, user_id) SELECT $1, id FROM u RETURNING user_id
)
INSERT INTO membership_roles (tenant_id, user_id, role_id)
SELECT $1, m.user_id, r.id FROM m JOIN roles r ON r.tenant_id = $1 AND r.name IN ('member', 'c3')`
	for _, q := range []string{
		seed,
		`DELETE FROM membership_roles WHERE tenant_id = $1 AND role_id = (SELECT id FROM roles WHERE tenant_id = $1 AND name = 'c3')`,
		`UPDATE roles SET name = 'a-first' WHERE tenant_id = $1 AND name = 'c7'`,
		`UPDATE membership_roles SET role_id = (SELECT id FROM roles WHERE tenant_id = $1 AND name = 'c0')
		 WHERE tenant_id = $1 AND role_id = (SELECT id FROM roles WHERE tenant_id = $1 AND name = 'member')
		   AND user_id IN (SELECT user_id FROM memberships WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 5)`,
		`DELETE FROM memberships WHERE tenant_id = $1 AND user_id IN (SELECT user_id FROM memberships WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 3)`,
	} {
		if _, err := e.DB.Pool.Exec(ctx, q, w.A); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		check(q)
	}
	if got := memberRoles(uid); got != "{a-first,c0,c1,c2,c4,c5,c6}" {
		t.Fatalf("after SQL changes role_names = %s", got)
	}
	// The other tenant was never touched and stays right too.
	var b string
	if err := e.DB.Pool.QueryRow(ctx, `SELECT role_names::text FROM memberships WHERE tenant_id = $1 AND user_id = $2`, w.B, w.OwnerB.UserID).Scan(&b); err != nil || b != "{owner}" {
		t.Fatalf("tenant B owner role_names = %s, %v", b, err)
	}
}
