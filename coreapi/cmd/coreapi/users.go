package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

const usersUsage = "users: want `users reset-mfa USER_ID` or `users delete [--force] USER_ID|EMAIL`"

// usersCmd is `coreapi users reset-mfa USER_ID`: the operator's recovery of
// an account that lost its second factor and recovery codes, for an
// account a tenant admin may not reset (one that belongs to several
// tenants). See auth.ResetMFA; it prints what was done as JSON. And
// `coreapi users delete`: see usersDelete.
func usersCmd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) >= 1 && args[0] == "delete" {
		return usersDelete(ctx, args[1:], getenv, stdout)
	}
	if len(args) != 2 || args[0] != "reset-mfa" {
		return usageErrorf("%s", usersUsage)
	}
	id, ok := ids.Parse(args[1])
	if !ok {
		return fmt.Errorf("users reset-mfa: %q is not a user id (a UUID)", args[1])
	}
	pool, err := usersPool(ctx, getenv)
	if err != nil {
		return err
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

// usersDelete is `coreapi users delete [--force] USER_ID|EMAIL`: the
// operator's erasure of an account (an Article 17 request, or an owner
// who cannot sign in any more), as DELETE /users/me/account deletes it but with
// no session to check (users.DeleteAccount): audited in each of its
// tenants with no acting user, data.by "operator". The last active owner
// of a tenant with other members is refused, naming the tenants, unless
// --force: the tenants it leaves without an owner are printed, and need
// an owner named by the operator. The operator is expected to have
// checked who asks. It prints what was done as JSON.
func usersDelete(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	force := len(args) == 2 && args[0] == "--force"
	if force {
		args = args[1:]
	}
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		return usageErrorf("%s", usersUsage)
	}
	pool, err := usersPool(ctx, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	id, ok := ids.Parse(args[0])
	if !ok {
		const q = `SELECT id::text FROM users WHERE lower(email) = lower($1)`
		err := pool.QueryRow(ctx, q, mail.Canonical(args[0])).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("users delete: no user %s", args[0])
		} else if err != nil {
			return fmt.Errorf("users delete: find the account: %w", err)
		}
	}
	d, err := users.DeleteAccount(ctx, pool, id, users.DeleteOptions{By: users.DeletedByOperator,
		RequestID: "operator-" + requestid.New(), Force: force})
	switch {
	case errors.Is(err, users.ErrNotFound):
		return fmt.Errorf("users delete: no user %s", args[0])
	case errors.Is(err, users.ErrServiceAccount):
		return fmt.Errorf("users delete: %s is a service account: delete it with DELETE /api/v1/service-accounts/{id}", id)
	case errors.Is(err, users.ErrSoleOwner):
		return fmt.Errorf("users delete: %w (or pass --force to leave them without an owner)", err)
	case err != nil:
		return fmt.Errorf("users delete: %w", err)
	}
	return json.NewEncoder(stdout).Encode(d)
}

// usersPool opens the database pool of a `coreapi users` command.
func usersPool(ctx context.Context, getenv func(string) string) (*pgxpool.Pool, error) {
	url, err := config.DatabaseURLFrom(getenv)
	if err != nil {
		return nil, err
	}
	pool, err := pgtrace.NewPool(ctx, url, pgtrace.PoolOptions{})
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	return pool, nil
}
