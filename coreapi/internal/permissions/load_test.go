package permissions

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const notesYAML = `
permissions:
  - name: notes:read
    description: Read notes
    member_default: true
  - name: notes:write
    description: Create notes
`

func TestParseFormats(t *testing.T) {
	for _, tc := range []struct{ name, text string }{
		{"yaml object", notesYAML},
		{"yaml list", "- {name: notes:write, description: Create notes}\n- name: notes:read\n  description: Read notes\n  member_default: true\n"},
		{"json object", `{"permissions": [{"name": "notes:read", "description": "Read notes", "member_default": true}, {"name": "notes:write", "description": "Create notes"}]}`},
		{"json list", `[{"name": "notes:write", "description": "Create notes"}, {"name": "notes:read", "description": "Read notes", "member_default": true}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.text), "test")
			if err != nil {
				t.Fatalf("Parse = %v", err)
			}
			want := []string{"api-keys:write", "audit:read", "notes:read", "notes:write", "roles:read", "roles:write", "tenant:read", "tenant:write", "users:read", "users:write"}
			if !slices.Equal(c.Names(), want) {
				t.Errorf("names = %v, want %v", c.Names(), want)
			}
			if got := c.MemberNames(); !slices.Equal(got, []string{"notes:read", "tenant:read"}) {
				t.Errorf("member = %v", got)
			}
			if got := c.AdminNames(); slices.Contains(got, TenantWrite) || len(got) != len(want)-1 {
				t.Errorf("admin = %v", got)
			}
			if !c.Has("notes:write") || c.Has("notes:delete") {
				t.Error("Has is wrong")
			}
			if c.Hash() != mustParse(t, notesYAML).Hash() {
				t.Error("the same catalog in another format hashes differently")
			}
		})
	}
}

// TestParseVersion: the object form may declare a version, which orders
// catalogs in a rollout and is not part of the hash; left out (or the
// list form) it is 0.
func TestParseVersion(t *testing.T) {
	if got := mustParse(t, notesYAML).Version(); got != 0 {
		t.Errorf("no version declared: %d, want 0", got)
	}
	c := mustParse(t, "version: 7\n"+notesYAML)
	if c.Version() != 7 {
		t.Errorf("version = %d, want 7", c.Version())
	}
	if c.Hash() != mustParse(t, notesYAML).Hash() {
		t.Error("the version changed the hash")
	}
	if got := mustParse(t, `{"version": 3, "permissions": []}`).Version(); got != 3 {
		t.Errorf("json version = %d, want 3", got)
	}
}

func mustParse(t *testing.T, text string) *Catalog {
	t.Helper()
	c, err := Parse([]byte(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestParseRefuses: every bad catalog is refused, naming the problem.
func TestParseRefuses(t *testing.T) {
	long := "a:" + strings.Repeat("b", MaxName)
	for _, tc := range []struct{ name, text, want string }{
		{"upper case", `[{name: Notes:read, description: x}]`, `"Notes:read": name: want resource:action`},
		{"no action", `[{name: notes, description: x}]`, `"notes": name: want resource:action`},
		{"empty action", `[{name: "notes:", description: x}]`, `"notes:": name: want resource:action`},
		{"empty resource", `[{name: ":read", description: x}]`, `":read": name: want resource:action`},
		{"three parts", `[{name: "notes:read:all", description: x}]`, `name: want resource:action`},
		{"leading digit", `[{name: "1notes:read", description: x}]`, `name: want resource:action`},
		{"underscore", `[{name: "my_notes:read", description: x}]`, `name: want resource:action`},
		{"space", `[{name: "notes: read", description: x}]`, `name: want resource:action`},
		{"too long", `[{name: "` + long + `", description: x}]`, `name: want resource:action`},
		{"no name", `[{description: x}]`, `permissions[0]: name: required`},
		{"no description", `[{name: notes:read}]`, `"notes:read": description: required`},
		{"blank description", `[{name: notes:read, description: "  "}]`, `description: required`},
		{"long description", `[{name: notes:read, description: "` + strings.Repeat("x", MaxDescription+1) + `"}]`, `description: at most 500`},
		{"duplicate", `[{name: notes:read, description: x}, {name: notes:write, description: w}, {name: notes:read, description: z}]`, `permissions[2] "notes:read": name: declared twice (first at permissions[0])`},
		{"built-in redeclared", `[{name: users:read, description: x}]`, `"users:read": name: a built-in permission cannot be redeclared`},
		{"new built-in redeclared", `[{name: api-keys:write, description: x}]`, `a built-in permission cannot be redeclared`},
		{"unknown field", `[{name: notes:read, description: x, default: true}]`, `unknown field "default"`},
		{"unknown top-level field", `{permisions: []}`, `unknown field "permisions"`},
		{"wrong type", `[{name: notes:read, description: x, member_default: "yes"}]`, `member_default`},
		{"a scalar", `notes:read`, `want a list of permissions`},
		{"not yaml", "permissions: [\n  - {", `not YAML or JSON`},
		{"two documents", "- {name: notes:read, description: x}\n---\n- {name: notes:write, description: w}\n", `more than one YAML document`},
		{"a broken second document", "- {name: notes:read, description: x}\n---\n- [\n", `not YAML or JSON`},
		{"negative version", `{version: -1, permissions: [{name: notes:read, description: x}]}`, `version: -1, want a whole number at least 0`},
		{"fractional version", `{version: 1.5, permissions: [{name: notes:read, description: x}]}`, `version`},
		{"text version", `{version: two, permissions: [{name: notes:read, description: x}]}`, `version`},
		// YAML 1.1 reads an unquoted yes/no/y/n as a boolean.
		{"boolean description", `[{name: notes:read, description: yes}]`, `description of type string`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.text), "PERMISSIONS_FILE perms.yaml")
			if err == nil {
				t.Fatalf("accepted: %v", c.Names())
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "PERMISSIONS_FILE perms.yaml: ") {
				t.Fatalf("error = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestParseReportsEveryProblem: one pass names them all.
func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`
permissions:
  - {name: Notes:Read, description: x}
  - {name: tenant:read, description: x}
  - {name: notes:write}
  - {name: notes:write, description: again}
  - {name: notes:read, description: fine}
`), "PERMISSIONS")
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want *Error", err)
	}
	want := []string{
		`permissions[0] "Notes:Read": name: want resource:action`,
		`permissions[1] "tenant:read": name: a built-in permission cannot be redeclared`,
		`permissions[2] "notes:write": description: required`,
		`permissions[3] "notes:write": name: declared twice (first at permissions[2])`,
	}
	if len(pe.Problems) != len(want) {
		t.Fatalf("problems = %q", pe.Problems)
	}
	for i, w := range want {
		if !strings.HasPrefix(pe.Problems[i], w) {
			t.Errorf("problem %d = %q, want prefix %q", i, pe.Problems[i], w)
		}
	}
}

func TestParseTooMany(t *testing.T) {
	var b strings.Builder
	for i := range MaxEntries + 1 {
		b.WriteString("- {name: r" + strings.Repeat("x", i%7) + "-" + itoa(i) + ":read, description: x}\n")
	}
	if _, err := Parse([]byte(b.String()), "test"); err == nil || !strings.Contains(err.Error(), "501 permissions declared, at most 500") {
		t.Fatalf("err = %v", err)
	}
}

// TestParseHeaderBudget: every name travels in the owner's
// X-Auth-Permissions header, so their joined length is bounded.
func TestParseHeaderBudget(t *testing.T) {
	entries := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString("- {name: " + "resource-" + itoa(i) + ":" + strings.Repeat("a", 60) + ", description: x}\n")
		}
		return b.String()
	}
	// 110 names of ~72 bytes fit; 130 do not.
	c, err := Parse([]byte(entries(110)), "test")
	if err != nil {
		t.Fatalf("110 long names: %v", err)
	}
	if n := len(strings.Join(c.Names(), ",")); n > MaxListBytes {
		t.Fatalf("accepted %d bytes", n)
	}
	if _, err := Parse([]byte(entries(130)), "test"); err == nil || !strings.Contains(err.Error(), "X-Auth-Permissions header") {
		t.Fatalf("130 long names: %v", err)
	}
}

func itoa(i int) string {
	const digits = "abcdefghij"
	s := ""
	for {
		s = string(digits[i%10]) + s
		i /= 10
		if i == 0 {
			return s
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "permissions.yaml")
	if err := os.WriteFile(file, []byte(notesYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load("", file)
	if err != nil || !c.Has("notes:read") {
		t.Fatalf("Load(file) = %v, %v", c, err)
	}
	c, err = Load(`[{"name": "invoices:write", "description": "Issue invoices"}]`, "")
	if err != nil || !c.Has("invoices:write") || c.Has("notes:read") {
		t.Fatalf("Load(env) = %v, %v", c, err)
	}
	c, err = Load("  ", "")
	if err != nil || !slices.Equal(c.Names(), BuiltinNames()) || c.Hash() != Builtin().Hash() {
		t.Fatalf("Load() = %v, %v; want the built-ins", c, err)
	}
	if c, err := Parse([]byte("permissions: []\n"), "test"); err != nil || c.Hash() != Builtin().Hash() {
		t.Fatalf("empty list = %v, %v", c, err)
	}
	if _, err := Load(`[]`, file); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Errorf("both set: %v", err)
	}
	if _, err := Load("", filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "PERMISSIONS_FILE") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Load("- {name: x}", ""); err == nil || !strings.HasPrefix(err.Error(), "PERMISSIONS: ") {
		t.Errorf("bad env: %v", err)
	}
}

// TestHash: what shapes projections changes the hash; descriptions and
// order do not.
func TestHash(t *testing.T) {
	base := mustParse(t, notesYAML).Hash()
	same := mustParse(t, "- {name: notes:write, description: Write notes}\n- {name: notes:read, description: Read them, member_default: true}\n").Hash()
	if same != base {
		t.Error("description or order changed the hash")
	}
	for name, text := range map[string]string{
		"member default off": "- {name: notes:write, description: x}\n- {name: notes:read, description: x}\n",
		"one removed":        "- {name: notes:read, description: x, member_default: true}\n",
		"one added":          notesYAML + "  - {name: notes:delete, description: x}\n",
	} {
		if mustParse(t, text).Hash() == base {
			t.Errorf("%s: hash unchanged", name)
		}
	}
	if Builtin().Hash() == base || !strings.HasPrefix(base, "sha256:") {
		t.Errorf("hash %q", base)
	}
}

func TestUnknownAndKnown(t *testing.T) {
	c := mustParse(t, notesYAML)
	if got := c.Unknown([]string{"notes:read", "x:y", "tenant:read", "x:y", "a:b"}); !slices.Equal(got, []string{"x:y", "a:b"}) {
		t.Errorf("Unknown = %v", got)
	}
	if got := c.Known([]string{"notes:read", "x:y", "tenant:read"}); !slices.Equal(got, []string{"notes:read", "tenant:read"}) {
		t.Errorf("Known = %v", got)
	}
}

// TestParseDocumentMarkers: a catalog that opens with "---", or ends with
// one, is one document.
func TestParseDocumentMarkers(t *testing.T) {
	for _, text := range []string{"---\n" + notesYAML, notesYAML + "---\n", "---\n" + notesYAML + "...\n"} {
		if c := mustParse(t, text); !c.Has("notes:write") {
			t.Errorf("Parse(%q): names %v", text, c.Names())
		}
	}
}
