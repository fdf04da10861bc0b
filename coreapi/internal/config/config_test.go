package config

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var key = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func minimal() map[string]string {
	return map[string]string{
		"DATABASE_URL":      "postgres://app:s3cret@db:5432/tollgate?sslmode=disable",
		"IDENTITY_HMAC_KEY": key,
		"SIGNING_KEYS_DIR":  "/keys",
	}
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
		{"alg", c.SigningAlg, "EdDSA"},
		{"key activation", c.SigningKeyActivation, 5 * time.Minute},
		{"body", c.MaxBodyBytes, 1 << 20},
		{"shutdown", c.ShutdownTimeout, 15 * time.Second},
		{"exec mode", c.ExecMode(), pgx.QueryExecModeCacheStatement},
		{"key len", len(c.IdentityKey), 32},
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
		"MAX_BODY_BYTES":               "ten",
		"LOG_LEVEL":                    "chatty",
		"COREAPI_LISTEN_ADDR":          "8081",
		"NATS_URL":                     "http://x:4222",
		"OIDC_PROVIDERS":               "google,Bad-Name",
	}
	_, err := Load(env(m))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load() = %v, want *Error", err)
	}
	want := []string{
		"DATABASE_URL", "IDENTITY_HMAC_KEY", "SIGNING_KEYS_DIR", "DB_MAX_CONNS", "DB_EXEC_MODE",
		"ACCESS_TOKEN_TTL", "REFRESH_TOKEN_TTL", "SIGNING_ALG", "SIGNING_KEY_ACTIVATION_DELAY", "MAX_BODY_BYTES", "LOG_LEVEL",
		"COREAPI_LISTEN_ADDR", "NATS_URL", "OIDC_GOOGLE_ISSUER", "OIDC_GOOGLE_CLIENT_ID",
		"OIDC_GOOGLE_CLIENT_SECRET", "OIDC_GOOGLE_REDIRECT_URL", "bad-name",
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

	m := minimal()
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
	if s := c.String(); strings.Contains(s, "hunter2") || !strings.Contains(s, "SMTP_URL=smtp://mailer:xxxxx@mail.example.com") {
		t.Errorf("SMTP password not masked in:\n%s", s)
	}

	for name, bad := range map[string]map[string]string{
		"SMTP_URL":              {"SMTP_URL": "http://mail.example.com"},
		"MAIL_FROM":             {"MAIL_FROM": "no-reply@acme.example\r\nBcc: evil@example.com"},
		"PUBLIC_BASE_URL":       {"PUBLIC_BASE_URL": "auth.acme.example"},
		"VERIFY_EMAIL_URL":      {"VERIFY_EMAIL_URL": "https://app.acme.example/verify"},
		"ACCEPT_INVITATION_URL": {"ACCEPT_INVITATION_URL": "/join?token={token}"},
	} {
		m := minimal()
		for k, v := range bad {
			m[k] = v
		}
		_, err := Load(env(m))
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s %q: Load() = %v, want a problem naming it", name, bad[name], err)
		}
	}
}
