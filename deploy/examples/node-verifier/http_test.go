package nodeverifier

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

// nodeServer is a Node http server that answers each request with the
// verdict of verify.js on it, as an app would call it: req.headers,
// req.method, req.url, the body's bytes (readBody: a body over its limit
// is 413, as the Go SDK answers it), one Replays for the process.
const nodeServer = `
const http = require('node:http');
const { verify, Replays, readBody } = require('./verify.js');
const keys = new Map([[process.env.KEY_ID, Buffer.from(process.env.KEY_SECRET, 'base64')]]);
const replays = new Replays();
const srv = http.createServer(async (req, res) => {
  let verdict = 'valid';
  try {
    const body = await readBody(req);
    verify(req.headers, req.method, req.url, body, keys, Number(process.env.NOW_MS), 30000, replays, req.trailers);
  } catch (e) { verdict = e.code || String(e); }
  if (verdict === 'body_too_large') res.statusCode = 413;
  res.end(verdict);
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
`

// startNode runs nodeServer and returns its address.
func startNode(t *testing.T, key identity.Key, now time.Time) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: %v", err)
	}
	cmd := exec.Command(node, "-e", nodeServer)
	cmd.Env = append(cmd.Environ(), "KEY_ID="+key.ID, "KEY_SECRET="+base64.StdEncoding.EncodeToString(key.Secret),
		"NOW_MS="+strconv.FormatInt(now.UnixMilli(), 10))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("node server did not start: %v\n%s", err, stderr.String())
	}
	return "127.0.0.1:" + strings.TrimSpace(line)
}

// roundTrip sends raw to addr on a connection of its own and returns the
// answer's status and body.
func roundTrip(t *testing.T, addr string, raw []byte) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestNodeVerifierOverHTTP has the Go middleware and verify.js, each behind
// its language's own HTTP server, judge the same bytes on the wire: what
// the other tests hand verify.js as strings, here Node's http module
// parses, as it does in an app. Header values are bytes: Node gives each
// as a latin1 string, one character per byte, and a verifier that hashed
// those characters' UTF-8 encoding refused every signed value with a byte
// above 0x7F that the Go verifier accepts.
func TestNodeVerifierOverHTTP(t *testing.T) {
	key := identity.Key{ID: "app-notes", Secret: []byte("0123456789abcdef0123456789abcdef")}
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1796000012345)
	ver, err := verify.New(verify.Config{Keys: []identity.Key{key}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	goSrv := httptest.NewServer(ver.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "valid")
	})))
	t.Cleanup(goSrv.Close)
	nodeAddr := startNode(t, key, now)

	user := identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1", TenantID: "t-1", SessionID: "s-1",
		Roles: []string{"member"}, Permissions: []string{"notes:read"}, EmailVerified: true, AMR: []string{"pwd"}, AuthTime: 1796000000}
	// raw signs a request for id and writes it as it goes on the wire, the
	// request line's target as given and every header line as signed, plus
	// extra lines.
	raw := func(rid string, id identity.Identity, method, target, body string, extra ...string) []byte {
		r, err := http.NewRequest(method, "http://app"+target, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(identity.HeaderRequestID, rid)
		r.Header.Set(identity.HeaderClientIP, "203.0.113.7")
		if err := verify.Sign(r, s, id, now); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: app\r\nConnection: close\r\nContent-Length: %d\r\n", method, target, len(body))
		for name, vs := range r.Header {
			for _, v := range vs {
				fmt.Fprintf(&b, "%s: %s\r\n", name, v)
			}
		}
		for _, l := range extra {
			b.WriteString(l + "\r\n")
		}
		b.WriteString("\r\n" + body)
		return b.Bytes()
	}
	withRole := func(role string) identity.Identity {
		id := user
		id.Roles = []string{"member", role}
		return id
	}
	first := raw("req-1", user, "GET", "/notes?limit=5", "")
	cases := []struct {
		name  string
		raw   []byte
		valid bool
	}{
		{"a user's GET", first, true},
		{"a POST with a body", raw("req-2", user, "POST", "/notes", `{"text":"été"}`), true},
		{"an anonymous request", raw("req-3", identity.Identity{}, "GET", "/notes", ""), true},
		// Signed over the header's bytes, as the page says: the proxy
		// sends ASCII only, but a verifier must hash what it received.
		{"a role in UTF-8", raw("req-4", withRole("équipe"), "GET", "/notes", ""), true},
		{"a role with a byte that is not UTF-8", raw("req-5", withRole("\xe9quipe"), "GET", "/notes", ""), true},
		{"the first request again", first, false},
		{"a signed header twice", raw("req-6", user, "GET", "/notes", "", identity.HeaderRoles+": owner"), false},
		// CGI-style readers file these under the signed header's name.
		{"a signed header under its '_' name", raw("req-8", user, "GET", "/notes", "", "X_Auth_Roles: owner"), false},
		{"a signed header under its CGI name", raw("req-9", user, "GET", "/notes", "", "HTTP_X_REQUEST_ID: req-10"), false},
		{"another name with '_'", raw("req-11", user, "GET", "/notes", "", "X_Trace_Id: 1"), true},
		{"an absolute-form target", bytes.Replace(raw("req-7", user, "GET", "/notes", ""), []byte("GET /notes "), []byte("GET http://app/notes "), 1), false},
	}
	for _, tc := range cases {
		gs, gb := roundTrip(t, strings.TrimPrefix(goSrv.URL, "http://"), tc.raw)
		ns, nb := roundTrip(t, nodeAddr, tc.raw)
		if gs == http.StatusOK != tc.valid {
			t.Errorf("%s: Go answered %d %s, want valid=%v", tc.name, gs, gb, tc.valid)
		}
		if ns != http.StatusOK || (nb == "valid") != tc.valid {
			t.Errorf("%s: node answered %d %q, want valid=%v (Go: %d)", tc.name, ns, nb, tc.valid, gs)
		}
	}
}

// TestNodeVerifierRefusesWhatNoRequestCarries: a string handed to
// verify() with a character above 0xFF cannot be a header Node read (one
// character per byte), and its latin1 bytes would be another string's:
// "\u0100" would hash as the byte 0x00. It is malformed, even where the
// signature over those bytes would verify.
func TestNodeVerifierRefusesWhatNoRequestCarries(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: %v", err)
	}
	key := identity.Key{ID: "app-notes", Secret: []byte("0123456789abcdef0123456789abcdef")}
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1796000012345)
	id := identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1", TenantID: "t-1", Roles: []string{"member", "\x00x"}}
	r, err := http.NewRequest("GET", "http://app/notes", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set(identity.HeaderRequestID, "req-1")
	if err := verify.Sign(r, s, id, now); err != nil {
		t.Fatal(err)
	}
	h := map[string]string{}
	for name := range r.Header {
		h[strings.ToLower(name)] = r.Header.Get(name)
	}
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	const script = `
const { verify } = require('./verify.js');
const h = JSON.parse(process.env.HEADERS);
const keys = new Map([['app-notes', Buffer.from('0123456789abcdef0123456789abcdef')]]);
const run = (roles) => {
  try { verify({ ...h, 'x-auth-roles': roles }, 'GET', '/notes', Buffer.alloc(0), keys, Number(process.env.NOW_MS), 30000, false); return 'valid'; }
  catch (e) { return e.code || String(e); }
};
console.log(JSON.stringify([run(h['x-auth-roles']), run('member,\u0100x')]));
`
	cmd := exec.Command(node, "-e", script)
	cmd.Env = append(cmd.Environ(), "HEADERS="+string(js), "NOW_MS="+strconv.FormatInt(now.UnixMilli(), 10))
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, b)
	}
	if got, want := strings.TrimSpace(string(b)), `["valid","malformed"]`; got != want {
		t.Fatalf("got %s, want %s (the signed bytes, then a character above 0xFF)", got, want)
	}
}

// TestNodeVerifierRefusesSignedHeadersInTrailer: a chunked request whose
// trailer section names a signed header, announced in its Trailer header
// or sent after the last chunk, in any letter case or under a name with
// '_', is refused by verify.js as by the Go middleware (and fiberid): Node
// hands those fields out apart from req.headers, in req.trailers, where an
// app that reads them after the body takes one for the signed header.
func TestNodeVerifierRefusesSignedHeadersInTrailer(t *testing.T) {
	key := identity.Key{ID: "app-notes", Secret: []byte("0123456789abcdef0123456789abcdef")}
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1796000012345)
	ver, err := verify.New(verify.Config{Keys: []identity.Key{key}, Now: func() time.Time { return now }, AllowReplays: true})
	if err != nil {
		t.Fatal(err)
	}
	goSrv := httptest.NewServer(ver.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "valid")
	})))
	t.Cleanup(goSrv.Close)
	nodeAddr := startNode(t, key, now)
	user := identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1", TenantID: "t-1", Roles: []string{"member"}}
	const body = `{"text":"a"}`
	n := 0
	// chunked signs a POST (its own request id: node keeps one Replays)
	// and writes it with a chunked body, the Trailer header announce (none
	// when empty) and the trailer lines.
	chunked := func(announce string, trailer ...string) []byte {
		n++
		r, err := http.NewRequest("POST", "http://app/notes", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(identity.HeaderRequestID, "req-t"+strconv.Itoa(n))
		r.Header.Set(identity.HeaderClientIP, "203.0.113.7")
		if err := verify.Sign(r, s, user, now); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.WriteString("POST /notes HTTP/1.1\r\nHost: app\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n")
		if announce != "" {
			b.WriteString("Trailer: " + announce + "\r\n")
		}
		for name, vs := range r.Header {
			for _, v := range vs {
				fmt.Fprintf(&b, "%s: %s\r\n", name, v)
			}
		}
		fmt.Fprintf(&b, "\r\n%x\r\n%s\r\n0\r\n", len(body), body)
		for _, l := range trailer {
			b.WriteString(l + "\r\n")
		}
		b.WriteString("\r\n")
		return b.Bytes()
	}
	cases := []struct {
		name  string
		raw   []byte
		valid bool
	}{
		{"no trailer", chunked(""), true},
		{"another name in the trailer", chunked("X-Trace-Id", "X-Trace-Id: 1"), true},
		{"a signed header announced and sent", chunked("X-Auth-Roles", "X-Auth-Roles: admin"), false},
		{"in lower case", chunked("x-auth-permissions", "x-auth-permissions: notes:admin"), false},
		{"announced among others", chunked("X-Trace-Id, X-Request-Id", "X-Trace-Id: 1", "X-Request-Id: other"), false},
		{"announced only", chunked("X-Auth-Roles"), false},
		{"sent unannounced", chunked("", "X-Auth-Roles: admin"), false},
		{"under its '_' name", chunked("X_Auth_Roles", "X_Auth_Roles: admin"), false},
		{"under its CGI name, unannounced", chunked("", "HTTP_X_AUTH_ROLES: admin"), false},
	}
	for _, tc := range cases {
		gs, gb := roundTrip(t, strings.TrimPrefix(goSrv.URL, "http://"), tc.raw)
		ns, nb := roundTrip(t, nodeAddr, tc.raw)
		if gs == http.StatusOK != tc.valid {
			t.Errorf("%s: Go answered %d %s, want valid=%v", tc.name, gs, gb, tc.valid)
		}
		if ns != http.StatusOK || (nb == "valid") != tc.valid {
			t.Errorf("%s: node answered %d %q, want valid=%v (Go: %d)", tc.name, ns, nb, tc.valid, gs)
		}
	}
}

// TestNodeVerifierBodyLimit: verify.js's readBody bounds the body as the
// Go SDK's MaxBodyBytes does, with the same default (1 MiB) and the same
// refusal (413 body_too_large, before verifying): a signed POST of 1 MiB
// and 10 bytes was valid in Node and 413 in Go and fiberid. A body of
// exactly the limit is read and verified; a chunked one (no declared
// length) over it is refused as it arrives.
func TestNodeVerifierBodyLimit(t *testing.T) {
	key := identity.Key{ID: "app-notes", Secret: []byte("0123456789abcdef0123456789abcdef")}
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1796000012345)
	ver, err := verify.New(verify.Config{Keys: []identity.Key{key}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	goSrv := httptest.NewServer(ver.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "valid")
	})))
	t.Cleanup(goSrv.Close)
	nodeAddr := startNode(t, key, now)
	user := identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1", TenantID: "t-1", Roles: []string{"member"}}
	n := 0
	raw := func(size int, chunked bool) []byte {
		n++
		body := strings.Repeat("a", size)
		r, err := http.NewRequest("POST", "http://app/notes", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(identity.HeaderRequestID, "req-b"+strconv.Itoa(n))
		if err := verify.Sign(r, s, user, now); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.WriteString("POST /notes HTTP/1.1\r\nHost: app\r\nConnection: close\r\n")
		if chunked {
			b.WriteString("Transfer-Encoding: chunked\r\n")
		} else {
			fmt.Fprintf(&b, "Content-Length: %d\r\n", size)
		}
		for name, vs := range r.Header {
			for _, v := range vs {
				fmt.Fprintf(&b, "%s: %s\r\n", name, v)
			}
		}
		b.WriteString("\r\n")
		if !chunked {
			b.WriteString(body)
			return b.Bytes()
		}
		for len(body) > 0 {
			c := body[:min(len(body), 64<<10)]
			body = body[len(c):]
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
		}
		b.WriteString("0\r\n\r\n")
		return b.Bytes()
	}
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"the limit", verify.DefaultMaxBodyBytes, false, 200},
		{"10 bytes over", verify.DefaultMaxBodyBytes + 10, false, 413},
		{"the limit, chunked", verify.DefaultMaxBodyBytes, true, 200},
		{"1 byte over, chunked", verify.DefaultMaxBodyBytes + 1, true, 413},
	} {
		gs, gb := roundTrip(t, strings.TrimPrefix(goSrv.URL, "http://"), raw(tc.size, tc.chunked))
		ns, nb := roundTrip(t, nodeAddr, raw(tc.size, tc.chunked))
		if gs != tc.status {
			t.Errorf("%s: Go answered %d %.100s, want %d", tc.name, gs, gb, tc.status)
		}
		want := "valid"
		if tc.status == 413 {
			want = "body_too_large"
		}
		if ns != tc.status || nb != want {
			t.Errorf("%s: node answered %d %q, want %d %s", tc.name, ns, nb, tc.status, want)
		}
	}
}

// TestNodeExtensionMethods: Node's http server takes the methods of its
// own list (http.METHODS: PROPFIND, QUERY, PURGE among them), which
// verify.js then verifies as any other, and answers any other method 400
// itself, before the app sees it: a route of the proxy that lists such a
// method cannot be served by a plain Node app.
func TestNodeExtensionMethods(t *testing.T) {
	key := identity.Key{ID: "app-notes", Secret: []byte("0123456789abcdef0123456789abcdef")}
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1796000012345)
	nodeAddr := startNode(t, key, now)
	for _, tc := range []struct {
		method string
		status int
		body   string
	}{
		{"PROPFIND", 200, "valid"}, {"QUERY", 200, "valid"}, {"PURGE", 200, "valid"}, {"FROBNICATE", 400, ""},
	} {
		r, err := http.NewRequest(tc.method, "http://app/dav", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(identity.HeaderRequestID, "req-m-"+tc.method)
		if err := verify.Sign(r, s, identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1", TenantID: "t-1"}, now); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s /dav HTTP/1.1\r\nHost: app\r\nConnection: close\r\n", tc.method)
		for name := range r.Header {
			fmt.Fprintf(&b, "%s: %s\r\n", name, r.Header.Get(name))
		}
		b.WriteString("\r\n")
		status, body := roundTrip(t, nodeAddr, b.Bytes())
		if status != tc.status || (tc.body != "" && body != tc.body) {
			t.Errorf("%s: node answered %d %q, want %d %q", tc.method, status, body, tc.status, tc.body)
		}
	}
}
