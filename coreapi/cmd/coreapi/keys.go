package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
)

// keysCmd is `coreapi keys generate -dir DIR [-alg EdDSA|ES256|RS256]`.
func keysCmd(_ context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "generate" {
		return usageErrorf("keys: want `keys generate -dir DIR [-alg EdDSA|ES256|RS256]`")
	}
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	// SIGNING_KEYS_DIR and SIGNING_ALG read as serve reads them (trimmed);
	// -dir and -alg override them. A key of another algorithm than
	// SIGNING_ALG is published but never signs: a rotation done with it
	// would never switch keys, and removing the old key would leave none.
	cfg, _ := config.LoadCommand("keys", getenv)
	dir := fs.String("dir", cfg.SigningKeysDir, "directory of the signing keys (default $SIGNING_KEYS_DIR)")
	alg := fs.String("alg", cfg.SigningAlg, "key algorithm: EdDSA, ES256 or RS256 (default $SIGNING_ALG, else EdDSA)")
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("keys generate: -dir is required")
	}
	kid, err := keys.Generate(*dir, *alg, time.Now())
	if err != nil {
		return fmt.Errorf("keys generate: %w", err)
	}
	_, err = fmt.Fprintln(stdout, kid)
	return err
}
