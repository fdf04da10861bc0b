package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The newest dump of a callgrind output is read, whichever of its two
// total lines it carries, each total under its event's name.
func TestLastDumpTotals(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "callgrind.x.123")
	for name, body := range map[string]string{
		".1":  "events: Ir\nsummary: 1000\n",
		".2":  "events: Ir I1mr\nsummary: 5000 7\n",
		".10": "events: Ir I1mr D1mr D1mw ILmr DLmr DLmw\ntotals: 7000 60 50 40 3 2 1\n",
	} {
		if err := os.WriteFile(prefix+name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := lastDumpTotals(prefix)
	if err != nil || got["Ir"] != 7000 || sum(got, firstLevelI) != 60 || sum(got, firstLevelD) != 90 || sum(got, lastLevelAll) != 6 {
		t.Fatalf("lastDumpTotals = %v, %v; want the 10th dump's totals", got, err)
	}
	if _, err := lastDumpTotals(filepath.Join(dir, "none")); err == nil {
		t.Fatal("no dump: want an error")
	}
	bad := filepath.Join(dir, "callgrind.y.1")
	if err := os.WriteFile(bad+".1", []byte("events: Ir I1mr\nsummary: 5000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := lastDumpTotals(bad); err == nil {
		t.Fatal("fewer totals than events: want an error")
	}
}

// The SHA-256 block functions' own instructions are summed from the
// dump's cost lines: with callgrind's name compression, a function
// entered again later in the file, and neither the lines of calls
// (inclusive costs, which would count the blocks twice) nor the
// dispatching wrapper sha256.block.
func TestLastDumpTotalsSHABlocks(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "callgrind.z.9")
	dump := `events: Ir D1mr
fl=(1) /go/src/crypto/internal/fips140/sha256/sha256block_amd64.s
fn=(1) crypto/internal/fips140/sha256.blockAVX2.abi0
5 2000 3
+1 800
fl=(2) /go/src/crypto/internal/fips140/sha256/sha256block_amd64.go
fn=(2) crypto/internal/fips140/sha256.block
3 10
cfl=(1)
cfn=(1)
calls=1 5
4 2800 3
fl=(3) /app/main.go
fn=(3) main.handler
cfn=(4) crypto/internal/fips140/sha256.blockSHANI
calls=1 0
1 170
2 50 1
fn=(4)
7 170
fn=(1)
9 100
totals: 3300 4
`
	if err := os.WriteFile(prefix+".1", []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := lastDumpTotals(prefix)
	if err != nil || got["Ir"] != 3300 || got["D1mr"] != 4 || got[shaBlockIr] != 3070 {
		t.Fatalf("lastDumpTotals = %v, %v; want Ir 3300, D1mr 4, %s 3070 (2000+800+100 of blockAVX2, 170 of blockSHANI)", got, err, shaBlockIr)
	}
	per, _, err := perRequest(got, map[string]float64{"Ir": 100}, 10)
	if err != nil || per[shaBlockIr] != 307 || per["Ir"] != 320 {
		t.Fatalf("perRequest = %v, %v; want Ir 320 and %s 307 a request", per, err, shaBlockIr)
	}
}

// The idle window is subtracted from the requests' window; an idle window
// that counted more than a tenth of the requests' instructions is refused
// rather than turned into a small or negative count per request.
func TestPerRequestSubtractsAQuietIdleWindow(t *testing.T) {
	total := map[string]float64{"Ir": 90_000_000, "I1mr": 4_000_000}
	per, base, err := perRequest(total, map[string]float64{"Ir": 300_000, "I1mr": 40_000}, 2000)
	if err != nil || per["Ir"] != 44_850 || base["Ir"] != 150 || per["I1mr"] != 1980 || base["I1mr"] != 20 {
		t.Fatalf("quiet idle window: per %v base %v err %v", per, base, err)
	}
	// The run that printed -19793 instructions a request: 126M in the idle
	// window against 86.5M in the requests'.
	if per, _, err := perRequest(map[string]float64{"Ir": 86_538_000}, map[string]float64{"Ir": 126_124_000}, 2000); err == nil {
		t.Fatalf("busy idle window accepted: %v", per)
	}
	if _, _, err := perRequest(total, map[string]float64{"Ir": 9_000_001}, 2000); err == nil {
		t.Fatal("an idle window above a tenth of the requests' accepted")
	}
	if _, _, err := perRequest(total, map[string]float64{"Ir": 9_000_000}, 2000); err != nil {
		t.Fatalf("an idle window of exactly a tenth refused: %v", err)
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
	r.instr = []instrRow{{name: "bare Fiber proxy", requests: 2000, perRequest: 25000, baselinePerRq: 40, i1Miss: 1400, d1Miss: 50, llMiss: 4},
		{name: "authproxy warm (1000 users)", requests: 2000, perRequest: 45000, baselinePerRq: 150, i1Miss: 2200, d1Miss: 350, llMiss: 28.25, shaBlocks: 8000},
		{name: bareTokensName, requests: 2000, perRequest: 27500, baselinePerRq: 30, i1Miss: 1450, d1Miss: 60, llMiss: 4},
		{name: publicRouteName, requests: 2000, perRequest: 36000, baselinePerRq: 140, i1Miss: 2000, d1Miss: 300, llMiss: 20}}
	r.openLoop = [][]openLoopRow{{{name: "bare Fiber proxy", rate: 15000, requests: 150000, success: 1, p99: time.Millisecond,
		use: usage{generator: 0.31, upstream: 0.28, proxy: 0.42, generatorCPUs: 0.65, proxyCPUs: 0.45}},
		{name: "authproxy warm (1000 users)", rate: 15000, requests: 150000, success: 1, p99: 1200 * time.Microsecond,
			use: usage{generator: 0.3, upstream: 0.29, proxy: 0.6, generatorCPUs: 0.66, proxyCPUs: 0.63}}}}
	r.tokens = tokenSizes{eddsa: 538, rs256: 802}
	r.add(row{name: "oauth2-proxy v7.15.6, JWT bearer (1000 users)", conns: 64, res: result{Requests: 30000, RPS: 2000}})
	r.addTrend(row{name: "authproxy warm (100000 users)", conns: 64, res: result{Requests: 210000, RPS: 21000},
		counters: []counter{{label: "signature verifications / request", value: 0}}})
	md := r.markdown()
	reportHas(t, md,
		"| authproxy ÷ bare proxy instructions per warm request (callgrind) | 1.80× (45.0k ÷ 25.0k) | ≤ 2×: met |",
		"| of which the SHA-256 block functions (the identity headers' HMAC): authproxy, the bare proxy, instructions per request | 8.0k, 0.0k |",
		"| authproxy ÷ bare proxy instructions per warm request, the SHA-256 block functions left out of both | 1.48× (37.0k ÷ 25.0k) |",
		"| bare Fiber proxy | 25000 | 40 | 1400 | 50 | 4.0 |",
		"| authproxy warm (1000 users) | 45000 | 150 | 2200 | 350 | 28.2 |",
		"| of which the bearer token's bytes: the bare proxy sent authproxy's requests (token included, forwarded as it is) − the bare proxy, instructions per request | 2.5k (27.5k − 25.0k) | (what any proxy the token passes through pays; not the auth work) |",
		"| authproxy ÷ that bare proxy (the same requests), instructions per warm request | 1.64× (45.0k ÷ 27.5k) | (the auth work alone; not the target, which is the row above it) |",
		"| "+bareTokensName+" | 27500 | 30 | 1450 | 60 | 4.0 |",
		"| of which the request pipeline: authproxy on a public route (the bare proxy's requests, no token) − the bare proxy, instructions per request | 11.0k (36.0k − 25.0k) |",
		"| "+publicRouteName+" | 36000 | 140 | 2000 | 300 | 20.0 |",
		// What the rate did to the bare proxy is the CPU it measured, not
		// the half a CPU it was chosen for.
		"| p99 added by authproxy, open loop at 15000 req/s (the rate chosen for the bare proxy at half a CPU; it used 0.42 CPU-s/s), median of 1 rounds (where each ran and the CPU each used: below) | 0.20 ms | ≤ 0.3 ms: met |",
		"| 1 | bare Fiber proxy | 15000/s | 150000 | 1.0000 | 0.00 ms | 1.00 ms | 0.00 ms | 0.31 | 0.28 | 0.42 | 65 % | 45 % |",
		"| 1 | authproxy warm (1000 users) | 15000/s | 150000 | 1.0000 | 0.00 ms | 1.20 ms | 0.00 ms | 0.30 | 0.29 | 0.60 | 66 % | 63 % |",
		"| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput, main rows above | 12.5× | ≥ 10×: met |",
		"| its ceiling: bare proxy ÷ oauth2-proxy throughput, main rows above | 15.0× | (an authproxy that cost nothing would reach this; authproxy reached 83 % of it) |",
		"| authproxy warm (100000 users, default settings) ÷ warm (1000 users) throughput; verifications / request | 0.84; 0 | ≥ 0.8 and 0: met |",
		"EdDSA 538 bytes", "RS256 (2048-bit key) 802 bytes",
	)

	r = base()
	r.instr = []instrRow{{name: "bare Fiber proxy", perRequest: -1, note: "not measured: valgrind missing"},
		{name: "authproxy warm (1000 users)", perRequest: -1, note: "not measured: valgrind missing"},
		{name: bareTokensName, perRequest: -1, note: "not measured: valgrind missing"}}
	r.add(row{name: "oauth2-proxy v7.15.6, JWT bearer (1000 users)", conns: 64, note: "not measured: go install failed"})
	r.addTrend(row{name: "authproxy warm (100000 users)", conns: 64, res: result{Requests: 100000, RPS: 10000},
		counters: []counter{{label: "signature verifications / request", value: 0.07}}})
	md = r.markdown()
	reportHas(t, md,
		"| bare Fiber proxy | not measured: valgrind missing | | | | |",
		"| oauth2-proxy v7.15.6, JWT bearer (1000 users) | not measured | | | |",
		"| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput | not measured: go install failed | ≥ 10× |",
		"| 0.40; 0.07 | ≥ 0.8 and 0: **missed** |",
	)
	if strings.Contains(md, "instructions per warm request (callgrind) |") {
		t.Error("a ratio of instruction counts that were not measured")
	}
	if strings.Contains(md, "CPU per request of each proxy process") {
		t.Error("a CPU ratio for a row that was not measured")
	}

	// The rows that timed their proxy process give the CPU cost ratio;
	// an untimed bare row is said to be so.
	r = base()
	r.rows[0].cpu, r.rows[1].cpu = 30.25, 36.5
	r.add(row{name: "oauth2-proxy v7.15.6, JWT bearer (1000 users)", conns: 64, res: result{Requests: 30000, RPS: 2000}, cpu: 730})
	reportHas(t, r.markdown(),
		"| oauth2-proxy ÷ authproxy warm, CPU per request of each proxy process (/proc utime+stime ÷ requests), main rows above | 20.0× (730 µs ÷ 36.5 µs) | (each proxy's own work, without the generator's and the upstream's shares of the cores that the throughput ratio includes; the bare proxy: 30.2 µs) |")
	r.rows[0].cpu = 0
	reportHas(t, r.markdown(), "(730 µs ÷ 36.5 µs)", "the bare proxy: not timed) |")
	r.rows[1].cpu = 0
	if strings.Contains(r.markdown(), "CPU per request of each proxy process") {
		t.Error("a CPU ratio without authproxy's CPU")
	}

	// A saturated CPU in an open-loop row is said beside the verdict and
	// under the table; unread figures show as such.
	r = base()
	r.openLoop = [][]openLoopRow{{{name: "bare Fiber proxy", rate: 15000, requests: 150000, success: 1, p99: time.Millisecond,
		use: usage{generator: 0.31, upstream: 0.28, proxy: 0.42, generatorCPUs: 0.65, proxyCPUs: 0.45}},
		{name: "authproxy warm (1000 users)", rate: 15000, requests: 150000, success: 1, p99: 1100 * time.Microsecond,
			use: usage{generator: -1, upstream: 0.29, proxy: 0.9, generatorCPUs: 0.66, proxyCPUs: 0.96}}}}
	md = r.markdown()
	reportHas(t, md,
		"| 0.10 ms | ≤ 0.3 ms: met; round 1, authproxy warm (1000 users) row: the other CPUs (the proxy's) busy 96 %, so the figure includes queueing for the CPU |",
		"| 1 | authproxy warm (1000 users) | 15000/s | 150000 | 1.0000 | 0.00 ms | 1.10 ms | 0.00 ms | – | 0.29 | 0.90 | 66 % | 96 % |",
		"- round 1, authproxy warm (1000 users): saturated: the other CPUs (the proxy's) busy 96 %",
	)
	if strings.Contains(md, "bare Fiber proxy: saturated") {
		t.Error("the bare row, at 65 % and 45 %, called saturated")
	}
}

// The medians of open-loop rounds: per row, and of the rounds' p99 added.
func TestOpenLoopMedians(t *testing.T) {
	mk := func(bareP99, warmP99 time.Duration, warmCPU float64) []openLoopRow {
		return []openLoopRow{{rate: 7000, p99: bareP99, use: usage{0.3, 0.3, 0.4, 0.7, 0.4}},
			{rate: 7000, p99: warmP99, use: usage{0.3, 0.3, warmCPU, 0.7, warmCPU}}}
	}
	got := openLoopMedians([][]openLoopRow{mk(time.Millisecond, 2*time.Millisecond, 0.5), mk(3*time.Millisecond, 3500*time.Microsecond, 0.7), mk(2*time.Millisecond, 2200*time.Microsecond, 0.6)})
	for _, want := range []string{"rate 7000/s, p99 added by authproxy 0.50 ms", "bare p99 2.00 ms", "authproxy p99 2.20 ms, CPU-s/s generator 0.30 upstream 0.30 proxy 0.60, busy CPU 0 70 % other CPUs 60 %"} {
		if !strings.Contains(got, want) {
			t.Errorf("openLoopMedians = %q, lacks %q", got, want)
		}
	}
	if got := openLoopMedians(nil); got != "no round" {
		t.Errorf("no rounds: %q", got)
	}
}

// The open-loop verdict is the median over complete rounds: one round's
// tail does not decide it, and a round with a row not measured is left out.
func TestOpenLoopAddedMedian(t *testing.T) {
	round := func(rate float64, bare, warm time.Duration) []openLoopRow {
		return []openLoopRow{{name: "bare Fiber proxy", rate: rate, requests: 1000, p99: bare}, {name: "authproxy warm", rate: rate, requests: 1000, p99: warm}}
	}
	broken := round(9000, time.Millisecond, time.Millisecond)
	broken[1] = openLoopRow{name: "authproxy warm", rate: 9000, note: "not measured: pinning failed"}
	rate, added, n := openLoopAdded([][]openLoopRow{
		round(5000, 3*time.Millisecond, 3100*time.Microsecond), // +0.1 ms
		round(6000, 2*time.Millisecond, 4*time.Millisecond),    // +2 ms
		broken,
		round(4000, 4*time.Millisecond, 3500*time.Microsecond), // −0.5 ms
	})
	if n != 3 || rate != 5000 || added != 100*time.Microsecond {
		t.Errorf("openLoopAdded = rate %.0f, added %v, rounds %d; want 5000, 100µs, 3", rate, added, n)
	}
	if _, _, n := openLoopAdded([][]openLoopRow{broken}); n != 0 {
		t.Errorf("a round with a row not measured counted: %d", n)
	}
	r := &report{opts: options{conns: 64}}
	r.openLoop = [][]openLoopRow{round(5000, 3*time.Millisecond, 3100*time.Microsecond), round(6000, 2*time.Millisecond, 4*time.Millisecond)}
	r.openLoopNotes = []string{"first placement note", "second placement note"}
	md := r.markdown()
	reportHas(t, md, "median of 2 rounds", "- round 1: first placement note", "- round 2: second placement note", "| 2 | authproxy warm | 6000/s | 1000 |")
}

// The pairs' figure: each slice of authproxy's row against the bare
// proxy's slice of the same index (run next to it), over every complete
// round; a stall-hit slice moves the pooled p99, not the pairs' median.
func TestOpenLoopPairs(t *testing.T) {
	msl := func(v ...float64) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x*float64(time.Millisecond)))
		}
		return d
	}
	row := func(name string, p99 time.Duration, slice []time.Duration) openLoopRow {
		return openLoopRow{name: name, rate: 5000, requests: 1000, p99: p99, sliceP99: slice}
	}
	rounds := [][]openLoopRow{
		// A stall hit the bare proxy's third slice: its pooled p99 is the stall's.
		{row("bare Fiber proxy", 30*time.Millisecond, msl(2, 2.1, 40, 2)), row("authproxy warm", 3*time.Millisecond, msl(2.2, 2.3, 2.2, 2.1))},
		{row("bare Fiber proxy", 3*time.Millisecond, msl(3, 2.9, 3, 3)), row("authproxy warm", 3*time.Millisecond, msl(3.1, 3.2, 3.1, 3.3))},
		// Not comparable: left out.
		{row("bare Fiber proxy", 0, msl(1, 1)), row("authproxy warm", 0, msl(1))},
		{row("bare Fiber proxy", 0, msl(1)), {name: "authproxy warm", sliceP99: msl(9)}}, // nothing answered
		// A slice with no answer (-1) leaves its pair out, not the round.
		{row("bare Fiber proxy", 0, []time.Duration{-1}), row("authproxy warm", 0, msl(50))},
		{row("bare Fiber proxy", 0, msl(1)), {name: "authproxy warm", note: "not measured: pinning failed"}},
	}
	added, lo, hi, n := openLoopPairs(rounds)
	// Differences +0.2 +0.2 −37.8 +0.1, +0.1 +0.3 +0.1 +0.3: median +0.15 ms.
	if n != 8 || added != 150*time.Microsecond || lo != -37800*time.Microsecond || hi != 300*time.Microsecond {
		t.Errorf("openLoopPairs = %v (%v to %v) over %d pairs; want 150µs (-37.8ms to 300µs) over 8", added, lo, hi, n)
	}
	r := &report{opts: options{conns: 64}, openLoop: rounds[:2], openLoopNotes: []string{"a", "b"}}
	reportHas(t, r.markdown(), "median of the 8 back-to-back slice pairs' differences (each pair: one slice of each proxy, run one after the other; pairs from -37.80 ms to 0.30 ms) | 0.15 ms | ≤ 0.3 ms: met")
}

// reportHas fails t for each of wants the report md lacks.
func reportHas(t *testing.T, md string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// The rows' slices take turns in pairs of opposite order (ABBA), each
// proxy gets openLoopSlicesPerRow of them, and the first pair's order
// alternates from round to round.
func TestOpenLoopOrder(t *testing.T) {
	for round, want := range map[int]string{0: "01100110", 1: "10011001", 2: "01100110"} {
		got := ""
		for k := range 2 * openLoopSlicesPerRow {
			got += strconv.Itoa(openLoopOrder(round, k))
		}
		if got != want {
			t.Errorf("round %d: order %s, want %s", round, got, want)
		}
	}
	if w, d := openLoopSliceTimes(2*time.Second, 10*time.Second); w != time.Second || d != 2500*time.Millisecond {
		t.Errorf("slice times %v, %v; want 1s, 2.5s", w, d)
	}
}

// A row pooled from slices: percentiles over every slice's requests
// together (not the mean or median of the slices' own), counts summed,
// the first error kept, CPU figures averaged, an unread one unread.
func TestPooledOpenLoopRow(t *testing.T) {
	lat := func(from, n uint32) []uint32 {
		var l []uint32
		for i := range n {
			l = append(l, from+i)
		}
		return l
	}
	a := openLoopPart{res: result{Requests: 100, Latencies: lat(1, 100)}, use: usage{0.2, 0.4, 0.5, 0.6, -1}}
	b := openLoopPart{res: result{Requests: 100, Errors: 2, FirstErr: "status 502", Latencies: lat(1001, 100)}, use: usage{0.4, 0.2, 0.7, 0.8, 0.5}}
	r := pooledOpenLoopRow("authproxy warm", 5000, []openLoopPart{a, b})
	// 200 latencies: 1..100 and 1001..1100 µs; index 99 (p50) is 100 µs, index 197 (p99) 1098 µs.
	if r.p50 != 100*time.Microsecond || r.p99 != 1098*time.Microsecond || r.max != 1100*time.Microsecond {
		t.Errorf("p50 %v p99 %v max %v; want 100µs, 1.098ms, 1.1ms", r.p50, r.p99, r.max)
	}
	// Each slice's own p99 (index 98 of 100), in the slices' order.
	if !slices.Equal(r.sliceP99, []time.Duration{99 * time.Microsecond, 1099 * time.Microsecond}) {
		t.Errorf("slice p99s %v; want 99µs, 1.099ms", r.sliceP99)
	}
	// 200 served and 2 failed: the served share of the 202 due.
	if r.requests != 200 || r.success != 200.0/202 || r.note != "first error: status 502" || r.rate != 5000 {
		t.Errorf("requests %d success %v note %q rate %v", r.requests, r.success, r.note, r.rate)
	}
	near := func(x, y float64) bool { return x-y < 1e-9 && y-x < 1e-9 }
	if !near(r.use.generator, 0.3) || !near(r.use.upstream, 0.3) || !near(r.use.proxy, 0.6) || !near(r.use.generatorCPUs, 0.7) || r.use.proxyCPUs != -1 {
		t.Errorf("use %+v; want 0.3, 0.3, 0.6, 0.7, -1", r.use)
	}
	if r := pooledOpenLoopRow("bare", 5000, []openLoopPart{a, {}}); !slices.Equal(r.sliceP99, []time.Duration{99 * time.Microsecond, -1}) {
		t.Errorf("a slice with no answer: slice p99s %v; want 99µs, -1", r.sliceP99)
	}
	if r := pooledOpenLoopRow("bare", 5000, nil); r.note == "" || r.requests != 0 {
		t.Errorf("no slices: %+v", r)
	}
}

// The slices run in openLoopOrder, each row gets its own; a slice that
// cannot be placed ends the round with no row kept (the rows would not be
// comparable), and a cancelled round keeps the slices it has.
func TestOpenLoopSlices(t *testing.T) {
	var order string
	slice := func(i int) (openLoopPart, error) {
		order += strconv.Itoa(i)
		return openLoopPart{res: result{Requests: int64(len(order))}}, nil
	}
	parts, failed := openLoopSlices(context.Background(), 1, slice)
	if failed != "" || order != "10011001" || len(parts[0]) != openLoopSlicesPerRow || len(parts[1]) != openLoopSlicesPerRow {
		t.Fatalf("order %s, slices %d and %d, failed %q", order, len(parts[0]), len(parts[1]), failed)
	}
	if parts[1][0].res.Requests != 1 || parts[0][0].res.Requests != 2 {
		t.Fatalf("slices not kept with their rows: %+v", parts)
	}

	order = ""
	parts, failed = openLoopSlices(context.Background(), 0, func(i int) (openLoopPart, error) {
		if len(order) == 3 {
			return openLoopPart{}, errors.New("affinity of thread 7: operation not permitted")
		}
		return slice(i)
	})
	if failed != "affinity of thread 7: operation not permitted" || parts[0] != nil || parts[1] != nil || order != "011" {
		t.Fatalf("after a placement failure: parts %+v, failed %q, order %s", parts, failed, order)
	}

	ctx, cancel := context.WithCancel(context.Background())
	order = ""
	parts, failed = openLoopSlices(ctx, 0, func(i int) (openLoopPart, error) {
		if len(order) == 1 {
			cancel()
		}
		return slice(i)
	})
	if failed != "" || len(parts[0]) != 1 || len(parts[1]) != 1 {
		t.Fatalf("cancelled after two slices: %d and %d slices, failed %q", len(parts[0]), len(parts[1]), failed)
	}
}

// An authproxy row whose slices verified tokens or fetched projections in
// their windows was not warm: its round is said so and left out of the
// medians, and the verdict names it.
func TestOpenLoopRowNotWarm(t *testing.T) {
	lat := []uint32{100, 200, 300}
	warm := openLoopPart{res: result{Requests: 3, Latencies: lat}}
	cold := openLoopPart{res: result{Requests: 3, Latencies: lat}, misses: 1000}
	if r := pooledOpenLoopRow("authproxy warm", 5000, []openLoopPart{warm, warm}); r.note != "" || r.misses != 0 {
		t.Fatalf("warm slices: note %q, misses %v", r.note, r.misses)
	}
	r := pooledOpenLoopRow("authproxy warm (1000 users)", 5000, []openLoopPart{warm, cold, cold, warm})
	if r.misses != 2000 || r.note != "not warm: 2000 token verifications and projection fetches in its measured windows" {
		t.Fatalf("two slices with 1000 each: misses %v, note %q", r.misses, r.note)
	}
	if u := pooledOpenLoopRow("authproxy warm", 5000, []openLoopPart{warm, {res: warm.res, misses: -1}}); u.misses != -1 || u.note != "" {
		t.Fatalf("a slice unread: misses %v, note %q; want -1 and no note", u.misses, u.note)
	}
	bare := openLoopRow{name: "bare Fiber proxy", rate: 5000, requests: 3, success: 1, p99: 100 * time.Microsecond}
	ok := openLoopRow{name: "authproxy warm (1000 users)", rate: 5000, requests: 3, success: 1, p99: 400 * time.Microsecond}
	rounds := [][]openLoopRow{{bare, ok}, {bare, r}, {bare, ok}}
	if _, added, n := openLoopAdded(rounds); n != 2 || added != 300*time.Microsecond {
		t.Fatalf("openLoopAdded: %v over %d rounds; want 300µs over the 2 warm ones", added, n)
	}
	rep := &report{opts: options{conns: 64}, openLoop: rounds, openLoopNotes: []string{"a", "b", "c"}}
	reportHas(t, rep.markdown(), "median of 2 rounds (where each ran and the CPU each used: below) | 0.30 ms | ≤ 0.3 ms: met; round 2 left out, authproxy warm (1000 users) row: not warm: 2000 token verifications and projection fetches in its measured windows |")
}

// coldWork sums authproxy's verifications and projection fetches between
// two scrapes, and says when it could not read them.
func TestColdWork(t *testing.T) {
	before := sample{"authproxy_token_verifications_total": 10, "authproxy_projection_fetches_total": 5}
	after := sample{"authproxy_token_verifications_total": 13, "authproxy_projection_fetches_total": 9}
	if got := coldWork(before, after); got != 7 {
		t.Fatalf("coldWork = %v, want 3 + 4", got)
	}
	if got := coldWork(sample{}, sample{}); got != -1 {
		t.Fatalf("no counters: %v, want -1", got)
	}
}

// The open-loop verdict says the CPU the bare proxy used at the rate, over
// the rounds it is taken on: the 10:13 run's rows used 0.38 to 0.49.
func TestOpenLoopLoad(t *testing.T) {
	round := func(bareCPU float64) []openLoopRow {
		return []openLoopRow{{name: "bare", rate: 7000, requests: 1, use: usage{proxy: bareCPU}}, {name: "authproxy", rate: 7000, requests: 1}}
	}
	if got := openLoopLoad([][]openLoopRow{round(0.49), round(0.43), round(0.38)}); got != "the rate chosen for the bare proxy at half a CPU; it used 0.38–0.49 CPU-s/s" {
		t.Errorf("three rounds: %q", got)
	}
	if got := openLoopLoad([][]openLoopRow{round(-1)}); got != "the rate chosen for the bare proxy at half a CPU; its CPU not read" {
		t.Errorf("unread: %q", got)
	}
}

// The instructions of the runtime's monitor thread are summed from the
// lines of its calls from the thread's start (inclusive costs: sysmon
// and all it runs), not from its own recursion, with callgrind's name
// compression.
func TestLastDumpTotalsSysmon(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "callgrind.s.7")
	dump := `events: Ir
fl=(1) /go/src/runtime/proc.go
fn=(1) runtime.mstart1
cfn=(2) runtime.sysmon
calls=3 10
5 1200
cfn=(3) runtime.main
calls=1 10
6 9000
fn=(2)
10 300
cfn=(4) runtime.retake
calls=3 20
11 400
fn=(5) runtime.mstart1'2
cfn=(2)
calls=1 10
5 250
fn=(2)
cfn=(2)
calls=1 10
12 77
totals: 10950
`
	if err := os.WriteFile(prefix+".1", []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := lastDumpTotals(prefix)
	if err != nil || got["Ir"] != 10950 || got[sysmonIr] != 1450 {
		t.Fatalf("lastDumpTotals = %v, %v; want Ir 10950, %s 1450 (1200+250 of the calls from mstart1)", got, err, sysmonIr)
	}
	per, _, err := perRequest(got, map[string]float64{"Ir": 950, sysmonIr: 450}, 10)
	if err != nil || per[sysmonIr] != 100 || per["Ir"] != 1000 {
		t.Fatalf("perRequest = %v, %v; want Ir 1000 and %s 100 a request", per, err, sysmonIr)
	}
}
