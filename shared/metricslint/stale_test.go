package metricslint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStale(t *testing.T) {
	dir := t.TempDir()
	src := "package x\nvar a = \"svc_requests_total\"\nvar b = \"svc_up\"\n"
	if err := os.WriteFile(filepath.Join(dir, "m.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	// A name only a test mentions does not count.
	if err := os.WriteFile(filepath.Join(dir, "m_test.go"), []byte("package x\nvar c = \"svc_gone_total\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := "# Ops\n## Metrics\n\n| Metric | Type |\n|---|---|\n| `svc_requests_total{code}` | counter |\n| `svc_up`, `svc_gone_total` | gauge |\n" +
		"\nRenamed: `svc_old_total` is now `svc_requests_total`.\n## Mail\n| `svc_elsewhere_total` | x |\n"
	if got := strings.Join(DocumentedNames(doc, "svc_"), ","); got != "svc_gone_total,svc_requests_total,svc_up" {
		t.Fatalf("DocumentedNames = %s", got)
	}
	stale, err := Stale(doc, "svc_", dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(stale, ",") != "svc_gone_total" {
		t.Fatalf("Stale = %v, want [svc_gone_total]", stale)
	}
}
