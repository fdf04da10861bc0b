package scalesim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	got := Summarize(d)
	want := Summary{N: 100, P50: 50 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}
	if got != want {
		t.Fatalf("Summarize = %+v, want %+v", got, want)
	}
	if got := Summarize([]time.Duration{7}); got != (Summary{N: 1, P50: 7, P99: 7, Max: 7}) {
		t.Fatalf("one value: %+v", got)
	}
	if got := Summarize(nil); got != (Summary{}) {
		t.Fatalf("no values: %+v", got)
	}
}

func TestSeqUserID(t *testing.T) {
	for _, seq := range []int{0, 1, 4095, 1 << 40} {
		id := seqUserID(seq)
		if len(id) != 36 {
			t.Errorf("seqUserID(%d) = %q, want a 36-character UUID", seq, id)
		}
		if got, ok := parseSeq(id); !ok || got != seq {
			t.Errorf("parseSeq(%q) = %d, %v, want %d", id, got, ok, seq)
		}
	}
	for _, bad := range []string{"", "warm", seqPrefix, seqPrefix + "00000000000g", seqPrefix + "0000000000001", "ffffffff-0000-4000-8000-000000000001"} {
		if _, ok := parseSeq(bad); ok {
			t.Errorf("parseSeq(%q) accepted", bad)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// utime 250 and stime 50 ticks; a command name with spaces and ')'.
	line := "4242 (nats server) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 123 456 789\n"
	got, err := parseStatCPU(line)
	if err != nil || got != 3*time.Second {
		t.Fatalf("parseStatCPU = %s, %v, want 3s", got, err)
	}
	for _, bad := range []string{"", "4242 nats S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 -5 50 0"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q) accepted", bad)
		}
	}
	// This process has used some CPU by now.
	if d, err := ProcessCPU(os.Getpid()); err != nil || d < 0 {
		t.Fatalf("ProcessCPU(self) = %s, %v", d, err)
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Fatal("ProcessCPU(-1) succeeded")
	}
}

func TestFindNATSServer(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "nats-server")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if got, err := FindNATSServer(env(map[string]string{"NATS_SERVER_BIN": bin})); err != nil || got != bin {
		t.Fatalf("FindNATSServer(NATS_SERVER_BIN) = %q, %v", got, err)
	}
	notExec := filepath.Join(dir, "plain")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{notExec, filepath.Join(dir, "missing"), dir} {
		_, err := FindNATSServer(env(map[string]string{"NATS_SERVER_BIN": p}))
		if !errors.Is(err, ErrNoNATSServer) || !strings.Contains(err.Error(), "apt-get install -y nats-server") {
			t.Errorf("NATS_SERVER_BIN=%s: err = %v, want ErrNoNATSServer saying what to install", p, err)
		}
	}
}

func TestNodeArgs(t *testing.T) {
	one := []*Node{{Name: "a", ClientPort: 1, MonitorPort: 2}}
	if got := strings.Join(nodeArgs(one, 0), " "); got != "-a 127.0.0.1 -p 1 -m 2 -n a" {
		t.Errorf("single node args = %q", got)
	}
	three := []*Node{{Name: "a", ClientPort: 1, MonitorPort: 2, ClusterPort: 3}, {Name: "b", ClientPort: 4, MonitorPort: 5, ClusterPort: 6},
		{Name: "c", ClientPort: 7, MonitorPort: 8, ClusterPort: 9}}
	got := strings.Join(nodeArgs(three, 1), " ")
	want := "-a 127.0.0.1 -p 4 -m 5 -n b --cluster_name tollgate --cluster nats://127.0.0.1:6 --routes nats://127.0.0.1:3,nats://127.0.0.1:9"
	if got != want {
		t.Errorf("cluster node args =\n%q\nwant\n%q", got, want)
	}
}

func TestMetricSum(t *testing.T) {
	text := `# HELP coreapi_http_request_duration_seconds x
# TYPE coreapi_http_request_duration_seconds histogram
coreapi_http_request_duration_seconds_bucket{method="GET",route="/p",code="200",le="0.1"} 9
coreapi_http_request_duration_seconds_count{method="GET",route="/p",code="200"} 10
coreapi_http_request_duration_seconds_count{method="GET",route="/p",code="503"} 3
coreapi_http_request_duration_seconds_count{method="GET",route="/q",code="503"} 4
coreapi_db_pool_max_conns 8
coreapi_db_pool_max_conns_other 99
coreapi_overload_shed_total{kind="projection"} 2.5e+01
`
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"coreapi_http_request_duration_seconds_count", nil, 17},
		{"coreapi_http_request_duration_seconds_count", []string{`route="/p"`}, 13},
		{"coreapi_http_request_duration_seconds_count", []string{`route="/p"`, `code="503"`}, 3},
		{"coreapi_http_request_duration_seconds_count", []string{`code="50"`}, 0},
		{"coreapi_db_pool_max_conns", nil, 8},
		{"coreapi_overload_shed_total", []string{`kind="projection"`}, 25},
		{"missing", nil, 0},
	}
	for _, tt := range tests {
		if got := metricSum(text, tt.name, tt.labels...); got != tt.want {
			t.Errorf("metricSum(%s, %v) = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}

func TestWarmUserID(t *testing.T) {
	id := warmUserID(7)
	if r, ok := parseWarm(id); !ok || r != 7 {
		t.Fatalf("parseWarm(%q) = %d, %v", id, r, ok)
	}
	if _, ok := parseSeq(id); ok {
		t.Fatalf("a warm-up id parsed as a measured event")
	}
	if _, ok := parseWarm(seqUserID(7)); ok {
		t.Fatalf("a measured id parsed as a warm-up")
	}
}

func TestParseStatusRSS(t *testing.T) {
	got, err := parseStatusRSS("Name:\tauthproxy\nVmPeak:\t  999 kB\nVmRSS:\t   2048 kB\nThreads:\t9\n")
	if err != nil || got != 2<<20 {
		t.Fatalf("parseStatusRSS = %d, %v, want 2 MiB", got, err)
	}
	for _, bad := range []string{"", "Name: x\n", "VmRSS:\t12 MB\n", "VmRSS:\t-1 kB\n", "VmRSS:\n"} {
		if _, err := parseStatusRSS(bad); err == nil {
			t.Errorf("parseStatusRSS(%q) accepted", bad)
		}
	}
	if n, err := ProcessRSS(os.Getpid()); err != nil || n <= 0 {
		t.Fatalf("ProcessRSS(self) = %d, %v", n, err)
	}
}

// Values that never came (a delivery never applied, a proxy never warm)
// rank above every measured one: a percentile among them is Unreached,
// not the largest value measured, and so is the maximum.
func TestSummarizeMissing(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 961; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	// 39 of 1,000 never came (3.9 %, as in the 1-server 1000 × 1000 row).
	got := SummarizeMissing(d, 39)
	want := Summary{N: 961, Missing: 39, P50: 500 * time.Millisecond, P99: Unreached, Max: Unreached}
	if got != want {
		t.Fatalf("SummarizeMissing = %+v, want %+v", got, want)
	}
	// 5 of 1,000 missing: p99 (rank 990) is still measured, the max not.
	d = d[:0]
	for i := 1; i <= 995; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	got = SummarizeMissing(d, 5)
	if got.P99 != 990*time.Millisecond || got.Max != Unreached || got.P50 != 500*time.Millisecond {
		t.Fatalf("5 missing: %+v", got)
	}
	if got := SummarizeMissing(nil, 3); got != (Summary{Missing: 3, P50: Unreached, P99: Unreached, Max: Unreached}) {
		t.Fatalf("nothing measured: %+v", got)
	}
	if got := SummarizeMissing([]time.Duration{7}, 0); got != Summarize([]time.Duration{7}) {
		t.Fatalf("none missing: %+v", got)
	}
}

// The tables say "not applied" and "never" where a percentile falls among
// the values that never came, instead of the largest one measured.
func TestWriteTablesUnreached(t *testing.T) {
	lags := make([]time.Duration, 0, 961)
	for i := 1; i <= 961; i++ {
		lags = append(lags, time.Duration(i)*time.Millisecond)
	}
	var b strings.Builder
	WriteFanout(&b, []*FanoutResult{{FanoutConfig: FanoutConfig{Subscribers: 10, Rate: 100}, Nodes: 1, Published: 100, Expected: 1000, Applied: 961,
		Lag: SummarizeMissing(lags, 39), NATSCPU: time.Second, Wall: 10 * time.Second}})
	if !strings.Contains(b.String(), "| 961 / 1000 | 0 | 0 | 500.00 ms | not applied | not applied |") {
		t.Errorf("fan-out row:\n%s", b.String())
	}
	b.Reset()
	WriteStorm(&b, []*StormResult{{StormConfig: StormConfig{Proxies: 1000, UsersPerProxy: 10, MaxFetches: 64}, Cold: 821,
		Warm: SummarizeMissing(lags[:179:179], 821), NATSConnected: SummarizeMissing(lags, 39).Max}})
	if !strings.Contains(b.String(), "| 1000 | 10 | 64 | never | never | never | 821 | never |") {
		t.Errorf("storm row:\n%s", b.String())
	}
}
