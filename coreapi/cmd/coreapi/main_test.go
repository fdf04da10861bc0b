package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/buildinfo"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

var testKey = base64.StdEncoding.EncodeToString([]byte("main-test-identity-key-0123456789abcdef"))

func TestCheckConfig(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL":      "postgres://app:hunter2@db:5432/tollgate",
		"IDENTITY_HMAC_KEY": testKey,
		"SIGNING_KEYS_DIR":  t.TempDir() + "\n",
	}
	var out bytes.Buffer
	// -check-config reads the signing-key directory: an empty one fails.
	// Neither SMTP_URL nor MAIL_TO_LOG is set: reported with it.
	err := run(context.Background(), []string{"-check-config"}, envOf(env), &out)
	if err == nil || !strings.Contains(err.Error(), "SIGNING_KEYS_DIR: ") || !strings.Contains(err.Error(), "no EdDSA key") {
		t.Fatalf("check-config with no signing key = %v, want a SIGNING_KEYS_DIR problem", err)
	}
	if !strings.Contains(err.Error(), "SMTP_URL / MAIL_TO_LOG: ") {
		t.Errorf("check-config with neither SMTP_URL nor MAIL_TO_LOG = %v, want that problem too", err)
	}
	env["MAIL_TO_LOG"] = "true"
	if err := run(context.Background(), []string{"keys", "generate"}, envOf(env), &out); err != nil {
		t.Fatalf("keys generate into SIGNING_KEYS_DIR (ending in a newline): %v", err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"-check-config"}, envOf(env), &out); err != nil {
		t.Fatalf("check-config: %v", err)
	}
	s := out.String()
	if !strings.Contains(s, "configuration ok") || !strings.Contains(s, "COREAPI_LISTEN_ADDR=127.0.0.1:8081") {
		t.Errorf("output:\n%s", s)
	}
	for _, secret := range []string{"hunter2", testKey} {
		if strings.Contains(s, secret) {
			t.Errorf("output leaks %q:\n%s", secret, s)
		}
	}

	if !strings.Contains(s, "\nTOKEN_MAX_LEEWAY=1m0s\n") || !strings.Contains(s, "\nDATABASE_URL=postgres://app:xxxxx@db:5432/tollgate\n") ||
		!strings.Contains(s, "\nMAIL_TO_LOG=true\n") {
		t.Errorf("output is not the NAME=value printout:\n%s", s)
	}

	// A signing key other users can read is named (the key is 0600 as
	// generated: no warning above).
	if strings.Contains(s, "# warning:") {
		t.Errorf("warning for a key of mode 0600:\n%s", s)
	}
	pems, _ := filepath.Glob(filepath.Join(strings.TrimSpace(env["SIGNING_KEYS_DIR"]), "*.pem"))
	if len(pems) != 1 {
		t.Fatalf("keys = %v, want one", pems)
	}
	if err := os.Chmod(pems[0], 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"-check-config"}, envOf(env), &out); err != nil {
		t.Fatalf("check-config with a key of mode 0644: %v (want a warning, not a refusal)", err)
	}
	if s := out.String(); !strings.Contains(s, "# warning: SIGNING_KEYS_DIR: "+pems[0]) || !strings.Contains(s, "configuration ok") {
		t.Errorf("check-config with a key of mode 0644 does not warn about it:\n%s", s)
	}

	env["DB_MAX_CONNS"] = "2"
	env["ACCESS_TOKEN_TTL"] = "forever"
	delete(env, "DATABASE_URL")
	err = run(context.Background(), []string{"serve", "-check-config"}, envOf(env), &out)
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for _, want := range []string{"DATABASE_URL", "DB_MAX_CONNS", "ACCESS_TOKEN_TTL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not report %s: %v", want, err)
		}
	}
	if err := run(context.Background(), []string{"frobnicate"}, envOf(env), &out); err == nil {
		t.Error("unknown command accepted")
	}
}

// TestServeAndShutdown starts the real binary's run on random ports, checks
// the public and admin servers, then cancels (SIGTERM) and expects a clean
// exit.
func TestServeAndShutdown(t *testing.T) {
	var out testkit.LogBuffer
	env := serveEnv(t, dbtest.New(t).URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, envOf(env), &out) }()

	var addr, admin string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no listening line in the log:\n%s", out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			var l struct {
				Msg       string `json:"msg"`
				Addr      string `json:"addr"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
				addr, admin = l.Addr, l.AdminAddr
			}
		}
	}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("http://" + admin + "/healthz"); code != 200 {
		t.Errorf("healthz = %d", code)
	}
	// Ready once the start's work is done, the catalog's record included.
	eventually.Within(t, 20*time.Second, func() error {
		if code, body := get("http://" + admin + "/readyz"); code != 200 {
			return fmt.Errorf("readyz = %d %s", code, body)
		}
		return nil
	})
	if code, body := get("http://" + addr + "/openapi.json"); code != 200 || !strings.Contains(body, `"openapi"`) {
		t.Errorf("openapi.json = %d", code)
	}
	if code, _ := get("http://" + addr + "/api/v1/users/me"); code != 401 {
		t.Errorf("unsigned /users/me = %d, want 401", code)
	}
	// Without SMTP_URL the mails go to the log, and the start says so.
	if !strings.Contains(out.String(), "SMTP_URL is unset") {
		t.Errorf("no warning about the unset SMTP_URL in the log:\n%s", out.String())
	}
	if code, body := get("http://" + addr + "/verify-email?token=x"); code != 200 || !strings.Contains(body, "<form") {
		t.Errorf("verify page = %d", code)
	}
	code, metrics := get("http://" + admin + "/metrics")
	if l := buildinfo.Read().Labels(); !strings.Contains(metrics, fmt.Sprintf(`coreapi_build_info{goversion=%q,revision=%q,version=%q} 1`, l[2], l[1], l[0])) {
		t.Errorf("metrics lack coreapi_build_info with %v", l)
	}
	for _, m := range []string{"coreapi_http_request_duration_seconds", "coreapi_db_queries_per_request", "go_goroutines", "coreapi_db_pool_max_conns",
		"coreapi_mail_failures_total", "coreapi_mail_sent_total"} {
		if code != 200 || !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("run after cancel = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if !strings.Contains(out.String(), `"msg":"stopped"`) {
		t.Errorf("no stopped line:\n%s", out.String())
	}
	if !strings.Contains(out.String(), `"db_queries":0`) {
		t.Errorf("access log lacks db_queries:\n%s", out.String())
	}
}

// TestServeRefusesOldSchema: serve on a database one migration behind stops
// at once and says what to run, instead of answering 500s.
func TestServeRefusesOldSchema(t *testing.T) {
	db := dbtest.New(t)
	var out testkit.LogBuffer
	if err := run(context.Background(), []string{"migrate", "down"}, envOf(map[string]string{"DATABASE_URL": db.URL}), &out); err != nil {
		t.Fatalf("migrate down: %v", err)
	}
	env := serveEnv(t, db.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, []string{"serve"}, envOf(env), &out)
	if err == nil || !strings.Contains(err.Error(), "coreapi migrate up") {
		t.Fatalf("serve on an old schema = %v, want a refusal naming `coreapi migrate up`\n%s", err, out.String())
	}
	if strings.Contains(out.String(), `"msg":"listening"`) {
		t.Error("serve listened before refusing")
	}
}

// serveEnv is the environment of `coreapi serve` on random loopback ports
// against the database at dbURL, with a fresh signing-key directory.
func serveEnv(t *testing.T, dbURL string) map[string]string {
	t.Helper()
	keysDir := t.TempDir()
	if err := run(context.Background(), []string{"keys", "generate", "-dir", keysDir}, envOf(nil), &testkit.LogBuffer{}); err != nil {
		t.Fatalf("keys generate: %v", err)
	}
	return map[string]string{
		"DATABASE_URL":        dbURL,
		"IDENTITY_HMAC_KEY":   testKey,
		"SIGNING_KEYS_DIR":    keysDir,
		"COREAPI_LISTEN_ADDR": "127.0.0.1:0",
		"COREAPI_ADMIN_ADDR":  "127.0.0.1:0",
		"SHUTDOWN_TIMEOUT":    "5s",
		"MAIL_TO_LOG":         "true", // the tests read the mails from the log
	}
}

// TestServeRefusesMailsToTheLogUnasked: without SMTP_URL the mails, and
// the one-time links in them, would go to the log; serve refuses to start
// unless MAIL_TO_LOG=true asks for that, and names both variables.
func TestServeRefusesMailsToTheLogUnasked(t *testing.T) {
	for _, toLog := range []string{"", "false"} {
		env := serveEnv(t, "postgres://nobody@127.0.0.1:1/none")
		env["MAIL_TO_LOG"] = toLog
		var out testkit.LogBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := run(ctx, []string{"serve"}, envOf(env), &out)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "SMTP_URL / MAIL_TO_LOG: set SMTP_URL") || !strings.Contains(err.Error(), "or MAIL_TO_LOG=true") {
			t.Fatalf("serve with MAIL_TO_LOG=%q and no SMTP_URL = %v, want a refusal naming both", toLog, err)
		}
		if strings.Contains(out.String(), `"msg":"listening"`) {
			t.Errorf("MAIL_TO_LOG=%q: serve listened before refusing", toLog)
		}
	}
}

// TestServeRefusesLocalhostLinksWithAMailServer: with SMTP_URL set and
// PUBLIC_BASE_URL left at its default, the mailed links would point at
// http://localhost:8080; serve and -check-config refuse to start.
func TestServeRefusesLocalhostLinksWithAMailServer(t *testing.T) {
	env := serveEnv(t, "postgres://nobody@127.0.0.1:1/none")
	delete(env, "MAIL_TO_LOG")
	env["SMTP_URL"] = "smtp://127.0.0.1:1"
	for _, args := range [][]string{{"serve"}, {"-check-config"}} {
		var out testkit.LogBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := run(ctx, args, envOf(env), &out)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "PUBLIC_BASE_URL: unset while SMTP_URL is set: mailed links would point at http://localhost:8080") {
			t.Fatalf("%q with SMTP_URL and no PUBLIC_BASE_URL = %v, want a refusal naming PUBLIC_BASE_URL", args, err)
		}
		if strings.Contains(out.String(), `"msg":"listening"`) {
			t.Errorf("%q listened before refusing", args)
		}
	}
}

// TestServeRefusesAMistypedSMTPURL: an SMTP_URL with a mistake in it
// (here starttls mistyped, which left STARTTLS opportunistic where the
// operator asked for it required) stops serve and -check-config before
// anything listens, naming the mistake; neither the error nor the log
// shows the mail server's password.
func TestServeRefusesAMistypedSMTPURL(t *testing.T) {
	env := serveEnv(t, "postgres://nobody@127.0.0.1:1/none")
	delete(env, "MAIL_TO_LOG")
	env["SMTP_URL"] = "smtp://mailer:secretpw@127.0.0.1:1?startls=required"
	env["PUBLIC_BASE_URL"] = "https://auth.example.com"
	for _, args := range [][]string{{"serve"}, {"-check-config"}} {
		var out testkit.LogBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := run(ctx, args, envOf(env), &out)
		cancel()
		if err == nil || !strings.Contains(err.Error(), `SMTP_URL: unknown query parameter "startls"`) {
			t.Fatalf("%q with SMTP_URL ?startls=required = %v, want a refusal naming the parameter", args, err)
		}
		if strings.Contains(err.Error()+out.String(), "secretpw") {
			t.Errorf("%q: the password shows in the error or the log:\n%v\n%s", args, err, out.String())
		}
		if strings.Contains(out.String(), `"msg":"listening"`) {
			t.Errorf("%q listened before refusing", args)
		}
	}
}

// TestLeftoverArgumentsRefused: an argument after a command's flags is
// refused, not ignored: `serve check-config` started serving instead of
// checking the configuration, `keys generate -dir D extra` made a key,
// and `migrate down all` would roll back one migration, not every one.
func TestLeftoverArgumentsRefused(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		"DATABASE_URL":      "postgres://app:hunter2@127.0.0.1:1/tollgate?connect_timeout=1",
		"IDENTITY_HMAC_KEY": testKey,
		"SIGNING_KEYS_DIR":  dir,
		// Where a server started by mistake would listen.
		"COREAPI_LISTEN_ADDR": "127.0.0.1:0",
		"COREAPI_ADMIN_ADDR":  "127.0.0.1:0",
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "check-config"}, `serve: unexpected argument "check-config": did you mean -check-config?`},
		{[]string{"-check-config", "serve"}, `serve: unexpected argument "serve"`},
		{[]string{"keys", "generate", "-dir", dir, "now"}, `keys generate: unexpected argument "now"`},
		{[]string{"migrate", "down", "all"}, `migrate down: unexpected argument "all": did you mean -all?`},
		{[]string{"migrate", "status", "-all", "x"}, `migrate status: unexpected argument "x"`},
	} {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := run(ctx, tc.args, envOf(env), &out)
		cancel()
		if err == nil || err.Error() != tc.want {
			t.Errorf("run(%q) = %v, want %s", tc.args, err, tc.want)
		}
	}
	if pems, _ := filepath.Glob(filepath.Join(dir, "*.pem")); len(pems) != 0 {
		t.Errorf("keys generate with a leftover argument made %v", pems)
	}
}

// TestMeaninglessFlagsRefused: a flag given to an action it means nothing
// to is refused before anything connects, naming the flag and where it
// belongs: `migrate up -all` and `migrate status -all` ran as if -all
// were not there, and `migrate -all down` took -all for the action. A
// command line that means nothing exits with status 2 (a leftover
// argument, an unknown flag or command too), one that ran and failed
// with 1.
func TestMeaninglessFlagsRefused(t *testing.T) {
	// Nothing listens there: a command that connected would fail otherwise.
	env := envOf(map[string]string{"DATABASE_URL": "postgres://app:hunter2@127.0.0.1:1/tollgate?connect_timeout=1"})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "up", "-all"}, "migrate up: -all applies to down only (migrate down -all rolls back every migration)"},
		{[]string{"migrate", "up", "-all=false"}, "migrate up: -all applies to down only (migrate down -all rolls back every migration)"},
		{[]string{"migrate", "status", "-all"}, "migrate status: -all applies to down only (migrate down -all rolls back every migration)"},
		{[]string{"migrate", "addresses", "-all"}, "migrate addresses: -all applies to down only (migrate down -all rolls back every migration)"},
		{[]string{"migrate", "-all", "down"}, `migrate: the action comes first, then its flags (migrate down -all), got "-all"`},
		{[]string{"migrate", "sideways"}, `migrate: unknown action "sideways" (want up, down, status or addresses)`},
		{[]string{"migrate"}, "migrate: want up, down, status or addresses"},
		{[]string{"migrate", "down", "-al"}, "flag provided but not defined: -al"},
		{[]string{"migrate", "down", "all"}, `migrate down: unexpected argument "all": did you mean -all?`},
		{[]string{"serve", "check-config"}, `serve: unexpected argument "check-config": did you mean -check-config?`},
		{[]string{"sideways"}, `unknown command "sideways" (want serve, migrate, keys, tenants, users, mfa or help)`},
		{[]string{"keys"}, "keys: want `keys generate -dir DIR [-alg EdDSA|ES256|RS256]`"},
		{[]string{"tenants", "suspend"}, tenantsUsage},
		{[]string{"users", "reset-mfa"}, usersUsage},
		{[]string{"mfa"}, mfaUsage},
	} {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := run(ctx, tc.args, env, &out)
		cancel()
		if err == nil || err.Error() != tc.want {
			t.Errorf("run(%q) = %v, want %s", tc.args, err, tc.want)
		}
		if code := exitCode(err); code != 2 {
			t.Errorf("run(%q): exit status %d, want 2", tc.args, code)
		}
	}
	// A command that ran and failed is status 1.
	err := run(context.Background(), []string{"migrate", "down", "-all"}, env, io.Discard)
	if err == nil || exitCode(err) != 1 {
		t.Errorf("migrate down -all against no database = %v, exit status %d; want a failure, status 1", err, exitCode(err))
	}
}

// TestHelpSucceeds: -h prints a command's flags and succeeds, as a Go
// program's flags do; it failed with "usage" (exit status 1).
func TestHelpSucceeds(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"-h"}, "-check-config"},
		{[]string{"serve", "-help"}, "-check-config"},
		{[]string{"migrate", "down", "-h"}, "-all"},
		{[]string{"keys", "generate", "-h"}, "-dir"},
	} {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := run(ctx, tc.args, envOf(nil), &out)
		cancel()
		if err != nil {
			t.Errorf("run(%q) = %v, want nil", tc.args, err)
		}
		if !strings.Contains(out.String(), tc.flag) {
			t.Errorf("run(%q) printed %q, want its flags", tc.args, out.String())
		}
	}
}

// TestHelpListsCommandsAndVariables: coreapi is configured by the
// environment alone, so `coreapi help`, `coreapi -help` and `coreapi serve
// -h` print every subcommand and every variable of the configuration table
// (a line each: its name, its default and its meaning), and succeed;
// `coreapi help` was an unknown command and -help printed two flags.
func TestHelpListsCommandsAndVariables(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-help"}, {"-h"}, {"serve", "-h"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, envOf(nil), &out); err != nil {
			t.Errorf("run(%q) = %v, want nil", args, err)
		}
		got := out.String()
		for name := range commands() {
			if !regexp.MustCompile(`(?m)^\s*coreapi \[?` + name + `\b`).MatchString(got) {
				t.Errorf("run(%q) does not name the command %s:\n%s", args, name, got)
			}
		}
		lines := map[string]string{}
		for _, line := range strings.Split(got, "\n") {
			if name, _, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
				lines[name] = line
			}
		}
		for _, v := range config.Vars {
			line, ok := lines[v.Name]
			if !ok {
				t.Errorf("run(%q) has no line for %s", args, v.Name)
				continue
			}
			if !strings.Contains(line, v.Default+v.DefaultDoc) || !strings.Contains(line, v.Help) {
				t.Errorf("run(%q): the line of %s, %q, lacks its default %q or its help %q", args, v.Name, line, v.Default+v.DefaultDoc, v.Help)
			}
		}
		if !strings.Contains(got, "-check-config") {
			t.Errorf("run(%q) does not show serve's flags:\n%s", args, got)
		}
	}
	if err := run(context.Background(), []string{"help", "serve"}, envOf(nil), io.Discard); err == nil || exitCode(err) != 2 {
		t.Errorf("help with an argument = %v, want a usage error (status 2)", err)
	}
}
