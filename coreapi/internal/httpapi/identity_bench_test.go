package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// BenchmarkIdentityMiddleware is the identity verification of one request
// alone (verifyIdentity on a Fiber context, no routing, no handler): what v2
// costs against v1.
//
//   - v1: one fixed v1 request sent again and again (v1 has no replay
//     check).
//   - v2: a new request id and signature per request (a replay would be
//     refused), so the loop also signs and sets those two headers;
//     sign-only is the signing alone, to subtract. v2 − sign-only − v1 is
//     the added cost of v2 (more headers, a longer canonical string, the
//     replay check, the copies).
//   - v2-1KiB: the same with a 1 KiB body hashed.
func BenchmarkIdentityMiddleware(b *testing.B) {
	key := identity.Key{ID: "core", Secret: []byte("bench-identity-key-0123456789abcdef")}
	pool, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:1/unused") // never connects
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	s, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Pool: pool,
		IdentityKeys: []identity.Key{key}, AcceptV1: true, CursorKey: []byte("k")})
	if err != nil {
		b.Fatal(err)
	}
	app := s.app
	id := identity.Identity{Principal: identity.PrincipalUser,
		UserID: "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001", TenantID: "0b4f1f8e-2222-4c2a-9a53-7a1f7e0c0002",
		Roles: []string{"admin"}, Permissions: []string{"users:read", "users:write"}}
	// run verifies one request the way the middleware does, without
	// Fiber's routing around it.
	run := func(b *testing.B, fctx *fasthttp.RequestCtx) {
		c := app.AcquireCtx(fctx)
		_, err := s.verifyIdentity(c)
		app.ReleaseCtx(c)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Run("v1", func(b *testing.B) {
		v1, _ := identity.NewSigner(key.Secret, 0)
		ts := time.Now().UnixMilli()
		var ctx fasthttp.RequestCtx
		hd := &ctx.Request.Header
		hd.SetMethod("GET")
		hd.Set(identity.HeaderUserID, id.UserID)
		hd.Set(identity.HeaderTenantID, id.TenantID)
		hd.Set(identity.HeaderRoles, "admin")
		hd.Set(identity.HeaderPermissions, "users:read,users:write")
		hd.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
		// Each iteration is another request (its own query), or the
		// replay filter would refuse the second.
		var (
			n   uint64
			uri []byte
			sig []byte
		)
		b.ReportAllocs()
		for b.Loop() {
			n++
			uri = strconv.AppendUint(append(uri[:0], "/x?n="...), n, 10)
			sig = v1.AppendSignature(sig[:0], ts, "GET", string(uri), id)
			ctx.Request.SetRequestURIBytes(uri)
			hd.SetBytesV(identity.HeaderSignature, sig)
			run(b, &ctx)
		}
	})
	signer, _ := identity.NewKeySigner(key)
	type req struct {
		r   identity.Request
		n   uint64
		rid []byte
		sig []byte
	}
	sign := func(q *req) {
		q.n++
		q.rid = strconv.AppendUint(append(q.rid[:0], "bench-"...), q.n, 10)
		q.r.RequestID = string(q.rid)
		q.sig = signer.AppendSignature(q.sig[:0], &id, &q.r)
	}
	v2 := func(method string, body []byte) func(b *testing.B) {
		return func(b *testing.B) {
			q := &req{r: identity.Request{Timestamp: time.Now().UnixMilli(), ClientIP: "198.51.100.7", Method: method,
				PathQuery: "/x", BodySHA256: sha256.Sum256(body)}}
			// The request is built once; each iteration only puts in
			// its new request id and signature.
			var ctx fasthttp.RequestCtx
			hd := &ctx.Request.Header
			hd.SetMethod(method)
			ctx.Request.SetRequestURI("/x")
			hd.Set(identity.HeaderKeyID, key.ID)
			hd.Set(identity.HeaderPrincipal, id.Principal)
			hd.Set(identity.HeaderUserID, id.UserID)
			hd.Set(identity.HeaderTenantID, id.TenantID)
			hd.Set(identity.HeaderRoles, "admin")
			hd.Set(identity.HeaderPermissions, "users:read,users:write")
			hd.Set(identity.HeaderEmailVerified, "false")
			hd.Set(identity.HeaderClientIP, q.r.ClientIP)
			hd.Set(identity.HeaderTimestamp, strconv.FormatInt(q.r.Timestamp, 10))
			if len(body) > 0 {
				ctx.Request.SetBody(body)
			}
			b.ReportAllocs()
			for b.Loop() {
				sign(q)
				hd.SetBytesV(identity.HeaderRequestID, q.rid)
				hd.SetBytesV(identity.HeaderSignature, q.sig)
				run(b, &ctx)
			}
		}
	}
	b.Run("v2", v2("GET", nil))
	b.Run("v2-sign-only", func(b *testing.B) {
		q := &req{r: identity.Request{Timestamp: time.Now().UnixMilli(), ClientIP: "198.51.100.7", Method: "GET", PathQuery: "/x"}}
		b.ReportAllocs()
		for b.Loop() {
			sign(q)
		}
	})
	b.Run("v2-1KiB", v2("POST", bytes.Repeat([]byte("x"), 1024)))
}
