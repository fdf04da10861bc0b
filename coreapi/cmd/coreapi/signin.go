package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/natsconn"
	"github.com/tollgate-auth/tollgate/shared/natsdial"
)

// worker is a background loop run until ctx ends (e.g. the outbox relay).
type worker func(ctx context.Context) error

// Background intervals of the sign-in part.
const (
	keysReloadEvery   = 30 * time.Second // fallback: the directory is watched, and SIGHUP reloads
	sessionSweepEvery = 10 * time.Minute
	oauthSweepEvery   = time.Minute
	natsDrainTimeout  = 5 * time.Second
)

// wireSignIn connects the sign-in part (routes, password hasher, error
// mapping, outbox relay) to the server options, and returns its background
// workers, the outbox relay apart from them (a shutdown stops it last, after
// every other writer), and its readiness check. It is owned by the sign-in
// code; the tenant API needs nothing from it. ctx bounds its start's
// database steps (the signing keys' first sightings).
func wireSignIn(ctx context.Context, cfg config.Config, log *slog.Logger, pool *pgxpool.Pool,
	reg prometheus.Registerer, hasher *password.Hasher, hup <-chan os.Signal, opts *httpapi.Options) ([]worker, worker, func() error, error) {
	ring, err := keys.LoadContext(ctx, cfg.SigningKeysDir, cfg.SigningAlg, keys.WithActivationDelay(cfg.SigningKeyActivation),
		keys.WithSightings(keys.PGSightings(pool)))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("signing keys: %w", err)
	}
	if err := ring.SightingsErr(); err != nil {
		log.Error("signing keys: first sightings not looked up: not ready, and no generated key whose first sighting is unknown signs, until the database answers (asked again every second)", "err", err)
	}
	log.Info("signing keys loaded", "kids", ring.KeyIDs(), "signing_kid", ring.SigningKeyID())
	if u := ring.Untimed(); len(u) > 0 {
		log.Warn(keys.UntimedWarning, "untimed_kids", u, "signing_kid", ring.SigningKeyID())
	}
	if reg != nil {
		// A reload may leave no key of SIGNING_ALG (the last one removed
		// before its replacement arrived): tokens are then not issued
		// (500), while every token already issued still works. An alert,
		// not readiness: a pod is ready only if both containers are, and
		// every pod mounts the same keys, so failing readiness would take
		// the whole Service down with it.
		if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coreapi_signing_key_present", Help: "1 while a key of SIGNING_ALG signs new tokens, 0 while none does.",
		}, func() float64 {
			if ring.SigningKeyID() != "" {
				return 1
			}
			return 0
		})); err != nil {
			return nil, nil, nil, err
		}
	}
	store := sessions.New(pool, cfg.RefreshTokenTTL, cfg.RefreshReuseGrace)
	store.SetMaxAge(cfg.SessionMaxAge)
	sealer, err := mfaSealer(cfg, log)
	if err != nil {
		return nil, nil, nil, err
	}
	keysSvc, err := wireAPIKeys(cfg, log, pool)
	if err != nil {
		return nil, nil, nil, err
	}
	// API keys ("tg_" tokens) are revocable at the RFC 7009 endpoint too.
	sa, err := wireServiceAccounts(cfg, log, pool, ring, store, keysSvc, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	svc, err := auth.New(auth.Options{
		Logger: log, Pool: pool, Keys: ring, Passwords: hasher, Sessions: store,
		Issuer: cfg.TokenIssuer, Audience: cfg.TokenAudience, AccessTTL: cfg.AccessTokenTTL,
		MFA: sealer, ClientCredentials: sa, Catalog: cfg.Catalog, SignupPerHour: cfg.SignupPerHour,
		SignInFailuresPerHour: cfg.SignInFailuresPerHour, PasswordChecksPerHour: cfg.PasswordChecksPerHour,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	oidc, err := oauth.New(oauth.Options{Logger: log, Pool: pool, Providers: cfg.OIDCProviders, Auth: svc, Sessions: store,
		AllowedReturnURLs: cfg.OAuthReturnURLs, Issuer: cfg.TokenIssuer, AuthorizePerMinute: cfg.OAuthPerMinute})
	if err != nil {
		return nil, nil, nil, err
	}
	opts.Register = append(opts.Register, svc.Register, oidc.Register, keysSvc.Register)
	opts.ErrorMappers = append(opts.ErrorMappers, apikeys.MapError)
	lifecycleWorkers, err := wireLifecycle(cfg, log, pool, reg, opts, svc, hasher)
	if err != nil {
		return nil, nil, nil, err
	}

	relayWorker, err := startRelay(cfg, log, pool, reg)
	if err != nil {
		return nil, nil, nil, err
	}
	workers := []worker{
		func(ctx context.Context) error {
			ring.Watch(ctx, keys.WatchOptions{Every: keysReloadEvery, Reload: hup, Log: log, Changed: announceKeysChanged(pool, ring), AtStart: true})
			return nil
		},
		// Revoked sessions must outlive the access-token TTL: the
		// projection lists them so the proxy refuses their tokens.
		func(ctx context.Context) error {
			return svc.SweepSessions(ctx, sessionSweepEvery, cfg.AccessTokenTTL+24*time.Hour)
		},
		func(ctx context.Context) error { return oidc.RunSweeper(ctx, oauthSweepEvery) },
		func(ctx context.Context) error { return keysSvc.RunSweeper(ctx, sessionSweepEvery) },
		func(ctx context.Context) error {
			return sweepAudit(ctx, log, pool, cfg.AuditRetention, sessionSweepEvery)
		},
		func(ctx context.Context) error {
			return sweepSightings(ctx, log, pool, ring, max(keys.SightingsKeep, 2*cfg.SigningKeyActivation), sessionSweepEvery)
		},
	}
	// Not ready until the keys' first sightings are known: until then a
	// generated key does not sign (see keys.Ring.SightingsErr).
	return append(workers, lifecycleWorkers...), relayWorker, readySightings(ring.SightingsErr), nil
}

// announceKeysChanged writes auth.keys.changed to the outbox, so that the
// relay publishes it (and retries until NATS has it): proxies then refetch
// the JWKS at once. Every replica announces its own change, because each
// proxy fetches the JWKS from its own pod's coreapi, which may reload later
// than another's, and the set it starts with: a replica started after a
// key was removed (a rollout of the removal) has no change to announce,
// and proxies that fetch from any replica through a Service (the
// app-sidecar overlay) would keep the removed key until their next
// refresh. The event names the key set the replica serves then (its
// digest): a proxy that holds that set already does not refetch it, so a
// rollout that changes no key costs no fetch, instead of one per proxy and
// replica.
func announceKeysChanged(pool *pgxpool.Pool, ring *keys.Ring) func(ctx context.Context, kids []string) error {
	return func(ctx context.Context, _ []string) error {
		digest, err := invalidation.KeySetDigest(ring.JWKS())
		if err != nil {
			digest = "" // every proxy refetches, as without a digest
		}
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.SubjectKeysChanged, Reason: invalidation.ReasonKeysChanged, Keys: digest})
		})
	}
}

// natsFirstConnectWait is how long the relay's first drain waits for the
// first NATS connection: the client's connect timeout, the time its own
// pass over a single server took at most.
const natsFirstConnectWait = 2 * time.Second

// startRelay connects to NATS (retrying in the background, so coreapi
// starts while NATS is down) and returns the outbox relay as a worker that
// drains the connection when it stops.
func startRelay(cfg config.Config, log *slog.Logger, pool *pgxpool.Pool, reg prometheus.Registerer) (worker, error) {
	return startRelayHooked(cfg, log, pool, reg, relayHooks{})
}

// relayHooks let tests follow the relay's NATS connection; a nil field
// runs nothing.
type relayHooks struct {
	// failed runs after each failed connection attempt the client
	// reports (its reconnect error handler), once it is logged as such.
	failed func(err error)
	// backlogEvery, when set, is the relay's RelayOptions.BacklogEvery.
	backlogEvery time.Duration
}

// startRelayHooked is startRelay with h.
func startRelayHooked(cfg config.Config, log *slog.Logger, pool *pgxpool.Pool, reg prometheus.Registerer, h relayHooks) (worker, error) {
	// The connect handlers may run before the relay exists.
	var ready atomic.Pointer[outbox.Relay]
	wake := func() {
		if r := ready.Load(); r != nil {
			r.Wake()
		}
	}
	// The first connection is made in the background, at once
	// (natsdial): the client's own pass over the servers before Connect
	// returned held the start 2 s for each server that accepts and never
	// answers.
	dial := natsdial.New(0)
	connected := make(chan struct{})
	firstConnected := sync.OnceFunc(func() { close(connected) })
	// A refusal of the credentials, reported by the client at every
	// attempt (about one a second), and a server the attempts cannot reach
	// are logged once, then at most once a minute, until a connection is
	// made (natsconn).
	events := natsconn.New(log, cfg.NATSURL, "set the password of coreapi's NATS user in NATS_URL as the server has it (coreapi_nats_connected is 0 meanwhile)", nil)
	jitter := nats.GetDefaultOptions().ReconnectJitter
	if strings.Contains(cfg.NATSURL, "tls://") {
		jitter = nats.GetDefaultOptions().ReconnectJitterTLS
	}
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name("coreapi outbox relay"),
		nats.SetCustomDialer(dial),
		nats.MaxReconnects(-1),
		// Forever, through refused credentials too: the client's default
		// gives up for good at the second same authorization error from a
		// server (one restarting before its account resolver or auth
		// callout is ready, a configuration rolled back), and the relay
		// would publish nothing more until coreapi restarts.
		nats.IgnoreAuthErrorAbort(),
		nats.RetryOnFailedConnect(true),
		// The client's ReconnectWait of 500 ms and its jitter (100 ms, 1 s
		// over TLS), after a first pass at once.
		nats.CustomReconnectDelay(dial.Delay(func(int) time.Duration {
			return 500*time.Millisecond + rand.N(jitter)
		})),
		nats.ConnectHandler(func(*nats.Conn) {
			events.Connected("nats connected")
			firstConnected()
			wake()
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			events.Connected("nats reconnected")
			wake()
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			events.ReconnectFailed(err)
			if h.failed != nil {
				h.failed(err)
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { events.Disconnected(err) }),
		// Into the log (a refused reconnection): the client's default
		// handler prints to stderr, outside it. A refused publication is
		// the relay's to log, once a subject and failed batch: the server
		// refuses each message, up to a batch's 256 at each attempt.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if r := ready.Load(); r != nil && r.Refused(err) {
				return
			}
			events.Error(err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	relay := outbox.NewRelay(pool, nc, log, outbox.RelayOptions{Heartbeat: cfg.OutboxHeartbeat, ID: cfg.OutboxRelayID,
		BacklogEvery: h.backlogEvery})
	ready.Store(relay)
	if reg != nil {
		err := errors.Join(
			reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "coreapi_outbox_published_total", Help: "Outbox rows published to NATS by this replica.",
			}, func() float64 { return float64(relay.Stats().Published) })),
			reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "coreapi_outbox_publish_failures_total", Help: "Outbox batches that could not be published (NATS down, database error).",
			}, func() float64 { return float64(relay.Stats().Failures) })),
			reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "coreapi_outbox_publish_refused_total", Help: "Outbox batches that could not be published because NATS's permissions refused a subject (also counted in coreapi_outbox_publish_failures_total).",
			}, func() float64 { return float64(relay.Stats().Refused) })),
			reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "coreapi_outbox_undeliverable_total", Help: "Outbox rows published as auth.invalidate.all because NATS cannot deliver their subject or no proxy can act on it.",
			}, func() float64 { return float64(relay.Stats().Undeliverable) })),
			// Read by the relay every few seconds with one indexed
			// statement (outbox.Relay.ReadBacklog), never at a scrape.
			reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "coreapi_outbox_pending_rows", Help: "Outbox rows not yet published, as this replica last read them (counted up to " +
					strconv.Itoa(outbox.DefaultBacklogCap) + ").",
			}, func() float64 { return float64(relay.Backlog().Rows) })),
			reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "coreapi_outbox_oldest_pending_age_seconds", Help: "Age of the oldest outbox row not yet published, as this replica last read it (0 when none is pending).",
			}, func() float64 { return relay.Backlog().OldestAge.Seconds() })),
			reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "coreapi_nats_connected", Help: "1 while the outbox relay's NATS connection is up.",
			}, func() float64 {
				if nc.IsConnected() {
					return 1
				}
				return 0
			})),
		)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("register relay metrics: %w", err)
		}
	}
	run := func(ctx context.Context) error {
		// The relay's first drain waits for the first connection, made in
		// the background, as long as the client's own pass waited on one
		// server: else every start warned that the relay cannot publish.
		// The client reports no refusal of the credentials before that
		// connection: they are read from it meanwhile. Nor a failed
		// handshake, ever.
		var watched sync.WaitGroup
		stopWatch := make(chan struct{})
		watched.Go(func() { events.Watch(nc, 100*time.Millisecond, stopWatch) })
		defer func() { close(stopWatch); watched.Wait() }()
		select {
		case <-connected:
		case <-ctx.Done():
		case <-time.After(natsFirstConnectWait):
		}
		err := relay.Run(ctx)
		closed := make(chan struct{})
		nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if nc.IsConnected() && nc.Drain() == nil {
			select {
			case <-closed:
			case <-time.After(natsDrainTimeout):
				nc.Close()
			}
		} else {
			nc.Close()
		}
		return err
	}
	return run, nil
}

// wireAPIKeys builds the API-key service; without API_KEY_PEPPER keys can
// be listed and revoked but neither created nor used.
func wireAPIKeys(cfg config.Config, log *slog.Logger, pool *pgxpool.Pool) (*apikeys.Service, error) {
	if cfg.APIKeyPepper == nil {
		log.Warn("API_KEY_PEPPER is not set: API keys can be neither created nor used")
	}
	var limits apikeys.Limits // zero: the defaults
	if cfg.APIKeyCreationsPerHour > 0 {
		limits.TenantCreations = ratelimit.Limit{N: cfg.APIKeyCreationsPerHour, Window: time.Hour}
	}
	return apikeys.New(apikeys.Options{Logger: log, Pool: pool, Pepper: cfg.APIKeyPepper, Catalog: cfg.Catalog,
		RevokedWithin: cfg.AccessTokenTTL + cfg.TokenMaxLeeway, Limits: limits})
}

// mfaSealer builds the sealer of TOTP secrets; without MFA_ENCRYPTION_KEYS
// there is none and enrolment answers 503.
func mfaSealer(cfg config.Config, log *slog.Logger) (*mfa.Sealer, error) {
	if len(cfg.MFAKeys) == 0 {
		log.Warn("MFA_ENCRYPTION_KEYS is not set: TOTP enrolment and sign-in with a second factor are unavailable")
		return nil, nil
	}
	s, err := mfa.NewSealer(cfg.MFAKeys)
	if err != nil {
		return nil, fmt.Errorf("mfa keys: %w", err)
	}
	return s, nil
}

// sweepAudit deletes the audit events older than keep (AUDIT_RETENTION)
// every interval until ctx ends; with keep 0 it keeps them all and returns.
func sweepAudit(ctx context.Context, log *slog.Logger, pool *pgxpool.Pool, keep, every time.Duration) error {
	if keep <= 0 {
		return nil
	}
	return sweep.Every(ctx, every, log, slog.LevelInfo, sweep.Task{Name: "audit events",
		Run: func(ctx context.Context) (int64, error) { return audit.Sweep(ctx, pool, keep) }})
}

// sweepSightings deletes, every interval until ctx ends, the first
// sightings of the signing keys gone from the directory for good
// (keys.PruneSightings: first found more than keep ago).
func sweepSightings(ctx context.Context, log *slog.Logger, pool *pgxpool.Pool, ring *keys.Ring, keep, every time.Duration) error {
	return sweep.Every(ctx, every, log, slog.LevelInfo, sweep.Task{Name: "signing key sightings",
		Run: func(ctx context.Context) (int64, error) { return keys.PruneSightings(ctx, pool, ring.KeyIDs(), keep) }})
}

// errSightingsUnread is what /readyz says while the signing keys' first
// sightings have not been looked up.
var errSightingsUnread = errors.New("the signing keys' first sightings could not be looked up yet (coreapi's log says why)")

// readySightings is the readiness check of the signing keys' first
// sightings (keys.Ring.SightingsErr), for /readyz, which anyone who
// reaches the admin listener reads: the lookup's error, whose driver text
// can name the database's host, user and database, is in the log (serve
// logs it at start, and the keys' watch when a reload's lookup starts
// failing), and /readyz says only that it failed.
func readySightings(err func() error) func() error {
	return func() error {
		if err() != nil {
			return errSightingsUnread
		}
		return nil
	}
}
