package audit

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// insertInto matches an INSERT into audit_events and its column list.
var insertInto = regexp.MustCompile(`(?is)insert\s+into\s+(?:public\.)?audit_events\s*\(([^)]*)\)`)

// TestEveryInsertRecordsTheKey: a statement of coreapi's that inserts
// audit rows itself, rather than through Write or Queue, names api_key_id
// among its columns (fed with APIKeyOf), so that no event of a change
// made with an API key leaves the key out. The holders' rows of a role's
// deletion were written by such a statement without it, and named no key
// beside a role.deleted row that did.
func TestEveryInsertRecordsTheKey(t *testing.T) {
	root := filepath.Join("..", "..") // coreapi's module
	found := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range insertInto.FindAllStringSubmatch(string(src), -1) {
			found++
			if !strings.Contains(m[1], "api_key_id") {
				t.Errorf("%s: %s names no api_key_id", path, strings.Join(strings.Fields(m[0]), " "))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 3 { // Write's, WriteForUser's and the role deletion's
		t.Fatalf("found %d inserts into audit_events under %s, want at least 3: the walk missed the sources", found, root)
	}
}
