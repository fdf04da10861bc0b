package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
)

const mfaUsage = "mfa: want `mfa reseal`"

// mfaCmd is `coreapi mfa reseal`: every stored TOTP secret is sealed again
// under the first key of MFA_ENCRYPTION_KEYS, so that the keys after it
// can be dropped (see auth.ResealTOTP). It prints what was done as JSON,
// and fails when a secret could not be read (they are listed).
func mfaCmd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) != 1 || args[0] != "reseal" {
		return usageErrorf("%s", mfaUsage)
	}
	cfg, err := config.LoadCommand("mfa", getenv)
	if err != nil {
		return err
	}
	if len(cfg.MFAKeys) == 0 {
		return errors.New("mfa reseal: MFA_ENCRYPTION_KEYS (or MFA_ENCRYPTION_KEYS_FILE) is required")
	}
	sealer, err := mfa.NewSealer(cfg.MFAKeys)
	if err != nil {
		return fmt.Errorf("mfa reseal: %w", err)
	}
	pool, err := pgtrace.NewPool(ctx, cfg.DatabaseURL, pgtrace.PoolOptions{})
	if err != nil {
		return fmt.Errorf("mfa: %w", err)
	}
	defer pool.Close()
	r, err := auth.ResealTOTP(ctx, pool, sealer)
	if err != nil {
		return fmt.Errorf("mfa reseal: %w", err)
	}
	if err := json.NewEncoder(stdout).Encode(r); err != nil {
		return err
	}
	if len(r.Unreadable) > 0 {
		return fmt.Errorf("mfa reseal: %d secrets could not be read and keep their key (listed under unreadable): list their keys in MFA_ENCRYPTION_KEYS and run again", len(r.Unreadable))
	}
	return nil
}
