// Package testenv provides the real parts the proxy's tests run against: a
// stand-in for coreapi (a real HTTP server serving a JWKS, the internal
// projection endpoint with signature checks, and an echo route that records
// and verifies the identity headers it receives), signing keys and tokens
// made with jwx, and an in-process NATS server. It is imported only by
// tests.
package testenv

import (
	"bufio"
	"cmp"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/replay"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// HMACKey is the core identity key shared by the proxy under test and Core.
var HMACKey = []byte("tollgate-test-key-0123456789abcdef!!")

// HMACKeyText is HMACKey as IDENTITY_HMAC_KEY text (legacy: key id core).
var HMACKeyText = base64.StdEncoding.EncodeToString(HMACKey)

// CoreKey is HMACKey under the id the legacy variable gives it.
var CoreKey = identity.Key{ID: "core", Secret: HMACKey}

// AppKey is the key of the app upstream in tests.
var AppKey = identity.Key{ID: "app-notes", Secret: []byte("tollgate-app-key-notes-0123456789abcdef")}

// OtherAppKeys are the keys of further app upstreams in tests (each
// upstream at its own address has a key of its own).
var OtherAppKeys = []identity.Key{
	{ID: "app-two", Secret: []byte("tollgate-app-key-two-0123456789abcdef")},
	{ID: "app-three", Secret: []byte("tollgate-app-key-three-0123456789abcdef")},
}

// AppKeysText is AppKey and OtherAppKeys as UPSTREAM_KEYS text.
var AppKeysText = func() string {
	s := AppKey.ID + ":" + base64.StdEncoding.EncodeToString(AppKey.Secret)
	for _, k := range OtherAppKeys {
		s += "," + k.ID + ":" + base64.StdEncoding.EncodeToString(k.Secret)
	}
	return s
}()

// Issuer and Audience of test tokens.
const (
	Issuer   = "http://localhost:8080"
	Audience = "tollgate"
)

// Key is a signing key.
type Key struct {
	Kid     string
	Alg     jwa.SignatureAlgorithm
	Private any
	Public  any
	// Ops, when not nil, is published as the JWK's key_ops.
	Ops []string
}

// NewKey generates a key for alg (EdDSA, ES256 or RS256).
func NewKey(t testing.TB, kid string, alg jwa.SignatureAlgorithm) *Key {
	t.Helper()
	k := &Key{Kid: kid, Alg: alg}
	switch alg {
	case jwa.EdDSA:
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k.Private, k.Public = priv, pub
	case jwa.ES256:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k.Private, k.Public = priv, &priv.PublicKey
	case jwa.RS256:
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		k.Private, k.Public = priv, &priv.PublicKey
	default:
		t.Fatalf("unsupported alg %s", alg)
	}
	return k
}

// JWK returns the public JWK of k.
func (k *Key) JWK(t testing.TB) jwk.Key {
	t.Helper()
	j, err := jwk.FromRaw(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	_ = j.Set(jwk.KeyIDKey, k.Kid)
	_ = j.Set(jwk.AlgorithmKey, k.Alg)
	_ = j.Set(jwk.KeyUsageKey, "sig")
	return j
}

// Claims of a test token; zero fields get sane defaults from Mint.
type Claims map[string]any

// Header overrides of a test token.
type Header map[string]any

// DefaultClaims returns valid claims for user/tenant/session at now.
func DefaultClaims(now time.Time, sub, tid, sid string) Claims {
	return Claims{"iss": Issuer, "aud": Audience, "sub": sub, "tid": tid, "sid": sid, "tv": 0,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(), "jti": newID()}
}

// Sign signs claims with k, header typ at+jwt and kid k.Kid unless hdr
// overrides them (a nil value removes a header).
func Sign(t testing.TB, k *Key, c Claims, hdr Header) string {
	t.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	h := jws.NewHeaders()
	_ = h.Set(jws.KeyIDKey, k.Kid)
	_ = h.Set(jws.TypeKey, "at+jwt")
	for name, v := range hdr {
		if v == nil {
			_ = h.Remove(name)
			continue
		}
		_ = h.Set(name, v)
	}
	tok, err := jws.Sign(payload, jws.WithKey(k.Alg, k.Private, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// Unsigned builds a compact token with the given header and claims and a
// raw signature part, for forgeries jwx refuses to make (alg none, HS256
// with a public key, tampered payloads).
func Unsigned(t testing.TB, hdr Header, c Claims, sig string) string {
	t.Helper()
	hb, _ := json.Marshal(hdr)
	cb, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb) + "." + sig
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x", b)
}

// Received is what the echo route saw.
type Received struct {
	Method, URI string
	Headers     map[string][]string // canonical name -> values
	Body        []byte
	// Identity is what the v2 signature asserts (KeyID names the key
	// that verified it), when VerifyErr is nil.
	Identity  identity.Identity
	VerifyErr error
	Signed    bool
}

// Core stands in for coreapi, or (NewApp) for an app behind the proxy.
type Core struct {
	Addr string
	tls  bool // serving https
	// echoV verifies what the echo route receives; coreV the proxy's own
	// calls (core key only).
	echoV, coreV *identity.Verifier
	// replays refuses a signature of the proxy's own calls seen before,
	// as coreapi does.
	replays *replay.Cache
	app     *fiber.App
	// Skew is added to the clock the signatures are verified at.
	Skew atomic.Int64

	mu          sync.Mutex
	keys        []*Key
	projections map[string]*identity.Projection
	received    []Received
	jwksStatus  int
	projTrace   []string // the traceparent of each projection fetch

	// ProjectionFetches counts authenticated projection requests.
	ProjectionFetches atomic.Int64
	// ProjectionAnswer, when set, answers every authenticated projection
	// request (something other than coreapi's projection route at its
	// address).
	ProjectionAnswer atomic.Pointer[Answer]
	// JWKSFetches counts key set requests.
	JWKSFetches atomic.Int64
	// ProjectionGate, when set, is received from before a projection is
	// answered: the test decides when a fetch completes.
	ProjectionGate atomic.Pointer[chan struct{}]
	// SlowGate, when set, holds /api/v1/users/slow's answer until closed.
	SlowGate atomic.Pointer[chan struct{}]
	// StreamGate, when set, holds the second chunk of /api/v1/users/stream.
	StreamGate atomic.Pointer[chan struct{}]
	// ProjectionStarted, when set, gets a value when a projection fetch
	// starts waiting at the gate.
	ProjectionStarted atomic.Pointer[chan struct{}]

	apiKeys map[string]*apiKey // by public id
	used    []string
	// keyClients: the client_ip of each authenticated resolve, in order.
	keyClients []string
	keyTrace   []string // the traceparent of each authenticated resolve
	keyReqIDs  []string // the X-Request-Id of each authenticated resolve
	// KeyAnswer, when set, answers every authenticated resolve (something
	// other than coreapi's resolve at its address).
	KeyAnswer atomic.Pointer[Answer]
	// KeyFetches counts authenticated API-key resolves.
	KeyFetches atomic.Int64
	// KeyGate, when set, is received from before a resolve is answered.
	KeyGate atomic.Pointer[chan struct{}]
	// UsedGate, when set, is received from before a usage report is
	// recorded and answered.
	UsedGate atomic.Pointer[chan struct{}]
	// UsedStatus, when not 0, answers usage reports with that status,
	// recording nothing (coreapi failing).
	UsedStatus atomic.Int32
	// EchoStatus, when not 0, is the status of the echo route's answers
	// (a write coreapi refused, or failed), recorded as ever.
	EchoStatus atomic.Int32
	// EchoInvalidated, when set, is the X-Auth-Invalidated of the echo
	// route's answers (what coreapi names as invalidated by a request).
	EchoInvalidated atomic.Pointer[string]
}

// apiKey is a key the stand-in resolves like coreapi: the whole secret,
// the projection answered, and whether it is revoked or expired (410).
type apiKey struct {
	secret  string
	p       apikey.Projection
	revoked bool
}

// NewCore starts a Core on 127.0.0.1:0 accepting the core key; it stops
// with the test.
func NewCore(t testing.TB) *Core { return newCore(t, CoreKey) }

// NewApp starts a Core standing in for an app: its echo route accepts only
// AppKey.
func NewApp(t testing.TB) *Core { return newCore(t, AppKey) }

// NewCoreIPv6 is NewCore on [::1] (an IDENTITY_URL at an IPv6 address);
// the test is skipped where there is no IPv6 loopback.
func NewCoreIPv6(t testing.TB) *Core { return newCoreOn(t, CoreKey, nil, listenIPv6(t)) }

// NewAppIPv6 is NewApp on [::1] (an app upstream at an IPv6 address); the
// test is skipped where there is no IPv6 loopback.
func NewAppIPv6(t testing.TB) *Core { return newCoreOn(t, AppKey, nil, listenIPv6(t)) }

// listenIPv6 listens on [::1], or skips the test where the host has no
// IPv6 loopback.
func listenIPv6(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	return ln
}

func newCore(t testing.TB, echoKey identity.Key) *Core {
	t.Helper()
	return newCoreTLS(t, echoKey, nil)
}

// newCoreTLS is newCore, serving TLS with cfg when it is not nil.
func newCoreTLS(t testing.TB, echoKey identity.Key, cfg *tls.Config) *Core {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newCoreOn(t, echoKey, cfg, ln)
}

// newCoreOn is newCoreTLS serving on ln.
func newCoreOn(t testing.TB, echoKey identity.Key, cfg *tls.Config, ln net.Listener) *Core {
	t.Helper()
	coreV, err := identity.NewVerifier([]identity.Key{CoreKey}, 0)
	if err != nil {
		t.Fatal(err)
	}
	echoV, err := identity.NewVerifier([]identity.Key{echoKey}, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &Core{echoV: echoV, coreV: coreV, replays: replay.New(1 << 14), projections: map[string]*identity.Projection{}, jwksStatus: 200, apiKeys: map[string]*apiKey{}}
	// The echo route takes a few methods outside the standard ones too,
	// as an app serving WebDAV or QUERY does.
	app := fiber.New(fiber.Config{DisableStartupMessage: true, ReadBufferSize: 16 << 10,
		RequestMethods: slices.Concat(fiber.DefaultMethods, ExtensionMethods())})
	app.Get("/.well-known/jwks.json", c.jwks)
	app.Get(identity.ProjectionPath+"/:user", c.projection)
	app.Post(apikey.ResolvePath, c.resolveKey)
	app.Post(apikey.UsedPath, c.keysUsed)
	// The stream and slow routes under a core prefix and under an app's.
	for _, p := range []string{"/api/v1/users", "/app"} {
		app.Get(p+"/stream", c.stream)
		app.Get(p+"/slow", c.slow)
	}
	// A static answer that records nothing, for benchmarks (under a core
	// prefix and under an app's).
	bench := func(ctx *fiber.Ctx) error { return ctx.SendString(`{"ok":true}`) }
	app.Get("/api/v1/users/bench", bench)
	app.Get("/bench", bench)
	app.All("/*", c.echo)
	c.Addr = ln.Addr().String()
	if cfg != nil {
		ln, c.tls = tls.NewListener(ln, cfg), true
	}
	c.app = app
	go func() { _ = app.Listener(ln) }()
	// At the test's end the Core stops in the background: a graceful
	// shutdown with a connection still open (the proxy's pooled ones)
	// waits for the server's 100 ms poll, and nothing of the test needs
	// it gone (Shutdown, for a test of an unreachable coreapi, still
	// waits).
	t.Cleanup(func() { go func() { _ = app.ShutdownWithTimeout(2 * time.Second) }() })
	return c
}

// ExtensionMethods are the methods outside the standard nine that a Core's
// echo route answers.
func ExtensionMethods() []string { return []string{"PROPFIND", "MKCOL", "REPORT", "QUERY", "PURGE"} }

// URL is the Core's base URL.
func (c *Core) URL() string {
	if c.tls {
		return "https://" + c.Addr
	}
	return "http://" + c.Addr
}

// Shutdown stops the Core (to test an unreachable coreapi).
func (c *Core) Shutdown() { _ = c.app.ShutdownWithTimeout(2 * time.Second) }

// Publish sets the keys served in the JWKS.
func (c *Core) Publish(keys ...*Key) {
	c.mu.Lock()
	c.keys = keys
	c.mu.Unlock()
}

// SetJWKSStatus makes the JWKS endpoint answer with status (200 = normal).
func (c *Core) SetJWKSStatus(status int) {
	c.mu.Lock()
	c.jwksStatus = status
	c.mu.Unlock()
}

// SetProjection stores the projection served for p.UserID in p.TenantID.
func (c *Core) SetProjection(p identity.Projection) {
	c.mu.Lock()
	c.projections[p.UserID+"/"+p.TenantID] = &p
	c.mu.Unlock()
}

// SetProjectionAt serves p for (user, tenant), whatever p says.
func (c *Core) SetProjectionAt(user, tenant string, p identity.Projection) {
	c.mu.Lock()
	c.projections[user+"/"+tenant] = &p
	c.mu.Unlock()
}

// DeleteProjection removes a membership.
func (c *Core) DeleteProjection(user, tenant string) {
	c.mu.Lock()
	delete(c.projections, user+"/"+tenant)
	c.mu.Unlock()
}

// ProjectionTraceparents are the traceparent headers of the projection
// fetches so far ("" for one without).
func (c *Core) ProjectionTraceparents() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.projTrace...)
}

// Received returns a copy of what the echo route has seen.
func (c *Core) Received() []Received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Received(nil), c.received...)
}

// Last returns the last echo request (fails the test if none).
func (c *Core) Last(t testing.TB) Received {
	t.Helper()
	r := c.Received()
	if len(r) == 0 {
		t.Fatal("upstream received nothing")
	}
	return r[len(r)-1]
}

// Reset forgets received requests.
func (c *Core) Reset() {
	c.mu.Lock()
	c.received = nil
	c.mu.Unlock()
}

func (c *Core) jwks(ctx *fiber.Ctx) error {
	c.JWKSFetches.Add(1)
	c.mu.Lock()
	keys, status := c.keys, c.jwksStatus
	c.mu.Unlock()
	if status != 200 {
		return ctx.SendStatus(status)
	}
	set := jwk.NewSet()
	for _, k := range keys {
		j, err := jwk.FromRaw(k.Public)
		if err != nil {
			return err
		}
		_ = j.Set(jwk.KeyIDKey, k.Kid)
		_ = j.Set(jwk.AlgorithmKey, k.Alg)
		_ = j.Set(jwk.KeyUsageKey, "sig")
		if k.Ops != nil {
			ops := jwk.KeyOperationList{}
			for _, op := range k.Ops {
				ops = append(ops, jwk.KeyOperation(op))
			}
			if err := j.Set(jwk.KeyOpsKey, ops); err != nil {
				return err
			}
		}
		_ = set.AddKey(j)
	}
	return ctx.JSON(set)
}

func (c *Core) now() time.Time { return time.Now().Add(time.Duration(c.Skew.Load())) }

func (c *Core) projection(ctx *fiber.Ctx) error {
	id, err := c.coreV.Verify(c.now(), func(name string) string { return ctx.Get(name) }, ctx.Method(), ctx.OriginalURL(), sha256.Sum256(ctx.Body()))
	if err == nil && (id.Principal != identity.PrincipalAnonymous || id.UserID != "") {
		err = fmt.Errorf("projection fetch with identity %+v", id)
	}
	if err == nil && ctx.Get(identity.HeaderRequestID) == "" { // as coreapi refuses it
		err = errors.New("projection fetch without a request id")
	}
	if err == nil {
		err = c.replayed(ctx)
	}
	if err != nil {
		return ctx.Status(401).JSON(fiber.Map{"code": "invalid_signature", "detail": err.Error()})
	}
	c.ProjectionFetches.Add(1)
	c.mu.Lock()
	c.projTrace = append(c.projTrace, ctx.Get("Traceparent"))
	c.mu.Unlock()
	if started := c.ProjectionStarted.Load(); started != nil {
		*started <- struct{}{}
	}
	if gate := c.ProjectionGate.Load(); gate != nil {
		<-*gate
	}
	if a := c.ProjectionAnswer.Load(); a != nil {
		ctx.Set("Content-Type", a.ContentType)
		return ctx.Status(a.Status).SendString(a.Body)
	}
	c.mu.Lock()
	p, ok := c.projections[ctx.Params("user")+"/"+ctx.Query("tenant_id")]
	var cp identity.Projection
	if ok {
		cp = *p
	}
	c.mu.Unlock()
	if !ok { // as coreapi answers it
		return problemStatus(ctx, 404, "no_membership")
	}
	return ctx.JSON(cp)
}

// slow answers once SlowGate is closed (at most 10 s).
func (c *Core) slow(ctx *fiber.Ctx) error {
	if gate := c.SlowGate.Load(); gate != nil {
		select {
		case <-*gate:
		case <-time.After(10 * time.Second):
		}
	}
	return ctx.SendString("slow")
}

// StreamChunk is the size of each of the two chunks /api/v1/stream sends.
const StreamChunk = 64 << 10

// stream sends one chunk, waits for StreamGate (if set), then sends the
// second: a proxy that buffers whole responses cannot deliver the first
// chunk before the gate opens.
func (c *Core) stream(ctx *fiber.Ctx) error {
	gate := c.StreamGate.Load()
	ctx.Set("Content-Type", "application/octet-stream")
	chunk := []byte(strings.Repeat("x", StreamChunk))
	ctx.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		_, _ = w.Write(chunk)
		_ = w.Flush()
		if gate != nil {
			<-*gate
		}
		_, _ = w.Write(chunk)
		_ = w.Flush()
	})
	return nil
}

func (c *Core) echo(ctx *fiber.Ctx) error {
	r := Received{Method: strings.Clone(ctx.Method()), URI: string(ctx.Request().Header.RequestURI()), Headers: map[string][]string{},
		Body: append([]byte(nil), ctx.Body()...)}
	for k, v := range ctx.Request().Header.All() {
		name := string(k)
		r.Headers[name] = append(r.Headers[name], string(v))
	}
	h := ctx.Get
	if h(identity.HeaderTimestamp) != "" || h(identity.HeaderSignature) != "" {
		r.Signed = true
		r.Identity, r.VerifyErr = c.echoV.Verify(c.now(), func(name string) string { return strings.Clone(h(name)) },
			ctx.Method(), ctx.OriginalURL(), sha256.Sum256(ctx.Body()))
	}
	c.mu.Lock()
	c.received = append(c.received, r)
	c.mu.Unlock()
	if v := c.EchoInvalidated.Load(); v != nil {
		ctx.Set(invalidation.HeaderInvalidated, *v)
	}
	if st := c.EchoStatus.Load(); st != 0 {
		return problemStatus(ctx, int(st), "echo_status")
	}
	return ctx.JSON(fiber.Map{"ok": true, "uri": r.URI})
}

// NATS is an in-process NATS server on a random port that can be stopped
// and restarted on the same port.
type NATS struct {
	t    testing.TB
	Port int
	srv  *natsserver.Server
}

// StartNATS starts a NATS server on 127.0.0.1 and a random port.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{t: t, Port: -1}
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// URL is the client URL.
func (n *NATS) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.Port) }

// Start (re)starts the server on n.Port (-1: random, remembered).
func (n *NATS) Start() {
	n.t.Helper()
	opts := &natsserver.Options{Host: "127.0.0.1", Port: n.Port, NoLog: true, NoSigs: true, MaxControlLine: 4096}
	s, err := natsserver.NewServer(opts)
	if err != nil {
		n.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		n.t.Fatal("nats server not ready")
	}
	n.srv = s
	n.Port = s.Addr().(*net.TCPAddr).Port
}

// Stop shuts the server down.
func (n *NATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// Eventually polls cond until it returns nil, for up to 10 s
// (eventually.Within); on timeout the test fails with cond's last error,
// which says what it saw (Want, WantAtLeast, WantAbove and Contains build
// such errors).
func Eventually(t testing.TB, cond func() error) {
	t.Helper()
	eventually.Within(t, 10*time.Second, cond)
}

// Want is nil when got equals want, else an error naming what and both
// values.
func Want[T comparable](what string, got, want T) error {
	if got == want {
		return nil
	}
	return fmt.Errorf("%s = %v, want %v", what, got, want)
}

// WantAtLeast is nil when got >= min, else an error naming what and both
// values.
func WantAtLeast[T cmp.Ordered](what string, got, min T) error {
	if got >= min {
		return nil
	}
	return fmt.Errorf("%s = %v, want at least %v", what, got, min)
}

// WantAbove is nil when got > floor, else an error naming what and both
// values.
func WantAbove[T cmp.Ordered](what string, got, floor T) error {
	if got > floor {
		return nil
	}
	return fmt.Errorf("%s = %v, want more than %v", what, got, floor)
}

// Contains is nil when s contains every one of subs, else an error naming
// what and the first missing one.
func Contains(what, s string, subs ...string) error {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return fmt.Errorf("%s lacks %q", what, sub)
		}
	}
	return nil
}

// SetAPIKey makes the stand-in resolve secret (a whole key) to p (its
// PublicID is set from the secret); revoked answers 410 instead.
func (c *Core) SetAPIKey(secret string, p apikey.Projection, revoked bool) {
	pid, ok := apikey.Parse([]byte(secret))
	if !ok {
		panic("testenv: not an API key: " + secret)
	}
	p.PublicID = string(pid)
	c.mu.Lock()
	c.apiKeys[string(pid)] = &apiKey{secret: secret, p: p, revoked: revoked}
	c.mu.Unlock()
}

// KeyClients returns the client_ip of every authenticated API-key
// resolve so far, in order.
func (c *Core) KeyClients() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.keyClients...)
}

// KeyRequestIDs are the X-Request-Id headers of the authenticated
// API-key resolves so far.
func (c *Core) KeyRequestIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.keyReqIDs...)
}

// Answer is a canned answer: a status, a Content-Type and a body.
type Answer struct {
	Status            int
	ContentType, Body string
}

// KeyTraceparents are the traceparent headers of the authenticated
// API-key resolves so far ("" for one without).
func (c *Core) KeyTraceparents() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.keyTrace...)
}

// UsedKeys returns the public ids reported used so far.
func (c *Core) UsedKeys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.used...)
}

// verifyService checks a proxy's own call (core key, empty identity).
func (c *Core) verifyService(ctx *fiber.Ctx) error {
	id, err := c.coreV.Verify(c.now(), func(name string) string { return ctx.Get(name) }, ctx.Method(), ctx.OriginalURL(), sha256.Sum256(ctx.Body()))
	if err == nil && (id.Principal != identity.PrincipalAnonymous || id.UserID != "") {
		err = fmt.Errorf("service call with identity %+v", id)
	}
	if err == nil && ctx.Get(identity.HeaderRequestID) == "" { // as coreapi refuses it
		err = errors.New("service call without a request id")
	}
	if err == nil {
		err = c.replayed(ctx)
	}
	return err
}

// replayed refuses, as coreapi does, a verified signature of the proxy's
// own calls that was accepted before (identity.ErrReplayed).
func (c *Core) replayed(ctx *fiber.Ctx) error {
	return c.replays.Check(ctx.Get(identity.HeaderSignature), ctx.Get(identity.HeaderTimestamp), c.coreV.Window(), c.now())
}

func problemStatus(ctx *fiber.Ctx, status int, code string) error {
	ctx.Set("Content-Type", "application/problem+json")
	return ctx.Status(status).SendString(fmt.Sprintf(`{"type":"about:blank","title":"x","status":%d,"code":%q}`, status, code))
}

func (c *Core) resolveKey(ctx *fiber.Ctx) error {
	if err := c.verifyService(ctx); err != nil {
		return ctx.Status(401).JSON(fiber.Map{"code": "invalid_signature", "detail": err.Error()})
	}
	c.KeyFetches.Add(1)
	if gate := c.KeyGate.Load(); gate != nil {
		<-*gate
	}
	var b apikey.ResolveRequest
	if err := json.Unmarshal(ctx.Body(), &b); err != nil {
		return problemStatus(ctx, 400, "bad_request")
	}
	c.mu.Lock()
	c.keyClients = append(c.keyClients, b.ClientIP)
	c.keyTrace = append(c.keyTrace, ctx.Get("Traceparent"))
	c.keyReqIDs = append(c.keyReqIDs, strings.Clone(ctx.Get(identity.HeaderRequestID)))
	c.mu.Unlock()
	if a := c.KeyAnswer.Load(); a != nil {
		ctx.Set("Content-Type", a.ContentType)
		return ctx.Status(a.Status).SendString(a.Body)
	}
	pid, ok := apikey.Parse([]byte(b.Key))
	if !ok {
		return problemStatus(ctx, 404, "api_key_unknown")
	}
	c.mu.Lock()
	k := c.apiKeys[string(pid)]
	var cp apiKey
	if k != nil {
		cp = *k
	}
	c.mu.Unlock()
	switch {
	case k == nil:
		return problemStatus(ctx, 404, "api_key_unknown")
	case subtle.ConstantTimeCompare([]byte(cp.secret), []byte(b.Key)) != 1:
		return problemStatus(ctx, 401, "invalid_token")
	case cp.revoked:
		return problemStatus(ctx, 410, "api_key_revoked")
	}
	return ctx.JSON(cp.p)
}

func (c *Core) keysUsed(ctx *fiber.Ctx) error {
	if err := c.verifyService(ctx); err != nil {
		return ctx.Status(401).JSON(fiber.Map{"code": "invalid_signature", "detail": err.Error()})
	}
	var b apikey.UsedRequest
	if err := json.Unmarshal(ctx.Body(), &b); err != nil {
		return problemStatus(ctx, 400, "bad_request")
	}
	if g := c.UsedGate.Load(); g != nil {
		<-*g
	}
	if st := c.UsedStatus.Load(); st != 0 {
		return problemStatus(ctx, int(st), "unavailable")
	}
	c.mu.Lock()
	c.used = append(c.used, b.Keys...)
	c.mu.Unlock()
	return ctx.SendStatus(204)
}
