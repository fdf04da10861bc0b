package scripts

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocPathsExist: every repository path README.md and docs/*.md name
// (a relative link, or a backquoted path under one of the top-level
// directories) exists. docs/operations.md sent readers to a rules file in
// deploy/internal/rules, long gone: those routes are built into authproxy.
// docs/benchmarks.md is left out: it is a record of measurements, naming
// files that were tried and not kept.
func TestDocPathsExist(t *testing.T) {
	root := filepath.Join("..", "..")
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, filepath.Join(root, "README.md"))
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	quoted := regexp.MustCompile("`((?:deploy|scripts|shared|coreapi|authproxy|migrations|docs)/[A-Za-z0-9_./-]*[A-Za-z0-9_/])`")
	checked := 0
	for _, doc := range docs {
		if filepath.Base(doc) == "benchmarks.md" {
			continue
		}
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(root, doc)
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			p := m[1]
			if strings.Contains(p, "://") || strings.HasPrefix(p, "mailto:") {
				continue
			}
			checked++
			if _, err := os.Stat(filepath.Join(filepath.Dir(doc), p)); err != nil {
				t.Errorf("%s links to %s, which does not exist", name, p)
			}
		}
		for _, m := range quoted.FindAllStringSubmatch(string(b), -1) {
			p := m[1]
			if strings.ContainsAny(p, "*") || strings.Contains(p, "...") {
				continue
			}
			checked++
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("%s names %s, which does not exist", name, p)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d paths found: the scan is broken", checked)
	}
}
