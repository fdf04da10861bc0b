package tenantapi_test

import (
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
)

// TestRoleDeletionWithAKeyNamesTheKey: a custom role deleted with an API
// key names the key (api_key_id) in every audit row the deletion writes:
// role.deleted and the member.role_revoked of each holder. The holders'
// rows were written by a statement of their own that left the key out, so
// the trail of a member who lost the role said its creator took it by
// hand, and a leaked key's demotions could not be told from theirs.
func TestRoleDeletionWithAKeyNamesTheKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "ops", "permissions": []string{"users:read"}})
	apitest.WantStatus(t, r, 201)
	var ops tenantapi.Role
	r.JSON(t, &ops)
	for _, uid := range []string{w.Admin.UserID, w.Member.UserID} {
		apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", "/api/v1/users/"+uid+"/roles/ops", nil), 200)
	}
	key := w.E.AsKey(t, w.Owner)
	key.Roles = nil
	keyID := key.SessionID
	before := len(w.E.AuditActions(t, w.A))
	apitest.WantStatus(t, w.E.Send(t, &key, "DELETE", "/api/v1/roles/"+ops.ID, nil), 204)

	r = w.E.Get(t, &w.Owner, "/api/v1/audit-events?limit=3")
	apitest.WantStatus(t, r, 200)
	var page struct {
		Data []struct {
			Action   string  `json:"action"`
			TargetID string  `json:"target_id"`
			Actor    *string `json:"actor_user_id"`
			APIKeyID *string `json:"api_key_id"`
		} `json:"data"`
	}
	r.JSON(t, &page)
	if n := len(w.E.AuditActions(t, w.A)) - before; n != 3 || len(page.Data) != 3 {
		t.Fatalf("the deletion wrote %d audit rows, want 3: %s", n, r.Body)
	}
	for _, e := range page.Data {
		if e.Actor == nil || *e.Actor != w.Owner.UserID || e.APIKeyID == nil || *e.APIKeyID != keyID {
			t.Errorf("%s of %s: actor %v, api_key_id %v; want %s through key %s",
				e.Action, e.TargetID, deref(e.Actor), deref(e.APIKeyID), w.Owner.UserID, keyID)
		}
	}

	// By hand: no key named.
	r = w.E.Send(t, &w.Owner, "POST", "/api/v1/roles", map[string]any{"name": "ops2"})
	apitest.WantStatus(t, r, 201)
	r.JSON(t, &ops)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "PUT", "/api/v1/users/"+w.Member.UserID+"/roles/ops2", nil), 200)
	apitest.WantStatus(t, w.E.Send(t, &w.Owner, "DELETE", "/api/v1/roles/"+ops.ID, nil), 204)
	r = w.E.Get(t, &w.Owner, "/api/v1/audit-events?limit=2")
	r.JSON(t, &page)
	for _, e := range page.Data {
		if e.APIKeyID != nil {
			t.Errorf("%s by hand: api_key_id %s, want null", e.Action, *e.APIKeyID)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "null"
	}
	return *s
}
