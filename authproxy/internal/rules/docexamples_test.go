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

// A curl command of a shell example: its method and the port and path of
// its URL.
type curlCall struct {
	where, method, port, path string
}

var (
	curlURL    = regexp.MustCompile(`(?:https?://)?(?:localhost|127\.0\.0\.1):(\d+)(/[^\s"')|;]*)?`)
	curlMethod = regexp.MustCompile(`(?:-X|--request)\s+([A-Z]+)`)
	curlData   = regexp.MustCompile(`\s(?:-d|--data[a-z-]*|-F|--form)\s`)
	shellVar   = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
	// The README tour's helper "status WANT CURL-ARGS..." runs curl.
	statusCall = regexp.MustCompile(`\bstatus [0-9]{3} `)
)

// curlCalls returns the curl commands of the shell blocks (continued
// lines joined, and the README tour's status helper): the method (-X, else POST with a body, else GET) and the
// URL, shell variables in the path read as one sample segment.
func curlCalls(blocks []docblock.Block) []curlCall {
	var out []curlCall
	for _, b := range blocks {
		if b.Lang != "sh" {
			continue
		}
		text := statusCall.ReplaceAllString(strings.ReplaceAll(b.Text, "\\\n", " "), "curl ")
		for _, line := range strings.Split(text, "\n") {
			// One command per curl of the line ("a && curl ..."; "$(curl ...)").
			parts := strings.Split(line, "curl ")
			for _, cmd := range parts[1:] {
				if c, _, ok := strings.Cut(cmd, "#"); ok {
					cmd = c
				}
				m := curlURL.FindStringSubmatch(cmd)
				if m == nil {
					continue
				}
				method := "GET"
				if mm := curlMethod.FindStringSubmatch(cmd); mm != nil {
					method = mm[1]
				} else if curlData.MatchString(" " + cmd) {
					method = "POST"
				}
				p, _, _ := strings.Cut(m[2], "?")
				out = append(out, curlCall{b.Where(), method, m[1], shellVar.ReplaceAllString(p, "x")})
			}
		}
	}
	return out
}

// TestDocCurlRoutes: every curl command of the docs' shell examples sent
// to the proxy (:8080) asks a route of the table `make run` serves
// (coreapi's, and the example app's rules), with a method it allows; one
// to coreapi's routes is an operation of the OpenAPI document; one to the
// example app itself (:8082) is under its prefix; and one to an admin port
// asks what it serves.
func TestDocCurlRoutes(t *testing.T) {
	tb, err := Load(filepath.Join("..", "..", "..", "deploy", "examples", "notes", "rules.yaml"), Env{CoreURL: coreURL, UpstreamKeyIDs: []string{"app-notes"}})
	if err != nil {
		t.Fatal(err)
	}
	ops := openAPIAccess(t)
	calls := curlCalls(docBlocks(t))
	if len(calls) < 20 {
		t.Fatalf("found %d curl commands: the scan is broken", len(calls))
	}
	for _, c := range calls {
		switch c.port {
		case "8080":
			r, status, allow := match(t, tb, c.method, c.path)
			if status != 200 {
				t.Errorf("%s: curl %s %s: the proxy answers %d itself (Allow %q)", c.where, c.method, c.path, status, allow)
				continue
			}
			if r.Core && !openAPIOperation(ops, c.method, c.path) {
				t.Errorf("%s: curl %s %s: no operation of the OpenAPI document", c.where, c.method, c.path)
			}
		case "8082":
			if c.path != "/notes" && !strings.HasPrefix(c.path, "/notes/") {
				t.Errorf("%s: curl %s %s: the example app serves /notes only", c.where, c.method, c.path)
			}
		case "9090", "9091":
			if !contains([]string{"/metrics", "/healthz", "/readyz"}, c.path) {
				t.Errorf("%s: curl %s :%s%s: an admin port serves /metrics, /healthz and /readyz", c.where, c.method, c.port, c.path)
			}
		case "8025": // Mailpit's API
		default:
			t.Errorf("%s: curl %s :%s%s: no port of the local stack", c.where, c.method, c.port, c.path)
		}
	}
}

// openAPIOperation reports whether ops (openAPIAccess's) holds method on a
// path p matches segment by segment, a template ("{id}") matching any.
func openAPIOperation(ops map[string]Access, method, p string) bool {
	want := strings.Split(p, "/")
	if method == "HEAD" {
		method = "GET"
	}
	for op := range ops {
		m, path, _ := strings.Cut(op, " ")
		have := strings.Split(path, "/")
		if m != method || len(have) != len(want) {
			continue
		}
		same := true
		for i := range have {
			same = same && (have[i] == want[i] || pathParam.MatchString(have[i]))
		}
		if same {
			return true
		}
	}
	return false
}
