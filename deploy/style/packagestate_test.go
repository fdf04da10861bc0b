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
	// Byte-class tables, built once, indexed by each byte of a header
	// field, a path or a JSON string on the warm request path: a function
	// returning one would build or copy it for every byte looked up.
	"authproxy/internal/headers.diagnosticFirst": "byte-class table, read only",
	"authproxy/internal/headers.b64token":        "byte-class table, read only",
	"authproxy/internal/headers.tchar":           "byte-class table, read only",
	"authproxy/internal/headers.hostBytes":       "byte-class table, read only",
	"authproxy/internal/pathnorm.pathChars":      "byte-class table, read only",
	"authproxy/internal/pathnorm.plainClass":     "byte-class table, read only",
	"coreapi/internal/jsonenc.safe":              "byte-class table, read only",
	// Fixed lists the warm path ranges over (the fields every request
	// loses, the methods a route names, the letters some upstreams fold),
	// which nothing writes.
	"authproxy/internal/headers.hopByHop":   "warm path list, read only",
	"authproxy/internal/rules.methodNames":  "warm path list, read only",
	"authproxy/internal/rules.unicodeFolds": "warm path list, read only",
	// The all-zero nonce of the token digests (see its comment), passed
	// as a slice to the AEAD on every token looked up: a local array would
	// escape to the heap, one allocation a request.
	"authproxy/internal/tokens.digestNonce": "zero nonce, never written",
	// A pool of response-header readers: sync.Pool is made for
	// package-level use, safe for concurrent callers, and what it holds
	// is no caller's state.
	"authproxy/internal/streams.headerReaders": "sync.Pool of buffers",
}

// testSupport are the packages only tests import: what they hold is
// fixed test data, never linked into a service.
var testSupport = []string{"authproxy/internal/testenv", "coreapi/internal/apitest", "coreapi/internal/mail/mailtest"}

// TestNoPackageState: no package of authproxy or coreapi (tests aside)
// holds a package-level map, slice, array, struct or other composite
// literal (STYLE.md) but the exceptions above. Such a value every caller
// reads is one any caller can change for all the others, and a test's
// change of it leaks into the next. Other package-level variables (error
// sentinels, compiled regular expressions, values built by a call) are
// not judged here.
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
// than "_", whose type or value is a map, a slice, an array, a struct or a
// composite literal (table).
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
				if i < len(vs.Values) && sentinel(n, vs.Values[i]) {
					continue
				}
				out = append(out, n)
			}
		}
	}
	return out
}

// sentinel reports whether variable n of value v is an error sentinel:
// named err… or Err… (ST1012) and the address of a composite literal (a
// problem value its package compares by identity, as errors.New's). Its
// fields are its package's, unexported, as errors.New's are.
func sentinel(n *ast.Ident, v ast.Expr) bool {
	u, ok := v.(*ast.UnaryExpr)
	if !ok || u.Op != token.AND {
		return false
	}
	if _, ok := u.X.(*ast.CompositeLit); !ok {
		return false
	}
	return strings.HasPrefix(n.Name, "err") || strings.HasPrefix(n.Name, "Err")
}

// table reports whether e, a variable's type or value, is a value any
// caller can change for all the others: a map, a slice, an array or a
// struct, as a type, as any composite literal (a named type's included:
// whatever it names, a composite literal is one of those four) or the
// address of one, a conversion to one, make, or a function literal
// returning one, called. A variable of a named type without a value, or a
// pointer without one, is not judged: its type is not known here.
func table(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.MapType, *ast.ArrayType, *ast.StructType, *ast.CompositeLit:
		return true
	case *ast.ParenExpr:
		return table(e.X)
	case *ast.UnaryExpr:
		return e.Op == token.AND && table(e.X)
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
