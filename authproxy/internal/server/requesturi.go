package server

import (
	"bytes"

	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/requestid"
	"github.com/valyala/fasthttp"
)

// requestIDKey is the request id header's name in canonical form
// (TestForwardHeaderNamesCanonical), written without re-normalizing it.
var requestIDKey = []byte(requestid.Header)

// invalidatedKey is invalidation.HeaderInvalidated, in the canonical form
// fasthttp stores an upstream's answer's names in.
var invalidatedKey = []byte(invalidation.HeaderInvalidated)

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
		// The request line's target itself first: when it is uri (most
		// requests), the parsed URI rebuilds it (uri has no fragment nor
		// empty query, which the parse would drop), and building that
		// copy to compare is skipped.
		if bytes.Equal(raw, uri) || bytes.Equal(u.RequestURI(), uri) {
			return
		}
	} else if len(raw) > 0 && raw[0] != '/' {
		absoluteHost(req)
	}
	req.SetRequestURIBytes(uri)
}

// appendQuery appends the query q as it is forwarded (and signed): as the
// client sent it, but for bytes that no request-target may carry as they
// are (RFC 9112 section 3.2, RFC 3986 section 3.4): bytes outside ASCII,
// which it percent-encodes as browsers do before sending (controls and
// spaces never get here: fasthttp refuses such a request line, 400; they
// would be encoded too). To an app that decodes the query the meaning is
// the same; an app whose HTTP parser is strict (Node's) refused the raw
// bytes with 400 where the proxy had accepted them.
func appendQuery(dst, q []byte) []byte {
	for i, c := range q {
		if c <= ' ' || c >= 0x7f {
			return appendQueryEscaped(append(dst, q[:i]...), q[i:])
		}
	}
	return append(dst, q...)
}

// appendQueryEscaped is appendQuery from the first byte to escape on. Out
// of line: rare.
//
//go:noinline
func appendQueryEscaped(dst, q []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range q {
		if c <= ' ' || c >= 0x7f {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
			continue
		}
		dst = append(dst, c)
	}
	return dst
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
