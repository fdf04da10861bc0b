package rules

import (
	"io"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/pathnorm"
)

// FuzzParse gives Parse an arbitrary rules file and Match an arbitrary
// path: a bad file is an error, never a panic, and a table it loads
// matches a path only to the longest of its prefixes the path lies under,
// on a segment boundary and spelled as the route spells it.
func FuzzParse(f *testing.F) {
	const ups = "upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\n"
	for _, c := range [][2]string{
		{notesFile, "/notes/1"},
		{notesFile, "/Reports/x"},
		{notesFile, "/reports/x"},
		{notesFile, "/notes-admin"},
		{notesFile, "/note%C5%BF/1"},
		{ups + "routes: [{prefix: '/adm%C4%B1n', upstream: notes, access: protected}, {prefix: /admin/x, upstream: notes, access: public}, {prefix: /, upstream: notes, access: public}]", "/admin/x/y"},
		{notesFile, "/notes/publicity"},
		{notesFile, "/notes/public.json"},
		{ups + "routes: [{prefix: /notes, upstream: notes, access: protected}, {prefix: /, upstream: notes, access: public}]", "/notes.tar.gz"},
		{notesFile, "/INTERNAL/x"},
		{ups + "routes: [{prefix: '/caf%C3%A9/~menu', upstream: notes, access: protected}, {prefix: /, upstream: notes, access: public}]", "/caf%C3%A9/~menu/x"},
		{ups + "routes: [{prefix: /a, methods: [GET], upstream: notes, access: public}, {prefix: /a, methods: [POST, DELETE], upstream: notes, access: protected}]", "/a"},
		{ups + "routes: [{prefix: /pub, upstream: notes, access: public, strip_prefix: true}, {prefix: /notes, upstream: notes, access: protected}]", "/pub/notes"},
		{ups + "routes: []\n---\nroutes: [{prefix: /a, upstream: notes, access: protected}]\n", "/a"},
		{ups + "routes: [{prefix: a, upstream: notes, access: x}, {prefix: /b, upstream: zz, access: public}]", "/b"},
		{ups + "routes: [{prefix: /api/v1/users/x, upstream: notes, access: public}]", "/api/v1/users/x"},
		{"upstreams: {notes: {url: 'https://user:s3cr3t@x.example', key_id: app-notes}}\nroutes: []\n", "/"},
		{"rules: [{path: /api/**, access: protected}]", "/api"},
		{"routes: [", "/"},
		{"a: &a [*a]", "/"},
		{"", ""},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, file, raw string) {
		tb, err := Parse([]byte(file), testEnv)
		if err != nil {
			if tb != nil {
				t.Fatalf("Parse returned a table with the error %v", err)
			}
			return
		}
		if err := tb.Describe(io.Discard, "core"); err != nil {
			t.Fatalf("Describe: %v", err)
		}
		var prefixes []string
		for _, r := range tb.Routes() {
			prefixes = append(prefixes, r.Prefix)
			if r.Core {
				continue
			}
			if norm, err := pathnorm.String(r.Prefix); err != nil || norm != r.Prefix {
				t.Fatalf("loaded the prefix %q, which requests spell %q (%v)", r.Prefix, norm, err)
			}
			for _, res := range reservedPrefixes() {
				if under(r.Prefix, res) {
					t.Fatalf("loaded the prefix %q under the built-in %s", r.Prefix, res)
				}
			}
			// Every route is reached by its own prefix.
			if g, _ := tb.Match([]byte(r.Prefix), nil); g == nil || g.Prefix != r.Prefix {
				t.Fatalf("the path %q matches %v, not its own route", r.Prefix, g)
			}
		}
		// Match is given paths in pathnorm's form.
		path, err := pathnorm.String(raw)
		if err != nil {
			return
		}
		g, _ := tb.Match([]byte(path), make([]byte, 0, 4))
		want := ""
		for _, p := range prefixes {
			lp, lpath := foldKey(p), foldKey(path)
			if (p == "/" && strings.HasPrefix(path, "/") || lpath == lp || strings.HasPrefix(lpath, lp+"/")) && len(lp) > len(foldKey(want)) {
				want = p
			}
		}
		if IsInternal([]byte(foldKey(path))) || want != "" && !strings.HasPrefix(path, want) {
			want = "" // refused: internal, or the prefix spelled in another case
		}
		// Refused too: the last segment, cut at its first '.', makes the
		// path a longer prefix ("/notes.json" beside /notes).
		lpath := foldKey(path)
		if seg := strings.LastIndexByte(lpath, '/') + 1; strings.IndexByte(lpath[seg:], '.') > 0 {
			cut := lpath[:seg+strings.IndexByte(lpath[seg:], '.')]
			for _, p := range prefixes {
				if foldKey(p) == cut && len(cut) > len(foldKey(want)) {
					want = ""
				}
			}
		}
		switch {
		case g == nil && want != "":
			t.Fatalf("Match(%q) = nil, want the route %s", path, want)
		case g != nil && g.Prefix != want:
			t.Fatalf("Match(%q) = %s, want %q", path, g.Prefix, want)
		case g != nil && g.Prefix != "/" && len(path) > len(g.Prefix) && path[len(g.Prefix)] != '/':
			t.Fatalf("Match(%q) = %s: not on a segment boundary", path, g.Prefix)
		}
	})
}
