// Package app wires the proxy's parts together from a Config and runs them:
// the public server, the admin server, the key set refresher and the
// invalidation subscriber, with an orderly shutdown.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/config"
	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/jwks"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/natsinv"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/server"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/valyala/fasthttp"
)

// Hooks let tests inject a clock for token, key set and cache expiry;
// zero values mean the real thing. Signatures always use the real clock.
type Hooks struct {
	Now func() time.Time
}

// App is the wired proxy.
type App struct {
	cfg          *config.Config
	now          func() time.Time
	log          *slog.Logger
	Metrics      *metrics.Metrics
	Keys         *jwks.Client
	Verifier     *tokens.Verifier
	Projections  *projection.Cache
	Subscriber   *natsinv.Subscriber
	Server       *server.Server
	upstream     struct{ fwd, internal *fasthttp.HostClient }
	shuttingDown atomic.Bool
}

// New builds every part; nothing listens until Serve.
func New(cfg *config.Config, rs *rules.Set, log *slog.Logger, h Hooks) (*App, error) {
	if h.Now == nil {
		h.Now = time.Now
	}
	a := &App{cfg: cfg, now: h.Now, log: log, Metrics: metrics.New()}
	m := a.Metrics
	signer, err := identity.NewSigner(cfg.HMACKey, 0)
	if err != nil {
		return nil, fmt.Errorf("identity signer: %w", err)
	}
	fo := forward.Options{Addr: cfg.UpstreamURL.Host, MaxConns: cfg.UpstreamMaxConns, MaxConnWait: cfg.UpstreamMaxConnWait,
		IdleTimeout: cfg.UpstreamIdleTimeout, Timeout: cfg.UpstreamTimeout, MaxBody: cfg.MaxBodyBytes}
	a.upstream.fwd = forward.NewHostClient(fo)
	fo.Timeout = cfg.ProjectionTimeout
	a.upstream.internal = forward.NewInternalClient(fo)

	a.Keys = jwks.New(jwks.Options{URL: cfg.JWKSURL, Algs: cfg.Algs, Interval: cfg.JWKSRefresh,
		Cooldown: cfg.JWKSCooldown, Timeout: 5 * time.Second, Now: h.Now}, log, m)
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "authproxy_jwks_age_seconds", Help: "Time since the key set was last fetched.",
	}, func() float64 { return a.Keys.Age().Seconds() }))

	a.Verifier, err = tokens.New(tokens.Options{Issuer: cfg.Issuer, Audience: cfg.Audience, Algs: cfg.Algs,
		Leeway: cfg.Leeway, MaxLifetime: cfg.TokenMaxLifetime, MaxTokenBytes: cfg.MaxTokenBytes,
		CacheSize: cfg.TokenCacheSize, MaxTTL: cfg.TokenCacheMaxTTL, NegativeTTL: cfg.NegativeCacheTTL, Now: h.Now}, a.Keys, m)
	if err != nil {
		return nil, err
	}
	a.Projections, err = projection.New(projection.Options{Size: cfg.ProjectionCacheSize, TTL: cfg.ProjectionCacheTTL,
		NegativeTTL: cfg.NegativeCacheTTL, MaxStaleness: cfg.MaxStaleness, Now: h.Now},
		projection.NewHTTPFetcher(a.upstream.internal, cfg.UpstreamURL.Host, signer, cfg.ProjectionTimeout, m), m)
	if err != nil {
		a.Verifier.Close()
		return nil, err
	}
	a.Server = server.New(server.Deps{Log: log, Metrics: m, Rules: rs, Verifier: a.Verifier, Projections: a.Projections,
		Signer: signer, Upstream: a.upstream.fwd, TrustedCIDRs: cfg.TrustedCIDRs},
		server.Options{MaxBodyBytes: cfg.MaxBodyBytes, MaxTokenBytes: cfg.MaxTokenBytes, ReadTimeout: cfg.ReadTimeout,
			WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout, AccessLog: cfg.AccessLog})
	return a, nil
}

// Ready reports whether the proxy should receive traffic.
func (a *App) Ready() bool { return a.Keys.Ready() && !a.shuttingDown.Load() }

// Close releases the caches (Serve does it itself).
func (a *App) Close() {
	a.Verifier.Close()
	a.Projections.Close()
}

// Serve connects to NATS, starts the key refresher and both servers, and
// blocks until ctx ends or a server fails; then it shuts down in order:
// not ready, drain with a deadline, NATS drained, caches closed.
func (a *App) Serve(ctx context.Context, ln, adminLn net.Listener) error {
	defer a.Close()
	bg, cancelBg := context.WithCancel(ctx)
	defer cancelBg()
	sub, err := natsinv.Connect(natsinv.Options{URL: a.cfg.NATSURL, Now: a.now, KeysChanged: func() {
		if err := a.Keys.KeysChanged(bg); err != nil {
			a.log.Warn("jwks refetch after auth.keys.changed", "err", err)
		}
	}}, a.Projections, a.log, a.Metrics)
	if err != nil {
		ln.Close()
		adminLn.Close()
		return err
	}
	a.Subscriber = sub
	go a.Keys.Run(bg)

	admin := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: server.Admin(a.Metrics.Registry, a.Ready, a.cfg.Pprof)}
	errc := make(chan error, 2)
	go func() {
		if err := admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin server: %w", err)
		}
	}()
	go func() {
		if err := a.Server.App().Listener(ln); err != nil {
			errc <- fmt.Errorf("server: %w", err)
		}
	}()
	a.log.Info("listening", "addr", ln.Addr().String(), "admin_addr", adminLn.Addr().String())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	a.log.Info("shutting down")
	a.shuttingDown.Store(true)
	a.Server.Drain()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer cancel()
	if err := a.Server.App().ShutdownWithContext(sctx); err != nil {
		a.log.Warn("shutdown", "err", err)
	}
	cancelBg()
	if err := sub.Close(5 * time.Second); err != nil {
		a.log.Warn("close nats", "err", err)
	}
	if err := admin.Shutdown(sctx); err != nil {
		a.log.Warn("shutdown admin", "err", err)
	}
	a.upstream.fwd.CloseIdleConnections()
	a.upstream.internal.CloseIdleConnections()
	return runErr
}
