package rules

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// openAPIAccess reads coreapi's OpenAPI document: every operation with
// the access its security requirement declares for the bearer token (no
// bearer alternative: public; an alternative without it beside bearer:
// optional; otherwise protected).
func openAPIAccess(t *testing.T) map[string]Access {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "coreapi", "internal", "openapi", "openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Security []map[string][]string                 `json:"security"`
		Paths    map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]Access{}
	for path, ops := range doc.Paths {
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
			sec := doc.Security
			if op.Security != nil {
				sec = *op.Security
			}
			// The proxy's access is about the bearer token only: an
			// alternative without "bearer" (none, or client credentials
			// that coreapi checks itself) needs no token at the proxy.
			bearer, without := false, len(sec) == 0
			for _, alt := range sec {
				if _, ok := alt["bearer"]; ok {
					bearer = true
				} else {
					without = true
				}
			}
			access := Protected
			switch {
			case !bearer:
				access = Public
			case without:
				access = Optional
			}
			out[strings.ToUpper(method)+" "+path] = access
		}
	}
	if len(out) < 30 {
		t.Fatalf("%d operations read from the OpenAPI document; the parse is broken", len(out))
	}
	return out
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// TestCoreRoutesMatchOpenAPI: the proxy's built-in table gives every
// operation of coreapi's document the access its security declares, so
// a route documented public is never refused for want of a token, and one
// documented protected is never forwarded without one.
func TestCoreRoutesMatchOpenAPI(t *testing.T) {
	tb, err := Load("", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	for op, want := range openAPIAccess(t) {
		method, path, _ := strings.Cut(op, " ")
		concrete := pathParam.ReplaceAllString(path, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
		r, status, _ := match(t, tb, method, concrete)
		if status != 200 {
			t.Errorf("%s: the proxy answers %d itself", op, status)
			continue
		}
		if r.Access != want {
			t.Errorf("%s: the proxy's access is %v, the OpenAPI document's %v", op, r.Access, want)
		}
	}
}

// readmeRoutes returns the routes README.md lists as public and optional
// in its authproxy section ("public `POST /api/v1/auth/signup`, ...;
// optional `POST ...`"), expanded: a|b alternatives become one route each,
// a trailing … becomes a sample segment.
func readmeRoutes(t *testing.T) map[Access][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "coreapi's routes are built in")
	end := strings.Index(s, "protected everything else")
	if start < 0 || end < start {
		t.Fatal("README.md: the authproxy section's route list is not where this test looks")
	}
	list := s[start:end]
	opt := strings.Index(list, "optional `")
	if opt < 0 {
		t.Fatal("README.md: no optional routes listed")
	}
	item := regexp.MustCompile("`([A-Z|]+) ([^`]+)`")
	out := map[Access][]string{}
	for i, part := range []string{list[:opt], list[opt:]} {
		access := []Access{Public, Optional}[i]
		for _, m := range item.FindAllStringSubmatch(part, -1) {
			for _, method := range strings.Split(m[1], "|") {
				for _, path := range expand(m[2]) {
					out[access] = append(out[access], method+" "+path)
				}
			}
		}
	}
	if len(out[Public]) < 10 || len(out[Optional]) < 2 {
		t.Fatalf("README.md lists %d public and %d optional routes; the parse is broken", len(out[Public]), len(out[Optional]))
	}
	return out
}

// expand turns "/a/b|c" into /a/b and /a/c, "/x|/y" into /x and /y, and a
// trailing … into a sample segment.
func expand(p string) []string {
	p = strings.ReplaceAll(p, "…", "x")
	parts := strings.Split(p, "|")
	out := []string{parts[0]}
	base := parts[0][:strings.LastIndex(parts[0], "/")+1]
	for _, alt := range parts[1:] {
		if strings.HasPrefix(alt, "/") {
			out = append(out, alt)
		} else {
			out = append(out, base+alt)
		}
	}
	return out
}

// TestReadmePublicRoutes: the README's list of public and optional routes
// is what the proxy's table does, and names every public or optional
// operation of the OpenAPI document.
func TestReadmePublicRoutes(t *testing.T) {
	tb, err := Load("", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	routes := readmeRoutes(t)
	for access, list := range routes {
		for _, rt := range list {
			method, path, _ := strings.Cut(rt, " ")
			r, status, _ := match(t, tb, method, path)
			if status != 200 || r.Access != access {
				t.Errorf("README lists %s as %v; the proxy: status %d, route %+v", rt, access, status, r)
			}
		}
	}
	for op, access := range openAPIAccess(t) {
		if access == Protected {
			continue
		}
		method, path, _ := strings.Cut(op, " ")
		concrete := pathParam.ReplaceAllString(path, "x")
		found := false
		for _, rt := range routes[access] {
			m, p, _ := strings.Cut(rt, " ")
			// A README entry ending in a sample segment stands for the
			// whole subtree.
			prefix := strings.TrimSuffix(p, "x")
			found = found || (m == method && (p == concrete || (strings.HasSuffix(p, "/x") && strings.HasPrefix(concrete, prefix))))
		}
		if !found {
			t.Errorf("the OpenAPI document's %v operation %s is not in README's authproxy route list", access, op)
		}
	}
}

func TestExpand(t *testing.T) {
	for in, want := range map[string]string{
		"/api/v1/auth/introspect|revoke":                   "/api/v1/auth/introspect,/api/v1/auth/revoke",
		"/verify-email|/reset-password|/accept-invitation": "/verify-email,/reset-password,/accept-invitation",
		"/.well-known/…":                                   "/.well-known/x",
		"/openapi.json":                                    "/openapi.json",
	} {
		if got := strings.Join(expand(in), ","); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}
