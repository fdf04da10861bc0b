package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
		return p
	}
	// A Secret volume: the file is a link to ..data/<name>, and the link
	// itself has mode 0777; the file's own mode counts.
	link := func(name, target string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tight := write("tight", 0o440)
	loose := write("loose", 0o644)
	for _, c := range []struct {
		path string
		warn bool
	}{
		{write("owner", 0o600), false},
		{write("owner-ro", 0o400), false},
		{tight, false}, // the manifests' defaultMode, group = fsGroup
		{write("group", 0o640), false},
		{loose, true}, // Kubernetes' default defaultMode
		{write("world-write", 0o602), true},
		{write("other-exec", 0o601), true},
		{link("tight-link", tight), false},
		{link("loose-link", loose), true},
		{filepath.Join(dir, "missing"), false}, // reading it reports that
		{dir, false},                           // not a file
	} {
		got := Check("SOME_FILE", c.path)
		if (got != "") != c.warn {
			t.Errorf("Check(%s) = %q, want a warning: %v", c.path, got, c.warn)
		}
		if got != "" && (!strings.Contains(got, "SOME_FILE") || !strings.Contains(got, c.path) || !strings.Contains(got, "mode 0")) {
			t.Errorf("Check(%s) = %q: want the variable, the path and the mode named", c.path, got)
		}
	}
}

// TestReadBounded: a file of at most MaxSize bytes is read whole; a larger
// one, whatever it holds, is refused naming the file, after reading no
// more than MaxSize+1 bytes of it; a directory or a missing file is an
// error.
func TestReadBounded(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	if err := os.WriteFile(full, []byte(strings.Repeat("k", MaxSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(full); err != nil || len(b) != MaxSize {
		t.Fatalf("Read(%d bytes) = %d bytes, %v", MaxSize, len(b), err)
	}
	over := filepath.Join(dir, "over")
	if err := os.WriteFile(over, []byte(strings.Repeat("k", MaxSize+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(over); err == nil || b != nil || !strings.Contains(err.Error(), over) || !strings.Contains(err.Error(), "not a key file") {
		t.Fatalf("Read(%d bytes) = %d bytes, %v; want it refused, naming the file", MaxSize+1, len(b), err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "missing")} {
		if _, err := Read(p); err == nil {
			t.Errorf("Read(%s): no error", p)
		}
	}
}
