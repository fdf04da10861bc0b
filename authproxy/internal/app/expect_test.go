package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// expectRules: uploadRules, an optional route, and a protected one that
// needs a permission the default user lacks (it has tenant:read).
const expectRules = uploadRules +
	"  - {prefix: /drafts, methods: [POST], upstream: notes, access: optional}\n" +
	"  - {prefix: /settings, methods: [POST], upstream: notes, access: protected, permissions: [tenant:write]}\n"

// expectHeaders writes a request's headers with "Expect: 100-continue"
// and a declared body of n bytes, which it does not send.
func expectHeaders(w io.Writer, target, fields string, n int) {
	fmt.Fprintf(w, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", target, fields, n)
}

// answeredWith counts the requests authproxy_request_duration_seconds
// recorded with status.
func answeredWith(t *testing.T, e *env, status int) int {
	t.Helper()
	mfs, err := e.app.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "authproxy_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == strconv.Itoa(status) {
					return int(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}

// accessLineOf is the access line of the request with id.
func accessLineOf(t *testing.T, e *env, id string) map[string]any {
	t.Helper()
	for _, line := range accessLines(t, e) {
		if line["request_id"] == id {
			return line
		}
	}
	t.Fatalf("no access line for request %s", id)
	return nil
}

// TestExpectContinueInvalidCredentials: a request that waits for "100
// Continue" with a credential that is present but refused (a token with
// a bad signature, also once remembered as refused, expired, of an
// unknown key id, malformed; an API key unknown, revoked or malformed;
// another scheme on a protected route; a bad token on an optional route
// that does not ignore it) or that lacks a permission the route needs
// (its projection cached) is answered from its headers: no 100 Continue,
// the connection closed at once without the body being waited for,
// nothing forwarded, and the same answer, access line outcome and
// metrics as the handler's for that request with its body.
func TestExpectContinueInvalidCredentials(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: expectRules, vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"}})
	tok := e.token(nil)
	claims := testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID)
	badSig := testenv.Sign(t, testenv.NewKey(t, e.key.Kid, jwa.EdDSA), claims, nil) // same kid, another key
	unknownKid := testenv.Sign(t, testenv.NewKey(t, "20260101T000000Z-0000bbbb", jwa.EdDSA), claims, nil)
	expired := e.token(func(c testenv.Claims) {
		past := time.Now().Add(-time.Hour)
		c["iat"], c["nbf"], c["exp"] = past.Add(-time.Minute).Unix(), past.Add(-time.Minute).Unix(), past.Unix()
	})
	unknownKey, _ := apikey.New()
	revokedKey, _ := apikey.New()
	e.core.SetAPIKey(revokedKey, keyProjection("tenant:read"), true)
	// The token's projection cached, as on a warm request.
	e.wantStatus(e.do("POST", "/uploads/warm", tok, nil), 200)
	bearer := func(tok string) string { return "Authorization: Bearer " + tok + "\r\n" }
	for _, tc := range []struct {
		name, target, fields string
		status               int
		code, refusal        string // refusal: the authproxy_api_key_refusals_total reason counted
	}{
		{"bad signature", "/uploads/a", bearer(badSig), 401, problem.CodeInvalidToken, ""},
		{"bad signature, remembered", "/uploads/a", bearer(badSig), 401, problem.CodeInvalidToken, ""},
		{"expired", "/uploads/a", bearer(expired), 401, problem.CodeInvalidToken, ""},
		{"unknown key id", "/uploads/a", bearer(unknownKid), 401, problem.CodeInvalidToken, ""},
		{"malformed token", "/uploads/a", bearer("not-a-jwt"), 401, problem.CodeInvalidToken, ""},
		{"unknown API key", "/uploads/a", "X-API-Key: " + unknownKey + "\r\n", 401, problem.CodeInvalidToken, "unknown"},
		{"revoked API key", "/uploads/a", bearer(revokedKey), 401, problem.CodeInvalidToken, "revoked"},
		{"malformed API key", "/uploads/a", "X-API-Key: tg_x\r\n", 401, problem.CodeInvalidToken, "malformed"},
		{"another scheme", "/uploads/a", "Authorization: Basic Y2xpZW50OnNlY3JldA==\r\n", 401, problem.CodeUnauthenticated, ""},
		{"optional route, bad signature", "/drafts/a", bearer(badSig), 401, problem.CodeInvalidToken, ""},
		{"a permission missing", "/settings/a", bearer(tok), 403, problem.CodeInsufficientScope, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			answered := answeredWith(t, e, tc.status)
			var refused float64
			if tc.refusal != "" {
				refused = e.keyRefusals(tc.refusal)
			}
			conn, br := dialProxy(t, e.addr)
			expectHeaders(conn, tc.target, tc.fields, 50_000)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer before the body: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %s, want %d without a 100 Continue", resp.StatusCode, b, tc.status)
			}
			var p problem.Problem
			if err := json.Unmarshal(b, &p); err != nil || p.Code != tc.code || p.RequestID == "" || p.RequestID != resp.Header.Get("X-Request-Id") {
				t.Fatalf("%s (X-Request-Id %q), want a %s problem with its request id", b, resp.Header.Get("X-Request-Id"), tc.code)
			}
			// Closed at once: the proxy does not wait for the body.
			if _, err := br.ReadByte(); !resp.Close || err != io.EOF {
				t.Fatalf("after the answer: close %v, read %v; want the connection closed without the body", resp.Close, err)
			}
			e.wantNothingForwarded()
			if got := answeredWith(t, e, tc.status); got != answered+1 {
				t.Fatalf("%d answers counted %d -> %d, want one more", tc.status, answered, got)
			}
			if tc.refusal != "" && e.keyRefusals(tc.refusal) != refused+1 {
				t.Fatalf("API key refusals (%s) %v -> %v, want one more", tc.refusal, refused, e.keyRefusals(tc.refusal))
			}
			// The handler's answer to the same request, its body sent.
			r := e.raw(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: 5\r\nConnection: close\r\n\r\nhello", tc.target, tc.fields))
			if r.status != resp.StatusCode || r.prob.Code != p.Code || r.prob.Detail != p.Detail ||
				r.header.Get("WWW-Authenticate") != resp.Header.Get("WWW-Authenticate") {
				t.Fatalf("from the headers: %d %+v (%q); the handler's: %d %+v (%q)", resp.StatusCode, p, resp.Header.Get("WWW-Authenticate"),
					r.status, r.prob, r.header.Get("WWW-Authenticate"))
			}
			e.wantNothingForwarded()
			hook, handler := accessLineOf(t, e, p.RequestID), accessLineOf(t, e, r.prob.RequestID)
			for _, k := range []string{"status", "route", "outcome", "principal", "user_id"} {
				if hook[k] != handler[k] {
					t.Fatalf("access line %s: %v from the headers, %v from the handler", k, hook[k], handler[k])
				}
			}
		})
	}
}

// TestExpectContinueValidCredentials: a request that waits for "100
// Continue" with a valid credential (a token, cached or not, an API key,
// under any spelling of X-API-Key) is told to continue, and its body is
// then read and forwarded once, as before; a token is verified once (a
// token not seen before by the hook, whose verification the handler finds
// cached; a refused one on the token endpoint by the handler). On an
// optional route, no bearer goes on as anonymous, and so does a refused
// bearer on the token endpoint (which ignores it) and one that
// Connection names (hygiene removes it before the handler reads it).
func TestExpectContinueValidCredentials(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: expectRules})
	tok := e.token(nil)
	e.wantStatus(e.do("POST", "/uploads/warm", tok, nil), 200)
	keySecret, _ := e.newAPIKey("tenant:read")
	// Same kid, another key; a new token each time: none remembered.
	attacker := testenv.NewKey(t, e.key.Kid, jwa.EdDSA)
	bad := func() string {
		return testenv.Sign(t, attacker, testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID), nil)
	}
	body := strings.Repeat("v", 30_000)
	for _, tc := range []struct {
		name, target, fields string
		principal            string // the identity forwarded
		core                 bool   // forwarded to coreapi, not the app
		verified             float64
	}{
		{"a cached token", "/uploads/a", "Authorization: Bearer " + tok + "\r\n", "user", false, 0},
		// Verified by the hook, found in the cache by the handler.
		{"a token not seen before", "/uploads/a", "Authorization: Bearer " + e.token(nil) + "\r\n", "user", false, 1},
		{"an API key", "/uploads/a", "X-API-Key: " + keySecret + "\r\n", "api_key", false, 0},
		{"an API key spelled X_Api_Key", "/uploads/a", "X_Api_Key: " + keySecret + "\r\n", "api_key", false, 0},
		{"an API key as a bearer", "/uploads/a", "Authorization: Bearer " + keySecret + "\r\n", "api_key", false, 0},
		{"optional route, no bearer", "/drafts/a", "", "anonymous", false, 0},
		{"optional route, a bad bearer named by Connection", "/drafts/a", "Connection: keep-alive, Authorization\r\nAuthorization: Bearer " + bad() + "\r\n", "anonymous", false, 0},
		// Verified by the handler alone.
		{"token endpoint, a bad bearer", "/api/v1/auth/token", "Authorization: Bearer " + bad() + "\r\n", "anonymous", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			fields := tc.fields
			verified := e.verifications()
			conn, br := dialProxy(t, e.addr)
			expectHeaders(conn, tc.target, fields, len(body))
			readAnswers(t, br, []string{"POST"}, []int{100})
			if _, err := io.WriteString(conn, body); err != nil {
				t.Fatal(err)
			}
			if resp := readAnswers(t, br, []string{"POST"}, []int{200})[0]; resp.Close {
				t.Fatal("200: connection closed")
			}
			up := e.up
			if tc.core {
				up = e.core
			}
			got := up.Received()
			if len(got) != 1 || string(got[0].Body) != body || got[0].Identity.Principal != tc.principal || !got[0].Signed || got[0].VerifyErr != nil {
				t.Fatalf("upstream received %d requests (%+v), want the body once, signed for %s", len(got), got, tc.principal)
			}
			if n := e.verifications() - verified; n != tc.verified {
				t.Fatalf("verifications: %v, want %v", n, tc.verified)
			}
		})
	}
}

// TestExpectContinueJudgedAtItsOwnTime: the hook judges a request at its
// own time, not at the time fasthttp read for the connection's previous
// request (which it reads for a request only after the hook): a token
// issued after the connection's previous request, cached, is valid.
func TestExpectContinueJudgedAtItsOwnTime(t *testing.T) {
	e := start(t, envOpt{rules: expectRules, realClock: true, vars: map[string]string{"TOKEN_LEEWAY": "0s"}})
	conn, br := dialProxy(t, e.addr)
	fmt.Fprint(conn, "POST /forms/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	readAnswers(t, br, []string{"POST"}, []int{200})
	issued := time.Now().Unix() + 1 // after the request above was read
	tok := e.token(func(c testenv.Claims) { c["iat"], c["nbf"] = issued, issued })
	// Once the token is valid, it is cached.
	time.Sleep(time.Until(time.Unix(issued, 0).Add(50 * time.Millisecond)))
	e.wantStatus(e.do("POST", "/uploads/warm", tok, nil), 200)
	expectHeaders(conn, "/uploads/a", "Authorization: Bearer "+tok+"\r\n", 5)
	readAnswers(t, br, []string{"POST"}, []int{100})
	fmt.Fprint(conn, "hello")
	readAnswers(t, br, []string{"POST"}, []int{200})
}

// TestExpectContinueKeysUnavailable: a token that cannot be judged (the
// signing keys not loaded) is not refused as invalid: the request waiting
// for "100 Continue" gets the handler's answer, 503 with Retry-After, from
// its headers, and sends no body.
func TestExpectContinueKeysUnavailable(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: expectRules, noPublish: true})
	e.core.SetJWKSStatus(500)
	tok := e.token(nil)
	conn, br := dialProxy(t, e.addr)
	expectHeaders(conn, "/uploads/a", "Authorization: Bearer "+tok+"\r\n", 50_000)
	resp := readAnswers(t, br, []string{"POST"}, []int{503})[0]
	if resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Fatalf("503 (Retry-After %q, close %v), want Retry-After and the connection closed", resp.Header.Get("Retry-After"), resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the answer: %v, want the connection closed without the body", err)
	}
	r := e.raw("POST /uploads/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
	e.wantStatus(r, 503)
	e.wantNothingForwarded()
}

// TestExpectContinueTooLargeLogged: a 413 from the headers names its
// route in the access line, as the handler's 413 does.
func TestExpectContinueTooLargeLogged(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: expectRules, vars: map[string]string{"ACCESS_LOG": "true"}})
	conn, br := dialProxy(t, e.addr)
	expectHeaders(conn, "/uploads/a", "Authorization: Bearer "+e.token(nil)+"\r\n", 17<<20)
	resp := readAnswers(t, br, []string{"POST"}, []int{413})[0]
	line := accessLineOf(t, e, resp.Header.Get("X-Request-Id"))
	if line["route"] != "/uploads" || line["outcome"] != "refused" {
		t.Fatalf("access line %v, want route /uploads and outcome refused", line)
	}
}

// TestExpectContinueHygieneFirst: a request that waits for "100 Continue"
// with fields hygiene refuses (a Transfer-Encoding other than chunked, a
// Host no host has, in the field or an absolute-form target, a field
// name with a space, trailers announced, an h2c upgrade, more fields or
// more fields to remove than are served) is refused from its headers,
// before the 100 (RFC 9110 section 10.1.1), with the handler's answer
// (the same status and problem), its connection closed without the body
// being waited for, nothing forwarded: with a valid token on a protected
// route, and on a public one. It was told to continue, sent its body,
// and was refused then.
func TestExpectContinueHygieneFirst(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: expectRules, vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"}})
	tok := e.token(nil)
	e.wantStatus(e.do("POST", "/uploads/warm", tok, nil), 200) // cached: the hook would continue it
	many := strings.Repeat("X-Many: 1\r\n", 200)
	removals := ""
	for i := range 70 {
		removals += fmt.Sprintf("X-Auth-Extra-%d: 1\r\n", i)
	}
	for _, tc := range []struct {
		name, target, host, fields string
		status                     int
	}{
		{"Transfer-Encoding identity", "", "x", "Transfer-Encoding: identity\r\n", 400},
		{"Host with a comma", "", "a.example,b.example", "", 400},
		{"Host with a quote", "", `a"b`, "", 400},
		{"absolute-form target with a bad host", "http://a%22b", "x", "", 400},
		{"a space in a field name", "", "x", "X Y: 1\r\n", 400},
		{"trailers announced", "", "x", "Trailer: X-Check\r\n", 400},
		{"h2c", "", "x", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n", 400},
		{"too many fields", "", "x", many, 431},
		{"too many fields to remove", "", "x", removals, 431},
	} {
		for _, route := range []string{"/uploads/a", "/forms/a"} {
			t.Run(tc.name+" "+route, func(t *testing.T) {
				e := e.with(t)
				e.reset()
				auth := ""
				if route == "/uploads/a" {
					auth = "Authorization: Bearer " + tok + "\r\n"
				}
				head := fmt.Sprintf("POST %s%s HTTP/1.1\r\nHost: %s\r\n%s%s", tc.target, route, tc.host, auth, tc.fields)
				conn, br := dialProxy(t, e.addr)
				fmt.Fprintf(conn, "%sContent-Length: 50000\r\nExpect: 100-continue\r\n\r\n", head)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("no answer before the body: %v", err)
				}
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != tc.status {
					t.Fatalf("%d %s, want %d without a 100 Continue", resp.StatusCode, b, tc.status)
				}
				var p problem.Problem
				if err := json.Unmarshal(b, &p); err != nil || p.RequestID == "" || p.RequestID != resp.Header.Get("X-Request-Id") {
					t.Fatalf("%s, want a problem with its request id", b)
				}
				if _, err := br.ReadByte(); !resp.Close || err != io.EOF {
					t.Fatalf("after the answer: close %v, read %v; want the connection closed without the body", resp.Close, err)
				}
				e.wantNothingForwarded()
				// The handler's answer to the same request, its body sent.
				r := e.raw(head + "Content-Length: 5\r\nConnection: close\r\n\r\nhello")
				if r.status != resp.StatusCode || r.prob.Code != p.Code || r.prob.Detail != p.Detail {
					t.Fatalf("from the headers: %d %+v; the handler's: %d %+v", resp.StatusCode, p, r.status, r.prob)
				}
				e.wantNothingForwarded()
				hook, handler := accessLineOf(t, e, p.RequestID), accessLineOf(t, e, r.prob.RequestID)
				for _, k := range []string{"status", "route", "outcome"} {
					if hook[k] != handler[k] {
						t.Fatalf("access line %s: %v from the headers, %v from the handler", k, hook[k], handler[k])
					}
				}
			})
		}
	}
}

// TestExpectContinueRoutingRefused: a request waiting for "100 Continue"
// that the handler refuses whatever its body for its target or method
// gets that answer from its headers, with no 100 Continue before it: a
// path normalization refuses 400, no route 404, a method its routes do
// not take 405, a method nobody knows 501; the connection closes without
// the body, nothing is forwarded, and the answer and access line are the
// handler's for the request with its body. The hook used to send a 100
// Continue for each, the client its body, to be refused after it.
func TestExpectContinueRoutingRefused(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: expectRules, vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"}})
	tok := e.token(nil)
	// X-API-Key beside Authorization: keyHygiene refuses it before
	// routing, on every route and none.
	both := "X-API-Key: tg_0123456789abcdef_0123456789abcdef0123456789abcdef0123456\r\nAuthorization: Bearer " + tok + "\r\n"
	for _, tc := range []struct {
		name, method, target string
		status               int
		code                 string
		fields               string
	}{
		{"no route", "POST", "/nowhere/a", 404, problem.CodeNotFound, ""},
		{"no route, with a token", "POST", "/nowhere/a", 404, problem.CodeNotFound, ""},
		{"a method the route does not take", "GET", "/forms/a", 405, problem.CodeMethodNotAllowed, ""},
		{"a method the protected route does not take", "GET", "/uploads/a", 405, problem.CodeMethodNotAllowed, ""},
		{"a method nobody knows", "FROB", "/forms/a", 501, problem.CodeNotImplemented, ""},
		{"an encoded slash", "POST", "/forms/a%2Fb", 400, problem.CodeBadPath, ""},
		{"dot segments above the root", "POST", "/forms/%2e%2e/%2e%2e/x%00", 400, problem.CodeBadPath, ""},
		{"OPTIONS *", "OPTIONS", "*", 400, problem.CodeBadPath, ""},
		{"X-API-Key and Authorization, no route", "POST", "/nowhere/a", 400, problem.CodeAmbiguousCredentials, both},
		{"X-API-Key and Authorization, a public route", "POST", "/forms/a", 400, problem.CodeAmbiguousCredentials, both},
		{"X-API-Key and Authorization, an optional route", "POST", "/drafts/a", 400, problem.CodeAmbiguousCredentials, both},
		{"X-API-Key and Authorization, a method the route does not take", "GET", "/forms/a", 400, problem.CodeAmbiguousCredentials, both},
		{"two X-API-Key fields, a public route", "POST", "/forms/a",
			400, problem.CodeAmbiguousCredentials, "X-API-Key: tg_a\r\nX-API-Key: tg_b\r\n"},
		{"X-API-Key and Authorization, a Connection naming another field", "POST", "/nowhere/a",
			400, problem.CodeAmbiguousCredentials, both + "Connection: X-Foo\r\nX-Foo: 1\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			auth := tc.fields
			if strings.HasSuffix(tc.name, "with a token") || strings.Contains(tc.target, "/uploads") {
				auth = "Authorization: Bearer " + tok + "\r\n"
			}
			head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: x\r\n%s", tc.method, tc.target, auth)
			conn, br := dialProxy(t, e.addr)
			fmt.Fprintf(conn, "%sContent-Length: 50000\r\nExpect: 100-continue\r\n\r\n", head)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer before the body: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %s, want %d without a 100 Continue", resp.StatusCode, b, tc.status)
			}
			var p problem.Problem
			if err := json.Unmarshal(b, &p); err != nil || p.Code != tc.code || p.RequestID == "" {
				t.Fatalf("%s, want a problem %s with its request id", b, tc.code)
			}
			if _, err := br.ReadByte(); !resp.Close || err != io.EOF {
				t.Fatalf("after the answer: close %v, read %v; want the connection closed without the body", resp.Close, err)
			}
			e.wantNothingForwarded()
			// The handler's answer to the same request, its body sent.
			r := e.raw(head + "Content-Length: 5\r\nConnection: close\r\n\r\nhello")
			if r.status != resp.StatusCode || r.prob.Code != p.Code || r.prob.Detail != p.Detail || r.header.Get("Allow") != resp.Header.Get("Allow") {
				t.Fatalf("from the headers: %d %+v Allow %q; the handler's: %d %+v Allow %q", resp.StatusCode, p, resp.Header.Get("Allow"), r.status, r.prob, r.header.Get("Allow"))
			}
			e.wantNothingForwarded()
			hook, handler := accessLineOf(t, e, p.RequestID), accessLineOf(t, e, r.prob.RequestID)
			for _, k := range []string{"status", "route", "outcome"} {
				if hook[k] != handler[k] {
					t.Fatalf("access line %s: %v from the headers, %v from the handler", k, hook[k], handler[k])
				}
			}
		})
	}
}

// TestExpectContinuePreflight: a CORS preflight from an allowed origin
// that waits for "100 Continue" is told to continue and answered 204 by
// the handler, as it is without the expectation: a preflight carries no
// credential, and the handler answers it before routing and
// authorization. The hook judged it as any request on a protected route,
// and refused it 401 for its missing token. A preflight from another
// origin is routed like any request, by the hook as by the handler.
func TestExpectContinuePreflight(t *testing.T) {
	t.Parallel()
	e := start(t, envOpt{rules: expectRules + "  - {prefix: /private, upstream: notes, access: protected}\n",
		vars: map[string]string{"CORS_ALLOWED_ORIGINS": appOrigin}})
	preflight := func(path, origin string) string {
		return fmt.Sprintf("OPTIONS %s HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\nAccess-Control-Request-Method: POST\r\n"+
			"Access-Control-Request-Headers: authorization\r\nContent-Length: 0\r\n", path, origin)
	}
	for _, path := range []string{"/private/a", "/api/v1/users/me"} {
		t.Run(path, func(t *testing.T) {
			e := e.with(t)
			e.reset()
			conn, br := dialProxy(t, e.addr)
			fmt.Fprint(conn, preflight(path, appOrigin)+"Expect: 100-continue\r\n\r\n")
			resp := readAnswers(t, br, []string{"OPTIONS", "OPTIONS"}, []int{100, 204})[1]
			if resp.Header.Get("Access-Control-Allow-Origin") != appOrigin || !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
				t.Fatalf("preflight answered without its CORS headers: %v", resp.Header)
			}
			e.wantNothingForwarded()
			r := e.raw(preflight(path, appOrigin) + "Connection: close\r\n\r\n")
			if r.status != resp.StatusCode || r.header.Get("Access-Control-Allow-Origin") != resp.Header.Get("Access-Control-Allow-Origin") {
				t.Fatalf("with the expectation: %d %v; without: %d %v", resp.StatusCode, resp.Header, r.status, r.header)
			}
		})
	}
	t.Run("another origin", func(t *testing.T) {
		e := e.with(t)
		e.reset()
		conn, br := dialProxy(t, e.addr)
		fmt.Fprint(conn, preflight("/private/a", "https://evil.example.com")+"Expect: 100-continue\r\n\r\n")
		resp := readAnswers(t, br, []string{"OPTIONS"}, []int{401})[0]
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("a refused preflight of another origin carries CORS headers: %v", resp.Header)
		}
		r := e.raw(preflight("/private/a", "https://evil.example.com") + "Connection: close\r\n\r\n")
		e.wantStatus(r, 401)
		e.wantNothingForwarded()
	})
}
