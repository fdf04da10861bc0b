package app

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

const appOrigin = "https://app.example.com"

func preflightHeaders(origin string) map[string]string {
	return map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST",
		"Access-Control-Request-Headers": "authorization, content-type"}
}

func TestCORSOff(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{})
	r := e.do("OPTIONS", "/api/v1/users/me", "", preflightHeaders(appOrigin))
	if r.status == http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Access-Control-Allow-Methods") != "" {
		t.Fatalf("preflight without CORS_ALLOWED_ORIGINS: %d %v", r.status, r.header)
	}
	r = e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"Origin": appOrigin})
	e.wantStatus(r, 200)
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS header without CORS_ALLOWED_ORIGINS: %v", r.header)
	}
}

func TestCORSListedOrigins(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"CORS_ALLOWED_ORIGINS": "https://APP.example.com:443, http://localhost:3000"}})

	t.Run("a preflight is answered without a token and not forwarded", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		r := e.do("OPTIONS", "/api/v1/users/me", "", preflightHeaders(appOrigin))
		e.wantStatus(r, http.StatusNoContent)
		e.wantNothingForwarded()
		h := r.header
		if h.Get("Access-Control-Allow-Origin") != appOrigin || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") ||
			h.Get("Access-Control-Max-Age") != "600" || !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Fatalf("preflight headers: %v", h)
		}
		if h.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatalf("credentials allowed by default: %v", h)
		}
	})
	t.Run("a preflight from another origin gets nothing", func(t *testing.T) {
		e := e.with(t)
		r := e.do("OPTIONS", "/api/v1/users/me", "", preflightHeaders("https://evil.example.com"))
		if r.status == http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Access-Control-Allow-Methods") != "" {
			t.Fatalf("preflight from an unlisted origin: %d %v", r.status, r.header)
		}
	})
	t.Run("answers to a listed origin carry the headers, refusals too", func(t *testing.T) {
		e := e.with(t)
		r := e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"Origin": "http://localhost:3000"})
		e.wantStatus(r, 200)
		if r.header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" || !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "X-Request-Id") {
			t.Fatalf("headers: %v", r.header)
		}
		r = e.do("GET", "/api/v1/users/me", "", map[string]string{"Origin": appOrigin})
		e.wantProblem(r, 401, "unauthenticated")
		if r.header.Get("Access-Control-Allow-Origin") != appOrigin || !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "WWW-Authenticate") {
			t.Fatalf("a 401 to a listed origin lacks CORS headers: %v", r.header)
		}
	})
	t.Run("another origin's request gets no CORS headers", func(t *testing.T) {
		e := e.with(t)
		r := e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"Origin": "https://app.example.com.evil.net"})
		e.wantStatus(r, 200)
		if r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("headers: %v", r.header)
		}
	})
}

func TestCORSCredentials(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"CORS_ALLOWED_ORIGINS": appOrigin, "CORS_ALLOW_CREDENTIALS": "true", "CORS_MAX_AGE": "0s"}})
	r := e.do("OPTIONS", "/api/v1/users/me", "", preflightHeaders(appOrigin))
	e.wantStatus(r, http.StatusNoContent)
	if r.header.Get("Access-Control-Allow-Credentials") != "true" || r.header.Get("Access-Control-Allow-Origin") != appOrigin || r.header.Get("Access-Control-Max-Age") != "" {
		t.Fatalf("headers: %v", r.header)
	}
}

// TestCORSAnyOrigin: * answers any origin with *, never with credentials.
func TestCORSAnyOrigin(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"CORS_ALLOWED_ORIGINS": "*"}})
	r := e.do("OPTIONS", "/api/v1/users/me", "", preflightHeaders("https://anyone.example"))
	e.wantStatus(r, http.StatusNoContent)
	if r.header.Get("Access-Control-Allow-Origin") != "*" || r.header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("headers: %v", r.header)
	}
	r = e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"Origin": "https://anyone.example"})
	if r.header.Get("Access-Control-Allow-Origin") != "*" || r.header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("headers: %v", r.header)
	}
}

// TestCORSOnEventStreams: an event stream (written by the proxy itself on
// the hijacked connection) carries the same CORS headers as any answer.
func TestCORSOnEventStreams(t *testing.T) {
	t.Parallel()
	e, _ := startStreams(t, map[string]string{"CORS_ALLOWED_ORIGINS": appOrigin})
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/notes/events", nil)
	req.Header.Set("Authorization", "Bearer "+e.token(nil))
	req.Header.Set("Origin", appOrigin)
	resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream answer %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != appOrigin || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "X-Request-Id") {
		t.Fatalf("stream headers lack CORS: %v", resp.Header)
	}
}

// TestCORSPreflightLogged: a preflight the proxy answers itself is
// access-logged with its path, as every other request is.
func TestCORSPreflightLogged(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"CORS_ALLOWED_ORIGINS": appOrigin, "ACCESS_LOG": "true"}})
	e.wantStatus(e.do("OPTIONS", "/api/v1/users/me", "", preflightHeaders(appOrigin)), http.StatusNoContent)
	lines := accessLines(t, e)
	if len(lines) != 1 || lines[0]["outcome"] != "preflight" || lines[0]["path"] != "/api/v1/users/me" {
		t.Fatalf("access log %v, want the preflight of /api/v1/users/me", lines)
	}
}

// TestCORSExtraHeaders: CORS_ALLOW_HEADERS and CORS_EXPOSE_HEADERS add to
// the built-in lists, on preflights and on answers.
func TestCORSExtraHeaders(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{vars: map[string]string{"CORS_ALLOWED_ORIGINS": appOrigin,
		"CORS_ALLOW_HEADERS": "Idempotency-Key", "CORS_EXPOSE_HEADERS": "ETag, Content-Disposition"}})
	r := e.do("OPTIONS", "/api/v1/users/me", "", preflightHeaders(appOrigin))
	e.wantStatus(r, http.StatusNoContent)
	if got := r.header.Get("Access-Control-Allow-Headers"); got != "Authorization, Content-Type, X-API-Key, X-Request-Id, Last-Event-ID, Idempotency-Key" {
		t.Fatalf("Access-Control-Allow-Headers %q", got)
	}
	r = e.do("GET", "/api/v1/users/me", e.token(nil), map[string]string{"Origin": appOrigin})
	e.wantStatus(r, 200)
	if got := r.header.Get("Access-Control-Expose-Headers"); got != "X-Request-Id, WWW-Authenticate, Retry-After, Location, ETag, Content-Disposition" {
		t.Fatalf("Access-Control-Expose-Headers %q", got)
	}
}

// TestCORSPreflightRouted: a preflight from a listed origin is routed as
// the request it announces (Access-Control-Request-Method) before it is
// answered, without a credential looked at: a malformed path is 400, a
// path no route covers 404, /internal 404, a method the path's routes
// refuse 405 with Allow (501 for one no route names); otherwise 204 with
// the methods of the route that takes the announced one. Nothing is
// forwarded.
func TestCORSPreflightRouted(t *testing.T) {
	t.Parallel()
	rules := davRules + "  - {prefix: /notes, methods: [POST, DELETE], upstream: notes, access: protected, permissions: [notes:write]}\n"
	e := start(t, envOpt{rules: rules, vars: map[string]string{"CORS_ALLOWED_ORIGINS": appOrigin}})
	// A route that strips its prefix, alone (beside the others it would
	// open their app paths).
	stripped := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /billing, upstream: notes, access: protected, strip_prefix: true}\n",
		vars: map[string]string{"CORS_ALLOWED_ORIGINS": appOrigin}})
	preflight := func(e *env, path, method string) result {
		return e.raw("OPTIONS " + path + " HTTP/1.1\r\nHost: x\r\nOrigin: " + appOrigin + "\r\nAccess-Control-Request-Method: " + method +
			"\r\nAccess-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n")
	}
	for _, tc := range []struct {
		path, method string
		status       int
		code         string
		allow        string // Access-Control-Allow-Methods of a 204, Allow of a 405
	}{
		{"/notes/1", "GET", 204, "", "GET, HEAD"},
		{"/notes", "DELETE", 204, "", "POST, DELETE"},
		{"/dav/a", "PROPFIND", 204, "", "GET, HEAD, PROPFIND, MKCOL"},
		{"/notes/maybe", "PUT", 204, "", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
		{"/api/v1/users/me", "PATCH", 204, "", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
		{"/api/v1/auth/token", "POST", 204, "", "POST"},
		{"/nothing-here", "GET", 404, problem.CodeNotFound, ""},
		{"/internal/x", "GET", 404, problem.CodeNotFound, ""},
		{"/INTERNAL/v1/projections/u", "GET", 404, problem.CodeNotFound, ""},
		{"stripped /billing/x", "GET", 204, "", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
		{"stripped /billing/internal/x", "GET", 404, problem.CodeNotFound, ""},
		{"stripped /billing/%C4%B0nternal/x", "GET", 404, problem.CodeNotFound, ""},
		{"/notes/%2Fx", "GET", 400, problem.CodeBadPath, ""},
		{"/notes/%zz", "GET", 400, problem.CodeBadPath, ""},
		{"/notes/a;b", "GET", 400, problem.CodeBadPath, ""},
		{"/notes/1", "PUT", 405, problem.CodeMethodNotAllowed, "GET, HEAD, POST, DELETE"},
		{"/api/v1/auth/token", "GET", 405, problem.CodeMethodNotAllowed, "POST"},
		{"/dav/a", "PROPPATCH", 501, problem.CodeNotImplemented, ""},
	} {
		e := e
		if p, ok := strings.CutPrefix(tc.path, "stripped "); ok {
			e, tc.path = stripped, p
		}
		e.reset()
		r := preflight(e, tc.path, tc.method)
		name := tc.method + " " + tc.path
		if r.status != tc.status || tc.code != "" && r.prob.Code != tc.code {
			t.Errorf("%s: %d %q, want %d %q (body %s)", name, r.status, r.prob.Code, tc.status, tc.code, r.body)
			continue
		}
		e.wantNothingForwarded()
		if r.header.Get("Access-Control-Allow-Origin") != appOrigin {
			t.Fatalf("%s: Access-Control-Allow-Origin %q", name, r.header.Get("Access-Control-Allow-Origin"))
		}
		switch tc.status {
		case 204:
			if got := r.header.Get("Access-Control-Allow-Methods"); got != tc.allow {
				t.Errorf("%s: Access-Control-Allow-Methods %q, want %q", name, got, tc.allow)
			}
		case 405:
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Fatalf("%s: Allow %q, want %q", name, got, tc.allow)
			}
			fallthrough
		default:
			if got := r.header.Get("Access-Control-Allow-Methods"); got != "" {
				t.Fatalf("%s: a refused preflight allows methods %q", name, got)
			}
		}
	}
}

// TestStrippedInternalRefusedAlike: on a route that strips its prefix, a
// path whose stripped rest lies under /internal (in any case, Unicode's
// included) is refused alike whether it comes as a CORS preflight or as
// the request itself, with a valid token: 404 not_found, outcome
// no_route, nothing forwarded; the request's other paths are forwarded.
func TestStrippedInternalRefusedAlike(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /billing, upstream: notes, access: protected, strip_prefix: true}\n",
		vars: map[string]string{"CORS_ALLOWED_ORIGINS": appOrigin, "ACCESS_LOG": "true", "LOG_LEVEL": "info"}})
	tok := e.token(nil)
	send := func(preflight bool, path string) result {
		req := "GET " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n"
		if preflight {
			req = "OPTIONS " + path + " HTTP/1.1\r\nHost: x\r\nOrigin: " + appOrigin + "\r\nAccess-Control-Request-Method: GET\r\n"
		}
		return e.raw(req + "Connection: close\r\n\r\n")
	}
	for _, path := range []string{"/billing/internal/x", "/billing/INTERNAL/v1/projections/u", "/billing/%C4%B0nternal/x", "/billing/internal"} {
		for _, preflight := range []bool{true, false} {
			name := map[bool]string{true: "preflight", false: "request"}[preflight] + " " + path
			e.reset()
			r := send(preflight, path)
			if r.status != http.StatusNotFound || r.prob.Code != problem.CodeNotFound {
				t.Errorf("%s: %d %q, want 404 %q (body %s)", name, r.status, r.prob.Code, problem.CodeNotFound, r.body)
				continue
			}
			e.wantNothingForwarded()
			line := openingLine(t, e, r.header.Get(requestid.Header))
			if line["outcome"] != "no_route" {
				t.Errorf("%s: outcome %v, want no_route", name, line["outcome"])
			}
		}
	}
	// The same route's other paths: a preflight allowed, a request forwarded.
	e.reset()
	if r := send(true, "/billing/x/internal"); r.status != http.StatusNoContent {
		t.Errorf("preflight /billing/x/internal: %d, want 204 (body %s)", r.status, r.body)
	}
	if r := send(false, "/billing/x/internal"); r.status != http.StatusOK {
		t.Errorf("request /billing/x/internal: %d, want 200 (body %s)", r.status, r.body)
	} else if got := e.up.Received(); len(got) != 1 || got[0].URI != "/x/internal" {
		t.Errorf("forwarded %+v, want /x/internal", got)
	}
}
