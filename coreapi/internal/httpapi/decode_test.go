package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// repeatedMemberSlow is repeatedMember written with encoding/json's
// tokenizer: the name it refuses, or "".
func repeatedMemberSlow(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	var names []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return ""
		}
		name, _ := t.(string)
		for _, n := range names {
			if strings.EqualFold(n, name) {
				return n
			}
		}
		names = append(names, name)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return ""
		}
	}
	return ""
}

func repeatedName(err error) string {
	var p *problem.Problem
	if !errors.As(err, &p) || len(p.Errors) != 1 {
		return ""
	}
	return p.Errors[0].Field
}

var memberBodies = []string{
	`{}`,
	`null`,
	` { "a" : 1 , "b" : [1, {"a": 2}], "c": {"a": "}", "b": "\"a\""} } `,
	`{"a":1,"a":2}`,
	`{"scope":"x","Scope":"y"}`,
	`{"grant_type":"password","grant\u005ftype":"refresh_token"}`,
	`{"a":"x,\"a\":1","b":2}`,
	`{"a":{"b":1,"b":2},"c":[{"c":1},{"c":2}]}`,
	`{"k":null,"\u212a":true}`,
	`{"s":"\\","t":"\\\"","s":false}`,
	`{"a":[],"b":{},"c":-1.5e3,"d":true,"e":false,"f":null,"a":0}`,
	"{\n\t\"a\"\r:\"b\"\n}",
}

// TestRepeatedMember: the scan refuses exactly the names that encoding/json
// reads as one field twice, nested members and strings aside.
func TestRepeatedMember(t *testing.T) {
	for _, b := range memberBodies {
		if got, want := repeatedName(repeatedMember([]byte(b))), repeatedMemberSlow([]byte(b)); got != want {
			t.Errorf("%s: refused %q, want %q", b, got, want)
		}
	}
	if got := repeatedName(repeatedMember([]byte(`{"scope":"a","Scope":"b"}`))); got != "scope" {
		t.Errorf("scope and Scope: refused %q", got)
	}
	body := []byte(`{"grant_type":"refresh_token","refresh_token":"23FegtGXPeO6n9SyptSOWLrRBFYIC87hZVhpD1eyPsk"}`)
	if n := testing.AllocsPerRun(100, func() { _ = repeatedMember(body) }); n != 0 {
		t.Errorf("%v allocations, want none", n)
	}
}

func FuzzRepeatedMember(f *testing.F) {
	for _, b := range memberBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		if got, want := repeatedName(repeatedMember(b)), repeatedMemberSlow(b); got != want {
			t.Errorf("%q: refused %q, want %q", b, got, want)
		}
	})
}

// TestVisible: a name of only white space, format characters, variation
// selectors, other default-ignorable code points or combining marks shows
// as nothing.
func TestVisible(t *testing.T) {
	for in, want := range map[string]bool{
		"Acme": true, "\u200bAcme": true, "é": true, "\u05e9\u200f": true, "👩\u200d💻": true, "\u2800": true,
		"": false, " \u00a0\u3000": false, "\u200b": false, "\u200b\u200c\u200d\u2060\ufeff": false,
		"\u00ad": false, "\ufe0f": false, "\u3164": false, "\u115f\u1160": false, "\U000e0041": false,
		"e\u0301": true, "\u0301": false, "\u0301\u0308 \u20dd": false, "\u200b\u0301\u034f": false,
	} {
		if got := Visible(in); got != want {
			t.Errorf("Visible(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestPlainText(t *testing.T) {
	for _, tt := range []struct {
		in    string
		ok    bool
		clean string
	}{
		{"Zoë Ångström", true, "Zoë Ångström"},
		{"José\u0301", true, "José\u0301"},
		{"\u05e9\u05dc\u05d5\u05dd \u200fACME\u200e", true, "\u05e9\u05dc\u05d5\u05dd \u200fACME\u200e"}, // RTL marks
		{"👩\u200d💻 dev", true, "👩\u200d💻 dev"},                                                           // ZWJ sequence
		{"Bob\nAdmin", false, "BobAdmin"},
		{"tab\there", false, "tabhere"},
		{"\x1b[2Jx", false, "[2Jx"},
		{"\u0085next line", false, "next line"},
		{"Bob\u2028Admin", false, "BobAdmin"}, // LINE SEPARATOR
		{"Bob\u2029Admin", false, "BobAdmin"}, // PARAGRAPH SEPARATOR
		{"Acme\u202emoc.live", false, "Acmemoc.live"},
		{"\u2066iso\u2069", false, "iso"},
	} {
		if _, ok := PlainText(tt.in); ok != tt.ok {
			t.Errorf("PlainText(%q) = %v, want %v", tt.in, ok, tt.ok)
		}
		if got := CleanText(tt.in); got != tt.clean {
			t.Errorf("CleanText(%q) = %q, want %q", tt.in, got, tt.clean)
		}
	}
}

// TestLoneSurrogate: the escape of a surrogate that is not half of a pair
// is found, wherever it is and whatever follows it; an escaped backslash
// before "u" and a pair are not; memberAt names the member holding it.
func TestLoneSurrogate(t *testing.T) {
	for body, want := range map[string]string{
		`{"a": "\ud800"}`:                         "a",
		`{"a": "x", "b": ["y", "\uDFFF"]}`:        "b",
		`{"a": "\ud83d\ude00", "b": "\ud83d"}`:    "b",
		`{"a": "\ud83d\u0041"}`:                   "a",
		`{"a": "\ud83d\\ude00"}`:                  "a",
		`{"a": "\ud83d"  }`:                       "a",
		`{"a\"\\": {"x": "\udc00"}}`:              `a"\`,
		`["\ud800"]`:                              "(body)",
		`{"a": "\\ud800", "b": "\\\ud83d\ude00"}`: "",
		`{"\\u": "\u0041\u00e9\uffff"}`:           "",
		`{"a": "no escapes"}`:                     "",
	} {
		off := loneSurrogate([]byte(body))
		got := ""
		if off >= 0 {
			if !strings.HasPrefix(body[off:], `\u`) {
				t.Errorf("%s: offset %d is no escape", body, off)
			}
			got = memberAt([]byte(body), off)
		}
		if got != want {
			t.Errorf("%s: %q, want %q", body, got, want)
		}
		if !json.Valid([]byte(body)) {
			t.Errorf("%s: not JSON", body)
		}
	}
}
