package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The newest dump of a callgrind output is read, whichever of its two
// total lines it carries.
func TestLastDumpTotal(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "callgrind.x.123")
	for name, body := range map[string]string{
		".1":  "events: Ir\nsummary: 1000\n",
		".2":  "events: Ir\nsummary: 5000\n",
		".10": "events: Ir\ntotals: 7000\n",
	} {
		if err := os.WriteFile(prefix+name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := lastDumpTotal(prefix); err != nil || got != 7000 {
		t.Fatalf("lastDumpTotal = %v, %v; want 7000 from the 10th dump", got, err)
	}
	if _, err := lastDumpTotal(filepath.Join(dir, "none")); err == nil {
		t.Fatal("no dump: want an error")
	}
}

// The report states each new figure against its goal, and a figure that
// could not be measured says why instead of showing a number.
func TestReportNewRows(t *testing.T) {
	base := func() *report {
		r := &report{opts: options{conns: 64, users: 1000, manyUsers: 100000, duration: 10 * time.Second, warmup: 2 * time.Second}}
		r.add(row{name: "bare Fiber proxy", conns: 64, res: result{Requests: 300000, RPS: 30000, P99: 2 * time.Millisecond}})
		r.add(row{name: "authproxy warm (1000 users)", conns: 64, res: result{Requests: 250000, RPS: 25000, P99: 3 * time.Millisecond}})
		return r
	}
	r := base()
	r.instr = []instrRow{{name: "bare Fiber proxy", requests: 2000, perRequest: 25000}, {name: "authproxy warm (1000 users)", requests: 2000, perRequest: 45000}}
	r.openLoop = []openLoopRow{{name: "bare Fiber proxy", rate: 15000, requests: 150000, success: 1, p99: time.Millisecond},
		{name: "authproxy warm (1000 users)", rate: 15000, requests: 150000, success: 1, p99: 1200 * time.Microsecond}}
	r.tokens = tokenSizes{eddsa: 538, rs256: 802}
	r.add(row{name: "oauth2-proxy v7.15.6, JWT bearer (1000 users)", conns: 64, res: result{Requests: 30000, RPS: 2000}})
	r.addTrend(row{name: "authproxy warm (100000 users)", conns: 64, res: result{Requests: 210000, RPS: 21000},
		counters: []counter{{label: "signature verifications / request", value: 0}}})
	md := r.markdown()
	for _, want := range []string{
		"| authproxy ÷ bare proxy instructions per warm request (callgrind) | 1.80× (45.0k ÷ 25.0k) | ≤ 2×: met |",
		"| p99 added by authproxy, open loop at 15000 req/s (50 % of the bare proxy's rate; where each ran: below) | 0.20 ms | ≤ 0.3 ms: met |",
		"| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput, main rows above | 12.5× | ≥ 10×: met |",
		"| authproxy warm (100000 users, default settings) ÷ warm (1000 users) throughput; verifications / request | 0.84; 0 | ≥ 0.8 and 0: met |",
		"EdDSA 538 bytes", "RS256 (2048-bit key) 802 bytes",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	r = base()
	r.instr = []instrRow{{name: "bare Fiber proxy", perRequest: -1, note: "not measured: valgrind missing"},
		{name: "authproxy warm (1000 users)", perRequest: -1, note: "not measured: valgrind missing"}}
	r.add(row{name: "oauth2-proxy v7.15.6, JWT bearer (1000 users)", conns: 64, note: "not measured: go install failed"})
	r.addTrend(row{name: "authproxy warm (100000 users)", conns: 64, res: result{Requests: 100000, RPS: 10000},
		counters: []counter{{label: "signature verifications / request", value: 0.07}}})
	md = r.markdown()
	for _, want := range []string{
		"| bare Fiber proxy | not measured: valgrind missing | |",
		"| oauth2-proxy v7.15.6, JWT bearer (1000 users) | not measured | | | |",
		"| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput | not measured: go install failed | ≥ 10× |",
		"| 0.40; 0.07 | ≥ 0.8 and 0: **missed** |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "instructions per warm request (callgrind) |") {
		t.Error("a ratio of instruction counts that were not measured")
	}
}
