// Package config reads the proxy's configuration from the environment
// (12-factor), applies defaults, and reports every problem at once. No
// identity key ever appears in output.
package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/secretfile"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// Config is the whole proxy configuration.
type Config struct {
	ListenAddr string
	AdminAddr  string

	// IdentityURL is coreapi's internal base: JWKS, projections and the
	// upstream of the built-in routes (http:// or https://).
	IdentityURL *url.URL
	// IdentityTLS is the client configuration of an https:// IDENTITY_URL
	// and JWKS_URL: the system's roots plus IDENTITY_CA_FILE's
	// certificates; nil when neither is https://.
	IdentityTLS *tls.Config
	// AppURL is the deprecated UPSTREAM_URL when it names an app (not
	// IdentityURL): one app upstream behind a protected catch-all.
	AppURL string
	// UpstreamURLSet reports a (deprecated) UPSTREAM_URL, warned at start.
	UpstreamURLSet bool
	// Warnings are settings that load but deserve a word at start (logged
	// by the binary, printed by -check-config).
	Warnings []string
	JWKSURL  string
	// CoreKeys sign requests to coreapi (the first one signs).
	CoreKeys []identity.Key `json:"-"`
	// UpstreamKeys are the apps' keys, named by the rules file's key_id.
	UpstreamKeys []identity.Key `json:"-"`
	NATSURL      string
	Issuer       string
	Audience     string
	Algs         []string
	RulesFile    string
	TrustedCIDRs []netip.Prefix

	// CORSOrigins are the allowed browser origins (or "*"); none: CORS
	// is off.
	CORSOrigins     []string
	CORSCredentials bool
	CORSMaxAge      time.Duration
	// CORSAllowHeaders and CORSExposeHeaders are header names added to
	// the built-in lists (as written, duplicates of those dropped).
	CORSAllowHeaders  []string
	CORSExposeHeaders []string

	// CacheMemoryMB is the memory budget of the token and projection
	// caches together; TokenCacheSize and ProjectionCacheSize, when not 0,
	// override the number of entries the budget gives each.
	CacheMemoryMB       int64
	TokenCacheSize      int64
	TokenCacheMaxTTL    time.Duration
	NegativeCacheTTL    time.Duration
	Leeway              time.Duration
	MaxLeeway           time.Duration
	TokenMaxLifetime    time.Duration
	MaxTokenBytes       int
	ProjectionCacheSize int64
	ProjectionCacheTTL  time.Duration
	MaxStaleness        time.Duration
	// HeartbeatTimeout (NATS_HEARTBEAT_TIMEOUT): how long a connected feed
	// may bring no outbox heartbeat, or no beat from a relay the heartbeats
	// list, before the caches trust their entries only for MaxStaleness;
	// 0: not watched.
	HeartbeatTimeout time.Duration
	JWKSRefresh      time.Duration
	JWKSCooldown     time.Duration

	UpstreamTimeout     time.Duration
	UpstreamMaxConns    int
	UpstreamMaxConnWait time.Duration
	UpstreamIdleTimeout time.Duration
	// UpstreamTLS is the client configuration of https:// app upstreams:
	// the system's roots plus UPSTREAM_CA_FILE's certificates.
	UpstreamTLS       *tls.Config
	ProjectionTimeout time.Duration
	MaxBodyBytes      int
	BodyMemoryMB      int
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
	LogLevel          slog.Level
	AccessLog         bool
	Pprof             bool

	// Fleet guards.
	ProjectionMaxFetches int

	// Long-lived connections (WebSockets, stream routes).
	StreamMaxConns    int
	StreamMaxPerUser  int
	StreamMaxPerIP    int
	StreamBufferBytes int
	StreamDrain       time.Duration

	printout envconfig.Printout

	// Tracing is the OpenTelemetry configuration (OTEL_*); off unless an
	// OTLP endpoint is set.
	Tracing tracing.Config
}

// Vars lists every variable the proxy reads, in the order of the table in
// docs/operations.md (a test compares the two). Load can read nothing that
// is not listed here; -check-config and the start log print from it.
var Vars = append(envconfig.Table{
	{Name: "PROXY_LISTEN_ADDR", Default: "127.0.0.1:8080", Help: "public listen address"},
	{Name: "PROXY_ADMIN_ADDR", Default: "127.0.0.1:9090", Help: "admin listen address (/healthz, /readyz, /metrics)"},
	{Name: "IDENTITY_URL", Default: "http://127.0.0.1:8081", Mask: envconfig.URL, Help: "coreapi's internal base URL (http:// or https://host:port): JWKS, projections, its routes"},
	{Name: "UPSTREAM_URL", Mask: envconfig.URL, Help: "deprecated: an app's base URL behind a protected catch-all (ignored when equal to IDENTITY_URL)"},
	{Name: "JWKS_URL", DefaultDoc: "IDENTITY_URL + /.well-known/jwks.json", Mask: envconfig.URL, Help: "key set URL"},
	{Name: "IDENTITY_CA_FILE", Help: "PEM certificates trusted, besides the system's roots, for an https:// IDENTITY_URL and JWKS_URL"},
	{Name: "IDENTITY_KEYS", OneOf: "core keys", Mask: envconfig.KeyList, Help: "core keys id:base64[,id:base64...] shared with coreapi; the first signs; or"},
	{Name: "IDENTITY_KEYS_FILE", OneOf: "core keys", Help: "file holding that list"},
	{Name: "IDENTITY_HMAC_KEY", OneOf: "core keys", Mask: envconfig.Secret, Help: "legacy: one base64 core key (id core); or"},
	{Name: "IDENTITY_HMAC_KEY_FILE", OneOf: "core keys", Help: "legacy: file holding that key"},
	{Name: "UPSTREAM_KEYS", Mask: envconfig.KeyList, Help: "app keys id:base64[,...], named by the rules file's key_id; or"},
	{Name: "UPSTREAM_KEYS_FILE", Help: "file holding that list"},
	{Name: "NATS_URL", Default: "nats://127.0.0.1:4222", Mask: envconfig.URL, Help: "NATS for invalidation events (nats:// or tls://)"},
	{Name: "NATS_URL_FILE", Help: "file holding that URL (with its credentials)"},
	{Name: "TOKEN_ISSUER", Default: "http://localhost:8080", Help: "required iss"},
	{Name: "TOKEN_AUDIENCE", Default: "tollgate", Help: "required aud"},
	{Name: "TOKEN_ALGS", Default: "EdDSA,ES256,RS256", Help: "allowed signature algorithms (each key is pinned to its own alg)"},
	{Name: "RULES_FILE", Help: "optional YAML route table (upstreams and routes), reloaded on change and SIGHUP"},
	{Name: "CORS_ALLOWED_ORIGINS", Help: "comma list of browser origins (https://app.example.com) allowed to call the proxy cross-origin, or * for any (never with credentials); empty: no CORS"},
	{Name: "CORS_ALLOW_CREDENTIALS", Default: "false", Help: "send Access-Control-Allow-Credentials: true to the listed origins (cookies); refused with *"},
	{Name: "CORS_MAX_AGE", Default: "10m", Help: "how long browsers may cache a preflight answer"},
	{Name: "CORS_ALLOW_HEADERS", Help: "comma list of request headers browsers may send cross-origin besides Authorization, Content-Type, X-API-Key, X-Request-Id and Last-Event-ID (e.g. Idempotency-Key)"},
	{Name: "CORS_EXPOSE_HEADERS", Help: "comma list of response headers browser scripts may read besides X-Request-Id, WWW-Authenticate, Retry-After and Location (e.g. ETag, Content-Disposition)"},
	{Name: "TRUSTED_PROXY_CIDRS", Help: "comma list of CIDRs whose forwarding fields are kept (X-Forwarded-*, Forwarded, the other client-address, scheme, host-override, base-path and client-certificate fields, trace context, x-envoy-*; docs/security.md) and whose X-Forwarded-For names the client; identity fields of any auth layer are removed from every peer"},
	{Name: "CACHE_MEMORY_MB", Default: "256", Help: "memory budget (MiB) of the token and projection caches together, at the measured bytes per entry"},
	{Name: "TOKEN_CACHE_SIZE", Help: "verified-token cache entries, overriding the token cache's share of CACHE_MEMORY_MB (at most 1073741824)"},
	{Name: "TOKEN_CACHE_MAX_TTL", Default: "5m", Help: "cap on a cached token's TTL (it never outlives exp)"},
	{Name: "NEGATIVE_CACHE_TTL", Default: "10s", Help: "how long a rejected token is remembered"},
	{Name: "TOKEN_LEEWAY", Default: "30s", Help: "clock skew allowed on exp, nbf, iat (at most TOKEN_MAX_LEEWAY, and at most 1m)"},
	{Name: "TOKEN_MAX_LEEWAY", Default: "60s", Help: "deployment-wide cap on TOKEN_LEEWAY (at most 1m); set the same value on coreapi"},
	{Name: "TOKEN_MAX_LIFETIME", Default: "1h", Help: "longest accepted exp - iat"},
	{Name: "MAX_TOKEN_BYTES", Default: "4096", Help: "longest accepted bearer token (at most 65536)"},
	{Name: "PROJECTION_CACHE_SIZE", Help: "projection cache entries, overriding the projection cache's share of CACHE_MEMORY_MB (at most 1073741824)"},
	{Name: "PROJECTION_CACHE_TTL", Default: "5m", Help: "projection TTL (invalidations evict sooner)"},
	{Name: "MAX_STALENESS", Default: "30s", Help: "how long cached projections are trusted while NATS is down"},
	{Name: "NATS_HEARTBEAT_TIMEOUT", Default: "10s", Help: "no outbox heartbeat, or no beat from a listed relay, for this long: trusted as while NATS is down (0: not watched)"},
	{Name: "JWKS_REFRESH_INTERVAL", Default: "5m", Help: "background key set refresh"},
	{Name: "JWKS_REFETCH_COOLDOWN", Default: "10s", Help: "minimum time between refetches for unknown kids (at least 1s)"},
	{Name: "UPSTREAM_TIMEOUT", Default: "30s", Help: "read/write timeout of a forwarded request"},
	{Name: "UPSTREAM_MAX_CONNS", Default: "1024", Help: "connections per upstream"},
	{Name: "UPSTREAM_MAX_CONN_WAIT", Default: "2s", Help: "wait for a free upstream connection before 503"},
	{Name: "UPSTREAM_IDLE_TIMEOUT", Default: "5s", Help: "keep-alive idle time; keep below coreapi's idle timeout"},
	{Name: "UPSTREAM_CA_FILE", Help: "PEM certificates trusted, besides the system's roots, for https:// app upstreams"},
	{Name: "PROJECTION_TIMEOUT", Default: "2s", Help: "timeout of a projection fetch"},
	{Name: "PROJECTION_MAX_FETCHES", Default: "64", Help: "projection fetches in flight at once; a miss beyond it gets 503 + Retry-After"},
	{Name: "MAX_BODY_BYTES", Default: "1048576", Help: "largest request body (413 above)"},
	{Name: "BODY_MEMORY_MB", Default: "64", Help: "memory (MiB) the request bodies being read at once may take beyond their first 8 KiB; a body that would pass it gets 503 + Retry-After"},
	{Name: "READ_TIMEOUT", Default: "30s", Help: "client read timeout"},
	{Name: "WRITE_TIMEOUT", Default: "30s", Help: "client write timeout"},
	{Name: "IDLE_TIMEOUT", Default: "60s", Help: "client keep-alive idle timeout"},
	{Name: "SHUTDOWN_TIMEOUT", Default: "15s", Help: "drain deadline on SIGTERM"},
	{Name: "LOG_LEVEL", Default: "info", Help: "debug, info, warn, error"},
	{Name: "ACCESS_LOG", Default: "true", Help: "one JSON log line per request, and one per WebSocket or event stream as it ends"},
	{Name: "PROXY_PPROF", Default: "false", Help: "serve /debug/pprof/ on the admin port"},
	{Name: "STREAM_MAX_CONNS", Default: "10000", Help: "open WebSockets and streamed responses per proxy (503 beyond); 0 no cap"},
	{Name: "STREAM_MAX_PER_USER", Default: "100", Help: "open WebSockets and streamed responses per user on one proxy (429 beyond); 0 no cap"},
	{Name: "STREAM_MAX_PER_IP", Default: "100", Help: "open anonymous WebSockets and streamed responses per client IP (an IPv6 client by its /64) on one proxy (429 beyond); 0 no cap"},
	{Name: "STREAM_BUFFER_BYTES", Default: "8192", Help: "relay buffer per direction of a long-lived connection (1024 to 1048576)"},
	{Name: "STREAM_DRAIN_TIMEOUT", Default: "5s", Help: "on SIGTERM, how long open streams get to end after their close frame"},
}, tracing.Vars("authproxy")...)

// MaxLeeway is the largest clock skew any setting may allow: coreapi keeps
// revoked sessions listed for the access-token TTL plus the deployment's
// TOKEN_MAX_LEEWAY, and a skew of more than a minute means broken clocks.
const MaxLeeway = time.Minute

// MaxMemoryMB caps the memory budgets given in MiB (CACHE_MEMORY_MB,
// BODY_MEMORY_MB) at 1 TiB: a budget is counted in bytes, and one of 2^43
// MiB or more wrapped around to 0 or below, which left the caches one
// entry each, or took the bound off the request bodies.
const MaxMemoryMB = 1 << 20

// MaxCacheEntries caps TOKEN_CACHE_SIZE and PROJECTION_CACHE_SIZE at 2^30
// entries: at more than a KiB each, already beyond MaxMemoryMB. The token
// cache allocates its slots at start and the projection cache counts its
// cost in bytes (entries times bytes per entry), so a larger count stopped
// the start out of memory, or wrapped around below 0 and was refused with
// an error about the cache's internals.
const MaxCacheEntries = 1 << 30

// MaxTokenBytes caps MAX_TOKEN_BYTES: each connection's header buffer is
// sized to hold a token that long beside the other headers.
const MaxTokenBytes = 64 << 10

// MaxStreamBufferBytes caps STREAM_BUFFER_BYTES at 1 MiB: two buffers of
// it are allocated for each stream as it opens, so a larger value (a size
// written in the wrong unit) stopped the proxy, and every connection it
// held, out of memory at its first WebSocket or event stream.
const MaxStreamBufferBytes = 1 << 20

// MinHeartbeatTimeout is the shortest NATS_HEARTBEAT_TIMEOUT but 0: a
// heartbeat row goes out through the relays' next drain, which a
// notification starts at once but a missed one only at the next poll (1 s).
const MinHeartbeatTimeout = 2 * time.Second

// Load reads the configuration through getenv (os.LookupEnv in main). On
// error it still returns what it could read, so that the caller can check
// the rules file too and report every problem at once.
func Load(getenv func(string) (string, bool)) (*Config, error) {
	p := parser{Reader: Vars.Read(envconfig.LookupEnv(getenv))}
	c := &Config{}
	c.ListenAddr = p.ListenAddr("PROXY_LISTEN_ADDR")
	c.AdminAddr = p.ListenAddr("PROXY_ADMIN_ADDR")
	if envconfig.SameListener(c.ListenAddr, c.AdminAddr) {
		p.Problem("PROXY_LISTEN_ADDR %s and PROXY_ADMIN_ADDR %s take the same port: the second could not listen; give each its own", c.ListenAddr, c.AdminAddr)
	}
	c.IdentityURL = p.baseURL("IDENTITY_URL", "", true)
	if v := p.String("UPSTREAM_URL"); v != "" {
		c.UpstreamURLSet = true
		if u := p.baseURL("UPSTREAM_URL", v, false); u != nil && c.IdentityURL != nil && u.String() != c.IdentityURL.String() {
			c.AppURL = u.String()
		}
	}
	c.JWKSURL = p.String("JWKS_URL")
	if c.JWKSURL == "" && c.IdentityURL != nil {
		c.JWKSURL = c.IdentityURL.String() + "/.well-known/jwks.json"
		p.Show("JWKS_URL", c.JWKSURL)
	} else if u, err := url.Parse(c.JWKSURL); c.JWKSURL != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		p.fail("JWKS_URL", envconfig.ProblemURL(c.JWKSURL), "want an absolute http(s) URL")
	}
	c.IdentityTLS = p.identityTLS(c)
	c.CoreKeys = p.coreKeys()
	if v, f := p.String("UPSTREAM_KEYS"), p.String("UPSTREAM_KEYS_FILE"); v != "" || f != "" {
		keys, err := identity.LoadKeys(v, f)
		if err != nil {
			p.Problem("UPSTREAM_KEYS / UPSTREAM_KEYS_FILE: %v", err)
		}
		for _, k := range keys {
			bad := false
			for _, ck := range c.CoreKeys {
				if k.ID == ck.ID || bytes.Equal(k.Secret, ck.Secret) {
					p.Failf("UPSTREAM_KEYS", "key %q is also a core key (id or secret): an app must never hold a key coreapi accepts", k.ID)
					bad = true
				}
			}
			if len(k.Secret) < identity.MinKeyLen {
				p.Failf("UPSTREAM_KEYS", "key %q: %v", k.ID, identity.ErrShortKey)
				bad = true
			}
			for _, other := range c.UpstreamKeys {
				if bytes.Equal(k.Secret, other.Secret) {
					// The key id is inside the signed string, but an app
					// holding the secret can sign under either id: it could
					// sign requests the other key's app accepts.
					p.Failf("UPSTREAM_KEYS", "keys %q and %q have the same secret: every app must have a secret of its own", other.ID, k.ID)
					bad = true
				}
			}
			if !bad {
				c.UpstreamKeys = append(c.UpstreamKeys, k)
			}
		}
		p.Show("UPSTREAM_KEYS", keyIDs(c.UpstreamKeys))
	}
	c.RulesFile = p.String("RULES_FILE")
	if c.AppURL != "" {
		if len(c.UpstreamKeys) == 0 {
			p.Problem("UPSTREAM_URL %s differs from IDENTITY_URL %s, so it names an app: set UPSTREAM_KEYS (the first key signs its requests), or set IDENTITY_URL instead if it is coreapi", envconfig.MaskURL(c.AppURL), envconfig.MaskURL(c.IdentityURL.String()))
		}
		if c.RulesFile != "" {
			p.Problem("UPSTREAM_URL as an app and RULES_FILE together: declare the app as an upstream in the rules file and unset UPSTREAM_URL")
		}
	}
	var natsSource string
	var natsOK bool
	c.NATSURL, natsSource, natsOK = p.StringOrFile("NATS_URL")
	if u, err := url.Parse(c.NATSURL); natsOK && (err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls")) {
		p.Problem("%s: want nats://host:port or tls://host:port, got %q", natsSource, maskURL(c.NATSURL))
	}
	c.Issuer = p.String("TOKEN_ISSUER")
	// coreapi refuses an issuer that is not an absolute http(s) URL, so
	// no token it issues could carry such an iss: every token would be
	// refused 401 invalid_token.
	if u, err := url.Parse(c.Issuer); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		p.fail("TOKEN_ISSUER", envconfig.ProblemURL(c.Issuer), "want an absolute http(s) URL, coreapi's TOKEN_ISSUER (the public URL, like https://auth.example.com)")
	}
	c.Audience = p.String("TOKEN_AUDIENCE")
	for _, a := range strings.Split(p.String("TOKEN_ALGS"), ",") {
		a = strings.TrimSpace(a)
		switch a {
		case "EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			c.Algs = append(c.Algs, a)
		default:
			p.fail("TOKEN_ALGS", a, "want asymmetric JWS algorithms (EdDSA, ES256, RS256, ...)")
		}
	}
	p.Show("TOKEN_ALGS", strings.Join(c.Algs, ","))
	c.CORSOrigins = p.corsOrigins()
	c.CORSCredentials = p.Bool("CORS_ALLOW_CREDENTIALS")
	c.CORSMaxAge = p.Duration("CORS_MAX_AGE", 0, 24*time.Hour)
	c.CORSAllowHeaders = p.headerNames("CORS_ALLOW_HEADERS", CORSDefaultAllowHeaders())
	c.CORSExposeHeaders = p.headerNames("CORS_EXPOSE_HEADERS", CORSDefaultExposeHeaders())
	if c.CORSCredentials && slices.Contains(c.CORSOrigins, "*") {
		p.Failf("CORS_ALLOW_CREDENTIALS", "true with CORS_ALLOWED_ORIGINS=*: any site could make requests with the user's cookies; list the origins")
	}
	var cidrs []string
	for _, s := range strings.Split(p.String("TRUSTED_PROXY_CIDRS"), ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			p.fail("TRUSTED_PROXY_CIDRS", s, "want CIDRs like 10.0.0.0/8")
			continue
		}
		// The proxy compares peers and X-Forwarded-For hops in their
		// IPv4 form: an IPv4-mapped prefix (::ffff:10.0.0.0/104) is the
		// IPv4 one it names, else it would match nothing.
		// One shorter than /96 names no IPv4 range: masked, it would be
		// IPv6 addresses (::ffff:10.0.0.0/64 is ::/64) nobody meant.
		if pf.Addr().Is4In6() && pf.Bits() < 96 {
			p.fail("TRUSTED_PROXY_CIDRS", s, "an IPv4-mapped prefix shorter than /96 covers IPv6 addresses, not the IPv4 ones it writes; write the IPv4 CIDR (::ffff:10.0.0.0/104 is 10.0.0.0/8)")
			continue
		}
		if pf.Addr().Is4In6() {
			pf = netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()-96)
		}
		c.TrustedCIDRs = append(c.TrustedCIDRs, pf.Masked())
		cidrs = append(cidrs, pf.Masked().String())
		if pf.Bits() == 0 {
			// Peers are compared as IPv4 when they are IPv4 (mapped or
			// not): ::/0 holds none of them, 0.0.0.0/0 every one.
			who := "every IPv4 peer"
			if pf.Addr().Is6() {
				who = "every IPv6 peer (IPv4 peers are compared as IPv4: 0.0.0.0/0 would hold them)"
			}
			c.Warnings = append(c.Warnings, "TRUSTED_PROXY_CIDRS holds "+pf.Masked().String()+", which trusts "+who+": any such client reaching the proxy chooses its own client IP with X-Forwarded-For (coreapi's sign-in lockout and rate limits key on it) and its own trace context; list only the load balancer's or ingress's addresses")
		}
	}
	p.Show("TRUSTED_PROXY_CIDRS", strings.Join(cidrs, ","))
	c.CacheMemoryMB = int64(p.Int("CACHE_MEMORY_MB", 1, MaxMemoryMB, 0))
	c.TokenCacheSize = int64(p.Int("TOKEN_CACHE_SIZE", 1, MaxCacheEntries, 0))
	c.TokenCacheMaxTTL = p.Duration("TOKEN_CACHE_MAX_TTL", time.Second, 0)
	c.NegativeCacheTTL = p.Duration("NEGATIVE_CACHE_TTL", 0, 0)
	c.Leeway = p.Duration("TOKEN_LEEWAY", 0, MaxLeeway)
	// coreapi lists revoked sessions for the access-token TTL plus this
	// cap; a larger leeway would accept a revoked token after it fell off
	// that list.
	c.MaxLeeway = p.Duration("TOKEN_MAX_LEEWAY", 0, MaxLeeway)
	if c.Leeway > c.MaxLeeway {
		p.fail("TOKEN_LEEWAY", c.Leeway.String(), "want at most TOKEN_MAX_LEEWAY ("+c.MaxLeeway.String()+"), the leeway coreapi keeps revoked sessions listed for")
	}
	c.TokenMaxLifetime = p.Duration("TOKEN_MAX_LIFETIME", time.Minute, 0)
	c.MaxTokenBytes = p.Int("MAX_TOKEN_BYTES", 256, MaxTokenBytes, 0)
	c.ProjectionCacheSize = int64(p.Int("PROJECTION_CACHE_SIZE", 1, MaxCacheEntries, 0))
	c.ProjectionCacheTTL = p.Duration("PROJECTION_CACHE_TTL", time.Second, 0)
	c.MaxStaleness = p.Duration("MAX_STALENESS", 0, 0)
	c.HeartbeatTimeout = p.Duration("NATS_HEARTBEAT_TIMEOUT", 0, 0)
	if c.HeartbeatTimeout > 0 && c.HeartbeatTimeout < MinHeartbeatTimeout {
		p.Failf("NATS_HEARTBEAT_TIMEOUT", "want 0 (not watched) or at least %s (coreapi writes one every OUTBOX_HEARTBEAT_INTERVAL, 2s by default), got %s",
			MinHeartbeatTimeout, c.HeartbeatTimeout)
	}
	if c.HeartbeatTimeout > c.MaxStaleness {
		// The silence is known only when the timeout ends; until then the
		// feed reads as live and every cached entry is trusted.
		c.Warnings = append(c.Warnings, "NATS_HEARTBEAT_TIMEOUT ("+c.HeartbeatTimeout.String()+") is longer than MAX_STALENESS ("+
			c.MaxStaleness.String()+"): when coreapi's relays stop publishing, cached projections are trusted until the timeout ends, "+
			c.HeartbeatTimeout.String()+" after the last heartbeat, not MAX_STALENESS; keep it at most MAX_STALENESS")
	}
	c.JWKSRefresh = p.Duration("JWKS_REFRESH_INTERVAL", time.Second, 0)
	// 0 would refetch the key set for every token naming an unknown kid,
	// one fetch after another: anyone could keep coreapi serving it.
	c.JWKSCooldown = p.Duration("JWKS_REFETCH_COOLDOWN", time.Second, 0)
	c.UpstreamTimeout = p.Duration("UPSTREAM_TIMEOUT", time.Millisecond, 0)
	c.UpstreamMaxConns = p.Int("UPSTREAM_MAX_CONNS", 1, 0, 0)
	c.UpstreamMaxConnWait = p.Duration("UPSTREAM_MAX_CONN_WAIT", time.Millisecond, 0)
	c.UpstreamIdleTimeout = p.Duration("UPSTREAM_IDLE_TIMEOUT", time.Millisecond, 0)
	c.UpstreamTLS = p.upstreamTLS()
	// Key files open to other users (see package secretfile: a warning,
	// and group access allowed, for Secret volumes).
	for _, name := range []string{"IDENTITY_KEYS_FILE", "IDENTITY_HMAC_KEY_FILE", "UPSTREAM_KEYS_FILE", "NATS_URL_FILE",
		"OTEL_EXPORTER_OTLP_HEADERS_FILE", "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE"} {
		if path := p.Raw(name); path != "" {
			if w := secretfile.Check(name, path); w != "" {
				c.Warnings = append(c.Warnings, w)
			}
		}
	}
	c.ProjectionTimeout = p.Duration("PROJECTION_TIMEOUT", time.Millisecond, 0)
	c.ProjectionMaxFetches = p.Int("PROJECTION_MAX_FETCHES", 1, 0, 0)
	c.MaxBodyBytes = p.Int("MAX_BODY_BYTES", 1, rules.MaxRouteBodyBytes, 0)
	c.BodyMemoryMB = p.Int("BODY_MEMORY_MB", 1, MaxMemoryMB, 0)
	c.ReadTimeout = p.Duration("READ_TIMEOUT", time.Millisecond, 0)
	c.WriteTimeout = p.Duration("WRITE_TIMEOUT", time.Millisecond, 0)
	c.IdleTimeout = p.Duration("IDLE_TIMEOUT", time.Millisecond, 0)
	c.ShutdownTimeout = p.Duration("SHUTDOWN_TIMEOUT", time.Millisecond, 0)
	lvl := p.String("LOG_LEVEL")
	if err := c.LogLevel.UnmarshalText([]byte(lvl)); err != nil {
		p.fail("LOG_LEVEL", lvl, "want debug, info, warn or error")
	}
	c.AccessLog = p.Bool("ACCESS_LOG")
	c.Pprof = p.Bool("PROXY_PPROF")
	c.StreamMaxConns = p.Int("STREAM_MAX_CONNS", 0, 0, 0)
	c.StreamMaxPerUser = p.Int("STREAM_MAX_PER_USER", 0, 0, 0)
	c.StreamMaxPerIP = p.Int("STREAM_MAX_PER_IP", 0, 0, 0)
	c.StreamBufferBytes = p.Int("STREAM_BUFFER_BYTES", 1024, MaxStreamBufferBytes, 0)
	c.StreamDrain = p.Duration("STREAM_DRAIN_TIMEOUT", time.Millisecond, 0)
	if c.StreamDrain >= c.ShutdownTimeout && c.ShutdownTimeout > 0 {
		// The drain runs within the shutdown's deadline, which cuts it.
		c.Warnings = append(c.Warnings, "STREAM_DRAIN_TIMEOUT ("+c.StreamDrain.String()+") is not shorter than SHUTDOWN_TIMEOUT ("+
			c.ShutdownTimeout.String()+"): the drain runs within the shutdown's deadline, so open streams get less than it says; keep it shorter")
	}
	var err error
	if c.Tracing, err = tracing.Load(p.Raw, "authproxy"); err != nil {
		p.Problem("%v", err)
	}
	for _, r := range c.Tracing.Rows() {
		p.Show(r[0], r[1])
	}
	c.printout = p.Printout()
	return c, p.Err()
}

// String prints the configuration as NAME=value lines, secrets masked
// (-check-config); coreapi prints the same way.
func (c *Config) String() string { return c.printout.String() }

// LogValue prints the same settings for the start log.
func (c *Config) LogValue() slog.Value { return c.printout.LogValue() }

// keyIDs lists key ids with their secrets masked.
func keyIDs(keys []identity.Key) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = k.String()
	}
	return strings.Join(s, ",")
}

// coreKeys reads IDENTITY_KEYS(_FILE), or the legacy IDENTITY_HMAC_KEY(_FILE)
// as one key with id core; setting both kinds is an error.
func (p *parser) coreKeys() []identity.Key {
	v, f := p.String("IDENTITY_KEYS"), p.String("IDENTITY_KEYS_FILE")
	lv, lf := p.String("IDENTITY_HMAC_KEY"), p.String("IDENTITY_HMAC_KEY_FILE")
	switch {
	case (v != "" || f != "") && (lv != "" || lf != ""):
		p.Problem("IDENTITY_KEYS(_FILE) and the legacy IDENTITY_HMAC_KEY(_FILE) are both set: keep one")
		return nil
	case v != "" || f != "":
		keys, err := identity.LoadKeys(v, f)
		if err != nil {
			p.Problem("IDENTITY_KEYS / IDENTITY_KEYS_FILE: %v", err)
			return nil
		}
		for _, k := range keys {
			if len(k.Secret) < identity.MinKeyLen {
				p.Failf("IDENTITY_KEYS", "key %q: %v", k.ID, identity.ErrShortKey)
				return nil
			}
		}
		p.Show("IDENTITY_KEYS", keyIDs(keys))
		return keys
	}
	k, err := identity.LoadKey(lv, lf)
	if err != nil {
		p.Problem("IDENTITY_KEYS / IDENTITY_KEYS_FILE (or legacy IDENTITY_HMAC_KEY / IDENTITY_HMAC_KEY_FILE): %v", err)
		return nil
	}
	return []identity.Key{{ID: "core", Secret: k}}
}

// baseURL parses an http://host:port base URL with no path (or, when
// https is allowed, https://host:port, port 443 by default); v "" reads
// the variable.
func (p *parser) baseURL(name, v string, https bool) *url.URL {
	if v == "" {
		v = p.String(name)
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && (!https || u.Scheme != "https")) || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		want := "want http://host:port with no path"
		if https {
			want = "want http://host:port or https://host:port with no path"
		}
		p.fail(name, envconfig.ProblemURL(v), want)
		return nil
	}
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	u.Path = ""
	return u
}

// upstreamTLS builds the TLS client configuration of https:// upstreams:
// TLS 1.2 at least, certificates verified against the system's roots and
// those of UPSTREAM_CA_FILE (a PEM file; one that holds no certificate, or
// a block that is none, is refused). Nothing turns verification off.
func (p *parser) upstreamTLS() *tls.Config {
	return p.clientTLS("UPSTREAM_CA_FILE")
}

// identityTLS builds the TLS client configuration of coreapi's internal
// base and of the key set URL when either is https://, as upstreamTLS does
// but trusting IDENTITY_CA_FILE's certificates: the CA that vouches for
// coreapi, which sees passwords and accepts the core key's signatures, is
// not one an app's certificate comes from. nil when neither is https://
// (the file is then unused, and a warning says so).
func (p *parser) identityTLS(c *Config) *tls.Config {
	https := c.IdentityURL != nil && c.IdentityURL.Scheme == "https" || strings.HasPrefix(strings.ToLower(c.JWKSURL), "https://")
	if !https {
		if p.String("IDENTITY_CA_FILE") != "" {
			c.Warnings = append(c.Warnings, "IDENTITY_CA_FILE is set but neither IDENTITY_URL nor JWKS_URL is https://: the file is not used, and coreapi is reached without TLS")
		}
		return nil
	}
	return p.clientTLS("IDENTITY_CA_FILE")
}

// clientTLS is a TLS client configuration: TLS 1.2 at least, certificates
// verified against the system's roots and those of the PEM file the
// variable name names, if set (a file that holds no certificate, or a
// PEM block that is no certificate, is refused:
// envconfig.AppendCertificates). The server's name is the URL's host (set
// by each client).
func (p *parser) clientTLS(name string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	file := p.String(name)
	if file == "" {
		return cfg
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		p.Failf(name, "%v", err)
		return cfg
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if err := envconfig.AppendCertificates(pool, pem); err != nil {
		p.fail(name, file, "want a file of PEM certificates: "+err.Error())
		return cfg
	}
	cfg.RootCAs = pool
	return cfg
}

// maskURL hides a password in a URL.
func maskURL(s string) string { return envconfig.MaskURL(s) }

// corsOrigins reads CORS_ALLOWED_ORIGINS: "*" alone, or origins
// scheme://host[:port] (http or https, no path), compared exactly as
// browsers send them (lower case, no default port).
func (p *parser) corsOrigins() []string {
	var out []string
	for _, o := range strings.Split(p.String("CORS_ALLOWED_ORIGINS"), ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o == "*" {
			out = append(out, o)
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.Contains(u.Host, "*") {
			p.fail("CORS_ALLOWED_ORIGINS", envconfig.ProblemURL(o), "want * or origins like https://app.example.com (scheme, host, optional port; no path)")
			continue
		}
		if strings.ContainsFunc(u.Host, func(r rune) bool { return r >= utf8.RuneSelf }) {
			// A browser sends such a host in its ASCII form
			// (https://xn--bcher-kva.example): as written it would never
			// match, and the origin would be refused without a word.
			p.fail("CORS_ALLOWED_ORIGINS", envconfig.ProblemURL(o), "the host must be written in ASCII as browsers send it in Origin (an internationalized name in its xn-- form)")
			continue
		}
		// As browsers send it: an IPv6 address in brackets and in its
		// shortest form, no default port.
		host := strings.ToLower(u.Hostname())
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
			if ip.Zone() != "" {
				// A browser's Origin never names the interface: as
				// written it would never match.
				p.fail("CORS_ALLOWED_ORIGINS", envconfig.ProblemURL(o), "an IPv6 zone (%25...) is never in a browser's Origin: leave it out")
				continue
			}
			host = "[" + ip.String() + "]"
		}
		if port := u.Port(); port != "" && !(u.Scheme == "https" && port == "443") && !(u.Scheme == "http" && port == "80") {
			host += ":" + port
		}
		out = append(out, u.Scheme+"://"+host)
	}
	if len(out) > 1 && slices.Contains(out, "*") {
		p.Failf("CORS_ALLOWED_ORIGINS", "* allows every origin: list origins or * alone")
	}
	p.Show("CORS_ALLOWED_ORIGINS", strings.Join(out, ","))
	return out
}

// CORSDefaultAllowHeaders are the request headers a browser may always
// send cross-origin.
func CORSDefaultAllowHeaders() []string {
	return []string{"Authorization", "Content-Type", "X-API-Key", "X-Request-Id", "Last-Event-ID"}
}

// CORSDefaultExposeHeaders are the response headers a browser's scripts
// may always read.
func CORSDefaultExposeHeaders() []string {
	return []string{"X-Request-Id", "WWW-Authenticate", "Retry-After", "Location"}
}

// headerNames reads a comma list of header names (HTTP tokens), as
// written, without those of builtin or repeated ones (compared
// case-insensitively, as header names are). "*" is refused: it would not
// cover Authorization, and with credentials browsers read it as a name.
func (p *parser) headerNames(name string, builtin []string) []string {
	var out []string
	for _, h := range strings.Split(p.String(name), ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if !httpToken(h) {
			p.fail(name, h, "want header names (letters, digits, - and the other token characters of RFC 9110), comma-separated")
			continue
		}
		if slices.ContainsFunc(builtin, func(b string) bool { return strings.EqualFold(b, h) }) ||
			slices.ContainsFunc(out, func(b string) bool { return strings.EqualFold(b, h) }) {
			continue
		}
		out = append(out, h)
	}
	p.Show(name, strings.Join(out, ","))
	return out
}

// httpToken reports whether s is a token (RFC 9110 section 5.6.2), the
// syntax of a header name; "*" is one, but is refused as a name here.
func httpToken(s string) bool {
	if s == "" || s == "*" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

type parser struct {
	*envconfig.Reader
}

func (p *parser) fail(name, val, want string) {
	p.Failf(name, "%q: %s", val, want)
}
