package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

type counter struct {
	label, metric string
	value         float64 // -1: not measured
}

type row struct {
	name     string
	conns    int
	res      result
	counters []counter
	note     string
	// cpu is the target process's utime+stime per request over the
	// measured window in µs, for the rows that time it (0: not timed).
	cpu float64
}

type latencies struct {
	values   []time.Duration // sorted
	timeouts int
}

// pct is the q-quantile over every trial, those that did not turn
// (timeouts) ranked above every latency measured: ok is false when it
// falls among them (or there was no trial).
func (l *latencies) pct(q float64) (d time.Duration, ok bool) {
	n := len(l.values) + l.timeouts
	if n == 0 {
		return 0, false
	}
	i := int(q * float64(n-1))
	if i >= len(l.values) {
		return 0, false
	}
	return l.values[i], true
}

// pctString is pct as ms, or what the trials beyond it did.
func (l *latencies) pctString(q float64) string {
	if d, ok := l.pct(q); ok {
		return ms(d)
	}
	return "did not turn within 5 s"
}

type report struct {
	command, date, machine string
	opts                   options
	fdLimit                uint64
	rows, trends           []row
	invalidation           *latencies
	held                   *heldResult
	profile                string
	gobench                string
	paired                 []pairedRound
	together               []togetherRound // both proxies loaded at once
	users                  []usersRound    // few vs many users, alternating on the default proxy
	openLoop               [][]openLoopRow // rounds, each: bare, then authproxy warm
	openLoopNotes          []string        // per round: where the generator and the targets ran, and the rate
	instr                  []instrRow      // bare, authproxy warm, bare with the tokens, authproxy public route
	peer                   []peerRound     // oauth2-proxy and authproxy warm, alternating
	tokens                 tokenSizes
}

// pairedCPU returns the median CPU per request of each proxy over the
// paired rounds where both were read, and the median of each such round's
// difference (warm − bare): the side-by-side figure, which a drift of the
// machine's speed between rounds moves less than the difference of the two
// medians; n is the number of such rounds (0: none, the rest is zero).
func (r *report) pairedCPU() (bare, warm, added float64, n int) {
	var bs, ws, ds []float64
	for _, p := range r.paired {
		if p.bareCPU >= 0 && p.warmCPU >= 0 && p.warmMisses <= 0 {
			bs, ws, ds = append(bs, p.bareCPU), append(ws, p.warmCPU), append(ds, p.warmCPU-p.bareCPU)
		}
	}
	if len(bs) == 0 {
		return 0, 0, 0, 0
	}
	return median(bs), median(ws), median(ds), len(ds)
}

// peerFigures are the medians of the alternating oauth2-proxy rounds.
type peerFigures struct {
	n                int     // rounds in ratio: both runs answered
	misses           float64 // the most token verifications and projection fetches of authproxy's runs (-1: a run's not read)
	ratio, lo, hi    float64 // authproxy warm ÷ oauth2-proxy throughput: median, least, most
	failed           int64   // failed requests over every round
	cpuN             int     // rounds of those whose CPU was read in both runs
	cpu              float64 // oauth2-proxy ÷ authproxy CPU per request, median of the rounds' ratios
	peerCPU, warmCPU float64 // the median CPU per request of each
}

// peerMedians returns the figures of the alternating oauth2-proxy rounds:
// a round counts when both runs answered (their failures are counted, and
// fail the target). A round whose authproxy run was not all warm counts
// too: its verifications lower authproxy's figure, never raise it, and
// misses says so.
func (r *report) peerMedians() peerFigures {
	var f peerFigures
	var ratios, cpus, pc, wc []float64
	for _, p := range r.peer {
		f.failed += p.peer.Errors + p.warm.Errors
		if p.peer.RPS <= 0 || p.warm.RPS <= 0 {
			continue
		}
		if p.warmMisses < 0 || f.misses < 0 {
			f.misses = -1
		} else {
			f.misses = max(f.misses, p.warmMisses)
		}
		ratios = append(ratios, p.warm.RPS/p.peer.RPS)
		if p.peerCPU > 0 && p.warmCPU > 0 {
			cpus, pc, wc = append(cpus, p.peerCPU/p.warmCPU), append(pc, p.peerCPU), append(wc, p.warmCPU)
		}
	}
	if f.n = len(ratios); f.n == 0 {
		return f
	}
	f.ratio, f.lo, f.hi = median(ratios), slices.Min(ratios), slices.Max(ratios)
	if f.cpuN = len(cpus); f.cpuN > 0 {
		f.cpu, f.peerCPU, f.warmCPU = median(cpus), median(pc), median(wc)
	}
	return f
}

// sideCPU returns the median over the paired rounds of what one of the
// rounds' other runs (pick: its result and CPU per request) adds to the
// bare proxy's CPU per request (sideDiffs): tok (the token's bytes), pub
// (the request pipeline of a public route), aa (a second, identical bare
// proxy: the measurement's resolution).
func (r *report) sideCPU(pick func(pairedRound) (result, float64)) (added float64, ok bool) {
	ds := r.sideDiffs(pick)
	if len(ds) == 0 {
		return 0, false
	}
	return median(ds), true
}

// sideRange returns the smallest and the largest of the rounds'
// differences that sideCPU takes the median of (0, 0: none).
func (r *report) sideRange(pick func(pairedRound) (result, float64)) (lo, hi float64) {
	ds := r.sideDiffs(pick)
	if len(ds) == 0 {
		return 0, 0
	}
	return slices.Min(ds), slices.Max(ds)
}

// sideDiffs returns each round's difference of pick's run from the bare
// proxy, leaving out rounds where either was not read or the run did not
// happen.
func (r *report) sideDiffs(pick func(pairedRound) (result, float64)) []float64 {
	var ds []float64
	for _, p := range r.paired {
		if cpu := p.sideRun(pick); p.bareCPU >= 0 && cpu >= 0 {
			ds = append(ds, cpu-p.bareCPU)
		}
	}
	return ds
}

// runMedians are medians over the paired rounds of what else their warm
// and bare runs measured, each over the rounds where both were read: the
// differences (authproxy warm − bare) of the proxies' kernel time (sys),
// of the upstream's CPU (up) and of the generator's (gen) per request, and
// the rounds' cpuBound ratios; n* count the rounds of each (0: none).
type runMedians struct {
	sys, up, gen, bound     float64
	nSys, nUp, nGen, nBound int
}

func (r *report) runMedians() runMedians {
	var sys, up, gen, bound []float64
	for _, p := range r.paired {
		if p.warmMisses > 0 {
			continue // authproxy not warm (notWarm)
		}
		if p.bareRest.sys >= 0 && p.warmRest.sys >= 0 {
			sys = append(sys, p.warmRest.sys-p.bareRest.sys)
		}
		if p.bareRest.up >= 0 && p.warmRest.up >= 0 {
			up = append(up, p.warmRest.up-p.bareRest.up)
		}
		if p.bareRest.gen >= 0 && p.warmRest.gen >= 0 {
			gen = append(gen, p.warmRest.gen-p.bareRest.gen)
		}
		if b, ok := p.cpuBound(); ok {
			bound = append(bound, b)
		}
	}
	m := runMedians{nSys: len(sys), nUp: len(up), nGen: len(gen), nBound: len(bound)}
	for _, x := range []struct {
		v   []float64
		dst *float64
	}{{sys, &m.sys}, {up, &m.up}, {gen, &m.gen}, {bound, &m.bound}} {
		if len(x.v) > 0 {
			*x.dst = median(x.v)
		}
	}
	return m
}

// median is the middle value of v, or the mean of the two middle values
// when v has an even number of them; NaN for no value (a verdict on it is
// then not met, and the figure reads NaN rather than a made-up 0).
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	v = append([]float64(nil), v...)
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// perReq formats a count per request ("not read" when negative).
func perReq(v float64) string {
	if v < 0 {
		return "not read"
	}
	return fmt.Sprintf("%.4g", v)
}

func cpuUS(v float64) string {
	if v < 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f µs", v)
}

// pairedMedians returns the median throughput ratio (warm ÷ bare) and the
// median p99 difference over the paired rounds where both proxies
// answered (with an even number of rounds, the mean of the two middle
// values), and how many rounds they are over.
func (r *report) pairedMedians() (ratio float64, addedP99 time.Duration, n int) {
	ratios := make([]float64, 0, len(r.paired))
	added := make([]float64, 0, len(r.paired))
	for _, p := range r.paired {
		if p.bare.Requests > 0 && p.warm.Requests > 0 && p.bare.RPS > 0 && p.warmMisses <= 0 {
			ratios = append(ratios, p.warm.RPS/p.bare.RPS)
			added = append(added, float64(p.warm.P99-p.bare.P99))
		}
	}
	if len(ratios) == 0 {
		return 0, 0, 0
	}
	return median(ratios), time.Duration(median(added)), len(ratios)
}

// pairedNotWarm names the paired rounds whose authproxy warm run verified
// tokens or fetched projections in its window, which the medians leave
// out ("" when none did).
func (r *report) pairedNotWarm() string {
	var b strings.Builder
	for i, p := range r.paired {
		if p.warmMisses > 0 {
			fmt.Fprintf(&b, "; round %d left out: authproxy not warm (%.0f token verifications and projection fetches in its window)", i+1, p.warmMisses)
		}
	}
	return b.String()
}

// pairedErrors is how many requests of the paired rounds' bare and warm
// runs failed.
func (r *report) pairedErrors() int64 {
	var n int64
	for _, p := range r.paired {
		n += p.bare.Errors + p.warm.Errors
	}
	return n
}

func (r *report) add(x row)      { r.rows = append(r.rows, x) }
func (r *report) addTrend(x row) { r.trends = append(r.trends, x) }

func (r *report) find(rows []row, prefix string, conns int) *row {
	for i := range rows {
		if strings.HasPrefix(rows[i].name, prefix) && (conns == 0 || rows[i].conns == conns) {
			return &rows[i]
		}
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// verdictServed is verdict(ok) for a figure whose runs had failed requests
// failed: those are left out of throughput, CPU per request and latency,
// so such a figure meets no target.
func verdictServed(ok bool, failed int64) string {
	if failed > 0 {
		return fmt.Sprintf("**not met**: %d requests failed", failed)
	}
	return verdict(ok)
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Produced by `make bench` (the load harness in `deploy/loadtest`). Every target runs on loopback on\n")
	w("the same machine as the load generator, so generator, proxy and upstream share the cores: read\n")
	w("ratios measured side by side in this one run, not absolute numbers.\n\n")
	w("- date: %s\n- machine: %s\n- command: `%s`\n", r.date, r.machine, r.command)
	w("- closed loop: each connection sends its next request when the previous response is read;\n")
	w("  %s warm-up then %s measured per row; file-descriptor limit %d\n", r.opts.warmup, r.opts.duration, r.fdLimit)
	w("- every row: req/s, latency and CPU per request are those of the requests answered with the status wanted (200);\n")
	w("  a request that failed (another status, no answer, a timeout) is counted under errors and in none of them\n")
	if r.tokens.eddsa > 0 {
		rs := "not measured"
		if r.tokens.rs256 > 0 {
			rs = fmt.Sprintf("%d bytes", r.tokens.rs256)
		}
		w("- access token size (same claims): EdDSA %d bytes (the harness's and coreapi's), RS256 (2048-bit key) %s\n", r.tokens.eddsa, rs)
	}
	w("\n")

	w("## Throughput and latency (%d connections)\n\n", r.opts.conns)
	w("| target | req/s | p50 | p99 | errors |\n|---|---:|---:|---:|---:|\n")
	for _, x := range r.rows {
		if x.res.Requests == 0 && strings.HasPrefix(x.note, "not measured") {
			w("| %s | not measured | | | |\n", x.name)
			continue
		}
		w("| %s | %.0f | %s | %s | %d |\n", x.name, x.res.RPS, ms(x.res.P50), ms(x.res.P99), x.res.Errors)
	}
	for _, x := range r.rows {
		if x.res.FirstErr != "" || x.note != "" {
			w("\n- %s: %s %s%s", x.name, x.note, x.res.FirstErr, kindsNote(x.res.Kinds))
		}
	}
	w("\n\n## Ratios\n\n| ratio | value | goal |\n|---|---:|---|\n")
	if len(r.paired) > 0 {
		ratio, added, nr := r.pairedMedians()
		// Three decimals: the verdict is on the value, and 0.849 is not
		// 0.85.
		failed, notWarm := r.pairedErrors(), r.pairedNotWarm()
		w("| authproxy warm ÷ bare proxy throughput, median of %d paired rounds | %.3f | ≥ 0.85: %s%s |\n", nr, ratio, verdictServed(ratio >= 0.85 && nr > 0, failed), notWarm)
		w("| p99 added by authproxy, median of %d paired rounds | %s | ≤ 0.3 ms: %s%s |\n", nr, ms(added), verdictServed(added <= 300*time.Microsecond && nr > 0, failed), notWarm)
		if bareCPU, warmCPU, added, n := r.pairedCPU(); n > 0 {
			w("| authproxy − bare proxy CPU per request (µs, /proc utime+stime), median of the %d paired rounds' differences (medians of each: warm − bare) | %.1f (%.1f − %.1f) | ≤ 5: %s%s |\n",
				n, added, warmCPU, bareCPU, verdictServed(added <= 5, failed), notWarm)
		}
		if tok, ok := r.sideCPU(pairedRound.tokRun); ok {
			w("| of which the bearer token's bytes: the bare proxy sent authproxy's requests (token included, forwarded as it is) − the bare proxy, median of the rounds' differences | %.1f | (what any proxy the token passes through pays; not the auth work) |\n", tok)
		}
		if pub, ok := r.sideCPU(pairedRound.pubRun); ok {
			w("| authproxy on a public route (the bare proxy's requests, no token) − the bare proxy, median of the rounds' differences | %.1f | (the request pipeline every route runs, without the token work; not a target) |\n", pub)
		}
		if aa, ok := r.sideCPU(pairedRound.aaRun); ok {
			lo, hi := r.sideRange(pairedRound.aaRun)
			w("| a second bare proxy, identical to the first − the bare proxy, median of the rounds' differences (rounds from %+.1f to %+.1f) | %.1f | (the measurement's resolution on this machine: 0 but for noise) |\n", lo, hi, aa)
		}
		m := r.runMedians()
		if m.nSys > 0 {
			w("| of authproxy − bare proxy CPU per request, the kernel's share (stime), median of %d rounds' differences | %.1f | (the rest is user space: the proxy's own code, the runtime, the memory they touch) |\n", m.nSys, m.sys)
		}
		if m.nUp > 0 {
			w("| the upstream's CPU per request behind authproxy warm − behind the bare proxy, same runs, median of %d rounds' differences | %.1f | (parsing the forwarding and identity headers: paid by the app, not the proxy; not in the CPU target) |\n", m.nUp, m.up)
		}
		if m.nGen > 0 {
			w("| the load generator's CPU per request against authproxy warm − against the bare proxy, same runs, median of %d rounds' differences | %.1f | (sending the token, reading the X-Request-Id answered; the client's share) |\n", m.nGen, m.gen)
		}
		if m.nBound > 0 {
			w("| the throughput ratio these CPU figures give: (generator + upstream + proxy per request, bare) ÷ (the same, authproxy warm), median of %d rounds | %.3f | (what the paired ratio above would be with the two cores always busy with these three alone; see the table below the paired rounds) |\n", m.nBound, m.bound)
		}
	}
	if diff, ctl, lo, hi, n, nCtl := togetherMedians(r.together); n > 0 {
		w("| authproxy − bare proxy CPU per request (µs), both loaded at once (%d connections each), median of %d rounds' differences | %.1f | (the target above, measured without the machine's drift between two runs; see the together rounds below) |\n",
			max(r.opts.conns/2, 1), n, diff)
		if nCtl > 0 {
			w("| its control: the second bare proxy − the bare proxy, both loaded at once, median of %d rounds' differences (rounds from %+.1f to %+.1f) | %.1f | (this measurement's resolution: 0 but for noise) |\n", nCtl, lo, hi, ctl)
		}
	}
	bare, warm := r.find(r.rows, "bare Fiber proxy", 0), r.find(r.rows, "authproxy warm", 0)
	if bare != nil && warm != nil && bare.res.RPS > 0 {
		ratio := warm.res.RPS / bare.res.RPS
		failed := bare.res.Errors + warm.res.Errors
		w("| authproxy warm ÷ bare proxy throughput, main rows above | %.3f | ≥ 0.85: %s |\n", ratio, verdictServed(ratio >= 0.85, failed))
		added := warm.res.P99 - bare.res.P99
		w("| p99 added by authproxy (warm p99 − bare p99), main rows above | %s | ≤ 0.3 ms: %s |\n", ms(added), verdictServed(added <= 300*time.Microsecond, failed))
	}
	nBare, nWarm := r.find(r.rows, notesBareRow, 0), r.find(r.rows, notesWarmRow, 0)
	if nBare != nil && nWarm != nil && nBare.res.RPS > 0 {
		w("| notes app: authproxy warm ÷ bare proxy throughput, main rows above | %.2f | (the app verifies the same signed headers in both; its replay filter is off, as the bare proxy's pre-signed requests are sent again) |\n", nWarm.res.RPS/nBare.res.RPS)
		w("| notes app: p99 added by authproxy (warm p99 − bare p99) | %s | |\n", ms(nWarm.res.P99-nBare.res.P99))
	}
	if key := r.find(r.rows, apiKeyWarmRow, 0); key != nil && warm != nil && warm.res.RPS > 0 {
		w("| authproxy warm API key ÷ warm JWT throughput, main rows above | %.2f | ≈ 1: a warm key costs what a warm token costs |\n", key.res.RPS/warm.res.RPS)
	}
	// A round whose rows failed requests is left out of the medians, but
	// its failures are the worst latencies of all: no verdict is met then.
	var olFailed int64
	for _, rows := range r.openLoop {
		for _, o := range rows {
			olFailed += int64(o.failed)
		}
	}
	if rate, added, n := openLoopAdded(r.openLoop); n > 0 {
		v := verdictServed(added <= 300*time.Microsecond, olFailed)
		for i, rows := range r.openLoop {
			if completeOpenLoopRound(rows) {
				continue
			}
			for _, o := range rows {
				if o.note != "" {
					v += fmt.Sprintf("; round %d left out, %s row: %s", i+1, o.name, o.note)
				}
			}
		}
		for i, rows := range r.openLoop {
			for _, o := range rows {
				if s := o.use.saturation(); s != "" {
					v += fmt.Sprintf("; round %d, %s row: %s, so the figure includes queueing for the CPU", i+1, o.name, s)
				}
			}
		}
		w("| p99 added by authproxy, open loop at %.0f req/s (%s), median of %d rounds (where each ran and the CPU each used: below) | %s | ≤ 0.3 ms: %s |\n", rate, openLoopLoad(r.openLoop), n, ms(added), v)
		if added, lo, hi, n := openLoopPairs(r.openLoop); n > 0 {
			w("| the same, median of the %d back-to-back slice pairs' differences (each pair: one slice of each proxy, run one after the other; pairs from %s to %s) | %s | ≤ 0.3 ms: %s (a host stall moves one slice's p99 by tens of ms; the median leaves such slices out, the rounds' pooled figure above keeps them) |\n",
				n, ms(lo), ms(hi), ms(added), verdictServed(added <= 300*time.Microsecond, olFailed))
		}
	} else if len(r.openLoop) > 0 {
		w("| p99 added by authproxy, open loop (the bare proxy at half a CPU) | no round with both rows measured and served (below) | ≤ 0.3 ms: %s |\n", verdictServed(false, olFailed))
	}
	if len(r.instr) >= 2 && r.instr[0].perRequest > 0 && r.instr[1].perRequest > 0 {
		ratio := r.instr[1].perRequest / r.instr[0].perRequest
		w("| authproxy ÷ bare proxy instructions per warm request (callgrind) | %.2f× (%.1fk ÷ %.1fk) | ≤ 2×: %s |\n", ratio, r.instr[1].perRequest/1000, r.instr[0].perRequest/1000, verdict(ratio <= 2))
		if a, b := r.instr[1], r.instr[0]; a.shaBlocks > 0 {
			w("| of which the SHA-256 block functions (the identity headers' HMAC): authproxy, the bare proxy, instructions per request | %.1fk, %.1fk | (valgrind lacks the CPU's SHA extensions, so Go runs its AVX2 code here, about 2,800 instructions a 64-byte block; on this CPU%s) |\n",
				a.shaBlocks/1000, b.shaBlocks/1000, shaNINote())
			w("| authproxy ÷ bare proxy instructions per warm request, the SHA-256 block functions left out of both | %.2f× (%.1fk ÷ %.1fk) | (a floor: the CPU's own code for those blocks adds some 180 instructions a block back) |\n",
				(a.perRequest-a.shaBlocks)/(b.perRequest-b.shaBlocks), (a.perRequest-a.shaBlocks)/1000, (b.perRequest-b.shaBlocks)/1000)
		}
		if len(r.instr) >= 3 && r.instr[2].perRequest > 0 {
			t := r.instr[2].perRequest
			w("| of which the bearer token's bytes: the bare proxy sent authproxy's requests (token included, forwarded as it is) − the bare proxy, instructions per request | %.1fk (%.1fk − %.1fk) | (what any proxy the token passes through pays; not the auth work) |\n", (t-r.instr[0].perRequest)/1000, t/1000, r.instr[0].perRequest/1000)
			w("| authproxy ÷ that bare proxy (the same requests), instructions per warm request | %.2f× (%.1fk ÷ %.1fk) | (the auth work alone; not the target, which is the row above it) |\n", r.instr[1].perRequest/t, r.instr[1].perRequest/1000, t/1000)
		}
		if len(r.instr) >= 4 && r.instr[3].perRequest > 0 {
			p := r.instr[3].perRequest
			w("| of which the request pipeline: authproxy on a public route (the bare proxy's requests, no token) − the bare proxy, instructions per request | %.1fk (%.1fk − %.1fk) | (routing, header stripping, forwarded headers, metrics, access log: no auth work) |\n", (p-r.instr[0].perRequest)/1000, p/1000, r.instr[0].perRequest/1000)
		}
	}
	if o2 := r.find(r.rows, "oauth2-proxy", 0); o2 != nil && warm != nil {
		if pm := r.peerMedians(); pm.n > 0 {
			misses := "not read"
			if pm.misses >= 0 {
				misses = fmt.Sprintf("%.0f", pm.misses)
			}
			w("| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput, median of %d alternating rounds (rounds from %.1f× to %.1f×; authproxy's token verifications and projection fetches in its runs, the most of any: %s) | %.1f× | ≥ 10×: %s |\n",
				pm.n, pm.lo, pm.hi, misses, pm.ratio, verdictServed(pm.ratio >= 10, pm.failed))
			if pm.cpuN > 0 {
				w("| oauth2-proxy ÷ authproxy warm, CPU per request of each proxy process, median of the same rounds' ratios | %.1f× (%.0f µs ÷ %.1f µs, medians) | (each proxy's own work, without the generator's and the upstream's shares of the cores) |\n",
					pm.cpu, pm.peerCPU, pm.warmCPU)
			}
		} else if len(r.peer) > 0 {
			w("| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput, alternating rounds | no round with both runs answered (%d rounds) | ≥ 10×: **not met** |\n", len(r.peer))
		}
		if o2.res.RPS > 0 {
			ratio := warm.res.RPS / o2.res.RPS
			target := "≥ 10×: " + verdictServed(ratio >= 10, warm.res.Errors+o2.res.Errors)
			if len(r.peer) > 0 {
				// One run of each, minutes apart: the rounds above are
				// the target's figure.
				target = "(one run of each, minutes apart; the alternating rounds above are the target's figure)"
			}
			w("| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput, main rows above | %.1f× | %s |\n", ratio, target)
			if bare != nil && bare.res.RPS > 0 {
				// The bare proxy does no auth work at all: its ratio is the
				// most any proxy in front of this upstream could reach
				// here, so it says whether the goal above can be met on
				// this machine.
				w("| its ceiling: bare proxy ÷ oauth2-proxy throughput, main rows above | %.1f× | (an authproxy that cost nothing would reach this; authproxy reached %.0f %% of it) |\n",
					bare.res.RPS/o2.res.RPS, 100*ratio/(bare.res.RPS/o2.res.RPS))
			}
			if o2.cpu > 0 && warm.cpu > 0 {
				// The throughput ratio shares two cores with the generator
				// and the upstream, whose cost per request is the same
				// whichever proxy runs: the CPU each proxy process spends
				// per request is its own work alone.
				bareCPU := "not timed"
				if bare != nil && bare.cpu > 0 {
					bareCPU = fmt.Sprintf("%.1f µs", bare.cpu)
				}
				w("| oauth2-proxy ÷ authproxy warm, CPU per request of each proxy process (/proc utime+stime ÷ requests), main rows above | %.1f× (%.0f µs ÷ %.1f µs) | (each proxy's own work, without the generator's and the upstream's shares of the cores that the throughput ratio includes; the bare proxy: %s) |\n",
					o2.cpu/warm.cpu, o2.cpu, warm.cpu, bareCPU)
			}
		} else {
			w("| authproxy warm ÷ oauth2-proxy (JWT bearer) throughput | %s | ≥ 10× |\n", o2.note)
		}
	}
	if len(r.users) > 0 {
		// Both sides of every round must be warm: a verification in the
		// few users' run slows the ratio's divisor and flatters it.
		var ratios []float64
		var failed int64
		verif, unread := 0.0, false
		for _, u := range r.users {
			if u.few.RPS > 0 && u.many.Requests > 0 {
				ratios = append(ratios, u.many.RPS/u.few.RPS)
			}
			for _, v := range []float64{u.fewVerif, u.verif} {
				unread = unread || v < 0
				verif = max(verif, v)
			}
			failed += u.few.Errors + u.many.Errors
		}
		ratio := median(ratios)
		v := verdictServed(ratio >= 0.8 && verif == 0 && !unread, failed)
		if unread && failed == 0 {
			v += " (a round's verifications were not read)"
		}
		w("| authproxy warm (%d users, default settings) ÷ warm (%d users) throughput, median of %d alternating rounds on one proxy; verifications / request (most of any run, either working set) | %.2f; %.4g | ≥ 0.8 and 0: %s |\n",
			r.opts.manyUsers, r.opts.users, len(ratios), ratio, verif, v)
	} else if many := r.find(r.trends, fmt.Sprintf("authproxy warm (%d users)", r.opts.manyUsers), 0); many != nil && warm != nil && warm.res.RPS > 0 {
		ratio := many.res.RPS / warm.res.RPS
		verif := -1.0
		for _, c := range many.counters {
			if strings.HasPrefix(c.label, "signature verifications") {
				verif = c.value
			}
		}
		w("| authproxy warm (%d users, default settings) ÷ warm (%d users) throughput; verifications / request | %.2f; %.4g | ≥ 0.8 and 0: %s |\n",
			r.opts.manyUsers, r.opts.users, ratio, verif, verdictServed(ratio >= 0.8 && verif == 0, many.res.Errors+warm.res.Errors))
	}
	cold := r.find(r.rows, "authproxy cold", 0)
	if cold != nil && warm != nil && warm.res.RPS > 0 {
		w("| authproxy cold ÷ warm throughput | %.2f | (cost of one signature verification per request) |\n", cold.res.RPS/warm.res.RPS)
	}
	full, direct := r.find(r.rows, "full stack GET /users/me", 0), r.find(r.rows, "coreapi direct", 0)
	if full != nil && direct != nil && direct.res.RPS > 0 {
		w("| full stack ÷ coreapi direct (pre-signed headers), GET /users/me | %.2f | |\n", full.res.RPS/direct.res.RPS)
	}

	if len(r.paired) > 0 {
		w("\nPaired rounds (one run of the bare proxy and one of authproxy warm, back to back, the order alternating from round to round; "+
			"%d connections; %s warm-up and %s measured per run; run on the fresh proxy before the cold row; "+
			"CPU per request is each proxy process's utime+stime from /proc over the measured window ÷ its requests; the bare proxy "+
			"is configured like authproxy's defaults: limits, timeouts, read buffer, streamed responses):\n\n", r.opts.conns, pairedWarmup, pairedLength(r.opts.duration))
		w("Each round also runs, around the bare proxy (which runs in the middle; the order of the five runs is reversed when authproxy's warm run comes first): " +
			"the bare proxy with authproxy's requests, bearer token included (its CPU difference is what the token's bytes cost a proxy that does nothing with them); " +
			"authproxy on a public route, sent the bare proxy's requests but for the path (the request pipeline every route runs, without the token work); " +
			"and a second bare proxy process, identical to the first (its difference is the measurement's own spread).\n\n")
		w("| round | first | bare req/s | bare p99 | bare CPU/req | warm req/s | warm p99 | warm CPU/req | ratio | CPU difference | bare with the tokens: CPU/req | its difference | public route: CPU/req | its difference | second bare: CPU/req | its difference |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for i, p := range r.paired {
			ratio := 0.0
			if p.bare.RPS > 0 {
				ratio = p.warm.RPS / p.bare.RPS
			}
			diff := func(a float64) string {
				if p.bareCPU < 0 || a < 0 {
					return "–"
				}
				return fmt.Sprintf("%+.1f µs", a-p.bareCPU)
			}
			tok, pub, aa := p.sideRun(pairedRound.tokRun), p.sideRun(pairedRound.pubRun), p.sideRun(pairedRound.aaRun)
			w("| %d | %s | %.0f | %s | %s | %.0f | %s | %s | %.2f | %s | %s | %s | %s | %s | %s | %s |\n", i+1, p.first(), p.bare.RPS, ms(p.bare.P99), cpuUS(p.bareCPU),
				p.warm.RPS, ms(p.warm.P99), cpuUS(p.warmCPU), ratio, diff(p.warmCPU), cpuUS(tok), diff(tok), cpuUS(pub), diff(pub), cpuUS(aa), diff(aa))
		}
		// The runs' failed requests are in none of the figures above.
		for i, p := range r.paired {
			for _, x := range []struct {
				name string
				res  result
			}{{"the bare proxy", p.bare}, {"authproxy warm", p.warm}, {"the bare proxy with the tokens", p.tok}, {"authproxy on a public route", p.pub}, {"the second bare proxy", p.aa}} {
				if x.res.Errors > 0 {
					w("\n- round %d, %s: %d requests failed (left out of its figures): %s%s", i+1, x.name, x.res.Errors, x.res.FirstErr, kindsNote(x.res.Kinds))
				}
			}
		}
		w("\n")
	}
	if len(r.paired) > 0 {
		w("\nWhere each paired round's CPU went, per request (µs, /proc utime+stime over the same measured windows): the load generator (this harness), " +
			"the upstream and the proxy, for the bare proxy's run and for authproxy warm's; the CPU-bound ratio is the bare run's sum ÷ the warm run's, " +
			"the throughput ratio the machine would show if these three alone kept both cores busy:\n\n")
		w("| round | bare: generator | upstream | proxy | sum | warm: generator | upstream | proxy | sum | CPU-bound ratio | measured ratio |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for i, p := range r.paired {
			sum := func(proxy float64, rest runCPU) string {
				if proxy < 0 || rest.gen < 0 || rest.up < 0 {
					return "–"
				}
				return cpuUS(proxy + rest.gen + rest.up)
			}
			bound, measured := "–", "–"
			if b, ok := p.cpuBound(); ok {
				bound = fmt.Sprintf("%.2f", b)
			}
			if p.bare.RPS > 0 {
				measured = fmt.Sprintf("%.2f", p.warm.RPS/p.bare.RPS)
			}
			w("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", i+1,
				cpuUS(p.bareRest.gen), cpuUS(p.bareRest.up), cpuUS(p.bareCPU), sum(p.bareCPU, p.bareRest),
				cpuUS(p.warmRest.gen), cpuUS(p.warmRest.up), cpuUS(p.warmCPU), sum(p.warmCPU, p.warmRest), bound, measured)
		}
	}
	if len(r.together) > 0 {
		w("\nTogether rounds (after the paired rounds, on the same processes): the bare proxy and authproxy warm loaded at the same time, "+
			"%d connections each, %s warm-up and %s measured, CPU per request of each process over the same window, so that the machine's "+
			"speed is the same for both; the control loads the bare proxy and the second bare proxy the same way (its difference is the "+
			"measurement's resolution). The two proxies share the CPUs with each other too, so neither throughput is compared; the pair "+
			"and the control alternate which runs first:\n\n", max(r.opts.conns/2, 1), pairedWarmup, pairedLength(r.opts.duration))
		w("| round | bare CPU/req | warm CPU/req | difference | control: bare CPU/req | second bare CPU/req | difference |\n|---:|---:|---:|---:|---:|---:|---:|\n")
		for i, t := range r.together {
			w("| %d | %s | %s | %s | %s | %s | %s |\n", i+1, cpuUS(t.bareCPU), cpuUS(t.warmCPU), t.diffString(), cpuUS(t.ctlCPU), cpuUS(t.ctl2CPU), t.ctlDiffString())
		}
	}
	if len(r.users) > 0 {
		w("\nMany users, alternating rounds (%d users, then %d users, on the default proxy after the cold row and one pass over the %d users' tokens; %d connections; CPU per request as above):\n\n",
			r.opts.users, r.opts.manyUsers, r.opts.manyUsers, r.opts.conns)
		w("| round | %d users req/s | CPU/req | %d users req/s | CPU/req | ratio | verifications / request (%d users; %d users) | failed requests |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
			r.opts.users, r.opts.manyUsers, r.opts.users, r.opts.manyUsers)
		for i, u := range r.users {
			ratio := 0.0
			if u.few.RPS > 0 {
				ratio = u.many.RPS / u.few.RPS
			}
			w("| %d | %.0f | %s | %.0f | %s | %.2f | %s; %s | %d |\n", i+1, u.few.RPS, cpuUS(u.fewCPU), u.many.RPS, cpuUS(u.manyCPU), ratio, perReq(u.fewVerif), perReq(u.verif), u.few.Errors+u.many.Errors)
		}
	}
	if len(r.openLoop) > 0 {
		w("\nOpen loop (fixed rate: each request is due on schedule whether or not earlier ones were answered, is sent on\n")
		w("the next free one of %d keep-alive connections, and its latency counts from when it was due, so waiting for a\n", r.opts.conns*4)
		sw, sd := openLoopSliceTimes(r.opts.warmup, r.opts.duration)
		w("free connection counts too; a request belongs to the window in which it was due: those still waiting or unanswered when\n")
		w("it closes are waited for, up to 10 s from when they were due, then count as failed, and those due in the warm-up do not\n")
		w("count; success is the share of the window's requests answered 200, the percentiles are theirs; the same raw-connection\n")
		w("generator as the closed-loop rows), the rate the one at which the bare\n")
		w("proxy keeps half a CPU busy, measured the same way at the start of each round. Each row is measured in %d slices of %s\n", openLoopSlicesPerRow, sd)
		w("(%s warm-up each), the two proxies taking turns (bare, authproxy, authproxy, bare, ...; the first pair's order alternating\n", sw)
		w("from round to round), so that the host's slow and fast stretches fall on both rows alike; a row's percentiles are over\n")
		w("all its slices' requests, and its CPU figures the mean of its slices'. Each round sends authproxy the tokens of as many\n")
		w("users, new ones, cached just before it (the warm users' entries expire some five minutes into the run), and counts its\n")
		w("token verifications and projection fetches in every slice's window: a row that made any was not warm, and its round\n")
		w("is left out of the medians:\n\n")
		for i, n := range r.openLoopNotes {
			w("- round %d: %s\n", i+1, n)
		}
		w("\nCPU-s/s is each process's utime+stime from /proc over the measured window ÷ its length (1: one CPU kept busy; the generator's\n")
		w("process also runs the embedded NATS server, idle here); busy is the share of the CPU's time, from /proc/stat, that any\n")
		w("process on the machine kept it busy (from %.0f %%, a CPU counts as saturated):\n\n", 100*saturated)
		w("| round | target | rate | requests served | success | p50 | p99 | max | CPU-s/s generator | upstream | proxy | CPU 0 busy | other CPUs busy |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for i, rows := range r.openLoop {
			for _, o := range rows {
				if o.note != "" && o.requests == 0 {
					w("| %d | %s | %.0f/s | %s | | | | | | | | | |\n", i+1, o.name, o.rate, o.note)
					continue
				}
				w("| %d | %s | %.0f/s | %d | %.4f | %s | %s | %s | %s | %s | %s | %s | %s |\n", i+1, o.name, o.rate, o.requests, o.success, ms(o.p50), ms(o.p99), ms(o.max),
					cpuPS(o.use.generator), cpuPS(o.use.upstream), cpuPS(o.use.proxy), busyPct(o.use.generatorCPUs), busyPct(o.use.proxyCPUs))
			}
		}
		for i, rows := range r.openLoop {
			for _, o := range rows {
				if o.note != "" && o.requests > 0 {
					w("\n- round %d, %s: %s", i+1, o.name, o.note)
				}
				if s := o.use.saturation(); s != "" {
					w("\n- round %d, %s: saturated: %s", i+1, o.name, s)
				}
			}
		}
		w("\n")
	}
	if len(r.instr) > 0 {
		w("\nInstructions per warm request (callgrind; each proxy process started under valgrind with GOMAXPROCS=1, warmed, then %d\n", r.instr[0].requests)
		w("sequential requests on one connection counted between `callgrind_control -z` and `-d`, less a window of\n")
		w("the same length without requests (counted again, twice at most, when it counts more than a tenth of the\n")
		w("requests' instructions: background work ran in it; a row whose idle window stays busy is measured in a new\n")
		w("process); the upstream is another process and not counted; counts depend far\n")
		w("less than times on what else the machine runs, but not nothing: with another CPU-bound job running, both\n")
		w("proxies' counts rose by 11 to 13 %%, the Go scheduler spinning and parking differently; valgrind has no\n")
		w("SHA-NI, so SHA-256 weighs more than on the CPU). The same runs simulate one server core's caches (32 KiB\n")
		w("L1i and L1d, 1 MiB L2, 8-way, 64-byte lines: a fixed yardstick, not this machine's) and count, per request, the cache lines the request\n")
		w("needed that the previous requests' own work had evicted. Alone on a core these are the process's footprint;\n")
		w("under load, the generator, the upstream and the kernel evict the same lines between two of its requests, so\n")
		w("each line of code or data a request touches is likelier to be fetched again: the part of CPU time per\n")
		w("request that instruction counts do not show:\n\n")
		w("| target | instructions / request | idle window subtracted (per request) | L1i misses / request | L1d misses / request | L2 misses / request |\n|---|---:|---:|---:|---:|---:|\n")
		for _, x := range r.instr {
			if x.perRequest < 0 {
				w("| %s | %s | | | | |\n", x.name, x.note)
				continue
			}
			w("| %s | %.0f | %.0f | %.0f | %.0f | %.1f |\n", x.name, x.perRequest, x.baselinePerRq, x.i1Miss, x.d1Miss, x.llMiss)
		}
	}
	w("\n## Per-request counters (from the services' /metrics)\n\n| row | counter | value | metric |\n|---|---|---:|---|\n")
	for _, x := range append(append([]row{}, r.rows...), r.trends...) {
		for _, c := range x.counters {
			v := "not measured"
			if c.value >= 0 {
				v = fmt.Sprintf("%.4g", c.value)
			}
			w("| %s (%d conns) | %s | %s | `%s` |\n", x.name, x.conns, c.label, v, c.metric)
		}
	}
	w("\nGoals: 0 signature verifications and 0 auth DB queries (projection fetches) per warm request;\n")
	w("at most 1 DB round trip per `GET /users/me` and member-list page at coreapi. Concurrent reads of these two\n")
	w("share round trips (docs/architecture.md), so the DB figure is below 1: it counts the round trips each request\n")
	w("made itself, and a read carried by another request's batch counts none.\n")

	if l := r.invalidation; l != nil {
		w("\n## Invalidation latency\n\nFrom the 2xx of `DELETE /api/v1/users/{id}/roles/admin` (through the proxy) to that user's\n")
		w("first 403 at the proxy, %d trials (%d did not turn within 5 s, ranked above every latency measured):\n\n", len(l.values)+l.timeouts, l.timeouts)
		if len(l.values) > 0 {
			p99, ok := l.pct(0.99)
			w("| p50 | p99 | max | goal p99 < 50 ms |\n|---:|---:|---:|---|\n| %s | %s | %s | %s |\n",
				l.pctString(0.5), l.pctString(0.99), l.pctString(1), verdict(ok && p99 < 50*time.Millisecond && l.timeouts == 0))
		}
	}
	if hr := r.held; hr != nil {
		w("\n## Concurrency and memory\n\n%d keep-alive connections opened to authproxy (warm tokens), held %s, each sending one\n", hr.target, hr.hold)
		w("request every %s:\n\n", hr.interval)
		w("| established | requests | errors | p50 | p99 | max | proxy RSS idle | proxy RSS at %d conns |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n", hr.target)
		w("| %d | %d | %d | %s | %s | %s | %.1f MiB | %.1f MiB |\n", hr.established, hr.requests, hr.errors, ms(hr.p50), ms(hr.p99), ms(hr.max),
			float64(hr.rssIdleKB)/1024, float64(hr.rssKB)/1024)
		w("\nThe same latencies split: each connection's first request (all sent within one interval of the ramp's end: a\n")
		w("storm of new connections, when the proxy first touches each one's buffers and its worker's stack), and the\n")
		w("requests started in the hold's second half (the steady state with every connection open):\n\n")
		w("| first request of each connection: p99 | its max | second half: requests | p50 | p99 | max |\n|---:|---:|---:|---:|---:|---:|\n")
		w("| %s | %s | %d | %s | %s | %s |\n", ms(hr.firstP99), ms(hr.firstMax), hr.lateN, ms(hr.lateP50), ms(hr.lateP99), ms(hr.lateMax))
		if len(hr.kinds) > 0 {
			w("\n| errors by kind (status, problem code and detail; or transport error) | count |\n|---|---:|\n")
			for _, k := range hr.kinds {
				w("| %s | %d |\n", k.kind, k.n)
			}
			w("\nfirst error: %s\n", hr.firstErr)
		}
		if len(hr.proxy) > 0 {
			w("\nauthproxy's counters over the hold:")
			for _, c := range hr.proxy {
				w(" `%s`;", c)
			}
			w("\n")
		}
	}
	if len(r.trends) > 0 {
		w("\n## Trends\n\nHow each row's cost grows with connections and distinct users.\n\n| target | conns | req/s | p50 | p99 | errors | vs. main row |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, x := range r.trends {
			base := r.find(r.rows, x.name, 0)
			rel := ""
			if base == nil {
				base = r.find(r.rows, strings.SplitN(x.name, " (", 2)[0], 0)
			}
			if base != nil && base.res.RPS > 0 {
				rel = fmt.Sprintf("%.2f× (%s, %d conns)", x.res.RPS/base.res.RPS, base.name, base.conns)
			}
			w("| %s | %d | %.0f | %s | %s | %d | %s |\n", x.name, x.conns, x.res.RPS, ms(x.res.P50), ms(x.res.P99), x.res.Errors, rel)
		}
		for _, x := range r.trends {
			if x.note != "" || x.res.FirstErr != "" {
				w("\n- %s: %s %s%s", x.name, x.note, x.res.FirstErr, kindsNote(x.res.Kinds))
			}
		}
		w("\n")
	}
	if r.gobench != "" {
		w("\n## Go micro-benchmarks of the hot paths (`go test -bench`, same run)\n\n")
		w("`BenchmarkWarmRequest` is a whole warm request through authproxy's handler to a loopback\n")
		w("upstream; `BenchmarkBareForward` the same harness with a plain forwarder. `BenchmarkHandlerNoIO`\n")
		w("is the gate for every change of the warm path: the whole auth handler with the upstream's answer\n")
		w("canned (the forwarded request is serialized, no sockets), `authproxy` next to `bare` (a plain\n")
		w("HostClient through the same canned transport) and `bare/fiber` (the same inside a Fiber app, as the\n")
		w("harness's bare proxy is); `authproxy/public` is a public route's request, no token; its allocations are\n")
		w("the handler's own (goal: 0). `BenchmarkHandlerNoIOColdCaches` runs the same handlers with the CPU's caches emptied\n")
		w("before every request (4 MiB written: the L2s; 64 MiB: the L3 too) and reports the handler's own time (handler-ns/op):\n")
		w("what the larger code and data footprint costs when less of it is cached, as under load.\n")
		w("`BenchmarkIdentityMiddleware` is coreapi's identity check alone,\n")
		w("v1 against v2 (body digest, replay check; its v2 loop also signs, which `v2-sign-only`\n")
		w("measures alone); `BenchmarkProtectedRoute` the whole middleware stack around an empty handler.\n\n```\n%s\n```\n", r.gobench)
	}
	if r.profile != "" {
		w("\n## Where authproxy spends CPU under warm load (pprof top 10)\n\n```\n%s\n```\n", r.profile)
	}
	return b.String()
}

// kindsNote is " (errors by kind: …)" for a row with errors, else "".
func kindsNote(ks []kindCount) string {
	if len(ks) == 0 {
		return ""
	}
	return " (errors by kind: " + formatKinds(ks) + ")"
}

// openLoopPairs is the median, smallest and largest of the p99 authproxy
// added in each pair of slices run back to back (the j-th slice of each
// row: openLoopOrder puts them next to each other), over the complete
// rounds, and how many pairs there were. A stall of the host hits a slice
// or two and moves their p99 by tens of milliseconds; the median of the
// pairs leaves such slices out, where the rows' pooled p99 keeps them.
func openLoopPairs(rounds [][]openLoopRow) (added, lo, hi time.Duration, n int) {
	var adds []float64
	for _, rows := range rounds {
		if !completeOpenLoopRound(rows) || len(rows[0].sliceP99) != len(rows[1].sliceP99) {
			continue
		}
		for j, b := range rows[0].sliceP99 {
			if w := rows[1].sliceP99[j]; b >= 0 && w >= 0 { // a slice with no answer has no p99
				adds = append(adds, float64(w-b))
			}
		}
	}
	if len(adds) == 0 {
		return 0, 0, 0, 0
	}
	return time.Duration(median(adds)), time.Duration(slices.Min(adds)), time.Duration(slices.Max(adds)), len(adds)
}

// openLoopLoad says what load the open-loop rate put on the bare proxy:
// the rate is chosen for half a CPU from a short probe (halfLoadRate), and
// the CPU-s/s the bare proxy then used over its rows is what it was.
func openLoopLoad(rounds [][]openLoopRow) string {
	var used []float64
	for _, rows := range rounds {
		if completeOpenLoopRound(rows) && rows[0].use.proxy >= 0 {
			used = append(used, rows[0].use.proxy)
		}
	}
	if len(used) == 0 {
		return "the rate chosen for the bare proxy at half a CPU; its CPU not read"
	}
	lo, hi := slices.Min(used), slices.Max(used)
	if lo == hi {
		return fmt.Sprintf("the rate chosen for the bare proxy at half a CPU; it used %s CPU-s/s", cpuPS(lo))
	}
	return fmt.Sprintf("the rate chosen for the bare proxy at half a CPU; it used %s–%s CPU-s/s", cpuPS(lo), cpuPS(hi))
}

// completeOpenLoopRound reports whether a round has both rows (bare, then
// authproxy), each measured and answered.
func completeOpenLoopRound(rows []openLoopRow) bool {
	return len(rows) == 2 && rows[0].note == "" && rows[1].note == "" && rows[0].requests > 0 && rows[1].requests > 0
}

// openLoopAdded is the median rate and the median of the p99 authproxy
// added (its p99 − the bare proxy's) over the complete rounds of rounds,
// and how many rounds were complete (both rows measured).
func openLoopAdded(rounds [][]openLoopRow) (rate float64, added time.Duration, n int) {
	var rates, adds []float64
	for _, rows := range rounds {
		if !completeOpenLoopRound(rows) {
			continue
		}
		rates = append(rates, rows[0].rate)
		adds = append(adds, float64(rows[1].p99-rows[0].p99))
	}
	if len(adds) == 0 {
		return 0, 0, 0
	}
	return median(rates), time.Duration(median(adds)), len(adds)
}
