// Command stack runs the whole Tollgate stack on one machine, for `make run`:
// on the PostgreSQL server of $DATABASE_URL it creates (if missing) and
// migrates a database of its own, `tollgate` (never the server's `postgres`);
// it starts an embedded NATS server (unless NATS_URL is set), creates
// development keys under .data/ (signing keys, the identity HMAC key, the
// notes app's key and the MFA encryption key), builds and starts coreapi (127.0.0.1:8081),
// the example notes app (127.0.0.1:8082) and authproxy (127.0.0.1:8080) in
// front of both, seeds a demo tenant, starts Mailpit (SMTP 127.0.0.1:1025, UI
// 127.0.0.1:8025, built from the module proxy into .data/) unless SMTP_URL
// is set, and prints a curl tour. Every port is
// on 127.0.0.1 unless a flag says otherwise. Ctrl-C, SIGTERM or SIGHUP (a
// closed terminal) stops everything in order.
//
// Every step is idempotent: running it again reuses the keys, the database
// and the demo users. `stack -reset` (make reset) drops the database the
// last run recorded under .data/ (record.go), on that server only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate-auth/tollgate/deploy/internal/repo"
	"github.com/tollgate-auth/tollgate/shared/buildinfo"
	"github.com/tollgate-auth/tollgate/shared/envconfig"
)

func main() {
	// SIGHUP: the terminal was closed. Left to its default it killed this
	// runner at once, leaving the services to die unordered (Linux) or to
	// run on as orphans holding the ports (elsewhere).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	stderr := &lockedWriter{w: os.Stderr}
	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("component", "stack")
	if err := run(ctx, logger, os.Args[1:], os.Stdout, stderr); err != nil {
		if ctx.Err() != nil {
			// Ctrl-C during start-up: everything started has been stopped.
			logger.Info("interrupted", "during", err.Error())
			return
		}
		logger.Error("stack stopped", "err", err)
		stop()
		os.Exit(1)
	}
}

type options struct {
	dataDir     string
	seed        bool
	email       string
	password    string
	tenant      string
	memberEmail string
	coreAddr    string
	coreAdmin   string
	proxyAddr   string
	proxyAdmin  string
	// Mailpit's SMTP and web UI/API addresses (when SMTP_URL is unset).
	mailSMTPAddr string
	mailUIAddr   string
	// mailUI is the Mailpit UI the tour points at; empty when mail goes
	// to the user's SMTP_URL.
	mailUI string
	// mailAuth is Mailpit's UI and API user and password ("user:password").
	mailAuth   string
	notesAddr  string
	notesAdmin string
	database   string
	reset      bool
	readyWait  time.Duration
	stopWait   time.Duration
	// traces: receive coreapi's and authproxy's spans on tracesAddr and
	// print each trace (traces.go).
	traces     bool
	tracesAddr string
	// userApps: the variables (with their file names) by which the
	// environment replaced the example's route table or permission
	// catalog; the tour's /notes steps need both of the example's.
	userApps []string
}

func parseFlags(args []string, root string) (options, error) {
	fs := flag.NewFlagSet("stack", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.dataDir, "data", filepath.Join(root, ".data"), "directory for binaries, keys and the HMAC key")
	noSeed := fs.Bool("no-seed", false, "do not create the demo tenant and users, nor print the tour")
	fs.StringVar(&o.email, "email", "admin@example.com", "demo admin email")
	fs.StringVar(&o.password, "password", "tollgate-demo-password", "demo admin (and member) password")
	fs.StringVar(&o.tenant, "tenant", "Demo", "demo tenant name")
	fs.StringVar(&o.memberEmail, "member-email", "member@example.com", "demo member email")
	// The defaults are the port contract; tests run stacks side by side.
	fs.StringVar(&o.coreAddr, "core-addr", "127.0.0.1:8081", "coreapi listen address (loopback)")
	fs.StringVar(&o.coreAdmin, "core-admin-addr", "127.0.0.1:9091", "coreapi admin address")
	fs.StringVar(&o.proxyAddr, "proxy-addr", "127.0.0.1:8080", "authproxy listen address")
	fs.StringVar(&o.proxyAdmin, "proxy-admin-addr", "127.0.0.1:9090", "authproxy admin address")
	fs.StringVar(&o.notesAddr, "notes-addr", defaultNotesAddr, "example notes app listen address (loopback)")
	fs.StringVar(&o.notesAdmin, "notes-admin-addr", "127.0.0.1:9092", "example notes app admin address")
	fs.StringVar(&o.database, "database", "tollgate", "the stack's own database on the server of DATABASE_URL (created if missing)")
	fs.BoolVar(&o.reset, "reset", false, "drop the database make run recorded in the data directory (when on this server, and created by the stack) and exit (make reset, which also removes .data/)")
	fs.StringVar(&o.mailSMTPAddr, "mail-smtp-addr", "127.0.0.1:1025", "Mailpit SMTP address (unless SMTP_URL is set)")
	fs.StringVar(&o.mailUIAddr, "mail-ui-addr", "127.0.0.1:8025", "Mailpit web UI and API address (unless SMTP_URL is set)")
	fs.DurationVar(&o.readyWait, "ready-timeout", 90*time.Second, "how long each service may take to become ready")
	fs.DurationVar(&o.stopWait, "stop-timeout", 20*time.Second, "how long each service may take to stop after SIGTERM before it is killed")
	fs.BoolVar(&o.traces, "traces", false, "receive coreapi's and authproxy's traces over OTLP/HTTP on -traces-addr and print each one (make run TRACES=1)")
	fs.StringVar(&o.tracesAddr, "traces-addr", "127.0.0.1:4318", "OTLP/HTTP address of -traces")
	fs.Bool("version", false, "print the version, commit and Go version, and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.seed = !*noSeed
	abs, err := filepath.Abs(o.dataDir)
	if err != nil {
		return o, fmt.Errorf("data dir: %w", err)
	}
	o.dataDir = abs
	return o, nil
}

func run(ctx context.Context, logger *slog.Logger, args []string, stdout io.Writer, logs io.Writer) error {
	if buildinfo.Requested(args) {
		return buildinfo.Print(stdout, "stack")
	}
	root, err := repo.Root()
	if err != nil {
		return err
	}
	o, err := parseFlags(args, root)
	if errors.Is(err, flag.ErrHelp) {
		return nil // the flags are printed: what -h asked for
	}
	if err != nil {
		return err
	}
	serverURL := os.Getenv("DATABASE_URL")
	if serverURL == "" {
		return errors.New("DATABASE_URL is unset: start the stack with `make run`, which finds or starts a PostgreSQL")
	}
	ctx = withDBWaitNote(ctx, func(err error, wait time.Duration) {
		logger.Warn("database not reachable; retrying (Ctrl-C to stop)", "for", wait.String(), "err", err.Error())
	})
	if o.reset {
		return reset(ctx, logger, o, serverURL)
	}
	mp := planMail(os.Getenv("SMTP_URL"), o)
	ports := []stackPort{{"-core-addr", o.coreAddr}, {"-core-admin-addr", o.coreAdmin}, {"-proxy-addr", o.proxyAddr},
		{"-proxy-admin-addr", o.proxyAdmin}, {"-notes-addr", o.notesAddr}, {"-notes-admin-addr", o.notesAdmin}}
	if mp.mailpit {
		ports = append(ports, stackPort{"-mail-smtp-addr", mp.smtpAddr}, stackPort{"-mail-ui-addr", mp.uiAddr})
		o.mailUI = publicURL(mp.uiAddr)
	}
	if err := portsFree(ports...); err != nil {
		return err
	}
	dbURL, created, err := ensureDatabase(ctx, serverURL, o.database, o.readyWait)
	if err != nil {
		return err
	}
	logger.Info("database", "database", o.database, "created", created)
	// make reset drops this database, on this server, and no other.
	_, forgotten, err := noteDatabase(ctx, o.dataDir, serverURL, o.database, created, os.Getenv("PG_LOCAL_CLUSTER"), o.readyWait)
	if err != nil {
		return fmt.Errorf("record the database: %w", err)
	}
	if forgotten.Created {
		logger.Warn("an earlier make run created the database "+forgotten.Database+" on another server ("+forgotten.Server+
			"), which this run does not use: make reset drops only this run's database, so drop that one yourself "+
			"(DROP DATABASE "+forgotten.Database+" on that server) if you no longer want it",
			"database", forgotten.Database, "server", forgotten.Server, "system_identifier", forgotten.ServerID)
	}

	bin := filepath.Join(o.dataDir, "bin")
	logger.Info("building binaries", "dir", bin)
	if err := build(ctx, root, bin, logs); err != nil {
		return err
	}

	logger.Info("applying migrations")
	if err := migrate(ctx, dbURL, o.readyWait); err != nil {
		return err
	}

	keysDir := filepath.Join(o.dataDir, "keys")
	created, err = ensureSigningKey(ctx, filepath.Join(bin, "coreapi"), keysDir, logs)
	if err != nil {
		return err
	}
	logger.Info("signing keys", "dir", keysDir, "created", created)
	hmacFile := filepath.Join(o.dataDir, "identity.key")
	userKey := os.Getenv("IDENTITY_HMAC_KEY") != ""
	if !userKey {
		created, err := ensureHMACKey(hmacFile)
		if err != nil {
			return err
		}
		logger.Info("identity hmac key", "file", hmacFile, "created", created)
	}
	appKeys := filepath.Join(o.dataDir, "app-notes.keys")
	created, err = ensureAppKey(appKeys, notesKeyID)
	if err != nil {
		return err
	}
	logger.Info("app key", "file", appKeys, "id", notesKeyID, "created", created)
	mfaKeys := filepath.Join(o.dataDir, "mfa.keys")
	userMFAKeys := os.Getenv("MFA_ENCRYPTION_KEYS") != "" || os.Getenv("MFA_ENCRYPTION_KEYS_FILE") != ""
	if !userMFAKeys {
		created, err := ensureMFAKey(mfaKeys)
		if err != nil {
			return err
		}
		logger.Info("mfa encryption key", "file", mfaKeys, "created", created)
	}
	pepperFile := filepath.Join(o.dataDir, "api-key.pepper")
	userPepper := os.Getenv("API_KEY_PEPPER") != "" || os.Getenv("API_KEY_PEPPER_FILE") != ""
	if !userPepper {
		created, err := ensureAPIKeyPepper(pepperFile)
		if err != nil {
			return err
		}
		logger.Info("api key pepper", "file", pepperFile, "created", created)
	}
	rulesFile, err := notesRules(root, o)
	if err != nil {
		return err
	}
	appCore, appProxy, err := appEnv(os.Getenv, filepath.Join(root, "deploy", "examples", "notes", "permissions.yaml"), rulesFile, appKeys)
	if err != nil {
		return err
	}
	for _, kv := range append(slices.Clone(appCore), appProxy...) {
		logger.Info("apps behind the proxy", "setting", kv)
	}
	o.userApps = userApps(os.Getenv)

	if mp.mailpit {
		if _, err := os.Stat(mailpitPath(bin)); err != nil {
			logger.Info("building mailpit (about a minute, once)", "version", mailpitVersion)
		}
		path, err := ensureMailpit(ctx, bin, logs)
		if err != nil {
			return err
		}
		pw, err := ensureMailpitPassword(filepath.Join(o.dataDir, "mailpit.password"))
		if err != nil {
			return err
		}
		o.mailAuth = mailpitUser + ":" + pw
		mailDir, err := mailpitDir(o.dataDir)
		if err != nil {
			return err
		}
		mailpit, err := startChild(logger, "mailpit", path, mp.mailpitArgs(mailDir), mailpitEnv(environ(), pw), logs)
		if err != nil {
			return err
		}
		defer mailpit.stop(logger, o.stopWait)
		if err := waitReady(ctx, localURL(mp.uiAddr)+"/readyz", o.readyWait, mailpit); err != nil {
			return fmt.Errorf("mailpit: %w", err)
		}
		logger.Info("mailpit ready", "smtp", mp.smtpAddr, "ui", o.mailUI)
	}

	// With NATS_URL set both services use it; else each connects to the
	// embedded server as its own user (natsShown: the URL without them).
	natsURL := os.Getenv("NATS_URL")
	coreNATS, proxyNATS, natsShown := natsURL, natsURL, redactURL(natsURL)
	if natsURL == "" {
		ns, err := startNATS(root)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			logger.Info("nats stopped")
		}()
		coreNATS, proxyNATS, natsShown = ns.coreURL, ns.proxyURL, ns.ClientURL()
		logger.Info("embedded nats started", "url", natsShown, "users", "coreapi, authproxy (deploy/nats/tollgate.conf; random passwords, in each service's NATS_URL)")
	}

	var common []string
	if !userKey {
		common = append(common, "IDENTITY_HMAC_KEY_FILE="+hmacFile)
	}
	if o.traces {
		tv, err := startTraceViewer(o.tracesAddr, stdout)
		if err != nil {
			return err
		}
		defer tv.close()
		common = append(common, "OTEL_EXPORTER_OTLP_ENDPOINT="+tv.url(), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", "OTEL_BSP_SCHEDULE_DELAY=200")
		logger.Info("printing traces", "otlp_endpoint", tv.url())
	}
	defaults, coreDefaults := serviceDefaults(os.Getenv, o.proxyAddr)
	common = append(common, defaults...)
	// The stack sets the connection URLs themselves: a *_FILE variant
	// left in the shell would be refused beside them.
	coreEnv := append(append(environ("DATABASE_URL_FILE", "SMTP_URL_FILE", "NATS_URL_FILE"), common...),
		"NATS_URL="+coreNATS,
		"COREAPI_LISTEN_ADDR="+o.coreAddr,
		"COREAPI_ADMIN_ADDR="+o.coreAdmin,
		"DATABASE_URL="+dbURL,
		"SIGNING_KEYS_DIR="+keysDir,
		"SMTP_URL="+mp.smtpURL,
	)
	coreEnv = append(coreEnv, appCore...)
	if !userMFAKeys {
		coreEnv = append(coreEnv, "MFA_ENCRYPTION_KEYS_FILE="+mfaKeys)
	}
	if !userPepper {
		coreEnv = append(coreEnv, "API_KEY_PEPPER_FILE="+pepperFile)
	}
	coreEnv = append(coreEnv, coreDefaults...)
	// The proxy never sees the database credentials.
	proxyEnv := append(append(environ("DATABASE_URL", "DATABASE_URL_FILE", "SMTP_URL_FILE", "NATS_URL_FILE", "MFA_ENCRYPTION_KEYS", "MFA_ENCRYPTION_KEYS_FILE", "API_KEY_PEPPER", "API_KEY_PEPPER_FILE"), common...),
		"NATS_URL="+proxyNATS,
		"PROXY_LISTEN_ADDR="+o.proxyAddr,
		"PROXY_ADMIN_ADDR="+o.proxyAdmin,
		"IDENTITY_URL=http://"+o.coreAddr,
	)
	proxyEnv = append(proxyEnv, appProxy...)
	// The app holds its own key only: no core key, no database.
	notesEnv := append(environ("DATABASE_URL", "DATABASE_URL_FILE", "SMTP_URL_FILE", "NATS_URL_FILE", "MFA_ENCRYPTION_KEYS", "MFA_ENCRYPTION_KEYS_FILE", "API_KEY_PEPPER", "API_KEY_PEPPER_FILE", "IDENTITY_HMAC_KEY", "IDENTITY_HMAC_KEY_FILE", "IDENTITY_KEYS", "IDENTITY_KEYS_FILE", "UPSTREAM_KEYS", "UPSTREAM_KEYS_FILE", "TOLLGATE_IDENTITY_KEYS"),
		"NOTES_LISTEN_ADDR="+o.notesAddr,
		"NOTES_ADMIN_ADDR="+o.notesAdmin,
		"TOLLGATE_IDENTITY_KEYS_FILE="+appKeys,
	)

	core, err := startChild(logger, "coreapi", filepath.Join(bin, "coreapi"), []string{"serve"}, coreEnv, logs)
	if err != nil {
		return err
	}
	var proxy, notes *child
	defer func() {
		// The proxy goes first so that no request reaches a stopped service.
		if proxy != nil {
			proxy.stop(logger, o.stopWait)
		}
		if notes != nil {
			notes.stop(logger, o.stopWait)
		}
		core.stop(logger, o.stopWait)
	}()
	if err := waitReady(ctx, localURL(o.coreAdmin)+"/readyz", o.readyWait, core); err != nil {
		return fmt.Errorf("coreapi: %w", err)
	}
	notes, err = startChild(logger, "notes", filepath.Join(bin, "notes"), nil, notesEnv, logs)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, localURL(o.notesAdmin)+"/readyz", o.readyWait, notes); err != nil {
		return fmt.Errorf("notes: %w", err)
	}
	proxy, err = startChild(logger, "authproxy", filepath.Join(bin, "authproxy"), nil, proxyEnv, logs)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, localURL(o.proxyAdmin)+"/readyz", o.readyWait, proxy); err != nil {
		return fmt.Errorf("authproxy: %w", err)
	}
	logger.Info("stack ready", "proxy", localURL(o.proxyAddr), "core", o.coreAddr, "notes", o.notesAddr, "nats", natsShown)

	if o.seed {
		d, err := seed(ctx, localURL(o.proxyAddr), dbURL, o)
		if err != nil {
			return fmt.Errorf("seed demo data: %w", err)
		}
		printTour(stdout, d, o, natsShown)
	}

	select {
	case <-ctx.Done():
		logger.Info("stopping")
		return nil
	case <-core.Done():
		return fmt.Errorf("coreapi exited: %w", core.ExitErr())
	case <-proxy.Done():
		return fmt.Errorf("authproxy exited: %w", proxy.ExitErr())
	case <-notes.Done():
		return fmt.Errorf("notes exited: %w", notes.ExitErr())
	}
}

// The example app: its key id and the address its rules file names.
const (
	notesKeyID       = "app-notes"
	defaultNotesAddr = "127.0.0.1:8082"
)

// notesRules is the proxy's RULES_FILE: the example's rules.yaml itself, or,
// when the app listens elsewhere (-notes-addr), a copy in the data directory
// with the upstream's URL changed to match.
func notesRules(root string, o options) (string, error) {
	src := filepath.Join(root, "deploy", "examples", "notes", "rules.yaml")
	if o.notesAddr == defaultNotesAddr {
		return src, nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("notes rules: %w", err)
	}
	from, to := "url: http://"+defaultNotesAddr, "url: http://"+o.notesAddr
	if !strings.Contains(string(b), from) {
		return "", fmt.Errorf("notes rules: %s does not contain %q", src, from)
	}
	dst := filepath.Join(o.dataDir, "notes-rules.yaml")
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return "", fmt.Errorf("notes rules: %w", err)
	}
	if err := os.WriteFile(dst, []byte(strings.ReplaceAll(string(b), from, to)), 0o600); err != nil {
		return "", fmt.Errorf("notes rules: %w", err)
	}
	return dst, nil
}

// appEnv is what the stack sets for the apps behind the proxy: coreapi's
// permission catalog (PERMISSIONS_FILE) and the proxy's route table
// (RULES_FILE) and app keys (UPSTREAM_KEYS_FILE): the example's perms, rules
// and keys, unless the environment names the user's own (PERMISSIONS_FILE
// or PERMISSIONS, RULES_FILE, UPSTREAM_KEYS_FILE or UPSTREAM_KEYS), which
// then reach the services as set, with a relative file name made absolute
// (the services run in the repository's root, not where the stack was
// started). The example app keeps its own key either way.
func appEnv(getenv func(string) string, perms, rules, keys string) (core, proxy []string, err error) {
	pick := func(fileVar, valueVar, example string) ([]string, error) {
		file := getenv(fileVar)
		if file == "" && valueVar != "" && getenv(valueVar) != "" {
			return nil, nil // the user's value, in the environment the service inherits
		}
		if file == "" {
			return []string{fileVar + "=" + example}, nil
		}
		abs, err := filepath.Abs(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fileVar, err)
		}
		return []string{fileVar + "=" + abs}, nil
	}
	if core, err = pick("PERMISSIONS_FILE", "PERMISSIONS", perms); err != nil {
		return nil, nil, err
	}
	r, err := pick("RULES_FILE", "", rules)
	if err != nil {
		return nil, nil, err
	}
	k, err := pick("UPSTREAM_KEYS_FILE", "UPSTREAM_KEYS", keys)
	if err != nil {
		return nil, nil, err
	}
	return core, append(r, k...), nil
}

// serviceDefaults is what the stack sets for coreapi and the proxy
// (common) and for coreapi alone (core) that the environment leaves unset.
// The issuer is the public URL (the user's PUBLIC_BASE_URL, else the
// proxy's address): the discovery documents name their endpoints under
// that URL, and a client refuses metadata whose issuer is another (RFC 8414
// section 3.3), as with -proxy-addr elsewhere than 8080.
func serviceDefaults(getenv func(string) string, proxyAddr string) (common, core []string) {
	public := getenv("PUBLIC_BASE_URL")
	if public == "" {
		// The mailed links open through the proxy.
		public = publicURL(proxyAddr)
		core = append(core, "PUBLIC_BASE_URL="+public)
	}
	for _, kv := range [][2]string{{"TOKEN_ISSUER", strings.TrimRight(public, "/")}, {"TOKEN_AUDIENCE", "tollgate"}, {"LOG_LEVEL", "info"}} {
		if getenv(kv[0]) == "" {
			common = append(common, kv[0]+"="+kv[1])
		}
	}
	return common, core
}

// userApps names what in the environment replaces the example's route
// table (RULES_FILE) or permission catalog (PERMISSIONS_FILE, PERMISSIONS),
// as the tour prints it: a file by its name, an inline catalog by the
// variable alone.
func userApps(getenv func(string) string) []string {
	var set []string
	for _, k := range []string{"RULES_FILE", "PERMISSIONS_FILE"} {
		if v := getenv(k); v != "" {
			set = append(set, k+"="+v)
		}
	}
	if getenv("PERMISSIONS_FILE") == "" && getenv("PERMISSIONS") != "" {
		set = append(set, "PERMISSIONS")
	}
	return set
}

// localURL is the http URL reaching a listen address from this machine
// (":8080" → "http://127.0.0.1:8080").
func localURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// environ is this process's environment without the named variables.
func environ(drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			env = append(env, kv)
		}
	}
	return env
}

// redactURL is u (a NATS_URL: one URL or a comma-separated list) with
// each URL masked as the services print a URL setting (envconfig.MaskURL:
// its password, a NATS token, credential parameters), one that does not
// parse, or whose user information the parser cannot find (a '/', '?' or
// '#' left unescaped in a password), as "(unparsable URL)": what the stack
// prints of a NATS_URL it was given.
func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, s := range parts {
		if parts[i] = envconfig.MaskURL(strings.TrimSpace(s)); parts[i] == envconfig.Masked {
			parts[i] = "(unparsable URL)"
		}
	}
	return strings.Join(parts, ",")
}
