// Command authproxy is Tollgate's edge sidecar: it verifies bearer tokens,
// authorizes requests from cached user projections, and forwards them to
// coreapi with signed identity headers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/tollgate-auth/tollgate/authproxy/internal/app"
	"github.com/tollgate-auth/tollgate/authproxy/internal/config"
	"github.com/tollgate-auth/tollgate/shared/buildinfo"
	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "authproxy:", err)
		os.Exit(1)
	}
}

// writeHelp prints the flags (fs) and the configuration table: the proxy
// is configured by its environment alone.
func writeHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: authproxy [-check-config] (also -h, -help or help: this help; -version)\n\nFlags:\n")
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nConfiguration, from the environment (name, default, meaning; -check-config prints the values in effect;\n"+
		"docs/operations.md has the details):\n")
	_ = config.Vars.WriteHelp(w)
}

// run wires the proxy and serves until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) (string, bool), stdout *os.File) error {
	if buildinfo.Requested(args) {
		return buildinfo.Print(stdout, "authproxy")
	}
	fs := flag.NewFlagSet("authproxy", flag.ContinueOnError)
	checkConfig := fs.Bool("check-config", false, "validate the configuration (and rules file), print it with secrets masked, and exit")
	fs.Bool("version", false, "print the version, commit and Go version, and exit")
	fs.SetOutput(stdout)
	fs.Usage = func() { writeHelp(stdout, fs) }
	if len(args) == 1 && args[0] == "help" {
		fs.Usage()
		return nil
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // the usage is printed; -h succeeds, as a Go program's flags do
		}
		return err
	}
	// The proxy takes no argument but its flags: `authproxy check-config`
	// would start serving instead of checking.
	if fs.NArg() > 0 {
		if f := fs.Lookup(fs.Arg(0)); f != nil {
			return fmt.Errorf("unexpected argument %q: did you mean -%s?", fs.Arg(0), f.Name)
		}
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	// SIGHUP reloads the rules file (it is also watched). Registered before
	// anything else is read, so that a signal sent while the proxy starts
	// (a config reloader seeing the file change just then) is a reload
	// once it serves, never the default action, which ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := config.Load(getenv)
	// The rules file is checked even when the variables are not, so that
	// one run reports every problem.
	table, rerr := app.LoadRules(cfg)
	if rerr != nil && (err == nil || cfg.RulesFile != "") {
		err = envconfig.Join(err, "RULES_FILE: "+rerr.Error())
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// One output for the log's records and the buffered access lines
	// (written every app.LinesInterval, and before every other record).
	lines := logging.NewLines(stdout, app.LinesInterval)
	defer lines.Close()
	log := logging.New(lines, cfg.LogLevel)
	if cfg.UpstreamURLSet {
		log.Warn("UPSTREAM_URL is deprecated and goes away in the next release: set IDENTITY_URL for coreapi and declare apps in RULES_FILE")
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	for _, w := range table.Warnings {
		log.Warn("rules: warning", "file", cfg.RulesFile, "warning", w)
	}
	if *checkConfig {
		// The settings, then what the proxy will do with them: every
		// upstream and route (built-in ones included), as nginx -T shows
		// the configuration it loaded.
		if _, err := fmt.Fprint(stdout, cfg.String()); err != nil {
			return err
		}
		if err := table.Describe(stdout, cfg.CoreKeys[0].ID); err != nil {
			return err
		}
		_, err := fmt.Fprint(stdout, "configuration ok\n")
		return err
	}
	log.Info("starting", "config", cfg)
	a, err := app.New(cfg, table, log, app.Hooks{Lines: lines})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		a.Close()
		return fmt.Errorf("listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		ln.Close()
		a.Close()
		return fmt.Errorf("listen admin: %w", err)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = a.ReloadRules() // logged and counted there
			}
		}
	}()
	return a.Serve(ctx, ln, adminLn)
}
