// Package config reads the proxy's configuration from the environment
// (12-factor), applies defaults, and reports every problem at once. No
// identity key ever appears in output.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// Config is the whole proxy configuration.
type Config struct {
	ListenAddr string
	AdminAddr  string

	// IdentityURL is coreapi's internal base: JWKS, projections and the
	// upstream of the built-in routes.
	IdentityURL *url.URL
	// AppURL is the deprecated UPSTREAM_URL when it names an app (not
	// IdentityURL): one app upstream behind a protected catch-all.
	AppURL string
	// UpstreamURLSet reports a (deprecated) UPSTREAM_URL, warned at start.
	UpstreamURLSet bool
	JWKSURL        string
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
	JWKSRefresh         time.Duration
	JWKSCooldown        time.Duration

	UpstreamTimeout     time.Duration
	UpstreamMaxConns    int
	UpstreamMaxConnWait time.Duration
	UpstreamIdleTimeout time.Duration
	ProjectionTimeout   time.Duration
	MaxBodyBytes        int
	ReadTimeout         time.Duration
	WriteTimeout        time.Duration
	IdleTimeout         time.Duration
	ShutdownTimeout     time.Duration
	LogLevel            slog.Level
	AccessLog           bool
	Pprof               bool

	// Fleet guards.
	ProjectionMaxFetches int

	// Long-lived connections (WebSockets, stream routes).
	StreamMaxConns    int
	StreamMaxPerUser  int
	StreamBufferBytes int
	StreamDrain       time.Duration

	// Tracing is the OpenTelemetry configuration (OTEL_*); off unless an
	// OTLP endpoint is set.
	Tracing tracing.Config
}

// Var documents one environment variable.
type Var struct {
	Name, Default, Help string
}

// Vars lists every variable, in the order of the README table.
var Vars = []Var{
	{"PROXY_LISTEN_ADDR", ":8080", "public listen address"},
	{"PROXY_ADMIN_ADDR", ":9090", "admin listen address (/healthz, /readyz, /metrics)"},
	{"IDENTITY_URL", "http://127.0.0.1:8081", "coreapi's internal base URL (http, host:port): JWKS, projections, its routes"},
	{"UPSTREAM_URL", "", "deprecated: an app's base URL behind a protected catch-all (ignored when equal to IDENTITY_URL)"},
	{"JWKS_URL", "IDENTITY_URL + /.well-known/jwks.json", "key set URL"},
	{"IDENTITY_KEYS", "", "core keys id:base64[,id:base64...] shared with coreapi; the first signs; or"},
	{"IDENTITY_KEYS_FILE", "", "file holding that list"},
	{"IDENTITY_HMAC_KEY", "", "legacy: one base64 core key (id core); or"},
	{"IDENTITY_HMAC_KEY_FILE", "", "legacy: file holding that key"},
	{"UPSTREAM_KEYS", "", "app keys id:base64[,...], named by the rules file's key_id; or"},
	{"UPSTREAM_KEYS_FILE", "", "file holding that list"},
	{"NATS_URL", "nats://127.0.0.1:4222", "NATS for invalidation events"},
	{"TOKEN_ISSUER", "http://localhost:8080", "required iss"},
	{"TOKEN_AUDIENCE", "tollgate", "required aud"},
	{"TOKEN_ALGS", "EdDSA,ES256,RS256", "allowed signature algorithms (each key is pinned to its own alg)"},
	{"RULES_FILE", "", "optional YAML route table (upstreams and routes), reloaded on change and SIGHUP"},
	{"TRUSTED_PROXY_CIDRS", "", "comma list of CIDRs whose X-Forwarded-* headers are kept and whose X-Forwarded-For names the client"},
	{"CACHE_MEMORY_MB", "256", "memory budget (MiB) of the token and projection caches together, at the measured bytes per entry"},
	{"TOKEN_CACHE_SIZE", "", "verified-token cache entries, overriding the token cache's share of CACHE_MEMORY_MB"},
	{"TOKEN_CACHE_MAX_TTL", "5m", "cap on a cached token's TTL (it never outlives exp)"},
	{"NEGATIVE_CACHE_TTL", "10s", "how long a rejected token is remembered"},
	{"TOKEN_LEEWAY", "30s", "clock skew allowed on exp, nbf, iat (at most TOKEN_MAX_LEEWAY)"},
	{"TOKEN_MAX_LEEWAY", "60s", "deployment-wide cap on TOKEN_LEEWAY; set the same value on coreapi"},
	{"TOKEN_MAX_LIFETIME", "1h", "longest accepted exp - iat"},
	{"MAX_TOKEN_BYTES", "4096", "longest accepted bearer token"},
	{"PROJECTION_CACHE_SIZE", "", "projection cache entries, overriding the projection cache's share of CACHE_MEMORY_MB"},
	{"PROJECTION_CACHE_TTL", "5m", "projection TTL (invalidations evict sooner)"},
	{"MAX_STALENESS", "30s", "how long cached projections are trusted while NATS is down"},
	{"JWKS_REFRESH_INTERVAL", "5m", "background key set refresh"},
	{"JWKS_REFETCH_COOLDOWN", "10s", "minimum time between refetches for unknown kids"},
	{"UPSTREAM_TIMEOUT", "30s", "read/write timeout of a forwarded request"},
	{"UPSTREAM_MAX_CONNS", "1024", "connections per upstream"},
	{"UPSTREAM_MAX_CONN_WAIT", "2s", "wait for a free upstream connection before 503"},
	{"UPSTREAM_IDLE_TIMEOUT", "5s", "keep-alive idle time; keep below coreapi's idle timeout"},
	{"PROJECTION_TIMEOUT", "2s", "timeout of a projection fetch"},
	{"MAX_BODY_BYTES", "1048576", "largest request body (413 above)"},
	{"READ_TIMEOUT", "30s", "client read timeout"},
	{"WRITE_TIMEOUT", "30s", "client write timeout"},
	{"IDLE_TIMEOUT", "60s", "client keep-alive idle timeout"},
	{"SHUTDOWN_TIMEOUT", "15s", "drain deadline on SIGTERM"},
	{"LOG_LEVEL", "info", "debug, info, warn, error"},
	{"ACCESS_LOG", "true", "one JSON log line per request"},
	{"PROXY_PPROF", "false", "serve /debug/pprof/ on the admin port"},
	{"PROJECTION_MAX_FETCHES", "64", "projection fetches in flight at once; a miss beyond it gets 503 + Retry-After"},
	{"STREAM_MAX_CONNS", "10000", "open WebSockets and streamed responses per proxy (503 beyond); 0 no cap"},
	{"STREAM_MAX_PER_USER", "100", "open WebSockets and streamed responses per user on one proxy (429 beyond); 0 no cap"},
	{"STREAM_BUFFER_BYTES", "8192", "relay buffer per direction of a long-lived connection"},
	{"STREAM_DRAIN_TIMEOUT", "5s", "on SIGTERM, how long open streams get to end after their close frame"},
	{"OTEL_EXPORTER_OTLP_ENDPOINT", "", "OTLP/HTTP collector base URL (spans go to .../v1/traces); unset: tracing off (docs/operations.md, Tracing)"},
	{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", "full OTLP/HTTP traces URL, overriding the above"},
	{"OTEL_SERVICE_NAME", "authproxy", "service.name of the spans"},
	{"OTEL_RESOURCE_ATTRIBUTES", "", "more resource attributes, key=value[,key=value...]"},
	{"OTEL_TRACES_SAMPLER", "parentbased_always_on", "sampler, e.g. parentbased_traceidratio"},
	{"OTEL_TRACES_SAMPLER_ARG", "1.0", "ratio of the traceidratio samplers, 0 to 1"},
}

// Load reads the configuration through getenv (os.LookupEnv in main).
func Load(getenv func(string) (string, bool)) (*Config, error) {
	p := parser{getenv: getenv}
	c := &Config{}
	c.ListenAddr = p.addr("PROXY_LISTEN_ADDR", ":8080")
	c.AdminAddr = p.addr("PROXY_ADMIN_ADDR", ":9090")
	c.IdentityURL = p.baseURL("IDENTITY_URL", "http://127.0.0.1:8081")
	if v := p.str("UPSTREAM_URL", ""); v != "" {
		c.UpstreamURLSet = true
		if u := p.baseURL("UPSTREAM_URL", v); u != nil && c.IdentityURL != nil && u.String() != c.IdentityURL.String() {
			c.AppURL = u.String()
		}
	}
	c.JWKSURL = p.str("JWKS_URL", "")
	if c.JWKSURL == "" && c.IdentityURL != nil {
		c.JWKSURL = c.IdentityURL.String() + "/.well-known/jwks.json"
	} else if u, err := url.Parse(c.JWKSURL); c.JWKSURL != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		p.fail("JWKS_URL", c.JWKSURL, "want an absolute http(s) URL")
	}
	c.CoreKeys = p.coreKeys()
	if v, f := p.str("UPSTREAM_KEYS", ""), p.str("UPSTREAM_KEYS_FILE", ""); v != "" || f != "" {
		keys, err := identity.LoadKeys(v, f)
		if err != nil {
			p.errs = append(p.errs, fmt.Errorf("UPSTREAM_KEYS / UPSTREAM_KEYS_FILE: %w", err))
		}
		for _, k := range keys {
			bad := false
			for _, ck := range c.CoreKeys {
				if k.ID == ck.ID || bytes.Equal(k.Secret, ck.Secret) {
					p.errs = append(p.errs, fmt.Errorf("UPSTREAM_KEYS: key %q is also a core key (id or secret): an app must never hold a key coreapi accepts", k.ID))
					bad = true
				}
			}
			if len(k.Secret) < identity.MinKeyLen {
				p.errs = append(p.errs, fmt.Errorf("UPSTREAM_KEYS: key %q: %w", k.ID, identity.ErrShortKey))
				bad = true
			}
			if !bad {
				c.UpstreamKeys = append(c.UpstreamKeys, k)
			}
		}
	}
	c.RulesFile = p.str("RULES_FILE", "")
	if c.AppURL != "" {
		if len(c.UpstreamKeys) == 0 {
			p.errs = append(p.errs, fmt.Errorf("UPSTREAM_URL %s differs from IDENTITY_URL %s, so it names an app: set UPSTREAM_KEYS (the first key signs its requests), or set IDENTITY_URL instead if it is coreapi", c.AppURL, c.IdentityURL))
		}
		if c.RulesFile != "" {
			p.errs = append(p.errs, errors.New("UPSTREAM_URL as an app and RULES_FILE together: declare the app as an upstream in the rules file and unset UPSTREAM_URL"))
		}
	}
	c.NATSURL = p.str("NATS_URL", "nats://127.0.0.1:4222")
	if u, err := url.Parse(c.NATSURL); err != nil || u.Host == "" {
		p.fail("NATS_URL", c.NATSURL, "want nats://host:port")
	}
	c.Issuer = p.str("TOKEN_ISSUER", "http://localhost:8080")
	c.Audience = p.str("TOKEN_AUDIENCE", "tollgate")
	for _, a := range strings.Split(p.str("TOKEN_ALGS", "EdDSA,ES256,RS256"), ",") {
		a = strings.TrimSpace(a)
		switch a {
		case "EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			c.Algs = append(c.Algs, a)
		default:
			p.fail("TOKEN_ALGS", a, "want asymmetric JWS algorithms (EdDSA, ES256, RS256, ...)")
		}
	}
	for _, s := range strings.Split(p.str("TRUSTED_PROXY_CIDRS", ""), ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			p.fail("TRUSTED_PROXY_CIDRS", s, "want CIDRs like 10.0.0.0/8")
			continue
		}
		c.TrustedCIDRs = append(c.TrustedCIDRs, pf.Masked())
	}
	c.CacheMemoryMB = int64(p.intv("CACHE_MEMORY_MB", 256, 1))
	c.TokenCacheSize = int64(p.intv("TOKEN_CACHE_SIZE", 0, 1))
	c.TokenCacheMaxTTL = p.dur("TOKEN_CACHE_MAX_TTL", 5*time.Minute, time.Second)
	c.NegativeCacheTTL = p.dur("NEGATIVE_CACHE_TTL", 10*time.Second, 0)
	c.Leeway = p.dur("TOKEN_LEEWAY", 30*time.Second, 0)
	// coreapi lists revoked sessions for the access-token TTL plus this
	// cap; a larger leeway would accept a revoked token after it fell off
	// that list.
	c.MaxLeeway = p.dur("TOKEN_MAX_LEEWAY", time.Minute, 0)
	if c.Leeway > c.MaxLeeway {
		p.fail("TOKEN_LEEWAY", c.Leeway.String(), "want at most TOKEN_MAX_LEEWAY ("+c.MaxLeeway.String()+"), the leeway coreapi keeps revoked sessions listed for")
	}
	c.TokenMaxLifetime = p.dur("TOKEN_MAX_LIFETIME", time.Hour, time.Minute)
	c.MaxTokenBytes = p.intv("MAX_TOKEN_BYTES", 4096, 256)
	c.ProjectionCacheSize = int64(p.intv("PROJECTION_CACHE_SIZE", 0, 1))
	c.ProjectionCacheTTL = p.dur("PROJECTION_CACHE_TTL", 5*time.Minute, time.Second)
	c.MaxStaleness = p.dur("MAX_STALENESS", 30*time.Second, 0)
	c.JWKSRefresh = p.dur("JWKS_REFRESH_INTERVAL", 5*time.Minute, time.Second)
	c.JWKSCooldown = p.dur("JWKS_REFETCH_COOLDOWN", 10*time.Second, 0)
	c.UpstreamTimeout = p.dur("UPSTREAM_TIMEOUT", 30*time.Second, time.Millisecond)
	c.UpstreamMaxConns = p.intv("UPSTREAM_MAX_CONNS", 1024, 1)
	c.UpstreamMaxConnWait = p.dur("UPSTREAM_MAX_CONN_WAIT", 2*time.Second, time.Millisecond)
	c.UpstreamIdleTimeout = p.dur("UPSTREAM_IDLE_TIMEOUT", 5*time.Second, time.Millisecond)
	c.ProjectionTimeout = p.dur("PROJECTION_TIMEOUT", 2*time.Second, time.Millisecond)
	c.MaxBodyBytes = p.intv("MAX_BODY_BYTES", 1<<20, 1)
	c.ReadTimeout = p.dur("READ_TIMEOUT", 30*time.Second, time.Millisecond)
	c.WriteTimeout = p.dur("WRITE_TIMEOUT", 30*time.Second, time.Millisecond)
	c.IdleTimeout = p.dur("IDLE_TIMEOUT", 60*time.Second, time.Millisecond)
	c.ShutdownTimeout = p.dur("SHUTDOWN_TIMEOUT", 15*time.Second, time.Millisecond)
	c.StreamMaxConns = p.intv("STREAM_MAX_CONNS", 10000, 0)
	c.StreamMaxPerUser = p.intv("STREAM_MAX_PER_USER", 100, 0)
	c.StreamBufferBytes = p.intv("STREAM_BUFFER_BYTES", 8192, 1024)
	c.StreamDrain = p.dur("STREAM_DRAIN_TIMEOUT", 5*time.Second, time.Millisecond)
	lvl := p.str("LOG_LEVEL", "info")
	if err := c.LogLevel.UnmarshalText([]byte(lvl)); err != nil {
		p.fail("LOG_LEVEL", lvl, "want debug, info, warn or error")
	}
	c.AccessLog = p.boolv("ACCESS_LOG", true)
	c.Pprof = p.boolv("PROXY_PPROF", false)
	c.ProjectionMaxFetches = p.intv("PROJECTION_MAX_FETCHES", 64, 1)
	var err error
	if c.Tracing, err = tracing.Load(func(k string) string { v, _ := getenv(k); return v }, "authproxy"); err != nil {
		p.errs = append(p.errs, err)
	}
	if len(p.errs) > 0 {
		return nil, fmt.Errorf("config: %w", errors.Join(p.errs...))
	}
	return c, nil
}

// LogValue prints the configuration with the key masked.
func (c *Config) LogValue() slog.Value {
	cidrs := make([]string, len(c.TrustedCIDRs))
	for i, p := range c.TrustedCIDRs {
		cidrs[i] = p.String()
	}
	return slog.GroupValue(
		slog.String("listen_addr", c.ListenAddr), slog.String("admin_addr", c.AdminAddr),
		slog.String("identity_url", c.IdentityURL.String()), slog.String("upstream_url", c.AppURL), slog.String("jwks_url", c.JWKSURL),
		slog.String("identity_keys", keyIDs(c.CoreKeys)), slog.String("upstream_keys", keyIDs(c.UpstreamKeys)),
		slog.String("nats_url", maskURL(c.NATSURL)),
		slog.String("token_issuer", c.Issuer), slog.String("token_audience", c.Audience),
		slog.String("token_algs", strings.Join(c.Algs, ",")), slog.String("rules_file", c.RulesFile),
		slog.String("trusted_proxy_cidrs", strings.Join(cidrs, ",")),
		slog.Int64("cache_memory_mb", c.CacheMemoryMB), slog.Int64("token_cache_size", c.TokenCacheSize), slog.Duration("token_cache_max_ttl", c.TokenCacheMaxTTL),
		slog.Duration("negative_cache_ttl", c.NegativeCacheTTL), slog.Duration("token_leeway", c.Leeway),
		slog.Duration("token_max_leeway", c.MaxLeeway),
		slog.Duration("token_max_lifetime", c.TokenMaxLifetime), slog.Int("max_token_bytes", c.MaxTokenBytes),
		slog.Int64("projection_cache_size", c.ProjectionCacheSize), slog.Duration("projection_cache_ttl", c.ProjectionCacheTTL),
		slog.Duration("max_staleness", c.MaxStaleness), slog.Duration("jwks_refresh_interval", c.JWKSRefresh),
		slog.Duration("jwks_refetch_cooldown", c.JWKSCooldown), slog.Duration("upstream_timeout", c.UpstreamTimeout),
		slog.Int("upstream_max_conns", c.UpstreamMaxConns), slog.Duration("upstream_max_conn_wait", c.UpstreamMaxConnWait),
		slog.Duration("upstream_idle_timeout", c.UpstreamIdleTimeout), slog.Duration("projection_timeout", c.ProjectionTimeout),
		slog.Int("max_body_bytes", c.MaxBodyBytes), slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.String("log_level", c.LogLevel.String()), slog.Bool("access_log", c.AccessLog), slog.Bool("proxy_pprof", c.Pprof),
		slog.Int("projection_max_fetches", c.ProjectionMaxFetches),
		slog.Any("tracing", c.Tracing),
	)
}

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
	v, f := p.str("IDENTITY_KEYS", ""), p.str("IDENTITY_KEYS_FILE", "")
	lv, lf := p.str("IDENTITY_HMAC_KEY", ""), p.str("IDENTITY_HMAC_KEY_FILE", "")
	switch {
	case (v != "" || f != "") && (lv != "" || lf != ""):
		p.errs = append(p.errs, errors.New("IDENTITY_KEYS(_FILE) and the legacy IDENTITY_HMAC_KEY(_FILE) are both set: keep one"))
		return nil
	case v != "" || f != "":
		keys, err := identity.LoadKeys(v, f)
		if err != nil {
			p.errs = append(p.errs, fmt.Errorf("IDENTITY_KEYS / IDENTITY_KEYS_FILE: %w", err))
			return nil
		}
		for _, k := range keys {
			if len(k.Secret) < identity.MinKeyLen {
				p.errs = append(p.errs, fmt.Errorf("IDENTITY_KEYS: key %q: %w", k.ID, identity.ErrShortKey))
				return nil
			}
		}
		return keys
	}
	k, err := identity.LoadKey(lv, lf)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("IDENTITY_KEYS / IDENTITY_KEYS_FILE (or legacy IDENTITY_HMAC_KEY / IDENTITY_HMAC_KEY_FILE): %w", err))
		return nil
	}
	return []identity.Key{{ID: "core", Secret: k}}
}

// baseURL parses an http://host:port base URL with no path.
func (p *parser) baseURL(name, def string) *url.URL {
	v := p.str(name, def)
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		p.fail(name, v, "want http://host:port with no path")
		return nil
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "80")
	}
	u.Path = ""
	return u
}

// maskURL hides a password in a URL.
func maskURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "*****")
	}
	return u.String()
}

type parser struct {
	getenv func(string) (string, bool)
	errs   []error
}

func (p *parser) fail(name, val, want string) {
	p.errs = append(p.errs, fmt.Errorf("%s=%q: %s", name, val, want))
}

func (p *parser) str(name, def string) string {
	if v, ok := p.getenv(name); ok && strings.TrimSpace(v) != "" {
		return strings.TrimSpace(v)
	}
	return def
}

func (p *parser) addr(name, def string) string {
	v := p.str(name, def)
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		p.fail(name, v, "want host:port or :port")
	}
	return v
}

func (p *parser) dur(name string, def, min time.Duration) time.Duration {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < min {
		p.fail(name, v, fmt.Sprintf("want a duration >= %s like 30s", min))
		return def
	}
	return d
}

func (p *parser) intv(name string, def, min int) int {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min {
		p.fail(name, v, fmt.Sprintf("want an integer >= %d", min))
		return def
	}
	return n
}

func (p *parser) boolv(name string, def bool) bool {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, v, "want true or false")
		return def
	}
	return b
}
