package app

import (
	"bufio"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// prefixRules: /billing stripped, /notes forwarded whole; a prefix with an
// escape, to see it spelled as matched.
const prefixRules = appUpstream + `
routes:
  - {prefix: /billing, upstream: notes, access: protected, strip_prefix: true}
  - {prefix: /t%C3%A9l, upstream: notes, access: protected, strip_prefix: true}
  - {prefix: /notes, upstream: notes, access: protected}
`

// forwardedPrefix is the X-Forwarded-Prefix lines the app received with
// its last request (checked signed), under any spelling of the name.
func forwardedPrefix(t *testing.T, e *env) []string {
	t.Helper()
	r := e.up.Last(t)
	if !r.Signed || r.VerifyErr != nil {
		t.Fatalf("%s: signed=%v err=%v", r.URI, r.Signed, r.VerifyErr)
	}
	var got []string
	for k, v := range r.Headers {
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "X-Forwarded-Prefix") {
			got = append(got, v...)
		}
	}
	return got
}

// TestForwardedPrefix: a request on a route with strip_prefix reaches the
// app with X-Forwarded-Prefix, the prefix the proxy removed as the
// normalized path spells it and without a trailing slash, so that the app
// can write its external links and redirects; protected and public routes
// alike. A route without strip_prefix sends none.
// A client's own X-Forwarded-Prefix (any spelling) never reaches the app:
// the proxy's is the only one.
func TestForwardedPrefix(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: prefixRules})
	spoof := map[string]string{"X-Forwarded-Prefix": "/evil", "x_forwarded_prefix": "/evil2"}
	for _, tc := range []struct {
		path string
		hdr  map[string]string
		want []string
	}{
		{"/billing/invoices/7?due=1", nil, []string{"/billing"}},
		{"/billing", nil, []string{"/billing"}},
		{"/billing/", nil, []string{"/billing"}},
		{"/billing/a/../b", nil, []string{"/billing"}},
		{"/billing//x", nil, []string{"/billing"}},
		{"/t%c3%a9l/x", nil, []string{"/t%C3%A9l"}},
		{"/billing/x", spoof, []string{"/billing"}},
		{"/notes/x", nil, nil},
		{"/notes/x", spoof, nil},
	} {
		e.reset()
		e.wantStatus(e.do("GET", tc.path, e.token(nil), tc.hdr), 200)
		if got := forwardedPrefix(t, e); !slices.Equal(got, tc.want) {
			t.Errorf("%s (client sent %v): app got X-Forwarded-Prefix %q, want %q", tc.path, tc.hdr, got, tc.want)
		}
	}
	// An anonymous request on a public route (signed with the anonymous
	// identity).
	e = start(t, envOpt{rules: appUpstream + "routes:\n  - {prefix: /pub, upstream: notes, access: public, strip_prefix: true}\n"})
	for _, hdr := range []map[string]string{nil, spoof} {
		e.wantStatus(e.do("GET", "/pub/x", "", hdr), 200)
		if got := forwardedPrefix(t, e); !slices.Equal(got, []string{"/pub"}) {
			t.Errorf("/pub/x (client sent %v): app got X-Forwarded-Prefix %q, want [/pub]", hdr, got)
		}
	}
}

// TestForwardedPrefixTrustedOuter: behind a trusted proxy that stripped a
// prefix of its own and said so in X-Forwarded-Prefix, the app's base is
// that prefix followed by the route's: one value, the concatenation. Each
// of the peer's values (every line, and each element of a comma list, in
// order) is a path of its own, its trailing slashes and surrounding
// spaces left out; "/" and empty ones add nothing. On a route without
// strip_prefix the peer's lines pass as they came.
func TestForwardedPrefixTrustedOuter(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: prefixRules, vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}})
	tok := e.token(nil)
	for _, tc := range []struct {
		path  string
		lines []string
		want  []string
	}{
		{"/billing/x", nil, []string{"/billing"}},
		{"/billing/x", []string{"/shop"}, []string{"/shop/billing"}},
		{"/billing", []string{"/shop/"}, []string{"/shop/billing"}},
		{"/billing/x", []string{"/"}, []string{"/billing"}},
		{"/billing/x", []string{""}, []string{"/billing"}},
		{"/billing/x", []string{"/eu", "/shop"}, []string{"/eu/shop/billing"}},
		{"/billing/x", []string{"/eu, /shop//", ""}, []string{"/eu/shop/billing"}},
		{"/billing/x", []string{" /eu ,, / ,/shop"}, []string{"/eu/shop/billing"}},
		{"/billing/x", []string{"shop"}, []string{"/shop/billing"}},
		{"/notes/x", []string{"/shop"}, []string{"/shop"}},
		{"/notes/x", []string{"/eu", "/shop/"}, []string{"/eu", "/shop/"}},
		{"/notes/x", nil, nil},
	} {
		e.reset()
		req := "GET " + tc.path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n"
		for _, l := range tc.lines {
			req += "X-Forwarded-Prefix: " + l + "\r\n"
		}
		e.wantStatus(e.raw(req+"Connection: close\r\n\r\n"), 200)
		if got := forwardedPrefix(t, e); !slices.Equal(got, tc.want) {
			t.Errorf("%s, peer sent %q: app got X-Forwarded-Prefix %q, want %q", tc.path, tc.lines, got, tc.want)
		}
	}
}

// TestForwardingFieldsWithUnderscoresRemoved: an X-Forwarded-* field
// spelled with '_' (X_Forwarded_Prefix, x_forwarded_for) never reaches the
// app, from a trusted peer as from any other: CGI-style servers (WSGI,
// PHP) file it under the same name as the dashed field the proxy writes or
// extends (HTTP_X_FORWARDED_PREFIX), and from a trusted peer, which the
// proxy reads and extends under the dashed names alone, it went on beside
// the proxy's value, a base path, client address, scheme or host of the
// client's choosing that a peer cleaning the dashed names let through.
// The peer's dashed fields are read and extended as before.
func TestForwardingFieldsWithUnderscoresRemoved(t *testing.T) {
	t.Parallel()
	for _, trusted := range []bool{false, true} {
		var vars map[string]string
		if trusted {
			vars = map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}
		}
		e := start(t, envOpt{rules: prefixRules, vars: vars})
		tok := e.token(nil)
		for _, path := range []string{"/billing/x", "/notes/x"} {
			e.reset()
			e.wantStatus(e.raw("GET "+path+" HTTP/1.1\r\nHost: app.example\r\nAuthorization: Bearer "+tok+"\r\n"+
				"X_Forwarded_Prefix: /evil\r\nx_forwarded_for: 203.0.113.66\r\nX_FORWARDED_PROTO: https\r\n"+
				"X_Forwarded_Host: evil.example\r\nX_Forwarded-Port: 1\r\nX-Forwarded-Prefix: /shop\r\nConnection: close\r\n\r\n"), 200)
			r := e.up.Last(t)
			for k, v := range r.Headers {
				if strings.Contains(k, "_") && strings.HasPrefix(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "x-forwarded-") {
					t.Errorf("trusted %v, %s: %s: %q reached the app", trusted, path, k, v)
				}
			}
			wantPrefix := map[bool][]string{false: {"/billing"}, true: {"/shop/billing"}}[trusted]
			if path == "/notes/x" {
				wantPrefix = map[bool][]string{false: nil, true: {"/shop"}}[trusted]
			}
			if got := forwardedPrefix(t, e); !slices.Equal(got, wantPrefix) {
				t.Errorf("trusted %v, %s: X-Forwarded-Prefix %q, want %q", trusted, path, got, wantPrefix)
			}
			if got := r.Headers["X-Auth-Client-Ip"]; !slices.Equal(got, []string{"127.0.0.1"}) {
				t.Errorf("trusted %v, %s: X-Auth-Client-Ip %q, want the peer's address", trusted, path, got)
			}
			for name, want := range map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "app.example"} {
				if got := r.Headers[name]; !slices.Equal(got, []string{want}) {
					t.Errorf("trusted %v, %s: %s %q, want %q", trusted, path, name, got, want)
				}
			}
		}
	}
}

// TestStreamForwardedPrefix: the upgrade of a WebSocket and the request of
// an event stream on routes with strip_prefix carry X-Forwarded-Prefix as
// other requests do (a client's own removed; a trusted peer's outer
// prefix put first), and those of routes without it carry none.
func TestStreamForwardedPrefix(t *testing.T) {
	t.Parallel()
	for _, trusted := range []bool{false, true} {
		name, vars, want := "untrusted", map[string]string(nil), func(p string) string { return p }
		if trusted {
			name, vars = "trusted", map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}
			want = func(p string) string { return "/outer" + p }
		}
		t.Run(name, func(t *testing.T) {
			a := newStreamApp(t)
			e := start(t, envOpt{vars: vars, rules: "upstreams:\n  notes:\n    url: http://" + a.addr + "\n    key_id: app-notes\nroutes:\n" +
				"  - {prefix: /notes/ws, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true}\n" +
				"  - {prefix: /x, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], websocket: true, strip_prefix: true}\n" +
				"  - {prefix: /y, methods: [GET], upstream: notes, access: protected, permissions: [notes:read], stream_timeout: 2s, strip_prefix: true}\n"})
			e.core.SetProjection(notesProjection())
			tok := e.token(nil)
			check := func(kind string, want []string) {
				t.Helper()
				s := a.last(t)
				if s.verifyErr != nil {
					t.Fatalf("%s: %s not verified: %v", kind, s.path, s.verifyErr)
				}
				if got := s.header.Values("X-Forwarded-Prefix"); !slices.Equal(got, want) {
					t.Fatalf("%s: app got X-Forwarded-Prefix %q, want %q", kind, got, want)
				}
			}
			hdr := bearer(tok)
			hdr.Set("X-Forwarded-Prefix", "/outer")
			for _, tc := range []struct {
				path string
				want []string
			}{{"/x/notes/ws/a", []string{want("/x")}}, {"/notes/ws/a", nil}} {
				c, resp, err := e.dialWS(tc.path, hdr)
				if err != nil {
					t.Fatalf("dial %s: %v, %v", tc.path, err, resp)
				}
				echo(t, c, "hi")
				c.Close()
				if !trusted || tc.want != nil {
					check("websocket "+tc.path, tc.want)
				} else {
					check("websocket "+tc.path, []string{"/outer"}) // passed as it came
				}
			}
			req, _ := http.NewRequest("GET", "http://"+e.addr+"/y/notes/events", nil)
			req.Header = hdr.Clone()
			req.Header.Set("Accept", "text/event-stream")
			resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("event stream: %d", resp.StatusCode)
			}
			s := &sse{resp: resp, r: bufio.NewReader(resp.Body)}
			a.events <- "one"
			if got := s.next(t, 5*time.Second); got != "one" {
				t.Fatalf("event = %q", got)
			}
			check("event stream", []string{want("/y")})
		})
	}
}
