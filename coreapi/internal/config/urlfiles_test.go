package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/secretfile"
)

// urlFileCases are the connection URLs that carry a password, each with
// a value a start takes and one it refuses.
var urlFileCases = []struct {
	name, good, secret, bad string
	field                   func(Config) string
}{
	{"DATABASE_URL", "postgres://app:db-s3cret@db:5432/tollgate?sslmode=disable", "db-s3cret", "host=db port=nope password=db-s3cret",
		func(c Config) string { return c.DatabaseURL }},
	{"SMTP_URL", "smtp://mailer:smtp-s3cret@mail.example.com:587", "smtp-s3cret", "smtp://mailer:smtp-s3cret@mail.example.com:587/path",
		func(c Config) string { return c.SMTPURL }},
	{"NATS_URL", "nats://coreapi:nats-s3cret@nats:4222", "nats-s3cret", "http://coreapi:nats-s3cret@nats:4222",
		func(c Config) string { return c.NATSURL }},
}

// writeSecret writes text to a new file of dir with mode and returns its
// path.
func writeSecret(t *testing.T, dir, name, text string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return p
}

// TestConnectionURLFiles: DATABASE_URL, SMTP_URL and NATS_URL, which hold
// passwords, are read from the file their _FILE variable names (a
// mounted Secret), the trailing newline trimmed, checked as the variable
// is, and printed masked; the variable and its _FILE together, a file that
// cannot be read, an empty one or one over secretfile.MaxSize stop the
// start naming the _FILE variable, and a file open to other users is
// warned about.
func TestConnectionURLFiles(t *testing.T) {
	for _, tc := range urlFileCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := tc.name + "_FILE"
			m := production()
			delete(m, tc.name)
			m[file] = writeSecret(t, dir, "url", tc.good+"\n", 0o440)
			c, err := Load(env(m))
			if err != nil {
				t.Fatalf("%s: Load() = %v", file, err)
			}
			if got := tc.field(c); got != tc.good {
				t.Errorf("%s: value %q, want %q", file, got, tc.good)
			}
			if s := c.String(); strings.Contains(s, tc.secret) || !strings.Contains(s, file+"="+m[file]+"\n") || !strings.Contains(s, tc.name+"=") {
				t.Errorf("printout shows the password, or not the file and the masked URL:\n%s", s)
			}
			if len(c.Warnings) != 0 {
				t.Errorf("warnings %q for a file of mode 0440", c.Warnings)
			}

			both := production()
			both[tc.name] = tc.good
			both[file] = m[file]
			if _, err := Load(env(both)); err == nil || !strings.Contains(err.Error(), tc.name+" / "+file+": set one, not both") {
				t.Errorf("%s and %s together: Load() = %v", tc.name, file, err)
			}

			for what, path := range map[string]string{
				"missing": filepath.Join(dir, "missing"),
				"empty":   writeSecret(t, dir, "empty", "\n", 0o440),
				"too big": writeSecret(t, dir, "big", tc.good+strings.Repeat("\n", secretfile.MaxSize), 0o440),
				"refused": writeSecret(t, dir, "bad", tc.bad+"\n", 0o440),
			} {
				m[file] = path
				_, err := Load(env(m))
				if err == nil || !strings.Contains(err.Error(), file+" "+path+": ") {
					t.Errorf("%s %s file: Load() = %v, want a problem naming %s and the file", tc.name, what, err, file)
				} else if strings.Contains(err.Error(), tc.secret) {
					t.Errorf("%s %s file: the problem shows the password: %v", tc.name, what, err)
				}
			}

			m[file] = writeSecret(t, dir, "open", tc.good+"\n", 0o644)
			c, err = Load(env(m))
			if err != nil || len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], file+": "+m[file]+" ") {
				t.Errorf("%s open to others: warnings %q, %v; want one naming it", file, c.Warnings, err)
			}
		})
	}
}

// TestDatabaseURLFileForCommands: migrate, tenants and mfa read
// DATABASE_URL_FILE as serve does.
func TestDatabaseURLFileForCommands(t *testing.T) {
	const u = "postgres://app:s3cret@db:5432/tollgate"
	file := writeSecret(t, t.TempDir(), "url", u+"\n", 0o440)
	m := map[string]string{"DATABASE_URL_FILE": file}
	for _, cmd := range []string{"migrate", "tenants", "mfa"} {
		if c, err := LoadCommand(cmd, env(m)); err != nil || c.DatabaseURL != u {
			t.Errorf("%s: DATABASE_URL = %q, %v", cmd, c.DatabaseURL, err)
		}
	}
	if got, err := DatabaseURLFrom(env(m)); err != nil || got != u {
		t.Errorf("DatabaseURLFrom = %q, %v", got, err)
	}
	m["DATABASE_URL"] = u
	if _, err := LoadCommand("migrate", env(m)); err == nil || !strings.Contains(err.Error(), "DATABASE_URL / DATABASE_URL_FILE: set one, not both") {
		t.Errorf("migrate with both: %v", err)
	}
	if _, err := LoadCommand("migrate", env(map[string]string{})); err == nil || !strings.Contains(err.Error(), "DATABASE_URL: required") {
		t.Errorf("migrate with neither: %v", err)
	}
}

// TestOIDCClientSecretFile: a provider's client secret is read from the
// file OIDC_<NAME>_CLIENT_SECRET_FILE names (a mounted Secret) as the
// connection URLs are: the trailing newline trimmed, printed masked; the
// variable and its _FILE together, a file that cannot be read, an empty
// one or one over secretfile.MaxSize stop the start naming the _FILE
// variable and the file, and a file open to other users is warned about.
func TestOIDCClientSecretFile(t *testing.T) {
	const secret = "oidc-client-s3cret"
	dir := t.TempDir()
	provider := func() map[string]string {
		m := production()
		m["OIDC_PROVIDERS"] = "google"
		m["OIDC_GOOGLE_ISSUER"] = "https://accounts.google.com"
		m["OIDC_GOOGLE_CLIENT_ID"] = "id"
		m["OIDC_GOOGLE_REDIRECT_URL"] = "https://auth.example.com/api/v1/auth/oauth/google/callback"
		return m
	}
	const file = "OIDC_GOOGLE_CLIENT_SECRET_FILE"
	m := provider()
	m[file] = writeSecret(t, dir, "secret", secret+"\n", 0o440)
	c, err := Load(env(m))
	if err != nil {
		t.Fatalf("%s: Load() = %v", file, err)
	}
	if len(c.OIDCProviders) != 1 || c.OIDCProviders[0].ClientSecret != secret {
		t.Errorf("%s: providers %+v, want the client secret from the file", file, c.OIDCProviders)
	}
	if s := c.String(); strings.Contains(s, secret) || !strings.Contains(s, file+"="+m[file]+"\n") || !strings.Contains(s, "OIDC_GOOGLE_CLIENT_SECRET=") {
		t.Errorf("printout shows the secret, or not the file and the masked secret:\n%s", s)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %q for a file of mode 0440", c.Warnings)
	}

	both := provider()
	both["OIDC_GOOGLE_CLIENT_SECRET"] = secret
	both[file] = m[file]
	if _, err := Load(env(both)); err == nil || !strings.Contains(err.Error(), "OIDC_GOOGLE_CLIENT_SECRET / "+file+": set one, not both") {
		t.Errorf("OIDC_GOOGLE_CLIENT_SECRET and %s together: Load() = %v", file, err)
	}

	for what, path := range map[string]string{
		"missing": filepath.Join(dir, "missing"),
		"empty":   writeSecret(t, dir, "empty", "\n", 0o440),
		"too big": writeSecret(t, dir, "big", secret+strings.Repeat("\n", secretfile.MaxSize), 0o440),
	} {
		m[file] = path
		_, err := Load(env(m))
		if err == nil || !strings.Contains(err.Error(), file+" "+path+": ") {
			t.Errorf("%s file: Load() = %v, want a problem naming %s and the file", what, err, file)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("%s file: the problem shows the secret: %v", what, err)
		}
	}

	m[file] = writeSecret(t, dir, "open", secret+"\n", 0o644)
	c, err = Load(env(m))
	if err != nil || len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], file+": "+m[file]+" ") {
		t.Errorf("%s open to others: warnings %q, %v; want one naming it", file, c.Warnings, err)
	}
}
