package scalesim

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/jwks"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/natsinv"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// StormConfig is one cold-start storm.
type StormConfig struct {
	Proxies       int // proxies restarting at the same instant
	UsersPerProxy int // distinct users whose first requests reach each proxy at once
	MaxFetches    int // PROJECTION_MAX_FETCHES of each proxy
	NATSURL       string
	Timeout       time.Duration // give up on warmth after this
}

// StormResult is what coreapi, PostgreSQL and the proxies saw.
type StormResult struct {
	StormConfig
	Warm            Summary // per proxy: start until keys loaded and every user's projection fetched; proxies never warm rank last (Unreached)
	Cold            int     // proxies not warm when the run gave up
	Retries         int64   // projection fetches answered "retry" (coreapi 503 or the proxy's own bound)
	CoreJWKS        float64 // JWKS requests coreapi served
	CoreProjections float64 // projection requests answered 200
	Core503         float64 // projection requests answered 503
	CoreShed        float64 // of those, refused by PROJECTION_MAX_INFLIGHT
	PoolMax         float64 // coreapi's coreapi_db_pool_max_conns
	PoolPeak        float64 // highest coreapi_db_pool_acquired_conns sampled
	PGConnsPeak     int     // highest count of coreapi's backends sampled
	EmptyAcquires   float64 // pool acquires that had to wait
	CoreCPU, PGCPU  time.Duration
	NATSConnected   time.Duration // until every proxy's NATS connection was up (Unreached: one never was)
	FirstFailure    string        // the first error that left a proxy cold
}

type stormProxy struct {
	keys  *jwks.Client
	cache *projection.Cache
	sub   *natsinv.Subscriber
	hc    interface{ CloseIdleConnections() }
}

// Storm starts cfg.Proxies proxies at once against core: each loads the key
// set (jittered backoff on failure), connects to NATS, and then receives
// the first requests of cfg.UsersPerProxy distinct users concurrently; a
// request refused with "retry" (503) comes back after a jittered backoff
// starting at 100 ms (doubling, at most 2 s), as a client honouring
// Retry-After with jitter would.
func Storm(ctx context.Context, core *Core, cfg StormConfig, log *slog.Logger) (*StormResult, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	res := &StormResult{StormConfig: cfg}
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	signer, err := identity.NewKeySigner(identity.Key{ID: "core", Secret: core.HMACKey})
	if err != nil {
		return nil, err
	}
	proxies := make([]*stormProxy, cfg.Proxies)
	for i := range proxies {
		m := metrics.New()
		p := &stormProxy{}
		// Each proxy is its own pod: its own connections to coreapi.
		p.keys = jwks.New(jwks.Options{URL: "http://" + core.Addr + "/.well-known/jwks.json", Algs: []string{"EdDSA", "ES256", "RS256"},
			Interval: 5 * time.Minute, Cooldown: 10 * time.Second, Timeout: 5 * time.Second,
			HTTP: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}}, quiet, m)
		hc := forward.NewInternalClient(forward.Options{Addr: core.Addr, MaxConns: 1024, MaxConnWait: 2 * time.Second,
			IdleTimeout: 5 * time.Second, Timeout: 2 * time.Second})
		p.hc = hc
		if p.cache, err = projection.New(projection.Options{Size: 1000, TTL: 5 * time.Minute, NegativeTTL: 10 * time.Second,
			MaxStaleness: 30 * time.Second, MaxFetches: cfg.MaxFetches},
			projection.NewHTTPFetcher(hc, core.Addr, signer, 2*time.Second, m), m); err != nil {
			return nil, err
		}
		proxies[i] = p
	}
	defer func() {
		var wg sync.WaitGroup
		for _, p := range proxies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if p.sub != nil {
					_ = p.sub.Close(5 * time.Second)
				}
				p.cache.Close()
				p.hc.CloseIdleConnections()
			}()
		}
		wg.Wait()
	}()

	before, err := core.Metrics()
	if err != nil {
		return nil, err
	}
	coreCPU0, err := ProcessCPU(core.Pid())
	if err != nil {
		return nil, err
	}
	pgCPU0, _, err := core.PostgresCPU(ctx)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var samplerWG sync.WaitGroup
	stopSampling := make(chan struct{})
	var poolPeak atomic.Int64
	var pgPeak atomic.Int64
	samplerWG.Add(1)
	go func() {
		defer samplerWG.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
			if text, err := core.Metrics(); err == nil {
				if v := int64(metricSum(text, "coreapi_db_pool_acquired_conns")); v > poolPeak.Load() {
					poolPeak.Store(v)
				}
			}
			if n, err := core.Connections(ctx); err == nil && int64(n) > pgPeak.Load() {
				pgPeak.Store(int64(n))
			}
		}
	}()

	users := core.Users
	var retries atomic.Int64
	var firstFailure atomic.Pointer[string]
	fail := func(err error) {
		msg := err.Error()
		firstFailure.CompareAndSwap(nil, &msg)
	}
	warm := make([]time.Duration, cfg.Proxies)
	natsUp := make([]time.Duration, cfg.Proxies)
	var wg sync.WaitGroup
	go0 := make(chan struct{})
	start := time.Now()
	for i, p := range proxies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-go0
			go p.keys.Run(sctx)
			natsUp[i] = -1 // not connected (yet)
			if s, err := natsinv.Connect(natsinv.Options{URL: cfg.NATSURL}, p.cache, quiet, metrics.New()); err == nil {
				p.sub = s
				for !s.Connected() && sctx.Err() == nil {
					time.Sleep(5 * time.Millisecond)
				}
				if s.Connected() {
					natsUp[i] = time.Since(start)
				}
			}
			select {
			case <-p.keys.Loaded():
			case <-sctx.Done():
				fail(errors.New("key set not loaded before the storm's timeout"))
				warm[i] = -1
				return
			}
			var uw sync.WaitGroup
			var failed atomic.Bool
			for k := range cfg.UsersPerProxy {
				u := users[(i*cfg.UsersPerProxy+k)%len(users)]
				uw.Add(1)
				go func() {
					defer uw.Done()
					backoff := 100 * time.Millisecond
					for {
						_, err := p.cache.Get(sctx, u, core.TenantID, "")
						if err == nil {
							return
						}
						if !errors.Is(err, projection.ErrUnavailable) || sctx.Err() != nil {
							fail(err)
							failed.Store(true)
							return
						}
						retries.Add(1)
						wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)))
						backoff = min(2*backoff, 2*time.Second)
						select {
						case <-time.After(wait):
						case <-sctx.Done():
							failed.Store(true)
							return
						}
					}
				}()
			}
			uw.Wait()
			if failed.Load() {
				warm[i] = -1
				return
			}
			warm[i] = time.Since(start)
		}()
	}
	close(go0)
	wg.Wait()
	close(stopSampling)
	samplerWG.Wait()

	after, err := core.Metrics()
	if err != nil {
		return nil, err
	}
	coreCPU1, err := ProcessCPU(core.Pid())
	if err != nil {
		return nil, err
	}
	pgCPU1, _, err := core.PostgresCPU(ctx)
	if err != nil {
		return nil, err
	}
	var ok []time.Duration
	for _, w := range warm {
		if w < 0 {
			res.Cold++
			continue
		}
		ok = append(ok, w)
	}
	res.Warm = SummarizeMissing(ok, res.Cold)
	var up []time.Duration
	for _, d := range natsUp {
		if d >= 0 {
			up = append(up, d)
		}
	}
	res.NATSConnected = SummarizeMissing(up, len(natsUp)-len(up)).Max
	res.Retries = retries.Load()
	if f := firstFailure.Load(); f != nil {
		res.FirstFailure = *f
	}
	const projRoute = `route="` + identity.ProjectionPath + `/:user_id"`
	d := func(name string, labels ...string) float64 {
		return metricSum(after, name, labels...) - metricSum(before, name, labels...)
	}
	res.CoreJWKS = d("coreapi_http_request_duration_seconds_count", `route="/.well-known/jwks.json"`)
	res.CoreProjections = d("coreapi_http_request_duration_seconds_count", projRoute, `code="200"`)
	res.Core503 = d("coreapi_http_request_duration_seconds_count", projRoute, `code="503"`)
	res.CoreShed = d("coreapi_overload_shed_total", `kind="projection"`)
	res.EmptyAcquires = d("coreapi_db_pool_empty_acquires_total")
	res.PoolMax = metricSum(after, "coreapi_db_pool_max_conns")
	res.PoolPeak = float64(poolPeak.Load())
	res.PGConnsPeak = int(pgPeak.Load())
	res.CoreCPU = coreCPU1 - coreCPU0
	res.PGCPU = max(0, pgCPU1-pgCPU0)
	log.Info("storm", "proxies", cfg.Proxies, "all_warm", res.Warm.Max.String(), "cold", res.Cold, "retries", res.Retries)
	return res, nil
}
