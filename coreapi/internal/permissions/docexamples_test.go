package permissions

import (
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tollgate-auth/tollgate/shared/docblock"
)

// TestDocCatalogExamples: every permission catalog README.md and
// docs/*.md show (a YAML or JSON block with a permissions list) loads as
// written.
func TestDocCatalogExamples(t *testing.T) {
	blocks, err := docblock.Docs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range blocks {
		if b.Lang != "yaml" && b.Lang != "json" {
			continue
		}
		var probe map[string]any
		if yaml.Unmarshal([]byte(b.Text), &probe) != nil {
			continue
		}
		if _, ok := probe["permissions"]; !ok {
			continue
		}
		n++
		if _, err := Parse([]byte(b.Text), b.Where()); err != nil {
			t.Errorf("the catalog does not load: %v", err)
		}
	}
	if n == 0 {
		t.Fatal("found no catalog in the docs: the scan is broken")
	}
}
