package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/config"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/testca"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

const (
	userID    = "11111111-1111-4111-8111-111111111111"
	tenantID  = "22222222-2222-4222-8222-222222222222"
	sessionID = "33333333-3333-4333-8333-333333333333"
)

// clock is the injected clock: real time plus an offset tests advance.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

type env struct {
	t      testing.TB
	core   *testenv.Core
	up     *testenv.Core // the app upstream ("{{APP}}" in rules files)
	upCA   []byte        // its certificate (PEM), with envOpt.tlsApp
	coreCA *testca.CA    // the CA of core's certificate, with envOpt.tlsCore
	nats   *testenv.NATS
	app    *App
	addr   string
	admin  string
	key    *testenv.Key
	clock  *clock
	client *http.Client
	logs   *logBuffer
	done   chan error
	cancel context.CancelFunc

	// rechecks are the decisions of the proxy's stream rechecks
	// (Hooks.StreamRechecked).
	rechecks *rechecks
}

type envOpt struct {
	vars      map[string]string
	rules     string
	noPublish bool
	// prepare runs once the stand-ins run, before the configuration is
	// read; it may add variables.
	prepare func(e *env, vars map[string]string)
	// slogAccess: access lines through the logger, not buffered.
	slogAccess bool
	// unrecordedLog: the log is not kept for assertions (benchmarks).
	unrecordedLog bool
	// logOut, when set with unrecordedLog, is where the log goes instead
	// of testLogOut().
	logOut io.Writer
	// beforeServe runs once the app is built, before it serves.
	beforeServe func(e *env)
	// tracing, when set, is the proxy's tracer provider.
	tracing *tracing.Provider
	// realClock: no clock injected (e.clock is not the proxy's), as in
	// production, where a request's start is fasthttp's reading.
	realClock bool
	// tlsApp: the app upstream serves https with a self-signed
	// certificate (e.upCA, PEM), which the proxy trusts only when the test
	// sets UPSTREAM_CA_FILE.
	tlsApp bool
	// tlsCore: coreapi's stand-in serves https (IDENTITY_URL is https://)
	// with a certificate e.coreCA issued, which the proxy trusts only when
	// the test sets IDENTITY_CA_FILE.
	tlsCore bool
	// ipv6Core, ipv6App: the stand-in listens on [::1] (IDENTITY_URL, or
	// the app's url in the rules file, is http://[::1]:port, https:// with
	// tlsCore); the test is skipped where there is no IPv6 loopback.
	ipv6Core, ipv6App bool
	// logLevel: the log is at LOG_LEVEL, as the command builds it (else
	// every record is written, whatever LOG_LEVEL says).
	logLevel bool
	// linger: how long a connection answered 413 is read before it is
	// closed (Hooks.Linger; 0: the default, 5 s).
	linger time.Duration
}

func defaultProjection() identity.Projection {
	return identity.Projection{UserID: userID, TenantID: tenantID, Email: "a@example.com",
		UserStatus: "active", MembershipStatus: "active", TenantStatus: "active",
		Roles: []string{"member"}, Permissions: []string{"tenant:read"}, TokenVersion: 0}
}

func start(t testing.TB, o envOpt) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{}, done: make(chan error, 1), logs: &logBuffer{}, rechecks: &rechecks{}}
	switch {
	case o.tlsCore && o.ipv6Core:
		e.coreCA = testca.New(t, "coreapi test CA")
		e.core = testenv.NewTLSCoreIPv6(t, e.coreCA)
	case o.tlsCore:
		e.coreCA = testca.New(t, "coreapi test CA")
		e.core = testenv.NewTLSCore(t, e.coreCA)
	case o.ipv6Core:
		e.core = testenv.NewCoreIPv6(t)
	default:
		e.core = testenv.NewCore(t)
	}
	switch {
	case o.tlsApp:
		e.up, e.upCA = testenv.NewTLSApp(t)
	case o.ipv6App:
		e.up = testenv.NewAppIPv6(t)
	default:
		e.up = testenv.NewApp(t)
	}
	e.nats = testenv.StartNATS(t)
	e.key = testenv.NewKey(t, "20260101T000000Z-0000aaaa", jwa.EdDSA)
	if !o.noPublish {
		e.core.Publish(e.key)
	}
	e.core.SetProjection(defaultProjection())
	vars := map[string]string{
		"PROXY_LISTEN_ADDR":     "127.0.0.1:0",
		"PROXY_ADMIN_ADDR":      "127.0.0.1:0",
		"IDENTITY_URL":          e.core.URL(),
		"IDENTITY_HMAC_KEY":     testenv.HMACKeyText,
		"UPSTREAM_KEYS":         testenv.AppKeysText,
		"NATS_URL":              e.nats.URL(),
		"JWKS_REFETCH_COOLDOWN": "1m",
		"ACCESS_LOG":            "false",
		"LOG_LEVEL":             "warn",
		"MAX_BODY_BYTES":        "65536",
		// The fake core writes no outbox heartbeat, and most tests move
		// the clock: TestHeartbeatSilence watches heartbeats.
		"NATS_HEARTBEAT_TIMEOUT": "0",
	}
	if o.rules != "" {
		p := filepath.Join(t.TempDir(), "rules.yaml")
		if err := os.WriteFile(p, []byte(e.appRules(o.rules)), 0o600); err != nil {
			t.Fatal(err)
		}
		vars["RULES_FILE"] = p
	}
	for k, v := range o.vars {
		vars[k] = e.appRules(v)
	}
	if o.prepare != nil {
		o.prepare(e, vars)
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	table, err := LoadRules(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The log's output as the command builds it: access lines buffered.
	var logOut io.Writer = io.MultiWriter(testLogOut(), e.logs)
	if o.unrecordedLog {
		logOut = testLogOut()
		if o.logOut != nil {
			logOut = o.logOut
		}
	}
	lines := logging.NewLines(logOut, 50*time.Millisecond)
	t.Cleanup(func() { _ = lines.Close() })
	e.logs.flush = lines.Flush
	log := slog.New(slog.NewJSONHandler(lines, nil))
	if o.logLevel {
		log = logging.New(lines, cfg.LogLevel)
	}
	hooks := Hooks{Now: e.clock.Now, Tracing: o.tracing, Lines: lines, Linger: o.linger, StreamRechecked: e.rechecks.add}
	if o.slogAccess {
		hooks.Lines = nil
	}
	if o.realClock {
		hooks.Now = nil
	}
	a, err := New(cfg, table, log, hooks)
	if err != nil {
		t.Fatal(err)
	}
	e.app = a
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	aln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr, e.admin = ln.Addr().String(), aln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	if o.beforeServe != nil {
		o.beforeServe(e)
	}
	go func() { e.done <- a.Serve(ctx, ln, aln) }()
	t.Cleanup(func() {
		// The client's idle connections end first, and the proxy is let
		// see them end: a graceful shutdown that finds a connection open
		// waits for the server's next 100 ms poll.
		if e.client != nil {
			e.client.CloseIdleConnections()
		}
		for end := time.Now().Add(100 * time.Millisecond); a.Server.App().Server().GetOpenConnectionsCount() > 0 && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
		cancel()
		select {
		case <-e.done:
		case <-time.After(20 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	e.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	if !o.noPublish {
		testenv.Eventually(t, func() error { return testenv.Want("proxy ready", a.Ready(), true) })
		testenv.Eventually(t, func() error {
			return testenv.Want("NATS connected", a.Subscriber != nil && a.Subscriber.Connected(), true)
		})
		// The first connection refetches the key set (an auth.keys.changed
		// may have been missed before it) in the background, after it
		// reports itself connected: wait for that fetch too, or it lands in
		// a test that counts the fetches its own tokens cause.
		testenv.Eventually(t, func() error {
			done := testutil.ToFloat64(a.Metrics.JWKSFetches.WithLabelValues("ok")) + testutil.ToFloat64(a.Metrics.JWKSFetches.WithLabelValues("error"))
			return testenv.Want("key set fetches finished (the start's and the first connection's)", done >= 2, true)
		})
	}
	return e
}

// rechecks records the reason each recheck of an open stream decided
// ("" kept), in order.
type rechecks struct {
	mu      sync.Mutex
	reasons []string
}

func (r *rechecks) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

// count is how many rechecks have decided.
func (r *rechecks) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reasons)
}

// await waits until n more than from rechecks have decided and returns
// their reasons.
func (r *rechecks) await(t testing.TB, from, n int) []string {
	t.Helper()
	testenv.Eventually(t, func() error {
		return testenv.WantAtLeast("stream rechecks decided", r.count(), from+n)
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reasons[from:])
}

// appRules puts the app upstream's URL for "{{APP}}" in a rules file.
func (e *env) appRules(text string) string {
	return strings.ReplaceAll(text, "{{APP}}", e.up.URL())
}

// appUpstream declares the app upstream; rules files start with it.
const appUpstream = "upstreams:\n  notes:\n    url: {{APP}}\n    key_id: app-notes\n"

// token mints a valid token for the default user with mod applied.
func (e *env) token(mod func(testenv.Claims)) string {
	c := testenv.DefaultClaims(time.Now(), userID, tenantID, sessionID)
	if mod != nil {
		mod(c)
	}
	return testenv.Sign(e.t, e.key, c, nil)
}

type result struct {
	status int
	header http.Header
	body   []byte
	prob   problem.Problem
}

func (e *env) do(method, path, token string, hdr map[string]string) result {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.addr+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header[k] = []string{v} // exact name, not canonicalised
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, body: body}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), problem.ContentType) {
		if err := json.Unmarshal(body, &r.prob); err != nil {
			e.t.Fatalf("problem body %q: %v", body, err)
		}
	}
	return r
}

// raw sends a request written byte for byte and returns the response.
func (e *env) raw(req string) result {
	e.t.Helper()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, body: body}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), problem.ContentType) {
		_ = json.Unmarshal(body, &r.prob)
	}
	return r
}

func (e *env) publish(subject string) {
	e.t.Helper()
	e.publishMsg(subject, invalidation.Event{Reason: "test"}, nil)
}

// publishMsg publishes ev (At set to now) on subject with header (nil:
// none).
func (e *env) publishMsg(subject string, ev invalidation.Event, header nats.Header) {
	e.t.Helper()
	nc, err := nats.Connect(e.nats.URL())
	if err != nil {
		e.t.Fatal(err)
	}
	defer nc.Close()
	ev.At = time.Now().UnixMilli()
	b, _ := json.Marshal(ev)
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Data: b, Header: header}); err != nil {
		e.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
}

var heartbeatRows atomic.Int64

// publishHeartbeatRow publishes a heartbeat as the outbox does, with a
// Nats-Msg-Id, listing relays as the relays registered as publishing.
func (e *env) publishHeartbeatRow(relays ...string) {
	e.t.Helper()
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, fmt.Sprintf("heartbeat-%d", heartbeatRows.Add(1)))
	e.publishMsg(invalidation.SubjectHeartbeat, invalidation.Event{Relays: relays}, h)
}

// publishAndWait publishes and waits until the proxy has applied the event.
func (e *env) publishAndWait(subject string) {
	e.t.Helper()
	before := e.invalidations()
	// Republish until applied: right after a (re)connect the server may not
	// have the proxy's subscription yet. Invalidations are idempotent.
	last := time.Time{}
	testenv.Eventually(e.t, func() error {
		n := e.invalidations()
		if n > before {
			return nil
		}
		if time.Since(last) > 200*time.Millisecond {
			e.publish(subject)
			last = time.Now()
		}
		return fmt.Errorf("%s not applied: %v invalidations, as before", subject, n)
	})
}

func (e *env) invalidations() float64 {
	var n float64
	for _, k := range []string{"user", "tenant", "all", "apikey", "unknown"} {
		n += testutil.ToFloat64(e.app.Metrics.Invalidations.WithLabelValues(k))
	}
	return n
}

func (e *env) verifications() float64 {
	return testutil.ToFloat64(e.app.Metrics.VerifyOK) + testutil.ToFloat64(e.app.Metrics.VerifyFailed)
}

func (e *env) wantStatus(r result, want int) {
	e.t.Helper()
	if r.status != want {
		e.t.Fatalf("status = %d, want %d (body %s)", r.status, want, r.body)
	}
}

// wantProblem checks an error answer's status, code, request id and, for
// 401/403, the WWW-Authenticate challenge.
func (e *env) wantProblem(r result, status int, code string) {
	e.t.Helper()
	e.wantStatus(r, status)
	if r.prob.Code != code {
		e.t.Fatalf("problem code = %q, want %q (body %s)", r.prob.Code, code, r.body)
	}
	if r.prob.RequestID == "" || r.prob.RequestID != r.header.Get("X-Request-Id") {
		e.t.Fatalf("problem request_id = %q, header %q", r.prob.RequestID, r.header.Get("X-Request-Id"))
	}
	// Clients learn nothing about which check refused a token.
	if code == problem.CodeInvalidToken && r.prob.Detail != "the access token is not valid" {
		e.t.Fatalf("invalid_token detail = %q, want the one fixed description", r.prob.Detail)
	}
	wa := r.header.Get("WWW-Authenticate")
	switch {
	case status == 401 && code == problem.CodeInvalidToken && wa != `Bearer error="invalid_token"`:
		e.t.Fatalf("WWW-Authenticate = %q, want Bearer error=\"invalid_token\"", wa)
	case status == 403 && code == problem.CodeInsufficientScope && wa != `Bearer error="insufficient_scope"`:
		e.t.Fatalf("WWW-Authenticate = %q, want Bearer error=\"insufficient_scope\"", wa)
	case status == 401 && code == problem.CodeUnauthenticated && !strings.HasPrefix(wa, "Bearer"):
		e.t.Fatalf("WWW-Authenticate = %q, want a Bearer challenge", wa)
	}
}

// wantNothingForwarded fails if an echo route (core's or the app's) saw
// any request.
func (e *env) wantNothingForwarded() {
	e.t.Helper()
	for _, up := range []*testenv.Core{e.core, e.up} {
		if got := up.Received(); len(got) != 0 {
			e.t.Fatalf("upstream received %d requests, want none: %+v", len(got), got[0].URI)
		}
	}
}

// reset forgets what both upstreams received.
func (e *env) reset() {
	e.core.Reset()
	e.up.Reset()
}

// wantSigned checks that the last request forwarded to core carried a
// valid core-key signature over the identity of the default user.
func (e *env) wantSigned() testenv.Received {
	e.t.Helper()
	return e.wantSignedAt(e.core, "core")
}

// wantSignedAt checks that up's last request carried a valid signature by
// keyID over the identity of the default user.
func (e *env) wantSignedAt(up *testenv.Core, keyID string) testenv.Received {
	e.t.Helper()
	r := up.Last(e.t)
	if !r.Signed || r.VerifyErr != nil {
		e.t.Fatalf("upstream signature: signed=%v err=%v", r.Signed, r.VerifyErr)
	}
	if r.Identity.KeyID != keyID || r.Identity.Principal != identity.PrincipalUser ||
		r.Identity.UserID != userID || r.Identity.TenantID != tenantID || r.Identity.SessionID != sessionID {
		e.t.Fatalf("identity = %+v, want user %s signed by %s", r.Identity, userID, keyID)
	}
	return r
}

// wantAnonymousAt checks that up's last request carried a valid signature
// by keyID over the anonymous identity.
func (e *env) wantAnonymousAt(up *testenv.Core, keyID string) testenv.Received {
	e.t.Helper()
	r := up.Last(e.t)
	if !r.Signed || r.VerifyErr != nil {
		e.t.Fatalf("upstream signature: signed=%v err=%v", r.Signed, r.VerifyErr)
	}
	id := r.Identity
	if id.KeyID != keyID || id.Principal != identity.PrincipalAnonymous || id.UserID != "" || id.TenantID != "" ||
		id.SessionID != "" || len(id.Roles) != 0 || len(id.Permissions) != 0 || id.EmailVerified {
		e.t.Fatalf("identity = %+v, want anonymous signed by %s", id, keyID)
	}
	return r
}

// with returns a copy of e reporting to t (for subtests).
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// logBuffer keeps the proxy's log for assertions; String writes the
// buffered access lines first.
type logBuffer struct {
	mu    sync.Mutex
	b     strings.Builder
	flush func() error
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	if l.flush != nil {
		_ = l.flush()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogOut() io.Writer {
	if os.Getenv("PROXY_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// serveRaw listens on 127.0.0.1 and runs handle on each connection it
// accepts, on a goroutine of its own, closing the connection when handle
// returns (a raw upstream that writes its answers byte by byte). It
// returns the address; the listener closes at the test's end.
func serveRaw(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}
