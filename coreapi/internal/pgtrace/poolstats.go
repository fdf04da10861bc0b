package pgtrace

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exports a pgx pool's statistics, so an undersized pool shows
// up as acquire waits rather than as unexplained latency.
type PoolCollector struct {
	pool *pgxpool.Pool

	total, idle, acquired, max, constructing *prometheus.Desc
	acquires, emptyAcquires, canceled        *prometheus.Desc
	acquireSeconds                           *prometheus.Desc
}

// NewPoolCollector returns a collector for pool.
func NewPoolCollector(pool *pgxpool.Pool) *PoolCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &PoolCollector{
		pool:           pool,
		total:          d("coreapi_db_pool_conns", "Connections in the pool."),
		idle:           d("coreapi_db_pool_idle_conns", "Idle connections."),
		acquired:       d("coreapi_db_pool_acquired_conns", "Connections in use."),
		constructing:   d("coreapi_db_pool_constructing_conns", "Connections being opened."),
		max:            d("coreapi_db_pool_max_conns", "Pool size limit."),
		acquires:       d("coreapi_db_pool_acquires_total", "Successful acquires."),
		emptyAcquires:  d("coreapi_db_pool_empty_acquires_total", "Acquires that had to wait for a connection."),
		canceled:       d("coreapi_db_pool_canceled_acquires_total", "Acquires abandoned because their context ended."),
		acquireSeconds: d("coreapi_db_pool_acquire_seconds_total", "Time spent acquiring connections."),
	}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.total, c.idle, c.acquired, c.constructing, c.max, c.acquires, c.emptyAcquires, c.canceled, c.acquireSeconds} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	n := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	g(c.total, float64(s.TotalConns()))
	g(c.idle, float64(s.IdleConns()))
	g(c.acquired, float64(s.AcquiredConns()))
	g(c.constructing, float64(s.ConstructingConns()))
	g(c.max, float64(s.MaxConns()))
	n(c.acquires, float64(s.AcquireCount()))
	n(c.emptyAcquires, float64(s.EmptyAcquireCount()))
	n(c.canceled, float64(s.CanceledAcquireCount()))
	n(c.acquireSeconds, s.AcquireDuration().Seconds())
}
