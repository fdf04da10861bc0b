package main

import (
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
)

// wireTenantAPI adds the tenant API (users, roles, tenant, audit,
// permissions). Call it before the other features: its /users/me must be
// registered before their parameter routes.
func wireTenantAPI(pool *pgxpool.Pool, hasher *password.Hasher, catalog *permissions.Catalog, checksPerHour int, opts *httpapi.Options) error {
	api, err := tenantapi.New(tenantapi.Options{Pool: pool, Passwords: hasher, Catalog: catalog, PasswordChecksPerHour: checksPerHour})
	if err != nil {
		return err
	}
	opts.Register = append(opts.Register, api.Register)
	opts.ErrorMappers = append(opts.ErrorMappers, tenantapi.MapError)
	return nil
}
