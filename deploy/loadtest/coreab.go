package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// coreAB compares two coreapi binaries on the full stack: A is the one
// built from this tree, B the binary at -coreapi-b (e.g. built from an
// earlier commit). Each runs on the same database behind its own
// authproxy; rounds alternate A and B (ABBA order, so drift in what else
// the machine runs hits both) over the full-stack read rows (the member
// list also with its total), and each
// row reports throughput and the CPU per request of coreapi, of the
// PostgreSQL backends serving it (found by application_name) and of its
// proxy, from /proc over the measured window.
type coreAB struct {
	name        string // "A" or "B"
	core, proxy *proc
	proxyAddr   string
	appName     string
}

// abOpenLoopConns is how many connections per -conns an -ab-rate row sends
// on: free ones to send a due request on while answers are slow.
const abOpenLoopConns = 4

type abSample struct {
	rps                  float64
	p50, p99             time.Duration
	core, pg, proxy, all float64 // CPU µs per request
	errors               int64
	firstErr             string
}

func (h *harness) runCoreAB(ctx context.Context, out io.Writer) error {
	s, err := h.setupStack(ctx)
	if err != nil {
		return err
	}
	a := &coreAB{name: "A", core: s.core, proxy: s.proxy, proxyAddr: s.proxyAddr, appName: coreAppName}
	b := &coreAB{name: "B", appName: "coreapi-b"}
	var coreB string
	if b.core, coreB, _, err = h.startCore(ctx, "coreapi-b", h.o.coreB, b.appName); err != nil {
		return err
	}
	if b.proxy, b.proxyAddr, _, err = h.startStackProxy(ctx, "authproxy-b", coreB); err != nil {
		return err
	}
	tokens, err := s.minter.mintAll(s.users, len(s.users))
	if err != nil {
		return err
	}
	c, conns := h.o.conns, h.o.conns
	if h.o.abTogether {
		conns = max(c/2, 1)
	}
	if h.o.abRate > 0 {
		c *= abOpenLoopConns // the open loop's connections (measureAB)
	}
	rows := []struct {
		name string
		req  func(w, i int) []byte
	}{
		{fmt.Sprintf("GET /users/me (%d users)", len(s.users)), cycle(render("stack", "/api/v1/users/me", tokens), c)}, // c ≥ conns: workers index by w
		{"GET /users?limit=50", cycle([][]byte{rawGET("stack", "/api/v1/users?limit=50", s.owner.token)}, c)},
		{"GET /users?limit=50&include_total=true", cycle([][]byte{rawGET("stack", "/api/v1/users?limit=50&include_total=true", s.owner.token)}, c)},
	}
	res := make([][2][]abSample, len(rows))
	for round := 0; round < h.o.abRounds && ctx.Err() == nil; round++ {
		order := []*coreAB{a, b}
		if round%2 == 1 {
			order = []*coreAB{b, a}
		}
		for ri, r := range rows {
			var smps [2]abSample
			var errs [2]error
			if h.o.abTogether {
				// Both at once, half the connections each: whatever else the
				// machine does in this window, it does to both.
				var wg sync.WaitGroup
				for k, t := range []*coreAB{a, b} {
					wg.Go(func() { smps[k], errs[k] = h.measureAB(ctx, s, t, conns, r.req) })
				}
				wg.Wait()
			} else {
				for _, t := range order {
					k := 0
					if t == b {
						k = 1
					}
					smps[k], errs[k] = h.measureAB(ctx, s, t, conns, r.req)
				}
			}
			for k, t := range []*coreAB{a, b} {
				if errs[k] != nil {
					return errs[k]
				}
				smp := smps[k]
				res[ri][k] = append(res[ri][k], smp)
				h.logf("round %d %-28s %s: %6.0f req/s, p50 %s, p99 %s, CPU µs/req coreapi %.1f, PostgreSQL %.1f, authproxy %.1f, errors %d %s",
					round+1, r.name, t.name, smp.rps, ms(smp.p50), ms(smp.p99), smp.core, smp.pg, smp.proxy, smp.errors, smp.firstErr)
			}
		}
	}
	how := fmt.Sprintf("%d rounds (ABBA), %d conns", h.o.abRounds, conns)
	if h.o.abTogether {
		how = fmt.Sprintf("%d rounds, A and B loaded at the same time, %d conns each", h.o.abRounds, conns)
	}
	if h.o.abRate > 0 {
		how += fmt.Sprintf(", open loop at %.0f req/s on %d connections (latency from when each request was due)", h.o.abRate, conns*abOpenLoopConns)
	}
	fmt.Fprintf(out, "\nA: coreapi built from this tree; B: %s. %s, %s measured per row; medians.\n\n",
		h.o.coreB, how, h.o.duration)
	fmt.Fprintln(out, "| row | build | req/s | p50 | p99 | coreapi CPU µs/req | PostgreSQL CPU µs/req | authproxy CPU µs/req | errors |")
	fmt.Fprintln(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for ri, r := range rows {
		for k, name := range []string{"A", "B"} {
			ss := res[ri][k]
			med := func(f func(abSample) float64) float64 {
				if len(ss) == 0 {
					return 0
				}
				v := make([]float64, len(ss))
				for i := range ss {
					v[i] = f(ss[i])
				}
				return median(v)
			}
			var errs int64
			for _, x := range ss {
				errs += x.errors
			}
			fmt.Fprintf(out, "| %s | %s | %.0f | %s | %s | %.1f | %.1f | %.1f | %d |\n", r.name, name,
				med(func(x abSample) float64 { return x.rps }),
				ms(time.Duration(med(func(x abSample) float64 { return float64(x.p50) }))),
				ms(time.Duration(med(func(x abSample) float64 { return float64(x.p99) }))),
				med(func(x abSample) float64 { return x.core }),
				med(func(x abSample) float64 { return x.pg }), med(func(x abSample) float64 { return x.proxy }), errs)
		}
	}
	fmt.Fprintln(out, "\nMedian of the rounds' A ÷ B (each round's pair measured side by side):")
	for ri, r := range rows {
		ratio := func(f func(abSample) float64) float64 {
			var v []float64
			for i := range min(len(res[ri][0]), len(res[ri][1])) {
				if d := f(res[ri][1][i]); d > 0 {
					v = append(v, f(res[ri][0][i])/d)
				}
			}
			if len(v) == 0 {
				return 0
			}
			return median(v)
		}
		diff := func(f func(abSample) time.Duration) time.Duration {
			var v []float64
			for i := range min(len(res[ri][0]), len(res[ri][1])) {
				v = append(v, float64(f(res[ri][0][i])-f(res[ri][1][i])))
			}
			if len(v) == 0 {
				return 0
			}
			return time.Duration(median(v))
		}
		fmt.Fprintf(out, "- %s: req/s %.3f, coreapi CPU/req %.3f, PostgreSQL CPU/req %.3f, authproxy CPU/req %.3f; A − B: p50 %s, p99 %s\n", r.name,
			ratio(func(x abSample) float64 { return x.rps }), ratio(func(x abSample) float64 { return x.core }),
			ratio(func(x abSample) float64 { return x.pg }), ratio(func(x abSample) float64 { return x.proxy }),
			ms(diff(func(x abSample) time.Duration { return x.p50 })), ms(diff(func(x abSample) time.Duration { return x.p99 })))
	}
	fmt.Fprintln(out, "\nPer round (coreapi / PostgreSQL CPU µs per request):")
	for ri, r := range rows {
		for k, name := range []string{"A", "B"} {
			fmt.Fprintf(out, "- %s %s:", r.name, name)
			for _, x := range res[ri][k] {
				fmt.Fprintf(out, " %.0f req/s %.1f/%.1f;", x.rps, x.core, x.pg)
			}
			fmt.Fprintln(out)
		}
	}
	return nil
}

// measureAB runs one row against t and reads the CPU its processes used
// over the measured window.
func (h *harness) measureAB(ctx context.Context, s *stack, t *coreAB, conns int, req func(w, i int) []byte) (abSample, error) {
	var coreBefore, coreAfter, proxyBefore, proxyAfter time.Duration
	var pgBefore, pgAfter map[int]time.Duration
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	start := func() {
		var err error
		pgBefore, err = backendCPU(ctx, s, t.appName)
		note(err)
		coreBefore, err = procCPU(t.core.pid())
		note(err)
		proxyBefore, err = procCPU(t.proxy.pid())
		note(err)
	}
	end := func() {
		var err error
		coreAfter, err = procCPU(t.core.pid())
		note(err)
		proxyAfter, err = procCPU(t.proxy.pid())
		note(err)
		pgAfter, err = backendCPU(ctx, s, t.appName)
		note(err)
	}
	l := load{addr: t.proxyAddr, conns: conns, warmup: h.o.warmup, duration: h.o.duration, request: req, want: 200, onStart: start, onEnd: end}
	if h.o.abRate > 0 { // open loop: free connections to send on, even when answers are slow
		l.rate, l.conns = h.o.abRate, conns*abOpenLoopConns
	}
	r := l.run(ctx)
	if len(errs) > 0 {
		return abSample{}, errs[0]
	}
	if r.Requests == 0 {
		return abSample{}, fmt.Errorf("%s: no requests answered (%s)", t.name, r.FirstErr)
	}
	var pg time.Duration
	for pid, after := range pgAfter {
		pg += after - pgBefore[pid] // a backend opened during the window counts whole
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(r.Requests) }
	x := abSample{rps: r.RPS, p50: r.P50, p99: r.P99, core: per(coreAfter - coreBefore), pg: per(pg), proxy: per(proxyAfter - proxyBefore), errors: r.Errors, firstErr: r.FirstErr}
	x.all = x.core + x.pg + x.proxy
	return x, nil
}

// backendCPU is the CPU used so far by each PostgreSQL backend of the
// stack's database whose application_name is appName.
func backendCPU(ctx context.Context, s *stack, appName string) (map[int]time.Duration, error) {
	rows, err := s.pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`, appName)
	if err != nil {
		return nil, fmt.Errorf("backends of %s: %w", appName, err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("backends of %s: %w", appName, err)
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no PostgreSQL backends named %q (is the server on another machine?)", appName)
	}
	out := make(map[int]time.Duration, len(pids))
	for _, p := range pids {
		if d, err := procCPU(int(p)); err == nil { // else the backend ended meanwhile
			out[int(p)] = d
		}
	}
	return out, nil
}
