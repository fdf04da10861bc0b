package tenantapi_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
)

// TestAnswersNotStored: every answer of the tenant API holds what only its
// caller may read (members' addresses, audit events, the caller's tenants),
// so none may be kept by a cache: a shared one keyed on the URL (a CDN, an
// nginx proxy_cache, a Varnish that takes X-API-Key for no credential)
// would hand the owner's member list to the next caller of the same URL,
// and a browser would keep it on disk. Each carries Cache-Control:
// no-store, as problem answers do. The public documents keep their own.
func TestAnswersNotStored(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, path := range []string{
		"/api/v1/users/me",
		"/api/v1/users/me/tenants",
		"/api/v1/tenant",
		"/api/v1/users",
		"/api/v1/users/" + w.Member.UserID,
		"/api/v1/roles",
		"/api/v1/audit-events",
		"/api/v1/permissions",
	} {
		r := w.E.Get(t, &w.Owner, path)
		apitest.WantStatus(t, r, http.StatusOK)
		if got := r.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("GET %s: Cache-Control = %q, want no-store", path, got)
		}
	}
	r := w.E.Send(t, &w.Member, http.MethodPatch, "/api/v1/users/me", map[string]string{"display_name": "Mem"})
	apitest.WantStatus(t, r, http.StatusOK)
	if got := r.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("PATCH /api/v1/users/me: Cache-Control = %q, want no-store", got)
	}
	r = w.E.Get(t, nil, "/api/v1/openapi.json")
	apitest.WantStatus(t, r, http.StatusOK)
	if got := r.Header.Get("Cache-Control"); got != "public, max-age=300" {
		t.Errorf("GET /api/v1/openapi.json: Cache-Control = %q, want its own public, max-age=300", got)
	}
}
