package metrics

import (
	"testing"
)

// requestCounts returns authproxy_request_duration_seconds' sample count by
// code label.
func requestCounts(t *testing.T, m *Metrics) map[string]uint64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "authproxy_request_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "code" {
					out[l.GetValue()] = s.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}

// TestObserveRequestByCode: the exact status is the code label; only codes
// that happened are exported; statuses outside 100-599 share "0".
func TestObserveRequestByCode(t *testing.T) {
	m := New()
	if got := requestCounts(t, m); len(got) != 0 {
		t.Fatalf("series before any request: %v", got)
	}
	for _, s := range []int{200, 200, 404, 503, 599, 100, 99, 600, -1} {
		m.ObserveRequest(s, 0.001)
	}
	want := map[string]uint64{"200": 2, "404": 1, "503": 1, "599": 1, "100": 1, "0": 3}
	got := requestCounts(t, m)
	if len(got) != len(want) {
		t.Errorf("series = %v, want %v", got, want)
	}
	for code, n := range want {
		if got[code] != n {
			t.Errorf("code=%s count = %d, want %d", code, got[code], n)
		}
	}
}

// TestObserveRequestDoesNotAllocate: the hot path stays allocation-free
// once a code has been seen.
func TestObserveRequestDoesNotAllocate(t *testing.T) {
	m := New()
	m.ObserveRequest(200, 0.001)
	if a := testing.AllocsPerRun(1000, func() { m.ObserveRequest(200, 0.001) }); a != 0 {
		t.Errorf("ObserveRequest allocates %v times per call", a)
	}
}

func BenchmarkObserveRequest(b *testing.B) {
	m := New()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.ObserveRequest(200+i%3, 0.001)
		i++
	}
}
