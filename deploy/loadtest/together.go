package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// togetherRound measures the CPU difference between the two proxies with
// both loaded at the same time, half the connections each, so that
// whatever speed the machine runs at during the window (its slow and fast
// phases move the sequential paired rounds' figures by more than the
// difference itself) is the same for both. Its control is the bare proxy
// and the second bare proxy loaded at once the same way: their difference
// is this measurement's own resolution. The two proxies share the CPUs
// with each other as well as with the generator and the upstream, so each
// pays for the other's cache and scheduler traffic alike; throughput is
// not compared (each gets the share of the CPUs the other leaves it).
type togetherRound struct {
	bareCPU, warmCPU float64 // the bare proxy and authproxy warm, at once
	ctlCPU, ctl2CPU  float64 // the bare proxy and the second bare proxy, at once
	warmFirst        bool    // the pair with authproxy ran before the control
}

// togetherRuns is the number of together rounds in the full run, each
// running the pair and the control for pairedLength.
const togetherRuns = 6

// togetherTarget is one proxy process loaded in a together run.
type togetherTarget struct {
	addr string
	p    *proc
	reqs [][]byte
}

// runTogether loads the targets at once, conns connections each, and
// returns each process's CPU per request (µs) over its measured window
// (-1 when it could not be read or nothing was answered).
func (h *harness) runTogether(ctx context.Context, conns int, d time.Duration, ts ...togetherTarget) []float64 {
	out := make([]float64, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cw := &cpuWindow{pid: t.p.pid()}
			r := load{addr: t.addr, conns: conns, warmup: pairedWarmup, duration: d, request: cycle(t.reqs, conns), want: 200, onStart: cw.start, onEnd: cw.end}.run(ctx)
			out[i] = cw.perRequest(r.Requests)
			if r.Errors > 0 {
				h.logf("together run on %s: %d requests failed (left out of its CPU per request): %s", t.addr, r.Errors, r.FirstErr)
			}
		}()
	}
	wg.Wait()
	return out
}

// togetherRounds runs rounds of the pair (bare and authproxy warm at once)
// and its control (bare and second bare at once), alternating which of
// the two comes first.
func (h *harness) togetherRounds(ctx context.Context, noAuth, warmReqs [][]byte, rounds int) []togetherRound {
	bare, bare2 := togetherTarget{h.bareAddr, h.bare, noAuth}, togetherTarget{h.bare2Addr, h.bare2, noAuth}
	warm := togetherTarget{h.proxyAddr, h.proxy, warmReqs}
	out := make([]togetherRound, 0, rounds)
	for i := 0; i < rounds && ctx.Err() == nil; i++ {
		t := h.togetherRound(ctx, i, bare, warm, bare, bare2)
		h.logf("together round %d: bare %s, warm %s CPU/req at once (difference %s); control: bare %s, second bare %s (difference %s)",
			i+1, cpuUS(t.bareCPU), cpuUS(t.warmCPU), t.diffString(), cpuUS(t.ctlCPU), cpuUS(t.ctl2CPU), t.ctlDiffString())
		out = append(out, t)
	}
	return out
}

// togetherRound is round i: a and b loaded at once (its bareCPU and
// warmCPU), and the control c and c2 loaded at once (ctlCPU, ctl2CPU).
func (h *harness) togetherRound(ctx context.Context, i int, a, b, c, c2 togetherTarget) togetherRound {
	conns, d := max(h.o.conns/2, 1), pairedLength(h.o.duration)
	return roundAtOnce(i, a, b, c, c2, func(x, y togetherTarget) (float64, float64) {
		v := h.runTogether(ctx, conns, d, x, y)
		return v[0], v[1]
	})
}

// roundAtOnce is togetherRound with run loading two targets at once (the
// first named is started first). warmFirst(i) decides which of the pair
// and the control runs first and, within each, whose load starts first,
// so both orders come up alike; each figure is filed under its target
// whatever the order.
func roundAtOnce(i int, a, b, c, c2 togetherTarget, run func(x, y togetherTarget) (float64, float64)) togetherRound {
	t := togetherRound{warmFirst: warmFirst(i)}
	both := func(x, y togetherTarget) (float64, float64) {
		if t.warmFirst {
			vy, vx := run(y, x)
			return vx, vy
		}
		return run(x, y)
	}
	if t.warmFirst {
		t.bareCPU, t.warmCPU = both(a, b)
		t.ctlCPU, t.ctl2CPU = both(c, c2)
	} else {
		t.ctlCPU, t.ctl2CPU = both(c, c2)
		t.bareCPU, t.warmCPU = both(a, b)
	}
	return t
}

// diff and ctlDiff are the round's two differences (ok false when a CPU
// figure was not read).
func (t togetherRound) diff() (float64, bool) {
	return t.warmCPU - t.bareCPU, t.warmCPU >= 0 && t.bareCPU >= 0
}

func (t togetherRound) ctlDiff() (float64, bool) {
	return t.ctl2CPU - t.ctlCPU, t.ctl2CPU >= 0 && t.ctlCPU >= 0
}

func (t togetherRound) diffString() string    { return signedUS(t.diff()) }
func (t togetherRound) ctlDiffString() string { return signedUS(t.ctlDiff()) }

func signedUS(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%+.1f µs", v)
}

// togetherMedians returns the medians over the rounds of the pair's
// difference (warm − bare) and of the control's (second bare − bare),
// the control's range, and how many rounds each median is over.
func togetherMedians(rounds []togetherRound) (diff, ctl, ctlLo, ctlHi float64, n, nCtl int) {
	var ds, cs []float64
	for _, t := range rounds {
		if v, ok := t.diff(); ok {
			ds = append(ds, v)
		}
		if v, ok := t.ctlDiff(); ok {
			cs = append(cs, v)
		}
	}
	if len(ds) > 0 {
		diff = median(ds)
	}
	if len(cs) > 0 {
		ctl, ctlLo, ctlHi = median(cs), cs[0], cs[0]
		for _, v := range cs {
			ctlLo, ctlHi = min(ctlLo, v), max(ctlHi, v)
		}
	}
	return diff, ctl, ctlLo, ctlHi, len(ds), len(cs)
}

// proxyAB compares authproxy A (this tree's binary) with the binary bin
// (B; "tree": A's own file again, an A/A check): both started afresh,
// alike, and warmed with the same tokens, then rounds of both loaded at
// once, each with its control (the two bare proxies at once), printing
// every round and the medians of B − A. Read B − A against an A/A run:
// on the AMD host, a byte-identical copy of A's binary in another file
// measured +1.2 to +2.2 µs a request (6-round medians, three runs; A's own
// file again: +0.3), so a difference of that size between two builds is
// not theirs.
func (h *harness) proxyAB(ctx context.Context, bin string, warmReqs, noAuth [][]byte, rounds int, out io.Writer) error {
	var ab [2]togetherTarget // A, B
	a := filepath.Join(h.bin, "authproxy")
	bin, err := proxyBBinary(a, bin)
	if err != nil {
		return err
	}
	for i, b := range []string{a, bin} {
		addr, admin := freeAddr(), freeAddr()
		env := append(h.proxyEnv(addr, admin, h.upstreamAddr), h.appEnv...)
		if i == 1 {
			env = append(env, h.o.proxyBEnv...) // the later value of a variable wins
		}
		p, err := h.start("authproxy-"+string(rune('a'+i)), env, b)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, "http://"+admin+"/readyz", 30*time.Second); err != nil {
			return fmt.Errorf("authproxy %c: %w (logs in %s)", 'A'+i, err, h.work)
		}
		ab[i] = togetherTarget{addr, p, warmReqs}
	}
	for _, t := range ab {
		h.fillOnce(ctx, t.addr, warmReqs)
	}
	fmt.Fprintf(out, "authproxy A (this tree): pid %d; B (%s%s): pid %d\n", ab[0].p.pid(), bin, strings.Join(append([]string{""}, h.o.proxyBEnv...), " "), ab[1].p.pid())
	bare, bare2 := togetherTarget{h.bareAddr, h.bare, noAuth}, togetherTarget{h.bare2Addr, h.bare2, noAuth}
	var ts []togetherRound
	for i := 0; i < rounds && ctx.Err() == nil; i++ {
		t := h.togetherRound(ctx, i, ab[0], ab[1], bare, bare2) // bareCPU is A's, warmCPU B's
		fmt.Fprintf(out, "round %d: A %s, B %s CPU/req (B − A %s); control: bare %s, second bare %s (%s)\n",
			i+1, cpuUS(t.bareCPU), cpuUS(t.warmCPU), t.diffString(), cpuUS(t.ctlCPU), cpuUS(t.ctl2CPU), t.ctlDiffString())
		ts = append(ts, t)
	}
	if diff, ctl, lo, hi, n, nCtl := togetherMedians(ts); n > 0 {
		fmt.Fprintf(out, "median of %d rounds: B − A %+.1f µs CPU/req; control %+.1f µs (%d rounds, from %+.1f to %+.1f)\n", n, diff, ctl, nCtl, lo, hi)
	}
	return ctx.Err()
}

// proxyBBinary is the file -proxy-b names, given A's binary a: "tree" is a
// itself (an A/A check of the comparison's bias with both processes
// started from one file), "copy" a byte-identical copy of a in another
// file, made now (an A/A check that also includes what the file's own
// placement costs: two identical files measured up to 2 µs a request
// apart on one host), anything else the path as it is.
func proxyBBinary(a, b string) (string, error) {
	switch b {
	case "tree":
		return a, nil
	case "copy":
		src, err := os.ReadFile(a)
		if err != nil {
			return "", err
		}
		dst := a + "-copy"
		if err := os.WriteFile(dst, src, 0o755); err != nil {
			return "", err
		}
		return dst, nil
	}
	return b, nil
}
