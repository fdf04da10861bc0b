package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/server"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

const keyID = "44444444-4444-4444-8444-444444444444"

// keyProjection is what the stand-in coreapi answers for the test key:
// the default user with the key's effective permissions, no roles.
func keyProjection(perms ...string) apikey.Projection {
	p := defaultProjection()
	p.Roles, p.Permissions = []string{}, perms
	return apikey.Projection{Projection: p, KeyID: keyID, Kind: "tenant"}
}

// newAPIKey registers a fresh key at the stand-in and returns it.
func (e *env) newAPIKey(perms ...string) (secret, pid string) {
	secret, pid = apikey.New()
	e.core.SetAPIKey(secret, keyProjection(perms...), false)
	return secret, pid
}

func (e *env) keyRefusals(reason string) float64 {
	return testutil.ToFloat64(e.app.Metrics.APIKeyRefusals.WithLabelValues(reason))
}

// wantKeyProblem checks a refusal of an API key: status, code, and that
// the detail says what it says.
func (e *env) wantKeyProblem(r result, status int, code, detail string) {
	e.t.Helper()
	e.wantStatus(r, status)
	if r.prob.Code != code || !strings.Contains(r.prob.Detail, detail) || r.prob.RequestID == "" {
		e.t.Fatalf("problem = %+v, want %s containing %q", r.prob, code, detail)
	}
}

// wantKeyIdentity checks the identity the upstream got for the test key,
// signed with signer: its session field names the key (keyID).
func (e *env) wantKeyIdentity(up *testenv.Core, signer string, perms ...string) testenv.Received {
	e.t.Helper()
	r := up.Last(e.t)
	if !r.Signed || r.VerifyErr != nil {
		e.t.Fatalf("upstream signature: signed=%v err=%v", r.Signed, r.VerifyErr)
	}
	id := r.Identity
	if id.KeyID != signer || id.Principal != identity.PrincipalAPIKey || id.UserID != userID || id.TenantID != tenantID ||
		id.SessionID != keyID || len(id.Roles) != 0 || !slices.Equal(id.Permissions, perms) || len(id.AMR) != 0 || id.AuthTime != 0 {
		e.t.Fatalf("identity = %+v, want the key's (user %s, permissions %v)", id, userID, perms)
	}
	for name := range r.Headers {
		if strings.EqualFold(name, "Authorization") || strings.EqualFold(strings.ReplaceAll(name, "_", "-"), "X-Api-Key") {
			e.t.Fatalf("upstream received %s", name)
		}
	}
	return r
}

// TestAPIKeyForwarded: a key in Authorization: Bearer or X-API-Key is
// resolved once, then served from the cache (digest compare, no fetch),
// forwarded as principal api_key with the key's permissions, and neither
// header reaches the upstream, on any route.
func TestAPIKeyForwarded(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected, permissions: [tenant:read]}\n  - {prefix: /open, upstream: notes, access: public}\n"})
	secret, _ := e.newAPIKey("tenant:read", "users:read")
	e.wantStatus(e.do("GET", "/notes/1", secret, nil), 200)
	e.wantKeyIdentity(e.up, "app-notes", "tenant:read", "users:read")
	if n := e.core.KeyFetches.Load(); n != 1 {
		t.Fatalf("%d key fetches after the first request, want 1", n)
	}
	for range 5 {
		e.wantStatus(e.do("GET", "/notes/1", "", map[string]string{"X-API-Key": secret}), 200)
		e.wantKeyIdentity(e.up, "app-notes", "tenant:read", "users:read")
		e.wantStatus(e.do("GET", "/api/v1/users/me", secret, nil), 200)
		e.wantKeyIdentity(e.core, "core", "tenant:read", "users:read")
	}
	if n := e.core.KeyFetches.Load(); n != 1 {
		t.Fatalf("%d key fetches after warm requests, want 1", n)
	}
	if e.verifications() != 0 {
		t.Fatal("an API key went through JWT verification")
	}
	// Public routes: the key is not needed, and not forwarded either.
	for _, hdr := range []map[string]string{{"X-API-Key": secret}, {"X_API_KEY": secret}, {"Authorization": "Bearer " + secret}} {
		e.wantStatus(e.do("GET", "/open", "", hdr), 200)
		e.wantAnonymousAt(e.up, "app-notes")
		for name, v := range e.up.Last(t).Headers {
			if strings.Contains(strings.Join(v, ","), secret[20:]) {
				t.Fatalf("public route forwarded the key in %s", name)
			}
		}
	}
	// Nor in an Authorization field the strict parser refuses: the public
	// route forwards it anonymously, without the field.
	for _, fields := range []string{
		"Authorization: Bearer\t" + secret,
		"Authorization: Bearer  " + secret,
		"Authorization: Bearer " + secret + "\r\nAuthorization: Bearer " + secret,
		"Authorization: Bearer x\r\nAuthorization: Bearer " + secret,
		"Authorization: " + secret,
		"Authorization: Token " + secret,
	} {
		e.wantStatus(e.raw("GET /open HTTP/1.1\r\nHost: x\r\n"+fields+"\r\nConnection: close\r\n\r\n"), 200)
		e.wantAnonymousAt(e.up, "app-notes")
		for name, v := range e.up.Last(t).Headers {
			if strings.Contains(strings.Join(v, ","), secret[20:]) {
				t.Fatalf("%q: public route forwarded the key in %s", fields, name)
			}
		}
	}
	// The underscore spelling is recognised (and removed) too.
	e.wantStatus(e.do("GET", "/notes/1", "", map[string]string{"X_Api_Key": secret}), 200)
	e.wantKeyIdentity(e.up, "app-notes", "tenant:read", "users:read")
}

// TestRefusedCredentialOnTheTokenEndpointIsAnonymous: the token endpoint
// forwards a request whose bearer the projection refuses (its user
// disabled) as anonymous, its grants carrying their own credentials; the
// access line names the anonymous principal it was forwarded as, not the
// token's, which the bearer had set before the projection refused it (an
// API key's likewise).
func TestRefusedCredentialOnTheTokenEndpointIsAnonymous(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"}})
	tok := e.token(nil)
	p := defaultProjection()
	p.UserStatus = "disabled"
	e.core.DeleteProjection(userID, tenantID)
	e.core.SetProjection(p)
	e.publishAndWait("auth.invalidate.all")
	e.wantStatus(e.do("POST", "/api/v1/auth/token", tok, nil), 200)
	e.wantAnonymousAt(e.core, testenv.CoreKey.ID)
	testenv.Eventually(t, func() error {
		var principals []any
		for _, line := range accessLines(t, e) {
			if line["path"] == "/api/v1/auth/token" {
				principals = append(principals, line["principal"])
			}
		}
		return testenv.Want("the token request's access line's principal", fmt.Sprint(principals), "[anonymous]")
	})
}

// TestAPIKeyRefused: every malformed or misplaced key is refused before
// anything is forwarded or fetched, with a clear problem.
func TestAPIKeyRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"},
		rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n  - {prefix: /open, upstream: notes, access: public}\n"})
	secret, _ := e.newAPIKey("tenant:read")
	jwt := e.token(nil)
	huge := "tg_" + strings.Repeat("a", 10<<10)
	cases := []struct {
		name         string
		path, bearer string
		hdr          map[string]string
		status       int
		code, detail string
		reason       string
	}{
		{"malformed in X-API-Key", "/notes", "", map[string]string{"X-API-Key": "tg_short"}, 401, problem.CodeInvalidToken, "malformed API key", "malformed"},
		{"malformed bearer", "/notes", "tg_abc_def", nil, 401, problem.CodeInvalidToken, "malformed API key", "malformed"},
		{"uppercase public id", "/notes", "tg_" + strings.ToUpper(secret[3:19]) + secret[19:], nil, 401, problem.CodeInvalidToken, "malformed API key", "malformed"},
		{"JWT in X-API-Key", "/notes", "", map[string]string{"X-API-Key": jwt}, 401, problem.CodeInvalidToken, "holds no API key", "not_a_key"},
		{"10 KB in X-API-Key", "/notes", "", map[string]string{"X-API-Key": huge}, 401, problem.CodeInvalidToken, "malformed API key", "malformed"},
		{"both headers", "/notes", jwt, map[string]string{"X-API-Key": secret}, 400, problem.CodeAmbiguousCredentials, "not both", "ambiguous"},
		{"both headers, key twice", "/notes", secret, map[string]string{"X-API-Key": secret}, 400, problem.CodeAmbiguousCredentials, "not both", "ambiguous"},
		{"both headers on a public route", "/open", secret, map[string]string{"X-API-Key": secret}, 400, problem.CodeAmbiguousCredentials, "not both", "ambiguous"},
		{"api_key in query", "/notes?api_key=" + secret, "", nil, 400, problem.CodeAPIKeyInQuery, "query string", "in_query"},
		{"access_token in query", "/notes?x=1&access_token=" + url.QueryEscape(secret), jwt, nil, 400, problem.CodeAPIKeyInQuery, "query string", "in_query"},
		{"percent-encoded in query", "/open?k=tg%5F" + secret[3:], "", nil, 400, problem.CodeAPIKeyInQuery, "query string", "in_query"},
		{"t percent-encoded in query", "/open?k=%74g_" + secret[3:], "", nil, 400, problem.CodeAPIKeyInQuery, "query string", "in_query"},
		{"g percent-encoded in query", "/open?k=t%67_" + secret[3:], "", nil, 400, problem.CodeAPIKeyInQuery, "query string", "in_query"},
		{"all encoded, as a name", "/open?%74%67%5f" + secret[3:] + "=1", "", nil, 400, problem.CodeAPIKeyInQuery, "query string", "in_query"},
		{"unknown key", "/notes", func() string { k, _ := apikey.New(); return k }(), nil, 401, problem.CodeInvalidToken, "not valid", "unknown"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			before := e.keyRefusals(c.reason)
			r := e.do("GET", c.path, c.bearer, c.hdr)
			e.wantKeyProblem(r, c.status, c.code, c.detail)
			if c.status == 401 && r.header.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
				t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
			}
			if got := e.keyRefusals(c.reason); got != before+1 {
				t.Errorf("authproxy_api_key_refusals_total{reason=%q} went %v -> %v", c.reason, before, got)
			}
			e.wantNothingForwarded()
		})
	}
	if n := e.core.KeyFetches.Load(); n != 1 {
		t.Errorf("%d key fetches, want 1 (the unknown key only)", n)
	}
	if e.verifications() != 0 {
		t.Error("a refused key reached JWT verification")
	}
	// A 10 KB bearer beyond MAX_TOKEN_BYTES is a refused token, read
	// without trouble.
	e.wantStatus(e.do("GET", "/notes", huge, nil), 401)
	// No key, however sent, appears in the log.
	if logs := e.logs.String(); strings.Contains(logs, secret[20:]) || strings.Contains(logs, huge[:200]) {
		t.Fatalf("the log holds a key:\n%s", logs)
	}
	if !strings.Contains(e.logs.String(), `"outcome":"api_key_in_query"`) {
		t.Error("the access log does not show the refused query key's outcome")
	}
}

// TestAccessTokenInQueryRefused: one of coreapi's access tokens in the
// query string (RFC 6750's access_token parameter or any other, as a name,
// percent-encoded, after a scheme, expired) is refused as an API key there
// is, 400 api_key_in_query before routing, on public, optional and
// protected routes, from the Expect: 100-continue hook too; nothing is
// forwarded. It used to reach the app in its request target. A third
// party's token, a one-time link's token and other queries go on.
func TestAccessTokenInQueryRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules, vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"}})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	expired := e.token(func(c testenv.Claims) {
		past := time.Now().Add(-time.Hour)
		c["iat"], c["nbf"], c["exp"] = past.Add(-time.Minute).Unix(), past.Add(-time.Minute).Unix(), past.Unix()
	})
	const detail = "access tokens are not accepted in the query string"
	for _, path := range []string{"/notes/public/1", "/notes/maybe", "/notes/x"} {
		for _, q := range []string{
			"access_token=" + tok,
			"x=1&access_token=" + tok + "&y=2",
			"access_token=" + expired,
			"access_token=%65%79%4a" + tok[3:],
			"access_token=" + url.QueryEscape("Bearer "+tok),
			"state=" + tok,
			tok,
		} {
			e.reset()
			e.wantKeyProblem(e.do("GET", path+"?"+q, tok, nil), 400, problem.CodeAPIKeyInQuery, detail)
			e.wantNothingForwarded()
		}
	}
	if !strings.Contains(e.logs.String(), `"outcome":"token_in_query"`) {
		t.Error("the access log does not show the refused query token's outcome")
	}
	if strings.Contains(e.logs.String(), tok[len(tok)-20:]) {
		t.Error("the log holds the token")
	}
	// Waiting for 100 Continue: refused from the headers, no 100 sent.
	conn, br := dialProxy(t, e.addr)
	expectHeaders(conn, "/notes/maybe?access_token="+tok, "", 10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), detail) {
		t.Fatalf("Expect: 100-continue: %d %s, want 400 without a 100 Continue", resp.StatusCode, b)
	}
	e.wantNothingForwarded()
	// Not ours, or no token: forwarded as it came.
	other := foreignToken(t)
	for _, q := range []string{"access_token=" + other, "token=" + strings.Repeat("eyJhbGci", 6), "limit=10&q=%65yJ"} {
		e.reset()
		e.wantStatus(e.do("GET", "/notes/public/1?"+q, "", nil), 200)
		if got := e.up.Last(t).URI; got != "/notes/public/1?"+q {
			t.Errorf("the app got %.80q, want the query as it came", got)
		}
	}
}

// TestAPIKeyBesideASecondAuthorizationField: X-API-Key is refused beside an
// Authorization field with a value wherever it stands, also after an empty
// one: the key was taken, and the bearer of the second field (another
// user's token) dropped unseen, as if the request held one credential.
func TestAPIKeyBesideASecondAuthorizationField(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n  - {prefix: /opt, upstream: notes, access: optional}\n"})
	secret, _ := e.newAPIKey("tenant:read")
	jwt := e.token(nil)
	for _, path := range []string{"/notes", "/opt"} {
		for _, fields := range []string{
			"Authorization: \r\nAuthorization: Bearer " + jwt,
			"Authorization: \r\nAuthorization: Basic dTpw",
		} {
			e.reset()
			r := e.raw("GET " + path + " HTTP/1.1\r\nHost: x\r\nX-API-Key: " + secret + "\r\n" + fields + "\r\nConnection: close\r\n\r\n")
			e.wantKeyProblem(r, 400, problem.CodeAmbiguousCredentials, "not both")
			e.wantNothingForwarded()
		}
	}
	// An empty Authorization field alone carries no credential: the key
	// goes on.
	e.wantStatus(e.raw("GET /notes HTTP/1.1\r\nHost: x\r\nX-API-Key: "+secret+"\r\nAuthorization: \r\nConnection: close\r\n\r\n"), 200)
	e.wantKeyIdentity(e.up, "app-notes", "tenant:read")
}

// TestAPIKeyWrongSecret: wrong secrets are refused (a warm key: without a
// fetch), counted, and after DefaultAPIKeyFailures from one client IP that
// IP gets 429 for the key, the right secret included; another IP still
// gets in.
func TestAPIKeyWrongSecret(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"},
		rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	secret, _ := e.newAPIKey("tenant:read")
	other, _ := e.newAPIKey("tenant:read")
	wrong := secret[:apikey.Len-1] + map[bool]string{true: "b", false: "a"}[secret[apikey.Len-1] == 'a']
	from := func(ip string) map[string]string { return map[string]string{"X-Forwarded-For": ip} }
	const attacker, owner = "203.0.113.7", "198.51.100.9"
	// Cold: the wrong secret is checked at coreapi, and not cached.
	e.wantKeyProblem(e.do("GET", "/notes", wrong, from(attacker)), 401, problem.CodeInvalidToken, "not valid")
	if n := e.core.KeyFetches.Load(); n != 1 {
		t.Fatalf("%d fetches", n)
	}
	e.wantStatus(e.do("GET", "/notes", secret, from(owner)), 200)
	fetches := e.core.KeyFetches.Load()
	for i := 1; i < 10; i++ { // 9 more: 10 wrong in all
		e.wantKeyProblem(e.do("GET", "/notes", wrong, from(attacker)), 401, problem.CodeInvalidToken, "not valid")
	}
	if n := e.core.KeyFetches.Load(); n != fetches {
		t.Fatalf("wrong secrets of a cached key fetched %d times", n-fetches)
	}
	if n := e.keyRefusals("wrong_secret"); n != 10 {
		t.Fatalf("wrong_secret = %v, want 10", n)
	}
	r := e.do("GET", "/notes", wrong, from(attacker))
	e.wantKeyProblem(r, 429, problem.CodeTooManyRequests, "too many failed API key attempts")
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// Locked out of this key from this address, even with the right secret.
	e.wantStatus(e.do("GET", "/notes", secret, from(attacker)), 429)
	// Not from elsewhere, and not for another key.
	e.wantStatus(e.do("GET", "/notes", secret, from(owner)), 200)
	e.wantStatus(e.do("GET", "/notes", other, from(attacker)), 200)
	if n := e.keyRefusals("rate_limited"); n != 2 {
		t.Fatalf("rate_limited = %v, want 2", n)
	}
	// The window ends.
	e.clock.Advance(61 * time.Second)
	e.wantStatus(e.do("GET", "/notes", secret, from(attacker)), 200)
}

// TestAPIKeyResolveRefusedByCoreapi: coreapi refusing the proxy's own
// signature on a resolve (its key list out of step with the proxy's in a
// rotation, a clock skewed past the window) answers 401, as it answers a
// wrong secret. The proxy told them apart by the problem code no more than
// by the status: the right key was refused as not valid, counted as a
// wrong secret and, after DefaultAPIKeyFailures, its owner's address was
// locked out of it, with no failure logged. It is the identity service
// answering badly (502), as for a projection fetch, and counts nothing.
func TestAPIKeyResolveRefusedByCoreapi(t *testing.T) {
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"},
		rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	secret, _ := e.newAPIKey("tenant:read")
	from := map[string]string{"X-Forwarded-For": "198.51.100.9"}
	e.core.Skew.Store(int64(time.Hour))
	for range server.DefaultAPIKeyFailures + 1 {
		e.wantKeyProblem(e.do("GET", "/notes", secret, from), 502, problem.CodeUpstreamDown, "identity service")
	}
	if n := e.keyRefusals("wrong_secret"); n != 0 {
		t.Fatalf("wrong_secret = %v, want 0: the key was never refused by coreapi", n)
	}
	e.core.Skew.Store(0)
	e.wantStatus(e.do("GET", "/notes", secret, from), 200)
	e.wantKeyIdentity(e.up, "app-notes", "tenant:read")
}

// TestAPIKeyResolveNotFoundElsewhere: IDENTITY_URL naming another
// service, or a coreapi without the resolve route, answers every resolve
// 404 with no code of coreapi's for an unknown key. It was taken for an
// unknown key: every key refused 401 "not valid" and remembered so for
// NEGATIVE_CACHE_TTL, nothing logged. It is the identity service
// answering badly (502), and the key works as soon as coreapi answers.
func TestAPIKeyResolveNotFoundElsewhere(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	secret, _ := e.newAPIKey("tenant:read")
	e.core.KeyAnswer.Store(&testenv.Answer{Status: 404, ContentType: "application/problem+json",
		Body: `{"status":404,"code":"not_found","detail":"no such route"}`})
	for range 2 {
		e.wantKeyProblem(e.do("GET", "/notes", secret, nil), 502, problem.CodeUpstreamDown, "identity service")
	}
	if n := e.keyRefusals("unknown"); n != 0 {
		t.Fatalf("unknown = %v, want 0: coreapi never said the key was unknown", n)
	}
	e.core.KeyAnswer.Store(nil)
	e.wantStatus(e.do("GET", "/notes", secret, nil), 200)
	e.wantKeyIdentity(e.up, "app-notes", "tenant:read")
}

// TestAPIKeyLockoutReadsEveryForwardedLine: behind a trusted peer that
// adds an X-Forwarded-For line of its own (HAProxy's option forwardfor)
// rather than extending the client's, the client IP a wrong key is
// counted against, which the key check reads before the request's lines
// are joined for forwarding, is the peer's line's, not one the client
// wrote in a line before it: a client naming another address in each
// request would never be locked out.
func TestAPIKeyLockoutReadsEveryForwardedLine(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"},
		rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	secret, _ := e.newAPIKey("tenant:read")
	wrong := secret[:apikey.Len-1] + map[bool]string{true: "b", false: "a"}[secret[apikey.Len-1] == 'a']
	send := func(key, spoofed string) result {
		return e.raw("GET /notes HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key + "\r\nX-Forwarded-For: " + spoofed +
			"\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n")
	}
	for i := range 10 {
		e.wantKeyProblem(send(wrong, fmt.Sprintf("198.51.100.%d", i+1)), 401, problem.CodeInvalidToken, "not valid")
	}
	e.wantKeyProblem(send(wrong, "198.51.100.99"), 429, problem.CodeTooManyRequests, "too many failed API key attempts")
	e.wantStatus(send(secret, "198.51.100.100"), 429)
	// From the client the peer's line names as another, the key works.
	e.wantStatus(e.raw("GET /notes HTTP/1.1\r\nHost: x\r\nX-API-Key: "+secret+"\r\nX-Forwarded-For: 203.0.113.7\r\n"+
		"X-Forwarded-For: 198.51.100.9\r\nConnection: close\r\n\r\n"), 200)
}

// TestAPIKeyUnknownKeysLimited: well-formed keys that coreapi does not
// know (random public ids, so the per-key count never grows) each cost a
// resolve at coreapi; after DefaultAPIKeyFailures of them from one client
// IP within the window, that IP's keys are answered from the cache only:
// a key the proxy does not hold gets 429 without a call, while a key it
// holds still works, and other addresses are not affected.
func TestAPIKeyUnknownKeysLimited(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"},
		rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	from := func(ip string) map[string]string { return map[string]string{"X-Forwarded-For": ip} }
	const attacker, other = "203.0.113.7", "198.51.100.9"
	warm, _ := e.newAPIKey("tenant:read")
	cold, _ := e.newAPIKey("tenant:read")
	e.wantStatus(e.do("GET", "/notes", warm, from(attacker)), 200)
	fetches := e.core.KeyFetches.Load()
	unknown := func() string { k, _ := apikey.New(); return k }
	for range 10 {
		e.wantKeyProblem(e.do("GET", "/notes", unknown(), from(attacker)), 401, problem.CodeInvalidToken, "not valid")
	}
	if n := e.core.KeyFetches.Load() - fetches; n != 10 {
		t.Fatalf("%d resolves for 10 unknown keys, want 10", n)
	}
	fetches = e.core.KeyFetches.Load()
	for range 20 {
		r := e.do("GET", "/notes", unknown(), from(attacker))
		e.wantKeyProblem(r, 429, problem.CodeTooManyRequests, "too many failed API key attempts")
		if r.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	e.wantStatus(e.do("GET", "/notes", cold, from(attacker)), 429)
	if n := e.core.KeyFetches.Load() - fetches; n != 0 {
		t.Fatalf("%d resolves at coreapi after the address's budget of unknown keys, want 0", n)
	}
	if n := e.keyRefusals("unknown_rate_limited"); n != 21 {
		t.Fatalf("unknown_rate_limited = %v, want 21", n)
	}
	// A key the proxy holds is not a call: it still works from there.
	e.wantStatus(e.do("GET", "/notes", warm, from(attacker)), 200)
	// Another address resolves as before.
	e.wantKeyProblem(e.do("GET", "/notes", unknown(), from(other)), 401, problem.CodeInvalidToken, "not valid")
	e.wantStatus(e.do("GET", "/notes", cold, from(other)), 200)
	// The window ends.
	e.clock.Advance(61 * time.Second)
	e.wantKeyProblem(e.do("GET", "/notes", unknown(), from(attacker)), 401, problem.CodeInvalidToken, "not valid")
}

// TestAPIKeyUnknownKeysReservedBeforeResolve: a resolve at coreapi is
// counted against the client IP's budget of unknown keys before it is
// made. Counted only once answered, made-up keys sent at once were all
// resolved (40 at once: 40 resolves, with a budget of 10), each holding
// one of the fetch slots other callers' cold requests share. A key that
// resolves gives its reservation back, so right keys never add up.
func TestAPIKeyUnknownKeysReservedBeforeResolve(t *testing.T) {
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"},
		rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	from := map[string]string{"X-Forwarded-For": "203.0.113.8"}
	// Right keys resolved one after the other leave nothing counted.
	for range 2 * server.DefaultAPIKeyFailures {
		k, _ := e.newAPIKey("tenant:read")
		e.wantStatus(e.do("GET", "/notes", k, from), 200)
	}
	// burst sends n requests at once, each with the key next returns,
	// while the stand-in holds every resolve: those beyond the budget are
	// answered without waiting for one, the budget's resolves are in
	// flight, and once released they are refused as unknown (401), the
	// others as over the budget (429).
	const n = 40
	burst := func(what string, next func() string) {
		t.Helper()
		base := e.core.KeyFetches.Load()
		gate := make(chan struct{})
		e.core.KeyGate.Store(&gate)
		statuses := make(chan int, n)
		for range n {
			go func() { statuses <- e.do("GET", "/notes", next(), from).status }()
		}
		got, answered := map[int]int{}, 0
		for timeout := time.After(5 * time.Second); answered < n-server.DefaultAPIKeyFailures; answered++ {
			select {
			case st := <-statuses:
				got[st]++
				continue
			case <-timeout:
			}
			break
		}
		if inFlight := resolvesInFlight(e, base, server.DefaultAPIKeyFailures); inFlight != server.DefaultAPIKeyFailures {
			t.Errorf("%d resolves for %d %s sent at once, want %d (the budget)", inFlight, n, what, server.DefaultAPIKeyFailures)
		}
		close(gate)
		for ; answered < n; answered++ {
			got[<-statuses]++
		}
		if got[401] != server.DefaultAPIKeyFailures || got[429] != n-server.DefaultAPIKeyFailures {
			t.Fatalf("%s: statuses %v, want %d 401 and %d 429", what, got, server.DefaultAPIKeyFailures, n-server.DefaultAPIKeyFailures)
		}
	}
	burst("made-up keys", func() string { k, _ := apikey.New(); return k })

	// Wrong secrets of a key the proxy does not hold are never remembered
	// (each is a resolve): sent at once, they get no more resolves at once
	// than the same budget.
	e.clock.Advance(61 * time.Second)
	right, pid := e.newAPIKey("tenant:read")
	burst("wrong secrets", func() string {
		k, _ := apikey.New()
		return right[:len(apikey.Prefix)+len(pid)] + k[len(apikey.Prefix)+len(pid):]
	})
}

// resolvesInFlight is how many resolves reached the stand-in since base,
// once want of them have (or 2 s passed) and a moment more.
func resolvesInFlight(e *env, base int64, want int) int64 {
	for deadline := time.Now().Add(2 * time.Second); e.core.KeyFetches.Load()-base < int64(want) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	return e.core.KeyFetches.Load() - base
}

// TestAPIKeyEvicted: revocation (the key's subject), a user event and a
// tenant event each evict a cached key over NATS; the next request
// refetches and sees the change.
func TestAPIKeyEvicted(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected, permissions: [tenant:read]}\n"})
	secret, pid := e.newAPIKey("tenant:read")
	e.wantStatus(e.do("GET", "/notes", secret, nil), 200)

	// The creator lost tenant:read: the key's permissions shrink.
	e.core.SetAPIKey(secret, keyProjection(), false)
	e.wantStatus(e.do("GET", "/notes", secret, nil), 200) // cached
	e.publishAndWait(invalidation.UserSubject(userID))
	e.wantProblem(e.do("GET", "/notes", secret, nil), 403, problem.CodeInsufficientScope)

	// The tenant is suspended.
	e.core.SetAPIKey(secret, keyProjection("tenant:read"), false)
	e.publishAndWait(invalidation.UserSubject(userID))
	e.wantStatus(e.do("GET", "/notes", secret, nil), 200)
	p := keyProjection("tenant:read")
	p.TenantStatus = identity.StatusSuspended
	e.core.SetAPIKey(secret, p, false)
	e.publishAndWait(invalidation.TenantSubject(tenantID))
	e.wantKeyProblem(e.do("GET", "/notes", secret, nil), 401, problem.CodeInvalidToken, "not valid")

	// Revoked.
	e.core.SetAPIKey(secret, keyProjection("tenant:read"), false)
	e.publishAndWait(invalidation.TenantSubject(tenantID))
	e.wantStatus(e.do("GET", "/notes", secret, nil), 200)
	e.core.SetAPIKey(secret, keyProjection("tenant:read"), true)
	e.wantStatus(e.do("GET", "/notes", secret, nil), 200) // cached until the event
	e.publishAndWait(invalidation.APIKeySubject(pid))
	before := e.core.KeyFetches.Load()
	for range 3 {
		e.wantKeyProblem(e.do("GET", "/notes", secret, nil), 401, problem.CodeInvalidToken, "not valid")
	}
	if n := e.core.KeyFetches.Load() - before; n != 1 {
		t.Fatalf("a revoked key fetched %d times, want 1 (then remembered)", n)
	}
	if n := e.keyRefusals("revoked"); n != 3 {
		t.Fatalf("revoked = %v, want 3", n)
	}
}

// TestAPIKeyExpiry: a key stops at its expiry without a fetch.
func TestAPIKeyExpiry(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	secret, _ := apikey.New()
	p := keyProjection("tenant:read")
	exp := e.clock.Now().Add(time.Minute)
	p.ExpiresAt = &exp
	e.core.SetAPIKey(secret, p, false)
	e.wantStatus(e.do("GET", "/notes", secret, nil), 200)
	e.clock.Advance(2 * time.Minute)
	e.wantKeyProblem(e.do("GET", "/notes", secret, nil), 401, problem.CodeInvalidToken, "not valid")
	if n := e.core.KeyFetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

// TestAPIKeyLimits: a key is held to its permissions and never creates a
// key; a JWT still works beside keys.
func TestAPIKeyLimits(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected, permissions: [notes:write]}\n"})
	secret, _ := e.newAPIKey("tenant:read", "api-keys:write")
	for _, path := range []string{"/api/v1/api-keys", "/api/v1/users/me/api-keys"} {
		r := e.do("POST", path, secret, nil)
		e.wantKeyProblem(r, 403, problem.CodePrincipalNotAllowed, "cannot create API keys")
	}
	// Nor touch the account's sign-in, sessions, credentials or address.
	for _, c := range []struct{ method, path string }{
		{"POST", "/api/v1/auth/logout"}, {"POST", "/api/v1/auth/switch-tenant"}, {"POST", "/api/v1/auth/verify-email/resend"},
		{"PUT", "/api/v1/users/me/password"}, {"POST", "/api/v1/users/me/mfa/totp"}, {"DELETE", "/api/v1/users/me/mfa/totp"},
		{"GET", "/api/v1/users/me/sessions"}, {"DELETE", "/api/v1/users/me/sessions/x"}, {"PATCH", "/api/v1/users/me"},
		{"GET", "/api/v1/users/me/invitations"}, {"POST", "/api/v1/invitations/accept"}, {"POST", "/api/v1/auth/verify-email"},
	} {
		e.wantKeyProblem(e.do(c.method, c.path, secret, nil), 403, problem.CodePrincipalNotAllowed, "cannot change sign-in")
	}
	e.wantNothingForwarded()
	// What stays open: reading oneself, listing and revoking keys.
	e.wantStatus(e.do("GET", "/api/v1/users/me", secret, nil), 200)
	e.wantStatus(e.do("GET", "/api/v1/users/me/api-keys", secret, nil), 200)
	e.wantStatus(e.do("DELETE", "/api/v1/users/me/api-keys/x", secret, nil), 200)
	e.wantProblem(e.do("GET", "/notes", secret, nil), 403, problem.CodeInsufficientScope)
	e.wantStatus(e.do("GET", "/api/v1/api-keys", secret, nil), 200) // listing is not creating
	e.wantStatus(e.do("GET", "/api/v1/users/me", e.token(nil), nil), 200)
	e.wantSigned()
}

// TestAPIKeyOfAPersonWithASecondFactor: a key acts for its creator but
// cannot give a second factor, so the routes that ask a person who has one
// for a recent one (a tenant's policy, a grant, a member's status, a
// role's permissions) refuse the key of such a person; a thief holding it
// would otherwise do there what the person must prove a factor for. The
// key of a person without one is held to its permissions only.
func TestAPIKeyOfAPersonWithASecondFactor(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	perms := []string{"tenant:read", "tenant:write", "users:write", "roles:write"}
	withFactor, _ := apikey.New()
	p := keyProjection(perms...)
	p.MFAEnabled = true
	e.core.SetAPIKey(withFactor, p, false)
	without, _ := e.newAPIKey(perms...)
	routes := []struct{ method, path string }{
		{"PATCH", "/api/v1/tenant"}, {"PUT", "/api/v1/users/8d3c2f0e-51a8-4bb9-9d4e-0f1f6b1c2d3e/roles/admin"},
		{"PATCH", "/api/v1/users/8d3c2f0e-51a8-4bb9-9d4e-0f1f6b1c2d3e"}, {"PATCH", "/api/v1/roles/8d3c2f0e-51a8-4bb9-9d4e-0f1f6b1c2d3e"},
	}
	for _, r := range routes {
		e.wantKeyProblem(e.do(r.method, r.path, withFactor, nil), 403, problem.CodeInsufficientUserAuthentication, "which an API key cannot give")
	}
	e.wantNothingForwarded()
	e.wantStatus(e.do("GET", "/api/v1/tenant", withFactor, nil), 200)
	for _, r := range routes {
		e.wantStatus(e.do(r.method, r.path, without, nil), 200)
	}
}

// TestAPIKeyUseReported: the keys used since the last report go to
// coreapi once; an unused interval reports nothing.
func TestAPIKeyUseReported(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	a, pa := e.newAPIKey()
	b, pb := e.newAPIKey()
	_, _ = e.newAPIKey() // never used
	for range 3 {
		e.wantStatus(e.do("GET", "/api/v1/users/me", a, nil), 200)
	}
	e.wantStatus(e.do("GET", "/api/v1/users/me", b, nil), 200)
	n, err := e.app.Projections.ReportUsed(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("ReportUsed = %d, %v; want 2", n, err)
	}
	got := e.core.UsedKeys()
	slices.Sort(got)
	want := []string{pa, pb}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
	if n, err := e.app.Projections.ReportUsed(context.Background()); n != 0 || err != nil {
		t.Fatalf("second report = %d, %v; want nothing", n, err)
	}
}

// TestAPIKeyUseReportedAtShutdown: Serve returns only once the last
// report, sent after the drain, has reached coreapi; a proxy that exited
// first lost the keys used since the previous report.
func TestAPIKeyUseReportedAtShutdown(t *testing.T) {
	e := start(t, envOpt{})
	secret, pid := e.newAPIKey()
	e.wantStatus(e.do("GET", "/api/v1/users/me", secret, nil), 200)
	gate := make(chan struct{})
	e.core.UsedGate.Store(&gate)
	time.AfterFunc(300*time.Millisecond, func() { close(gate) })
	e.cancel()
	e.wantReportedWhenServeReturns(pid)
}

// TestAPIKeyUseDuringDrainReported: a key first used by a request served
// during the drain (its header completed after SIGTERM, on a connection
// opened before) is in the last report. The report went out as the
// shutdown began, not after the drain: such uses were never reported.
func TestAPIKeyUseDuringDrainReported(t *testing.T) {
	e := start(t, envOpt{})
	secret, pid := e.newAPIKey()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the proxy has begun reading it
	e.cancel()
	time.Sleep(300 * time.Millisecond) // the shutdown is under way
	if _, err := io.WriteString(conn, "Authorization: Bearer "+secret+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the request begun before the shutdown: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200 (served during the drain)", resp.StatusCode)
	}
	e.wantReportedWhenServeReturns(pid)
}

// wantReportedWhenServeReturns waits for Serve (cancelled) to return
// without error and checks that the keys reported used by then are
// exactly pids.
func (e *env) wantReportedWhenServeReturns(pids ...string) {
	e.t.Helper()
	var err error
	select {
	case err = <-e.done:
	case <-time.After(10 * time.Second):
		e.t.Fatal("Serve did not return")
	}
	e.done <- err // for the cleanup's wait
	if err != nil {
		e.t.Fatalf("Serve: %v", err)
	}
	if got := e.core.UsedKeys(); !slices.Equal(got, pids) {
		e.t.Fatalf("reported when Serve returned: %v, want %v", got, pids)
	}
}

// TestAPIKeyOneFetch: concurrent first requests with one key share a
// single resolve (singleflight, then the cache).
func TestAPIKeyOneFetch(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	secret, _ := e.newAPIKey("tenant:read")
	var wg sync.WaitGroup
	codes := make(chan int, 20)
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", "http://"+e.addr+"/api/v1/users/me", nil)
			req.Header.Set("X-API-Key", secret)
			resp, err := e.client.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("status %d", c)
		}
	}
	if n := e.core.KeyFetches.Load(); n != 1 {
		t.Fatalf("%d key fetches for 20 concurrent requests, want 1", n)
	}
}

// TestAPIKeyNoStreams: a key opens neither an event stream nor a
// WebSocket (streams are re-checked as their user's, so a revoked key
// would keep one open).
func TestAPIKeyNoStreams(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + "routes:\n" +
		"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, websocket: true}\n" +
		"  - {prefix: /notes/events, methods: [GET], upstream: notes, access: protected, stream_timeout: 2s}\n"})
	secret, _ := e.newAPIKey("tenant:read")
	e.wantKeyProblem(e.do("GET", "/notes/events", secret, nil), 403, problem.CodeForbidden, "cannot open WebSockets or event streams")
	e.wantKeyProblem(e.do("GET", "/notes/ws", "", map[string]string{"X-API-Key": secret, "Connection": "Upgrade", "Upgrade": "websocket",
		"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}), 403, problem.CodeForbidden, "cannot open WebSockets")
	e.wantNothingForwarded()
}

// TestAPIKeyRouteOptions: a request with an API key on a route with
// strip_prefix and max_body_bytes, to an upstream with rewrite_host, is
// forwarded as one with a token is: the path stripped and signed as sent,
// the upstream's Host, a body over MAX_BODY_BYTES within the route's limit.
func TestAPIKeyRouteOptions(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: `
upstreams:
  notes: {url: "{{APP}}", key_id: app-notes, rewrite_host: true, timeout: 5s}
routes:
  - {prefix: /up, methods: [POST], upstream: notes, access: protected, permissions: [tenant:read], strip_prefix: true, max_body_bytes: 1048576}
`})
	secret, _ := e.newAPIKey("tenant:read")
	send := func(n int) int {
		req, _ := http.NewRequest("POST", "http://"+e.addr+"/up/files?x=1", strings.NewReader(strings.Repeat("b", n)))
		req.Header.Set("X-API-Key", secret)
		req.Host = "client.example"
		resp, err := e.client.Do(req)
		if err != nil {
			// The proxy refuses a body over the limit from its
			// Content-Length and closes the connection: the client may
			// meet the reset before the 413 (TestRouteBodyLimit).
			if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
				return 413
			}
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := send(200_000); st != 200 {
		t.Fatalf("within the route's limit: %d", st)
	}
	r := e.wantKeyIdentity(e.up, "app-notes", "tenant:read")
	if r.URI != "/files?x=1" || len(r.Body) != 200_000 || len(r.Headers["Host"]) != 1 || r.Headers["Host"][0] != e.up.Addr {
		t.Fatalf("upstream got %s, %d bytes, Host %q", r.URI, len(r.Body), r.Headers["Host"])
	}
	e.reset()
	if st := send(1048577); st != 413 {
		t.Fatalf("over the route's limit: %d, want 413", st)
	}
	e.wantNothingForwarded()
}

// TestAPIKeyResolveNamesTheClient: the proxy's resolve of a key tells
// coreapi the address of the client whose request presented it (the
// X-Auth-Client-Ip it would forward: here from a trusted X-Forwarded-For),
// which coreapi's audit row of a revoked key's use records. The resolve
// is the proxy's own call, whose signature names no client: without it,
// coreapi could only record the proxy's address, the same for every use.
func TestAPIKeyResolveNamesTheClient(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"},
		rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	secret, _ := e.newAPIKey("tenant:read")
	revoked, _ := apikey.New()
	e.core.SetAPIKey(revoked, keyProjection("tenant:read"), true)
	from := func(ip string) map[string]string { return map[string]string{"X-Forwarded-For": ip} }
	e.wantStatus(e.do("GET", "/notes", secret, from("198.51.100.9")), 200)
	e.wantKeyProblem(e.do("GET", "/notes", revoked, from("2001:db8::7")), 401, problem.CodeInvalidToken, "not valid")
	e.wantKeyProblem(e.do("GET", "/notes", "", map[string]string{"X-API-Key": revoked}), 401, problem.CodeInvalidToken, "not valid")
	// The refusal is remembered: one resolve for the revoked key.
	if got, want := e.core.KeyClients(), []string{"198.51.100.9", "2001:db8::7"}; !slices.Equal(got, want) {
		t.Fatalf("resolves named the clients %q, want %q", got, want)
	}
}

// TestOneTimeLinkStartingLikeAKey: coreapi's one-time tokens (the
// verification, reset and invitation links' token, the OAuth state) are
// 43 base64url characters, "_" among them, so about one in 262,144 starts
// with "tg_". Such a link was refused 400 api_key_in_query, telling its
// reader their key was exposed, and the address could not be verified,
// the password not reset, the invitation not accepted. A query value is
// taken for a key only with a key's head: "tg_", its 16-character public
// id and "_" (a key cut after it still is); a key in the query is refused
// as before.
func TestOneTimeLinkStartingLikeAKey(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	secret, _ := e.newAPIKey("tenant:read")
	for _, tok := range []string{
		"tg_Y7nFsAUqc2OCGTkHQhooiBBDu7KqWtNSBCbYmNnw",
		"tg_abcdefghijklmnopq-rstuvwxyz0123456789ABC", // a public id's length, then no "_"
		"tg_", "tg_abc",
	} {
		for _, path := range []string{"/verify-email?token=", "/reset-password?token=", "/accept-invitation?token="} {
			e.wantStatus(e.do("GET", path+tok, "", nil), 200)
			if got := e.core.Last(t); got.URI != path+tok {
				t.Fatalf("forwarded %q for %s%s", got.URI, path, tok)
			}
		}
	}
	for _, q := range []string{"token=" + secret, "token=" + secret[:20], "token=" + secret[:30] + "&x=1", "k=tg%5F" + secret[3:25]} {
		e.wantKeyProblem(e.do("GET", "/verify-email?"+q, "", nil), 400, problem.CodeAPIKeyInQuery, "query string")
	}
}

// A bearer starting with "tg_" is an API key to the proxy, whoever issued
// it: a third party's opaque token that happens to start so (a JWT never
// does: its header is base64url JSON, "{" encoded as "e") is refused 401 as a
// malformed key on protected and optional routes, and on a public one is
// removed with the request's other Authorization fields, where another
// third party's bearer goes on as it came. The contract is the prefix, not
// a guess at the issuer: a key the proxy forwarded because it did not
// look like one would reach an app.
func TestThirdPartyBearerStartingLikeAKey(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection())
	const third = "tg_3rdPartyOpaqueToken.not-ours"
	for _, path := range []string{"/notes/1", "/notes/maybe"} {
		e.wantKeyProblem(e.do("GET", path, third, nil), 401, problem.CodeInvalidToken, "malformed API key")
	}
	for bearer, forwarded := range map[string]bool{third: false, "opaque-third-party-token": true, foreignToken(t): true} {
		e.reset()
		e.wantStatus(e.do("GET", "/notes/public/1", bearer, nil), 200)
		got := e.wantAnonymousAt(e.up, testenv.AppKey.ID).Headers["Authorization"]
		if forwarded && (len(got) != 1 || got[0] != "Bearer "+bearer) {
			t.Errorf("%.20q: the app got Authorization %.40q, want it as it came", bearer, got)
		}
		if !forwarded && got != nil {
			t.Errorf("%.20q: the app got Authorization %.40q, want none", bearer, got)
		}
	}
}

// TestAPIKeyLockoutRetryAfter: a 429 of the API key limits says in
// Retry-After what its detail says, the seconds left of the window (here
// 40 s after 20 of 60 went), not 1: a client that honours Retry-After came
// back every second for the rest of the minute, each time refused.
func TestAPIKeyLockoutRetryAfter(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"},
		rules: appUpstream + "routes:\n  - {prefix: /notes, upstream: notes, access: protected}\n"})
	secret, _ := e.newAPIKey("tenant:read")
	wrong := secret[:apikey.Len-1] + map[bool]string{true: "b", false: "a"}[secret[apikey.Len-1] == 'a']
	unknown := func() string { k, _ := apikey.New(); return k }
	for _, tc := range []struct {
		name string
		key  func() string
		from string
	}{
		{"wrong secrets of one key", func() string { return wrong }, "203.0.113.7"},
		{"unknown keys", unknown, "203.0.113.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			from := map[string]string{"X-Forwarded-For": tc.from}
			for range 10 {
				e.wantKeyProblem(e.do("GET", "/notes", tc.key(), from), 401, problem.CodeInvalidToken, "not valid")
			}
			e.clock.Advance(20 * time.Second)
			r := e.do("GET", "/notes", tc.key(), from)
			e.wantKeyProblem(r, 429, problem.CodeTooManyRequests, "retry after 40 s")
			if got := r.header.Get("Retry-After"); got != "40" {
				t.Fatalf("Retry-After = %q, want 40 (the seconds the detail names: %s)", got, r.prob.Detail)
			}
			e.clock.Advance(41 * time.Second)
		})
	}
}
