package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/openapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/accountroutes"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

// openToKeys are the signed-in account routes deliberately open to API
// keys and service accounts (within their permissions).
var openToKeys = map[string]string{
	"GET /api/v1/users/me": "reading oneself",
}

// startServe runs the real serve command with env until the test ends and
// returns its base URL and a signer of identity headers it accepts (the
// core key, as the proxy signs them).
func startServe(t *testing.T, env map[string]string) (string, *identity.KeySigner) {
	t.Helper()
	return startServeWith(t, env, hooks{})
}

// startServeWith is startServe with h's hooks.
func startServeWith(t *testing.T, env map[string]string, h hooks) (string, *identity.KeySigner) {
	t.Helper()
	var out testkit.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveWith(ctx, nil, envOf(env), &out, h) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + waitListening(t, &out, done)
	secret, err := identity.ParseKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := identity.NewKeySigner(identity.Key{ID: config.LegacyIdentityKeyID, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return base, signer
}

// TestPrincipalMatrix runs the real serve command and sends, for every
// route of shared/accountroutes, a signed identity of each principal:
// the refused ones get 403 principal_not_allowed whatever permissions
// they carry (the proxy is not trusted to have refused them); users, and
// the principals a rule does not refuse, reach the handler.
func TestPrincipalMatrix(t *testing.T) {
	base, signer := startServe(t, serveEnv(t, dbtest.New(t).URL))
	do := func(id identity.Identity, method, path string) (int, problem.Problem, []byte) {
		t.Helper()
		var body []byte
		if method != http.MethodGet && method != http.MethodDelete {
			body = []byte("{}")
		}
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		rid := rand.Text()
		req.Header.Set(requestid.Header, rid)
		r := identity.Request{Timestamp: time.Now().UnixMilli(), RequestID: rid, ClientIP: "192.0.2.1",
			Method: method, PathQuery: path, BodySHA256: sha256.Sum256(body)}
		h := req.Header
		h.Set(identity.HeaderKeyID, signer.KeyID())
		h.Set(identity.HeaderPrincipal, id.Principal)
		h.Set(identity.HeaderUserID, id.UserID)
		h.Set(identity.HeaderTenantID, id.TenantID)
		h.Set(identity.HeaderPermissions, identity.JoinList(id.Permissions))
		h.Set(identity.HeaderEmailVerified, identity.BoolString(id.EmailVerified))
		h.Set(identity.HeaderClientIP, r.ClientIP)
		h.Set(identity.HeaderTimestamp, strconv.FormatInt(r.Timestamp, 10))
		h.Set(identity.HeaderSignature, signer.Sign(&id, &r))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var p problem.Problem
		_ = json.Unmarshal(b, &p)
		return resp.StatusCode, p, b
	}

	resp, err := http.Post(base+"/api/v1/auth/signup", "application/json",
		strings.NewReader(`{"email":"m@example.com","password":"a long password","tenant_name":"M"}`))
	if err != nil {
		t.Fatal(err)
	}
	var su struct {
		TenantID string `json:"tenant_id"`
		User     struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&su)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("signup: %d", resp.StatusCode)
	}
	// Every built-in permission: the refusal must not depend on them.
	all := permissions.BuiltinNames()
	as := func(principal string, perms ...string) identity.Identity {
		return identity.Identity{Principal: principal, UserID: su.User.ID, TenantID: su.TenantID, Permissions: perms, EmailVerified: true}
	}
	principals := []string{identity.PrincipalUser, identity.PrincipalAPIKey, identity.PrincipalService}

	for _, r := range accountroutes.Rules {
		path := strings.ReplaceAll(r.Path, ":id", "0b0d3c4e-0000-4000-8000-000000000001")
		for _, p := range principals {
			t.Run(fmt.Sprintf("%s %s as %s", r.Method, r.Path, p), func(t *testing.T) {
				status, prob, body := do(as(p, all...), r.Method, path)
				refused := r.Refuse&accountroutes.Bit(p) != 0
				switch {
				case refused && (status != http.StatusForbidden || prob.Code != problem.CodePrincipalNotAllowed):
					t.Fatalf("%d %s, want 403 %s", status, body, problem.CodePrincipalNotAllowed)
				case refused && prob.Detail != accountroutes.Detail(p, &r):
					t.Fatalf("detail %q", prob.Detail)
				case !refused && (prob.Code == problem.CodePrincipalNotAllowed || status == http.StatusNotFound && prob.Code == problem.CodeNotFound && strings.Contains(prob.Detail, "route")):
					t.Fatalf("%d %s: the handler should have answered", status, body)
				}
			})
		}
	}

	// What keys and service accounts keep: reading oneself, and the tenant
	// API within their permissions.
	for _, c := range []struct {
		id           identity.Identity
		method, path string
		status       int
		code         string
	}{
		{as(identity.PrincipalAPIKey), "GET", "/api/v1/users/me", 200, ""},
		{as(identity.PrincipalAPIKey, "tenant:read"), "GET", "/api/v1/tenant", 200, ""},
		{as(identity.PrincipalAPIKey), "GET", "/api/v1/tenant", 403, problem.CodeInsufficientScope},
		{as(identity.PrincipalAPIKey, "api-keys:write"), "GET", "/api/v1/users/me/api-keys", 200, ""},
		{as(identity.PrincipalService, "users:read"), "GET", "/api/v1/users", 200, ""},
		{as(identity.PrincipalService), "GET", "/api/v1/users", 403, problem.CodeInsufficientScope},
		{as(identity.PrincipalService, "api-keys:write"), "GET", "/api/v1/api-keys", 200, ""},
		{as(identity.PrincipalUser, all...), "GET", "/api/v1/users/me/sessions", 200, ""},
		{as(identity.PrincipalUser, all...), "GET", "/api/v1/users/me/api-keys", 200, ""},
	} {
		status, prob, body := do(c.id, c.method, c.path)
		if status != c.status || prob.Code != c.code {
			t.Errorf("%s %s as %s: %d %s, want %d %s", c.method, c.path, c.id.Principal, status, body, c.status, c.code)
		}
	}
}

// TestAccountRoutesDecided: every signed-in operation of the document
// under /api/v1/auth or /api/v1/users/me is either refused to some
// principal by shared/accountroutes or deliberately open to keys and
// service accounts, so a new account route cannot slip in open.
func TestAccountRoutesDecided(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for path, ops := range doc.Paths {
		if !strings.HasPrefix(path, "/api/v1/auth/") && path != "/api/v1/users/me" && !strings.HasPrefix(path, "/api/v1/users/me/") {
			continue
		}
		pattern := strings.NewReplacer("{", ":", "}", "").Replace(path)
		for method, raw := range ops {
			if method == "parameters" {
				continue
			}
			var op struct {
				Security *[]map[string][]string `json:"security"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatal(err)
			}
			bearer := op.Security == nil // the document's default is the bearer
			if op.Security != nil {
				for _, alt := range *op.Security {
					if _, ok := alt["bearer"]; ok {
						bearer = true
					}
				}
			}
			k := strings.ToUpper(method) + " " + pattern
			if !bearer {
				continue
			}
			n++
			if accountroutes.Find(strings.ToUpper(method), pattern) == nil && openToKeys[k] == "" {
				t.Errorf("%s: neither in shared/accountroutes nor in openToKeys", k)
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d account operations read from the document", n)
	}
	// Every refused route is documented, with its 403.
	param := regexp.MustCompile(`:([a-z_]+)`)
	for _, r := range accountroutes.Rules {
		var op struct {
			Responses map[string]json.RawMessage `json:"responses"`
		}
		raw := doc.Paths[param.ReplaceAllString(r.Path, "{$1}")][strings.ToLower(r.Method)]
		if err := json.Unmarshal(raw, &op); err != nil || op.Responses["403"] == nil {
			t.Errorf("%s %s: not documented with a 403 (%v)", r.Method, r.Path, err)
		}
	}
}
