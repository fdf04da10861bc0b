package tenantapi_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestBuiltinRolesDuringCatalogRollout: while a rollout adds notes:write
// (admin's and owner's under the new catalog) and notes:read (member's),
// a replica still on the old catalog judged the built-in roles by it, so
// a manager holding admin's old permissions and not notes:write granted
// admin through it, and once the rollout completed the grantee held
// notes:write, which the manager never had. A replica whose catalog is
// not the recorded one now refuses every change that hands out or
// reshapes privileges (503 catalog_rollout with Retry-After, nothing
// changed), whoever asks, and still serves reads and the changes that
// only take privileges away; the replica with the recorded catalog judges
// the grant in full.
func TestBuiltinRolesDuringCatalogRollout(t *testing.T) {
	t.Parallel()
	cat := mustCatalog(t, notesCatalog)
	newer := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.Catalog = cat }})
	w := apitest.SeedWorld(t, newer)
	older := start(t, apitest.Options{DB: newer.DB}) // the built-in catalog: no notes:*
	// The newer replica started last: its catalog is the recorded one.
	if _, err := permissions.Record(context.Background(), newer.DB.Pool, cat); err != nil {
		t.Fatal(err)
	}
	// admin's permissions under the old catalog, not notes:write.
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "manager",
		"permissions": []string{"api-keys:write", "audit:read", "roles:read", "roles:write", "tenant:read", "users:read", "users:write"}}), 201)
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "reader",
		"permissions": []string{"tenant:read"}}), 201)
	readerID := newer.Strings(t, `SELECT id::text FROM roles WHERE tenant_id = $1 AND name = 'reader'`, w.A)[0]
	mgr := newer.SeedUserIn(t, w.A, "manager@acme.test", "manager")
	away := newer.SeedUserIn(t, w.A, "away@acme.test", "member")
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "PATCH", "/api/v1/users/"+away.UserID, map[string]any{"membership_status": "disabled"}), 200)

	// Everything a refusal could have changed.
	const qState = `
SELECT concat_ws(' | ',
    (SELECT string_agg(user_id::text || ':' || status || ':' || array_to_string(role_names, ','), ';' ORDER BY user_id) FROM memberships),
    (SELECT string_agg(name || ':' || array_to_string(permissions, ',') || ':' || description, ';' ORDER BY name) FROM roles),
    (SELECT count(*)::text FROM users), (SELECT count(*)::text FROM invitations),
    (SELECT count(*)::text FROM audit_events), (SELECT count(*)::text FROM outbox))`
	before := newer.Strings(t, qState)

	for _, c := range []struct {
		name         string
		as           *identity.Identity
		method, path string
		body         any
	}{
		{"manager grants admin", &mgr, "PUT", "/api/v1/users/" + w.Member.UserID + "/roles/admin", nil},
		{"owner grants admin", &w.Owner, "PUT", "/api/v1/users/" + w.Member.UserID + "/roles/admin", nil},
		{"owner grants owner", &w.Owner, "PUT", "/api/v1/users/" + w.Admin.UserID + "/roles/owner", nil},
		{"manager adds a member", &mgr, "POST", "/api/v1/users", map[string]any{"email": "new@acme.test", "roles": []string{"member"}}},
		{"manager re-enables a member", &mgr, "PATCH", "/api/v1/users/" + away.UserID, map[string]any{"membership_status": "active"}},
		{"manager creates a role", &mgr, "POST", "/api/v1/roles", map[string]any{"name": "viewer", "permissions": []string{"tenant:read"}}},
		{"owner edits a role's permissions", &w.Owner, "PATCH", "/api/v1/roles/" + readerID, map[string]any{"permissions": []string{"tenant:read", "users:read"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := older.Send(t, c.as, c.method, c.path, c.body)
			apitest.WantProblem(t, r, 503, problem.CodeCatalogRollout)
			if got := r.Header.Get("Retry-After"); got != "1" {
				t.Errorf("Retry-After = %q, want 1", got)
			}
		})
	}
	if after := newer.Strings(t, qState); !slices.Equal(after, before) {
		t.Errorf("the refusals changed the database:\nbefore %v\nafter  %v", before, after)
	}

	// Reads are served (demotions: TestDemotionsDuringCatalogRollout).
	apitest.WantStatus(t, older.Get(t, &mgr, "/api/v1/users"), 200)
	apitest.WantStatus(t, older.Get(t, &mgr, "/api/v1/roles"), 200)

	// The replica with the recorded catalog judges the grant in full:
	// admin holds notes:write there, which the manager does not.
	apitest.WantProblem(t, newer.Send(t, &mgr, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/admin", nil), 403, "forbidden")
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/admin", nil), 200)
	if got := newer.IdentityOf(t, w.Member.UserID, w.A).Roles; !slices.Contains(got, "admin") {
		t.Errorf("member's roles after the grant: %v", got)
	}
}

// TestRoleDescriptionDuringCatalogRollout: a PATCH that changes only a
// custom role's description grants nothing, so a replica whose catalog is
// not the recorded one serves it (it answered 503 catalog_rollout, as for
// an edit of the role's permissions, which it still refuses).
func TestRoleDescriptionDuringCatalogRollout(t *testing.T) {
	t.Parallel()
	cat := mustCatalog(t, notesCatalog)
	newer := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.Catalog = cat }})
	w := apitest.SeedWorld(t, newer)
	older := start(t, apitest.Options{DB: newer.DB}) // the built-in catalog: no notes:*
	if _, err := permissions.Record(context.Background(), newer.DB.Pool, cat); err != nil {
		t.Fatal(err)
	}
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "reader",
		"description": "Reads the tenant", "permissions": []string{"tenant:read"}}), 201)
	readerID := newer.Strings(t, `SELECT id::text FROM roles WHERE tenant_id = $1 AND name = 'reader'`, w.A)[0]

	apitest.WantStatus(t, older.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+readerID, map[string]any{"description": "Reads"}), 200)
	if got := newer.Strings(t, `SELECT description FROM roles WHERE id = $1`, readerID); !slices.Equal(got, []string{"Reads"}) {
		t.Errorf("description after the edit = %v, want [Reads]", got)
	}
	apitest.WantProblem(t, older.Send(t, &w.Owner, "PATCH", "/api/v1/roles/"+readerID,
		map[string]any{"description": "Reads more", "permissions": []string{"tenant:read", "users:read"}}), 503, problem.CodeCatalogRollout)
	if got := newer.Strings(t, `SELECT description || ':' || array_to_string(permissions, ',') FROM roles WHERE id = $1`, readerID); !slices.Equal(got, []string{"Reads:tenant:read"}) {
		t.Errorf("role after the refused edit = %v, want [Reads:tenant:read]", got)
	}
}

// TestDemotionsDuringCatalogRollout: taking a role, a membership or a
// role's name from a member needs every permission the member holds,
// and what a member holds through the built-in roles follows the
// catalog. While a rollout adds notes:read to member (member_default), a
// replica still on the old catalog judged such a demotion by its own
// catalog, so a manager without notes:read disabled, demoted or removed a
// member who holds it under the recorded catalog (and deleted or renamed
// a role such a member holds), which the replica with the recorded
// catalog refuses (403). A replica whose catalog is not the recorded one
// now refuses them with 503 catalog_rollout, nothing changed; the retry
// reaches a replica that judges them under the catalog in force.
func TestDemotionsDuringCatalogRollout(t *testing.T) {
	t.Parallel()
	cat := mustCatalog(t, notesCatalog)
	newer := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.Catalog = cat }})
	w := apitest.SeedWorld(t, newer)
	older := start(t, apitest.Options{DB: newer.DB}) // the built-in catalog: no notes:*
	if _, err := permissions.Record(context.Background(), newer.DB.Pool, cat); err != nil {
		t.Fatal(err)
	}
	// admin's permissions under the old catalog, not notes:read.
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "manager",
		"permissions": []string{"api-keys:write", "audit:read", "roles:read", "roles:write", "tenant:read", "users:read", "users:write"}}), 201)
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "reader",
		"permissions": []string{"tenant:read"}}), 201)
	readerID := newer.Strings(t, `SELECT id::text FROM roles WHERE tenant_id = $1 AND name = 'reader'`, w.A)[0]
	mgr := newer.SeedUserIn(t, w.A, "manager@acme.test", "manager")
	newer.SeedUserIn(t, w.A, "reader@acme.test", "member", "reader")

	const qState = `
SELECT concat_ws(' | ',
    (SELECT string_agg(user_id::text || ':' || status || ':' || array_to_string(role_names, ','), ';' ORDER BY user_id) FROM memberships),
    (SELECT string_agg(name || ':' || array_to_string(permissions, ','), ';' ORDER BY name) FROM roles),
    (SELECT count(*)::text FROM audit_events), (SELECT count(*)::text FROM outbox))`
	before := newer.Strings(t, qState)
	for _, c := range []struct {
		name, method, path string
		body               any
	}{
		{"disable a member", "PATCH", "/api/v1/users/" + w.Member.UserID, map[string]any{"membership_status": "disabled"}},
		{"revoke member", "DELETE", "/api/v1/users/" + w.Member.UserID + "/roles/member", nil},
		{"remove a member", "DELETE", "/api/v1/users/" + w.Member.UserID, nil},
		{"delete a held role", "DELETE", "/api/v1/roles/" + readerID, nil},
		{"rename a held role", "PATCH", "/api/v1/roles/" + readerID, map[string]any{"name": "readers"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := older.Send(t, &mgr, c.method, c.path, c.body)
			apitest.WantProblem(t, r, 503, problem.CodeCatalogRollout)
			if got := r.Header.Get("Retry-After"); got != "1" {
				t.Errorf("Retry-After = %q, want 1", got)
			}
			// The replica with the recorded catalog: the member holds
			// notes:read there, which the manager does not.
			apitest.WantProblem(t, newer.Send(t, &mgr, c.method, c.path, c.body), 403, "forbidden")
		})
	}
	if after := newer.Strings(t, qState); !slices.Equal(after, before) {
		t.Errorf("the refusals changed the database:\nbefore %v\nafter  %v", before, after)
	}
	// A role's description alone is no demotion, and reads are served.
	apitest.WantStatus(t, older.Send(t, &mgr, "PATCH", "/api/v1/roles/"+readerID, map[string]any{"description": "Reads"}), 200)
	apitest.WantStatus(t, older.Get(t, &mgr, "/api/v1/users"), 200)
	// Whoever holds what the member holds under the recorded catalog
	// demotes them there.
	apitest.WantStatus(t, newer.Send(t, &w.Owner, "DELETE", "/api/v1/users/"+w.Member.UserID, nil), 204)
}
