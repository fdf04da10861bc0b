package style

import (
	"go/parser"
	"go/token"
	"slices"
	"testing"
)

// TestPackageVarsJudged: what packageVars reports of a file's package-level
// variables. A table built as an array, or any composite literal (a
// struct of parameters, a list of named functions), is as mutable for
// every caller as a map or a slice is, and slipped through when only maps
// and slices were judged.
func TestPackageVarsJudged(t *testing.T) {
	const src = `package p

import "errors"

type params struct{ n int }
type handler func() string
type table [2]handler

func a() string { return "a" }

var (
	m      = map[string]int{}
	s      = []int{1}
	arr    = [2]int{1, 2}
	arrT   [3]string
	named  = table{a, a}
	fns    = [...]handler{a}
	st     = params{n: 1}
	ptr    = &params{n: 2}
	errVal = params{n: 5}
	built  = func() [2]int { return [2]int{} }()
	anon   = struct{ n int }{1}
	parens = (params{n: 3})

	err    = errors.New("x")
	errBad = &params{n: 4}
	n      = 3
	f      = a
	str    string
	pt     *params
	_      = [1]int{}
)
`
	f, err := parser.ParseFile(token.NewFileSet(), "p.go", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range packageVars(f) {
		got = append(got, id.Name)
	}
	want := []string{"m", "s", "arr", "arrT", "named", "fns", "st", "ptr", "errVal", "built", "anon", "parens"}
	if !slices.Equal(got, want) {
		t.Errorf("packageVars = %v, want %v", got, want)
	}
}
