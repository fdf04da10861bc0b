package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tollgate-auth/tollgate/deploy/internal/proc"
	"github.com/tollgate-auth/tollgate/deploy/internal/repo"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/tracing/otlptest"
)

// Settings the suite gives the services.
const (
	issuer       = "http://localhost:8080"
	audience     = "tollgate"
	oidcProvider = "test"
	// oauthReturnURL is the (imaginary) web app the OAuth callback hands
	// its one-time code to.
	oauthReturnURL = "http://localhost:3000/signed-in"
	oidcClientID   = "tollgate-e2e"
	// refreshGrace is REFRESH_REUSE_GRACE for the suite: short, so that reuse
	// after the grace window can be exercised without a long wait.
	refreshGrace = time.Second
	// upstreamTimeout bounds how long a proxy waits for coreapi to answer a
	// forwarded request, projectionTimeout for a projection fetch.
	upstreamTimeout   = 3 * time.Second
	projectionTimeout = 2 * time.Second
)

// sys is the running system, set up once by TestMain for every test.
var sys *system

// system is the real stack under test: one PostgreSQL cluster, one NATS
// server, a fake OIDC provider, two coreapi and two authproxy processes.
type system struct {
	root, work, bin string
	hmacKey         string
	mfaKey          string // MFA_ENCRYPTION_KEYS, shared by both cores
	pepper          string // API_KEY_PEPPER, shared by both cores
	keysDir         string
	notesKeys       []identity.Key // the app key list, first = the one the proxies sign with
	pg              *pgCluster
	natsOpts        *server.Options
	nats            *server.Server
	oidc            *fakeOIDC
	mail            *mailbox
	coreA, coreB    *service
	proxyA, proxyB  *service
	notes           *service // the example notes app behind both proxies
	// otlp receives the spans of proxy A and core A (B traces nothing).
	otlp      *otlptest.Receiver
	closeOnce sync.Once
}

// service is one coreapi or authproxy process, restartable on the same
// addresses.
type service struct {
	name        string
	bin         string
	args        []string
	env         []string
	addr, admin string // host:port of the public and admin listeners
	logPath     string
	child       *proc.Child
}

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	// An interrupt stops the stack and removes its files before exiting.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	setupCtx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	s, err := setup(setupCtx)
	if s != nil {
		defer s.close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: set-up: %v\n", err)
		if s != nil {
			s.dumpLogs()
		}
		return 1
	}
	sys = s
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "e2e: interrupted: stopping the stack")
			s.close()
			os.Exit(130)
		case <-finished:
		}
	}()
	code := m.Run()
	if code != 0 {
		s.dumpLogs()
	}
	return code
}

func setup(ctx context.Context) (*system, error) {
	root, err := repo.Root()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "tollgate-e2e-")
	if err != nil {
		return nil, err
	}
	s := &system{root: root, work: work, bin: filepath.Join(work, "bin")}
	// PostgreSQL runs as an unprivileged user when the suite runs as root:
	// it must be able to traverse the work directory to reach its own.
	if err := os.Chmod(work, 0o711); err != nil {
		return s, err
	}

	if err := buildBinaries(ctx, root, s.bin); err != nil {
		return s, err
	}

	// PostgreSQL, NATS, and the public and admin ports of five services.
	ports, err := freePorts(12)
	if err != nil {
		return s, err
	}
	pgPort, natsPort := ports[0], ports[1]
	pgBase := filepath.Join(work, "pg")
	if err := os.Mkdir(pgBase, 0o755); err != nil {
		return s, err
	}
	if s.pg, err = newPGCluster(ctx, pgBase, pgPort); err != nil {
		return s, fmt.Errorf("postgres: %w", err)
	}
	migrate := exec.CommandContext(ctx, filepath.Join(s.bin, "coreapi"), "migrate", "up")
	migrate.Env = append(os.Environ(), "DATABASE_URL="+s.pg.URL())
	if out, err := migrate.CombinedOutput(); err != nil {
		return s, fmt.Errorf("coreapi migrate up: %w\n%s", err, out)
	}

	s.natsOpts = &server.Options{Host: "127.0.0.1", Port: natsPort, NoLog: true, NoSigs: true}
	if err := s.startNATS(); err != nil {
		return s, err
	}

	s.keysDir = filepath.Join(work, "keys")
	gen := exec.CommandContext(ctx, filepath.Join(s.bin, "coreapi"), "keys", "generate", "-dir", s.keysDir)
	if out, err := gen.CombinedOutput(); err != nil {
		return s, fmt.Errorf("coreapi keys generate: %w\n%s", err, out)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s.hmacKey = base64.StdEncoding.EncodeToString(key)
	mk := make([]byte, 32)
	_, _ = rand.Read(mk)
	s.mfaKey = "e2e:" + base64.StdEncoding.EncodeToString(mk)
	pk := make([]byte, 32)
	_, _ = rand.Read(pk)
	s.pepper = base64.StdEncoding.EncodeToString(pk)

	if s.oidc, err = newFakeOIDC(oidcClientID, randToken(24)); err != nil {
		return s, fmt.Errorf("fake oidc: %w", err)
	}

	if s.mail, err = startMailbox(); err != nil {
		return s, fmt.Errorf("smtp: %w", err)
	}

	addrs := make([]string, 10)
	for i := range addrs {
		addrs[i] = "127.0.0.1:" + strconv.Itoa(ports[2+i])
	}
	s.coreA = s.newCore("coreapi-a", addrs[0], addrs[1])
	s.coreB = s.newCore("coreapi-b", addrs[2], addrs[3])
	s.notesKeys = []identity.Key{newAppKey("app-notes")}
	s.notes = s.newNotes("notes", addrs[8], addrs[9], s.notesKeys)
	s.proxyA = s.newProxy("authproxy-a", addrs[4], addrs[5], s.coreA)
	s.proxyB = s.newProxy("authproxy-b", addrs[6], addrs[7], s.coreB)
	// Proxy A and core A trace every request to an OTLP/HTTP receiver in
	// this process, exported within 100 ms; B runs with tracing off.
	if s.otlp, err = otlptest.Start(); err != nil {
		return s, fmt.Errorf("otlp receiver: %w", err)
	}
	for _, svc := range []*service{s.coreA, s.proxyA} {
		svc.env = append(svc.env, "OTEL_EXPORTER_OTLP_ENDPOINT="+s.otlp.URL(), "OTEL_BSP_SCHEDULE_DELAY=100")
	}
	for _, p := range []*service{s.proxyA, s.proxyB} {
		if err := s.useNotes(p, s.notes, s.notesKeys); err != nil {
			return s, err
		}
	}
	// The OAuth redirect URL of both cores is proxy B's callback, so a flow
	// started through proxy A (core A) always finishes on core B.
	s.oidc.redirectURL = "http://" + s.proxyB.addr + "/api/v1/auth/oauth/" + oidcProvider + "/callback"
	for _, c := range []*service{s.coreA, s.coreB} {
		c.env = append(c.env,
			"OIDC_PROVIDERS="+oidcProvider,
			"OIDC_TEST_ISSUER="+s.oidc.issuer(),
			"OIDC_TEST_CLIENT_ID="+oidcClientID,
			"OIDC_TEST_CLIENT_SECRET="+s.oidc.clientSecret,
			"OIDC_TEST_REDIRECT_URL="+s.oidc.redirectURL,
			// The fake provider vouches for the tests' addresses (linking by address).
			"OIDC_TEST_EMAIL_DOMAINS=example.com",
			"OAUTH_ALLOWED_RETURN_URLS="+oauthReturnURL,
			// Mailed links point at proxy A.
			"SMTP_URL="+s.mail.url(),
			"MAIL_FROM=Tollgate E2E <no-reply@e2e.local>",
			"PUBLIC_BASE_URL=http://"+s.proxyA.addr,
		)
	}
	for _, svc := range []*service{s.coreA, s.coreB, s.notes, s.proxyA, s.proxyB} {
		if err := svc.start(ctx); err != nil {
			return s, err
		}
	}
	return s, nil
}

func (s *system) newCore(name, addr, admin string) *service {
	return &service{
		name: name, bin: filepath.Join(s.bin, "coreapi"), args: []string{"serve"},
		addr: addr, admin: admin, logPath: filepath.Join(s.work, name+".log"),
		env: []string{
			"COREAPI_LISTEN_ADDR=" + addr,
			"COREAPI_ADMIN_ADDR=" + admin,
			"DATABASE_URL=" + s.pg.URL(),
			"DB_MAX_CONNS=8",
			"IDENTITY_HMAC_KEY=" + s.hmacKey,
			"MFA_ENCRYPTION_KEYS=" + s.mfaKey,
			"SIGNUP_PER_HOUR=100000",          // every test account signs up from this host
			"PASSWORD_CHECKS_PER_HOUR=100000", // and signs in from it
			"API_KEY_PEPPER=" + s.pepper,
			"NATS_URL=" + s.natsURL(),
			"SIGNING_KEYS_DIR=" + s.keysDir,
			"TOKEN_ISSUER=" + issuer,
			"TOKEN_AUDIENCE=" + audience,
			"REFRESH_REUSE_GRACE=" + refreshGrace.String(),
			"PERMISSIONS_FILE=" + filepath.Join(s.root, "deploy", "examples", "notes", "permissions.yaml"),
			"SHUTDOWN_TIMEOUT=5s",
			"LOG_LEVEL=info",
		},
	}
}

func (s *system) newProxy(name, addr, admin string, core *service) *service {
	return &service{
		name: name, bin: filepath.Join(s.bin, "authproxy"),
		addr: addr, admin: admin, logPath: filepath.Join(s.work, name+".log"),
		env: []string{
			"PROXY_LISTEN_ADDR=" + addr,
			"PROXY_ADMIN_ADDR=" + admin,
			"IDENTITY_URL=http://" + core.addr,
			"IDENTITY_HMAC_KEY=" + s.hmacKey,
			"NATS_URL=" + s.natsURL(),
			"TOKEN_ISSUER=" + issuer,
			"TOKEN_AUDIENCE=" + audience,
			"UPSTREAM_TIMEOUT=" + upstreamTimeout.String(),
			"PROJECTION_TIMEOUT=" + projectionTimeout.String(),
			"LOG_LEVEL=info",
		},
	}
}

// newNotes is an example notes app process verifying with keys.
func (s *system) newNotes(name, addr, admin string, keys []identity.Key) *service {
	return &service{
		name: name, bin: filepath.Join(s.bin, "notes"),
		addr: addr, admin: admin, logPath: filepath.Join(s.work, name+".log"),
		env: []string{
			"NOTES_LISTEN_ADDR=" + addr,
			"NOTES_ADMIN_ADDR=" + admin,
			"TOLLGATE_IDENTITY_KEYS=" + keyList(keys),
			"SHUTDOWN_TIMEOUT=5s",
		},
	}
}

// useNotes points proxy p's /notes routes at the app notes, signed with
// the first of keys, by writing p's own rules file (the example's
// rules.yaml with the app's URL and key id) and p's UPSTREAM_KEYS. A
// running proxy reloads the rules file by itself; UPSTREAM_KEYS takes
// effect at its next start.
func (s *system) useNotes(p, notes *service, keys []identity.Key) error {
	src, err := os.ReadFile(filepath.Join(s.root, "deploy", "examples", "notes", "rules.yaml"))
	if err != nil {
		return err
	}
	text := string(src)
	for from, to := range map[string]string{
		"url: http://127.0.0.1:8082": "url: http://" + notes.addr,
		"key_id: app-notes":          "key_id: " + keys[0].ID,
	} {
		if !strings.Contains(text, from) {
			return fmt.Errorf("example rules.yaml lacks %q", from)
		}
		text = strings.Replace(text, from, to, 1)
	}
	// A directory of its own: the proxy watches the file's directory.
	dir := filepath.Join(s.work, p.name+"-rules")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, "rules.yaml")
	// Written beside and renamed: the watcher never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	p.setEnv("RULES_FILE", path)
	p.setEnv("UPSTREAM_KEYS", keyList(keys))
	return nil
}

// setEnv sets k for the service's next start.
func (v *service) setEnv(k, val string) {
	v.env = slices.DeleteFunc(v.env, func(kv string) bool { return strings.HasPrefix(kv, k+"=") })
	v.env = append(v.env, k+"="+val)
}

// newAppKey is a fresh app key with the given id.
func newAppKey(id string) identity.Key {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	return identity.Key{ID: id, Secret: secret}
}

// keyList is keys as "id:base64,..." (TOLLGATE_IDENTITY_KEYS, UPSTREAM_KEYS).
func keyList(keys []identity.Key) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k.ID + ":" + base64.StdEncoding.EncodeToString(k.Secret)
	}
	return strings.Join(parts, ",")
}

func (s *system) natsURL() string {
	return "nats://" + net.JoinHostPort(s.natsOpts.Host, strconv.Itoa(s.natsOpts.Port))
}

// startNATS starts the in-process NATS server on its fixed port.
func (s *system) startNATS() error {
	opts := *s.natsOpts
	ns, err := server.NewServer(&opts)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return fmt.Errorf("nats on port %d not ready after 10s", s.natsOpts.Port)
	}
	s.nats = ns
	return nil
}

func (s *system) stopNATS() {
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
		s.nats = nil
	}
}

// natsDown stops the suite's NATS server for the rest of t, after checking
// that every service is connected to it, and returns back, which starts it
// again and waits until they all are. Whatever happens in t, later tests
// get NATS back with every client.
func natsDown(t *testing.T) (back func()) {
	t.Helper()
	clients := sys.nats.NumClients()
	if clients < 4 {
		t.Fatalf("NATS has %d clients, want at least 4 (two cores, two proxies)", clients)
	}
	t.Cleanup(func() {
		if sys.nats == nil {
			if err := sys.startNATS(); err != nil {
				t.Errorf("restart NATS: %v", err)
				return
			}
		}
		if err := waitNATSClients(clients); err != nil {
			t.Errorf("after the test: %v", err)
		}
	})
	sys.stopNATS()
	return func() {
		t.Helper()
		if err := sys.startNATS(); err != nil {
			t.Fatal(err)
		}
		if err := waitNATSClients(clients); err != nil {
			t.Fatal(err)
		}
	}
}

// waitNATSClients waits until the suite's NATS server has n clients again.
func waitNATSClients(n int) error {
	return poll(30*time.Second, func() error {
		if sys.nats == nil {
			return fmt.Errorf("NATS is not running")
		}
		if c := sys.nats.NumClients(); c < n {
			return fmt.Errorf("%d of %d NATS clients connected", c, n)
		}
		return nil
	})
}

// close stops every child, NATS, the fake provider and PostgreSQL, and
// removes the work directory.
func (s *system) close() {
	s.closeOnce.Do(s.closeAll)
}

func (s *system) closeAll() {
	for _, svc := range []*service{s.proxyA, s.proxyB, s.notes, s.coreA, s.coreB} {
		if svc != nil {
			svc.stop()
		}
	}
	s.stopNATS()
	if s.otlp != nil {
		_ = s.otlp.Close()
	}
	if s.oidc != nil {
		s.oidc.close()
	}
	if s.mail != nil {
		s.mail.close()
	}
	if s.pg != nil {
		if err := s.pg.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		}
	}
	if os.Getenv("E2E_KEEP") != "" {
		fmt.Fprintf(os.Stderr, "e2e: kept %s\n", s.work)
		return
	}
	_ = os.RemoveAll(s.work)
}

// dumpLogs prints the tail of every service log, for a failed run.
func (s *system) dumpLogs() {
	for _, svc := range []*service{s.coreA, s.coreB, s.notes, s.proxyA, s.proxyB} {
		if svc == nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "---- %s (last 25 lines of %s)\n%s\n", svc.name, svc.logPath, tail(svc.logPath, 25))
	}
	if s.pg != nil {
		fmt.Fprintf(os.Stderr, "---- postgres (last 15 lines)\n%s\n", tail(s.pg.logPath, 15))
	}
}

// start runs the service and waits for its /readyz.
func (v *service) start(ctx context.Context) error {
	lf, err := os.OpenFile(v.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(v.bin, v.args...)
	cmd.Env = append(os.Environ(), v.env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Pdeathsig: the child dies with the test binary, even on a crash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if v.child, err = proc.Start(v.name, cmd, func() { lf.Close() }); err != nil {
		return err
	}
	return v.waitReady(ctx, 30*time.Second)
}

func (v *service) waitReady(ctx context.Context, timeout time.Duration) error {
	if err := proc.WaitReady(ctx, "http://"+v.admin+"/readyz", timeout, v.child); err != nil {
		return fmt.Errorf("%s: %w:\n%s", v.name, err, tail(v.logPath, 30))
	}
	return nil
}

// stop asks the service to shut down (SIGTERM) and kills it if it hangs.
func (v *service) stop() {
	if v.child == nil {
		return
	}
	if err := v.child.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
	}
}

// kill ends the service with SIGKILL: no shutdown, no draining.
func (v *service) kill() {
	if v.child != nil {
		v.child.Kill()
	}
}

func (v *service) url(path string) string { return "http://" + v.addr + path }

func buildBinaries(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out+string(filepath.Separator),
		"./coreapi/cmd/coreapi", "./authproxy/cmd/authproxy", "./deploy/examples/notes/cmd/notes")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, b)
	}
	return nil
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago. They are taken below the kernel's ephemeral range when it can, so
// that no outgoing connection borrows one while a service on it is down
// (the suite restarts core A, NATS and PostgreSQL on their ports).
func freePorts(n int) ([]int, error) {
	lo, hi := 20000, ephemeralLow()
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	var ports []int
	try := func(port int) {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return
		}
		held = append(held, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	if hi-lo >= 1000 {
		start := lo + mrand.IntN(hi-lo)
		for i := 0; i < hi-lo && len(ports) < n; i++ {
			try(lo + (start-lo+i)%(hi-lo))
		}
	}
	for tries := 0; len(ports) < n && tries < 10*n; tries++ {
		try(0) // any port: the kernel never hands out one that is held
	}
	if len(ports) < n {
		return nil, fmt.Errorf("found %d free loopback ports, want %d", len(ports), n)
	}
	return ports, nil
}

// ephemeralLow is the low end of the kernel's ephemeral port range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

func randToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
