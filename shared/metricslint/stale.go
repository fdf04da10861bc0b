package metricslint

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// Stale returns the metrics docs/operations.md lists in its tables (the
// rows of the "## Metrics" section naming a metric of prefix) that no Go
// source under root defines: a metric removed or renamed in code and left
// in the documentation. Every metric of both services is named by a string
// literal of its full name, so the literal is what this looks for.
func Stale(doc, prefix, root string) ([]string, error) {
	var src strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		src.Write(b)
		return err
	})
	if err != nil {
		return nil, err
	}
	code := src.String()
	var out []string
	for _, name := range DocumentedNames(doc, prefix) {
		if !strings.Contains(code, `"`+name+`"`) {
			out = append(out, name)
		}
	}
	return out, nil
}

// DocumentedNames lists the metric names of prefix in the table rows of the
// "## Metrics" section of doc.
func DocumentedNames(doc, prefix string) []string {
	start := strings.Index(doc, "\n## Metrics\n")
	if start < 0 {
		return nil
	}
	section := doc[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	name := regexp.MustCompile("`(" + regexp.QuoteMeta(prefix) + "[a-z0-9_]+)[`{]")
	seen := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.Split(line, "|")[1]
		for _, m := range name.FindAllStringSubmatch(cell, -1) {
			seen[m[1]] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// CheckDocumented fails t when a metric of prefix that the operations doc
// (docPath) lists is not defined in the Go code under root (a service's
// module), or when the doc lists fewer than min of them (a broken parse).
func CheckDocumented(t testing.TB, docPath, prefix, root string, min int) {
	t.Helper()
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(DocumentedNames(string(doc), prefix)); n < min {
		t.Fatalf("%d %s metrics found in %s; the parse is broken", n, prefix, docPath)
	}
	stale, err := Stale(string(doc), prefix, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range stale {
		t.Errorf("%s documents %s, which the code under %s does not define", docPath, name, root)
	}
}
