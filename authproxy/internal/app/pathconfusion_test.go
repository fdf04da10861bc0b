package app

import (
	"bufio"
	"cmp"
	"crypto/sha256"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/valyala/fasthttp"
)

// confusionPrefixes are the app's prefixes in TestRequestTargetConfusion,
// longest first.
var confusionPrefixes = []string{"/notes/public/@admin", "/notes/public", "/events", "/notes", "/admin", "/feed", "/"}

// upstreamReaders say under which of confusionPrefixes typical upstream
// routers serve a request received as raw: Go's ServeMux (Go 1.22
// patterns: each segment unescaped, the path cleaned), Fiber v2 with its
// defaults (the path as sent, case ignored), and a fasthttp handler that
// routes on ctx.Path() (the path decoded and its dot segments resolved).
func upstreamReaders() map[string]func(raw string) string {
	mux := http.NewServeMux()
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	for _, p := range confusionPrefixes {
		mux.HandleFunc(p, func(http.ResponseWriter, *http.Request) {})
		if p == "/" {
			app.All("/*", func(c *fiber.Ctx) error { return c.SendString("/") })
			continue
		}
		mux.HandleFunc(p+"/", func(http.ResponseWriter, *http.Request) {})
		for _, r := range []string{p, p + "/*"} {
			app.All(r, func(c *fiber.Ctx) error { return c.SendString(p) })
		}
	}
	fiberHandler := app.Handler()
	read := func(raw string) (*fasthttp.Request, error) {
		var req fasthttp.Request
		return &req, req.Read(bufio.NewReaderSize(strings.NewReader(raw), 64<<10))
	}
	return map[string]func(string) string{
		"ServeMux": func(raw string) string {
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
			if err != nil {
				return "refused: " + err.Error()
			}
			h, pattern := mux.Handler(req)
			if _, ok := h.(http.HandlerFunc); !ok {
				// A redirect to the cleaned path, or not found.
				return fmt.Sprintf("%T for %s", h, req.URL.Path)
			}
			return cmp.Or(strings.TrimSuffix(pattern, "/"), "/")
		},
		"Fiber": func(raw string) string {
			req, err := read(raw)
			if err != nil {
				return "refused: " + err.Error()
			}
			var ctx fasthttp.RequestCtx
			req.CopyTo(&ctx.Request)
			fiberHandler(&ctx)
			return string(ctx.Response.Body())
		},
		"fasthttp Path": func(raw string) string {
			req, err := read(raw)
			if err != nil {
				return "refused: " + err.Error()
			}
			p := string(req.URI().Path())
			for _, pre := range confusionPrefixes {
				if p == pre || strings.HasPrefix(p, strings.TrimSuffix(pre, "/")+"/") {
					return pre
				}
			}
			return "none: " + p
		},
	}
}

// TestRequestTargetConfusion: for request targets written to be read one
// way by the proxy and another by the app (encoded separators and dots,
// overlong UTF-8, backslashes, ';', "//" prefixes, absolute and authority
// form, '*', fragments, control bytes, trailing dots and spaces, case, long
// paths, '/..' in the query, a stripped prefix, WebSocket and stream
// routes), the proxy refuses the request, or the request line the app
// receives is the one signed and every typical upstream router serves it
// under the prefix the proxy authorized (a public one: no request below
// carries a credential, except where tok is set).
func TestRequestTargetConfusion(t *testing.T) {
	t.Parallel()
	notes, billing := newRawUpstream(t), newRawUpstream(t)
	e := start(t, envOpt{rules: "upstreams:\n" +
		"  notes: {url: http://" + notes.ln.Addr().String() + ", key_id: app-notes}\n" +
		"  billing: {url: http://" + billing.ln.Addr().String() + ", key_id: app-two}\n" +
		"routes:\n" +
		"  - {prefix: /admin, upstream: notes, access: protected}\n" +
		"  - {prefix: /notes, upstream: notes, access: protected}\n" +
		"  - {prefix: /notes/public, upstream: notes, access: public}\n" +
		"  - {prefix: /notes/public/@admin, upstream: notes, access: protected}\n" +
		"  - {prefix: /feed, methods: [GET], upstream: notes, access: public, websocket: true}\n" +
		"  - {prefix: /events, methods: [GET], upstream: notes, access: public, stream_timeout: 2s}\n" +
		"  - {prefix: /pub, upstream: billing, access: public, strip_prefix: true}\n" +
		"  - {prefix: /, upstream: notes, access: public}\n"})
	tok := e.token(nil)
	readers := upstreamReaders()
	verifier := map[*rawUpstream]*identity.Verifier{}
	for up, key := range map[*rawUpstream]identity.Key{notes: testenv.AppKey, billing: testenv.OtherAppKeys[0]} {
		v, err := identity.NewVerifier([]identity.Key{key}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		verifier[up] = v
	}
	const ws = "Upgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	long := strings.Repeat("a", 8000)
	tests := []struct {
		line   string // method and target
		hdr    string // header lines besides Host, Connection (and Authorization when tok)
		tok    bool
		status int
		fwd    string // the target forwarded ("" nothing) ...
		prefix string // ... served under this prefix by every reader ("" for billing)
		host   string // the Host and X-Forwarded-Host forwarded ("": the client's Host field)
	}{
		// Encoded separators and dots: decoded and resolved before
		// matching when they are dots, refused when they are separators,
		// else one character of a segment to every reader.
		{line: "GET /notes/public/%2e%2E/%2E%2e/admin", status: 401},
		{line: "GET /notes/public%2f..%2f..%2fadmin", status: 400},
		{line: "GET /notes/public/..%2F..%2Fadmin", status: 400},
		{line: "GET /notes/public/..%5c..%5cadmin", status: 400},
		{line: "GET /notes/public/%252e%252e/%252e%252e/admin", status: 200, fwd: "/notes/public/%252e%252e/%252e%252e/admin", prefix: "/notes/public"},
		{line: "GET /notes/public/%25%32%65%25%32%65/admin", status: 200, fwd: "/notes/public/%252e%252e/admin", prefix: "/notes/public"},
		{line: "GET /notes/public/%c0%ae%c0%ae/%c0%ae%c0%ae/admin", status: 200, fwd: "/notes/public/%C0%AE%C0%AE/%C0%AE%C0%AE/admin", prefix: "/notes/public"},
		{line: "GET /notes/public/%c0%af..%c0%af..%c0%afadmin", status: 200, fwd: "/notes/public/%C0%AF..%C0%AF..%C0%AFadmin", prefix: "/notes/public"},
		{line: "GET /notes/public/%ef%bc%8f..%ef%bc%8fadmin", status: 200, fwd: "/notes/public/%EF%BC%8F..%EF%BC%8Fadmin", prefix: "/notes/public"},
		{line: "GET /notes/public/%u002e%u002e/admin", status: 400},
		{line: "GET /notes/public/..%3b/..%3b/admin", status: 200, fwd: "/notes/public/..%3B/..%3B/admin", prefix: "/notes/public"},
		// Escaped path characters (sub-delims, ':', '@') are decoded:
		// Go's ServeMux reads "%40" as "@", so the rules must too.
		{line: "GET /notes/public/%40admin", status: 401},
		{line: "GET /notes/public/%40admin/x", status: 401},
		{line: "GET /notes/public/%40admin", tok: true, status: 200, fwd: "/notes/public/@admin", prefix: "/notes/public/@admin"},
		{line: "GET /notes/public/a%3Ab%21%2B%2c%3D", status: 200, fwd: "/notes/public/a:b!+,=", prefix: "/notes/public"},
		// Backslashes and path parameters.
		{line: "GET /notes/public\\..\\..\\admin", status: 400},
		{line: "GET /notes/public;/../../admin", status: 400},
		{line: "GET /admin;foo", status: 400},
		// "//" prefixes: empty segments are dropped, unless fasthttp reads
		// a host in them (a "://" further on): then the path after it is
		// the one routed, forwarded and signed.
		{line: "GET //admin", status: 401},
		{line: "GET ///admin", status: 401},
		{line: "GET //notes/public/../../admin", status: 401},
		{line: "GET //evil/admin", status: 200, fwd: "/evil/admin", prefix: "/"},
		{line: "GET //evil/admin?q=://", status: 401},
		{line: "GET //evil/admin?q=://", tok: true, status: 200, fwd: "/admin?q=://", prefix: "/admin"},
		{line: "GET //evil/notes/public?q=://", status: 200, fwd: "/notes/public?q=://", prefix: "/notes/public"},
		// Absolute form (the proxy routes on the path alone; the Host
		// forwarded is the target's authority, not the client's Host
		// field: RFC 9112 section 3.2.2), authority form, asterisk form.
		{line: "GET http://h/admin", status: 401},
		{line: "GET http://h/notes/public/../../admin", status: 401},
		{line: "GET HTTP://H:80/notes/public/x", status: 200, fwd: "/notes/public/x", prefix: "/notes/public", host: "h:80"},
		{line: "GET ftp://h/notes/public", status: 200, fwd: "/notes/public", prefix: "/notes/public", host: "h"},
		{line: "GET http://other.example/notes/public", status: 200, fwd: "/notes/public", prefix: "/notes/public", host: "other.example"},
		{line: "GET http://user:pw@other.example/notes/public", status: 200, fwd: "/notes/public", prefix: "/notes/public", host: "other.example"},
		{line: "GET http://h", status: 200, fwd: "/", prefix: "/", host: "h"},
		{line: "GET http://h?x=/admin", status: 400},
		{line: "CONNECT h:443", status: 400},
		{line: "CONNECT /notes/public", status: 405},
		{line: "OPTIONS *", status: 400},
		{line: "GET *", status: 400},
		// Fragments are not sent on the wire: fasthttp drops one.
		{line: "GET /notes/public#/../../admin", status: 200, fwd: "/notes/public", prefix: "/notes/public"},
		{line: "GET /notes/public?a=b#/../../admin", status: 200, fwd: "/notes/public?a=b", prefix: "/notes/public"},
		{line: "GET #/admin", status: 400},
		// NUL and other control bytes, raw or encoded.
		{line: "GET /notes/public\x00/../../admin", status: 400},
		{line: "GET /notes/public/%00/../../admin", status: 400},
		{line: "GET /notes/public\x01", status: 400},
		{line: "GET /notes/public\x7f", status: 400},
		{line: "GET /notes/public/%7f", status: 400},
		{line: "GET /notes/public\t/../../admin", status: 400},
		// Trailing dots and spaces, raw or encoded: IIS, ASP.NET and
		// Windows file servers drop them ("/admin." is their /admin), so
		// a segment ending in either is refused; dots elsewhere in a
		// segment are its own characters.
		{line: "GET /admin.", status: 400},
		{line: "GET /admin./x", status: 400},
		{line: "GET /admin%2e", status: 400},
		{line: "GET /admin%2e/x", status: 400},
		{line: "GET /admin..%2E/x", status: 400},
		{line: "GET /admin%20", status: 400},
		{line: "GET /admin.%20/x", status: 400},
		{line: "GET /notes/public./x", status: 400},
		{line: "GET /admins.x", status: 200, fwd: "/admins.x", prefix: "/"},
		{line: "GET /notes/public/a.b.x", status: 200, fwd: "/notes/public/a.b.x", prefix: "/notes/public"},
		// A prefix with a format suffix: Rails serves "/admin.x" as
		// /admin (its "(.:format)"), so it never falls to "/".
		{line: "GET /admin.x", status: 404},
		{line: "GET /notes/public/@admin.json", status: 404},
		{line: "GET /notes/public/.x./../a", status: 400},
		// Case variants of a prefix.
		{line: "GET /ADMIN", status: 404},
		{line: "GET /%41dmin", status: 404},
		{line: "GET /Notes/public", status: 404},
		// Long paths: kept whole up to the header limit.
		{line: "GET /notes/public/" + long, status: 200, fwd: "/notes/public/" + long, prefix: "/notes/public"},
		{line: "GET /notes/public/" + strings.Repeat("x/../", 1500) + "../../admin", status: 401},
		{line: "GET /notes/public/" + strings.Repeat(long, 3), status: 431},
		// The query is never part of the path.
		{line: "GET /notes/public?/../../admin", status: 200, fwd: "/notes/public?/../../admin", prefix: "/notes/public"},
		{line: "GET /notes/public?x=%2f..%2fadmin&y=\\..\\admin", status: 200, fwd: "/notes/public?x=%2f..%2fadmin&y=\\..\\admin", prefix: "/notes/public"},
		{line: "GET /notes/public??/../admin", status: 200, fwd: "/notes/public??/../admin", prefix: "/notes/public"},
		// strip_prefix: the prefix is matched on the normalized path and
		// stripped from it, so an encoded separator is refused before and
		// a dot segment resolved before.
		{line: "GET /pub%2fadmin", status: 400},
		{line: "GET /pub/..%2fadmin", status: 400},
		{line: "GET /pub/%2e%2e/admin", status: 401},
		{line: "GET /pub%2e%2e/admin", status: 400},
		{line: "GET /pub%2e%2ex/admin", status: 200, fwd: "/pub..x/admin", prefix: "/"},
		{line: "GET /pub//%2e/x", status: 200, fwd: "/x"},
		{line: "GET //evil/pub/x?q=://", status: 200, fwd: "/x?q=://"},
		{line: "GET /pub//internal", status: 404},
		{line: "GET /PUB/x", status: 404},
		// WebSocket and stream routes go through the same normalization.
		{line: "GET /feed/%2e%2e/admin", hdr: ws, status: 401},
		{line: "GET //evil/feed/x?q=://", hdr: ws, status: 200, fwd: "/feed/x?q=://", prefix: "/feed"},
		{line: "GET /feed/x#/../../admin", hdr: ws, status: 200, fwd: "/feed/x", prefix: "/feed"},
		{line: "GET /events/%2e%2e/admin", status: 401},
		{line: "GET /events/a/../b?x=/../admin", status: 200, fwd: "/events/b?x=/../admin", prefix: "/events"},
	}
	for _, tt := range tests {
		name := tt.line
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(fmt.Sprintf("%q tok=%v", name, tt.tok), func(t *testing.T) {
			before := map[*rawUpstream]int{notes: len(notes.all()), billing: len(billing.all())}
			req := tt.line + " HTTP/1.1\r\nHost: proxy.example\r\n" + tt.hdr
			if tt.hdr == "" {
				req += "Connection: close\r\n"
			}
			if tt.tok {
				req += "Authorization: Bearer " + tok + "\r\n"
			}
			resp := rawSend(t, e.addr, req+"\r\n")
			if want := fmt.Sprintf("HTTP/1.1 %d ", tt.status); !strings.HasPrefix(resp, want) {
				t.Fatalf("answered %.60q, want %d", resp, tt.status)
			}
			var got []string
			var up *rawUpstream
			for _, u := range []*rawUpstream{notes, billing} {
				if n := u.all()[before[u]:]; len(n) > 0 {
					got, up = append(got, n...), u
				}
			}
			if tt.fwd == "" {
				if len(got) != 0 {
					t.Fatalf("forwarded %.80q", got[0])
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("forwarded %d requests, want 1", len(got))
			}
			method, _, _ := strings.Cut(tt.line, " ")
			line, _, _ := strings.Cut(got[0], "\r\n")
			if want := method + " " + tt.fwd + " HTTP/1.1"; line != want {
				t.Fatalf("request line %.80q, want %.80q", line, want)
			}
			hreq, err := http.ReadRequest(bufio.NewReader(strings.NewReader(got[0])))
			if err != nil {
				t.Fatal(err)
			}
			if h, want := hreq.Host, cmp.Or(tt.host, "proxy.example"); h != want {
				t.Fatalf("Host %q, want %q", h, want)
			}
			if h, want := hreq.Header.Get("X-Forwarded-Host"), cmp.Or(tt.host, "proxy.example"); h != want {
				t.Fatalf("X-Forwarded-Host %q, want %q", h, want)
			}
			if tt.hdr == ws && hreq.Header.Get("Upgrade") != "websocket" {
				t.Fatalf("forwarded without its upgrade: %.200q", got[0])
			}
			// The signature covers exactly the target forwarded.
			if _, err := verifier[up].Verify(e.clock.Now(), hreq.Header.Get, method, tt.fwd, sha256.Sum256(nil)); err != nil {
				t.Fatalf("signature over %q: %v", tt.fwd, err)
			}
			if up == billing {
				if tt.prefix != "" {
					t.Fatalf("forwarded to billing, want notes")
				}
				return
			}
			if tt.prefix == "" {
				t.Fatalf("forwarded to notes, want billing")
			}
			for _, name := range slices.Sorted(maps.Keys(readers)) {
				if p := readers[name](got[0]); p != tt.prefix {
					t.Errorf("%s serves it under %s, the proxy under %s", name, p, tt.prefix)
				}
			}
		})
	}
}
