package problem

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// TestKnownHoldsEveryCode: Known answers true for each Code constant of
// problem.go, read from the source so that a code added later cannot be
// forgotten, and for nothing else.
func TestKnownHoldsEveryCode(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "problem.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]bool{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !strings.HasPrefix(n.Name, "Code") || !ok || lit.Kind != token.STRING {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				codes[v] = true
				if !Known(v) {
					t.Errorf("Known(%q) = false for %s", v, n.Name)
				}
			}
		}
	}
	if len(codes) < 70 {
		t.Fatalf("read %d codes from problem.go, want them all", len(codes))
	}
	for c := range known {
		if !codes[c] {
			t.Errorf("known holds %q, which no Code constant is", c)
		}
	}
	for _, c := range []string{"", "some_new_code", "your_account_is_locked_call_us", "Bad_Request"} {
		if Known(c) {
			t.Errorf("Known(%q) = true", c)
		}
	}
}
