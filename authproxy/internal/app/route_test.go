package app

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/refused"
)

const notesRules = appUpstream + `
routes:
  - {prefix: /notes, methods: [GET], upstream: notes, access: protected, permissions: [notes:read]}
  - {prefix: /notes, methods: [POST], upstream: notes, access: protected, permissions: [notes:write]}
  - {prefix: /notes/public, methods: [GET], upstream: notes, access: public}
  - {prefix: /notes/maybe, upstream: notes, access: optional}
  - {prefix: /notes/both, methods: [GET], upstream: notes, access: protected, permissions: [notes:read, notes:write]}
  - {prefix: /, methods: [GET], upstream: notes, access: public}
`

func notesProjection() identity.Projection {
	p := defaultProjection()
	p.Permissions = []string{"tenant:read", "notes:read"}
	return p
}

func TestAppRouting(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)

	t.Run("protected app route signed with the app key", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.do("GET", "/notes?limit=5", tok, nil), 200)
		got := e.wantSignedAt(e.up, testenv.AppKey.ID)
		if got.URI != "/notes?limit=5" || got.Headers["Authorization"] != nil {
			t.Fatalf("forwarded %s with Authorization %v", got.URI, got.Headers["Authorization"])
		}
		if strings.Join(got.Identity.Permissions, ",") != "tenant:read,notes:read" || got.Identity.EmailVerified {
			t.Fatalf("identity = %+v", got.Identity)
		}
		if len(e.core.Received()) != 0 {
			t.Fatal("app request reached core")
		}
	})
	// The signing state kept per cached token belongs to one upstream key
	// and one projection: one token alternating between upstreams is
	// signed with each one's key, and a changed projection is signed anew.
	t.Run("one token, two upstream keys, a changed projection", func(t *testing.T) {
		e := e.with(t)
		for i := range 3 {
			e.reset()
			e.wantStatus(e.do("GET", "/notes?i="+fmt.Sprint(i), tok, nil), 200)
			e.wantSignedAt(e.up, testenv.AppKey.ID)
			e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
			e.wantSignedAt(e.core, testenv.CoreKey.ID)
		}
		p := notesProjection()
		p.Roles = []string{"member", "auditor"}
		e.core.SetProjection(p)
		e.publishAndWait("auth.invalidate.all")
		e.reset()
		e.wantStatus(e.do("GET", "/notes", tok, nil), 200)
		if got := e.wantSignedAt(e.up, testenv.AppKey.ID); strings.Join(got.Identity.Roles, ",") != "member,auditor" {
			t.Fatalf("roles after the change = %v", got.Identity.Roles)
		}
		e.core.SetProjection(notesProjection())
		e.publishAndWait("auth.invalidate.all")
	})
	// A route's permissions are all required: one of the two held is 403
	// insufficient_scope, and nothing reaches the app; both held pass.
	t.Run("every permission of the route required", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantProblem(e.do("GET", "/notes/both", tok, nil), 403, problem.CodeInsufficientScope)
		e.wantNothingForwarded()
		p := notesProjection()
		p.Permissions = []string{"notes:write"}
		e.core.SetProjection(p)
		e.publishAndWait("auth.invalidate.all")
		e.wantProblem(e.do("GET", "/notes/both", tok, nil), 403, problem.CodeInsufficientScope)
		e.wantNothingForwarded()
		p.Permissions = []string{"notes:read", "notes:write"}
		e.core.SetProjection(p)
		e.publishAndWait("auth.invalidate.all")
		e.wantStatus(e.do("GET", "/notes/both", tok, nil), 200)
		e.wantSignedAt(e.up, testenv.AppKey.ID)
		e.core.SetProjection(notesProjection())
		e.publishAndWait("auth.invalidate.all")
	})
	t.Run("the body is bound to the signature", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		p := notesProjection()
		p.Permissions = append(p.Permissions, "notes:write")
		e.core.SetProjection(p)
		e.publishAndWait("auth.invalidate.all")
		req, _ := http.NewRequest("POST", "http://"+e.addr+"/notes", strings.NewReader(`{"text":"hello"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		e.wantStatus(result{status: resp.StatusCode}, 200)
		got := e.wantSignedAt(e.up, testenv.AppKey.ID)
		if string(got.Body) != `{"text":"hello"}` {
			t.Fatalf("body = %q", got.Body)
		}
		// The same headers over another body do not verify.
		v, _ := identity.NewVerifier([]identity.Key{testenv.AppKey}, 0)
		get := func(n string) string {
			if vs := got.Headers[http.CanonicalHeaderKey(n)]; len(vs) > 0 {
				return vs[0]
			}
			return ""
		}
		if _, err := v.Verify(time.Now(), get, "POST", "/notes", sha256.Sum256([]byte(`{"text":"evil"}`))); !errors.Is(err, identity.ErrSignature) {
			t.Fatalf("other body: %v, want ErrSignature", err)
		}
		e.core.SetProjection(notesProjection())
		e.publishAndWait("auth.invalidate.all")
	})
	t.Run("public app route: anonymous, signed", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.do("GET", "/notes/public/1", "", nil), 200)
		got := e.wantAnonymousAt(e.up, testenv.AppKey.ID)
		if got.Identity.KeyID != testenv.AppKey.ID {
			t.Fatalf("key = %s", got.Identity.KeyID)
		}
	})
	t.Run("optional route without a bearer: anonymous", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.do("GET", "/notes/maybe", "", nil), 200)
		e.wantAnonymousAt(e.up, testenv.AppKey.ID)
	})
	t.Run("optional route with a bearer: the user", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.do("DELETE", "/notes/maybe/1", tok, nil), 200)
		e.wantSignedAt(e.up, testenv.AppKey.ID)
	})
	// The token endpoint's grants carry their own credentials: a stale or
	// broken bearer a client attaches to every request must not stop a
	// refresh or a sign-in. It is dropped, and the request goes on as
	// anonymous (any other optional route refuses it, below).
	t.Run("token endpoint with a bad bearer: anonymous", func(t *testing.T) {
		e := e.with(t)
		expired := e.token(func(c testenv.Claims) {
			past := time.Now().Add(-time.Hour)
			c["iat"], c["nbf"], c["exp"] = past.Add(-time.Minute).Unix(), past.Add(-time.Minute).Unix(), past.Unix()
		})
		for _, bad := range []string{tok + "x", expired, "not-a-jwt"} {
			e.reset()
			e.wantStatus(e.do("POST", "/api/v1/auth/token", bad, nil), 200)
			got := e.wantAnonymousAt(e.core, testenv.CoreKey.ID)
			if got.Headers["Authorization"] != nil {
				t.Fatalf("the refused bearer was forwarded: %v", got.Headers["Authorization"])
			}
		}
		e.reset()
		e.wantStatus(e.do("POST", "/api/v1/auth/token", tok, nil), 200)
		e.wantSignedAt(e.core, testenv.CoreKey.ID)
	})
	t.Run("optional route with an invalid bearer: 401", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantProblem(e.do("GET", "/notes/maybe", tok+"x", nil), 401, problem.CodeInvalidToken)
		e.wantNothingForwarded()
	})
	t.Run("no bearer on a protected app route", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantProblem(e.do("GET", "/notes", "", nil), 401, problem.CodeUnauthenticated)
		e.wantNothingForwarded()
	})
	t.Run("/notes-admin is not under /notes", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		// It falls to the public catch-all, never to /notes' protected
		// route: the app sees an anonymous caller.
		e.wantStatus(e.do("GET", "/notes-admin", tok, nil), 200)
		e.wantAnonymousAt(e.up, testenv.AppKey.ID)
	})
	t.Run("a method the longest route excludes: 405, no fall-back", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		r := e.do("DELETE", "/notes/1", tok, nil)
		e.wantProblem(r, 405, problem.CodeMethodNotAllowed)
		if got := r.header.Get("Allow"); got != "GET, HEAD, POST" {
			t.Fatalf("Allow = %q", got)
		}
		// The catch-all "/" allows GET only; /notes/public allows GET: PUT
		// there is 405 too, though "/" exists.
		e.wantProblem(e.do("PUT", "/notes/public", tok, nil), 405, problem.CodeMethodNotAllowed)
		e.wantNothingForwarded()
	})
	t.Run("core routes stay with core", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.do("POST", "/api/v1/auth/token", "", nil), 200)
		e.wantAnonymousAt(e.core, "core")
		if len(e.up.Received()) != 0 {
			t.Fatal("sign-in reached the app")
		}
		e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
		e.wantSigned()
	})
	t.Run("client-sent identity headers never reach the app", func(t *testing.T) {
		e := e.with(t)
		for _, name := range []string{"X-Auth-User-Id", "x-auth-roles", "X_Auth_Permissions", "X-Auth-Principal", "X-Auth-Key-Id", "X-Auth-Client-Ip", "X-Auth-Email-Verified"} {
			for _, path := range []string{"/notes", "/notes/public"} {
				e.reset()
				req := "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + name + ": evil\r\nAuthorization: Bearer " + tok + "\r\nConnection: close\r\n\r\n"
				e.wantStatus(e.raw(req), 200)
				got := e.up.Last(t)
				for k, vs := range got.Headers {
					for _, v := range vs {
						if v == "evil" {
							t.Fatalf("%s: client header %s reached the app", path, k)
						}
					}
				}
				if got.VerifyErr != nil {
					t.Fatalf("%s: %v", path, got.VerifyErr)
				}
			}
		}
	})
}

// A raw ';' in the path is refused: servlet containers (Tomcat, Jetty,
// Spring) cut a segment's ";parameters" off before routing, so the proxy
// would match "/notes;x/secret" under "/" (public) and "/notes/public/..;/x"
// under "/notes/public" (public) while such an app serves /notes/secret and
// /notes/x, protected. An encoded ';' (%3B) is one character of a segment
// to every server, and passes.
func TestPathParametersRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	for _, path := range []string{
		"/notes;x/secret",
		"/notes;/secret",
		"/notes/public/..;/secret",
		"/notes/public/.;/secret",
		"/NOTES;jsessionid=1",
		"/;/notes/secret",
	} {
		t.Run(path, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			r := e.raw("GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			e.wantProblem(r, 400, problem.CodeBadPath)
			e.wantNothingForwarded()
		})
	}
	t.Run("encoded", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.raw("GET /x%3bnotes/secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200)
		if got := e.wantAnonymousAt(e.up, testenv.AppKey.ID); got.URI != "/x%3Bnotes/secret" {
			t.Fatalf("forwarded URI = %q, want /x%%3Bnotes/secret", got.URI)
		}
	})
}

// A path segment that ends in '.' or a space, raw or encoded, is refused:
// IIS, ASP.NET and Windows file servers drop a segment's trailing dots and
// spaces, so such an app would serve "/notes./secret" as /notes/secret
// (protected) while the rules matched "/" (public).
func TestTrailingDotSegmentsRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	for _, path := range []string{
		"/notes.",
		"/notes./secret",
		"/notes%2e/secret",
		"/notes%2E%2E",
		"/notes%20/secret",
		"/notes.%20",
		"/notes/public./x",
	} {
		t.Run(path, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			r := e.raw("GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			e.wantProblem(r, 400, problem.CodeBadPath)
			if !strings.Contains(r.prob.Detail, "ends in '.' or a space") {
				t.Fatalf("detail %q does not say why", r.prob.Detail)
			}
			e.wantNothingForwarded()
		})
	}
	t.Run("dots inside a segment", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.raw("GET /v1.2/a..b/.well-known HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200)
		if got := e.wantAnonymousAt(e.up, testenv.AppKey.ID); got.URI != "/v1.2/a..b/.well-known" {
			t.Fatalf("forwarded URI = %q", got.URI)
		}
	})
}

// NTFS aliases: "/notes::$DATA" (a data stream) and "/NOTES~1/secret"
// (an 8.3 short name) are /notes and /notes/secret to a file server on
// Windows, while the rules match them under "/" (public). They are refused;
// a ':' before anything else (Google-style custom methods, IPv6 addresses)
// and a '~' outside the short-name shape still pass.
func TestWindowsPathAliasesRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	for _, tc := range []struct{ path, detail string }{
		{"/notes::$DATA", "NTFS data stream"},
		{"/notes:$DATA", "NTFS data stream"},
		{"/notes::$INDEX_ALLOCATION/secret", "NTFS data stream"},
		{"/notes%3A%3A%24data/secret", "NTFS data stream"},
		{"/notes:", "NTFS data stream"},
		{"/NOTES~1/secret", "8.3 short name"},
		{"/notes%7E1/secret", "8.3 short name"},
		{"/notes/PUBLIC~1.TXT", "8.3 short name"},
		{"/NO%5ETES~1/secret", "8.3 short name"},
		{"/%C3%89CRAN~1/secret", "8.3 short name"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			r := e.raw("GET " + tc.path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			e.wantProblem(r, 400, problem.CodeBadPath)
			if !strings.Contains(r.prob.Detail, tc.detail) {
				t.Fatalf("detail %q does not say why", r.prob.Detail)
			}
			e.wantNothingForwarded()
		})
	}
	for _, path := range []string{"/v1/things/abc:activate", "/ips/fe80::1", "/~alice/x", "/~1/a~1b", "/a%20~1/x"} {
		t.Run(path, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			e.wantStatus(e.raw("GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200)
			if got := e.wantAnonymousAt(e.up, testenv.AppKey.ID); got.URI != path {
				t.Fatalf("forwarded URI = %q", got.URI)
			}
		})
	}
}

// ASP.NET's filter on IIS takes a cookieless ticket segment ("(S(x))",
// "(A(x)F(y))") out of a path before anything routes it, whatever the
// application's session settings: "/(S(x))/notes/secret" is its
// /notes/secret, while the rules matched "/" (public). Such a segment is
// refused with 400 wherever it stands, raw or percent-encoded, nothing
// forwarded; parentheses of another shape pass.
func TestCookielessSegmentsRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	for _, path := range []string{"/(S(x))/notes/secret", "/(A(a1)S(b-2)F(c_3))/notes", "/notes/public/(X(1))/../x",
		"/%28S%28x%29%29/notes/secret", "/(s())/notes", "/notes/public/(S(x))"} {
		t.Run(path, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			r := e.raw("GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			e.wantProblem(r, 400, problem.CodeBadPath)
			if !strings.Contains(r.prob.Detail, "ASP.NET cookieless") {
				t.Fatalf("detail %q does not say why", r.prob.Detail)
			}
			e.wantNothingForwarded()
		})
	}
	for _, path := range []string{"/wiki/Foo_(bar)", "/(x)/y", "/a(S(x))/y", "/(S(x)/y", "/((S(x)))/y", "/(S(x)(y))/z"} {
		t.Run(path, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			e.wantStatus(e.raw("GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200)
			if got := e.wantAnonymousAt(e.up, testenv.AppKey.ID); got.URI != path {
				t.Fatalf("forwarded URI = %q", got.URI)
			}
		})
	}
}

// The method the proxy authorizes (and signs) is the request line's: a
// method-override header, which many frameworks (Express's
// method-override, Symfony, Laravel, Spring's HiddenHttpMethodFilter
// behind a header, ASP.NET) obey, never reaches an upstream. A member who
// may read notes cannot have the app run a POST (notes:write) sent as a
// GET.
func TestMethodOverrideHeadersRemoved(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection()) // notes:read, not notes:write
	tok := e.token(nil)
	for _, name := range []string{"X-HTTP-Method-Override", "x-http-method-override", "X_HTTP_Method_Override",
		"X-HTTP-Method", "X-Method-Override", "x_method_override"} {
		for _, path := range []string{"/notes", "/notes/public"} {
			t.Run(name+path, func(t *testing.T) {
				e := e.with(t)
				e.reset()
				r := e.raw("GET " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n" +
					name + ": POST\r\nConnection: close\r\n\r\n")
				e.wantStatus(r, 200)
				got := e.up.Last(t)
				for k, vs := range got.Headers {
					for _, v := range vs {
						if v == "POST" {
							t.Fatalf("%s: %s reached the upstream", k, v)
						}
					}
				}
				if got.Method != "GET" {
					t.Fatalf("method %s, want GET", got.Method)
				}
			})
		}
	}
}

func TestAppBodyLimit(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	p := notesProjection()
	p.Permissions = append(p.Permissions, "notes:write")
	e.core.SetProjection(p)
	req, _ := http.NewRequest("POST", "http://"+e.addr+"/notes", strings.NewReader(strings.Repeat("a", 70000)))
	req.Header.Set("Authorization", "Bearer "+e.token(nil))
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("status = %d, want 413", resp.StatusCode)
	}
	e.wantNothingForwarded()
}

// The app's verifier refuses a request signed outside its window.
func TestClockSkew(t *testing.T) {
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	for _, tc := range []struct {
		skew time.Duration
		want error
	}{
		{29 * time.Second, nil}, {-29 * time.Second, nil},
		{31 * time.Second, identity.ErrExpired}, {-31 * time.Second, identity.ErrExpired},
	} {
		e.reset()
		e.up.Skew.Store(int64(tc.skew))
		e.wantStatus(e.do("GET", "/notes", tok, nil), 200)
		if got := e.up.Last(t).VerifyErr; !errors.Is(got, tc.want) {
			t.Errorf("app clock %v off: verify = %v, want %v", tc.skew, got, tc.want)
		}
	}
}

func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	closed := refused.Addr(t)
	for _, tc := range []struct{ name, url string }{
		{"nothing listening", "http://" + closed},
		{"unknown host", "http://no-such-host.invalid:8082"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := "upstreams:\n  notes: {url: '" + tc.url + "', key_id: app-notes}\nroutes:\n  - {prefix: /notes, upstream: notes, access: public}\n"
			e := start(t, envOpt{rules: rules})
			r := e.do("GET", "/notes", "", nil)
			e.wantProblem(r, 503, problem.CodeUpstreamDown)
			host := strings.TrimPrefix(tc.url, "http://")
			if strings.Contains(string(r.body), host) || strings.Contains(string(r.body), "dial") {
				t.Fatalf("503 body tells internals: %s", r.body)
			}
			// Core is unaffected.
			e.wantStatus(e.do("POST", "/api/v1/auth/token", "", nil), 200)
		})
	}
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, cidrs, xff, want string
	}{
		{"peer", "", "", "127.0.0.1"},
		{"untrusted peer: X-Forwarded-For ignored", "10.0.0.0/8", "203.0.113.7", "127.0.0.1"},
		{"trusted peer: rightmost untrusted hop", "127.0.0.0/8,10.0.0.0/8", "198.51.100.1, 203.0.113.7, 10.1.2.3", "203.0.113.7"},
		{"trusted peer, every hop trusted", "127.0.0.0/8,10.0.0.0/8", "10.9.9.9", "10.9.9.9"},
		{"trusted peer, garbage hop", "127.0.0.0/8", "203.0.113.7, not-an-ip", "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, envOpt{rules: notesRules, vars: map[string]string{"TRUSTED_PROXY_CIDRS": tt.cidrs}})
			hdr := map[string]string{}
			if tt.xff != "" {
				hdr["X-Forwarded-For"] = tt.xff
			}
			e.wantStatus(e.do("GET", "/notes/public", "", hdr), 200)
			got := e.wantAnonymousAt(e.up, testenv.AppKey.ID)
			if ip := got.Headers["X-Auth-Client-Ip"]; len(ip) != 1 || ip[0] != tt.want {
				t.Fatalf("X-Auth-Client-Ip = %v, want %s", ip, tt.want)
			}
		})
	}
}

// UPSTREAM_URL naming an app: one app upstream behind a protected
// catch-all; JWKS, projections and sign-in stay with IDENTITY_URL.
func TestUpstreamURLAlias(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"UPSTREAM_URL": "{{APP}}"}})
	tok := e.token(nil)
	e.wantStatus(e.do("GET", "/anything/here", tok, nil), 200)
	e.wantSignedAt(e.up, testenv.AppKey.ID)
	e.wantProblem(e.do("GET", "/anything/here", "", nil), 401, problem.CodeUnauthenticated)
	e.reset()
	e.wantStatus(e.do("POST", "/api/v1/auth/token", "", nil), 200)
	e.wantAnonymousAt(e.core, "core")
	if len(e.up.Received()) != 0 {
		t.Fatal("sign-in reached the app")
	}
	if e.up.ProjectionFetches.Load() != 0 || e.up.JWKSFetches.Load() != 0 {
		t.Fatal("identity data fetched from the app")
	}
}

// An HTTP/1.0 request without Host to an app is refused, on a public
// route too: the app got its own address as the Host (and
// X-Forwarded-Host) the client asked for.
func TestAppHTTP10(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /notes/public HTTP/1.0\r\n\r\n")
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400") && !strings.HasPrefix(string(b), "HTTP/1.0 400") {
		t.Fatalf("response %q", b)
	}
	e.wantNothingForwarded()
}

// Trailers from clients are refused: fasthttp reads them into the request
// header, where an upstream's Peek finds them like headers.
func TestClientTrailersRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	tok := e.token(nil)
	tests := []struct{ name, path, trailerHeader, trailer string }{
		{"announced identity trailer to the app", "/notes/maybe", "Trailer: X-Auth-Roles\r\n", "X-Auth-Roles: owner\r\n"},
		{"unannounced identity trailer to the app", "/notes/maybe", "", "X-Auth-User-Id: evil\r\n"},
		{"underscore spelling", "/notes/maybe", "", "X_Auth_Permissions: notes:write\r\n"},
		{"any trailer to core", "/api/v1/auth/token", "", "X-Custom: evil\r\n"},
		{"announced only", "/api/v1/auth/token", "Trailer: X-Custom\r\n", ""},
	}
	for _, tt := range tests {
		for _, auth := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/bearer=%v", tt.name, auth), func(t *testing.T) {
				e := e.with(t)
				e.reset()
				req := "POST " + tt.path + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + tt.trailerHeader
				if auth {
					req += "Authorization: Bearer " + tok + "\r\n"
				}
				req += "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n" + tt.trailer + "\r\n"
				r := e.raw(req)
				e.wantProblem(r, 400, problem.CodeBadRequest)
				if strings.Contains(string(r.body), "evil") || strings.Contains(string(r.body), "owner") {
					t.Fatalf("400 echoes the request: %s", r.body)
				}
				e.wantNothingForwarded()
			})
		}
	}
	t.Run("chunked without trailers is fine", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		r := e.raw("POST /notes/maybe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
		e.wantStatus(r, 200)
		if got := e.up.Last(t); string(got.Body) != "hello" || got.VerifyErr != nil {
			t.Fatalf("body %q, verify %v", got.Body, got.VerifyErr)
		}
	})
}

// A logout, a session revoke or a password change (which signs every
// other session out and moves the token version on) forwarded by this
// proxy takes effect here at once, without waiting for the NATS event:
// coreapi's answer names the caller (X-Auth-Invalidated).
func TestLocalEvictionOnSessionEnd(t *testing.T) {
	t.Parallel()
	revoked := func(p *identity.Projection) { p.RevokedSessions = []string{sessionID} }
	for _, tc := range []struct {
		method, path string
		ended        func(*identity.Projection)
	}{
		{"POST", "/api/v1/auth/logout", revoked},
		{"DELETE", "/api/v1/users/me/sessions/" + sessionID, revoked},
		{"PUT", "/api/v1/users/me/password", func(p *identity.Projection) { p.TokenVersion++ }},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			e := start(t, envOpt{})
			tok := e.token(nil)
			e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
			// coreapi commits the change; no event arrives.
			p := defaultProjection()
			tc.ended(&p)
			e.core.SetProjection(p)
			e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200) // cached, as expected
			answerInvalidated(e.core, invalidation.UserSubject(userID))
			e.wantStatus(e.do(tc.method, tc.path, tok, nil), 200)
			answerInvalidated(e.core)
			e.wantProblem(e.do("GET", "/api/v1/users/me", tok, nil), 401, problem.CodeInvalidToken)
		})
	}
	t.Run("other requests keep the cache", func(t *testing.T) {
		e := start(t, envOpt{})
		tok := e.token(nil)
		e.wantStatus(e.do("GET", "/api/v1/users/me", tok, nil), 200)
		n := e.core.ProjectionFetches.Load()
		for _, r := range [][2]string{{"GET", "/api/v1/auth/logout"}, {"DELETE", "/api/v1/users/me/sessions"},
			{"DELETE", "/api/v1/users/me/sessions/" + sessionID + "/x"}, {"POST", "/api/v1/users/me"},
			{"GET", "/api/v1/users/me/password"}, {"PUT", "/api/v1/users/me"}} {
			e.do(r[0], r[1], tok, nil)
		}
		if got := e.core.ProjectionFetches.Load(); got != n {
			t.Fatalf("projection fetches %d -> %d: the cache was dropped", n, got)
		}
	})
}

// A path that spells a route's prefix in another letter case is refused
// (404, nothing forwarded). Upstreams disagree on case: Go's ServeMux,
// Python's frameworks and Spring compare it, so "/notes/PUBLIC/1" is under
// their "/notes/" handler (protected here), while the proxy, which matches
// ignoring case, would take it for "/notes/public" (public) and forward it
// anonymously; Express and ASP.NET ignore it, so "/NOTES/1" must not fall
// to the catch-all "/" (public) either. The exact spellings are served.
func TestCaseVariantOfAPrefixRefused(t *testing.T) {
	t.Parallel()
	// How a Go upstream reads the paths below.
	mux := http.NewServeMux()
	for _, p := range []string{"/notes/", "/notes/public/", "/"} {
		mux.HandleFunc(p, func(http.ResponseWriter, *http.Request) {})
	}
	if _, pattern := mux.Handler(httptest.NewRequest("GET", "/notes/PUBLIC/1", nil)); pattern != "/notes/" {
		t.Fatalf("ServeMux reads /notes/PUBLIC/1 under %q, want /notes/", pattern)
	}
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	e.wantEachNotFound(t, tok, "/notes/PUBLIC/1", "/notes/Public", "/NOTES/1", "/Notes", "/Notes/public/1")
	t.Run("exact spellings", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.do("GET", "/notes/public/1", "", nil), 200)
		e.wantAnonymousAt(e.up, testenv.AppKey.ID)
		e.wantStatus(e.do("GET", "/notes/1/ATTACHMENTS", tok, nil), 200)
		e.wantSignedAt(e.up, testenv.AppKey.ID)
		e.wantStatus(e.do("GET", "/Other/Path", "", nil), 200)
	})
}

// Routers that ignore case as Unicode does (Python's re.IGNORECASE, as in
// Django's "(?i)" patterns; Java's String.equalsIgnoreCase and Spring's
// PathPattern when not case sensitive; Windows file names) take four
// letters outside ASCII for ASCII ones: "ı" (U+0131) and "İ" (U+0130) for
// i, "ſ" (U+017F) for s, the Kelvin sign (U+212A) for k. A path spelling a
// prefix with one of them is that prefix to such an app, so it is refused
// as another case of the prefix is, never sent to a shorter prefix's route.
func TestUnicodeCaseVariantOfAPrefixRefused(t *testing.T) {
	t.Parallel()
	prefixes := []string{"/notes/public", "/admin", "/notes", "/keys", "/"}
	// How such an app reads a path: unescaped, each character of a
	// prefix matching one equal to it in upper or in lower case.
	readAs := func(path string) string {
		p, err := url.PathUnescape(path)
		if err != nil {
			t.Fatal(err)
		}
		fold := func(r rune) rune { return unicode.ToLower(unicode.ToUpper(r)) }
		for _, pre := range prefixes {
			rs, ps := []rune(p), []rune(pre)
			if pre == "/" || len(rs) < len(ps) || len(rs) > len(ps) && rs[len(ps)] != '/' {
				continue
			}
			same := true
			for i := range ps {
				same = same && (rs[i] == ps[i] || fold(rs[i]) == fold(ps[i]))
			}
			if same {
				return pre
			}
		}
		return "/"
	}
	e := start(t, envOpt{rules: appUpstream + "routes:\n" +
		"  - {prefix: /admin, upstream: notes, access: protected}\n" +
		"  - {prefix: /keys, upstream: notes, access: protected}\n" +
		"  - {prefix: /notes, upstream: notes, access: protected}\n" +
		"  - {prefix: /notes/public, upstream: notes, access: public}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	for _, tc := range []struct{ path, app string }{
		{"/adm%C4%B1n", "/admin"},
		{"/adm%c4%b0n/x", "/admin"},
		{"/%E2%84%AAeys/1", "/keys"},
		{"/note%C5%BF/1", "/notes"},
		{"/note\xc5\xbf", "/notes"},
		{"/notes/publ%C4%B1c/1", "/notes/public"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if p := readAs(tc.path); p != tc.app {
				t.Fatalf("such an app reads %s under %s, want %s", tc.path, p, tc.app)
			}
			e := e.with(t)
			e.reset()
			e.wantProblem(e.raw("GET "+tc.path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 404, problem.CodeNotFound)
			e.wantNothingForwarded()
		})
	}
	t.Run("other letters pass", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.raw("GET /d%C4%B1%C5%9F/admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200)
		e.wantAnonymousAt(e.up, testenv.AppKey.ID)
	})
}

// Routers that read a format suffix after a route's path serve a path
// ending in ".ext" as the route without it: Rails adds "(.:format)" to
// every route (GET /notes.json is notes#index, as JSON), Spring before 5.3
// matched "/notes" against "/notes.*", Grails and CakePHP have the same.
// Matched by whole segments, "/notes.json" is no path under /notes: it
// fell to a shorter prefix's route ("/", public), and such an app served
// /notes to anyone; "/notes/both.json" took /notes's permissions instead
// of /notes/both's. A path whose last segment, cut at its first ".", names
// a longer prefix than the route the path matched is refused 404, never
// forwarded; an extension under the route's own prefix passes.
func TestFormatSuffixOfAPrefixRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	e.core.SetProjection(notesProjection()) // notes:read, not notes:write
	tok := e.token(nil)
	e.wantEachNotFound(t, tok, "/notes.json", "/Notes.json", "/notes.tar.gz", "/notes/both.json", "/notes/public.json", "/notes/maybe.xml?x=1")
	t.Run("extensions under the route's own prefix", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		e.wantStatus(e.do("GET", "/notes/1.json", tok, nil), 200)
		e.wantSignedAt(e.up, testenv.AppKey.ID)
		e.wantStatus(e.do("GET", "/notes/public/a.json", "", nil), 200)
		e.wantAnonymousAt(e.up, testenv.AppKey.ID)
		e.wantStatus(e.do("GET", "/style.css", "", nil), 200)
		e.wantStatus(e.do("GET", "/v1.2/notes", "", nil), 200)
		e.wantStatus(e.do("GET", "/notesx.json", "", nil), 200)
	})
}

// A prefix outside ASCII is written percent-encoded, as request paths are
// matched: it then covers the path however the client spells it, and its
// paths never fall to the public catch-all. (Written raw, "/café" is
// refused at load: it would never match.)
func TestNonASCIIPrefix(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /caf%C3%A9, upstream: notes, access: protected}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	for _, path := range []string{"/café/menu", "/caf%C3%A9/menu", "/caf%c3%a9/menu"} {
		t.Run(path, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			e.wantProblem(e.raw("GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 401, problem.CodeUnauthenticated)
			e.wantNothingForwarded()
		})
	}
}

// The path the proxy routes (and signs) is the request line's: a header
// that names another one, which older Symfony and Zend Framework releases
// and IIS's URL Rewrite obey (X-Original-URL, X-Rewrite-URL), or in which
// a proxy in front tells an app the path it was asked for (nginx's
// X-Original-URI, Traefik's X-Forwarded-Uri, X-Forwarded-Path,
// X-Original-Path, Envoy's X-Envoy-Original-Path), never reaches an
// upstream, from a trusted peer either: a public route's request cannot
// have such an app serve a protected path.
func TestPathOverrideHeadersRemoved(t *testing.T) {
	t.Parallel()
	names := []string{"X-Original-URL", "x-original-url", "X_Original_URL", "X-Rewrite-URL", "x_rewrite_url",
		"X-Original-URI", "x_original_uri", "X-Forwarded-Uri", "X-Forwarded-URI", "X-Forwarded-Path", "x_forwarded_path",
		"X-Original-Path", "X-Envoy-Original-Path", "x-envoy-original-path"}
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			vars := map[string]string{}
			if trusted {
				vars["TRUSTED_PROXY_CIDRS"] = "127.0.0.0/8"
			}
			e := start(t, envOpt{rules: notesRules, vars: vars})
			for _, name := range names {
				t.Run(name, func(t *testing.T) { wantNotForwarded(t, e, name, "/notes/secret") })
			}
		})
	}
}

// wantNotForwarded sends a public request carrying the header name: value
// and fails if the value reaches the upstream under any header.
func wantNotForwarded(t *testing.T, e *env, name, value string) {
	t.Helper()
	e = e.with(t)
	e.reset()
	r := e.raw("GET /notes/public HTTP/1.1\r\nHost: x\r\n" + name + ": " + value + "\r\nConnection: close\r\n\r\n")
	e.wantStatus(r, 200)
	got := e.wantAnonymousAt(e.up, testenv.AppKey.ID)
	for k, vs := range got.Headers {
		for _, v := range vs {
			if strings.Contains(v, value) {
				t.Fatalf("%s: %s reached the upstream", k, v)
			}
		}
	}
}

// TestRequestIDUnderscoreVariantRemoved: X_Request_Id (any case, '_' for
// '-') never reaches the upstream: CGI-style servers (WSGI, PHP) file it
// under the name of X-Request-Id, the signed request id, so an app could
// read the client's value for the proxy's.
func TestRequestIDUnderscoreVariantRemoved(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: notesRules})
	for _, name := range []string{"X_Request_Id", "x-request_id"} {
		t.Run(name, func(t *testing.T) { wantNotForwarded(t, e, name, "client-chosen") })
	}
}

// TestRouteBodyLimit: a route's max_body_bytes replaces MAX_BODY_BYTES
// (65536 here) for its requests, above it (uploads, with or without a
// Content-Length) or below it; other routes keep MAX_BODY_BYTES.
func TestRouteBodyLimit(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + `
routes:
  - {prefix: /uploads, methods: [POST, PUT], upstream: notes, access: protected, max_body_bytes: 1048576}
  - {prefix: /uploads/small, upstream: notes, access: public, max_body_bytes: 1024}
  - {prefix: /notes, upstream: notes, access: public}
`})
	// send returns the answer's status, or 0 when the connection was
	// reset while the body was still being sent. The proxy refuses a body
	// over the limit as soon as it knows (from the Content-Length, or once
	// a chunked body passes the limit) and then reads what still arrives
	// for a while before it closes (linger), so the client reads its 413:
	// a reset fails the test.
	send := func(path string, body []byte, chunked bool) int {
		t.Helper()
		var r io.Reader = strings.NewReader(string(body))
		if chunked {
			r = io.MultiReader(r) // no length known: sent chunked
		}
		req, _ := http.NewRequest("POST", "http://"+e.addr+path, r)
		req.Header.Set("Authorization", "Bearer "+e.token(nil))
		resp, err := e.client.Do(req)
		if err != nil {
			if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
				return 0
			}
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	refused := func(status int) bool { return status == 413 }
	big := []byte(strings.Repeat("u", 300_000))
	for _, chunked := range []bool{false, true} {
		e.reset()
		if status := send("/uploads/a?x=1", big, chunked); status != 200 {
			t.Fatalf("chunked %v: upload of %d bytes: %d, want 200", chunked, len(big), status)
		}
		got := e.up.Received()
		if len(got) != 1 || len(got[0].Body) != len(big) || got[0].VerifyErr != nil {
			t.Fatalf("chunked %v: upstream got %d requests, body %d bytes, verify %v", chunked, len(got), len(got[0].Body), got[0].VerifyErr)
		}
		e.reset()
		if status := send("/uploads/a", []byte(strings.Repeat("u", 1048577)), chunked); !refused(status) {
			t.Fatalf("chunked %v: over the route's limit: %d, want 413", chunked, status)
		}
		if status := send("/notes/a", big, chunked); !refused(status) {
			t.Fatalf("chunked %v: over MAX_BODY_BYTES on a route without a limit: %d, want 413", chunked, status)
		}
		// Read whole (it is under MAX_BODY_BYTES), then refused: always
		// a 413.
		if status := send("/uploads/small/x", []byte(strings.Repeat("s", 2000)), chunked); status != 413 {
			t.Fatalf("chunked %v: over a route's lower limit: %d, want 413", chunked, status)
		}
		e.wantNothingForwarded()
	}
	if status := send("/uploads/small/x", []byte(strings.Repeat("s", 1024)), false); status != 200 {
		t.Fatalf("at a route's lower limit: %d, want 200", status)
	}
}

// TestRouteBodyLimitExpectContinue: a request with "Expect: 100-continue"
// (curl's, for a body over 1 KiB) whose Content-Length is over its route's
// limit, or over MAX_BODY_BYTES on a route without one, is answered 413
// before the client sends its body; one within a route's raised limit is
// told to continue and forwarded whole.
func TestRouteBodyLimitExpectContinue(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + `
routes:
  - {prefix: /uploads, methods: [POST, PUT], upstream: notes, access: protected, max_body_bytes: 1048576}
  - {prefix: /uploads/small, upstream: notes, access: public, max_body_bytes: 1024}
  - {prefix: /notes, upstream: notes, access: public}
`})
	tok := e.token(nil)
	// head sends a request's header only and returns the first answer.
	head := func(path string, n int) (*bufio.Reader, net.Conn, *http.Response) {
		t.Helper()
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", path, tok, n)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s, %d bytes: no answer before the body: %v", path, n, err)
		}
		return br, conn, resp
	}
	for _, tc := range []struct {
		path string
		n    int
	}{{"/uploads/a", 1048577}, {"/uploads/a", 50 << 20}, {"/notes/a", 65537}, {"/uploads/small/a", 1025}} {
		e.reset()
		_, _, resp := head(tc.path, tc.n)
		body, _ := io.ReadAll(resp.Body)
		var p problem.Problem
		_ = json.Unmarshal(body, &p)
		if resp.StatusCode != 413 || p.Code != problem.CodeBodyTooLarge || p.RequestID == "" || !resp.Close {
			t.Fatalf("%s, Content-Length %d: %d %s (close %v), want 413 %s before the body, the connection closed",
				tc.path, tc.n, resp.StatusCode, body, resp.Close, problem.CodeBodyTooLarge)
		}
		e.wantNothingForwarded()
	}
	// Within the route's raised limit (over MAX_BODY_BYTES): 100, then the
	// answer to the whole body.
	e.reset()
	body := strings.Repeat("u", 300_000)
	br, conn, resp := head("/uploads/a?x=1", len(body))
	if resp.StatusCode != 100 {
		t.Fatalf("within the route's limit: %d, want 100 Continue", resp.StatusCode)
	}
	if _, err := io.WriteString(conn, body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the body: %v, %v", resp, err)
	}
	resp.Body.Close()
	if got := e.up.Received(); len(got) != 1 || len(got[0].Body) != len(body) || got[0].VerifyErr != nil {
		t.Fatalf("upstream got %d requests (%+v)", len(got), got)
	}
	// As Go's client does it: it waits for the 100 before sending.
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	for _, tc := range []struct {
		n    int
		want int
	}{{300_000, 200}, {1048577, 413}} {
		e.reset()
		sent := &countingReader{r: strings.NewReader(strings.Repeat("u", tc.n))}
		req, _ := http.NewRequest("PUT", "http://"+e.addr+"/uploads/b", sent)
		req.ContentLength = int64(tc.n)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Expect", "100-continue")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("Go client, %d bytes: %d, want %d", tc.n, resp.StatusCode, tc.want)
		}
		if tc.want == 413 && sent.n.Load() != 0 {
			t.Fatalf("Go client, %d bytes: %d bytes of the body sent before the 413", tc.n, sent.n.Load())
		}
	}
}

// TestExpectNotForwarded: the client's Expect is met by the proxy (its
// 100 Continue, then the whole body read) and never forwarded, to an app
// or to coreapi, as Envoy removes it: the upstream would only answer a
// 100 Continue nobody waits for. The request goes through, signed over
// the body it carried; from a raw client, with its 100 before the answer.
func TestExpectNotForwarded(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + `
routes:
  - {prefix: /notes, upstream: notes, access: protected}
`})
	tok := e.token(nil)
	body := strings.Repeat("n", 4096) // over curl's 1 KiB: it sends Expect
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	for _, tc := range []struct {
		path string
		up   *testenv.Core
	}{{"/notes/a", e.up}, {"/api/v1/auth/signup", e.core}} {
		e.reset()
		var got100 atomic.Bool
		req, _ := http.NewRequest("POST", "http://"+e.addr+tc.path, strings.NewReader(body))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{Got100Continue: func() { got100.Store(true) }}))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Expect", "100-continue")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !got100.Load() {
			t.Fatalf("%s: %d, 100 Continue received %v; want 200 after a 100", tc.path, resp.StatusCode, got100.Load())
		}
		wantNoExpect(t, tc.path, tc.up, body)
	}
	// A raw client: the 100, then the answer to the body it sent.
	e.reset()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "PUT /notes/b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nexpect: 100-Continue\r\n\r\n", tok, len(body))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 100 {
		t.Fatalf("before the body: %v, %v; want 100 Continue", resp, err)
	}
	_, _ = io.WriteString(conn, body)
	if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the body: %v, %v", resp, err)
	}
	resp.Body.Close()
	wantNoExpect(t, "raw PUT /notes/b", e.up, body)
}

// wantNoExpect checks that up received one request, with body, validly
// signed, and without an Expect field.
func wantNoExpect(t *testing.T, what string, up *testenv.Core, body string) {
	t.Helper()
	got := up.Received()
	if len(got) != 1 || string(got[0].Body) != body || !got[0].Signed || got[0].VerifyErr != nil {
		t.Fatalf("%s: upstream got %d requests (%+v)", what, len(got), got)
	}
	for name, v := range got[0].Headers {
		if strings.EqualFold(name, "Expect") {
			t.Errorf("%s: upstream got Expect: %q", what, v)
		}
	}
}

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestStripPrefix: a route with strip_prefix forwards the path without its
// prefix (and "/" for the prefix itself), signed as forwarded; the others
// forward the path whole. (Routes of other prefixes to one app as a
// stripped one ask the same of the caller: TestStrippedPrefixAliases.)
func TestStripPrefix(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + `
routes:
  - {prefix: /billing, upstream: notes, access: protected, strip_prefix: true}
  - {prefix: /notes, upstream: notes, access: protected}
`})
	for _, tc := range []struct{ path, want string }{
		{"/billing/invoices/7?due=1&x=%2F", "/invoices/7?due=1&x=%2F"},
		{"/billing", "/"},
		{"/billing/", "/"},
		{"/billing?q=1", "/?q=1"},
		{"/billing/a/../b", "/b"},
		// Never a network-path reference ("//host"), whose userinfo the
		// forwarding client would send as an Authorization header.
		{"/billing//user:pw@evil.example/x", "/user:pw@evil.example/x"},
		{"/notes/x?y=1", "/notes/x?y=1"},
	} {
		e.reset()
		r := e.do("GET", tc.path, e.token(nil), nil)
		e.wantStatus(r, 200)
		got := e.up.Received()
		if len(got) != 1 || got[0].URI != tc.want || got[0].VerifyErr != nil || len(got[0].Headers["Authorization"]) > 0 {
			t.Fatalf("%s: upstream got %+v, want %s signed", tc.path, got, tc.want)
		}
	}
	// A path spelling the prefix in another case is refused, never forwarded
	// with a part of the prefix left on.
	e.reset()
	e.wantStatus(e.do("GET", "/BILLING/invoices", e.token(nil), nil), 404)
	e.wantNothingForwarded()
	// Nor is a path that, stripped, lies under /internal: never
	// forwarded, to an app either; nor one that does to an app that
	// reads some letters outside ASCII as ASCII ones, as Match refuses
	// "/%C4%B0nternal" unstripped (İ, ı as i).
	for _, p := range []string{"/billing/internal", "/billing/internal/hooks?x=1", "/billing/Internal/x", "/billing/%69nternal/x", "/billing/a/../internal/x",
		"/billing/%C4%B0nternal/x", "/billing/%c4%b1nternal", "/billing/%C4%B1NTERNAL/hooks"} {
		e.reset()
		e.wantStatus(e.do("GET", p, e.token(nil), nil), 404)
		e.wantNothingForwarded()
	}
	e.reset()
	e.wantStatus(e.do("GET", "/billing/internals", e.token(nil), nil), 200)
}

// TestRewriteHost: an upstream with rewrite_host gets its own host as Host
// (the client's in X-Forwarded-Host); any other keeps the client's Host.
func TestRewriteHost(t *testing.T) {
	t.Parallel()
	for _, rewrite := range []bool{false, true} {
		rules := appUpstream
		if rewrite {
			rules += "    rewrite_host: true\n"
		}
		e := start(t, envOpt{rules: rules + "routes:\n  - {prefix: /notes, upstream: notes, access: public}\n"})
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/notes/x", nil)
		req.Host = "app.example.com"
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := e.up.Received()
		if resp.StatusCode != 200 || len(got) != 1 || got[0].VerifyErr != nil {
			t.Fatalf("rewrite %v: %d, upstream got %+v", rewrite, resp.StatusCode, got)
		}
		want := "app.example.com"
		if rewrite {
			want = e.up.Addr
		}
		if h := got[0].Headers["Host"]; len(h) != 1 || h[0] != want {
			t.Fatalf("rewrite %v: Host %q, want %q", rewrite, h, want)
		}
		if h := got[0].Headers["X-Forwarded-Host"]; len(h) != 1 || h[0] != "app.example.com" {
			t.Fatalf("rewrite %v: X-Forwarded-Host %q", rewrite, h)
		}
	}
}

// TestUpstreamTimeout: an upstream's timeout replaces UPSTREAM_TIMEOUT
// (300ms here) for its requests; without one, UPSTREAM_TIMEOUT holds.
func TestUpstreamTimeout(t *testing.T) {
	for _, tc := range []struct {
		timeout string
		want    int
	}{{"", 504}, {", timeout: 5s", 200}} {
		e := start(t, envOpt{vars: map[string]string{"UPSTREAM_TIMEOUT": "300ms"}, rules: `
upstreams:
  notes: {url: "{{APP}}", key_id: app-notes` + tc.timeout + `}
routes:
  - {prefix: /app, upstream: notes, access: public}
`})
		gate := make(chan struct{})
		e.up.SlowGate.Store(&gate)
		time.AfterFunc(time.Second, func() { close(gate) }) // the app answers after 1s
		if r := e.do("GET", "/app/slow", "", nil); r.status != tc.want {
			t.Fatalf("upstream%s: %d, want %d", tc.timeout, r.status, tc.want)
		}
	}
}

// TestLargeResponseHeader: an app's answer header up to 16 KiB (a large
// Set-Cookie) reaches the client; a larger one is 502.
func TestLargeResponseHeader(t *testing.T) {
	t.Parallel()
	cookie := strings.Repeat("c", 12<<10)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big/huge" {
			w.Header().Set("X-Huge", strings.Repeat("h", 20<<10))
		}
		w.Header().Set("Set-Cookie", "s="+cookie)
		_, _ = io.WriteString(w, "ok")
	}))
	defer app.Close()
	e := start(t, envOpt{rules: "upstreams:\n  big: {url: '" + app.URL + "', key_id: app-notes}\nroutes:\n  - {prefix: /big, upstream: big, access: public}\n"})
	r := e.do("GET", "/big/x", "", nil)
	e.wantStatus(r, 200)
	if got := r.header.Get("Set-Cookie"); got != "s="+cookie {
		t.Fatalf("Set-Cookie of %d bytes, want %d", len(got), len(cookie)+2)
	}
	e.wantProblem(e.do("GET", "/big/huge", "", nil), 502, problem.CodeUpstreamDown)
}

// TestRouteBodyLimitAbsoluteForm: a request line in absolute form
// (RFC 9112 section 3.2.2: a server accepts it) gets its route's raised
// body limit as the same path in origin form does, with or without
// "Expect: 100-continue": the hook reading the headers finds the route
// from the path the handler routes by, not from the raw request target.
func TestRouteBodyLimitAbsoluteForm(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + `
routes:
  - {prefix: /uploads, methods: [POST, PUT], upstream: notes, access: protected, max_body_bytes: 1048576}
  - {prefix: /notes, upstream: notes, access: public}
`})
	tok := e.token(nil)
	body := strings.Repeat("u", 300_000)
	for _, target := range []string{"http://x/uploads/a?q=1", "HTTP://X:80/uploads/a"} {
		for _, expect := range []bool{false, true} {
			e.reset()
			conn, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			hdr := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n", target, tok, len(body))
			br := bufio.NewReader(conn)
			if expect {
				fmt.Fprint(conn, hdr+"Expect: 100-continue\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != 100 {
					t.Fatalf("%s: %v %v, want 100 Continue", target, resp, err)
				}
			} else {
				fmt.Fprint(conn, hdr+"\r\n")
			}
			_, _ = io.WriteString(conn, body)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%s (expect %v): %v", target, expect, err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s (expect %v): %d, want 200", target, expect, resp.StatusCode)
			}
			if got := e.up.Received(); len(got) != 1 || len(got[0].Body) != len(body) || !strings.HasPrefix(got[0].URI, "/uploads/a") {
				t.Fatalf("%s (expect %v): upstream got %+v", target, expect, got)
			}
		}
	}
}

// wantEachNotFound checks, in a subtest per path, that a GET of each path
// is answered 404 not_found without a token and with tok, and that
// nothing is forwarded.
func (e *env) wantEachNotFound(t *testing.T, tok string, paths ...string) {
	t.Helper()
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			for _, token := range []string{"", tok} {
				e.wantProblem(e.do("GET", path, token, nil), 404, problem.CodeNotFound)
				e.wantNothingForwarded()
			}
		})
	}
}
