package main

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

var testKey = identity.Key{ID: "core", Secret: []byte("loadtest-identity-key-0123456789abcdef")}

// TestRawSignedV2 parses what the direct-to-coreapi row sends and verifies
// it as coreapi does.
func TestRawSignedV2(t *testing.T) {
	signer, err := identity.NewKeySigner(testKey)
	if err != nil {
		t.Fatal(err)
	}
	ver, err := identity.NewVerifier([]identity.Key{testKey}, 0)
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1", TenantID: "t-1", SessionID: "s-1",
		Roles: []string{"member"}, Permissions: []string{"tenant:read"}}
	raw := rawSignedV2(signer, "127.0.0.1:8081", "/api/v1/users/me", "lt-x-1", &id)
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	got, err := ver.Verify(time.Now(), req.Header.Get, req.Method, req.RequestURI, identity.EmptyBodySHA256)
	if err != nil {
		t.Fatalf("coreapi would refuse it: %v\n%s", err, raw)
	}
	if got.UserID != id.UserID || got.TenantID != id.TenantID || got.Principal != id.Principal || got.KeyID != "core" {
		t.Fatalf("verified identity %+v", got)
	}
	if req.Header.Get(identity.HeaderRequestID) != "lt-x-1" {
		t.Fatalf("request id %q", req.Header.Get(identity.HeaderRequestID))
	}
}

// TestServiceSigned: the projection stand-in accepts the proxy's service
// signature (v2 or v1) and nothing else.
func TestServiceSigned(t *testing.T) {
	signer, _ := identity.NewKeySigner(testKey)
	ver, _ := identity.NewVerifier([]identity.Key{testKey}, 0)
	v1, _ := identity.NewSigner(testKey.Secret, 0)
	const path = "/internal/v1/projections/u-1?tenant_id=t-1"
	v2req := func(id identity.Identity, s *identity.KeySigner) *fasthttp.RequestCtx {
		var c fasthttp.RequestCtx
		c.Request.Header.SetMethod("GET")
		c.Request.SetRequestURI(path)
		r := identity.Request{Timestamp: time.Now().UnixMilli(), RequestID: "r-1", ClientIP: "127.0.0.1", Method: "GET",
			PathQuery: path, BodySHA256: identity.EmptyBodySHA256}
		h := &c.Request.Header
		h.Set(identity.HeaderKeyID, s.KeyID())
		h.Set(identity.HeaderPrincipal, id.Principal)
		h.Set(identity.HeaderUserID, id.UserID)
		h.Set(identity.HeaderEmailVerified, "false")
		h.Set(identity.HeaderClientIP, r.ClientIP)
		h.Set(identity.HeaderRequestID, r.RequestID)
		h.Set(identity.HeaderTimestamp, strconv.FormatInt(r.Timestamp, 10))
		h.Set(identity.HeaderSignature, s.Sign(&id, &r))
		return &c
	}
	other, _ := identity.NewKeySigner(identity.Key{ID: "app", Secret: []byte("some-app-key-that-is-not-the-core-key")})
	var v1req fasthttp.RequestCtx
	v1req.Request.Header.SetMethod("GET")
	v1req.Request.SetRequestURI(path)
	ts := time.Now().UnixMilli()
	v1req.Request.Header.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
	v1req.Request.Header.Set(identity.HeaderSignature, v1.Sign(ts, "GET", path, identity.Identity{}))
	tests := []struct {
		name string
		c    *fasthttp.RequestCtx
		want bool
	}{
		{"v2 anonymous", v2req(identity.Identity{Principal: identity.PrincipalAnonymous}, signer), true},
		{"v1", &v1req, true},
		{"v2 user", v2req(identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1"}, signer), false},
		{"v2 other key", v2req(identity.Identity{Principal: identity.PrincipalAnonymous}, other), false},
		{"unsigned", &fasthttp.RequestCtx{}, false},
	}
	for _, tt := range tests {
		if got := serviceSigned(tt.c, ver, v1); got != tt.want {
			t.Errorf("%s: serviceSigned = %v, want %v", tt.name, got, tt.want)
		}
	}
}
