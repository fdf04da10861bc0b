// Package verify is the app side of Tollgate's identity headers: net/http
// middleware that accepts a request only when authproxy signed it (identity
// headers v2, see docs/identity-headers.md), and hands the handler a typed
// Identity of the caller.
//
// A service behind authproxy never sees a token. The proxy verifies the
// bearer, looks up the caller's roles and permissions, and forwards the
// request with X-Auth-* headers signed (HMAC-SHA256) with the key of this
// upstream. The middleware checks that signature against the app's key list
// (TOLLGATE_IDENTITY_KEYS, "id:base64[,id:base64...]"), the timestamp window
// (30 s), and the SHA-256 of the body, which it reads (bounded) and restores
// for the handler:
//
//	keys, err := verify.KeysFromEnv(os.Getenv)
//	v, err := verify.New(verify.Config{Keys: keys})
//	mux.Handle("POST /notes", verify.RequirePermission("notes:write")(http.HandlerFunc(createNote)))
//	srv := &http.Server{Handler: v.Middleware(mux)}
//
//	func createNote(w http.ResponseWriter, r *http.Request) {
//		id := verify.MustFromContext(r.Context())
//		... id.UserID, id.TenantID ...
//	}
//
// Unsigned, forged or stale requests, and signatures moved onto another
// request (other method, path, body, client IP or request id), get 401
// problem+json; a missing permission gets 403 with code insufficient_scope.
//
// The middleware also refuses a replay: the same signed request sent again
// unchanged within the window (captured on the way from the proxy, say) is
// 401 too, as coreapi answers it, with the reason replay in the log.
// authproxy signs every request it forwards anew (its own millisecond
// timestamp), so a client's retry is not one unless it carries the same
// X-Request-Id and bytes and is signed in the same millisecond. The
// Verifier remembers each signature it accepted until its timestamp leaves
// the window, in a fixed memory (Config.ReplayCacheSize, 16 MiB by default;
// package replay). That memory is the process's: a request replayed to
// another replica of the app, or to this one after a restart, is accepted
// once more there. An app that deduplicates requests itself can turn the
// filter off (Config.AllowReplays). Check, the lower-level call, never
// refuses a replay; CheckOnce does.
//
// The Fiber adapter lives in package fiberid, so that net/http users do
// not compile Fiber.
package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/replay"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
	"github.com/tollgate-auth/tollgate/shared/secretfile"
)

// The environment variables of the key list (the value, or a file holding
// it, e.g. a mounted Secret); see KeysFromEnv.
const (
	EnvKeys     = "TOLLGATE_IDENTITY_KEYS"
	EnvKeysFile = "TOLLGATE_IDENTITY_KEYS_FILE"
)

// DefaultMaxBodyBytes bounds the body the middleware reads to hash it; the
// proxy's own default MAX_BODY_BYTES is 1 MiB.
const DefaultMaxBodyBytes = 1 << 20

// MaxReplayCacheSize is the largest Config.ReplayCacheSize New takes
// (replay.MaxSize): the memory is allocated whole by New, and a larger
// size, a mistyped one say, panicked in New or asked for that much memory
// at start.
const MaxReplayCacheSize = replay.MaxSize

// Identity is the verified caller of one request.
type Identity struct {
	// Principal is the kind of caller: identity.PrincipalUser,
	// PrincipalAPIKey, PrincipalService or PrincipalAnonymous (a public or
	// optional route called without a token).
	Principal string
	UserID    string
	TenantID  string
	// SessionID is the user's sign-in session; for PrincipalAPIKey, the
	// id of the API key (as coreapi's GET /api-keys lists it), so that an
	// app can record which key acted; empty for the others.
	SessionID string
	// Roles are the caller's role names in the tenant; Permissions the
	// flattened permissions they grant ("notes:read", ...).
	Roles       []string
	Permissions []string
	// EmailVerified reports whether the user's address is confirmed.
	EmailVerified bool
	// AMR lists the authentication methods of the sign-in ("pwd", "otp").
	AMR []string
	// AuthTime is when the user signed in; zero when unknown.
	AuthTime time.Time
	// ClientIP is the address of the client as the proxy saw it.
	ClientIP string
	// RequestID is the request's X-Request-Id, which the signature binds.
	RequestID string
	// KeyID is the id of the key that verified the signature.
	KeyID string
}

// Has reports whether the caller holds permission p.
func (id *Identity) Has(p string) bool { return slices.Contains(id.Permissions, p) }

// Anonymous reports whether the request came without a token (a public or
// optional route).
func (id *Identity) Anonymous() bool { return id.Principal == identity.PrincipalAnonymous }

// Config configures a Verifier.
type Config struct {
	// Keys are the accepted keys: the upstream's current key and, during a
	// rotation, the previous one. Required.
	Keys []identity.Key
	// Window is the accepted clock skew of the signed timestamp, either
	// way: a whole number of milliseconds (the timestamp's unit); 0
	// selects identity.DefaultWindow (30 s). Anything else (negative,
	// under a millisecond, a fraction of one) is an error of New.
	Window time.Duration
	// MaxBodyBytes bounds the body read to hash it; a longer body is 413.
	// 0 selects DefaultMaxBodyBytes; math.MaxInt64 sets no bound of the
	// SDK's own (the server's, or Fiber's BodyLimit, still applies).
	MaxBodyBytes int64
	// Logger receives one debug line per rejected request (the reason,
	// and the path cut to logging.MaxPathBytes); nil logs nothing.
	Logger *slog.Logger
	// Now is the clock; nil selects time.Now.
	Now func() time.Time
	// ReplayCacheSize is how many accepted signatures the Verifier
	// remembers to refuse replays (16 bytes each, allocated by New): 0
	// selects replay.DefaultSize, 1048576 (16 MiB), enough for some 7,000
	// requests a second per process with the 30 s window. Give it about
	// 5 × rate × window slots (the rate in signed requests a second, the
	// window in seconds): with fewer, buckets fill and signatures are
	// forgotten before their window ends (their replay is then accepted;
	// 1.3 % of them at twice that rate), which ReplayEvictions counts: raise
	// it when that grows. Sizes are rounded down to a multiple of 256; one above
	// MaxReplayCacheSize is an error of New.
	ReplayCacheSize int
	// AllowReplays turns the replay filter off: the middlewares (and
	// CheckOnce) then accept a signed request as often as it comes within
	// the window. For an app that deduplicates requests itself (on
	// Identity.RequestID, which the signature binds, in its own store), or
	// a load test that sends pre-signed requests again.
	AllowReplays bool
}

// Verifier checks the identity headers of requests.
type Verifier struct {
	v       *identity.Verifier
	maxBody int64
	log     *slog.Logger
	now     func() time.Time
	replays *replay.Cache // nil: Config.AllowReplays
}

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	if cfg.Window < 0 || cfg.Window%time.Millisecond != 0 {
		return nil, fmt.Errorf("verify: Window %v: want a whole number of milliseconds (0: %v)", cfg.Window, identity.DefaultWindow)
	}
	iv, err := identity.NewVerifier(cfg.Keys, cfg.Window)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if cfg.ReplayCacheSize > MaxReplayCacheSize {
		return nil, fmt.Errorf("verify: ReplayCacheSize %d: at most %d", cfg.ReplayCacheSize, MaxReplayCacheSize)
	}
	v := &Verifier{v: iv, maxBody: cfg.MaxBodyBytes, log: cfg.Logger, now: cfg.Now}
	if v.maxBody <= 0 {
		v.maxBody = DefaultMaxBodyBytes
	}
	// A reader of the body reads MaxBodyBytes+1 bytes to tell a body over
	// the limit: at math.MaxInt64 that overflowed, and nothing was read.
	v.maxBody = min(v.maxBody, math.MaxInt64-1)
	if v.now == nil {
		v.now = time.Now
	}
	if !cfg.AllowReplays {
		v.replays = replay.New(cfg.ReplayCacheSize)
	}
	return v, nil
}

// KeysFromEnv reads the key list from TOLLGATE_IDENTITY_KEYS or the file
// named by TOLLGATE_IDENTITY_KEYS_FILE (one of them); getenv is usually
// os.Getenv. A key file that other users of the host may read (see
// package secretfile: group access is fine, others' is not) is still
// loaded, with a warning logged through slog.Default(), as authproxy and
// coreapi warn about theirs; KeysFromEnvWithLogger sends it to a logger
// of the app's.
func KeysFromEnv(getenv func(string) string) ([]identity.Key, error) {
	return KeysFromEnvWithLogger(getenv, nil)
}

// KeysFromEnvWithLogger is KeysFromEnv with the warning about a key file
// open to other users logged to log (nil selects slog.Default()).
func KeysFromEnvWithLogger(getenv func(string) string, log *slog.Logger) ([]identity.Key, error) {
	file := getenv(EnvKeysFile)
	keys, err := identity.LoadKeys(getenv(EnvKeys), file)
	if err != nil {
		return nil, fmt.Errorf("%s / %s: %w", EnvKeys, EnvKeysFile, err)
	}
	if file != "" {
		if w := secretfile.Check(EnvKeysFile, file); w != "" {
			if log == nil {
				log = slog.Default()
			}
			log.Warn(w)
		}
	}
	return keys, nil
}

// MaxBodyBytes is the longest body the verifier reads.
func (v *Verifier) MaxBodyBytes() int64 { return v.maxBody }

// Problems the middleware answers with. A rejected signature is never
// explained to the caller (the reason goes to the log): it is either a
// misconfiguration or an attack.
var (
	errUnsigned = problem.New(http.StatusUnauthorized, problem.CodeUnauthenticated, "missing or invalid identity signature")
	errTooLarge = problem.New(http.StatusRequestEntityTooLarge, problem.CodeBodyTooLarge, "request body too large")
	errAnon     = problem.New(http.StatusUnauthorized, problem.CodeUnauthenticated, "this route needs a signed-in caller")
)

// Check verifies the identity headers of one request as received: get
// reads a header, method and pathQuery are the request line's method and
// request-target (path and query exactly as sent), body the whole body. It
// returns the identity, or an error wrapping one of identity's sentinels
// (ErrMissing, ErrMalformed, ErrExpired, ErrSignature, ErrUnknownKey,
// ErrVersion); the strings of the result alias what get returned.
//
// Check remembers nothing: it accepts the same signed request again and
// again within the window. Serving requests, call CheckOnce, which also
// refuses a replay, as the middlewares do; Check is for a caller that
// deduplicates itself, or only inspects a request.
func (v *Verifier) Check(get identity.Headers, method, pathQuery string, body []byte) (Identity, error) {
	return v.check(v.now(), get, method, pathQuery, body)
}

// CheckOnce is Check, then the replay filter: a request whose signature
// this Verifier accepted before, within its window, is refused with
// identity.ErrReplayed. Only a request that verified is remembered, so a
// request that fails (a forged one, one with another body) neither fills
// the memory nor makes the genuine one a replay. With Config.AllowReplays
// it is Check.
//
// Adapters for other frameworks build on it, as package fiberid does, and
// refuse a request with Repeated headers, or a header name that is
// Aliased, before calling it (once the body is read, when the framework
// adds a chunked body's trailer fields to the headers), and one whose
// trailer fields, kept apart, name a signed header in any spelling.
func (v *Verifier) CheckOnce(get identity.Headers, method, pathQuery string, body []byte) (Identity, error) {
	now := v.now()
	id, err := v.check(now, get, method, pathQuery, body)
	if err != nil || v.replays == nil {
		return id, err
	}
	// The signature and timestamp verified: they are well-formed.
	if err := v.replays.Check(get(identity.HeaderSignature), get(identity.HeaderTimestamp), v.v.Window(), now); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// ReplayEvictions counts the accepted signatures the replay filter forgot
// before their window ended, because its memory (Config.ReplayCacheSize)
// was full of live ones: a replay of those requests is accepted. Export it
// as a counter; when it grows, raise the size. 0 with AllowReplays.
func (v *Verifier) ReplayEvictions() uint64 {
	if v.replays == nil {
		return 0
	}
	return v.replays.Evicted()
}

func (v *Verifier) check(now time.Time, get identity.Headers, method, pathQuery string, body []byte) (Identity, error) {
	sum := identity.EmptyBodySHA256
	if len(body) > 0 {
		sum = sha256.Sum256(body)
	}
	id, err := v.v.Verify(now, get, method, pathQuery, sum)
	if err != nil {
		return Identity{}, err
	}
	out := Identity{
		Principal: id.Principal, UserID: id.UserID, TenantID: id.TenantID, SessionID: id.SessionID,
		Roles: id.Roles, Permissions: id.Permissions, EmailVerified: id.EmailVerified, AMR: id.AMR,
		ClientIP: get(identity.HeaderClientIP), RequestID: get(identity.HeaderRequestID), KeyID: id.KeyID,
	}
	if id.AuthTime > 0 {
		out.AuthTime = time.Unix(id.AuthTime, 0)
	}
	return out, nil
}

// Signed reports whether a request carries a signature at all; the
// middleware answers 401 before reading the body of one that does not.
func Signed(get identity.Headers) bool {
	return get(identity.HeaderSignature) != "" && get(identity.HeaderTimestamp) != ""
}

// signedHeaders are the headers the signature covers, and the signature.
var signedHeaders = [...]string{
	identity.HeaderKeyID, identity.HeaderPrincipal, identity.HeaderUserID, identity.HeaderTenantID, identity.HeaderSessionID,
	identity.HeaderRoles, identity.HeaderPermissions, identity.HeaderEmailVerified, identity.HeaderAMR, identity.HeaderAuthTime,
	identity.HeaderClientIP, identity.HeaderRequestID, identity.HeaderTimestamp, identity.HeaderSignature,
}

// Repeated reports whether a request carries one of the signed headers
// more than once; count returns how many lines of a header (by its
// canonical name) the request has. The proxy sends each at most once.
// Check reads the first of each, which another reader of the request (the
// app's own code, a library, a service it forwards to) may not, so such a
// request is refused (identity.ErrMalformed) before it is verified.
func Repeated(count func(name string) int) bool {
	for _, name := range signedHeaders {
		if count(name) > 1 {
			return true
		}
	}
	return false
}

// Aliased reports whether a header name is one of the signed headers
// spelled with '_' for '-' (X_Auth_Roles, X-Auth_User-Id, X_Request_Id), or
// as CGI names it (HTTP_X_AUTH_ROLES), in any letter case. Such a line is
// not the signed header to net/http or fasthttp, so Check never reads it;
// but CGI-style readers (net/http/cgi, PHP, WSGI) file it under the same
// name as the signed header (HTTP_X_AUTH_ROLES), and an app that hands the
// request on to one could take its value for the signed one. authproxy
// removes these names from every peer: a request with one was not
// forwarded as the proxy sent it, and is refused (identity.ErrMalformed)
// before it is verified, as a Repeated one is.
func Aliased(name string) bool {
	if !strings.Contains(name, "_") {
		return false
	}
	const cgi = "http_"
	if len(name) > len(cgi) && foldEqual(name[:len(cgi)], cgi) {
		name = name[len(cgi):]
	}
	return signedName(name)
}

// signedName reports whether name is a signed header's, with ASCII letter
// case folded and '_' read as '-'.
func signedName(name string) bool {
	for _, h := range signedHeaders {
		if foldEqual(name, h) {
			return true
		}
	}
	return false
}

// foldEqual reports whether a and b are equal with ASCII letter case
// folded and '_' read as '-'.
func foldEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := fold(a[i]), fold(b[i])
		if x != y {
			return false
		}
	}
	return true
}

func fold(c byte) byte {
	switch {
	case c >= 'A' && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}

// signedIn reports whether h holds a signed header, by any spelling the
// header check refuses or reads: in any letter case, or Aliased. For a
// request's trailer section, where no signed header belongs.
func signedIn(h http.Header) bool {
	for name := range h {
		if Aliased(name) || signedName(name) {
			return true
		}
	}
	return false
}

// aliasedIn reports whether h holds a header named as Aliased finds.
func aliasedIn(h http.Header) bool {
	for name := range h {
		if Aliased(name) {
			return true
		}
	}
	return false
}

// Middleware verifies every request before next sees it (CheckOnce): a
// request without a valid signature, or a replay of one already accepted,
// or with a signed header's name among its trailer fields (announced or
// sent), gets 401 problem+json, a body over MaxBodyBytes 413. The verified
// Identity is in the request's context (FromContext) and the body is
// readable again.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		get := r.Header.Get
		if !Signed(get) {
			v.reject(w, r, identity.ErrMissing)
			return
		}
		// r.Trailer holds the names a chunked request announced (Trailer)
		// before its body is read, and the fields it sent after the last
		// chunk once it is: net/http keeps them apart from r.Header, where
		// a handler reading r.Trailer would take one for the signed header.
		// The proxy sends none of those names there.
		if Repeated(func(name string) int { return len(r.Header[name]) }) || aliasedIn(r.Header) || signedIn(r.Trailer) {
			v.reject(w, r, identity.ErrMalformed)
			return
		}
		body, err := v.readBody(r)
		if err != nil {
			if errors.Is(err, errBodyTooLarge) {
				WriteProblem(w, r, errTooLarge)
				return
			}
			WriteProblem(w, r, problem.New(http.StatusBadRequest, problem.CodeBadRequest, "could not read the request body"))
			return
		}
		if signedIn(r.Trailer) {
			v.reject(w, r, identity.ErrMalformed)
			return
		}
		id, err := v.CheckOnce(get, r.Method, requestTarget(r), body)
		if err != nil {
			v.reject(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), &id)))
	})
}

func (v *Verifier) reject(w http.ResponseWriter, r *http.Request, err error) {
	v.LogRejected(r.Context(), r.URL.Path, err)
	WriteProblem(w, r, errUnsigned)
}

// LogRejected writes the debug line of a request refused for its identity
// headers (the reason, identity.Reason of err, and the path) to the
// configured Logger, if any. The middleware calls it for every refusal;
// adapters for other frameworks call it too, so that every app built on
// the SDK logs the same lines. The path is cut as the services cut it
// (logging.ClipPath): whoever reaches the app's port chooses it, unsigned,
// as long as the server's header limit allows (1 MiB by default in
// net/http), and a line longer than the container runtime's 16 KiB is
// split into parts that no longer parse as JSON.
func (v *Verifier) LogRejected(ctx context.Context, path string, err error) {
	if v.log != nil {
		v.log.LogAttrs(ctx, slog.LevelDebug, "identity rejected",
			slog.String("reason", identity.Reason(err)), slog.String("path", logging.ClipPath(path)))
	}
}

var errBodyTooLarge = errors.New("verify: body too large")

// bodyHead is the most readBody allocates before a body's bytes arrive.
const bodyHead = 8 << 10

// readBody reads the whole body, at most maxBody bytes, and puts it back
// on r for the handler.
func (v *Verifier) readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > v.maxBody {
		return nil, errBodyTooLarge
	}
	// The buffer grows with the bytes received, from at most its first
	// bodyHead: sized by the declared length, a request that declared
	// MaxBodyBytes and sent none held that much (unverified: anyone
	// reaching the port) for as long as the server waited for it.
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, bodyHead)))
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, v.maxBody+1))
	_ = r.Body.Close()
	if err != nil {
		return nil, err
	}
	if n > v.maxBody {
		return nil, errBodyTooLarge
	}
	b := buf.Bytes()
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b, nil
}

// requestTarget is the request-target exactly as the request line carried
// it, which is what the proxy signed: its origin form, path and query. Any
// other form ("http://host/path", which net/http parses into the same path
// and query) is another target, which that signature does not cover.
func requestTarget(r *http.Request) string {
	if r.RequestURI != "" {
		return r.RequestURI
	}
	return r.URL.RequestURI() // a request built in-process, without a request line
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the verified identity of the request whose context
// ctx is, and whether there is one.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok
}

// MustFromContext is FromContext for handlers behind the middleware; it
// panics when the middleware did not run, a wiring mistake.
func MustFromContext(ctx context.Context) *Identity {
	id, ok := FromContext(ctx)
	if !ok {
		panic("verify: no identity in the context; is the handler behind Verifier.Middleware?")
	}
	return id
}

// Authorize decides whether id may proceed when the route needs perms (all
// of them): nil, or the problem to answer (401 for an anonymous caller, 403
// insufficient_scope for a caller who lacks one).
func Authorize(id *Identity, perms ...string) *problem.Problem {
	if id == nil || id.Anonymous() {
		return errAnon
	}
	for _, p := range perms {
		if !id.Has(p) {
			return problem.New(http.StatusForbidden, problem.CodeInsufficientScope, "requires permission "+p)
		}
	}
	return nil
}

// RequirePermission returns middleware that lets a request through only if
// the verified caller is signed in and holds every one of perms. It must
// run behind Verifier.Middleware. With no perms it requires a signed-in
// (not anonymous) caller.
func RequirePermission(perms ...string) func(http.Handler) http.Handler {
	perms = slices.Clone(perms)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := FromContext(r.Context())
			if p := Authorize(id, perms...); p != nil {
				WriteProblem(w, r, p)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// WriteProblem answers with p as application/problem+json, carrying the
// request's id (when it is a sane one) and path.
func WriteProblem(w http.ResponseWriter, r *http.Request, p *problem.Problem) {
	rid := r.Header.Get(requestid.Header)
	if !requestid.Valid(rid) {
		rid = ""
	}
	body := p.With(rid, r.URL.Path).JSON()
	h := w.Header()
	h.Set("Content-Type", problem.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}
