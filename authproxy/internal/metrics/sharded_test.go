package metrics

import (
	"math"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Counts added from many goroutines at once all arrive, whatever cells
// they land in.
func TestCounterSumsItsCells(t *testing.T) {
	c := newCounter()
	const goroutines, each = 16, 10_000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				c.Inc()
			}
		})
	}
	wg.Wait()
	if got := c.Value(); got != goroutines*each {
		t.Fatalf("value %d, want %d", got, goroutines*each)
	}
}

// written is what a collector exports, as the registry would read it.
func written(t *testing.T, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// A per-CPU histogram exports what client_golang's own histogram exports
// for the same observations: the same cumulative buckets (a value equal to
// a bound counts in that bound's bucket), count and sum.
func TestHistogramMatchesPrometheus(t *testing.T) {
	bounds := []float64{.001, .01, .1, 1}
	ref := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ref", Buckets: bounds})
	h := &HistogramOne{Histogram: newHistogram(bounds), desc: prometheus.NewDesc("h", "h", nil, nil)}
	values := []float64{0, .0005, .001, .0011, .01, .05, .1, .5, 1, 1.5, 100, math.SmallestNonzeroFloat64}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, v := range values {
				h.Observe(v)
			}
		})
		for _, v := range values {
			ref.Observe(v)
		}
	}
	wg.Wait()
	ch := make(chan prometheus.Metric, 1)
	h.Collect(ch)
	got, want := written(t, <-ch).GetHistogram(), written(t, ref).GetHistogram()
	if got.GetSampleCount() != want.GetSampleCount() || math.Abs(got.GetSampleSum()-want.GetSampleSum()) > 1e-9 {
		t.Fatalf("count/sum %d/%g, want %d/%g", got.GetSampleCount(), got.GetSampleSum(), want.GetSampleCount(), want.GetSampleSum())
	}
	if len(got.GetBucket()) != len(want.GetBucket()) {
		t.Fatalf("%d buckets, want %d", len(got.GetBucket()), len(want.GetBucket()))
	}
	for i, b := range want.GetBucket() {
		g := got.GetBucket()[i]
		if g.GetUpperBound() != b.GetUpperBound() || g.GetCumulativeCount() != b.GetCumulativeCount() {
			t.Errorf("bucket %d: le=%g count %d, want le=%g count %d", i, g.GetUpperBound(), g.GetCumulativeCount(), b.GetUpperBound(), b.GetCumulativeCount())
		}
	}
}

// A counter family exports each child made, at zero until it counts, and
// hands out one child per label value.
func TestCounterVecChildren(t *testing.T) {
	v := &CounterVec{desc: prometheus.NewDesc("v_total", "v", []string{"kind"}, nil)}
	a := v.WithLabelValues("a")
	v.WithLabelValues("b")
	if v.WithLabelValues("a") != a {
		t.Fatal("a second child for one label value")
	}
	a.Inc()
	a.Inc()
	ch := make(chan prometheus.Metric, 4)
	v.Collect(ch)
	close(ch)
	got := map[string]float64{}
	for m := range ch {
		w := written(t, m)
		got[w.GetLabel()[0].GetValue()] = w.GetCounter().GetValue()
	}
	if len(got) != 2 || got["a"] != 2 || got["b"] != 0 {
		t.Fatalf("exported %v, want a=2 b=0", got)
	}
}

// Recording on the hot path does not allocate.
func TestShardedDoNotAllocate(t *testing.T) {
	c := newCounter()
	h := newHistogram([]float64{.001, .01})
	if a := testing.AllocsPerRun(1000, func() { c.Inc(); h.Observe(.005) }); a != 0 {
		t.Errorf("Inc and Observe allocate %v times per call", a)
	}
}

// BenchmarkRecordParallel records what a warm request records (request
// and auth duration, a cache hit, a decision) from every CPU at once, in
// per-CPU cells (sharded) and in client_golang's metrics (shared).
func BenchmarkRecordParallel(b *testing.B) {
	b.Run("sharded", func(b *testing.B) {
		m := New()
		hit, dec := m.Cache(CacheToken).Hits, m.Decisions.WithLabelValues("allow")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.ObserveRequest(200, 0.0002)
				m.AuthDuration.Observe(0)
				hit.Inc()
				dec.Inc()
			}
		})
	})
	b.Run("shared", func(b *testing.B) {
		req := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "r", Buckets: fastBuckets()}, []string{"code"}).WithLabelValues("200")
		auth := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "a", Buckets: fastBuckets()})
		hit := prometheus.NewCounter(prometheus.CounterOpts{Name: "h"})
		dec := prometheus.NewCounter(prometheus.CounterOpts{Name: "d"})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req.Observe(0.0002)
				auth.Observe(0)
				hit.Inc()
				dec.Inc()
			}
		})
	})
}
