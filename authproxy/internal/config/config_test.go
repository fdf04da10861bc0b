package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/shared/secretfile"
	"github.com/tollgate-auth/tollgate/shared/testca"
)

var key = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key}))
	if err != nil {
		t.Fatal(err)
	}
	// Everything binds loopback unless told otherwise; a pod sets
	// :8080 and :9090 (deploy/k8s).
	if c.ListenAddr != "127.0.0.1:8080" || c.AdminAddr != "127.0.0.1:9090" {
		t.Errorf("addrs = %s %s", c.ListenAddr, c.AdminAddr)
	}
	if c.IdentityURL.String() != "http://127.0.0.1:8081" || c.JWKSURL != "http://127.0.0.1:8081/.well-known/jwks.json" {
		t.Errorf("identity = %s jwks = %s", c.IdentityURL, c.JWKSURL)
	}
	if len(c.CoreKeys) != 1 || c.CoreKeys[0].ID != "core" || c.AppURL != "" || c.UpstreamURLSet {
		t.Errorf("core keys = %v, app url = %q, upstream url set = %v", c.CoreKeys, c.AppURL, c.UpstreamURLSet)
	}
	if c.Issuer != "http://localhost:8080" || c.Audience != "tollgate" || c.MaxStaleness != 30*time.Second {
		t.Errorf("issuer/audience/staleness = %s %s %s", c.Issuer, c.Audience, c.MaxStaleness)
	}
	if c.MaxBodyBytes != MaxStreamBufferBytes || c.NATSURL != "nats://127.0.0.1:4222" || !c.AccessLog {
		t.Errorf("body/nats/access = %d %s %v", c.MaxBodyBytes, c.NATSURL, c.AccessLog)
	}
}

// STREAM_MAX_PER_IP: 100 unless set, 0 turns the cap off, and a negative
// or malformed value stops the start.
func TestStreamMaxPerIP(t *testing.T) {
	for v, want := range map[string]int{"": 100, "0": 0, "7": 7} {
		vars := map[string]string{"IDENTITY_HMAC_KEY": key}
		if v != "" {
			vars["STREAM_MAX_PER_IP"] = v
		}
		c, err := Load(env(vars))
		if err != nil || c.StreamMaxPerIP != want {
			t.Errorf("STREAM_MAX_PER_IP=%q: %d, %v; want %d", v, c.StreamMaxPerIP, err, want)
		}
	}
	for _, v := range []string{"-1", "many", "1.5"} {
		_, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "STREAM_MAX_PER_IP": v}))
		if err == nil || !strings.Contains(err.Error(), "STREAM_MAX_PER_IP") {
			t.Errorf("STREAM_MAX_PER_IP=%q: %v, want refused", v, err)
		}
	}
}

func TestAllProblemsReported(t *testing.T) {
	_, err := Load(env(map[string]string{
		"PROXY_LISTEN_ADDR":   "nonsense",
		"UPSTREAM_URL":        "https://x/y",
		"TOKEN_ALGS":          "HS256,none",
		"TRUSTED_PROXY_CIDRS": "10.0.0.0/8,banana",
		"TOKEN_CACHE_MAX_TTL": "forever",
		"MAX_TOKEN_BYTES":     "-1",
		"LOG_LEVEL":           "loud",
		"ACCESS_LOG":          "perhaps",
	}))
	if err == nil {
		t.Fatal("Load accepted bad config")
	}
	for _, want := range []string{"PROXY_LISTEN_ADDR", "UPSTREAM_URL", "IDENTITY_HMAC_KEY", "HS256", "none",
		"banana", "TOKEN_CACHE_MAX_TTL", "MAX_TOKEN_BYTES", "LOG_LEVEL", "ACCESS_LOG"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestKeyMasked(t *testing.T) {
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "NATS_URL": "nats://u:secretpw@h:4222",
		// A credential in any URL: the key set's, coreapi's, an app's.
		"JWKS_URL": "https://keys:secretpw@auth.example/jwks.json", "IDENTITY_URL": "http://svc:secretpw@coreapi:8081",
		"UPSTREAM_URL": "http://svc:secretpw@coreapi:8081"}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	out := buf.String()
	if strings.Contains(out, key) || strings.Contains(out, "secretpw") || !strings.Contains(out, `"identity_hmac_key":"********"`) {
		t.Fatalf("secrets not masked: %s", out)
	}
	// An app's UPSTREAM_URL without UPSTREAM_KEYS: refused, the URLs masked.
	_, err = Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "IDENTITY_URL": "http://svc:secretpw@coreapi:8081",
		"UPSTREAM_URL": "http://app:secretpw@app:3000"}))
	if err == nil || !strings.Contains(err.Error(), "UPSTREAM_URL") || strings.Contains(err.Error(), "secretpw") {
		t.Fatalf("app URL without keys: %v", err)
	}
	if _, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": "short"})); err == nil || strings.Contains(err.Error(), "short\"") {
		t.Fatalf("short key: %v", err)
	}
}

func TestProjectionMaxFetches(t *testing.T) {
	for _, tt := range []struct {
		val  string
		want int
		ok   bool
	}{{"", 64, true}, {"8", 8, true}, {"0", 0, false}, {"-3", 0, false}, {"many", 0, false}} {
		m := map[string]string{"IDENTITY_HMAC_KEY": key}
		if tt.val != "" {
			m["PROJECTION_MAX_FETCHES"] = tt.val
		}
		c, err := Load(env(m))
		switch {
		case tt.ok && err != nil:
			t.Errorf("PROJECTION_MAX_FETCHES=%q: %v", tt.val, err)
		case tt.ok && c.ProjectionMaxFetches != tt.want:
			t.Errorf("PROJECTION_MAX_FETCHES=%q: got %d, want %d", tt.val, c.ProjectionMaxFetches, tt.want)
		case !tt.ok && (err == nil || !strings.Contains(err.Error(), "PROJECTION_MAX_FETCHES")):
			t.Errorf("PROJECTION_MAX_FETCHES=%q: err = %v, want it refused", tt.val, err)
		}
	}
}

// TestLeewayCapped: TOKEN_LEEWAY may not exceed TOKEN_MAX_LEEWAY, the
// deployment-wide cap coreapi keeps revoked sessions listed for.
func TestLeewayCapped(t *testing.T) {
	tests := []struct {
		name      string
		vars      map[string]string
		ok        bool
		leeway    time.Duration
		maxLeeway time.Duration
	}{
		{"defaults", map[string]string{}, true, 30 * time.Second, time.Minute},
		{"at the cap", map[string]string{"TOKEN_LEEWAY": "60s"}, true, time.Minute, time.Minute},
		{"above the default cap", map[string]string{"TOKEN_LEEWAY": "61s"}, false, 0, 0},
		{"above a lowered cap", map[string]string{"TOKEN_MAX_LEEWAY": "10s"}, false, 0, 0},
		{"raised together above a minute", map[string]string{"TOKEN_LEEWAY": "2m", "TOKEN_MAX_LEEWAY": "2m"}, false, 0, 0},
		{"cap above a minute", map[string]string{"TOKEN_MAX_LEEWAY": "61s"}, false, 0, 0},
		{"lowered together", map[string]string{"TOKEN_LEEWAY": "5s", "TOKEN_MAX_LEEWAY": "5s"}, true, 5 * time.Second, 5 * time.Second},
		{"zero both", map[string]string{"TOKEN_LEEWAY": "0s", "TOKEN_MAX_LEEWAY": "0s"}, true, 0, 0},
		{"bad cap", map[string]string{"TOKEN_MAX_LEEWAY": "soon"}, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"IDENTITY_HMAC_KEY": key}
			for k, v := range tt.vars {
				vars[k] = v
			}
			c, err := Load(env(vars))
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), "TOKEN_") {
					t.Fatalf("Load = %v, want an error naming the leeway", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Leeway != tt.leeway || c.MaxLeeway != tt.maxLeeway {
				t.Errorf("leeway %s max %s, want %s %s", c.Leeway, c.MaxLeeway, tt.leeway, tt.maxLeeway)
			}
		})
	}
}

var key2 = base64.StdEncoding.EncodeToString([]byte("abcdef0123456789abcdef0123456789"))
var key3 = base64.StdEncoding.EncodeToString([]byte("zyxwvuts0123456789abcdef01234567"))

func TestKeys(t *testing.T) {
	t.Run("IDENTITY_KEYS: first signs, all listed", func(t *testing.T) {
		c, err := Load(env(map[string]string{"IDENTITY_KEYS": "k2:" + key2 + ",k1:" + key}))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.CoreKeys) != 2 || c.CoreKeys[0].ID != "k2" || c.CoreKeys[1].ID != "k1" {
			t.Fatalf("core keys = %v", c.CoreKeys)
		}
	})
	bad := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"legacy and new together", map[string]string{"IDENTITY_KEYS": "k1:" + key, "IDENTITY_HMAC_KEY": key}, "both set"},
		{"no core key", map[string]string{}, "IDENTITY_KEYS"},
		{"short core key", map[string]string{"IDENTITY_KEYS": "k1:c2hvcnQ="}, "IDENTITY_KEYS"},
		{"app key with a core id", map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_KEYS": "core:" + key2}, "also a core key"},
		{"app key with a core secret", map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_KEYS": "app:" + key}, "also a core key"},
		{"two app keys with one secret", map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_KEYS": "app-a:" + key2 + ",app-b:" + key2}, "same secret"},
		{"two app keys with one secret in two encodings", map[string]string{"IDENTITY_HMAC_KEY": key,
			"UPSTREAM_KEYS": "app-a:" + key2 + ",app-b:" + strings.TrimRight(base64.URLEncoding.EncodeToString(mustB64(key2)), "=")}, "same secret"},
		{"unknown-kid refetches unbounded", map[string]string{"IDENTITY_HMAC_KEY": key, "JWKS_REFETCH_COOLDOWN": "0s"}, "JWKS_REFETCH_COOLDOWN"},
		{"a heartbeat timeout shorter than a relay's poll", map[string]string{"IDENTITY_HMAC_KEY": key, "NATS_HEARTBEAT_TIMEOUT": "1s"}, "NATS_HEARTBEAT_TIMEOUT"},
		{"app key list malformed", map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_KEYS": "nocolon"}, "UPSTREAM_KEYS"},
		{"UPSTREAM_URL as an app without UPSTREAM_KEYS", map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_URL": "http://127.0.0.1:9000"}, "set UPSTREAM_KEYS"},
		{"UPSTREAM_URL as an app with a rules file", map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_URL": "http://127.0.0.1:9000",
			"UPSTREAM_KEYS": "app:" + key2, "RULES_FILE": "/x.yaml"}, "RULES_FILE together"},
		{"IDENTITY_URL with a path", map[string]string{"IDENTITY_HMAC_KEY": key, "IDENTITY_URL": "http://core:8081/api"}, "IDENTITY_URL"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(env(tt.vars))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load = %v, want an error containing %q", err, tt.want)
			}
			for _, k := range []string{key, key2, key3} {
				if strings.Contains(err.Error(), k) {
					t.Fatalf("error leaks a key: %v", err)
				}
			}
		})
	}
}

func TestUpstreamURLAlias(t *testing.T) {
	t.Run("equal to IDENTITY_URL changes nothing", func(t *testing.T) {
		c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_URL": "http://127.0.0.1:8081/"}))
		if err != nil {
			t.Fatal(err)
		}
		if c.AppURL != "" || !c.UpstreamURLSet {
			t.Fatalf("app url = %q, set = %v", c.AppURL, c.UpstreamURLSet)
		}
	})
	t.Run("another URL is an app", func(t *testing.T) {
		c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_URL": "http://127.0.0.1:18500",
			"UPSTREAM_KEYS": "app:" + key2 + ",app2:" + key3}))
		if err != nil {
			t.Fatal(err)
		}
		if c.AppURL != "http://127.0.0.1:18500" || c.IdentityURL.String() != "http://127.0.0.1:8081" || len(c.UpstreamKeys) != 2 {
			t.Fatalf("app url = %q, identity url = %s, upstream keys = %v", c.AppURL, c.IdentityURL, c.UpstreamKeys)
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
		if strings.Contains(buf.String(), key2) || !strings.Contains(buf.String(), "app:***") {
			t.Fatalf("keys not masked: %s", buf.String())
		}
	})
}

// UPSTREAM_CA_FILE adds its certificates to the system's roots for
// https:// upstreams; a file that cannot be read or holds none stops the
// start.
func TestUpstreamCAFile(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "app CA")
	pemBytes := ca.PEM
	good, junk := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(good, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key}))
	if err != nil || c.UpstreamTLS == nil || c.UpstreamTLS.RootCAs != nil || c.UpstreamTLS.MinVersion != tls.VersionTLS12 || c.UpstreamTLS.InsecureSkipVerify {
		t.Fatalf("default: %+v, %v; want the system's roots, TLS 1.2 at least", c.UpstreamTLS, err)
	}
	c, err = Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_CA_FILE": good}))
	if err != nil || c.UpstreamTLS.RootCAs == nil {
		t.Fatalf("with a CA file: %v", err)
	}
	if _, err := ca.Issue(t, "app.internal").Cert.Verify(x509.VerifyOptions{Roots: c.UpstreamTLS.RootCAs, DNSName: "app.internal"}); err != nil {
		t.Fatalf("a certificate of the file's authority does not verify against the roots: %v", err)
	}
	// Beside a good certificate, a block that is none (here a damaged
	// one) is refused too, not skipped (envconfig.AppendCertificates).
	mixed := filepath.Join(dir, "mixed.pem")
	if err := os.WriteFile(mixed, append(append([]byte{}, pemBytes...), bytes.Replace(testca.New(t, "other CA").PEM, []byte("\n"), []byte("\n!"), 2)...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{junk, mixed, filepath.Join(dir, "missing.pem")} {
		if _, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_CA_FILE": f})); err == nil || !strings.Contains(err.Error(), "UPSTREAM_CA_FILE") {
			t.Errorf("UPSTREAM_CA_FILE=%s: %v, want it refused", f, err)
		}
	}
}

// An https:// IDENTITY_URL (port 443 unless given) is reached with TLS
// 1.2 at least, verified against the system's roots plus IDENTITY_CA_FILE
// (never UPSTREAM_CA_FILE's); an http:// one gets no TLS configuration,
// and an IDENTITY_CA_FILE it does not use is a warning. A file that cannot
// be read or holds no certificate stops the start.
func TestIdentityTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "coreapi CA")
	good, junk := ca.WriteCA(t), filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key}))
	if err != nil || c.IdentityTLS != nil || len(c.Warnings) != 0 {
		t.Fatalf("default http:// IDENTITY_URL: TLS %+v, warnings %q, %v; want none", c.IdentityTLS, c.Warnings, err)
	}
	c, err = Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "IDENTITY_URL": "https://coreapi-internal"}))
	if err != nil || c.IdentityURL.String() != "https://coreapi-internal:443" || c.JWKSURL != "https://coreapi-internal:443/.well-known/jwks.json" {
		t.Fatalf("https:// without a port: %v, %v", c.IdentityURL, err)
	}
	if cfg := c.IdentityTLS; cfg == nil || cfg.RootCAs != nil || cfg.MinVersion != tls.VersionTLS12 || cfg.InsecureSkipVerify {
		t.Fatalf("no CA file: %+v; want the system's roots, TLS 1.2 at least", cfg)
	}
	c, err = Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "IDENTITY_URL": "https://coreapi-internal:8081", "IDENTITY_CA_FILE": good}))
	if err != nil || c.IdentityTLS == nil || c.IdentityTLS.RootCAs == nil {
		t.Fatalf("with a CA file: %+v, %v", c.IdentityTLS, err)
	}
	leaf := ca.Issue(t, "coreapi-internal")
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: c.IdentityTLS.RootCAs, DNSName: "coreapi-internal"}); err != nil {
		t.Fatalf("a certificate of the file's CA does not verify: %v", err)
	}
	if c.UpstreamTLS.RootCAs != nil {
		t.Fatal("IDENTITY_CA_FILE is trusted for app upstreams")
	}
	c, err = Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "IDENTITY_URL": "https://coreapi-internal:8081", "UPSTREAM_CA_FILE": good}))
	if err != nil || c.IdentityTLS.RootCAs != nil {
		t.Fatalf("UPSTREAM_CA_FILE trusted for coreapi: %+v, %v", c.IdentityTLS, err)
	}
	// JWKS_URL alone may be https://.
	c, err = Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "JWKS_URL": "https://keys.internal/jwks.json", "IDENTITY_CA_FILE": good}))
	if err != nil || c.IdentityTLS == nil || c.IdentityTLS.RootCAs == nil {
		t.Fatalf("https:// JWKS_URL: %+v, %v", c.IdentityTLS, err)
	}
	c, err = Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "IDENTITY_CA_FILE": good}))
	if err != nil || c.IdentityTLS != nil || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "IDENTITY_CA_FILE is set but") {
		t.Fatalf("unused IDENTITY_CA_FILE: TLS %+v, warnings %q, %v", c.IdentityTLS, c.Warnings, err)
	}
	for _, f := range []string{junk, filepath.Join(dir, "missing.pem")} {
		if _, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "IDENTITY_URL": "https://core:8081", "IDENTITY_CA_FILE": f})); err == nil || !strings.Contains(err.Error(), "IDENTITY_CA_FILE") {
			t.Errorf("IDENTITY_CA_FILE=%s: %v, want it refused", f, err)
		}
	}
	for _, v := range []string{"ftp://core:8081", "https://core:8081/api", "https://"} {
		if _, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "IDENTITY_URL": v})); err == nil || !strings.Contains(err.Error(), "IDENTITY_URL") {
			t.Errorf("IDENTITY_URL=%s: %v, want it refused", v, err)
		}
	}
	// UPSTREAM_URL (an app, deprecated) stays http:// only.
	if _, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "UPSTREAM_URL": "https://app:8443", "UPSTREAM_KEYS": "app:" + key2})); err == nil || !strings.Contains(err.Error(), "UPSTREAM_URL") {
		t.Errorf("https:// UPSTREAM_URL: %v, want it refused", err)
	}
}

// TestBadNATSURLHidesCredential: a NATS_URL that does not parse (a
// password holding an unescaped '%') or has no host is refused without
// its credential.
func TestBadNATSURLHidesCredential(t *testing.T) {
	for _, v := range []string{"nats://app:p%zzsecretpw@nats:4222", "nats://secretpw@", "nats://app:secretpw@/x"} {
		_, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "NATS_URL": v}))
		if err == nil || !strings.Contains(err.Error(), "NATS_URL") {
			t.Fatalf("NATS_URL=%s: Load() = %v, want a NATS_URL problem", v, err)
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("NATS_URL=%s: the problem shows the credential: %v", v, err)
		}
	}
}

// TestRefusedURLProblemsHideCredentials: a URL refused for its form (a
// path, a query, another scheme, an unescaped '%') is quoted in the
// problem, which is printed and logged, without its user information or
// query, whichever variable holds it; its host is still shown.
func TestRefusedURLProblemsHideCredentials(t *testing.T) {
	for _, tc := range []struct{ name, value, host string }{
		{"IDENTITY_URL", "http://svc:secretpw@coreapi:8081/api", "coreapi:8081"},
		{"IDENTITY_URL", "http://secretpw@coreapi:8081/api", "coreapi:8081"},
		{"IDENTITY_URL", "http://svc:p%zzsecretpw@coreapi:8081", "coreapi:8081"},
		{"IDENTITY_URL", "http://coreapi:8081?token=secretpw", "coreapi:8081"},
		{"UPSTREAM_URL", "ftp://app:secretpw@app.internal:3000", "app.internal:3000"},
		{"JWKS_URL", "ftp://keys:secretpw@coreapi:8081/jwks.json", "coreapi:8081"},
		{"JWKS_URL", "https://keys:p%zzsecretpw@coreapi:8081/jwks.json", "coreapi:8081"},
		{"CORS_ALLOWED_ORIGINS", "https://u:secretpw@app.example.com", "app.example.com"},
		{"CORS_ALLOWED_ORIGINS", "https://app.example.com?sig=secretpw", "app.example.com"},
	} {
		_, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, tc.name: tc.value}))
		if err == nil || !strings.Contains(err.Error(), tc.name+": ") {
			t.Errorf("%s=%s: Load() = %v, want a %s problem", tc.name, tc.value, err, tc.name)
			continue
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%s=%s: the problem shows the credential: %v", tc.name, tc.value, err)
		}
		if !strings.Contains(err.Error(), tc.host) {
			t.Errorf("%s=%s: the problem does not name the host %s: %v", tc.name, tc.value, tc.host, err)
		}
	}
}

// TestListenAddrsCheckedAsTheStartUsesThem: a listen address the start
// could not listen on (a port that is not a number or above 65535), or the
// two listeners on one port, is refused at load, so -check-config says so.
func TestListenAddrsCheckedAsTheStartUsesThem(t *testing.T) {
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"PROXY_LISTEN_ADDR": ":99999"}, "PROXY_LISTEN_ADDR: want a port from 0 to 65535"},
		{map[string]string{"PROXY_ADMIN_ADDR": ":metrics"}, "PROXY_ADMIN_ADDR: want a port from 0 to 65535"},
		{map[string]string{"PROXY_ADMIN_ADDR": ":8080"}, "PROXY_LISTEN_ADDR 127.0.0.1:8080 and PROXY_ADMIN_ADDR :8080 take the same port"},
		{map[string]string{"PROXY_LISTEN_ADDR": "127.0.0.1:9090"}, "PROXY_LISTEN_ADDR 127.0.0.1:9090 and PROXY_ADMIN_ADDR 127.0.0.1:9090 take the same port"},
		{map[string]string{"PROXY_LISTEN_ADDR": ":9090"}, "PROXY_LISTEN_ADDR :9090 and PROXY_ADMIN_ADDR 127.0.0.1:9090 take the same port"},
	} {
		tc.vars["IDENTITY_HMAC_KEY"] = key
		if _, err := Load(env(tc.vars)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: Load() = %v, want %q", tc.vars, err, tc.want)
		}
	}
	if _, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "PROXY_LISTEN_ADDR": "127.0.0.1:0", "PROXY_ADMIN_ADDR": "127.0.0.1:0"})); err != nil {
		t.Errorf("both on port 0: %v", err)
	}
}

// TestSizesCapped: MAX_BODY_BYTES is at most what a route may set (1 GiB:
// a body is held in memory until it is forwarded), and the memory budgets
// in MiB at most 1 TiB: counted in bytes, a budget of 2^43 MiB or more
// wrapped around, which left the caches one entry each or took the bound
// off the request bodies.
func TestSizesCapped(t *testing.T) {
	for name, v := range map[string]string{
		"MAX_BODY_BYTES":  "2147483648",
		"CACHE_MEMORY_MB": "17592186044416",
		"BODY_MEMORY_MB":  "8796093022208",
	} {
		c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, name: v}))
		if err == nil || !strings.Contains(err.Error(), name+": "+v+" is above the maximum") {
			t.Errorf("%s=%s: Load() = %v, want it refused", name, v, err)
		}
		if c.CacheMemoryMB<<20 <= 0 || int64(c.BodyMemoryMB)<<20 <= 0 {
			t.Errorf("%s=%s: budgets %d MiB and %d MiB wrap around in bytes", name, v, c.CacheMemoryMB, c.BodyMemoryMB)
		}
	}
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "MAX_BODY_BYTES": "1073741824",
		"CACHE_MEMORY_MB": "1048576", "BODY_MEMORY_MB": "1048576"}))
	if err != nil || c.MaxBodyBytes != rules.MaxRouteBodyBytes || c.CacheMemoryMB != MaxStreamBufferBytes || c.BodyMemoryMB != 1<<20 {
		t.Errorf("the largest sizes: %v; got %d, %d MiB, %d MiB", err, c.MaxBodyBytes, c.CacheMemoryMB, c.BodyMemoryMB)
	}
}

// TestIssuerIsAnAbsoluteURL: TOKEN_ISSUER must be an absolute http(s)
// URL, as coreapi requires of its own: an issuer without a scheme
// ("auth.example.com", "localhost:8080"), or of another scheme, was
// accepted, and since coreapi issues no token with such an iss the proxy
// then refused every token 401 invalid_token.
func TestIssuerIsAnAbsoluteURL(t *testing.T) {
	for _, bad := range []string{"auth.example.com", "localhost:8080", "https://", "ftp://auth.example.com", "urn:tollgate", "/auth"} {
		_, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "TOKEN_ISSUER": bad}))
		if err == nil || !strings.Contains(err.Error(), "TOKEN_ISSUER: ") {
			t.Errorf("TOKEN_ISSUER=%s: Load() = %v, want it refused", bad, err)
		}
	}
	for _, good := range []string{"https://auth.example.com", "http://localhost:8080", "https://example.com/auth/", "https://auth.example.com:8443"} {
		c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "TOKEN_ISSUER": good}))
		if err != nil || c.Issuer != good {
			t.Errorf("TOKEN_ISSUER=%s: Load() = %v, issuer %q", good, err, c.Issuer)
		}
	}
}

// TestMaxTokenBytesCapped: MAX_TOKEN_BYTES is at most 64 KiB, since each
// connection's header buffer grows with it.
func TestMaxTokenBytesCapped(t *testing.T) {
	_, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "MAX_TOKEN_BYTES": "65537"}))
	if err == nil || !strings.Contains(err.Error(), "MAX_TOKEN_BYTES: 65537 is above the maximum of 65536") {
		t.Errorf("MAX_TOKEN_BYTES=65537: Load() = %v, want it refused", err)
	}
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "MAX_TOKEN_BYTES": "65536"}))
	if err != nil || c.MaxTokenBytes != MaxTokenBytes {
		t.Errorf("MAX_TOKEN_BYTES=65536: %v, got %d", err, c.MaxTokenBytes)
	}
}

// TestStreamBufferBytesCapped: STREAM_BUFFER_BYTES is at most 1 MiB. Any
// size was accepted, and each stream allocates two buffers of it as it
// opens: STREAM_BUFFER_BYTES=8000000000000 loaded, and the first stream
// stopped the proxy with a fatal out of memory.
func TestStreamBufferBytesCapped(t *testing.T) {
	for _, v := range []string{"1048577", "8000000000000"} {
		_, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "STREAM_BUFFER_BYTES": v}))
		if err == nil || !strings.Contains(err.Error(), "STREAM_BUFFER_BYTES: "+v+" is above the maximum of 1048576") {
			t.Errorf("STREAM_BUFFER_BYTES=%s: Load() = %v, want it refused", v, err)
		}
	}
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "STREAM_BUFFER_BYTES": "1048576"}))
	if err != nil || c.StreamBufferBytes != MaxStreamBufferBytes {
		t.Errorf("STREAM_BUFFER_BYTES=1048576: %v, got %d", err, c.StreamBufferBytes)
	}
}

// TestCacheSizesCapped: TOKEN_CACHE_SIZE and PROJECTION_CACHE_SIZE above
// 2^30 entries are refused at load. They were accepted whatever their
// size, and -check-config said the configuration was ok: the token cache
// allocates its slots at start, so TOKEN_CACHE_SIZE=1000000000000000 (a
// budget in bytes written as a count) stopped the start with a fatal out
// of memory, and the projection cache counts its cost in bytes, which
// PROJECTION_CACHE_SIZE=9000000000000000 wrapped below 0 ("projection
// cache: MaxCost can't be negative").
func TestCacheSizesCapped(t *testing.T) {
	for _, name := range []string{"TOKEN_CACHE_SIZE", "PROJECTION_CACHE_SIZE"} {
		for _, v := range []string{"1073741825", "1000000000000000", "9000000000000000", "9223372036854775807"} {
			_, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, name: v}))
			if err == nil || !strings.Contains(err.Error(), name+": "+v+" is above the maximum of 1073741824") {
				t.Errorf("%s=%s: Load() = %v, want it refused", name, v, err)
			}
		}
	}
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "TOKEN_CACHE_SIZE": "1073741824", "PROJECTION_CACHE_SIZE": "1073741824"}))
	if err != nil || c.TokenCacheSize != MaxCacheEntries || c.ProjectionCacheSize != MaxCacheEntries {
		t.Errorf("the largest cache sizes: %v; got %d and %d", err, c.TokenCacheSize, c.ProjectionCacheSize)
	}
}

// TestOversizedKeyFilesRefused: a key file of more than
// secretfile.MaxSize bytes is refused naming its path, whatever it holds
// (here a valid key list and padding): a variable pointed at the wrong
// file (a log, /dev/zero) was read whole into memory.
func TestOversizedKeyFilesRefused(t *testing.T) {
	dir := t.TempDir()
	key2 := base64.StdEncoding.EncodeToString([]byte("app-key-app-key-app-key-app-key-"))
	pad := strings.Repeat("\n", secretfile.MaxSize)
	for _, tc := range []struct{ name, content string }{
		{"IDENTITY_KEYS_FILE", "core:" + key + pad},
		{"IDENTITY_HMAC_KEY_FILE", key + pad},
		{"UPSTREAM_KEYS_FILE", "app:" + key2 + pad},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		vars := map[string]string{tc.name: p}
		if tc.name == "UPSTREAM_KEYS_FILE" {
			vars["IDENTITY_HMAC_KEY"] = key
		}
		_, err := Load(env(vars))
		if err == nil || !strings.Contains(err.Error(), p+": more than 64 KiB: not a key file") {
			t.Errorf("%s of %d bytes: Load() = %v, want it refused", tc.name, len(tc.content), err)
		}
		if err := os.WriteFile(p, []byte(strings.TrimRight(tc.content, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(env(vars)); err != nil {
			t.Errorf("%s holding its keys alone: %v", tc.name, err)
		}
	}
}

func mustB64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestKeyFilesOpenToOthersWarned: a key file other users of the host can
// read loads, with a warning naming it; one readable by its group only,
// as the manifests' defaultMode 0440 mounts it, is not warned about.
func TestKeyFilesOpenToOthersWarned(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	core := write("core", "k1:"+key+"\n", 0o440)
	app := write("app", "app-notes:"+key2+"\n", 0o644)
	c, err := Load(env(map[string]string{"IDENTITY_KEYS_FILE": core, "UPSTREAM_KEYS_FILE": app}))
	if err != nil {
		t.Fatalf("Load() = %v, want the files loaded (a warning, not a refusal)", err)
	}
	if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "UPSTREAM_KEYS_FILE: "+app+" ") || !strings.Contains(c.Warnings[0], "mode 0644") {
		t.Fatalf("warnings = %q, want one for UPSTREAM_KEYS_FILE %s, mode 0644", c.Warnings, app)
	}
}

// A heartbeat timeout longer than MAX_STALENESS loads with a warning: the
// proxy learns that the relays went silent only when the timeout ends,
// and trusts what it cached until then, so the timeout, not
// MAX_STALENESS, bounds how long after the last heartbeat a revocation
// left in the outbox goes unapplied. The defaults, 0 (not watched) and a
// timeout equal to MAX_STALENESS give none.
func TestHeartbeatTimeoutLongerThanStalenessWarned(t *testing.T) {
	for _, tc := range []struct {
		timeout, staleness string
		warned             bool
	}{
		{"", "", false},
		{"0", "5s", false},
		{"5s", "5s", false},
		{"10s", "5s", true},
		{"10s", "0s", true},
	} {
		vars := map[string]string{"IDENTITY_HMAC_KEY": key}
		if tc.timeout != "" {
			vars["NATS_HEARTBEAT_TIMEOUT"] = tc.timeout
		}
		if tc.staleness != "" {
			vars["MAX_STALENESS"] = tc.staleness
		}
		c, err := Load(env(vars))
		if err != nil {
			t.Fatalf("timeout %q, staleness %q: %v", tc.timeout, tc.staleness, err)
		}
		warned := false
		for _, w := range c.Warnings {
			if strings.HasPrefix(w, "NATS_HEARTBEAT_TIMEOUT ") && strings.Contains(w, "MAX_STALENESS") {
				warned = true
			}
		}
		if warned != tc.warned {
			t.Errorf("timeout %q, staleness %q: warnings %q; want the heartbeat warning: %v", tc.timeout, tc.staleness, c.Warnings, tc.warned)
		}
	}
}

// TestStreamDrainLongerThanShutdown: a STREAM_DRAIN_TIMEOUT the shutdown
// deadline would cut loads, with a warning; a shorter one without.
func TestStreamDrainLongerThanShutdown(t *testing.T) {
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "STREAM_DRAIN_TIMEOUT": "20s", "SHUTDOWN_TIMEOUT": "15s"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "STREAM_DRAIN_TIMEOUT (20s) is not shorter than SHUTDOWN_TIMEOUT (15s)") {
		t.Errorf("warnings %q, want one about STREAM_DRAIN_TIMEOUT", c.Warnings)
	}
	c, err = Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "STREAM_DRAIN_TIMEOUT": "5s", "SHUTDOWN_TIMEOUT": "15s"}))
	if err != nil || len(c.Warnings) != 0 {
		t.Errorf("shorter drain: warnings %q, %v; want none", c.Warnings, err)
	}
}

// A CIDR written in its IPv4-mapped IPv6 form (::ffff:10.0.0.0/104, as a
// dual-stack host's tools print an IPv4 peer) covers the IPv4 addresses
// it names: the proxy compares peers and X-Forwarded-For hops as IPv4.
func TestTrustedProxyCIDRsMappedIPv4(t *testing.T) {
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "TRUSTED_PROXY_CIDRS": "::ffff:10.0.0.0/104, ::ffff:192.168.1.7/128"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.1.2.3", "192.168.1.7"} {
		ip := netip.MustParseAddr(a)
		found := false
		for _, p := range c.TrustedCIDRs {
			found = found || p.Contains(ip)
		}
		if !found {
			t.Errorf("TRUSTED_PROXY_CIDRS %v does not cover %s", c.TrustedCIDRs, a)
		}
	}
	if got := c.String(); !strings.Contains(got, "TRUSTED_PROXY_CIDRS=10.0.0.0/8,192.168.1.7/32\n") {
		t.Errorf("printout:\n%s", got)
	}
}

// TestTrustedProxyCIDRsShortMappedRefused: an IPv4-mapped prefix shorter
// than /96 (::ffff:10.0.0.0/64) names no IPv4 range, and masked it is
// ::/64, IPv6 addresses the operator never meant: refused, naming the
// IPv4 form to write instead.
func TestTrustedProxyCIDRsShortMappedRefused(t *testing.T) {
	for _, s := range []string{"::ffff:10.0.0.0/64", "::ffff:0.0.0.0/95", "::ffff:10.1.2.3/0"} {
		c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "TRUSTED_PROXY_CIDRS": s}))
		if err == nil || !strings.Contains(err.Error(), "TRUSTED_PROXY_CIDRS") || !strings.Contains(err.Error(), "shorter than /96") {
			var got []netip.Prefix
			if c != nil {
				got = c.TrustedCIDRs
			}
			t.Errorf("TRUSTED_PROXY_CIDRS=%s: loaded as %v (%v), want refused", s, got, err)
		}
	}
	if _, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "TRUSTED_PROXY_CIDRS": "::ffff:0.0.0.0/96"})); err != nil {
		t.Errorf("::ffff:0.0.0.0/96: %v, want it read as 0.0.0.0/0", err)
	}
}

// TestTrustEveryPeerWarningNamesTheFamily: peers are compared in their
// IPv4 form, so ::/0 trusts every IPv6 peer and no IPv4 one, and
// 0.0.0.0/0 every IPv4 peer: the warning says which.
func TestTrustEveryPeerWarningNamesTheFamily(t *testing.T) {
	for cidrs, want := range map[string]string{
		"::/0":              "TRUSTED_PROXY_CIDRS holds ::/0, which trusts every IPv6 peer",
		"0.0.0.0/0":         "TRUSTED_PROXY_CIDRS holds 0.0.0.0/0, which trusts every IPv4 peer",
		"::ffff:0.0.0.0/96": "TRUSTED_PROXY_CIDRS holds 0.0.0.0/0, which trusts every IPv4 peer",
	} {
		c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "TRUSTED_PROXY_CIDRS": cidrs}))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], want) {
			t.Errorf("TRUSTED_PROXY_CIDRS=%s: warnings %q, want one starting %q", cidrs, c.Warnings, want)
		}
	}
}

// TestTracingHeaderFiles: the exporter's headers (a collector's key) come
// from OTEL_EXPORTER_OTLP_HEADERS_FILE or OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE
// as the proxy's other secrets come from their _FILE variables: read
// through the configuration table, never printed, and a file open to
// other users is warned about.
func TestTracingHeaderFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_HEADERS_FILE", "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE"} {
		m := map[string]string{"IDENTITY_KEYS": "k1:" + key, "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example", k: write(k, "api-key=otel-s3cret\n", 0o440)}
		c, err := Load(env(m))
		if err != nil {
			t.Fatalf("%s: Load() = %v", k, err)
		}
		if c.Tracing.Export.Headers["api-key"] != "otel-s3cret" || len(c.Warnings) != 0 {
			t.Errorf("%s: headers %q, warnings %q; want the file's, none", k, c.Tracing.Export.Headers, c.Warnings)
		}
		if strings.Contains(c.String(), "otel-s3cret") {
			t.Errorf("%s: the printout shows the key:\n%s", k, c)
		}
		m[k] = write(k+"-open", "api-key=otel-s3cret\n", 0o644)
		if c, err = Load(env(m)); err != nil || len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], k+": "+m[k]+" ") {
			t.Errorf("%s open to others: warnings %q, %v; want one naming it", k, c.Warnings, err)
		}
	}
}
