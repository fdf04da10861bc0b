package rules

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/pathnorm"
)

const coreURL = "http://127.0.0.1:8081"

var testEnv = Env{CoreURL: coreURL, UpstreamKeyIDs: []string{"app-notes", "app-other", "app-third"}, CoreKeyIDs: []string{"core"}}

// match returns the route for method and path, or nil with the HTTP status
// of the refusal (404 or 405) and the Allow header.
func match(tb testing.TB, t *Table, method, path string) (*Route, int, string) {
	tb.Helper()
	g, _ := t.Match([]byte(path), nil)
	if g == nil {
		return nil, 404, ""
	}
	r := g.Pick([]byte(method))
	if r == nil && !t.Knows([]byte(method)) {
		return nil, 501, ""
	}
	if r == nil {
		return nil, 405, g.Allow
	}
	return r, 200, ""
}

func TestCoreRoutes(t *testing.T) {
	tb, err := Load("", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(tb.Upstreams) != 1 || tb.Upstreams[0].Name != CoreUpstream || tb.Upstreams[0].Addr != "127.0.0.1:8081" {
		t.Fatalf("upstreams = %+v", tb.Upstreams)
	}
	tests := []struct {
		method, path string
		status       int
		access       Access
	}{
		{"POST", "/api/v1/auth/signup", 200, Public},
		{"GET", "/api/v1/auth/signup", 405, 0},
		{"POST", "/api/v1/auth/token", 200, Optional},
		{"GET", "/api/v1/auth/oauth/google/authorize", 200, Public},
		{"HEAD", "/api/v1/auth/oauth/google/authorize", 200, Public},
		{"GET", "/api/v1/auth/oauth/google/callback", 200, Public},
		// A link's one-time URL, opened by a navigation without a bearer.
		{"GET", "/api/v1/auth/oauth/google/link", 200, Public},
		{"POST", "/api/v1/auth/logout", 200, Protected},
		{"POST", "/api/v1/auth/verify-email", 200, Optional},
		{"POST", "/api/v1/auth/verify-email/resend", 200, Protected},
		{"POST", "/api/v1/auth/password/forgot", 200, Public},
		{"POST", "/api/v1/invitations/accept", 200, Optional},
		{"GET", "/api/v1/invitations", 200, Protected},
		{"GET", "/.well-known/jwks.json", 200, Public},
		{"GET", "/.well-known/openid-configuration", 200, Public},
		{"POST", "/.well-known/jwks.json", 405, 0},
		{"GET", "/openapi.json", 200, Public},
		{"GET", "/verify-email", 200, Public},
		{"POST", "/reset-password", 200, Public},
		{"GET", "/api/v1/users/me", 200, Protected},
		{"DELETE", "/api/v1/users/123", 200, Protected},
		// A method outside the standard ones, which no route names: 501.
		{"BREW", "/api/v1/users", 501, 0},
		// A prefix spelled in another case: 404, never a shorter route.
		{"GET", "/API/V1/USERS/me", 404, 0},
		{"GET", "/api/v1/users/ME", 200, Protected},
		{"GET", "/api/v1/usersx", 404, 0},
		{"GET", "/api", 404, 0},
		{"GET", "/", 404, 0},
		{"GET", "/internal/v1/projections/u", 404, 0},
		{"GET", "/internal", 404, 0},
		{"GET", "/INTERNAL/v1/projections/u", 404, 0},
		{"GET", "/metrics", 404, 0},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r, status, _ := match(t, tb, tt.method, tt.path)
			if status != tt.status || (r != nil && (r.Access != tt.access || !r.Core || r.Upstream != 0)) {
				t.Fatalf("%s %s = %d %+v, want %d %v", tt.method, tt.path, status, r, tt.status, tt.access)
			}
		})
	}
}

const notesFile = `
upstreams:
  notes: {url: "http://127.0.0.1:8082", key_id: app-notes}
  other: {url: "http://10.0.0.9", key_id: app-other}
  pages: {url: "http://10.0.0.10", key_id: app-third}
routes:
  - {prefix: /notes, methods: [GET], upstream: notes, access: protected, permissions: [notes:read]}
  - {prefix: /notes, methods: [POST], upstream: notes, access: protected, permissions: [notes:write], require_verified_email: true, max_body_bytes: 10485760}
  - {prefix: /notes/public, upstream: pages, access: optional, strip_prefix: true}
  - {prefix: /notes-admin, upstream: other, access: protected, permissions: [notes:admin], require_mfa: true, max_auth_age: 5m}
  - {prefix: /events, methods: [GET], upstream: notes, access: protected, websocket: true, stream_timeout: 10m}
  - {prefix: /, upstream: other, access: public}
  - {prefix: /api/v1/invoices, upstream: other, access: protected}
  - {prefix: /Reports, upstream: other, access: protected}
`

func TestAppRoutes(t *testing.T) {
	tb, err := Parse([]byte(notesFile), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	up := func(r *Route) string { return tb.Upstreams[r.Upstream].Name }
	tests := []struct {
		method, path string
		status       int
		upstream     string
		perms        string
	}{
		{"GET", "/notes", 200, "notes", "notes:read"},
		{"HEAD", "/notes/1", 200, "notes", "notes:read"},
		{"POST", "/notes", 200, "notes", "notes:write"},
		// The longest prefix excludes the method: 405, never "/".
		{"DELETE", "/notes/1", 405, "", ""},
		// Whole segments: /notes-admin is not under /notes.
		{"GET", "/notes-admin", 200, "other", "notes:admin"},
		{"GET", "/notes-admin/x", 200, "other", "notes:admin"},
		{"GET", "/notesx", 200, "other", ""},
		{"GET", "/notes/public/x", 200, "pages", ""},
		// The longest prefix (compared ignoring case) spelled in another
		// case: 404, neither its route nor a shorter one's ("/notes"
		// to an upstream that compares case, "/" to one that does not).
		{"GET", "/NOTES/1", 404, "", ""},
		// Upper case after a lower-case start (matched on a lower-cased copy).
		{"GET", "/noTES/1", 404, "", ""},
		{"GET", "/notes/PUBLIC/x", 404, "", ""},
		{"GET", "/notes-Admin", 404, "", ""},
		// Beyond the prefix, case is the upstream's business.
		{"GET", "/notes/public/X", 200, "pages", ""},
		{"GET", "/Reports/Q1", 200, "other", ""},
		{"GET", "/reports/Q1", 404, "", ""},
		{"GET", "/Anything/Else", 200, "other", ""},
		{"GET", "/anything/else", 200, "other", ""},
		{"GET", "/", 200, "other", ""},
		// A route without methods admits neither TRACE nor CONNECT.
		{"TRACE", "/anything/else", 405, "", ""},
		{"CONNECT", "/anything/else", 405, "", ""},
		// Nor any method outside the standard ones, which no route names
		// here: 501, as anywhere.
		{"PROPFIND", "/anything/else", 501, "", ""},
		{"GET", "/api/v1/invoices/7", 200, "other", ""},
		// Core prefixes still win over the catch-all.
		{"POST", "/api/v1/auth/token", 200, "core", ""},
		{"GET", "/api/v1/auth/token", 405, "", ""},
		// /internal is never routed, catch-all or not.
		{"GET", "/internal/v1/projections/u", 404, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r, status, allow := match(t, tb, tt.method, tt.path)
			if status != tt.status {
				t.Fatalf("status = %d, want %d", status, tt.status)
			}
			if status == 405 && allow == "" {
				t.Fatal("405 without Allow")
			}
			if r != nil && (up(r) != tt.upstream || strings.Join(r.Permissions, ",") != tt.perms) {
				t.Fatalf("route = %s %v, want %s [%s]", up(r), r.Permissions, tt.upstream, tt.perms)
			}
		})
	}
	if _, _, allow := match(t, tb, "DELETE", "/notes"); allow != "GET, HEAD, POST" {
		t.Fatalf("Allow = %q", allow)
	}
	r, _, _ := match(t, tb, "POST", "/notes")
	if !r.RequireVerifiedEmail || r.MaxBodyBytes != 10<<20 {
		t.Fatalf("require_verified_email/max_body_bytes = %v %d", r.RequireVerifiedEmail, r.MaxBodyBytes)
	}
	if r, _, _ := match(t, tb, "GET", "/notes"); r.MaxBodyBytes != 0 {
		t.Fatalf("max_body_bytes of a route without one = %d", r.MaxBodyBytes)
	}
	if r, _, _ := match(t, tb, "GET", "/notes/public/x"); !r.StripPrefix {
		t.Fatal("strip_prefix lost")
	}
	if _, err := Core("http://127.0.0.1:8081"); err != nil {
		t.Fatalf("built-in table: %v", err)
	}
	r, _, _ = match(t, tb, "GET", "/notes-admin")
	if !r.RequireMFA || r.MaxAuthAge != 5*time.Minute {
		t.Fatalf("require_mfa/max_auth_age = %v %v", r.RequireMFA, r.MaxAuthAge)
	}
	r, _, _ = match(t, tb, "GET", "/events")
	if !r.Websocket || r.StreamTimeout != 10*time.Minute {
		t.Fatalf("websocket/stream_timeout = %v %v", r.Websocket, r.StreamTimeout)
	}
	if tb.Upstreams[2].Addr != "10.0.0.9:80" || tb.Upstreams[1].KeyID != "app-notes" {
		t.Fatalf("upstreams = %+v", tb.Upstreams)
	}
	r, _, _ = match(t, tb, "GET", "/notes/public")
	if r.Access != Optional {
		t.Fatalf("access = %v", r.Access)
	}
}

// An upstream may be https:// (port 443 unless given), coreapi's
// IDENTITY_URL too.
func TestUpstreamSchemes(t *testing.T) {
	tb, err := Parse([]byte("upstreams:\n  a: {url: 'https://a.example', key_id: app-notes}\n  b: {url: 'https://10.0.0.9:8443/', key_id: app-other}\n  c: {url: 'http://c.example', key_id: app-third}\nroutes: []\n"), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Upstream{"a": {Addr: "a.example:443", TLS: true}, "b": {Addr: "10.0.0.9:8443", TLS: true}, "c": {Addr: "c.example:80"}}
	for _, u := range tb.Upstreams[1:] {
		if w := want[u.Name]; u.Addr != w.Addr || u.TLS != w.TLS {
			t.Errorf("%s: %s tls=%v, want %s tls=%v", u.Name, u.Addr, u.TLS, w.Addr, w.TLS)
		}
	}
	if tb.Upstreams[0].TLS {
		t.Error("core (http://) speaks TLS")
	}
	for url, addr := range map[string]string{"https://coreapi-internal:8081": "coreapi-internal:8081", "https://coreapi-internal": "coreapi-internal:443"} {
		tb, err := Parse([]byte("routes: []"), Env{CoreURL: url, CoreKeyIDs: []string{"core"}})
		if err != nil {
			t.Fatalf("IDENTITY_URL %s: %v", url, err)
		}
		if u := tb.Upstreams[0]; !u.TLS || u.Addr != addr {
			t.Errorf("IDENTITY_URL %s: core at %s tls=%v, want %s over TLS", url, u.Addr, u.TLS, addr)
		}
	}
}

func TestBadFiles(t *testing.T) {
	const ups = "upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\n"
	tests := []struct{ name, body, want string }{
		{"unknown field", ups + "routes: [{prefix: /a, upstream: notes, access: public, extra: 1}]", "unknown field"},
		{"bad access", ups + "routes: [{prefix: /a, upstream: notes, access: maybe}]", "access"},
		{"deny is gone", ups + "routes: [{prefix: /a, upstream: notes, access: deny}]", "access"},
		// An empty list is not "no methods": left out, methods means any.
		{"empty methods", ups + "routes: [{prefix: /a, methods: [], upstream: notes, access: protected}]", "route 1 (/a): methods: [] admits no method"},
		{"method not a token", ups + "routes: [{prefix: /a, upstream: notes, access: public, methods: ['PROP FIND']}]", `method "PROP FIND": not an HTTP method`},
		{"method with a slash", ups + "routes: [{prefix: /a, upstream: notes, access: public, methods: ['GET/1']}]", `method "GET/1": not an HTTP method`},
		{"method too long", ups + "routes: [{prefix: /a, upstream: notes, access: public, methods: [" + strings.Repeat("M", 33) + "]}]", "at most 32"},
		// Methods are case-sensitive: a lower-case extension method would
		// never match what clients send.
		{"extension method in lower case", ups + "routes: [{prefix: /a, upstream: notes, access: public, methods: [propfind]}]", `write "PROPFIND"`},
		{"extension methods overlap", ups + "routes: [{prefix: /a, methods: [GET, PROPFIND], upstream: notes, access: public}, {prefix: /a, methods: [PROPFIND], upstream: notes, access: protected}]", "duplicate"},
		{"extension method beside a method-less route", ups + "routes: [{prefix: /a, upstream: notes, access: public}, {prefix: /a, methods: [PROPFIND], upstream: notes, access: protected}]", "duplicate"},
		{"relative prefix", ups + "routes: [{prefix: a, upstream: notes, access: public}]", "start with"},
		{"glob prefix", ups + "routes: [{prefix: /a/**, upstream: notes, access: public}]", "glob"},
		{"trailing slash", ups + "routes: [{prefix: /a/, upstream: notes, access: public}]", "end with"},
		{"dot segment", ups + "routes: [{prefix: /a/../b, upstream: notes, access: public}]", "segment"},
		{"encoded slash in prefix", ups + "routes: [{prefix: /a%2fb, upstream: notes, access: public}]", "encoded '/'"},
		{"path parameter in prefix", ups + "routes: [{prefix: '/a;b', upstream: notes, access: public}]", "';' in path"},
		{"control character in prefix", ups + "routes: [{prefix: \"/a\\nb\", upstream: notes, access: public}]", "control character"},
		{"space in prefix", ups + "routes: [{prefix: '/a b', upstream: notes, access: public}]", "write /a%20b"},
		{"raw non-ASCII prefix", ups + "routes: [{prefix: /café, upstream: notes, access: public}]", "write /caf%C3%A9"},
		{"lower-case escape in prefix", ups + "routes: [{prefix: /caf%c3%a9, upstream: notes, access: public}]", "write /caf%C3%A9"},
		{"needless escape in prefix", ups + "routes: [{prefix: /%7Enotes, upstream: notes, access: public}]", "write /~notes"},
		{"escaped path character in prefix", ups + "routes: [{prefix: /v1/notes%3Apurge, upstream: notes, access: public}]", "write /v1/notes:purge"},
		{"reserved character in prefix", ups + "routes: [{prefix: '/a<b>', upstream: notes, access: public}]", "write /a%3Cb%3E"},
		{"query in prefix", ups + "routes: [{prefix: '/a?b', upstream: notes, access: public}]", "write /a%3Fb"},
		{"under /internal", ups + "routes: [{prefix: /internal/x, upstream: notes, access: public}]", "/internal"},
		{"shadows /api/v1/auth", ups + "routes: [{prefix: /api/v1/auth, upstream: notes, access: public}]", "built-in /api/v1/auth"},
		{"under /api/v1/auth", ups + "routes: [{prefix: /api/v1/auth/token, methods: [POST], upstream: notes, access: public}]", "cannot be shadowed"},
		{"under a core prefix in another case", ups + "routes: [{prefix: /API/v1/Users/x, upstream: notes, access: public}]", "cannot be shadowed"},
		{"under /.well-known", ups + "routes: [{prefix: /.well-known/jwks.json, upstream: notes, access: public}]", "cannot be shadowed"},
		{"unknown upstream", ups + "routes: [{prefix: /a, upstream: nope, access: public}]", `unknown upstream "nope"`},
		{"upstream core", ups + "routes: [{prefix: /a, upstream: core, access: public}]", "built in"},
		{"declares core", "upstreams: {core: {url: 'http://x:1', key_id: app-notes}}\nroutes: []", "reserved"},
		{"upstream with a path", "upstreams: {notes: {url: 'http://x:1/api', key_id: app-notes}}", "no path"},
		{"ftp upstream", "upstreams: {notes: {url: 'ftp://x:1', key_id: app-notes}}", "https://host:port"},
		{"https upstream with a path", "upstreams: {notes: {url: 'https://x/api', key_id: app-notes}}", "no path"},
		// Dialled as ":8082" (this host) or never reachable.
		{"upstream without a host", "upstreams: {notes: {url: 'http://:8082', key_id: app-notes}}\nroutes: []", `url "http://:8082": want`},
		{"upstream port out of range", "upstreams: {notes: {url: 'http://x:99999', key_id: app-notes}}\nroutes: []", "port"},
		{"upstream port 0", "upstreams: {notes: {url: 'https://x:0', key_id: app-notes}}\nroutes: []", "port"},
		{"upstream without key", "upstreams: {notes: {url: 'http://x:1'}}", "key_id: required"},
		{"websocket without GET", ups + "routes: [{prefix: /ws, methods: [POST], upstream: notes, access: protected, websocket: true}]", "route 1 (/ws): websocket: true needs GET among methods"},
		{"key not in UPSTREAM_KEYS", "upstreams: {notes: {url: 'http://x:1', key_id: nokey}}", "not in UPSTREAM_KEYS"},
		{"two upstreams, one key", "upstreams: {notes: {url: 'http://x:1', key_id: app-notes}, reports: {url: 'http://x:2', key_id: app-notes}}\nroutes: []", `upstream "reports": key_id "app-notes" is upstream "notes"'s too, at another address`},
		{"core key for an app", "upstreams: {notes: {url: 'http://x:1', key_id: core}}", "names a core key"},
		{"perm on public", ups + "routes: [{prefix: /a, upstream: notes, access: public, permissions: [a:b]}]", "need access: protected"},
		{"verified email on optional", ups + "routes: [{prefix: /a, upstream: notes, access: optional, require_verified_email: true}]", "need access: protected"},
		{"bad permission syntax", ups + "routes: [{prefix: /a, upstream: notes, access: protected, permissions: ['Notes:Read']}]", "resource:action"},
		{"comma permission", ups + "routes: [{prefix: /a, upstream: notes, access: protected, permissions: ['a:b,c:d']}]", "resource:action"},
		{"bad stream_timeout", ups + "routes: [{prefix: /a, upstream: notes, access: protected, stream_timeout: soon}]", "stream_timeout"},
		{"bad max_auth_age", ups + "routes: [{prefix: /a, upstream: notes, access: protected, max_auth_age: -1m}]", "max_auth_age"},
		// auth_time is in whole seconds: 500ms would refuse every token
		// older than the current second, with a challenge naming no
		// max_age (0 is none).
		{"max_auth_age below 1s", ups + "routes: [{prefix: /a, upstream: notes, access: protected, max_auth_age: 500ms}]", "max_auth_age"},
		{"rewrite_host not a bool", "upstreams:\n  notes: {url: 'http://127.0.0.1:8082', key_id: app-notes, rewrite_host: yes please}\nroutes: []\n", "rewrite_host"},
		{"upstream timeout below 1s", "upstreams:\n  notes: {url: 'http://127.0.0.1:8082', key_id: app-notes, timeout: 500ms}\nroutes: []\n", "timeout"},
		{"upstream timeout over 1h", "upstreams:\n  notes: {url: 'http://127.0.0.1:8082', key_id: app-notes, timeout: 2h}\nroutes: []\n", "timeout"},
		{"upstream timeout not a duration", "upstreams:\n  notes: {url: 'http://127.0.0.1:8082', key_id: app-notes, timeout: 30}\nroutes: []\n", "timeout"},
		{"strip_prefix on /", ups + "routes: [{prefix: /, upstream: notes, access: public, strip_prefix: true}]", "strip_prefix"},
		{"negative max_body_bytes", ups + "routes: [{prefix: /a, upstream: notes, access: public, max_body_bytes: -1}]", "max_body_bytes"},
		{"max_body_bytes over 1 GiB", ups + "routes: [{prefix: /a, upstream: notes, access: public, max_body_bytes: 1073741825}]", "max_body_bytes"},
		{"max_body_bytes not a number", ups + "routes: [{prefix: /a, upstream: notes, access: public, max_body_bytes: 10MB}]", "max_body_bytes"},
		{"websocket not a bool", ups + "routes: [{prefix: /a, upstream: notes, access: protected, websocket: maybe}]", "websocket"},
		{"duplicate without methods", ups + "routes: [{prefix: /a, upstream: notes, access: public}, {prefix: /a, upstream: notes, access: protected}]", "duplicate"},
		{"duplicate overlapping methods", ups + "routes: [{prefix: /a, methods: [GET, POST], upstream: notes, access: public}, {prefix: /a, methods: [POST], upstream: notes, access: protected}]", "duplicate"},
		{"duplicate by HEAD", ups + "routes: [{prefix: /a, methods: [GET], upstream: notes, access: public}, {prefix: /a, methods: [HEAD], upstream: notes, access: protected}]", "duplicate"},
		{"duplicate by case", ups + "routes: [{prefix: /a, upstream: notes, access: public}, {prefix: /A, upstream: notes, access: public}]", "only in letter case"},
		{"prefixes differing in case", ups + "routes: [{prefix: /Notes, methods: [GET], upstream: notes, access: public}, {prefix: /notes, methods: [POST], upstream: notes, access: protected}]", "route 2 (/notes): prefix /notes differs from another route's /Notes only in letter case"},
		{"one method-less beside methods", ups + "routes: [{prefix: /a, methods: [GET], upstream: notes, access: public}, {prefix: /a, upstream: notes, access: protected}]", "duplicate"},
		// Written without a value (a template that rendered nothing):
		// null would be the field left out, methods: any method,
		// permissions and require_*: none asked.
		{"methods without a value", ups + "routes:\n  - prefix: /a\n    methods:\n    upstream: notes\n    access: protected\n", "route 1 (/a): methods: written without a value"},
		{"permissions without a value", ups + "routes:\n  - {prefix: /a, upstream: notes, access: protected, permissions: ~}\n", "route 1 (/a): permissions: written without a value"},
		{"require_mfa without a value", ups + "routes:\n  - {prefix: /a, upstream: notes, access: protected, require_mfa: }\n", "route 1 (/a): require_mfa: written without a value"},
		{"upstream field without a value", "upstreams:\n  notes: {url: 'http://127.0.0.1:8082', key_id: app-notes, timeout: null}\nroutes: []\n", `upstream "notes": timeout: written without a value`},
		// Field names are matched exactly, not ignoring case as JSON
		// does: REQUIRE_MFA beside require_mfa would be a duplicate.
		{"field in another case", ups + "routes:\n  - {prefix: /a, upstream: notes, access: protected, require_mfa: true, Require_MFA: false}\n", `route 1 (/a): field "Require_MFA": write require_mfa`},
		{"upstream field in another case", "upstreams:\n  notes: {URL: 'http://127.0.0.1:8082', key_id: app-notes}\nroutes: []\n", `upstream "notes": field "URL": write url`},
		{"top-level field in another case", ups + "routes: []\nRoutes: [{prefix: /a, upstream: notes, access: public}]\n", `field "Routes": write routes`},
		// Only the first document would be read: the routes of the
		// others would be dropped without a word.
		{"second document", ups + "routes: []\n---\nroutes: [{prefix: /a, upstream: notes, access: protected}]\n", "more than one YAML document"},
		{"not yaml", "routes: [", "parse rules"},
		// A file caught while written in place: empty, or cut before its
		// routes (valid YAML) would drop every app route.
		{"empty file", "", "no routes"},
		{"comments only", "# rules\n", "no routes"},
		{"no routes", ups, "no routes"},
		{"routes cut off", ups + "routes:\n", "no routes"},
		{"old format", "rules: [{path: /api/**, access: protected}]", "docs/operations.md"},
		{"old format replace_defaults", "replace_defaults: true", "previous format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.body), testEnv)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// Every problem is reported, not just the first.
	_, err := Parse([]byte(ups+"routes: [{prefix: a, upstream: notes, access: x}, {prefix: /b, upstream: zz, access: public}]"), testEnv)
	if err == nil || !strings.Contains(err.Error(), "route 1") || !strings.Contains(err.Error(), "route 2") {
		t.Fatalf("Parse() = %v, want errors for routes 1 and 2", err)
	}
	for _, u := range []string{"http://:8081", "http://127.0.0.1:0", "http://127.0.0.1:65536"} {
		if _, err := Core(u); err == nil || !strings.Contains(err.Error(), "IDENTITY_URL") {
			t.Fatalf("IDENTITY_URL %s: %v, want refused", u, err)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), testEnv); err == nil {
		t.Fatal("Load(missing) accepted")
	}
	// A document marker before the only document, or an empty one after
	// it, is still one file.
	for _, body := range []string{"---\n" + ups + "routes: []\n", ups + "routes: []\n---\n", ups + "routes: []\n...\n"} {
		if _, err := Parse([]byte(body), testEnv); err != nil {
			t.Fatalf("Parse(%q) = %v", body, err)
		}
	}
	// Disjoint methods on one prefix are fine.
	if _, err := Parse([]byte(ups+"routes: [{prefix: /a, methods: [GET], upstream: notes, access: public}, {prefix: /a, methods: [POST, DELETE], upstream: notes, access: protected}]"), testEnv); err != nil {
		t.Fatal(err)
	}
}

// A prefix is written as request paths are matched (pathnorm's form): one
// in any other would never match, and its paths would take a shorter
// prefix's route. In that form, it matches every spelling of its paths.
func TestPrefixInMatchedForm(t *testing.T) {
	const ups = "upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\n"
	tb, err := Parse([]byte(ups+"routes: [{prefix: '/caf%C3%A9/~menu', upstream: notes, access: protected}, {prefix: /, upstream: notes, access: public}]"), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{"/café/~menu/x", "/caf%C3%A9/%7Emenu", "/caf%c3%a9/~menu/x"} {
		path, err := pathnorm.String(raw)
		if err != nil {
			t.Fatal(err)
		}
		if r, status, _ := match(t, tb, "GET", path); status != 200 || r.Access != Protected {
			t.Fatalf("%s (normalized %s) = %d %+v, want the protected route", raw, path, status, r)
		}
	}
}

func TestAlias(t *testing.T) {
	tb, err := Alias(coreURL, "http://127.0.0.1:18500", "app-notes")
	if err != nil {
		t.Fatal(err)
	}
	r, _, _ := match(t, tb, "GET", "/anything")
	if r == nil || r.Access != Protected || tb.Upstreams[r.Upstream].Addr != "127.0.0.1:18500" || tb.Upstreams[r.Upstream].KeyID != "app-notes" {
		t.Fatalf("route = %+v", r)
	}
	// Sign-in never goes to the app.
	r, _, _ = match(t, tb, "POST", "/api/v1/auth/token")
	if r == nil || r.Upstream != 0 || r.Access != Optional {
		t.Fatalf("token route = %+v", r)
	}
}

func BenchmarkMatch(b *testing.B) {
	tb, err := Parse([]byte(notesFile), testEnv)
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range []string{"/api/v1/users/me", "/notes/123", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/0/1/2/3/4/5/6/7/8/9/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/0/1/2/3/4/5/6/7/8/9", "/nothing"} {
		b.Run(p[:min(len(p), 20)], func(b *testing.B) {
			m, path := []byte("GET"), []byte(p)
			scratch := make([]byte, 0, 256)
			b.ReportAllocs()
			for b.Loop() {
				var g *Group
				g, scratch = tb.Match(path, scratch)
				if g != nil {
					g.Pick(m)
				}
			}
		})
	}
}

// The shipped example file parses and routes the example app.
func TestExampleFile(t *testing.T) {
	tb, err := Load("../../rules.example.yaml", Env{CoreURL: coreURL, UpstreamKeyIDs: []string{"app-notes"}, CoreKeyIDs: []string{"core"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		status       int
		access       Access
		perms        string
	}{
		{"GET", "/notes", 200, Protected, "notes:read"},
		{"POST", "/notes", 200, Protected, "notes:write"},
		{"PUT", "/notes/1", 405, 0, ""},
		{"GET", "/notes/public", 200, Optional, ""},
		{"GET", "/notes-admin", 404, 0, ""},
		{"POST", "/api/v1/auth/token", 200, Optional, ""},
	}
	for _, tt := range tests {
		r, status, _ := match(t, tb, tt.method, tt.path)
		if status != tt.status || (r != nil && (r.Access != tt.access || strings.Join(r.Permissions, ",") != tt.perms)) {
			t.Errorf("%s %s = %d %+v, want %d %v [%s]", tt.method, tt.path, status, r, tt.status, tt.access, tt.perms)
		}
	}
}

// Two names of one address (an upstream being renamed) may share its key:
// they are one app. Two addresses may not (TestBadFiles).
func TestOneAddressTwoNamesShareAKey(t *testing.T) {
	if _, err := Parse([]byte("upstreams:\n  notes: {url: 'http://x:1', key_id: app-notes}\n  alias: {url: 'http://x:1', key_id: app-notes}\nroutes: []\n"), testEnv); err != nil {
		t.Fatal(err)
	}
}

// TestRewriteHostHeader: rewrite_host sends the URL's host, its port left
// out when it is the scheme's.
func TestRewriteHostHeader(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"http://Notes.internal:8082", "notes.internal:8082"},
		{"http://notes.internal", "notes.internal"},
		{"http://notes.internal:80", "notes.internal"},
		{"https://api.example.com", "api.example.com"},
		{"https://api.example.com:8443", "api.example.com:8443"},
		{"http://[::1]:80", "[::1]"},
		{"http://[::1]:8082", "[::1]:8082"},
		// The port as a number: a leading zero is no part of it.
		{"http://notes.internal:08082", "notes.internal:8082"},
		{"http://notes.internal:080", "notes.internal"},
		// A zone names an interface of this host, not part of the
		// upstream's name: not sent (RFC 9110's uri-host has none).
		{"http://[fe80::1%25eth0]:8082", "[fe80::1]:8082"},
		{"http://[FE80::1%25Eth0]", "[fe80::1]"},
	} {
		f := "upstreams:\n  notes: {url: '" + tc.url + "', key_id: app-notes, rewrite_host: true}\n  other: {url: '" + tc.url + "', key_id: app-notes}\nroutes: []\n"
		tb, err := Parse([]byte(f), Env{CoreURL: "http://127.0.0.1:8081", UpstreamKeyIDs: []string{"app-notes"}})
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		if tb.Upstreams[1].Host != tc.want || tb.Upstreams[2].Host != "" {
			t.Fatalf("%s: Host %q (without rewrite_host %q), want %q", tc.url, tb.Upstreams[1].Host, tb.Upstreams[2].Host, tc.want)
		}
	}
}

// A route with strip_prefix sends its paths without the prefix, so one
// app path can be reached through it and through another route to the
// same app (/pub/notes/1 and /notes/1 both arrive as /notes/1): such
// routes must admit the same methods and ask the same of the caller, else
// the one asking less would decide for both. Routes of one prefix, routes
// without strip_prefix and routes to apps at other addresses never share
// an app path.
func TestStrippedPrefixAliases(t *testing.T) {
	const ups = "upstreams:\n  notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}\n" +
		"  notes2: {url: 'http://127.0.0.1:8082', key_id: app-notes}\n  other: {url: 'http://127.0.0.1:8083', key_id: app-other}\nroutes:\n"
	tests := []struct{ name, routes, want string }{
		{"public stripped beside protected", "  - {prefix: /notes, upstream: notes, access: protected, permissions: [notes:read]}\n" +
			"  - {prefix: /notes/public, upstream: notes, access: public, strip_prefix: true}\n",
			"route 2 (/notes/public) strips its prefix and route 1 (/notes) goes to the same app (127.0.0.1:8082): an app path is reached through either (/notes/public/notes/x reaches it as /notes/x does)"},
		{"two stripped prefixes", "  - {prefix: /a, upstream: notes, access: protected, strip_prefix: true}\n" +
			"  - {prefix: /b, upstream: notes, access: optional, strip_prefix: true}\n", "(/a/x and /b/x both reach it as /x)"},
		{"two names of one address", "  - {prefix: /notes, upstream: notes, access: protected}\n" +
			"  - {prefix: /pub, upstream: notes2, access: public, strip_prefix: true}\n", "route 2 (/pub) strips its prefix and route 1 (/notes)"},
		{"other permissions", "  - {prefix: /a, upstream: notes, access: protected, permissions: [a:read], strip_prefix: true}\n" +
			"  - {prefix: /b, upstream: notes, access: protected, permissions: [a:read, a:write]}\n", "route 1 (/a) strips its prefix"},
		{"other methods", "  - {prefix: /a, methods: [GET], upstream: notes, access: public, strip_prefix: true}\n" +
			"  - {prefix: /b, upstream: notes, access: public}\n", "route 1 (/a) strips its prefix"},
		{"other max_auth_age", "  - {prefix: /a, upstream: notes, access: protected, max_auth_age: 5m, strip_prefix: true}\n" +
			"  - {prefix: /b, upstream: notes, access: protected}\n", "route 1 (/a) strips its prefix"},
		{"the same requirements", "  - {prefix: /a, methods: [GET], upstream: notes, access: protected, permissions: [a:read, b:read], websocket: true, strip_prefix: true}\n" +
			"  - {prefix: /b, methods: [GET], upstream: notes2, access: protected, permissions: [b:read, a:read], stream_timeout: 1m, strip_prefix: true}\n" +
			"  - {prefix: /a/c, methods: [GET, HEAD], upstream: notes, access: protected, permissions: [a:read, b:read]}\n", ""},
		{"apps at other addresses", "  - {prefix: /notes, upstream: notes, access: protected, permissions: [notes:read]}\n" +
			"  - {prefix: /notes/public, upstream: other, access: public, strip_prefix: true}\n", ""},
		{"one prefix, disjoint methods", "  - {prefix: /a, methods: [GET], upstream: notes, access: public, strip_prefix: true}\n" +
			"  - {prefix: /a, methods: [POST], upstream: notes, access: protected}\n", ""},
		{"no strip_prefix", "  - {prefix: /notes, upstream: notes, access: protected}\n" +
			"  - {prefix: /notes/public, upstream: notes, access: public}\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(ups+tt.routes), testEnv)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Parse = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestUpstreamAddressSpellings: upstream addresses are compared in one
// form (host in lower case, an IP address canonical and unmapped, the port
// as a number, no path as "/"), so another spelling of one address is the
// same app for strip_prefix aliases, and the same address for a shared
// key_id; a different address is still another app.
func TestUpstreamAddressSpellings(t *testing.T) {
	const routes = "routes:\n  - {prefix: /notes, upstream: a, access: protected, permissions: [notes:read]}\n" +
		"  - {prefix: /pub, upstream: b, access: public, strip_prefix: true}\n"
	for _, tc := range []struct {
		a, b  string
		alias bool
	}{
		{"http://127.0.0.1:8082", "http://127.0.0.1:08082", true},
		{"http://127.0.0.1:8082", "http://127.0.0.1:8082/", true},
		{"http://[::1]:8082", "http://[0:0::1]:8082", true},
		{"http://[::1]:8082", "http://[0000:0000:0000:0000:0000:0000:0000:0001]:8082", true},
		{"http://127.0.0.1:8082", "http://[::ffff:127.0.0.1]:8082", true},
		{"http://notes.internal:8082", "http://NOTES.Internal.:8082", true},
		{"http://notes.internal", "http://notes.internal:80", true},
		{"https://notes.internal", "https://notes.internal:0443/", true},
		{"http://127.0.0.1:8082", "http://127.0.0.1:8083", false},
		{"http://[::1]:8082", "http://[::2]:8082", false},
	} {
		f := "upstreams:\n  a: {url: '" + tc.a + "', key_id: app-notes}\n  b: {url: '" + tc.b + "', key_id: app-other}\n" + routes
		_, err := Parse([]byte(f), testEnv)
		if got := err != nil && strings.Contains(err.Error(), "route 2 (/pub) strips its prefix and route 1 (/notes) goes to the same app"); got != tc.alias || err != nil && !got {
			t.Errorf("%s beside %s: Parse = %v, want the alias refused: %v", tc.a, tc.b, err, tc.alias)
		}
	}
	// One key for two names of one address (a rename in progress).
	for _, tc := range []struct {
		a, b string
		ok   bool
	}{
		{"http://h:1", "http://h:1/", true},
		{"http://h:1", "http://H:01", true},
		{"http://[::1]:1", "http://[0::1]:1/", true},
		{"http://h", "http://h:80", true},
		{"http://h:1", "http://h:2", false},
		{"http://h:443", "https://h:443", false},
	} {
		f := "upstreams:\n  a: {url: '" + tc.a + "', key_id: app-notes}\n  b: {url: '" + tc.b + "', key_id: app-notes}\nroutes: []\n"
		_, err := Parse([]byte(f), testEnv)
		if tc.ok && err != nil || !tc.ok && (err == nil || !strings.Contains(err.Error(), "at another address")) {
			t.Errorf("%s and %s with one key: Parse = %v, want accepted: %v", tc.a, tc.b, err, tc.ok)
		}
	}
}

// An upstream URL carrying credentials is refused without them being
// repeated: the problems of a file go to the log.
func TestUpstreamURLCredentialsNotShown(t *testing.T) {
	for _, u := range []string{
		"https://user:s3cr3t@x.example",
		"https://s3cr3t@x.example:8443",
		"http://user:s3cr3t@x.example:80x",   // does not parse: bad port
		"http://user:s3cr3t@x.example/a b%z", // does not parse: bad escape
		"https://x.example?token=s3cr3t",
		"https://x.example/?s3cr3t",
	} {
		_, err := Parse([]byte("upstreams: {notes: {url: '"+u+"', key_id: app-notes}}\nroutes: []\n"), testEnv)
		if err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "x.example") {
			t.Errorf("url %s: %v, want refused, naming the host but not the secret", u, err)
		}
	}
	_, err := Parse([]byte("upstreams: {notes: {url: 'https://user:s3cr3t@x.example', key_id: app-notes}}\nroutes: []\n"), testEnv)
	if err == nil || !strings.Contains(err.Error(), "https://xxxxx@x.example") || !strings.Contains(err.Error(), "user:password@") {
		t.Errorf("userinfo: %v, want it masked and named", err)
	}
}

// max_body_bytes: 0 is no limit of 1 to 1 GiB: read as left out, a route
// meant to take no body (or any) would take MAX_BODY_BYTES.
func TestMaxBodyBytesZeroRefused(t *testing.T) {
	const ups = "upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\n"
	for _, v := range []string{"0", "0.0", "-0"} {
		_, err := Parse([]byte(ups+"routes: [{prefix: /a, upstream: notes, access: public, max_body_bytes: "+v+"}]"), testEnv)
		if err == nil || !strings.Contains(err.Error(), "route 1 (/a): max_body_bytes 0: want 1 to 1073741824") {
			t.Errorf("max_body_bytes: %s: Parse = %v, want refused", v, err)
		}
	}
	if _, err := Parse([]byte(ups+"routes: [{prefix: /a, upstream: notes, access: public, max_body_bytes: 1}]"), testEnv); err != nil {
		t.Fatal(err)
	}
}

// TestFirstUpper: firstUpper finds what a byte-by-byte loop finds, for
// every byte value at every position of paths of every length up to three
// words and a half (each word's bytes and the bytes after the last), with
// upper-case letters after it, and other bytes around it (0x80 and more,
// the bytes beside 'A' and 'Z').
func TestFirstUpper(t *testing.T) {
	slow := func(p []byte) int {
		for i, c := range p {
			if c >= 'A' && c <= 'Z' {
				return i
			}
		}
		return -1
	}
	for _, fill := range []byte{'a', '/', '@', '[', 0x80, 0xc1, 0xda, 0xff, 0} {
		for n := range 29 {
			for at := range n {
				for v := range 256 {
					p := bytes.Repeat([]byte{fill}, n)
					p[at] = byte(v)
					if at+2 < n {
						p[at+2] = 'Q' // a later letter never hides an earlier one
					}
					if got, want := firstUpper(p), slow(p); got != want {
						t.Fatalf("firstUpper(%q) = %d, want %d", p, got, want)
					}
				}
			}
		}
	}
}

// TestIsInternal: /internal and everything under it, in any case, and
// nothing else (a longer first segment, a shorter path, another first
// letter).
func TestIsInternal(t *testing.T) {
	for path, want := range map[string]bool{
		"/internal": true, "/internal/": true, "/internal/projections/u": true, "/INTERNAL/x": true, "/iNtErNaL": true,
		"/internals": false, "/internal-x": false, "/interna": false, "/": false, "/api/v1/internal": false,
		"/.well-known/jwks.json": false, "/jnternal": false, "/Internal.json": false, "//internal": false,
	} {
		if got := IsInternal([]byte(path)); got != want {
			t.Errorf("IsInternal(%q) = %v, want %v", path, got, want)
		}
	}
}

// TestIsInternalFolded: a path under /internal in any case, ASCII's or
// Unicode's (the letters an upstream may read as ASCII ones), and
// nothing else.
func TestIsInternalFolded(t *testing.T) {
	for path, want := range map[string]bool{
		"/internal": true, "/internal/x": true, "/INTERNAL/x": true,
		"/%C4%B0nternal": true, "/%C4%B1nternal/hooks": true, "/%C4%B1NTERNAL/x": true,
		"/internals": false, "/%C4%B0nternals": false, "/x/internal": false, "/": false, "": false,
		"/%C5%BFnternal": false, // ſ is s, not i
	} {
		if got := IsInternalFolded([]byte(path)); got != want {
			t.Errorf("IsInternalFolded(%q) = %v, want %v", path, got, want)
		}
	}
}

// TestCorePrefixSpelledWithUnicodeFoldsRefused: a prefix that lies under a
// built-in one (or /internal) once the letters outside ASCII that Match
// reads as ASCII ones (unicodeFolds) are read so is refused as one spelled
// in ASCII is. /api/v1/u%C5%BFers/me loaded: Match reads it as
// /api/v1/users/me, a longer prefix than coreapi's /api/v1/users, so
// GET /api/v1/users/me was 404 (the path does not spell the route's
// prefix) and never reached coreapi, while /api/v1/u%C5%BFers/me went to
// the app: an app route shadowed coreapi's.
func TestCorePrefixSpelledWithUnicodeFoldsRefused(t *testing.T) {
	const ups = "upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\n"
	for _, prefix := range []string{
		"/api/v1/u%C5%BFers/me",           // ſ: /api/v1/users/me
		"/api/v1/%C4%B0nvitations/x",      // İ: /api/v1/invitations/x
		"/api/v1/auth/%E2%84%AAeys",       // Kelvin sign: under /api/v1/auth
		"/.well-%E2%84%AAnown/x",          // /.well-known/x
		"/%C4%B1nternal/x",                // ı: /internal/x
		"/API/V1/u%C5%BFers/me",           // in another case too
		"/api/v1/roles/%C4%B1d/%C5%BFelf", // deeper
	} {
		_, err := Parse([]byte(ups+"routes: [{prefix: '"+prefix+"', upstream: notes, access: public}]"), testEnv)
		if err == nil || !strings.Contains(err.Error(), "prefix lies under the built-in") {
			t.Errorf("prefix %s: err = %v, want it refused as lying under a built-in prefix", prefix, err)
		}
	}
	// Folds elsewhere are an app's own prefixes.
	tb, err := Parse([]byte(ups+"routes: [{prefix: '/u%C5%BFers', upstream: notes, access: public}]"), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if _, status, _ := match(t, tb, "GET", "/api/v1/users/me"); status != 200 {
		t.Fatalf("GET /api/v1/users/me: %d, want coreapi's route", status)
	}
}

// TestLoadRefusesAnOversizedFile: RULES_FILE pointed at the wrong file (a
// log, a disk image, a device without end such as /dev/zero) was read whole
// into memory and parsed, at start and at each reload, which could stop a
// serving proxy out of memory or hold its reloads for good. A file of more
// than MaxFileSize bytes is refused, naming the limit, having read no more
// than that; one of MaxFileSize loads.
func TestLoadRefusesAnOversizedFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int) string {
		body := "routes: []\n"
		pad := "#" + strings.Repeat("x", 78) + "\n"
		var b strings.Builder
		b.WriteString(body)
		for b.Len()+len(pad) <= size {
			b.WriteString(pad)
		}
		b.WriteString(strings.Repeat("#", size-b.Len()))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := Load(write("fits.yaml", MaxFileSize), testEnv); err != nil {
		t.Fatalf("a file of MaxFileSize bytes: %v", err)
	}
	_, err := Load(write("huge.yaml", MaxFileSize+1), testEnv)
	if err == nil || !strings.Contains(err.Error(), "more than 4 MiB") {
		t.Fatalf("a file of MaxFileSize+1 bytes: err = %v, want it refused as more than 4 MiB", err)
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		if _, err := Load("/dev/zero", testEnv); err == nil || !strings.Contains(err.Error(), "more than 4 MiB") {
			t.Fatalf("/dev/zero: err = %v, want it refused as more than 4 MiB", err)
		}
	}
}

// TestAliasExpansionBounded: YAML aliases repeat what their anchor holds
// wherever they stand. The YAML library refuses an expansion only past 100
// aliases, so a file of a few MiB whose anchor held one large value, named
// by 100 aliases, was taken: converting it to JSON, twice, allocated about
// 1.5 GB for each MiB, at start and at each reload of a serving proxy.
// A file that would expand to more than MaxFileSize is refused before
// anything is expanded; anchors that expand within it still load.
func TestAliasExpansionBounded(t *testing.T) {
	const ups = "upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\n"
	big := "/" + strings.Repeat("a", 1<<20)
	bomb := ups + "x-prefix: &p '" + big + "'\nroutes:\n" +
		strings.Repeat("  - {prefix: *p, upstream: notes, access: public}\n", 100)
	_, err := Parse([]byte(bomb), testEnv)
	if err == nil || !strings.Contains(err.Error(), "expands to more than 4 MiB") {
		t.Fatalf("err = %.300v, want the file refused for its expansion", err)
	}
	// Nested: each level repeats the one below; refused as well.
	var nested strings.Builder
	nested.WriteString(ups + "routes: []\nx: [&l0 '" + strings.Repeat("b", 64<<10) + "'")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&nested, ", &l%d [*l%d, *l%d, *l%d]", i, i-1, i-1, i-1)
	}
	nested.WriteString("]\n")
	if _, err := Parse([]byte(nested.String()), testEnv); err == nil || !strings.Contains(err.Error(), "expands to more than 4 MiB") {
		t.Fatalf("nested aliases: err = %.300v, want the file refused for its expansion", err)
	}
	ok := ups + "routes:\n" +
		"  - {prefix: /a, upstream: notes, access: protected, permissions: &read [notes:read, notes:list]}\n" +
		"  - {prefix: /b, upstream: notes, access: protected, permissions: *read}\n"
	tb, err := Parse([]byte(ok), testEnv)
	if err != nil {
		t.Fatalf("anchors within bounds: %v", err)
	}
	if r, _, _ := match(t, tb, "GET", "/b"); r == nil || strings.Join(r.Permissions, ",") != "notes:read,notes:list" {
		t.Fatalf("/b: route %+v, want the anchored permissions", r)
	}
}

// TestEmptyStringReadAsLeftOutRefused: an optional field written as an
// empty string (max_auth_age: "", a template that rendered nothing
// between quotes) read as one left out, as null did before it was
// refused: a protected route meant to need a recent sign-in loaded
// without max_auth_age, a stream route without its stream_timeout, an
// upstream without its timeout. Each is refused, naming the field.
func TestEmptyStringReadAsLeftOutRefused(t *testing.T) {
	const ups = "upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\n"
	for _, tc := range []struct{ body, want string }{
		{ups + "routes: [{prefix: /a, upstream: notes, access: protected, max_auth_age: ''}]", "route 1 (/a): max_auth_age: written as an empty string"},
		{ups + "routes: [{prefix: /a, upstream: notes, access: protected, stream_timeout: \"\"}]", "route 1 (/a): stream_timeout: written as an empty string"},
		{"upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes, timeout: ''}}\nroutes: []", `upstream "notes": timeout: written as an empty string`},
	} {
		tb, err := Parse([]byte(tc.body), testEnv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\nerr = %v (table %v), want %q", tc.body, err, tb != nil, tc.want)
		}
	}
}

// TestHeadWithoutGetWarned: a route whose methods hold HEAD but not GET
// loads (a deployment that has one keeps starting), with a warning naming
// it: nearly every framework answers HEAD by running its GET handler, so
// the app's GET headers and side effects are reached where GET is 405.
func TestHeadWithoutGetWarned(t *testing.T) {
	const ups = "upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\nroutes:\n"
	for _, tc := range []struct{ routes, want string }{
		{"  - {prefix: /a, methods: [HEAD], upstream: notes, access: public}\n", "route 1 (/a): methods hold HEAD but not GET"},
		{"  - {prefix: /b, methods: [GET], upstream: notes, access: protected}\n  - {prefix: /a, methods: [head, POST], upstream: notes, access: public}\n",
			"route 2 (/a): methods hold HEAD but not GET"},
		{"  - {prefix: /a, methods: [GET], upstream: notes, access: public}\n", ""},
		{"  - {prefix: /a, methods: [GET, HEAD], upstream: notes, access: public}\n", ""},
		{"  - {prefix: /a, upstream: notes, access: public}\n", ""},
		{"  - {prefix: /a, methods: [POST], upstream: notes, access: public}\n", ""},
	} {
		tb, err := Parse([]byte(ups+tc.routes), testEnv)
		if err != nil {
			t.Fatalf("%s: %v", tc.routes, err)
		}
		if tc.want == "" && len(tb.Warnings) != 0 || tc.want != "" && (len(tb.Warnings) != 1 || !strings.HasPrefix(tb.Warnings[0], tc.want)) {
			t.Errorf("%s: warnings %q, want %q", tc.routes, tb.Warnings, tc.want)
		}
	}
	if tb, err := Core(coreURL); err != nil || len(tb.Warnings) != 0 {
		t.Errorf("built-in routes: warnings %q, %v; want none", tb.Warnings, err)
	}
}

// TestPrefixCoveringBuiltInsWarned: an app route whose prefix covers
// built-in routes (a catch-all /, or /api) loads, but those paths go to
// coreapi, whatever the app serves there: the table warns, once per
// prefix, naming them (the outermost ones, the root paths first), and
// every path it names is indeed routed to coreapi. A prefix covering none
// says nothing.
func TestPrefixCoveringBuiltInsWarned(t *testing.T) {
	const ups = "upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\nroutes:\n"
	apiV1 := "/api/v1/api-keys, /api/v1/audit-events, /api/v1/auth, /api/v1/health, /api/v1/invitations, /api/v1/openapi.json, " +
		"/api/v1/permissions, /api/v1/roles, /api/v1/service-accounts, /api/v1/tenant, /api/v1/users"
	for _, tc := range []struct{ routes, want string }{
		{"  - {prefix: /, upstream: notes, access: public}\n",
			"route 1 (/): the app never gets /.well-known, /accept-invitation, /openapi.json, /reset-password, /verify-email, " + apiV1 + ","},
		// Two routes of one prefix: one warning, at the first.
		{"  - {prefix: /notes, upstream: notes, access: protected}\n  - {prefix: /, methods: [GET], upstream: notes, access: optional}\n  - {prefix: /, methods: [POST], upstream: notes, access: protected}\n",
			"route 2 (/): the app never gets /.well-known, /accept-invitation, /openapi.json, /reset-password, /verify-email, " + apiV1 + ","},
		{"  - {prefix: /api, upstream: notes, access: protected}\n", "route 1 (/api): the app never gets " + apiV1 + ","},
		// Compared as paths are matched: in any case.
		{"  - {prefix: /API/V1, upstream: notes, access: protected}\n", "route 1 (/API/V1): the app never gets " + apiV1 + ","},
		{"  - {prefix: /notes, upstream: notes, access: public}\n  - {prefix: /api/v2, upstream: notes, access: public}\n  - {prefix: /well-known, upstream: notes, access: public}\n", ""},
	} {
		tb, err := Parse([]byte(ups+tc.routes), testEnv)
		if err != nil {
			t.Fatalf("%s: %v", tc.routes, err)
		}
		if tc.want == "" && len(tb.Warnings) != 0 || tc.want != "" && (len(tb.Warnings) != 1 || !strings.HasPrefix(tb.Warnings[0], tc.want)) {
			t.Errorf("%s: warnings %q, want one starting %q", tc.routes, tb.Warnings, tc.want)
			continue
		}
		if tc.want == "" {
			continue
		}
		named := strings.Split(strings.TrimSuffix(tc.want[strings.Index(tc.want, "gets ")+len("gets "):], ","), ", ")
		for _, p := range named {
			for _, path := range []string{p, p + "/x"} {
				if g, _ := tb.Match([]byte(path), nil); g == nil || !g.routes[0].Core {
					t.Errorf("%s: the warning names %s, but %s is not routed to coreapi", tc.routes, p, path)
				}
			}
		}
		// Every built-in prefix the route covers is named, or lies under
		// one named.
		prefix := tc.want[strings.Index(tc.want, "(")+1 : strings.Index(tc.want, "):")]
		for _, c := range CorePrefixes() {
			if (prefix == "/" || under(c, prefix)) && !slices.ContainsFunc(named, func(n string) bool { return under(c, n) }) {
				t.Errorf("%s: the warning leaves out the built-in %s", tc.routes, c)
			}
		}
	}
	if tb, err := Alias(coreURL, "http://127.0.0.1:8082", "app-notes"); err != nil || len(tb.Warnings) != 1 || !strings.Contains(tb.Warnings[0], "/openapi.json") {
		t.Errorf("UPSTREAM_URL's catch-all: warnings %q, %v; want one naming the built-ins", tb.Warnings, err)
	}
}

// TestExtensionMethods: a route may name methods outside the standard nine
// (WebDAV's PROPFIND, QUERY, PURGE), matched as sent (case-sensitive);
// a route without methods takes none of them, and a method no route names
// is unknown to the table (501), while one some route names is 405 on a
// prefix that does not take it.
func TestExtensionMethods(t *testing.T) {
	const file = `
upstreams:
  notes: {url: "http://127.0.0.1:8082", key_id: app-notes}
routes:
  - {prefix: /dav, methods: [GET, PROPFIND, MKCOL], upstream: notes, access: protected}
  - {prefix: /dav, methods: [QUERY, M-SEARCH], upstream: notes, access: public}
  - {prefix: /notes, methods: [GET], upstream: notes, access: protected}
  - {prefix: /any, upstream: notes, access: public}
`
	tb, err := Parse([]byte(file), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		status       int
		access       Access
	}{
		{"PROPFIND", "/dav/a", 200, Protected},
		{"MKCOL", "/dav", 200, Protected},
		{"GET", "/dav", 200, Protected},
		{"QUERY", "/dav/x", 200, Public},
		{"M-SEARCH", "/dav/x", 200, Public},
		{"propfind", "/dav/a", 501, 0},
		{"PROPPATCH", "/dav/a", 501, 0},
		{"PROPFIND", "/notes", 405, 0},
		{"PROPFIND", "/any", 405, 0},
		{"GET", "/any", 200, Public},
		{"PROPFIND", "/nothing", 404, 0},
	}
	for _, tt := range tests {
		r, status, _ := match(t, tb, tt.method, tt.path)
		if status != tt.status || r != nil && r.Access != tt.access {
			t.Errorf("%s %s: %d %v, want %d %v", tt.method, tt.path, status, r, tt.status, tt.access)
		}
	}
	if _, _, allow := match(t, tb, "DELETE", "/dav"); allow != "GET, HEAD, PROPFIND, MKCOL, QUERY, M-SEARCH" {
		t.Errorf("Allow = %q", allow)
	}
	g, _ := tb.Match([]byte("/dav"), nil)
	if got := g.Pick([]byte("PROPFIND")).AllowMethods(); got != "GET, HEAD, PROPFIND, MKCOL" {
		t.Errorf("AllowMethods = %q", got)
	}
	if got := g.Pick([]byte("QUERY")).Methods(); got != "QUERY,M-SEARCH" {
		t.Errorf("Methods = %q", got)
	}
	g, _ = tb.Match([]byte("/any"), nil)
	if got := g.Pick([]byte("GET")).AllowMethods(); got != "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" {
		t.Errorf("AllowMethods of a route without methods = %q", got)
	}
	for _, m := range []string{"GET", "TRACE", "PROPFIND", "M-SEARCH"} {
		if !tb.Knows([]byte(m)) {
			t.Errorf("Knows(%s) = false", m)
		}
	}
	for _, m := range []string{"PROPPATCH", "propfind", "get", ""} {
		if tb.Knows([]byte(m)) {
			t.Errorf("Knows(%q) = true", m)
		}
	}
}
