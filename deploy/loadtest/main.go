// Command loadtest is the load harness behind `make bench`. It starts every
// target itself on loopback — a direct fasthttp upstream, a bare Fiber
// reverse proxy, authproxy (warm and cold), the example notes app behind a
// bare proxy and behind authproxy, and the full stack (authproxy + coreapi +
// PostgreSQL + NATS) — drives each with the same closed-loop generator in
// one run, and writes docs/benchmarks.md.
package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	duration, warmup time.Duration
	conns, highConns int
	users, manyUsers int
	heldConns        int
	hold             time.Duration
	heldInterval     time.Duration
	trials           int
	out              string
	skipStack        bool
	stackOnly        bool   // only the full-stack rows
	coreB            string // a second coreapi binary to compare with, side by side
	abRounds         int
	abTogether       bool
	abRate           float64
	profile          time.Duration
	gobench          string
	proxyMemLimit    string   // GOMEMLIMIT of the authproxy processes ("": none)
	placement        string   // of the open-loop rows: placeAlone or placeShared
	pairedAlone      bool     // -only paired: each proxy alone on its CPUs while measured
	proxyB           string   // -only paired: also compare authproxy with this binary, both loaded at once; -only bodyhold: also measure it
	proxyBEnv        []string // -only paired -proxy-b: variables set for B alone (K=V)
}

// analysisMarker starts the hand-written part of the report, which a run
// keeps: the numbers above it are regenerated, the reading of them is not.
const analysisMarker = "<!-- analysis: kept across runs -->"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	var o options
	serve := fs.String("serve", "", "internal: run a target (upstream|bare) instead of the harness")
	addr := fs.String("addr", "", "internal: listen address for -serve")
	upstream := fs.String("upstream", "", "internal: upstream address for -serve bare")
	jwksFile := fs.String("jwks", "", "internal: JWKS file for -serve upstream")
	hmacKey := fs.String("hmac", "", "internal: identity HMAC key for -serve upstream")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per row")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up per row")
	fs.IntVar(&o.conns, "conns", 64, "connections of the main rows")
	fs.IntVar(&o.highConns, "high-conns", 1024, "connections of the trend rows")
	fs.IntVar(&o.users, "users", 1000, "distinct users of the warm rows")
	fs.IntVar(&o.manyUsers, "many-users", 100000, "distinct users of the 'many users' trend row")
	fs.IntVar(&o.heldConns, "held-conns", 10000, "concurrent keep-alive connections of the concurrency test")
	fs.DurationVar(&o.hold, "hold", 60*time.Second, "how long the concurrency test holds its connections")
	fs.DurationVar(&o.heldInterval, "held-interval", 2*time.Second, "each held connection sends one request per interval")
	fs.IntVar(&o.trials, "trials", 200, "invalidation latency trials")
	fs.DurationVar(&o.profile, "profile", 10*time.Second, "CPU profile length of authproxy under warm load (0: none)")
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", "report file, relative to the repository root ('' for none)")
	fs.StringVar(&o.gobench, "gobench", "", "file with `go test -bench` output to include in the report")
	fs.BoolVar(&o.skipStack, "skip-stack", false, "skip the full-stack rows (no PostgreSQL needed)")
	fs.BoolVar(&o.stackOnly, "stack-only", false, "only the full-stack rows (coreapi, authproxy, PostgreSQL); no report file unless -out is given")
	fs.StringVar(&o.coreB, "coreapi-b", "", "with -stack-only: instead of the rows, compare coreapi built from this tree (A) with the coreapi binary at this path (B), each behind its own authproxy on one database, in alternating rounds; prints req/s and CPU per request of coreapi, its PostgreSQL backends and its proxy")
	fs.IntVar(&o.abRounds, "ab-rounds", 6, "rounds of -coreapi-b (each runs both rows on A and on B)")
	fs.BoolVar(&o.abTogether, "ab-together", false, "with -coreapi-b: load A and B at the same time, half the connections each (else one after the other)")
	fs.Float64Var(&o.abRate, "ab-rate", 0, "with -coreapi-b: send each row open loop at this fixed rate (requests/s, on 4× -conns connections; latency counted from when each request was due) and report its p50 and p99, instead of closed loop")
	rss := fs.Int("rss-users", 0, "instead of the benchmarks: measure authproxy's RSS with its caches filled by this many distinct users, then with -held-conns idle connections")
	fs.StringVar(&o.proxyMemLimit, "proxy-gomemlimit", "", "GOMEMLIMIT of the authproxy processes, e.g. 560MiB (default: none)")
	only := fs.String("only", "", "instead of the whole run, print one test's outcome (no report file): 'users' alternates the warm rows with -users and -many-users distinct users on the default proxy (after -cold one-time tokens) and on the big-cache proxy, -rounds times; 'held' runs the concurrency test (-held-conns, -hold, -held-interval) alone; 'paired' runs -rounds paired bare/warm rounds on a fresh proxy (the order alternating; each round also runs the bare proxy with the tokens, authproxy on a public route and a second bare proxy) then as many together rounds (bare and authproxy warm loaded at once, half the connections each, and the control: the two bare proxies at once), and prints the processes' ids (for a profiler): the quick before/after check of the warm path; 'openloop' runs -rounds times the open-loop rows (capacity of the bare proxy, then bare and authproxy warm at half of it) in the -placement given, printing each row with the CPU-s/s of the generator, the upstream and the proxy and the busy share of each CPU, then the medians; 'callgrind' counts the instructions and simulated cache misses per warm request of the bare proxy, of authproxy, of the bare proxy sent authproxy's requests and of authproxy on a public route under callgrind (the report's rows, each with the part of its count that the runtime's sysmon thread ran, which follows wall time rather than requests; with LOADTEST_KEEP=1 in the environment the work directory is kept, its path printed at the end, and in it each process's dumps for callgrind_annotate: callgrind.<row>.<pid>.1 the requests' window, .2 and after the idle windows); 'bodyhold' holds -body-conns connections to a protected POST route of authproxy, each having sent headers declaring a body of MAX_BODY_BYTES (1 MiB) and only its first bytes (8 KiB without a credential, then 64 KiB with a valid token, each on an authproxy started afresh), and prints authproxy's RSS and Go heap before and while they are held (with -proxy-b, also of the binary at that path, one process at a time); 'oauth2' builds oauth2-proxy, measures its row, then -rounds alternating runs of it and authproxy warm, and prints the medians of the rounds' ratios; 'syscalls' loads the bare proxy and authproxy warm at once (half the connections each) for -duration with a tracer (-syscall-tracer) counting each one's system calls, and prints the system calls per answered request of each, side by side (strace slows both alike; counts, unlike times, hold on a busy machine)")
	bodyConns := fs.Int("body-conns", 2000, "connections of -only bodyhold")
	heldCold := fs.Bool("held-cold", false, "-only held: start the hold with the proxy's caches empty (the full run's hold may find its users' entries expired)")
	fs.StringVar(&o.placement, "placement", placeAlone, "CPUs of the open-loop rows: 'alone' puts the proxy measured alone on the CPUs other than CPU 0, and the generator (this process), the upstream and the idle proxy on CPU 0; 'shared' puts the generator alone on CPU 0 and both proxies and the upstream on the others (the former placement); 'both' (-only openloop only) runs each in every round")
	fs.BoolVar(&o.pairedAlone, "paired-alone", false, "-only paired: each proxy, while measured, alone on the CPUs other than CPU 0, with the generator (this process), the upstream and the idle proxy on CPU 0 (the open-loop rows' 'alone' placement); without it all share the CPUs, as in the full run")
	fs.StringVar(&o.proxyB, "proxy-b", "", "with -only paired: after its rounds, compare authproxy built from this tree (A) with the authproxy binary at this path (B; 'tree': A's own binary file, an A/A check, whose figure is the comparison's bias; 'copy': a byte-identical copy of A's file, an A/A check that also shows what the file itself costs), both started afresh alike and warmed with the same tokens, both loaded at once (half the connections each, which starts first alternating), -rounds times, each round with its control (two bare proxies at once); prints each process's CPU per request and the medians of B − A; read it against a 'copy' run: two byte-identical files measured up to 2 µs a request apart; with -only bodyhold: also measure the authproxy binary at this path, on processes of its own after this tree's")
	proxyBEnv := fs.String("proxy-b-env", "", "with -only paired -proxy-b: NAME=value[,NAME=value...] set for B alone, after the settings both get (e.g. -proxy-b tree -proxy-b-env ACCESS_LOG=false: what the access log costs)")
	rounds := fs.Int("rounds", 3, "rounds of -only users, -only paired or -only openloop")
	coldN := fs.Int("cold", 150000, "one-time tokens sent to the default proxy before -only users (the full run's cold row)")
	coreRSS := fs.Bool("core-rss", false, "instead of the benchmarks: measure the peak RSS (VmHWM) of a coreapi process with the Kubernetes base's GOMEMLIMIT and GOMAXPROCS (-core-gomemlimit, -core-gomaxprocs) under its worst memory cases at once for -core-rss-for: a flood of password sign-ins (-core-sign-ins connections; argon2id, 19 MiB each), readers of the largest member page, uploads of MAX_BODY_BYTES, sign-ups and role changes that keep the mail sender (to an SMTP sink) and the outbox relay busy, and -core-rss-conns idle keep-alive connections (docs/scaling.md, \"Memory per coreapi\")")
	var cro coreRSSOptions
	fs.DurationVar(&cro.duration, "core-rss-for", 60*time.Second, "-core-rss: how long the load runs")
	fs.StringVar(&cro.memLimit, "core-gomemlimit", "576MiB", "-core-rss: coreapi's GOMEMLIMIT (the Kubernetes base's; off: none)")
	fs.IntVar(&cro.maxProcs, "core-gomaxprocs", 2, "-core-rss: coreapi's GOMAXPROCS (the Kubernetes base's)")
	fs.IntVar(&cro.signIns, "core-sign-ins", 512, "-core-rss: connections sending password sign-ins, each waiting for its answer")
	fs.IntVar(&cro.conns, "core-rss-conns", 2000, "-core-rss: idle keep-alive connections held")
	fs.IntVar(&cro.members, "core-members", 10000, "-core-rss: members of the tenant whose pages are read")
	fs.IntVar(&cro.listLoops, "core-list-readers", 16, "-core-rss: connections reading GET /users?limit=200 page after page")
	fs.IntVar(&cro.bodyLoops, "core-uploads", 64, "-core-rss: connections uploading bodies of MAX_BODY_BYTES (64 × 1 MiB: what one authproxy's BODY_MEMORY_MB lets through at once)")
	fs.IntVar(&cro.writeLoops, "core-writers", 4, "-core-rss: connections signing up, and as many granting and revoking roles")
	syscallTracer := fs.String("syscall-tracer", "perf", "-only syscalls: 'perf' (perf stat on the system calls' tracepoints, switched on and off with the measured window; the process runs at its own pace) or 'strace' (strace -c -f, which stops every thread at each call and slows both proxies several times over)")
	quick := fs.Bool("quick", false, "short smoke run: small durations and counts, no report file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch *serve {
	case "upstream":
		return serveUpstream(ctx, *addr, *jwksFile, *hmacKey)
	case "bare":
		return serveBareProxy(ctx, *addr, *upstream)
	case "":
	default:
		return fmt.Errorf("unknown -serve %q", *serve)
	}
	if *only != "" && !slices.Contains([]string{"users", "held", "paired", "openloop", "callgrind", "bodyhold", "oauth2", "syscalls"}, *only) {
		return fmt.Errorf("unknown -only %q (want users, held, paired, openloop, callgrind, bodyhold, oauth2 or syscalls)", *only)
	}
	placements, err := parsePlacement(o.placement, *only == "openloop")
	if err != nil {
		return err
	}
	if o.proxyB != "" && *only != "paired" && *only != "bodyhold" {
		return fmt.Errorf("-proxy-b needs -only paired or -only bodyhold")
	}
	if *proxyBEnv != "" {
		if o.proxyB == "" || *only != "paired" {
			return fmt.Errorf("-proxy-b-env needs -only paired -proxy-b")
		}
		for _, kv := range strings.Split(*proxyBEnv, ",") {
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
				return fmt.Errorf("-proxy-b-env: %q is not NAME=value", kv)
			}
			o.proxyBEnv = append(o.proxyBEnv, kv)
		}
	}
	if o.proxyB != "" && o.proxyB != "tree" && o.proxyB != "copy" {
		// Checked now, not after the paired rounds' minutes.
		if fi, err := os.Stat(o.proxyB); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("-proxy-b %s: not an executable file (%v)", o.proxyB, err)
		}
	}
	if flagSet(fs, "syscall-tracer") && *only != "syscalls" {
		return fmt.Errorf("-syscall-tracer needs -only syscalls")
	}
	if *syscallTracer != "perf" && *syscallTracer != "strace" {
		return fmt.Errorf("unknown -syscall-tracer %q (want perf or strace)", *syscallTracer)
	}
	if *bodyConns < 1 {
		return fmt.Errorf("-body-conns %d: at least one connection", *bodyConns)
	}
	if o.pairedAlone && *only != "paired" {
		return fmt.Errorf("-paired-alone needs -only paired (the full run's paired rounds share the CPUs)")
	}
	if err := checkCoreRSSFlags(fs, *coreRSS, cro); err != nil {
		return err
	}
	if *quick {
		o.duration, o.warmup = 2*time.Second, time.Second
		o.manyUsers, o.heldConns, o.hold, o.trials, o.profile = 5000, 500, 5*time.Second, 20, 3*time.Second
		o.out = ""
	}
	if *rss > 0 {
		o.users, o.manyUsers = 1, *rss
	}
	if o.coreB != "" && !o.stackOnly {
		return fmt.Errorf("-coreapi-b needs -stack-only")
	}
	if o.abRate != 0 && (o.coreB == "" || o.abRate < 0) {
		return fmt.Errorf("-ab-rate %g: needs -coreapi-b and a rate above 0", o.abRate)
	}
	if (*only == "users" || *only == "paired" || *only == "openloop" || *only == "oauth2") && *rounds < 1 {
		return fmt.Errorf("-rounds %d: -only %s needs at least one round", *rounds, *only)
	}
	if o.stackOnly {
		if o.skipStack {
			return fmt.Errorf("-stack-only and -skip-stack exclude each other")
		}
		if !flagSet(fs, "out") {
			o.out = ""
		}
	}
	cmdline := "go run ./deploy/loadtest " + strings.Join(args, " ")
	h, err := newHarness(ctx, o, stdout)
	if err != nil {
		return err
	}
	defer h.close()
	switch *only {
	case "users":
		return h.runUsers(ctx, stdout, *rounds, *coldN)
	case "held":
		return h.runHeld(ctx, stdout, *heldCold)
	case "paired":
		return h.pairedOnly(ctx, *rounds, stdout)
	case "openloop":
		return h.openLoopOnly(ctx, *rounds, placements, stdout)
	case "callgrind":
		return h.callgrindOnly(ctx, stdout)
	case "bodyhold":
		return h.runBodyHold(ctx, stdout, *bodyConns)
	case "oauth2":
		return h.oauth2Only(ctx, *rounds, stdout)
	case "syscalls":
		return h.syscallsOnly(ctx, *syscallTracer, stdout)
	}
	if *coreRSS {
		return h.measureCoreRSS(ctx, cro, stdout)
	}
	if *rss > 0 {
		return h.measureRSS(ctx, *rss, o.heldConns, stdout)
	}
	if o.coreB != "" {
		return h.runCoreAB(ctx, stdout)
	}
	rep, err := h.runAll(ctx)
	if err != nil {
		return err
	}
	rep.command = strings.TrimSpace(cmdline)
	text := rep.markdown()
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, text)
	if o.out != "" {
		path := filepath.Join(h.root, o.out)
		// Hand-written analysis below the marker survives a new run.
		if old, err := os.ReadFile(path); err == nil {
			if i := strings.Index(string(old), analysisMarker); i >= 0 {
				text += "\n" + string(old[i:])
			}
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nwrote %s\n", path)
	}
	return nil
}

func buildBinaries(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out+"/", "./authproxy/cmd/authproxy", "./coreapi/cmd/coreapi", "./deploy/examples/notes/cmd/notes")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build binaries: %w", err)
	}
	return nil
}

func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	want := uint64(200000)
	if lim.Max < want {
		// Root may raise the hard limit; others keep theirs.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return want, nil
		}
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	lim.Cur = min(lim.Max, want)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}

func randomKey() string {
	return base64.StdEncoding.EncodeToString([]byte(randHex(16))) // 32 random hex chars = 32 bytes
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return runtime.GOARCH
}

// cpuFlag reports whether /proc/cpuinfo lists flag for the first CPU.
func cpuFlag(flag string) bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags"); ok {
			return slices.Contains(strings.Fields(strings.TrimPrefix(strings.TrimSpace(v), ":")), flag)
		}
	}
	return false
}

// shaNINote says which SHA-256 code Go runs outside valgrind on this CPU.
func shaNINote() string {
	if runtime.GOARCH == "amd64" && cpuFlag("sha_ni") {
		return ", which has them (sha_ni), Go runs its SHA-NI routine instead: some 180 instructions a block"
	}
	return ", which lacks them, Go runs the same code"
}

// parsePlacement checks -placement and returns the placements to run;
// "both" only where several can be run (-only openloop).
func parsePlacement(p string, several bool) ([]string, error) {
	switch p {
	case placeAlone, placeShared:
		return []string{p}, nil
	case "both":
		if several {
			return []string{placeShared, placeAlone}, nil
		}
		return nil, fmt.Errorf("-placement both needs -only openloop (the report has one placement)")
	}
	return nil, fmt.Errorf("unknown -placement %q (want alone, shared or both)", p)
}

// checkCoreRSSFlags checks -core-rss and its flags: it runs alone, and
// its flags need it.
func checkCoreRSSFlags(fs *flag.FlagSet, on bool, o coreRSSOptions) error {
	own := []string{"core-rss-for", "core-gomemlimit", "core-gomaxprocs", "core-sign-ins", "core-rss-conns", "core-members", "core-list-readers", "core-uploads", "core-writers"}
	if !on {
		for _, name := range own {
			if flagSet(fs, name) {
				return fmt.Errorf("-%s needs -core-rss", name)
			}
		}
		return nil
	}
	for _, name := range []string{"only", "rss-users", "stack-only", "skip-stack", "coreapi-b", "quick"} {
		if flagSet(fs, name) {
			return fmt.Errorf("-core-rss runs alone: drop -%s", name)
		}
	}
	switch {
	case o.duration <= 0:
		return fmt.Errorf("-core-rss-for %s: above 0", o.duration)
	case o.maxProcs < 1:
		return fmt.Errorf("-core-gomaxprocs %d: at least 1", o.maxProcs)
	case o.members < 200:
		return fmt.Errorf("-core-members %d: at least 200 (one page of the largest size)", o.members)
	}
	for name, n := range map[string]int{"core-sign-ins": o.signIns, "core-rss-conns": o.conns, "core-list-readers": o.listLoops, "core-uploads": o.bodyLoops, "core-writers": o.writeLoops} {
		if n < 0 {
			return fmt.Errorf("-%s %d: not below 0", name, n)
		}
	}
	return nil
}

// flagSet reports whether the command line set flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
