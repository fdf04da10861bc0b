package rules

import (
	"bytes"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tollgate-auth/tollgate/shared/docblock"
)

// docEnv is what the docs' rules files are checked against: the key ids
// they name, as their UPSTREAM_KEYS would hold them.
var docEnv = Env{CoreURL: coreURL, UpstreamKeyIDs: []string{"app-notes", "app-reports"}, CoreKeyIDs: []string{"core"}}

func docBlocks(t *testing.T) []docblock.Block {
	t.Helper()
	blocks, err := docblock.Docs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return blocks
}

// rulesKind tells a YAML text that is a rules file ("rules"), one in the
// previous format ("old"), or neither ("").
func rulesKind(text string) string {
	var probe map[string]any
	if yaml.Unmarshal([]byte(text), &probe) != nil {
		return ""
	}
	if _, ok := probe["rules"]; ok {
		return "old"
	}
	_, u := probe["upstreams"]
	_, r := probe["routes"]
	if u || r {
		return "rules"
	}
	return ""
}

// rulesComment matches a rules file given in a shell comment
// ("# RULES_FILE: upstreams: {...}").
var rulesComment = regexp.MustCompile(`(?m)^\s*#\s*RULES_FILE:\s*(.+)$`)

// TestDocRulesExamples: every rules file README.md and docs/*.md show
// loads as written; one in the previous format is refused with the
// pointer to its translation; a fragment given in a comment uses only the
// file's field names; and the -check-config printout docs/operations.md
// shows is what the table of the file shown before it prints.
func TestDocRulesExamples(t *testing.T) {
	var full, old, fragments, printouts int
	var last *Table // the last rules file of the current doc
	var lastFile string
	for _, b := range docBlocks(t) {
		if b.File != lastFile {
			last, lastFile = nil, b.File
		}
		switch {
		case b.Lang == "yaml" && rulesKind(b.Text) == "rules":
			full++
			tb, err := Parse([]byte(b.Text), docEnv)
			if err != nil {
				t.Errorf("%s: the rules file does not load: %v", b.Where(), err)
				continue
			}
			last = tb
		case b.Lang == "yaml" && rulesKind(b.Text) == "old":
			old++
			if _, err := Parse([]byte(b.Text), docEnv); !errors.Is(err, ErrOldFormat) {
				t.Errorf("%s: a file of the previous format: Parse = %v, want %v", b.Where(), err, ErrOldFormat)
			}
		case b.Lang == "text" && strings.HasPrefix(b.Text, "upstream core "):
			printouts++
			if last == nil {
				t.Errorf("%s: a -check-config printout with no rules file before it", b.Where())
				continue
			}
			var out bytes.Buffer
			if err := last.Describe(&out, "core"); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(out.String(), "\n")
			for _, l := range strings.Split(strings.TrimSpace(b.Text), "\n") {
				if !contains(lines, l) {
					t.Errorf("%s: the printout shows %q; the file before it prints:\n%s", b.Where(), l, out.String())
				}
			}
		}
		for _, m := range rulesComment.FindAllStringSubmatch(b.Text, -1) {
			fragments++
			var f File
			if err := yaml.UnmarshalStrict([]byte(m[1]), &f); err != nil {
				t.Errorf("%s: the rules fragment %q: %v", b.Where(), m[1], err)
			}
		}
	}
	if full < 2 || old < 1 || fragments < 1 || printouts < 1 {
		t.Fatalf("found %d rules files, %d of the previous format, %d fragments, %d printouts: the scan is broken", full, old, fragments, printouts)
	}
}

func contains(lines []string, l string) bool {
	for _, x := range lines {
		if x == l {
			return true
		}
	}
	return false
}
