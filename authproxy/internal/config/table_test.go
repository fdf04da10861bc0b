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
// nothing), and for nothing else (envconfig refuses unlisted names).
func TestLoadReadsEveryListedVariable(t *testing.T) {
	asked := map[string]bool{}
	_, err := Load(func(k string) (string, bool) {
		asked[k] = true
		if k == "IDENTITY_HMAC_KEY" {
			return key, true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range Vars {
		if !asked[v.Name] {
			t.Errorf("%s is in the table but Load never reads it", v.Name)
		}
	}
	for k := range asked {
		if _, ok := Vars.Lookup(k); !ok {
			t.Errorf("Load reads %s, which the table does not list", k)
		}
	}
}

// TestDefaultsAreTheTables: with nothing set, the printout shows every
// default of the table (durations as Go prints them, e.g. 1m0s).
func TestDefaultsAreTheTables(t *testing.T) {
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key}))
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(c.String()), "\n") {
		k, v, _ := strings.Cut(line, "=")
		shown[k] = v
	}
	for _, v := range Vars {
		if v.Default == "" {
			continue
		}
		got, ok := shown[v.Name]
		if !ok {
			t.Errorf("%s not printed", v.Name)
			continue
		}
		if d, err := time.ParseDuration(v.Default); err == nil {
			if got != d.String() {
				t.Errorf("%s = %q, want the table's %s printed as %q", v.Name, got, v.Default, d.String())
			}
		} else if got != v.Default {
			t.Errorf("%s = %q, want the table's %q", v.Name, got, v.Default)
		}
	}
	if c.Leeway != 30*time.Second || c.MaxLeeway != time.Minute || c.CacheMemoryMB != 256 || c.StreamMaxConns != 10000 {
		t.Errorf("typed defaults: leeway %s max %s cache %d streams %d", c.Leeway, c.MaxLeeway, c.CacheMemoryMB, c.StreamMaxConns)
	}
}

// TestDocsTableMatches: docs/operations.md's authproxy table lists exactly
// the table's variables with the same defaults.
func TestDocsTableMatches(t *testing.T) {
	diffs, err := Vars.CheckDocFile(filepath.Join("..", "..", "..", "docs", "operations.md"), "### authproxy", true, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}

// TestTrailingNewlineTrimmed: values from mounted Secrets and ConfigMaps
// often end in a newline; every variable and key file takes them.
func TestTrailingNewlineTrimmed(t *testing.T) {
	dir := t.TempDir()
	core := filepath.Join(dir, "core")
	app := filepath.Join(dir, "app")
	if err := os.WriteFile(core, []byte("k1:"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(app, []byte("app-notes:"+key2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(env(map[string]string{
		"IDENTITY_KEYS_FILE": core + "\n", "UPSTREAM_KEYS_FILE": app + "\n",
		"NATS_URL": "tls://nats:4222\n", "TOKEN_ISSUER": "https://auth.example.com\n",
		"TOKEN_LEEWAY": "10s\n", "MAX_BODY_BYTES": "2048\r\n", "ACCESS_LOG": "false\n",
		"IDENTITY_URL": "http://core:8081\n", "PROXY_LISTEN_ADDR": "0.0.0.0:8080\n",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.CoreKeys) != 1 || c.CoreKeys[0].ID != "k1" || len(c.UpstreamKeys) != 1 || c.UpstreamKeys[0].ID != "app-notes" {
		t.Errorf("keys = %v %v", c.CoreKeys, c.UpstreamKeys)
	}
	if c.NATSURL != "tls://nats:4222" || c.Issuer != "https://auth.example.com" || c.Leeway != 10*time.Second ||
		c.MaxBodyBytes != 2048 || c.AccessLog || c.IdentityURL.String() != "http://core:8081" || c.ListenAddr != "0.0.0.0:8080" {
		t.Errorf("trimmed values: %+v", c)
	}
}

func TestNATSURLScheme(t *testing.T) {
	for url, ok := range map[string]bool{
		"nats://127.0.0.1:4222": true, "tls://nats.example.com:4222": true,
		"http://127.0.0.1:4222": false, "127.0.0.1:4222": false, "nats://": false,
	} {
		_, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "NATS_URL": url}))
		if (err == nil) != ok {
			t.Errorf("NATS_URL=%s: err = %v, want accepted %v", url, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "NATS_URL") {
			t.Errorf("NATS_URL=%s: error does not name the variable: %v", url, err)
		}
	}
}

func TestPrintoutMasksAndFormats(t *testing.T) {
	c, err := Load(env(map[string]string{"IDENTITY_KEYS": "k1:" + key + ",k2:" + key2, "UPSTREAM_KEYS": "app:" + key3,
		"NATS_URL": "nats://u:secretpw@h:4222", "SHUTDOWN_TIMEOUT": "90s"}))
	if err != nil {
		t.Fatal(err)
	}
	out := c.String()
	for _, secret := range []string{key, key2, key3, "secretpw"} {
		if strings.Contains(out, secret) {
			t.Errorf("printout shows a secret %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"IDENTITY_KEYS=k1:********,k2:********\n", "UPSTREAM_KEYS=app:********\n",
		"NATS_URL=nats://u:xxxxx@h:4222\n", "SHUTDOWN_TIMEOUT=1m30s\n", "TOKEN_MAX_LIFETIME=1h0m0s\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("printout lacks %q:\n%s", want, out)
		}
	}
}

// TestReadmeTableMatches: the README's short authproxy table agrees with the
// configuration table on every variable it shows.
func TestReadmeTableMatches(t *testing.T) {
	diffs, err := Vars.CheckDocFile(filepath.Join("..", "..", "..", "README.md"), "### authproxy", false, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}

func TestCORSOrigins(t *testing.T) {
	for _, tc := range []struct {
		origins, creds string
		want           string // joined origins; "error" for a refusal
	}{
		{"", "", ""},
		{"https://App.Example.com:443, http://localhost:3000", "", "https://app.example.com,http://localhost:3000"},
		{"http://x.example:80/", "true", "http://x.example"},
		{"*", "", "*"},
		{"*", "true", "error"},
		{"*,https://a.example", "", "error"},
		{"https://a.example/path", "", "error"},
		{"ftp://a.example", "", "error"},
		{"https://*.example.com", "", "error"},
		{"https://u:p@a.example", "", "error"},
		// Browsers send a host in Unicode as its ASCII form (xn--...):
		// this one would never match.
		{"https://bücher.example", "", "error"},
		{"https://xn--bcher-kva.example", "", "https://xn--bcher-kva.example"},
		// A zone (an interface) is never in a browser's Origin: this one
		// would never match either.
		{"http://[fe80::1%25eth0]:3000", "", "error"},
		{"https://[fe80::1%25eth0]", "", "error"},
	} {
		c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "CORS_ALLOWED_ORIGINS": tc.origins, "CORS_ALLOW_CREDENTIALS": tc.creds}))
		if tc.want == "error" {
			if err == nil || !strings.Contains(err.Error(), "CORS_") {
				t.Errorf("%q creds %q: err = %v, want a CORS problem", tc.origins, tc.creds, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.origins, err)
			continue
		}
		if got := strings.Join(c.CORSOrigins, ","); got != tc.want {
			t.Errorf("%q: origins %q, want %q", tc.origins, got, tc.want)
		}
	}
}

// TestCORSOriginsIPv6: an origin on an IPv6 address is kept as browsers
// send it in Origin (RFC 6454, the URL standard): in brackets, in its
// shortest lower-case form, without its scheme's default port.
func TestCORSOriginsIPv6(t *testing.T) {
	for origins, want := range map[string]string{
		"http://[::1]:80":                    "http://[::1]",
		"https://[2001:DB8::1]:443":          "https://[2001:db8::1]",
		"https://[2001:db8:0:0:0:0:0:1]":     "https://[2001:db8::1]",
		"http://[2001:db8:0:0:0:0:0:1]:8080": "http://[2001:db8::1]:8080",
		"http://[::1]:3000":                  "http://[::1]:3000",
	} {
		c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "CORS_ALLOWED_ORIGINS": origins}))
		if err != nil {
			t.Errorf("%q: %v", origins, err)
			continue
		}
		if got := strings.Join(c.CORSOrigins, ","); got != want {
			t.Errorf("%q: origins %q, want %q", origins, got, want)
		}
	}
}

// TestCORSHeaderNames: the extra allowed and exposed headers are header
// names, kept as written, without the built-in ones or repeats.
func TestCORSHeaderNames(t *testing.T) {
	for _, tc := range []struct {
		name, val string
		want      string // joined names; "error" for a refusal
	}{
		{"CORS_ALLOW_HEADERS", "", ""},
		{"CORS_ALLOW_HEADERS", " Idempotency-Key , traceparent,idempotency-key, authorization", "Idempotency-Key,traceparent"},
		{"CORS_EXPOSE_HEADERS", "ETag, Content-Disposition, x-request-id", "ETag,Content-Disposition"},
		{"CORS_ALLOW_HEADERS", "*", "error"},
		{"CORS_ALLOW_HEADERS", "X-Ok, Bad Name", "error"},
		{"CORS_EXPOSE_HEADERS", "X-A:b", "error"},
		{"CORS_EXPOSE_HEADERS", "X-\u00e9", "error"},
	} {
		c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "CORS_ALLOWED_ORIGINS": "https://a.example", tc.name: tc.val}))
		if tc.want == "error" {
			if err == nil || !strings.Contains(err.Error(), tc.name) {
				t.Errorf("%s=%q: err = %v, want a %s problem", tc.name, tc.val, err, tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s=%q: %v", tc.name, tc.val, err)
			continue
		}
		got := c.CORSAllowHeaders
		if tc.name == "CORS_EXPOSE_HEADERS" {
			got = c.CORSExposeHeaders
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("%s=%q: %q, want %q", tc.name, tc.val, got, tc.want)
		}
	}
}
