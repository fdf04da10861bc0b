package main

import (
	"encoding/json"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/apikey"
)

// TestResolveAnyKey: the stand-in resolves every key the harness makes to
// a projection the proxy accepts (its public id, a valid user and tenant,
// the bench route's permission), and refuses what is not a key.
func TestResolveAnyKey(t *testing.T) {
	for _, k := range apiKeys(20) {
		body, _ := json.Marshal(apikey.ResolveRequest{Key: k})
		b, status := resolveAnyKey(body)
		var p apikey.Projection
		if status != 200 || json.Unmarshal(b, &p) != nil {
			t.Fatalf("resolve %q: %d %s", k, status, b)
		}
		if p.PublicID != k[3:19] || p.UserID == "" || p.TenantID != keyTenant || !p.Active() || !p.HasPermission("tenant:read") {
			t.Fatalf("projection %+v", p)
		}
	}
	if _, status := resolveAnyKey([]byte(`{"key":"tg_nope"}`)); status != 404 {
		t.Errorf("malformed key: %d, want 404", status)
	}
	if _, status := resolveAnyKey([]byte(`not json`)); status != 400 {
		t.Errorf("bad body: %d, want 400", status)
	}
}
