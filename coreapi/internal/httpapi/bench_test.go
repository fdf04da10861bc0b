package httpapi_test

import (
	"bytes"
	"crypto/sha256"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

// BenchmarkProtectedRoute measures the middleware stack of a protected
// route (request id, access log, identity verification, permission check)
// around a handler that does nothing, in process.
//
//   - v1: the legacy signature (no body digest, no replay check), one
//     fixed signature reused.
//   - v2: a fresh request id and signature per request (a replay would be
//     refused), so the loop also signs; v2-sign-only measures that signing
//     part alone, to subtract.
//   - v2-post-1KiB: the same with a 1 KiB body, whose SHA-256 is checked.
func BenchmarkProtectedRoute(b *testing.B) {
	e := start(b, apitest.Options{Configure: func(o *httpapi.Options) {
		o.Register = append(o.Register, func(rt httpapi.Routes) {
			h := func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusNoContent) }
			rt.Protected.Get("/bench", httpapi.RequirePermission("users:read"), h)
			rt.Protected.Post("/bench", httpapi.RequirePermission("users:read"), h)
		})
	}})
	id := identity.Identity{
		Principal: identity.PrincipalUser,
		UserID:    "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001", TenantID: "0b4f1f8e-2222-4c2a-9a53-7a1f7e0c0002",
		Roles: []string{"admin"}, Permissions: []string{"users:read", "users:write"},
	}
	h := e.Server.App().Handler()
	run := func(b *testing.B, ctx *fasthttp.RequestCtx) {
		h(ctx)
		if ctx.Response.StatusCode() != fiber.StatusNoContent {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	b.Run("v1", func(b *testing.B) {
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
			run(b, &ctx)
		}
	})
	// v2 prepares one request the way the proxy sends it; sign only
	// re-signs it under a new request id.
	type v2req struct {
		ctx  fasthttp.RequestCtx
		r    identity.Request
		n    uint64
		rid  []byte
		sig  []byte
		body []byte
	}
	prepare := func(method string, body []byte) *v2req {
		q := &v2req{body: body}
		q.r = identity.Request{Timestamp: time.Now().UnixMilli(), ClientIP: "198.51.100.7", Method: method,
			PathQuery: "/api/v1/bench", BodySHA256: sha256.Sum256(body)}
		return q
	}
	sign := func(q *v2req) {
		q.n++
		q.rid = strconv.AppendUint(append(q.rid[:0], "bench-"...), q.n, 10)
		q.r.RequestID = string(q.rid)
		q.sig = e.SignerV2.AppendSignature(q.sig[:0], &id, &q.r)
	}
	send := func(b *testing.B, q *v2req) {
		sign(q)
		ctx := &q.ctx
		ctx.Request.Reset()
		ctx.Response.Reset()
		hd := &ctx.Request.Header
		hd.SetMethod(q.r.Method)
		ctx.Request.SetRequestURI(q.r.PathQuery)
		hd.Set(identity.HeaderKeyID, apitest.KeyID)
		hd.Set(identity.HeaderPrincipal, id.Principal)
		hd.Set(identity.HeaderUserID, id.UserID)
		hd.Set(identity.HeaderTenantID, id.TenantID)
		hd.Set(identity.HeaderRoles, "admin")
		hd.Set(identity.HeaderPermissions, "users:read,users:write")
		hd.Set(identity.HeaderEmailVerified, "false")
		hd.Set(identity.HeaderClientIP, q.r.ClientIP)
		hd.SetBytesV(identity.HeaderRequestID, q.rid)
		hd.Set(identity.HeaderTimestamp, strconv.FormatInt(q.r.Timestamp, 10))
		hd.SetBytesV(identity.HeaderSignature, q.sig)
		if len(q.body) > 0 {
			hd.SetContentType("application/json")
			ctx.Request.SetBody(q.body)
		}
		run(b, ctx)
	}
	b.Run("v2", func(b *testing.B) {
		q := prepare("GET", nil)
		b.ReportAllocs()
		for b.Loop() {
			send(b, q)
		}
	})
	b.Run("v2-sign-only", func(b *testing.B) {
		q := prepare("GET", nil)
		b.ReportAllocs()
		for b.Loop() {
			sign(q)
		}
	})
	b.Run("v2-post-1KiB", func(b *testing.B) {
		q := prepare("POST", bytes.Repeat([]byte("x"), 1024))
		b.ReportAllocs()
		for b.Loop() {
			send(b, q)
		}
	})
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
		req.Header.Set(requestid.Header, requestid.New())
		e.SignV2(req.Header, me, "GET", "/api/v1/users/me", nil)
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
		req.Header.Set(requestid.Header, requestid.New())
		e.SignServiceV2(req.Header, "GET", path, nil)
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
