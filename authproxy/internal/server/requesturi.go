package server

import (
	"bytes"

	"github.com/tollgate-auth/tollgate/shared/requestid"
	"github.com/valyala/fasthttp"
)

// requestIDKey is the request id header's name in canonical form
// (TestForwardHeaderNamesCanonical), written without re-normalizing it.
var requestIDKey = []byte(requestid.Header)

// setRequestURI makes the request line req is forwarded with uri (the
// normalized path and the query, exactly as signed). When the client sent
// an origin-form request line from which the parsed URI already rebuilds
// those very bytes (the path needed no normalization), it is left as it
// is: the forwarding client then writes it from the parsed URI instead of
// parsing a new one. The Host header is kept as the client sent it
// (UseHostHeader), but for an absolute-form target (absoluteHost); an
// absolute-form request line, or one that
// starts with "//" (which fasthttp may read as a network-path reference,
// with a host and userinfo of its own: the forwarding client would then
// write the userinfo as an Authorization header of the client's
// choosing), is always replaced.
func setRequestURI(req *fasthttp.Request, uri []byte) {
	req.UseHostHeader = true
	raw := req.Header.RequestURI()
	if len(raw) > 0 && raw[0] == '/' && (len(raw) == 1 || raw[1] != '/') {
		u := req.URI()
		u.DisablePathNormalizing = true // as the forwarding client sends it
		if bytes.Equal(u.RequestURI(), uri) {
			return
		}
	} else if len(raw) > 0 && raw[0] != '/' {
		absoluteHost(req)
	}
	req.SetRequestURIBytes(uri)
}

// absoluteHost makes the Host of a request whose target is in absolute
// form ("GET http://a.example/x") the target's authority, whatever Host
// field the client sent (RFC 9112 section 3.2.2: a server ignores it and
// uses the target's), as the forwarded request line is the path alone.
// Otherwise a front that admits requests by the target's authority (an
// ingress's host rules) would pass a Host of the client's choosing on to
// the app, in Host and X-Forwarded-Host. An authority-less target keeps
// the Host field (fasthttp reads one only with "//", which is not this
// form). Out of line: rare.
//
//go:noinline
func absoluteHost(req *fasthttp.Request) {
	if h := req.URI().Host(); len(h) > 0 {
		req.Header.SetHostBytes(h)
	}
}
