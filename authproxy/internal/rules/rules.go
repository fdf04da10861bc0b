// Package rules is the proxy's route table: which upstream a request goes
// to and what it needs to get there, decided from the normalized path and
// the method alone.
//
// A table holds coreapi's built-in routes (upstream "core", attributes
// fixed) and the routes of an optional YAML file, each a path prefix that
// matches whole segments ("/notes" matches "/notes" and "/notes/x", never
// "/notes-admin"). The longest matching prefix wins, compared ignoring
// case, and a path that spells it in another case is 404; if none of its routes
// allows the method the answer is 405, never a fall-back to a shorter
// prefix; no matching prefix is 404. Paths under /internal are never
// routed. A file route can neither equal nor lie under a built-in prefix,
// so no configuration can shadow coreapi's routes or send sign-in traffic
// to an app; nor can a route with strip_prefix open another route's app
// paths with other requirements (Table.aliases).
package rules

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/bits"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/headers"
	"github.com/tollgate-auth/tollgate/authproxy/internal/pathnorm"
	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/yamldoc"
	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// Access is what a route requires of the caller.
type Access uint8

// Access kinds.
const (
	// Public routes are forwarded with an anonymous identity; a bearer, if
	// any, is not looked at.
	Public Access = iota + 1
	// Protected routes need a valid bearer token.
	Protected
	// Optional routes verify a bearer when one is sent (an invalid one is
	// 401) and forward an anonymous identity otherwise.
	Optional
)

func (a Access) String() string {
	switch a {
	case Public:
		return "public"
	case Protected:
		return "protected"
	case Optional:
		return "optional"
	}
	return "unknown"
}

// CoreUpstream is the name of coreapi's upstream (IDENTITY_URL). It is
// always upstream index 0 of a table.
const CoreUpstream = "core"

// TranslationDoc is where the translation of the previous rules format is
// documented.
const TranslationDoc = "docs/operations.md#translating-a-rules-file-of-the-previous-format"

// ErrOldFormat refuses a file of the previous format (rules with path
// globs, deny, replace_defaults).
var ErrOldFormat = errors.New("rules file uses the previous format (rules:, path, deny, replace_defaults); translate it as " + TranslationDoc + " describes")

// ErrNoRoutes refuses a file without a list of routes: empty, or cut short
// while it was written. A file meant to add no app route says routes: [].
var ErrNoRoutes = errors.New("rules file has no routes (empty, or cut short while written?); a file that adds no app route says routes: []")

// UpstreamSpec is one upstream as written in the rules file.
type UpstreamSpec struct {
	URL   string `json:"url"`
	KeyID string `json:"key_id"`
	// RewriteHost sends the URL's host as the Host header instead of the
	// client's (a virtual host, or a service behind an ingress that
	// routes by name).
	RewriteHost bool `json:"rewrite_host,omitempty"`
	// Timeout replaces UPSTREAM_TIMEOUT for this upstream (a duration).
	Timeout string `json:"timeout,omitempty"`
}

// RouteSpec is one route as written in the rules file.
type RouteSpec struct {
	Prefix      string   `json:"prefix"`
	Methods     []string `json:"methods,omitempty"`
	Upstream    string   `json:"upstream"`
	Access      string   `json:"access"`
	Permissions []string `json:"permissions,omitempty"`
	// Streams (websocket, stream_timeout) and the authentication the
	// route requires beyond a valid token.
	Websocket            bool   `json:"websocket,omitempty"`
	StreamTimeout        string `json:"stream_timeout,omitempty"`
	RequireVerifiedEmail bool   `json:"require_verified_email,omitempty"`
	RequireMFA           bool   `json:"require_mfa,omitempty"`
	MaxAuthAge           string `json:"max_auth_age,omitempty"`
	// MaxBodyBytes is the route's request body limit instead of
	// MAX_BODY_BYTES (uploads; or less, for small JSON calls).
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`
	// StripPrefix forwards the path without the route's prefix (an app
	// that serves its routes from /).
	StripPrefix bool `json:"strip_prefix,omitempty"`
}

// File is the rules file.
type File struct {
	Upstreams map[string]UpstreamSpec `json:"upstreams"`
	Routes    []RouteSpec             `json:"routes"`
}

// Upstream is a compiled upstream.
type Upstream struct {
	Name  string
	Addr  string // host:port
	URL   string // http://host:port, for logs
	KeyID string // "" for core: it is signed with the core key
	TLS   bool   // an https:// URL (apps only)
	// Host is the Host header requests are sent with (rewrite_host: the
	// URL's host, without a default port); "" keeps the client's.
	Host string
	// Timeout, when not 0, replaces UPSTREAM_TIMEOUT: how long writing a
	// request and reading its answer may each take.
	Timeout time.Duration
	// app is Addr in one spelling (canonicalAddr): what tells whether two
	// upstreams are one app.
	app string
}

// MaxUpstreamTimeout is the longest timeout an upstream may set (longer
// answers are streams: stream_timeout).
const MaxUpstreamTimeout = time.Hour

// Route is a compiled route. Shared by every request: never modify it.
type Route struct {
	Prefix   string
	Upstream int // index into Table.Upstreams
	Access   Access
	// Permissions are all required (protected routes).
	Permissions          []string
	RequireVerifiedEmail bool
	RequireMFA           bool
	MaxAuthAge           time.Duration
	Websocket            bool
	StreamTimeout        time.Duration
	// MaxBodyBytes, when not 0, is the route's request body limit
	// instead of the proxy's MAX_BODY_BYTES.
	MaxBodyBytes int
	// StripPrefix: the path is forwarded without Prefix ("/" when
	// nothing is left).
	StripPrefix bool
	// Core marks a built-in route.
	Core bool
	// IgnoreBadBearer (the token endpoint only): a bearer that does not
	// verify, or whose session or membership is no longer valid, is
	// dropped and the request forwarded as anonymous. Its grants carry
	// their own credentials, and a client that attaches a stale access
	// token to every request must still be able to refresh or sign in.
	IgnoreBadBearer bool
	methods         uint16 // 0 = any; bitOther: ext holds some
	// ext are the methods outside the standard nine the route names
	// (PROPFIND, QUERY), as clients send them: case-sensitive.
	ext []string
	// allow is the route's methods as a header value (AllowMethods).
	allow string
}

// Group is every route of one prefix.
type Group struct {
	Prefix string
	// Allow is the Allow header of a 405 for this prefix.
	Allow  string
	routes []*Route
	// upper: Prefix has an upper-case letter, so a path in lower case
	// may still spell it in another case (see Match).
	upper bool
}

// anyMethod is what a route without methods admits: every standard method
// but TRACE (which an upstream answers by echoing the request, signed
// identity headers included) and CONNECT (a tunnel, never a request to
// forward); a route admits those, and methods outside the standard nine,
// only by naming them.
const anyMethod = bitGet | bitHead | bitPost | bitPut | bitPatch | bitDelete | bitOptions

// Pick returns the route of g allowing method, or nil (405, or 501 for a
// method the table does not know: Table.Knows).
func (g *Group) Pick(method []byte) *Route {
	mb := methodBit(method)
	if mb == bitOther {
		return g.pickExt(method)
	}
	for _, r := range g.routes {
		if r.methods == 0 && mb&anyMethod != 0 || r.methods&mb != 0 {
			return r
		}
	}
	return nil
}

// pickExt is Pick for a method outside the standard nine: the route that
// names it, compared as sent.
//
//go:noinline
func (g *Group) pickExt(method []byte) *Route {
	for _, r := range g.routes {
		for _, m := range r.ext {
			if m == string(method) {
				return r
			}
		}
	}
	return nil
}

// AllowMethods is the route's methods as a header value
// (Access-Control-Allow-Methods of a CORS preflight): "GET, HEAD", or for
// a route without methods the standard ones but TRACE and CONNECT.
func (r *Route) AllowMethods() string { return r.allow }

// Table is an immutable route table.
type Table struct {
	// Upstreams by index; [0] is core.
	Upstreams []Upstream
	groups    map[string]*Group // lower-cased prefix
	maxLen    int               // longest prefix
	lens      []bool            // lens[n]: some prefix is n bytes long
	// Source is the SHA-256 of the file bytes the table was parsed from
	// (zero for a table built without a file): what a reload compares a
	// file's content with.
	Source [32]byte
	// Warnings are what the file sets that loads but deserves a word,
	// logged at start and at each reload, and shown by -check-config.
	Warnings []string
	// ext are the methods outside the standard nine that some route
	// names (Knows).
	ext []string
}

// Knows reports whether method is one the table can route: a standard
// method, or one a route names. A request with any other method is
// answered 501 (RFC 9110 section 15.6.2: the server does not support it
// for any resource); one the table knows but the matched prefix does not
// take is 405.
func (t *Table) Knows(method []byte) bool {
	if methodBit(method) != bitOther {
		return true
	}
	for _, m := range t.ext {
		if m == string(method) {
			return true
		}
	}
	return false
}

// MaxRouteBodyBytes is the largest max_body_bytes a route may set: a
// request body is held in memory (its digest is signed) until it is
// forwarded.
const MaxRouteBodyBytes = 1 << 30

// Env is what a file is validated against besides itself.
type Env struct {
	// CoreURL is IDENTITY_URL, the address of the core upstream.
	CoreURL string
	// UpstreamKeyIDs are the ids in UPSTREAM_KEYS.
	UpstreamKeyIDs []string
	// CoreKeyIDs are the ids of the core keys; an app may never use one.
	CoreKeyIDs []string
}

var (
	upstreamName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	permName     = regexp.MustCompile(`^[a-z][a-z0-9-]*:[a-z][a-z0-9-]*$`)
)

const (
	bitGet = 1 << iota
	bitHead
	bitPost
	bitPut
	bitPatch
	bitDelete
	bitOptions
	bitConnect
	bitTrace
	bitOther = 1 << 15
)

var methodNames = [...]struct {
	name string
	bit  uint16
}{
	{"GET", bitGet}, {"HEAD", bitHead}, {"POST", bitPost}, {"PUT", bitPut}, {"PATCH", bitPatch},
	{"DELETE", bitDelete}, {"OPTIONS", bitOptions}, {"CONNECT", bitConnect}, {"TRACE", bitTrace},
}

func methodBit(m []byte) uint16 {
	switch string(m) { // no allocation: the compiler special-cases this
	case "GET":
		return bitGet
	case "HEAD":
		return bitHead
	case "POST":
		return bitPost
	case "PUT":
		return bitPut
	case "PATCH":
		return bitPatch
	case "DELETE":
		return bitDelete
	case "OPTIONS":
		return bitOptions
	case "CONNECT":
		return bitConnect
	case "TRACE":
		return bitTrace
	}
	return bitOther
}

// MaxMethodLen bounds the length of a method a route may name (the access
// log keeps as much of a method).
const MaxMethodLen = 32

// methodSet parses a methods list; GET also allows HEAD. The standard
// methods are read in any case (GET for get), as before extension methods
// were taken; any other must be an RFC 9110 token written as clients send
// it, in upper case (methods are case-sensitive), and is returned in ext
// (bitOther set).
func methodSet(ms []string) (set uint16, ext []string, err error) {
	var errs []error
	for _, m := range ms {
		up := strings.ToUpper(m)
		if b := methodBit([]byte(up)); b != bitOther {
			set |= b
			continue
		}
		switch {
		case !headers.IsToken(m):
			errs = append(errs, fmt.Errorf("method %q: not an HTTP method (RFC 9110 token: letters, digits and !#$%%&'*+-.^_`|~)", m))
		case len(m) > MaxMethodLen:
			errs = append(errs, fmt.Errorf("method %.40q...: at most %d characters", m, MaxMethodLen))
		case m != up:
			errs = append(errs, fmt.Errorf("method %q: methods are case-sensitive and clients send them in upper case: write %q", m, up))
		case !slices.Contains(ext, m):
			ext = append(ext, m)
			set |= bitOther
		}
	}
	if set&bitGet != 0 {
		set |= bitHead
	}
	return set, ext, errors.Join(errs...)
}

// allowHeader is the standard methods of set, then ext, as a header value.
func allowHeader(set uint16, ext ...string) string {
	var names []string
	for _, m := range methodNames {
		if set&m.bit != 0 {
			names = append(names, m.name)
		}
	}
	return strings.Join(append(names, ext...), ", ")
}

// methodsOf is what a route admits: its standard methods (anyMethod for
// one without methods) and the others it names.
func methodsOf(r *Route) (uint16, []string) {
	if r.methods == 0 {
		return anyMethod, nil
	}
	return r.methods &^ bitOther, r.ext
}

// coreSpec is one built-in route.
type coreSpec struct {
	prefix  string
	methods []string
	access  Access
}

// TokenPath is coreapi's token endpoint (see Route.IgnoreBadBearer).
const TokenPath = "/api/v1/auth/token"

// coreSpecs are coreapi's routes. Only the longest prefix counts, so the
// protected catch-alls below cover whatever the public ones leave.
func coreSpecs() []coreSpec {
	return []coreSpec{
		{"/api/v1/auth/signup", []string{"POST"}, Public},
		// Optional: a bearer, when sent, is verified and forwarded (grant_type=
		// mfa_otp steps that session up); without one the grants are public.
		{TokenPath, []string{"POST"}, Optional},
		// Sign-in through a provider (authorize, callback) and the one-time
		// URL of a link an owner started (link?ticket=…): browser navigations,
		// which carry no bearer.
		{"/api/v1/auth/oauth", []string{"GET"}, Public},
		// Optional: a bearer, when sent, proves that the verification comes
		// from the account's holder (else its password, in the body).
		{"/api/v1/auth/verify-email", []string{"POST"}, Optional},
		// Resending the verification mail is the signed-in user's own act.
		{"/api/v1/auth/verify-email/resend", nil, Protected},
		{"/api/v1/auth/password", []string{"POST"}, Public},
		// Client-authenticated (client id and secret in the request): coreapi
		// authenticates the client itself.
		{"/api/v1/auth/introspect", []string{"POST"}, Public},
		{"/api/v1/auth/revoke", []string{"POST"}, Public},
		{"/.well-known", []string{"GET"}, Public},
		{"/openapi.json", []string{"GET"}, Public},
		{"/api/v1/openapi.json", []string{"GET"}, Public},
		{"/api/v1/health", []string{"GET"}, Public},
		{"/verify-email", []string{"GET", "POST"}, Public},
		{"/reset-password", []string{"GET", "POST"}, Public},
		{"/accept-invitation", []string{"GET", "POST"}, Public},
		{"/api/v1/invitations/accept", []string{"POST"}, Optional},
		{"/api/v1/auth", nil, Protected},
		{"/api/v1/users", nil, Protected},
		{"/api/v1/tenant", nil, Protected},
		{"/api/v1/roles", nil, Protected},
		{"/api/v1/audit-events", nil, Protected},
		{"/api/v1/invitations", nil, Protected},
		{"/api/v1/permissions", nil, Protected},
		{"/api/v1/api-keys", nil, Protected},
		{"/api/v1/service-accounts", nil, Protected},
	}
}

// reservedPrefixes are the prefixes no file route may equal or lie under.
func reservedPrefixes() []string {
	ps := []string{"/internal"}
	for _, c := range coreSpecs() {
		ps = append(ps, c.prefix)
	}
	return ps
}

// CorePrefixes lists the built-in prefixes (for docs and tests).
func CorePrefixes() []string { return reservedPrefixes()[1:] }

// under reports whether p equals base or lies under it, by whole segments,
// ignoring case and reading the letters of unicodeFolds as ASCII ones, as
// Match does: "/api/v1/u%C5%BFers/me" lies under /api/v1/users.
func under(p, base string) bool {
	p, base = foldKey(p), foldKey(base)
	return p == base || strings.HasPrefix(p, base+"/")
}

// coveredBuiltIns lists the built-in prefixes lying under an app route's
// prefix (a catch-all /, or /api): paths the app never gets, since the
// longer built-in prefix wins. Only the outermost are named
// (/api/v1/auth, not /api/v1/auth/token), root paths first, each group
// sorted.
func coveredBuiltIns(prefix string) []string {
	var in []string
	for _, c := range CorePrefixes() {
		if prefix == "/" || under(c, prefix) {
			in = append(in, c)
		}
	}
	var out []string
	for _, c := range in {
		if !slices.ContainsFunc(in, func(o string) bool { return o != c && under(c, o) }) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		return cmp.Or(cmp.Compare(strings.Count(a, "/"), strings.Count(b, "/")), strings.Compare(a, b))
	})
	return out
}

// parseURL checks an upstream's URL (http:// or https://host:port, no
// path; coreapi's IDENTITY_URL too) and returns its host:port and whether
// it speaks TLS.
func parseURL(s string) (addr string, tls bool, err error) {
	u, err := url.Parse(s)
	if err == nil && u.User != nil {
		return "", false, fmt.Errorf("url %q: no user:password@ (the proxy never sends it; the app checks the key_id's signature instead): want http://host:port or https://host:port", envconfig.ProblemURL(s))
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		// An empty host (http://:8082) would be dialled as this host.
		return "", false, fmt.Errorf("url %q: want http://host:port or https://host:port with no path or query", envconfig.ProblemURL(s))
	}
	tls = u.Scheme == "https"
	port := u.Port()
	switch {
	case port != "":
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "", false, fmt.Errorf("url %q: port %s: want 1 to 65535", envconfig.ProblemURL(s), port)
		}
		port = strconv.Itoa(n) // 8082 for 08082: the Host header holds the number

	case tls:
		port = "443"
	default:
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port), tls, nil
}

// canonicalAddr writes addr (host:port, as parseURL returns it) in one
// spelling, so that two URLs of one address compare equal: an IP address
// in its canonical form (::1 for 0:0::1, an IPv4-mapped one as IPv4,
// which is how it is dialled), a name in lower case without a trailing
// dot (parseURL already wrote the port as a number). Two names of one
// host are still two addresses.
func canonicalAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return strings.ToLower(addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	} else {
		host = strings.TrimSuffix(strings.ToLower(host), ".")
	}
	return net.JoinHostPort(host, port)
}

// hostHeader is the Host header for an upstream at addr (host:port, as
// parseURL returns it): the host in lower case, without an IPv6
// address's zone (it names this host's interface, and a Host header has
// none: RFC 9110 section 7.2; Go's client drops it too), the port left out
// when it is the scheme's.
func hostHeader(addr string, tls bool) string {
	host, port, _ := net.SplitHostPort(addr)
	host, _, _ = strings.Cut(host, "%")
	host = strings.ToLower(host)
	if tls && port == "443" || !tls && port == "80" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

// Core returns the table of the built-in routes only (no rules file).
func Core(coreURL string) (*Table, error) {
	return Compile(File{}, Env{CoreURL: coreURL})
}

// Alias returns the table of the deprecated UPSTREAM_URL pointing at an
// app: the built-in routes plus a protected catch-all "/" to upstream
// "app", signed with keyID.
func Alias(coreURL, appURL, keyID string) (*Table, error) {
	f := File{
		Upstreams: map[string]UpstreamSpec{"app": {URL: appURL, KeyID: keyID}},
		Routes:    []RouteSpec{{Prefix: "/", Upstream: "app", Access: "protected"}},
	}
	return Compile(f, Env{CoreURL: coreURL, UpstreamKeyIDs: []string{keyID}})
}

// MaxFileSize is the most a rules file may hold: four times the most a
// Kubernetes ConfigMap holds, tens of thousands of routes.
const MaxFileSize = 4 << 20

// Load reads and compiles the rules file at path ("" means the built-in
// routes only).
func Load(path string, env Env) (*Table, error) {
	if path == "" {
		return Core(env.CoreURL)
	}
	b, err := ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return Parse(b, env)
}

// ReadFile returns the contents of the rules file at path, refusing one of
// more than MaxFileSize bytes having read no more: a RULES_FILE pointed at
// the wrong file (a log, a disk image, /dev/zero) would otherwise be read
// whole into memory, at start and at every reload of a serving proxy.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%s: more than %d MiB: not a rules file", path, MaxFileSize>>20)
	}
	return b, nil
}

// Parse parses a rules file (YAML or JSON, unknown fields refused) and
// compiles it.
func Parse(b []byte, env Env) (*Table, error) {
	if err := aliasExpansion(b, MaxFileSize); err != nil {
		return nil, err
	}
	var probe map[string]any
	if err := yaml.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("parse rules: %w", err)
	}
	if _, old := probe["rules"]; old {
		return nil, ErrOldFormat
	}
	if _, old := probe["replace_defaults"]; old {
		return nil, ErrOldFormat
	}
	if err := oneDocument(b); err != nil {
		return nil, err
	}
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("parse rules: %w", err)
	}
	errs := writtenFields(probe)
	t, err := Compile(f, env)
	errs = append(errs, err)
	// A file without its list of routes is most often one caught while it
	// is written in place (empty, or cut before its routes: valid YAML);
	// taken as it is, it would drop every app route.
	if r, ok := probe["routes"]; !ok || r == nil {
		errs = append([]error{ErrNoRoutes}, errs...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t.Source = sha256.Sum256(b)
	return t, nil
}

// aliasExpansion refuses a file whose aliases would repeat more than limit
// bytes of text: each alias stands for the whole value of its anchor, and
// the YAML library bounds that only past 100 aliases, so a few MiB anchored
// once and named by 100 aliases (or nested anchors each repeating the one
// before) made gigabytes of JSON as the file was decoded. The document is
// read as its nodes, which an alias only points at, and each anchored
// value is sized once. A file without aliases is never refused here (the
// parse reports a syntax error, and MaxFileSize bounds the text).
func aliasExpansion(b []byte, limit int) error {
	if bytes.IndexByte(b, '*') < 0 { // no alias: most files
		return nil
	}
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(b, &doc); err != nil {
		return nil // the parse below reports it
	}
	sizes := map[*yamlv3.Node]int{} // of anchored nodes, the only ones aliases name
	aliases := false
	var size func(n *yamlv3.Node) int
	size = func(n *yamlv3.Node) int {
		if s, ok := sizes[n]; ok {
			if s < 0 { // an anchor whose value holds itself: endless
				return limit + 1
			}
			return s
		}
		if n.Anchor != "" {
			sizes[n] = -1
		}
		s := 1 + len(n.Value)
		if n.Kind == yamlv3.AliasNode {
			aliases = true
			s = 1
			if n.Alias != nil {
				s = size(n.Alias)
			}
		}
		for _, c := range n.Content {
			if s += size(c); s > limit {
				s = limit + 1 // and no further: the sum could overflow
				break
			}
		}
		if n.Anchor != "" {
			sizes[n] = s
		}
		return s
	}
	if size(&doc) > limit && aliases {
		return fmt.Errorf("parse rules: the file expands to more than %d MiB through its aliases (*name): write the values out, or anchor less", limit>>20)
	}
	return nil
}

// oneDocument refuses a file of more than one YAML document: only the
// first would be read, the routes of the others dropped without a word.
func oneDocument(b []byte) error {
	switch err := yamldoc.Single(b); {
	case errors.Is(err, yamldoc.ErrMany):
		return errors.New("rules file has " + err.Error())
	case err != nil:
		return fmt.Errorf("parse rules: %w", err)
	}
	return nil
}

var (
	fileFields     = jsonFields(reflect.TypeFor[File]())
	upstreamFields = jsonFields(reflect.TypeFor[UpstreamSpec]())
	routeFields    = jsonFields(reflect.TypeFor[RouteSpec]())
)

func jsonFields(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		names = append(names, name)
	}
	return names
}

// optionalStrings are the fields of the spec types that are strings and
// may be left out (a duration: timeout, stream_timeout, max_auth_age),
// so that an empty one reads as left out.
func optionalStrings() map[string]bool {
	m := map[string]bool{}
	for _, t := range []reflect.Type{reflect.TypeFor[UpstreamSpec](), reflect.TypeFor[RouteSpec]()} {
		for i := range t.NumField() {
			name, opts, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if t.Field(i).Type.Kind() == reflect.String && opts == "omitempty" {
				m[name] = true
			}
		}
	}
	return m
}

// writtenFields checks what decoding the file as JSON lets through: a
// field written without a value (null: "methods:" with nothing after it,
// a template that rendered nothing) reads as one left out, which for
// methods is any method and for permissions and require_* is nothing
// asked; and a field name is matched ignoring case, so "Require_MFA:
// false" beside "require_mfa: true" would be a duplicate that one of
// them silently wins. A max_body_bytes of 0 reads as one left out too
// (MAX_BODY_BYTES), neither no body nor no limit, and so does an optional
// string written empty (max_auth_age: "", a template that rendered
// nothing between quotes): no recent sign-in asked.
func writtenFields(probe map[string]any) []error {
	var errs []error
	optional := optionalStrings()
	check := func(where string, m map[string]any, fields []string) {
		keys := slices.Sorted(maps.Keys(m))
		for _, k := range keys {
			known := slices.Contains(fields, k)
			if !known {
				if i := slices.IndexFunc(fields, func(f string) bool { return strings.EqualFold(f, k) }); i >= 0 {
					errs = append(errs, fmt.Errorf("%sfield %q: write %s (field names are lower case)", where, k, fields[i]))
				}
				continue // an unknown field is refused by the parse
			}
			if m[k] == nil && where != "" {
				errs = append(errs, fmt.Errorf("%s%s: written without a value, which would read as left out; give one or leave the field out", where, k))
			}
			if v, ok := m[k].(string); ok && v == "" && where != "" && optional[k] {
				errs = append(errs, fmt.Errorf("%s%s: written as an empty string, which would read as left out; give one or leave the field out", where, k))
			}
		}
	}
	check("", probe, fileFields)
	if ups, ok := probe["upstreams"].(map[string]any); ok {
		for _, n := range slices.Sorted(maps.Keys(ups)) {
			if u, ok := ups[n].(map[string]any); ok {
				check(fmt.Sprintf("upstream %q: ", n), u, upstreamFields)
			}
		}
	}
	if routes, ok := probe["routes"].([]any); ok {
		for i, r := range routes {
			if r, ok := r.(map[string]any); ok {
				prefix, _ := r["prefix"].(string)
				check(fmt.Sprintf("route %d (%s): ", i+1, prefix), r, routeFields)
				if n, ok := r["max_body_bytes"].(float64); ok && n == 0 {
					errs = append(errs, fmt.Errorf("route %d (%s): max_body_bytes 0: want 1 to %d (leave it out for MAX_BODY_BYTES)", i+1, prefix, MaxRouteBodyBytes))
				}
			}
		}
	}
	return errs
}

// Compile validates f against env and returns the table, reporting every
// problem found.
func Compile(f File, env Env) (*Table, error) {
	var errs []error
	coreAddr, coreTLS, err := parseURL(env.CoreURL)
	if err != nil {
		errs = append(errs, fmt.Errorf("IDENTITY_URL: %w", err))
	}
	t := &Table{
		Upstreams: []Upstream{{Name: CoreUpstream, Addr: coreAddr, URL: env.CoreURL, TLS: coreTLS, app: canonicalAddr(coreAddr)}},
		groups:    map[string]*Group{},
	}
	index := map[string]int{CoreUpstream: 0}
	names := make([]string, 0, len(f.Upstreams))
	for n := range f.Upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	// key id → the upstream that names it first, and its address as
	// scheme://host:port/ in canonicalAddr's spelling.
	keyOwner := map[string]string{}
	keyURL := map[string]string{}
	for _, n := range names {
		u := f.Upstreams[n]
		var uerrs []error
		switch {
		case n == CoreUpstream:
			uerrs = append(uerrs, errors.New("the name core is reserved for coreapi (IDENTITY_URL)"))
		case !upstreamName.MatchString(n):
			uerrs = append(uerrs, errors.New("name: want lower-case letters, digits, '-' or '_'"))
		}
		addr, tls, err := parseURL(u.URL)
		if err != nil {
			uerrs = append(uerrs, err)
		}
		app := canonicalAddr(addr)
		canonURL := "http://" + app + "/"
		if tls {
			canonURL = "https://" + app + "/"
		}
		switch {
		case u.KeyID == "":
			uerrs = append(uerrs, errors.New("key_id: required (an UPSTREAM_KEYS entry)"))
		case slices.Contains(env.CoreKeyIDs, u.KeyID):
			uerrs = append(uerrs, fmt.Errorf("key_id %q names a core key: an app must never hold a key coreapi accepts", u.KeyID))
		case !slices.Contains(env.UpstreamKeyIDs, u.KeyID):
			uerrs = append(uerrs, fmt.Errorf("key_id %q: not in UPSTREAM_KEYS", u.KeyID))
		case err != nil:
			// No address to compare.
		case keyOwner[u.KeyID] != "" && keyURL[u.KeyID] != canonURL:
			// Two names of one address (a rename in progress) are one app.
			uerrs = append(uerrs, fmt.Errorf("key_id %q is upstream %q's too, at another address: every upstream has a key of its own, else either app could sign requests the other accepts", u.KeyID, keyOwner[u.KeyID]))
		case keyOwner[u.KeyID] == "":
			keyOwner[u.KeyID], keyURL[u.KeyID] = n, canonURL
		}
		var timeout time.Duration
		if u.Timeout != "" {
			if timeout, err = time.ParseDuration(u.Timeout); err != nil || timeout < time.Second || timeout > MaxUpstreamTimeout {
				uerrs = append(uerrs, fmt.Errorf("timeout %q: want a duration from 1s to 1h like 2m", u.Timeout))
			}
		}
		if len(uerrs) > 0 {
			errs = append(errs, fmt.Errorf("upstream %q: %w", n, errors.Join(uerrs...)))
			continue
		}
		index[n] = len(t.Upstreams)
		up := Upstream{Name: n, Addr: addr, URL: u.URL, KeyID: u.KeyID, TLS: tls, Timeout: timeout, app: app}
		if u.RewriteHost {
			up.Host = hostHeader(addr, tls)
		}
		t.Upstreams = append(t.Upstreams, up)
	}
	for _, c := range coreSpecs() {
		set, _, _ := methodSet(c.methods)
		_ = t.add(&Route{Prefix: c.prefix, Access: c.access, Core: true, methods: set,
			IgnoreBadBearer: c.prefix == TokenPath}, "built-in route")
	}
	var placed []placedRoute
	reserved := reservedPrefixes()
	covering := map[string]bool{} // prefixes (foldKey) already looked at by coveredBuiltIns
	for i, sp := range f.Routes {
		where := fmt.Sprintf("route %d (%s)", i+1, sp.Prefix)
		r, err := compileRoute(sp, index, reserved)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if err := t.add(r, where); err != nil {
			errs = append(errs, err)
			continue
		}
		if r.methods&bitHead != 0 && r.methods&bitGet == 0 {
			// Refusing it would stop proxies that start with such a
			// file today; the warning names it instead.
			t.Warnings = append(t.Warnings, where+": methods hold HEAD but not GET: nearly every framework answers HEAD by running its GET handler, "+
				"so the app's GET answer headers and side effects are reached through a prefix whose GET is refused; add GET or drop HEAD")
		}
		placed = append(placed, placedRoute{r, where})
		if !covering[foldKey(r.Prefix)] {
			covering[foldKey(r.Prefix)] = true
			if names := coveredBuiltIns(r.Prefix); len(names) > 0 {
				t.Warnings = append(t.Warnings, where+": the app never gets "+strings.Join(names, ", ")+
					", nor any path under them: coreapi's built-in routes win there (they cannot be shadowed); serve those pages of the app under other paths")
			}
		}
	}
	errs = append(errs, t.aliases(placed)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	t.lens = make([]bool, t.maxLen+1)
	for k, g := range t.groups {
		t.lens[len(k)] = true
		var set uint16
		var ext []string
		for _, r := range g.routes {
			rs, rext := methodsOf(r)
			r.allow = allowHeader(rs, rext...)
			set |= rs
			ext = append(ext, rext...)
			for _, m := range rext {
				if !slices.Contains(t.ext, m) {
					t.ext = append(t.ext, m)
				}
			}
		}
		g.Allow = allowHeader(set, ext...)
	}
	return t, nil
}

// add puts r into its prefix group, refusing exact duplicates.
func (t *Table) add(r *Route, where string) error {
	key := foldKey(r.Prefix)
	g := t.groups[key]
	if g == nil {
		g = &Group{Prefix: r.Prefix, upper: key != r.Prefix}
		t.groups[key] = g
		t.maxLen = max(t.maxLen, len(key))
	}
	if g.Prefix != r.Prefix {
		return fmt.Errorf("%s: prefix %s differs from another route's %s only in letter case: a path spelling one is refused by the other (write both alike)",
			where, r.Prefix, g.Prefix)
	}
	for _, o := range g.routes {
		if o.methods == 0 || r.methods == 0 || o.methods&r.methods&^bitOther != 0 || slices.ContainsFunc(o.ext, func(m string) bool { return slices.Contains(r.ext, m) }) {
			return fmt.Errorf("%s: duplicate of another route with prefix %s: routes sharing a prefix need disjoint, non-empty methods (here %s and %s)",
				where, o.Prefix, methodsText(o), methodsText(r))
		}
	}
	g.routes = append(g.routes, r)
	return nil
}

// placedRoute is a file route with where the file has it.
type placedRoute struct {
	r     *Route
	where string
}

// aliases refuses routes through which one request of an app could arrive
// with other requirements. A route with strip_prefix sends its paths
// without the prefix: with /pub stripped, /pub/notes/1 reaches the app as
// /notes/1, as the route /notes sends /notes/1. Where such routes go to
// the same app, the app cannot tell which of them the proxy authorized,
// and the one asking less would decide for both (an anonymous request
// for /pub/notes/1 served where /notes needs a permission). Routes of
// different prefixes (one of them stripped) to one app must then admit
// the same methods and ask the same of the caller. Routes sharing a
// prefix admit disjoint methods, so no request can take either.
func (t *Table) aliases(routes []placedRoute) []error {
	var errs []error
	for i, a := range routes {
		for _, b := range routes[i+1:] {
			if !a.r.StripPrefix && !b.r.StripPrefix || a.r.Prefix == b.r.Prefix ||
				!sameApp(&t.Upstreams[a.r.Upstream], &t.Upstreams[b.r.Upstream]) || sameRequirements(a.r, b.r) {
				continue
			}
			s, o := a, b // s strips
			if !s.r.StripPrefix {
				s, o = b, a
			}
			example := fmt.Sprintf("%s%s/x reaches it as %s/x does", s.r.Prefix, o.r.Prefix, o.r.Prefix)
			if o.r.StripPrefix {
				example = fmt.Sprintf("%s/x and %s/x both reach it as /x", s.r.Prefix, o.r.Prefix)
			}
			errs = append(errs, fmt.Errorf("%s strips its prefix and %s goes to the same app (%s): an app path is reached through either (%s), "+
				"yet they differ in methods, access, permissions or require_* and max_auth_age, and the one asking less would decide for both; "+
				"give them the same, or send them to apps at different addresses",
				s.where, o.where, t.Upstreams[s.r.Upstream].Addr, example))
		}
	}
	return errs
}

// sameApp reports whether two upstreams may be one app: the same address
// (two upstream names of one URL included), compared in canonicalAddr's
// spelling, whatever the scheme (one port may well serve both). Two names
// of one host are not recognised.
func sameApp(a, b *Upstream) bool {
	return a.app == b.app
}

// sameRequirements reports whether two routes admit the same methods and
// ask the same of the caller.
func sameRequirements(a, b *Route) bool {
	as, aext := methodsOf(a)
	bs, bext := methodsOf(b)
	sorted := func(ss []string) []string { return slices.Sorted(slices.Values(ss)) }
	perms := func(r *Route) []string { return slices.Compact(slices.Sorted(slices.Values(r.Permissions))) }
	return as == bs && slices.Equal(sorted(aext), sorted(bext)) && a.Access == b.Access && slices.Equal(perms(a), perms(b)) &&
		a.RequireVerifiedEmail == b.RequireVerifiedEmail && a.RequireMFA == b.RequireMFA && a.MaxAuthAge == b.MaxAuthAge
}

func methodsText(r *Route) string {
	if r.methods == 0 {
		return "any method"
	}
	return "[" + allowHeader(r.methods, r.ext...) + "]"
}

func compileRoute(sp RouteSpec, index map[string]int, reserved []string) (*Route, error) {
	r := &Route{Prefix: sp.Prefix}
	var errs []error
	switch {
	case !strings.HasPrefix(sp.Prefix, "/"):
		errs = append(errs, errors.New("prefix must start with '/'"))
	case strings.Contains(sp.Prefix, "*"):
		errs = append(errs, errors.New("prefix is a literal path, not a glob: /notes covers /notes and everything under it ("+TranslationDoc+")"))
	case sp.Prefix != "/" && strings.HasSuffix(sp.Prefix, "/"):
		errs = append(errs, errors.New("prefix must not end with '/': it always matches whole segments"))
	default:
		dots := false
		for _, seg := range strings.Split(sp.Prefix[1:], "/") {
			if sp.Prefix == "/" {
				break
			}
			if seg == "" || seg == "." || seg == ".." {
				errs = append(errs, fmt.Errorf("segment %q not allowed", seg))
				dots = true
			}
		}
		// Request paths are matched in pathnorm's form: a prefix in any
		// other (a raw non-ASCII letter, a space, a lower-case or needless
		// escape) would never match, and its paths would silently take a
		// shorter prefix's route.
		if norm, err := pathnorm.String(sp.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("prefix: a request path like it is refused (%w)", err))
		} else if norm != sp.Prefix && !dots {
			errs = append(errs, fmt.Errorf("prefix is not written as request paths are matched (unreserved characters, sub-delims but ';', ':' and '@' as they are, any other byte percent-encoded in upper-case hex): write %s", norm))
		}
		for _, res := range reserved {
			if under(sp.Prefix, res) {
				errs = append(errs, fmt.Errorf("prefix lies under the built-in %s: coreapi's routes cannot be shadowed", res))
				break
			}
		}
	}
	set, ext, err := methodSet(sp.Methods)
	if err != nil {
		errs = append(errs, err)
	}
	r.ext = ext
	if sp.Methods != nil && len(sp.Methods) == 0 {
		// Taken as it is, an empty list would be the absent one: any
		// method.
		errs = append(errs, errors.New("methods: [] admits no method; leave methods out for the standard methods but TRACE and CONNECT"))
	}
	r.methods = set
	if sp.Upstream == "" {
		errs = append(errs, errors.New("upstream: required"))
	} else if sp.Upstream == CoreUpstream {
		errs = append(errs, errors.New("upstream core: coreapi's routes are built in"))
	} else if i, ok := index[sp.Upstream]; ok {
		r.Upstream = i
	} else {
		errs = append(errs, fmt.Errorf("unknown upstream %q", sp.Upstream))
	}
	switch sp.Access {
	case "public":
		r.Access = Public
	case "protected":
		r.Access = Protected
	case "optional":
		r.Access = Optional
	default:
		errs = append(errs, fmt.Errorf("access %q: want public, protected or optional", sp.Access))
	}
	for _, p := range sp.Permissions {
		if !permName.MatchString(p) {
			errs = append(errs, fmt.Errorf("permission %q: want resource:action in lower case", p))
		}
	}
	r.Permissions = sp.Permissions
	needsIdentity := len(sp.Permissions) > 0 || sp.RequireVerifiedEmail || sp.RequireMFA || sp.MaxAuthAge != ""
	if needsIdentity && r.Access != Protected && r.Access != 0 {
		errs = append(errs, errors.New("permissions, require_verified_email, require_mfa and max_auth_age need access: protected"))
	}
	r.RequireVerifiedEmail, r.RequireMFA, r.Websocket = sp.RequireVerifiedEmail, sp.RequireMFA, sp.Websocket
	if sp.Websocket && len(sp.Methods) > 0 && set&bitGet == 0 {
		// A WebSocket opens with a GET: such a route would never open one.
		errs = append(errs, errors.New("websocket: true needs GET among methods (a WebSocket opens with a GET)"))
	}
	if sp.StreamTimeout != "" {
		if r.StreamTimeout, err = time.ParseDuration(sp.StreamTimeout); err != nil || r.StreamTimeout <= 0 {
			errs = append(errs, fmt.Errorf("stream_timeout %q: want a positive duration like 10m", sp.StreamTimeout))
		}
	}
	if sp.MaxAuthAge != "" {
		// auth_time counts whole seconds: below 1s, the age to check and
		// to announce (max_age) would be 0.
		if r.MaxAuthAge, err = time.ParseDuration(sp.MaxAuthAge); err != nil || r.MaxAuthAge < time.Second {
			errs = append(errs, fmt.Errorf("max_auth_age %q: want a duration of at least 1s like 5m", sp.MaxAuthAge))
		}
	}
	if sp.StripPrefix && sp.Prefix == "/" {
		errs = append(errs, errors.New("strip_prefix: true on prefix / would strip nothing"))
	}
	r.StripPrefix = sp.StripPrefix
	if sp.MaxBodyBytes < 0 || sp.MaxBodyBytes > MaxRouteBodyBytes {
		errs = append(errs, fmt.Errorf("max_body_bytes %d: want 1 to %d (1 GiB; the body is held in memory until it is forwarded)", sp.MaxBodyBytes, MaxRouteBodyBytes))
	} else {
		r.MaxBodyBytes = int(sp.MaxBodyBytes)
	}
	return r, errors.Join(errs...)
}

// IsInternal reports whether a normalized path lies under /internal (any
// case): never routed.
func IsInternal(path []byte) bool {
	const p = "/internal"
	// Most paths differ at their first letter: told apart before the fold,
	// on every request.
	if len(path) < len(p) || path[1]|0x20 != 'i' || !strings.EqualFold(string(path[:len(p)]), p) {
		return false
	}
	return len(path) == len(p) || path[len(p)] == '/'
}

// IsInternalFolded is IsInternal for a normalized path that Match did not
// read whole (what a strip_prefix route leaves of it), for an upstream
// that reads the letters of unicodeFolds as ASCII ones: to it
// "/%C4%B0nternal" is /internal, as it is to Match.
func IsInternalFolded(path []byte) bool {
	return IsInternal(path) || hasUnicodeFold(path) && IsInternal([]byte(foldKey(string(path))))
}

// Match returns the group of the longest prefix matching the normalized
// path, or nil (404). scratch is a buffer the caller owns (the lower-cased
// path is built in it); the grown buffer is returned for reuse. It does
// not allocate once scratch is large enough.
//
// Prefixes are compared ignoring case, so that a path in another case
// cannot fall to a shorter prefix's route; but a path whose longest
// matching prefix it spells in another case than the route's is refused
// (nil) too: an upstream that compares case (Go's ServeMux, Python's
// frameworks, Spring) reads "/notes/PUBLIC" under its "/notes/" handler,
// not under the route "/notes/public". The letters outside ASCII that
// some upstreams read as ASCII ones (unicodeFolds) count as those. A path
// that names a longer prefix with a format suffix ("/notes.json" beside
// the route /notes) is refused as well (formatAlias).
func (t *Table) Match(path, scratch []byte) (*Group, []byte) {
	if IsInternal(path) {
		return nil, scratch
	}
	if hasUnicodeFold(path) {
		return t.matchFolded(path), scratch
	}
	// No prefix is longer than maxLen: only that much (and the byte after
	// it, to see a segment boundary) needs lower-casing.
	n := min(len(path), t.maxLen+1)
	lp := path[:n] // most paths are lower case already: matched as they are
	lowered := false
	if i := firstUpper(lp); i >= 0 {
		lp = lower(scratch[:0], path[:n], i)
		scratch, lowered = lp, true
	}
	g := t.match(lp, len(path))
	if g != nil && (lowered || g.upper) && !spells(path, g.Prefix) {
		return nil, scratch
	}
	// lp spells path's bytes at their places (lower-casing keeps lengths),
	// and g's key is as long as its prefix (the path spells it).
	if g != nil && t.formatAlias(path, lp, len(g.Prefix)) {
		return nil, scratch
	}
	return g, scratch
}

// formatAlias reports whether the path ends in a segment that, cut at its
// first '.', makes the path a prefix longer than the one that matched it
// (whose key is keyLen bytes): "/notes.json" beside the routes /notes and
// /. Routers that read a format suffix after a route's path serve it as
// that route: Rails adds "(.:format)" to every route (GET /notes.json is
// notes#index), Spring before 5.3 matched "/notes" against "/notes.*",
// Grails and CakePHP do the same. The path would otherwise take the
// shorter prefix's route ("/", public) to such an app's /notes. path
// gives the positions, lp (at least path's first maxLen+1 bytes,
// lower-cased and folded as match reads them, at the same positions) the
// key.
func (t *Table) formatAlias(path, lp []byte, keyLen int) bool {
	cut := 0 // the first '.' of the last segment: read from the end
	for i := len(path) - 1; i > 0 && path[i] != '/'; i-- {
		if path[i] == '.' {
			cut = i
		}
	}
	if cut == 0 || path[cut-1] == '/' { // most paths: no dot there
		return false
	}
	return cut > keyLen && cut <= t.maxLen && t.lens[cut] && t.groups[string(lp[:cut])] != nil
}

// unicodeFolds are the letters outside ASCII, percent-encoded as pathnorm
// writes them, that upstreams ignoring case as Unicode does (Python's
// re.IGNORECASE, as in Django's "(?i)" patterns; Java's
// String.equalsIgnoreCase and Spring's PathPattern when not case
// sensitive; Windows file names) read as ASCII letters: "İ" (U+0130) and
// "ı" (U+0131) as i, "ſ" (U+017F) as s, the Kelvin sign (U+212A) as k.
// Such an app reads "/adm%C4%B1n" as /admin.
var unicodeFolds = [...]struct{ esc, ascii string }{
	{"%C4%B0", "i"}, {"%C4%B1", "i"}, {"%C5%BF", "s"}, {"%E2%84%AA", "k"},
}

// foldKey is the key a prefix or path is looked up by: in lower case, the
// letters of unicodeFolds as their ASCII ones.
func foldKey(p string) string {
	for _, f := range unicodeFolds {
		p = strings.ReplaceAll(p, f.esc, f.ascii)
	}
	return strings.ToLower(p)
}

// hasUnicodeFold reports whether the normalized path holds a letter of
// unicodeFolds.
func hasUnicodeFold(path []byte) bool {
	if bytes.IndexByte(path, '%') < 0 {
		return false
	}
	for _, f := range unicodeFolds {
		if bytes.Contains(path, []byte(f.esc)) {
			return true
		}
	}
	return false
}

// matchFolded is Match for a path holding a letter of unicodeFolds: the
// group of the longest prefix the path is under with those letters read as
// ASCII ones, nil unless the path spells that prefix as the route does.
// Out of line: rare.
//
//go:noinline
func (t *Table) matchFolded(path []byte) *Group {
	lp := []byte(foldKey(string(path)))
	if IsInternal(lp) {
		return nil
	}
	g := t.match(lp, len(lp))
	if g != nil && (!spells(path, g.Prefix) || t.formatAlias(lp, lp, len(foldKey(g.Prefix)))) {
		return nil
	}
	return g
}

// spells reports whether path starts with prefix, byte for byte.
func spells(path []byte, prefix string) bool {
	return len(path) >= len(prefix) && string(path[:len(prefix)]) == prefix
}

// match is Match on the lower-cased lp, the start of a path of n bytes.
func (t *Table) match(lp []byte, n int) *Group {
	// Candidates from the longest down: the whole path (if no longer than
	// the longest prefix), then each segment boundary, then "/".
	end := len(lp)
	if n > t.maxLen {
		end = t.maxLen
		for end > 0 && lp[end] != '/' {
			end--
		}
	}
	for end > 0 {
		if t.lens[end] {
			if g := t.groups[string(lp[:end])]; g != nil {
				return g
			}
		}
		end--
		for end > 0 && lp[end] != '/' {
			end--
		}
	}
	return t.groups["/"]
}

// firstUpper is the index of p's first upper-case ASCII letter, or -1. It
// reads eight bytes at a time (TestFirstUpper): every routed request's
// path is read so, and most have none.
func firstUpper(p []byte) int {
	if len(p) < 8 {
		for i, c := range p {
			if c >= 'A' && c <= 'Z' {
				return i
			}
		}
		return -1
	}
	// Eight bytes at a time; the last eight overlap bytes already read
	// (none of them a letter looked for): no byte-by-byte tail.
	for i := 0; i < len(p); i += 8 {
		j := min(i, len(p)-8)
		if m := headers.UpperBytes(binary.LittleEndian.Uint64(p[j : j+8])); m != 0 {
			return j + bits.TrailingZeros64(m)/8
		}
	}
	return -1
}

// lower appends p to dst in lower case, given that p[:i] has no upper-case
// letter.
func lower(dst, p []byte, i int) []byte {
	dst = append(dst, p[:i]...)
	for _, c := range p[i:] {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// Routes returns every route, built-in ones first (for logs and tests).
func (t *Table) Routes() []*Route {
	var out []*Route
	for _, g := range t.groups {
		out = append(out, g.routes...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Core != out[j].Core {
			return out[i].Core
		}
		return out[i].Prefix < out[j].Prefix
	})
	return out
}

// Methods is the route's methods as Describe prints them: "GET,HEAD", or
// "any" for a route without methods (every standard method but TRACE and
// CONNECT).
func (r *Route) Methods() string {
	if r.methods == 0 {
		return "any"
	}
	return strings.ReplaceAll(allowHeader(r.methods, r.ext...), ", ", ",")
}

// Describe writes the table as -check-config prints it, one line per
// upstream (in index order, core first, signed with coreKeyID) and then one
// per route, sorted by prefix (routes of one prefix in the file's order):
//
//	upstream notes http://127.0.0.1:8082 key_id=app-notes timeout=2m0s
//	route /notes GET,HEAD -> notes protected permissions=notes:read
//
// Options appear only when set; key ids are printed, never keys.
func (t *Table) Describe(w io.Writer, coreKeyID string) error {
	var b strings.Builder
	for i, u := range t.Upstreams {
		keyID := u.KeyID
		if i == 0 {
			keyID = coreKeyID
		}
		fmt.Fprintf(&b, "upstream %s %s key_id=%s", u.Name, u.URL, keyID)
		if u.Host != "" {
			fmt.Fprintf(&b, " rewrite_host=true host=%s", u.Host)
		}
		if u.Timeout != 0 {
			fmt.Fprintf(&b, " timeout=%s", u.Timeout)
		}
		b.WriteByte('\n')
	}
	groups := make([]*Group, 0, len(t.groups))
	for _, g := range t.groups {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].Prefix < groups[j].Prefix })
	for _, g := range groups {
		for _, r := range g.routes {
			fmt.Fprintf(&b, "route %s %s -> %s %s", r.Prefix, r.Methods(), t.Upstreams[r.Upstream].Name, r.Access)
			if len(r.Permissions) > 0 {
				fmt.Fprintf(&b, " permissions=%s", strings.Join(r.Permissions, ","))
			}
			if r.RequireVerifiedEmail {
				b.WriteString(" require_verified_email=true")
			}
			if r.RequireMFA {
				b.WriteString(" require_mfa=true")
			}
			if r.MaxAuthAge != 0 {
				fmt.Fprintf(&b, " max_auth_age=%s", r.MaxAuthAge)
			}
			if r.Websocket {
				b.WriteString(" websocket=true")
			}
			if r.StreamTimeout != 0 {
				fmt.Fprintf(&b, " stream_timeout=%s", r.StreamTimeout)
			}
			if r.MaxBodyBytes != 0 {
				fmt.Fprintf(&b, " max_body_bytes=%d", r.MaxBodyBytes)
			}
			if r.StripPrefix {
				b.WriteString(" strip_prefix=true")
			}
			if r.IgnoreBadBearer {
				b.WriteString(" ignore_bad_bearer=true")
			}
			b.WriteByte('\n')
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
