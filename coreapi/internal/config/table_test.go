package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadReadsEveryListedVariable: Load asks for every variable of the
// table (a listed variable nothing reads is a documented knob that does
// nothing), and for nothing else.
func TestLoadReadsEveryListedVariable(t *testing.T) {
	m := minimal()
	m["OIDC_PROVIDERS"] = "google"
	m["OIDC_GOOGLE_ISSUER"] = "https://accounts.google.com"
	m["OIDC_GOOGLE_CLIENT_ID"] = "id"
	m["OIDC_GOOGLE_CLIENT_SECRET"] = "secret"
	m["OIDC_GOOGLE_REDIRECT_URL"] = "https://auth.example.com/api/v1/auth/oauth/google/callback"
	asked := map[string]bool{}
	if _, err := Load(func(k string) string { asked[k] = true; return m[k] }); err != nil {
		t.Fatal(err)
	}
	for _, v := range Vars {
		name := strings.ReplaceAll(v.Name, "<NAME>", "GOOGLE")
		if !asked[name] {
			t.Errorf("%s is in the table but Load never reads it", name)
		}
	}
	for k := range asked {
		if _, ok := Vars.Lookup(k); !ok {
			t.Errorf("Load reads %s, which the table does not list", k)
		}
	}
}

// TestDefaultsAreTheTables: with nothing optional set, the printout shows
// every default of the table (durations as Go prints them). No start takes
// every default (mails need SMTP_URL or MAIL_TO_LOG=true, and a mail server
// PUBLIC_BASE_URL): each of two starts shows the defaults of what it leaves
// unset, and together they leave every variable unset once.
func TestDefaultsAreTheTables(t *testing.T) {
	checked := map[string]bool{}
	var c Config
	for _, m := range []map[string]string{production(), minimal()} {
		var err error
		if c, err = Load(env(m)); err != nil {
			t.Fatal(err)
		}
		shown := map[string]string{}
		for _, line := range strings.Split(c.String(), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
				shown[k] = v
			}
		}
		for _, v := range Vars {
			if _, set := m[v.Name]; set || v.Default == "" || strings.Contains(v.Name, "<NAME>") {
				continue
			}
			checked[v.Name] = true
			want := v.Default
			if d, err := time.ParseDuration(v.Default); err == nil {
				want = d.String()
			}
			if got, ok := shown[v.Name]; !ok || got != want {
				t.Errorf("%s = %q (printed %v), want the table's %q", v.Name, got, ok, want)
			}
		}
	}
	for _, v := range Vars {
		if v.Default != "" && !strings.Contains(v.Name, "<NAME>") && !checked[v.Name] {
			t.Errorf("%s: its default is never checked", v.Name)
		}
	}
	if c.AccessTokenTTL != 15*time.Minute || c.TokenMaxLeeway != time.Minute || c.MaxBodyBytes != 1<<20 || !c.IdentityAcceptV1 {
		t.Errorf("typed defaults: %s %s %d %v", c.AccessTokenTTL, c.TokenMaxLeeway, c.MaxBodyBytes, c.IdentityAcceptV1)
	}
}

// TestDocsTableMatches: docs/operations.md's coreapi table lists exactly
// the table's variables, with the same defaults and required marks.
func TestDocsTableMatches(t *testing.T) {
	diffs, err := Vars.CheckDocFile(filepath.Join("..", "..", "..", "docs", "operations.md"), "### coreapi", true, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}

// TestTrailingNewlineTrimmed: every command reads a value ending in a
// newline (a mounted Secret) the same way, as do the key files.
func TestTrailingNewlineTrimmed(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys")
	mfaFile := filepath.Join(dir, "mfa")
	if err := os.WriteFile(keysFile, []byte("k1:"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mfaFile, []byte("m1:"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{
		"DATABASE_URL":             "postgres://app:s3cret@db:5432/tollgate\n",
		"SIGNING_KEYS_DIR":         "/keys\n",
		"IDENTITY_KEYS_FILE":       keysFile + "\n",
		"MFA_ENCRYPTION_KEYS_FILE": mfaFile + "\n",
		"NATS_URL":                 "tls://nats:4222\n",
		"ACCESS_TOKEN_TTL":         "5m\n",
		"IDENTITY_ACCEPT_V1":       "false\n",
		"MAIL_FROM":                "Tollgate <no-reply@example.com>\n",
		"MAIL_TO_LOG":              "true\n",
	}
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != "postgres://app:s3cret@db:5432/tollgate" || c.SigningKeysDir != "/keys" || c.NATSURL != "tls://nats:4222" ||
		c.AccessTokenTTL != 5*time.Minute || c.IdentityAcceptV1 || len(c.IdentityKeys) != 1 || c.IdentityKeys[0].ID != "k1" ||
		len(c.MFAKeys) != 1 || c.MailFrom != "Tollgate <no-reply@example.com>" || !c.MailToLog {
		t.Errorf("serve: %+v", c)
	}
	for _, cmd := range []string{"migrate", "tenants"} {
		c, err := LoadCommand(cmd, env(m))
		if err != nil || c.DatabaseURL != "postgres://app:s3cret@db:5432/tollgate" {
			t.Errorf("%s: DATABASE_URL = %q, %v", cmd, c.DatabaseURL, err)
		}
	}
	if c, err := LoadCommand("keys", env(m)); err != nil || c.SigningKeysDir != "/keys" {
		t.Errorf("keys: SIGNING_KEYS_DIR = %q, %v", c.SigningKeysDir, err)
	}
	if u, err := DatabaseURLFrom(env(m)); err != nil || u != "postgres://app:s3cret@db:5432/tollgate" {
		t.Errorf("DatabaseURLFrom = %q, %v", u, err)
	}
}

// TestCommandsValidateAlike: a command refuses what serve refuses, with
// the same words.
func TestCommandsValidateAlike(t *testing.T) {
	for _, tc := range []struct{ cmd, name, value, want string }{
		{"migrate", "DATABASE_URL", "", "DATABASE_URL: required"},
		{"tenants", "DATABASE_URL", "host=db port=nope", "DATABASE_URL: not a valid connection string"},
		{"keys", "SIGNING_KEYS_DIR", " \n", "SIGNING_KEYS_DIR: required"},
	} {
		m := minimal()
		m[tc.name] = tc.value
		_, serr := Load(env(m))
		_, cerr := LoadCommand(tc.cmd, env(m))
		if serr == nil || cerr == nil || !strings.Contains(serr.Error(), tc.want) || !strings.Contains(cerr.Error(), tc.want) {
			t.Errorf("%s %s=%q: serve %v, %s %v; want both to say %q", tc.cmd, tc.name, tc.value, serr, tc.cmd, cerr, tc.want)
		}
	}
}

func TestLeewayAboveAMinuteRefused(t *testing.T) {
	for v, ok := range map[string]bool{"60s": true, "0s": true, "61s": false, "10m": false, "-1s": false} {
		m := minimal()
		m["TOKEN_MAX_LEEWAY"] = v
		_, err := Load(env(m))
		if (err == nil) != ok || (err != nil && !strings.Contains(err.Error(), "TOKEN_MAX_LEEWAY")) {
			t.Errorf("TOKEN_MAX_LEEWAY=%s: %v, want accepted %v", v, err, ok)
		}
	}
}

// TestRefreshReuseGraceCapped: within REFRESH_REUSE_GRACE a rotated
// refresh token still yields its live successor, so a long grace hands a
// session to whoever replays a copy (a thief) without the reuse being
// detected; more than a minute is refused at start.
func TestRefreshReuseGraceCapped(t *testing.T) {
	for v, ok := range map[string]bool{"10s": true, "0s": true, "1m": true, "61s": false, "24h": false, "-1s": false} {
		m := minimal()
		m["REFRESH_REUSE_GRACE"] = v
		c, err := Load(env(m))
		if (err == nil) != ok || (err != nil && !strings.Contains(err.Error(), "REFRESH_REUSE_GRACE")) {
			t.Errorf("REFRESH_REUSE_GRACE=%s: %v, want accepted %v", v, err, ok)
		}
		if c.RefreshReuseGrace > MaxRefreshReuseGrace {
			t.Errorf("REFRESH_REUSE_GRACE=%s: loaded as %s", v, c.RefreshReuseGrace)
		}
	}
}

func TestPrintoutFormat(t *testing.T) {
	m := minimal()
	m["SHUTDOWN_TIMEOUT"] = "90s"
	m["IDENTITY_HMAC_KEY"] = ""
	m["IDENTITY_KEYS"] = "k1:" + key
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	s := c.String()
	for _, want := range []string{"\nSHUTDOWN_TIMEOUT=1m30s\n", "\nACCESS_TOKEN_TTL=15m0s\n", "\nIDENTITY_KEYS=k1:********\n",
		"DATABASE_URL=postgres://app:xxxxx@db:5432/tollgate?sslmode=disable\n", "# identity key ids: k1:***\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("printout lacks %q:\n%s", want, s)
		}
	}
	for _, secret := range []string{key, "s3cret"} {
		if strings.Contains(s, secret) {
			t.Errorf("printout shows %q", secret)
		}
	}
}

// TestReadmeTableMatches: the README's short coreapi table agrees with the
// configuration table on every variable it shows.
func TestReadmeTableMatches(t *testing.T) {
	diffs, err := Vars.CheckDocFile(filepath.Join("..", "..", "..", "README.md"), "### coreapi", false, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}
