package main

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
)

// wireServiceAccounts builds machine access and the standard OAuth surface
// (service accounts, client_credentials, discovery, introspection,
// revocation) and registers its routes and error mapping. apiKeys revokes
// "tg_" tokens at the revocation endpoint (nil: they are unknown there).
func wireServiceAccounts(cfg config.Config, log *slog.Logger, pool *pgxpool.Pool, ring *keys.Ring, store *sessions.Store,
	apiKeys serviceaccounts.APIKeyRevoker, opts *httpapi.Options) (*serviceaccounts.Service, error) {
	sa, err := serviceaccounts.New(serviceaccounts.Options{
		Logger: log, Pool: pool, Keys: ring, Sessions: store,
		Projections: projection.NewStore(pool, cfg.AccessTokenTTL+max(cfg.TokenMaxLeeway, 0), cfg.Catalog),
		Limiter:     ratelimit.New(pool), Catalog: cfg.Catalog,
		Issuer: cfg.TokenIssuer, Audience: cfg.TokenAudience, AccessTTL: cfg.AccessTokenTTL,
		PublicBaseURL: cfg.PublicBaseURL, APIKeys: apiKeys,
	})
	if err != nil {
		return nil, err
	}
	opts.Register = append(opts.Register, sa.Register)
	opts.ErrorMappers = append(opts.ErrorMappers, serviceaccounts.ErrorProblem)
	return sa, nil
}
