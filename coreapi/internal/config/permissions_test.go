package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
)

func TestPermissionCatalog(t *testing.T) {
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Catalog == nil || c.Catalog.Hash() != permissions.Builtin().Hash() {
		t.Fatalf("default catalog = %v, want the built-ins", c.Catalog)
	}

	p := filepath.Join(t.TempDir(), "permissions.yaml")
	if err := os.WriteFile(p, []byte("permissions:\n  - {name: notes:read, description: Read notes, member_default: true}\n  - {name: notes:write, description: Create notes}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := minimal()
	m["PERMISSIONS_FILE"] = p
	c, err = Load(env(m))
	if err != nil {
		t.Fatalf("Load() with PERMISSIONS_FILE = %v", err)
	}
	if !c.Catalog.Has("notes:write") || strings.Join(c.Catalog.MemberNames(), ",") != "notes:read,tenant:read" {
		t.Fatalf("catalog = %v", c.Catalog.Names())
	}
	s := c.String()
	for _, want := range []string{"PERMISSIONS_FILE=" + p, "# permission catalog: 2 declared [notes:read notes:write], hash " + c.Catalog.Hash()} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
	var b strings.Builder
	logTo(&b, c)
	if !strings.Contains(b.String(), c.Catalog.Hash()) {
		t.Errorf("LogValue lacks the catalog hash:\n%s", b.String())
	}

	m = minimal()
	m["PERMISSIONS"] = `[{"name": "invoices:write", "description": "Issue invoices"}]`
	if c, err = Load(env(m)); err != nil || !c.Catalog.Has("invoices:write") {
		t.Fatalf("Load() with PERMISSIONS = %v", err)
	}
}

// TestPermissionCatalogProblems: every catalog problem is reported, beside
// the other configuration problems, in one error.
func TestPermissionCatalogProblems(t *testing.T) {
	m := minimal()
	m["DB_MAX_CONNS"] = "2"
	m["PERMISSIONS"] = "- {name: Notes:read, description: x}\n- {name: users:write, description: x}\n- {name: a:b}\n"
	_, err := Load(env(m))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load() = %v, want *Error", err)
	}
	want := []string{
		"DB_MAX_CONNS",
		`PERMISSIONS: permissions[0] "Notes:read": name: want resource:action`,
		`PERMISSIONS: permissions[1] "users:write": name: a built-in permission cannot be redeclared`,
		`PERMISSIONS: permissions[2] "a:b": description: required`,
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}

	m = minimal()
	m["PERMISSIONS"] = "[]"
	m["PERMISSIONS_FILE"] = "/nonexistent"
	if _, err := Load(env(m)); err == nil || !strings.Contains(err.Error(), "PERMISSIONS and PERMISSIONS_FILE are both set") {
		t.Errorf("both set: %v", err)
	}
	delete(m, "PERMISSIONS")
	if _, err := Load(env(m)); err == nil || !strings.Contains(err.Error(), "PERMISSIONS_FILE: open /nonexistent") {
		t.Errorf("missing file: %v", err)
	}
}
