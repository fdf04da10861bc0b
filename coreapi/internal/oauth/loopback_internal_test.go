package oauth

import (
	"net/url"
	"testing"
)

// FuzzLoopbackReturnTo: whatever a return_to holds, one that a listed
// loopback URL accepts on some port is that URL with only its port
// changed, as a URL parser reads it: the listed scheme and literal as its
// host, no userinfo, the listed path and query, no fragment.
func FuzzLoopbackReturnTo(f *testing.F) {
	const listed = "http://127.0.0.1/native/cb?app=desk"
	for _, seed := range []string{
		"http://127.0.0.1:5000/native/cb?app=desk",
		"http://127.0.0.1:80@evil.example/native/cb?app=desk",
		"http://127.0.0.1.evil.example/native/cb?app=desk",
		"http://127.0.0.1:5000#@evil.example/native/cb?app=desk",
		"http://127.0.0.1:5000/native/cb?app=desk#x",
		"http://127.0.0.1:65536/native/cb?app=desk",
		"http://127.0.0.1:/native/cb?app=desk",
		"http://127.0.0.1\\@evil.example/native/cb?app=desk",
	} {
		f.Add(seed)
	}
	l, ok := loopbackEntry(listed)
	if !ok {
		f.Fatalf("loopbackEntry(%q) not a loopback entry", listed)
	}
	want, err := url.Parse(listed)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if !l.matches(v) {
			return
		}
		u, err := url.Parse(v)
		if err != nil {
			t.Fatalf("%q matches but does not parse: %v", v, err)
		}
		if u.Scheme != want.Scheme || u.Hostname() != want.Hostname() || u.User != nil || u.Opaque != "" ||
			u.EscapedPath() != want.EscapedPath() || u.RawQuery != want.RawQuery || u.Fragment != "" || u.RawFragment != "" {
			t.Fatalf("%q matches %q but parses as %#v", v, listed, u)
		}
		if p := u.Port(); p != "" && (p[0] == '0' || len(p) > 5) {
			t.Fatalf("%q matches with port %q", v, p)
		}
	})
}

// TestLoopbackEntry: only a loopback IP literal in its plain spelling
// makes a listed URL one that any port meets.
func TestLoopbackEntry(t *testing.T) {
	for listed, want := range map[string]bool{
		"http://127.0.0.1/cb":              true,
		"http://127.0.0.1:3000/cb?x=1":     true,
		"http://[::1]/cb":                  true,
		"https://127.0.0.1:8443/cb":        true,
		"http://localhost:3000/cb":         false,
		"http://app.example.com/cb":        false,
		"https://app.example.com:8443/cb":  false,
		"http://10.0.0.1:3000/cb":          false,
		"http://[::ffff:127.0.0.1]:3000/c": false,
		"http://[0:0::1]:3000/cb":          false,
		"http://u@127.0.0.1:3000/cb":       false,
	} {
		if _, got := loopbackEntry(listed); got != want {
			t.Errorf("loopbackEntry(%q) = %v, want %v", listed, got, want)
		}
	}
}
