package httpapi

import (
	"context"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestVerifiedIdentityOwnsItsStrings: the verified identity (its ids, the
// items of its lists, the client IP) is copied out of fasthttp's buffers
// (into one allocation), so it stays the same when the connection's
// request buffers are reused for the next request.
func TestVerifiedIdentityOwnsItsStrings(t *testing.T) {
	t.Parallel()
	key := identity.Key{ID: "core", Secret: []byte("test-identity-key-0123456789abcdef")}
	pool, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:1/unused") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Pool: pool,
		IdentityKeys: []identity.Key{key}, CursorKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Identity{Principal: identity.PrincipalUser, EmailVerified: true, AuthTime: 1_700_000_000,
		UserID: "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001", TenantID: "0b4f1f8e-2222-4c2a-9a53-7a1f7e0c0002",
		SessionID: "0b4f1f8e-3333-4c2a-9a53-7a1f7e0c0003",
		Roles:     []string{"admin", "member"}, Permissions: []string{"users:read", "users:write", "audit:read"}, AMR: []string{"pwd", "otp"}}
	r := identity.Request{Timestamp: time.Now().UnixMilli(), ClientIP: "198.51.100.7", Method: "GET",
		PathQuery: "/x", BodySHA256: identity.EmptyBodySHA256, RequestID: "own-1"}
	var ctx fasthttp.RequestCtx
	hd := &ctx.Request.Header
	hd.SetMethod("GET")
	ctx.Request.SetRequestURI("/x")
	hd.Set(identity.HeaderKeyID, key.ID)
	hd.Set(identity.HeaderPrincipal, id.Principal)
	hd.Set(identity.HeaderUserID, id.UserID)
	hd.Set(identity.HeaderTenantID, id.TenantID)
	hd.Set(identity.HeaderSessionID, id.SessionID)
	hd.Set(identity.HeaderRoles, strings.Join(id.Roles, ","))
	hd.Set(identity.HeaderPermissions, strings.Join(id.Permissions, ","))
	hd.Set(identity.HeaderEmailVerified, "true")
	hd.Set(identity.HeaderAMR, strings.Join(id.AMR, ","))
	hd.Set(identity.HeaderAuthTime, strconv.FormatInt(id.AuthTime, 10))
	hd.Set(identity.HeaderClientIP, r.ClientIP)
	hd.Set(identity.HeaderTimestamp, strconv.FormatInt(r.Timestamp, 10))
	hd.Set(identity.HeaderRequestID, r.RequestID)
	hd.Set(identity.HeaderSignature, string(signer.AppendSignature(nil, &id, &r)))

	c := s.app.AcquireCtx(&ctx)
	v, err := s.verifyIdentity(c)
	s.app.ReleaseCtx(c)
	if err != nil {
		t.Fatal(err)
	}
	id.KeyID = key.ID // set by Verify (the key's own id)
	if !reflect.DeepEqual(v.id, id) || v.clientIP != r.ClientIP {
		t.Fatalf("verified %+v (client IP %q), want %+v", v.id, v.clientIP, id)
	}
	want := v.id
	want.Roles, want.Permissions, want.AMR = slices.Clone(want.Roles), slices.Clone(want.Permissions), slices.Clone(want.AMR)
	// The next request on the connection: same names, values of the same
	// lengths, written over the same buffers.
	for _, val := range hd.All() {
		for i := range val {
			val[i] = 'z'
		}
	}
	if !reflect.DeepEqual(v.id, want) || v.clientIP != r.ClientIP {
		t.Fatalf("after the buffers were reused: %+v (client IP %q), want %+v", v.id, v.clientIP, want)
	}
}
