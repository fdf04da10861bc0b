// Package config loads coreapi's configuration from the environment
// (12-factor), applies defaults, and validates it, reporting every problem at
// once. Secrets are masked whenever the configuration is printed or logged.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	netmail "net/mail"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// Defaults of the optional settings.
const (
	DefaultListenAddr        = "127.0.0.1:8081"
	DefaultAdminAddr         = "127.0.0.1:9091"
	DefaultNATSURL           = "nats://127.0.0.1:4222"
	DefaultTokenIssuer       = "http://localhost:8080"
	DefaultTokenAudience     = "tollgate"
	DefaultAccessTokenTTL    = 15 * time.Minute
	DefaultRefreshTokenTTL   = 720 * time.Hour
	DefaultRefreshReuseGrace = 10 * time.Second
	DefaultSigningAlg        = "EdDSA"
	DefaultKeyActivation     = 5 * time.Minute
	DefaultTokenMaxLeeway    = time.Minute
	DefaultOAuthPerMinute    = 20
	DefaultMaxBodyBytes      = 1 << 20
	DefaultShutdownTimeout   = 15 * time.Second
	DefaultMailFrom          = "Tollgate <no-reply@localhost>"
	DefaultPublicBaseURL     = "http://localhost:8080"
	MinDBMaxConns            = 8
	DefaultReplayCacheSize   = 1 << 18
	MinReplayCacheSize       = 1024
	// LegacyIdentityKeyID names the key given as IDENTITY_HMAC_KEY(_FILE).
	LegacyIdentityKeyID = "core"
)

// execModes maps DB_EXEC_MODE values to pgx exec modes. cache_statement is
// the default; the others exist for PgBouncer in transaction mode.
var execModes = map[string]pgx.QueryExecMode{
	"cache_statement": pgx.QueryExecModeCacheStatement,
	"cache_describe":  pgx.QueryExecModeCacheDescribe,
	"describe_exec":   pgx.QueryExecModeDescribeExec,
	"exec":            pgx.QueryExecModeExec,
	"simple_protocol": pgx.QueryExecModeSimpleProtocol,
}

// signingAlgs are the accepted values of SIGNING_ALG.
var signingAlgs = []string{"EdDSA", "ES256", "RS256"}

// OIDCProvider is one configured OpenID Connect provider.
type OIDCProvider struct {
	Name         string // lower-case, as listed in OIDC_PROVIDERS; used in routes
	Issuer       string
	ClientID     string
	ClientSecret string
	RedirectURL  string
	Scopes       []string
}

// LogValue masks the client secret.
func (p OIDCProvider) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", p.Name),
		slog.String("issuer", p.Issuer),
		slog.String("client_id", p.ClientID),
		slog.String("client_secret", mask(p.ClientSecret)),
		slog.String("redirect_url", p.RedirectURL),
		slog.String("scopes", strings.Join(p.Scopes, " ")),
	)
}

// Config is coreapi's whole configuration.
type Config struct {
	ListenAddr  string
	AdminAddr   string
	DatabaseURL string
	DBMaxConns  int32
	DBExecMode  string
	// ProjectionMaxInFlight bounds concurrent projection fetches (default:
	// DBMaxConns); ProjectionMaxWait is how long one more waits for a slot
	// before a 503 with Retry-After.
	ProjectionMaxInFlight int
	ProjectionMaxWait     time.Duration
	// IdentityKeys are the core HMAC keys shared with the proxies (never
	// with an app), from IDENTITY_KEYS(_FILE) or, as the one key "core",
	// from the legacy IDENTITY_HMAC_KEY(_FILE). Every one verifies; the
	// first is the v1 key and derives the cursor key.
	IdentityKeys []identity.Key
	// IdentityKeysFile is where the keys came from, if from a file.
	IdentityKeysFile string
	// IdentityAcceptV1 keeps accepting v1 identity signatures (no body or
	// request binding); default true for this release only.
	IdentityAcceptV1 bool
	// IdentityReplayCacheSize bounds the signatures remembered to refuse
	// replays (per replica).
	IdentityReplayCacheSize int
	NATSURL                 string
	// MFAKeys encrypt TOTP secrets at rest (MFA_ENCRYPTION_KEYS(_FILE),
	// "id:base64" of 32 bytes each): the first seals, any opens. None: MFA
	// enrolment answers 503.
	MFAKeys []mfa.Key

	TokenIssuer       string
	TokenAudience     string
	AccessTokenTTL    time.Duration
	RefreshTokenTTL   time.Duration
	RefreshReuseGrace time.Duration
	// TokenMaxLeeway is the largest TOKEN_LEEWAY any proxy of the
	// deployment may use (the proxies refuse more): revoked sessions stay
	// listed in projections for AccessTokenTTL + TokenMaxLeeway.
	TokenMaxLeeway time.Duration
	SigningKeysDir string
	SigningAlg     string
	// SigningKeyActivation is how old a generated key must be before it
	// signs; until then it is only published in the JWKS.
	SigningKeyActivation time.Duration
	OIDCProviders        []OIDCProvider
	// OAuthReturnURLs are the app URLs an OAuth sign-in may hand its code
	// back to (OAUTH_ALLOWED_RETURN_URLS); once set, return_to is
	// required and must be one of them.
	OAuthReturnURLs []string
	// OAuthPerMinute bounds the sign-ins one client IP may start per
	// minute (per replica).
	OAuthPerMinute int

	// PermissionsFile is where the permission catalog came from, if from a
	// file; PermissionsText is the PERMISSIONS variable.
	PermissionsFile string
	PermissionsText string
	// Catalog is the validated permission catalog: the built-ins plus what
	// PERMISSIONS_FILE or PERMISSIONS declares.
	Catalog *permissions.Catalog

	// Mail. SMTPURL empty: mails go to the log (development only).
	SMTPURL       string
	MailFrom      string
	PublicBaseURL string
	// Link templates ({token} is replaced); empty: coreapi's own pages
	// under PublicBaseURL.
	VerifyEmailURL      string
	ResetPasswordURL    string
	AcceptInvitationURL string

	MaxBodyBytes    int
	ShutdownTimeout time.Duration
	LogLevel        slog.Level

	// Tracing is the OpenTelemetry configuration (OTEL_*); off unless an
	// OTLP endpoint is set.
	Tracing tracing.Config
}

// ExecMode returns the pgx exec mode named by DBExecMode.
func (c Config) ExecMode() pgx.QueryExecMode {
	if m, ok := execModes[c.DBExecMode]; ok {
		return m
	}
	return pgx.QueryExecModeCacheStatement
}

// Load reads the configuration through getenv (os.Getenv in production)
// and validates it. The error lists every problem found, one per line.
func Load(getenv func(string) string) (Config, error) {
	l := loader{getenv: getenv}
	c := Config{
		ListenAddr:      l.str("COREAPI_LISTEN_ADDR", DefaultListenAddr),
		AdminAddr:       l.str("COREAPI_ADMIN_ADDR", DefaultAdminAddr),
		DatabaseURL:     l.str("DATABASE_URL", ""),
		DBExecMode:      l.str("DB_EXEC_MODE", "cache_statement"),
		NATSURL:         l.str("NATS_URL", DefaultNATSURL),
		TokenIssuer:     l.str("TOKEN_ISSUER", DefaultTokenIssuer),
		TokenAudience:   l.str("TOKEN_AUDIENCE", DefaultTokenAudience),
		SigningKeysDir:  l.str("SIGNING_KEYS_DIR", ""),
		SigningAlg:      l.str("SIGNING_ALG", DefaultSigningAlg),
		PermissionsFile: l.str("PERMISSIONS_FILE", ""),
		PermissionsText: strings.TrimSpace(getenv("PERMISSIONS")),

		SMTPURL:             l.str("SMTP_URL", ""),
		MailFrom:            l.str("MAIL_FROM", DefaultMailFrom),
		PublicBaseURL:       l.str("PUBLIC_BASE_URL", DefaultPublicBaseURL),
		VerifyEmailURL:      l.str("VERIFY_EMAIL_URL", ""),
		ResetPasswordURL:    l.str("RESET_PASSWORD_URL", ""),
		AcceptInvitationURL: l.str("ACCEPT_INVITATION_URL", ""),

		AccessTokenTTL:       l.duration("ACCESS_TOKEN_TTL", DefaultAccessTokenTTL),
		RefreshTokenTTL:      l.duration("REFRESH_TOKEN_TTL", DefaultRefreshTokenTTL),
		RefreshReuseGrace:    l.duration("REFRESH_REUSE_GRACE", DefaultRefreshReuseGrace),
		TokenMaxLeeway:       l.duration("TOKEN_MAX_LEEWAY", DefaultTokenMaxLeeway),
		SigningKeyActivation: l.duration("SIGNING_KEY_ACTIVATION_DELAY", DefaultKeyActivation),
		ShutdownTimeout:      l.duration("SHUTDOWN_TIMEOUT", DefaultShutdownTimeout),
		MaxBodyBytes:         l.integer("MAX_BODY_BYTES", DefaultMaxBodyBytes),
		OAuthPerMinute:       l.integer("OAUTH_AUTHORIZE_PER_MINUTE", DefaultOAuthPerMinute),

		IdentityAcceptV1:        l.boolean("IDENTITY_ACCEPT_V1", true),
		IdentityReplayCacheSize: l.integer("IDENTITY_REPLAY_CACHE_SIZE", DefaultReplayCacheSize),
	}
	defaultConns := max(4*runtime.GOMAXPROCS(0), MinDBMaxConns)
	c.DBMaxConns = int32(l.integer("DB_MAX_CONNS", defaultConns))
	c.ProjectionMaxInFlight = l.integer("PROJECTION_MAX_INFLIGHT", int(c.DBMaxConns))
	c.ProjectionMaxWait = l.duration("PROJECTION_MAX_WAIT", 100*time.Millisecond)
	if c.ProjectionMaxInFlight < 1 {
		l.fail("PROJECTION_MAX_INFLIGHT: %d is below the minimum of 1", c.ProjectionMaxInFlight)
	}
	if c.ProjectionMaxWait < 0 {
		l.fail("PROJECTION_MAX_WAIT: must not be negative")
	}

	if err := c.LogLevel.UnmarshalText([]byte(l.str("LOG_LEVEL", "info"))); err != nil {
		l.fail("LOG_LEVEL: want debug, info, warn or error, got %q", getenv("LOG_LEVEL"))
	}
	if t, err := tracing.Load(getenv, "coreapi"); err != nil {
		l.fail("%v", err)
	} else {
		c.Tracing = t
	}

	c.IdentityKeys, c.IdentityKeysFile = l.identityKeys()
	if c.IdentityReplayCacheSize < MinReplayCacheSize {
		l.fail("IDENTITY_REPLAY_CACHE_SIZE: %d is below the minimum of %d", c.IdentityReplayCacheSize, MinReplayCacheSize)
	}

	if keys, err := mfa.LoadKeys(l.str("MFA_ENCRYPTION_KEYS", ""), l.str("MFA_ENCRYPTION_KEYS_FILE", "")); err != nil {
		l.fail("MFA_ENCRYPTION_KEYS / MFA_ENCRYPTION_KEYS_FILE: %v", err)
	} else {
		c.MFAKeys = keys
	}

	if c.DatabaseURL == "" {
		l.fail("DATABASE_URL: required")
	} else if _, err := pgx.ParseConfig(c.DatabaseURL); err != nil {
		l.fail("DATABASE_URL: not a valid connection string")
	}
	if c.DBMaxConns < MinDBMaxConns {
		l.fail("DB_MAX_CONNS: %d is below the minimum of %d", c.DBMaxConns, MinDBMaxConns)
	}
	if _, ok := execModes[c.DBExecMode]; !ok {
		l.fail("DB_EXEC_MODE: want cache_statement, cache_describe, describe_exec, exec or simple_protocol, got %q", c.DBExecMode)
	}
	l.addr("COREAPI_LISTEN_ADDR", c.ListenAddr)
	l.addr("COREAPI_ADMIN_ADDR", c.AdminAddr)
	l.url("NATS_URL", c.NATSURL, "nats", "tls")
	l.url("TOKEN_ISSUER", c.TokenIssuer, "http", "https")
	if c.TokenAudience == "" {
		l.fail("TOKEN_AUDIENCE: must not be empty")
	}
	l.positive("ACCESS_TOKEN_TTL", c.AccessTokenTTL)
	l.positive("REFRESH_TOKEN_TTL", c.RefreshTokenTTL)
	if c.RefreshReuseGrace < 0 {
		l.fail("REFRESH_REUSE_GRACE: must not be negative")
	}
	if c.TokenMaxLeeway < 0 {
		l.fail("TOKEN_MAX_LEEWAY: must not be negative")
	} else if c.TokenMaxLeeway > 10*time.Minute {
		l.fail("TOKEN_MAX_LEEWAY: %s is more than 10m; fix the clocks instead", c.TokenMaxLeeway)
	}
	if c.RefreshTokenTTL > 0 && c.AccessTokenTTL > c.RefreshTokenTTL {
		l.fail("ACCESS_TOKEN_TTL: %s is longer than REFRESH_TOKEN_TTL %s", c.AccessTokenTTL, c.RefreshTokenTTL)
	}
	l.positive("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	if c.MaxBodyBytes < 1024 {
		l.fail("MAX_BODY_BYTES: %d is below the minimum of 1024", c.MaxBodyBytes)
	}
	if c.SigningKeyActivation < 0 {
		l.fail("SIGNING_KEY_ACTIVATION_DELAY: must not be negative")
	}
	if c.SigningKeysDir == "" {
		l.fail("SIGNING_KEYS_DIR: required (create keys with `coreapi keys generate -dir DIR`)")
	}
	validAlg := false
	for _, a := range signingAlgs {
		validAlg = validAlg || a == c.SigningAlg
	}
	if !validAlg {
		l.fail("SIGNING_ALG: want EdDSA, ES256 or RS256, got %q", c.SigningAlg)
	}
	c.OIDCProviders = l.oidc()
	if cat, err := permissions.Load(c.PermissionsText, c.PermissionsFile); err != nil {
		var pe *permissions.Error
		if errors.As(err, &pe) {
			for _, p := range pe.Problems {
				l.fail("%s: %s", pe.Source, p)
			}
		} else {
			l.fail("%v", err)
		}
	} else {
		c.Catalog = cat
	}
	c.OAuthReturnURLs = l.returnURLs()
	if c.OAuthPerMinute < 1 {
		l.fail("OAUTH_AUTHORIZE_PER_MINUTE: must be at least 1")
	}
	l.mail(c)

	if len(l.problems) > 0 {
		return c, &Error{Problems: l.problems}
	}
	return c, nil
}

// Error lists every configuration problem found.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// DatabaseURLFrom returns DATABASE_URL for commands that need nothing else
// (migrate).
func DatabaseURLFrom(getenv func(string) string) (string, error) {
	u := getenv("DATABASE_URL")
	if u == "" {
		return "", errors.New("DATABASE_URL: required")
	}
	if _, err := pgx.ParseConfig(u); err != nil {
		return "", errors.New("DATABASE_URL: not a valid connection string")
	}
	return u, nil
}

// String renders the configuration with secrets masked.
func (c Config) String() string {
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
	row("COREAPI_LISTEN_ADDR", c.ListenAddr)
	row("COREAPI_ADMIN_ADDR", c.AdminAddr)
	row("DATABASE_URL", redactURL(c.DatabaseURL))
	row("DB_MAX_CONNS", strconv.Itoa(int(c.DBMaxConns)))
	row("DB_EXEC_MODE", c.DBExecMode)
	row("PROJECTION_MAX_INFLIGHT", strconv.Itoa(c.ProjectionMaxInFlight))
	row("PROJECTION_MAX_WAIT", c.ProjectionMaxWait.String())
	row("IDENTITY_KEYS", maskKeys(c.IdentityKeys))
	row("IDENTITY_KEYS_FILE", c.IdentityKeysFile)
	row("IDENTITY_ACCEPT_V1", strconv.FormatBool(c.IdentityAcceptV1))
	row("IDENTITY_REPLAY_CACHE_SIZE", strconv.Itoa(c.IdentityReplayCacheSize))
	row("NATS_URL", redactURL(c.NATSURL))
	row("MFA_ENCRYPTION_KEYS", mfaKeyIDs(c.MFAKeys))
	row("TOKEN_ISSUER", c.TokenIssuer)
	row("TOKEN_AUDIENCE", c.TokenAudience)
	row("ACCESS_TOKEN_TTL", c.AccessTokenTTL.String())
	row("REFRESH_TOKEN_TTL", c.RefreshTokenTTL.String())
	row("REFRESH_REUSE_GRACE", c.RefreshReuseGrace.String())
	row("TOKEN_MAX_LEEWAY", c.TokenMaxLeeway.String())
	row("SIGNING_KEYS_DIR", c.SigningKeysDir)
	row("SIGNING_ALG", c.SigningAlg)
	row("SIGNING_KEY_ACTIVATION_DELAY", c.SigningKeyActivation.String())
	names := make([]string, len(c.OIDCProviders))
	for i, p := range c.OIDCProviders {
		names[i] = p.Name
	}
	row("OIDC_PROVIDERS", strings.Join(names, ","))
	for _, p := range c.OIDCProviders {
		pre := "OIDC_" + strings.ToUpper(p.Name) + "_"
		row(pre+"ISSUER", p.Issuer)
		row(pre+"CLIENT_ID", p.ClientID)
		row(pre+"CLIENT_SECRET", mask(p.ClientSecret))
		row(pre+"REDIRECT_URL", p.RedirectURL)
		row(pre+"SCOPES", strings.Join(p.Scopes, " "))
	}
	row("PERMISSIONS_FILE", c.PermissionsFile)
	row("PERMISSIONS", c.PermissionsText)
	if c.Catalog != nil {
		var declared []string
		for _, e := range c.Catalog.Entries() {
			if !e.Builtin {
				declared = append(declared, e.Name)
			}
		}
		fmt.Fprintf(&b, "# permission catalog: %d declared [%s], hash %s\n", len(declared), strings.Join(declared, " "), c.Catalog.Hash())
	}
	row("OAUTH_ALLOWED_RETURN_URLS", strings.Join(c.OAuthReturnURLs, ","))
	row("OAUTH_AUTHORIZE_PER_MINUTE", strconv.Itoa(c.OAuthPerMinute))
	row("SMTP_URL", redactURL(c.SMTPURL))
	row("MAIL_FROM", c.MailFrom)
	row("PUBLIC_BASE_URL", c.PublicBaseURL)
	row("VERIFY_EMAIL_URL", c.VerifyEmailURL)
	row("RESET_PASSWORD_URL", c.ResetPasswordURL)
	row("ACCEPT_INVITATION_URL", c.AcceptInvitationURL)
	row("MAX_BODY_BYTES", strconv.Itoa(c.MaxBodyBytes))
	row("SHUTDOWN_TIMEOUT", c.ShutdownTimeout.String())
	row("LOG_LEVEL", strings.ToLower(c.LogLevel.String()))
	for _, r := range c.Tracing.Rows() {
		row(r[0], r[1])
	}
	return b.String()
}

// LogValue renders the configuration for slog with secrets masked.
func (c Config) LogValue() slog.Value {
	provs := make([]slog.Attr, len(c.OIDCProviders))
	for i, p := range c.OIDCProviders {
		provs[i] = slog.Attr{Key: p.Name, Value: p.LogValue()}
	}
	return slog.GroupValue(
		slog.String("listen_addr", c.ListenAddr),
		slog.String("admin_addr", c.AdminAddr),
		slog.String("database_url", redactURL(c.DatabaseURL)),
		slog.Int("db_max_conns", int(c.DBMaxConns)),
		slog.String("db_exec_mode", c.DBExecMode),
		slog.Int("projection_max_inflight", c.ProjectionMaxInFlight),
		slog.Duration("projection_max_wait", c.ProjectionMaxWait),
		slog.String("identity_keys", maskKeys(c.IdentityKeys)),
		slog.Bool("identity_accept_v1", c.IdentityAcceptV1),
		slog.Int("identity_replay_cache_size", c.IdentityReplayCacheSize),
		slog.String("nats_url", redactURL(c.NATSURL)),
		slog.String("mfa_encryption_keys", mfaKeyIDs(c.MFAKeys)),
		slog.String("token_issuer", c.TokenIssuer),
		slog.String("token_audience", c.TokenAudience),
		slog.Duration("access_token_ttl", c.AccessTokenTTL),
		slog.Duration("refresh_token_ttl", c.RefreshTokenTTL),
		slog.Duration("refresh_reuse_grace", c.RefreshReuseGrace),
		slog.Duration("token_max_leeway", c.TokenMaxLeeway),
		slog.String("signing_keys_dir", c.SigningKeysDir),
		slog.String("signing_alg", c.SigningAlg),
		slog.Duration("signing_key_activation_delay", c.SigningKeyActivation),
		slog.Attr{Key: "oidc_providers", Value: slog.GroupValue(provs...)},
		slog.String("permissions_file", c.PermissionsFile),
		slog.String("permissions_catalog_hash", catalogHash(c.Catalog)),
		slog.String("oauth_allowed_return_urls", strings.Join(c.OAuthReturnURLs, ",")),
		slog.Int("oauth_authorize_per_minute", c.OAuthPerMinute),
		slog.String("smtp_url", redactURL(c.SMTPURL)),
		slog.String("mail_from", c.MailFrom),
		slog.String("public_base_url", c.PublicBaseURL),
		slog.String("verify_email_url", c.VerifyEmailURL),
		slog.String("reset_password_url", c.ResetPasswordURL),
		slog.String("accept_invitation_url", c.AcceptInvitationURL),
		slog.Int("max_body_bytes", c.MaxBodyBytes),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.String("log_level", c.LogLevel.String()),
		slog.Any("tracing", c.Tracing),
	)
}

func catalogHash(c *permissions.Catalog) string {
	if c == nil {
		return ""
	}
	return c.Hash()
}

// maskKeys shows the key ids only: "core:***,next:***".
func maskKeys(keys []identity.Key) string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.String()
	}
	return strings.Join(out, ",")
}

// mfaKeyIDs shows which MFA keys are configured, never their secrets.
func mfaKeyIDs(keys []mfa.Key) string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID + ":" + mask(string(k.Secret))
	}
	return strings.Join(ids, ",")
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "********"
}

func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		// Key/value connection strings may hold a password anywhere.
		return "********"
	}
	return u.Redacted()
}

type loader struct {
	getenv   func(string) string
	problems []string
}

func (l *loader) fail(format string, args ...any) {
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
}

func (l *loader) str(name, def string) string {
	if v := strings.TrimSpace(l.getenv(name)); v != "" {
		return v
	}
	return def
}

func (l *loader) duration(name string, def time.Duration) time.Duration {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		l.fail("%s: want a duration like 15m or 10s, got %q", name, v)
		return def
	}
	return d
}

func (l *loader) integer(name string, def int) int {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n > 1<<30 {
		l.fail("%s: want an integer, got %q", name, v)
		return def
	}
	return n
}

func (l *loader) boolean(name string, def bool) bool {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.fail("%s: want true or false, got %q", name, v)
		return def
	}
	return b
}

// identityKeys reads the core key list: IDENTITY_KEYS or IDENTITY_KEYS_FILE,
// or the legacy IDENTITY_HMAC_KEY or IDENTITY_HMAC_KEY_FILE as one key with
// id "core". Setting a new and a legacy variable together is an error:
// which one wins would be a guess.
func (l *loader) identityKeys() ([]identity.Key, string) {
	keys, keysFile := l.getenv("IDENTITY_KEYS"), l.str("IDENTITY_KEYS_FILE", "")
	legacy, legacyFile := l.getenv("IDENTITY_HMAC_KEY"), l.str("IDENTITY_HMAC_KEY_FILE", "")
	switch {
	case (keys != "" || keysFile != "") && (legacy != "" || legacyFile != ""):
		l.fail("IDENTITY_KEYS / IDENTITY_HMAC_KEY: set the key list (IDENTITY_KEYS or IDENTITY_KEYS_FILE) or the legacy key (IDENTITY_HMAC_KEY or IDENTITY_HMAC_KEY_FILE), not both")
	case keys != "" || keysFile != "":
		list, err := identity.LoadKeys(keys, keysFile)
		if err != nil {
			l.fail("IDENTITY_KEYS / IDENTITY_KEYS_FILE: %v", err)
			return nil, keysFile
		}
		return list, keysFile
	default:
		key, err := identity.LoadKey(legacy, legacyFile)
		if err != nil {
			l.fail("IDENTITY_KEYS / IDENTITY_HMAC_KEY: %v (set IDENTITY_KEYS=core:BASE64 or IDENTITY_KEYS_FILE)", err)
			return nil, legacyFile
		}
		return []identity.Key{{ID: LegacyIdentityKeyID, Secret: key}}, legacyFile
	}
	return nil, ""
}

func (l *loader) positive(name string, d time.Duration) {
	if d <= 0 {
		l.fail("%s: must be positive", name)
	}
}

func (l *loader) addr(name, v string) {
	if _, port, err := net.SplitHostPort(v); err != nil {
		l.fail("%s: want host:port, got %q", name, v)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		l.fail("%s: bad port in %q", name, v)
	}
}

func (l *loader) url(name, v string, schemes ...string) {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		l.fail("%s: want an absolute URL, got %q", name, v)
		return
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return
		}
	}
	l.fail("%s: scheme %q not one of %s", name, u.Scheme, strings.Join(schemes, ", "))
}

// returnURLs reads OAUTH_ALLOWED_RETURN_URLS: absolute URLs without a
// fragment, https unless the host is a loopback name (development).
func (l *loader) returnURLs() []string {
	var out []string
	for _, raw := range strings.Split(l.getenv("OAUTH_ALLOWED_RETURN_URLS"), ",") {
		v := strings.TrimSpace(raw)
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		switch {
		case err != nil || u.Host == "" || u.User != nil || u.Fragment != "" || strings.Contains(v, "#"):
			l.fail("OAUTH_ALLOWED_RETURN_URLS: %q: want an absolute URL without credentials or fragment", v)
		case u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())):
			l.fail("OAUTH_ALLOWED_RETURN_URLS: %q: want https (http only for localhost)", v)
		default:
			out = append(out, v)
		}
	}
	return out
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (l *loader) oidc() []OIDCProvider {
	list := strings.TrimSpace(l.getenv("OIDC_PROVIDERS"))
	if list == "" {
		return nil
	}
	var out []OIDCProvider
	seen := map[string]bool{}
	for _, raw := range strings.Split(list, ",") {
		name := strings.ToLower(strings.TrimSpace(raw))
		if name == "" {
			continue
		}
		if !validProviderName(name) {
			l.fail("OIDC_PROVIDERS: provider name %q: want [a-z0-9_], starting with a letter", name)
			continue
		}
		if seen[name] {
			l.fail("OIDC_PROVIDERS: %q listed twice", name)
			continue
		}
		seen[name] = true
		pre := "OIDC_" + strings.ToUpper(name) + "_"
		p := OIDCProvider{
			Name:         name,
			Issuer:       l.str(pre+"ISSUER", ""),
			ClientID:     l.str(pre+"CLIENT_ID", ""),
			ClientSecret: l.str(pre+"CLIENT_SECRET", ""),
			RedirectURL:  l.str(pre+"REDIRECT_URL", ""),
			Scopes:       strings.Fields(strings.ReplaceAll(l.str(pre+"SCOPES", "openid email profile"), ",", " ")),
		}
		if p.Issuer == "" {
			l.fail("%sISSUER: required for provider %q", pre, name)
		} else {
			l.url(pre+"ISSUER", p.Issuer, "http", "https")
		}
		if p.ClientID == "" {
			l.fail("%sCLIENT_ID: required for provider %q", pre, name)
		}
		if p.ClientSecret == "" {
			l.fail("%sCLIENT_SECRET: required for provider %q", pre, name)
		}
		if p.RedirectURL == "" {
			l.fail("%sREDIRECT_URL: required for provider %q", pre, name)
		} else {
			l.url(pre+"REDIRECT_URL", p.RedirectURL, "http", "https")
		}
		hasOpenID := false
		for _, s := range p.Scopes {
			hasOpenID = hasOpenID || s == "openid"
		}
		if !hasOpenID {
			l.fail("%sSCOPES: must include openid", pre)
		}
		out = append(out, p)
	}
	return out
}

// mail checks the mail settings (the SMTP URL and link templates are
// parsed where they are used; the same checks run here so that every
// problem is reported at start).
func (l *loader) mail(c Config) {
	if c.SMTPURL != "" {
		if _, err := mail.ParseSMTPURL(c.SMTPURL); err != nil {
			l.fail("SMTP_URL: %v", err)
		}
	}
	if a, err := netmail.ParseAddress(c.MailFrom); err != nil || strings.ContainsAny(c.MailFrom, "\r\n") || !mail.ValidAddress(a.Address) {
		l.fail("MAIL_FROM: want an address like \"Tollgate <no-reply@example.com>\", got %q", c.MailFrom)
	}
	l.url("PUBLIC_BASE_URL", c.PublicBaseURL, "http", "https")
	for name, v := range map[string]string{"VERIFY_EMAIL_URL": c.VerifyEmailURL,
		"RESET_PASSWORD_URL": c.ResetPasswordURL, "ACCEPT_INVITATION_URL": c.AcceptInvitationURL} {
		if v == "" {
			continue
		}
		if err := mail.CheckLinkTemplate(v); err != nil {
			l.fail("%s: %v", name, err)
		}
	}
}

// Links returns the mailed links' templates.
func (c Config) Links() mail.Links {
	l := mail.DefaultLinks(c.PublicBaseURL)
	if c.VerifyEmailURL != "" {
		l.VerifyEmail = c.VerifyEmailURL
	}
	if c.ResetPasswordURL != "" {
		l.ResetPassword = c.ResetPasswordURL
	}
	if c.AcceptInvitationURL != "" {
		l.AcceptInvitation = c.AcceptInvitationURL
	}
	return l
}

func validProviderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
		case (c >= '0' && c <= '9') || c == '_':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return len(s) > 0 && len(s) <= 32
}
