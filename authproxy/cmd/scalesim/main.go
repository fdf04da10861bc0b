// Command scalesim measures invalidation fan-out from a real nats-server
// (one server, then a 3-node cluster) to N subscribers built from the
// proxy's own invalidation client and projection cache, and the cold-start
// storm of a fleet of proxies restarting at once against a real coreapi.
// `make bench-scale` runs it; see docs/scaling.md. It needs Debian's
// nats-server program (`apt-get install -y nats-server`), PostgreSQL
// (DATABASE_URL) and a built coreapi (-coreapi).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/scalesim"
	"github.com/tollgate-auth/tollgate/shared/buildinfo"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, log); err != nil {
		log.Error("scalesim", "err", err)
		os.Exit(1)
	}
}

type options struct {
	subscribers, rates []int
	duration           time.Duration
	cluster            bool
	fanout, storm, cpu bool
	authproxy          string
	cpuDuration        time.Duration
	proxies, perProxy  int
	users, maxFetches  int
	coreapi, out       string
	unguarded          bool
}

func parse(args []string) (*options, error) {
	fs := flag.NewFlagSet("scalesim", flag.ContinueOnError)
	o := &options{}
	subs := fs.String("subscribers", "10,100,1000", "fan-out: subscriber counts")
	rates := fs.String("rates", "10,100,1000", "fan-out: invalidations per second")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "fan-out: publishing time per row")
	fs.BoolVar(&o.cluster, "cluster", true, "fan-out: also run every row against a 3-node cluster")
	fs.BoolVar(&o.fanout, "fanout", true, "run the fan-out rows")
	fs.BoolVar(&o.storm, "storm", true, "run the cold-start storm")
	fs.IntVar(&o.proxies, "proxies", 1000, "storm: proxies restarting at once")
	fs.IntVar(&o.perProxy, "users-per-proxy", 10, "storm: distinct users whose first requests reach each proxy")
	fs.IntVar(&o.users, "users", 1000, "storm: members seeded in coreapi's database")
	fs.IntVar(&o.maxFetches, "max-fetches", 64, "storm: PROJECTION_MAX_FETCHES of each proxy")
	fs.BoolVar(&o.unguarded, "unguarded", true, "storm: also run with coreapi's projection bound lifted, for comparison")
	fs.StringVar(&o.coreapi, "coreapi", "bin/coreapi", "storm and cpu: the coreapi program")
	fs.BoolVar(&o.cpu, "cpu", true, "measure CPU per request of authproxy, coreapi and PostgreSQL (from /proc)")
	fs.StringVar(&o.authproxy, "authproxy", "bin/authproxy", "cpu: the authproxy program")
	fs.DurationVar(&o.cpuDuration, "cpu-duration", 5*time.Second, "cpu: measuring time per row")
	fs.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	fs.Bool("version", false, "print the version, commit and Go version, and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if o.subscribers, err = ints(*subs); err != nil {
		return nil, fmt.Errorf("-subscribers: %w", err)
	}
	if o.rates, err = ints(*rates); err != nil {
		return nil, fmt.Errorf("-rates: %w", err)
	}
	if o.duration <= 0 || o.cpuDuration <= 0 || o.proxies < 1 || o.perProxy < 1 || o.users < 1 || o.maxFetches < 1 {
		return nil, errors.New("-duration, -proxies, -users-per-proxy, -users and -max-fetches must be positive")
	}
	return o, nil
}

// ints parses a comma list of positive integers.
func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("want a comma list of positive integers, got %q", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	if buildinfo.Requested(args) {
		return buildinfo.Print(stdout, "scalesim")
	}
	o, err := parse(args)
	if err != nil {
		return err
	}
	bin, err := scalesim.FindNATSServer(os.Getenv)
	if err != nil {
		return err
	}
	raiseFileLimit(log)
	work, err := os.MkdirTemp("", "scalesim-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var report strings.Builder
	w := io.MultiWriter(stdout, &report)
	host, _ := os.Hostname()
	fmt.Fprintf(w, "# Scale simulation\n\n- date: %s\n- machine: %d cores (GOMAXPROCS %d), %s/%s, %s, host %s\n- load average at start: %s\n- nats-server: %s\n- command: `%s`\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH,
		runtime.Version(), host, loadAvg(), bin, "scalesim "+strings.Join(args, " "))

	if o.fanout {
		sizes := []int{1}
		if o.cluster {
			sizes = append(sizes, 3)
		}
		fmt.Fprintf(w, "## Invalidation fan-out\n\n%s of publishing per row; lag from publish to eviction at every subscriber.\n\n", o.duration)
		var rows []*scalesim.FanoutResult
		for _, size := range sizes {
			c, err := scalesim.StartCluster(bin, work, size)
			if err != nil {
				return err
			}
			for _, n := range o.subscribers {
				for _, r := range o.rates {
					res, err := scalesim.Fanout(ctx, c, scalesim.FanoutConfig{Subscribers: n, Rate: r, Duration: o.duration}, log)
					if err != nil {
						c.Stop()
						return fmt.Errorf("fan-out %d nodes, %d subscribers, %d/s: %w", size, n, r, err)
					}
					rows = append(rows, res)
					log.Info("fan-out result", "applied", res.Applied, "expected", res.Expected, "dropped", res.Dropped,
						"p50", res.Lag.P50.String(), "p99", res.Lag.P99.String(), "max", res.Lag.Max.String(), "nats_cpu", res.NATSCPU.String())
				}
			}
			c.Stop()
		}
		scalesim.WriteFanout(w, rows)
		fmt.Fprintln(w)
	}

	admin := os.Getenv("DATABASE_URL")
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	if o.storm {
		c, err := scalesim.StartCluster(bin, work, 1)
		if err != nil {
			return err
		}
		defer c.Stop()
		variants := [][]string{nil}
		if o.unguarded {
			variants = append(variants, []string{"PROJECTION_MAX_INFLIGHT=1000000", "PROJECTION_MAX_WAIT=1h"})
		}
		var rows []*scalesim.StormResult
		var notes []string
		for _, env := range variants {
			core, err := scalesim.StartCore(ctx, scalesim.CoreConfig{Bin: o.coreapi, AdminURL: admin, Dir: work,
				NATSURL: c.URLs()[0], Users: o.users, Env: env})
			if err != nil {
				return err
			}
			res, err := scalesim.Storm(ctx, core, scalesim.StormConfig{Proxies: o.proxies, UsersPerProxy: o.perProxy,
				MaxFetches: o.maxFetches, NATSURL: c.URLs()[0]}, log)
			core.Stop()
			if err != nil {
				return err
			}
			rows = append(rows, res)
			label := "coreapi defaults (PROJECTION_MAX_INFLIGHT = DB_MAX_CONNS, PROJECTION_MAX_WAIT=100ms)"
			if env != nil {
				label = "coreapi projection bound lifted (" + strings.Join(env, " ") + ")"
			}
			if res.FirstFailure != "" {
				label += "; first error that left a proxy cold: " + res.FirstFailure
			}
			notes = append(notes, fmt.Sprintf("- row %d: %s", len(rows), label))
		}
		fmt.Fprintf(w, "## Cold-start storm\n\n%d proxies start at the same instant against one coreapi (%d members seeded), each loading the JWKS, connecting to NATS and then serving the first requests of %d distinct users at once.\n\n",
			o.proxies, o.users, o.perProxy)
		scalesim.WriteStorm(w, rows)
		fmt.Fprintln(w)
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	if o.cpu {
		if err := measureCPU(ctx, o, bin, work, admin, w); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "Load average at the end: %s. Other work on the machine shares the cores: compare rows of one run, not runs.\n", loadAvg())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// raiseFileLimit lifts the open-file limit to its hard maximum: a thousand
// simulated proxies hold several thousand sockets.
func raiseFileLimit(log *slog.Logger) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		log.Warn("raise open-file limit", "err", err)
	}
}

// measureCPU runs the per-request CPU rows: projection fetches straight to
// coreapi, then warm reads and writes through a real authproxy.
func measureCPU(ctx context.Context, o *options, natsBin, work, admin string, w io.Writer) error {
	c, err := scalesim.StartCluster(natsBin, work, 1)
	if err != nil {
		return err
	}
	defer c.Stop()
	core, err := scalesim.StartCore(ctx, scalesim.CoreConfig{Bin: o.coreapi, AdminURL: admin, Dir: work, NATSURL: c.URLs()[0], Users: o.users})
	if err != nil {
		return err
	}
	defer core.Stop()
	proj, err := scalesim.MeasureProjections(ctx, core, 16, o.cpuDuration)
	if err != nil {
		return err
	}
	proxy, err := scalesim.StartProxy(o.authproxy, work, c.URLs()[0], core)
	if err != nil {
		return err
	}
	defer proxy.Stop()
	rss0, err := proxy.RSS()
	if err != nil {
		return err
	}
	stack, err := scalesim.MeasureStack(ctx, core, proxy, 8, 32, o.cpuDuration)
	if err != nil {
		return err
	}
	rss1, err := proxy.RSS()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "## CPU per request\n\nClosed loop, %s of warm-up (connections opened, new backends' caches filled) then %s measured per row; CPU of each process from /proc over the measured window (PostgreSQL: the backends of coreapi's pool), per request answered as wanted. The load generator runs in this process and shares the cores.\n\n",
		scalesim.CPUWarmup, o.cpuDuration)
	scalesim.WriteCPU(w, append([]*scalesim.CPURow{proj}, stack...))
	fmt.Fprintf(w, "\nauthproxy resident memory: %.1f MiB when ready (keys loaded, caches empty), %.1f MiB after the rows (8 tokens and projections cached, 32 connections).\n\n",
		float64(rss0)/(1<<20), float64(rss1)/(1<<20))
	return nil
}

// loadAvg is the 1, 5 and 15 minute load averages, from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
