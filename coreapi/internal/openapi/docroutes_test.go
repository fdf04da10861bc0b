package openapi

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsNameDocumentedRoutes: every coreapi route README.md and docs/*.md
// quote as "`METHOD /path`" (the /api/v1 prefix may be left out) is an
// operation of the OpenAPI document, internal routes included. The example
// app's /notes routes and abbreviated ones ("…", "a|b") are left out.
// docs/operations.md sent readers of AUDIT_RETENTION to a GET /audit that
// coreapi does not serve (the route is GET /api/v1/audit-events).
func TestDocsNameDocumentedRoutes(t *testing.T) {
	b, err := Internal()
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("..", "..", "..")
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(root, "README.md"))
	quoted := regexp.MustCompile("`(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/[^`\\s]*)`")
	checked := 0
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(root, f)
		for _, m := range quoted.FindAllStringSubmatch(string(text), -1) {
			method, p := strings.ToLower(m[1]), m[2]
			p, _, _ = strings.Cut(p, "?")
			if p == "/notes" || strings.HasPrefix(p, "/notes/") || strings.ContainsAny(p, "…|") {
				continue
			}
			checked++
			if !documentedRoute(d.Paths, method, p) && !documentedRoute(d.Paths, method, "/api/v1"+p) {
				t.Errorf("%s quotes %s, which is no operation of the OpenAPI document", name, m[0])
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d routes found: the scan is broken", checked)
	}
}

// documentedRoute reports whether paths has an operation of method on a
// path p matches: segment by segment, a template ("{id}") of either
// matching any segment.
func documentedRoute(paths map[string]map[string]json.RawMessage, method, p string) bool {
	want := strings.Split(p, "/")
	for path, ops := range paths {
		if _, ok := ops[method]; !ok {
			continue
		}
		have := strings.Split(path, "/")
		if len(have) != len(want) {
			continue
		}
		same := true
		for i := range have {
			if have[i] != want[i] && !template(have[i]) && !template(want[i]) && !strings.HasPrefix(want[i], ":") {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}

func template(seg string) bool { return strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") }
