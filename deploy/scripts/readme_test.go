package scripts

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeNamesTestTools: every program a test fails without (an
// exec.LookPath followed by t.Fatal, not t.Skip) is named, in backquotes,
// in README.md's requirements, so that `make test` on a fresh machine does
// not stop at a tool only the developers' machines had. Node.js and npm,
// which two tests need, were missing there.
func TestReadmeNamesTestTools(t *testing.T) {
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "Requirements:")
	if start < 0 {
		t.Fatal("README.md has no Requirements paragraph")
	}
	req := text[start:]
	if end := strings.Index(req, "\n\n"); end >= 0 {
		req = req[:end]
	}
	lookPath := regexp.MustCompile(`exec\.LookPath\("([^"]+)"\)`)
	needed := map[string]string{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		for i, line := range lines {
			m := lookPath.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			// The statements that handle the tool's absence.
			next := strings.Join(lines[i+1:min(i+4, len(lines))], "\n")
			if strings.Contains(next, "t.Fatal") && !strings.Contains(next, "t.Skip") {
				rel, _ := filepath.Rel(root, path)
				needed[m[1]] = rel
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(needed) == 0 {
		t.Fatal("found no test that needs a program: the scan is broken")
	}
	for tool, file := range needed {
		if !strings.Contains(req, "`"+tool+"`") {
			t.Errorf("%s fails without %s, which README.md's requirements do not name:\n%s", file, tool, req)
		}
	}
}
