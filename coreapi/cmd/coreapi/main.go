// Command coreapi is Tollgate's core API: tenants, users, roles, sign-in and
// the internal projection endpoint, behind authproxy.
//
//	coreapi [serve] [-check-config]
//	coreapi migrate up|down|status|addresses [-all]
//	coreapi keys generate -dir DIR [-alg EdDSA|ES256|RS256]
//	coreapi tenants suspend|reactivate ID
//	coreapi users reset-mfa USER_ID
//	coreapi mfa reseal
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

	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "coreapi:", err)
		os.Exit(1)
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
	}
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
		return fmt.Errorf("unknown command %q (want serve, migrate, keys, tenants, users or mfa)", name)
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
		return err
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
		return fmt.Errorf("%s: unexpected argument %q: did you mean -%s?", fs.Name(), arg, f.Name)
	}
	return fmt.Errorf("%s: unexpected argument %q", fs.Name(), arg)
}
