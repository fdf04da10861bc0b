// Command stack runs the whole Tollgate stack on one machine, for `make run`:
// it applies the migrations to $DATABASE_URL, starts an embedded NATS server
// (unless NATS_URL is set), creates development keys under .data/, builds and
// starts coreapi (127.0.0.1:8081) and authproxy (:8080), seeds a demo tenant,
// and prints a curl tour. Ctrl-C or SIGTERM stops everything in order.
//
// Every step is idempotent: running it again reuses the keys, the database
// and the demo users.
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
	readyWait   time.Duration
	stopWait    time.Duration
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
	fs.StringVar(&o.proxyAddr, "proxy-addr", ":8080", "authproxy listen address")
	fs.StringVar(&o.proxyAdmin, "proxy-admin-addr", ":9090", "authproxy admin address")
	fs.DurationVar(&o.readyWait, "ready-timeout", 90*time.Second, "how long each service may take to become ready")
	fs.DurationVar(&o.stopWait, "stop-timeout", 20*time.Second, "how long each service may take to stop after SIGTERM before it is killed")
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
	if err != nil {
		return err
	}
	dbURL := os.Getenv("DATABASE_URL")
	if dbURL == "" {
		return errors.New("DATABASE_URL is unset: start the stack with `make run`, which finds or starts a PostgreSQL")
	}
	if err := portsFree(o.coreAddr, o.coreAdmin, o.proxyAddr, o.proxyAdmin); err != nil {
		return err
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
	created, err := ensureSigningKey(ctx, filepath.Join(bin, "coreapi"), keysDir, logs)
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

	natsURL := os.Getenv("NATS_URL")
	if natsURL == "" {
		ns, err := startNATS()
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			logger.Info("nats stopped")
		}()
		natsURL = ns.ClientURL()
		logger.Info("embedded nats started", "url", natsURL)
	}

	common := []string{"NATS_URL=" + natsURL}
	if !userKey {
		common = append(common, "IDENTITY_HMAC_KEY_FILE="+hmacFile)
	}
	for k, def := range map[string]string{"TOKEN_ISSUER": "http://localhost:8080", "TOKEN_AUDIENCE": "tollgate", "LOG_LEVEL": "info"} {
		if os.Getenv(k) == "" {
			common = append(common, k+"="+def)
		}
	}
	coreEnv := append(append(environ(), common...),
		"COREAPI_LISTEN_ADDR="+o.coreAddr,
		"COREAPI_ADMIN_ADDR="+o.coreAdmin,
		"DATABASE_URL="+dbURL,
		"SIGNING_KEYS_DIR="+keysDir,
	)
	// The proxy never sees the database credentials.
	proxyEnv := append(append(environ("DATABASE_URL"), common...),
		"PROXY_LISTEN_ADDR="+o.proxyAddr,
		"PROXY_ADMIN_ADDR="+o.proxyAdmin,
		"IDENTITY_URL=http://"+o.coreAddr,
	)

	core, err := startChild(logger, "coreapi", filepath.Join(bin, "coreapi"), []string{"serve"}, coreEnv, logs)
	if err != nil {
		return err
	}
	var proxy *child
	defer func() {
		// The proxy goes first so that no request reaches a stopped core.
		if proxy != nil {
			proxy.stop(logger, o.stopWait)
		}
		core.stop(logger, o.stopWait)
	}()
	if err := waitReady(ctx, localURL(o.coreAdmin)+"/readyz", o.readyWait, core); err != nil {
		return fmt.Errorf("coreapi: %w", err)
	}
	proxy, err = startChild(logger, "authproxy", filepath.Join(bin, "authproxy"), nil, proxyEnv, logs)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, localURL(o.proxyAdmin)+"/readyz", o.readyWait, proxy); err != nil {
		return fmt.Errorf("authproxy: %w", err)
	}
	logger.Info("stack ready", "proxy", localURL(o.proxyAddr), "core", o.coreAddr, "nats", natsURL)

	if o.seed {
		d, err := seed(ctx, localURL(o.proxyAddr), o)
		if err != nil {
			return fmt.Errorf("seed demo data: %w", err)
		}
		printTour(stdout, d, o, natsURL)
	}

	select {
	case <-ctx.Done():
		logger.Info("stopping")
		return nil
	case <-core.done:
		return fmt.Errorf("coreapi exited: %w", core.exitErr())
	case <-proxy.done:
		return fmt.Errorf("authproxy exited: %w", proxy.exitErr())
	}
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
