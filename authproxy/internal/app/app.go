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
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-auth/tollgate/authproxy/internal/config"
	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/jwks"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/natsinv"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/authproxy/internal/rules"
	"github.com/tollgate-auth/tollgate/authproxy/internal/server"
	"github.com/tollgate-auth/tollgate/authproxy/internal/streams"
	"github.com/tollgate-auth/tollgate/authproxy/internal/tokens"
	"github.com/tollgate-auth/tollgate/shared/adminhttp"
	"github.com/tollgate-auth/tollgate/shared/fasttransport"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/tracing"
	"github.com/valyala/fasthttp"
)

// Hooks let tests inject a clock for token, key set and cache expiry;
// zero values mean the real thing. Signatures always use the real clock.
// Lines, when the log writes to one, is where access lines are buffered.
type Hooks struct {
	Now func() time.Time
	// Lines is the log's output (logging.NewLines), when it is one: the
	// access log is then buffered there (written every LinesInterval or
	// 64 KiB) instead of a write per request; nil: written through the
	// log.
	Lines *logging.Lines
	// Tracing replaces the provider cfg.Tracing would start (tests
	// export to memory); nil: from cfg.Tracing (nil again when off).
	Tracing *tracing.Provider
	// Linger is server.Options.Linger: how long a connection answered
	// 413 is read before it is closed (0: server.DefaultLinger).
	Linger time.Duration
	// StreamRechecked is streams.Options.Rechecked: it runs after each
	// recheck of an open stream has decided (nil: nothing runs).
	StreamRechecked func(reason string)
}

// LinesInterval is how often buffered access lines are written at least.
const LinesInterval = 100 * time.Millisecond

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
	Streams      *streams.Manager
	Server       *server.Server
	internal     *fasthttp.HostClient // projections, from IDENTITY_URL
	coreSigner   *identity.KeySigner
	appSigners   map[string]*identity.KeySigner // by key id
	reloadMu     sync.Mutex                     // one reload at a time
	lastRules    [32]byte                       // SHA-256 of the rules file last read
	rulesInfo    os.FileInfo                    // the rules file as New found it (nil: none)
	shuttingDown atomic.Bool
	tracing      *tracing.Provider // nil: off
	// rulesWatchEvents, when set (tests), stands between the rules file's
	// watcher and watchRules: given the watcher's events and errors, it
	// returns those watchRules reads.
	rulesWatchEvents func(<-chan fsnotify.Event, <-chan error) (<-chan fsnotify.Event, <-chan error)
	// rulesReadDone, when set (tests), is called by watchRules after each
	// read of the rules file, before it acts on what it read: a test
	// writes the file between two reads without guessing their times.
	rulesReadDone func()
}

// Env is what a rules file is validated against under cfg.
func Env(cfg *config.Config) rules.Env {
	env := rules.Env{CoreURL: "http://127.0.0.1:8081"} // checked as given when IDENTITY_URL is valid
	if cfg.IdentityURL != nil {
		env.CoreURL = cfg.IdentityURL.String()
	}
	for _, k := range cfg.CoreKeys {
		env.CoreKeyIDs = append(env.CoreKeyIDs, k.ID)
	}
	for _, k := range cfg.UpstreamKeys {
		env.UpstreamKeyIDs = append(env.UpstreamKeyIDs, k.ID)
	}
	return env
}

// LoadRules returns the route table cfg describes: the rules file, the
// deprecated UPSTREAM_URL alias, or the built-in routes alone.
func LoadRules(cfg *config.Config) (*rules.Table, error) {
	switch {
	case cfg.RulesFile != "":
		return rules.Load(cfg.RulesFile, Env(cfg))
	case cfg.IdentityURL == nil || (cfg.AppURL != "" && len(cfg.UpstreamKeys) == 0):
		// Only after config.Load refused IDENTITY_URL, or UPSTREAM_URL
		// without UPSTREAM_KEYS: nothing more to check.
		return nil, errors.New("no route table without a valid IDENTITY_URL and UPSTREAM_KEYS")
	case cfg.AppURL != "":
		return rules.Alias(cfg.IdentityURL.String(), cfg.AppURL, cfg.UpstreamKeys[0].ID)
	}
	return rules.Core(cfg.IdentityURL.String())
}

// New builds every part; nothing listens until Serve.
func New(cfg *config.Config, table *rules.Table, log *slog.Logger, h Hooks) (*App, error) {
	// The server reads fasthttp's per-request time unless a test injects
	// its clock.
	var serverNow func() time.Time
	if h.Now == nil {
		h.Now = time.Now
	} else {
		serverNow = h.Now
	}
	a := &App{cfg: cfg, now: h.Now, log: log, Metrics: metrics.New(), appSigners: map[string]*identity.KeySigner{}}
	m := a.Metrics
	var err error
	if a.coreSigner, err = identity.NewKeySigner(cfg.CoreKeys[0]); err != nil {
		return nil, fmt.Errorf("identity signer: %w", err)
	}
	for _, k := range cfg.UpstreamKeys {
		if a.appSigners[k.ID], err = identity.NewKeySigner(k); err != nil {
			return nil, fmt.Errorf("upstream key %s: %w", k.ID, err)
		}
	}
	ic := forward.Options{Addr: cfg.IdentityURL.Host, MaxConns: cfg.UpstreamMaxConns,
		MaxConnWait: cfg.UpstreamMaxConnWait, IdleTimeout: cfg.UpstreamIdleTimeout, Timeout: cfg.ProjectionTimeout}
	if cfg.IdentityURL.Scheme == "https" {
		ic.TLS = cfg.IdentityTLS
	}
	a.internal = forward.NewInternalClient(ic)
	router, err := a.newRouter(table, nil)
	if err != nil {
		return nil, err
	}
	// The content the table was parsed from: the watcher's first check
	// (reload.go) loads the file if it changed since.
	a.lastRules = table.Source
	// And the file it was read from: the watcher's first check tells a
	// file replaced since (another one) from one written in place.
	if cfg.RulesFile != "" {
		a.rulesInfo, _ = os.Stat(cfg.RulesFile)
	}

	a.Keys = jwks.New(jwks.Options{URL: cfg.JWKSURL, Algs: cfg.Algs, Interval: cfg.JWKSRefresh,
		Cooldown: cfg.JWKSCooldown, Timeout: 5 * time.Second, Now: h.Now, TLS: cfg.IdentityTLS,
		// Streams opened with a token of a key that left the set end
		// (a.Streams is set below, before the set is first fetched).
		OnSet: func(s *jwks.Set) { a.Streams.KeySet(s) }}, log, m)
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "authproxy_jwks_age_seconds", Help: "Time since the key set was last fetched.",
	}, func() float64 { return a.Keys.Age().Seconds() }))

	tokenEntries, projEntries := CacheEntries(cfg)
	log.Info("cache sizes", "cache_memory_mb", cfg.CacheMemoryMB, "token_entries", tokenEntries, "projection_entries", projEntries)
	a.Verifier, err = tokens.New(tokens.Options{Issuer: cfg.Issuer, Audience: cfg.Audience, Algs: cfg.Algs,
		Leeway: cfg.Leeway, MaxLifetime: cfg.TokenMaxLifetime, MaxTokenBytes: cfg.MaxTokenBytes,
		CacheSize: tokenEntries, EntryCost: TokenEntryBytes, MaxTTL: cfg.TokenCacheMaxTTL, NegativeTTL: cfg.NegativeCacheTTL, Now: h.Now}, a.Keys, m)
	if err != nil {
		return nil, err
	}
	fetcher := projection.NewHTTPFetcher(a.internal, cfg.IdentityURL.Host, a.coreSigner, cfg.ProjectionTimeout, m)
	a.Projections, err = projection.New(projection.Options{Size: projEntries, EntryCost: projection.EntryBytes, TTL: cfg.ProjectionCacheTTL,
		NegativeTTL: cfg.NegativeCacheTTL, MaxStaleness: cfg.MaxStaleness, MaxFetches: cfg.ProjectionMaxFetches, Now: h.Now, Keys: fetcher},
		fetcher, m)
	if err != nil {
		a.Verifier.Close()
		return nil, err
	}
	a.Streams = streams.New(streams.Options{MaxConns: cfg.StreamMaxConns, MaxPerUser: cfg.StreamMaxPerUser, MaxPerIP: cfg.StreamMaxPerIP,
		BufferBytes: cfg.StreamBufferBytes, DialTimeout: cfg.UpstreamMaxConnWait, HandshakeTimeout: cfg.UpstreamTimeout,
		WriteTimeout: cfg.WriteTimeout, DownRecheck: streams.DownRecheckFor(cfg.MaxStaleness),
		Refresh: streams.RefreshFor(cfg.ProjectionCacheTTL), RecheckFor: streams.RecheckForStaleness(cfg.MaxStaleness), Leeway: cfg.Leeway, Now: h.Now,
		Rechecked: h.StreamRechecked,
		// Read only once requests are served (a.Server is set below).
		Table: func() *rules.Table { return a.Server.Router().Table }, Keys: a.Keys.Current}, a.Projections, log, m.Registry)
	// The streams see every eviction the cache sees: NATS events and the
	// server's own after a logout.
	inv := streams.Invalidator{Target: a.Projections, Streams: a.Streams}
	a.tracing = h.Tracing
	if a.tracing == nil {
		if a.tracing, err = tracing.New(context.Background(), cfg.Tracing, log); err != nil {
			a.Verifier.Close()
			a.Projections.Close()
			return nil, err
		}
	}
	var tr *server.Tracing
	if a.tracing != nil {
		tr = &server.Tracing{Tracer: a.tracing.Tracer("github.com/tollgate-auth/tollgate/authproxy"), Propagator: a.tracing.Propagator}
	}
	a.Server = server.New(server.Deps{Log: log, Metrics: m, Router: router, Verifier: a.Verifier, Projections: inv, Keys: a.Projections,
		TrustedCIDRs: cfg.TrustedCIDRs, Streams: a.Streams, Now: serverNow, Tracing: tr, Lines: h.Lines},
		server.Options{MaxBodyBytes: cfg.MaxBodyBytes, BodyMemory: int64(cfg.BodyMemoryMB) << 20, MaxTokenBytes: cfg.MaxTokenBytes, ReadTimeout: cfg.ReadTimeout,
			WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout, AccessLog: cfg.AccessLog, CORS: corsPolicy(cfg),
			Linger: h.Linger})
	m.RulesGeneration.Set(1)
	return a, nil
}

// newRouter binds a table to upstream clients and signers, reusing prev's
// client of an upstream whose address is unchanged (its connections stay).
func (a *App) newRouter(t *rules.Table, prev *server.Router) (*server.Router, error) {
	cfg := a.cfg
	r := &server.Router{Table: t, Clients: make([]*fasthttp.HostClient, len(t.Upstreams)), Signers: make([]*identity.KeySigner, len(t.Upstreams))}
	// core: coreapi's client (the first), whose TLS trusts
	// IDENTITY_CA_FILE, never an app's.
	type endpoint struct {
		addr    string
		tls     bool
		timeout time.Duration
		core    bool
	}
	old := map[endpoint]*fasthttp.HostClient{}
	if prev != nil {
		for i, c := range prev.Clients {
			old[endpoint{c.Addr, c.IsTLS, c.ReadTimeout, i == 0}] = c
		}
	}
	for i, u := range t.Upstreams {
		timeout := cfg.UpstreamTimeout
		if u.Timeout > 0 {
			timeout = u.Timeout
		}
		if c := old[endpoint{u.Addr, u.TLS, timeout, i == 0}]; c != nil {
			r.Clients[i] = c
		} else {
			o := forward.Options{Addr: u.Addr, MaxConns: cfg.UpstreamMaxConns, MaxConnWait: cfg.UpstreamMaxConnWait,
				IdleTimeout: cfg.UpstreamIdleTimeout, Timeout: timeout, Stray: a.strayed(u.Name, u.Addr)}
			switch {
			case u.TLS && i == 0:
				o.TLS = cfg.IdentityTLS
			case u.TLS:
				o.TLS = cfg.UpstreamTLS
			}
			r.Clients[i] = forward.NewHostClient(o)
		}
		if i == 0 {
			r.Signers[i] = a.coreSigner
			continue
		}
		s := a.appSigners[u.KeyID]
		if s == nil {
			return nil, fmt.Errorf("upstream %s: key_id %q not in UPSTREAM_KEYS", u.Name, u.KeyID)
		}
		r.Signers[i] = s
	}
	return r, nil
}

// strayed is told of each connection to the upstream named name (at addr)
// that was closed because the upstream sent bytes outside an answer: they
// would have been the answer of the next request on it, maybe another
// client's. It counts it and logs it, without the bytes. A client kept
// across a reload logs the name its upstream had when it was made.
func (a *App) strayed(name, addr string) func(fasttransport.Stray) {
	return func(s fasttransport.Stray) {
		a.Metrics.UpstreamStray.WithLabelValues(s.String()).Inc()
		a.log.Warn("upstream sent bytes outside an answer; connection closed", "upstream", name, "addr", addr, "when", s.String())
	}
}

// Ready reports whether the proxy should receive traffic.
func (a *App) Ready() bool { return a.Keys.Ready() && !a.shuttingDown.Load() }

// Close releases the caches (Serve does it itself).
func (a *App) Close() {
	a.Verifier.Close()
	a.Projections.Close()
	if err := a.tracing.Shutdown(context.Background()); err != nil {
		a.log.Warn("tracing shutdown", "err", err)
	}
}

// Serve connects to NATS, starts the key refresher and both servers, and
// blocks until ctx ends or a server fails; then it shuts down in order:
// not ready, drain with a deadline, the counts of log lines left out
// written, NATS drained and the last API-key usage report sent, the
// streams' rechecks ended, caches closed.
func (a *App) Serve(ctx context.Context, ln, adminLn net.Listener) error {
	defer a.Close()
	// The background work (the key set's refresh, the rules' watch, the
	// usage reports) outlives ctx until the drain is over (cancelBg
	// below): requests served during the drain still use it, and the last
	// usage report must count their keys.
	bg, cancelBg := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBg()
	keysChanged := func(digest string) {
		if _, err := a.Keys.KeysAnnounced(bg, digest); err != nil {
			a.log.Warn("jwks refetch after auth.keys.changed", "err", err)
		}
	}
	sub, err := natsinv.Connect(natsinv.Options{URL: a.cfg.NATSURL, Now: a.now, PingInterval: natsinv.PingIntervalFor(a.cfg.MaxStaleness),
		KeysChanged: keysChanged, APIKey: a.Projections.InvalidateAPIKey, HeartbeatTimeout: a.cfg.HeartbeatTimeout},
		streams.Invalidator{Target: a.Projections, Streams: a.Streams}, a.log, a.Metrics)
	if err != nil {
		ln.Close()
		adminLn.Close()
		return err
	}
	a.Subscriber = sub
	go a.Keys.Run(bg)
	// Waited for before returning: the last report goes out after the
	// drain, and a process that exited first lost it (coreapi's preStop
	// pause is sized to outlive it).
	keyUseDone := make(chan struct{})
	go func() {
		defer close(keyUseDone)
		a.reportKeyUse(bg)
	}()
	if a.cfg.RulesFile != "" {
		watching := make(chan struct{}, 1)
		go a.watchRules(bg, watching)
		<-watching
	}

	admin := adminhttp.Server(server.Admin(a.Metrics.Registry, a.Ready, a.cfg.Pprof))
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
	// Open streams first: a close frame (or the end of the event stream)
	// each, and a bounded wait for them to go.
	dctx, dcancel := context.WithTimeout(sctx, a.cfg.StreamDrain)
	if err := a.Streams.Drain(dctx); err != nil {
		a.log.Warn("streams still open after the drain window", "open", a.Streams.Open(), "err", err)
	}
	dcancel()
	if err := a.Server.App().ShutdownWithContext(sctx); err != nil {
		a.log.Warn("shutdown", "err", err)
	}
	a.Server.CloseLogs()
	cancelBg()
	if err := sub.Close(5 * time.Second); err != nil {
		a.log.Warn("close nats", "err", err)
	}
	if err := admin.Shutdown(sctx); err != nil {
		a.log.Warn("shutdown admin", "err", err)
	}
	<-keyUseDone // at most reportKeyUse's 2 s
	for _, c := range a.Server.Router().Clients {
		c.CloseIdleConnections()
	}
	a.internal.CloseIdleConnections()
	// The caches close as Serve returns: a stream's recheck still waiting
	// for its projection (the drain window cut short) is waited for
	// first.
	if err := a.Streams.WaitRechecks(sctx); err != nil {
		a.log.Warn("stream rechecks still running as the caches close", "err", err)
	}
	return runErr
}

// KeyUseEvery is how often the proxy reports the API keys it saw used
// (coreapi records last_used_at at most once a minute per key anyway).
const KeyUseEvery = time.Minute

// KeyUseEarly is the least time between two reports of key use when the
// uses held apart from the key table fill up before KeyUseEvery
// (projection.Cache.KeyUseFull).
const KeyUseEarly = 5 * time.Second

// reportKeyUse sends coreapi the keys used since the last report, every
// KeyUseEvery, sooner (at most every KeyUseEarly) when the uses held apart
// from the key table fill up, and once more when ctx ends. Uses dropped
// all the same are logged at most once per KeyUseEvery.
func (a *App) reportKeyUse(ctx context.Context) {
	t := time.NewTicker(KeyUseEvery)
	defer t.Stop()
	var last, logged time.Time
	var dropped uint64
	report := func(ctx context.Context) {
		last = time.Now()
		switch _, err := a.Projections.ReportUsed(ctx); {
		case errors.Is(err, projection.ErrReportRefused):
			a.log.Warn("api key uses refused by coreapi: dropped, not reported again", "err", err)
		case err != nil:
			a.log.Warn("report api key use", "err", err)
		}
		if d := a.Projections.KeyUsesDropped(); d > dropped && time.Since(logged) >= KeyUseEvery {
			a.log.Warn("api key uses dropped from the usage reports: more keys in use than the key table holds between reports; their last_used_at may lag",
				"dropped", d-dropped, "dropped_total", d)
			dropped, logged = d, time.Now()
		}
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			report(fctx)
			cancel()
			return
		case <-t.C:
			report(ctx)
		case <-a.Projections.KeyUseFull():
			if time.Since(last) >= KeyUseEarly {
				report(ctx)
			}
		}
	}
}

// corsPolicy is the server's CORS policy, nil when CORS_ALLOWED_ORIGINS is
// empty.
func corsPolicy(cfg *config.Config) *server.CORS {
	if len(cfg.CORSOrigins) == 0 {
		return nil
	}
	return &server.CORS{Origins: cfg.CORSOrigins, Credentials: cfg.CORSCredentials, MaxAge: cfg.CORSMaxAge,
		AllowHeaders:  strings.Join(slices.Concat(config.CORSDefaultAllowHeaders(), cfg.CORSAllowHeaders), ", "),
		ExposeHeaders: strings.Join(slices.Concat(config.CORSDefaultExposeHeaders(), cfg.CORSExposeHeaders), ", ")}
}
