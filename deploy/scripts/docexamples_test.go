package scripts

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/docblock"
)

// TestDocShellExamplesParse: every shell block of README.md and docs/*.md
// is a script bash reads without a syntax error (bash -n), as an operator
// pastes it.
func TestDocShellExamplesParse(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed to check the docs' shell examples")
	}
	blocks, err := docblock.Docs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range docblock.Lang(blocks, "sh") {
		n++
		cmd := exec.Command(bash, "-n")
		cmd.Stdin = strings.NewReader(b.Text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: bash -n: %v\n%s", b.Where(), err, out)
		}
	}
	if n < 10 {
		t.Fatalf("found %d shell blocks: the scan is broken", n)
	}
}

var (
	// A JSON example: in backquotes, or a comment of a shell block (an
	// answer), starting with {" or [{".
	jsonSpan    = regexp.MustCompile("`(\\[?\\{\"[^`]*)`")
	jsonComment = regexp.MustCompile(`(?m)^\s*#\s*(\[?\{".*)$`)
	// A body given to curl with -d or --data.
	curlBody = regexp.MustCompile(`(?:\s-d|--data(?:-raw)?)\s+(['"])`)
)

// abbreviated reports whether a JSON-looking text is a shape, not an
// example: it names keys only ({"a", "b"}), or leaves values out ("…",
// "...", "<placeholder>") outside its strings.
func abbreviated(s string) bool {
	outside := regexp.MustCompile(`"(?:[^"\\]|\\.)*"`).ReplaceAllString(s, `""`)
	return !strings.Contains(s, `":`) || strings.Contains(outside, "…") || strings.Contains(outside, "...") || strings.Contains(outside, "<")
}

// shellWord reads one shell word from s, up to a blank or an operator
// (quotes removed, a variable read as x): what curl gets as the argument.
func shellWord(s string) string {
	var b strings.Builder
	variable := regexp.MustCompile(`^\$(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?])`)
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case strings.IndexByte(" \t\n;|&()<>", c) >= 0:
			return b.String()
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return b.String() + s[i+1:]
			}
			b.WriteString(s[i+1 : i+1+end])
			i += end + 2
		case c == '"':
			i++
			for i < len(s) && s[i] != '"' {
				switch {
				case s[i] == '\\' && i+1 < len(s):
					b.WriteByte(s[i+1])
					i += 2
				case variable.MatchString(s[i:]):
					b.WriteString("x")
					i += len(variable.FindString(s[i:]))
				default:
					b.WriteByte(s[i])
					i++
				}
			}
			i++
		case variable.MatchString(s[i:]):
			b.WriteString("x")
			i += len(variable.FindString(s[i:]))
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// TestDocJSONExamplesParse: every JSON example of README.md and docs/*.md
// (in backquotes, an answer shown in a shell comment, or a body given to
// curl) is JSON; a shape that leaves values out ("…", <placeholder>) is
// not an example.
func TestDocJSONExamplesParse(t *testing.T) {
	root := filepath.Join("..", "..")
	blocks, err := docblock.Docs(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	check := func(where, s string) {
		if abbreviated(s) {
			return
		}
		n++
		if !json.Valid([]byte(s)) {
			t.Errorf("%s: not JSON: %s", where, s)
		}
	}
	for _, b := range docblock.Lang(blocks, "sh") {
		text := strings.ReplaceAll(b.Text, "\\\n", " ")
		for _, m := range jsonComment.FindAllStringSubmatch(text, -1) {
			check(b.Where(), m[1])
		}
		for _, loc := range curlBody.FindAllStringSubmatchIndex(text, -1) {
			if body := shellWord(text[loc[2]:]); strings.HasPrefix(body, "{") || strings.HasPrefix(body, "[") {
				check(b.Where(), body)
			}
		}
	}
	docs, err := docblock.Files(root, "benchmarks.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		name := d.Name
		for _, m := range jsonSpan.FindAllStringSubmatch(d.Text, -1) {
			check(name, m[1])
		}
	}
	if n < 15 {
		t.Fatalf("found %d JSON examples: the scan is broken", n)
	}
}

func TestShellWord(t *testing.T) {
	for in, want := range map[string]string{
		`'{"email":"you-'$RUN'@example.com"}'; echo`:             `{"email":"you-x@example.com"}`,
		`"{\"email\":\"$1\",\"n\":2}" | sed`:                     `{"email":"x","n":2}`,
		`'{"name":"note-writer-'$RUN'","permissions":["a"]}' -H`: `{"name":"note-writer-x","permissions":["a"]}`,
	} {
		if got := shellWord(in); got != want {
			t.Errorf("shellWord(%s) = %s, want %s", in, got, want)
		}
	}
}
