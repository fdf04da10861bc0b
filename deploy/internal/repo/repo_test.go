package repo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRoot(t *testing.T) {
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Fatalf("Root() = %s, which holds no go.work", root)
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "internal", "repo")); err != nil {
		t.Fatalf("Root() = %s, which is not this repository", root)
	}

	t.Chdir(t.TempDir())
	if _, err := Root(); err == nil {
		t.Fatal("Root() outside a repository succeeded")
	}
}
