package main

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
)

// worker is a background loop run until ctx ends (e.g. the outbox relay).
type worker func(ctx context.Context) error

// wireSignIn connects the sign-in part (routes, password hasher, error
// mapping, outbox relay) to the server options. It is owned by the sign-in
// code; the tenant API needs nothing from it.
func wireSignIn(ctx context.Context, cfg config.Config, log *slog.Logger, pool *pgxpool.Pool,
	reg prometheus.Registerer, opts *httpapi.Options) ([]worker, error) {
	return nil, nil
}
