package app

import (
	"net/http"
	"strings"
	"testing"
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
