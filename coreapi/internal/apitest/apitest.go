// Package apitest runs the real coreapi HTTP server on 127.0.0.1:0 against a
// fresh PostgreSQL database for tests in other packages, with a client that
// signs identity headers the way authproxy does, per-request query
// accounting, seeding helpers, and validation of every response against the
// OpenAPI document.
package apitest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/openapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// Key is the identity HMAC key of every test server.
var key = []byte("apitest-identity-key-0123456789abcdef")

// KeyID is the id of the core key of every test server.
const KeyID = "core"

// DefaultClientIP is the X-Auth-Client-Ip signed when a request names none
// (a documentation address, so that tests can tell it from the peer).
const DefaultClientIP = "192.0.2.10"

// Key returns the secret of the identity key the test server trusts.
func Key() []byte { return bytes.Clone(key) }

// Keys returns the core key list of the test server (the one key KeyID).
func Keys() []identity.Key { return []identity.Key{{ID: KeyID, Secret: Key()}} }

// Options adjust the test server.
type Options struct {
	// Configure edits the server options before the server is built (add
	// Register hooks, ErrorMappers, Catalog, MaxBodyBytes...). The tenant
	// API is registered first, with the final Catalog.
	Configure func(*httpapi.Options)
	// Passwords hashes the passwords of members the tenant API creates
	// (nil: cheap parameters of the production format).
	Passwords users.PasswordHasher
	// PasswordChecksPerHour is the tenant API's budget of password hashes
	// per client IP (0: the default).
	PasswordChecksPerHour int
	// Users are the tenant API's mail limits (a zero field: the default).
	Users users.Limits
	// DisplayNameChangesPerHour is the tenant API's bound on one
	// account's display-name changes per hour (0: the default).
	DisplayNameChangesPerHour int
	// ExecMode is the pgx exec mode of the server's pool (0: the default,
	// cache_statement); the PgBouncer-friendly modes are tested with it.
	ExecMode pgx.QueryExecMode
	// Coverage, if set, records the operations and statuses validated.
	Coverage *Coverage
	// AllowUndocumented skips OpenAPI validation of routes the document
	// does not describe (instead of failing the test).
	AllowUndocumented bool
	// RefuseV1 starts the server with v1 signatures refused (by default
	// they are accepted, as in production this release).
	RefuseV1 bool
	// Tracing, when set, traces the server's requests and the pool's
	// queries with it.
	Tracing *tracing.Provider
	// DB, when set, is the database the server serves (another Env's, as
	// a second coreapi pod of the same deployment); nil: a new one.
	DB *dbtest.DB
}

// Env is one running test server.
type Env struct {
	DB     *dbtest.DB
	Server *httpapi.Server
	URL    string // http://127.0.0.1:port
	// SignerV2 signs requests the way the proxy does (v2, core key).
	SignerV2 *identity.KeySigner
	// Signer is the legacy v1 signer (same secret), for Request.V1.
	Signer   *identity.Signer
	Registry *prometheus.Registry
	Client   *http.Client

	validator  *openapi.Validator
	coverage   *Coverage
	allowUndoc bool
	mu         sync.Mutex
	stats      map[string]httpapi.RequestStats
	catalog    *permissions.Catalog // the server's (nil: built-in)
}

// Start creates a database, starts the server on a random loopback port,
// and stops both when the test ends.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	db := o.DB
	if db == nil {
		db = dbtest.New(t)
	}
	// A second pool with the query tracer: dbtest's pool is for seeding.
	popts := pgtrace.PoolOptions{MaxConns: 8, ExecMode: o.ExecMode}
	if o.Tracing != nil {
		popts.TracerProvider = o.Tracing.TracerProvider()
	}
	pool, err := pgtrace.NewPool(context.Background(), db.URL, popts)
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	t.Cleanup(pool.Close)
	signer, err := identity.NewSigner(key, identity.DefaultWindow)
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	signerV2, err := identity.NewKeySigner(Keys()[0])
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	v, err := openapi.NewValidator()
	if err != nil {
		t.Fatalf("apitest: openapi document: %v", err)
	}
	e := &Env{
		DB: db, Signer: signer, SignerV2: signerV2, Registry: prometheus.NewRegistry(),
		Client:     &http.Client{Timeout: 30 * time.Second},
		validator:  v,
		allowUndoc: o.AllowUndocumented,
		coverage:   o.Coverage,
		stats:      map[string]httpapi.RequestStats{},
	}
	logs := &testkit.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	opts := httpapi.Options{
		Logger:       slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Pool:         pool,
		IdentityKeys: Keys(),
		AcceptV1:     !o.RefuseV1,
		CursorKey:    httpapi.DeriveCursorKey(key),
		Registerer:   e.Registry,
		Tracing:      o.Tracing,
		Observe: func(s httpapi.RequestStats) {
			e.mu.Lock()
			e.stats[s.RequestID] = s
			e.mu.Unlock()
		},
	}
	if o.Passwords == nil {
		// Cheap parameters: tests hash many passwords; the format is the same.
		o.Passwords = password.New(password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 0)
	}
	if o.Configure != nil {
		o.Configure(&opts)
	}
	tapi, err := tenantapi.New(tenantapi.Options{Pool: pool, Passwords: o.Passwords, Catalog: opts.Catalog, PasswordChecksPerHour: o.PasswordChecksPerHour, Limits: o.Users,
		DisplayNameChangesPerHour: o.DisplayNameChangesPerHour})
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	opts.Register = append([]func(httpapi.Routes){tapi.Register}, opts.Register...)
	opts.ErrorMappers = append(opts.ErrorMappers, tenantapi.MapError)
	e.catalog = opts.Catalog
	srv, err := httpapi.New(opts)
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("apitest: shutdown: %v", err)
		}
		<-done
	})
	e.Server = srv
	e.URL = "http://" + ln.Addr().String()
	return e
}

// Request is one HTTP request to the test server.
type Request struct {
	Method string
	Path   string // path and query, e.g. "/api/v1/users?limit=5"
	// Body is sent as JSON unless it is []byte or string (sent as is).
	Body        any
	ContentType string // default application/json when Body is set
	Header      http.Header
	// As signs the identity headers for this caller; nil signs the
	// anonymous identity, as the proxy does on public routes. A caller
	// without a Principal is a "user" (or "anonymous" without a user id).
	As *identity.Identity
	// Service signs the anonymous, empty identity without a client IP
	// (unless ClientIP is set), as the proxy signs its own calls to the
	// internal endpoints.
	Service bool
	// Unsigned sends no identity headers at all (a caller that bypassed
	// the proxy, or a v1 proxy on a public route).
	Unsigned bool
	// V1 signs with the legacy v1 scheme instead of v2.
	V1 bool
	// ClientIP is the signed X-Auth-Client-Ip (default DefaultClientIP;
	// none with Service).
	ClientIP string
	// SignedAt overrides the signature time (zero: now).
	SignedAt time.Time
	// SignPath overrides the path+query that is signed (to test forgery).
	SignPath string
	// SignBody, if not nil, is the body whose digest is signed instead of
	// the one sent (to test body binding).
	SignBody []byte
	// SignWith signs with another key (to test unknown or app keys).
	SignWith *identity.KeySigner
	// Undocumented marks a request to a route that is deliberately not in
	// the OpenAPI document (unknown paths); it is then not validated.
	Undocumented bool
}

// Response is the server's answer plus what the server did for it.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Stats is the server-side record of this request (queries,
	// transactions, route).
	Stats httpapi.RequestStats
}

// JSON decodes the body into v, failing the test on error.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Problem decodes a problem+json body.
func (r Response) Problem(t testing.TB) problem.Problem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("content type %q, want %s; body %s", ct, problem.ContentType, r.Body)
	}
	var p problem.Problem
	r.JSON(t, &p)
	return p
}

// Do sends req and validates the response against the OpenAPI document.
func (e *Env) Do(t testing.TB, req Request) Response {
	t.Helper()
	var body io.Reader
	var raw []byte
	switch b := req.Body.(type) {
	case nil:
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatalf("encode body: %v", err)
		}
	}
	if req.Body != nil {
		body = bytes.NewReader(raw)
	}
	hr, err := http.NewRequest(req.Method, e.URL+req.Path, body)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs
	}
	if req.Body != nil {
		ct := req.ContentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	rid := hr.Header.Get(requestid.Header)
	if rid == "" {
		rid = requestid.New()
		hr.Header.Set(requestid.Header, rid)
	}
	if !req.Unsigned {
		var id identity.Identity
		if req.As != nil {
			id = *req.As
		}
		if req.V1 {
			e.sign(hr, id, req)
		} else {
			signed := raw
			if req.SignBody != nil {
				signed = req.SignBody
			}
			e.signV2(hr.Header, id, req, hr.Method, hr.URL.RequestURI(), signed)
		}
	}
	resp, err := e.Client.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.Path, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.Path, err)
	}
	out := Response{Status: resp.StatusCode, Header: resp.Header, Body: rb}
	e.mu.Lock()
	out.Stats = e.stats[rid]
	e.mu.Unlock()

	op, err := e.validator.ValidateResponse(hr, raw, resp.StatusCode, resp.Header, rb)
	if err == nil && e.coverage != nil {
		e.coverage.record(op, resp.StatusCode)
	}
	if err != nil {
		if !((e.allowUndoc || req.Undocumented) && openapi.IsUndocumented(err)) {
			t.Errorf("%s %s -> %d: response does not match the OpenAPI document: %v\nbody: %s",
				req.Method, req.Path, resp.StatusCode, err, rb)
		}
	}
	return out
}

func (e *Env) sign(hr *http.Request, id identity.Identity, req Request) {
	at := req.SignedAt
	if at.IsZero() {
		at = time.Now()
	}
	ts := at.UnixMilli()
	path := req.SignPath
	if path == "" {
		path = hr.URL.RequestURI()
	}
	h := hr.Header
	if id.UserID != "" {
		h.Set(identity.HeaderUserID, id.UserID)
	}
	if id.TenantID != "" {
		h.Set(identity.HeaderTenantID, id.TenantID)
	}
	if id.SessionID != "" {
		h.Set(identity.HeaderSessionID, id.SessionID)
	}
	if len(id.Roles) > 0 {
		h.Set(identity.HeaderRoles, identity.JoinList(id.Roles))
	}
	if len(id.Permissions) > 0 {
		h.Set(identity.HeaderPermissions, identity.JoinList(id.Permissions))
	}
	h.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(identity.HeaderSignature, e.Signer.Sign(ts, hr.Method, path, id))
}

// SignV2 adds the v2 identity headers the proxy would send for a request
// (method, path+query, body) by caller id to h, which must hold the
// request's X-Request-Id. Use it to build a request sent twice (replay).
func (e *Env) SignV2(h http.Header, id identity.Identity, method, pathQuery string, body []byte) {
	e.signV2(h, id, Request{}, method, pathQuery, body)
}

// SignServiceV2 adds the v2 identity headers of one of the proxy's own
// calls to the internal endpoints (the anonymous, empty identity, no
// client IP) to h, which must hold the request's X-Request-Id.
func (e *Env) SignServiceV2(h http.Header, method, pathQuery string, body []byte) {
	e.signV2(h, identity.Identity{}, Request{Service: true}, method, pathQuery, body)
}

func (e *Env) signV2(h http.Header, id identity.Identity, req Request, method, pathQuery string, body []byte) {
	at := req.SignedAt
	if at.IsZero() {
		at = time.Now()
	}
	if req.SignPath != "" {
		pathQuery = req.SignPath
	}
	if id.Principal == "" {
		id.Principal = identity.PrincipalAnonymous
		if id.UserID != "" {
			id.Principal = identity.PrincipalUser
		}
	}
	ip := req.ClientIP
	if ip == "" && !req.Service {
		ip = DefaultClientIP
	}
	signer := e.SignerV2
	if req.SignWith != nil {
		signer = req.SignWith
	}
	r := identity.Request{Timestamp: at.UnixMilli(), RequestID: h.Get(requestid.Header), ClientIP: ip,
		Method: method, PathQuery: pathQuery, BodySHA256: sha256.Sum256(body)}
	set := func(name, v string) {
		if v != "" {
			h.Set(name, v)
		}
	}
	identity.EachHeader(signer.KeyID(), &id, &r, set)
	h.Set(identity.HeaderSignature, signer.Sign(&id, &r))
}

// Get is Do for a GET as caller.
func (e *Env) Get(t testing.TB, as *identity.Identity, path string) Response {
	t.Helper()
	return e.Do(t, Request{Method: http.MethodGet, Path: path, As: as})
}

// Send is Do for a request with a JSON body (nil: none) as caller.
func (e *Env) Send(t testing.TB, as *identity.Identity, method, path string, body any) Response {
	t.Helper()
	return e.Do(t, Request{Method: method, Path: path, Body: body, As: as})
}

// --- seeding ---

// Tx runs fn in a transaction on the seeding pool.
func (e *Env) Tx(t testing.TB, fn func(tx pgx.Tx) error) {
	t.Helper()
	if err := pgx.BeginFunc(context.Background(), e.DB.Pool, fn); err != nil {
		t.Fatalf("seed: %v", err)
	}
}

// SeedTenant creates a tenant with its built-in roles.
func (e *Env) SeedTenant(t testing.TB, name string) tenants.Tenant {
	t.Helper()
	var ten tenants.Tenant
	e.Tx(t, func(tx pgx.Tx) error {
		var err error
		ten, err = tenants.Create(context.Background(), tx, name)
		return err
	})
	return ten
}

// SeedUser creates a user (no password) and returns its id.
func (e *Env) SeedUser(t testing.TB, email, displayName string) string {
	t.Helper()
	var id string
	e.Tx(t, func(tx pgx.Tx) error {
		u, err := users.Insert(context.Background(), tx, users.NewUser{Email: email, DisplayName: displayName})
		id = u.ID
		return err
	})
	return id
}

// SeedMember makes a user a member of a tenant with roles.
func (e *Env) SeedMember(t testing.TB, tenantID, userID string, roleNames ...string) {
	t.Helper()
	e.Tx(t, func(tx pgx.Tx) error {
		return tenants.AddMember(context.Background(), tx, tenantID, userID, roleNames...)
	})
}

// SeedUserIn creates a user who is a member of tenantID with roles, and
// returns the identity authproxy would forward for them: with a live
// session in tenantID (SeedSession), as a signed-in user's token carries.
func (e *Env) SeedUserIn(t testing.TB, tenantID, email string, roleNames ...string) identity.Identity {
	t.Helper()
	uid := e.SeedUser(t, email, "")
	e.SeedMember(t, tenantID, uid, roleNames...)
	id := e.IdentityOf(t, uid, tenantID)
	id.SessionID = e.SeedSession(t, uid, tenantID)
	return id
}

// SeedSession opens a live session of userID in tenantID (a day long,
// signed in with a password now, at the user's token version) and
// returns its id.
func (e *Env) SeedSession(t testing.TB, userID, tenantID string) string {
	t.Helper()
	const q = `
INSERT INTO sessions (user_id, tenant_id, expires_at, token_version, amr, auth_time)
SELECT id, $2, now() + interval '1 day', token_version, '{pwd}', now() FROM users WHERE id = $1
RETURNING id::text`
	var sid string
	if err := e.DB.Pool.QueryRow(context.Background(), q, userID, tenantID).Scan(&sid); err != nil {
		t.Fatalf("seed session: %v", err)
	}
	return sid
}

// IdentityOf builds the identity authproxy would forward for a user in a
// tenant, from the current projection under the server's catalog.
func (e *Env) IdentityOf(t testing.TB, userID, tenantID string) identity.Identity {
	t.Helper()
	p, err := projection.NewStore(e.DB.Pool, 15*time.Minute, e.catalog).Get(context.Background(), userID, tenantID)
	if err != nil {
		t.Fatalf("identity of %s in %s: %v", userID, tenantID, err)
	}
	return identity.Identity{UserID: p.UserID, TenantID: p.TenantID, Roles: p.Roles, Permissions: p.Permissions}
}

// Coverage records which documented operations the tests exercised with a
// response that matched the document, and with which statuses.
type Coverage struct {
	mu   sync.Mutex
	seen map[string]map[int]bool
}

// NewCoverage returns an empty record.
func NewCoverage() *Coverage { return &Coverage{seen: map[string]map[int]bool{}} }

func (c *Coverage) record(op string, status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[op] == nil {
		c.seen[op] = map[int]bool{}
	}
	c.seen[op][status] = true
}

// WithoutSuccess returns the operations among ops that no test saw answer
// with a 2xx status.
func (c *Coverage) WithoutSuccess(ops []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, op := range ops {
		ok := false
		for s := range c.seen[op] {
			ok = ok || (s >= 200 && s < 300)
		}
		if !ok {
			out = append(out, op)
		}
	}
	return out
}

// Main is a package's TestMain: it runs the tests and, after a full run
// (no -run, -bench or -short), fails when one of ops never answered with a
// successful, document-conforming response. It does not return.
func (c *Coverage) Main(m *testing.M, ops []string) {
	flag.Parse()
	code := m.Run()
	if code != 0 || flag.Lookup("test.run").Value.String() != "" || flag.Lookup("test.bench").Value.String() != "" || testing.Short() {
		os.Exit(code)
	}
	if missing := c.WithoutSuccess(ops); len(missing) > 0 {
		slices.Sort(missing)
		fmt.Printf("FAIL: documented operations never validated with a 2xx response: %v\n", missing)
		os.Exit(1)
	}
	os.Exit(code)
}
