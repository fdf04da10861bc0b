package k8s

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/docblock"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

// Variables other programs than the two services read: the Go toolchain
// (building the images), and the identity verifier apps embed.
var otherVars = []string{"GOTOOLCHAIN", "CGO_ENABLED", "GOOS", "GOARCH", "GOFLAGS", "GOPROXY", verify.EnvKeys, verify.EnvKeysFile}

// localVars returns the variables the Makefile and the scripts of the local
// stack read or set: $(NAME) and NAME ?= in the Makefile, $NAME and ${NAME}
// in scripts/*.sh, os.Getenv("NAME") in deploy/cmd/stack.
func localVars(t *testing.T) []string {
	t.Helper()
	root := filepath.Join("..", "..")
	var out []string
	add := func(glob string, re *regexp.Regexp) {
		files, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: %v, %d files", glob, err, len(files))
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				out = append(out, m[1])
			}
		}
	}
	add("Makefile", regexp.MustCompile(`\$\(([A-Z][A-Z0-9_]*)\)`))
	add("Makefile", regexp.MustCompile(`(?m)^([A-Z][A-Z0-9_]*)\s*[?:]?=`))
	add("scripts/*.sh", regexp.MustCompile(`\$\{?([A-Z][A-Z0-9_]*)`))
	add("deploy/cmd/stack/*.go", regexp.MustCompile(`Getenv\("([A-Z][A-Z0-9_]*)"\)`))
	return out
}

var (
	// NAME=value at a command's start, after export or env, or as a
	// ConfigMap literal ("- NAME=value"); not a --build-arg.
	assignment = regexp.MustCompile(`(?m)(?:^|[\s;(])(?:export\s+|env\s+|-\s+)?([A-Z][A-Z0-9_]*)=`)
	buildArg   = regexp.MustCompile(`--build-arg\s+[A-Z][A-Z0-9_]*=`)
	// `NAME=value` and `NAME` in backquotes, the latter in a table's
	// first cell.
	inlineSet = regexp.MustCompile("`([A-Z][A-Z0-9_]*)=[^`]*`")
	tableName = regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\|")
)

// docVar is a variable a doc sets (or lists), where.
type docVar struct{ where, name string }

// docVars returns the variables README.md and docs/*.md set in their shell
// and YAML examples and in backquotes, or list in a table's first column.
// A shell variable (one its block also reads as $NAME) is left out, as is
// the placeholder NAME. docs/benchmarks.md, a record of past runs, is left
// out.
func docVars(t *testing.T) []docVar {
	t.Helper()
	root := filepath.Join("..", "..")
	blocks, err := docblock.Docs(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []docVar
	for _, b := range blocks {
		if b.File == "docs/benchmarks.md" || b.Lang != "sh" && b.Lang != "yaml" {
			continue
		}
		text := buildArg.ReplaceAllString(b.Text, "")
		for _, m := range assignment.FindAllStringSubmatch(text, -1) {
			if strings.Contains(text, "$"+m[1]) || strings.Contains(text, "${"+m[1]) {
				continue
			}
			out = append(out, docVar{b.Where(), m[1]})
		}
	}
	docs, err := docblock.Files(root, "benchmarks.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		name := d.Name
		for _, re := range []*regexp.Regexp{inlineSet, tableName} {
			for _, m := range re.FindAllStringSubmatch(d.Text, -1) {
				out = append(out, docVar{name, m[1]})
			}
		}
	}
	return slices.DeleteFunc(out, func(v docVar) bool { return v.name == "NAME" })
}

// TestDocsSetOnlyKnownVariables: every environment variable the docs' examples
// set, or their tables list, is read by one of the services (for a
// name of the tables with <NAME>, any word there), the Go toolchain or
// runtime, the app's identity verifier, or the local stack's Makefile and
// scripts: a misspelt one in an example an operator copies silently leaves
// the default in force.
func TestDocsSetOnlyKnownVariables(t *testing.T) {
	known := map[string]bool{}
	var patterns []*regexp.Regexp
	for _, table := range serviceVars(t) {
		for _, v := range table {
			if strings.Contains(v.Name, "<NAME>") {
				patterns = append(patterns, regexp.MustCompile("^"+strings.ReplaceAll(regexp.QuoteMeta(v.Name), "<NAME>", "[A-Z0-9_]+")+"$"))
			}
			known[v.Name] = true
		}
	}
	for _, n := range slices.Concat(runtimeVars, otherVars, localVars(t)) {
		known[n] = true
	}
	vars := docVars(t)
	if len(vars) < 50 {
		t.Fatalf("found %d variables in the docs: the scan is broken", len(vars))
	}
	for _, v := range vars {
		if known[v.name] || slices.ContainsFunc(patterns, func(p *regexp.Regexp) bool { return p.MatchString(v.name) }) {
			continue
		}
		t.Errorf("%s sets %s, which no service, tool or script reads", v.where, v.name)
	}
}
