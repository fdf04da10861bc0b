package headers

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/valyala/fasthttp"
)

func parse(t testing.TB, raw string) *fasthttp.Request {
	t.Helper()
	var req fasthttp.Request
	if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("read request: %v", err)
	}
	return &req
}

func names(h *fasthttp.RequestHeader) map[string]string {
	m := map[string]string{}
	for k, v := range h.All() {
		m[strings.ToLower(string(k))] = string(v)
	}
	return m
}

func TestSanitize(t *testing.T) {
	raw := "GET /api/v1/users/me HTTP/1.1\r\n" +
		"Host: example.com\r\n" +
		"X-Auth-User-Id: evil\r\n" +
		"x-auth-tenant-id: evil\r\n" +
		"X_Auth_Roles: owner\r\n" +
		"X-AUTH-SIGNATURE: v1=x\r\n" +
		"Connection: keep-alive, X-Custom-Hop\r\n" +
		"X-Custom-Hop: 1\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Authorization: Basic x\r\n" +
		"Te: trailers\r\n" +
		"Upgrade: websocket\r\n" +
		"X-Forwarded-For: 1.2.3.4\r\n" +
		"X_Forwarded_Host: evil\r\n" +
		"Forwarded: for=1.2.3.4\r\n" +
		"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n" +
		"TraceState: a=b\r\n" +
		"Baggage: tenant.id=victim\r\n" +
		"X-Real-IP: 10.0.0.1\r\n" +
		"true-client-ip: 10.0.0.1\r\n" +
		"CF_Connecting_IP: 10.0.0.1\r\n" +
		"Client-IP: 10.0.0.1\r\n" +
		"X-Forwarded: for=203.0.113.9\r\n" +
		"Forwarded_For: 203.0.113.9\r\n" +
		"Via: 203.0.113.9\r\n" +
		"X-Real-IPs: kept\r\n" +
		"Vias: kept\r\n" +
		"X_Request_Id: client-chosen\r\n" +
		"x-request_id: client-chosen\r\n" +
		"X-HTTP-Method-Override: DELETE\r\n" +
		"X_Http_Method: DELETE\r\n" +
		"x-method-override: DELETE\r\n" +
		"X-Original-URL: /admin\r\n" +
		"x_rewrite_url: /admin\r\n" +
		"X-Original-URI: /admin\r\n" +
		"X-Forwarded-Uri: /admin\r\n" +
		"x-forwarded-path: /admin\r\n" +
		"X-Original-Path: /admin\r\n" +
		"X-Envoy-Original-Path: /admin\r\n" +
		"X-Original-URIs: kept\r\n" +
		"X-Original-URLs: kept\r\n" +
		"X-Original-Prefix: /pub\r\n" +
		"HTTP_REMOTE_USER: admin\r\n" +
		"Http-X-Auth-User-Id: evil\r\n" +
		"HTTP_X_CONSUMER_ID: admin\r\n" +
		"HTTP_X_HTTP_METHOD_OVERRIDE: DELETE\r\n" +
		"http_x_original_url: /admin\r\n" +
		"HTTP_X_REQUEST_ID: client-chosen\r\n" +
		"HTTP_REMOTE_USERS: kept\r\n" +
		"HTTP_X_REQUEST_IDS: kept\r\n" +
		"X-Original-Prefixes: kept\r\n" +
		"X-HTTP-Method-Overrides: kept\r\n" +
		"X-Authorization-Note: kept\r\n" +
		"Expect: 100-continue\r\n" +
		"Expects: kept\r\n" +
		"Authorization: Bearer abc\r\n" +
		"Accept: */*\r\n\r\n"
	for _, trust := range []bool{false, true} {
		req := parse(t, raw)
		closeConn, droppedXFF := Sanitize(&req.Header, trust)
		if closeConn {
			t.Errorf("trust=%v: closeConn = true, want false", trust)
		}
		if droppedXFF != !trust {
			t.Errorf("trust=%v: droppedXFF = %v, want %v", trust, droppedXFF, !trust)
		}
		got := names(&req.Header)
		for _, gone := range []string{"x-auth-user-id", "x-auth-tenant-id", "x_auth_roles", "x-auth-signature",
			"connection", "x-custom-hop", "keep-alive", "proxy-authorization", "te", "upgrade",
			"x-http-method-override", "x_http_method", "x-method-override", "x-original-url", "x_rewrite_url",
			"x-original-uri", "x-forwarded-uri", "x-forwarded-path", "x-original-path", "x-envoy-original-path",
			"x_request_id", "x-request_id", "expect", "x_forwarded_host", "cf_connecting_ip", "forwarded_for",
			"http_remote_user", "http-x-auth-user-id", "http_x_consumer_id", "http_x_http_method_override", "http_x_original_url",
			"http_x_request_id"} {
			if _, ok := got[gone]; ok {
				t.Errorf("trust=%v: header %q survived", trust, gone)
			}
		}
		for _, kept := range []string{"host", "expects", "x-real-ips", "vias", "x-http-method-overrides", "x-original-urls", "x-original-uris", "x-original-prefixes", "http_remote_users", "http_x_request_ids", "x-authorization-note", "authorization", "accept"} {
			if _, ok := got[kept]; !ok {
				t.Errorf("trust=%v: header %q removed, want kept", trust, kept)
			}
		}
		// The trace context is a trusted peer's to give, like X-Forwarded-*
		// (under its dashed names: X_Forwarded_Host, CF_Connecting_IP and
		// Forwarded_For are gone above). So are the client-address headers
		// other than X-Forwarded-For.
		for _, fwd := range []string{"x-forwarded-for", "forwarded", "traceparent", "tracestate", "baggage",
			"x-real-ip", "true-client-ip", "client-ip", "x-forwarded", "via", "x-original-prefix"} {
			if _, ok := got[fwd]; ok != trust {
				t.Errorf("trust=%v: header %q present = %v, want %v", trust, fwd, ok, trust)
			}
		}
	}
}

func TestSanitizeConnectionClose(t *testing.T) {
	req := parse(t, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Auth-User-Id, Host, Content-Length\r\n\r\n")
	if closeConn, droppedXFF := Sanitize(&req.Header, false); !closeConn || droppedXFF {
		t.Fatalf("Sanitize = %v, %v; want true, false", closeConn, droppedXFF)
	}
	if string(req.Header.Host()) != "a" {
		t.Fatalf("Host = %q: Connection must not remove it", req.Header.Host())
	}
}

// TestConnectionDrops: ConnectionDrops is true exactly when Sanitize
// removes a field because Connection names it (the Authorization field
// among them); the names Sanitize keeps are not counted.
func TestConnectionDrops(t *testing.T) {
	for _, tt := range []struct {
		name, connection string
		want             bool
	}{
		{"none", "", false},
		{"close", "Connection: close\r\n", false},
		{"kept names", "Connection: keep-alive, Host, Content-Length, Content-Type\r\n", false},
		{"authorization", "Connection: close, authorization\r\n", true},
		{"in a second field", "Connection: keep-alive\r\nConnection: X-Api-Key\r\n", true},
		{"a field not sent", "Connection: X-Other\r\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw := "POST / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\nX-Api-Key: tg_x\r\nContent-Length: 0\r\n" + tt.connection + "\r\n"
			req := parse(t, raw)
			if got := ConnectionDrops(&req.Header); got != tt.want {
				t.Fatalf("ConnectionDrops = %v, want %v", got, tt.want)
			}
			Sanitize(&req.Header, false)
			kept := len(req.Header.Peek("Authorization")) > 0 && len(req.Header.Peek(APIKeyHeader)) > 0
			if tt.name != "a field not sent" && kept == tt.want {
				t.Fatalf("credential fields kept by Sanitize: %v, want %v", kept, !tt.want)
			}
		})
	}
}

// TestSanitizeReportsDroppedXFF: only an X-Forwarded-For removed from an
// untrusted peer is reported, whatever its spelling; other forwarded
// headers are not.
func TestSanitizeReportsDroppedXFF(t *testing.T) {
	for _, tt := range []struct {
		name, headers string
		trust, want   bool
	}{
		{"none", "Accept: */*\r\n", false, false},
		{"x-forwarded-for", "X-Forwarded-For: 1.2.3.4\r\n", false, true},
		{"lower case", "x-forwarded-for: 1.2.3.4\r\n", false, true},
		{"underscores", "X_Forwarded_For: 1.2.3.4\r\n", false, true},
		{"trusted peer", "X-Forwarded-For: 1.2.3.4\r\n", true, false},
		{"other forwarded headers", "X-Forwarded-Proto: https\r\nForwarded: for=1.2.3.4\r\nX-Forwarded-Host: a\r\n", false, false},
		{"prefix only", "X-Forwarded-Foreign: 1\r\n", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := parse(t, "GET / HTTP/1.1\r\nHost: a\r\n"+tt.headers+"\r\n")
			if _, got := Sanitize(&req.Header, tt.trust); got != tt.want {
				t.Fatalf("droppedXFF = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSanitizeManyIdentityHeaders(t *testing.T) {
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: a\r\n")
	for i := 0; i < 3*maxDeletes+1; i++ {
		b.WriteString("X-Auth-H" + strings.Repeat("x", i) + ": 1\r\n")
	}
	b.WriteString("\r\n")
	req := parse(t, b.String())
	Sanitize(&req.Header, false)
	for k := range req.Header.All() {
		if identity.IsIdentityHeader(string(k)) {
			t.Fatalf("identity header %q survived", k)
		}
	}
}

func TestAnyCredential(t *testing.T) {
	const key = "tg_0123456789abcdef_0123456789abcdef0123456789abcdef"
	for _, c := range []struct {
		fields string
		want   bool
	}{
		{"", false},
		{"Authorization: Bearer " + key + "\r\n", true},
		{"Authorization: bearer\t" + key + "\r\n", true},
		{"Authorization: Bearer \t " + key + "\r\n", true},
		{"Authorization: " + key + "\r\n", true},
		{"Authorization: Token " + key + "\r\n", true},
		{"Authorization: Bearer a.b.c\r\nAuthorization: Bearer " + key + "\r\n", true},
		// Anywhere in a field: after another scheme's credentials, in a
		// list, quoted, as a parameter's value, after any other byte.
		{"Authorization: Basic Zm9vOmJhcg==, Bearer " + key + "\r\n", true},
		{"Authorization: Bearer a.b.c,Bearer " + key + "\r\n", true},
		{"Authorization: Bearer \"" + key + "\"\r\n", true},
		{"Authorization: Bearer token=" + key + "\r\n", true},
		{"Authorization: Bearer token=\"" + key + "\", realm=x\r\n", true},
		{"Authorization: Bearer;" + key + "\r\n", true},
		{"Authorization: Bearer(" + key + ")\r\n", true},
		// A JWT or Basic credentials that merely contain the letters.
		{"Authorization: Bearer eyJ.tg_x.sig\r\n", false},
		{"Authorization: Basic dGdfOnBhc3M=\r\n", false},
		{"Authorization: Bearer\r\n", false},
		{"X-Other: Bearer " + key + "\r\n", false},
		// A word meant as a key where the field's credentials are, whole
		// or not.
		{"Authorization: tg_short\r\n", true},
		{"Authorization: Bearer tg_short\r\n", true},
		{"Authorization: Bearer \"tg_short\"\r\n", true},
		// Further on, a key's head only (a key cut after it is still
		// one): another scheme's parameters that start with "tg_" are its
		// own.
		{"Authorization: Basic Zm9vOmJhcg==, Bearer " + key[:apikey.HeadLen] + "\r\n", true},
		{"Authorization: Digest username=\"tg_admin\", realm=\"x\", nonce=\"n\", uri=\"/\", response=\"r\"\r\n", false},
		{"Authorization: Custom client=tg_mobile, sig=abc\r\n", false},
		{"Authorization: Basic Zm9vOmJhcg==, Bearer tg_short\r\n", false},
	} {
		var h fasthttp.RequestHeader
		if err := h.Read(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: x\r\n" + c.fields + "\r\n"))); err != nil {
			t.Fatalf("%q: %v", c.fields, err)
		}
		// publicDrops' check of a key (without coreapi's tokens).
		ours := func(cred []byte, lead bool) bool { return apikey.HasHead(cred) || lead && apikey.HasPrefix(cred) }
		if got := AnyCredential(&h, ours); got != c.want {
			t.Errorf("%q: %v, want %v", c.fields, got, c.want)
		}
	}
}

func TestBearer(t *testing.T) {
	tests := []struct {
		name, headers string
		want          string
		err           error
	}{
		{"ok", "Authorization: Bearer abc.def-ghi_~+/==\r\n", "abc.def-ghi_~+/==", nil},
		{"lower scheme", "Authorization: bearer abc\r\n", "abc", nil},
		{"upper scheme", "Authorization: BEARER abc\r\n", "abc", nil},
		{"missing", "", "", ErrNoToken},
		{"two headers", "Authorization: Bearer abc\r\nAuthorization: Bearer abc\r\n", "", ErrMultiple},
		{"basic", "Authorization: Basic abc\r\n", "", ErrScheme},
		{"no space", "Authorization: Bearerabc\r\n", "", ErrScheme},
		{"empty token", "Authorization: Bearer \r\n", "", ErrMalform},
		{"two spaces", "Authorization: Bearer  abc\r\n", "", ErrMalform},
		{"comma", "Authorization: Bearer a,b\r\n", "", ErrMalform},
		{"padding inside", "Authorization: Bearer a=b\r\n", "", ErrMalform},
		{"only padding", "Authorization: Bearer ==\r\n", "", ErrMalform},
		{"too large", "Authorization: Bearer " + strings.Repeat("a", 65) + "\r\n", "", ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := parse(t, "GET / HTTP/1.1\r\nHost: a\r\n"+tt.headers+"\r\n")
			got, err := Bearer(&req.Header, 64)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Bearer() error = %v, want %v", err, tt.err)
			}
			if string(got) != tt.want {
				t.Fatalf("Bearer() = %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzSanitize: whatever headers a client sends, no identity header, no
// hop-by-hop header and (untrusted) no forwarding header survives, and
// other headers not named in Connection are kept.
func FuzzSanitize(f *testing.F) {
	f.Add("X-Auth-User-Id", "evil", "X-Other", "")
	f.Add("x_auth_user_id", "evil", "X-Other", "x-other")
	f.Add("X-Forwarded-For", "1.1.1.1", "Te", "close")
	f.Add("Accept", "x", "X-AUTH-", "keep-alive, accept")
	f.Add("Remote-User", "admin", "X-Original-URI", "")
	f.Add("X-SSL-Client-DN", "CN=admin", "HTTP_X_AUTH_USER_ID", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, conn string) {
		raw := "GET / HTTP/1.1\r\nHost: a\r\n" + k1 + ": " + v1 + "\r\n" + k2 + ": v\r\n"
		if conn != "" {
			raw += "Connection: " + conn + "\r\n"
		}
		raw += "\r\n"
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return // not a request a server would accept
		}
		before := names(&req.Header)
		Sanitize(&req.Header, false)
		after := names(&req.Header)
		for k := range after {
			kb := []byte(k)
			if identity.IsIdentityHeader(k) || isHopByHop(kb) || IsForwarded(kb) {
				t.Fatalf("header %q survived (raw %q)", k, raw)
			}
		}
		// A field removed must be one Scan, the separate fast pass, also
		// finds to remove when it comes alone (or one Connection names):
		// the families removed from untrusted peers are many, and each is
		// known to both.
		named := strings.ToLower(conn)
		for k := range before {
			if _, ok := after[k]; ok || strings.Contains(named, k) {
				continue
			}
			alone, err := parseRaw("GET / HTTP/1.1\r\nHost: a\r\n" + k + ": v\r\n\r\n")
			if err != nil {
				continue // a name that needs its value (Content-Length...)
			}
			if seen := Scan(&alone.Header); !seen.NeedsSanitize(false) {
				t.Fatalf("header %q removed, which Scan finds nothing to remove in when alone (raw %q)", k, raw)
			}
		}
	})
}

// parseRaw reads raw as a request, as the listener would.
func parseRaw(raw string) (*fasthttp.Request, error) {
	var req fasthttp.Request
	if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		return nil, err
	}
	return &req, nil
}

func FuzzParseBearer(f *testing.F) {
	f.Add("Bearer abc")
	f.Add("bearer a.b.c")
	f.Add("Basic x")
	f.Add("Bearer  a=")
	f.Fuzz(func(t *testing.T, v string) {
		tok, err := ParseBearer([]byte(v), 4096)
		if err != nil {
			if tok != nil {
				t.Fatalf("ParseBearer(%q) returned %q with error %v", v, tok, err)
			}
			return
		}
		if len(tok) == 0 || len(tok) > 4096 || !strings.EqualFold(v[:7], "bearer ") || v[7:] != string(tok) {
			t.Fatalf("ParseBearer(%q) = %q", v, tok)
		}
		if strings.ContainsAny(string(tok), " ,;\"\\\r\n\t") {
			t.Fatalf("ParseBearer(%q) = %q: bad character accepted", v, tok)
		}
	})
}

func BenchmarkSanitize(b *testing.B) {
	req := parse(b, "GET /api/v1/users/me HTTP/1.1\r\nHost: example.com\r\nAuthorization: Bearer abc\r\nAccept: */*\r\nUser-Agent: x\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		Sanitize(&req.Header, false)
	}
}

// Trailer fields live beside the headers in fasthttp: Sanitize's pass over
// the headers does not see them, yet Peek finds them. HasTrailers is what
// makes the proxy refuse such requests (announced or not).
func TestTrailers(t *testing.T) {
	tests := []struct {
		name, raw string
		want      bool
	}{
		{"announced and sent", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Auth-Roles\r\n\r\n1\r\na\r\n0\r\nX-Auth-Roles: owner\r\n\r\n", true},
		{"sent unannounced", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Auth-User-Id: evil\r\n\r\n", true},
		{"announced only", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Other\r\n\r\n1\r\na\r\n0\r\n\r\n", true},
		{"chunked, no trailers", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", false},
		{"plain", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\na", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := parse(t, tt.raw)
			if got := HasTrailers(&req.Header); got != tt.want {
				t.Fatalf("HasTrailers = %v, want %v", got, tt.want)
			}
			// The proxy asks HasTrailers only when Scan saw a field
			// Sanitize removes.
			if seen := Scan(&req.Header); tt.want && seen.Hops == 0 {
				t.Fatalf("trailers, yet Scan saw no hop-by-hop field")
			}
		})
	}
}

// TestTransferNotChunked: fasthttp keeps no trace of "Transfer-Encoding:
// identity" among the parsed fields (the body read by its Content-Length,
// or none); TransferNotChunked finds it in the header as read, in any case
// of the name and value, and only it: a chunked body, other fields naming
// an encoding and the '_' spelling (a plain field, which Sanitize removes)
// are not it.
func TestTransferNotChunked(t *testing.T) {
	for _, tt := range []struct {
		name, fields string
		want         bool
	}{
		{"identity", "Transfer-Encoding: identity\r\n", true},
		{"identity, length", "Content-Length: 1\r\nTransfer-Encoding: identity\r\n", true},
		{"cased", "tRANSFER-eNCODING: IDENTITY\r\n", true},
		{"last field", "Accept: */*\r\nTransfer-Encoding: identity\r\n", true},
		{"chunked", "Transfer-Encoding: chunked\r\n", false},
		{"length", "Content-Length: 1\r\n", false},
		{"none", "", false},
		{"other encodings", "Accept-Encoding: gzip\r\nContent-Encoding: gzip\r\nTE: trailers\r\nTrailer: x\r\nContent-Length: 1\r\n", false},
		{"underscore", "Transfer_Encoding: identity\r\n", false},
		{"longer name", "Transfer-Encodings: identity\r\n", false},
		// Lines fasthttp merges, overwrites, drops or adds a field for.
		{"identity, cookies", "Cookie: a=b\r\nCookie: c=d\r\nTransfer-Encoding: identity\r\n", true},
		{"identity, client's close", "Connection: close\r\nTransfer-Encoding: identity\r\n", true},
		{"identity, folded", "X-A: a\r\n b\r\nTransfer-Encoding: identity\r\n", true},
		{"cookies", "Cookie: a=b\r\nCookie: c=d\r\n", false},
		{"client's close", "Connection: close\r\n", false},
		{"two agents", "User-Agent: a\r\nUser-Agent: b\r\n", false},
		{"GET, identity", "Transfer-Encoding: identity\r\n", true},
		{"GET, identity, length", "Content-Length: 1\r\nTransfer-Encoding: identity\r\n", true},
		{"GET", "Accept: */*\r\n", false},
		{"GET, length", "Content-Length: 1\r\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if strings.Contains(tt.fields, "Length: 1") {
				body = "a"
			} else if strings.Contains(tt.fields, "chunked") {
				body = "1\r\na\r\n0\r\n\r\n"
			}
			method := "POST"
			if strings.HasPrefix(tt.name, "GET") {
				method = "GET"
			}
			req := parse(t, method+" /x HTTP/1.1\r\nHost: h\r\n"+tt.fields+"\r\n"+body)
			// As the server asks (Scan's count of the fields), and with
			// no count, which looks at every line.
			fields := Scan(&req.Header).Fields
			plain := LinePerField(&req.Header, fields, LineEnds(&req.Header))
			if got := TransferNotChunked(&req.Header, plain); got != tt.want {
				t.Fatalf("TransferNotChunked(LinePerField(%d fields): %v) = %v, want %v", fields, plain, got, tt.want)
			}
			if got := TransferNotChunked(&req.Header, LinePerField(&req.Header, -1, LineEnds(&req.Header))); got != tt.want {
				t.Fatalf("TransferNotChunked(LinePerField(-1)) = %v, want %v", got, tt.want)
			}
		})
	}
}

// BenchmarkTransferNotChunked: the look every request's header (but a
// chunked one's) gets, for a browser's usual fields.
func BenchmarkTransferNotChunked(b *testing.B) {
	req := parse(b, "GET /notes/7?x=1 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"+
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n"+
		"Accept-Encoding: gzip, deflate, br, zstd\r\nAuthorization: Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln\r\n"+
		"Referer: https://app.example.com/notes\r\nCookie: a=b; c=d\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n"+
		"Sec-Fetch-Site: same-origin\r\nPriority: u=0, i\r\nConnection: keep-alive\r\n\r\n")
	fields := Scan(&req.Header).Fields
	b.ReportAllocs()
	for b.Loop() {
		plain := LinePerField(&req.Header, fields, LineEnds(&req.Header))
		if Folded(&req.Header, plain) || TransferNotChunked(&req.Header, plain) {
			b.Fatal("found")
		}
	}
}

// TestFolded: a field line folded onto the next (a line that starts with a
// space or a tab, after CRLF or a bare LF) is found in the header as read,
// whatever field it continues, and only it; the lines fasthttp merges,
// overwrites or adds a field for are no folded line. With Scan's count of
// the fields, and with none, which looks at every line.
func TestFolded(t *testing.T) {
	for _, tt := range []struct {
		name, fields string
		want         bool
	}{
		{"Transfer-Encoding, space", "Transfer-Encoding:\r\n chunked\r\n", true},
		{"Transfer-Encoding, tab", "Transfer-Encoding:\r\n\tchunked\r\n", true},
		{"value continued", "X-A: a\r\n b\r\nContent-Length: 1\r\n", true},
		{"after a bare LF", "X-A: a\n b\nContent-Length: 1\r\n", true},
		{"a later field", "X-A: a\r\nX-B: b\r\n  c\r\nContent-Length: 1\r\n", true},
		{"GET, continued", "X-A: a\r\n\tb\r\n", true},
		{"none", "Content-Length: 1\r\n", false},
		{"space inside values", "X-A: a b\r\nX-B:  c\t d\r\nContent-Length: 1\r\n", false},
		{"cookies", "Cookie: a=b\r\nCookie: c=d\r\nContent-Length: 1\r\n", false},
		{"client's close", "Connection: close\r\n", false},
		{"two agents", "User-Agent: a\r\nUser-Agent: b\r\n", false},
		{"bare LF ends", "X-A: a\nContent-Length: 1\r\n", false},
		{"GET", "Accept: */*\r\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if strings.Contains(tt.fields, "Length: 1") {
				body = "a"
			} else if strings.Contains(tt.fields, "chunked") {
				body = "1\r\na\r\n0\r\n\r\n"
			}
			method := "POST"
			if strings.HasPrefix(tt.name, "GET") {
				method = "GET"
			}
			req := parse(t, method+" /x HTTP/1.1\r\nHost: h\r\n"+tt.fields+"\r\n"+body)
			fields := Scan(&req.Header).Fields
			if got := Folded(&req.Header, LinePerField(&req.Header, fields, LineEnds(&req.Header))); got != tt.want {
				t.Fatalf("Folded(LinePerField(%d fields)) = %v, want %v", fields, got, tt.want)
			}
			if got := Folded(&req.Header, LinePerField(&req.Header, -1, LineEnds(&req.Header))); got != tt.want {
				t.Fatalf("Folded(LinePerField(-1)) = %v, want %v", got, tt.want)
			}
		})
	}
}

// BareLF finds a field line ended by a LF alone wherever it is (the last
// field's line, the empty line, a folded one), and none in a header of
// CRLF lines, whatever its values hold; a byte-by-byte look at each line
// end answers the same.
func TestBareLF(t *testing.T) {
	for _, tt := range []struct {
		name, fields string
		want         bool
	}{
		{"none", "X-A: a\r\nContent-Length: 1\r\n", false},
		{"no fields but Host", "", false},
		{"tabs and spaces in values", "X-A: a\tb  c\r\nContent-Length: 1\r\n", false},
		{"before Content-Length", "X-A: a\nContent-Length: 1\r\n", true},
		{"ending Content-Length", "Content-Length: 1\nX-A: a\r\n", true},
		{"ending Transfer-Encoding", "Transfer-Encoding: chunked\nX-A: a\r\n", true},
		{"folded after a bare LF", "X-A: a\n b\r\nContent-Length: 1\r\n", true},
		{"two lines", "X-A: a\nX-B: b\nContent-Length: 1\r\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if strings.Contains(tt.fields, "Length: 1") {
				body = "a"
			} else if strings.Contains(tt.fields, "chunked") {
				body = "1\r\na\r\n0\r\n\r\n"
			}
			req := parse(t, "POST /x HTTP/1.1\r\nHost: h\r\n"+tt.fields+"\r\n"+body)
			raw := req.Header.RawHeaders()
			slow := false
			for i, c := range raw {
				slow = slow || c == '\n' && (i == 0 || raw[i-1] != '\r')
			}
			if got := BareLF(&req.Header, LineEnds(&req.Header)); got != tt.want || slow != tt.want {
				t.Fatalf("BareLF(%q) = %v (line by line: %v), want %v", raw, got, slow, tt.want)
			}
		})
	}
	// BareLF counts on fasthttp refusing a CR anywhere but before a LF:
	// one elsewhere could stand for a bare LF's missing CR in the count.
	for _, fields := range []string{"X-A: a\rb\r\n", "X-A: a\r\r\n", "X\rA: a\r\n", "X-A\r: a\r\n", "\rX-A: a\r\n", "X-A: \ra\r\n"} {
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(strings.NewReader("GET /x HTTP/1.1\r\nHost: h\r\n" + fields + "\r\n"))); err == nil {
			t.Fatalf("fasthttp read a header with a CR not before a LF (%q): BareLF's count no longer holds", fields)
		}
	}
}

func TestUpgradeOf(t *testing.T) {
	tests := []struct {
		name string
		hdrs [][2]string
		want Upgrade
	}{
		{"none", nil, UpgradeNone},
		{"websocket", [][2]string{{"Connection", "Upgrade"}, {"Upgrade", "websocket"}}, UpgradeWebSocket},
		{"case and lists", [][2]string{{"Connection", "keep-alive, UPGRADE"}, {"Upgrade", "WebSocket"}}, UpgradeWebSocket},
		{"websocket without Connection: upgrade", [][2]string{{"Upgrade", "websocket"}}, UpgradeOther},
		{"h2c", [][2]string{{"Connection", "Upgrade, HTTP2-Settings"}, {"Upgrade", "h2c"}}, UpgradeH2C},
		{"h2c without Connection", [][2]string{{"Upgrade", "h2c"}}, UpgradeH2C},
		{"h2c among others wins", [][2]string{{"Connection", "Upgrade"}, {"Upgrade", "websocket, h2c"}}, UpgradeH2C},
		{"h2c in a second header", [][2]string{{"Connection", "Upgrade"}, {"Upgrade", "websocket"}, {"Upgrade", "h2c"}}, UpgradeH2C},
		{"versioned", [][2]string{{"Connection", "upgrade"}, {"Upgrade", "websocket/13"}}, UpgradeWebSocket},
		{"other protocol", [][2]string{{"Connection", "upgrade"}, {"Upgrade", "IRC/6.9"}}, UpgradeOther},
		{"empty Upgrade", [][2]string{{"Connection", "upgrade"}, {"Upgrade", " , "}}, UpgradeNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			for _, kv := range tc.hdrs {
				h.Add(kv[0], kv[1])
			}
			if got := UpgradeOf(&h); got != tc.want {
				t.Fatalf("UpgradeOf = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestTakeProtocolBearer(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		tok     string // "-": none
		rest    string // "": header removed
		present bool
		differ  bool
	}{
		{"absent", nil, "-", "", false, false},
		{"no bearer kept as is", []string{"chat, superchat"}, "-", "chat, superchat", true, false},
		{"bearer and app protocol", []string{"chat, bearer.abc.def"}, "abc.def", "chat", true, false},
		{"bearer alone: header removed", []string{"bearer.abc"}, "abc", "", false, false},
		{"prefix case-insensitive", []string{"Bearer.abc, chat"}, "abc", "chat", true, false},
		{"every bearer removed, first taken", []string{"bearer.one", "chat, bearer.two"}, "one", "chat", true, true},
		{"the same token twice", []string{"bearer.one, chat", "BEARER.one"}, "one", "chat", true, false},
		{"tokens compared in case", []string{"bearer.one, bearer.ONE"}, "one", "", false, true},
		{"empty token", []string{"bearer., chat"}, "", "chat", true, false},
		{"bearer without dot is a protocol", []string{"bearer, chat"}, "-", "bearer, chat", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			for _, v := range tc.in {
				h.Add("Sec-WebSocket-Protocol", v)
			}
			tok, differ := TakeProtocolBearer(&h)
			if differ != tc.differ {
				t.Fatalf("differ = %v, want %v", differ, tc.differ)
			}
			switch {
			case tc.tok == "-" && tok != nil:
				t.Fatalf("token = %q, want none", tok)
			case tc.tok != "-" && (tok == nil || string(tok) != tc.tok):
				t.Fatalf("token = %q, want %q", tok, tc.tok)
			}
			all := h.PeekAll("Sec-WebSocket-Protocol")
			if !tc.present {
				if len(all) != 0 {
					t.Fatalf("header left: %q", all)
				}
				return
			}
			var got []string
			for _, v := range all {
				got = append(got, string(v))
			}
			if strings.Join(got, ", ") != tc.rest {
				t.Fatalf("header = %q, want %q", got, tc.rest)
			}
		})
	}
}

// A Sec-WebSocket-Protocol spelled with '_' gives no token, and one that
// holds a bearer element does not reach the app (which may read '_' as
// '-'); one without is left alone, as is the real header.
func TestTakeProtocolBearerUnderscoreSpelling(t *testing.T) {
	var h fasthttp.RequestHeader
	raw := "GET /ws HTTP/1.1\r\nHost: x\r\nSec_WebSocket_Protocol: chat, bearer.stolen\r\nsec_websocket_PROTOCOL: Bearer.other\r\n" +
		"Sec_WebSocket_Protocol_: bearer.kept\r\nSec-WebSocket-Protocol: chat\r\n\r\n" // the third: another name
	if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	if tok, _ := TakeProtocolBearer(&h); tok != nil {
		t.Fatalf("token %q taken from an underscore spelling", tok)
	}
	var left []string
	for k, v := range h.All() {
		left = append(left, string(k)+": "+string(v))
	}
	sort.Strings(left)
	if got, want := strings.Join(left, "; "), "Host: x; Sec-Websocket-Protocol: chat; Sec_websocket_protocol_: bearer.kept"; got != want {
		t.Fatalf("fields left: %s, want %s", got, want)
	}
	var plain fasthttp.RequestHeader
	plain.Add("Sec_WebSocket_Protocol", "chat")
	TakeProtocolBearer(&plain)
	if v := plain.Peek("Sec_WebSocket_Protocol"); string(v) != "chat" {
		t.Fatalf("an underscore spelling without a bearer: %q, want it kept", v)
	}
}

// A Sec-WebSocket-Protocol element that is no token and holds "bearer."
// (any case) is malformed: TakeProtocolBearer takes out whole
// "bearer.<token>" elements only. Tokens, a bearer elsewhere in a token
// and elements without one are not; spelled with '_', such a field is
// removed as one with a bearer element is.
func TestProtocolBearerMalformed(t *testing.T) {
	for _, tc := range []struct {
		in  []string
		bad bool
	}{
		{nil, false},
		{[]string{"chat, bearer.abc"}, false},
		{[]string{"chat,bearer.abc", "superchat"}, false},
		{[]string{"chat superchat"}, false},
		{[]string{"x-bearer.abc"}, false},
		{[]string{"chat bearer.abc"}, true},
		{[]string{"chat\tBEARER.abc"}, true},
		{[]string{"chat;bearer.abc"}, true},
		{[]string{`"bearer.abc"`}, true},
		{[]string{"bearer.abc chat"}, true},
		{[]string{"chat", "superchat Bearer.abc"}, true},
		{[]string{"chat bearer"}, false},
	} {
		var h fasthttp.RequestHeader
		for _, v := range tc.in {
			h.Add("Sec-WebSocket-Protocol", v)
		}
		if got := ProtocolBearerMalformed(&h); got != tc.bad {
			t.Errorf("%q: ProtocolBearerMalformed = %v, want %v", tc.in, got, tc.bad)
		}
	}
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReader(strings.NewReader("GET /ws HTTP/1.1\r\nHost: x\r\nSec_WebSocket_Protocol: chat bearer.stolen\r\n\r\n"))); err != nil {
		t.Fatal(err)
	}
	TakeProtocolBearer(&h)
	for k, v := range h.All() {
		if string(k) != "Host" {
			t.Errorf("%s: %s left", k, v)
		}
	}
}

// Scan finds what the request path would look up by name, in any case,
// and only under the exact names (no '_' for '-' in X-Request-Id, unlike
// the identity-header match).
func TestScan(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want Seen
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Seen{}},
		{"GET / HTTP/1.1\r\nHost: a\r\nx-request-id: one\r\nX-Request-Id: two\r\n\r\n", Seen{RequestID: []byte("one")}},
		{"GET / HTTP/1.1\r\nHost: a\r\nX_Request_Id: under\r\n\r\n", Seen{}},
		{"GET / HTTP/1.1\r\nHost: a\r\nupgrade: websocket\r\nConnection: upgrade\r\n\r\n", Seen{Upgrade: true}},
		{"GET / HTTP/1.1\r\nHost: a\r\nsec-websocket-protocol: bearer.x\r\n\r\n", Seen{WSProtocol: true}},
		{"GET / HTTP/1.1\r\nHost: a\r\nx-api-key: tg_x\r\n\r\n", Seen{APIKey: true}},
		{"GET / HTTP/1.1\r\nHost: a\r\nX_API_KEY: tg_x\r\n\r\n", Seen{APIKey: true}},
		{"GET / HTTP/1.1\r\nHost: a\r\nX-Api-Kex: tg_x\r\n\r\n", Seen{}},
		{"GET / HTTP/1.1\r\nHost: a\r\nSEC-WEBSOCKET-PROTOCOL: chat\r\nUPGRADE: h2c\r\nX-REQUEST-ID: r\r\n\r\n", Seen{RequestID: []byte("r"), Upgrade: true, WSProtocol: true}},
		{"GET / HTTP/1.1\r\nHost: a\r\nX-Note: a b\r\n\r\n", Seen{}},
		{"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding x: chunked\r\n\r\n", Seen{SpaceInName: true}},
		{"GET / HTTP/1.1\r\nHost: a\r\nX Forwarded-For: 1.2.3.4\r\n\r\n", Seen{SpaceInName: true}},
	} {
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(strings.NewReader(tc.raw))); err != nil {
			t.Fatal(err)
		}
		got := Scan(&req.Header)
		if string(got.RequestID) != string(tc.want.RequestID) || got.Upgrade != tc.want.Upgrade ||
			got.WSProtocol != tc.want.WSProtocol || got.APIKey != tc.want.APIKey || got.SpaceInName != tc.want.SpaceInName {
			t.Errorf("%q: Scan = %+v; want %+v", tc.raw, got, tc.want)
		}
		// The same answers as the lookups it stands in front of.
		if want := req.Header.Peek("X-Request-Id"); string(want) != string(got.RequestID) {
			t.Errorf("%q: Scan's request id %q, Peek's %q", tc.raw, got.RequestID, want)
		}
		if (UpgradeOf(&req.Header) != UpgradeNone) != got.Upgrade {
			t.Errorf("%q: Scan's upgrade %v disagrees with UpgradeOf", tc.raw, got.Upgrade)
		}
		if (len(req.Header.PeekAll("Sec-WebSocket-Protocol")) > 0) != got.WSProtocol {
			t.Errorf("%q: Scan's Sec-WebSocket-Protocol %v disagrees with PeekAll", tc.raw, got.WSProtocol)
		}
		if _, n := APIKey(&req.Header); (n > 0) != got.APIKey {
			t.Errorf("%q: Scan's API key %v disagrees with APIKey (%d)", tc.raw, got.APIKey, n)
		}
	}
}

// Scan's bearer candidate is BearerCandidate's: one Authorization field,
// in any case of its name, its value aliasing the header.
func TestScanBearerCandidate(t *testing.T) {
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc.def\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nauthorization: bearer abc\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAUTHORIZATION: BEARER abc\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer one\r\nAuthorization: Bearer two\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic abc\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + strings.Repeat("a", 40) + "\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorizatio: Bearer abc\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorization_: Bearer abc\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nProxy-Authorization: Bearer abc\r\n\r\n",
	} {
		req := parse(t, raw)
		seen := Scan(&req.Header)
		want, wantOK := BearerCandidate(&req.Header, 32)
		got, ok := seen.BearerCandidate(32)
		if ok != wantOK || string(got) != string(want) {
			t.Errorf("%q: Seen.BearerCandidate = %q, %v; BearerCandidate = %q, %v", raw, got, ok, want, wantOK)
		}
		if n := len(req.Header.PeekAll("Authorization")); n != seen.Authorizations {
			t.Errorf("%q: Scan counted %d Authorization fields, PeekAll %d", raw, seen.Authorizations, n)
		}
	}
}

// Scan's Hop and Forwarded say exactly when Sanitize removes something
// (for a trusted and an untrusted peer) and when HasTrailers holds, for
// every name Sanitize removes, in several spellings, and names close to
// them that it keeps.
func TestScanAgreesWithSanitize(t *testing.T) {
	fields := []string{"Accept", "User-Agent", "Cookie", "Content-Type", "X-Custom", "Authorization",
		"Forwarded", "X-Forwarded-For", "X_Forwarded_Host", "x-forwarded-proto", "X-Forwarded", "Forwarde",
		"traceparent", "TraceState", "Trace-Parent", "X-Auth-User-Id", "x_auth_roles", "X-AUTH-", "X-Auth",
		"X-Authorization-Note", "Te", "Tee", "Trailer", "Keep-Alive", "Keep_Alive", "Proxy-Connection",
		"Proxy-Authenticate", "Proxy-Authorization", "Proxy-Thing", "Transfer_Encoding", "Upgrade",
		"Connection", "Connexion", "Kept-Alive", "Pragma", "Cache-Control", "X-Request-Id", "X-Api-Key",
		"Sec-WebSocket-Protocol", "Fowarded", "uPGRADE", "CONNECTION", "_Forwarded",
		"X-Real-IP", "x_real_ip", "X-Real-IPs", "Client-IP", "Client-IQ", "CLIENT_IP", "X-Client-IP", "X-Remote-IP",
		"X-Remote-Addr", "True-Client-IP", "CF-Connecting-IP", "Cf-Connecting-Ix", "Fastly-Client-IP", "X-Originating-IP",
		"X-Cluster-Client-IP", "Connecting-IP", "Forwarded-For", "forwarded_for", "Forwarded-Fox", "Via", "VIA", "Vias", "Vi",
		"X_Forwarded", "X-Forwarder", "X_Request_Id", "X-Request_Id", "X_Request_Ix",
		"X_Forwarded_Prefix", "x_forwarded_for", "X-Forwarded_Proto", "X_Forwarded-Host", "X_Forwarded_", "X_Forwarded_Ssl",
		"Expect", "expect", "EXPECT", "Expects", "Expec", "Exp-ct", "Etag", "Baggage", "baggage", "BAGGAGE", "Baggages", "Bagage",
		"X-Original-Forwarded-For", "x_original_forwarded_for", "X-Original-Forwarded-Fox", "X-Appengine-User-Ip",
		"Fly-Client-IP", "fly_client_ip", "Fly-Client-IQ", "Do-Connecting-Ip", "DO_CONNECTING_IP", "Do-Connecting-Iq", "Dnt",
		"Cf-Pseudo-IPv4", "cf_pseudo_ipv4", "Cf-Pseudo-IPv6", "X-Azure-ClientIP", "X-Azure-SocketIP", "X-Azure-FDID",
		"X-Scheme", "x_scheme", "X-Schema", "X-Url-Scheme", "X_URL_SCHEME", "X-Url-Schema", "Front-End-Https", "front_end_https", "Front-End-Http",
		"X-Host", "x_host", "X-Hosts", "X-Hos", "X-Original-Host", "X_ORIGINAL_HOST", "X-Original-Hosts", "X-Original-Hust",
		"X-HTTP-Host-Override", "x_http_host_override", "X-HTTP-Host-Overrides", "X-Forwarded-Server",
		"Proxy-Client-IP", "proxy_client_ip", "Proxy-Client-IQ", "WL-Proxy-Client-IP", "Wl_Proxy_Client_Ip", "WL-Proxy-Client-IQ",
		"X-ProxyUser-Ip", "x_proxyuser_ip", "X-ProxyUser-Iq", "HTTP_X_FORWARDED_FOR", "Http-Client-Ip", "HTTP_CLIENT_IQ", "Http-",
		"HTTP_", "HTTP_X_FORWARDED_", "HTTP2-Settings", "Http-X-Forwarded-Host", "Http", "Hosts", "HTTP_HOST",
		"X-ARR-SSL", "x_arr_ssl", "X-Arr-Sso", "CloudFront-Forwarded-Proto", "cloudfront_forwarded_proto", "CloudFront-Forwarded-Prot0",
		"CloudFront-Viewer-Country", "CF-Visitor", "cf_visitor", "Cf-Visitors", "CF-IPCountry", "X-AppService-Proto", "x_appservice_proto",
		"X-AppService-Prot0", "X-Original-URI", "x_original_uri", "X-Original-URIs", "X-Forwarded-Uri", "X_Forwarded_Uri",
		"X-Forwarded-Urn", "X-Forwarded-Path", "X-Forwarded-Paths", "X-Original-Path", "x_original_path", "X-Original-Patch",
		"X-Envoy-Original-Path", "x_envoy_original_path", "X-Envoy-Original-Paths",
		"X-Original-Proto", "x_original_proto", "X-Original-Protocol", "X-Original-For", "X_ORIGINAL_FOR", "X-Original-Fox",
		"Fastly-SSL", "fastly_ssl", "Fastly-SSO", "Fastly-FF", "X-SSL", "x_ssl", "X-SSO", "X-SSL-Cert", "HTTP_X_SSL", "HTTP_FASTLY_SSL",
		"X-Original-Prefix", "x_original_prefix", "X-Original-Prefixes", "X-Original-Prefi", "HTTP_X_ORIGINAL_PREFIX",
		"HTTP_REMOTE_USER", "Http-Remote-User", "HTTP_REMOTE_USERS", "HTTP_X_AUTH_USER_ID", "HTTP_X_AUTH_", "HTTP_X_AUTH",
		"HTTP_X_CONSUMER_ID", "HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_ORIGINAL_URL", "HTTP_X_REQUEST_ID", "HTTP-X-Request-Id",
		"HTTP_X_REQUEST_IX", "HTTP_EXPECT", "HTTP_CONNECTION", "HTTP_TE", "HTTP_HTTP_X_AUTH_ROLES", "HTTP_HTTP_"}
	fields = append(fields, otherAuthIdentity...)
	fields = append(fields, otherAuthKept...)
	fields = append(fields, clientCertFields...)
	fields = append(fields, clientCertKept...)
	fields = append(fields, otherTraceFields...)
	fields = append(fields, otherTraceKept...)
	for _, hop := range hopByHop {
		fields = append(fields, hop, strings.ToLower(hop), strings.ToUpper(hop), strings.ReplaceAll(hop, "-", "_"))
	}
	for _, name := range fields {
		value := "v"
		switch strings.ToLower(strings.ReplaceAll(name, "_", "-")) {
		case "transfer-encoding", "content-length":
			continue // framing: not a field a request can carry freely here
		case "connection":
			value = "keep-alive"
		case "upgrade":
			value = "foo"
		}
		raw := "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n" + name + ": " + value + "\r\n\r\n"
		for _, trust := range []bool{false, true} {
			req := parse(t, raw)
			seen := Scan(&req.Header)
			trailers := HasTrailers(&req.Header)
			before := names(&req.Header)
			Sanitize(&req.Header, trust)
			changed := len(names(&req.Header)) != len(before)
			if seen.NeedsSanitize(trust) != changed {
				t.Errorf("%q (trusted %v): Scan says Sanitize needed %v, Sanitize removed something %v", name, trust, seen.NeedsSanitize(trust), changed)
			}
			if trailers && seen.Hops == 0 {
				t.Errorf("%q: HasTrailers without Scan's Hop", name)
			}
		}
	}
}

// otherAuthIdentity are fields in which other auth layers name the user
// to the app behind them (isOtherAuthIdentity); otherAuthKept are names
// close to them that are none of theirs.
var (
	otherAuthIdentity = []string{"Remote-User", "remote_user", "Remote-Name", "Remote-Email", "REMOTE-GROUPS",
		"X-Remote-User", "X_Remote_User", "X-Remote-Group", "X-Remote-Extra-Scopes", "x_remote_extra_org", "X-WebAuth-User",
		"X-Forwarded-User", "x_forwarded_user", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Preferred-Username",
		"X-Forwarded-Access-Token", "X-Authenticated-User", "X-Authenticated-Userid", "X-authentik-username", "X-authentik-meta-app",
		"X-Ms-Client-Principal", "X-MS-CLIENT-PRINCIPAL-NAME", "X-Ms-Client-Principal-Idp", "X-MS-TOKEN-AAD-ID-TOKEN",
		"X-Goog-Authenticated-User-Email", "X-Goog-Authenticated-User-Id", "X-Goog-Iap-Jwt-Assertion",
		"X-Amzn-Oidc-Data", "X-Amzn-Oidc-Identity", "X-Amzn-Oidc-Accesstoken",
		"Cf-Access-Jwt-Assertion", "cf_access_jwt_assertion", "Cf-Access-Authenticated-User-Email",
		"X-Consumer-Id", "X-CONSUMER-ID", "x_consumer_id", "X-Consumer-Username", "X-Consumer-Custom-Id", "X-Consumer-Groups",
		"X-Anonymous-Consumer", "X-Credential-Identifier", "X-Credential-Username", "x_credential_username",
		"X-Pomerium-Claim-Email", "X-Pomerium-Jwt-Assertion", "X-Pomerium-Jwt-Assertion-For", "x_pomerium_claim_groups",
		"X-Vouch-User", "X-Vouch-Success", "X-Vouch-Idp-Claims-Email", "X-Vouch-Idp-Idtoken", "x_vouch_user",
		"OIDC_CLAIM_sub", "OIDC_CLAIM_email", "Oidc-Claim-Groups", "OIDC_access_token", "OIDC_access_token_expires",
		"OIDC_id_token", "OIDC_id_token_payload", "OIDC_userinfo_json", "OIDC_refresh_token",
		"X-Endpoint-API-UserInfo", "x_endpoint_api_userinfo", "X-Apigateway-Api-Userinfo", "X-JWT-Assertion", "x_jwt_assertion"}
	otherAuthKept = []string{"Remote-Addr", "Remote-Users", "Remote-Use", "Referer", "Range", "X-Remote-Users", "X-Remote-Extra-",
		"X-Remote-Groups", "X-WebAuth-Users", "X-Authenticated", "X-Authentik-", "X-Ms-Client-Principals", "X-Ms-Token-",
		"X-Ms-Request-Id", "X-Goog-Authenticated-User-", "X-Goog-Api-Key", "X-Goog-Iap-Jwt-Assertions", "X-Amzn-Oidc-",
		"X-Amzn-RequestId", "Cf-Access-Client-Id", "Cf-Access-Jwt-Assertio", "Cf-Ray", "Cookie", "Content-Type",
		"X-Consumer-Ids", "X-Consumer-", "X-Consumer", "X-Consumer-Group", "X-Consumer-Custom", "X-Anonymous-Consumers",
		"X-Anonymous", "X-Credential-Identifiers", "X-Credential-User", "X-Credential",
		"X-Pomerium-", "X-Pomerium", "X-Vouch-", "X-Vouch", "OIDC_", "Oidc", "OIDC_CLAIM", "X-Endpoint-Api-Userinfos",
		"X-Endpoint-Api", "X-Apigateway-Api-Key", "X-Jwt-Assertions", "X-Jwt"}
)

// TestOtherAuthIdentity: the identity fields of other auth layers are
// removed from every peer, a trusted one too, when they come alone (the
// scan must know them), and names close to them stay, from a trusted peer
// (for an untrusted one, X-Remote-Users or X-Forwarded-Users are removed
// as forwarding or client-address fields would be: not this test's).
func TestOtherAuthIdentity(t *testing.T) {
	for _, name := range otherAuthIdentity {
		if !isOtherAuthIdentity([]byte(name)) {
			t.Errorf("isOtherAuthIdentity(%q) = false", name)
		}
		for _, trust := range []bool{false, true} {
			req := parse(t, "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n"+name+": admin\r\n\r\n")
			seen := Scan(&req.Header)
			if !seen.NeedsSanitize(trust) {
				t.Errorf("%s (trusted %v): Scan says nothing to remove", name, trust)
			}
			Sanitize(&req.Header, trust)
			if req.Header.Peek(name) != nil {
				t.Errorf("%s (trusted %v): kept", name, trust)
			}
		}
	}
	for _, name := range otherAuthKept {
		if isOtherAuthIdentity([]byte(name)) {
			t.Errorf("isOtherAuthIdentity(%q) = true", name)
		}
		req := parse(t, "GET / HTTP/1.1\r\nHost: a\r\n"+name+": v\r\n\r\n")
		Sanitize(&req.Header, true)
		if req.Header.Peek(name) == nil {
			t.Errorf("%s (trusted): removed", name)
		}
	}
}

// Every hop-by-hop name is recognised in any case, whatever its length
// (isHopByHop filters by length first), and names of those lengths that
// are not hop-by-hop are not.
func TestIsHopByHopEveryName(t *testing.T) {
	for _, name := range hopByHop {
		for _, v := range []string{name, strings.ToLower(name), strings.ToUpper(name)} {
			if !isHopByHop([]byte(v)) {
				t.Errorf("%q not recognised as hop-by-hop", v)
			}
		}
	}
	for _, v := range []string{"Tx", "Trailers", "Accept", "X-Request-Id", "Authorization", "Content-Encoding"} {
		if isHopByHop([]byte(v)) {
			t.Errorf("%q taken for hop-by-hop", v)
		}
	}
}

func parseResponse(t testing.TB, raw string) *fasthttp.Response {
	t.Helper()
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("read response: %v", err)
	}
	return &resp
}

func TestSanitizeResponse(t *testing.T) {
	resp := parseResponse(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n"+
		"Connection: close, X-Hop, Content-Length, Content-Type\r\nX-Hop: 1\r\nKeep_Alive: timeout=5\r\n"+
		"Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTrailer: X-Sum\r\nSet-Cookie: a=b\r\nX-App: kept\r\n\r\nok")
	SanitizeResponse(&resp.Header)
	if resp.Header.ConnectionClose() {
		t.Error("the upstream's close survived")
	}
	got := map[string]string{}
	for k, v := range resp.Header.All() {
		got[strings.ToLower(string(k))] = string(v)
	}
	for _, gone := range []string{"connection", "x-hop", "keep_alive", "proxy-connection", "upgrade", "trailer"} {
		if v, ok := got[gone]; ok {
			t.Errorf("%s: %s survived", gone, v)
		}
	}
	for name, want := range map[string]string{"content-length": "2", "content-type": "application/json",
		"set-cookie": "a=b", "x-app": "kept"} {
		if got[name] != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
	if string(resp.Body()) != "ok" {
		t.Errorf("body %q", resp.Body())
	}
}

// Every field an answer's Connection names goes, however many names it
// lists and however long they are: past the 16th name (or 512 bytes of
// names) they reached the client.
func TestSanitizeResponseManyConnectionNames(t *testing.T) {
	long := "X-" + strings.Repeat("l", 600)
	var names, fields []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("X-Hop-%d", i))
		fields = append(fields, fmt.Sprintf("X-Hop-%d: %d\r\n", i, i))
	}
	names = append(names, long)
	fields = append(fields, long+": 1\r\n")
	resp := parseResponse(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: "+strings.Join(names, ", ")+"\r\n"+
		strings.Join(fields, "")+"X-App: kept\r\n\r\nok")
	SanitizeResponse(&resp.Header)
	for k, v := range resp.Header.All() {
		if name := strings.ToLower(string(k)); strings.HasPrefix(name, "x-hop-") || strings.HasPrefix(name, "x-ll") || name == "connection" {
			t.Errorf("%.20s: %s survived", k, v)
		}
	}
	if got := string(resp.Header.Peek("X-App")); got != "kept" {
		t.Errorf("X-App = %q, want kept", got)
	}
}

// An upstream's diagnostic fields (its trace ids in any format, W3C's
// traceresponse, Server-Timing) never reach the client, however many and
// however spelled; the fields next to them stay.
func TestSanitizeResponseDiagnostic(t *testing.T) {
	long := "uberctx-" + strings.Repeat("k", 100)
	var fields strings.Builder
	for _, name := range append([]string{"traceresponse", "Traceresponse", "Server-Timing", "server_timing", "Traceparent",
		"tracestate", "baggage", long}, otherTraceFields...) {
		fmt.Fprintf(&fields, "%s: v\r\n", name)
	}
	resp := parseResponse(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"+fields.String()+
		"Server-Timing: db;dur=53\r\nTiming-Allow-Origin: *\r\nX-App: kept\r\nServer: app\r\n\r\nok")
	SanitizeResponse(&resp.Header)
	for k, v := range resp.Header.All() {
		if IsDiagnosticAnswer(k) {
			t.Errorf("%.30s: %s survived", k, v)
		}
	}
	for name, want := range map[string]string{"X-App": "kept", "Timing-Allow-Origin": "*", "Server": "app", "Content-Length": "2"} {
		if got := string(resp.Header.Peek(name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	for _, name := range append([]string{"traceresponse", "Server-Timing", "server_timing", "TRACEPARENT"}, otherTraceFields...) {
		if !IsDiagnosticAnswer([]byte(name)) {
			t.Errorf("IsDiagnosticAnswer(%q) = false", name)
		}
	}
	for _, name := range []string{"Server", "Timing-Allow-Origin", "traceresponsx", "server-timinx", "X-Request-Id", "X-App"} {
		if IsDiagnosticAnswer([]byte(name)) {
			t.Errorf("IsDiagnosticAnswer(%q) = true", name)
		}
	}
}

// Every X-Auth-Invalidated of an answer, however spelled, is removed: it
// is coreapi's word to the proxy, and an app's answer carrying one must
// not reach a proxy or client in front as if coreapi had sent it. So is
// every other X-Auth-* field (the identity the proxy signed for the
// upstream, echoed back); a name that only starts like one passes.
func TestSanitizeResponseInvalidated(t *testing.T) {
	resp := parseResponse(t, "HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n"+
		"X-Auth-Invalidated: auth.invalidate.user.u1\r\nx-auth-invalidated: auth.invalidate.all\r\n"+
		"X-Auth-Invalidatex: echoed\r\nX_Auth_Signature: v2=x\r\nX-Authorization-Note: kept\r\nX-App: kept\r\n\r\nok")
	SanitizeResponse(&resp.Header)
	for k, v := range resp.Header.All() {
		if strings.EqualFold(string(k), invalidation.HeaderInvalidated) || identity.IsIdentityHeader(string(k)) {
			t.Errorf("%s: %s survived", k, v)
		}
	}
	for name, want := range map[string]string{"X-App": "kept", "X-Authorization-Note": "kept", "Content-Length": "2"} {
		if got := string(resp.Header.Peek(name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// The status line of an answer is the proxy's: HTTP/1.1 and the code's own
// reason phrase, whatever the upstream's version and reason phrase.
func TestSanitizeResponseStatusLine(t *testing.T) {
	for raw, want := range map[string]string{
		"HTTP/1.0 201 Made It\r\nContent-Length: 2\r\n\r\nok":          "HTTP/1.1 201 Created\r\n",
		"HTTP/1.1 404 Gone \x00\x1b[2J\r\nContent-Length: 2\r\n\r\nok": "HTTP/1.1 404 Not Found\r\n",
		"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok":                  "HTTP/1.1 200 OK\r\n",
		"HTTP/1.0 299\r\nContent-Length: 2\r\n\r\nok":                  "HTTP/1.1 299 Unknown Status Code\r\n",
	} {
		resp := parseResponse(t, raw)
		SanitizeResponse(&resp.Header)
		if got := string(resp.Header.Header()); !strings.HasPrefix(got, want) {
			t.Errorf("%q: status line %q, want %q", raw, got[:strings.IndexByte(got, '\n')+1], want)
		}
	}
}

// A clean answer costs one pass and no allocation; neither does one with
// fields to remove (some upstreams send Connection and Keep-Alive on every
// answer).
func TestSanitizeResponseDoesNotAllocate(t *testing.T) {
	for _, raw := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\nX-App: 1\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTraceresponse: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nServer-Timing: db;dur=53\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: a\r\nX_Request_Id: b\r\nx_auth_invalidated: auth.invalidate.all\r\n\r\nok",
	} {
		resp := parseResponse(t, raw)
		var clean fasthttp.Response
		if n := testing.AllocsPerRun(100, func() {
			resp.Header.CopyTo(&clean.Header)
			SanitizeResponse(&clean.Header)
		}); n != 0 {
			t.Errorf("%q: %v allocations per answer, want 0", raw, n)
		}
	}
}

// otherTraceFields are trace-context fields of propagation formats other
// than W3C's (in several spellings): IsTraceContext holds for each.
var otherTraceFields = []string{"b3", "B3", "X-B3-TraceId", "x-b3-spanid", "X_B3_ParentSpanId", "X-B3-Sampled", "X-B3-Flags",
	"uber-trace-id", "Uber_Trace_Id", "uberctx-tenant.id", "UBERCTX-user", "jaeger-debug-id", "jaeger-baggage",
	"ot-tracer-traceid", "OT-Tracer-Sampled", "ot-baggage-tenant.id", "ot_baggage_user", "X-Amzn-Trace-Id", "x_amzn_trace_id",
	"X-Cloud-Trace-Context", "grpc-trace-bin", "x-datadog-trace-id", "X-Datadog-Sampling-Priority", "x_datadog_origin",
	"x-envoy-force-trace", "X-Client-Trace-Id",
	"elastic-apm-traceparent", "Elastic-Apm-Traceparent", "newrelic", "NewRelic", "sw8", "SW8", "sw8-correlation", "sw8_x",
	"X-Instana-T", "x-instana-s", "X-INSTANA-L", "x-instana-synthetic", "x-dynatrace", "X_Dynatrace",
	"sentry-trace", "Sentry-Trace", "SENTRY_TRACE"}

// otherTraceKept are names close to them that are no trace context.
var otherTraceKept = []string{"b4", "B", "x-b3", "x-b3-", "X-B4-TraceId", "uberctx-", "uberctx", "uber-trace-ix", "Ub",
	"User-Agent", "Upgrade-Insecure-Requests", "ot-tracer-", "ot-baggage-", "ot-tracers", "Origin", "jaeger-debug-ix",
	"grpc-trace-bix", "grpc-timeout", "x-datadog-", "x-datadog", "x-amzn-trace-ix", "x-cloud-trace-contexts",
	"x-envoy-force-traces", "x-client-trace-ix", "Traceresponse",
	"elastic-apm-traceparenx", "Expect", "newrelix", "sw9", "sw8-", "Sec-WebSocket-Key", "sw8-correlatiox", "x-instana-", "x-instana",
	"x-dynatracx", "Server-Timing", "sentry-tracx", "sentry", "Sentry-Trace-Id"}

// The trace context of other propagation formats is a trusted peer's to
// give, like W3C's: an app whose tracer reads B3, Jaeger, Datadog, X-Ray,
// Elastic APM, New Relic, SkyWalking, Instana, Dynatrace or Sentry would otherwise take the client's trace id and sampling decision
// (X-B3-Flags, jaeger-debug-id, x-datadog-sampling-priority force a trace
// to be recorded), or its baggage (uberctx-*, ot-baggage-*). Each is
// removed when it comes alone (the scan must know it) and names close to
// them stay. Spelled with '_', each is removed from a trusted peer too
// (isUnderscoreVariant).
func TestOtherTraceFormatsOnlyFromTrustedPeers(t *testing.T) {
	for _, name := range otherTraceFields {
		if !IsTraceContext([]byte(name)) {
			t.Errorf("IsTraceContext(%q) = false", name)
		}
		for _, trust := range []bool{false, true} {
			want := trust && !strings.Contains(name, "_")
			if kept := keptAlone(t, name, "chosen-by-the-client", trust); kept != want {
				t.Errorf("%s (trusted %v): kept %v, want %v", name, trust, kept, want)
			}
		}
	}
	for _, name := range otherTraceKept {
		if IsTraceContext([]byte(name)) {
			t.Errorf("IsTraceContext(%q) = true", name)
		}
	}
}

// TooManyRemovals counts what Sanitize would remove: the fields removed
// from every peer always, the forwarding ones only from an untrusted
// peer, and the names Connection lists, each bounded by MaxRemoved.
func TestTooManyRemovals(t *testing.T) {
	many := func(format string, n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, format, i)
		}
		return b.String()
	}
	names := func(n int) string {
		var b strings.Builder
		b.WriteString("Connection: close")
		for i := range n - 1 {
			fmt.Fprintf(&b, ", h%d", i)
		}
		return b.String() + "\r\n"
	}
	for _, tc := range []struct {
		name             string
		fields           string
		trusted, refused bool
	}{
		{"none", "X-Note: 1\r\n", false, false},
		{"identity fields at the bound", many("X-Auth-%d: 1\r\n", MaxRemoved), false, false},
		{"identity fields past the bound", many("X-Auth-%d: 1\r\n", MaxRemoved+1), false, true},
		{"identity fields past the bound, trusted", many("x_auth_%d: 1\r\n", MaxRemoved+1), true, true},
		{"one name many times", strings.Repeat("X-Auth-User-Id: 1\r\n", MaxRemoved+1), false, true},
		{"forwarding fields past the bound", many("X-Forwarded-%d: 1\r\n", MaxRemoved+1), false, true},
		{"forwarding fields past the bound, trusted", many("X-Forwarded-%d: 1\r\n", MaxRemoved+1), true, false},
		{"both at the bound", many("X-Auth-%d: 1\r\n", MaxRemoved/2) + many("X-B3-%d: 1\r\n", MaxRemoved/2), false, false},
		{"both past the bound", many("X-Auth-%d: 1\r\n", MaxRemoved/2) + many("X-B3-%d: 1\r\n", MaxRemoved/2+1), false, true},
		{"Connection names at the bound", names(MaxRemoved), false, false},
		{"Connection names past the bound", names(MaxRemoved + 1), true, true},
		{"Connection names past the bound in two fields", names(MaxRemoved/2) + "Connection: " + many("n%d,", MaxRemoved/2) + "x\r\n", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var req fasthttp.Request
			raw := "GET / HTTP/1.1\r\nHost: a\r\n" + tc.fields + "\r\n"
			if err := req.Read(bufio.NewReaderSize(strings.NewReader(raw), 64<<10)); err != nil {
				t.Fatal(err)
			}
			seen := Scan(&req.Header)
			if got := seen.TooManyRemovals(&req.Header, tc.trusted); got != tc.refused {
				t.Fatalf("TooManyRemovals = %v, want %v (Scan %d hop-by-hop, %d forwarding)", got, tc.refused, seen.Hops, seen.Forwardeds)
			}
		})
	}
}

// TestDiagnosticFirstLetters: IsDiagnosticAnswer's first-letter table
// lets through every name its lists know, in either case: each lower-case
// name quoted in this package's source (and one longer, for the prefix
// families) gets the same answer with the table as without it.
func TestDiagnosticFirstLetters(t *testing.T) {
	src, err := os.ReadFile("headers.go")
	if err != nil {
		t.Fatal(err)
	}
	unfiltered := func(name []byte) bool {
		return equalFold(name, "traceresponse") || equalFold(name, "server-timing") || IsTraceContext(name)
	}
	known := 0
	for _, m := range regexp.MustCompile(`"([a-z0-9][a-z0-9-]*)"`).FindAllSubmatch(src, -1) {
		for _, name := range [][]byte{m[1], append(slices.Clone(m[1]), 'x'), bytes.ToUpper(m[1])} {
			want := unfiltered(name)
			if got := IsDiagnosticAnswer(name); got != want {
				t.Errorf("IsDiagnosticAnswer(%q) = %v, want %v: the first-letter table lacks %q", name, got, want, name[0])
			}
			if want {
				known++
			}
		}
	}
	if known < 20 {
		t.Fatalf("only %d diagnostic names found in headers.go: the test reads the wrong file", known)
	}
	for _, name := range []string{"Content-Type", "Content-Length", "Date", "Vary", "Cache-Control", ""} {
		if IsDiagnosticAnswer([]byte(name)) {
			t.Errorf("IsDiagnosticAnswer(%q) = true", name)
		}
	}
}

// clientCertFields are fields in which a TLS-terminating front tells an
// app about the client's certificate (IsClientCert, and Envoy's and
// Traefik's X-Forwarded-* ones); clientCertKept are names close to them
// that are none of theirs.
var (
	clientCertFields = []string{"X-SSL-Client-Verify", "X-SSL-Client-DN", "X-SSL-Client-S-DN", "X-SSL-Client-I-DN",
		"X-SSL-Client-Cert", "x_ssl_client_serial", "X-SSL-Client-CN", "X-SSL-Cert", "X-Client-Cert", "X-Client-Verify",
		"X-Client-DN", "x-client-cert-present", "X-Client-Cert-Chain-Verified", "X-ARR-ClientCert", "Ssl-Client-Cert",
		"ssl-client-verify", "SSL-Client-Subject-DN", "ssl_client_issuer_dn", "X-Forwarded-Client-Cert",
		"X-Forwarded-Tls-Client-Cert", "X-Amzn-Mtls-Clientcert", "X-Amzn-Mtls-Clientcert-Serial-Number",
		"x-amzn-mtls-clientcert-leaf", "Client-Cert", "client_cert", "Client-Cert-Chain", "cf-cert-verified",
		"Cf-Cert-Subject-Dn", "CF_CERT_PRESENTED"}
	clientCertKept = []string{"X-SSL-Client-", "X-SSL-Client", "X-SSL-Certs", "X-Client-Certs", "X-Client-Cert-",
		"X-Client-Verified", "X-Client-DNS", "X-ARR-ClientCerts", "Ssl-Client-", "SSL-Client", "Client-Certs",
		"Client-Cert-Chains", "Client-Certificate", "cf-cert-", "CF-Certs", "CF-Ray", "CF-IPCountry",
		"X-Amzn-Mtls-Clientcer", "X-Amzn-Mtls-Clientcert-", "X-Amzn-RequestId", "Sec-Fetch-Site", "Cookie", "Content-Type"}
)

// TestClientCertificateFieldsOnlyFromTrustedPeers: the fields in which a
// TLS-terminating front (HAProxy, nginx, ingress-nginx, Azure App Service,
// an AWS or Google load balancer, Cloudflare, Envoy, Traefik) tells an app
// which certificate the client presented are removed from an untrusted
// peer, alone too (the scan must know them), and passed on from a trusted
// one, as X-Forwarded-Proto is; spelled with '_', they are removed from
// every peer. Names close to them stay.
func TestClientCertificateFieldsOnlyFromTrustedPeers(t *testing.T) {
	for _, name := range clientCertFields {
		if !IsClientCert([]byte(name)) && !IsForwarded([]byte(name)) {
			t.Errorf("IsClientCert(%q) = false", name)
		}
		for _, trust := range []bool{false, true} {
			want := trust && !strings.Contains(name, "_")
			if kept := keptAlone(t, name, "CN=admin", trust); kept != want {
				t.Errorf("%s (trusted %v): kept %v, want %v", name, trust, kept, want)
			}
		}
	}
	for _, name := range clientCertKept {
		if IsClientCert([]byte(name)) {
			t.Errorf("IsClientCert(%q) = true", name)
		}
	}
}

// keptAlone reports whether the field name: value, sent alone beside a
// User-Agent, is still there once the proxy's pass has run as the
// listener runs it (Sanitize only where Scan finds something to remove)
// for a peer trusted or not.
func keptAlone(t *testing.T, name, value string, trust bool) bool {
	t.Helper()
	req := parse(t, "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n"+name+": "+value+"\r\n\r\n")
	if seen := Scan(&req.Header); seen.NeedsSanitize(trust) {
		Sanitize(&req.Header, trust)
	}
	return req.Header.Peek(name) != nil
}

// RawCookie reads every Cookie field the client sent, in any spelling of
// the name, as sent (joined by "; "), and leaves the header's name
// normalization as it found it: on for the proxy's later lookups, off when
// a caller had turned it off.
func TestRawCookieKeepsNormalizing(t *testing.T) {
	for _, tt := range []struct {
		name, fields, want string
		found              bool
	}{
		{"none", "Accept: */*\r\n", "", false},
		{"one", "Cookie: a=\"b c\"\r\n", `a="b c"`, true},
		{"spellings", "cookie: a=b\r\nCOOKIE: c=d\r\nCoOkIe: e\r\n", "a=b; c=d; e", true},
	} {
		for _, off := range []bool{false, true} {
			req := parse(t, "GET /x HTTP/1.1\r\nHost: h\r\n"+tt.fields+"\r\n")
			if off {
				req.Header.DisableNormalizing()
			}
			got, found := RawCookie([]byte("x"), &req.Header)
			if string(got) != "x"+tt.want || found != tt.found {
				t.Fatalf("%s (normalizing off: %v): %q %v, want %q %v", tt.name, off, got[1:], found, tt.want, tt.found)
			}
			// Normalizing as found: a name looked up after is re-cased (or not).
			req.Header.Set("x-after", "1")
			if got := string(req.Header.PeekCanonical([]byte("X-After"))) == "1"; got == off {
				t.Fatalf("%s: normalizing after RawCookie: %v, want %v", tt.name, got, !off)
			}
		}
	}
}
