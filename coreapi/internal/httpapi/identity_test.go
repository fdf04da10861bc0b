package httpapi_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

func TestIdentityRejected(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	e := w.E
	other, err := identity.NewSigner([]byte("another-key-of-enough-length-0123456789"), 0)
	if err != nil {
		t.Fatal(err)
	}
	elevated := w.Member
	elevated.Permissions = append([]string{"users:write"}, elevated.Permissions...)

	tests := []struct {
		name string
		req  apitest.Request
	}{
		{"no headers", apitest.Request{Method: "GET", Path: "/api/v1/users/me", Unsigned: true}},
		{"anonymous", apitest.Request{Method: "GET", Path: "/api/v1/users/me"}},
		{"anonymous principal with a user", apitest.Request{Method: "GET", Path: "/api/v1/users/me", As: withPrincipal(w.Owner, identity.PrincipalAnonymous)}},
		{"expired", apitest.Request{Method: "GET", Path: "/api/v1/users/me", As: &w.Owner, SignedAt: time.Now().Add(-31 * time.Second)}},
		{"from the future", apitest.Request{Method: "GET", Path: "/api/v1/users/me", As: &w.Owner, SignedAt: time.Now().Add(31 * time.Second)}},
		{"signed for another path", apitest.Request{Method: "GET", Path: "/api/v1/users", As: &w.Owner, SignPath: "/api/v1/users/me"}},
		{"signed for another query", apitest.Request{Method: "GET", Path: "/api/v1/users?limit=1", As: &w.Owner, SignPath: "/api/v1/users?limit=2"}},
		{"empty identity on a protected route", apitest.Request{Method: "GET", Path: "/api/v1/users/me", Service: true}},
		{"user id not a uuid", apitest.Request{Method: "GET", Path: "/api/v1/users/me", As: &identity.Identity{UserID: "alice", TenantID: w.A}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			apitest.WantProblem(t, e.Do(t, tt.req), 401, "unauthenticated")
		})
	}

	t.Run("forged with another key", func(t *testing.T) {
		ts := time.Now().UnixMilli()
		h := http.Header{}
		h.Set(identity.HeaderUserID, w.Owner.UserID)
		h.Set(identity.HeaderTenantID, w.Owner.TenantID)
		h.Set(identity.HeaderPermissions, identity.JoinList(w.Owner.Permissions))
		h.Set(identity.HeaderRoles, identity.JoinList(w.Owner.Roles))
		h.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
		h.Set(identity.HeaderSignature, other.Sign(ts, "GET", "/api/v1/users/me", w.Owner))
		apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/users/me", Header: h, Unsigned: true}), 401, "unauthenticated")
	})
	t.Run("header changed after signing", func(t *testing.T) {
		ts := time.Now().UnixMilli()
		h := http.Header{}
		h.Set(identity.HeaderUserID, w.Member.UserID)
		h.Set(identity.HeaderTenantID, w.Member.TenantID)
		h.Set(identity.HeaderRoles, identity.JoinList(w.Member.Roles))
		h.Set(identity.HeaderPermissions, identity.JoinList(elevated.Permissions)) // escalated
		h.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
		h.Set(identity.HeaderSignature, e.Signer.Sign(ts, "GET", "/api/v1/users", w.Member))
		apitest.WantProblem(t, e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/users", Header: h, Unsigned: true}), 401, "unauthenticated")
	})
	t.Run("valid", func(t *testing.T) {
		apitest.WantStatus(t, e.Get(t, &w.Owner, "/api/v1/users/me"), 200)
	})
}

func TestInternalProjectionAuth(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	path := identity.ProjectionPath + "/" + w.Member.UserID + "?tenant_id=" + w.A
	t.Run("service signature", func(t *testing.T) {
		apitest.WantStatus(t, w.E.Do(t, apitest.Request{Method: "GET", Path: path, Service: true}), 200)
	})
	t.Run("no signature", func(t *testing.T) {
		apitest.WantProblem(t, w.E.Do(t, apitest.Request{Method: "GET", Path: path, Unsigned: true}), 401, "unauthenticated")
	})
	t.Run("user identity instead of service", func(t *testing.T) {
		apitest.WantProblem(t, w.E.Do(t, apitest.Request{Method: "GET", Path: path, As: &w.Owner}), 401, "unauthenticated")
	})
	t.Run("stale", func(t *testing.T) {
		apitest.WantProblem(t, w.E.Do(t, apitest.Request{Method: "GET", Path: path, Service: true, SignedAt: time.Now().Add(-time.Minute)}), 401, "unauthenticated")
	})
	t.Run("signed for another tenant", func(t *testing.T) {
		apitest.WantProblem(t, w.E.Do(t, apitest.Request{Method: "GET", Path: path, Service: true,
			SignPath: identity.ProjectionPath + "/" + w.Member.UserID + "?tenant_id=" + w.B}), 401, "unauthenticated")
	})
	// What the proxy forwards for an anonymous client (a public route) is
	// signed with the core key over the same empty identity, but names
	// the client's address: it is a client's request, which no internal
	// route serves, whatever path it reached coreapi under.
	t.Run("a forwarded anonymous request", func(t *testing.T) {
		apitest.WantProblem(t, w.E.Do(t, apitest.Request{Method: "GET", Path: path, Service: true, ClientIP: "203.0.113.7"}), 401, "unauthenticated")
		apitest.WantProblem(t, w.E.Do(t, apitest.Request{Method: "GET", Path: path}), 401, "unauthenticated")
	})
}

func TestPermissions(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	uid := w.Owner.UserID
	tests := []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/users", nil},
		{"POST", "/api/v1/users", map[string]any{"email": "x@acme.test"}},
		{"GET", "/api/v1/users/" + uid, nil},
		{"PATCH", "/api/v1/users/" + uid, map[string]any{"membership_status": "disabled"}},
		{"DELETE", "/api/v1/users/" + uid, nil},
		{"PUT", "/api/v1/users/" + uid + "/roles/member", nil},
		{"DELETE", "/api/v1/users/" + uid + "/roles/owner", nil},
		{"GET", "/api/v1/roles", nil},
		{"POST", "/api/v1/roles", map[string]any{"name": "x"}},
		{"PATCH", "/api/v1/roles/" + uid, map[string]any{"name": "y"}},
		{"DELETE", "/api/v1/roles/" + uid, nil},
		{"GET", "/api/v1/audit-events", nil},
		{"PATCH", "/api/v1/tenant", map[string]any{"name": "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := w.E.Send(t, &w.Member, tt.method, tt.path, tt.body)
			apitest.WantProblem(t, r, 403, "insufficient_scope")
			if r.Stats.Queries != 0 {
				t.Errorf("a refused request ran %d queries, want 0", r.Stats.Queries)
			}
		})
	}
	t.Run("member reads the tenant", func(t *testing.T) {
		apitest.WantStatus(t, w.E.Get(t, &w.Member, "/api/v1/tenant"), 200)
	})
	t.Run("admin cannot write the tenant", func(t *testing.T) {
		apitest.WantProblem(t, w.E.Send(t, &w.Admin, "PATCH", "/api/v1/tenant", map[string]any{"name": "x"}), 403, "insufficient_scope")
	})
}

func withPrincipal(id identity.Identity, p string) *identity.Identity {
	id.Principal = p
	return &id
}
