package envconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// DocRow is one row of a configuration table in Markdown: the variables it
// names (`A` / `B` rows name two) and its default cell.
type DocRow struct {
	Names   []string
	Default string
}

var docName = regexp.MustCompile("`([A-Z][A-Z0-9_<>]*)`")

// ParseDocTable returns the rows of the first table after the heading line
// (e.g. "### coreapi") whose header starts with "| Variable".
func ParseDocTable(markdown, heading string) ([]DocRow, error) {
	lines := strings.Split(markdown, "\n")
	i := 0
	for i < len(lines) && strings.TrimSpace(lines[i]) != heading {
		i++
	}
	if i == len(lines) {
		return nil, fmt.Errorf("no heading %q", heading)
	}
	for i < len(lines) && !strings.HasPrefix(strings.ToLower(lines[i]), "| variable") {
		i++
	}
	if i+2 >= len(lines) {
		return nil, fmt.Errorf("no variable table after %q", heading)
	}
	var rows []DocRow
	for _, l := range lines[i+2:] {
		if !strings.HasPrefix(l, "|") {
			break
		}
		cells := strings.Split(l, "|")
		if len(cells) < 4 {
			return nil, fmt.Errorf("row %q: want | Variable | Default | Meaning |", l)
		}
		var row DocRow
		for _, m := range docName.FindAllStringSubmatch(cells[1], -1) {
			row.Names = append(row.Names, m[1])
		}
		row.Default = strings.TrimSpace(cells[2])
		rows = append(rows, row)
	}
	return rows, nil
}

// noDefault are the ways a table says "no default".
var noDefault = regexp.MustCompile(`^(—|empty|)\s*(\((one |one kind )?required\))?$`)

// CheckDoc compares a documented table with t: the same variables, the same
// defaults (durations compared by value), and "required" where the table
// requires a variable. It returns one line per difference.
func (t Table) CheckDoc(rows []DocRow) []string {
	return t.checkDoc(rows, true)
}

// CheckDocRows is CheckDoc for a table that documents a selection of the
// variables (a README's short table): every row must agree with t.
func (t Table) CheckDocRows(rows []DocRow) []string {
	return t.checkDoc(rows, false)
}

// CheckDocFile reads the Markdown file at path and compares its table
// under heading with t: with complete, as CheckDoc (every variable, as a
// reference table must); otherwise as CheckDocRows (a selection, which
// must have at least minRows rows, or the parse is taken as broken). Each
// difference is prefixed with path's base name.
func (t Table) CheckDocFile(path, heading string, complete bool, minRows int) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rows, err := ParseDocTable(string(b), heading)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rows) < minRows {
		return nil, fmt.Errorf("%s: the table under %q has %d rows, want at least %d: the parse is broken", path, heading, len(rows), minRows)
	}
	diffs := t.checkDoc(rows, complete)
	for i, d := range diffs {
		diffs[i] = filepath.Base(path) + ": " + d
	}
	return diffs, nil
}

func (t Table) checkDoc(rows []DocRow, complete bool) []string {
	var diffs []string
	documented := map[string]string{}
	for _, r := range rows {
		for _, n := range r.Names {
			if _, twice := documented[n]; twice {
				diffs = append(diffs, fmt.Sprintf("%s is documented twice", n))
			}
			documented[n] = r.Default
			if _, ok := t.Lookup(n); !ok {
				diffs = append(diffs, fmt.Sprintf("%s is documented but not in the configuration table", n))
			}
		}
	}
	for _, v := range t {
		cell, ok := documented[v.Name]
		if !ok {
			if complete {
				diffs = append(diffs, fmt.Sprintf("%s is in the configuration table but not documented", v.Name))
			}
			continue
		}
		plain := strings.ReplaceAll(cell, "`", "")
		switch {
		case v.DefaultDoc != "":
			if plain != v.DefaultDoc {
				diffs = append(diffs, fmt.Sprintf("%s: documented default %q, table says %q", v.Name, plain, v.DefaultDoc))
			}
		case v.Default == "":
			if !noDefault.MatchString(plain) {
				diffs = append(diffs, fmt.Sprintf("%s: documented default %q, the table has none", v.Name, plain))
			}
		default:
			if !sameDefault(plain, v.Default) {
				diffs = append(diffs, fmt.Sprintf("%s: documented default %q, table says %q", v.Name, plain, v.Default))
			}
		}
		// A variable of a one-of group may be documented either way (the
		// group's row says "one required").
		if req := strings.Contains(plain, "required"); req != v.Required && v.OneOf == "" {
			diffs = append(diffs, fmt.Sprintf("%s: documented as required = %v, the table says %v", v.Name, req, v.Required))
		}
	}
	return diffs
}

func sameDefault(doc, def string) bool {
	if doc == def {
		return true
	}
	a, err1 := time.ParseDuration(doc)
	b, err2 := time.ParseDuration(def)
	return err1 == nil && err2 == nil && a == b
}
