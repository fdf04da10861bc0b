package permissions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	"github.com/tollgate-auth/tollgate/shared/yamldoc"
)

// Error lists every problem found in a catalog.
type Error struct {
	Source   string // PERMISSIONS_FILE path or "PERMISSIONS"
	Problems []string
}

func (e *Error) Error() string {
	return e.Source + ": " + strings.Join(e.Problems, "; ")
}

// Load returns the catalog declared in the file at path, or in text (the
// PERMISSIONS variable); both empty means the built-ins only. Setting both
// is an error.
func Load(text, path string) (*Catalog, error) {
	text = strings.TrimSpace(text)
	switch {
	case text != "" && path != "":
		return nil, errors.New("PERMISSIONS and PERMISSIONS_FILE are both set; set one")
	case path != "":
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("PERMISSIONS_FILE: %w", err)
		}
		return Parse(data, "PERMISSIONS_FILE "+path)
	case text != "":
		return Parse([]byte(text), "PERMISSIONS")
	}
	return Builtin(), nil
}

// document is the catalog format: either this object or just its list
// (which has version 0).
type document struct {
	Version     int64      `json:"version"`
	Permissions []declared `json:"permissions"`
}

type declared struct {
	Name          string `json:"name"`
	Description   string `json:"description"`
	MemberDefault bool   `json:"member_default"`
}

// Parse reads a catalog in YAML or JSON (JSON is YAML):
//
//	version: 3
//	permissions:
//	  - name: notes:read
//	    description: Read notes
//	    member_default: true
//	  - name: notes:write
//	    description: Create notes
//
// or the list alone, in one YAML document. version, a whole number at
// least 0 (0 when left out), orders catalogs during a rollout (Record).
// Unknown fields, bad names,
// missing descriptions, duplicates and redeclared built-ins are all
// reported together.
func Parse(data []byte, source string) (*Catalog, error) {
	fail := func(p ...string) error { return &Error{Source: source, Problems: p} }
	if err := oneDocument(data); err != nil {
		return nil, fail(err.Error())
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fail(fmt.Sprintf("not YAML or JSON: %v", err))
	}
	js = bytes.TrimSpace(js)
	var list []declared
	var version int64
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	switch {
	case bytes.HasPrefix(js, []byte("[")):
		err = dec.Decode(&list)
	case bytes.HasPrefix(js, []byte("{")):
		var d document
		err = dec.Decode(&d)
		list, version = d.Permissions, d.Version
	case len(js) == 0 || bytes.Equal(js, []byte("null")):
		return Builtin(), nil
	default:
		err = errors.New("want a list of permissions or an object with a permissions list")
	}
	if err != nil {
		return nil, fail(strings.TrimPrefix(err.Error(), "json: "))
	}
	var problems []string
	if version < 0 {
		problems = append(problems, fmt.Sprintf("version: %d, want a whole number at least 0", version))
	}
	if len(list) > MaxEntries {
		problems = append(problems, fmt.Sprintf("%d permissions declared, at most %d", len(list), MaxEntries))
	}
	seen := map[string]int{}
	out := make([]Entry, 0, len(list))
	for i, d := range list {
		at := fmt.Sprintf("permissions[%d]", i)
		if d.Name != "" {
			at += fmt.Sprintf(" %q", d.Name)
		}
		ok := true
		bad := func(format string, args ...any) {
			problems = append(problems, at+": "+fmt.Sprintf(format, args...))
			ok = false
		}
		switch {
		case d.Name == "":
			bad("name: required")
		case !ValidName(d.Name):
			bad("name: want resource:action, lower case, matching ^[a-z][a-z0-9-]*:[a-z][a-z0-9-]*$ (at most %d characters)", MaxName)
		case IsBuiltin(d.Name):
			bad("name: a built-in permission cannot be redeclared")
		}
		if first, dup := seen[d.Name]; dup && d.Name != "" {
			bad("name: declared twice (first at permissions[%d])", first)
		} else {
			seen[d.Name] = i
		}
		desc := strings.TrimSpace(d.Description)
		switch n := utf8.RuneCountInString(desc); {
		case n == 0:
			bad("description: required")
		case n > MaxDescription:
			bad("description: at most %d characters", MaxDescription)
		}
		if ok {
			out = append(out, Entry{Name: d.Name, Description: desc, MemberDefault: d.MemberDefault})
		}
	}
	c := newCatalog(version, out)
	if n := len(strings.Join(c.Names(), ",")); n > MaxListBytes {
		problems = append(problems, fmt.Sprintf("the permission names take %d bytes joined with commas, at most %d: the owner's X-Auth-Permissions header carries them all", n, MaxListBytes))
	}
	if len(problems) > 0 {
		return nil, &Error{Source: source, Problems: problems}
	}
	return c, nil
}

// oneDocument refuses a catalog of more than one YAML document: only the
// first would be read, the permissions of the others dropped without a
// word (and a broken one not reported).
func oneDocument(b []byte) error {
	switch err := yamldoc.Single(b); {
	case errors.Is(err, yamldoc.ErrMany):
		return err
	case err != nil:
		return fmt.Errorf("not YAML or JSON: %v", err)
	}
	return nil
}
