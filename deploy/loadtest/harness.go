package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/tollgate-auth/tollgate/deploy/internal/repo"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// bigCacheEnv sizes a second authproxy's caches for the many-users row:
// what an operator with that many active users would configure.
var bigCacheEnv = []string{"TOKEN_CACHE_SIZE=400000", "PROJECTION_CACHE_SIZE=400000"}

const (
	issuer   = "http://localhost:8080"
	audience = "tollgate"
	benchURI = "/api/v1/bench"
	// publicURI is a public route to the same upstream: authproxy's
	// request pipeline without the token work (the paired rounds' public
	// column).
	publicURI = "/api/v1/open"
)

type harness struct {
	o      options
	out    io.Writer
	root   string
	work   string
	bin    string
	hmac   string
	nats   *server.Server
	procs  []*proc
	fdMax  uint64
	minter *minter

	upstreamAddr, bareAddr   string
	notesAddr, bareNotesAddr string // the example app, and a bare proxy in front of it
	notesKey                 identity.Key
	proxyAddr, proxyAdmin    string
	proxy                    *proc
	bare                     *proc  // the bare proxy
	bare2Addr                string // a second bare proxy, identical: the paired rounds' resolution
	bare2                    *proc
	upstream                 *proc  // the synthetic upstream
	bigAddr, bigAdmin        string // an authproxy with caches sized for the many-users row
	big                      *proc
	stack                    *stack // nil with -skip-stack
	tenant                   string
	warmUsers, manyUsers     []user

	appEnv []string // authproxy's rules file and upstream keys
}

func newHarness(ctx context.Context, o options, out io.Writer) (*harness, error) {
	h := &harness{o: o, out: out}
	var err error
	if h.root, err = repo.Root(); err != nil {
		return nil, err
	}
	if h.fdMax, err = raiseFileLimit(); err != nil {
		return nil, fmt.Errorf("raise file limit: %w", err)
	}
	if h.work, err = os.MkdirTemp("", "tollgate-loadtest-"); err != nil {
		return nil, err
	}
	h.bin = filepath.Join(h.work, "bin")
	h.logf("building binaries into %s", h.bin)
	if err := buildBinaries(ctx, h.root, h.bin); err != nil {
		return nil, err
	}
	h.hmac = randomKey()
	h.nats, err = server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	go h.nats.Start()
	if !h.nats.ReadyForConnections(10 * time.Second) {
		return nil, fmt.Errorf("embedded nats not ready")
	}
	return h, nil
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadtest: "+format+"\n", args...)
}

func (h *harness) close() {
	for i := len(h.procs) - 1; i >= 0; i-- {
		h.procs[i].stop()
	}
	if h.stack != nil {
		h.stack.close()
	}
	if h.nats != nil {
		h.nats.Shutdown()
	}
	if os.Getenv("LOADTEST_KEEP") == "" {
		_ = os.RemoveAll(h.work)
	} else {
		h.logf("kept %s", h.work)
	}
}

func (h *harness) start(name string, env []string, bin string, args ...string) (*proc, error) {
	p, err := startProc(name, h.work, env, bin, args...)
	if err != nil {
		return nil, err
	}
	h.procs = append(h.procs, p)
	return p, nil
}

func (h *harness) proxyEnv(listen, admin, upstream string) []string {
	env := []string{
		"PROXY_LISTEN_ADDR=" + listen,
		"PROXY_ADMIN_ADDR=" + admin,
		"IDENTITY_URL=http://" + upstream,
		"IDENTITY_HMAC_KEY=" + h.hmac,
		"NATS_URL=" + h.nats.ClientURL(),
		"TOKEN_ISSUER=" + issuer,
		"TOKEN_AUDIENCE=" + audience,
		"LOG_LEVEL=warn",
		"PROXY_PPROF=true",
		// The synthetic upstream stands in for coreapi's reads only: no
		// relay writes outbox heartbeats for the proxies to wait for.
		"NATS_HEARTBEAT_TIMEOUT=0",
	}
	if h.o.proxyMemLimit != "" {
		env = append(env, "GOMEMLIMIT="+h.o.proxyMemLimit)
	}
	return env
}

// startSynthetic starts the upstream, the bare proxy and an authproxy in
// front of the upstream (which serves the harness's JWKS and projections).
func (h *harness) startSynthetic(ctx context.Context) error {
	var err error
	if h.minter, err = newMinter(issuer, audience); err != nil {
		return err
	}
	jwks, err := jwksOf(h.minter.key)
	if err != nil {
		return err
	}
	jwksFile := filepath.Join(h.work, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	h.upstreamAddr, h.bareAddr = freeAddr(), freeAddr()
	h.proxyAddr, h.proxyAdmin = freeAddr(), freeAddr()
	if h.upstream, err = h.start("upstream", nil, self, "-serve", "upstream", "-addr", h.upstreamAddr, "-jwks", jwksFile, "-hmac", h.hmac); err != nil {
		return err
	}
	if h.bare, err = h.start("bareproxy", nil, self, "-serve", "bare", "-addr", h.bareAddr, "-upstream", h.upstreamAddr); err != nil {
		return err
	}
	h.bare2Addr = freeAddr()
	if h.bare2, err = h.start("bareproxy2", nil, self, "-serve", "bare", "-addr", h.bare2Addr, "-upstream", h.upstreamAddr); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+h.upstreamAddr+"/.well-known/jwks.json", 20*time.Second); err != nil {
		return err
	}
	// The example notes app, verifying the identity headers with its own
	// key, and a bare proxy in front of it for the baseline. Its replay
	// filter is off: the baseline's requests are signed by the harness once
	// every 2 s and each is sent many times, which the filter would refuse
	// (both notes rows then do the same verification work).
	h.notesAddr, h.bareNotesAddr = freeAddr(), freeAddr()
	notesAdmin := freeAddr()
	keys, err := identity.ParseKeys("app-notes:" + randomKey())
	if err != nil {
		return err
	}
	h.notesKey = keys[0]
	notesKeys := "app-notes:" + base64.StdEncoding.EncodeToString(h.notesKey.Secret)
	if _, err := h.start("notes", []string{"NOTES_LISTEN_ADDR=" + h.notesAddr, "NOTES_ADMIN_ADDR=" + notesAdmin,
		"TOLLGATE_IDENTITY_KEYS=" + notesKeys, "LOG_LEVEL=warn", "NOTES_REPLAY_CACHE_SIZE=off"}, filepath.Join(h.bin, "notes")); err != nil {
		return err
	}
	if _, err := h.start("bareproxy-notes", nil, self, "-serve", "bare", "-addr", h.bareNotesAddr, "-upstream", h.notesAddr); err != nil {
		return err
	}
	// The bench route is an app route: the upstream also stands in for an
	// app, signed with its own key, as in front of any service. /notes is
	// the example app's read route, as in its rules.yaml.
	rulesFile := filepath.Join(h.work, "rules.yaml")
	rules := "upstreams:\n  bench:\n    url: http://" + h.upstreamAddr + "\n    key_id: bench\n" +
		"  notes:\n    url: http://" + h.notesAddr + "\n    key_id: app-notes\n" +
		"routes:\n  - {prefix: " + benchURI + ", methods: [GET], upstream: bench, access: protected}\n" +
		"  - {prefix: " + publicURI + ", methods: [GET], upstream: bench, access: public}\n" +
		"  - {prefix: " + bodyURI + ", methods: [POST], upstream: bench, access: protected}\n" +
		"  - {prefix: /notes, methods: [GET], upstream: notes, access: protected, permissions: [notes:read]}\n"
	if err := os.WriteFile(rulesFile, []byte(rules), 0o600); err != nil {
		return err
	}
	appEnv := []string{"RULES_FILE=" + rulesFile, "UPSTREAM_KEYS=bench:" + randomKey() + "," + notesKeys}
	h.appEnv = appEnv
	if h.proxy, err = h.start("authproxy", append(h.proxyEnv(h.proxyAddr, h.proxyAdmin, h.upstreamAddr), appEnv...), filepath.Join(h.bin, "authproxy")); err != nil {
		return err
	}
	h.bigAddr, h.bigAdmin = freeAddr(), freeAddr()
	bigEnv := append(append(h.proxyEnv(h.bigAddr, h.bigAdmin, h.upstreamAddr), bigCacheEnv...), appEnv...)
	if h.big, err = h.start("authproxy-bigcache", bigEnv, filepath.Join(h.bin, "authproxy")); err != nil {
		return err
	}
	for _, u := range []string{"http://" + h.bareAddr + benchURI, "http://" + h.bare2Addr + benchURI, "http://" + h.proxyAdmin + "/readyz", "http://" + h.bigAdmin + "/readyz", "http://" + notesAdmin + "/readyz"} {
		if err := waitHTTP(ctx, u, 30*time.Second); err != nil {
			return fmt.Errorf("%w (logs in %s)", err, h.work)
		}
	}
	h.tenant = uuid.NewString()
	h.warmUsers, h.manyUsers = h.newUsers(h.o.users), h.newUsers(h.o.manyUsers)
	return nil
}

// newUsers returns n users of the harness's tenant, never seen before.
func (h *harness) newUsers(n int) []user {
	us := make([]user, n)
	for i := range us {
		us[i] = user{id: uuid.NewString(), tenant: h.tenant, session: uuid.NewString()}
	}
	return us
}

// freshWarm returns the requests of as many new users as the warm rows
// have, with authproxy's caches filled with their tokens and projections:
// a run that starts now finds every entry cached for the caches' TTLs
// (TOKEN_CACHE_MAX_TTL, PROJECTION_CACHE_TTL: 5 min, a projection's
// shortened by up to a tenth). The warm users' own entries, cached when
// the first warm row ran, expire some four and a half minutes into the
// run, which the open-loop rounds reach: their authproxy rows would verify
// tokens and fetch projections again. On failure it returns reqs.
func (h *harness) freshWarm(ctx context.Context, reqs [][]byte) [][]byte {
	toks, err := h.minter.mintAll(h.newUsers(len(h.warmUsers)), len(h.warmUsers))
	if err != nil {
		h.logf("fresh warm users: %v; the warm users' requests are used", err)
		return reqs
	}
	fresh := render("bench", benchURI, toks)
	h.fillOnce(ctx, h.proxyAddr, fresh)
	return fresh
}

// cycle returns a request function cycling over pre-rendered requests
// so that over a run every request is used about equally.
func cycle(reqs [][]byte, conns int) func(w, i int) []byte {
	n := len(reqs)
	return func(w, i int) []byte { return reqs[(w+i*conns)%n] }
}

// once returns a request function that hands out every request once; when
// they run out it wraps around and counts the reuses.
func once(reqs [][]byte, reused *atomic.Int64) func(w, i int) []byte {
	var next atomic.Int64
	n := int64(len(reqs))
	return func(w, i int) []byte {
		k := next.Add(1) - 1
		if k >= n {
			reused.Add(1)
		}
		return reqs[k%n]
	}
}

// coldPoolSize is how many one-time tokens the cold row gets: enough for
// its warm-up and measured window at 0.6 of the warm rate measured on the
// same machine just before (a cold request, one signature verification,
// has run at 0.31–0.37 of a warm one), and never fewer than least. A
// pool that still runs out is reported with the row.
func coldPoolSize(warmRPS float64, window time.Duration, least int) int {
	return max(least, int(warmRPS*window.Seconds()*0.6))
}

func render(host, path string, tokens []string) [][]byte {
	out := make([][]byte, len(tokens))
	for i, t := range tokens {
		out[i] = rawGET(host, path, t)
	}
	return out
}

// scrapers lists metrics endpoints to sample at the edges of a row's
// measured window, so that counters exclude warm-up.
type scrapers struct {
	proxy, core   string
	before, after [2]sample
}

func (s *scrapers) start() {
	if s == nil {
		return
	}
	s.before = [2]sample{scrape(s.proxy), scrape(s.core)}
}

func (s *scrapers) end() {
	if s == nil {
		return
	}
	s.after = [2]sample{scrape(s.proxy), scrape(s.core)}
}

func (h *harness) measure(ctx context.Context, name, addr string, conns int, req func(w, i int) []byte) row {
	return h.measureWith(ctx, name, addr, conns, req, nil)
}

func (h *harness) measureWith(ctx context.Context, name, addr string, conns int, req func(w, i int) []byte, sc *scrapers) row {
	return h.measureProc(ctx, name, addr, conns, req, sc, nil)
}

// measureProc is measureWith that also times process p (when not nil):
// the row's cpu is p's utime+stime over the measured window ÷ the
// requests, in µs (0 when it could not be read).
func (h *harness) measureProc(ctx context.Context, name, addr string, conns int, req func(w, i int) []byte, sc *scrapers, p *proc) row {
	h.logf("row %-40s %5d conns ...", name, conns)
	cw := &cpuWindow{sc: sc}
	if p != nil {
		cw.pid = p.pid()
	}
	r := load{addr: addr, conns: conns, warmup: h.o.warmup, duration: h.o.duration, request: req, want: 200, onStart: cw.start, onEnd: cw.end}.run(ctx)
	h.logf("row %-40s %5d conns: %8.0f req/s p50 %v p99 %v errors %d %s", name, conns, r.RPS, r.P50, r.P99, r.Errors, r.FirstErr)
	return row{name: name, conns: conns, res: r, cpu: max(cw.perRequest(r.Requests), 0)}
}

func (h *harness) runAll(ctx context.Context) (*report, error) {
	rep := &report{
		date:    time.Now().UTC().Format("2006-01-02 15:04 MST"),
		machine: fmt.Sprintf("%d cores (GOMAXPROCS %d), %s, %s/%s, %s", runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel(), runtime.GOOS, runtime.GOARCH, runtime.Version()),
		opts:    h.o,
		fdLimit: h.fdMax,
	}
	if h.o.gobench != "" {
		b, err := os.ReadFile(h.o.gobench)
		if err != nil {
			return nil, fmt.Errorf("read -gobench: %w", err)
		}
		var keep []string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "pkg:") || strings.HasPrefix(line, "cpu:") {
				keep = append(keep, line)
			}
		}
		rep.gobench = strings.Join(keep, "\n")
	}
	if h.o.stackOnly {
		if err := h.runStack(ctx, rep); err != nil {
			return nil, fmt.Errorf("full stack: %w", err)
		}
		return rep, nil
	}
	if err := h.startSynthetic(ctx); err != nil {
		return nil, err
	}
	h.logf("minting tokens")
	warmTokens, err := h.minter.mintAll(h.warmUsers, len(h.warmUsers))
	if err != nil {
		return nil, err
	}
	manyTokens, err := h.minter.mintAll(h.manyUsers, len(h.manyUsers))
	if err != nil {
		return nil, err
	}
	noAuth := [][]byte{rawGET("bench", benchURI, "")}
	warmReqs := render("bench", benchURI, warmTokens)
	manyReqs := render("bench", benchURI, manyTokens)
	admin := "http://" + h.proxyAdmin + "/metrics"

	c, hc := h.o.conns, h.o.highConns
	rep.add(h.measure(ctx, "direct fasthttp upstream", h.upstreamAddr, c, cycle(noAuth, c)))
	rep.add(h.measureProc(ctx, "bare Fiber proxy", h.bareAddr, c, cycle(noAuth, c), nil, h.bare))
	sc := &scrapers{proxy: admin}
	w := h.measureProc(ctx, fmt.Sprintf("authproxy warm (%d users)", len(h.warmUsers)), h.proxyAddr, c, cycle(warmReqs, c), sc, h.proxy)
	w.counters = proxyCounters(sc.before[0], sc.after[0], w.res.Requests)
	rep.add(w)
	// The same request with an API key per user instead of a JWT, beside
	// the warm JWT row: a warm key should cost the same.
	kw := h.measureWith(ctx, fmt.Sprintf("%s (%d keys)", apiKeyWarmRow, len(h.warmUsers)), h.proxyAddr, c, cycle(render("bench", benchURI, apiKeys(len(h.warmUsers))), c), sc)
	kw.counters = proxyCounters(sc.before[0], sc.after[0], kw.res.Requests)
	rep.add(kw)

	// Paired rounds on the still fresh proxy, before the cold row's flood
	// of one-time tokens fills its caches: bare and warm alternate, so that
	// drift in what else the machine does hits both; the report quotes the
	// medians.
	rep.paired = h.pairedRounds(ctx, noAuth, warmReqs, pairedRuns)
	rep.together = h.togetherRounds(ctx, noAuth, warmReqs, togetherRuns)

	// Fixed-rate load at half the bare proxy's capacity in the open-loop
	// placement (-placement): the latency each proxy adds when neither it
	// nor its CPU is saturated.
	for i := 0; i < openLoopRounds && ctx.Err() == nil; i++ {
		rows, note := h.openLoops(ctx, noAuth, h.freshWarm(ctx, warmReqs), h.o.placement, i)
		rep.openLoop, rep.openLoopNotes = append(rep.openLoop, rows), append(rep.openLoopNotes, note)
	}
	rep.instr = h.callgrindRows(ctx, noAuth, warmReqs)
	rep.tokens = h.measureTokenSizes(warmTokens[0])
	o2, peer := h.oauth2Proxy(ctx, warmReqs, peerRuns)
	rep.add(o2)
	rep.peer = peer

	// Cold: every request a never-seen token (same users, new jti), as
	// many as this machine's warm rate says the row will send.
	minCold := 150000
	if h.o.duration < 5*time.Second {
		minCold = 30000
	}
	coldN := coldPoolSize(w.res.RPS, h.o.warmup+h.o.duration, minCold)
	h.logf("minting %d one-time tokens for the cold row", coldN)
	coldTokens, err := h.minter.mintAll(h.warmUsers, coldN)
	if err != nil {
		return nil, err
	}
	coldReqs := render("bench", benchURI, coldTokens)
	var reused atomic.Int64
	cold := h.measureWith(ctx, "authproxy cold (every token new)", h.proxyAddr, c, once(coldReqs, &reused), sc)
	cold.counters = proxyCounters(sc.before[0], sc.after[0], cold.res.Requests)
	if n := reused.Load(); n > 0 {
		cold.note = fmt.Sprintf("%d requests reused a token (pool of %d exhausted)", n, len(coldReqs))
	}
	rep.add(cold)

	// The example app behind a bare proxy (requests pre-signed by the
	// harness, as authproxy would sign them: the app verifies the same
	// headers in both rows) and behind authproxy (bearer tokens), one
	// right after the other.
	rep.add(h.measureNotesBare(ctx, c))
	nsc := &scrapers{proxy: admin}
	nw := h.measureWith(ctx, fmt.Sprintf("%s (%d users)", notesWarmRow, len(h.warmUsers)), h.proxyAddr, c, cycle(render("bench", "/notes", warmTokens), c), nsc)
	nw.counters = proxyCounters(nsc.before[0], nsc.after[0], nw.res.Requests)
	rep.add(nw)

	// Trends.
	rep.addTrend(h.measure(ctx, "direct fasthttp upstream", h.upstreamAddr, hc, cycle(noAuth, hc)))
	rep.addTrend(h.measure(ctx, "bare Fiber proxy", h.bareAddr, hc, cycle(noAuth, hc)))
	// Warm as its name says: the warm tokens' entries (TOKEN_CACHE_MAX_TTL,
	// PROJECTION_CACHE_TTL: 5 min) may have expired since the warm rows,
	// and 1,024 connections would then start as a cold start of every user
	// at once, which the proxy sheds (503, docs/operations.md, "Overload").
	h.fillOnce(ctx, h.proxyAddr, warmReqs)
	tw := h.measureWith(ctx, fmt.Sprintf("authproxy warm (%d users)", len(h.warmUsers)), h.proxyAddr, hc, cycle(warmReqs, hc), sc)
	tw.counters = proxyCounters(sc.before[0], sc.after[0], tw.res.Requests)
	rep.addTrend(tw)
	// Many users: one unmeasured pass fills the caches first.
	h.logf("filling caches with %d users", len(manyReqs))
	h.fillOnce(ctx, h.proxyAddr, manyReqs)
	m := h.measureWith(ctx, fmt.Sprintf("authproxy warm (%d users)", len(h.manyUsers)), h.proxyAddr, c, cycle(manyReqs, c), sc)
	m.counters = proxyCounters(sc.before[0], sc.after[0], m.res.Requests)
	m.note = fmt.Sprintf("default settings (CACHE_MEMORY_MB), after the cold row's flood of one-time tokens and one pass over its %d tokens", len(manyReqs))
	rep.addTrend(m)
	// The goal's ratio: the two working sets alternating on this proxy, so
	// that it compares like with like (the main warm row ran minutes
	// earlier, on a fresh proxy, in whatever the machine was doing then).
	h.fillOnce(ctx, h.proxyAddr, warmReqs) // their entries may have outlived TOKEN_CACHE_MAX_TTL
	rep.users = h.usersRounds(ctx, h.proxyAddr, h.proxyAdmin, h.proxy, warmReqs, manyReqs, 3, max(h.o.duration/2, time.Second))

	// The same working set on a proxy whose caches are sized for it.
	h.logf("filling the big-cache proxy with %d users", len(manyReqs))
	h.fillOnce(ctx, h.bigAddr, manyReqs)
	bsc := &scrapers{proxy: "http://" + h.bigAdmin + "/metrics"}
	big := h.measureWith(ctx, fmt.Sprintf("authproxy warm (%d users, caches sized: %s)", len(h.manyUsers), strings.Join(bigCacheEnv, " ")), h.bigAddr, c, cycle(manyReqs, c), bsc)
	big.counters = proxyCounters(bsc.before[0], bsc.after[0], big.res.Requests)
	rep.addTrend(big)

	if h.o.profile > 0 {
		rep.profile = h.profileProxy(ctx, warmReqs)
	}

	if !h.o.skipStack {
		if err := h.runStack(ctx, rep); err != nil {
			return nil, fmt.Errorf("full stack: %w", err)
		}
	}

	// The hold measures held connections with warm tokens: their entries
	// (TOKEN_CACHE_MAX_TTL, PROJECTION_CACHE_TTL: 5 min) have expired
	// since the warm rows, and 10,000 connections sending their first
	// requests within one interval would otherwise be a cold start of
	// every user at once, which the proxy sheds (503, see
	// docs/operations.md, "Overload").
	h.fillOnce(ctx, h.proxyAddr, warmReqs)
	rep.held = h.holdConns(ctx, warmReqs)
	return rep, nil
}

// proxyCounters turns two scrapes of authproxy's metrics into per-request
// numbers. Metric names are looked up by fragment and reported.
func proxyCounters(before, after sample, requests int64) []counter {
	if requests == 0 {
		return nil
	}
	var out []counter
	per := func(label, name string) {
		if name == "" {
			out = append(out, counter{label: label, metric: "(metric not found)", value: -1})
			return
		}
		out = append(out, counter{label: label, metric: name, value: delta(before, after, name) / float64(requests)})
	}
	per("signature verifications / request", after.find("verif", "total"))
	per("projection fetches / request", after.find("projection", "fetch", "total"))
	for _, cache := range []string{"token", "projection"} {
		hits, misses := after.find("cache", "hit", "total"), after.find("cache", "miss", "total")
		if hits == "" || misses == "" {
			continue
		}
		// The label whole: cache="token" is not cache="token_negative",
		// the refused tokens' cache, whose hits are no valid token's.
		label := `cache="` + cache + `"`
		h := after.labelled(hits, label) - before.labelled(hits, label)
		m := after.labelled(misses, label) - before.labelled(misses, label)
		if h+m > 0 {
			out = append(out, counter{label: cache + " cache hit ratio", metric: hits + "/" + misses, value: h / (h + m)})
		}
	}
	return out
}

// profileProxy records a CPU profile of authproxy under warm load and
// returns `go tool pprof -top` output (10 nodes).
func (h *harness) profileProxy(ctx context.Context, warmReqs [][]byte) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		load{addr: h.proxyAddr, conns: h.o.conns, duration: h.o.profile + 2*time.Second, request: cycle(warmReqs, h.o.conns), want: 200}.run(ctx)
	}()
	defer func() { <-done }()
	time.Sleep(time.Second)
	file := filepath.Join(h.work, "authproxy.cpu.pprof")
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", h.proxyAdmin, int(h.o.profile.Seconds()))
	if err := fetchTo(ctx, url, file, h.o.profile+30*time.Second); err != nil {
		return "profile unavailable: " + err.Error()
	}
	top := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=10", filepath.Join(h.bin, "authproxy"), file)
	b, err := top.CombinedOutput()
	if err != nil {
		return "pprof failed: " + err.Error() + "\n" + string(b)
	}
	return strings.TrimSpace(string(b))
}

// pairedRound is one bare-proxy run and one authproxy warm run with the
// same settings, back to back, with the runs that split their difference
// around them (pairedOrder); bareCPU, warmCPU and the other CPU figures
// are each proxy process's CPU time (utime+stime from /proc) per request
// over the measured window, in µs (-1 when /proc could not be read).
type pairedRound struct {
	bare, warm       result
	bareCPU, warmCPU float64
	// bareRest and warmRest are the kernel's share of each proxy's CPU
	// per request, and what the rest of the machine's work cost per
	// request over the same runs: the generator's and the upstream's.
	bareRest, warmRest runCPU
	// tok is the bare proxy sent authproxy's requests, bearer token
	// included (which it forwards as it is): what carrying the token
	// costs a proxy that does nothing with it.
	tok    result
	tokCPU float64
	// pub is authproxy on a public route (publicURI), sent the bare
	// proxy's requests but for the path: the request pipeline every route
	// runs (hygiene, normalization, routing, the forwarding headers, an
	// anonymous signed identity) without the token work.
	pub    result
	pubCPU float64
	// aa is a second bare proxy process, identical to the first, sent the
	// same requests: its difference is what the measurement itself gives
	// two equal proxies, its resolution on this machine.
	aa        result
	aaCPU     float64
	warmFirst bool // authproxy ran first in this round
	// warmMisses are the token verifications and projection fetches
	// authproxy made in the warm run's window (coldWork; -1: not read).
	warmMisses float64
}

// runCPU is what one run's window cost per request (µs) beside the
// proxy's whole CPU: sys the proxy's own kernel share of it (stime), gen
// the load generator (the harness), up the upstream; -1 where unread.
type runCPU struct{ sys, gen, up float64 }

// cpuBound is the throughput ratio (authproxy warm ÷ bare) that p's CPU
// per request would give if the machine were kept busy by the generator,
// the upstream and the proxy alone: the bare run's sum of the three ÷ the
// warm run's. ok is false when any of the six was not read.
func (p pairedRound) cpuBound() (ratio float64, ok bool) {
	for _, v := range []float64{p.bareCPU, p.warmCPU, p.bareRest.gen, p.bareRest.up, p.warmRest.gen, p.warmRest.up} {
		if v < 0 {
			return 0, false
		}
	}
	w := p.warmCPU + p.warmRest.gen + p.warmRest.up
	if w <= 0 {
		return 0, false
	}
	return (p.bareCPU + p.bareRest.gen + p.bareRest.up) / w, true
}

// tokRun, pubRun and aaRun are the round's other runs (for sideCPU).
func (p pairedRound) tokRun() (result, float64) { return p.tok, p.tokCPU }
func (p pairedRound) pubRun() (result, float64) { return p.pub, p.pubCPU }
func (p pairedRound) aaRun() (result, float64)  { return p.aa, p.aaCPU }

// sideRun is the CPU per request of p's run pick, or -1 when that run did
// not happen or its CPU was not read.
func (p pairedRound) sideRun(pick func(pairedRound) (result, float64)) float64 {
	if res, cpu := pick(p); res.Requests > 0 {
		return cpu
	}
	return -1
}

// pairedRun names one run of a paired round.
type pairedRun int

const (
	runWarm pairedRun = iota // authproxy, warm tokens
	runPub                   // authproxy, public route
	runBare                  // the bare proxy
	runTok                   // the bare proxy, authproxy's requests
	runAA                    // the second bare proxy
)

// pairedOrder is the order of a round's runs: the bare proxy in the middle,
// so that each other run is as far from it in time in either order, and
// the whole order reversed when authproxy's warm run comes first.
func pairedOrder(warmFirst bool) []pairedRun {
	o := []pairedRun{runAA, runTok, runBare, runPub, runWarm}
	if warmFirst {
		slices.Reverse(o)
	}
	return o
}

// first names the proxy measured first in p's round.
func (p pairedRound) first() string {
	if p.warmFirst {
		return "authproxy"
	}
	return "bare"
}

// pairedRuns is the number of paired rounds of the full run, each
// pairedRunLength long per proxy: many short pairs rather than a few long
// ones, so that each difference is taken over seconds in which the
// machine's speed moved little, and one slow phase spoils few of them.
const (
	pairedRuns = 10
	// peerRuns is the number of alternating rounds of oauth2-proxy and
	// authproxy warm (peerRounds), each run pairedRunLength long.
	peerRuns        = 6
	pairedRunLength = 2500 * time.Millisecond
	pairedWarmup    = 500 * time.Millisecond
)

// pairedLength is how long each paired run is measured when rows are
// measured for duration: pairedRunLength, shorter in a -quick run.
func pairedLength(duration time.Duration) time.Duration {
	return min(pairedRunLength, max(duration/4, time.Second))
}

// warmFirst says whether round i (from 0) runs authproxy before the bare
// proxy: the order alternates, so that a machine slowing down (or speeding
// up) during the rounds does not always favour the proxy measured first.
func warmFirst(i int) bool { return i%2 == 1 }

// Placements of the open-loop rows (-placement).
const (
	// placeAlone: the proxy measured alone on the CPUs other than CPU 0;
	// the generator, the upstream and the idle proxy on CPU 0.
	placeAlone = "alone"
	// placeShared: the generator alone on CPU 0; both proxies and the
	// upstream share the other CPUs.
	placeShared = "shared"
)

// placementNote says where each process of the open-loop rows ran.
func placementNote(placement string) string {
	if placement == placeShared {
		return "generator (the harness) on CPU 0; the bare proxy, authproxy and the upstream share the other CPUs"
	}
	return "each proxy, while measured, alone on the CPUs other than CPU 0; the generator (the harness), the upstream and the idle proxy on CPU 0"
}

// openLoops measures the latency each proxy adds at a fixed rate, half the
// bare proxy's capacity: the rate at which it keeps half a CPU busy
// (halfLoadRate). In placeAlone (the default) the proxy measured has
// the CPUs other than CPU 0 to itself, while the generator (this process),
// the upstream and the other proxy share CPU 0: the latency is then the
// proxy's, not its queue behind the upstream on a shared CPU. placeShared
// is the former placement, for comparison. The capacity is measured in
// the same placement just before. Each row is measured in slices that
// alternate with the other row's (openLoopOrder; round is the round's
// number, which picks the first pair's order) and carries the CPU each
// process and CPU used over its slices.
func (h *harness) openLoops(ctx context.Context, noAuth, warmReqs [][]byte, placement string, round int) ([]openLoopRow, string) {
	self, bare, auth, up := os.Getpid(), h.bare.pid(), h.proxy.pid(), h.upstream.pid()
	targets := []struct {
		name, addr string
		pid, idle  int
		reqs       [][]byte
	}{
		{"bare Fiber proxy", h.bareAddr, bare, auth, noAuth},
		{fmt.Sprintf("authproxy warm (%d users)", len(h.warmUsers)), h.proxyAddr, auth, bare, warmReqs},
	}
	pin := func(target, idle int) (*isolation, error) {
		if placement == placeShared {
			return isolate(bare, auth, up)
		}
		return isolateAlone(target, up, idle)
	}
	note := placementNote(placement)
	var genCPUs, otherCPUs []int
	iso, err := pin(bare, auth)
	if err != nil {
		note = "not isolated (" + err.Error() + "): generator and targets share the CPUs"
	} else {
		genCPUs, otherCPUs = iso.generatorCPUs, iso.targetCPUs
	}
	c := h.o.conns
	cp := newUsageProbe(self, up, bare, genCPUs, otherCPUs)
	capacity := load{addr: h.bareAddr, conns: c, warmup: time.Second, duration: max(h.o.duration/2, time.Second),
		request: cycle(noAuth, c), want: 200, onStart: cp.start, onEnd: cp.end}.run(ctx)
	u := cp.got
	note += fmt.Sprintf("; the bare proxy's closed-loop rate so placed: %.0f req/s (CPU-s/s: generator %s, upstream %s, bare proxy %s; busy: CPU 0 %s, other CPUs %s)",
		capacity.RPS, cpuPS(u.generator), cpuPS(u.upstream), cpuPS(u.proxy), busyPct(u.generatorCPUs), busyPct(u.proxyCPUs))
	h.logf("open loop: %s", note)
	// Half the closed-loop rate is not half the load: closed-loop
	// connections batch (one read and one write serve several requests),
	// while a paced request pays its own wake-ups, so at half the
	// closed-loop rate the bare proxy kept ≈ 85 % of its CPU busy. The
	// rate is instead the one at which the bare proxy uses half a CPU,
	// from a short open-loop run at a quarter of the closed-loop rate.
	probe := load{addr: h.bareAddr, conns: c * 4, warmup: time.Second, duration: max(h.o.duration/2, time.Second),
		request: cycle(noAuth, c*4), want: 200, rate: capacity.RPS / 4}
	cal := newUsageProbe(self, up, bare, genCPUs, otherCPUs)
	probe.onStart, probe.onEnd = cal.start, cal.end
	probe.run(ctx)
	rate, why := halfLoadRate(capacity.RPS/4, cal.got, capacity.RPS)
	note += "; " + why
	h.logf("open loop: %s", why)
	// The rows' slices alternate (openLoopOrder), each proxy alone on its
	// CPUs while measured.
	var parts [2][]openLoopPart
	var failed string
	if rate > 0 {
		parts, failed = openLoopSlices(ctx, round, func(i int) (openLoopPart, error) {
			t := targets[i]
			if iso != nil && placement != placeShared {
				iso.undo()
				if iso, err = pin(t.pid, t.idle); err != nil {
					return openLoopPart{}, err
				}
			}
			h.logf("open loop %-40s %.0f req/s ...", t.name, rate)
			var sc *scrapers
			if t.pid == auth {
				sc = &scrapers{proxy: "http://" + h.proxyAdmin + "/metrics"}
			}
			return h.openLoopSlice(ctx, t.addr, rate, t.reqs, newUsageProbe(self, up, t.pid, genCPUs, otherCPUs), sc), nil
		})
	}
	if iso != nil {
		iso.undo()
	}
	rows := make([]openLoopRow, 0, len(targets))
	for i, t := range targets {
		r := pooledOpenLoopRow(t.name, rate, parts[i]) // no slices when either case below holds
		switch {
		case rate <= 0:
			r.note = "not measured: no capacity figure for the bare proxy"
		case failed != "":
			r.note = "not measured: " + failed
		}
		h.logf("open loop %-40s %.0f req/s: p50 %v p99 %v max %v success %.4f; CPU-s/s generator %s upstream %s proxy %s; busy generator's CPU %s proxy's CPU %s %s %s",
			r.name, rate, r.p50, r.p99, r.max, r.success, cpuPS(r.use.generator), cpuPS(r.use.upstream), cpuPS(r.use.proxy), busyPct(r.use.generatorCPUs), busyPct(r.use.proxyCPUs), r.use.saturation(), r.note)
		rows = append(rows, r)
	}
	return rows, note
}

// startWarm starts the synthetic targets and fills authproxy's caches
// with the warm users' tokens; it returns the bare proxy's request and the
// warm requests, for the focused runs (-only paired, -only openloop).
func (h *harness) startWarm(ctx context.Context) (noAuth, warmReqs [][]byte, err error) {
	if err := h.startSynthetic(ctx); err != nil {
		return nil, nil, err
	}
	warmTokens, err := h.minter.mintAll(h.warmUsers, len(h.warmUsers))
	if err != nil {
		return nil, nil, err
	}
	noAuth = [][]byte{rawGET("bench", benchURI, "")}
	warmReqs = render("bench", benchURI, warmTokens)
	h.fillOnce(ctx, h.proxyAddr, warmReqs)
	return noAuth, warmReqs, nil
}

// pairedOnly starts the synthetic targets and runs only the paired rounds,
// printing each and the medians: the before/after check of a warm-path
// change, with the processes' ids printed so that a profiler can attach.
func (h *harness) pairedOnly(ctx context.Context, rounds int, out io.Writer) error {
	noAuth, warmReqs, err := h.startWarm(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pids: bare %d, authproxy %d, upstream %d\n", h.bare.pid(), h.proxy.pid(), h.upstream.pid())
	if h.o.pairedAlone {
		iso, err := isolateAlone(h.bare.pid(), h.upstream.pid(), h.proxy.pid())
		if err != nil {
			return fmt.Errorf("-paired-alone: %w", err)
		}
		iso.undo()
		fmt.Fprintln(out, "placement: each proxy, while measured, alone on the CPUs other than CPU 0; the generator, the upstream and the idle proxy on CPU 0")
	}
	ps := h.pairedRounds(ctx, noAuth, warmReqs, rounds)
	r := &report{paired: ps}
	ratio, _, _ := r.pairedMedians()
	bare, warm, added, _ := r.pairedCPU()
	tok, _ := r.sideCPU(pairedRound.tokRun)
	pub, _ := r.sideCPU(pairedRound.pubRun)
	aa, _ := r.sideCPU(pairedRound.aaRun)
	fmt.Fprintf(out, "median of %d rounds: ratio %.2f, CPU/req bare %.1f µs, warm %.1f µs, difference %.1f µs; the bare proxy carrying the tokens: %+.1f µs; authproxy on a public route: %+.1f µs; a second bare proxy: %+.1f µs\n",
		len(ps), ratio, bare, warm, added, tok, pub, aa)
	m := r.runMedians()
	fmt.Fprintf(out, "the same runs, median of the rounds: the difference's kernel share %+.1f µs; the upstream behind authproxy %+.1f µs/req, the generator %+.1f µs/req; the CPU-bound ratio (generator + upstream + proxy, bare ÷ warm) %.3f\n",
		m.sys, m.up, m.gen, m.bound)
	ts := h.togetherRounds(ctx, noAuth, warmReqs, rounds)
	diff, ctl, lo, hi, n, nCtl := togetherMedians(ts)
	fmt.Fprintf(out, "both loaded at once, median of %d rounds: difference %.1f µs; control (two bare proxies at once, %d rounds): %.1f µs (rounds from %+.1f to %+.1f)\n",
		n, diff, nCtl, ctl, lo, hi)
	if h.o.proxyB != "" && ctx.Err() == nil {
		return h.proxyAB(ctx, h.o.proxyB, warmReqs, noAuth, rounds, out)
	}
	return ctx.Err()
}

// callgrindOnly starts the synthetic targets and prints the report's
// callgrind rows: the instruction count per warm request of each proxy
// process, which does not depend on what else the machine runs, and the
// misses of the simulated caches.
func (h *harness) callgrindOnly(ctx context.Context, out io.Writer) error {
	noAuth, warmReqs, err := h.startWarm(ctx)
	if err != nil {
		return err
	}
	rows := h.callgrindRows(ctx, noAuth, warmReqs)
	for _, r := range rows {
		fmt.Fprintf(out, "%-40s %8.0f instructions/request (idle window %.0f subtracted; SHA-256 blocks %.0f; the runtime's sysmon thread %.0f), simulated misses/request: L1i %.0f, L1d %.0f, L2 %.1f %s\n",
			r.name, r.perRequest, r.baselinePerRq, r.shaBlocks, r.sysmon, r.i1Miss, r.d1Miss, r.llMiss, r.note)
	}
	if len(rows) >= 2 && rows[0].perRequest > 0 && rows[1].perRequest > 0 {
		fmt.Fprintf(out, "authproxy ÷ bare: %.2f×; the SHA-256 blocks left out of both: %.2f×\n", rows[1].perRequest/rows[0].perRequest,
			(rows[1].perRequest-rows[1].shaBlocks)/(rows[0].perRequest-rows[0].shaBlocks))
	}
	if len(rows) >= 3 && rows[1].perRequest > 0 && rows[2].perRequest > 0 {
		fmt.Fprintf(out, "authproxy ÷ bare sent authproxy's requests: %.2f×\n", rows[1].perRequest/rows[2].perRequest)
	}
	if len(rows) >= 4 && rows[0].perRequest > 0 && rows[3].perRequest > 0 {
		fmt.Fprintf(out, "authproxy public route − bare: %.0f instructions/request\n", rows[3].perRequest-rows[0].perRequest)
	}
	return ctx.Err()
}

// openLoopOnly starts the synthetic targets, fills authproxy's caches
// with the warm tokens and runs the open-loop rows rounds times in each of
// placements (alternating their order from round to round, so that drift
// in what else the machine does hits both), printing every row and, per
// placement, the medians.
func (h *harness) openLoopOnly(ctx context.Context, rounds int, placements []string, out io.Writer) error {
	noAuth, warmReqs, err := h.startWarm(ctx)
	if err != nil {
		return err
	}
	got := map[string][][]openLoopRow{}
	for i := 0; i < rounds && ctx.Err() == nil; i++ {
		order := placements
		if i%2 == 1 {
			order = slices.Clone(placements)
			slices.Reverse(order)
		}
		for _, pl := range order {
			rows, note := h.openLoops(ctx, noAuth, h.freshWarm(ctx, warmReqs), pl, i)
			fmt.Fprintf(out, "round %d, placement %s: %s\n", i+1, pl, note)
			writeOpenLoopRows(out, rows)
			got[pl] = append(got[pl], rows)
		}
	}
	for _, pl := range placements {
		fmt.Fprintf(out, "placement %s, median of %d rounds: %s\n", pl, len(got[pl]), openLoopMedians(got[pl]))
	}
	return ctx.Err()
}

// writeOpenLoopRows prints open-loop rows, one a line.
func writeOpenLoopRows(out io.Writer, rows []openLoopRow) {
	for _, r := range rows {
		fmt.Fprintf(out, "  %-28s %6.0f/s  p50 %s  p99 %s  max %s  success %.4f  CPU-s/s: generator %s, upstream %s, proxy %s; busy: CPU 0 %s, other CPUs %s  %s %s\n",
			r.name, r.rate, ms(r.p50), ms(r.p99), ms(r.max), r.success, cpuPS(r.use.generator), cpuPS(r.use.upstream), cpuPS(r.use.proxy),
			busyPct(r.use.generatorCPUs), busyPct(r.use.proxyCPUs), r.use.saturation(), r.note)
	}
}

// openLoopMedians summarizes rounds of open-loop rows (bare, then
// authproxy): the median rate, each row's median p99 and CPU figures, and
// the median of the rounds' p99 added by authproxy.
func openLoopMedians(rounds [][]openLoopRow) string {
	if len(rounds) == 0 {
		return "no round"
	}
	var rate, added []float64
	per := make([][6][]float64, 2) // p99, generator, upstream, proxy, CPU 0, other CPUs
	for _, rows := range rounds {
		if len(rows) != 2 {
			continue
		}
		rate = append(rate, rows[0].rate)
		added = append(added, float64(rows[1].p99-rows[0].p99))
		for i, r := range rows {
			for k, v := range []float64{float64(r.p99), r.use.generator, r.use.upstream, r.use.proxy, r.use.generatorCPUs, r.use.proxyCPUs} {
				per[i][k] = append(per[i][k], v)
			}
		}
	}
	if len(rate) == 0 {
		return "no complete round"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "rate %.0f/s, p99 added by authproxy %s", median(rate), ms(time.Duration(median(added))))
	if pa, lo, hi, n := openLoopPairs(rounds); n > 0 {
		fmt.Fprintf(&b, " (median of %d slice pairs %s, pairs from %s to %s)", n, ms(pa), ms(lo), ms(hi))
	}
	for i, name := range []string{"bare", "authproxy"} {
		p := per[i]
		fmt.Fprintf(&b, "; %s p99 %s, CPU-s/s generator %s upstream %s proxy %s, busy CPU 0 %s other CPUs %s", name, ms(time.Duration(median(p[0]))),
			cpuPS(median(p[1])), cpuPS(median(p[2])), cpuPS(median(p[3])), busyPct(median(p[4])), busyPct(median(p[5])))
	}
	return b.String()
}

// pairedRounds runs rounds of the five runs of a pairedRound (authproxy
// warm and on a public route, the bare proxy with its own requests and
// with authproxy's, the second bare proxy), back to back in the order
// pairedOrder gives.
func (h *harness) pairedRounds(ctx context.Context, noAuth, warmReqs [][]byte, rounds int) []pairedRound {
	c := h.o.conns
	d := pairedLength(h.o.duration)
	out := make([]pairedRound, 0, rounds)
	run := func(addr string, p *proc, reqs [][]byte, sc *scrapers) (result, float64, runCPU) {
		if h.o.pairedAlone {
			idle := h.proxy
			if p == h.proxy {
				idle = h.bare
			}
			// The other idle proxy stays where it is: it only sleeps.
			iso, err := isolateAlone(p.pid(), h.upstream.pid(), idle.pid())
			if err != nil {
				h.logf("paired run not isolated: %v", err)
				return result{}, -1, runCPU{-1, -1, -1}
			}
			defer iso.undo()
		}
		// The proxy, and over the same window the upstream and the
		// generator (this process): what else each request cost.
		// sc's scrapes, when given, lie outside every CPU window.
		cw, up, gen := &cpuWindow{pid: p.pid()}, &cpuWindow{pid: h.upstream.pid()}, &cpuWindow{pid: os.Getpid()}
		start := func() { sc.start(); gen.start(); up.start(); cw.start() }
		end := func() { cw.end(); up.end(); gen.end(); sc.end() }
		r := load{addr: addr, conns: c, warmup: pairedWarmup, duration: d, request: cycle(reqs, c), want: 200, onStart: start, onEnd: end}.run(ctx)
		return r, cw.perRequest(r.Requests), runCPU{sys: cw.sysPerRequest(r.Requests), gen: gen.perRequest(r.Requests), up: up.perRequest(r.Requests)}
	}
	pubReqs := [][]byte{rawGET("bench", publicURI, "")}
	for i := 0; i < rounds && ctx.Err() == nil; i++ {
		p := pairedRound{warmFirst: warmFirst(i)}
		for _, r := range pairedOrder(p.warmFirst) {
			switch r {
			case runWarm:
				// authproxy's counters over the warm run's window: a warm
				// run verifies no token and fetches no projection.
				sc := &scrapers{proxy: "http://" + h.proxyAdmin + "/metrics"}
				p.warm, p.warmCPU, p.warmRest = run(h.proxyAddr, h.proxy, warmReqs, sc)
				p.warmMisses = coldWork(sc.before[0], sc.after[0])
			case runPub:
				p.pub, p.pubCPU, _ = run(h.proxyAddr, h.proxy, pubReqs, nil)
			case runBare:
				p.bare, p.bareCPU, p.bareRest = run(h.bareAddr, h.bare, noAuth, nil)
			case runTok:
				p.tok, p.tokCPU, _ = run(h.bareAddr, h.bare, warmReqs, nil)
			case runAA:
				p.aa, p.aaCPU, _ = run(h.bare2Addr, h.bare2, noAuth, nil)
			}
		}
		h.logf("paired round %d (%s first): bare %.0f req/s p99 %v %.1f µs CPU/req, warm %.0f req/s p99 %v %.1f µs CPU/req (token verifications and projection fetches %.0f), ratio %.2f; bare with the tokens %.1f, authproxy public route %.1f, second bare proxy %.1f µs CPU/req",
			i+1, p.first(), p.bare.RPS, p.bare.P99, p.bareCPU, p.warm.RPS, p.warm.P99, p.warmCPU, p.warmMisses, p.warm.RPS/p.bare.RPS, p.tokCPU, p.pubCPU, p.aaCPU)
		out = append(out, p)
	}
	return out
}

// cpuWindow reads process pid's CPU time at the edges of a load's measured
// window: start and end are the load's onStart and onEnd, around sc's
// scrapes when sc is not nil.
type cpuWindow struct {
	pid           int
	sc            *scrapers
	before, after time.Duration // user + system
	sysB, sysA    time.Duration // system alone
	errB, errA    error
}

func (c *cpuWindow) start() {
	c.sc.start()
	if c.pid != 0 {
		c.before, c.sysB, c.errB = procTimes(c.pid)
	}
}

func (c *cpuWindow) end() {
	if c.pid != 0 {
		c.after, c.sysA, c.errA = procTimes(c.pid)
	}
	c.sc.end()
}

// perRequest is the CPU the process spent per request over the window, in
// µs: -1 when either read failed, no process was named or nothing was
// answered.
func (c *cpuWindow) perRequest(requests int64) float64 { return c.per(c.after-c.before, requests) }

// sysPerRequest is the part of perRequest spent in the kernel (stime), in
// µs; -1 as perRequest.
func (c *cpuWindow) sysPerRequest(requests int64) float64 { return c.per(c.sysA-c.sysB, requests) }

// per is spent ÷ requests in µs, or -1 when the window was not read.
func (c *cpuWindow) per(spent time.Duration, requests int64) float64 {
	if c.pid == 0 || c.errB != nil || c.errA != nil || requests <= 0 {
		return -1
	}
	return float64(spent) / float64(time.Microsecond) / float64(requests)
}

// procCPU is the CPU time (user + system, every thread) process pid has
// used so far, from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	cpu, _, err := procTimes(pid)
	return cpu, err
}

// procTimes is procCPU and, of it, the time spent in the kernel (stime).
func procTimes(pid int) (cpu, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseProcStat(string(b))
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// parseProcStat reads utime+stime (fields 14 and 15) of a
// /proc/<pid>/stat line, and stime alone; the command name (field 2) may
// hold spaces and parentheses, so fields are counted after its closing
// parenthesis.
func parseProcStat(stat string) (cpu, sys time.Duration, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("proc stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("proc stat: %d fields after the command name", len(f))
	}
	var ticks [2]int64
	for k, s := range f[11:13] { // utime, stime: fields 14 and 15
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return 0, 0, fmt.Errorf("proc stat: bad time %q", s)
		}
		ticks[k] = v
	}
	return time.Duration(ticks[0]+ticks[1]) * time.Second / clockTicks, time.Duration(ticks[1]) * time.Second / clockTicks, nil
}

// apiKeyWarmRow names the warm API-key row.
const apiKeyWarmRow = "authproxy warm API key"

// apiKeys returns n fresh API keys (the stand-in coreapi resolves any).
func apiKeys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i], _ = apikey.New()
	}
	return out
}

// openLoopRounds is how many times the full run measures the open-loop
// rows (rate included); the report gives the median p99 added. One round's
// tail moves by a millisecond or more from round to round on this machine,
// and a host stall of tens of milliseconds in one proxy's slice decides
// that round: five rounds (about 25 s each) leave two such rounds out of
// the median where three left one.
const openLoopRounds = 5

// halfLoadRate is the fixed rate of the open-loop rows: the rate at which
// the bare proxy keeps half a CPU busy, from use, measured while it was
// sent probeRate requests a second (CPU per request is taken as constant
// between the two rates). It is lowered so that the generator and the
// upstream keep the generator's CPUs below maxGenBusy, and never exceeds
// half the closed-loop rate. Without a usable measurement it falls back to
// half the closed-loop rate. why says which and from what.
func halfLoadRate(probeRate float64, use usage, closedLoop float64) (rate float64, why string) {
	if probeRate <= 0 || use.proxy <= 0 {
		return closedLoop / 2, "rate: half the closed-loop rate (the bare proxy's CPU could not be measured)"
	}
	rate = probeRate * 0.5 / use.proxy
	why = fmt.Sprintf("rate: the bare proxy at half a CPU (at %.0f req/s open loop it used %s CPU-s/s)", probeRate, cpuPS(use.proxy))
	if gen := use.generator + use.upstream; gen > 0 && gen*rate/probeRate > maxGenBusy {
		rate = probeRate * maxGenBusy / gen
		why += fmt.Sprintf(", lowered so that the generator and the upstream (%s CPU-s/s at %.0f req/s) stay below %.0f %% of a CPU", cpuPS(gen), probeRate, 100*maxGenBusy)
	}
	if rate > closedLoop/2 {
		rate = closedLoop / 2
		why += ", capped at half the closed-loop rate"
	}
	return rate, why
}

// maxGenBusy is the share of a CPU the generator and the upstream may use
// together in the open-loop rows: beyond it, the generator's own queueing
// would show in every latency.
const maxGenBusy = 0.7
