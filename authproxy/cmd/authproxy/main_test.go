package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/config"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

func envFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func stdoutFile(t *testing.T) (*os.File, func() string) {
	p := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	return f, func() string { f.Close(); b, _ := os.ReadFile(p); return string(b) }
}

func TestCheckConfig(t *testing.T) {
	out, read := stdoutFile(t)
	err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{"IDENTITY_HMAC_KEY": testenv.HMACKeyText}), out)
	if err != nil {
		t.Fatalf("run -check-config = %v", err)
	}
	s := read()
	if !strings.Contains(s, "configuration ok") || strings.Contains(s, testenv.HMACKeyText) {
		t.Fatalf("output = %s", s)
	}
}

func TestCheckConfigReportsEverything(t *testing.T) {
	out, _ := stdoutFile(t)
	err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
		"UPSTREAM_URL": "ftp://x", "MAX_STALENESS": "soon", "IDENTITY_HMAC_KEY": "c2hvcnQ=",
	}), out)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"UPSTREAM_URL", "MAX_STALENESS", "IDENTITY_HMAC_KEY"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "c2hvcnQ=") {
		t.Errorf("error leaks the key: %v", err)
	}
}

func TestCheckConfigBadRules(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte("upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\nroutes: [{prefix: /internal/x, upstream: notes, access: public}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := stdoutFile(t)
	err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
		"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "UPSTREAM_KEYS": testenv.AppKeysText, "RULES_FILE": p}), out)
	if err == nil || !strings.Contains(err.Error(), "internal") {
		t.Fatalf("run = %v, want a rules error about /internal", err)
	}
}

// TestTrustEveryoneWarned: TRUSTED_PROXY_CIDRS=0.0.0.0/0 (or ::/0) loads
// but lets any client (of that address family) choose its client IP and
// trace context: the start (and -check-config) says so; a real balancer's
// range says nothing.
func TestTrustEveryoneWarned(t *testing.T) {
	for cidrs, warned := range map[string]bool{"0.0.0.0/0": true, "10.0.0.0/8,::/0": true, "10.0.0.0/8,fd00::/8": false} {
		out, read := stdoutFile(t)
		err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
			"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "TRUSTED_PROXY_CIDRS": cidrs}), out)
		if err != nil {
			t.Fatal(err)
		}
		if s := read(); strings.Contains(s, "TRUSTED_PROXY_CIDRS holds") != warned {
			t.Errorf("TRUSTED_PROXY_CIDRS=%s: warned %v, want %v: %s", cidrs, !warned, warned, s)
		}
	}
}

func TestUpstreamURLDeprecated(t *testing.T) {
	out, read := stdoutFile(t)
	err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
		"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "UPSTREAM_URL": "http://127.0.0.1:8081"}), out)
	if err != nil {
		t.Fatal(err)
	}
	if s := read(); !strings.Contains(s, "UPSTREAM_URL is deprecated") {
		t.Fatalf("no deprecation warning: %s", s)
	}
}

func TestOldRulesFormatRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte("rules:\n  - {path: /api/**, access: protected}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := stdoutFile(t)
	err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
		"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "RULES_FILE": p}), out)
	if err == nil || !strings.Contains(err.Error(), "docs/operations.md#translating-a-rules-file-of-the-previous-format") {
		t.Fatalf("run = %v, want a pointer to the translation", err)
	}
}

// TestCheckConfigReportsRulesWithTheRest: a bad variable and a bad rules
// file are reported by one run.
func TestCheckConfigReportsRulesWithTheRest(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte("upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\nroutes: [{prefix: /internal/x, upstream: notes, access: public}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := stdoutFile(t)
	err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
		"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "UPSTREAM_KEYS": testenv.AppKeysText, "RULES_FILE": p + "\n",
		"NATS_URL": "http://127.0.0.1:4222", "TOKEN_LEEWAY": "2m", "MAX_STALENESS": "soon"}), out)
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for _, want := range []string{"NATS_URL", "TOKEN_LEEWAY", "MAX_STALENESS", "RULES_FILE", "/internal"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
}

// TestCheckConfigPrintout: -check-config prints NAME=value lines (the
// format coreapi's -check-config uses), secrets masked, durations as Go
// prints them.
func TestCheckConfigPrintout(t *testing.T) {
	out, read := stdoutFile(t)
	err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
		"IDENTITY_HMAC_KEY": testenv.HMACKeyText + "\n", "SHUTDOWN_TIMEOUT": "15m"}), out)
	if err != nil {
		t.Fatal(err)
	}
	s := read()
	for _, want := range []string{"\nIDENTITY_HMAC_KEY=********\n", "\nSHUTDOWN_TIMEOUT=15m0s\n", "\nTOKEN_LEEWAY=30s\n", "\nconfiguration ok\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, testenv.HMACKeyText) {
		t.Errorf("output shows the key:\n%s", s)
	}
}

// TestCheckConfigRouteTable: -check-config prints what the proxy will do
// with the rules file: one line per upstream (its key id, never the key)
// and one per route, the built-in ones included, sorted by prefix (routes
// of one prefix in the file's order), with the options that are set.
func TestCheckConfigRouteTable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(`upstreams:
  notes: {url: 'http://127.0.0.1:8082', key_id: app-notes, timeout: 2m}
  billing: {url: 'https://Billing.example.com', key_id: app-two, rewrite_host: true}
routes:
  - {prefix: /notes, methods: [POST], upstream: notes, access: protected, permissions: [notes:write, notes:admin],
     require_verified_email: true, require_mfa: true, max_auth_age: 5m}
  - {prefix: /notes, methods: [GET], upstream: notes, access: protected, permissions: [notes:read]}
  - {prefix: /billing, upstream: billing, access: optional, strip_prefix: true, max_body_bytes: 1048576}
  - {prefix: /live, methods: [GET], upstream: notes, access: public, websocket: true, stream_timeout: 10m}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, read := stdoutFile(t)
	err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
		"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "UPSTREAM_KEYS": testenv.AppKeysText, "RULES_FILE": p}), out)
	if err != nil {
		t.Fatal(err)
	}
	s := read()
	want := []string{
		"upstream core http://127.0.0.1:8081 key_id=core",
		"upstream billing https://Billing.example.com key_id=app-two rewrite_host=true host=billing.example.com",
		"upstream notes http://127.0.0.1:8082 key_id=app-notes timeout=2m0s",
		"route /.well-known GET,HEAD -> core public",
		"route /api/v1/auth any -> core protected",
		"route /api/v1/auth/token POST -> core optional ignore_bad_bearer=true",
		"route /billing any -> billing optional max_body_bytes=1048576 strip_prefix=true",
		"route /live GET,HEAD -> notes public websocket=true stream_timeout=10m0s",
		"route /notes POST -> notes protected permissions=notes:write,notes:admin require_verified_email=true require_mfa=true max_auth_age=5m0s",
		"route /notes GET,HEAD -> notes protected permissions=notes:read",
		"configuration ok",
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	at := 0 // the wanted lines appear in this order, each whole
	for _, w := range want {
		for at < len(lines) && lines[at] != w {
			at++
		}
		if at == len(lines) {
			t.Fatalf("output lacks the line %q (or has it out of order):\n%s", w, s)
		}
	}
	var routes []string
	for _, l := range lines {
		if strings.HasPrefix(l, "route ") {
			routes = append(routes, strings.Fields(l)[1])
		}
	}
	if !slices.IsSorted(routes) || len(routes) != len(rules.CorePrefixes())+4 {
		t.Errorf("routes by prefix: %v", routes)
	}
	for _, k := range strings.FieldsFunc(testenv.HMACKeyText+","+testenv.AppKeysText, func(r rune) bool { return r == ',' || r == ':' }) {
		if len(k) > 20 && strings.Contains(s, k) {
			t.Errorf("output shows a key:\n%s", s)
		}
	}
}

// TestLeftoverArgumentsRefused: an argument that is not a flag is refused,
// not ignored: `authproxy check-config` started the proxy instead of
// checking its configuration.
func TestLeftoverArgumentsRefused(t *testing.T) {
	env := envFrom(map[string]string{"IDENTITY_HMAC_KEY": testenv.HMACKeyText,
		// Where a proxy started by mistake would listen.
		"PROXY_LISTEN_ADDR": "127.0.0.1:0", "PROXY_ADMIN_ADDR": "127.0.0.1:0"})
	for args, want := range map[string]string{
		"check-config":              `unexpected argument "check-config": did you mean -check-config?`,
		"-check-config extra":       `unexpected argument "extra"`,
		"-check-config -- -version": `unexpected argument "-version"`,
	} {
		out, _ := stdoutFile(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := run(ctx, strings.Fields(args), env, out)
		cancel()
		if err == nil || err.Error() != want {
			t.Errorf("run(%s) = %v, want %s", args, err, want)
		}
	}
}

// TestHelpSucceeds: -h prints the flags and exits 0, as a Go program's
// flags do; it answered "flag: help requested" and exit status 1.
func TestHelpSucceeds(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		out, read := stdoutFile(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := run(ctx, []string{arg}, envFrom(nil), out)
		cancel()
		if err != nil {
			t.Errorf("run(%s) = %v, want nil", arg, err)
		}
		if got := read(); !strings.Contains(got, "-check-config") {
			t.Errorf("run(%s) printed %q, want the flags", arg, got)
		}
	}
}

// TestCheckConfigWarnsHeadWithoutGet: -check-config (and the start) names
// a route whose methods hold HEAD but not GET; the file still loads.
func TestCheckConfigWarnsHeadWithoutGet(t *testing.T) {
	for methods, warned := range map[string]bool{"[HEAD]": true, "[GET]": false} {
		p := filepath.Join(t.TempDir(), "rules.yaml")
		if err := os.WriteFile(p, []byte("upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\nroutes: [{prefix: /notes, methods: "+methods+", upstream: notes, access: public}]"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, read := stdoutFile(t)
		err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
			"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "UPSTREAM_KEYS": testenv.AppKeysText, "RULES_FILE": p}), out)
		if err != nil {
			t.Fatal(err)
		}
		if s := read(); strings.Contains(s, "route 1 (/notes): methods hold HEAD but not GET") != warned || !strings.Contains(s, "configuration ok") {
			t.Errorf("methods %s: want warned %v: %s", methods, warned, s)
		}
	}
}

// TestCheckConfigWarnsBuiltInsCovered: -check-config (and the start) names
// the built-in paths that an app's catch-all route will never get; a
// route covering none says nothing.
func TestCheckConfigWarnsBuiltInsCovered(t *testing.T) {
	for prefix, warned := range map[string]bool{"/": true, "/notes": false} {
		p := filepath.Join(t.TempDir(), "rules.yaml")
		if err := os.WriteFile(p, []byte("upstreams: {notes: {url: 'http://127.0.0.1:8082', key_id: app-notes}}\nroutes: [{prefix: "+prefix+", upstream: notes, access: public}]"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, read := stdoutFile(t)
		err := run(context.Background(), []string{"-check-config"}, envFrom(map[string]string{
			"IDENTITY_HMAC_KEY": testenv.HMACKeyText, "UPSTREAM_KEYS": testenv.AppKeysText, "RULES_FILE": p}), out)
		if err != nil {
			t.Fatal(err)
		}
		s := read()
		for _, path := range []string{"/openapi.json", "/.well-known", "/verify-email", "/reset-password", "/accept-invitation"} {
			if strings.Contains(s, "route 1 ("+prefix+"): the app never gets") != warned || warned && !strings.Contains(s, path) {
				t.Errorf("prefix %s: want warned %v, naming %s: %s", prefix, warned, path, s)
			}
		}
		if !strings.Contains(s, "configuration ok") {
			t.Errorf("prefix %s: no configuration ok: %s", prefix, s)
		}
	}
}

// TestHelpListsVariables: the proxy is configured by the environment
// alone, so -h, -help, --help and `authproxy help` print its flags and
// every variable of the configuration table (a line each: its name, its
// default and its meaning), and succeed; -help listed -check-config and
// -version only, and `help` was an unexpected argument.
func TestHelpListsVariables(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help", "help"} {
		out, read := stdoutFile(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := run(ctx, []string{arg}, envFrom(nil), out)
		cancel()
		if err != nil {
			t.Errorf("run(%s) = %v, want nil", arg, err)
		}
		got := read()
		lines := map[string]string{}
		for _, line := range strings.Split(got, "\n") {
			if name, _, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
				lines[name] = line
			}
		}
		for _, v := range config.Vars {
			line, ok := lines[v.Name]
			if !ok {
				t.Errorf("run(%s) has no line for %s", arg, v.Name)
				continue
			}
			if !strings.Contains(line, v.Default+v.DefaultDoc) || !strings.Contains(line, v.Help) {
				t.Errorf("run(%s): the line of %s, %q, lacks its default %q or its help %q", arg, v.Name, line, v.Default+v.DefaultDoc, v.Help)
			}
		}
		if !strings.Contains(got, "-check-config") {
			t.Errorf("run(%s) does not show the flags:\n%s", arg, got)
		}
	}
}
