package verify_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

var (
	curKey  = identity.Key{ID: "app-notes-2", Secret: []byte("0123456789abcdef0123456789abcdef")}
	oldKey  = identity.Key{ID: "app-notes-1", Secret: []byte("abcdef0123456789abcdef0123456789")}
	coreKey = identity.Key{ID: "core", Secret: []byte("cccccccccccccccccccccccccccccccc")}
)

func signer(t testing.TB, k identity.Key) *identity.KeySigner {
	t.Helper()
	s, err := identity.NewKeySigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var alice = identity.Identity{
	Principal: identity.PrincipalUser, UserID: "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001", TenantID: "0b4f1f8e-2222-4c2a-9a53-7a1f7e0c0002",
	SessionID: "0b4f1f8e-3333-4c2a-9a53-7a1f7e0c0003", Roles: []string{"member", "writer"}, Permissions: []string{"notes:read", "notes:write"},
	EmailVerified: true, AMR: []string{"pwd", "otp"}, AuthTime: 1796000000,
}

// echo answers 200 with the identity it was given and the body it read.
type seen struct {
	Identity *verify.Identity `json:"identity"`
	Body     string           `json:"body"`
}

func echo(w http.ResponseWriter, r *http.Request) {
	id := verify.MustFromContext(r.Context())
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(seen{Identity: id, Body: string(b)})
}

// server starts a real HTTP server: the verifier in front of a mux with an
// open route, a notes:write route and a signed-in-only route.
func server(t testing.TB, cfg verify.Config) *httptest.Server {
	t.Helper()
	v, err := verify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", echo)
	mux.Handle("/write", verify.RequirePermission("notes:write")(http.HandlerFunc(echo)))
	mux.Handle("/admin", verify.RequirePermission("notes:write", "notes:admin")(http.HandlerFunc(echo)))
	mux.Handle("/signed-in", verify.RequirePermission()(http.HandlerFunc(echo)))
	srv := httptest.NewServer(v.Middleware(mux))
	t.Cleanup(srv.Close)
	return srv
}

func newReq(t testing.TB, method, url, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("X-Request-Id", "req-42")
	r.Header.Set(identity.HeaderClientIP, "203.0.113.7")
	return r
}

func signed(t testing.TB, s *identity.KeySigner, id identity.Identity, at time.Time, method, url, body string) *http.Request {
	t.Helper()
	r := newReq(t, method, url, body)
	if err := verify.Sign(r, s, id, at); err != nil {
		t.Fatal(err)
	}
	return r
}

func do(t testing.TB, r *http.Request) (*http.Response, []byte) {
	t.Helper()
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

func wantProblem(t *testing.T, res *http.Response, body []byte, status int, code, requestID string) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("Content-Type = %q, want %q", ct, problem.ContentType)
	}
	var p problem.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	if p.Code != code || p.Status != status {
		t.Fatalf("problem = %+v, want code %s status %d", p, code, status)
	}
	if p.RequestID != requestID {
		t.Fatalf("problem request_id = %q, want %q", p.RequestID, requestID)
	}
}

func TestMiddlewareAccepts(t *testing.T) {
	srv := server(t, verify.Config{Keys: []identity.Key{curKey, oldKey}})
	now := time.Now()
	cases := []struct {
		name   string
		key    identity.Key
		method string
		path   string
		body   string
		at     time.Time
	}{
		{"GET with query", curKey, "GET", "/echo?limit=5&q=a%20b", "", now},
		{"POST with body", curKey, "POST", "/echo", `{"text":"hello"}`, now},
		{"retired key while still listed", oldKey, "POST", "/echo", `{"text":"old"}`, now},
		{"clock 29 s behind", curKey, "GET", "/echo", "", now.Add(-29 * time.Second)},
		{"clock 29 s ahead", curKey, "GET", "/echo", "", now.Add(29 * time.Second)},
		{"unicode path and body", curKey, "PUT", "/echo?x=%C3%A9t%C3%A9", "été ✓", now},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, b := do(t, signed(t, signer(t, tc.key), alice, tc.at, tc.method, srv.URL+tc.path, tc.body))
			if res.StatusCode != 200 {
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			var got seen
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if got.Body != tc.body {
				t.Fatalf("handler read body %q, want %q (restored after hashing)", got.Body, tc.body)
			}
			id := got.Identity
			want := verify.Identity{
				Principal: "user", UserID: alice.UserID, TenantID: alice.TenantID, SessionID: alice.SessionID,
				Roles: alice.Roles, Permissions: alice.Permissions, EmailVerified: true, AMR: alice.AMR,
				AuthTime: time.Unix(alice.AuthTime, 0), ClientIP: "203.0.113.7", RequestID: "req-42", KeyID: tc.key.ID,
			}
			gotJSON, _ := json.Marshal(id)
			wantJSON, _ := json.Marshal(want)
			if !bytes.Equal(gotJSON, wantJSON) {
				t.Fatalf("identity\n got %s\nwant %s", gotJSON, wantJSON)
			}
		})
	}
}

func TestMiddlewareAnonymous(t *testing.T) {
	srv := server(t, verify.Config{Keys: []identity.Key{curKey}})
	s := signer(t, curKey)
	res, b := do(t, signed(t, s, identity.Identity{}, time.Now(), "GET", srv.URL+"/echo", ""))
	if res.StatusCode != 200 {
		t.Fatalf("anonymous on an open route: %d %s", res.StatusCode, b)
	}
	var got seen
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Identity.Anonymous() || got.Identity.UserID != "" || got.Identity.EmailVerified || !got.Identity.AuthTime.IsZero() {
		t.Fatalf("anonymous identity = %+v", got.Identity)
	}
	for _, path := range []string{"/write", "/signed-in"} {
		res, b = do(t, signed(t, s, identity.Identity{}, time.Now(), "GET", srv.URL+path, ""))
		wantProblem(t, res, b, 401, problem.CodeUnauthenticated, "req-42")
	}
}

func TestRequirePermission(t *testing.T) {
	srv := server(t, verify.Config{Keys: []identity.Key{curKey}})
	s := signer(t, curKey)
	reader := alice
	reader.Permissions = []string{"notes:read"}
	res, b := do(t, signed(t, s, reader, time.Now(), "POST", srv.URL+"/write", `{"text":"x"}`))
	wantProblem(t, res, b, 403, problem.CodeInsufficientScope, "req-42")
	if !strings.Contains(string(b), "notes:write") {
		t.Fatalf("403 does not name the missing permission: %s", b)
	}
	res, b = do(t, signed(t, s, alice, time.Now(), "POST", srv.URL+"/write", `{"text":"x"}`))
	if res.StatusCode != 200 {
		t.Fatalf("writer on /write: %d %s", res.StatusCode, b)
	}
	// All listed permissions are required.
	res, b = do(t, signed(t, s, alice, time.Now(), "GET", srv.URL+"/admin", ""))
	wantProblem(t, res, b, 403, problem.CodeInsufficientScope, "req-42")
	if !strings.Contains(string(b), "notes:admin") {
		t.Fatalf("403 does not name the missing permission: %s", b)
	}
	res, b = do(t, signed(t, s, reader, time.Now(), "GET", srv.URL+"/signed-in", ""))
	if res.StatusCode != 200 {
		t.Fatalf("signed-in route: %d %s", res.StatusCode, b)
	}
}

// TestMiddlewareRejects covers every way a request can fail verification.
// Replays are allowed: most cases are the baseline request with one thing
// changed, which, if the signature did not cover it, would still be
// refused (as a replay of the baseline) and hide the gap.
func TestMiddlewareRejects(t *testing.T) {
	srv := server(t, verify.Config{Keys: []identity.Key{curKey, oldKey}, MaxBodyBytes: 64, AllowReplays: true})
	cur, old, core := signer(t, curKey), signer(t, oldKey), signer(t, coreKey)
	now := time.Now()
	ok := func() *http.Request { return signed(t, cur, alice, now, "POST", srv.URL+"/echo", `{"text":"a"}`) }
	// Sanity: the unmodified request passes, so each failure below is due
	// to its one change.
	if res, b := do(t, ok()); res.StatusCode != 200 {
		t.Fatalf("baseline: %d %s", res.StatusCode, b)
	}
	cases := []struct {
		name   string
		req    func() *http.Request
		status int
		code   string
	}{
		{"missing: no identity headers", func() *http.Request {
			return newReq(t, "GET", srv.URL+"/echo", "")
		}, 401, problem.CodeUnauthenticated},
		{"missing: identity headers without a signature", func() *http.Request {
			r := ok()
			r.Header.Del(identity.HeaderSignature)
			return r
		}, 401, problem.CodeUnauthenticated},
		{"missing: no timestamp", func() *http.Request {
			r := ok()
			r.Header.Del(identity.HeaderTimestamp)
			return r
		}, 401, problem.CodeUnauthenticated},
		{"bad: signature of random bytes", func() *http.Request {
			r := ok()
			r.Header.Set(identity.HeaderSignature, "v2="+base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
			return r
		}, 401, problem.CodeUnauthenticated},
		{"bad: not base64", func() *http.Request {
			r := ok()
			r.Header.Set(identity.HeaderSignature, "v2=!!!")
			return r
		}, 401, problem.CodeUnauthenticated},
		{"bad: v1 signature", func() *http.Request {
			r := ok()
			r.Header.Set(identity.HeaderSignature, "v1="+r.Header.Get(identity.HeaderSignature)[3:])
			return r
		}, 401, problem.CodeUnauthenticated},
		{"bad: permission added by the client", func() *http.Request {
			r := signed(t, cur, identity.Identity{UserID: "u", TenantID: "t", Permissions: []string{"notes:read"}}, now, "POST", srv.URL+"/write", `{}`)
			r.Header.Set(identity.HeaderPermissions, "notes:read,notes:write")
			return r
		}, 401, problem.CodeUnauthenticated},
		{"bad: other tenant", func() *http.Request {
			r := ok()
			r.Header.Set(identity.HeaderTenantID, "0b4f1f8e-9999-4c2a-9a53-7a1f7e0c0009")
			return r
		}, 401, problem.CodeUnauthenticated},
		{"bad: other client IP", func() *http.Request {
			r := ok()
			r.Header.Set(identity.HeaderClientIP, "10.0.0.1")
			return r
		}, 401, problem.CodeUnauthenticated},
		{"bad: malformed email-verified", func() *http.Request {
			r := ok()
			r.Header.Set(identity.HeaderEmailVerified, "yes")
			return r
		}, 401, problem.CodeUnauthenticated},
		{"unknown key id", func() *http.Request {
			return signed(t, core, alice, now, "POST", srv.URL+"/echo", `{"text":"a"}`)
		}, 401, problem.CodeUnauthenticated},
		{"listed key id, signed with another secret", func() *http.Request {
			r := signed(t, core, alice, now, "POST", srv.URL+"/echo", `{"text":"a"}`)
			r.Header.Set(identity.HeaderKeyID, curKey.ID)
			return r
		}, 401, problem.CodeUnauthenticated},
		{"no key id", func() *http.Request {
			r := ok()
			r.Header.Del(identity.HeaderKeyID)
			return r
		}, 401, problem.CodeUnauthenticated},
		{"clock 31 s behind", func() *http.Request {
			return signed(t, cur, alice, now.Add(-31*time.Second), "POST", srv.URL+"/echo", `{"text":"a"}`)
		}, 401, problem.CodeUnauthenticated},
		{"clock 31 s ahead", func() *http.Request {
			return signed(t, old, alice, now.Add(31*time.Second), "POST", srv.URL+"/echo", `{"text":"a"}`)
		}, 401, problem.CodeUnauthenticated},
		{"body changed", func() *http.Request {
			r := ok()
			r.Body = io.NopCloser(strings.NewReader(`{"text":"b"}`))
			return r
		}, 401, problem.CodeUnauthenticated},
		{"body dropped", func() *http.Request {
			r := ok()
			r.Body, r.ContentLength = http.NoBody, 0
			return r
		}, 401, problem.CodeUnauthenticated},
		{"replayed with another path", func() *http.Request {
			r := ok()
			r2 := newReq(t, "POST", srv.URL+"/write", `{"text":"a"}`)
			r2.Header = r.Header.Clone()
			return r2
		}, 401, problem.CodeUnauthenticated},
		{"replayed with another query", func() *http.Request {
			r := ok()
			r2 := newReq(t, "POST", srv.URL+"/echo?x=1", `{"text":"a"}`)
			r2.Header = r.Header.Clone()
			return r2
		}, 401, problem.CodeUnauthenticated},
		{"replayed with another method", func() *http.Request {
			r := ok()
			r2 := newReq(t, "PUT", srv.URL+"/echo", `{"text":"a"}`)
			r2.Header = r.Header.Clone()
			return r2
		}, 401, problem.CodeUnauthenticated},
		{"replayed with another request id", func() *http.Request {
			r := ok()
			r.Header.Set("X-Request-Id", "req-43")
			return r
		}, 401, problem.CodeUnauthenticated},
		{"body over the limit", func() *http.Request {
			return signed(t, cur, alice, now, "POST", srv.URL+"/echo", strings.Repeat("x", 65))
		}, 413, problem.CodeBodyTooLarge},
		{"body over the limit, chunked", func() *http.Request {
			r := signed(t, cur, alice, now, "POST", srv.URL+"/echo", strings.Repeat("x", 65))
			r.ContentLength = -1 // no Content-Length: sent chunked
			return r
		}, 413, problem.CodeBodyTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req()
			res, b := do(t, r)
			wantProblem(t, res, b, tc.status, tc.code, r.Header.Get("X-Request-Id"))
		})
	}
}

// TestMiddlewareRejectsRepeatedHeaders: a signed request with one of its
// signed headers sent twice (a replay with a line added) is refused, even
// when the first line, the one verified, is intact: what the verifier
// checked and what other code reading the request sees could differ.
// Replays are allowed, so that the refusals are the repeats'.
func TestMiddlewareRejectsRepeatedHeaders(t *testing.T) {
	srv := server(t, verify.Config{Keys: []identity.Key{curKey}, AllowReplays: true})
	s := signer(t, curKey)
	ok := func() *http.Request { return signed(t, s, alice, time.Now(), "POST", srv.URL+"/echo", `{"text":"a"}`) }
	if res, b := do(t, ok()); res.StatusCode != 200 {
		t.Fatalf("baseline: %d %s", res.StatusCode, b)
	}
	r := ok()
	r.Header.Add(identity.HeaderPermissions, "notes:admin")
	res, b := do(t, r)
	wantProblem(t, res, b, 401, problem.CodeUnauthenticated, "req-42")
	for _, name := range []string{
		identity.HeaderKeyID, identity.HeaderPrincipal, identity.HeaderUserID, identity.HeaderTenantID, identity.HeaderSessionID,
		identity.HeaderRoles, identity.HeaderPermissions, identity.HeaderEmailVerified, identity.HeaderAMR, identity.HeaderAuthTime,
		identity.HeaderClientIP, identity.HeaderRequestID, identity.HeaderTimestamp, identity.HeaderSignature,
	} {
		t.Run(name+" twice", func(t *testing.T) {
			r := ok()
			r.Header.Add(name, r.Header.Get(name)) // even the same value again
			res, b := do(t, r)
			wantProblem(t, res, b, 401, problem.CodeUnauthenticated, "req-42")
		})
	}
}

// TestMiddlewareRejectsAliasedHeaders: a signed request carrying one of
// its signed headers under a name spelled with '_' for '-'
// (X_Auth_Roles), or under its CGI name (HTTP_X_AUTH_ROLES), is refused.
// net/http files it apart from the signed header, so the verifier never
// reads it; but CGI-style readers (net/http/cgi, PHP, WSGI) file both
// spellings under one name, HTTP_X_AUTH_ROLES, and an app that hands the
// request on to one (or Java code asking for the CGI name) could take the
// added value for the signed one. authproxy removes such names from every
// peer, so a request with one was not forwarded as the proxy sent it.
// Replays are allowed, so that the refusals are the names'.
func TestMiddlewareRejectsAliasedHeaders(t *testing.T) {
	srv := server(t, verify.Config{Keys: []identity.Key{curKey}, AllowReplays: true})
	s := signer(t, curKey)
	ok := func() *http.Request { return signed(t, s, alice, time.Now(), "POST", srv.URL+"/echo", `{"text":"a"}`) }
	baseline := ok()
	baseline.Header["X_Trace_Id"] = []string{"1"} // '_' in another name: no concern of the verifier's
	if res, b := do(t, baseline); res.StatusCode != 200 {
		t.Fatalf("baseline: %d %s", res.StatusCode, b)
	}
	for _, name := range []string{
		"X_Auth_Roles", "x_auth_permissions", "X-Auth_User-Id", "X_AUTH_TENANT_ID", "X_Request_Id", "X_Auth_Signature",
		"HTTP_X_AUTH_ROLES", "http_x_auth_permissions", "Http_X_Request_Id",
	} {
		t.Run(name, func(t *testing.T) {
			r := ok()
			r.Header[name] = []string{"admin"} // as spelt: Header.Set would canonicalize it
			res, b := do(t, r)
			wantProblem(t, res, b, 401, problem.CodeUnauthenticated, "req-42")
		})
	}
}

func TestAliased(t *testing.T) {
	for name, want := range map[string]bool{
		"X_Auth_Roles": true, "x_auth_key_id": true, "X-Auth_Client-Ip": true, "X_REQUEST_ID": true,
		"HTTP_X_AUTH_USER_ID": true, "http_x_auth_timestamp": true, "Http_X-Auth-Amr": true,
		"X-Auth-Roles": false, "x-auth-roles": false, "HTTP-X-Auth-Roles": false, "X_Trace_Id": false,
		"X_Auth_Other": false, "HTTP_": false, "_": false, "": false,
	} {
		if got := verify.Aliased(name); got != want {
			t.Errorf("Aliased(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestMiddlewareBindsTargetAsSent: the signature covers the request-target
// exactly as the request line carries it. authproxy forwards the origin
// form ("/echo?x=1"); the same request sent with an absolute-form target
// ("http://other.example/echo?x=1", which net/http parses into the same
// path and query but another URL host and scheme) is another target, and
// is refused, as the Node verifier (req.url) and fiberid (OriginalURL)
// refuse it. Replays are allowed: the refusals must be the target's, not
// the replay filter's.
func TestMiddlewareBindsTargetAsSent(t *testing.T) {
	srv := server(t, verify.Config{Keys: []identity.Key{curKey}, AllowReplays: true})
	r := signed(t, signer(t, curKey), alice, time.Now(), "GET", srv.URL+"/echo?x=1", "")
	send := func(target string) string {
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		var b strings.Builder
		b.WriteString("GET " + target + " HTTP/1.1\r\nHost: app\r\nConnection: close\r\n")
		for name := range r.Header {
			b.WriteString(name + ": " + r.Header.Get(name) + "\r\n")
		}
		b.WriteString("\r\n")
		if _, err := io.WriteString(conn, b.String()); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		return res.Status
	}
	if got := send("/echo?x=1"); got != "200 OK" {
		t.Fatalf("origin form, as signed: %s", got)
	}
	for _, target := range []string{"http://other.example/echo?x=1", "https://app/echo?x=1", "http:/echo?x=1"} {
		if got := send(target); got != "401 Unauthorized" {
			t.Errorf("%s with the signature of /echo?x=1: %s, want 401", target, got)
		}
	}
	// In process, Sign signs the target the middleware binds: the request
	// line's of httptest.NewRequest (in either form), the URL's of
	// http.NewRequest (which has none).
	v, err := verify.New(verify.Config{Keys: []identity.Key{curKey}})
	if err != nil {
		t.Fatal(err)
	}
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	absolute, err := http.NewRequest("GET", "http://app/echo?x=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*http.Request{httptest.NewRequest("GET", "/echo?x=1", nil), httptest.NewRequest("GET", "http://app/echo?x=1", nil), absolute} {
		if err := verify.Sign(r, signer(t, curKey), alice, time.Now()); err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			t.Errorf("in process, target %q: %d %s", r.RequestURI, w.Code, w.Body)
		}
	}
}

// TestMiddlewareRefusesReplays: a signed request sent again unchanged
// within the window is refused (401 unauthenticated, as coreapi answers
// it, reason replay in the log) and the handler does not run again; the
// same request with another request id or timestamp (what authproxy sends
// for a client's retry) is accepted. Only verified requests are
// remembered: the captured headers with another body fail the signature,
// and such a forgery sent first does not make the genuine request a
// replay.
func TestMiddlewareRefusesReplays(t *testing.T) {
	var logs bytes.Buffer
	v, err := verify.New(verify.Config{Keys: []identity.Key{curKey},
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran++
		echo(w, r)
	}))
	serve := func(r *http.Request, body string) (*http.Response, []byte) {
		c := r.Clone(r.Context())
		c.Body = io.NopCloser(strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, c)
		return w.Result(), w.Body.Bytes()
	}
	s := signer(t, curKey)
	now := time.Now()
	const body = `{"text":"once"}`
	first := httptest.NewRequest("POST", "/notes", nil)
	first.Header.Set("X-Request-Id", "req-42")
	first.Body = io.NopCloser(strings.NewReader(body))
	if err := verify.Sign(first, s, alice, now); err != nil {
		t.Fatal(err)
	}

	res, b := serve(first, `{"text":"twice"}`) // the forgery, first
	wantProblem(t, res, b, 401, problem.CodeUnauthenticated, "req-42")
	if res, b := serve(first, body); res.StatusCode != 200 {
		t.Fatalf("first use: %d %s", res.StatusCode, b)
	}
	res, b = serve(first, body)
	wantProblem(t, res, b, 401, problem.CodeUnauthenticated, "req-42")
	for _, reason := range []string{"signature", "replay"} {
		if !strings.Contains(logs.String(), `"reason":"`+reason+`"`) {
			t.Errorf("the log does not name the %s:\n%s", reason, logs.String())
		}
	}

	// What a client's retry through the proxy carries: a new request id,
	// or a new timestamp.
	retry := first.Clone(first.Context())
	retry.Header.Set("X-Request-Id", "req-43")
	retry.Body = io.NopCloser(strings.NewReader(body))
	if err := verify.Sign(retry, s, alice, now); err != nil {
		t.Fatal(err)
	}
	later := first.Clone(first.Context())
	later.Body = io.NopCloser(strings.NewReader(body))
	if err := verify.Sign(later, s, alice, now.Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*http.Request{"new request id": retry, "new timestamp": later} {
		if res, b := serve(r, body); res.StatusCode != 200 {
			t.Fatalf("%s: %d %s", name, res.StatusCode, b)
		}
	}
	if ran != 3 {
		t.Fatalf("the handler ran %d times, want 3 (first, new request id, new timestamp)", ran)
	}
}

// TestRejectedPathClipped: the debug line of a refused request carries
// its path cut to logging.MaxPathBytes, as the services log paths: the
// sender of an unsigned request chooses the path's length.
func TestRejectedPathClipped(t *testing.T) {
	var logs bytes.Buffer
	v, err := verify.New(verify.Config{Keys: []identity.Key{curKey},
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	h := v.Middleware(http.HandlerFunc(echo))
	for _, path := range []string{"/notes", "/notes/" + strings.Repeat("a", 64<<10)} {
		logs.Reset()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("unsigned request: %d", w.Code)
		}
		var line struct{ Msg, Reason, Path string }
		if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
			t.Fatalf("the log is not one JSON line: %v\n%.200s", err, logs.String())
		}
		want := path // ASCII: cut at the limit itself
		if len(want) > logging.MaxPathBytes {
			want = want[:logging.MaxPathBytes]
		}
		if line.Msg != "identity rejected" || line.Reason != "missing" || line.Path != want {
			t.Errorf("path of %d bytes: logged %q, reason %q, a path of %d bytes; want identity rejected, missing, its first %d bytes",
				len(path), line.Msg, line.Reason, len(line.Path), len(want))
		}
	}
}

// TestCheckOnce: Check remembers nothing; CheckOnce refuses a signature
// it accepted before for as long as the signature itself is valid (the
// window, inclusive), after which the request is expired anyway. With
// AllowReplays, CheckOnce is Check.
func TestCheckOnce(t *testing.T) {
	start := time.Now()
	at := start
	clock := func() time.Time { return at }
	v, err := verify.New(verify.Config{Keys: []identity.Key{curKey}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	r := signed(t, signer(t, curKey), alice, start, "GET", "/notes", "")
	check := func(f func(identity.Headers, string, string, []byte) (verify.Identity, error)) error {
		_, err := f(r.Header.Get, "GET", "/notes", nil)
		return err
	}
	for range 2 {
		if err := check(v.Check); err != nil {
			t.Fatalf("Check: %v", err)
		}
	}
	if err := check(v.CheckOnce); err != nil {
		t.Fatalf("CheckOnce, first: %v", err)
	}
	for _, d := range []time.Duration{0, 29 * time.Second, 30 * time.Second} {
		at = start.Add(d)
		if err := check(v.CheckOnce); !errors.Is(err, identity.ErrReplayed) {
			t.Fatalf("CheckOnce again %v later: %v, want ErrReplayed", d, err)
		}
		if err := check(v.Check); err != nil {
			t.Fatalf("Check %v later, after CheckOnce: %v", d, err)
		}
	}
	at = start.Add(31 * time.Second)
	if err := check(v.CheckOnce); !errors.Is(err, identity.ErrExpired) {
		t.Fatalf("CheckOnce 31 s later: %v, want ErrExpired", err)
	}
	if got := identity.Reason(identity.ErrReplayed); got != "replay" {
		t.Fatalf("Reason(ErrReplayed) = %q, want replay", got)
	}

	at = start
	open, err := verify.New(verify.Config{Keys: []identity.Key{curKey}, Now: clock, AllowReplays: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := check(open.CheckOnce); err != nil {
			t.Fatalf("AllowReplays: %v", err)
		}
	}
	if open.ReplayEvictions() != 0 || v.ReplayEvictions() != 0 {
		t.Fatalf("evictions %d, %d; want 0", open.ReplayEvictions(), v.ReplayEvictions())
	}
}

// TestReplayMemoryFull: a memory full of live signatures still accepts
// every new request; to make room it forgets the signature closest to
// expiry (the one signed first), whose replay is then accepted, and
// ReplayEvictions counts each one forgotten early.
func TestReplayMemoryFull(t *testing.T) {
	const n = 2000
	start := time.Now()
	v, err := verify.New(verify.Config{Keys: []identity.Key{curKey}, ReplayCacheSize: 256,
		Now: func() time.Time { return start.Add(n * time.Millisecond) }})
	if err != nil {
		t.Fatal(err)
	}
	s := signer(t, curKey)
	reqs := make([]*http.Request, n)
	for i := range reqs {
		r := newReq(t, "GET", "/notes", "")
		r.Header.Set("X-Request-Id", fmt.Sprintf("req-%d", i))
		if err := verify.Sign(r, s, alice, start.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		reqs[i] = r
		if _, err := v.CheckOnce(r.Header.Get, "GET", "/notes", nil); err != nil {
			t.Fatalf("request %d refused by a full memory: %v", i, err)
		}
	}
	// 256 slots (32 buckets of 8) hold the newest of each bucket; every
	// other signature was forgotten early.
	if got := v.ReplayEvictions(); got != n-256 {
		t.Fatalf("ReplayEvictions() = %d, want %d", got, n-256)
	}
	if _, err := v.CheckOnce(reqs[n-1].Header.Get, "GET", "/notes", nil); !errors.Is(err, identity.ErrReplayed) {
		t.Fatalf("the newest request again: %v, want ErrReplayed", err)
	}
	if _, err := v.CheckOnce(reqs[0].Header.Get, "GET", "/notes", nil); err != nil {
		t.Fatalf("the oldest request again (forgotten early): %v, want accepted", err)
	}
	if got := v.ReplayEvictions(); got != n-256+1 {
		t.Fatalf("ReplayEvictions() = %d after one more, want %d", got, n-256+1)
	}
}

// TestReplayCacheSizeBounded: the replay memory is allocated whole by
// New, so a size past MaxReplayCacheSize (a mistyped one) is New's error;
// it panicked in New (makeslice: len out of range) or, smaller, asked
// for that much memory at start.
func TestReplayCacheSizeBounded(t *testing.T) {
	for _, n := range []int{verify.MaxReplayCacheSize + 1, 1 << 50, math.MaxInt} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("ReplayCacheSize %d: New panicked: %v", n, p)
				}
			}()
			if _, err := verify.New(verify.Config{Keys: []identity.Key{curKey}, ReplayCacheSize: n}); err == nil ||
				!strings.Contains(err.Error(), "ReplayCacheSize") {
				t.Errorf("ReplayCacheSize %d: %v, want an error naming it", n, err)
			}
		}()
	}
}

// TestWindowWholeMilliseconds: the window is compared in whole
// milliseconds, as the timestamp is signed. A negative one (a sign typed
// for "no skew") was taken silently for the default 30 s, one under a
// millisecond became 0 (every request a proxy signed a millisecond
// before its arrival refused as expired) and 1.9 ms became 1 ms; each is
// now New's error naming Window. 0 is the default; a whole number of
// milliseconds is taken as it is.
func TestWindowWholeMilliseconds(t *testing.T) {
	for _, w := range []time.Duration{-time.Second, -1, 1, 500 * time.Microsecond, 1900 * time.Microsecond, 30*time.Second + 1} {
		if _, err := verify.New(verify.Config{Keys: []identity.Key{curKey}, Window: w}); err == nil || !strings.Contains(err.Error(), "Window") {
			t.Errorf("Window %v: %v, want an error naming Window", w, err)
		}
	}
	for _, w := range []time.Duration{0, time.Millisecond, 5 * time.Second, 2 * time.Minute} {
		if _, err := verify.New(verify.Config{Keys: []identity.Key{curKey}, Window: w}); err != nil {
			t.Errorf("Window %v: %v", w, err)
		}
	}
}

// TestSignRefusesWhatReadsAsAnotherIdentity: Sign joins a list with
// commas, as the proxy does, so a role or permission holding a comma (or
// an empty one) signed a header the verifier reads as other elements:
// Roles ["guest,admin"] verified as the two roles guest and admin, and an
// empty element as a request every verifier refuses. A value with a line
// break cannot be sent. Sign now refuses each, before touching the
// request.
func TestSignRefusesWhatReadsAsAnotherIdentity(t *testing.T) {
	s := signer(t, curKey)
	for name, id := range map[string]identity.Identity{
		"a role with a comma":      {UserID: "u", TenantID: "t", Roles: []string{"guest,admin"}},
		"an empty permission":      {UserID: "u", TenantID: "t", Permissions: []string{"notes:read", ""}},
		"an amr with a comma":      {UserID: "u", TenantID: "t", AMR: []string{"pwd,otp"}},
		"a user id with a newline": {UserID: "u\nx", TenantID: "t"},
		"a tenant with a CR":       {UserID: "u", TenantID: "t\r"},
	} {
		r := httptest.NewRequest("GET", "/echo", nil)
		if err := verify.Sign(r, s, id, time.Now()); err == nil {
			t.Errorf("%s: signed as %q", name, r.Header)
		} else if r.Header.Get(identity.HeaderSignature) != "" {
			t.Errorf("%s: %v, but a signature was set", name, err)
		}
	}
}

// TestSignRefusesUnknownPrincipal: Sign signed a principal other than
// user, api_key, service and anonymous (a typo, "User", "admin"), which
// every verifier refuses as malformed: an app's test got a 401 it could
// not explain. Sign refuses it, before touching the request; the four
// principals, and none (anonymous or user by the user id), still sign.
func TestSignRefusesUnknownPrincipal(t *testing.T) {
	s := signer(t, curKey)
	for _, p := range []string{"User", "admin", "users", "anonymous ", "api-key"} {
		r := httptest.NewRequest("GET", "/echo", nil)
		if err := verify.Sign(r, s, identity.Identity{Principal: p, UserID: "u", TenantID: "t"}, time.Now()); err == nil {
			t.Errorf("principal %q: signed as %q", p, r.Header)
		} else if r.Header.Get(identity.HeaderSignature) != "" {
			t.Errorf("principal %q: %v, but a signature was set", p, err)
		}
	}
	for _, p := range []string{"", identity.PrincipalUser, identity.PrincipalAPIKey, identity.PrincipalService, identity.PrincipalAnonymous} {
		r := httptest.NewRequest("GET", "/echo", nil)
		if err := verify.Sign(r, s, identity.Identity{Principal: p, UserID: "u", TenantID: "t"}, time.Now()); err != nil {
			t.Errorf("principal %q: %v", p, err)
		}
	}
}

// TestReplaysConcurrent (run with -race): the same signed request sent
// by many goroutines at once is served exactly once; distinct requests
// sent meanwhile are all served.
func TestReplaysConcurrent(t *testing.T) {
	v, err := verify.New(verify.Config{Keys: []identity.Key{curKey}})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int32
	h := v.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran.Add(1) }))
	s := signer(t, curKey)
	now := time.Now()
	const workers, own = 16, 50
	same := httptest.NewRequest("POST", "/notes", strings.NewReader("x"))
	same.Header.Set("X-Request-Id", "req-same")
	if err := verify.Sign(same, s, alice, now); err != nil {
		t.Fatal(err)
	}
	mine := make([][]*http.Request, workers)
	for w := range mine {
		for i := range own {
			r := httptest.NewRequest("POST", "/notes", strings.NewReader("x"))
			r.Header.Set("X-Request-Id", fmt.Sprintf("req-%d-%d", w, i))
			if err := verify.Sign(r, s, alice, now); err != nil {
				t.Fatal(err)
			}
			mine[w] = append(mine[w], r)
		}
	}
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, r := range mine[w] {
				if i == own/2 {
					c := same.Clone(same.Context())
					c.Body = io.NopCloser(strings.NewReader("x"))
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, c)
					switch rec.Code {
					case 200:
						ok.Add(1)
					case 401:
						refused.Add(1)
					}
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code != 200 {
					t.Errorf("request %s: %d", r.Header.Get("X-Request-Id"), rec.Code)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || refused.Load() != workers-1 {
		t.Fatalf("the shared request: %d served, %d refused; want 1 and %d", ok.Load(), refused.Load(), workers-1)
	}
	if got := ran.Load(); got != workers*own+1 {
		t.Fatalf("the handler ran %d times, want %d", got, workers*own+1)
	}
}

// A key removed from the list stops working at once.
func TestRotationDelistsRetiredKey(t *testing.T) {
	before := server(t, verify.Config{Keys: []identity.Key{curKey, oldKey}})
	after := server(t, verify.Config{Keys: []identity.Key{curKey}})
	old := signer(t, oldKey)
	if res, b := do(t, signed(t, old, alice, time.Now(), "GET", before.URL+"/echo", "")); res.StatusCode != 200 {
		t.Fatalf("old key while listed: %d %s", res.StatusCode, b)
	}
	res, b := do(t, signed(t, old, alice, time.Now(), "GET", after.URL+"/echo", ""))
	wantProblem(t, res, b, 401, problem.CodeUnauthenticated, "req-42")
}

func TestKeysFromEnv(t *testing.T) {
	k := base64.StdEncoding.EncodeToString(curKey.Secret)
	env := map[string]string{verify.EnvKeys: "app-notes-2:" + k + ",app-notes-1:" + k}
	keys, err := verify.KeysFromEnv(func(n string) string { return env[n] })
	if err != nil || len(keys) != 2 || keys[0].ID != "app-notes-2" {
		t.Fatalf("keys %v, err %v", keys, err)
	}
	for name, env := range map[string]map[string]string{
		"unset":     {},
		"both":      {verify.EnvKeys: "a:" + k, verify.EnvKeysFile: "/x"},
		"short key": {verify.EnvKeys: "a:" + base64.StdEncoding.EncodeToString([]byte("short"))},
		"no id":     {verify.EnvKeys: k},
	} {
		if _, err := verify.KeysFromEnv(func(n string) string { return env[n] }); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), verify.EnvKeys) {
			t.Errorf("%s: error %q does not name the variable", name, err)
		}
	}
	if _, err := verify.New(verify.Config{}); err == nil {
		t.Error("New without keys: no error")
	}
}

// TestKeysFileOpenToOthersWarned: a key file other users may read is
// loaded with a warning naming the variable, the file and its mode, as
// authproxy and coreapi warn about theirs; through slog.Default() from
// KeysFromEnv, through the app's logger from KeysFromEnvWithLogger. A
// file only its owner and group may read loads quietly.
func TestKeysFileOpenToOthersWarned(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes say nothing of Windows ACLs")
	}
	path := filepath.Join(t.TempDir(), "identity.keys")
	if err := os.WriteFile(path, []byte("app-notes-2:"+base64.StdEncoding.EncodeToString(curKey.Secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(n string) string {
		if n == verify.EnvKeysFile {
			return path
		}
		return ""
	}
	var def bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&def, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	for _, c := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o440, false}, {0o644, true}, {0o604, true}} {
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		var own bytes.Buffer
		def.Reset()
		for name, load := range map[string]func() ([]identity.Key, error){
			"KeysFromEnv": func() ([]identity.Key, error) { return verify.KeysFromEnv(env) },
			"KeysFromEnvWithLogger": func() ([]identity.Key, error) {
				return verify.KeysFromEnvWithLogger(env, slog.New(slog.NewTextHandler(&own, nil)))
			},
		} {
			keys, err := load()
			if err != nil || len(keys) != 1 || keys[0].ID != "app-notes-2" {
				t.Fatalf("%s, mode %04o: keys %v, err %v", name, c.mode, keys, err)
			}
		}
		for name, out := range map[string]string{"slog.Default()": def.String(), "the logger": own.String()} {
			if !c.warn {
				if out != "" {
					t.Errorf("mode %04o: %s got %q, want nothing", c.mode, name, out)
				}
				continue
			}
			if !strings.Contains(out, "level=WARN") || !strings.Contains(out, verify.EnvKeysFile) ||
				!strings.Contains(out, path) || !strings.Contains(out, fmt.Sprintf("mode %04o", c.mode)) {
				t.Errorf("mode %04o: %s got %q, want a warning naming the variable, the file and the mode", c.mode, name, out)
			}
		}
	}
}

// The middleware logs identity.Reason's names; the mapping is the
// identity package's.
func TestReason(t *testing.T) {
	for err, want := range map[error]string{
		identity.ErrMissing: "missing", identity.ErrMalformed: "malformed", identity.ErrExpired: "expired",
		identity.ErrSignature: "signature", identity.ErrUnknownKey: "unknown_key", identity.ErrVersion: "version",
	} {
		if got := identity.Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}

// The middleware's cost per request: verifying a signed GET and a signed
// POST with a small JSON body, in-process (no network). As authproxy signs
// every request anew, each iteration carries its own timestamp and
// signature (signed before the timer starts, one millisecond apart, the
// verifier's clock following): one request sent again would measure the
// refusal of a replay.
func BenchmarkMiddleware(b *testing.B) {
	s := signer(b, curKey)
	for _, tc := range []struct{ name, method, body string }{{"GET", "GET", ""}, {"POST", "POST", `{"text":"hello, world"}`}} {
		b.Run(tc.name, func(b *testing.B) {
			body := []byte(tc.body)
			r := httptest.NewRequest(tc.method, "/notes?limit=5", bytes.NewReader(body))
			r.Header.Set("X-Request-Id", "req-1")
			if err := verify.Sign(r, s, alice, time.Now()); err != nil {
				b.Fatal(err)
			}
			start, ts, sig := presign(b, s, alice, r, body, b.N)
			at := start
			v, err := verify.New(verify.Config{Keys: []identity.Key{curKey}, Now: func() time.Time { return time.UnixMilli(at) }})
			if err != nil {
				b.Fatal(err)
			}
			served := 0
			h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, ok := verify.FromContext(r.Context()); !ok {
					b.Fatal("no identity")
				}
				served++
			}))
			w := httptest.NewRecorder()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				r.Header[identity.HeaderTimestamp][0], r.Header[identity.HeaderSignature][0], at = ts[i], sig[i], start+int64(i)
				r.Body = io.NopCloser(bytes.NewReader(body))
				h.ServeHTTP(w, r)
			}
			if w.Code != 200 || served != b.N {
				b.Fatalf("status %d, %d of %d served: %s", w.Code, served, b.N, w.Body)
			}
		})
	}
}

// presign signs n requests like r (a signed request: its method, target,
// request id, client IP and body, for id), the i-th at r's timestamp plus
// i milliseconds, and returns that first timestamp and each request's
// X-Auth-Timestamp and X-Auth-Signature.
func presign(b *testing.B, s *identity.KeySigner, id identity.Identity, r *http.Request, body []byte, n int) (start int64, ts, sig []string) {
	b.Helper()
	start, err := strconv.ParseInt(r.Header.Get(identity.HeaderTimestamp), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	id.Principal = r.Header.Get(identity.HeaderPrincipal)
	q := identity.Request{RequestID: r.Header.Get(identity.HeaderRequestID), ClientIP: r.Header.Get(identity.HeaderClientIP),
		Method: r.Method, PathQuery: r.RequestURI, BodySHA256: sha256.Sum256(body)}
	ts, sig = make([]string, n), make([]string, n)
	for i := range n {
		q.Timestamp = start + int64(i)
		ts[i], sig[i] = strconv.FormatInt(q.Timestamp, 10), s.Sign(&id, &q)
	}
	return start, ts, sig
}

func BenchmarkCheck(b *testing.B) {
	v, err := verify.New(verify.Config{Keys: []identity.Key{curKey}})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/notes", nil)
	if err := verify.Sign(r, signer(b, curKey), alice, time.Now()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Check(r.Header.Get, "GET", "/notes", nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDeclaredBodyNotHeldBeforeItArrives: a request that declares a large
// body and sends only its headers (a well-formed signature of nobody's
// key, on as many connections as the sender likes) holds no buffer of the
// declared size while the middleware waits for the body. It held one:
// 8 connections declaring 16 MiB took 128 MiB of heap.
func TestDeclaredBodyNotHeldBeforeItArrives(t *testing.T) {
	const conns, declared = 8, 16 << 20
	v, err := verify.New(verify.Config{Keys: []identity.Key{curKey}, MaxBodyBytes: declared})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := &waitListener{Listener: ln}
	srv := &http.Server{Handler: v.Middleware(http.HandlerFunc(echo)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(wl) }()
	t.Cleanup(func() { _ = srv.Close() })
	head := "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(declared) + "\r\n" +
		identity.HeaderKeyID + ": " + curKey.ID + "\r\n" + identity.HeaderSignature + ": v2=" + strings.Repeat("A", 43) + "\r\n" +
		identity.HeaderTimestamp + ": 1796000012345\r\nX-Request-Id: r1\r\n\r\n"
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
	}
	// Each connection's headers were read and the server waits in a read
	// for the body: the middleware sized its buffer before that read.
	deadline := time.Now().Add(5 * time.Second)
	for wl.waitingAfter(len(head)) < conns {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections waiting for their body", wl.waitingAfter(len(head)), conns)
		}
		time.Sleep(time.Millisecond)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 8<<20 {
		t.Fatalf("heap grew by %d MiB for %d connections that declared %d MiB and sent none of it", grew>>20, conns, declared>>20)
	}
}

// waitListener counts the connections whose server side has read a given
// number of bytes and waits in a read for more.
type waitListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*waitConn
}

type waitConn struct {
	net.Conn
	read    atomic.Int64
	waiting atomic.Bool
}

func (c *waitConn) Read(b []byte) (int, error) {
	c.waiting.Store(true)
	n, err := c.Conn.Read(b)
	c.waiting.Store(false)
	c.read.Add(int64(n))
	return n, err
}

func (l *waitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	wc := &waitConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, wc)
	l.mu.Unlock()
	return wc, nil
}

func (l *waitListener) waitingAfter(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := 0
	for _, c := range l.conns {
		if c.read.Load() == int64(n) && c.waiting.Load() {
			k++
		}
	}
	return k
}

// TestMaxBodyBytesUnbounded: MaxBodyBytes at its largest value
// (math.MaxInt64, "no limit of the SDK's own") reads the whole body. The
// middleware read at most MaxBodyBytes+1 bytes, which overflowed to a
// negative limit: it read none, hashed the empty body, and refused every
// signed request with a body (401) while handing the handler an empty one.
func TestMaxBodyBytesUnbounded(t *testing.T) {
	srv := server(t, verify.Config{Keys: []identity.Key{curKey}, MaxBodyBytes: math.MaxInt64})
	const body = `{"text":"hi"}`
	res, b := do(t, signed(t, signer(t, curKey), alice, time.Now(), "POST", srv.URL+"/echo", body))
	var got seen
	if res.StatusCode != 200 || json.Unmarshal(b, &got) != nil || got.Body != body {
		t.Fatalf("signed POST with MaxBodyBytes math.MaxInt64: %d %s, want 200 and the body", res.StatusCode, b)
	}
}

// TestMiddlewareRejectsSignedHeadersInTrailer: a chunked request whose
// trailer section, announced (Trailer) or sent after the last chunk, names
// a signed header (in any letter case, or under a name Aliased refuses)
// is refused, as fiberid refuses it. net/http keeps trailer fields apart,
// in r.Trailer, which the handler reads once it has read the body: a
// request announcing "Trailer: X-Auth-Roles" and sending "X-Auth-Roles:
// admin" after its body was accepted with the added role there. Replays
// are allowed, so that the refusals are the trailers'.
func TestMiddlewareRejectsSignedHeadersInTrailer(t *testing.T) {
	srv := server(t, verify.Config{Keys: []identity.Key{curKey}, AllowReplays: true})
	s := signer(t, curKey)
	const body = `{"text":"a"}`
	send := func(announce string, trailer []string) (int, string) {
		t.Helper()
		r := signed(t, s, alice, time.Now(), "POST", srv.URL+"/echo", body)
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		var b strings.Builder
		b.WriteString("POST /echo HTTP/1.1\r\nHost: app\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n")
		if announce != "" {
			b.WriteString("Trailer: " + announce + "\r\n")
		}
		for name := range r.Header {
			b.WriteString(name + ": " + r.Header.Get(name) + "\r\n")
		}
		fmt.Fprintf(&b, "\r\n%x\r\n%s\r\n0\r\n", len(body), body)
		for _, l := range trailer {
			b.WriteString(l + "\r\n")
		}
		b.WriteString("\r\n")
		if _, err := io.WriteString(conn, b.String()); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		out, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(out)
	}
	if status, b := send("X-Trace-Id", []string{"X-Trace-Id: 1"}); status != 200 {
		t.Fatalf("baseline, another name in the trailer: %d %s", status, b)
	}
	if status, b := send("", nil); status != 200 {
		t.Fatalf("baseline, no trailer: %d %s", status, b)
	}
	for _, c := range []struct {
		announce string
		trailer  []string
	}{
		{"X-Auth-Roles", []string{"X-Auth-Roles: admin"}},
		{"x-auth-permissions", []string{"x-auth-permissions: notes:admin"}},
		{"X-Trace-Id, X-Request-Id", []string{"X-Trace-Id: 1", "X-Request-Id: other"}},
		{"X-Auth-Roles", nil}, // announced only
		{"", []string{"X-Auth-Roles: admin"}},
		{"X_Auth_Roles", []string{"X_Auth_Roles: admin"}},
		{"", []string{"HTTP_X_AUTH_ROLES: admin"}},
	} {
		if status, b := send(c.announce, c.trailer); status != 401 {
			t.Errorf("Trailer %q, then %q: %d %s, want 401", c.announce, c.trailer, status, b)
		}
	}
}
