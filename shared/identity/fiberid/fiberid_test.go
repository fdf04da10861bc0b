package fiberid_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/fiberid"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

var (
	appKey   = identity.Key{ID: "app-notes", Secret: []byte("0123456789abcdef0123456789abcdef")}
	retired  = identity.Key{ID: "app-notes-old", Secret: []byte("abcdef0123456789abcdef0123456789")}
	otherKey = identity.Key{ID: "core", Secret: []byte("cccccccccccccccccccccccccccccccc")}
	bob      = identity.Identity{Principal: identity.PrincipalUser, UserID: "user-bob", TenantID: "tenant-1", SessionID: "sess-1",
		Roles: []string{"member"}, Permissions: []string{"notes:read"}, EmailVerified: true, AMR: []string{"pwd"}, AuthTime: 1796000000}
)

// newApp is an app behind New with the verifier of cfg (its keys and body
// limit set here).
func newApp(t testing.TB, kept chan<- *verify.Identity, cfg verify.Config) *fiber.App {
	t.Helper()
	cfg.Keys, cfg.MaxBodyBytes = []identity.Key{appKey, retired}, 64
	v, err := verify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(fiberid.New(v))
	handler := func(c *fiber.Ctx) error {
		id := fiberid.MustFrom(c)
		if ctxID, ok := verify.FromContext(c.UserContext()); !ok || ctxID != id {
			return c.Status(500).SendString("identity not in the user context")
		}
		if kept != nil {
			kept <- id
		}
		return c.JSON(fiber.Map{"identity": id, "body": string(c.Body())})
	}
	app.All("/echo", handler)
	app.Post("/notes", fiberid.RequirePermission("notes:write"), handler)
	return app
}

func serve(t *testing.T, kept chan<- *verify.Identity, cfg verify.Config) string {
	t.Helper()
	app := newApp(t, kept, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return "http://" + ln.Addr().String()
}

func signer(t testing.TB, k identity.Key) *identity.KeySigner {
	t.Helper()
	s, err := identity.NewKeySigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func req(t testing.TB, s *identity.KeySigner, id identity.Identity, at time.Time, method, url, body string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		r.Body, r.ContentLength = http.NoBody, 0
	}
	r.Header.Set("X-Request-Id", "rid-7")
	if s != nil {
		if err := verify.Sign(r, s, id, at); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func do(t *testing.T, r *http.Request) (int, []byte, http.Header) {
	t.Helper()
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b, res.Header
}

func TestAccepts(t *testing.T) {
	kept := make(chan *verify.Identity, 4)
	base := serve(t, kept, verify.Config{})
	for _, k := range []identity.Key{appKey, retired} {
		status, b, _ := do(t, req(t, signer(t, k), bob, time.Now(), "PUT", base+"/echo?a=1&b=%20", `{"text":"hi"}`))
		if status != 200 {
			t.Fatalf("key %s: %d %s", k.ID, status, b)
		}
		var got struct {
			Identity verify.Identity
			Body     string
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		id := got.Identity
		if got.Body != `{"text":"hi"}` || id.UserID != bob.UserID || id.TenantID != bob.TenantID || id.SessionID != bob.SessionID ||
			id.Principal != "user" || !id.EmailVerified || strings.Join(id.Roles, ",") != "member" || strings.Join(id.AMR, ",") != "pwd" ||
			!id.Has("notes:read") || id.AuthTime.Unix() != bob.AuthTime || id.ClientIP != "127.0.0.1" || id.RequestID != "rid-7" || id.KeyID != k.ID {
			t.Fatalf("key %s: handler saw %+v", k.ID, got)
		}
	}
	// The identity kept past the handler is a copy, not fasthttp's reused
	// buffers: requests with other values do not change it.
	first := <-kept
	<-kept
	other := bob
	other.UserID, other.TenantID, other.Roles = "user-zzz", "tenant-9", []string{"xxxxxx"}
	for i := range 2 {
		if status, b, _ := do(t, req(t, signer(t, appKey), other, time.Now(), "GET", base+"/echo?n="+strconv.Itoa(i), "")); status != 200 {
			t.Fatalf("%d %s", status, b)
		}
		<-kept
	}
	if first.UserID != bob.UserID || first.TenantID != bob.TenantID || first.Roles[0] != "member" || first.RequestID != "rid-7" {
		t.Fatalf("kept identity changed under the handler: %+v", first)
	}
}

// A compressed body is verified as sent (the proxy signs the bytes it
// forwards); the handler still reads it decoded.
func TestCompressedBody(t *testing.T) {
	base := serve(t, nil, verify.Config{})
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	_, _ = w.Write([]byte(`{"text":"squeezed"}`))
	_ = w.Close()
	r := req(t, signer(t, appKey), bob, time.Now(), "POST", base+"/echo", gz.String())
	r.Header.Set("Content-Encoding", "gzip")
	status, b, _ := do(t, r)
	if status != 200 || !strings.Contains(string(b), `squeezed`) {
		t.Fatalf("gzip body: %d %s", status, b)
	}
}

// TestRejects: replays are allowed, so that a case that changes something
// the signature did not cover is not refused as a replay instead.
func TestRejects(t *testing.T) {
	base := serve(t, nil, verify.Config{AllowReplays: true})
	app, core := signer(t, appKey), signer(t, otherKey)
	now := time.Now()
	writer := bob
	writer.Permissions = []string{"notes:read", "notes:write"}
	cases := []struct {
		name   string
		req    func() *http.Request
		status int
		code   string
	}{
		{"missing", func() *http.Request { return req(t, nil, bob, now, "GET", base+"/echo", "") }, 401, problem.CodeUnauthenticated},
		{"bad signature", func() *http.Request {
			r := req(t, app, bob, now, "GET", base+"/echo", "")
			r.Header.Set(identity.HeaderSignature, "v2=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
			return r
		}, 401, problem.CodeUnauthenticated},
		{"unknown key", func() *http.Request { return req(t, core, bob, now, "GET", base+"/echo", "") }, 401, problem.CodeUnauthenticated},
		{"clock 31 s off", func() *http.Request { return req(t, app, bob, now.Add(-31*time.Second), "GET", base+"/echo", "") }, 401, problem.CodeUnauthenticated},
		{"body changed", func() *http.Request {
			r := req(t, app, bob, now, "POST", base+"/echo", `{"text":"a"}`)
			r.Body = io.NopCloser(strings.NewReader(`{"text":"b"}`))
			return r
		}, 401, problem.CodeUnauthenticated},
		{"replayed with another path", func() *http.Request {
			r := req(t, app, bob, now, "GET", base+"/echo", "")
			r2 := req(t, nil, bob, now, "GET", base+"/echo/", "")
			r2.Header = r.Header.Clone()
			return r2
		}, 401, problem.CodeUnauthenticated},
		{"permission added by the client", func() *http.Request {
			r := req(t, app, bob, now, "POST", base+"/notes", `{}`)
			r.Header.Set(identity.HeaderPermissions, "notes:read,notes:write")
			return r
		}, 401, problem.CodeUnauthenticated},
		{"signed header repeated", func() *http.Request {
			r := req(t, app, bob, now, "GET", base+"/echo", "")
			r.Header.Add(identity.HeaderPermissions, "notes:write")
			return r
		}, 401, problem.CodeUnauthenticated},
		{"signature repeated", func() *http.Request {
			r := req(t, app, bob, now, "GET", base+"/echo", "")
			r.Header.Add(identity.HeaderSignature, r.Header.Get(identity.HeaderSignature))
			return r
		}, 401, problem.CodeUnauthenticated},
		{"body over the limit", func() *http.Request {
			return req(t, app, bob, now, "POST", base+"/echo", strings.Repeat("x", 65))
		}, 413, problem.CodeBodyTooLarge},
		{"missing permission", func() *http.Request { return req(t, app, bob, now, "POST", base+"/notes", `{}`) }, 403, problem.CodeInsufficientScope},
		{"anonymous on a permission route", func() *http.Request {
			return req(t, app, identity.Identity{}, now, "POST", base+"/notes", `{}`)
		}, 401, problem.CodeUnauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, b, h := do(t, tc.req())
			var p problem.Problem
			if err := json.Unmarshal(b, &p); err != nil || status != tc.status || p.Code != tc.code || p.RequestID != "rid-7" ||
				h.Get("Content-Type") != problem.ContentType {
				t.Fatalf("got %d %s %s (%v), want %d %s", status, h.Get("Content-Type"), b, err, tc.status, tc.code)
			}
		})
	}
	if status, b, _ := do(t, req(t, app, writer, now, "POST", base+"/notes", `{}`)); status != 200 {
		t.Fatalf("writer: %d %s", status, b)
	}
}

// The handler's cost per request in-process: verify a signed GET, copy the
// identity, call the next handler. As authproxy signs every request anew,
// each iteration carries its own timestamp and signature (signed before
// the timer starts, one millisecond apart, the verifier's clock
// following): one request sent again would measure the refusal of a
// replay.
func BenchmarkNew(b *testing.B) {
	s := signer(b, appKey)
	r, _ := http.NewRequest("GET", "http://x/echo?limit=5", nil)
	r.Header.Set("X-Request-Id", "rid-1")
	start := time.Now()
	if err := verify.Sign(r, s, bob, start); err != nil {
		b.Fatal(err)
	}
	id := bob
	q := identity.Request{RequestID: "rid-1", ClientIP: r.Header.Get(identity.HeaderClientIP), Method: "GET", PathQuery: "/echo?limit=5",
		BodySHA256: identity.EmptyBodySHA256}
	ts, sig := make([][]byte, b.N), make([][]byte, b.N)
	for i := range b.N {
		q.Timestamp = start.UnixMilli() + int64(i)
		ts[i], sig[i] = strconv.AppendInt(nil, q.Timestamp, 10), s.AppendSignature(nil, &id, &q)
	}
	at := start.UnixMilli()
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey}, Now: func() time.Time { return time.UnixMilli(at) }})
	if err != nil {
		b.Fatal(err)
	}
	app := fiber.New()
	app.Use(fiberid.New(v))
	app.Get("/echo", func(c *fiber.Ctx) error {
		if _, ok := fiberid.From(c); !ok {
			return c.SendStatus(500)
		}
		return c.SendStatus(200)
	})
	h := app.Handler()
	var fr fasthttp.Request
	fr.Header.SetMethod("GET")
	fr.SetRequestURI("/echo?limit=5")
	for k := range r.Header {
		fr.Header.Set(k, r.Header.Get(k))
	}
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		fr.Header.SetBytesV(identity.HeaderTimestamp, ts[i])
		fr.Header.SetBytesV(identity.HeaderSignature, sig[i])
		at = start.UnixMilli() + int64(i)
		ctx.Init(&fr, nil, nil)
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("request %d: status %d: %s", i, ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// TestMultipartBody: the proxy signs a multipart body's bytes. An app
// that keeps them (DisablePreParseMultipartForm) verifies the request and
// its handler sees the bytes sent; one that parses the form as it reads
// the body keeps no bytes to check, and is told so (500) rather than
// calling every upload forged (401).
func TestMultipartBody(t *testing.T) {
	const boundary = "b0undary"
	// A file before a field, and a part header a parser drops: a
	// re-encoded form differs from these bytes.
	body := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"a\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfirst\r\n" +
		"--" + boundary + "\r\nContent-Disposition: form-data; name=\"z\"\r\nX-Part: kept\r\n\r\nlast\r\n" +
		"--" + boundary + "--\r\n"
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey}})
	if err != nil {
		t.Fatal(err)
	}
	for _, keep := range []bool{true, false} {
		app := fiber.New(fiber.Config{DisableStartupMessage: true, DisablePreParseMultipartForm: keep})
		app.Use(fiberid.New(v))
		app.Post("/upload", func(c *fiber.Ctx) error {
			form, err := c.MultipartForm()
			if err != nil {
				return c.Status(400).SendString(err.Error())
			}
			return c.JSON(fiber.Map{"body": string(c.Body()), "z": form.Value["z"], "files": len(form.File["a"])})
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = app.Listener(ln) }()
		t.Cleanup(func() { _ = app.Shutdown() })
		sent := 0
		send := func(contentType, encoding string) (int, []byte) {
			sent++ // each request its own (the content type is not signed)
			r := req(t, signer(t, appKey), bob, time.Now(), "POST", "http://"+ln.Addr().String()+"/upload?keep="+strconv.FormatBool(keep)+"&n="+strconv.Itoa(sent), body)
			r.Header.Set("Content-Type", contentType)
			if encoding != "" {
				r.Header.Set("Content-Encoding", encoding)
			}
			status, b, _ := do(t, r)
			return status, b
		}
		status, b := send("multipart/form-data; boundary="+boundary, "")
		if keep {
			var got struct {
				Body  string
				Z     []string
				Files int
			}
			if status != 200 || json.Unmarshal(b, &got) != nil || got.Body != body || len(got.Z) != 1 || got.Z[0] != "last" || got.Files != 1 {
				t.Fatalf("bytes kept: %d %s", status, b)
			}
			continue
		}
		// The media type in any letter case is parsed as it is read too.
		for _, ct := range []string{"multipart/form-data; boundary=" + boundary, "Multipart/Form-Data; boundary=" + boundary} {
			status, b := send(ct, "")
			var p problem.Problem
			if status != 500 || json.Unmarshal(b, &p) != nil || p.Code != problem.CodeInternal || !strings.Contains(p.Detail, "DisablePreParseMultipartForm") {
				t.Fatalf("%s, form parsed on read: %d %s, want 500 naming DisablePreParseMultipartForm", ct, status, b)
			}
		}
		// Not parsed on read (no boundary, or an encoded body): the bytes
		// are kept and verified; the handler's own answer comes back.
		for _, c := range []struct{ ct, enc string }{{"multipart/form-data", ""}, {"multipart/form-data; boundary=" + boundary, "identity"}} {
			if status, b := send(c.ct, c.enc); status == 500 || status == 401 {
				t.Fatalf("%q with Content-Encoding %q (bytes kept): %d %s", c.ct, c.enc, status, b)
			}
		}
	}
}

// TestStreamedBodyReadBounded: an app that streams request bodies
// (StreamRequestBody) gets bodies over its BodyLimit as a stream. The
// handler reads at most MaxBodyBytes of it before answering 413, so a body
// that never ends is refused as soon as it passes the limit instead of being
// read into memory; one within the limit is verified and readable.
func TestStreamedBodyReadBounded(t *testing.T) {
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey}, MaxBodyBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true, StreamRequestBody: true, BodyLimit: 1 << 10})
	app.Use(fiberid.New(v))
	app.Post("/echo", func(c *fiber.Ctx) error { return c.Send(c.Body()) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	base := "http://" + ln.Addr().String()

	// Over BodyLimit, within MaxBodyBytes: streamed, verified, readable.
	body := strings.Repeat("s", 3<<10)
	status, b, _ := do(t, req(t, signer(t, appKey), bob, time.Now(), "POST", base+"/echo", body))
	if status != 200 || string(b) != body {
		t.Fatalf("streamed body within the limit: %d, %d bytes back", status, len(b))
	}

	// A chunked body that does not end: the answer must not wait for it.
	r := req(t, signer(t, appKey), bob, time.Now(), "POST", base+"/echo", "x")
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Only a guard against a hang: the body is never finished, so a
	// handler that reads it all never answers.
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	var head strings.Builder
	head.WriteString("POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n")
	for name := range r.Header {
		head.WriteString(name + ": " + r.Header.Get(name) + "\r\n")
	}
	head.WriteString("\r\n")
	if _, err := io.WriteString(conn, head.String()); err != nil {
		t.Fatal(err)
	}
	chunk := "400\r\n" + strings.Repeat("x", 1<<10) + "\r\n"
	for range 64 { // 64 KiB, well past both limits, and no last chunk
		if _, err := io.WriteString(conn, chunk); err != nil {
			break // the server answered and closed: fine
		}
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to an unfinished body over the limit: %v", err)
	}
	defer res.Body.Close()
	pb, _ := io.ReadAll(res.Body)
	var p problem.Problem
	if res.StatusCode != 413 || json.Unmarshal(pb, &p) != nil || p.Code != problem.CodeBodyTooLarge {
		t.Fatalf("unfinished streamed body: %d %s, want 413 %s", res.StatusCode, pb, problem.CodeBodyTooLarge)
	}
}

// rawChunked sends r's method, path and headers to addr as one HTTP/1.1
// request of its own framing (extra header lines, then body in one chunk
// and the trailer section), and returns the answer's status and body.
func rawChunked(t *testing.T, addr string, r *http.Request, extra []string, body string, trailer []string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	b.WriteString(r.Method + " " + r.URL.RequestURI() + " HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n")
	for _, l := range extra {
		b.WriteString(l + "\r\n")
	}
	for name := range r.Header {
		b.WriteString(name + ": " + r.Header.Get(name) + "\r\n")
	}
	b.WriteString("\r\n")
	if body != "" {
		b.WriteString(strconv.FormatInt(int64(len(body)), 16) + "\r\n" + body + "\r\n")
	}
	b.WriteString("0\r\n")
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
	rb, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(rb)
}

// TestRepeatedInTrailer: a signed header sent again in the trailer section
// of a chunked body is a repeated header too: fasthttp's PeekAll (what a
// reader of every value gets) returns both lines. An app that streams
// request bodies (StreamRequestBody) reads the trailer only with the body,
// after the headers were checked; it must refuse the request all the same.
// Replays are allowed, so that the refusals are the repeats'.
func TestRepeatedInTrailer(t *testing.T) {
	const body = "a body over the app's BodyLimit"
	for _, stream := range []bool{false, true} {
		cfg := fiber.Config{StreamRequestBody: stream}
		if stream {
			cfg.BodyLimit = 8 // the body is streamed, not read before the handlers
		}
		addr := echoApp(t, cfg, func(id *verify.Identity) string { return strings.Join(id.Permissions, ",") })
		sign := func() *http.Request {
			return req(t, signer(t, appKey), bob, time.Now(), "POST", "http://app/echo", body)
		}
		if status, b := rawChunked(t, addr, sign(), nil, body, []string{"X-Trace: 1"}); status != 200 || b != "notes:read" {
			t.Fatalf("stream %v, baseline with an unsigned trailer: %d %s", stream, status, b)
		}
		for _, line := range []string{"X-Auth-Permissions: notes:read,notes:write", "x-auth-permissions: notes:write", "X-Auth-Signature: v2=x"} {
			status, b := rawChunked(t, addr, sign(), nil, body, []string{line})
			if status != 401 || !strings.Contains(b, problem.CodeUnauthenticated) {
				t.Errorf("stream %v, trailer %q: %d %s, want 401", stream, line, status, b)
			}
		}
	}
}

// TestRepeatedInOtherCase: an app with DisableHeaderNormalizing keeps
// header names as sent, and its Peek and PeekAll find a name in the
// spelling asked for only. A signed header sent again in another letter
// case (in the header or the trailer section) is still a second line of
// it to every other reader of the request, and is refused. Replays are
// allowed, so that the refusals are the repeats'.
func TestRepeatedInOtherCase(t *testing.T) {
	addr := echoApp(t, fiber.Config{DisableHeaderNormalizing: true}, func(id *verify.Identity) string { return strings.Join(id.Permissions, ",") })
	const body = "hello"
	sign := func() *http.Request {
		return req(t, signer(t, appKey), bob, time.Now(), "POST", "http://app/echo", body)
	}
	if status, b := rawChunked(t, addr, sign(), []string{"x-trace: 1"}, body, nil); status != 200 || b != "notes:read" {
		t.Fatalf("baseline: %d %s", status, b)
	}
	for _, c := range []struct{ extra, trailer []string }{
		{extra: []string{"x-auth-permissions: notes:write"}},
		{extra: []string{"X-AUTH-USER-ID: user-eve"}},
		{extra: []string{"x-request-id: rid-8"}},
		{trailer: []string{"x-auth-permissions: notes:write"}},
	} {
		status, b := rawChunked(t, addr, sign(), c.extra, body, c.trailer)
		if status != 401 || !strings.Contains(b, problem.CodeUnauthenticated) {
			t.Errorf("%q in the headers, %q in the trailer: %d %s, want 401", c.extra, c.trailer, status, b)
		}
	}
}

// TestAliasedNames: a signed header sent under a name spelled with '_'
// for '-' (X_Auth_Roles), or as CGI names it (HTTP_X_AUTH_ROLES), in the
// header or the trailer section, is refused (verify.Aliased): fasthttp
// files it apart from the signed header, but a CGI-style reader the app
// hands the request to files both under one name. Apps that keep names as
// sent (DisableHeaderNormalizing) and those that do not alike. Replays are
// allowed, so that the refusals are the names'.
func TestAliasedNames(t *testing.T) {
	for _, keep := range []bool{false, true} {
		addr := echoApp(t, fiber.Config{DisableHeaderNormalizing: keep}, func(id *verify.Identity) string { return strings.Join(id.Permissions, ",") })
		const body = "hello"
		sign := func() *http.Request {
			return req(t, signer(t, appKey), bob, time.Now(), "POST", "http://app/echo", body)
		}
		if status, b := rawChunked(t, addr, sign(), []string{"X_Trace_Id: 1"}, body, []string{"X_Trace_Id: 2"}); status != 200 || b != "notes:read" {
			t.Fatalf("names kept %v, baseline: %d %s", keep, status, b)
		}
		for _, c := range []struct{ extra, trailer []string }{
			{extra: []string{"X_Auth_Permissions: notes:write"}},
			{extra: []string{"x_auth_user_id: user-eve"}},
			{extra: []string{"X_Request_Id: rid-8"}},
			{extra: []string{"HTTP_X_AUTH_PERMISSIONS: notes:write"}},
			{trailer: []string{"X_Auth_Permissions: notes:write"}},
			{trailer: []string{"http_x_auth_roles: admin"}},
		} {
			status, b := rawChunked(t, addr, sign(), c.extra, body, c.trailer)
			if status != 401 || !strings.Contains(b, problem.CodeUnauthenticated) {
				t.Errorf("names kept %v, %q in the headers, %q in the trailer: %d %s, want 401", keep, c.extra, c.trailer, status, b)
			}
		}
	}
}

// TestRefusesReplays: as with the net/http middleware, a signed request
// sent again unchanged within the window is refused (401 unauthenticated,
// reason replay in the log) without running the handler; the same request
// with another request id or timestamp is accepted; a forgery carrying the
// signature (another body), sent first, is refused for its signature and
// not remembered. Many goroutines sending one signed request at once get
// it served once.
func TestRefusesReplays(t *testing.T) {
	var logs syncBuffer
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey},
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int32
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(fiberid.New(v))
	app.Post("/notes", func(c *fiber.Ctx) error {
		ran.Add(1)
		return c.Status(201).SendString(fiberid.MustFrom(c).RequestID)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	url := "http://" + ln.Addr().String() + "/notes"
	s := signer(t, appKey)
	now := time.Now()
	const body = `{"text":"once"}`
	first := req(t, s, bob, now, "POST", url, body)
	again := func(body string) *http.Request {
		r := req(t, nil, bob, now, "POST", url, body)
		r.Header = first.Header.Clone()
		return r
	}
	wantUnauthenticated := func(what string, r *http.Request) {
		t.Helper()
		status, b, _ := do(t, r)
		var p problem.Problem
		if status != 401 || json.Unmarshal(b, &p) != nil || p.Code != problem.CodeUnauthenticated || p.RequestID != "rid-7" {
			t.Fatalf("%s: %d %s, want 401 %s", what, status, b, problem.CodeUnauthenticated)
		}
	}
	wantUnauthenticated("the forgery, first", again(`{"text":"twice"}`))
	if status, b, _ := do(t, again(body)); status != 201 {
		t.Fatalf("first use: %d %s", status, b)
	}
	wantUnauthenticated("the replay", again(body))
	for _, reason := range []string{"signature", "replay"} {
		if !strings.Contains(logs.String(), `"reason":"`+reason+`"`) {
			t.Errorf("the log does not name the %s:\n%s", reason, logs.String())
		}
	}
	retry := req(t, nil, bob, now, "POST", url, body)
	retry.Header.Set("X-Request-Id", "rid-8")
	if err := verify.Sign(retry, s, bob, now); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*http.Request{"new request id": retry, "new timestamp": req(t, s, bob, now.Add(time.Millisecond), "POST", url, body)} {
		if status, b, _ := do(t, r); status != 201 {
			t.Fatalf("%s: %d %s", name, status, b)
		}
	}
	if n := ran.Load(); n != 3 {
		t.Fatalf("the handler ran %d times, want 3", n)
	}

	// One signed request from many goroutines at once.
	shared := req(t, s, bob, now.Add(2*time.Millisecond), "POST", url, body)
	const workers = 16
	codes := make(chan int, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := req(t, nil, bob, now, "POST", url, body)
			r.Header = shared.Header.Clone()
			res, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Error(err)
				return
			}
			_ = res.Body.Close()
			codes <- res.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	got := map[int]int{}
	for c := range codes {
		got[c]++
	}
	if got[201] != 1 || got[401] != workers-1 {
		t.Fatalf("one request from %d goroutines: %v, want one 201 and the rest 401", workers, got)
	}
}

// TestRejectionsLogged: like the net/http middleware, the Fiber handler
// logs the reason of each rejection at debug level to the verifier's
// Logger (a key rotation is checked by the unknown_key lines), and tells
// the caller nothing more than 401.
func TestRejectionsLogged(t *testing.T) {
	var logs syncBuffer
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey},
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(fiberid.New(v))
	app.Get("/echo", func(c *fiber.Ctx) error { return c.SendStatus(200) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	base := "http://" + ln.Addr().String()
	for reason, r := range map[string]*http.Request{
		"unknown_key": req(t, signer(t, otherKey), bob, time.Now(), "GET", base+"/echo", ""),
		"missing":     req(t, nil, bob, time.Now(), "GET", base+"/echo", ""),
		"expired":     req(t, signer(t, appKey), bob, time.Now().Add(-time.Minute), "GET", base+"/echo", ""),
	} {
		if status, b, _ := do(t, r); status != 401 {
			t.Fatalf("%s: %d %s", reason, status, b)
		}
		if line := `"reason":"` + reason + `"`; !strings.Contains(logs.String(), line) {
			t.Errorf("no %s in the log:\n%s", line, logs.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe to write from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSignedHeaderInOtherCase: an app with DisableHeaderNormalizing keeps
// header names as sent, but a header's name is the same in any letter
// case, to the net/http middleware, to Node and to every other reader of
// the request. A signed header sent once, in another spelling than the
// canonical one, is read: a role added as "x-auth-roles" to a request
// signed without roles breaks the signature (read as empty, it passed,
// while the app's own lookup in that spelling read "admin"), and a request
// whose every name is in lower case (as an HTTP/2 hop writes them)
// verifies.
func TestSignedHeaderInOtherCase(t *testing.T) {
	addr := echoApp(t, fiber.Config{DisableHeaderNormalizing: true}, func(id *verify.Identity) string { return strings.Join(id.Roles, ",") })
	const body = "hello"
	key := identity.Identity{Principal: identity.PrincipalAPIKey, UserID: "user-bob", TenantID: "tenant-1", Permissions: []string{"notes:read"}}
	sign := func(id identity.Identity) *http.Request {
		return req(t, signer(t, appKey), id, time.Now(), "POST", "http://app/echo", body)
	}
	if status, b := rawChunked(t, addr, sign(key), nil, body, nil); status != 200 || b != "" {
		t.Fatalf("baseline: %d %s", status, b)
	}
	if status, b := rawChunked(t, addr, sign(key), []string{"x-auth-roles: admin"}, body, nil); status != 401 || !strings.Contains(b, problem.CodeUnauthenticated) {
		t.Errorf("a role the proxy did not sign, as x-auth-roles: %d %s, want 401", status, b)
	}
	r := sign(bob)
	var lower []string
	for name := range r.Header {
		lower = append(lower, strings.ToLower(name)+": "+r.Header.Get(name))
	}
	r.Header = http.Header{}
	if status, b := rawChunked(t, addr, r, lower, body, nil); status != 200 || b != "member" {
		t.Errorf("every name in lower case: %d %s, want 200 member", status, b)
	}
}

// TestSignedHeaderInTrailerWithNamesKept: an app that keeps header names
// as sent (DisableHeaderNormalizing) and reads a signed header itself with
// c.Get gets fasthttp's Peek: the header section's line, else the
// trailer section's. A header the proxy left out (an API key's roles) and
// someone added in a chunked body's trailer is what the verifier must
// read too, as it does without DisableHeaderNormalizing; it read the
// header section only, verified the roles as empty, and the app's c.Get
// answered admin.
func TestSignedHeaderInTrailerWithNamesKept(t *testing.T) {
	for _, keep := range []bool{false, true} {
		v, err := verify.New(verify.Config{Keys: []identity.Key{appKey}, AllowReplays: true})
		if err != nil {
			t.Fatal(err)
		}
		app := fiber.New(fiber.Config{DisableStartupMessage: true, DisableHeaderNormalizing: keep})
		app.Use(fiberid.New(v))
		app.Post("/echo", func(c *fiber.Ctx) error {
			return c.SendString(strings.Join(fiberid.MustFrom(c).Roles, ",") + "|" + c.Get(identity.HeaderRoles))
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = app.Listener(ln) }()
		t.Cleanup(func() { _ = app.Shutdown() })
		key := identity.Identity{Principal: identity.PrincipalAPIKey, UserID: "user-bob", TenantID: "tenant-1", Permissions: []string{"notes:read"}}
		sign := func() *http.Request {
			return req(t, signer(t, appKey), key, time.Now(), "POST", "http://app/echo", "hello")
		}
		if status, b := rawChunked(t, ln.Addr().String(), sign(), nil, "hello", nil); status != 200 || b != "|" {
			t.Fatalf("names kept %v, baseline: %d %s", keep, status, b)
		}
		for _, line := range []string{"X-Auth-Roles: admin", "x-auth-roles: admin"} {
			if status, b := rawChunked(t, ln.Addr().String(), sign(), nil, "hello", []string{line}); status != 401 {
				t.Errorf("names kept %v, %q in the trailer of an API key's request: %d %s, want 401", keep, line, status, b)
			}
		}
	}
}

// echoApp serves POST /echo behind fiberid (replays allowed, so that
// refusals are the tests' own) with cfg, answering answer of the request's
// identity, on a loopback listener until the test ends, and returns its
// address.
func echoApp(t *testing.T, cfg fiber.Config, answer func(*verify.Identity) string) string {
	t.Helper()
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey}, AllowReplays: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DisableStartupMessage = true
	app := fiber.New(cfg)
	app.Use(fiberid.New(v))
	app.Post("/echo", func(c *fiber.Ctx) error { return c.SendString(answer(fiberid.MustFrom(c))) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return ln.Addr().String()
}

// TestStreamedBodyUnboundedLimit: MaxBodyBytes at its largest value
// (math.MaxInt64) reads the whole of a streamed body. The handler read at
// most MaxBodyBytes+1 bytes of the stream, which overflowed to a negative
// limit: it read none, and every streamed body was refused (401).
func TestStreamedBodyUnboundedLimit(t *testing.T) {
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey}, MaxBodyBytes: math.MaxInt64})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true, StreamRequestBody: true, BodyLimit: 16})
	app.Use(fiberid.New(v))
	app.Post("/echo", func(c *fiber.Ctx) error { return c.Send(c.Body()) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	body := strings.Repeat("s", 1<<10) // over BodyLimit: streamed
	status, b, _ := do(t, req(t, signer(t, appKey), bob, time.Now(), "POST", "http://"+ln.Addr().String()+"/echo", body))
	if status != 200 || string(b) != body {
		t.Fatalf("streamed body, MaxBodyBytes math.MaxInt64: %d %.200s, want 200 and the body", status, b)
	}
}

// TestExtensionMethodNeedsRequestMethods: a route of the proxy may list
// methods beyond the standard ones (PROPFIND, QUERY), which the proxy
// signs and forwards. Fiber answers a method outside its RequestMethods
// itself ("400 Invalid http method"), before fiberid or any handler runs:
// the app lists them, fiber.DefaultMethods and its own, as the package
// comment says, and then fiberid verifies the request as any other.
func TestExtensionMethodNeedsRequestMethods(t *testing.T) {
	v, err := verify.New(verify.Config{Keys: []identity.Key{appKey}, AllowReplays: true})
	if err != nil {
		t.Fatal(err)
	}
	start := func(cfg fiber.Config) string {
		cfg.DisableStartupMessage = true
		app := fiber.New(cfg)
		app.Use(fiberid.New(v))
		app.Use(func(c *fiber.Ctx) error { return c.SendString(c.Method() + " " + fiberid.MustFrom(c).UserID) })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = app.Listener(ln) }()
		t.Cleanup(func() { _ = app.Shutdown() })
		return "http://" + ln.Addr().String()
	}
	plain := start(fiber.Config{})
	listed := start(fiber.Config{RequestMethods: append(slices.Clone(fiber.DefaultMethods), "PROPFIND", "QUERY")})
	for _, m := range []string{"PROPFIND", "QUERY"} {
		if status, b, _ := do(t, req(t, signer(t, appKey), bob, time.Now(), m, plain+"/dav", "")); status != 400 {
			t.Errorf("%s without RequestMethods: %d %s, want Fiber's 400", m, status, b)
		}
		if status, b, _ := do(t, req(t, signer(t, appKey), bob, time.Now(), m, listed+"/dav", "")); status != 200 || string(b) != m+" user-bob" {
			t.Errorf("%s listed in RequestMethods: %d %s, want 200 verified", m, status, b)
		}
		if status, b, _ := do(t, req(t, nil, bob, time.Now(), m, listed+"/dav", "")); status != 401 {
			t.Errorf("%s listed, unsigned: %d %s, want 401", m, status, b)
		}
	}
}
