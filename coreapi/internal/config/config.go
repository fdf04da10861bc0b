// Package config loads coreapi's configuration from the environment
// (12-factor), applies defaults, and validates it, reporting every problem at
// once. Secrets are masked whenever the configuration is printed or logged.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	netmail "net/mail"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/identity/replay"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/secretfile"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// Defaults named elsewhere; every default is in Vars.
const (
	DefaultListenAddr    = "127.0.0.1:8081"
	DefaultAdminAddr     = "127.0.0.1:9091"
	DefaultNATSURL       = "nats://127.0.0.1:4222"
	DefaultTokenIssuer   = "http://localhost:8080"
	DefaultTokenAudience = "tollgate"
	DefaultMailFrom      = "Tollgate <no-reply@localhost>"
	DefaultPublicBaseURL = "http://localhost:8080"
	MinDBMaxConns        = 8
	MinReplayCacheSize   = 1024
	// MinOutboxHeartbeat is the shortest OUTBOX_HEARTBEAT_INTERVAL but 0.
	MinOutboxHeartbeat = 100 * time.Millisecond
	// LegacyIdentityKeyID names the key given as IDENTITY_HMAC_KEY(_FILE).
	LegacyIdentityKeyID = "core"
)

// execModes maps DB_EXEC_MODE values to pgx exec modes. cache_statement is
// the default; the others exist for PgBouncer in transaction mode.
func execMode(name string) (pgx.QueryExecMode, bool) {
	switch name {
	case "cache_statement":
		return pgx.QueryExecModeCacheStatement, true
	case "cache_describe":
		return pgx.QueryExecModeCacheDescribe, true
	case "describe_exec":
		return pgx.QueryExecModeDescribeExec, true
	case "exec":
		return pgx.QueryExecModeExec, true
	case "simple_protocol":
		return pgx.QueryExecModeSimpleProtocol, true
	}
	return 0, false
}

// signingAlgs are the accepted values of SIGNING_ALG.
func signingAlgs() []string { return []string{"EdDSA", "ES256", "RS256"} }

// OIDCProvider is one configured OpenID Connect provider.
type OIDCProvider struct {
	Name         string // lower-case, as listed in OIDC_PROVIDERS; used in routes
	Issuer       string
	ClientID     string
	ClientSecret string
	RedirectURL  string
	Scopes       []string
	// EmailDomains (OIDC_<NAME>_EMAIL_DOMAINS) are the domains the
	// provider is authoritative for, in the spelling addresses are stored
	// in (mail.Canonical's domain, lower case), or AnyEmailDomain alone:
	// only for an address at one of them does its email_verified count
	// (oauth links to an account by it, and creates an account verified).
	// None (unset): no address is vouched for.
	EmailDomains []string
}

// AnyEmailDomain in OIDCProvider.EmailDomains makes the provider
// authoritative for every domain: an operator's knowing choice for a
// provider that can mark verified only addresses its users hold.
const AnyEmailDomain = "*"

// LogValue masks the client secret.
func (p OIDCProvider) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", p.Name),
		slog.String("issuer", p.Issuer),
		slog.String("client_id", p.ClientID),
		slog.String("client_secret", mask(p.ClientSecret)),
		slog.String("redirect_url", p.RedirectURL),
		slog.String("scopes", strings.Join(p.Scopes, " ")),
		slog.String("email_domains", strings.Join(p.EmailDomains, ",")),
	)
}

// Config is coreapi's whole configuration.
type Config struct {
	ListenAddr string
	AdminAddr  string
	// TLSCertFile and TLSKeyFile, both set or neither, make the API
	// listener serve TLS with that pair (package tlscert re-reads it when
	// it changes); the admin listener stays plain HTTP.
	TLSCertFile string
	TLSKeyFile  string
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
	// OutboxHeartbeat is how often the relays write a heartbeat row
	// (OUTBOX_HEARTBEAT_INTERVAL; 0: none).
	OutboxHeartbeat time.Duration
	// AuditRetention is how long audit events are kept (AUDIT_RETENTION;
	// 0: for ever).
	AuditRetention time.Duration
	// OutboxRelayID names this replica's relay in its beats and in
	// outbox_relays (OUTBOX_RELAY_ID; default: the host name, a pod's
	// name, and the port of ListenAddr): stable across restarts of the
	// process, unique to each replica.
	OutboxRelayID string
	// MFAKeys encrypt TOTP secrets at rest (MFA_ENCRYPTION_KEYS(_FILE),
	// "id:base64" of 32 bytes each): the first seals, any opens. None: MFA
	// enrolment answers 503.
	MFAKeys []mfa.Key
	// APIKeyPepper keys the HMAC under which API-key secrets are stored
	// (API_KEY_PEPPER(_FILE), base64 of at least 32 bytes). None: API keys
	// can be neither created nor used (503 api_keys_unavailable).
	// Changing it invalidates every key.
	APIKeyPepper     []byte
	APIKeyPepperFile string

	TokenIssuer       string
	TokenAudience     string
	AccessTokenTTL    time.Duration
	RefreshTokenTTL   time.Duration
	RefreshReuseGrace time.Duration
	// SessionMaxAge bounds a session's lifetime from its sign-in, however
	// often it is refreshed (0: no bound; REFRESH_TOKEN_TTL then bounds
	// only its idle time).
	SessionMaxAge time.Duration
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
	// SignupPerHour bounds the sign-ups of one client IP per hour.
	SignupPerHour int
	// SignInFailuresPerHour bounds the wrong passwords one client IP may
	// send per hour, over every address.
	SignInFailuresPerHour int
	// PasswordChecksPerHour bounds the passwords, right or wrong, one
	// client IP may have checked per hour.
	PasswordChecksPerHour int
	// TenantMailsPerHour bounds the invitation and account mails one
	// tenant's members cause per hour (invitations.Limits.TenantMail).
	TenantMailsPerHour int
	// APIKeyCreationsPerHour bounds the tenant API keys one tenant
	// creates per hour, revoked and expired ones included
	// (apikeys.Limits.TenantCreations).
	APIKeyCreationsPerHour int

	// PermissionsFile is where the permission catalog came from, if from a
	// file; PermissionsText is the PERMISSIONS variable.
	PermissionsFile string
	PermissionsText string
	// Catalog is the validated permission catalog: the built-ins plus what
	// PERMISSIONS_FILE or PERMISSIONS declares.
	Catalog *permissions.Catalog

	// Mail. SMTPURL empty: mails go to the log (development only), which
	// takes MailToLog (MAIL_TO_LOG=true): the log would hold every
	// one-time link, so a deployment that forgot SMTP_URL must not start.
	SMTPURL       string
	MailToLog     bool
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

	printout envconfig.Printout

	// Warnings are settings that load but deserve a word at start (logged
	// by serve, printed by -check-config): secret files open to other
	// users.
	Warnings []string

	// Tracing is the OpenTelemetry configuration (OTEL_*); off unless an
	// OTLP endpoint is set.
	Tracing tracing.Config
}

// ExecMode returns the pgx exec mode named by DBExecMode.
func (c Config) ExecMode() pgx.QueryExecMode {
	if m, ok := execMode(c.DBExecMode); ok {
		return m
	}
	return pgx.QueryExecModeCacheStatement
}

// Load reads the configuration of `coreapi serve` through getenv
// (os.Getenv in production) and validates it. The error lists every
// problem found, one per line.
func Load(getenv func(string) string) (Config, error) {
	l := loader{Vars.Read(getenv)}
	c := Config{
		ListenAddr:      l.ListenAddr("COREAPI_LISTEN_ADDR"),
		AdminAddr:       l.ListenAddr("COREAPI_ADMIN_ADDR"),
		DBExecMode:      l.String("DB_EXEC_MODE"),
		TokenIssuer:     l.String("TOKEN_ISSUER"),
		TokenAudience:   l.String("TOKEN_AUDIENCE"),
		SigningAlg:      l.String("SIGNING_ALG"),
		PermissionsFile: l.String("PERMISSIONS_FILE"),
		PermissionsText: l.String("PERMISSIONS"),

		MailToLog:           l.Bool("MAIL_TO_LOG"),
		MailFrom:            l.String("MAIL_FROM"),
		PublicBaseURL:       l.String("PUBLIC_BASE_URL"),
		VerifyEmailURL:      l.String("VERIFY_EMAIL_URL"),
		ResetPasswordURL:    l.String("RESET_PASSWORD_URL"),
		AcceptInvitationURL: l.String("ACCEPT_INVITATION_URL"),

		AccessTokenTTL:         l.Duration("ACCESS_TOKEN_TTL", time.Nanosecond, 0),
		RefreshTokenTTL:        l.Duration("REFRESH_TOKEN_TTL", time.Nanosecond, 0),
		RefreshReuseGrace:      l.Duration("REFRESH_REUSE_GRACE", 0, MaxRefreshReuseGrace),
		SessionMaxAge:          l.Duration("SESSION_MAX_AGE", 0, 0),
		TokenMaxLeeway:         l.Duration("TOKEN_MAX_LEEWAY", 0, MaxLeeway),
		SigningKeyActivation:   l.Duration("SIGNING_KEY_ACTIVATION_DELAY", 0, 0),
		ShutdownTimeout:        l.Duration("SHUTDOWN_TIMEOUT", time.Nanosecond, 0),
		MaxBodyBytes:           l.Int("MAX_BODY_BYTES", 1024, 1<<30, 0),
		OAuthPerMinute:         l.Int("OAUTH_AUTHORIZE_PER_MINUTE", 1, 1<<30, 0),
		SignupPerHour:          l.Int("SIGNUP_PER_HOUR", 1, 1<<30, 0),
		SignInFailuresPerHour:  l.Int("SIGNIN_FAILURES_PER_HOUR", 1, 1<<30, 0),
		PasswordChecksPerHour:  l.Int("PASSWORD_CHECKS_PER_HOUR", 1, 1<<30, 0),
		TenantMailsPerHour:     l.Int("TENANT_MAILS_PER_HOUR", 1, 1<<30, 0),
		APIKeyCreationsPerHour: l.Int("API_KEY_CREATIONS_PER_HOUR", 1, 1<<30, 0),

		IdentityAcceptV1:        l.Bool("IDENTITY_ACCEPT_V1"),
		IdentityReplayCacheSize: l.Int("IDENTITY_REPLAY_CACHE_SIZE", MinReplayCacheSize, replay.MaxSize, 0),
	}
	if envconfig.SameListener(c.ListenAddr, c.AdminAddr) {
		l.Problem("COREAPI_LISTEN_ADDR %s and COREAPI_ADMIN_ADDR %s take the same port: the second could not listen; give each its own", c.ListenAddr, c.AdminAddr)
	}
	c.TLSCertFile, c.TLSKeyFile = l.tlsFiles()
	c.DatabaseURL = l.database()
	c.DBMaxConns = int32(l.Int("DB_MAX_CONNS", MinDBMaxConns, 1<<20, max(4*runtime.GOMAXPROCS(0), MinDBMaxConns)))
	c.ProjectionMaxInFlight = l.Int("PROJECTION_MAX_INFLIGHT", 1, 1<<30, int(c.DBMaxConns))
	c.ProjectionMaxWait = l.Duration("PROJECTION_MAX_WAIT", 0, 0)
	c.OutboxHeartbeat = l.Duration("OUTBOX_HEARTBEAT_INTERVAL", 0, time.Hour)
	if c.OutboxHeartbeat > 0 && c.OutboxHeartbeat < MinOutboxHeartbeat {
		l.Failf("OUTBOX_HEARTBEAT_INTERVAL", "want 0 (none) or at least %s, got %s", MinOutboxHeartbeat, c.OutboxHeartbeat)
	}
	c.AuditRetention = l.Duration("AUDIT_RETENTION", 0, 0)
	if c.AuditRetention > 0 && c.AuditRetention < MinAuditRetention {
		l.Failf("AUDIT_RETENTION", "want 0 (for ever) or at least %s, got %s", MinAuditRetention, c.AuditRetention)
	}
	c.OutboxRelayID = l.String("OUTBOX_RELAY_ID")
	// The proxies ignore a longer name (its beats and its listing): such
	// a relay would publish without being watched.
	if n := len(c.OutboxRelayID); n > invalidation.MaxRelayIDLen {
		l.Failf("OUTBOX_RELAY_ID", "want at most %d bytes (the proxies watch no relay named longer), got %d", invalidation.MaxRelayIDLen, n)
	}
	if c.OutboxRelayID == "" {
		c.OutboxRelayID = defaultRelayID(os.Hostname, c.ListenAddr)
	}

	if err := c.LogLevel.UnmarshalText([]byte(l.String("LOG_LEVEL"))); err != nil {
		l.Failf("LOG_LEVEL", "want debug, info, warn or error, got %q", l.Raw("LOG_LEVEL"))
	}

	c.IdentityKeys, c.IdentityKeysFile = l.identityKeys()
	l.Derive("identity key ids", maskKeys(c.IdentityKeys))

	c.MFAKeys = l.mfaKeys()
	c.APIKeyPepper, c.APIKeyPepperFile = l.pepper()

	if _, ok := execMode(c.DBExecMode); !ok {
		l.Failf("DB_EXEC_MODE", "want cache_statement, cache_describe, describe_exec, exec or simple_protocol, got %q", c.DBExecMode)
	}
	var nats urlRead
	c.NATSURL, nats = l.urlOrFile("NATS_URL")
	if nats.ok {
		l.url(nats.source, c.NATSURL, "nats", "tls")
	}
	l.tokenIssuer(c.TokenIssuer, c.PublicBaseURL)
	if c.TokenAudience == "" {
		l.Failf("TOKEN_AUDIENCE", "must not be empty")
	}
	if c.RefreshTokenTTL > 0 && c.AccessTokenTTL > c.RefreshTokenTTL {
		l.Failf("ACCESS_TOKEN_TTL", "%s is longer than REFRESH_TOKEN_TTL %s", c.AccessTokenTTL, c.RefreshTokenTTL)
	}
	if c.SessionMaxAge > 0 && c.AccessTokenTTL > c.SessionMaxAge {
		l.Failf("SESSION_MAX_AGE", "%s is shorter than ACCESS_TOKEN_TTL %s", c.SessionMaxAge, c.AccessTokenTTL)
	}
	c.SigningKeysDir = l.signingKeysDir()
	validAlg := false
	for _, a := range signingAlgs() {
		validAlg = validAlg || a == c.SigningAlg
	}
	if !validAlg {
		l.Failf("SIGNING_ALG", "want EdDSA, ES256 or RS256, got %q", c.SigningAlg)
	}
	c.OIDCProviders = l.oidc()
	if cat, err := permissions.Load(c.PermissionsText, c.PermissionsFile); err != nil {
		var pe *permissions.Error
		if errors.As(err, &pe) {
			for _, p := range pe.Problems {
				l.Problem("%s: %s", pe.Source, p)
			}
		} else {
			l.Problem("%v", err)
		}
	} else {
		c.Catalog = cat
		var declared []string
		for _, e := range cat.Entries() {
			if !e.Builtin {
				declared = append(declared, e.Name)
			}
		}
		l.Derive("permission catalog", fmt.Sprintf("%d declared [%s], hash %s", len(declared), strings.Join(declared, " "), cat.Hash()))
	}
	c.OAuthReturnURLs = l.returnURLs()
	var smtp urlRead
	c.SMTPURL, smtp = l.urlOrFile("SMTP_URL")
	l.mail(c, smtp)
	var err error
	if c.Tracing, err = tracing.Load(l.Raw, "coreapi"); err != nil {
		l.Problem("%v", err)
	}
	for _, r := range c.Tracing.Rows() {
		l.Show(r[0], r[1])
	}

	c.Warnings = l.secretFileWarnings(c.SigningKeysDir, c.OIDCProviders)
	if c.AccessTokenTTL > ProxyTokenMaxLifetime {
		c.Warnings = append(c.Warnings, fmt.Sprintf("ACCESS_TOKEN_TTL (%s) is longer than authproxy's default TOKEN_MAX_LIFETIME (%s): "+
			"a proxy refuses a token whose exp - iat passes its TOKEN_MAX_LIFETIME, so proxies left at the default refuse every access token "+
			"coreapi issues (401 invalid_token); set TOKEN_MAX_LIFETIME to at least %s on every proxy", c.AccessTokenTTL, ProxyTokenMaxLifetime, c.AccessTokenTTL))
	}

	c.printout = l.Printout()
	if err := l.Err(); err != nil {
		return c, err
	}
	return c, nil
}

// secretFileWarnings checks the mode of every file holding a secret: the
// *_FILE variables set (the OIDC providers' client secrets included) and
// the signing keys in keysDir (see package secretfile for why a warning
// and why group access is allowed).
func (l loader) secretFileWarnings(keysDir string, providers []OIDCProvider) []string {
	var warnings []string
	add := func(name, path string) {
		if w := secretfile.Check(name, path); w != "" {
			warnings = append(warnings, w)
		}
	}
	for _, name := range []string{"DATABASE_URL_FILE", "IDENTITY_KEYS_FILE", "IDENTITY_HMAC_KEY_FILE", "NATS_URL_FILE", "MFA_ENCRYPTION_KEYS_FILE",
		"API_KEY_PEPPER_FILE", "SMTP_URL_FILE", "COREAPI_TLS_KEY_FILE", "OTEL_EXPORTER_OTLP_HEADERS_FILE", "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE"} {
		if path := l.Raw(name); path != "" {
			add(name, path)
		}
	}
	for _, p := range providers {
		name := "OIDC_" + strings.ToUpper(p.Name) + "_CLIENT_SECRET_FILE"
		if path := l.Raw(name); path != "" {
			add(name, path)
		}
	}
	if keysDir != "" {
		paths, _ := filepath.Glob(filepath.Join(keysDir, "*.pem")) // only a bad pattern fails
		for _, p := range paths {
			add("SIGNING_KEYS_DIR", p)
		}
	}
	return warnings
}

// ProxyTokenMaxLifetime is authproxy's default TOKEN_MAX_LIFETIME, the
// longest exp - iat a proxy accepts: an ACCESS_TOKEN_TTL beyond it is
// warned at start (the proxies' own setting is not known here).
const ProxyTokenMaxLifetime = time.Hour

// MaxLeeway is the largest clock skew TOKEN_MAX_LEEWAY may allow (the
// proxies refuse the same): more means broken clocks.
const MaxLeeway = time.Minute

// MinAuditRetention is the shortest AUDIT_RETENTION but 0: a shorter one
// is a typo (a unit forgotten) more likely than a policy.
const MinAuditRetention = 24 * time.Hour

// MaxRefreshReuseGrace caps REFRESH_REUSE_GRACE. Within the grace a
// rotated refresh token still yields its live successor, so whoever holds
// a copy of it (a thief) gets a session as long as the grace lasts,
// undetected; it exists for two tabs refreshing at once, which race by
// seconds, not minutes.
const MaxRefreshReuseGrace = time.Minute

// Error lists every configuration problem found.
type Error = envconfig.Error

// LoadCommand reads what a command other than serve needs (the variables
// whose table entry names the command), with the same parsing, trimming
// and checks as serve: `migrate` and `tenants` need DATABASE_URL, `keys`
// SIGNING_KEYS_DIR.
func LoadCommand(command string, getenv func(string) string) (Config, error) {
	l := loader{Vars.Read(getenv)}
	var c Config
	for _, v := range Vars {
		if !v.ReadBy(command) || command == "serve" {
			continue
		}
		switch v.Name {
		case "DATABASE_URL":
			c.DatabaseURL = l.database()
		case "DATABASE_URL_FILE": // read with DATABASE_URL
		case "SIGNING_KEYS_DIR":
			c.SigningKeysDir = l.signingKeysDir()
		case "SIGNING_ALG":
			c.SigningAlg = l.String("SIGNING_ALG")
		case "MFA_ENCRYPTION_KEYS":
			c.MFAKeys = l.mfaKeys()
		case "MFA_ENCRYPTION_KEYS_FILE": // read with MFA_ENCRYPTION_KEYS
		default:
			l.Problem("%s: read by %s in the table but not by LoadCommand", v.Name, command)
		}
	}
	c.printout = l.Printout()
	return c, l.Err()
}

// mfaKeys reads MFA_ENCRYPTION_KEYS or MFA_ENCRYPTION_KEYS_FILE (nil when
// neither is set).
func (l loader) mfaKeys() []mfa.Key {
	keys, err := mfa.LoadKeys(l.String("MFA_ENCRYPTION_KEYS"), l.String("MFA_ENCRYPTION_KEYS_FILE"))
	if err != nil {
		l.Problem("MFA_ENCRYPTION_KEYS / MFA_ENCRYPTION_KEYS_FILE: %v", err)
		return nil
	}
	l.Show("MFA_ENCRYPTION_KEYS", mfaKeyIDs(keys))
	return keys
}

// CheckFiles checks what -check-config can check beyond the variables: the
// signing-key directory holds a usable key of SIGNING_ALG.
func (c Config) CheckFiles() []string {
	if c.SigningKeysDir == "" {
		return nil // reported by Load
	}
	if _, err := keys.Load(c.SigningKeysDir, c.SigningAlg); err != nil {
		return []string{"SIGNING_KEYS_DIR: " + err.Error()}
	}
	return nil
}

// DatabaseURLFrom returns DATABASE_URL for commands that need nothing else
// (migrate, tenants), checked as serve checks it.
func DatabaseURLFrom(getenv func(string) string) (string, error) {
	c, err := LoadCommand("migrate", getenv)
	return c.DatabaseURL, err
}

// String renders the configuration as NAME=value lines with secrets masked
// (-check-config); the proxy prints the same way.
func (c Config) String() string { return c.printout.String() }

// LogValue renders the same settings for the start log.
func (c Config) LogValue() slog.Value { return c.printout.LogValue() }

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

type loader struct {
	*envconfig.Reader
}

// database reads DATABASE_URL or DATABASE_URL_FILE (serve, migrate,
// tenants, mfa).
func (l loader) database() string {
	u, from := l.urlOrFile("DATABASE_URL")
	switch {
	case !from.ok:
	case u == "":
		l.Failf("DATABASE_URL", "required (or DATABASE_URL_FILE, a file holding it)")
	default:
		if _, err := pgx.ParseConfig(u); err != nil {
			l.Problem("%s: not a valid connection string", from.source)
		}
	}
	return u
}

// urlRead says where a connection URL came from: source names the
// variable, or the _FILE variable and its path, for the problems found in
// the value; ok is false when reading it was a problem already.
type urlRead struct {
	source string
	ok     bool
}

// urlOrFile reads a connection URL that may carry a password from the
// variable name or from the file name_FILE names (not both; see
// envconfig.Reader.StringOrFile).
func (l loader) urlOrFile(name string) (string, urlRead) {
	v, source, ok := l.StringOrFile(name)
	return v, urlRead{source: source, ok: ok}
}

// secretOrFile reads a secret from the variable name or from the file
// name_FILE names (not both; see envconfig.Reader.StringOrFile): "" when
// neither is set or reading it was a problem already.
func (l loader) secretOrFile(name string) string {
	v, _, _ := l.StringOrFile(name)
	return v
}

// signingKeysDir reads SIGNING_KEYS_DIR (serve, keys).
func (l loader) signingKeysDir() string {
	d := l.String("SIGNING_KEYS_DIR")
	if d == "" {
		l.Failf("SIGNING_KEYS_DIR", "required (create keys with `coreapi keys generate -dir DIR`)")
	}
	return d
}

// identityKeys reads the core key list: IDENTITY_KEYS or IDENTITY_KEYS_FILE,
// or the legacy IDENTITY_HMAC_KEY or IDENTITY_HMAC_KEY_FILE as one key with
// id "core". Setting a new and a legacy variable together is an error:
// which one wins would be a guess.
func (l loader) identityKeys() ([]identity.Key, string) {
	keys, keysFile := l.String("IDENTITY_KEYS"), l.String("IDENTITY_KEYS_FILE")
	legacy, legacyFile := l.String("IDENTITY_HMAC_KEY"), l.String("IDENTITY_HMAC_KEY_FILE")
	switch {
	case (keys != "" || keysFile != "") && (legacy != "" || legacyFile != ""):
		l.Problem("IDENTITY_KEYS / IDENTITY_HMAC_KEY: set the key list (IDENTITY_KEYS or IDENTITY_KEYS_FILE) or the legacy key (IDENTITY_HMAC_KEY or IDENTITY_HMAC_KEY_FILE), not both")
	case keys != "" || keysFile != "":
		list, err := identity.LoadKeys(keys, keysFile)
		if err != nil {
			l.Problem("IDENTITY_KEYS / IDENTITY_KEYS_FILE: %v", err)
			return nil, keysFile
		}
		return list, keysFile
	default:
		key, err := identity.LoadKey(legacy, legacyFile)
		if err != nil {
			l.Problem("IDENTITY_KEYS / IDENTITY_HMAC_KEY: %v (set IDENTITY_KEYS=core:BASE64 or IDENTITY_KEYS_FILE)", err)
			return nil, legacyFile
		}
		return []identity.Key{{ID: LegacyIdentityKeyID, Secret: key}}, legacyFile
	}
	return nil, ""
}

// pepper reads API_KEY_PEPPER or API_KEY_PEPPER_FILE (not both): base64
// of at least 32 bytes. Neither: nil (API keys unavailable).
func (l loader) pepper() ([]byte, string) {
	v, path := l.String("API_KEY_PEPPER"), l.String("API_KEY_PEPPER_FILE")
	switch {
	case v != "" && path != "":
		l.Problem("API_KEY_PEPPER / API_KEY_PEPPER_FILE: set one, not both")
		return nil, path
	case path != "":
		b, err := secretfile.Read(path)
		if err != nil {
			l.Failf("API_KEY_PEPPER_FILE", "%v", err)
			return nil, path
		}
		v = strings.TrimSpace(string(b))
	case v == "":
		return nil, ""
	}
	p, err := identity.ParseKey(v)
	if err != nil {
		l.Problem("API_KEY_PEPPER / API_KEY_PEPPER_FILE: %s (want base64 of at least 32 random bytes)",
			strings.TrimPrefix(err.Error(), "identity key: "))
		return nil, path
	}
	return p, path
}

// tlsFiles reads COREAPI_TLS_CERT_FILE and COREAPI_TLS_KEY_FILE: both or
// neither, and a pair that loads (the certificate matches the key).
func (l loader) tlsFiles() (certFile, keyFile string) {
	certFile, keyFile = l.String("COREAPI_TLS_CERT_FILE"), l.String("COREAPI_TLS_KEY_FILE")
	switch {
	case certFile == "" && keyFile == "":
	case keyFile == "":
		l.Failf("COREAPI_TLS_CERT_FILE", "set without COREAPI_TLS_KEY_FILE: set both (TLS on the API listener) or neither")
	case certFile == "":
		l.Failf("COREAPI_TLS_KEY_FILE", "set without COREAPI_TLS_CERT_FILE: set both (TLS on the API listener) or neither")
	default:
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			l.Failf("COREAPI_TLS_CERT_FILE", "with COREAPI_TLS_KEY_FILE: %v", err)
		}
	}
	return certFile, keyFile
}

func (l loader) url(name, v string, schemes ...string) {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		l.Problem("%s: want an absolute URL, got %q", name, envconfig.ProblemURL(v))
		return
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return
		}
	}
	l.Problem("%s: scheme %q not one of %s", name, u.Scheme, strings.Join(schemes, ", "))
}

// tokenIssuer checks TOKEN_ISSUER, the iss of every access token and the
// issuer of the discovery documents: an issuer identifier (RFC 8414
// section 2), so an absolute https URL (http only on a loopback host, for
// development, as PUBLIC_BASE_URL) without a query or a fragment, which
// clients would carry into the discovery URL they build from it, and
// without user information, which every token would carry. A path is
// taken: a deployment served under one (an ingress's prefix) has one in
// its public URL. Unset while PUBLIC_BASE_URL names a public host, the
// default http://localhost:8080 is refused: every token would name it,
// and the discovery documents served at that host would name an issuer
// other than the one they are fetched from (RFC 8414 section 3.3), which
// clients refuse.
func (l loader) tokenIssuer(v, publicBase string) {
	const name = "TOKEN_ISSUER"
	if !l.publicURL(name, v, v, urlReasons{user: ": every token would carry it",
		query: " (RFC 8414): the discovery documents' URL is built from it"}) || l.Raw(name) != "" {
		return
	}
	if b, err := url.Parse(publicBase); err == nil && b.Host != "" && !isLoopback(b.Hostname()) {
		l.Failf(name, "unset while PUBLIC_BASE_URL is %s: every token and the discovery documents would name %s as the issuer; "+
			"set it to the public URL (usually PUBLIC_BASE_URL's value), on coreapi and every proxy", envconfig.ProblemURL(publicBase), DefaultTokenIssuer)
	}
}

// returnURLs reads OAUTH_ALLOWED_RETURN_URLS (see codeURL).
func (l loader) returnURLs() []string {
	var out []string
	for _, raw := range strings.Split(l.String("OAUTH_ALLOWED_RETURN_URLS"), ",") {
		v := strings.TrimSpace(raw)
		if v != "" && l.codeURL("OAUTH_ALLOWED_RETURN_URLS", v) {
			out = append(out, v)
		}
	}
	return out
}

// codeURL checks a URL that a browser is sent to with a code in its
// query (a provider's callback, an app's return URL): absolute, without
// user information (a credential in a URL ends up in logs and history)
// or a fragment (RFC 6749 section 3.1.2: a redirection endpoint has
// none), and https unless its host is a loopback name (development):
// over plain http the code would cross the network in clear.
func (l loader) codeURL(name, v string) bool {
	u, err := url.Parse(v)
	switch {
	case err != nil || u.Host == "" || u.User != nil || u.Fragment != "" || strings.Contains(v, "#"):
		l.Problem("%s: %q: want an absolute URL without credentials or fragment", name, envconfig.ProblemURL(v))
	case !HTTPSOrLoopback(u):
		l.Problem("%s: %q: want https (http only for localhost)", name, envconfig.ProblemURL(v))
	default:
		return true
	}
	return false
}

// issuerURL checks a provider's issuer: coreapi fetches its discovery
// document and signing keys from it, so it is https unless its host is a
// loopback name (development). Over plain http anyone on the path could
// serve keys of their own and sign ID tokens for any account.
func (l loader) issuerURL(name, v string) {
	u, err := url.Parse(v)
	switch {
	case err != nil || u.Host == "":
		l.Problem("%s: want an absolute URL, got %q", name, envconfig.ProblemURL(v))
	case !HTTPSOrLoopback(u):
		l.Problem("%s: %q: want https (http only for localhost): the provider's signing keys are fetched from it", name, envconfig.ProblemURL(v))
	}
}

// HTTPSOrLoopback reports whether u is https, or http to a loopback host
// (development): the URLs an issuer's, a code's, a mailed link's or a key
// set's may be.
func HTTPSOrLoopback(u *url.URL) bool {
	return u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname())
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (l loader) oidc() []OIDCProvider {
	list := l.String("OIDC_PROVIDERS")
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
			l.Problem("OIDC_PROVIDERS: provider name %q: want [a-z0-9_], starting with a letter", name)
			continue
		}
		if seen[name] {
			l.Problem("OIDC_PROVIDERS: %q listed twice", name)
			continue
		}
		seen[name] = true
		pre := "OIDC_" + strings.ToUpper(name) + "_"
		p := OIDCProvider{
			Name:         name,
			Issuer:       l.String(pre + "ISSUER"),
			ClientID:     l.String(pre + "CLIENT_ID"),
			ClientSecret: l.secretOrFile(pre + "CLIENT_SECRET"),
			RedirectURL:  l.String(pre + "REDIRECT_URL"),
			Scopes:       strings.Fields(strings.ReplaceAll(l.String(pre+"SCOPES"), ",", " ")),
			EmailDomains: l.emailDomains(pre + "EMAIL_DOMAINS"),
		}
		if p.Issuer == "" {
			l.Problem("%sISSUER: required for provider %q", pre, name)
		} else {
			l.issuerURL(pre+"ISSUER", p.Issuer)
		}
		if p.ClientID == "" {
			l.Problem("%sCLIENT_ID: required for provider %q", pre, name)
		}
		if p.ClientSecret == "" && l.Raw(pre+"CLIENT_SECRET_FILE") == "" {
			l.Problem("%sCLIENT_SECRET: required for provider %q (or %sCLIENT_SECRET_FILE, a file holding it)", pre, name, pre)
		}
		if p.RedirectURL == "" {
			l.Problem("%sREDIRECT_URL: required for provider %q", pre, name)
		} else {
			l.codeURL(pre+"REDIRECT_URL", p.RedirectURL)
		}
		hasOpenID := false
		for _, s := range p.Scopes {
			hasOpenID = hasOpenID || s == "openid"
		}
		if !hasOpenID {
			l.Problem("%sSCOPES: must include openid", pre)
		}
		out = append(out, p)
	}
	return out
}

// emailDomains reads a provider's OIDC_<NAME>_EMAIL_DOMAINS: a comma list
// of mail domains, each put in the one spelling addresses are stored and
// compared in (mail.Canonical's domain, lower-cased as lower() compares
// addresses), or AnyEmailDomain alone. Unset is nil: the provider vouches
// for no address.
func (l loader) emailDomains(name string) []string {
	raw := l.String(name)
	if raw == "" {
		return nil
	}
	var out []string
	for _, d := range strings.Split(raw, ",") {
		d = strings.TrimSpace(d)
		switch {
		case d == "":
			continue
		case d == AnyEmailDomain:
		case !mail.ValidAddress("postmaster@" + mail.DomainKey(d)):
			l.Problem("%s: %q: want a mail domain (example.com), or %q alone for every domain", name, d, AnyEmailDomain)
			continue
		default:
			d = mail.DomainKey(d)
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	switch {
	case len(out) == 0:
		l.Problem("%s: no domain listed: leave it unset for none, or list the domains the provider is authoritative for", name)
	case len(out) > 1 && slices.Contains(out, AnyEmailDomain):
		l.Problem("%s: %q stands alone: it is every domain", name, AnyEmailDomain)
	}
	return out
}

// mail checks the mail settings (the SMTP URL and link templates are
// parsed where they are used; the same checks run here so that every
// problem is reported at start).
func (l loader) mail(c Config, smtp urlRead) {
	switch {
	case !smtp.ok: // reported
	case c.SMTPURL != "" && c.MailToLog:
		l.Problem("SMTP_URL / MAIL_TO_LOG: set one, not both: MAIL_TO_LOG=true writes the mails to the log instead of sending them")
	case c.SMTPURL == "" && !c.MailToLog:
		l.Problem("SMTP_URL / MAIL_TO_LOG: set SMTP_URL to send the mails (smtp://[user:pass@]host[:port]; or SMTP_URL_FILE, a file holding it), or MAIL_TO_LOG=true to write them to the log instead " +
			"(development only: the log then holds every password-reset, verification and invitation link with its one-time token)")
	}
	if c.SMTPURL != "" {
		if _, err := mail.ParseSMTPURL(c.SMTPURL); err != nil {
			l.Problem("%s: %v", smtp.source, err)
		}
		l.mailedBase(c)
	}
	if a, err := netmail.ParseAddress(c.MailFrom); err != nil || strings.ContainsAny(c.MailFrom, "\r\n") || !mail.ValidSender(a.Address) {
		l.Problem("MAIL_FROM: want an address like \"Tollgate <no-reply@example.com>\", got %q", c.MailFrom)
	}
	l.linkURL("PUBLIC_BASE_URL", c.PublicBaseURL, false)
	for name, v := range map[string]string{"VERIFY_EMAIL_URL": c.VerifyEmailURL,
		"RESET_PASSWORD_URL": c.ResetPasswordURL, "ACCEPT_INVITATION_URL": c.AcceptInvitationURL} {
		if v != "" {
			l.linkURL(name, v, true)
		}
	}
}

// mailedBase refuses PUBLIC_BASE_URL left at its default when mails are
// sent (SMTP_URL): the links would point at the development host. Link
// templates for all three mails do not make it optional: the discovery
// documents name the token, introspection, revocation and key-set
// endpoints under it. Set to the default on purpose, it is taken.
func (l loader) mailedBase(c Config) {
	if l.Raw("PUBLIC_BASE_URL") != "" {
		return
	}
	if c.VerifyEmailURL != "" && c.ResetPasswordURL != "" && c.AcceptInvitationURL != "" {
		l.Failf("PUBLIC_BASE_URL", "unset while SMTP_URL is set: the discovery documents (/.well-known/oauth-authorization-server, "+
			"/.well-known/openid-configuration) would name their endpoints under %s; set it to the proxy's public URL", DefaultPublicBaseURL)
		return
	}
	l.Failf("PUBLIC_BASE_URL", "unset while SMTP_URL is set: mailed links would point at %s, and so would the discovery documents' endpoints; "+
		"set it to the proxy's public URL", DefaultPublicBaseURL)
}

// linkURL checks PUBLIC_BASE_URL (template false) or a link template: the
// links built from them are mailed to every user with a one-time token in
// them (a password reset's, an invitation's), and PUBLIC_BASE_URL is also
// shown in the discovery documents. So, as a URL a code is sent to (see
// codeURL): no user information (a credential there would be mailed to
// everyone), and https unless its host is a loopback name (development):
// over plain http the token would cross the network in clear. The base
// has no query or fragment either: the links' paths and "?token=" are
// appended to it, and either would break every link. A template may carry
// both, as it places {token} itself.
func (l loader) linkURL(name, v string, template bool) {
	parsed := v
	if template {
		if err := mail.CheckLinkTemplate(v); err != nil {
			l.Problem("%s: %v", name, err)
			return
		}
		parsed = strings.ReplaceAll(v, "{token}", "t")
	}
	why := urlReasons{user: ": it would be in every mailed link", http: ": the mailed links carry one-time tokens"}
	if !template {
		why.query = ": the mailed links' paths and token are appended to it"
	}
	l.publicURL(name, v, parsed, why)
}

// urlReasons are what publicURL adds to the problem it reports, saying
// why the URL may not be so.
type urlReasons struct {
	user  string // with user information
	query string // with a query or fragment; "" when it may have them
	http  string // plain http to a host that is not a loopback name
}

// publicURL checks the URL v of the variable name, parsed as parsed (v
// with a template's placeholder filled in), as one shown to clients or
// mailed to users: absolute http or https, without user information,
// without a query or a fragment unless why allows them, and https unless
// its host is a loopback name (development). It reports the first problem
// with the reason why gives, and returns false when v is not an absolute
// http or https URL at all.
func (l loader) publicURL(name, v, parsed string, why urlReasons) bool {
	u, err := url.Parse(parsed)
	switch {
	case err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https":
		l.Problem("%s: want an absolute http or https URL, got %q", name, envconfig.ProblemURL(v))
		return false
	case u.User != nil:
		l.Problem("%s: %q: want a URL without user information%s", name, envconfig.ProblemURL(v), why.user)
	case why.query != "" && strings.ContainsAny(v, "?#"):
		l.Problem("%s: %q: want a URL without query or fragment%s", name, envconfig.ProblemURL(v), why.query)
	case !HTTPSOrLoopback(u):
		l.Problem("%s: %q: want https (http only for localhost)%s", name, envconfig.ProblemURL(v), why.http)
	}
	return true
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

// defaultRelayID is the host name (in Kubernetes the pod's name, which a
// restarted container keeps) and the port coreapi listens on (two
// processes on one host cannot share it). A port chosen by the system
// (0) names no process: "", the relay's own default, unique to the
// process.
func defaultRelayID(hostname func() (string, error), listen string) string {
	host, err := hostname()
	if err != nil || host == "" {
		host = "coreapi"
	}
	if _, port, err := net.SplitHostPort(listen); err == nil && port != "0" && port != "" {
		return host + ":" + port
	}
	return ""
}
