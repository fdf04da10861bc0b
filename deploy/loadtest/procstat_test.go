package main

import (
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseProcStatCPU(t *testing.T) {
	// utime 250 and stime 50 ticks; the command name holds a space and
	// parentheses, as a process may name itself.
	line := "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 12345 1000000 500 18446744073709551615"
	if cpu, sys, err := parseProcStat(line); err != nil || cpu != 3*time.Second || sys != 500*time.Millisecond {
		t.Fatalf("parseProcStat = %v, %v, %v; want 3s, of it 500ms in the kernel", cpu, sys, err)
	}
	for name, bad := range map[string]string{
		"no command name": "4242 S 1 2 3",
		"too few fields":  "4242 (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250",
		"not a number":    "4242 (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 2x0 50 0",
		"negative":        "4242 (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 -1 50 0",
	} {
		if _, _, err := parseProcStat(bad); err == nil {
			t.Errorf("%s: accepted %q", name, bad)
		}
	}
	// The harness's own process: a real /proc line parses.
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Fatalf("procCPU(self): %v", err)
	}
}

// A CPU window over this process: the CPU it burned between start and end,
// per request; -1 for a window that names no process, answered nothing or
// could not be read.
func TestCPUWindow(t *testing.T) {
	cw := &cpuWindow{pid: os.Getpid()}
	cw.start()
	for spent := time.Duration(0); spent < 50*time.Millisecond; {
		c, err := procCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		spent = c - cw.before
	}
	cw.end()
	if got := cw.perRequest(10); got < 4000 {
		t.Fatalf("perRequest(10) = %v µs, want ≥ 4,000 (≥ 50 ms of CPU over 10 requests)", got)
	}
	if got := cw.perRequest(0); got != -1 {
		t.Fatalf("no requests: %v, want -1", got)
	}
	// A loop reading /proc spends some of it in the kernel, never more
	// than all of it.
	if sys := cw.sysPerRequest(10); sys < 0 || sys > cw.perRequest(10) {
		t.Fatalf("sysPerRequest(10) = %v µs of %v", sys, cw.perRequest(10))
	}
	if got := cw.sysPerRequest(0); got != -1 {
		t.Fatalf("kernel share, no requests: %v, want -1", got)
	}
	unread := &cpuWindow{pid: -1}
	unread.start()
	unread.end()
	if got := unread.perRequest(10); got != -1 {
		t.Fatalf("no such process: %v, want -1", got)
	}
	if got := unread.sysPerRequest(10); got != -1 {
		t.Fatalf("kernel share, no such process: %v, want -1", got)
	}
	if got := (&cpuWindow{pid: 1, after: time.Second, errA: os.ErrNotExist}).perRequest(10); got != -1 {
		t.Fatalf("the end not read: %v, want -1", got)
	}
	if got := (&cpuWindow{}).perRequest(10); got != -1 {
		t.Fatalf("no process named: %v, want -1", got)
	}
}

func TestPairedCPUMedians(t *testing.T) {
	r := &report{paired: []pairedRound{{bareCPU: 20, warmCPU: 30}, {bareCPU: -1, warmCPU: 99}, {bareCPU: 22, warmCPU: 26}, {bareCPU: 18, warmCPU: 25}}}
	bare, warm, added, n := r.pairedCPU()
	// Differences 10, 4, 7: their median, not 26 − 20.
	if n != 3 || bare != 20 || warm != 26 || added != 7 {
		t.Fatalf("pairedCPU = %v, %v, %v, %v; want 20, 26, 7 over 3 rounds (the unread round left out)", bare, warm, added, n)
	}
	if _, _, _, n := (&report{paired: []pairedRound{{bareCPU: -1, warmCPU: 1}}}).pairedCPU(); n != 0 {
		t.Fatal("no readable round reported as measured")
	}
}

func TestPairedRoundsAlternateAndReport(t *testing.T) {
	var firsts []bool
	for i := range 4 {
		firsts = append(firsts, warmFirst(i))
	}
	if !slices.Equal(firsts, []bool{false, true, false, true}) {
		t.Fatalf("warm first by round = %v; want the order to alternate, the bare proxy first", firsts)
	}
	if got := pairedLength(10 * time.Second); got != pairedRunLength {
		t.Fatalf("pairedLength(10s) = %v; want %v", got, pairedRunLength)
	}
	if got := pairedLength(2 * time.Second); got != time.Second {
		t.Fatalf("pairedLength(2s) (-quick) = %v; want 1s", got)
	}
	for _, warmFirst := range []bool{false, true} {
		o := pairedOrder(warmFirst)
		if len(o) != 5 || o[2] != runBare || !slices.Contains(o, runWarm) || !slices.Contains(o, runPub) || !slices.Contains(o, runTok) || !slices.Contains(o, runAA) {
			t.Fatalf("pairedOrder(%v) = %v; want the five runs, the bare proxy in the middle", warmFirst, o)
		}
		if (o[0] == runWarm) != warmFirst {
			t.Fatalf("pairedOrder(%v) = %v; authproxy's warm run first exactly when warmFirst", warmFirst, o)
		}
	}
	a, b := pairedOrder(false), pairedOrder(true)
	slices.Reverse(b)
	if !slices.Equal(a, b) {
		t.Fatalf("pairedOrder: %v and reversed %v; want one the other reversed", a, b)
	}
	r := &report{opts: options{conns: 64, duration: 10 * time.Second}, paired: []pairedRound{
		{bare: result{Requests: 1, RPS: 20000}, warm: result{Requests: 1, RPS: 16000}, bareCPU: 40, warmCPU: 47.5, tok: result{Requests: 1}, tokCPU: 42,
			pub: result{Requests: 1}, pubCPU: 46, aa: result{Requests: 1}, aaCPU: 39},
		{bare: result{Requests: 1, RPS: 20000}, warm: result{Requests: 1, RPS: 18000}, bareCPU: 41, warmCPU: -1, warmFirst: true, tok: result{Requests: 1}, tokCPU: 44,
			pub: result{Requests: 1}, pubCPU: -1, aa: result{Requests: 1}, aaCPU: 43.5},
		{bare: result{Requests: 1, RPS: 20000}, warm: result{Requests: 1, RPS: 18000}, bareCPU: 41, warmCPU: 49, tokCPU: 99, pubCPU: 99, aaCPU: 99}, // not run: left out
	}}
	out := r.markdown()
	reportHas(t, out,
		"500ms warm-up and 2.5s measured per run",
		// Ratios 0.80, 0.90, 0.90, to three decimals: a verdict at the
		// bound reads as the value it was taken on.
		"| authproxy warm ÷ bare proxy throughput, median of 3 paired rounds | 0.900 | ≥ 0.85: met |",
		"| 1 | bare | 20000 | 0.00 ms | 40.0 µs | 16000 | 0.00 ms | 47.5 µs | 0.80 | +7.5 µs | 42.0 µs | +2.0 µs | 46.0 µs | +6.0 µs | 39.0 µs | -1.0 µs |",
		"| 2 | authproxy | 20000 | 0.00 ms | 41.0 µs | 18000 | 0.00 ms | – | 0.90 | – | 44.0 µs | +3.0 µs | – | – | 43.5 µs | +2.5 µs |",
		"| 3 | bare | 20000 | 0.00 ms | 41.0 µs | 18000 | 0.00 ms | 49.0 µs | 0.90 | +8.0 µs | – | – | – | – | – | – |",
		// Rounds 1 and 3 read both: differences 7.5 and 8; tokens 2 and 3.
		"median of the 2 paired rounds' differences (medians of each: warm − bare) | 7.8 (48.2 − 40.5)",
		"the bare proxy sent authproxy's requests (token included, forwarded as it is) − the bare proxy, median of the rounds' differences | 2.5 |",
		// Only round 1 read the public route; the second bare proxy: −1 and +2.5.
		"authproxy on a public route (the bare proxy's requests, no token) − the bare proxy, median of the rounds' differences | 6.0 |",
		"a second bare proxy, identical to the first − the bare proxy, median of the rounds' differences (rounds from -1.0 to +2.5) | 0.8 |",
	)
}

// With an even number of rounds the median is the mean of the two middle
// values, not the upper one: the full run has 10 paired rounds.
func TestPairedMediansEvenRounds(t *testing.T) {
	round := func(bareRPS, warmRPS float64, bareP99, warmP99 time.Duration) pairedRound {
		return pairedRound{bare: result{Requests: 1, RPS: bareRPS, P99: bareP99}, warm: result{Requests: 1, RPS: warmRPS, P99: warmP99}}
	}
	r := &report{paired: []pairedRound{
		round(100, 80, time.Millisecond, 2*time.Millisecond),         // 0.80, +1 ms
		round(100, 95, time.Millisecond, 1100*time.Microsecond),      // 0.95, +0.1 ms
		round(100, 86, time.Millisecond, 1300*time.Microsecond),      // 0.86, +0.3 ms
		round(100, 88, time.Millisecond, 1500*time.Microsecond),      // 0.88, +0.5 ms
		{bare: result{Requests: 1, RPS: 100, P99: time.Millisecond}}, // authproxy answered nothing: left out
		{bare: result{RPS: 0}, warm: result{Requests: 1, RPS: 90}},   // the bare proxy answered nothing: left out
	}}
	ratio, added, _ := r.pairedMedians()
	if math.Abs(ratio-0.87) > 1e-9 || added != 400*time.Microsecond {
		t.Fatalf("pairedMedians = %v, %v; want 0.87 and 400µs (the means of the middle two of four)", ratio, added)
	}
	if m := median(nil); !math.IsNaN(m) {
		t.Fatalf("median of nothing = %v, want NaN", m)
	}
	if m := median([]float64{3, 1, 2, 10}); m != 2.5 {
		t.Fatalf("median of 1, 2, 3, 10 = %v, want 2.5", m)
	}
}

func TestTogetherRoundsReport(t *testing.T) {
	rounds := []togetherRound{
		{bareCPU: 20, warmCPU: 25, ctlCPU: 20, ctl2CPU: 21},
		{bareCPU: 30, warmCPU: 33, ctlCPU: 30, ctl2CPU: 28, warmFirst: true},
		{bareCPU: -1, warmCPU: 40, ctlCPU: 22, ctl2CPU: 22.5}, // the pair not read: left out of its median
	}
	diff, ctl, lo, hi, n, nCtl := togetherMedians(rounds)
	// Differences 5 and 3 (the unread round left out); control +1, −2, +0.5.
	if n != 2 || diff != 4 || nCtl != 3 || ctl != 0.5 || lo != -2 || hi != 1 {
		t.Fatalf("togetherMedians = %v, %v, %v, %v, %v, %v; want 4, 0.5, -2, 1, 2, 3", diff, ctl, lo, hi, n, nCtl)
	}
	r := &report{opts: options{conns: 64, duration: 10 * time.Second}, together: rounds}
	out := r.markdown()
	reportHas(t, out,
		"both loaded at once (32 connections each), median of 2 rounds' differences | 4.0 |",
		"both loaded at once, median of 3 rounds' differences (rounds from -2.0 to +1.0) | 0.5 |",
		"| 1 | 20.0 µs | 25.0 µs | +5.0 µs | 20.0 µs | 21.0 µs | +1.0 µs |",
		"| 3 | – | 40.0 µs | – | 22.0 µs | 22.5 µs | +0.5 µs |",
	)
	if _, _, _, _, n, nCtl := togetherMedians(nil); n != 0 || nCtl != 0 {
		t.Fatal("no round reported as measured")
	}
}

// TestRoundAtOnceOrder: the order of the pair and the control, and of the
// two loads within each, alternates from round to round, and every figure
// is filed under its own target whatever the order.
func TestRoundAtOnceOrder(t *testing.T) {
	cpu := map[string]float64{"bare": 30, "warm": 35, "ctl": 31, "ctl2": 32}
	a, b, c, c2 := togetherTarget{addr: "bare"}, togetherTarget{addr: "warm"}, togetherTarget{addr: "ctl"}, togetherTarget{addr: "ctl2"}
	var orders []string
	for i := range 2 {
		var calls []string
		r := roundAtOnce(i, a, b, c, c2, func(x, y togetherTarget) (float64, float64) {
			calls = append(calls, x.addr+"+"+y.addr)
			return cpu[x.addr], cpu[y.addr]
		})
		if r.bareCPU != 30 || r.warmCPU != 35 || r.ctlCPU != 31 || r.ctl2CPU != 32 {
			t.Fatalf("round %d: %+v, figures filed under the wrong targets", i, r)
		}
		orders = append(orders, strings.Join(calls, ", "))
	}
	if orders[0] == orders[1] {
		t.Fatalf("rounds ran in the same order: %q", orders)
	}
	for _, o := range orders {
		if o != "ctl+ctl2, bare+warm" && o != "warm+bare, ctl2+ctl" {
			t.Fatalf("orders %q: want the control first with the first-named started first, then the reverse", orders)
		}
	}
}

func TestPairedRestCPU(t *testing.T) {
	r := &report{opts: options{conns: 64, duration: 10 * time.Second}, paired: []pairedRound{
		// Sums 55 and 66: a CPU-bound ratio of 0.83.
		{bare: result{RPS: 30000}, warm: result{RPS: 24000}, bareCPU: 20, warmCPU: 26, bareRest: runCPU{sys: 9, gen: 20, up: 15}, warmRest: runCPU{sys: 10, gen: 22, up: 18}},
		// Sums 50 and 55.
		{bare: result{RPS: 30000}, warm: result{RPS: 27000}, bareCPU: 20, warmCPU: 24, bareRest: runCPU{sys: 8, gen: 16, up: 14}, warmRest: runCPU{sys: 11, gen: 17, up: 14}, warmFirst: true},
		// The generator unread in the warm run: out of its median and of the ratio's.
		{bare: result{RPS: 30000}, warm: result{RPS: 20000}, bareCPU: 20, warmCPU: 30, bareRest: runCPU{sys: -1, gen: 20, up: 10}, warmRest: runCPU{sys: 9, gen: -1, up: 20}},
	}}
	if b, ok := r.paired[0].cpuBound(); !ok || math.Abs(b-55.0/66) > 1e-9 {
		t.Fatalf("cpuBound = %v, %v; want 55/66", b, ok)
	}
	if _, ok := r.paired[2].cpuBound(); ok {
		t.Fatal("cpuBound with the generator unread reported as measured")
	}
	m := r.runMedians()
	// Kernel differences 1 and 3 (round 3's bare run unread); upstream
	// 3, 0, 10; generator 2, 1; ratios 0.833, 0.909.
	if m.nSys != 2 || m.sys != 2 || m.nUp != 3 || m.up != 3 || m.nGen != 2 || m.gen != 1.5 || m.nBound != 2 || math.Abs(m.bound-(55.0/66+50.0/55)/2) > 1e-9 {
		t.Fatalf("runMedians = %+v", m)
	}
	reportHas(t, r.markdown(),
		"the kernel's share (stime), median of 2 rounds' differences | 2.0 |",
		"behind authproxy warm − behind the bare proxy, same runs, median of 3 rounds' differences | 3.0 |",
		"against authproxy warm − against the bare proxy, same runs, median of 2 rounds' differences | 1.5 |",
		"(the same, authproxy warm), median of 2 rounds | 0.871 |",
		"| 1 | 20.0 µs | 15.0 µs | 20.0 µs | 55.0 µs | 22.0 µs | 18.0 µs | 26.0 µs | 66.0 µs | 0.83 | 0.80 |",
		"| 3 | 20.0 µs | 10.0 µs | 20.0 µs | 50.0 µs | – | 20.0 µs | 30.0 µs | – | – | 0.67 |",
	)
}
