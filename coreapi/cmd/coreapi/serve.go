package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/pgtrace"
	"github.com/tollgate-auth/tollgate/coreapi/internal/schema"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tlscert"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/envconfig"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// accessLinesInterval is how often buffered access lines are written at
// least.
const accessLinesInterval = 100 * time.Millisecond

// startupDBTimeout bounds, together, the steps of serve's start that wait
// for the database before it listens (the schema check, the case mapping,
// the signing keys' first sightings): a database that does not answer
// delays /healthz by this much at most, far within the startup probe.
// What did not get an answer is done once the database answers
// (checkDatabaseLater).
const startupDBTimeout = 5 * time.Second

// storedParamsRetry is how long readStoredParams waits after a failed read.
const storedParamsRetry = 30 * time.Second

// startupRetryEvery paces the database checks of a start that did not get
// an answer, until one does.
const startupRetryEvery = time.Second

// serveFlags are serve's flags; its -h prints the whole help, since serve
// is what `coreapi -h` reaches.
func serveFlags() (fs *flag.FlagSet, checkOnly *bool) {
	fs = flag.NewFlagSet("serve", flag.ContinueOnError)
	checkOnly = fs.Bool("check-config", false, "validate the configuration, print it with secrets masked, and exit")
	fs.Bool("version", false, "print the version, commit and Go version, and exit")
	fs.Usage = func() { writeHelp(fs.Output(), fs) }
	return fs, checkOnly
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	return serveWith(ctx, args, getenv, stdout, hooks{})
}

// serveWith is serve with h's hooks (tests' parts in it; none in
// production).
func serveWith(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, h hooks) error {
	fs, checkOnly := serveFlags()
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	// SIGHUP reloads the signing keys at once. Registered before anything
	// else, so that a signal sent while coreapi starts (waiting for its
	// database, say) is a reload once the keys' watch runs, never the
	// default action, which ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := config.Load(getenv)
	if *checkOnly {
		// Beyond the variables: the signing keys can be read.
		err = envconfig.Join(err, cfg.CheckFiles()...)
	}
	if err != nil {
		return err
	}
	if *checkOnly {
		for _, w := range cfg.Warnings {
			if _, err := fmt.Fprintln(stdout, "# warning:", w); err != nil {
				return err
			}
		}
		_, err := fmt.Fprint(stdout, cfg.String(), "configuration ok\n")
		return err
	}
	// One output: records written at once, access lines (one per request)
	// in batches every accessLinesInterval, before any later record.
	lines := logging.NewLines(stdout, accessLinesInterval)
	defer lines.Close()
	logh := logging.NewHandler(lines, cfg.LogLevel)
	accessh := logging.NewHandler(lines.Appender(), cfg.LogLevel)
	if cfg.Tracing.Enabled() {
		logh = tracing.LogHandler{Handler: logh} // trace_id on a traced request's lines
		accessh = tracing.LogHandler{Handler: accessh}
	}
	log := slog.New(logh)
	log.Info("starting", "config", cfg)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}

	tp, err := tracing.New(ctx, cfg.Tracing, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := tp.Shutdown(context.WithoutCancel(ctx)); err != nil {
			log.Warn("tracing shutdown", "err", err)
		}
	}()
	popts := pgtrace.PoolOptions{MaxConns: cfg.DBMaxConns, ExecMode: cfg.ExecMode()}
	if tp != nil {
		popts.TracerProvider = tp.TracerProvider()
	}
	pool, err := pgtrace.NewPool(ctx, cfg.DatabaseURL, popts)
	if err != nil {
		return err
	}
	defer pool.Close()
	// Every step of the start that waits for the database shares one
	// deadline: a database that does not answer at all (a partition, a
	// failover to a stale address) must not keep /healthz down until the
	// startup probe kills the pod, again and again.
	startCtx, startDone := context.WithTimeout(ctx, startupDBTimeout)
	defer startDone()
	// An older schema would answer requests with 500s: refuse to start and
	// say what to run. An unreachable database is not a reason to refuse:
	// serve starts not ready, and checks once the database answers
	// (checkDatabaseLater), before any background work runs.
	checked := make(chan struct{}) // closed once the database was checked
	hasher := password.New(password.OWASP(), 0)
	if err := checkDatabase(startCtx, pool, log); errors.Is(err, schema.ErrOutdated) {
		return err
	} else if err != nil {
		log.Warn("database not checked at start: not ready, and no background work runs, until it answers (asked again every second); "+
			"coreapi stops then if its schema is older than it needs", "err", err, "timeout", startupDBTimeout)
	} else {
		close(checked)
	}
	if cfg.IdentityAcceptV1 {
		log.Warn("accepting v1 identity signatures (IDENTITY_ACCEPT_V1=true): they bind neither the body nor a request id; " +
			"set IDENTITY_ACCEPT_V1=false once every proxy sends v2 (the setting goes away in the next release)")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		pgtrace.NewPoolCollector(pool))

	opts := httpapi.Options{
		Logger:          log,
		AccessLogger:    slog.New(accessh),
		Pool:            pool,
		IdentityKeys:    cfg.IdentityKeys,
		AcceptV1:        cfg.IdentityAcceptV1,
		ReplayCacheSize: cfg.IdentityReplayCacheSize,
		CursorKey:       httpapi.DeriveCursorKey(cfg.IdentityKeys[0].Secret),
		Registerer:      reg,
		MaxBodyBytes:    cfg.MaxBodyBytes,
		AccessTokenTTL:  cfg.AccessTokenTTL,
		TokenMaxLeeway:  cfg.TokenMaxLeeway,
		Catalog:         cfg.Catalog,
		Tracing:         tp,

		ProjectionMaxInFlight: cfg.ProjectionMaxInFlight,
		ProjectionMaxWait:     cfg.ProjectionMaxWait,
	}
	if opts.ProjectionMaxWait == 0 {
		opts.ProjectionMaxWait = -1 // PROJECTION_MAX_WAIT=0: refuse at once
	}
	if err := wireTenantAPI(pool, hasher, cfg.Catalog, cfg.PasswordChecksPerHour, invitationLimits(cfg), &opts); err != nil {
		return err
	}
	// Sign-in (auth, keys, sessions, oauth, outbox relay) plugs in here:
	// it appends to opts.Register and opts.ErrorMappers, and starts its
	// background workers and the outbox relay on g below.
	bg, relay, signInReady, err := wireSignIn(startCtx, cfg, log, pool, reg, hasher, hup, &opts)
	if err != nil {
		return err
	}
	startDone()

	catalogDone := make(chan struct{})
	bg = append(bg, recordCatalog(cfg.Catalog, pool, log, catalogDone),
		rereadCatalog(cfg.Catalog, pool, log, catalogRereadEvery, catalogDone))

	srv, err := httpapi.New(opts)
	if err != nil {
		return err
	}
	if h.server != nil {
		h.server(srv)
	}
	// Readiness asks the database on a connection of its own: probes never
	// wait behind requests for a pool connection (httpapi.DBProbe).
	probe := httpapi.NewDBProbe(pool)
	defer probe.Close()
	admin := httpapi.NewAdmin(probe, reg)
	admin.SetSchemaCheck(readySchema(log, func(ctx context.Context) error {
		return probe.Do(ctx, func(ctx context.Context, c *pgx.Conn) error { return schema.Check(ctx, c) })
	}))
	admin.AddCheck(func() error {
		select {
		case <-checked:
			return nil
		default:
			return errors.New("database not checked since the start")
		}
	})
	admin.AddCheck(signInReady)
	admin.AddCheck(catalogRecorded(catalogDone))

	certs, err := loadCerts(cfg, log, reg, srv.HandshakeFailures)
	if err != nil {
		return err
	}
	ln, adminLn, err := listen(cfg, certs, log)
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	// A shutdown stops the writers of outbox rows before the relay that
	// publishes them (shutdown): the public server drains, the background
	// workers (sweeps, mail, the signing keys' watch, the catalog's record)
	// stop, and only then does the relay flush what is pending and stop.
	// A row committed by the last request or the last sweep goes out now,
	// not when another replica's relay (or this one's next start) picks
	// it up.
	wctx, stopWriters := context.WithCancel(context.WithoutCancel(gctx))
	defer stopWriters()
	rctx, stopRelay := context.WithCancel(context.WithoutCancel(gctx))
	defer stopRelay()
	if h.writer != nil {
		bg = append(bg, h.writer)
	}
	// The writers change data by this build's rules: none runs before the
	// schema was found recent enough.
	var writers sync.WaitGroup
	for _, w := range bg {
		writers.Add(1)
		g.Go(func() error {
			defer writers.Done()
			if !waitChecked(wctx, checked) {
				return nil
			}
			return w(wctx)
		})
	}
	g.Go(func() error { return checkDatabaseLater(gctx, pool, log, checked) })
	g.Go(func() error { readStoredParams(gctx, pool, log, hasher, checked); return nil })
	writersDone := make(chan struct{})
	go func() { writers.Wait(); close(writersDone) }()
	g.Go(func() error { return srv.Serve(ln) })
	g.Go(func() error { return admin.Serve(adminLn) })
	g.Go(func() error {
		err := relay(rctx)
		h.at("relay stopped")
		return err
	})
	g.Go(func() error {
		<-gctx.Done()
		defer stopRelay()
		return shutdown(log, cfg.ShutdownTimeout, admin, srv, stopWriters, writersDone, h)
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// loadCerts loads the API listener's TLS pair (COREAPI_TLS_CERT_FILE and
// KEY_FILE), read again when it changes, and registers its metrics, with
// the count of failed handshakes (handshakeFailures); nil without one (the
// admin listener stays plain HTTP).
func loadCerts(cfg config.Config, log *slog.Logger, reg prometheus.Registerer, handshakeFailures func() int64) (*tlscert.Files, error) {
	if cfg.TLSCertFile == "" {
		return nil, nil
	}
	certs, err := tlscert.Load(cfg.TLSCertFile, cfg.TLSKeyFile, tlscert.Options{Log: log})
	if err != nil {
		return nil, err
	}
	// The expiry of the certificate served (a scrape looks at the files
	// as a handshake does, so a renewal shows without traffic) and the
	// renewals that did not load: a renewal that never arrives or never
	// loads is found before clients refuse the old certificate.
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coreapi_tls_cert_expiry_timestamp_seconds",
			Help: "Unix time at which the certificate the API listener serves expires.",
		}, func() float64 { return float64(certs.Current().Leaf.NotAfter.Unix()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coreapi_tls_cert_reload_failures_total",
			Help: "Changed or vanished TLS certificate files that did not load; the certificate served before stays in use.",
		}, func() float64 { return float64(certs.Failures()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coreapi_tls_handshake_failures_total",
			Help: "TLS handshakes that failed on the API listener (a client that does not trust the certificate, plain HTTP sent to it); no request is counted for them.",
		}, func() float64 { return float64(handshakeFailures()) }),
	)
	return certs, nil
}

// listen opens the API listener, with TLS when certs is not nil, and the
// admin listener.
func listen(cfg config.Config, certs *tlscert.Files, log *slog.Logger) (ln, adminLn net.Listener, err error) {
	if ln, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
		return nil, nil, fmt.Errorf("listen: %w", err)
	}
	if adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		_ = ln.Close()
		return nil, nil, fmt.Errorf("listen admin: %w", err)
	}
	if certs != nil {
		ln = tls.NewListener(ln, certs.TLSConfig())
		leaf := certs.Certificate().Leaf
		log.Info("serving TLS", "cert_file", cfg.TLSCertFile, "subject", leaf.Subject.String(), "dns_names", leaf.DNSNames,
			"not_after", leaf.NotAfter)
	}
	log.Info("listening", "addr", ln.Addr().String(), "admin_addr", adminLn.Addr().String(), "tls", certs != nil)
	return ln, adminLn, nil
}

// checkDatabase runs the checks of the database that serve makes before it
// serves: the schema's version (an error wrapping schema.ErrOutdated when
// it is older than this build needs; any other error: the database could
// not be asked, e.g. it did not answer in time) and the case mapping (a
// warning only, not made when it cannot be asked).
func checkDatabase(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	if err := schema.Check(ctx, pool); err != nil {
		return err
	}
	if ok, ctype, err := schema.CaseMapping(ctx, pool); err == nil && !ok {
		log.Warn("the database lowercases ASCII letters only (LC_CTYPE "+ctype+"): addresses that differ in the case of a non-ASCII letter "+
			"are two accounts to the database and one to coreapi's checks; create it with a UTF-8 LC_CTYPE such as C.UTF-8 (docs/operations.md, Database)",
			"lc_ctype", ctype)
	}
	return nil
}

// readStoredParams tells hasher the parameter sets of the stored password
// hashes (users.StoredPasswordParams), so that every password check costs
// what one with each of them does (password.Hasher.VerifyForm): a check
// of a hash made with older parameters took another time than an unknown
// address's. It reads once the database is checked, beside readiness and
// without the start's deadline: the read is one pass over every account,
// which on a large users table takes longer than that deadline (serve
// never became ready when it was one of the start's checks). Until it
// has read, checks run as before; a failed read is tried again every
// storedParamsRetry until ctx ends.
func readStoredParams(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, hasher *password.Hasher, checked <-chan struct{}) {
	if !waitChecked(ctx, checked) {
		return
	}
	for {
		stored, err := users.StoredPasswordParams(ctx, pool)
		if err == nil {
			if hasher.SetStored(stored) > 1 {
				log.Info("password checks run argon2 with each parameter set of the stored hashes (an older hash is replaced at its account's next sign-in)",
					"sets", len(stored), "params", stored)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("stored password hashes' parameters not read: a check of an older hash costs another time than an unknown address's until they are (tried again)",
			"err", err, "retry", storedParamsRetry)
		select {
		case <-ctx.Done():
			return
		case <-time.After(storedParamsRetry):
		}
	}
}

// waitChecked waits for checked to close and reports whether it did; false
// when ctx ended first. A database already checked counts even when ctx
// has ended too (a shutdown right at the start): the writer then runs with
// its ended context, as it would have a moment later, and stops at once.
func waitChecked(ctx context.Context, checked <-chan struct{}) bool {
	select {
	case <-checked:
		return true
	default:
	}
	select {
	case <-checked:
		return true
	case <-ctx.Done():
		return false
	}
}

// checkDatabaseLater runs checkDatabase every startupRetryEvery, each
// within startupDBTimeout, until it gets an answer, unless checked is
// closed already (the start's own check had one). A recent enough schema
// closes checked: the background work starts, and readiness no longer
// waits for it. An older one is returned, and serve stops as it does when
// the database answers at start: exiting, rather than staying up not ready,
// keeps the background work of this build off a schema it does not know,
// and a rollout that ran ahead of its migration shows as the crash loop
// (with its `coreapi migrate up` message) an operator already knows from
// a start on that schema.
func checkDatabaseLater(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, checked chan struct{}) error {
	select {
	case <-checked:
		return nil
	default:
	}
	t := time.NewTicker(startupRetryEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, startupDBTimeout)
		err := checkDatabase(cctx, pool, log)
		cancel()
		switch {
		case errors.Is(err, schema.ErrOutdated):
			return err
		case err == nil:
			log.Info("database checked: starting the background work")
			close(checked)
			return nil
		}
	}
}

// shutdown marks the service not ready, drains the public server, then
// stops the background writers and waits for them, all within one deadline
// (SHUTDOWN_TIMEOUT), then stops the admin server. The outbox relay stops
// after it (its last flush bounded by its own FlushTimeout), and the pool
// after that. A writer still running at the deadline is not waited for:
// what it commits later is left for the next relay. h is told the steps.
func shutdown(log *slog.Logger, timeout time.Duration, admin *httpapi.Admin, srv *httpapi.Server,
	stopWriters func(), writersDone <-chan struct{}, h hooks) error {
	log.Info("shutting down", "timeout", timeout)
	admin.SetNotReady()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	stopWriters()
	h.at("writers stopping")
	select {
	case <-writersDone:
	case <-ctx.Done():
		log.Warn("background work still running at the shutdown deadline: the outbox relay stops without waiting for it, and what it commits later waits for the next relay",
			"timeout", timeout)
	}
	if aerr := admin.Shutdown(ctx); err == nil {
		err = aerr
	}
	return err
}

// hooks let tests take part in serve (serveWith): writer runs beside the
// background workers, step is told when a shutdown reaches a step
// ("writers stopping": they were told to stop and are waited for, the
// relay still running; "relay stopped": its Run returned), and server is
// handed the public server once built, its routes all registered. serve
// runs with none.
type hooks struct {
	writer worker
	step   func(string)
	server func(*httpapi.Server)
}

func (h hooks) at(step string) {
	if h.step != nil {
		h.step(step)
	}
}

// errSchemaUnread is what /readyz says when the schema's version could
// not be read.
var errSchemaUnread = errors.New("the database's schema version could not be read (coreapi's log says why)")

// readySchema is check for /readyz, which anyone who reaches the admin
// listener reads: a schema behind this build is said as it is (the
// version and `coreapi migrate up`), while another failure, whose driver
// error can name the database's host, user and database, is logged and
// answered with errSchemaUnread.
func readySchema(log *slog.Logger, check func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		err := check(ctx)
		if err == nil || errors.Is(err, schema.ErrOutdated) {
			return err
		}
		log.Warn("readiness: schema check", "err", err)
		return errSchemaUnread
	}
}
