package metrics

import (
	"os"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/metricslint"
)

// TestDocumentedMetricsExist: every authproxy_ metric docs/operations.md
// lists is defined in the proxy's code (the live test checks the other
// way: every exported metric is documented).
func TestDocumentedMetricsExist(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(metricslint.DocumentedNames(string(doc), "authproxy_")); n < 15 {
		t.Fatalf("%d authproxy metrics found in docs/operations.md; the parse is broken", n)
	}
	stale, err := metricslint.Stale(string(doc), "authproxy_", "../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range stale {
		t.Errorf("docs/operations.md documents %s, which the proxy does not define", name)
	}
}
