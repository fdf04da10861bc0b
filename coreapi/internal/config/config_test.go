package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/identity/replay"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/secretfile"
)

var key = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// minimal is the least a development start needs: mails to the log.
func minimal() map[string]string {
	return map[string]string{
		"DATABASE_URL":      "postgres://app:s3cret@db:5432/tollgate?sslmode=disable",
		"IDENTITY_HMAC_KEY": key,
		"SIGNING_KEYS_DIR":  "/keys",
		"MAIL_TO_LOG":       "true",
	}
}

// production is minimal with a mail server instead of the log.
func production() map[string]string {
	m := minimal()
	delete(m, "MAIL_TO_LOG")
	m["SMTP_URL"] = "smtp://mail.example.com:587"
	m["PUBLIC_BASE_URL"] = "https://auth.example.com"
	m["TOKEN_ISSUER"] = "https://auth.example.com"
	return m
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.ListenAddr, DefaultListenAddr},
		{"admin", c.AdminAddr, DefaultAdminAddr},
		{"nats", c.NATSURL, DefaultNATSURL},
		{"issuer", c.TokenIssuer, DefaultTokenIssuer},
		{"audience", c.TokenAudience, DefaultTokenAudience},
		{"access ttl", c.AccessTokenTTL, 15 * time.Minute},
		{"refresh ttl", c.RefreshTokenTTL, 720 * time.Hour},
		{"grace", c.RefreshReuseGrace, 10 * time.Second},
		{"session max age", c.SessionMaxAge, 2160 * time.Hour},
		{"alg", c.SigningAlg, "EdDSA"},
		{"key activation", c.SigningKeyActivation, 5 * time.Minute},
		{"max leeway", c.TokenMaxLeeway, time.Minute},
		{"body", c.MaxBodyBytes, 1 << 20},
		{"shutdown", c.ShutdownTimeout, 15 * time.Second},
		{"exec mode", c.ExecMode(), pgx.QueryExecModeCacheStatement},
		{"keys", len(c.IdentityKeys), 1},
		{"legacy key id", c.IdentityKeys[0].ID, "core"},
		{"key len", len(c.IdentityKeys[0].Secret), 32},
		{"accept v1", c.IdentityAcceptV1, true},
		{"replay cache", c.IdentityReplayCacheSize, replay.DefaultSize},
		{"projection in flight", c.ProjectionMaxInFlight, int(c.DBMaxConns)},
		{"projection wait", c.ProjectionMaxWait, 100 * time.Millisecond},
		{"signups per hour", c.SignupPerHour, 20},
		{"tenant mails per hour", c.TenantMailsPerHour, 200},
		{"API key creations per hour", c.APIKeyCreationsPerHour, 1000},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.DBMaxConns < MinDBMaxConns {
		t.Errorf("DBMaxConns = %d, want >= %d", c.DBMaxConns, MinDBMaxConns)
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	m := map[string]string{
		"DB_MAX_CONNS":                 "3",
		"DB_EXEC_MODE":                 "turbo",
		"ACCESS_TOKEN_TTL":             "soon",
		"REFRESH_TOKEN_TTL":            "-1h",
		"SIGNING_ALG":                  "HS256",
		"SIGNING_KEY_ACTIVATION_DELAY": "-1m",
		"TOKEN_MAX_LEEWAY":             "-5s",
		"MAX_BODY_BYTES":               "ten",
		"LOG_LEVEL":                    "chatty",
		"COREAPI_LISTEN_ADDR":          "8081",
		"NATS_URL":                     "http://x:4222",
		"IDENTITY_ACCEPT_V1":           "maybe",
		"IDENTITY_REPLAY_CACHE_SIZE":   "10",
		"OIDC_PROVIDERS":               "google,Bad-Name",
		"PROJECTION_MAX_INFLIGHT":      "0",
		"PROJECTION_MAX_WAIT":          "-1s",
		"OUTBOX_HEARTBEAT_INTERVAL":    "10ms",
		"AUDIT_RETENTION":              "1h",
		"MAIL_TO_LOG":                  "false",
	}
	_, err := Load(env(m))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load() = %v, want *Error", err)
	}
	want := []string{
		"DATABASE_URL", "IDENTITY_HMAC_KEY", "SIGNING_KEYS_DIR", "DB_MAX_CONNS", "DB_EXEC_MODE",
		"ACCESS_TOKEN_TTL", "REFRESH_TOKEN_TTL", "SIGNING_ALG", "SIGNING_KEY_ACTIVATION_DELAY", "TOKEN_MAX_LEEWAY", "MAX_BODY_BYTES", "LOG_LEVEL",
		"COREAPI_LISTEN_ADDR", "NATS_URL", "IDENTITY_ACCEPT_V1", "IDENTITY_REPLAY_CACHE_SIZE", "OIDC_GOOGLE_ISSUER", "OIDC_GOOGLE_CLIENT_ID",
		"OIDC_GOOGLE_CLIENT_SECRET", "OIDC_GOOGLE_REDIRECT_URL", "bad-name",
		"PROJECTION_MAX_INFLIGHT", "PROJECTION_MAX_WAIT", "OUTBOX_HEARTBEAT_INTERVAL", "AUDIT_RETENTION",
		"SMTP_URL / MAIL_TO_LOG",
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not mention %s:\n%s", w, msg)
		}
	}
}

func TestOIDCProviders(t *testing.T) {
	m := minimal()
	m["OIDC_PROVIDERS"] = "Google, corp"
	for _, n := range []string{"GOOGLE", "CORP"} {
		m["OIDC_"+n+"_ISSUER"] = "https://" + strings.ToLower(n) + ".example"
		m["OIDC_"+n+"_CLIENT_ID"] = "id-" + n
		m["OIDC_"+n+"_CLIENT_SECRET"] = "secret-" + n
		m["OIDC_"+n+"_REDIRECT_URL"] = "http://localhost:8080/api/v1/auth/oauth/" + strings.ToLower(n) + "/callback"
	}
	m["OIDC_CORP_SCOPES"] = "openid,email groups"
	c, err := Load(env(m))
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if len(c.OIDCProviders) != 2 {
		t.Fatalf("providers = %d, want 2", len(c.OIDCProviders))
	}
	g, corp := c.OIDCProviders[0], c.OIDCProviders[1]
	if g.Name != "google" || g.ClientSecret != "secret-GOOGLE" || strings.Join(g.Scopes, " ") != "openid email profile" {
		t.Errorf("google = %+v", g)
	}
	if corp.Name != "corp" || strings.Join(corp.Scopes, " ") != "openid email groups" {
		t.Errorf("corp = %+v", corp)
	}
	s := c.String()
	for _, secret := range []string{"secret-GOOGLE", "secret-CORP", "s3cret", "0123456789abcdef"} {
		if strings.Contains(s, secret) {
			t.Errorf("String() leaks %q:\n%s", secret, s)
		}
	}
	var b strings.Builder
	logTo(&b, c)
	for _, secret := range []string{"secret-GOOGLE", "s3cret", "0123456789abcdef"} {
		if strings.Contains(b.String(), secret) {
			t.Errorf("LogValue leaks %q:\n%s", secret, b.String())
		}
	}
	if !strings.Contains(b.String(), "id-CORP") {
		t.Errorf("LogValue lacks the client id:\n%s", b.String())
	}
}

func TestIdentityKeyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(p, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := minimal()
	delete(m, "IDENTITY_HMAC_KEY")
	m["IDENTITY_HMAC_KEY_FILE"] = p
	if _, err := Load(env(m)); err != nil {
		t.Fatalf("Load() with key file = %v", err)
	}
	m["IDENTITY_HMAC_KEY"] = key
	if _, err := Load(env(m)); err == nil {
		t.Fatal("both key and key file accepted")
	}
}

// TestOIDCRedirectURL: a provider's callback URL carries the
// authorization code in its query, so it is checked as a return URL is:
// absolute, https (http only on a loopback host), without a fragment or
// credentials; a bad one is refused at load, naming its variable.
func TestOIDCRedirectURL(t *testing.T) {
	for _, tt := range []struct{ value, bad string }{
		{"https://auth.example.com/api/v1/auth/oauth/corp/callback", ""},
		{"http://localhost:8080/api/v1/auth/oauth/corp/callback", ""},
		{"http://127.0.0.1:8080/api/v1/auth/oauth/corp/callback", ""},
		{"http://[::1]:8080/api/v1/auth/oauth/corp/callback", ""},
		{"http://auth.example.com/api/v1/auth/oauth/corp/callback", "want https"},
		{"http://localhost.example.com/callback", "want https"},
		{"ftp://auth.example.com/callback", "want https"},
		{"/api/v1/auth/oauth/corp/callback", "absolute URL"},
		{"https://auth.example.com/callback#frag", "fragment"},
		{"https://auth.example.com/callback#", "fragment"},
		{"https://user:secretpw@auth.example.com/callback", "credentials"},
	} {
		t.Run(tt.value, func(t *testing.T) {
			m := minimal()
			m["OIDC_PROVIDERS"] = "corp"
			m["OIDC_CORP_ISSUER"] = "https://corp.example"
			m["OIDC_CORP_CLIENT_ID"] = "id"
			m["OIDC_CORP_CLIENT_SECRET"] = "secret"
			m["OIDC_CORP_REDIRECT_URL"] = tt.value
			_, err := Load(env(m))
			if tt.bad == "" {
				if err != nil {
					t.Fatalf("Load() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "OIDC_CORP_REDIRECT_URL") || !strings.Contains(err.Error(), tt.bad) {
				t.Fatalf("Load() = %v, want an error about OIDC_CORP_REDIRECT_URL: %q", err, tt.bad)
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Errorf("the problem shows the credential: %v", err)
			}
		})
	}
}

// TestOIDCIssuerURL: the issuer is where the provider's discovery document
// and signing keys come from, so it is https (http only on a loopback host):
// over plain http to any host, anyone on the path could serve keys of their
// own and sign ID tokens for any account.
func TestOIDCIssuerURL(t *testing.T) {
	for _, tt := range []struct{ value, bad string }{
		{"https://accounts.example.com", ""},
		{"https://login.example.com/tenant-1/v2.0", ""},
		{"http://127.0.0.1:9000", ""},
		{"http://localhost:9000/realms/dev", ""},
		{"http://accounts.example.com", "want https"},
		{"http://localhost.example.com", "want https"},
		{"ftp://accounts.example.com", "want https"},
		{"accounts.example.com", "absolute URL"},
		// A refused issuer is quoted without its user information and
		// query, whatever their names (envconfig.ProblemURL).
		{"http://accounts.example.com/?team=k1secret", "want https"},
		{"http://u:k2secret@accounts.example.com", "want https"},
	} {
		t.Run(tt.value, func(t *testing.T) {
			m := minimal()
			m["OIDC_PROVIDERS"] = "corp"
			m["OIDC_CORP_ISSUER"] = tt.value
			m["OIDC_CORP_CLIENT_ID"] = "id"
			m["OIDC_CORP_CLIENT_SECRET"] = "secret"
			m["OIDC_CORP_REDIRECT_URL"] = "https://auth.example.com/api/v1/auth/oauth/corp/callback"
			_, err := Load(env(m))
			if tt.bad == "" {
				if err != nil {
					t.Fatalf("Load() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "OIDC_CORP_ISSUER") || !strings.Contains(err.Error(), tt.bad) {
				t.Fatalf("Load() = %v, want an error about OIDC_CORP_ISSUER: %q", err, tt.bad)
			}
			if strings.Contains(err.Error(), "k1secret") || strings.Contains(err.Error(), "k2secret") {
				t.Fatalf("Load() = %v: the refused URL's credential is quoted", err)
			}
		})
	}
}

func TestOAuthReturnURLs(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  []string
		bad   string
	}{
		{"unset", "", nil, ""},
		{"https and loopback http", " https://app.example.com/signed-in , http://localhost:3000/cb,http://127.0.0.1:5173/x", []string{"https://app.example.com/signed-in", "http://localhost:3000/cb", "http://127.0.0.1:5173/x"}, ""},
		{"plain http elsewhere", "http://app.example.com/cb", nil, "want https"},
		{"relative", "/signed-in", nil, "absolute URL"},
		{"fragment", "https://app.example.com/cb#x", nil, "fragment"},
		{"credentials", "https://u:p@app.example.com/cb", nil, "credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := minimal()
			m["OAUTH_ALLOWED_RETURN_URLS"] = tt.value
			c, err := Load(env(m))
			if tt.bad != "" {
				if err == nil || !strings.Contains(err.Error(), "OAUTH_ALLOWED_RETURN_URLS") || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("Load() = %v, want an error about %q", err, tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(c.OAuthReturnURLs, " ") != strings.Join(tt.want, " ") {
				t.Errorf("OAuthReturnURLs = %q, want %q", c.OAuthReturnURLs, tt.want)
			}
			if c.OAuthPerMinute != 20 {
				t.Errorf("OAuthPerMinute = %d, want the default 20", c.OAuthPerMinute)
			}
		})
	}
	m := minimal()
	m["OAUTH_AUTHORIZE_PER_MINUTE"] = "0"
	if _, err := Load(env(m)); err == nil || !strings.Contains(err.Error(), "OAUTH_AUTHORIZE_PER_MINUTE") {
		t.Errorf("OAUTH_AUTHORIZE_PER_MINUTE=0: %v", err)
	}
}

func TestIdentityKeys(t *testing.T) {
	key2 := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	dir := t.TempDir()
	listFile := filepath.Join(dir, "keys")
	if err := os.WriteFile(listFile, []byte("next:"+key2+"\ncore:"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	legacyFile := filepath.Join(dir, "legacy")
	if err := os.WriteFile(legacyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantIDs string // "" means a configuration error
		wantErr string
	}{
		{"list", map[string]string{"IDENTITY_KEYS": "next:" + key2 + ",core:" + key}, "next,core", ""},
		{"list file", map[string]string{"IDENTITY_KEYS_FILE": listFile}, "next,core", ""},
		{"legacy value", map[string]string{"IDENTITY_HMAC_KEY": key}, "core", ""},
		{"legacy file", map[string]string{"IDENTITY_HMAC_KEY_FILE": legacyFile}, "core", ""},
		{"list and legacy", map[string]string{"IDENTITY_KEYS": "core:" + key, "IDENTITY_HMAC_KEY": key}, "", "not both"},
		{"list file and legacy file", map[string]string{"IDENTITY_KEYS_FILE": listFile, "IDENTITY_HMAC_KEY_FILE": legacyFile}, "", "not both"},
		{"list and list file", map[string]string{"IDENTITY_KEYS": "core:" + key, "IDENTITY_KEYS_FILE": listFile}, "", "not both"},
		{"none", map[string]string{}, "", "not configured"},
		{"entry without id", map[string]string{"IDENTITY_KEYS": key}, "", "id:base64"},
		{"short secret", map[string]string{"IDENTITY_KEYS": "core:" + base64.StdEncoding.EncodeToString([]byte("short"))}, "", "at least 32"},
		{"duplicate id", map[string]string{"IDENTITY_KEYS": "core:" + key + ",core:" + key2}, "", "twice"},
		{"bad id", map[string]string{"IDENTITY_KEYS": "co/re:" + key}, "", "key id"},
		{"missing file", map[string]string{"IDENTITY_KEYS_FILE": filepath.Join(dir, "absent")}, "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := minimal()
			delete(m, "IDENTITY_HMAC_KEY")
			for k, v := range tt.env {
				m[k] = v
			}
			c, err := Load(env(m))
			if tt.wantIDs == "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load() = %v, want an error mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			ids := make([]string, len(c.IdentityKeys))
			for i, k := range c.IdentityKeys {
				ids[i] = k.ID
			}
			if got := strings.Join(ids, ","); got != tt.wantIDs {
				t.Fatalf("key ids = %s, want %s", got, tt.wantIDs)
			}
			var b strings.Builder
			logTo(&b, c)
			for _, out := range []string{c.String(), b.String()} {
				if strings.Contains(out, key) || strings.Contains(out, key2) || strings.Contains(out, "0123456789abcdef") {
					t.Errorf("a key secret is printed:\n%s", out)
				}
				if !strings.Contains(out, tt.wantIDs[:strings.IndexByte(tt.wantIDs+",", ',')]+":***") {
					t.Errorf("the key ids are not printed:\n%s", out)
				}
			}
		})
	}
}

func TestIdentityAcceptV1(t *testing.T) {
	for v, want := range map[string]bool{"": true, "true": true, "false": false, "0": false} {
		m := minimal()
		m["IDENTITY_ACCEPT_V1"] = v
		c, err := Load(env(m))
		if err != nil {
			t.Fatalf("IDENTITY_ACCEPT_V1=%q: %v", v, err)
		}
		if c.IdentityAcceptV1 != want {
			t.Errorf("IDENTITY_ACCEPT_V1=%q -> %v, want %v", v, c.IdentityAcceptV1, want)
		}
	}
}

func TestMailSettings(t *testing.T) {
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	if c.SMTPURL != "" || c.MailFrom != DefaultMailFrom || c.PublicBaseURL != DefaultPublicBaseURL {
		t.Errorf("mail defaults = %q %q %q", c.SMTPURL, c.MailFrom, c.PublicBaseURL)
	}
	if l := c.Links(); l.VerifyEmail != "http://localhost:8080/verify-email?token={token}" ||
		l.ResetPassword != "http://localhost:8080/reset-password?token={token}" ||
		l.AcceptInvitation != "http://localhost:8080/accept-invitation?token={token}" {
		t.Errorf("default links = %+v", l)
	}

	m := production()
	m["SMTP_URL"] = "smtp://mailer:hunter2@mail.example.com:587?starttls=required"
	m["MAIL_FROM"] = "Acme <no-reply@acme.example>"
	m["PUBLIC_BASE_URL"] = "https://auth.acme.example/"
	m["RESET_PASSWORD_URL"] = "https://app.acme.example/reset?t={token}"
	c, err = Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if l := c.Links(); l.ResetPassword != "https://app.acme.example/reset?t={token}" || l.VerifyEmail != "https://auth.acme.example/verify-email?token={token}" {
		t.Errorf("links = %+v", l)
	}
	// The security notices point at coreapi's own forgot page: an app's
	// reset page takes a token, and a notice has none.
	if l := c.Links(); l.ForgotPassword != "https://auth.acme.example/reset-password" {
		t.Errorf("forgot page = %q, want coreapi's under PUBLIC_BASE_URL", l.ForgotPassword)
	}
	if s := c.String(); strings.Contains(s, "hunter2") || !strings.Contains(s, "SMTP_URL=smtp://mailer:xxxxx@mail.example.com") {
		t.Errorf("SMTP password not masked in:\n%s", s)
	}

	m = minimal()
	m["TENANT_MAILS_PER_HOUR"] = "5000"
	if c, err := Load(env(m)); err != nil || c.TenantMailsPerHour != 5000 {
		t.Errorf("TENANT_MAILS_PER_HOUR=5000: %d, %v", c.TenantMailsPerHour, err)
	}
	// The mailed links' URLs: a template places {token} itself, so it
	// may carry a query or a fragment; plain http only on a loopback host.
	for name, good := range map[string]string{
		"PUBLIC_BASE_URL":       "https://acme.example/auth",
		"VERIFY_EMAIL_URL":      "https://app.acme.example/#/verify?token={token}",
		"RESET_PASSWORD_URL":    "http://localhost:3000/reset?t={token}&from=mail",
		"ACCEPT_INVITATION_URL": "http://[::1]:3000/join/{token}",
	} {
		m := minimal()
		m[name] = good
		m["TOKEN_ISSUER"] = "https://acme.example/auth"
		if _, err := Load(env(m)); err != nil {
			t.Errorf("%s=%s: Load() = %v", name, good, err)
		}
	}
	for _, good := range []string{"http://127.0.0.1:8080", "http://localhost:18080/", "http://[::1]:8080"} {
		m := minimal()
		m["PUBLIC_BASE_URL"] = good
		if _, err := Load(env(m)); err != nil {
			t.Errorf("PUBLIC_BASE_URL=%s: Load() = %v", good, err)
		}
	}

	for _, tt := range []struct{ name, value, want string }{
		{"TENANT_MAILS_PER_HOUR", "0", ""},
		{"API_KEY_CREATIONS_PER_HOUR", "0", ""},
		{"SESSION_MAX_AGE", "1m", ""},
		{"MAIL_FROM", "no-reply@acme.example\r\nBcc: evil@example.com", ""},
		{"PUBLIC_BASE_URL", "auth.acme.example", "absolute"},
		{"PUBLIC_BASE_URL", "ftp://auth.acme.example", "absolute"},
		{"PUBLIC_BASE_URL", "https://mailer:secretpw@auth.acme.example", "user information"},
		{"PUBLIC_BASE_URL", "https://secretpw@auth.acme.example/", "user information"},
		{"PUBLIC_BASE_URL", "https://auth.acme.example/?tenant=acme", "query or fragment"},
		{"PUBLIC_BASE_URL", "https://auth.acme.example/?", "query or fragment"},
		{"PUBLIC_BASE_URL", "https://auth.acme.example/#app", "query or fragment"},
		{"PUBLIC_BASE_URL", "http://auth.acme.example", "want https"},
		{"PUBLIC_BASE_URL", "http://localhost.acme.example", "want https"},
		{"VERIFY_EMAIL_URL", "https://app.acme.example/verify", "{token}"},
		{"VERIFY_EMAIL_URL", "https://app:secretpw@app.acme.example/verify?token={token}", "user information"},
		{"RESET_PASSWORD_URL", "http://app.acme.example/reset?t={token}", "want https"},
		{"ACCEPT_INVITATION_URL", "/join?token={token}", "absolute"},
		{"ACCEPT_INVITATION_URL", "https://{token}@app.acme.example/join", "user information"},
	} {
		m := minimal()
		m[tt.name] = tt.value
		_, err := Load(env(m))
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.name) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s=%s: Load() = %v, want a problem naming it (%q)", tt.name, tt.value, err, tt.want)
		} else if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%s=%s: the problem shows the credential: %v", tt.name, tt.value, err)
		}
	}
}

// TestMailTransport: without SMTP_URL the mails, and the one-time links
// in them, go to the log, which is for development only: coreapi starts
// so only when MAIL_TO_LOG=true says it is meant, never by default.
func TestMailTransport(t *testing.T) {
	for _, tt := range []struct {
		name     string
		smtp     string // SMTP_URL
		toLog    string // MAIL_TO_LOG
		want     string // a problem holding it; "": accepted
		wantSMTP bool   // accepted: mails sent, not logged
	}{
		{"neither", "", "", "SMTP_URL / MAIL_TO_LOG: set SMTP_URL to send the mails", false},
		{"log refused", "", "false", "SMTP_URL / MAIL_TO_LOG: set SMTP_URL", false},
		{"log refused in other words", "", "0", "SMTP_URL / MAIL_TO_LOG: set SMTP_URL", false},
		{"log asked for", "", "true", "", false},
		{"log asked for in other words", "", "1", "", false},
		{"log asked for with a newline", "", "true\n", "", false},
		{"not a boolean", "", "yes", "MAIL_TO_LOG: want true or false", false},
		{"both", "smtp://mail.example.com", "true", "SMTP_URL / MAIL_TO_LOG: set one, not both", false},
		{"mail server", "smtp://mail.example.com", "", "", true},
		{"mail server, log refused", "smtps://mail.example.com", "false", "", true},
		{"a bad mail server", "http://mail.example.com", "", "SMTP_URL: ", false},
		// What ParseSMTPURL refuses is a problem naming SMTP_URL and what
		// is wrong, never the password (secretpw).
		{"a typo in starttls", "smtp://mailer:secretpw@mail.example.com:587?startls=required", "", `SMTP_URL: unknown query parameter "startls"`, false},
		{"starttls twice", "smtp://mailer:secretpw@mail.example.com?starttls=off&starttls=required", "", "SMTP_URL: starttls given 2 times", false},
		{"starttls on smtps", "smtps://mailer:secretpw@mail.example.com?starttls=required", "", "SMTP_URL: starttls with smtps://", false},
		{"a password without a user", "smtp://:secretpw@mail.example.com", "", "SMTP_URL: a password without a user name", false},
		{"a user without a password", "smtp://mailer@mail.example.com", "", "SMTP_URL: a user name without a password", false},
		{"a path", "smtp://mailer:secretpw@mail.example.com/relay", "", "SMTP_URL: a path after the host", false},
		{"a fragment", "smtp://mailer:secretpw@mail.example.com#tls", "", "SMTP_URL: a fragment", false},
		{"opaque", "smtp:mailer:secretpw@mail.example.com", "", `SMTP_URL: no "//" before the host`, false},
		{"an unescaped ? in the password", "smtp://mailer:12?secretpw@mail.example.com", "", `SMTP_URL: "@" after the host`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := production()
			m["SMTP_URL"], m["MAIL_TO_LOG"] = tt.smtp, tt.toLog
			c, err := Load(env(m))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load() = %v, want it accepted", err)
				}
				if (c.SMTPURL != "") != tt.wantSMTP || c.MailToLog == tt.wantSMTP {
					t.Errorf("SMTPURL %q, MailToLog %v; want mails sent %v", c.SMTPURL, c.MailToLog, tt.wantSMTP)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load() = %v, want a problem %q", err, tt.want)
			}
			if strings.Contains(tt.want, "set SMTP_URL") && !strings.Contains(err.Error(), "or MAIL_TO_LOG=true") {
				t.Errorf("the problem does not say how to start with mails to the log: %v", err)
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Errorf("the problem shows the password: %v", err)
			}
		})
	}
}

// TestPublicBaseURLWithAMailServer: mails sent through SMTP_URL with
// PUBLIC_BASE_URL left at its default would carry links to
// http://localhost:8080, which nobody who gets them can open; coreapi
// refuses that start. Link templates for every mail do not lift it: the
// discovery documents name their endpoints under PUBLIC_BASE_URL.
func TestPublicBaseURLWithAMailServer(t *testing.T) {
	templates := map[string]string{
		"VERIFY_EMAIL_URL":      "https://app.example.com/verify?token={token}",
		"RESET_PASSWORD_URL":    "https://app.example.com/reset?token={token}",
		"ACCEPT_INVITATION_URL": "https://app.example.com/join?token={token}",
	}
	for _, tt := range []struct {
		name      string
		base      string // PUBLIC_BASE_URL
		toLog     bool   // MAIL_TO_LOG=true instead of SMTP_URL
		templates int    // how many of the link templates are set
		want      string // a problem holding it; "": accepted
	}{
		{"unset", "", false, 0, "PUBLIC_BASE_URL: unset while SMTP_URL is set: mailed links would point at http://localhost:8080"},
		{"blank", " \n", false, 0, "mailed links would point at http://localhost:8080"},
		{"unset, some templates", "", false, 2, "mailed links would point at http://localhost:8080"},
		{"unset, every template", "", false, 3, "PUBLIC_BASE_URL: unset while SMTP_URL is set: the discovery documents"},
		{"set", "https://auth.example.com", false, 0, ""},
		{"set, every template", "https://auth.example.com", false, 3, ""},
		{"set to the default on purpose", DefaultPublicBaseURL, false, 0, ""},
		{"unset, mails to the log", "", true, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := production()
			m["PUBLIC_BASE_URL"] = tt.base
			if tt.toLog {
				delete(m, "SMTP_URL")
				m["MAIL_TO_LOG"] = "true"
			}
			n := 0
			for _, name := range []string{"VERIFY_EMAIL_URL", "RESET_PASSWORD_URL", "ACCEPT_INVITATION_URL"} {
				if n < tt.templates {
					m[name] = templates[name]
					n++
				}
			}
			c, err := Load(env(m))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load() = %v, want it accepted", err)
				}
				if want := strings.TrimSpace(tt.base); want != "" && c.PublicBaseURL != want {
					t.Errorf("PublicBaseURL = %q, want %q", c.PublicBaseURL, want)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load() = %v, want a problem %q", err, tt.want)
			}
			if len(ce.Problems) != 1 {
				t.Errorf("problems = %q, want the one", ce.Problems)
			}
		})
	}
}

// TestTokenIssuer: TOKEN_ISSUER is an issuer identifier (RFC 8414): an
// absolute https URL (http on a loopback host), a path if the deployment
// has one, never a query, a fragment or user information; left at its
// localhost default while PUBLIC_BASE_URL names a public host, it is
// refused. Each of these loaded, and the tokens and discovery documents
// named that issuer.
func TestTokenIssuer(t *testing.T) {
	for _, good := range []string{"https://auth.example.com", "https://auth.example.com/", "https://example.com/auth", "https://auth.example.com:8443",
		"http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080/auth"} {
		m := production()
		m["TOKEN_ISSUER"] = good
		if c, err := Load(env(m)); err != nil || c.TokenIssuer != good {
			t.Errorf("TOKEN_ISSUER=%s: Load() = %v, issuer %q", good, err, c.TokenIssuer)
		}
	}
	for _, tt := range []struct{ value, want string }{
		{"auth.example.com", "want an absolute http or https URL"},
		{"localhost:8080", "want an absolute http or https URL"},
		{"ftp://auth.example.com", "want an absolute http or https URL"},
		{"https://", "want an absolute http or https URL"},
		{"https://auth.example.com/?tenant=acme", "without query or fragment"},
		{"https://auth.example.com?", "without query or fragment"},
		{"https://auth.example.com/#x", "without query or fragment"},
		{"https://auth.example.com#", "without query or fragment"},
		{"https://issuer:secretpw@auth.example.com", "without user information"},
		{"http://auth.example.com", "want https"},
		{"http://localhost.example.com", "want https"},
	} {
		m := production()
		m["TOKEN_ISSUER"] = tt.value
		_, err := Load(env(m))
		var ce *Error
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || !strings.Contains(err.Error(), "TOKEN_ISSUER: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("TOKEN_ISSUER=%s: Load() = %v, want the one problem naming it (%q)", tt.value, err, tt.want)
		} else if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("TOKEN_ISSUER=%s: the problem shows the credential: %v", tt.value, err)
		}
	}
	// Left at the default: refused under a public PUBLIC_BASE_URL, taken
	// in development (no PUBLIC_BASE_URL, or a loopback one), and set to
	// the default on purpose it is taken.
	for _, tt := range []struct {
		base, issuer string
		refused      bool
	}{
		{"https://auth.example.com", "", true},
		{"https://example.com/auth", "", true},
		{"http://127.0.0.1:8080", "", false},
		{"http://localhost:18080/", "", false},
		{"", "", false},
		{"https://auth.example.com", DefaultTokenIssuer, false},
	} {
		m := minimal()
		if tt.base != "" {
			m["PUBLIC_BASE_URL"] = tt.base
		}
		if tt.issuer != "" {
			m["TOKEN_ISSUER"] = tt.issuer
		}
		_, err := Load(env(m))
		want := "TOKEN_ISSUER: unset while PUBLIC_BASE_URL is " + tt.base
		if tt.refused && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("PUBLIC_BASE_URL=%s, TOKEN_ISSUER=%q: Load() = %v, want %q", tt.base, tt.issuer, err, want)
		}
		if !tt.refused && err != nil {
			t.Errorf("PUBLIC_BASE_URL=%s, TOKEN_ISSUER=%q: Load() = %v", tt.base, tt.issuer, err)
		}
	}
}

func TestMFAKeys(t *testing.T) {
	m := minimal()
	c, err := Load(env(m))
	if err != nil || c.MFAKeys != nil {
		t.Fatalf("no MFA keys: %v %v", c.MFAKeys, err)
	}
	k1 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	m["MFA_ENCRYPTION_KEYS"] = "new:" + k1 + ",old:" + base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	if c, err = Load(env(m)); err != nil || len(c.MFAKeys) != 2 || c.MFAKeys[0].ID != "new" {
		t.Fatalf("MFA keys = %v, %v", c.MFAKeys, err)
	}
	if s := c.String(); strings.Contains(s, k1) || strings.Contains(s, "0123456789abcdef") || !strings.Contains(s, "MFA_ENCRYPTION_KEYS=new:") {
		t.Errorf("String() shows MFA keys wrongly:\n%s", s)
	}
	for name, v := range map[string]string{"short": "a:c2hvcnQ=", "no id": k1, "twice": "a:" + k1 + ",a:" + k1} {
		m["MFA_ENCRYPTION_KEYS"] = v
		if _, err := Load(env(m)); err == nil || !strings.Contains(err.Error(), "MFA_ENCRYPTION_KEYS") {
			t.Errorf("%s: %v", name, err)
		}
	}
	m["MFA_ENCRYPTION_KEYS_FILE"] = "/nonexistent"
	m["MFA_ENCRYPTION_KEYS"] = "a:" + k1
	if _, err := Load(env(m)); err == nil {
		t.Error("MFA_ENCRYPTION_KEYS and _FILE together accepted")
	}
}

func TestAPIKeyPepper(t *testing.T) {
	m := minimal()
	c, err := Load(env(m))
	if err != nil || c.APIKeyPepper != nil {
		t.Fatalf("no pepper: %v, %v; want nil (API keys unavailable)", c.APIKeyPepper, err)
	}
	raw := "pepper-pepper-pepper-pepper-0123"
	b64 := base64.StdEncoding.EncodeToString([]byte(raw))
	m["API_KEY_PEPPER"] = b64
	if c, err = Load(env(m)); err != nil || string(c.APIKeyPepper) != raw {
		t.Fatalf("pepper = %q, %v", c.APIKeyPepper, err)
	}
	if s := c.String(); strings.Contains(s, b64) || !strings.Contains(s, "API_KEY_PEPPER=********") {
		t.Errorf("String shows the pepper:\n%s", s)
	}
	for _, bad := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		m["API_KEY_PEPPER"] = bad
		if _, err := Load(env(m)); err == nil || !strings.Contains(err.Error(), "API_KEY_PEPPER") {
			t.Errorf("pepper %q accepted: %v", bad, err)
		}
	}
	file := filepath.Join(t.TempDir(), "pepper")
	if err := os.WriteFile(file, []byte(b64+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m["API_KEY_PEPPER"] = b64
	m["API_KEY_PEPPER_FILE"] = file
	if _, err := Load(env(m)); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("pepper and file together: %v", err)
	}
	delete(m, "API_KEY_PEPPER")
	if c, err = Load(env(m)); err != nil || string(c.APIKeyPepper) != raw || c.APIKeyPepperFile != file {
		t.Fatalf("pepper file: %q, %v", c.APIKeyPepper, err)
	}
}

// TestOversizedKeyFilesRefused: a key file of more than
// secretfile.MaxSize bytes is refused naming its variable and path,
// whatever it holds (here a valid key and padding): a variable pointed at
// the wrong file (a log, /dev/zero) was read whole into memory.
func TestOversizedKeyFilesRefused(t *testing.T) {
	dir := t.TempDir()
	mfaKey := "m1:" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	pad := strings.Repeat("\n", secretfile.MaxSize)
	for _, tc := range []struct{ name, content, drop string }{
		{"IDENTITY_KEYS_FILE", "core:" + key + pad, "IDENTITY_HMAC_KEY"},
		{"IDENTITY_HMAC_KEY_FILE", key + pad, "IDENTITY_HMAC_KEY"},
		{"MFA_ENCRYPTION_KEYS_FILE", mfaKey + pad, ""},
		{"API_KEY_PEPPER_FILE", key + pad, ""},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		m := minimal()
		delete(m, tc.drop)
		m[tc.name] = p
		_, err := Load(env(m))
		if err == nil || !strings.Contains(err.Error(), p+": more than 64 KiB: not a key file") {
			t.Errorf("%s of %d bytes: Load() = %v, want it refused", tc.name, len(tc.content), err)
		}
		// The same file within the bound loads.
		if err := os.WriteFile(p, []byte(strings.TrimRight(tc.content, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(env(m)); err != nil {
			t.Errorf("%s holding its key alone: %v", tc.name, err)
		}
	}
}

// TestBadURLProblemHidesCredential: a NATS_URL that does not parse (a
// password holding an unescaped '%', or a token and no host) is reported
// without its credential.
func TestBadURLProblemHidesCredential(t *testing.T) {
	for _, v := range []string{"nats://app:p%zzsecretpw@nats:4222", "nats://secretpw@", "nats://app:secretpw@/x"} {
		m := minimal()
		m["NATS_URL"] = v
		_, err := Load(env(m))
		if err == nil || !strings.Contains(err.Error(), "NATS_URL") {
			t.Fatalf("NATS_URL=%s: Load() = %v, want a NATS_URL problem", v, err)
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("NATS_URL=%s: the problem shows the credential: %v", v, err)
		}
	}
}

// TestRefusedReturnURLHidesCredentials: an OAUTH_ALLOWED_RETURN_URLS entry
// refused for its credentials or its scheme is quoted without its user
// information or query, and still names its host.
func TestRefusedReturnURLHidesCredentials(t *testing.T) {
	for _, v := range []string{"https://u:secretpw@app.example.com/cb", "http://secretpw@app.example.com/cb",
		"http://app.example.com/cb?token=secretpw", "https://u:p%zzsecretpw@app.example.com/cb"} {
		m := minimal()
		m["OAUTH_ALLOWED_RETURN_URLS"] = "https://ok.example.com/cb," + v
		_, err := Load(env(m))
		if err == nil || !strings.Contains(err.Error(), "OAUTH_ALLOWED_RETURN_URLS") {
			t.Fatalf("OAUTH_ALLOWED_RETURN_URLS=%s: Load() = %v, want a problem", v, err)
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("OAUTH_ALLOWED_RETURN_URLS=%s: the problem shows the credential: %v", v, err)
		}
		if !strings.Contains(err.Error(), "app.example.com/cb") {
			t.Errorf("OAUTH_ALLOWED_RETURN_URLS=%s: the problem does not name the URL: %v", v, err)
		}
	}
}

// TestListenersOnOnePortRefused: the API and admin listeners on one port
// (the same host, or either on every address) are refused at load: the
// second could not listen, and -check-config said the configuration was
// fine.
func TestListenersOnOnePortRefused(t *testing.T) {
	for _, addrs := range [][2]string{{"127.0.0.1:9091", ""}, {"0.0.0.0:8081", "127.0.0.1:8081"}, {":9000", ":9000"}} {
		m := minimal()
		m["COREAPI_LISTEN_ADDR"], m["COREAPI_ADMIN_ADDR"] = addrs[0], addrs[1]
		if _, err := Load(env(m)); err == nil || !strings.Contains(err.Error(), "take the same port") {
			t.Errorf("listen %q, admin %q: Load() = %v, want them refused", addrs[0], addrs[1], err)
		}
	}
	m := minimal()
	m["COREAPI_LISTEN_ADDR"], m["COREAPI_ADMIN_ADDR"] = "127.0.0.1:0", "127.0.0.1:0"
	if _, err := Load(env(m)); err != nil {
		t.Errorf("both on port 0: %v", err)
	}
}

// TestAccessTokenTTLBeyondProxiesLifetimeWarned: an ACCESS_TOKEN_TTL
// longer than authproxy's default TOKEN_MAX_LIFETIME loads, with a
// warning: proxies left at that default refuse every token coreapi issues
// (exp - iat too long), and nothing said so. The constant is held to the
// proxy's documented default.
func TestAccessTokenTTLBeyondProxiesLifetimeWarned(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := envconfig.ParseDocTable(string(doc), "### authproxy")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		if len(r.Names) == 1 && r.Names[0] == "TOKEN_MAX_LIFETIME" {
			d, err := time.ParseDuration(strings.Trim(r.Default, "`"))
			if err != nil || d != ProxyTokenMaxLifetime {
				t.Errorf("authproxy's documented TOKEN_MAX_LIFETIME default %s, ProxyTokenMaxLifetime %s", r.Default, ProxyTokenMaxLifetime)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("no TOKEN_MAX_LIFETIME row in the authproxy table")
	}
	for ttl, warned := range map[string]bool{"15m": false, "1h": false, "61m": true, "24h": true} {
		m := minimal()
		m["ACCESS_TOKEN_TTL"] = ttl
		c, err := Load(env(m))
		if err != nil {
			t.Fatalf("ACCESS_TOKEN_TTL=%s: %v", ttl, err)
		}
		got := strings.Contains(strings.Join(c.Warnings, "\n"), "ACCESS_TOKEN_TTL")
		if got != warned {
			t.Errorf("ACCESS_TOKEN_TTL=%s: warned %v, want %v: %q", ttl, got, warned, c.Warnings)
		}
		if got && !strings.Contains(strings.Join(c.Warnings, "\n"), "TOKEN_MAX_LIFETIME") {
			t.Errorf("ACCESS_TOKEN_TTL=%s: the warning does not name TOKEN_MAX_LIFETIME: %q", ttl, c.Warnings)
		}
	}
}

// TestSecretFilesOpenToOthersWarned: a key file (or signing key) that
// other users of the host can read loads, with a warning naming it; one
// readable by its group only, as the manifests' defaultMode 0440 mounts
// it, is not warned about.
func TestSecretFilesOpenToOthersWarned(t *testing.T) {
	dir := t.TempDir()
	keysDir := filepath.Join(dir, "keys")
	if err := os.Mkdir(keysDir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(path, text string, mode os.FileMode) string {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	m := minimal()
	delete(m, "IDENTITY_HMAC_KEY")
	m["SIGNING_KEYS_DIR"] = keysDir
	m["IDENTITY_HMAC_KEY_FILE"] = write(filepath.Join(dir, "identity.key"), key+"\n", 0o440)
	m["MFA_ENCRYPTION_KEYS_FILE"] = write(filepath.Join(dir, "mfa.keys"), "mfa1:"+key+"\n", 0o644)
	m["API_KEY_PEPPER_FILE"] = write(filepath.Join(dir, "pepper"), key+"\n", 0o604)
	write(filepath.Join(keysDir, "a.pem"), "not read by Load", 0o400)
	write(filepath.Join(keysDir, "b.pem"), "not read by Load", 0o644)
	c, err := Load(env(m))
	if err != nil {
		t.Fatalf("Load() = %v, want the files loaded (a warning, not a refusal)", err)
	}
	want := []string{"MFA_ENCRYPTION_KEYS_FILE: " + m["MFA_ENCRYPTION_KEYS_FILE"], "API_KEY_PEPPER_FILE: " + m["API_KEY_PEPPER_FILE"],
		"SIGNING_KEYS_DIR: " + filepath.Join(keysDir, "b.pem")}
	if len(c.Warnings) != len(want) {
		t.Fatalf("warnings = %q, want one for each of %q", c.Warnings, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(c.Warnings[i], w+" ") {
			t.Errorf("warning %d = %q, want it to start with %q", i, c.Warnings[i], w)
		}
	}
}

// TestOutboxRelayID: the relay's default name is the host name and
// coreapi's port, the same at every start of the process (a replica
// restarted while the database is away must beat under the name the
// proxies expect), different for two processes on one host;
// OUTBOX_RELAY_ID sets it.
func TestOutboxRelayID(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Fatalf("os.Hostname() = %q, %v", host, err)
	}
	vars := minimal()
	vars["COREAPI_LISTEN_ADDR"] = "127.0.0.1:9093"
	var names []string
	for range 2 {
		c, err := Load(env(vars))
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, c.OutboxRelayID)
	}
	if names[0] != host+":9093" || names[1] != names[0] {
		t.Fatalf("default relay names at two starts: %q, want %q both times", names, host+":9093")
	}
	vars["COREAPI_LISTEN_ADDR"] = "127.0.0.1:9092"
	if c, err := Load(env(vars)); err != nil || c.OutboxRelayID != host+":9092" {
		t.Fatalf("another port: %q (%v), want %q", c.OutboxRelayID, err, host+":9092")
	}
	vars["OUTBOX_RELAY_ID"] = "coreapi-0"
	if c, err := Load(env(vars)); err != nil || c.OutboxRelayID != "coreapi-0" {
		t.Fatalf("OUTBOX_RELAY_ID=coreapi-0: %q (%v)", c.OutboxRelayID, err)
	}
	// The proxies ignore a relay named longer: it would go unwatched.
	vars["OUTBOX_RELAY_ID"] = strings.Repeat("r", invalidation.MaxRelayIDLen)
	if c, err := Load(env(vars)); err != nil || c.OutboxRelayID != vars["OUTBOX_RELAY_ID"] {
		t.Fatalf("OUTBOX_RELAY_ID of %d bytes: %v", invalidation.MaxRelayIDLen, err)
	}
	vars["OUTBOX_RELAY_ID"] += "r"
	_, err = Load(env(vars))
	if want := fmt.Sprintf("want at most %d bytes", invalidation.MaxRelayIDLen); err == nil ||
		!strings.Contains(err.Error(), "OUTBOX_RELAY_ID") || !strings.Contains(err.Error(), want) {
		t.Fatalf("OUTBOX_RELAY_ID of %d bytes: Load() = %v, want an error naming it and %q", invalidation.MaxRelayIDLen+1, err, want)
	}
	noHost := func() (string, error) { return "", errors.New("no host name") }
	if got := defaultRelayID(noHost, "127.0.0.1:8081"); got != "coreapi:8081" {
		t.Fatalf("without a host name: %q, want coreapi:8081", got)
	}
	if got := defaultRelayID(os.Hostname, "127.0.0.1:0"); got != "" {
		t.Fatalf("port 0: %q, want the relay's own default (\"\")", got)
	}
}

// TestOIDCEmailDomains: OIDC_<NAME>_EMAIL_DOMAINS lists the domains a
// provider is authoritative for, each in the one spelling addresses are
// stored in (mail.Canonical's: IDNA's Unicode form, lower case, without
// a trailing dot); `*` alone is every domain; unset is none. A value that
// is no mail domain, or `*` beside domains, is refused at start.
func TestOIDCEmailDomains(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		want        []string
		bad         string // the problem names this, "" when it loads
	}{
		{name: "unset", value: "", want: nil},
		{name: "listed", value: "Example.COM, bücher.example ,corp.example.", want: []string{"example.com", "bücher.example", "corp.example"}},
		{name: "punycode", value: "xn--bcher-kva.example", want: []string{"bücher.example"}},
		{name: "twice in two spellings", value: "bücher.example,XN--BCHER-KVA.example", want: []string{"bücher.example"}},
		{name: "any", value: " * ", want: []string{"*"}},
		{name: "any beside domains", value: "*,example.com", bad: `"*" stands alone`},
		{name: "an address", value: "ada@example.com", bad: `"ada@example.com"`},
		{name: "single label", value: "localhost", bad: `"localhost"`},
		{name: "wildcard label", value: "*.example.com", bad: `"*.example.com"`},
		{name: "reserved", value: "corp.invalid", bad: `"corp.invalid"`},
		{name: "empty entries only", value: " , ", bad: "no domain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := minimal()
			m["OIDC_PROVIDERS"] = "corp"
			m["OIDC_CORP_ISSUER"] = "https://corp.example"
			m["OIDC_CORP_CLIENT_ID"] = "id"
			m["OIDC_CORP_CLIENT_SECRET"] = "secret"
			m["OIDC_CORP_REDIRECT_URL"] = "https://auth.example.com/api/v1/auth/oauth/corp/callback"
			if tt.value != "" {
				m["OIDC_CORP_EMAIL_DOMAINS"] = tt.value
			}
			c, err := Load(env(m))
			if tt.bad != "" {
				if err == nil || !strings.Contains(err.Error(), "OIDC_CORP_EMAIL_DOMAINS") || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("Load() = %v, want a problem of OIDC_CORP_EMAIL_DOMAINS naming %s", err, tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if got := c.OIDCProviders[0].EmailDomains; !slices.Equal(got, tt.want) {
				t.Errorf("EmailDomains = %q, want %q", got, tt.want)
			}
			var b strings.Builder
			logTo(&b, c)
			if len(tt.want) > 0 && !strings.Contains(b.String(), "email_domains") {
				t.Errorf("the start log does not show the provider's domains:\n%s", b.String())
			}
			// -check-config prints the value in effect.
			if len(tt.want) > 0 && !strings.Contains(c.String(), "OIDC_CORP_EMAIL_DOMAINS") {
				t.Errorf("String() does not show OIDC_CORP_EMAIL_DOMAINS:\n%s", c.String())
			}
		})
	}
}
