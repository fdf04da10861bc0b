package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/valyala/fasthttp"
)

// bareTokensName is the callgrind row of the bare proxy sent authproxy's
// warm requests, bearer token included.
const bareTokensName = "bare Fiber proxy, authproxy's requests (bearer token forwarded as it is)"

// publicRouteName is the callgrind row of authproxy sent the bare proxy's
// requests on a public route (publicURI): its request pipeline (routing,
// header stripping, the forwarded headers it adds, metrics, access log)
// without a token, the part of the difference no auth work explains.
const publicRouteName = "authproxy, public route (no token)"

// oauth2ProxyModule is the peer measured in JWT bearer mode, built from
// the Go module proxy.
const oauth2ProxyModule = "github.com/oauth2-proxy/oauth2-proxy/v7@v7.15.6"

// instrRow is the callgrind count of one proxy process over a fixed number
// of warm requests, less a window of the same length without requests.
type instrRow struct {
	name          string
	requests      int
	perRequest    float64 // instructions per request; <0: not measured
	baselinePerRq float64 // the idle window's instructions ÷ requests (subtracted)
	// Misses per request of callgrind's simulated caches (cacheSimArgs),
	// less the idle window's: first-level instruction and data caches,
	// and the last level, sized as one core's L2 (code and data). They
	// count the lines a request touches that the previous requests'
	// work had evicted: the code and data footprint that a CPU shared
	// with other processes pays for in stalls, which instruction counts
	// do not show.
	i1Miss, d1Miss, llMiss float64
	// Of perRequest, the instructions of the SHA-256 block functions
	// (shaBlockIr): AVX2 code under valgrind, which lacks the CPU's SHA
	// extensions.
	shaBlocks float64
	// Of perRequest, the instructions of the runtime's monitor thread
	// (sysmonIr), which follow wall time rather than requests: 0 for a
	// binary without symbols (the bare proxy, built by go run).
	sysmon float64
	note   string // why not measured
}

// cacheSimArgs make callgrind simulate one core of a current server CPU:
// 32 KiB 8-way L1i and L1d and a 1 MiB 8-way L2 with 64-byte lines (AMD
// Zen 4's; Intel's current cores have a 48 KiB L1d and a 2 MiB L2), the
// simulation's last level standing for the L2. The counts are a fixed
// yardstick of a process's footprint, the same on any host, not this
// machine's misses.
var cacheSimArgs = []string{"--cache-sim=yes", "--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,8,64"}

// The simulated caches' miss events of a callgrind dump (cacheSimArgs):
// instruction fetches, data reads and writes, at the first and last level.
var (
	firstLevelI  = []string{"I1mr"}
	firstLevelD  = []string{"D1mr", "D1mw"}
	lastLevelAll = []string{"ILmr", "DLmr", "DLmw"}
)

// openLoopRow is one fixed-rate (open-loop) run.
type openLoopRow struct {
	name          string
	rate          float64
	requests      uint64 // served
	failed        uint64
	success       float64
	p50, p99, max time.Duration
	// sliceP99 is each slice's own p99, in the row's order of slices
	// (openLoopPairs pairs them with the other row's); -1 for a slice
	// with no answer.
	sliceP99 []time.Duration
	use      usage // CPU of each process and CPU over the measured window
	// misses are the token verifications and projection fetches made in
	// the row's windows (-1: not read in a slice): a row that made any was
	// not warm, and its round is left out of the medians.
	misses float64
	note   string
}

// tokenSizes are the lengths of one access token signed each way, same claims.
type tokenSizes struct{ eddsa, rs256 int }

// fillOnce sends every request of reqs once (64 connections), in rounds
// until all were sent, however slow the proxy is: a row measured after it
// sees only tokens the proxy has verified.
func (h *harness) fillOnce(ctx context.Context, addr string, reqs [][]byte) {
	var next atomic.Int64
	n := int64(len(reqs))
	req := func(w, i int) []byte {
		k := next.Add(1) - 1
		return reqs[k%n]
	}
	for next.Load() < n && ctx.Err() == nil {
		load{addr: addr, conns: h.o.conns, duration: 5 * time.Second, request: req, want: 200}.run(ctx)
	}
}

// measureTokenSizes signs the first warm user's claims with an RSA 2048
// key (RS256) beside the harness's EdDSA token.
func (h *harness) measureTokenSizes(eddsaToken string) tokenSizes {
	ts := tokenSizes{eddsa: len(eddsaToken), rs256: -1}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return ts
	}
	k, err := jwk.FromRaw(priv)
	if err != nil {
		return ts
	}
	_ = k.Set(jwk.KeyIDKey, "bench-rs256-"+randHex(4))
	rs := &minter{key: k, issuer: h.minter.issuer, audience: h.minter.audience, ttl: h.minter.ttl, alg: jwa.RS256}
	u := h.warmUsers[0]
	if t, err := rs.mint(u.id, u.tenant, u.session, 0); err == nil {
		ts.rs256 = len(t)
	}
	return ts
}

// openLoopSlicesPerRow is the number of slices each open-loop row is
// measured in. The two proxies take turns slice by slice (bare, authproxy,
// authproxy, bare, ...), so that the host's slow and fast stretches,
// which move a p99 by milliseconds here, fall on both rows alike; each
// row pools its slices' latencies.
const openLoopSlicesPerRow = 4

// openLoopOrder is which target (0: bare, 1: authproxy) runs at step k of
// round's sequence of 2·openLoopSlicesPerRow slices: pairs in ABBA order, the
// first pair's order alternating from round to round.
func openLoopOrder(round, k int) int {
	return (k/2+round)%2 ^ k%2
}

// openLoopSlices measures one round's two rows (0: bare, 1: authproxy) in
// slices, in openLoopOrder: slice(i) places target i and measures one
// slice of its row. A slice that cannot be placed ends the round: the rows are then not
// comparable (one would hold slices placed otherwise), so failed says why
// and no row is kept. A cancelled ctx ends it too, with the slices so far.
func openLoopSlices(ctx context.Context, round int, slice func(i int) (openLoopPart, error)) (parts [2][]openLoopPart, failed string) {
	for k := 0; k < 2*openLoopSlicesPerRow && ctx.Err() == nil; k++ {
		i := openLoopOrder(round, k)
		p, err := slice(i)
		if err != nil {
			return [2][]openLoopPart{}, err.Error()
		}
		parts[i] = append(parts[i], p)
	}
	return parts, ""
}

// openLoopSlice sends reqs (cycled) at a fixed rate, each due on schedule
// whether or not earlier ones were answered (load.rate), for one slice of
// a row, keeping every latency; probe reads the CPU each process and CPU
// used over the measured window. The harness's raw-connection generator
// costs a fraction of what an HTTP client library does per request, so
// it keeps the schedule on the one CPU it is given (openLoops).
//
// With sc (authproxy's metrics), the slice also counts the token
// verifications and projection fetches authproxy made in its measured
// window (the scrapes outside the CPU window): a warm row makes none.
func (h *harness) openLoopSlice(ctx context.Context, addr string, rate float64, reqs [][]byte, probe *usageProbe, sc *scrapers) openLoopPart {
	c := h.o.conns * 4 // free connections to send on, even when answers are slow
	warmup, d := openLoopSliceTimes(h.o.warmup, h.o.duration)
	res := load{addr: addr, conns: c, warmup: warmup, duration: d, request: cycle(reqs, c), want: 200, rate: rate, keep: true,
		onStart: func() { sc.start(); probe.start() }, onEnd: func() { probe.end(); sc.end() }}.run(ctx)
	part := openLoopPart{res: res, use: probe.got}
	if sc != nil {
		part.misses = coldWork(sc.before[0], sc.after[0])
	}
	return part
}

// coldWork is the token verifications and projection fetches authproxy
// counted between two scrapes of its metrics (-1 when either counter is
// missing): what a request that is not warm costs.
func coldWork(before, after sample) float64 {
	v, f := after.find("verif", "total"), after.find("projection", "fetch", "total")
	if v == "" || f == "" {
		return -1
	}
	return delta(before, after, v) + delta(before, after, f)
}

// openLoopSliceTimes is one slice's warm-up and measured window: the row's
// measured time split over the slices, and half the row's warm-up (at
// least 1 s: a proxy just pinned to its CPU takes up to a second to set
// GOMAXPROCS to it).
func openLoopSliceTimes(warmup, duration time.Duration) (time.Duration, time.Duration) {
	return max(warmup/2, time.Second), max(duration/openLoopSlicesPerRow, 500*time.Millisecond)
}

// openLoopPart is what one slice of an open-loop row measured.
type openLoopPart struct {
	res result
	use usage
	// misses are authproxy's token verifications and projection fetches
	// in the slice's window (coldWork; -1: not read; 0 also for a slice
	// of the bare proxy, which has none).
	misses float64
}

// pooledOpenLoopRow makes one proxy's open-loop row from its slices: the
// latency percentiles of every slice's served requests together, the
// requests served and failed summed (success: the served share of all
// that were due), the first error kept, and each CPU figure the mean
// of the slices' (all of equal length), unread (-1) if any slice's is.
func pooledOpenLoopRow(name string, rate float64, parts []openLoopPart) openLoopRow {
	r := openLoopRow{name: name, rate: rate, use: usage{-1, -1, -1, -1, -1}}
	if len(parts) == 0 {
		r.note = "not measured"
		return r
	}
	var lat []uint32
	var requests, errs int64
	var use [5]float64
	for _, p := range parts {
		if p.misses < 0 || r.misses < 0 {
			r.misses = -1
		} else {
			r.misses += p.misses
		}
		p99 := time.Duration(-1)
		if len(p.res.Latencies) > 0 {
			_, p99, _ = percentiles(p.res.Latencies)
		}
		r.sliceP99 = append(r.sliceP99, p99)
		lat = append(lat, p.res.Latencies...)
		requests += p.res.Requests
		errs += p.res.Errors
		if r.note == "" && p.res.FirstErr != "" {
			r.note = "first error: " + p.res.FirstErr
		}
		for k, v := range []float64{p.use.generator, p.use.upstream, p.use.proxy, p.use.generatorCPUs, p.use.proxyCPUs} {
			if v < 0 || use[k] < 0 {
				use[k] = -1
				continue
			}
			use[k] += v / float64(len(parts))
		}
	}
	r.requests, r.failed = uint64(requests), uint64(errs)
	if requests+errs > 0 {
		r.success = float64(requests) / float64(requests+errs) // served of all due
	}
	r.p50, r.p99, r.max = percentiles(lat)
	r.use = usage{use[0], use[1], use[2], use[3], use[4]}
	if r.misses > 0 {
		note := fmt.Sprintf("not warm: %.0f token verifications and projection fetches in its measured windows", r.misses)
		if r.note != "" {
			note += "; " + r.note
		}
		r.note = note
	}
	return r
}

// oauth2Proxy builds (or finds, OAUTH2_PROXY_BIN) oauth2-proxy, starts it in
// JWT bearer mode in front of the synthetic upstream, verifying the
// harness's tokens against the upstream's JWKS, and measures it with the
// warm tokens: its main row, then rounds runs long, alternating with
// authproxy warm (peerRounds). A row that cannot be measured says why.
func (h *harness) oauth2Proxy(ctx context.Context, warmReqs [][]byte, rounds int) (row, []peerRound) {
	name := fmt.Sprintf("oauth2-proxy v7.15.6, JWT bearer (%d users)", len(h.warmUsers))
	fail := func(why string) (row, []peerRound) {
		h.logf("%s: %s", name, why)
		return row{name: name, conns: h.o.conns, note: "not measured: " + why}, nil
	}
	bin := os.Getenv("OAUTH2_PROXY_BIN")
	if bin == "" {
		bin = filepath.Join(h.bin, "oauth2-proxy")
		h.logf("building %s", oauth2ProxyModule)
		cmd := exec.CommandContext(ctx, "go", "install", oauth2ProxyModule)
		cmd.Env = append(os.Environ(), "GOBIN="+h.bin, "GOFLAGS=-mod=mod")
		cmd.Dir = h.work
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail(fmt.Sprintf("go install %s failed (%v): %s", oauth2ProxyModule, err, truncate(out, 300)))
		}
	}
	addr := freeAddr()
	secret := randHex(16) // 32 bytes: an AES-256 cookie key
	args := []string{
		"--http-address=" + addr,
		"--upstream=http://" + h.upstreamAddr + "/",
		"--provider=oidc",
		"--oidc-issuer-url=" + issuer,
		"--skip-oidc-discovery",
		"--oidc-jwks-url=http://" + h.upstreamAddr + "/.well-known/jwks.json",
		"--login-url=" + issuer + "/login",
		"--redeem-url=" + issuer + "/token",
		"--client-id=" + audience,
		"--client-secret=unused",
		"--cookie-secret=" + secret,
		"--cookie-secure=false",
		"--email-domain=*",
		"--oidc-email-claim=sub",
		"--oidc-enabled-signing-alg=EdDSA",
		"--insecure-oidc-allow-unverified-email",
		"--skip-jwt-bearer-tokens",
		"--bearer-token-login-fallback=false",
		"--request-logging=false",
		"--auth-logging=false",
		"--standard-logging=false",
	}
	p, err := h.start("oauth2-proxy", nil, bin, args...)
	if err != nil {
		return fail(err.Error())
	}
	defer p.stop()
	if err := waitHTTP(ctx, "http://"+addr+"/ping", 30*time.Second); err != nil {
		return fail(fmt.Sprintf("%v (log: %s)", err, p.logPath))
	}
	// One request first: a refusal here is a configuration problem, not load.
	status, body, err := fasthttp.GetTimeout(nil, "http://"+addr+benchURI, 5*time.Second)
	if err == nil && status == 200 {
		return fail("answered 200 without a token")
	}
	if st := firstStatus(addr, warmReqs[0]); st != 200 {
		return fail(fmt.Sprintf("a warm token was answered %d (without a token: %d %s; log: %s)", st, status, truncate(body, 100), p.logPath))
	}
	main := h.measureProc(ctx, name, addr, h.o.conns, cycle(warmReqs, h.o.conns), nil, p)
	return main, h.peerRounds(ctx, addr, p, warmReqs, rounds)
}

// oauth2Only runs oauth2-proxy's row and rounds alternating runs of it
// with authproxy warm, and prints their figures (-only oauth2).
func (h *harness) oauth2Only(ctx context.Context, rounds int, out io.Writer) error {
	_, warmReqs, err := h.startWarm(ctx)
	if err != nil {
		return err
	}
	o2, peer := h.oauth2Proxy(ctx, warmReqs, rounds)
	if o2.note != "" {
		return fmt.Errorf("oauth2-proxy: %s", o2.note)
	}
	r := &report{peer: peer}
	pm := r.peerMedians()
	fmt.Fprintf(out, "oauth2-proxy main row: %.0f req/s, %.1f µs CPU/req\n", o2.res.RPS, o2.cpu)
	fmt.Fprintf(out, "median of %d alternating rounds: authproxy warm ÷ oauth2-proxy throughput %.1f× (rounds from %.1f× to %.1f×), CPU per request %.1f× (%.0f µs ÷ %.1f µs); failed requests %d\n",
		pm.n, pm.ratio, pm.lo, pm.hi, pm.cpu, pm.peerCPU, pm.warmCPU, pm.failed)
	return ctx.Err()
}

// peerRound is one round of peerRounds: oauth2-proxy and authproxy warm,
// one run each, back to back.
type peerRound struct {
	peer, warm       result
	peerCPU, warmCPU float64 // each proxy process's CPU per request (µs; -1: not read)
	warmFirst        bool
	// warmMisses are the token verifications and projection fetches
	// authproxy made in its run's window (coldWork; -1: not read).
	warmMisses float64
}

// peerRounds measures oauth2-proxy (at addr, process p) and authproxy warm
// in alternating runs of the paired rounds' length, the order alternating
// from round to round, as pairedRounds does for the bare proxy: a single
// run of each, seconds apart, moves with whatever else the machine does
// meanwhile, and the ratio of two such runs with it.
func (h *harness) peerRounds(ctx context.Context, addr string, p *proc, warmReqs [][]byte, rounds int) []peerRound {
	c := h.o.conns
	d := pairedLength(h.o.duration)
	run := func(addr string, p *proc, sc *scrapers) (result, float64) {
		cw := &cpuWindow{pid: p.pid(), sc: sc}
		r := load{addr: addr, conns: c, warmup: pairedWarmup, duration: d, request: cycle(warmReqs, c), want: 200, onStart: cw.start, onEnd: cw.end}.run(ctx)
		return r, cw.perRequest(r.Requests)
	}
	out := make([]peerRound, 0, rounds)
	for i := 0; i < rounds && ctx.Err() == nil; i++ {
		pr := peerRound{warmFirst: warmFirst(i)}
		for _, warm := range []bool{pr.warmFirst, !pr.warmFirst} {
			if warm {
				sc := &scrapers{proxy: "http://" + h.proxyAdmin + "/metrics"}
				pr.warm, pr.warmCPU = run(h.proxyAddr, h.proxy, sc)
				pr.warmMisses = coldWork(sc.before[0], sc.after[0])
			} else {
				pr.peer, pr.peerCPU = run(addr, p, nil)
			}
		}
		h.logf("oauth2-proxy round %d: oauth2-proxy %.0f req/s %.1f µs CPU/req, authproxy warm %.0f req/s %.1f µs CPU/req (token verifications and projection fetches %.0f), ratio %.1f×",
			i+1, pr.peer.RPS, pr.peerCPU, pr.warm.RPS, pr.warmCPU, pr.warmMisses, pr.warm.RPS/pr.peer.RPS)
		out = append(out, pr)
	}
	return out
}

// firstStatus sends one raw request and returns the status (0 on error).
func firstStatus(addr string, raw []byte) int {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(raw); err != nil {
		return 0
	}
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		return 0
	}
	return resp.StatusCode()
}

// callgrindRows counts the instructions each proxy process executes per
// warm request: the bare proxy, an authproxy configured like the main
// one, and the bare proxy sent authproxy's requests (bareTokensName),
// each started under callgrind, warmed, then n requests sent one
// after another on one connection between a zeroing and a dump of the
// counters; a window of the same length without requests is counted the
// same way and subtracted (timers, GC, the NATS client). Counts do not
// depend on what else the machine runs.
func (h *harness) callgrindRows(ctx context.Context, noAuth, warmReqs [][]byte) []instrRow {
	n := 2000
	if h.o.duration < 5*time.Second { // -quick
		n = 300
	}
	// The third row is the bare proxy sent authproxy's requests, bearer
	// token included (forwarded as it is): what the token's bytes cost a
	// proxy that does nothing with them, as in the paired rounds.
	names := []string{"bare Fiber proxy", fmt.Sprintf("authproxy warm (%d users)", len(h.warmUsers)), bareTokensName, publicRouteName}
	missing := func(note string) []instrRow {
		out := make([]instrRow, len(names))
		for i, n := range names {
			out[i] = instrRow{name: n, perRequest: -1, note: note}
		}
		return out
	}
	if _, err := exec.LookPath("valgrind"); err != nil {
		return missing("not measured: valgrind missing")
	}
	if _, err := exec.LookPath("callgrind_control"); err != nil {
		return missing("not measured: callgrind_control missing")
	}
	self, err := os.Executable()
	if err != nil {
		return nil
	}
	bareAddr, bareTokAddr, proxyAddr, proxyAdmin := freeAddr(), freeAddr(), freeAddr(), freeAddr()
	pubAddr, pubAdmin := freeAddr(), freeAddr()
	targets := []struct {
		name, addr, ready, gc string
		env                   []string
		bin                   string
		args                  []string
		reqs                  [][]byte
	}{
		{names[0], bareAddr, "http://" + bareAddr + benchURI, "", nil, self, []string{"-serve", "bare", "-addr", bareAddr, "-upstream", h.upstreamAddr}, noAuth},
		{names[2], bareTokAddr, "http://" + bareTokAddr + benchURI, "", nil, self, []string{"-serve", "bare", "-addr", bareTokAddr, "-upstream", h.upstreamAddr}, warmReqs},
		// A projection fetch's timeout bounds the proxy's own wall time,
		// which valgrind stretches some fifty times: the warm-up's fetches
		// get longer (a value only: the warm requests, counted, fetch
		// nothing).
		{names[1], proxyAddr, "http://" + proxyAdmin + "/readyz", "http://" + proxyAdmin + "/debug/pprof/heap?gc=1", append(append(h.proxyEnv(proxyAddr, proxyAdmin, h.upstreamAddr), h.appEnv...), "PROJECTION_TIMEOUT=60s"),
			filepath.Join(h.bin, "authproxy"), nil, warmReqs},
		{names[3], pubAddr, "http://" + pubAdmin + "/readyz", "http://" + pubAdmin + "/debug/pprof/heap?gc=1", append(append(h.proxyEnv(pubAddr, pubAdmin, h.upstreamAddr), h.appEnv...), "PROJECTION_TIMEOUT=60s"),
			filepath.Join(h.bin, "authproxy"), nil, [][]byte{rawGET("bench", publicURI, "")}},
	}
	// In names' order (the report's: bare, authproxy, bare with the
	// tokens), whatever order they run in.
	out := make([]instrRow, len(names))
	for _, t := range targets {
		r := instrRow{name: t.name, requests: n, perRequest: -1}
		per, base, err := h.callgrindOne(ctx, t.name, t.addr, t.ready, t.gc, t.env, t.bin, t.args, t.reqs, n)
		if err != nil && ctx.Err() == nil {
			// Once more, in a new process: under valgrind a proxy runs
			// some fifty times slower, and its first dial of the upstream
			// can outlast the dial timeout (a 503 in the warm-up); or its
			// idle window stayed busy (busyIdle).
			h.logf("callgrind %s: %v; once more in a new process", t.name, err)
			per, base, err = h.callgrindOne(ctx, t.name, t.addr, t.ready, t.gc, t.env, t.bin, t.args, t.reqs, n)
		}
		if err != nil {
			r.note = "not measured: " + err.Error()
		} else {
			r.perRequest, r.baselinePerRq, r.shaBlocks, r.sysmon = per["Ir"], base["Ir"], per[shaBlockIr], per[sysmonIr]
			r.i1Miss, r.d1Miss, r.llMiss = sum(per, firstLevelI), sum(per, firstLevelD), sum(per, lastLevelAll)
		}
		h.logf("callgrind %-40s %.0f instructions/request (idle window %.0f subtracted; sysmon %.0f), simulated misses/request: L1i %.0f, L1d %.0f, L2 %.1f %s",
			t.name, r.perRequest, r.baselinePerRq, r.sysmon, r.i1Miss, r.d1Miss, r.llMiss, r.note)
		out[slices.Index(names, t.name)] = r
	}
	return out
}

// valgrindGODEBUG is the GODEBUG of a Go process under valgrind: Go's
// asynchronous preemption signals upset callgrind, and valgrind's CPUID
// reports RDTSCP, which it cannot execute (the runtime's cputicks would die
// with SIGILL).
const valgrindGODEBUG = "asyncpreemptoff=1,cpu.rdtscp=off"

// sum adds the events names of totals.
func sum(totals map[string]float64, names []string) float64 {
	var v float64
	for _, n := range names {
		v += totals[n]
	}
	return v
}

// callgrindOne counts one proxy's events (instructions, simulated cache
// misses) per request: per is the requests' window less the idle one,
// base the idle window's, each ÷ n.
func (h *harness) callgrindOne(ctx context.Context, name, addr, ready, gcURL string, env []string, bin string, args []string, reqs [][]byte, n int) (per, base map[string]float64, err error) {
	tag := strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(name)
	outPrefix := filepath.Join(h.work, "callgrind."+tag)
	vargs := append([]string{"--tool=callgrind", "--callgrind-out-file=" + outPrefix + ".%p"}, cacheSimArgs...)
	vargs = append(append(vargs, bin), args...)
	// One P: valgrind runs one thread at a time whatever GOMAXPROCS is,
	// and with two the idle P's spinning for work was counted with the
	// requests. In six runs with two Ps the ratio of the two proxies' counts
	// ranged from 1.93 to 2.05; in three with one, from 1.97 to 1.98.
	p, err := h.start("callgrind-"+tag, append(env, "GODEBUG="+valgrindGODEBUG, "GOMAXPROCS=1"), "valgrind", vargs...)
	if err != nil {
		return nil, nil, err
	}
	defer p.stop()
	if err := waitHTTP(ctx, ready, 180*time.Second); err != nil {
		return nil, nil, err
	}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	var resp fasthttp.Response
	send := func(raw []byte) error {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(raw); err != nil {
			return err
		}
		resp.Reset()
		if err := resp.Read(br); err != nil {
			return err
		}
		if resp.StatusCode() != 200 {
			return fmt.Errorf("status %d: %s", resp.StatusCode(), truncate(resp.Body(), 100))
		}
		return nil
	}
	// Warm-up: every token once (verified and cached), then once more.
	for i := range 2 * len(reqs) {
		if err := send(reqs[i%len(reqs)]); err != nil {
			return nil, nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	pid := strconv.Itoa(p.pid())
	control := func(flag string) error {
		out, err := exec.CommandContext(ctx, "callgrind_control", flag, pid).CombinedOutput()
		if err != nil {
			return fmt.Errorf("callgrind_control %s: %v: %s", flag, err, truncate(out, 200))
		}
		return nil
	}
	window := func(work func() error) (map[string]float64, time.Duration, error) {
		if gcURL != "" { // a collection now rather than inside the window (authproxy's pprof endpoint)
			_, _, _ = fasthttp.GetTimeout(nil, gcURL, 60*time.Second)
		}
		if err := control("-z"); err != nil {
			return nil, 0, err
		}
		t0 := time.Now()
		if err := work(); err != nil {
			return nil, 0, err
		}
		d := time.Since(t0)
		if err := control("-d"); err != nil {
			return nil, 0, err
		}
		v, err := lastDumpTotals(outPrefix + "." + pid)
		return v, d, err
	}
	total, d, err := window(func() error {
		for i := range n {
			if err := send(reqs[i%len(reqs)]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	idleWindow := func() (map[string]float64, error) {
		v, _, err := window(func() error {
			select {
			case <-time.After(d):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		return v, err
	}
	idle, err := idleWindow()
	// An idle window that is not idle (busyIdle) is counted again, twice
	// at most, and the quietest kept.
	for try := 0; try < 2 && err == nil && busyIdle(total, idle); try++ {
		var again map[string]float64
		if again, err = idleWindow(); err == nil && again["Ir"] < idle["Ir"] {
			idle = again
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return perRequest(total, idle, n)
}

// busyIdle reports whether the idle window counted more than a tenth of the
// requests' window's instructions. An idle proxy counts well under 1 % of
// them (timers, the NATS client); under valgrind its scheduler was once
// seen spinning in the idle window, which then counted more instructions
// than the 2,000 requests, and the requests' figure came out negative.
func busyIdle(total, idle map[string]float64) bool {
	return idle["Ir"] > total["Ir"]/10
}

// perRequest is each event of the requests' window less the idle
// window's, and the idle window's, each ÷ n; an error when the idle window
// was busy (busyIdle), whose difference would not be the requests' work.
func perRequest(total, idle map[string]float64, n int) (per, base map[string]float64, err error) {
	if busyIdle(total, idle) {
		return nil, nil, fmt.Errorf("the idle window counted %.0f instructions, against %.0f in the requests' window: background work ran in it", idle["Ir"], total["Ir"])
	}
	per, base = map[string]float64{}, map[string]float64{}
	for e, v := range total {
		per[e], base[e] = (v-idle[e])/float64(n), idle[e]/float64(n)
	}
	return per, base, nil
}

// shaBlockIr is the pseudo-event lastDumpTotals adds: the instructions
// executed inside the SHA-256 block functions themselves (the compression
// of the identity headers' HMAC). Valgrind lacks the CPU's SHA extensions,
// so under it Go runs its AVX2 code, some 2,800 instructions a 64-byte
// block where the CPU's SHA-NI routine runs some 180: the count that the
// report shows apart, so that it does not pass for the proxy's own work.
const shaBlockIr = "Ir:sha256-blocks"

// sysmonIr is the pseudo-event lastDumpTotals adds: the instructions of
// the runtime's monitor thread (runtime.sysmon and all it runs), which
// wakes every 20 µs to 10 ms of wall time, not per request. Under
// valgrind a request takes some fifty times its wall time, more on a
// loaded machine, so the thread's share of a row moves with how fast
// the process ran: shown apart, as the reason two runs of one tree
// differ.
const sysmonIr = "Ir:sysmon"

// sysmonFn is the runtime's monitor function, started on a thread of its
// own (from runtime.mstart1).
const sysmonFn = "runtime.sysmon"

// shaBlockFn is the name prefix of Go's SHA-256 block functions
// (blockAVX2, blockSHANI, blockAMD64, blockGeneric).
const shaBlockFn = "crypto/internal/fips140/sha256.block"

// lastDumpTotals reads the event totals of the newest dump of a callgrind
// output (prefix.1, prefix.2, ...: one file per dump), by event name (Ir,
// and with cacheSimArgs the simulated caches' events), shaBlockIr: the
// instructions the SHA-256 block functions executed themselves (their
// cost lines, not those of their calls), and sysmonIr: the inclusive
// instructions of the calls of runtime.sysmon (0 in a binary without
// symbols).
func lastDumpTotals(prefix string) (map[string]float64, error) {
	files, _ := filepath.Glob(prefix + ".*")
	best, bestN := "", -1
	for _, f := range files {
		if k, err := strconv.Atoi(strings.TrimPrefix(f, prefix+".")); err == nil && k > bestN {
			best, bestN = f, k
		}
	}
	if best == "" {
		return nil, errors.New("no callgrind dump written")
	}
	b, err := os.ReadFile(best)
	if err != nil {
		return nil, err
	}
	var (
		events []string
		out    map[string]float64
		names  = map[string]string{} // "(id)" → name: callgrind's name compression
		inSHA  bool                  // the current fn= is a SHA-256 block function
		call   bool                  // the next cost line is a call's (inclusive): not the fn's own
		sha    float64
		fnName string  // the current fn=, without callgrind's recursion suffix ('2)
		toMon  bool    // the current call is of sysmon from another function
		mon    float64 // sysmonIr
	)
	// base is a function's name without callgrind's recursion suffix.
	base := func(n string) string {
		if i := strings.LastIndexByte(n, '\''); i > 0 {
			return n[:i]
		}
		return n
	}
	name := func(spec string) string {
		id, rest, _ := strings.Cut(spec, " ")
		if !strings.HasPrefix(id, "(") {
			return spec
		}
		if rest != "" {
			names[id] = rest
		}
		return names[id]
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "events: "); ok {
			events = strings.Fields(v)
			continue
		}
		if v, ok := strings.CutPrefix(line, "fn="); ok {
			n := name(v)
			inSHA = strings.HasPrefix(n, shaBlockFn) && n != shaBlockFn // not the dispatching wrapper
			fnName, toMon = base(n), false
			continue
		}
		if v, ok := strings.CutPrefix(line, "cfn="); ok {
			toMon = base(name(v)) == sysmonFn && fnName != sysmonFn
			continue
		}
		if strings.HasPrefix(line, "calls=") {
			call = true
			continue
		}
		if line != "" && (line[0] >= '0' && line[0] <= '9' || line[0] == '+' || line[0] == '-' || line[0] == '*') {
			if call {
				call = false
				if f := strings.Fields(line); toMon && len(f) >= 2 {
					if x, err := strconv.ParseFloat(f[1], 64); err == nil {
						mon += x
					}
				}
			} else if f := strings.Fields(line); inSHA && len(f) >= 2 {
				// Position then events, Ir first (the order of events:).
				if x, err := strconv.ParseFloat(f[1], 64); err == nil {
					sha += x
				}
			}
			continue
		}
		for _, p := range []string{"summary: ", "totals: "} {
			v, ok := strings.CutPrefix(line, p)
			if !ok || out != nil {
				continue
			}
			f := strings.Fields(v)
			if len(events) == 0 || len(f) != len(events) {
				return nil, fmt.Errorf("%s: %d totals for events %q", best, len(f), events)
			}
			out = make(map[string]float64, len(f)+1)
			for i, x := range f {
				if out[events[i]], err = strconv.ParseFloat(x, 64); err != nil {
					return nil, fmt.Errorf("%s: %w", best, err)
				}
			}
		}
	}
	if out == nil {
		return nil, fmt.Errorf("%s: no totals line", best)
	}
	if len(events) == 0 || events[0] != "Ir" {
		return out, nil // no instruction count first: nothing to attribute
	}
	out[shaBlockIr], out[sysmonIr] = sha, mon
	return out, nil
}
