package metrics

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestUpstreamErrorTargetsDocumented: every target the proxy's code counts
// authproxy_upstream_errors_total under is named in the metric's row of
// docs/operations.md, so that an alert or a dashboard can be written for it.
func TestUpstreamErrorTargetsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, l := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(l, "| `authproxy_upstream_errors_total{") {
			row = l
		}
	}
	if row == "" {
		t.Fatal("no authproxy_upstream_errors_total row in docs/operations.md")
	}
	call := regexp.MustCompile(`UpstreamErrors\.WithLabelValues\("([a-z_]+)"`)
	targets := map[string]bool{}
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range call.FindAllStringSubmatch(string(b), -1) {
			targets[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) == 0 {
		t.Fatal("no UpstreamErrors call found")
	}
	for tg := range targets {
		if !strings.Contains(row, "`"+tg+"`") {
			t.Errorf("target %q is counted but not documented: %s", tg, row)
		}
	}
}
