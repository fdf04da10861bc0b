// Command coreapi is Tollgate's core API: tenants, users, roles, sign-in and
// the internal projection endpoint, behind authproxy.
//
//	coreapi [serve] [-check-config]
//	coreapi migrate up|status|addresses
//	coreapi migrate down [-all]
//	coreapi keys generate -dir DIR [-alg EdDSA|ES256|RS256]
//	coreapi tenants suspend|reactivate ID
//	coreapi users reset-mfa USER_ID
//	coreapi users delete [--force] USER_ID|EMAIL
//	coreapi mfa reseal
//	coreapi help
//	coreapi --version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "coreapi:", err)
		os.Exit(exitCode(err))
	}
}

// command is one subcommand; args exclude its name.
type command func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error

// commands lists the subcommands. Add one by adding an entry here and its
// function in its own file of this package.
func commands() map[string]command {
	return map[string]command{
		"serve":   serve,
		"migrate": migrate,
		"keys":    keysCmd,    // keys.go
		"tenants": tenantsCmd, // tenants.go
		"users":   usersCmd,   // users.go
		"mfa":     mfaCmd,     // mfa.go
		"help":    helpCmd,
	}
}

// synopses are the command lines help prints, each with what it does;
// every command of commands() is among them (a test checks it).
func synopses() [][2]string {
	return [][2]string{
		{"coreapi [serve] [-check-config]", "serve the API (the default command); -check-config validates the configuration, prints it with secrets masked, and exits"},
		{"coreapi migrate up|status|addresses", "apply the pending migrations, list them, or run migration 00044's rewrite of addresses again"},
		{"coreapi migrate down [-all]", "roll back the last migration (-all: every one)"},
		{"coreapi keys generate -dir DIR [-alg EdDSA|ES256|RS256]", "write a new signing key (-dir: SIGNING_KEYS_DIR, -alg: SIGNING_ALG by default)"},
		{"coreapi tenants suspend|reactivate ID", "suspend a tenant or reactivate it"},
		{"coreapi users reset-mfa USER_ID", "remove a user's second factor"},
		{"coreapi users delete [--force] USER_ID|EMAIL", "delete an account"},
		{"coreapi mfa reseal", "re-encrypt every TOTP secret under the first MFA_ENCRYPTION_KEYS key"},
		{"coreapi help", "print this help (so do -h and -help)"},
		{"coreapi -version", "print the version, commit and Go version"},
	}
}

// writeHelp prints the commands, serve's flags (fs) and the configuration
// table: coreapi is configured by its environment alone.
func writeHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range synopses() {
		fmt.Fprintf(tw, "  %s\t%s\n", s[0], s[1])
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nFlags of serve:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nConfiguration, from the environment (name, default, meaning; -check-config prints the values in effect;\n"+
		"OIDC_<NAME>_* for each provider OIDC_PROVIDERS lists; docs/operations.md has the details):\n")
	_ = config.Vars.WriteHelp(w)
}

// helpCmd prints the help (coreapi help), as -h does.
func helpCmd(_ context.Context, args []string, _ func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageErrorf("help: unexpected argument %q", args[0])
	}
	fs, _ := serveFlags()
	writeHelp(stdout, fs)
	return nil
}

// run is the whole program, testable: args without the program name,
// getenv for configuration, stdout for logs and command output.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if buildinfo.Requested(args) {
		return buildinfo.Print(stdout, "coreapi")
	}
	name := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	cmd, ok := commands()[name]
	if !ok {
		return usageErrorf("unknown command %q (want serve, migrate, keys, tenants, users, mfa or help)", name)
	}
	// -h or -help prints the command's usage and succeeds, as a Go
	// program's flags do.
	if err := cmd(ctx, args, getenv, stdout); !errors.Is(err, errUsage) {
		return err
	}
	return nil
}

// errUsage is returned by flag parsing with -h: the usage was printed.
var errUsage = errors.New("usage")

// usageError is a command line that means nothing: an unknown command,
// action or flag, an argument left over, a flag its action does not take.
// The program exits with status 2 for it, as the flag package's own
// programs do, so that a script can tell a mistyped command from one that
// ran and failed (status 1).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode is the exit status for the error run returned.
func exitCode(err error) int {
	var u *usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// flagSet reports whether the flag name was given on fs's command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// parseFlags parses a command's flags; the commands that parse flags take
// no other argument, so one left over is refused rather than ignored:
// `serve check-config` would start serving instead of checking, and
// `migrate down all` would roll back one migration instead of every one.
func parseFlags(fs *flag.FlagSet, args []string, out io.Writer) error {
	fs.SetOutput(out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errUsage
		}
		return &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return unexpectedArg(fs)
	}
	return nil
}

// unexpectedArg names the first argument left over after fs's flags, and
// the flag it would be with a leading dash.
func unexpectedArg(fs *flag.FlagSet) error {
	arg := fs.Arg(0)
	if f := fs.Lookup(arg); f != nil {
		return usageErrorf("%s: unexpected argument %q: did you mean -%s?", fs.Name(), arg, f.Name)
	}
	return usageErrorf("%s: unexpected argument %q", fs.Name(), arg)
}
