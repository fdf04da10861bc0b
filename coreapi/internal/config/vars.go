package config

import (
	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// Vars lists every variable coreapi reads, in the order of the table in
// docs/operations.md (a test compares the two; another checks the
// Kubernetes manifests against it). Load and LoadCommand can read nothing
// that is not listed; -check-config and the start log print from it.
//
// A new variable is one entry here plus the line in Load that reads it.
var Vars = append(envconfig.Table{
	{Name: "COREAPI_LISTEN_ADDR", Default: DefaultListenAddr, Help: "API listener"},
	{Name: "COREAPI_ADMIN_ADDR", Default: DefaultAdminAddr, Help: "/healthz, /readyz, /metrics"},
	{Name: "COREAPI_TLS_CERT_FILE", Help: "PEM certificate (chain) the API listener serves TLS with; with COREAPI_TLS_KEY_FILE; re-read when it changes"},
	{Name: "COREAPI_TLS_KEY_FILE", Help: "PEM private key of that certificate"},
	{Name: "DATABASE_URL", OneOf: "database URLs", Commands: []string{"migrate", "tenants", "mfa"}, Mask: envconfig.URL, Help: "PostgreSQL connection string"},
	{Name: "DATABASE_URL_FILE", OneOf: "database URLs", Commands: []string{"migrate", "tenants", "mfa"}, Help: "file holding that string (a mounted Secret)"},
	{Name: "DB_MAX_CONNS", DefaultDoc: "4 × GOMAXPROCS, min 8", Help: "pool size per replica"},
	{Name: "DB_EXEC_MODE", Default: "cache_statement", Help: "pgx exec mode"},
	{Name: "PROJECTION_MAX_INFLIGHT", DefaultDoc: "DB_MAX_CONNS", Help: "projection fetches served at once per replica"},
	{Name: "PROJECTION_MAX_WAIT", Default: "100ms", Help: "how long one more projection fetch waits for a slot before 503"},
	{Name: "IDENTITY_KEYS", OneOf: "core keys", Mask: envconfig.KeyList, Help: "core identity keys id:base64[,...]"},
	{Name: "IDENTITY_KEYS_FILE", OneOf: "core keys", Help: "file holding that list"},
	{Name: "IDENTITY_HMAC_KEY", OneOf: "core keys", Mask: envconfig.Secret, Help: "legacy: one key with id core"},
	{Name: "IDENTITY_HMAC_KEY_FILE", OneOf: "core keys", Help: "legacy: file holding that key"},
	{Name: "IDENTITY_ACCEPT_V1", Default: "true", Help: "also accept v1 identity signatures, and unsigned requests to public and optional routes (this release only)"},
	{Name: "IDENTITY_REPLAY_CACHE_SIZE", Default: "1048576", Help: "accepted v2 signatures remembered to refuse replays"},
	{Name: "NATS_URL", Default: DefaultNATSURL, Mask: envconfig.URL, Help: "where the outbox relay publishes (nats:// or tls://)"},
	{Name: "NATS_URL_FILE", Help: "file holding that URL (with its credentials)"},
	{Name: "OUTBOX_HEARTBEAT_INTERVAL", Default: "2s", Help: "how often an outbox heartbeat row is due (0: none; proxies then need NATS_HEARTBEAT_TIMEOUT=0)"},
	{Name: "OUTBOX_RELAY_ID", Help: "this replica's relay name in its beats (default: host name:port of COREAPI_LISTEN_ADDR; unique per replica, stable across restarts; at most 1015 bytes)"},
	{Name: "MFA_ENCRYPTION_KEYS", Commands: []string{"mfa"}, Mask: envconfig.KeyList, Help: "AES-256 keys id:base64 encrypting TOTP secrets"},
	{Name: "MFA_ENCRYPTION_KEYS_FILE", Commands: []string{"mfa"}, Help: "file holding that list"},
	{Name: "API_KEY_PEPPER", Mask: envconfig.Secret, Help: "base64 HMAC key under which API-key secrets are stored"},
	{Name: "API_KEY_PEPPER_FILE", Help: "file holding that key"},
	{Name: "TOKEN_ISSUER", Default: DefaultTokenIssuer, Help: "iss of issued tokens"},
	{Name: "TOKEN_AUDIENCE", Default: DefaultTokenAudience, Help: "aud of issued tokens"},
	{Name: "ACCESS_TOKEN_TTL", Default: "15m", Help: "access-token lifetime"},
	{Name: "REFRESH_TOKEN_TTL", Default: "720h", Help: "refresh-token (session) lifetime"},
	{Name: "REFRESH_REUSE_GRACE", Default: "10s", Help: "window for presenting a rotated refresh token again (at most 1m)"},
	{Name: "SESSION_MAX_AGE", Default: "2160h", Help: "a session's lifetime from its sign-in, however often refreshed (0: no bound)"},
	{Name: "TOKEN_MAX_LEEWAY", Default: "60s", Help: "largest TOKEN_LEEWAY of any proxy (at most 1m)"},
	{Name: "SIGNING_KEYS_DIR", Required: true, Commands: []string{"keys"}, Help: "directory of *.pem signing keys"},
	{Name: "SIGNING_ALG", Default: "EdDSA", Commands: []string{"keys"}, Help: "signing algorithm (EdDSA, ES256, RS256); also what `keys generate` makes by default"},
	{Name: "SIGNING_KEY_ACTIVATION_DELAY", Default: "5m", Help: "age at which a generated key starts signing"},
	{Name: "OIDC_PROVIDERS", Help: "comma list of provider names"},
	{Name: "OIDC_<NAME>_ISSUER", Help: "provider issuer URL"},
	{Name: "OIDC_<NAME>_CLIENT_ID", Help: "OAuth client id"},
	{Name: "OIDC_<NAME>_CLIENT_SECRET", Mask: envconfig.Secret, Help: "OAuth client secret"},
	{Name: "OIDC_<NAME>_CLIENT_SECRET_FILE", Help: "file holding that secret (a mounted Secret)"},
	{Name: "OIDC_<NAME>_REDIRECT_URL", Help: "the provider's callback URL"},
	{Name: "OIDC_<NAME>_SCOPES", Default: "openid email profile", Help: "scopes, including openid"},
	{Name: "OIDC_<NAME>_EMAIL_DOMAINS", Help: "domains whose addresses the provider may vouch for (comma list; * every domain; unset none)"},
	{Name: "PERMISSIONS_FILE", Help: "the apps' permission catalog, YAML or JSON"},
	{Name: "PERMISSIONS", Help: "the same catalog inline"},
	{Name: "OAUTH_ALLOWED_RETURN_URLS", Help: "web-app URLs an OAuth sign-in may end at"},
	{Name: "OAUTH_AUTHORIZE_PER_MINUTE", Default: "20", Help: "OAuth sign-ins one client IP may start per minute, over every replica"},
	{Name: "SIGNUP_PER_HOUR", Default: "20", Help: "sign-ups one client IP may make per hour"},
	{Name: "SIGNIN_FAILURES_PER_HOUR", Default: "100", Help: "wrong passwords one client IP may send per hour, over every address"},
	{Name: "PASSWORD_CHECKS_PER_HOUR", Default: "1000", Help: "passwords, right or wrong, one client IP may have checked, or hashed for a member it makes, a reset or an account an invitation creates, per hour"},
	{Name: "AUDIT_RETENTION", Default: "0", Help: "how long audit events are kept (0: for ever; otherwise at least 24h)"},
	{Name: "TENANT_MAILS_PER_HOUR", Default: "200", Help: "invitation and account mails one tenant may cause per hour"},
	{Name: "API_KEY_CREATIONS_PER_HOUR", Default: "1000", Help: "tenant API keys one tenant may create per hour, revoked and expired ones included"},
	{Name: "SMTP_URL", OneOf: "mail transports", Mask: envconfig.URL, Help: "mail server; set it or MAIL_TO_LOG=true"},
	{Name: "SMTP_URL_FILE", OneOf: "mail transports", Help: "file holding that URL (with its password)"},
	{Name: "MAIL_TO_LOG", Default: "false", OneOf: "mail transports", Help: "true: without SMTP_URL, mails (their one-time links included) are written to the log, not sent (development only)"},
	{Name: "MAIL_FROM", Default: DefaultMailFrom, Help: "sender address"},
	{Name: "PUBLIC_BASE_URL", Default: DefaultPublicBaseURL, Help: "public URL of the proxy, base of mailed links and of the discovery documents' endpoints; required with SMTP_URL"},
	{Name: "VERIFY_EMAIL_URL", Help: "link template for verification mails"},
	{Name: "RESET_PASSWORD_URL", Help: "link template for reset mails"},
	{Name: "ACCEPT_INVITATION_URL", Help: "link template for invitation mails"},
	{Name: "MAX_BODY_BYTES", Default: "1048576", Help: "request body limit"},
	{Name: "SHUTDOWN_TIMEOUT", Default: "15s", Help: "drain deadline on SIGTERM"},
	{Name: "LOG_LEVEL", Default: "info", Help: "debug, info, warn, error"},
}, tracing.Vars("coreapi")...)
