package metricslint

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAlertsNamedAreDefined: the suggested alerts of docs/operations.md
// are a rule file Prometheus loads (no unknown field, every rule an alert
// with an expression), every rule is named once, and every alert
// README.md, docs/*.md and CHANGELOG.md name has a rule there.
func TestAlertsNamedAreDefined(t *testing.T) {
	root := filepath.Join("..", "..")
	ops, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := AlertRules("docs/operations.md", string(ops))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]int{}
	for _, r := range rules {
		defined[r.Alert]++
	}
	if len(defined) < 10 {
		t.Fatalf("%d alert rules found: the parse is broken", len(defined))
	}
	for name, n := range defined {
		if n > 1 {
			t.Errorf("alert %s has %d rules", name, n)
		}
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(docs, filepath.Join(root, "README.md"), filepath.Join(root, "CHANGELOG.md")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(root, f)
		for _, m := range regexp.MustCompile(`\bTollgate[A-Z]\w+`).FindAll(b, -1) {
			if defined[string(m)] == 0 {
				t.Errorf("%s names the alert %s but docs/operations.md defines no rule for it", name, m)
			}
		}
	}
}

func TestAlertRulesStrict(t *testing.T) {
	for _, tc := range []struct{ name, block, want string }{
		{"misspelt field", "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        annotation: {summary: x}\n", "annotation"},
		{"no expr", "groups:\n  - name: g\n    rules:\n      - alert: A\n", "want an alert and an expr"},
	} {
		_, err := AlertRules("doc.md", "text\n\n```yaml\n"+tc.block+"```\n")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "doc.md:3") {
			t.Errorf("%s: AlertRules = %v, want an error at doc.md:3 about %q", tc.name, err, tc.want)
		}
	}
}
