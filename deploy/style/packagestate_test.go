package style

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// exceptions are the package-level variables that may stay, by
// "module/path/to/package.name", each with why: a value computed once,
// before any request, that nothing writes afterwards and that could not
// be a constant. Keep the list short: a table is a switch, a function
// returning a fresh value, a const string or an array indexed by a const.
var exceptions = map[string]string{
	// Header names as the []byte fasthttp's canonical setters and
	// getters take, on the warm request path: a conversion there would
	// cost each request, and none of them writes the bytes.
	"authproxy/internal/server.requestIDKey":   "warm path header name, read only",
	"authproxy/internal/server.invalidatedKey": "warm path header name, read only",
	"authproxy/internal/headers.cookieName":    "warm path header name, read only",
	// The set of common passwords, parsed once from the embedded list:
	// rebuilt for each check it would cost every password change.
	"coreapi/internal/password.common": "built once at init, read only",
}

// testSupport are the packages only tests import: what they hold is
// fixed test data, never linked into a service.
var testSupport = []string{"authproxy/internal/testenv", "coreapi/internal/apitest"}

// TestNoPackageState: no package of authproxy or coreapi (tests aside)
// holds a package-level map or slice (STYLE.md) but the exceptions above.
// A map or slice every caller reads is one any caller can change for all
// the others, and a test's change of it leaks into the next. Other
// package-level variables (error sentinels, compiled regular expressions,
// problem values) are not judged here.
func TestNoPackageState(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	used := map[string]bool{}
	for _, module := range []string{"authproxy", "coreapi"} {
		err := filepath.WalkDir(filepath.Join(root, module), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			if rel, err := filepath.Rel(root, path); err == nil && d.IsDir() && slices.Contains(testSupport, filepath.ToSlash(rel)) {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			for _, name := range packageVars(f) {
				key := filepath.ToSlash(rel) + "." + name.Name
				if _, ok := exceptions[key]; ok {
					used[key] = true
					continue
				}
				t.Errorf("%s: package-level variable %s (make it a constant, a function or a switch, or list it in exceptions with why)",
					fset.Position(name.Pos()), name.Name)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for key := range exceptions {
		if !used[key] {
			t.Errorf("exception %s names no package-level variable: remove it", key)
		}
	}
}

// packageVars are the names f declares at package level with var, other
// than "_", whose type or value is a map or a slice (table).
func packageVars(f *ast.File) []*ast.Ident {
	var out []*ast.Ident
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if n.Name == "_" || i >= len(vs.Values) && !table(vs.Type) || i < len(vs.Values) && !table(vs.Values[i]) && !table(vs.Type) {
					continue
				}
				out = append(out, n)
			}
		}
	}
	return out
}

// table reports whether e, a variable's type or value, is a map or a
// slice: a type, a composite literal or a conversion to one, make, or a
// function literal returning one, called.
func table(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.MapType:
		return true
	case *ast.ArrayType:
		return e.Len == nil
	case *ast.CompositeLit:
		return table(e.Type)
	case *ast.CallExpr:
		if id, ok := e.Fun.(*ast.Ident); ok && id.Name == "make" {
			return true
		}
		if f, ok := e.Fun.(*ast.FuncLit); ok { // built by a function called at init
			r := f.Type.Results
			return r != nil && len(r.List) == 1 && table(r.List[0].Type)
		}
		return table(e.Fun)
	}
	return false
}
