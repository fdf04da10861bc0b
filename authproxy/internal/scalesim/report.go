package scalesim

import (
	"fmt"
	"io"
	"strconv"
	"time"
)

// WriteFanout writes the fan-out rows as a Markdown table. The lag
// percentiles are over every delivery expected: one never applied (or
// dropped) ranks above every lag measured, and a percentile among those
// reads "not applied".
func WriteFanout(w io.Writer, rows []*FanoutResult) {
	fmt.Fprintln(w, "| NATS | subscribers | events/s | published | deliveries applied / expected | dropped (client) | slow consumers (server) | lag p50 | lag p99 | lag max | NATS CPU (cores) | NATS CPU µs / delivery | subscribers + publisher CPU (cores) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		nodes := "1 server"
		if r.Nodes > 1 {
			nodes = strconv.Itoa(r.Nodes) + "-node cluster"
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d / %d | %d | %d | %s | %s | %s | %s | %s | %s |\n",
			nodes, r.Subscribers, r.Rate, r.Published, r.Applied, r.Expected, r.Dropped, r.SlowConsumers,
			pct(r.Lag.P50, "not applied"), pct(r.Lag.P99, "not applied"), pct(r.Lag.Max, "not applied"), cores(r.NATSCPU, r.Wall),
			perUnit(r.NATSCPU, r.Applied, 1), cores(r.SimCPU, r.Wall))
	}
}

// WriteStorm writes the storm rows as a Markdown table. The warm times
// are over every proxy: one never warm ranks above every time measured,
// and "all warm" (the largest) reads "never" when any proxy was not.
func WriteStorm(w io.Writer, rows []*StormResult) {
	fmt.Fprintln(w, "| proxies | users / proxy | PROJECTION_MAX_FETCHES | all warm | warm p50 | warm p99 | not warm | NATS all connected | JWKS served | projections 200 | projections 503 (shed) | retries at proxies | pool max | pool peak in use | PostgreSQL backends peak | pool waits | coreapi CPU | PostgreSQL CPU |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %d | %d | %s | %s | %s | %d | %s | %.0f | %.0f | %.0f (%.0f) | %d | %.0f | %.0f | %d | %.0f | %s | %s |\n",
			r.Proxies, r.UsersPerProxy, r.MaxFetches, pct(r.Warm.Max, "never"), pct(r.Warm.P50, "never"), pct(r.Warm.P99, "never"), r.Cold, pct(r.NATSConnected, "never"),
			r.CoreJWKS, r.CoreProjections, r.Core503, r.CoreShed, r.Retries, r.PoolMax, r.PoolPeak, r.PGConnsPeak,
			r.EmptyAcquires, r.CoreCPU.Round(10*time.Millisecond), r.PGCPU.Round(10*time.Millisecond))
	}
}

func cores(cpu, wall time.Duration) string {
	if wall <= 0 {
		return "0"
	}
	return strconv.FormatFloat(cpu.Seconds()/wall.Seconds(), 'f', 2, 64)
}

// perUnit is cpu in microseconds per (n / per) units.
func perUnit(cpu time.Duration, n int64, per int64) string {
	if n <= 0 {
		return "–"
	}
	return strconv.FormatFloat(float64(cpu.Microseconds())*float64(per)/float64(n), 'f', 1, 64)
}
