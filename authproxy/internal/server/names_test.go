package server

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/tollgate-auth/tollgate/authproxy/internal/pathnorm"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/requestid"
	"github.com/valyala/fasthttp"
)

// forward writes and looks up these names with header normalization off:
// each must already be in the canonical form fasthttp stores parsed client
// headers in, or a lookup would miss a client's header and a write would
// differ from a normalized one.
func TestForwardHeaderNamesCanonical(t *testing.T) {
	for _, name := range []string{
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix", requestid.Header, fiber.HeaderAuthorization,
		identity.HeaderKeyID, identity.HeaderPrincipal, identity.HeaderUserID, identity.HeaderTenantID,
		identity.HeaderSessionID, identity.HeaderRoles, identity.HeaderPermissions, identity.HeaderAMR,
		identity.HeaderAuthTime, identity.HeaderEmailVerified, identity.HeaderClientIP, identity.HeaderTimestamp,
		identity.HeaderSignature,
	} {
		var h fasthttp.RequestHeader
		if err := h.Read(bufioReader("GET / HTTP/1.1\r\nHost: x\r\n" + toLowerASCII(name) + ": v\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		var stored string
		for k := range h.All() {
			if string(k) != "Host" {
				stored = string(k)
			}
		}
		if stored != name {
			t.Errorf("%q is stored as %q when a client sends it", name, stored)
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

func toLowerASCII(s string) string { return strings.ToLower(s) }

// appendQuery percent-encodes what no request-target may carry raw (bytes
// outside ASCII, controls, spaces) and leaves the rest, percent-encodings
// included, as the client sent it.
func TestAppendQuery(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a=1&b=c+d&", "a=1&b=c+d&"},
		{"q=%C3%A9&r=%zz", "q=%C3%A9&r=%zz"},
		{"q=caf\xc3\xa9", "q=caf%C3%A9"},
		{"\xff\x80a", "%FF%80a"},
		{"a\x00b\x1fc d\x7f", "a%00b%1Fc%20d%7F"},
	} {
		if got := string(appendQuery([]byte("/p?"), []byte(tc.in))); got != "/p?"+tc.want {
			t.Errorf("appendQuery(%q) = %q, want %q", tc.in, got, "/p?"+tc.want)
		}
	}
}

// TestAnswerHeaderNamesCanonical: the names the proxy looks up in an
// upstream's answer as they are (PeekCanonical, invalidatedKey) are in the
// form fasthttp stores them in however the upstream spelled them.
func TestAnswerHeaderNamesCanonical(t *testing.T) {
	for _, name := range []string{invalidation.HeaderInvalidated} {
		if string(invalidatedKey) != name {
			t.Fatalf("invalidatedKey %q, want %q", invalidatedKey, name)
		}
		for _, sent := range []string{toLowerASCII(name), strings.ToUpper(name), name} {
			var h fasthttp.ResponseHeader
			if err := h.Read(bufioReader("HTTP/1.1 204 No Content\r\n" + sent + ": v\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			if got := h.PeekCanonical([]byte(name)); string(got) != "v" {
				t.Errorf("%q sent as %q: PeekCanonical(%q) = %q, want \"v\"", name, sent, name, got)
			}
		}
	}
}

// setRequestURI makes the forwarded request line's target exactly the one
// signed (the normalized path and the query as appendQuery writes it),
// whether the client's target already was it or not: paths that need no
// normalization (with and without a query), that do, an empty query, a
// fragment, bytes escaped in the query, an absolute-form target.
func TestSetRequestURIWritesTheSignedTarget(t *testing.T) {
	for _, raw := range []string{
		"/", "/a", "/a/b?c=d&e", "/.well-known/jwks.json", "/a?", "/a?b#frag", "/a#frag", "/a/./b/../c?x=1",
		"/a//b", "/%61b?q=%20", "/a?q=\xc3\xa9", "/a?b?c", "http://h.example/a/b?c=d",
	} {
		var req fasthttp.Request
		text := "GET " + raw + " HTTP/1.1\r\nHost: h.example\r\n\r\n"
		if err := req.Read(bufio.NewReader(strings.NewReader(text))); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		path, err := pathnorm.Append(nil, req.URI().PathOriginal())
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		uri := path
		if q := req.URI().QueryString(); len(q) > 0 {
			uri = appendQuery(append(uri, '?'), q)
		}
		setRequestURI(&req, uri)
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		if err := req.Write(w); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		line, _, _ := strings.Cut(b.String(), "\r\n")
		if want := "GET " + string(uri) + " HTTP/1.1"; line != want {
			t.Errorf("%q: request line %q, want %q", raw, line, want)
		}
	}
}
