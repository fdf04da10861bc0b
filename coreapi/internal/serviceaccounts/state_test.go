package serviceaccounts

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
)

// The queries spell out the role-permission expression to stay constants;
// it must be the one every other query uses.
func TestRolePermsIsTheRolesExpression(t *testing.T) {
	if want := roles.PermissionsSQL("r", "$3::text[]", "$4::text[]"); rolePerms != want {
		t.Fatalf("rolePerms =\n%s\nwant\n%s", rolePerms, want)
	}
}

// TestNoPackageState: the package holds no mutable state of its own
// (STYLE.md): a package-level variable is an error sentinel (errors.New,
// fmt.Errorf) or an interface assertion (var _ I = ...); a value every
// caller reads is a constant, or a function returning a fresh copy, so
// that no caller can change what the others read.
func TestNoPackageState(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if n.Name == "_" || i < len(vs.Values) && sentinel(vs.Values[i]) {
						continue
					}
					t.Errorf("%s: package-level variable %s", fset.Position(n.Pos()), n.Name)
				}
			}
		}
	}
}

// sentinel reports whether e is errors.New(...) or fmt.Errorf(...).
func sentinel(e ast.Expr) bool {
	c, ok := e.(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && (pkg.Name == "errors" && sel.Sel.Name == "New" || pkg.Name == "fmt" && sel.Sel.Name == "Errorf")
}
