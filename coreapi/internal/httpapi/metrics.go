package httpapi

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/shared/buildinfo"
	"github.com/tollgate-auth/tollgate/shared/identity/replay"
)

type metrics struct {
	duration *prometheus.HistogramVec
	queries  *prometheus.HistogramVec
	rejected *prometheus.CounterVec
	shedded  *prometheus.CounterVec
	// unchecked counts the writes of machine principals that name no
	// credential (liveCredential), by principal: the vector, and its two
	// children taken once, so a write costs no label lookup.
	unchecked                    *prometheus.CounterVec
	uncheckedKey, uncheckedToken prometheus.Counter
	// byRequest holds each (method, route, status)'s two histograms
	// (requestKey → *requestObservers): one map read per request instead
	// of two label lookups (each validates, hashes and compares its
	// labels under a lock) and the status code's formatting. Its size is
	// the histograms' own label cardinality.
	byRequest sync.Map
}

type requestKey struct {
	method, route string
	status        int
}

type requestObservers struct {
	duration, queries prometheus.Observer
}

func newMetrics(reg prometheus.Registerer, replays *replay.Cache, catalog *permissions.Catalog) (*metrics, error) {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coreapi_http_request_duration_seconds",
			Help:    "Time from the first middleware to the response, by method, route template and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route", "code"}),
		queries: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coreapi_db_queries_per_request",
			Help:    "Database round trips made while serving one request, by route template.",
			Buckets: []float64{0, 1, 2, 3, 5, 8, 13},
		}, []string{"route"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coreapi_identity_rejected_total",
			Help: "Requests refused because of their identity headers, by reason.",
		}, []string{"reason"}),
		shedded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coreapi_overload_shed_total",
			Help: "Requests answered 503 because too many of their kind were in flight, by kind.",
		}, []string{"kind"}),
		unchecked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coreapi_machine_writes_unchecked_total",
			Help: "Writes of an API key or a service account's token whose identity named no key or client secret, so not checked against a revocation or deletion, by principal.",
		}, []string{"principal"}),
	}
	m.uncheckedKey = m.unchecked.WithLabelValues("api_key")
	m.uncheckedToken = m.unchecked.WithLabelValues("service")
	if reg == nil {
		return m, nil
	}
	evicted := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "coreapi_identity_replay_cache_evictions_total",
		Help: "Accepted signatures forgotten before their window ended because the replay cache was full (IDENTITY_REPLAY_CACHE_SIZE).",
	}, func() float64 { return float64(replays.Evicted()) })
	info := buildinfo.Read()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "coreapi_build_info",
		Help:        "Always 1; its labels name the running build (version, revision, Go version).",
		ConstLabels: buildLabels(info),
	})
	build.Set(1)
	// The catalog record as this replica last read it (at start, in a
	// guarded change, and every permissions reread): a replica whose
	// catalog is not the recorded one refuses what catalog_rollout
	// refuses, which only its start's log line said.
	behind := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "coreapi_permission_catalog_behind",
		Help: "1 while the permission catalog recorded in the database, as this replica last read it, is not this replica's (it answers 503 catalog_rollout to the changes the catalog judges).",
	}, func() float64 {
		if b, _, _ := catalog.Standing(); b {
			return 1
		}
		return 0
	})
	recordedVersion := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "coreapi_permission_catalog_recorded_version",
		Help: "Version of the permission catalog recorded in the database, as this replica last read it (0 before it read one).",
	}, func() float64 {
		_, v, _ := catalog.Standing()
		return float64(v)
	})
	version := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "coreapi_permission_catalog_version",
		Help: "Version of this replica's permission catalog (0 when it declares none).",
	}, func() float64 { return float64(catalog.Version()) })
	for _, c := range []prometheus.Collector{m.duration, m.queries, m.rejected, m.shedded, m.unchecked, evicted, build, behind, recordedVersion, version} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// observe records one request. method and route must be strings that stay
// unchanged (constants or copies), as they are kept as labels and keys.
func (m *metrics) observe(method, route string, status int, d time.Duration, queries int64) {
	k := requestKey{method: method, route: route, status: status}
	o, ok := m.byRequest.Load(k)
	if !ok {
		o, _ = m.byRequest.LoadOrStore(k, &requestObservers{
			duration: m.duration.WithLabelValues(method, route, strconv.Itoa(status)),
			queries:  m.queries.WithLabelValues(route),
		})
	}
	ro := o.(*requestObservers)
	ro.duration.Observe(d.Seconds())
	ro.queries.Observe(float64(queries))
}

func (m *metrics) identityRejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

func (m *metrics) shed(kind string) { m.shedded.WithLabelValues(kind).Inc() }

// buildLabels are the build_info gauge's labels.
func buildLabels(in buildinfo.Info) prometheus.Labels {
	l := prometheus.Labels{}
	for i, v := range in.Labels() {
		l[buildinfo.LabelNames[i]] = v
	}
	return l
}
