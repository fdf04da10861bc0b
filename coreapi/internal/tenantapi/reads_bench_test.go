package tenantapi_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// BenchmarkReads runs the two hot reads of make bench in process (the
// Fiber handler called directly, no network), against PostgreSQL seeded
// like make bench: a tenant of 1,000 members holding the member role.
// Each request is signed afresh (v2, a new request id), as the proxy
// sends it; the allocations are the server's plus that signing.
//
//   - users-me: GET /api/v1/users/me as a member.
//   - users-limit-50: GET /api/v1/users?limit=50 as the owner.
//   - users-limit-50-total: the same with include_total=true.
func BenchmarkReads(b *testing.B) {
	e := start(b, apitest.Options{})
	ten := e.SeedTenant(b, "Bench")
	owner := e.SeedUserIn(b, ten.ID, "owner@bench.test", "owner")
	const seed = `
WITH u AS (
    INSERT INTO users (email, display_name)
    SELECT 'bench-' || g || '@example.com', 'Bench User ' || g FROM generate_series(1, 999) g
    RETURNING id
), m AS (
    INSERT INTO memberships (tenant_id, user_id) SELECT $1, id FROM u RETURNING user_id
)
INSERT INTO membership_roles (tenant_id, user_id, role_id)
SELECT $1, m.user_id, r.id FROM m JOIN roles r ON r.tenant_id = $1 AND r.name = 'member'`
	ctx := context.Background()
	if _, err := e.DB.Pool.Exec(ctx, seed, ten.ID); err != nil {
		b.Fatal(err)
	}
	if _, err := e.DB.Pool.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	var memberID string
	if err := e.DB.Pool.QueryRow(ctx, `SELECT id::text FROM users WHERE email = 'bench-500@example.com'`).Scan(&memberID); err != nil {
		b.Fatal(err)
	}
	member := e.IdentityOf(b, memberID, ten.ID)
	h := e.Server.App().Handler()

	run := func(b *testing.B, id identity.Identity, path string) {
		id.Principal = identity.PrincipalUser
		roles, perms := strings.Join(id.Roles, ","), strings.Join(id.Permissions, ",")
		r := identity.Request{ClientIP: "198.51.100.7", Method: "GET", PathQuery: path, BodySHA256: identity.EmptyBodySHA256}
		var (
			c   fasthttp.RequestCtx
			rid []byte
			sig []byte
			n   uint64
		)
		b.ReportAllocs()
		for b.Loop() {
			n++
			rid = strconv.AppendUint(append(rid[:0], "bench-"...), n, 10)
			r.RequestID = string(rid)
			r.Timestamp = time.Now().UnixMilli()
			sig = e.SignerV2.AppendSignature(sig[:0], &id, &r)
			c.Request.Reset()
			c.Response.Reset()
			hd := &c.Request.Header
			hd.SetMethod("GET")
			c.Request.SetRequestURI(path)
			hd.Set(identity.HeaderKeyID, apitest.KeyID)
			hd.Set(identity.HeaderPrincipal, id.Principal)
			hd.Set(identity.HeaderUserID, id.UserID)
			hd.Set(identity.HeaderTenantID, id.TenantID)
			hd.Set(identity.HeaderRoles, roles)
			hd.Set(identity.HeaderPermissions, perms)
			hd.Set(identity.HeaderEmailVerified, "false")
			hd.Set(identity.HeaderClientIP, r.ClientIP)
			hd.SetBytesV(identity.HeaderRequestID, rid)
			hd.Set(identity.HeaderTimestamp, strconv.FormatInt(r.Timestamp, 10))
			hd.SetBytesV(identity.HeaderSignature, sig)
			h(&c)
			if c.Response.StatusCode() != fiber.StatusOK {
				b.Fatalf("status %d: %s", c.Response.StatusCode(), c.Response.Body())
			}
		}
		b.ReportMetric(float64(len(c.Response.Body())), "resp-bytes")
	}
	b.Run("users-me", func(b *testing.B) { run(b, member, "/api/v1/users/me") })
	b.Run("users-limit-50", func(b *testing.B) { run(b, owner, "/api/v1/users?limit=50") })
	b.Run("users-limit-50-total", func(b *testing.B) { run(b, owner, "/api/v1/users?limit=50&include_total=true") })
}
