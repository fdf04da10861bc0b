package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// usersRound is one run of the 1,000-user working set immediately followed
// by one of the many-users working set on the same authproxy; CPU figures
// are the proxy process's utime+stime per request over the measured
// window, in µs (-1 when /proc could not be read).
type usersRound struct {
	few, many       result
	fewCPU, manyCPU float64
	// Signature verifications per request of each run (-1: not read):
	// both working sets are to be warm, the few users' as much as the
	// many.
	fewVerif, verif float64
}

// usersRounds alternates closed-loop runs of the few-users and the
// many-users requests on one authproxy (its process p, admin address for
// the counters), rounds times, each measured for d: drift in what else
// the machine does hits both alike.
func (h *harness) usersRounds(ctx context.Context, addr, admin string, p *proc, few, many [][]byte, rounds int, d time.Duration) []usersRound {
	var out []usersRound
	pid := p.pid()
	for i := 0; i < rounds && ctx.Err() == nil; i++ {
		var r usersRound
		fsc := &scrapers{proxy: "http://" + admin + "/metrics"}
		r.few, r.fewCPU = h.cpuRunWith(ctx, addr, pid, few, h.o.conns, d, fsc)
		sc := &scrapers{proxy: "http://" + admin + "/metrics"}
		r.many, r.manyCPU = h.cpuRunWith(ctx, addr, pid, many, h.o.conns, d, sc)
		r.fewVerif, r.verif = verificationsPer(fsc, r.few.Requests), verificationsPer(sc, r.many.Requests)
		h.logf("users round %d: %d users %.0f req/s %.1f µs CPU/req, %d users %.0f req/s %.1f µs CPU/req, ratio %.2f, verifications/req %.3g and %.3g",
			i+1, len(few), r.few.RPS, r.fewCPU, len(many), r.many.RPS, r.manyCPU, r.many.RPS/r.few.RPS, r.fewVerif, r.verif)
		out = append(out, r)
	}
	return out
}

// verificationsPer is the signature verifications authproxy counted
// between sc's scrapes per request served, -1 when not read.
func verificationsPer(sc *scrapers, requests int64) float64 {
	if name := sc.after[0].find("verif", "total"); name != "" && requests > 0 {
		return delta(sc.before[0], sc.after[0], name) / float64(requests)
	}
	return -1
}

// runUsers is the -only users mode: the warm rows with 1,000 and with
// many distinct users, alternating on the default proxy (after the cold
// row's flood of one-time tokens, as in the full run) and on the proxy
// with caches sized for many users, printed to w. No report file.
func (h *harness) runUsers(ctx context.Context, w io.Writer, rounds, coldN int) error {
	if err := h.startSynthetic(ctx); err != nil {
		return err
	}
	h.logf("minting tokens")
	warm, err := h.minter.mintAll(h.warmUsers, len(h.warmUsers))
	if err != nil {
		return err
	}
	many, err := h.minter.mintAll(h.manyUsers, len(h.manyUsers))
	if err != nil {
		return err
	}
	warmReqs, manyReqs := render("bench", benchURI, warm), render("bench", benchURI, many)
	c := h.o.conns
	h.fillOnce(ctx, h.proxyAddr, warmReqs)
	if coldN > 0 {
		cold, err := h.minter.mintAll(h.warmUsers, coldN)
		if err != nil {
			return err
		}
		h.logf("flooding the default proxy with %d one-time tokens", coldN)
		h.fillOnce(ctx, h.proxyAddr, render("bench", benchURI, cold))
	}
	for _, p := range []struct {
		name, addr, admin string
		p                 *proc
	}{{"default settings", h.proxyAddr, h.proxyAdmin, h.proxy}, {"caches sized", h.bigAddr, h.bigAdmin, h.big}} {
		h.logf("filling %s proxy with %d users", p.name, len(manyReqs))
		h.fillOnce(ctx, p.addr, warmReqs)
		h.fillOnce(ctx, p.addr, manyReqs)
		fmt.Fprintf(w, "\n%s: %d vs %d users, %d conns\n\n", p.name, len(warmReqs), len(manyReqs), c)
		fmt.Fprintln(w, "| round | few req/s | few CPU/req | many req/s | many CPU/req | ratio | verifications/req (few; many) |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|")
		for i, r := range h.usersRounds(ctx, p.addr, p.admin, p.p, warmReqs, manyReqs, rounds, h.o.duration) {
			fmt.Fprintf(w, "| %d | %.0f | %.1f µs | %.0f | %.1f µs | %.2f | %.3f; %.3f |\n", i+1, r.few.RPS, r.fewCPU, r.many.RPS, r.manyCPU, r.many.RPS/r.few.RPS, r.fewVerif, r.verif)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// cpuRunWith measures one closed-loop run against addr and the CPU the
// process pid spent per request in its measured window, scraping sc (when
// not nil) at the edges of that window.
func (h *harness) cpuRunWith(ctx context.Context, addr string, pid int, reqs [][]byte, conns int, d time.Duration, sc *scrapers) (result, float64) {
	cw := &cpuWindow{pid: pid, sc: sc}
	r := load{addr: addr, conns: conns, warmup: time.Second, duration: d, request: cycle(reqs, conns), want: 200, onStart: cw.start, onEnd: cw.end}.run(ctx)
	return r, cw.perRequest(r.Requests)
}

// runHeld is the -only held mode: the concurrency test alone, on a fresh
// authproxy, its caches filled with the warm users first unless cold; the
// outcome is printed to w. No report file.
func (h *harness) runHeld(ctx context.Context, w io.Writer, cold bool) error {
	if err := h.startSynthetic(ctx); err != nil {
		return err
	}
	warm, err := h.minter.mintAll(h.warmUsers, len(h.warmUsers))
	if err != nil {
		return err
	}
	reqs := render("bench", benchURI, warm)
	if !cold {
		h.fillOnce(ctx, h.proxyAddr, reqs)
	}
	hr := h.holdConns(ctx, reqs)
	fmt.Fprintf(w, "held %d/%d connections for %s (caches cold: %v): %d requests, %d errors, p50 %v p99 %v max %v, RSS idle %.1f MiB, at %d conns %.1f MiB\n",
		hr.established, hr.target, hr.hold, cold, hr.requests, hr.errors, hr.p50, hr.p99, hr.max, float64(hr.rssIdleKB)/1024, hr.target, float64(hr.rssKB)/1024)
	fmt.Fprintf(w, "  first request of each connection: p99 %v max %v; second half of the hold: %d requests, p50 %v p99 %v max %v\n",
		hr.firstP99, hr.firstMax, hr.lateN, hr.lateP50, hr.lateP99, hr.lateMax)
	for _, k := range hr.kinds {
		fmt.Fprintf(w, "  %6d × %s\n", k.n, k.kind)
	}
	for _, c := range hr.proxy {
		fmt.Fprintf(w, "  proxy: %s\n", c)
	}
	return nil
}
