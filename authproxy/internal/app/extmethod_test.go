package app

import (
	"strconv"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// davRules has a route naming methods outside the standard ones (WebDAV's
// PROPFIND and MKCOL, QUERY) beside routes that name none of them.
const davRules = appUpstream + `
routes:
  - {prefix: /dav, methods: [GET, PROPFIND, MKCOL], upstream: notes, access: protected, permissions: [notes:read]}
  - {prefix: /dav/public, methods: [QUERY], upstream: notes, access: public}
  - {prefix: /notes, methods: [GET], upstream: notes, access: protected, permissions: [notes:read]}
  - {prefix: /notes/maybe, upstream: notes, access: optional}
`

// TestExtensionMethodRouted: a request whose method a route names (PROPFIND,
// QUERY) is routed like any other: authenticated, authorized, forwarded
// with its body and signed over its method, which the app's verifier
// checks. A prefix whose routes do not take such a method answers 405
// with Allow, a route without methods included (it takes the standard
// methods only).
func TestExtensionMethodRouted(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: davRules})
	e.core.SetProjection(notesProjection())
	tok := e.token(nil)
	body := `<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>`

	e.reset()
	r := e.raw("PROPFIND /dav/files/a?depth=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
		"\r\nDepth: 1\r\nContent-Type: application/xml\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
	e.wantStatus(r, 200)
	got := e.wantSignedAt(e.up, testenv.AppKey.ID)
	if got.Method != "PROPFIND" || got.URI != "/dav/files/a?depth=1" || string(got.Body) != body || got.Headers["Depth"] == nil {
		t.Fatalf("forwarded %s %s %q %v", got.Method, got.URI, got.Body, got.Headers)
	}

	// Authentication and permissions apply as to any method.
	e.reset()
	e.wantProblem(e.raw("MKCOL /dav/new HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 401, problem.CodeUnauthenticated)
	e.wantNothingForwarded()

	// Identity fields a client sends are stripped as from any request:
	// such a method passes the same header scan.
	e.reset()
	e.wantStatus(e.raw("QUERY /dav/public/q HTTP/1.1\r\nHost: x\r\nX-Auth-User-Id: forged\r\nX-Auth-Principal: user\r\n"+
		"Remote-User: forged\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"), 200)
	got = e.wantAnonymousAt(e.up, testenv.AppKey.ID)
	if got.Method != "QUERY" || string(got.Body) != "{}" {
		t.Fatalf("forwarded %s %q", got.Method, got.Body)
	}
	for name, v := range got.Headers {
		for _, x := range v {
			if x == "forged" || name == "Remote-User" {
				t.Fatalf("client-sent %s: %q forwarded", name, x)
			}
		}
	}

	for _, tc := range []struct{ req, allow string }{
		{"PROPFIND /notes/1", "GET, HEAD"},
		{"MKCOL /dav/public/x", "QUERY"},
		{"QUERY /notes/maybe", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
	} {
		e.reset()
		r := e.raw(tc.req + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nConnection: close\r\n\r\n")
		e.wantProblem(r, 405, problem.CodeMethodNotAllowed)
		if r.header.Get("Allow") != tc.allow {
			t.Fatalf("%s: Allow %q, want %q", tc.req, r.header.Get("Allow"), tc.allow)
		}
		e.wantNothingForwarded()
	}

	// A path no route covers is 404 for such a method as for any.
	e.wantProblem(e.raw("PROPFIND /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 404, problem.CodeNotFound)
	e.wantNothingForwarded()
}
