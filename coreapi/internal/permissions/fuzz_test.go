package permissions

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzParse reads arbitrary bytes as a catalog, and a list of one entry
// with an arbitrary name and description. An accepted catalog holds the
// built-ins as they are, each name once, sorted, each name a
// resource:action within the limits, with a description; the one-entry
// list is accepted exactly when its name and description are valid and
// the name is not a built-in's (or, with a control character in the
// description, refused).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		notesYAML, "- {name: notes:write, description: Create notes}\n- name: notes:read\n  description: Read notes\n  member_default: true\n",
		`{"permissions": [{"name": "notes:read", "description": "Read notes", "member_default": true}]}`,
		`[{name: Notes:read, description: x}]`, `[{name: "notes:", description: x}]`, `[{name: "notes:read:all", description: x}]`,
		`[{description: x}]`, `[{name: notes:read}]`, `[{name: notes:read, description: x}, {name: notes:read, description: z}]`,
		`[{name: users:read, description: x}]`, `[{name: notes:read, description: x, default: true}]`, `{permisions: []}`,
		`[{name: notes:read, description: x, member_default: "yes"}]`, `notes:read`, "permissions: [\n  - {", `[{name: notes:read, description: yes}]`,
		"", "null", "[]", "{}", "- {name: a:b, description: x}\n---\n- {name: a:b, description: y}\n", "[{name: \"a:b\\n\", description: x}]",
	} {
		f.Add([]byte(s), "notes:read", "Read notes")
	}
	f.Add([]byte(nil), "tenant:read", "x")
	f.Add([]byte(nil), "a:b\n", "x")
	f.Add([]byte(nil), "a:b", " \t")
	f.Add([]byte(nil), "a-1:b-", strings.Repeat("é", MaxDescription))
	f.Fuzz(func(t *testing.T, data []byte, name, desc string) {
		if c, err := Parse(data, "fuzz"); err == nil {
			checkCatalog(t, data, c)
		} else if _, ok := err.(*Error); !ok {
			t.Fatalf("Parse(%q) = %T %v, want *Error", data, err, err)
		}
		doc, err := json.Marshal([]map[string]string{{"name": name, "description": desc}})
		if err != nil {
			t.Fatal(err)
		}
		d := strings.TrimSpace(desc)
		want := ValidName(name) && !IsBuiltin(name) && d != "" && utf8.RuneCountInString(d) <= MaxDescription
		c, err := Parse(doc, "fuzz")
		if err != nil && want && strings.ContainsFunc(desc, func(r rune) bool { return !unicode.IsGraphic(r) && !unicode.IsSpace(r) }) {
			return // YAML refuses some control characters, as it may
		}
		if (err == nil) != want {
			t.Fatalf("Parse(%s) = %v, want accepted %v", doc, err, want)
		}
		if err == nil {
			checkCatalog(t, doc, c)
			if !c.Has(name) || len(c.Names()) != len(BuiltinNames())+1 {
				t.Fatalf("Parse(%s): names %v", doc, c.Names())
			}
		}
	})
}

func checkCatalog(t *testing.T, data []byte, c *Catalog) {
	t.Helper()
	names := c.Names()
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Fatalf("Parse(%q): names %v not sorted or repeated", data, names)
	}
	if len(names) > len(builtins())+MaxEntries || len(strings.Join(names, ",")) > MaxListBytes {
		t.Fatalf("Parse(%q): %d names", data, len(names))
	}
	for _, b := range builtins() {
		i, ok := slices.BinarySearch(names, b.Name)
		if !ok || c.Entries()[i] != b {
			t.Fatalf("Parse(%q): built-in %s is %+v", data, b.Name, c.Entries()[i])
		}
	}
	for _, e := range c.Entries() {
		if !nameRE.MatchString(e.Name) || len(e.Name) > MaxName || strings.ContainsAny(e.Name, "\n\r\x00") {
			t.Fatalf("Parse(%q) accepted the name %q", data, e.Name)
		}
		if e.Builtin != IsBuiltin(e.Name) {
			t.Fatalf("Parse(%q): %q marked built-in %v", data, e.Name, e.Builtin)
		}
		if d := strings.TrimSpace(e.Description); d == "" || d != e.Description || utf8.RuneCountInString(d) > MaxDescription {
			t.Fatalf("Parse(%q): %q has the description %q", data, e.Name, e.Description)
		}
	}
}
