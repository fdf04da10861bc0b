package metrics

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/authproxy/internal/percpu"
)

// The metrics every request records (its duration, its auth time, the
// token cache hit, the decision) are kept in one cell per CPU (package
// percpu): a request adds to the cell of the CPU it runs on; a scrape sums
// the cells.

// Counter is a counter kept per CPU. Safe for concurrent use.
type Counter struct{ cells []counterCell }

type counterCell struct {
	n atomic.Uint64
	_ [percpu.CacheLine - 8]byte
}

func newCounter() *Counter { return &Counter{cells: make([]counterCell, percpu.Cells)} }

// Inc adds one.
func (c *Counter) Inc() {
	c.cells[percpu.Pin()].n.Add(1)
	percpu.Unpin()
}

// Value is the sum of the cells.
func (c *Counter) Value() uint64 {
	var n uint64
	for i := range c.cells {
		n += c.cells[i].n.Load()
	}
	return n
}

// CounterVec is a counter family with one label, its children kept per
// CPU (Counter). Safe for concurrent use.
type CounterVec struct {
	desc     *prometheus.Desc
	mu       sync.Mutex
	values   []string
	children []*Counter
}

// WithLabelValues returns the child of the label value, made (and exported
// at zero) on its first call. Callers keep the child: the lookup is not
// for the hot path.
func (v *CounterVec) WithLabelValues(value string) *Counter {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i, have := range v.values {
		if have == value {
			return v.children[i]
		}
	}
	c := newCounter()
	v.values, v.children = append(v.values, value), append(v.children, c)
	return c
}

// Describe implements prometheus.Collector.
func (v *CounterVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

// Collect implements prometheus.Collector.
func (v *CounterVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	values, children := v.values, v.children
	v.mu.Unlock()
	for i, c := range children {
		ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, float64(c.Value()), values[i])
	}
}

// maxBuckets is the most bucket bounds a Histogram takes.
const maxBuckets = 17

// Histogram is a histogram kept per CPU, with at most maxBuckets bounds.
// Safe for concurrent use.
type Histogram struct {
	upper []float64
	cells []histCell
}

// histCell is one CPU's bucket counts (the last: above every bound) and
// sum (float64 bits), padded to whole cache lines.
type histCell struct {
	counts [maxBuckets + 1]atomic.Uint64
	sum    atomic.Uint64
	_      [(percpu.CacheLine - (maxBuckets+2)*8%percpu.CacheLine) % percpu.CacheLine]byte
}

func newHistogram(upper []float64) *Histogram {
	if len(upper) > maxBuckets {
		panic("metrics: too many histogram buckets")
	}
	return &Histogram{upper: upper, cells: make([]histCell, percpu.Cells)}
}

// Observe records v.
func (h *Histogram) Observe(v float64) {
	b := 0
	for b < len(h.upper) && v > h.upper[b] {
		b++
	}
	c := &h.cells[percpu.Pin()]
	c.counts[b].Add(1)
	for v != 0 { // 0 (a warm request's auth time) leaves the sum as it is
		old := c.sum.Load()
		if c.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			break
		}
	}
	percpu.Unpin()
}

// metric is the histogram's current value as a Prometheus metric.
func (h *Histogram) metric(desc *prometheus.Desc, labelValues ...string) prometheus.Metric {
	var counts [maxBuckets + 1]uint64
	var sum float64
	for i := range h.cells {
		c := &h.cells[i]
		for b := range counts {
			counts[b] += c.counts[b].Load()
		}
		sum += math.Float64frombits(c.sum.Load())
	}
	buckets := make(map[float64]uint64, len(h.upper))
	var n uint64
	for b, bound := range h.upper {
		n += counts[b]
		buckets[bound] = n
	}
	n += counts[len(h.upper)]
	return prometheus.MustNewConstHistogram(desc, n, sum, buckets, labelValues...)
}

// HistogramOne is a Histogram without labels, registered as a collector.
type HistogramOne struct {
	*Histogram
	desc *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (h *HistogramOne) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *HistogramOne) Collect(ch chan<- prometheus.Metric) { ch <- h.metric(h.desc) }

// codeHistograms is the request duration histogram by status code (100-599;
// 0 holds anything else), a child made on the code's first request, so
// that only codes that happened are exported and recording does not
// allocate.
type codeHistograms struct {
	desc   *prometheus.Desc
	upper  []float64
	byCode [600]atomic.Pointer[Histogram]
}

func (h *codeHistograms) observe(status int, seconds float64) {
	if status < 100 || status >= len(h.byCode) {
		status = 0
	}
	o := h.byCode[status].Load()
	if o == nil {
		h.byCode[status].CompareAndSwap(nil, newHistogram(h.upper))
		o = h.byCode[status].Load()
	}
	o.Observe(seconds)
}

// Describe implements prometheus.Collector.
func (h *codeHistograms) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *codeHistograms) Collect(ch chan<- prometheus.Metric) {
	for i := range h.byCode {
		if o := h.byCode[i].Load(); o != nil {
			ch <- o.metric(h.desc, strconv.Itoa(i))
		}
	}
}
