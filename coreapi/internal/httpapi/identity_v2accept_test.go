package httpapi_test

import (
	"crypto/sha256"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// v2Headers signs id for one request with key, as authproxy does.
func v2Headers(t *testing.T, key identity.Key, id identity.Identity, method, pathQuery string, body []byte, at time.Time) http.Header {
	t.Helper()
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	r := identity.Request{Timestamp: at.UnixMilli(), RequestID: "rid-1", ClientIP: "192.0.2.1", Method: method, PathQuery: pathQuery,
		BodySHA256: sha256.Sum256(body)}
	h := http.Header{}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set(identity.HeaderKeyID, key.ID)
	set(identity.HeaderPrincipal, id.Principal)
	set(identity.HeaderUserID, id.UserID)
	set(identity.HeaderTenantID, id.TenantID)
	set(identity.HeaderSessionID, id.SessionID)
	set(identity.HeaderRoles, identity.JoinList(id.Roles))
	set(identity.HeaderPermissions, identity.JoinList(id.Permissions))
	set(identity.HeaderEmailVerified, identity.BoolString(id.EmailVerified))
	set(identity.HeaderClientIP, r.ClientIP)
	set(identity.HeaderRequestID, r.RequestID)
	set(identity.HeaderTimestamp, strconv.FormatInt(r.Timestamp, 10))
	set(identity.HeaderSignature, s.Sign(&id, &r))
	return h
}

// coreapi accepts the v2 identity headers authproxy sends, signed with a
// core key, and nothing signed with another key.
func TestIdentityV2Accepted(t *testing.T) {
	t.Parallel()
	core := identity.Key{ID: "core", Secret: apitest.Key()}
	app := identity.Key{ID: "app-notes", Secret: []byte("an-app-key-that-coreapi-never-holds-0123")}
	e := start(t, apitest.Options{Configure: func(o *httpapi.Options) { o.IdentityKeys = []identity.Key{core} }})
	a := e.SeedTenant(t, "Acme").ID
	owner := e.SeedUserIn(t, a, "owner@acme.test", "owner")
	owner.Principal = identity.PrincipalUser
	anon := identity.Identity{Principal: identity.PrincipalAnonymous}
	me := "/api/v1/users/me"
	proj := identity.ProjectionPath + "/" + owner.UserID + "?tenant_id=" + a
	now := time.Now()

	t.Run("user on a protected route", func(t *testing.T) {
		wantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: me, Header: v2Headers(t, core, owner, "GET", me, nil, now)}), 200)
	})
	t.Run("anonymous on the projection endpoint", func(t *testing.T) {
		wantStatus(t, e.Do(t, apitest.Request{Method: "GET", Path: proj, Header: v2Headers(t, core, anon, "GET", proj, nil, now)}), 200)
	})
	bad := []struct {
		name string
		path string
		h    http.Header
		body string
	}{
		{"an app's key", me, v2Headers(t, app, owner, "GET", me, nil, now), ""},
		{"31 s old", me, v2Headers(t, core, owner, "GET", me, nil, now.Add(-31*time.Second)), ""},
		{"anonymous on a protected route", me, v2Headers(t, core, anon, "GET", me, nil, now), ""},
		{"a user on the projection endpoint", proj, v2Headers(t, core, owner, "GET", proj, nil, now), ""},
		{"another body than the one signed", me, v2Headers(t, core, owner, "GET", me, []byte("signed"), now), "sent"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			req := apitest.Request{Method: "GET", Path: tt.path, Header: tt.h}
			if tt.body != "" {
				req.Body, req.ContentType = tt.body, "text/plain"
			}
			wantProblem(t, e.Do(t, req), 401, "unauthenticated")
		})
	}
}
