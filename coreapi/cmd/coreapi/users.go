package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

const usersUsage = "users: want `users reset-mfa USER_ID`"

// usersCmd is `coreapi users reset-mfa USER_ID`: the operator's recovery of
// an account that lost its second factor and recovery codes, for an
// account a tenant admin may not reset (one that belongs to several
// tenants). See auth.ResetMFA; it prints what was done as JSON.
func usersCmd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "reset-mfa" {
		return usageErrorf("%s", usersUsage)
	}
	id, ok := ids.Parse(args[1])
	if !ok {
		return fmt.Errorf("users reset-mfa: %q is not a user id (a UUID)", args[1])
	}
	url, err := config.DatabaseURLFrom(getenv)
	if err != nil {
		return err
	}
	pool, err := pgtrace.NewPool(ctx, url, pgtrace.PoolOptions{})
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	defer pool.Close()
	// Only RevokeAll is used, which reads neither lifetime.
	ss := sessions.New(pool, time.Hour, 0)
	r, err := auth.ResetMFA(ctx, pool, ss, id, "operator-"+requestid.New())
	switch {
	case errors.Is(err, auth.ErrNoSuchUser):
		return fmt.Errorf("users reset-mfa: no user %s", id)
	case errors.Is(err, auth.ErrNoFactor):
		return fmt.Errorf("users reset-mfa: user %s has no second factor", id)
	case err != nil:
		return fmt.Errorf("users reset-mfa: %w", err)
	}
	return json.NewEncoder(stdout).Encode(r)
}
