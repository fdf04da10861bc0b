package main

import (
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// invitationLimits are the mail limits of invitations and of the accounts
// POST /users makes: TENANT_MAILS_PER_HOUR's, the rest the defaults. The
// lifecycle and the tenant API count against the same per-tenant limit.
func invitationLimits(cfg config.Config) invitations.Limits {
	var l invitations.Limits // zero: the defaults
	if cfg.TenantMailsPerHour > 0 {
		l.TenantMail = ratelimit.Limit{N: cfg.TenantMailsPerHour, Window: time.Hour}
	}
	return l
}

// wireTenantAPI adds the tenant API (users, roles, tenant, audit,
// permissions). Call it before the other features: its /users/me must be
// registered before their parameter routes.
func wireTenantAPI(pool *pgxpool.Pool, hasher *password.Hasher, catalog *permissions.Catalog, checksPerHour int, mails invitations.Limits,
	opts *httpapi.Options) error {
	api, err := tenantapi.New(tenantapi.Options{Pool: pool, Passwords: hasher, Catalog: catalog, PasswordChecksPerHour: checksPerHour,
		Limits: users.Limits{Invitations: mails}})
	if err != nil {
		return err
	}
	opts.Register = append(opts.Register, api.Register)
	opts.ErrorMappers = append(opts.ErrorMappers, tenantapi.MapError)
	return nil
}
