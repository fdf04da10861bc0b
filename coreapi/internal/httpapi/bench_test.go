package httpapi_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// BenchmarkProtectedRoute measures the middleware stack of a protected
// route (request id, access log, identity verification, permission check)
// around a handler that does nothing, in process.
func BenchmarkProtectedRoute(b *testing.B) {
	e := start(b, apitest.Options{Configure: func(o *httpapi.Options) {
		o.Register = append(o.Register, func(rt httpapi.Routes) {
			rt.Protected.Get("/bench", httpapi.RequirePermission("users:read"), func(c *fiber.Ctx) error {
				return c.SendStatus(fiber.StatusNoContent)
			})
		})
	}})
	id := identity.Identity{
		UserID: "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001", TenantID: "0b4f1f8e-2222-4c2a-9a53-7a1f7e0c0002",
		Roles: []string{"admin"}, Permissions: []string{"users:read", "users:write"},
	}
	h := e.Server.App().Handler()
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	ts := time.Now().UnixMilli()
	sig := e.Signer.Sign(ts, "GET", "/api/v1/bench", id)
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("GET")
		ctx.Request.SetRequestURI("/api/v1/bench")
		ctx.Request.Header.Set(identity.HeaderUserID, id.UserID)
		ctx.Request.Header.Set(identity.HeaderTenantID, id.TenantID)
		ctx.Request.Header.Set(identity.HeaderRoles, "admin")
		ctx.Request.Header.Set(identity.HeaderPermissions, "users:read,users:write")
		ctx.Request.Header.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
		ctx.Request.Header.Set(identity.HeaderSignature, sig)
		h(&ctx)
		if ctx.Response.StatusCode() != fiber.StatusNoContent {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// BenchmarkGetMe is GET /api/v1/users/me over loopback HTTP against
// PostgreSQL: one signed request, one query.
func BenchmarkGetMe(b *testing.B) {
	e := start(b, apitest.Options{})
	ten := e.SeedTenant(b, "Acme")
	me := e.SeedUserIn(b, ten.ID, "me@acme.test", "admin")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("GET", e.URL+"/api/v1/users/me", nil)
		ts := time.Now().UnixMilli()
		req.Header.Set(identity.HeaderUserID, me.UserID)
		req.Header.Set(identity.HeaderTenantID, me.TenantID)
		req.Header.Set(identity.HeaderRoles, identity.JoinList(me.Roles))
		req.Header.Set(identity.HeaderPermissions, identity.JoinList(me.Permissions))
		req.Header.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(identity.HeaderSignature, e.Signer.Sign(ts, "GET", "/api/v1/users/me", me))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkProjection is the proxy's cache-miss call: the internal
// projection endpoint over loopback HTTP, one query.
func BenchmarkProjection(b *testing.B) {
	e := start(b, apitest.Options{})
	ten := e.SeedTenant(b, "Acme")
	me := e.SeedUserIn(b, ten.ID, "me@acme.test", "admin")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	path := identity.ProjectionPath + "/" + me.UserID + "?tenant_id=" + ten.ID
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("GET", e.URL+path, nil)
		ts := time.Now().UnixMilli()
		req.Header.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(identity.HeaderSignature, e.Signer.Sign(ts, "GET", path, identity.Identity{}))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
