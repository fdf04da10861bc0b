package pathnorm

import (
	"errors"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"/", "/", nil},
		{"/api/v1/users/me", "/api/v1/users/me", nil},
		{"/api/v1/users/me/", "/api/v1/users/me", nil},
		{"//api/v1/users/me", "/api/v1/users/me", nil},
		{"/api//v1///users/me", "/api/v1/users/me", nil},
		{"/api/v1/auth/../users/me", "/api/v1/users/me", nil},
		{"/api/v1/auth/%2e%2e/users/me", "/api/v1/users/me", nil},
		{"/api/v1/auth/%2E%2E/users/me", "/api/v1/users/me", nil},
		{"/api/v1/auth/.%2e/users/me", "/api/v1/users/me", nil},
		{"/api/v1/./users/./me", "/api/v1/users/me", nil},
		{"/api/v1/users/me/..", "/api/v1/users", nil},
		{"/../../etc/passwd", "/etc/passwd", nil},
		{"/..", "/", nil},
		{"/.", "/", nil},
		{"/%61pi/v1", "/api/v1", nil},
		{"/api/%7euser", "/api/~user", nil},
		{"/api/a%20b", "/api/a%20b", nil},
		{"/api/a b", "/api/a%20b", nil},
		{"/api/a%3ab", "/api/a:b", nil},
		{"/v1/notes%3Apurge", "/v1/notes:purge", nil},
		{"/users/%40me", "/users/@me", nil},
		{"/api/%3A%40%21%24%26%27%28%29%2A%2B%2C%3D", "/api/:@!$&'()*+,=", nil},
		{"/api/a%3fb%23c%5b%5d%22%3c%3e%60%7b%7c%7d%5e", "/api/a%3Fb%23c%5B%5D%22%3C%3E%60%7B%7C%7D%5E", nil},
		{"/api/caf\xc3\xa9", "/api/caf%C3%A9", nil},
		{"/api/%25", "/api/%25", nil},
		{"/api/%252e%252e", "/api/%252e%252e", nil},
		{"/api/a:b@c!$&'()*+,=", "/api/a:b@c!$&'()*+,=", nil},
		{"/api/a%3bb", "/api/a%3Bb", nil},
		{"/api/a%3B", "/api/a%3B", nil},
		{"/api/a;b", "", ErrPathParam},
		{"/api/a;", "", ErrPathParam},
		{"/api/..;/internal", "", ErrPathParam},
		{"/api/.;x/b", "", ErrPathParam},
		{"/;", "", ErrPathParam},
		{"/api/v1.2/a.b/.x/..y/...z", "/api/v1.2/a.b/.x/..y/...z", nil},
		{"/api/a%20b/%20x", "/api/a%20b/%20x", nil},
		{"/admin.", "", ErrTrailingDot},
		{"/admin./x", "", ErrTrailingDot},
		{"/admin../x", "", ErrTrailingDot},
		{"/admin.../", "", ErrTrailingDot},
		{"/admin%2e", "", ErrTrailingDot},
		{"/admin%2E/x", "", ErrTrailingDot},
		{"/admin.%2e", "", ErrTrailingDot},
		{"/admin%20", "", ErrTrailingDot},
		{"/admin /x", "", ErrTrailingDot},
		{"/admin.%20", "", ErrTrailingDot},
		{"/admin%20.", "", ErrTrailingDot},
		{"/...", "", ErrTrailingDot},
		{"/a/x./../b", "", ErrTrailingDot},
		{"/a/..%20/b", "", ErrTrailingDot},
		{"/v1.2./x", "", ErrTrailingDot},
		{"/admin::$DATA", "", ErrStream},
		{"/admin:$DATA", "", ErrStream},
		{"/admin::$data/x", "", ErrStream},
		{"/admin::$INDEX_ALLOCATION/x", "", ErrStream},
		{"/admin:x:$DATA", "", ErrStream},
		{"/admin%3A%3A%24DATA", "", ErrStream},
		{"/admin:%24DATA", "", ErrStream},
		{"/admin%3a$Data", "", ErrStream},
		{"/admin:", "", ErrStream},
		{"/admin::/x", "", ErrStream},
		{"/admin%3A", "", ErrStream},
		{"/a/admin::$DATA/../b", "", ErrStream},
		{"/v1/things/abc:activate", "/v1/things/abc:activate", nil},
		{"/v1/things/abc%3Aactivate", "/v1/things/abc:activate", nil},
		{"/ips/fe80::1/x", "/ips/fe80::1/x", nil},
		{"/:a/b:c$", "/:a/b:c$", nil},
		{"/$DATA/a$b", "/$DATA/a$b", nil},
		{"/ADMINI~1", "", ErrShortName},
		{"/ADMINI~1/x", "", ErrShortName},
		{"/admini~1/x", "", ErrShortName},
		{"/ADMINI%7E1/x", "", ErrShortName},
		{"/WEB~1.CON", "", ErrShortName},
		{"/A~1.C", "", ErrShortName},
		{"/AB~12345.TXT", "", ErrShortName},
		{"/AB1234~9/x", "", ErrShortName},
		{"/~alice/x", "/~alice/x", nil},
		{"/~1/x", "/~1/x", nil},
		{"/a~1b", "/a~1b", nil},
		{"/a~0", "/a~0", nil},
		{"/ADMINIS~1", "/ADMINIS~1", nil},
		{"/AB~123456", "/AB~123456", nil},
		{"/WEB~1.CONF", "/WEB~1.CONF", nil},
		{"/a.b~1", "/a.b~1", nil},
		{"/a~1.", "", ErrTrailingDot},
		{"/a~1.b.c", "/a~1.b.c", nil},
		{"/a%20~1", "/a%20~1", nil},
		{"/AB%5ECD~1/x", "", ErrShortName},
		{"/ab%5ecd~1", "", ErrShortName},
		{"/AB%25%23%60~1", "", ErrShortName},
		{"/%7BAB%7D~1.T%5EX", "", ErrShortName},
		{"/%C3%89%C3%89%C3%89%C3%89%C3%89%C3%89~1", "", ErrShortName},
		{"/\xc3\x89CRAN~1", "", ErrShortName},
		{"/WEB~1.%C3%A9", "", ErrShortName},
		{"/ABCDEF%5E~1", "/ABCDEF%5E~1", nil},
		{"/%C3%89%C3%89%C3%89%C3%89%C3%89%C3%89%C3%89~1", "/%C3%89%C3%89%C3%89%C3%89%C3%89%C3%89%C3%89~1", nil},
		{"/AB%5ECD~123", "/AB%5ECD~123", nil},
		{"/AB%5BC~1", "/AB%5BC~1", nil},
		{"/AB~1.%22X", "/AB~1.%22X", nil},
		{"/AB~1.%5E%5E%5E%5E", "/AB~1.%5E%5E%5E%5E", nil},
		{"/(S(x))/admin", "", ErrCookieless},
		{"/app/(A(a)S(b)F(c))/admin", "", ErrCookieless},
		{"/%28S%28x%29%29/admin", "", ErrCookieless},
		{"/(s())", "", ErrCookieless},
		{"/(x)/admin", "/(x)/admin", nil},
		{"/Foo_(bar)", "/Foo_(bar)", nil},
		{"/(S(x)/admin", "/(S(x)/admin", nil},
		{"/(S(x)y)/admin", "/(S(x)y)/admin", nil},
		{"/(S(x(y)))/admin", "/(S(x(y)))/admin", nil},
		{"/api/v1/auth%2f..%2fusers/me", "", ErrEncodedSlash},
		{"/api/v1/auth%2F..%2Fusers/me", "", ErrEncodedSlash},
		{"/api/v1%5cusers", "", ErrEncodedSlash},
		{"/api\\v1", "", ErrBackslash},
		{"/api/%00", "", ErrControl},
		{"/api/\x00", "", ErrControl},
		{"/api/%0a", "", ErrControl},
		{"/api/%7f", "", ErrControl},
		{"/api/%", "", ErrBadEscape},
		{"/api/%4", "", ErrBadEscape},
		{"/api/%zz", "", ErrBadEscape},
		{"api/v1", "", ErrNotAbsolute},
		{"", "", ErrNotAbsolute},
		{"*", "", ErrNotAbsolute},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := String(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("String(%q) error = %v, want %v", tt.in, err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	dst := []byte("prefix:")
	out, err := Append(dst, []byte("/a/../b"))
	if err != nil || string(out) != "prefix:/b" {
		t.Fatalf("Append = %q, %v; want %q", out, err, "prefix:/b")
	}
	out, err = Append(dst, []byte("/a%2fb"))
	if err == nil || string(out) != "prefix:" {
		t.Fatalf("Append on error = %q, %v; want prefix kept and an error", out, err)
	}
}

// FuzzNormalize checks the invariants the proxy relies on: the output is
// canonical (normalizing it again changes nothing), starts with '/', holds no
// dot segment, empty segment, segment ending in '.' or a space, NTFS
// stream or 8.3 short name, backslash,
// control byte, or encoded slash, backslash or unreserved character.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "/api/v1/users/me", "/a/", "/a//b", "/a/.", "/a/..", "/./a", "/..", "/.a/..b/...", "/a./b", "/a%2e/b", "/a%20", "/a:b@c!$&'()*+,;=", "//a/../b", "/%2e%2e/%2f", "/a%5c", "/%00", "/a/./b/", "/%41%7e%zz", "/caf\xc3\xa9 x", "/a::$DATA", "/a%3a", "/AB~1.TXT", "/~1/a~1b", "/(S(x))/a", "/%28A%28a%29%29", "/Foo_(bar)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := String(in)
		// The fast path for paths already normal agrees with the full one.
		if len(in) > 0 && in[0] == '/' {
			slow, serr := appendSlow(nil, []byte(in))
			if string(slow) != out || (serr == nil) != (err == nil) {
				t.Fatalf("%q: Append %q (%v), appendSlow %q (%v)", in, out, err, slow, serr)
			}
		}
		if err != nil {
			return
		}
		again, err := String(out)
		if err != nil || again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", in, out, again, err)
		}
		if out[0] != '/' {
			t.Fatalf("%q -> %q: not absolute", in, out)
		}
		if out != "/" && strings.HasSuffix(out, "/") {
			t.Fatalf("%q -> %q: trailing slash", in, out)
		}
		for _, seg := range strings.Split(out[1:], "/") {
			if out != "/" && (seg == "" || strings.HasSuffix(seg, ".") || strings.HasSuffix(seg, "%20")) {
				t.Fatalf("%q -> %q: segment %q left", in, out, seg)
			}
		}
		for _, seg := range strings.Split(out[1:], "/") {
			if ntfsStream([]byte(seg)) || shortName([]byte(seg)) || cookieless([]byte(seg)) {
				t.Fatalf("%q -> %q: Windows or ASP.NET alias %q left", in, out, seg)
			}
		}
		for i := 0; i < len(out); i++ {
			c := out[i]
			if c == '\\' || c == ';' || c < 0x20 || c >= 0x7f {
				t.Fatalf("%q -> %q: byte %#x left", in, out, c)
			}
			if c == '%' {
				v, _ := unhex(out[i+1])
				w, _ := unhex(out[i+2])
				b := v<<4 | w
				if b == '/' || b == '\\' || isUnreserved(b) || b < 0x20 {
					t.Fatalf("%q -> %q: escape %q left", in, out, out[i:i+3])
				}
			}
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	raw := []byte("/api/v1/users/0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001/roles/admin")
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = Append(buf[:0], raw)
	}
}
