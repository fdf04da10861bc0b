package nodeverifier

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/identitytest"
	"github.com/tollgate-auth/tollgate/shared/identity/verify"
)

const vectorsPath = "../../../shared/identity/testdata/v2_vectors.json"

// vector is an entry of v2_vectors.json (see docs/identity-headers.md).
type vector = identitytest.Vector

// runNode runs verify.js on a vectors file and returns its exit error and
// output. A machine without node fails the test: the check is part of the
// contract, not optional.
func runNode(t *testing.T, vectorsFile string) (string, error) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: install Node.js 18 or newer (e.g. `apt-get install nodejs`); "+
			"this test runs deploy/examples/node-verifier/verify.js against the identity-header test vectors: %v", err)
	}
	out, err := exec.Command(node, "verify.js", vectorsFile).CombinedOutput()
	return string(out), err
}

func writeVectors(t *testing.T, vs []vector) string {
	t.Helper()
	b, err := json.Marshal(vs)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "vectors.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantAllOK checks that node passed and reported every vector (and, for
// each valid one, the body-changed variant and the vector sent again, a
// replay) as ok.
func wantAllOK(t *testing.T, vs []vector, out string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("verify.js failed (%v):\n%s", err, out)
	}
	for _, v := range vs {
		names := []string{v.Name}
		if v.Valid {
			names = append(names, v.Name+", body changed", v.Name+", sent again")
		}
		for _, n := range names {
			if !strings.Contains(out, "ok   "+n+": ") {
				t.Errorf("verify.js did not report %q as ok:\n%s", n, out)
			}
		}
	}
}

func TestNodeVerifierPassesTheVectors(t *testing.T) {
	vs := identitytest.Load(t)
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	out, err := runNode(t, vectorsPath)
	wantAllOK(t, vs, out, err)
}

// TestNodeVerifierCatchesWrongVectors corrupts the vectors in ways a
// correct verifier must notice, so the check above cannot pass vacuously.
func TestNodeVerifierCatchesWrongVectors(t *testing.T) {
	base := identitytest.Load(t)
	cases := map[string]func(v *vector){
		"signature of another request": func(v *vector) { v.PathQuery += "&x=1" },
		"expected error flipped":       func(v *vector) { v.Valid, v.Error = false, "expired" },
		"canonical string differs":     func(v *vector) { v.Canonical += "\n" },
		"other client IP":              func(v *vector) { v.Headers["X-Auth-Client-Ip"] = "192.0.2.1" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			vs := identitytest.Load(t)
			mutate(&vs[0])
			if !base[0].Valid {
				t.Fatal("the first vector should be a valid one")
			}
			out, err := runNode(t, writeVectors(t, vs))
			if err == nil || !strings.Contains(out, "FAIL "+vs[0].Name) {
				t.Fatalf("verify.js accepted a corrupted vector (err %v):\n%s", err, out)
			}
		})
	}
}

// TestNodeVerifierAgreesWithGoSigner signs varied requests with the Go
// signer (as authproxy does) and has node verify them: principals, empty
// and long lists, IPv6 client addresses, encoded paths, control characters
// in bodies (the vector format carries bodies as UTF-8 text).
func TestNodeVerifierAgreesWithGoSigner(t *testing.T) {
	key := identity.Key{ID: "app-notes.2026-12_a", Secret: []byte("0123456789abcdef0123456789abcdefXYZ")}
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1796000012345)
	type input struct {
		id           identity.Identity
		method, url  string
		body, ip     string
		skew         time.Duration
		valid        bool
		wantErrorFor string
	}
	ids := []identity.Identity{
		{},
		{Principal: identity.PrincipalAPIKey, UserID: "u-1", TenantID: "t-1", Permissions: []string{"notes:read"}},
		{Principal: identity.PrincipalService, TenantID: "t-2", Roles: []string{"svc"}, Permissions: []string{"a:b", "c:d", "e:f"}},
		{Principal: identity.PrincipalUser, UserID: "u-2", TenantID: "t-3", SessionID: "s-9", Roles: []string{"owner", "admin", "member"},
			Permissions: []string{"tenant:read", "tenant:write", "notes:read"}, EmailVerified: true, AMR: []string{"pwd", "otp"}, AuthTime: 1795999000},
	}
	var ins []input
	for i, id := range ids {
		ins = append(ins,
			input{id: id, method: "GET", url: "/notes?limit=5&q=%C3%A9", ip: "2001:db8::7", valid: true},
			input{id: id, method: "POST", url: "/notes", body: `{"text":"` + strings.Repeat("ü", i*50) + `"}`, ip: "198.51.100.9", valid: true},
			input{id: id, method: "DELETE", url: "/notes/a%2Fb", body: "\x00\x10 control\tcharacters\r\n", ip: "10.1.2.3", skew: 29 * time.Second, valid: true},
			input{id: id, method: "GET", url: "/notes", ip: "10.1.2.3", skew: -31 * time.Second, wantErrorFor: "expired"},
		)
	}
	var vs []vector
	for i, in := range ins {
		r, err := http.NewRequest(in.method, "http://app"+in.url, strings.NewReader(in.body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(identity.HeaderClientIP, in.ip)
		r.Header.Set(identity.HeaderRequestID, fmt.Sprintf("go-%d", i))
		if err := verify.Sign(r, s, in.id, now.Add(in.skew)); err != nil {
			t.Fatal(err)
		}
		v := vector{Name: fmt.Sprintf("go-signed %d %s %s", i, in.method, in.url), KeyID: key.ID,
			KeySecret: base64.StdEncoding.EncodeToString(key.Secret), Method: in.method, PathQuery: r.URL.RequestURI(),
			Body: in.body, Headers: map[string]string{}, NowMs: now.UnixMilli(), Signature: r.Header.Get(identity.HeaderSignature),
			Valid: in.valid, Error: in.wantErrorFor}
		for name := range r.Header {
			if name != identity.HeaderSignature {
				v.Headers[name] = r.Header.Get(name)
			}
		}
		// The canonical string the Go side signed, from the exported builder.
		id := in.id
		if id.Principal == "" { // what verify.Sign signs for an empty one
			id.Principal = identity.PrincipalAnonymous
		}
		v.Canonical = string(identity.AppendCanonicalV2(nil, key.ID, &id, &identity.Request{
			Timestamp: now.Add(in.skew).UnixMilli(), RequestID: fmt.Sprintf("go-%d", i), ClientIP: in.ip,
			Method: in.method, PathQuery: r.URL.RequestURI(), BodySHA256: sha256.Sum256([]byte(in.body))}))
		vs = append(vs, v)
	}
	out, err := runNode(t, writeVectors(t, vs))
	wantAllOK(t, vs, out, err)
}

// canonicalFields are the headers of fields 2 to 14 of the canonical
// string, in order (docs/identity-headers.md).
var canonicalFields = []string{
	identity.HeaderKeyID, identity.HeaderPrincipal, identity.HeaderUserID, identity.HeaderTenantID, identity.HeaderSessionID,
	identity.HeaderRoles, identity.HeaderPermissions, identity.HeaderEmailVerified, identity.HeaderAMR, identity.HeaderAuthTime,
	identity.HeaderTimestamp, identity.HeaderRequestID, identity.HeaderClientIP,
}

// rawCanonical is the canonical string of a request with a body of
// nothing, written from the page: the header values exactly as they are.
func rawCanonical(h http.Header, method, pathQuery string) string {
	f := []string{"v2"}
	for _, name := range canonicalFields {
		f = append(f, h.Get(name))
	}
	return strings.Join(append(f, method, pathQuery, hex.EncodeToString(identity.EmptyBodySHA256[:])), "\n")
}

// TestNodeVerifierAgreesWithGoVerifier puts odd values in each signed
// header of a signed request (signs, leading zeros, long numbers, other
// letter cases, empty list elements, separators, non-ASCII, other
// spellings of the signature), once under the request's signature and once
// signed anew over the values as they are (the page's canonical string, as
// a signer that does not check what it signs would), and has both
// verifiers judge each: node must name the Go verifier's verdict. Neither
// may read a value in a way of its own (one spelling of a number for
// another, say), which only the signature of the bytes as they are shows.
func TestNodeVerifierAgreesWithGoVerifier(t *testing.T) {
	key := identity.Key{ID: "app-notes", Secret: []byte("0123456789abcdef0123456789abcdef")}
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := int64(1796000012345)
	// The Go verifier with its replay filter, judging the vectors in the
	// order node does: a value equal to the one signed gives the signed
	// request again, a replay after its first time.
	ver, err := verify.New(verify.Config{Keys: []identity.Key{key}, Now: func() time.Time { return time.UnixMilli(now) }})
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1", TenantID: "t-1", SessionID: "s-1", Roles: []string{"admin", "member"},
		Permissions: []string{"notes:read"}, EmailVerified: true, AMR: []string{"pwd"}, AuthTime: 1796000000}
	req := identity.Request{Timestamp: now, RequestID: "req-1", ClientIP: "203.0.113.7", Method: "GET", PathQuery: "/notes", BodySHA256: identity.EmptyBodySHA256}
	sig := s.Sign(&id, &req)
	values := []string{"", "0", "-1", "+1796000012345", "01796000012345", "1796000012345", "1796000000", "+1796000000", "01796000000",
		"9999999999999999", "9007199254740991", "9007199254740992", "17960000000000000", "9223372036854775807", "99999999999999999999", "1e12", "0x10", "1796000012345.0",
		"true", "TRUE", "false", "user", "User", "anonymous", "api_key", "app-notes", "APP-NOTES",
		"a,,b", ",", "a,", ",a", "a, b", "a\tb", "é", "١٢٣", "v2=", "v1=" + sig[3:]}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range 4 { // the last character with each setting of its unused bits
		values = append(values, sig[:len(sig)-1]+string(alphabet[strings.IndexByte(alphabet, sig[len(sig)-1])|i]))
	}
	var vs []vector
	for _, resign := range []bool{false, true} {
		for _, name := range append(canonicalFields, identity.HeaderSignature) {
			for _, value := range values {
				h := http.Header{}
				identity.EachHeader(key.ID, &id, &req, h.Set)
				h.Set(identity.HeaderSignature, sig)
				h.Set(name, value)
				if resign && name != identity.HeaderSignature {
					m := hmac.New(sha256.New, key.Secret)
					m.Write([]byte(rawCanonical(h, "GET", "/notes")))
					h.Set(identity.HeaderSignature, "v2="+base64.RawURLEncoding.EncodeToString(m.Sum(nil)))
				}
				v := vector{Name: fmt.Sprintf("%s %q (signed anew: %v)", name, value, resign), KeyID: key.ID,
					KeySecret: base64.StdEncoding.EncodeToString(key.Secret), Method: "GET", PathQuery: "/notes",
					Headers: map[string]string{}, NowMs: now, Signature: h.Get(identity.HeaderSignature)}
				for n := range h {
					if n != identity.HeaderSignature {
						v.Headers[n] = h.Get(n)
					}
				}
				if _, err := ver.CheckOnce(h.Get, "GET", "/notes", nil); err != nil {
					v.Error = identity.Reason(err)
				} else {
					v.Valid, v.Canonical = true, rawCanonical(h, "GET", "/notes")
					// What node checks next: the same request again.
					if _, err := ver.CheckOnce(h.Get, "GET", "/notes", nil); !errors.Is(err, identity.ErrReplayed) {
						t.Fatalf("%s, sent again: %v, want ErrReplayed", v.Name, err)
					}
				}
				vs = append(vs, v)
			}
		}
	}
	replays := 0
	for _, v := range vs {
		if v.Error == "replay" {
			replays++
		}
	}
	if replays == 0 {
		t.Fatal("no vector repeats the signed request: the replay filters were not compared")
	}
	out, err := runNode(t, writeVectors(t, vs))
	wantAllOK(t, vs, out, err)
}

// TestNodeVerifierRefusesReplays has the Go verifier (its middlewares'
// CheckOnce) and node judge one sequence of requests, as one server
// would: a forgery carrying a signature (another body) first, the genuine
// request, the same again (a replay), the request with a new request id
// and with a new timestamp (what the proxy sends for a retry: accepted),
// and the first request again once its window has passed (expired, not a
// replay). Both must reach the same verdicts.
func TestNodeVerifierRefusesReplays(t *testing.T) {
	key := identity.Key{ID: "app-notes", Secret: []byte("0123456789abcdef0123456789abcdef")}
	s, err := identity.NewKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	start := time.UnixMilli(1796000012345)
	id := identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1", TenantID: "t-1", Permissions: []string{"notes:write"}}
	sign := func(rid string, at time.Time) http.Header {
		r, err := http.NewRequest("POST", "http://app/notes", strings.NewReader(`{"text":"once"}`))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(identity.HeaderRequestID, rid)
		r.Header.Set(identity.HeaderClientIP, "203.0.113.7")
		if err := verify.Sign(r, s, id, at); err != nil {
			t.Fatal(err)
		}
		return r.Header
	}
	first := sign("req-1", start)
	steps := []struct {
		name  string
		h     http.Header
		body  string
		now   time.Time
		error string // "" for valid
	}{
		{"a forgery with the signature", first, `{"text":"twice"}`, start, "signature"},
		{"the request", first, `{"text":"once"}`, start, ""},
		{"the request again", first, `{"text":"once"}`, start.Add(time.Second), "replay"},
		{"the request again at the end of the window", first, `{"text":"once"}`, start.Add(30 * time.Second), "replay"},
		{"a new request id", sign("req-2", start), `{"text":"once"}`, start, ""},
		{"a new timestamp", sign("req-1", start.Add(time.Millisecond)), `{"text":"once"}`, start.Add(time.Millisecond), ""},
		{"the request after its window", first, `{"text":"once"}`, start.Add(31 * time.Second), "expired"},
	}
	at := start
	ver, err := verify.New(verify.Config{Keys: []identity.Key{key}, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	for _, st := range steps {
		at = st.now
		got := ""
		if _, err := ver.CheckOnce(st.h.Get, "POST", "/notes", []byte(st.body)); err != nil {
			got = identity.Reason(err)
		}
		if got != st.error {
			t.Fatalf("Go, %s: %q, want %q", st.name, got, st.error)
		}
		v := vector{Name: st.name, KeyID: key.ID, KeySecret: base64.StdEncoding.EncodeToString(key.Secret), Method: "POST",
			PathQuery: "/notes", Body: st.body, Headers: map[string]string{}, NowMs: st.now.UnixMilli(),
			Signature: st.h.Get(identity.HeaderSignature), Valid: st.error == "", Error: st.error}
		for name := range st.h {
			if name != identity.HeaderSignature {
				v.Headers[name] = st.h.Get(name)
			}
		}
		if v.Valid {
			v.Canonical = string(identity.AppendCanonicalV2(nil, key.ID, &id, &identity.Request{
				Timestamp: mustInt(t, st.h.Get(identity.HeaderTimestamp)), RequestID: st.h.Get(identity.HeaderRequestID),
				ClientIP: "203.0.113.7", Method: "POST", PathQuery: "/notes", BodySHA256: sha256.Sum256([]byte(st.body))}))
			// node sends each valid one again: so does Go.
			if _, err := ver.CheckOnce(st.h.Get, "POST", "/notes", []byte(st.body)); !errors.Is(err, identity.ErrReplayed) {
				t.Fatalf("Go, %s sent again: %v", st.name, err)
			}
		}
		vs = append(vs, v)
	}
	out, err := runNode(t, writeVectors(t, vs))
	wantAllOK(t, vs, out, err)
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNodeReplaysBounded: verify.js's Replays holds at most its max
// entries; a new signature into a full one forgets the oldest early
// (counted in evicted), whose replay is then accepted, and keeps the
// newest; expired entries make room without counting.
func TestNodeReplaysBounded(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: %v", err)
	}
	const script = `
const { Replays } = require('./verify.js');
const r = new Replays(3);
const out = [];
for (const s of ['a', 'b', 'c']) out.push(r.firstUse(s, 30000, 0));
out.push(r.firstUse('a', 30000, 1));      // a replay
out.push(r.firstUse('d', 30000, 1));      // full: a is forgotten
out.push(r.evicted, r.seen.size);
out.push(r.firstUse('a', 30000, 2));      // forgotten early: accepted again (b goes)
out.push(r.firstUse('d', 30000, 2));      // the newest are kept
out.push(r.evicted);
out.push(r.firstUse('e', 60000, 30001));  // all others expired: no eviction
out.push(r.evicted, r.seen.size);
console.log(JSON.stringify(out));
`
	cmd := exec.Command(node, "-e", script)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, b)
	}
	const want = `[true,true,true,false,true,1,3,true,false,2,true,2,1]`
	if got := strings.TrimSpace(string(b)); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// TestNodeReplaysSweepBeforeEvicting: a full Replays looks past its
// oldest live entry for expired ones before it forgets a live signature
// early (whose replay would then be accepted): entries come in the order
// requests arrive, from proxies whose clocks differ, so expired ones can
// sit behind a live head. And a max that is no whole number is refused:
// NaN (an unset variable) never bounded the memory.
func TestNodeReplaysSweepBeforeEvicting(t *testing.T) {
	got := runScript(t, `
const { Replays } = require('./verify.js');
const r = new Replays(3);
const out = [];
out.push(r.firstUse('a', 60000, 0));  // a live head
out.push(r.firstUse('b', 10, 0), r.firstUse('c', 10, 0));
out.push(r.firstUse('d', 60000, 20)); // full, b and c expired behind a
out.push(r.evicted, r.seen.size);
out.push(r.firstUse('a', 60000, 21)); // still remembered: a replay
for (const m of [NaN, 0, -1, 2.5, '3']) {
  try { new Replays(m); out.push('accepted'); } catch (e) { out.push(e.name); }
}
console.log(JSON.stringify(out));
`)
	const want = `[true,true,true,true,0,2,false,"TypeError","TypeError","TypeError","TypeError","TypeError"]`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// runScript runs a node program in this directory with env added and
// returns its trimmed output.
func runScript(t *testing.T, script string, env ...string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: %v", err)
	}
	cmd := exec.Command(node, "-e", script)
	cmd.Env = append(cmd.Environ(), env...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, b)
	}
	return strings.TrimSpace(string(b))
}

// TestNodeVerifierRefusesShortKeys: a secret in verify()'s Map shorter
// than a key's 32 bytes is no key. An app that built the Map from an
// unset variable (decoded with Buffer.from, an empty Buffer) or a
// mistyped one (Node's base64 decoder skips what it cannot read) accepted
// every request signed with that short secret, which anybody can compute:
// each is refused (bad_key), and a request signed with the 32-byte key
// still verifies.
func TestNodeVerifierRefusesShortKeys(t *testing.T) {
	now := int64(1796000012345)
	id := identity.Identity{Principal: identity.PrincipalUser, UserID: "u-1", TenantID: "t-1", Permissions: []string{"notes:write"}}
	req := identity.Request{Timestamp: now, RequestID: "req-1", ClientIP: "203.0.113.7", Method: "GET", PathQuery: "/notes", BodySHA256: identity.EmptyBodySHA256}
	var cases []map[string]string
	for _, secret := range []string{"", "x", "0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef"} {
		h := http.Header{}
		identity.EachHeader("app-notes", &id, &req, h.Set)
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(rawCanonical(h, "GET", "/notes")))
		h.Set(identity.HeaderSignature, "v2="+base64.RawURLEncoding.EncodeToString(m.Sum(nil)))
		c := map[string]string{"secret": base64.StdEncoding.EncodeToString([]byte(secret))}
		for name := range h {
			c[strings.ToLower(name)] = h.Get(name)
		}
		cases = append(cases, c)
	}
	js, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	const script = `
const { verify } = require('./verify.js');
console.log(JSON.stringify(JSON.parse(process.env.CASES).map(({ secret, ...h }) => {
  try {
    verify(h, 'GET', '/notes', Buffer.alloc(0), new Map([['app-notes', Buffer.from(secret, 'base64')]]), Number(process.env.NOW_MS), 30000, false);
    return 'valid';
  } catch (e) { return e.code || String(e); }
})));
`
	got := runScript(t, script, "CASES="+string(js), "NOW_MS="+strconv.FormatInt(now, 10))
	if want := `["bad_key","bad_key","bad_key","valid"]`; got != want {
		t.Fatalf("secrets of 0, 1, 31 and 32 bytes: got %s, want %s", got, want)
	}
}

// TestNodeParseKeysAgreesWithGo: verify.js's parseKeys reads a key list
// (TOLLGATE_IDENTITY_KEYS) as identity.ParseKeys does: the same keys from
// the same text, and an error where Go refuses it (a short or empty
// secret, text that is not base64, a bad or repeated id). Around a
// secret, Go also trims the white space that is no separator (a vertical
// tab, a form feed, Unicode spaces): parseKeys refused such a list,
// which the Go SDK reads.
func TestNodeParseKeysAgreesWithGo(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef\xfb\xff")
	std, raw := base64.StdEncoding.EncodeToString(secret), base64.RawStdEncoding.EncodeToString(secret)
	url, rawURL := base64.URLEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret)
	short := base64.StdEncoding.EncodeToString(secret[:31])
	inputs := []string{
		"app:" + std, "app:" + raw, "app:" + url, "app:" + rawURL,
		"a:" + std + ",b:" + rawURL, "a:" + std + " b:" + raw + "\nc:" + url + "\r\n\td:" + rawURL + ",",
		"", " , ", "app", "app:", ":" + std, "app:" + short, "app:" + std[:len(std)-2], "app:" + raw[:len(raw)-1],
		"app:" + std + "=", "app:" + raw + "=", "app:" + std + "==", "app:" + strings.Replace(std, "+", "-", 1),
		"app:" + std[:10] + "!" + std[11:], "app:" + std + ",app:" + std, "app key:" + std, strings.Repeat("k", 65) + ":" + std,
		"app:" + std + ":x", "app:" + std + "\x00",
		// White space other than the separators around a secret, which Go
		// trims (strings.TrimSpace), and inside one or around an id, which
		// it refuses; a byte order mark is no space to Go.
		"app:" + std + "\v", "app:\f" + raw, "app:\u00a0" + url + "\u0085", "app:" + rawURL + "\u2028\u3000", "app:\u2000" + std,
		"app:" + std[:8] + "\v" + std[8:], "app\v:" + std, "\u00a0app:" + std, "app:\ufeff" + std, "app:" + std + "\ufeff",
	}
	js, err := json.Marshal(inputs)
	if err != nil {
		t.Fatal(err)
	}
	const script = `
const { parseKeys } = require('./verify.js');
console.log(JSON.stringify(JSON.parse(process.env.INPUTS).map((text) => {
  try { return Object.fromEntries([...parseKeys(text)].map(([id, s]) => [id, s.toString('hex')])); }
  catch (e) { return null; }
})));
`
	var got []map[string]string
	if err := json.Unmarshal([]byte(runScript(t, script, "INPUTS="+string(js))), &got); err != nil || len(got) != len(inputs) {
		t.Fatalf("node's answer: %v (%d of %d)", err, len(got), len(inputs))
	}
	for i, text := range inputs {
		keys, err := identity.ParseKeys(text)
		var want map[string]string
		if err == nil {
			want = map[string]string{}
			for _, k := range keys {
				want[k.ID] = hex.EncodeToString(k.Secret)
			}
		}
		if fmt.Sprint(got[i]) != fmt.Sprint(want) {
			t.Errorf("%q: node %v, Go %v (err %v)", text, got[i], want, err)
		}
	}
}

// TestNodeIdentityAgreesWithGo: what verify() returns for a request it
// accepts is the caller as the Go middleware hands it to a handler
// (verify.Identity): every field, lists as the elements between commas,
// empty lists empty. verify() returned the principal, user and tenant
// only, which left each app to split the roles, permissions and methods
// out of the headers itself (and to test a permission as a substring of
// the header, which "notes:write-all" passes for "notes:write").
func TestNodeIdentityAgreesWithGo(t *testing.T) {
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
	ids := []identity.Identity{
		{},
		{Principal: identity.PrincipalAPIKey, UserID: "u-1", TenantID: "t-1", Permissions: []string{"notes:write-all"}},
		{Principal: identity.PrincipalService, UserID: "sa-1", TenantID: "t-2", Permissions: []string{"a:b", "c:d"}},
		{Principal: identity.PrincipalUser, UserID: "u-2", TenantID: "t-3", SessionID: "s-9", Roles: []string{"owner", "member"},
			Permissions: []string{"notes:read", "notes:write"}, EmailVerified: true, AMR: []string{"pwd", "otp"}, AuthTime: 1795999000},
		// The largest auth time both accept: node's number is the one signed.
		{Principal: identity.PrincipalUser, UserID: "u-3", TenantID: "t-3", SessionID: "s-8", EmailVerified: true, AuthTime: identity.MaxAuthTime},
	}
	// Node's answer in the shape of verify.Identity, AuthTime in seconds.
	type ident struct {
		Principal, UserID, TenantID, SessionID string
		Roles, Permissions, AMR                []string
		EmailVerified                          bool
		AuthTime                               int64
		ClientIP, RequestID, KeyID             string
	}
	var cases []map[string]string
	var want []ident
	for i, id := range ids {
		r, err := http.NewRequest("GET", "http://app/notes", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(identity.HeaderRequestID, fmt.Sprintf("req-%d", i))
		r.Header.Set(identity.HeaderClientIP, "2001:db8::7")
		if err := verify.Sign(r, s, id, now); err != nil {
			t.Fatal(err)
		}
		got, err := ver.Check(r.Header.Get, "GET", "/notes", nil)
		if err != nil {
			t.Fatal(err)
		}
		w := ident{Principal: got.Principal, UserID: got.UserID, TenantID: got.TenantID, SessionID: got.SessionID,
			Roles: got.Roles, Permissions: got.Permissions, AMR: got.AMR, EmailVerified: got.EmailVerified,
			ClientIP: got.ClientIP, RequestID: got.RequestID, KeyID: got.KeyID}
		if !got.AuthTime.IsZero() {
			w.AuthTime = got.AuthTime.Unix()
		}
		want = append(want, w)
		c := map[string]string{}
		for name := range r.Header {
			c[strings.ToLower(name)] = r.Header.Get(name)
		}
		cases = append(cases, c)
	}
	js, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	const script = `
const { verify } = require('./verify.js');
const keys = new Map([['app-notes', Buffer.from('0123456789abcdef0123456789abcdef')]]);
console.log(JSON.stringify(JSON.parse(process.env.CASES).map((h) => {
  const id = verify(h, 'GET', '/notes', Buffer.alloc(0), keys, Number(process.env.NOW_MS), 30000, false);
  return { Principal: id.principal, UserID: id.userId, TenantID: id.tenantId, SessionID: id.sessionId,
    Roles: id.roles, Permissions: id.permissions, AMR: id.amr, EmailVerified: id.emailVerified,
    AuthTime: id.authTime, ClientIP: id.clientIp, RequestID: id.requestId, KeyID: id.keyId };
})));
`
	var got []ident
	out := runScript(t, script, "CASES="+string(js), "NOW_MS="+strconv.FormatInt(now.UnixMilli(), 10))
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != len(want) {
		t.Fatalf("node's answer %s: %v", out, err)
	}
	for i := range want {
		// Go's empty list is nil, node's []: both are no element.
		for _, l := range []*[]string{&want[i].Roles, &want[i].Permissions, &want[i].AMR, &got[i].Roles, &got[i].Permissions, &got[i].AMR} {
			if len(*l) == 0 {
				*l = nil
			}
		}
		if fmt.Sprintf("%#v", got[i]) != fmt.Sprintf("%#v", want[i]) {
			t.Errorf("identity %d:\nnode %#v\nGo   %#v", i, got[i], want[i])
		}
	}
}

// TestNodeVerifierNeedsItsClock: verify() compared the timestamp with
// nowMs and windowMs as given, and NaN compares false: an app that left the
// clock out (verify(h, method, url, body, keys)), or passed something that
// is no number of milliseconds, accepted a signature of any age, and its
// Replays, judging expiry with the same NaN, took each replay for a first
// use. A clock left out is now Date.now(), as the Go SDK's Config.Now is
// time.Now; any other clock or window that is not a whole number of
// milliseconds throws a TypeError, which an app answers as any refusal.
func TestNodeVerifierNeedsItsClock(t *testing.T) {
	const script = `
const { verify, Replays, parseKeys } = require('./verify.js');
const vs = JSON.parse(require('node:fs').readFileSync(process.env.VECTORS, 'utf8'));
const out = {};
for (const name of ['user GET', 'timestamp 31 s old']) {
  const v = vs.find((x) => x.name === name);
  const h = Object.fromEntries(Object.entries(v.headers).map(([k, x]) => [k.toLowerCase(), x]));
  h['x-auth-signature'] = v.signature;
  const keys = parseKeys(v.key_id + ':' + v.key_secret_base64);
  const replays = new Replays();
  const run = (...args) => {
    try { verify(h, v.method, v.path_query, Buffer.from(v.body, 'utf8'), keys, ...args); return 'valid'; }
    catch (e) { return e.code || e.name; }
  };
  out[name] = [
    run(undefined, undefined, false), run(undefined, undefined, replays), run(undefined, undefined, replays), run(NaN, 30000, replays),
    run(NaN, 30000, replays), run('x', 30000), run(String(v.now_ms), 30000), run(Infinity, 30000),
    run(v.now_ms, NaN, replays), run(v.now_ms, -1), run(v.now_ms, Infinity), run(v.now_ms, 30000, replays),
  ];
}
console.log(JSON.stringify(out));
`
	got := runScript(t, script, "VECTORS="+vectorsPath)
	// Both vectors were signed before this test was written: at the real
	// clock, both are stale. With the vector's clock, the first is valid
	// once and the second stale.
	const want = `{"user GET":["expired","expired","expired","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","valid"],` +
		`"timestamp 31 s old":["expired","expired","expired","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","expired"]}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// TestNodeVerifierRefusesReplaysUnlessToldNotTo: verify() remembered
// nothing unless the app passed a Replays, so an app that called it as
// verify(h, method, url, body, keys) accepted the same captured request
// as often as it came within the window, where the Go SDK refuses it by
// default (verify.Config.AllowReplays turns that off). Its replay filter
// is now a decision the app makes: a Replays (one per process), or false
// to accept replays; left out, or anything else, is a TypeError, as a
// clock that is no number is.
func TestNodeVerifierRefusesReplaysUnlessToldNotTo(t *testing.T) {
	const script = `
const { verify, Replays, parseKeys } = require('./verify.js');
const vs = JSON.parse(require('node:fs').readFileSync(process.env.VECTORS, 'utf8'));
const v = vs.find((x) => x.name === 'user GET');
const h = Object.fromEntries(Object.entries(v.headers).map(([k, x]) => [k.toLowerCase(), x]));
h['x-auth-signature'] = v.signature;
const keys = parseKeys(v.key_id + ':' + v.key_secret_base64);
const run = (...args) => {
  try { verify(h, v.method, v.path_query, Buffer.from(v.body, 'utf8'), keys, v.now_ms, ...args); return 'valid'; }
  catch (e) { return e.code || e.name; }
};
const replays = new Replays();
console.log(JSON.stringify([
  run(), run(), run(30000), run(30000), run(30000, null), run(30000, {}), run(30000, true),
  run(30000, replays), run(30000, replays), run(undefined, replays),
  run(30000, false), run(30000, false),
]));
`
	got := runScript(t, script, "VECTORS="+vectorsPath)
	const want = `["TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError",` +
		`"valid","replay","replay","valid","valid"]`
	if got != want {
		t.Fatalf("no filter (twice), the window only (twice), null, {}, true, a Replays (three times), false (twice):\ngot  %s\nwant %s", got, want)
	}
}

// TestNodeParseKeysErrorsNameNoText: parseKeys names a bad entry by its
// position only, as identity.ParseKeys does. An entry written backwards
// ("secret:id") has a URL-safe secret where the id goes: the error
// printed it ("identity keys: entry 1 (q83vEjRW…): not valid base64").
func TestNodeParseKeysErrorsNameNoText(t *testing.T) {
	secret := base64.RawURLEncoding.EncodeToString([]byte("q\xcd\xef\x12\x34\x56\x78\x9a0123456789abcdef01234567"))
	inputs := []string{
		secret + ":app-notes",
		"app-notes:" + secret + "," + secret + ":app-old",
		secret + ":" + secret + "," + secret + ":" + secret,
	}
	js, err := json.Marshal(inputs)
	if err != nil {
		t.Fatal(err)
	}
	const script = `
const { parseKeys } = require('./verify.js');
console.log(JSON.stringify(JSON.parse(process.env.INPUTS).map((text) => {
  try { parseKeys(text); return 'parsed'; } catch (e) { return e.message; }
})));
`
	var got []string
	if err := json.Unmarshal([]byte(runScript(t, script, "INPUTS="+string(js))), &got); err != nil || len(got) != len(inputs) {
		t.Fatalf("node's answer: %v %q", err, got)
	}
	for i, msg := range got {
		if strings.Contains(msg, secret[:8]) || !strings.Contains(msg, "entry ") {
			t.Errorf("parseKeys(%q): %q; want an error naming the entry, not its text", inputs[i], msg)
		}
	}
}
