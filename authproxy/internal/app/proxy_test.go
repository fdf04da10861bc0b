package app

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
	"github.com/tollgate-auth/tollgate/shared/logging/logtest"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

func TestProtectedRequestForwardedSigned(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	r := e.do("GET", "/api/v1/users/me?x=1&y=%2F", e.token(nil), nil)
	e.wantStatus(r, 200)
	got := e.wantSigned()
	if got.URI != "/api/v1/users/me?x=1&y=%2F" {
		t.Fatalf("forwarded URI = %q", got.URI)
	}
	if strings.Join(got.Identity.Roles, ",") != "member" || strings.Join(got.Identity.Permissions, ",") != "tenant:read" {
		t.Fatalf("roles/permissions = %v %v", got.Identity.Roles, got.Identity.Permissions)
	}
	if got.Headers["X-Forwarded-For"][0] != "127.0.0.1" || got.Headers["X-Forwarded-Proto"][0] != "http" {
		t.Fatalf("forwarded headers = %v", got.Headers)
	}
	if got.Headers["X-Request-Id"][0] != r.header.Get("X-Request-Id") {
		t.Fatalf("request id upstream %v, response %q", got.Headers["X-Request-Id"], r.header.Get("X-Request-Id"))
	}
}

// Client identity headers never reach the upstream, on public and
// protected routes, whatever their spelling.
func TestClientIdentityHeadersStripped(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	spellings := []string{"X-Auth-User-Id", "x-auth-user-id", "X_Auth_User_Id", "X-AUTH-ROLES", "x_auth_signature"}
	routes := []struct {
		name, method, path string
		token              bool
	}{
		{"public", "POST", "/api/v1/auth/token", false},
		{"protected", "GET", "/api/v1/users/me", true},
	}
	for _, rt := range routes {
		for _, name := range spellings {
			t.Run(rt.name+"/"+name, func(t *testing.T) {
				e.core.Reset()
				req := rt.method + " " + rt.path + " HTTP/1.1\r\nHost: x\r\n" + name + ": evil\r\nContent-Length: 0\r\n"
				if rt.token {
					req += "Authorization: Bearer " + e.token(nil) + "\r\n"
				}
				r := e.raw(req + "Connection: close\r\n\r\n")
				e.wantStatus(r, 200)
				got := e.core.Last(t)
				for k, vs := range got.Headers {
					for _, v := range vs {
						if v == "evil" {
							t.Fatalf("client header %s: %s reached the upstream", k, v)
						}
					}
				}
				if rt.token {
					e.wantSigned()
				} else {
					e.wantAnonymousAt(e.core, "core")
				}
			})
		}
	}
}

// TestOtherAuthLayersIdentityFieldsRemovedFromEveryPeer: the fields in
// which other auth layers name the signed-in user to the app behind them
// (Authelia's Remote-User, the Kubernetes front proxy's X-Remote-User,
// Grafana's X-WebAuth-User, oauth2-proxy's X-Forwarded-User and
// X-Auth-Request-User, Azure EasyAuth's X-Ms-Client-Principal-Name, IAP's,
// the AWS load balancer's, Cloudflare Access's, Kong's and APISIX's
// X-Consumer-* and X-Credential-*, Pomerium's X-Pomerium-*, Vouch Proxy's
// X-Vouch-*, mod_auth_openidc's OIDC_CLAIM_*, Google Cloud Endpoints' and
// API Gateway's user info, WSO2's X-JWT-Assertion...) never reach an app,
// from a trusted peer either: an app moved behind the proxy from one of
// them may still read them, and the proxy is the one authority on who
// the caller is (its signed X-Auth-* fields). Each is sent alone, so the
// scan that decides whether anything is to be removed must know it too.
func TestOtherAuthLayersIdentityFieldsRemovedFromEveryPeer(t *testing.T) {
	t.Parallel()
	const sent = "client-chosen-admin"
	names := []string{"Remote-User", "remote-user", "Remote_User", "Remote-Groups", "Remote-Email", "REMOTE-NAME",
		"X-Remote-User", "x_remote_user", "X-Remote-Group", "X-Remote-Extra-Scopes", "x-remote-extra-org",
		"X-WebAuth-User", "X-WEBAUTH-USER", "X_Webauth_User",
		"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Preferred-Username", "X-Forwarded-Groups",
		"X-Forwarded-Access-Token", "x_forwarded_user",
		"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups", "X-Auth-Request-Preferred-Username",
		"X-Authenticated-User", "X-Authenticated-Userid", "X-Authenticated-Groups",
		"X-authentik-username", "X-authentik-groups", "X-authentik-email",
		"X-Ms-Client-Principal", "X-MS-CLIENT-PRINCIPAL-NAME", "X-Ms-Client-Principal-Id", "X-Ms-Client-Principal-Idp",
		"X-MS-TOKEN-AAD-ID-TOKEN", "X-MS-TOKEN-AAD-ACCESS-TOKEN",
		"X-Goog-Authenticated-User-Email", "X-Goog-Authenticated-User-Id", "X-Goog-Iap-Jwt-Assertion",
		"X-Amzn-Oidc-Data", "X-Amzn-Oidc-Identity", "x-amzn-oidc-accesstoken",
		"Cf-Access-Jwt-Assertion", "Cf-Access-Authenticated-User-Email", "CF_ACCESS_AUTHENTICATED_USER_EMAIL",
		"X-Consumer-Id", "X-Consumer-ID", "X-Consumer-Username", "X-Consumer-Custom-Id", "X-Consumer-Groups",
		"X-Anonymous-Consumer", "X-Credential-Identifier", "X-Credential-Username", "x_consumer_username", "X_CONSUMER_ID",
		"X-Pomerium-Claim-Email", "X-Pomerium-Claim-Groups", "X-Pomerium-Jwt-Assertion", "x_pomerium_claim_sub",
		"X-Vouch-User", "X-Vouch-Idp-Claims-Groups", "X-Vouch-Idp-Accesstoken", "X_VOUCH_USER",
		"OIDC_CLAIM_sub", "OIDC_CLAIM_email", "oidc-claim-groups", "OIDC_access_token", "OIDC_id_token_payload",
		"X-Endpoint-API-UserInfo", "x_endpoint_api_userinfo", "X-Apigateway-Api-Userinfo", "X-JWT-Assertion", "x_jwt_assertion"}
	forEachPeer(t, func(t *testing.T, e *env, _ bool) {
		tok := e.token(nil)
		for _, name := range names {
			e.onEachRoute(t, tok, name, sent, func(route string, got map[string][]string) {
				for k, vs := range got {
					for _, v := range vs {
						if strings.Contains(v, sent) {
							t.Errorf("%s route: %s reached the upstream as %s: %q", route, name, k, v)
						}
					}
					if fieldNorm(k) == fieldNorm(name) {
						t.Errorf("%s route: %s reached the upstream as %s", route, name, k)
					}
				}
			})
		}
	})
}

// Connection cannot be used to remove the injected headers.
func TestConnectionCannotRemoveInjectedHeaders(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	r := e.raw("GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + e.token(nil) +
		"\r\nConnection: X-Auth-User-Id, X-Auth-Signature, x-auth-timestamp, X-Custom\r\nX-Custom: hop\r\n\r\n")
	e.wantStatus(r, 200)
	got := e.wantSigned()
	if _, ok := got.Headers["X-Custom"]; ok {
		t.Fatal("header named in Connection was forwarded")
	}
	if _, ok := got.Headers["Connection"]; ok && strings.Contains(strings.ToLower(got.Headers["Connection"][0]), "x-auth") {
		t.Fatalf("client Connection header forwarded: %v", got.Headers["Connection"])
	}
}

// A client that names Authorization in Connection has it removed, as any
// hop-by-hop field, before the token is looked up: the proxy then sees no
// token, though the header scan at the request's start saw one (and the
// token is warm in the cache).
func TestConnectionNamedAuthorizationRemovedBeforeLookup(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200) // warm
	r := e.raw("GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
		"\r\nConnection: authorization\r\n\r\n")
	e.wantProblem(r, 401, problem.CodeUnauthenticated)
}

// Forged and invalid tokens are refused with 401 invalid_token and
// never forwarded.
func TestRejectedTokens(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	now := time.Now()
	good := func() testenv.Claims { return testenv.DefaultClaims(now, userID, tenantID, sessionID) }
	with := func(k string, v any) testenv.Claims { c := good(); c[k] = v; return c }
	pubBytes := []byte(e.key.Public.(ed25519.PublicKey))
	attacker := testenv.NewKey(t, e.key.Kid, jwa.EdDSA) // same kid, other key
	tests := []struct {
		name  string
		token func() string
	}{
		{"alg none", func() string {
			return testenv.Unsigned(t, testenv.Header{"alg": "none", "typ": "at+jwt", "kid": e.key.Kid}, good(), "")
		}},
		{"alg none with signature part", func() string {
			return testenv.Unsigned(t, testenv.Header{"alg": "none", "typ": "at+jwt", "kid": e.key.Kid}, good(), "AAAA")
		}},
		{"HS256 signed with the public key", func() string {
			k := &testenv.Key{Kid: e.key.Kid, Alg: jwa.HS256, Private: pubBytes}
			return testenv.Sign(t, k, good(), nil)
		}},
		{"other key under the same kid", func() string { return testenv.Sign(t, attacker, good(), nil) }},
		{"unknown kid", func() string {
			return testenv.Sign(t, testenv.NewKey(t, "20990101T000000Z-ffffffff", jwa.EdDSA), good(), nil)
		}},
		{"kid with path characters", func() string {
			return testenv.Sign(t, e.key, good(), testenv.Header{"kid": "../../etc/passwd"})
		}},
		{"kid with slash", func() string { return testenv.Sign(t, e.key, good(), testenv.Header{"kid": "a/b"}) }},
		{"expired", func() string {
			return testenv.Sign(t, e.key, with("exp", now.Add(-2*time.Minute).Unix()), nil)
		}},
		{"nbf in the future", func() string {
			return testenv.Sign(t, e.key, with("nbf", now.Add(5*time.Minute).Unix()), nil)
		}},
		{"iat in the future", func() string {
			c := good()
			c["iat"], c["nbf"], c["exp"] = now.Add(5*time.Minute).Unix(), now.Unix(), now.Add(10*time.Minute).Unix()
			return testenv.Sign(t, e.key, c, nil)
		}},
		{"wrong iss", func() string { return testenv.Sign(t, e.key, with("iss", "https://evil.example"), nil) }},
		{"wrong aud", func() string { return testenv.Sign(t, e.key, with("aud", "other"), nil) }},
		{"wrong aud list", func() string { return testenv.Sign(t, e.key, with("aud", []string{"a", "b"}), nil) }},
		{"wrong typ", func() string { return testenv.Sign(t, e.key, good(), testenv.Header{"typ": "JWT"}) }},
		{"no typ", func() string { return testenv.Sign(t, e.key, good(), testenv.Header{"typ": nil}) }},
		{"lifetime too long", func() string {
			return testenv.Sign(t, e.key, with("exp", now.Add(48*time.Hour).Unix()), nil)
		}},
		{"missing tid", func() string { c := good(); delete(c, "tid"); return testenv.Sign(t, e.key, c, nil) }},
		{"missing tv", func() string { c := good(); delete(c, "tv"); return testenv.Sign(t, e.key, c, nil) }},
		{"fractional tv", func() string { return testenv.Sign(t, e.key, with("tv", 1.5), nil) }},
		{"sub with path characters", func() string { return testenv.Sign(t, e.key, with("sub", "../x"), nil) }},
		{"crit header", func() string {
			return testenv.Sign(t, e.key, good(), testenv.Header{"crit": []string{"exp"}, "exp": 1})
		}},
		{"oversized", func() string {
			return testenv.Sign(t, e.key, with("pad", strings.Repeat("a", 5000)), nil)
		}},
		{"garbage base64", func() string { return "@@@.###.$$$" }},
		{"bad base64 segments", func() string { return "eyJhbGciOi.eyJzdWIi.AAAA" }},
		{"two segments", func() string { p := strings.Split(e.token(nil), "."); return p[0] + "." + p[1] }},
		{"tampered payload", func() string {
			p := strings.Split(e.token(nil), ".")
			c := good()
			c["sub"] = "44444444-4444-4444-8444-444444444444"
			forged := strings.Split(testenv.Unsigned(t, testenv.Header{}, c, ""), ".")[1]
			return p[0] + "." + forged + "." + p[2]
		}},
		{"tampered signature", func() string {
			tok := e.token(nil)
			last := tok[len(tok)-2]
			repl := byte('A')
			if last == 'A' {
				repl = 'B'
			}
			return tok[:len(tok)-2] + string(repl) + tok[len(tok)-1:]
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.core.Reset()
			tok := tt.token()
			r := e.raw("GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nConnection: close\r\n\r\n")
			e := e.with(t)
			e.wantProblem(r, 401, problem.CodeInvalidToken)
			e.wantNothingForwarded()
			// A second try is refused too (negative cache or re-check).
			r = e.raw("GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nConnection: close\r\n\r\n")
			e.wantProblem(r, 401, problem.CodeInvalidToken)
			e.wantNothingForwarded()
		})
	}
	// The reasons the clients were not told are in the log.
	reasons := map[string]bool{}
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var rec struct{ Msg, Reason string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "token refused" {
			reasons[rec.Reason] = true
		}
	}
	if len(reasons) < 8 {
		t.Fatalf("distinct refusal reasons logged = %d (%v), want the detail of each check", len(reasons), reasons)
	}
}

func TestAuthorizationHeaderShapes(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	tests := []struct {
		name, headers string
		status        int
		code          string
	}{
		{"two Authorization headers", "Authorization: Bearer " + tok + "\r\nAuthorization: Bearer " + tok + "\r\n", 401, problem.CodeInvalidToken},
		{"missing", "", 401, problem.CodeUnauthenticated},
		{"basic scheme", "Authorization: Basic dXNlcjpwYXNz\r\n", 401, problem.CodeUnauthenticated},
		{"empty bearer", "Authorization: Bearer\r\n", 401, problem.CodeInvalidToken},
		{"lower-case scheme", "Authorization: bearer " + tok + "\r\n", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.with(t)
			e.core.Reset()
			r := e.raw("GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\n" + tt.headers + "Connection: close\r\n\r\n")
			if tt.status == 200 {
				e.wantStatus(r, 200)
				e.wantSigned()
				return
			}
			e.wantProblem(r, tt.status, tt.code)
			e.wantNothingForwarded()
		})
	}
}

// Path tricks cannot reach a protected route without a token, and
// the forwarded path is the normalized one.
func TestPathTricks(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tests := []struct {
		path   string
		status int
	}{
		{"/api/v1/auth/../users/me", 401},
		{"//api/v1/users/me", 401},
		{"/api/v1/auth/%2e%2e/users/me", 401},
		{"/api/v1/auth/%2E%2E/users/me", 401},
		{"/api/v1/auth/.%2e/users/me", 401},
		{"/api/v1/auth/token/../../users/me", 401},
		{"/api/v1/auth/oauth/x/authorize/../../../../users/me", 401},
		{"/api/v1/auth/%2f../users/me", 400},
		{"/api/v1/auth%2F..%2Fusers/me", 400},
		{"/api/v1/auth/..%2fusers/me", 400},
		{"/api/v1/auth/..%5cusers/me", 400},
		{"/api/v1/users/me%00", 400},
		{"/api/v1/auth/%zz", 400},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			e := e.with(t)
			e.core.Reset()
			for _, method := range []string{"GET", "POST"} {
				r := e.raw(method + " " + tt.path + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				if tt.status == 400 {
					e.wantProblem(r, 400, problem.CodeBadPath)
				} else {
					e.wantProblem(r, 401, problem.CodeUnauthenticated)
				}
				e.wantNothingForwarded()
			}
		})
	}
	t.Run("normalized path is forwarded and signed", func(t *testing.T) {
		e := e.with(t)
		e.core.Reset()
		r := e.raw("GET //api/v1/./auth/%2e%2e/users/%6de/?q=%2e%2e HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + e.token(nil) + "\r\nConnection: close\r\n\r\n")
		e.wantStatus(r, 200)
		got := e.wantSigned()
		if got.URI != "/api/v1/users/me?q=%2e%2e" {
			t.Fatalf("forwarded URI = %q, want /api/v1/users/me?q=%%2e%%2e", got.URI)
		}
	})
}

// coreapi's internal endpoints are never reachable through the proxy.
func TestInternalNeverForwarded(t *testing.T) {
	t.Parallel()
	// Even with an app catch-all behind "/".
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - prefix: /\n    upstream: notes\n    access: protected\n"})
	tok := e.token(nil)
	before := e.core.ProjectionFetches.Load()
	// Warm the projection so later fetch counts are exact.
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	before = e.core.ProjectionFetches.Load()
	for _, p := range []string{
		"/internal/v1/projections/" + userID + "?tenant_id=" + tenantID,
		"/INTERNAL/v1/projections/" + userID,
		"/%69nternal/v1/projections/" + userID,
		"/api/../internal/v1/projections/" + userID,
		"//internal/v1/projections/" + userID,
		"/internal",
	} {
		for _, withToken := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s token=%v", p, withToken), func(t *testing.T) {
				e := e.with(t)
				e.reset()
				tk := ""
				if withToken {
					tk = tok
				}
				r := e.do("GET", p, tk, nil)
				e.wantProblem(r, 404, problem.CodeNotFound)
				e.wantNothingForwarded()
				if n := e.core.ProjectionFetches.Load(); n != before {
					t.Fatalf("projection endpoint reached through the proxy (%d fetches, want %d)", n, before)
				}
			})
		}
	}
}

func TestRoutesOutsideAPIAre404(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	for _, p := range []string{"/", "/metrics", "/admin", "/apiv1/users", "/api", "/api/v1", "/api/v1/other", "/notes"} {
		t.Run(p, func(t *testing.T) {
			e := e.with(t)
			e.core.Reset()
			e.wantProblem(e.do("GET", p, e.token(nil), nil), 404, problem.CodeNotFound)
			e.wantNothingForwarded()
		})
	}
	t.Run("public jwks is forwarded", func(t *testing.T) {
		e := e.with(t)
		e.wantStatus(e.do("GET", "/.well-known/jwks.json", "", nil), 200)
	})
}

// Each token is verified once, however many requests carry it.
func TestTokenVerifiedOnce(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	before := e.verifications()
	var wg sync.WaitGroup
	errs := make(chan string, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", "http://"+e.addr+"/api/v1/users/me", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := e.client.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Sprint("status ", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for range 10 {
		e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	}
	if got := e.verifications() - before; got != 1 {
		t.Fatalf("verifications = %v for one token, want 1", got)
	}
	// A different token is verified once more.
	e.wantStatus(e.do("GET", "/api/v1/users/me", e.token(nil), nil), 200)
	if got := e.verifications() - before; got != 2 {
		t.Fatalf("verifications = %v for two tokens, want 2", got)
	}
}

// exp is re-checked on every cache hit.
func TestExpRecheckedOnHit(t *testing.T) {
	e := start(t, envOpt{})
	tok := e.token(func(c testenv.Claims) { c["exp"] = time.Now().Add(2 * time.Minute).Unix() })
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	n := e.verifications()
	e.clock.Advance(3 * time.Minute) // past exp + leeway, within the cache TTL cap
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
	if e.verifications() != n {
		t.Fatal("expired cached token was verified again instead of refused on the hit")
	}
}

// Keys removed upstream stop verifying, cached tokens included; an
// unknown kid causes one shared refetch, then a cooldown.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	old := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", old, nil), 200)

	// A new key appears upstream: tokens naming it trigger one refetch.
	k2 := testenv.NewKey(t, "20260201T000000Z-0000bbbb", jwa.ES256)
	e.core.Publish(e.key, k2)
	e.clock.Advance(2 * time.Minute) // past the cooldown since the start-up fetch
	fetches := e.core.JWKSFetches.Load()
	var wg sync.WaitGroup
	statuses := make(chan string, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := testenv.Sign(t, k2, testenv.DefaultClaims(time.Now().Add(2*time.Minute), userID, tenantID, sessionID), nil)
			req, _ := http.NewRequest("GET", "http://"+e.addr+"/api/v1/users/me", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := e.client.Do(req)
			if err != nil {
				statuses <- err.Error()
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				statuses <- fmt.Sprintf("status %d: %s", resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		t.Fatalf("token of the new key: %s, want 200", s)
	}
	if got := e.core.JWKSFetches.Load() - fetches; got != 1 {
		t.Fatalf("JWKS refetches = %d, want 1", got)
	}
	// Another unknown kid within the cooldown: refused without a fetch.
	k3 := testenv.NewKey(t, "20260301T000000Z-0000cccc", jwa.EdDSA)
	e.core.Publish(e.key, k2, k3)
	tok3 := testenv.Sign(t, k3, testenv.DefaultClaims(time.Now().Add(2*time.Minute), userID, tenantID, sessionID), nil)
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok3, nil), 401, problem.CodeInvalidToken)
	if got := e.core.JWKSFetches.Load() - fetches; got != 1 {
		t.Fatalf("JWKS fetches during cooldown = %d, want 1", got)
	}

	// The old key is removed upstream: its cached token stops working.
	e.core.Publish(k2)
	if err := e.app.Keys.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.wantProblem(e.do("GET", "/api/v1/users/me", old, nil), 401, problem.CodeInvalidToken)
}

func TestDecisions(t *testing.T) {
	t.Parallel()
	rulesFile := appUpstream + `
routes:
  - prefix: /notes
    upstream: notes
    access: protected
    permissions: [notes:read]
  - prefix: /notes/verified
    upstream: notes
    access: protected
    require_verified_email: true
`
	tests := []struct {
		name   string
		mod    func(p *identity.Projection)
		claims func(c testenv.Claims)
		path   string
		status int
		code   string
	}{
		{"allowed", nil, nil, "/api/v1/users/me", 200, ""},
		{"user disabled", func(p *identity.Projection) { p.UserStatus = "disabled" }, nil, "/api/v1/users/me", 401, problem.CodeInvalidToken},
		{"membership suspended", func(p *identity.Projection) { p.MembershipStatus = "suspended" }, nil, "/api/v1/users/me", 401, problem.CodeInvalidToken},
		{"tenant suspended", func(p *identity.Projection) { p.TenantStatus = "suspended" }, nil, "/api/v1/users/me", 401, problem.CodeInvalidToken},
		{"token version bumped", func(p *identity.Projection) { p.TokenVersion = 1 }, nil, "/api/v1/users/me", 401, problem.CodeInvalidToken},
		{"newer token version", func(p *identity.Projection) { p.TokenVersion = 1 }, func(c testenv.Claims) { c["tv"] = 1 }, "/api/v1/users/me", 200, ""},
		{"session revoked", func(p *identity.Projection) { p.RevokedSessions = []string{sessionID} }, nil, "/api/v1/users/me", 401, problem.CodeInvalidToken},
		{"missing permission", nil, nil, "/notes", 403, problem.CodeInsufficientScope},
		{"granted permission", func(p *identity.Projection) { p.Permissions = []string{"notes:read"} }, nil, "/notes", 200, ""},
		{"email not verified", nil, nil, "/notes/verified", 403, problem.CodeEmailUnverified},
		{"email verified", func(p *identity.Projection) { p.EmailVerified = true }, nil, "/notes/verified", 200, ""},
		{"no membership", func(p *identity.Projection) { p.UserID = "gone" }, nil, "/api/v1/users/me", 401, problem.CodeInvalidToken},
	}
	e := start(t, envOpt{rules: rulesFile})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			p := defaultProjection()
			if tt.mod != nil {
				tt.mod(&p)
			}
			e.core.DeleteProjection(userID, tenantID)
			e.core.SetProjection(p)
			e.publishAndWait("auth.invalidate.all")
			r := e.do("GET", tt.path, e.token(tt.claims), nil)
			if tt.status == 200 {
				e.wantStatus(r, 200)
				up, key := e.core, "core"
				if strings.HasPrefix(tt.path, "/notes") {
					up, key = e.up, testenv.AppKey.ID
				}
				got := e.wantSignedAt(up, key)
				if got.Identity.EmailVerified != p.EmailVerified {
					t.Fatalf("X-Auth-Email-Verified = %v, want %v", got.Identity.EmailVerified, p.EmailVerified)
				}
				return
			}
			e.wantProblem(r, tt.status, tt.code)
			e.wantNothingForwarded()
		})
	}
	// Each decision is counted by outcome.
	_, body := get(t, "http://"+e.admin+"/metrics")
	for out, n := range map[string]float64{"allow": 4, "inactive": 3, "token_version": 1, "session_revoked": 1,
		"insufficient_scope": 1, "email_unverified": 1, "mfa_enrollment_required": 0} {
		if v := metricValue(body, `authproxy_decisions_total{outcome="`+out+`"}`); v != n {
			t.Errorf("authproxy_decisions_total{outcome=%q} = %v, want %v", out, v, n)
		}
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	e.core.Shutdown()
	r := e.do("GET", "/api/v1/users/me", tok, nil)
	e.wantProblem(r, 503, problem.CodeUpstreamDown)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	r = e.do("POST", "/api/v1/auth/token", "", nil)
	e.wantProblem(r, 503, problem.CodeUpstreamDown)
	// The OAuth endpoints' errors carry the RFC 6749 fields, the proxy's
	// own too: a library can tell a retry from a request to fix.
	for _, path := range []string{"/api/v1/auth/token", "/api/v1/auth/introspect", "/api/v1/auth/revoke/"} {
		r = e.do("POST", path, "", nil)
		e.wantStatus(r, 503)
		if r.prob.OAuthError != "temporarily_unavailable" || r.prob.OAuthErrorDescription == "" {
			t.Errorf("%s: error %q, error_description %q", path, r.prob.OAuthError, r.prob.OAuthErrorDescription)
		}
	}
	if r = e.do("GET", "/api/v1/users/me", tok, nil); r.prob.OAuthError != "" {
		t.Errorf("another route's problem carries error %q", r.prob.OAuthError)
	}
}

// A core that stops while the proxy holds idle keep-alive connections to it
// is answered 503 with Retry-After from the first request on: a request
// that meets a stale pooled connection is not answered 502. (The core's
// shutdown closes its idle connections, as the kernel does for a killed
// process.)
func TestUpstreamStoppedWithPooledConns(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200) // projection cached
	hc := e.app.Server.Router().Clients[0]
	if hc.Addr != e.core.Addr {
		t.Fatalf("client 0 is for %s, want the core %s", hc.Addr, e.core.Addr)
	}
	// Requests held at the core at once open one connection each, left
	// idle in the pool when they are answered.
	const n = 8
	gate := make(chan struct{})
	e.core.SlowGate.Store(&gate)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := e.do("GET", "/api/v1/users/slow", tok, nil); r.status != 200 {
				t.Errorf("slow request: status %d", r.status)
			}
		}()
	}
	testenv.Eventually(t, func() error { return testenv.WantAtLeast("pooled connections", hc.ConnsCount(), n) })
	close(gate)
	wg.Wait()
	e.core.Shutdown()
	for i, m := range []string{"GET", "POST", "GET", "GET"} {
		r := e.do(m, "/api/v1/users/me", tok, nil)
		if m == "POST" { // a public route, forwarded the same way
			r = e.do(m, "/api/v1/auth/token", "", nil)
		}
		e.wantProblem(r, 503, problem.CodeUpstreamDown)
		if r.header.Get("Retry-After") == "" {
			t.Fatalf("request %d (%s): 503 without Retry-After", i, m)
		}
	}
}

// An app that read a request and closed its connection without answering
// (a handler that panicked, a process stopped mid-request) had already
// accepted its signature when the proxy sent the request again: the SDK's
// replay filter refused the retry, and the client got 401 for a request
// the proxy was entitled to retry. The retry is signed anew, with a later
// timestamp, the same identity, client and forwarding headers, and is
// counted.
func TestRetrySignedAnew(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, access, token string
		trusted             bool
	}{
		{"protected", "protected", "token", false},
		{"public", "public", "", false},
		{"trusted peer", "protected", "token", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := verify.New(verify.Config{Keys: []identity.Key{testenv.AppKey}})
			if err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int64
			var mu sync.Mutex
			var seen []http.Header
			app := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen = append(seen, r.Header.Clone())
				mu.Unlock()
				if calls.Add(1) == 1 { // read and accepted, never answered
					c, _, err := http.NewResponseController(w).Hijack()
					if err != nil {
						t.Error(err)
						return
					}
					c.Close()
					return
				}
				id, _ := verify.FromContext(r.Context())
				_, _ = io.WriteString(w, id.Principal)
			})))
			t.Cleanup(app.Close)
			vars := map[string]string{}
			if tc.trusted {
				vars["TRUSTED_PROXY_CIDRS"] = "127.0.0.0/8"
			}
			e := start(t, envOpt{vars: vars, rules: "upstreams:\n  notes: {url: '" + app.URL + "', key_id: app-notes, rewrite_host: true}\nroutes:\n" +
				"  - {prefix: /, upstream: notes, access: " + tc.access + "}\n"})
			auth := ""
			if tc.token != "" {
				auth = "Authorization: Bearer " + e.token(nil) + "\r\n"
			}
			before := testutil.ToFloat64(e.app.Metrics.UpstreamRetries)
			r := e.raw("GET /notes?x=1 HTTP/1.1\r\nHost: client.example\r\n" + auth + "X-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n")
			if r.status != 200 {
				t.Fatalf("retried GET answered %d %s, want 200", r.status, r.body)
			}
			if n := calls.Load(); n != 2 {
				t.Fatalf("the app saw %d requests, want 2", n)
			}
			if n := testutil.ToFloat64(e.app.Metrics.UpstreamRetries) - before; n != 1 {
				t.Errorf("authproxy_upstream_retries_total rose by %v, want 1", n)
			}
			first, second := seen[0], seen[1]
			if first.Get(identity.HeaderSignature) == second.Get(identity.HeaderSignature) {
				t.Errorf("the retry carried the first attempt's signature")
			}
			if first.Get(identity.HeaderTimestamp) >= second.Get(identity.HeaderTimestamp) {
				t.Errorf("timestamps %s then %s: the retry's is not later", first.Get(identity.HeaderTimestamp), second.Get(identity.HeaderTimestamp))
			}
			for name := range first {
				if name == identity.HeaderSignature || name == identity.HeaderTimestamp {
					continue
				}
				if a, b := strings.Join(first[name], "|"), strings.Join(second[name], "|"); a != b {
					t.Errorf("%s: %q then %q on the retry", name, a, b)
				}
			}
			if len(first) != len(second) {
				t.Errorf("%d headers, then %d on the retry", len(first), len(second))
			}
			if h := second.Get("X-Forwarded-Host"); h != "client.example" {
				t.Errorf("the retry's X-Forwarded-Host is %q, want the client's", h)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	req, _ := http.NewRequest("POST", "http://"+e.addr+"/api/v1/auth/token", strings.NewReader(strings.Repeat("a", 70000)))
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("status = %d, want 413", resp.StatusCode)
	}
	e.wantNothingForwarded()
	e.wantStatus(e.do("POST", "/api/v1/auth/token", "", nil), 200)
}

func TestForwardedHeadersTrust(t *testing.T) {
	t.Parallel()
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprint("trusted=", trusted), func(t *testing.T) {
			vars := map[string]string{"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"}
			if trusted {
				vars["TRUSTED_PROXY_CIDRS"] = "127.0.0.0/8"
			}
			e := start(t, envOpt{vars: vars})
			tok := e.token(nil)
			for range 2 { // the token's first request, then a warm one
				e.wantStatus(e.do("GET", "/api/v1/users/me", tok, map[string]string{
					"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X_Forwarded_Host": "evil", "Forwarded": "for=1.2.3.4",
				}), 200)
				// The identity headers verify, from a trusted peer too
				// (its forwarding headers are set one by one, the
				// identity headers written as one block).
				wantIP := "127.0.0.1"
				if trusted {
					wantIP = "203.0.113.7"
				}
				if r := e.wantSigned(); strings.Join(r.Headers["X-Auth-Client-Ip"], ",") != wantIP {
					t.Fatalf("signed client IP %q, want %q", r.Headers["X-Auth-Client-Ip"], wantIP)
				}
			}
			got := e.core.Last(t).Headers
			wantXFF, wantProto := "127.0.0.1", "http"
			if trusted {
				wantXFF, wantProto = "203.0.113.7, 127.0.0.1", "https"
			}
			if g := strings.Join(got["X-Forwarded-For"], ","); g != wantXFF {
				t.Fatalf("X-Forwarded-For = %q, want %q", g, wantXFF)
			}
			if g := strings.Join(got["X-Forwarded-Proto"], ","); g != wantProto {
				t.Fatalf("X-Forwarded-Proto = %q, want %q", g, wantProto)
			}
			_, fwd := got["Forwarded"]
			if fwd != trusted {
				t.Fatalf("Forwarded present = %v, want %v", fwd, trusted)
			}
		})
	}
}

// TestRequestID: a trusted peer's well-formed X-Request-Id is the
// request's id; a malformed one is replaced (an untrusted peer's always is:
// TestRequestIDFromUntrustedPeerReplaced).
func TestRequestID(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}})
	r := e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"X-Request-Id": "abc-123"})
	if r.header.Get("X-Request-Id") != "abc-123" || e.core.Last(t).Headers["X-Request-Id"][0] != "abc-123" {
		t.Fatalf("request id not propagated: %q", r.header.Get("X-Request-Id"))
	}
	r = e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"X-Request-Id": "bad id\"<>"})
	if id := r.header.Get("X-Request-Id"); id == "" || strings.ContainsAny(id, " \"<>") {
		t.Fatalf("bad request id kept: %q", id)
	}
}

// Ids the proxy makes are distinct, whichever CPU each request runs on
// (they come from a per-CPU sequence), and carry the process's prefix.
func TestRequestIDsDistinct(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	const workers, each = 8, 25
	ids := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				r := e.do("GET", "/api/v1/users/me", tok, nil)
				if r.status != 200 {
					t.Errorf("status %d", r.status)
					return
				}
				ids[w] = append(ids[w], r.header.Get("X-Request-Id"))
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	prefix := ""
	for _, list := range ids {
		for _, id := range list {
			if seen[id] {
				t.Fatalf("request id %q given twice", id)
			}
			seen[id] = true
			p, _, ok := strings.Cut(id, "-")
			if !ok || prefix != "" && p != prefix {
				t.Fatalf("request id %q: want the prefix %q", id, prefix)
			}
			prefix = p
		}
	}
	if len(seen) != workers*each {
		t.Fatalf("%d ids, want %d", len(seen), workers*each)
	}
}

// The upstream receives exactly one X-Request-Id, the one the signature
// covers and the response carries, whatever the client sent: a valid id,
// one the proxy replaces, or several; for a warm token (whose headers are
// written as one block) and a first one alike, and from a trusted peer
// (whose headers are set one by one). A valid id is kept from a trusted
// peer only.
func TestRequestIDForwardedOnce(t *testing.T) {
	t.Parallel()
	for name, vars := range map[string]map[string]string{"untrusted": nil, "trusted": {"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}} {
		t.Run(name, func(t *testing.T) { requestIDForwardedOnce(t, start(t, envOpt{vars: vars}), vars != nil) })
	}
}

func requestIDForwardedOnce(t *testing.T, e *env, trusted bool) {
	tok := e.token(nil)
	for _, sent := range []string{"", "abc-123", "bad id\"<>"} {
		for _, twice := range []bool{false, true} {
			for range 2 { // the token's first request, then a warm one
				raw := "GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n"
				if sent != "" {
					raw += "X-Request-Id: " + sent + "\r\n"
					if twice {
						raw += "X-Request-Id: other-1\r\n"
					}
				}
				r := e.raw(raw + "Connection: close\r\n\r\n")
				e.wantStatus(r, 200)
				got := e.wantSigned()
				ids := got.Headers["X-Request-Id"]
				if len(ids) != 1 || ids[0] != r.header.Get("X-Request-Id") {
					t.Fatalf("sent %q (twice %v): upstream got X-Request-Id %q, response %q", sent, twice, ids, r.header.Get("X-Request-Id"))
				}
				if sent == "abc-123" && trusted && ids[0] != sent {
					t.Fatalf("a trusted peer's valid id was replaced by %q", ids[0])
				}
				if sent != "" && !trusted && (ids[0] == sent || ids[0] == "other-1") {
					t.Fatalf("an untrusted client's id %q was kept", ids[0])
				}
			}
		}
	}
}

// The response is streamed: the client gets the first chunk while
// the upstream is still blocked before writing the rest.
func TestResponseStreamed(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	gate := make(chan struct{})
	e.core.StreamGate.Store(&gate)
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/api/v1/users/stream", nil)
	req.Header.Set("Authorization", "Bearer "+e.token(nil))
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, testenv.StreamChunk)
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, first); got <- err }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(gate)
		t.Fatal("first chunk not delivered while upstream waits: response is buffered")
	}
	close(gate)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(rest) != testenv.StreamChunk {
		t.Fatalf("rest = %d bytes, %v; want %d", len(rest), err, testenv.StreamChunk)
	}
}

// A projection coreapi should never send (another user's, or list values
// that would make the signed headers ambiguous) is refused with 502.
func TestBadProjectionRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tests := []struct {
		name string
		mod  func(p *identity.Projection)
	}{
		{"comma in a role", func(p *identity.Projection) { p.Roles = []string{"a,owner"} }},
		{"newline in a permission", func(p *identity.Projection) { p.Permissions = []string{"users:read\nx"} }},
		{"empty role", func(p *identity.Projection) { p.Roles = []string{""} }},
		{"other tenant", func(p *identity.Projection) { p.TenantID = "other" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.with(t)
			e.core.Reset()
			p := defaultProjection()
			tt.mod(&p)
			// Served under the requested key whatever the body says.
			e.core.SetProjectionAt(userID, tenantID, p)
			e.publishAndWait("auth.invalidate.all")
			e.wantProblem(e.do("GET", "/api/v1/users/me", e.token(nil), nil), 502, problem.CodeUpstreamDown)
			e.wantNothingForwarded()
		})
	}
}

// TestProjectionNotFoundElsewhere: IDENTITY_URL naming another service, or
// a coreapi without the projection route, answers every projection fetch
// 404 with no code of coreapi's for a missing membership. It was taken for
// no membership: every user refused and remembered so for
// NEGATIVE_CACHE_TTL, nothing logged. It is the identity service answering
// badly (502, logged, counted), and the user gets through as soon as
// coreapi answers.
func TestProjectionNotFoundElsewhere(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	e.core.ProjectionAnswer.Store(&testenv.Answer{Status: 404, ContentType: "application/problem+json",
		Body: `{"status":404,"code":"not_found","detail":"no such route"}`})
	for range 2 {
		e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 502, problem.CodeUpstreamDown)
		e.wantNothingForwarded()
	}
	if n := testutil.ToFloat64(e.app.Metrics.UpstreamErrors.WithLabelValues("projection", "status_other")); n != 2 {
		t.Errorf("upstream_errors{projection,status_other} = %v, want 2", n)
	}
	testenv.Eventually(t, func() error {
		return testenv.Contains("log", e.logs.String(), `"msg":"projection fetch"`, `answered status 404 (\"not_found\")`)
	})
	e.core.ProjectionAnswer.Store(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	e.wantSigned()
}

// A slow upstream is cut off by UPSTREAM_TIMEOUT (504), and waiting
// for a free upstream connection is bounded by UPSTREAM_MAX_CONN_WAIT (503).
func TestUpstreamBoundedWaits(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{
		"UPSTREAM_TIMEOUT": "1s", "UPSTREAM_MAX_CONNS": "1", "UPSTREAM_MAX_CONN_WAIT": "200ms",
	}})
	tok := e.token(nil)
	gate := make(chan struct{})
	e.core.SlowGate.Store(&gate)
	defer close(gate)
	t.Run("timeout", func(t *testing.T) {
		e := e.with(t)
		e.wantProblem(e.do("GET", "/api/v1/users/slow", tok, nil), 504, problem.CodeUpstreamDown)
	})
	t.Run("no free connection", func(t *testing.T) {
		e := e.with(t)
		// A slow request holds the only connection until UPSTREAM_TIMEOUT;
		// one is kept in flight (another started once the last has
		// ended), so a loaded machine that runs the check late still
		// finds the connection busy. A second request must not wait
		// beyond UPSTREAM_MAX_CONN_WAIT.
		slow := make(chan result, 1)
		hold := func() { go func() { slow <- e.do("GET", "/api/v1/users/slow", tok, nil) }() }
		hold()
		var r result
		testenv.Eventually(t, func() error {
			select {
			case <-slow:
				hold()
			default:
			}
			r = e.do("GET", "/api/v1/users/me", tok, nil)
			return testenv.Want("GET /api/v1/users/me status (a 503 for want of a connection)", r.status, 503)
		})
		e.wantProblem(r, 503, problem.CodeUpstreamDown)
		if r.header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
		<-slow
	})
}

// Request id and timing are outermost: a request refused by a
// later middleware (normalization) still gets a request id and is timed.
func TestObserveIsOutermost(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	// The series appears with the first 400.
	before := max(metricCount(t, e, `authproxy_request_duration_seconds_count{code="400"}`), 0)
	r := e.raw("GET /api/%2fx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	e.wantProblem(r, 400, problem.CodeBadPath)
	if r.prob.RequestID == "" || r.prob.RequestID != r.header.Get("X-Request-Id") {
		t.Fatalf("request_id = %q, want the answer's X-Request-Id %q", r.prob.RequestID, r.header.Get("X-Request-Id"))
	}
	if got := metricCount(t, e, `authproxy_request_duration_seconds_count{code="400"}`); got != before+1 {
		t.Fatalf("400 requests timed = %v, want %v", got, before+1)
	}
}

func metricCount(t *testing.T, e *env, name string) float64 {
	t.Helper()
	_, body := get(t, "http://"+e.admin+"/metrics")
	return metricValue(body, name)
}

// The background refresh alone drops keys removed upstream.
func TestBackgroundRefreshDropsKeys(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"JWKS_REFRESH_INTERVAL": "1s"}})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
	e.core.Publish(testenv.NewKey(t, "20260401T000000Z-0000dddd", jwa.EdDSA))
	testenv.Eventually(t, func() error {
		return testenv.Want("status of a token of a removed key", e.do("GET", "/api/v1/users/me", tok, nil).status, 401)
	})
}

// An HTTP/1.0 request without Host is refused with 400, nothing
// forwarded, as fasthttp refuses an HTTP/1.1 one: forwarded, it went with
// the upstream's own address as its Host and X-Forwarded-Host, the host
// an app takes the client to have asked for. With a Host it goes on.
func TestHTTP10WithoutHost(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	tok := e.token(nil)
	r := e.raw("GET /api/v1/users/me HTTP/1.0\r\nAuthorization: Bearer " + tok + "\r\n\r\n")
	e.wantProblem(r, 400, problem.CodeBadRequest)
	if !strings.Contains(r.prob.Detail, "missing Host field") {
		t.Fatalf("detail %q does not name the missing Host", r.prob.Detail)
	}
	e.wantNothingForwarded()
	e.wantStatus(e.raw("GET /api/v1/users/me HTTP/1.0\r\nHost: api.example\r\nAuthorization: Bearer "+tok+"\r\n\r\n"), 200)
	if h := e.wantSigned().Headers["X-Forwarded-Host"]; len(h) != 1 || h[0] != "api.example" {
		t.Fatalf("X-Forwarded-Host = %q, want the client's Host", h)
	}
}

func TestMethods(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	for _, m := range []string{"HEAD", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		t.Run(m, func(t *testing.T) {
			e := e.with(t)
			e.core.Reset()
			e.wantStatus(e.do(m, "/api/v1/users/me", e.token(nil), nil), 200)
			if got := e.wantSigned(); got.Method != m {
				t.Fatalf("upstream method = %s, want %s", got.Method, m)
			}
		})
	}
}

// An app's public route forwards a client's Authorization as it came (a
// third party's bearer, Basic credentials), but never one of coreapi's
// access tokens, however the field is spelled: the app gets identities
// through optional routes, signed with its own key, while a token is good
// at coreapi and every other app. coreapi's own public routes keep it.
func TestPublicAppRouteDropsOurTokens(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	expired := e.token(func(c testenv.Claims) {
		past := time.Now().Add(-time.Hour)
		c["iat"], c["nbf"], c["exp"] = past.Add(-time.Minute).Unix(), past.Add(-time.Minute).Unix(), past.Unix()
	})
	other := foreignToken(t)
	send := func(fields string) testenv.Received {
		t.Helper()
		e.reset()
		e.wantStatus(e.raw("GET /notes/public/1 HTTP/1.1\r\nHost: x\r\n"+fields+"Connection: close\r\n\r\n"), 200)
		return e.wantAnonymousAt(e.up, testenv.AppKey.ID)
	}
	for _, fields := range []string{
		"Authorization: Bearer " + tok + "\r\n",
		"Authorization: Bearer " + expired + "\r\n",
		"Authorization: bearer\t" + tok + "\r\n",
		"Authorization: Bearer  " + tok + "\r\n",
		"Authorization: " + tok + "\r\n",
		"Authorization: Bearer " + other + "\r\nAuthorization: Bearer " + tok + "\r\n",
	} {
		if a := send(fields).Headers["Authorization"]; a != nil {
			t.Errorf("%.60q: the app got Authorization %.40q", fields, a)
		}
	}
	for _, v := range []string{"Bearer " + other, "Basic Y2xpZW50OnNlY3JldA==", "Bearer opaque-third-party-token"} {
		if a := send("Authorization: " + v + "\r\n").Headers["Authorization"]; len(a) != 1 || a[0] != v {
			t.Errorf("%.40q: the app got Authorization %.40q, want it as it came", v, a)
		}
	}
	// coreapi's public routes: left alone (coreapi issued the token).
	e.reset()
	e.wantStatus(e.raw("POST /api/v1/auth/signup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+expired+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), 200)
	if a := e.core.Last(t).Headers["Authorization"]; len(a) != 1 || a[0] != "Bearer "+expired {
		t.Fatalf("core public route Authorization = %.40q", a)
	}
}

// foreignToken is a third party's access token: another issuer, signed
// with a key the proxy does not know.
func foreignToken(t *testing.T) string {
	c := testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID)
	c["iss"] = "https://idp.example.com"
	return testenv.Sign(t, testenv.NewKey(t, "another-issuer", jwa.EdDSA), c, nil)
}

// A token of ours is ours whatever its key: one whose key was rotated out
// of the key set (a leaked key, say), or whose key the proxy has not
// fetched yet, names coreapi as its issuer. An app's public route drops it
// as it drops any of ours, and so does an optional route reached without
// a bearer; as a bearer on an optional route it is refused like any bad
// token of ours. Telling it apart fetches nothing. A third party's token
// (another issuer) still reaches the app as it came.
func TestAppRoutesDropOurTokensWhateverTheKey(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection())
	retired := e.token(nil)
	e.wantStatus(e.do("GET", "/notes", retired, nil), 200)
	next := testenv.NewKey(t, "20260201T000000Z-0000bbbb", jwa.EdDSA)
	e.core.Publish(next)
	if err := e.app.Keys.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.wantProblem(e.do("GET", "/notes", retired, nil), 401, problem.CodeInvalidToken)
	unfetched := testenv.Sign(t, testenv.NewKey(t, "20260301T000000Z-0000cccc", jwa.EdDSA),
		testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID), nil)
	other := foreignToken(t)
	get := func(path, fields string, status int) testenv.Received {
		t.Helper()
		e.reset()
		e.wantStatus(e.raw("GET "+path+" HTTP/1.1\r\nHost: x\r\n"+fields+"Connection: close\r\n\r\n"), status)
		if status != 200 {
			return testenv.Received{}
		}
		return e.wantAnonymousAt(e.up, testenv.AppKey.ID)
	}
	for _, tc := range []struct{ name, tok string }{{"retired key", retired}, {"key not fetched yet", unfetched}} {
		fetches := e.core.JWKSFetches.Load()
		for _, fields := range []string{
			"Authorization: Bearer " + tc.tok + "\r\n",
			"Authorization: bearer\t" + tc.tok + "\r\n",
			"Authorization: " + tc.tok + "\r\n",
			"Authorization: Bearer " + other + "\r\nAuthorization: Bearer " + tc.tok + "\r\n",
		} {
			if a := get("/notes/public/1", fields, 200).Headers["Authorization"]; a != nil {
				t.Errorf("%s, public route, %.60q: the app got Authorization %.40q", tc.name, fields, a)
			}
		}
		for _, fields := range []string{"Authorization: JWT " + tc.tok + "\r\n", "Authorization: " + tc.tok + "\r\n"} {
			if a := get("/notes/maybe", fields, 200).Headers["Authorization"]; a != nil {
				t.Errorf("%s, optional route, %.60q: the app got Authorization %.40q", tc.name, fields, a)
			}
		}
		// Dropping a token of ours fetches nothing, whenever it comes.
		if got := e.core.JWKSFetches.Load() - fetches; got != 0 {
			t.Fatalf("%s: JWKS fetches = %d while dropping it, want none", tc.name, got)
		}
		// As a bearer it is verified, which may refetch the key set for
		// an unknown kid once the refresh's cooldown is over.
		e.reset()
		e.wantProblem(e.do("GET", "/notes/maybe", tc.tok, nil), 401, problem.CodeInvalidToken)
		if n := len(e.up.Received()); n != 0 {
			t.Errorf("%s: a bearer refused on the optional route reached the app (%d requests)", tc.name, n)
		}
	}
	for _, v := range []string{"Bearer " + other, "token " + other} {
		for _, path := range []string{"/notes/public/1", "/notes/maybe"} {
			if path == "/notes/maybe" && strings.HasPrefix(v, "Bearer ") {
				continue // a bearer on an optional route is verified (and refused)
			}
			if a := get(path, "Authorization: "+v+"\r\n", 200).Headers["Authorization"]; len(a) != 1 || a[0] != v {
				t.Errorf("%s %.40q: the app got Authorization %.40q, want it as it came", path, v, a)
			}
		}
	}
}

// An optional route forwards a request without a bearer anonymously, and
// a client's Authorization field that is not a bearer (a third party's
// Basic credentials) as it came; but, as on a public route, never one that
// carries an API key or one of coreapi's access tokens under another
// scheme or none ("token tg_...", as some APIs ask for theirs): the app
// behind the route would get the user's credentials.
func TestOptionalAppRouteDropsOurCredentials(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	key, _ := e.newAPIKey("notes:read")
	send := func(fields string) testenv.Received {
		t.Helper()
		e.reset()
		e.wantStatus(e.raw("GET /notes/maybe HTTP/1.1\r\nHost: x\r\n"+fields+"Connection: close\r\n\r\n"), 200)
		return e.wantAnonymousAt(e.up, testenv.AppKey.ID)
	}
	for _, fields := range []string{
		"Authorization: token " + key + "\r\n",
		"Authorization: " + key + "\r\n",
		"Authorization: JWT " + tok + "\r\n",
		"Authorization: " + tok + "\r\n",
	} {
		if a := send(fields).Headers["Authorization"]; a != nil {
			t.Errorf("%.60q: the app got Authorization %.40q", fields, a)
		}
	}
	for _, v := range []string{"Basic Y2xpZW50OnNlY3JldA==", "token opaque-third-party-token"} {
		if a := send("Authorization: " + v + "\r\n").Headers["Authorization"]; len(a) != 1 || a[0] != v {
			t.Errorf("%.40q: the app got Authorization %.40q, want it as it came", v, a)
		}
	}
}

// An API key or one of coreapi's access tokens anywhere in an
// Authorization field is found, not only as its value or after its first
// space: after another scheme's credentials ("Basic ..., Bearer <key>"),
// quoted, as a parameter's value ("Bearer token=<jwt>"). Public and
// optional routes drop the field, as for any other spelling; those used to
// reach the app as they came, the caller anonymous. Another scheme's
// parameters that start with "tg_" without being a key (Digest's
// username="tg_admin") are not ours, and reach the app.
func TestOurCredentialAnywhereInAuthorizationDropped(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	key, _ := e.newAPIKey("notes:read")
	for _, cred := range []string{key, tok} {
		for _, v := range []string{
			"Basic Zm9vOmJhcg==, Bearer " + cred,
			"Basic Zm9vOmJhcg==,Bearer " + cred,
			`Bearer "` + cred + `"`,
			"Bearer token=" + cred,
			`Bearer realm="x", token="` + cred + `"`,
			"Bearer opaque-third-party-token, Bearer " + cred,
		} {
			for _, path := range []string{"/notes/public/1", "/notes/maybe"} {
				e.reset()
				r := e.raw("GET " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + v + "\r\nConnection: close\r\n\r\n")
				if r.status != 200 && path == "/notes/maybe" {
					continue // a malformed bearer refused: nothing reached the app
				}
				e.wantStatus(r, 200)
				if a := e.wantAnonymousAt(e.up, testenv.AppKey.ID).Headers["Authorization"]; a != nil {
					t.Errorf("%s, %.50q: the app got Authorization %.60q", path, v, a)
				}
			}
		}
	}
	// Another scheme's parameters that merely start with "tg_" are not a
	// key: the field reaches the app as it came.
	for _, v := range []string{
		`Digest username="tg_admin", realm="notes", nonce="n0", uri="/notes/public/1", response="6629fae49393a05397450978507c4ef1"`,
		"Custom client=tg_mobile, sig=abc",
	} {
		for _, path := range []string{"/notes/public/1", "/notes/maybe"} {
			e.reset()
			e.wantStatus(e.raw("GET "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: "+v+"\r\nConnection: close\r\n\r\n"), 200)
			if a := e.wantAnonymousAt(e.up, testenv.AppKey.ID).Headers["Authorization"]; len(a) != 1 || a[0] != v {
				t.Errorf("%s, %.50q: the app got Authorization %.60q, want it as it came", path, v, a)
			}
		}
	}
}

// The bearer token is not forwarded on protected routes (the signed
// identity replaces it); on coreapi's public routes the request is left
// alone.
func TestAuthorizationNotForwarded(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	e.wantStatus(e.do("GET", "/api/v1/users/me", e.token(nil), nil), 200)
	if a, ok := e.wantSigned().Headers["Authorization"]; ok {
		t.Fatalf("Authorization forwarded on a protected route: %v", a)
	}
	e.wantStatus(e.raw("POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Y2xpZW50OnNlY3JldA==\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), 200)
	if a := e.core.Last(t).Headers["Authorization"]; len(a) != 1 || a[0] != "Basic Y2xpZW50OnNlY3JldA==" {
		t.Fatalf("public route Authorization = %v", a)
	}
}

// A token whose kid is unknown during the refetch cooldown is not
// remembered as bad: once the key is fetched it works at once.
func TestUnknownKidNotNegativelyCached(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	k2 := testenv.NewKey(t, "20260501T000000Z-0000eeee", jwa.EdDSA)
	tok := testenv.Sign(t, k2, testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID), nil)
	e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken) // within the cooldown
	e.core.Publish(e.key, k2)
	e.clock.Advance(2 * time.Minute)
	e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
}

// TestFailureLogsBounded: while an upstream is down (or answers some
// request badly), every request forwarded to it wrote a "forward"
// warning, so a client sending requests as fast as it could chose the
// proxy's log volume, anonymously on a public route, with LOG_LEVEL=warn
// and ACCESS_LOG off. Now such lines (forward, stream, projection fetch,
// api key fetch) are at most 100 a second, and the first of a later
// second logs how many went unlogged: the lines plus the counts account
// for every failure. No request follows the burst here: the count of
// its last second comes all the same, about a second after it (it
// waited for a later failure, which might never come).
func TestFailureLogsBounded(t *testing.T) {
	e := start(t, envOpt{vars: map[string]string{"ACCESS_LOG": "false", "LOG_LEVEL": "warn"}})
	e.core.Shutdown()
	const n = 1000
	begin := time.Now()
	for range n {
		e.wantProblem(e.do("POST", "/api/v1/auth/token", "", nil), 503, problem.CodeUpstreamDown)
	}
	seconds := int(time.Since(begin)/time.Second) + 2 // the seconds the burst can have touched
	wantLogsBounded(t, e.logs.String, n, seconds, "forward", "upstream failures not logged")
}

// TestFailureLogsCountedAtShutdown: the count of the lines a burst left
// out waited for a timer about a second after it, which a proxy stopping
// before then wrote after its last lines, into a log output flushed and
// closed, or never. Serve writes it before it returns, once, and nothing
// comes after.
func TestFailureLogsCountedAtShutdown(t *testing.T) {
	e := start(t, envOpt{vars: map[string]string{"ACCESS_LOG": "false", "LOG_LEVEL": "warn"}})
	e.core.Shutdown()
	const n = 300
	for range n {
		e.wantProblem(e.do("POST", "/api/v1/auth/token", "", nil), 503, problem.CodeUpstreamDown)
	}
	e.cancel()
	select {
	case err := <-e.done:
		e.done <- err // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
	lines, counted := logtest.CountLines(e.logs.String(), "upstream failures not logged", "forward")
	if lines+counted != n || counted == 0 {
		t.Fatalf("when Serve returned: %d \"forward\" lines + %d counted unlogged, want every one of the %d, some counted", lines, counted, n)
	}
	at := e.logs.String()
	time.Sleep(1500 * time.Millisecond) // past a timer's second
	if after := e.logs.String(); after != at {
		t.Fatalf("written after Serve returned:\n%s", strings.TrimPrefix(after, at))
	}
}

// TestFailureLogsCountedAtError: at LOG_LEVEL=error the proxy wrote the
// "projection fetch" errors it let through (coreapi answering badly) but
// not the count of those it left out, a warning: the log did not say how
// many errors it lacked. The count is written at error when some of the
// lines it counts are errors; the warnings below LOG_LEVEL take nothing
// from the budget: the "forward" warnings of an app upstream down, sent
// between them, neither hold back errors nor count as left out.
func TestFailureLogsCountedAtError(t *testing.T) {
	other := base64.StdEncoding.EncodeToString([]byte("not the key coreapi verifies with"))
	e := start(t, envOpt{logLevel: true, vars: map[string]string{"LOG_LEVEL": "error", "IDENTITY_HMAC_KEY": other},
		rules: appUpstream + "routes:\n  - {prefix: /open, upstream: notes, access: public}\n"})
	e.up.Shutdown()
	tok := e.token(nil)
	const n = 400
	begin := time.Now()
	for range n {
		e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 502, problem.CodeUpstreamDown)
		e.wantProblem(e.do("GET", "/open", "", nil), 503, problem.CodeUpstreamDown)
	}
	seconds := int(time.Since(begin)/time.Second) + 2 // the seconds the burst can have touched
	wantLogsBounded(t, e.logs.String, n, seconds, "projection fetch", "upstream failures not logged")
}

// TestRefusalLogsBounded: every refused token wrote a "token refused"
// line, so a client sending bad tokens chose the proxy's log volume (even
// with ACCESS_LOG off, a refused token already cached as bad included).
// Now at most 100 such lines a second are written, and the first refusal
// of a later second logs how many went unlogged: the lines plus the counts
// account for every refusal.
func TestRefusalLogsBounded(t *testing.T) {
	e := start(t, envOpt{vars: map[string]string{"ACCESS_LOG": "false"}})
	const n = 1000
	begin := time.Now()
	for range n {
		if r := e.do("GET", "/api/v1/users/me", "not.a.token", nil); r.status != 401 {
			t.Fatalf("status %d", r.status)
		}
	}
	seconds := int(time.Since(begin)/time.Second) + 2 // the seconds the burst can have touched
	e.clock.Advance(2 * time.Second)
	if r := e.do("GET", "/api/v1/users/me", "not.a.token", nil); r.status != 401 {
		t.Fatalf("status %d", r.status)
	}
	wantLogsBounded(t, e.logs.String, n+1, seconds, "token refused", "token refusals not logged")
}

// wantLogsBounded checks the log lines of a burst of events (n in all,
// sent over at most seconds): at most 100 lines named msg a second, and
// those lines plus the counts of the lines named unlogged account for
// every event, some of them unlogged. It waits up to 3 s for the lines:
// a count no later line took is written about a second after the burst.
func wantLogsBounded(t *testing.T, logs func() string, n, seconds int, msg, unlogged string) {
	t.Helper()
	var lines, counted int
	eventually.Within(t, 3*time.Second, func() error {
		lines, counted = logtest.CountLines(logs(), unlogged, msg)
		if lines+counted != n {
			return fmt.Errorf("%d %q lines + %d counted unlogged = %d, want every one of the %d", lines, msg, counted, lines+counted, n)
		}
		return nil
	})
	if lines > 100*(seconds+1) {
		t.Errorf("%d %q lines for a burst of at most %d s, want at most 100 a second", lines, msg, seconds)
	}
	if counted == 0 {
		t.Errorf("no %q line went unlogged: the budget did not apply", msg)
	}
}
