package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// A client_credentials token names its principal and no session; a user
// token must name a session; any other principal is refused; the scope
// claim is split into the permissions the token may use.
func TestPrincipalAndScopeClaims(t *testing.T) {
	f := newFixture(t, 0)
	now := time.Now()
	service := func(mod func(testenv.Claims)) []byte {
		c := testenv.DefaultClaims(now, "sa-1", "t1", "")
		delete(c, "sid")
		c["principal"] = "service"
		if mod != nil {
			mod(c)
		}
		return []byte(testenv.Sign(t, f.key, c, nil))
	}
	cl, err := f.v.Verify(context.Background(), service(nil))
	if err != nil {
		t.Fatalf("service token: %v", err)
	}
	if cl.Principal != identity.PrincipalService || cl.Sid != "" || cl.Scope != nil {
		t.Fatalf("service token claims = %+v", cl)
	}
	cl, err = f.v.Verify(context.Background(), service(func(c testenv.Claims) { c["scope"] = "notes:read  users:read" }))
	if err != nil {
		t.Fatalf("scoped service token: %v", err)
	}
	if !slices.Equal(cl.Scope, []string{"notes:read", "users:read"}) {
		t.Fatalf("scope = %q", cl.Scope)
	}
	cl, err = f.v.Verify(context.Background(), service(func(c testenv.Claims) { c["scope"] = "" }))
	if err != nil || cl.Scope == nil || len(cl.Scope) != 0 {
		t.Fatalf("empty scope: %v %+v (want a token with no permissions)", err, cl)
	}
	user, err := f.v.Verify(context.Background(), f.mint(t, "u1"))
	if err != nil || user.Principal != identity.PrincipalUser {
		t.Fatalf("user token: %v %+v", err, user)
	}
	for name, tok := range map[string][]byte{
		"service with a session": service(func(c testenv.Claims) { c["sid"] = "s1" }),
		"unknown principal":      service(func(c testenv.Claims) { c["principal"] = "api_key" }),
		"principal user spelled": service(func(c testenv.Claims) { c["principal"] = "user"; c["sid"] = "s1" }),
		"bad scope":              service(func(c testenv.Claims) { c["scope"] = "Users:read" }),
		"scope not a string":     service(func(c testenv.Claims) { c["scope"] = []string{"users:read"} }),
		// RFC 6749 section 3.3: scope tokens are separated by U+0020 only.
		"scope split by a tab":  service(func(c testenv.Claims) { c["scope"] = "notes:read\tusers:read" }),
		"scope split by a NBSP": service(func(c testenv.Claims) { c["scope"] = "notes:read\u00a0users:read" }),
		"user without session": func() []byte {
			c := testenv.DefaultClaims(now, "u1", "t1", "")
			delete(c, "sid")
			return []byte(testenv.Sign(t, f.key, c, nil))
		}(),
	} {
		if _, err := f.v.Verify(context.Background(), tok); !errors.Is(err, ErrClaims) && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrClaims", name, err)
		}
	}
}

// TestQuotedNumericClaimsRefused: exp, iat, nbf, auth_time and tv are JSON
// numbers (RFC 7519 section 2); a token carrying one as a string holding
// a number ("exp":"1700000000") is malformed (ErrClaims: 401), as other
// verifiers refuse or misread it.
func TestQuotedNumericClaimsRefused(t *testing.T) {
	f := newFixture(t, 0)
	now := time.Now()
	for _, claim := range []string{"exp", "iat", "nbf", "auth_time", "tv"} {
		c := testenv.DefaultClaims(now, "u1", "t1", "s1")
		c["amr"], c["auth_time"], c["nbf"] = []string{"pwd"}, now.Unix()-10, now.Unix()-10
		if _, err := f.v.Verify(context.Background(), []byte(testenv.Sign(t, f.key, c, nil))); err != nil {
			t.Fatalf("%s as a number: %v", claim, err)
		}
		c[claim] = fmt.Sprint(c[claim])
		if _, err := f.v.Verify(context.Background(), []byte(testenv.Sign(t, f.key, c, nil))); !errors.Is(err, ErrClaims) {
			t.Errorf("%s as a string (%q): err = %v, want ErrClaims", claim, c[claim], err)
		}
	}
}

// TestAuthTimeWithinTheSignedRange: the auth_time claim becomes the signed
// X-Auth-Auth-Time, which both identity verifiers (Go's and the Node
// example's) refuse above identity.MaxAuthTime (2^53-1): the proxy must
// never sign one. A token whose auth_time lies past the NumericDate range
// (about year 2514, far below 2^53-1), or is not a positive number, is
// refused as any malformed claim is (ErrClaims: 401); the largest one
// accepted is within what the verifiers read. The test fails if either
// bound moves past the other.
func TestAuthTimeWithinTheSignedRange(t *testing.T) {
	f := newFixture(t, 0)
	now := time.Now()
	tok := func(at any) []byte {
		c := testenv.DefaultClaims(now, "u1", "t1", "s1")
		c["amr"], c["auth_time"] = []string{"pwd"}, at
		return []byte(testenv.Sign(t, f.key, c, nil))
	}
	const largest = int64(math.MaxInt32) * 4 // jwtclaims.NumericDate's bound
	cl, err := f.v.Verify(context.Background(), tok(largest))
	if err != nil {
		t.Fatalf("auth_time %d: %v", largest, err)
	}
	if cl.AuthTime != largest || cl.AuthTime > identity.MaxAuthTime {
		t.Fatalf("auth_time = %d, want %d, at most identity.MaxAuthTime", cl.AuthTime, largest)
	}
	for _, at := range []any{largest + 1, int64(identity.MaxAuthTime), int64(identity.MaxAuthTime) + 1,
		json.Number("9007199254740993"), json.Number("1e300"), int64(math.MaxInt64), 0, -1} {
		if _, err := f.v.Verify(context.Background(), tok(at)); !errors.Is(err, ErrClaims) && !errors.Is(err, ErrMalformed) {
			t.Errorf("auth_time %v: err = %v, want ErrClaims", at, err)
		}
	}
}

// TestServiceTokenNamesItsSecret: a service token's csid claim, the
// client secret it was obtained with, becomes its Sid (forwarded as
// X-Auth-Session-Id), so that coreapi refuses its writes once that secret
// is deleted, whether or not this proxy has heard of it. A token without
// the claim (issued before it) names none; one that is not an id is
// malformed.
func TestServiceTokenNamesItsSecret(t *testing.T) {
	f := newFixture(t, 0)
	now := time.Now()
	service := func(csid any) []byte {
		c := testenv.DefaultClaims(now, "sa-1", "t1", "")
		delete(c, "sid")
		c["principal"] = "service"
		if csid != nil {
			c["csid"] = csid
		}
		return []byte(testenv.Sign(t, f.key, c, nil))
	}
	const secret = "0b6a3a52-4f7e-4d1c-9a52-6c1f3e2d1b0a"
	for csid, want := range map[any]string{secret: secret, nil: ""} {
		cl, err := f.v.Verify(context.Background(), service(csid))
		if err != nil || cl.Principal != identity.PrincipalService || cl.Sid != want {
			t.Fatalf("csid %v: %v %+v, want Sid %q", csid, err, cl, want)
		}
	}
	for _, bad := range []any{"a b", "x\r\ny", 7} {
		if _, err := f.v.Verify(context.Background(), service(bad)); !errors.Is(err, ErrClaims) && !errors.Is(err, ErrMalformed) {
			t.Errorf("csid %q: err = %v, want ErrClaims", bad, err)
		}
	}
}
