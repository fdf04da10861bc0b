// Package metrics defines the proxy's Prometheus metrics on a registry of
// its own (no global state), with the label values of the hot path resolved
// once so that recording a request does not allocate.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

// Cache names used as the "cache" label.
const (
	CacheToken      = "token"
	CacheNegative   = "token_negative"
	CacheProjection = "projection"
	CacheAPIKey     = "api_key"
)

// Metrics holds every metric the proxy records.
type Metrics struct {
	Registry *prometheus.Registry

	// The metrics of every request are kept per CPU (sharded.go).
	requestDuration *codeHistograms
	AuthDuration    *HistogramOne

	Verifications   *prometheus.CounterVec // result
	VerifyOK        prometheus.Counter
	VerifyFailed    prometheus.Counter
	cacheHits       *CounterVec
	cacheMisses     *CounterVec
	cacheEvictions  *CounterVec
	UnknownKids     prometheus.Counter
	JWKSFetches     *prometheus.CounterVec // result
	JWKSKeys        prometheus.Gauge
	Invalidations   *prometheus.CounterVec // kind
	InvalidationLag prometheus.Histogram
	UpstreamErrors  *prometheus.CounterVec // target, kind
	// UpstreamStray counts upstream connections closed because the
	// upstream sent bytes outside an answer, by when they were found:
	// after_answer (read with an answer, past its end) or idle (arrived
	// while the connection was pooled).
	UpstreamStray *prometheus.CounterVec
	// UpstreamRetries counts forwarded requests sent a second time, signed
	// anew, after their connection was found stale (forward.Retry).
	UpstreamRetries   prometheus.Counter
	ProjectionFetches *prometheus.CounterVec // result
	NATSConnected     prometheus.Gauge
	// FeedStale is 1 while no outbox heartbeat arrived within
	// NATS_HEARTBEAT_TIMEOUT, or a relay the heartbeat rows list was not
	// heard within it, although NATS is connected (natsinv).
	FeedStale prometheus.Gauge
	// RelaysUnheard is the number of relays the heartbeat rows list whose
	// beat (auth.outbox.relay) was not heard within NATS_HEARTBEAT_TIMEOUT
	// while NATS is connected, plus one while a row counts relays it could
	// not list (natsinv).
	RelaysUnheard prometheus.Gauge
	// HeartbeatTimeoutShort is 1 while NATS_HEARTBEAT_TIMEOUT is shorter
	// than the least the heartbeat rows' interval needs
	// (invalidation.MinHeartbeatTimeout; natsinv).
	HeartbeatTimeoutShort prometheus.Gauge
	Decisions             *CounterVec // outcome
	RulesGeneration       prometheus.Gauge
	RulesReloadRefused    prometheus.Gauge
	RulesReloadFailed     prometheus.Counter
	// RulesReloadInPlace counts reloads of a rules file that was written
	// in place rather than renamed over (app.watchRules).
	RulesReloadInPlace prometheus.Counter
	UntrustedXFF       prometheus.Counter
	// APIKeyRefusals counts API keys refused at the proxy, by reason:
	// malformed, not_a_key (a JWT in X-API-Key), in_query, ambiguous
	// (X-API-Key and Authorization), unknown, wrong_secret, revoked
	// (or expired), rate_limited (per key and client IP),
	// unknown_rate_limited (per client IP, after too many unknown keys).
	APIKeyRefusals *prometheus.CounterVec
	// APIKeyUsesDropped counts API-key uses left out of the reports to
	// coreapi (last_used_at): the keys were evicted from the table, or
	// purged, while more keys than it holds waited for a report.
	APIKeyUsesDropped prometheus.Counter
	// APIKeyUsesRefused counts API-key uses dropped with a usage report
	// coreapi refused for good (a 4xx other than 408 and 429).
	APIKeyUsesRefused prometheus.Counter
}

// CacheCounters are one cache's hit/miss/eviction counters.
type CacheCounters struct {
	Hits, Misses, Evictions *Counter
}

// fastBuckets are the bounds (seconds) of the request and auth duration
// histograms: from 50 µs, the scale of a warm request's auth work.
func fastBuckets() []float64 {
	return []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
}

// New creates and registers the metrics, plus the Go and process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: r,
		requestDuration: &codeHistograms{upper: fastBuckets(),
			desc: prometheus.NewDesc("authproxy_request_duration_seconds", "Whole request time at the proxy, by status code.", []string{"code"}, nil)},
		AuthDuration: &HistogramOne{Histogram: newHistogram(fastBuckets()),
			desc: prometheus.NewDesc("authproxy_auth_duration_seconds", "Time from the start of a protected request to its access decision (hygiene, token, projection, decision).", nil, nil)},
		Verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_token_verifications_total", Help: "Token signature verifications performed (cache misses only).",
		}, []string{"result"}),
		cacheHits:      &CounterVec{desc: prometheus.NewDesc("authproxy_cache_hits_total", "Cache hits by cache.", []string{"cache"}, nil)},
		cacheMisses:    &CounterVec{desc: prometheus.NewDesc("authproxy_cache_misses_total", "Cache misses by cache.", []string{"cache"}, nil)},
		cacheEvictions: &CounterVec{desc: prometheus.NewDesc("authproxy_cache_evictions_total", "Entries evicted for space or expiry, by cache.", []string{"cache"}, nil)},
		UnknownKids: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authproxy_jwks_unknown_kid_total", Help: "Tokens naming a key id not in the key set.",
		}),
		JWKSFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_jwks_fetches_total", Help: "JWKS fetches by result.",
		}, []string{"result"}),
		JWKSKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authproxy_jwks_keys", Help: "Usable keys in the current key set.",
		}),
		Invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_invalidations_received_total", Help: "Invalidation events received, by kind.",
		}, []string{"kind"}),
		InvalidationLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "authproxy_invalidation_lag_seconds", Help: "Receipt time minus the event's commit time.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30},
		}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_upstream_errors_total", Help: "Errors talking to coreapi, by call and kind.",
		}, []string{"target", "kind"}),
		UpstreamStray: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_upstream_stray_closes_total", Help: "Upstream connections closed, never reused, because the upstream sent bytes outside an answer: read past an answer's end (after_answer) or arrived while the connection was idle (idle).",
		}, []string{"when"}),
		UpstreamRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authproxy_upstream_retries_total", Help: "Forwarded requests (GET, HEAD, PUT) sent once more, signed anew, after the upstream closed or reset their connection before answering.",
		}),
		ProjectionFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_projection_fetches_total", Help: "Projection fetches from coreapi, by result.",
		}, []string{"result"}),
		NATSConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authproxy_nats_connected", Help: "1 while the invalidation subscription is connected.",
		}),
		FeedStale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authproxy_invalidation_feed_stale", Help: "1 while no outbox heartbeat arrived within NATS_HEARTBEAT_TIMEOUT, or a relay the heartbeats list was not heard within it, although NATS is connected (the relays are not publishing, or not to this proxy; caches trusted for MAX_STALENESS).",
		}),
		RelaysUnheard: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authproxy_outbox_relays_unheard", Help: "Relays the outbox heartbeats list as publishing whose own beat (auth.outbox.relay) was not heard within NATS_HEARTBEAT_TIMEOUT although NATS is connected (what they publish does not reach this proxy; caches trusted for MAX_STALENESS), plus 1 while the heartbeats count relays they could not list (more than 256).",
		}),
		HeartbeatTimeoutShort: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authproxy_nats_heartbeat_timeout_short", Help: "1 while NATS_HEARTBEAT_TIMEOUT is shorter than 3.5 times the OUTBOX_HEARTBEAT_INTERVAL the outbox heartbeats announce (a coreapi replica that stops without deregistering, or late heartbeats, make the feed stale and purge the caches).",
		}),
		Decisions: &CounterVec{desc: prometheus.NewDesc("authproxy_decisions_total", "Access decisions by outcome.", []string{"outcome"}, nil)},
		RulesGeneration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authproxy_rules_generation", Help: "Route tables loaded: 1 at start, +1 per successful reload.",
		}),
		RulesReloadRefused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authproxy_rules_reload_refused", Help: "1 while the last reload of the rules file was refused: the file differs from the route table in force (the previous table stays) until a reload succeeds.",
		}),
		RulesReloadFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authproxy_rules_reload_failures_total", Help: "Rules reloads refused (the previous table stays).",
		}),
		RulesReloadInPlace: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authproxy_rules_reload_in_place_total", Help: "Rules reloads of a file written in place instead of renamed over (read only once unchanged for 1 s; write a temporary file and rename it over the rules file).",
		}),
		APIKeyRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authproxy_api_key_refusals_total", Help: "API keys refused at the proxy, by reason (wrong_secret counts guesses; rate_limited the requests refused 429 per key id and client IP; unknown_rate_limited those refused 429 per client IP after too many unknown keys).",
		}, []string{"reason"}),
		APIKeyUsesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authproxy_api_key_uses_dropped_total", Help: "API-key uses left out of the usage reports to coreapi (last_used_at): more keys left the table of resolved keys while used than it holds between two reports.",
		}),
		APIKeyUsesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authproxy_api_key_uses_refused_total", Help: "API-key uses dropped with a usage report to coreapi that coreapi refused for good (a 4xx other than 408 and 429): not sent again.",
		}),
		UntrustedXFF: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authproxy_untrusted_forwarded_for_total", Help: "Requests that carried X-Forwarded-For from a peer outside TRUSTED_PROXY_CIDRS (header dropped, the peer taken as the client).",
		}),
	}
	build := prometheus.Labels{}
	for i, v := range buildinfo.Read().Labels() {
		build[buildinfo.LabelNames[i]] = v
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "authproxy_build_info", Help: "Always 1; its labels name the running build (version, revision, Go version).", ConstLabels: build,
	})
	buildInfo.Set(1)
	r.MustRegister(m.RulesGeneration, m.RulesReloadRefused, m.RulesReloadFailed, m.RulesReloadInPlace, m.UntrustedXFF, buildInfo, m.APIKeyRefusals, m.APIKeyUsesDropped, m.APIKeyUsesRefused)
	for _, r := range []string{"malformed", "not_a_key", "in_query", "ambiguous", "unknown", "wrong_secret", "revoked", "rate_limited", "unknown_rate_limited"} {
		m.APIKeyRefusals.WithLabelValues(r)
	}
	r.MustRegister(m.requestDuration, m.AuthDuration, m.Verifications, m.cacheHits, m.cacheMisses,
		m.cacheEvictions, m.UnknownKids, m.JWKSFetches, m.JWKSKeys, m.Invalidations, m.InvalidationLag,
		m.UpstreamErrors, m.UpstreamStray, m.UpstreamRetries, m.ProjectionFetches, m.NATSConnected, m.FeedStale, m.RelaysUnheard, m.HeartbeatTimeoutShort, m.Decisions)
	// Export the error series at zero so that rates and alerts work from
	// the start.
	for _, tk := range [][2]string{{"forward", "connect"}, {"forward", "timeout"}, {"forward", "no_free_conns"}, {"forward", "closed"},
		{"forward", "transport"}, {"projection", "transport"}, {"projection", "timeout"}, {"projection", "status_5xx"},
		{"jwks", "transport"}, {"jwks", "status"}} {
		m.UpstreamErrors.WithLabelValues(tk[0], tk[1])
	}
	for _, w := range []string{"after_answer", "idle"} {
		m.UpstreamStray.WithLabelValues(w)
	}
	for _, k := range []string{"user", "tenant", "all", "apikey"} {
		m.Invalidations.WithLabelValues(k)
	}
	m.VerifyOK = m.Verifications.WithLabelValues("ok")
	m.VerifyFailed = m.Verifications.WithLabelValues("invalid")
	return m
}

// ObserveRequest records one request's duration (seconds) by status code
// (label code, e.g. "200"; a status outside 100-599 counts as "0").
func (m *Metrics) ObserveRequest(status int, seconds float64) {
	m.requestDuration.observe(status, seconds)
}

// CacheSize exports the size of the named cache, whose every entry is
// charged entryCost bytes: authproxy_cache_entries, _cost_bytes (what its
// entries are charged) and _budget_bytes (its maximum cost), read from
// maxCost and remaining when scraped. Only the first cache of a name is
// exported.
func (m *Metrics) CacheSize(name string, entryCost int64, maxCost, remaining func() int64) {
	l := prometheus.Labels{"cache": name}
	used := func() float64 { return float64(max(maxCost()-remaining(), 0)) }
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authproxy_cache_entries", ConstLabels: l,
			Help: "Entries held, by cache (token_negative: remembered refusals)."},
			func() float64 { return used() / float64(entryCost) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authproxy_cache_cost_bytes", ConstLabels: l,
			Help: "Bytes charged for the entries held (measured cost per entry), by cache."}, used),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authproxy_cache_budget_bytes", ConstLabels: l,
			Help: "Bytes the cache may hold (its share of CACHE_MEMORY_MB; token_negative's is on top), by cache."},
			func() float64 { return float64(maxCost()) }),
	} {
		_ = m.Registry.Register(g) // an AlreadyRegisteredError: a later cache of the name
	}
}

// Lingering exports authproxy_lingering_connections, read from n when
// scraped: connections refused for a body over its limit that are still
// being read and dropped before they close. Only the first is exported.
func (m *Metrics) Lingering(n func() int64) {
	_ = m.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authproxy_lingering_connections",
		Help: "Connections answered 413 for a body over the limit whose remaining bytes are read and dropped (at most 5 s each, 512 at once) before they close."},
		func() float64 { return float64(n()) }))
}

// BodyBytes exports authproxy_request_body_bytes, read from n when
// scraped: the bytes of the request body buffers being read at once
// (BODY_MEMORY_MB bounds them). Only the first is exported.
func (m *Metrics) BodyBytes(n func() int64) {
	_ = m.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authproxy_request_body_bytes",
		Help: "Bytes of the request body buffers held by requests being read or forwarded (beyond the first 8 KiB each); BODY_MEMORY_MB bounds them."},
		func() float64 { return float64(n()) }))
}

// Cache returns the counters of the named cache.
func (m *Metrics) Cache(name string) CacheCounters {
	return CacheCounters{
		Hits:      m.cacheHits.WithLabelValues(name),
		Misses:    m.cacheMisses.WithLabelValues(name),
		Evictions: m.cacheEvictions.WithLabelValues(name),
	}
}
