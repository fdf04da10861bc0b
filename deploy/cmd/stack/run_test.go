package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// signalWriter records everything written and closes ready when marker
// first appears.
type signalWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	ready  chan struct{}
	once   sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.marker) {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// portTaken reports whether a stack's start failed because one of its
// ports was in use (checked before the start, or when a child bound it).
func portTaken(err error, logs string) bool {
	text := logs
	if err != nil {
		text = err.Error() + "\n" + logs
	}
	return strings.Contains(text, "address already in use") || strings.Contains(text, "ports in use")
}

// TestRunTwice runs the real stack (building the real binaries) on free
// ports, in a database of its own that the stack creates on the server,
// runs the printed curl tour through sh, stops it as Ctrl-C would, and
// does it all again on the same data directory: the second run must reuse
// keys, database and demo users, and the tour must pass again.
func TestRunTwice(t *testing.T) {
	for _, tool := range []string{"sh", "curl", "sed"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the curl tour needs %s: %v", tool, err)
		}
	}
	// DATABASE_URL names the server's own database, as `make run` finds it;
	// the stack must work in a database of its own and leave that one alone.
	t.Setenv("DATABASE_URL", adminURL())
	dbName := dropLater(t, "stack_"+randHex(6))
	before := tableCount(t, adminURL())
	t.Setenv("NATS_URL", "")
	os.Unsetenv("NATS_URL")
	t.Setenv("IDENTITY_HMAC_KEY", "")
	os.Unsetenv("IDENTITY_HMAC_KEY")
	for _, k := range []string{"MFA_ENCRYPTION_KEYS", "MFA_ENCRYPTION_KEYS_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	// Mail goes to an in-process SMTP server (TestMailpit covers Mailpit).
	catcher := startSMTPCatcher(t)
	t.Setenv("SMTP_URL", "smtp://"+catcher.addr)
	t.Setenv("PUBLIC_BASE_URL", "")
	os.Unsetenv("PUBLIC_BASE_URL")
	data := t.TempDir()

	var firstKey, firstAppKey, firstMFAKey []byte
	var mfaU mfaUser
	var firstDemo demo
	for i := range 2 {
		var (
			addrs  []string
			o      options
			stdout *signalWriter
			logs   *signalWriter
			cancel context.CancelFunc
			done   chan error
		)
		// Ports come from :0 and are released before the children bind
		// them, so another process on the machine may take one meanwhile:
		// a start that fails on a taken port is retried on fresh ports.
		for attempt := 1; ; attempt++ {
			addrs = []string{freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)}
			args := []string{
				"-data", data, "-database", dbName,
				"-core-addr", addrs[0], "-core-admin-addr", addrs[1],
				"-proxy-addr", addrs[2], "-proxy-admin-addr", addrs[3],
				"-notes-addr", addrs[4], "-notes-admin-addr", addrs[5],
				"-ready-timeout", "120s",
			}
			var err error
			if o, err = parseFlags(args, ""); err != nil {
				t.Fatal(err)
			}
			stdout = &signalWriter{marker: "Ctrl-C stops everything.", ready: make(chan struct{})}
			logs = &signalWriter{marker: "\x00", ready: make(chan struct{})}
			logger := slog.New(slog.NewJSONHandler(logs, nil))

			var ctx context.Context
			ctx, cancel = context.WithCancel(context.Background())
			done = make(chan error, 1)
			go func() { done <- run(ctx, logger, args, stdout, logs) }()

			select {
			case <-stdout.ready:
			case err := <-done:
				cancel()
				if portTaken(err, logs.String()) && attempt < 3 {
					t.Logf("run #%d, attempt %d: a port was taken before the stack bound it; retrying on fresh ports: %v", i+1, attempt, err)
					continue
				}
				t.Fatalf("run #%d returned before the tour: %v\nlogs:\n%s", i+1, err, logs)
			case <-time.After(5 * time.Minute):
				cancel()
				t.Fatalf("run #%d: no tour after 5 minutes\nlogs:\n%s", i+1, logs)
			}
			break
		}

		// The seed asks the database who exists: no request of its own
		// fails (a first run's sign-in answered 400, a later run's POST
		// /users 409, each logged by both services before the tour).
		// Each service writes its access lines in order: once both have
		// logged a request sent after the tour, the seed's are all in.
		logsUpTo(t, logs, localURL(o.proxyAddr), "/api/v1/health")
		if bad := failedRequestRe.FindAllString(logs.String(), -1); len(bad) != 0 {
			t.Errorf("run #%d: requests that failed before the tour: %q", i+1, bad)
		}
		d := demoFromTour(t, stdout.String())
		out, err := exec.Command("sh", "-c", tourScript(d, o)).CombinedOutput()
		if err != nil {
			t.Errorf("run #%d: tour: %v\n%s", i+1, err, out)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`"email":"admin@example.com"`),
			regexp.MustCompile(`(?m)^grant 2\d\d$`),
			regexp.MustCompile(`(?m)^revoke 2\d\d$`),
			regexp.MustCompile(`(?m)^forged 401$`),
			regexp.MustCompile(`(?m)^member reads notes 200$`),
			regexp.MustCompile(`(?m)"code":"insufficient_scope"[^\n]*\nmember writes a note 403$`),
			regexp.MustCompile(`(?m)^create role 201$`),
			regexp.MustCompile(`(?m)^grant role 2\d\d$`),
			regexp.MustCompile(`(?m)^member writes a note after the grant 201$`),
			regexp.MustCompile(`"text":"written by a note-writer"`),
			regexp.MustCompile(`(?m)^revoke role 2\d\d$`),
			regexp.MustCompile(`(?m)^member writes a note after the revoke 403$`),
			regexp.MustCompile(`(?m)^notes direct 401$`),
			regexp.MustCompile(`(?m)^authproxy_`),
			regexp.MustCompile(`(?m)^forgot 202$`),
		} {
			if !want.Match(out) {
				t.Errorf("run #%d: tour output lacks %s:\n%s", i+1, want, out)
			}
		}

		if !strings.Contains(stdout.String(), "sent to SMTP_URL") {
			t.Errorf("run #%d: the tour does not say where the mail goes:\n%s", i+1, stdout)
		}
		waitMail(t, catcher, "admin@example.com Reset your password", i+1)
		// The README's tour, on this run's ports.
		readme := readmeTour(t, map[string]string{
			"localhost:8080": publicHost(o.proxyAddr), "localhost:8082": publicHost(o.notesAddr), "localhost:9090": publicHost(o.proxyAdmin),
		})
		out, err = exec.Command("sh", "-c", readme).CombinedOutput()
		if err != nil {
			t.Errorf("run #%d: README tour: %v\n%s", i+1, err, out)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`"access_token":"`),                // signup
			regexp.MustCompile(`"email":"admin@example.com"`),     // me
			regexp.MustCompile(`(?m)^\{"data":\[`),                // member reads
			regexp.MustCompile(`"code":"insufficient_scope"`),     // member may not write
			regexp.MustCompile(`"permissions":\["notes:write"\]`), // role created
			regexp.MustCompile(`(?m)^write after the grant 201$`),
			regexp.MustCompile(`"text":"hello","author_id":"` + d.MemberID + `"`),
			regexp.MustCompile(`(?m)^write after the revoke 403$`),
			regexp.MustCompile(`(?m)^api key read 200$`),
			// Refresh gives a new pair; after the sign-out its access token
			// is 401 and its refresh token 400 invalid_grant.
			regexp.MustCompile(`(?m)^\{"access_token":"[^"]+",[^\n]*"refresh_token":"[^"]+"[^\n]*\}\nlogout 204\naccess token after logout 401\n\{[^\n]*"status":400[^\n]*"code":"invalid_grant"`),
			// An invitation to an address of this run's: pasting the tour
			// again invites someone new, not a 409 for a pending invitation.
			regexp.MustCompile(`"email":"friend-\d+-\d+@example\.com","roles":\["member"\],"status":"pending"`),
			regexp.MustCompile(`(?m)^401\n401$`), // forged header, unsigned app request
			regexp.MustCompile(`(?m)^authproxy_`),
			regexp.MustCompile(`"keys":\[`),
		} {
			if !want.Match(out) {
				t.Errorf("run #%d: README tour output lacks %s:\n%s", i+1, want, out)
			}
		}
		// Its forgot-password step names the account it signed up, so that
		// the reset mail it points at exists.
		waitMailMatching(t, catcher, regexp.MustCompile(`^you-\d+-\d+@example\.com Reset your password$`), i+1)

		// MFA works in the stack (MFA_ENCRYPTION_KEYS_FILE is set), and a
		// factor enrolled in the first run still opens in the second.
		if i == 1 {
			signInWithTOTP(t, publicURL(o.proxyAddr), mfaU, i+1)
		}
		mfaU = enrolMFA(t, publicURL(o.proxyAddr), i+1)

		cancel() // as SIGINT/SIGTERM would
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run #%d: stop: %v\nlogs:\n%s", i+1, err, logs)
			}
		case <-time.After(time.Minute):
			t.Fatalf("run #%d: did not stop within a minute", i+1)
		}
		var ports []stackPort
		for _, a := range addrs {
			ports = append(ports, stackPort{"-addr", a})
		}
		if err := portsFree(ports...); err != nil {
			t.Fatalf("run #%d: after stop: %v", i+1, err)
		}

		pems, _ := filepath.Glob(filepath.Join(data, "keys", "*.pem"))
		if len(pems) != 1 {
			t.Errorf("run #%d: %d signing keys, want 1 (created once, then reused)", i+1, len(pems))
		}
		if got := tableCount(t, adminURL()); got != before {
			t.Errorf("run #%d: the server's own database has %d tables, had %d: the stack wrote into it", i+1, got, before)
		}
		appKey, err := os.ReadFile(filepath.Join(data, "app-notes.keys"))
		if err != nil || !strings.HasPrefix(string(appKey), "app-notes:") {
			t.Errorf("run #%d: app key file: %q, %v", i+1, appKey, err)
		}
		key, err := os.ReadFile(filepath.Join(data, "identity.key"))
		if err != nil {
			t.Fatal(err)
		}
		mfaKey, err := os.ReadFile(filepath.Join(data, "mfa.keys"))
		if err != nil || !strings.HasPrefix(string(mfaKey), mfaKeyID+":") {
			t.Errorf("run #%d: MFA key file: %q, %v", i+1, mfaKey, err)
		}
		if i == 0 {
			firstKey, firstAppKey, firstMFAKey = key, appKey, mfaKey
		} else if !bytes.Equal(key, firstKey) || !bytes.Equal(appKey, firstAppKey) || !bytes.Equal(mfaKey, firstMFAKey) {
			t.Error("second run replaced the HMAC key, the app key or the MFA key")
		}
		if i == 0 {
			firstDemo = d
		} else if d != firstDemo {
			t.Errorf("second run seeded %+v, want the first run's %+v", d, firstDemo)
		}
		// make reset drops what this records: the run's database, which
		// the first run created (the second found it).
		if rec, err := readUsedDB(data); err != nil || rec.Database != dbName || !rec.Created || rec.ServerID == "" {
			t.Errorf("run #%d: record of the database used: %+v, %v; want %s, created", i+1, rec, err, dbName)
		}
	}
}

// waitMail waits until the catcher has received n mails to "rcpt subject".
func waitMail(t *testing.T, c *smtpCatcher, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := 0
		for _, m := range c.received() {
			if m == want {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails %q after 20s, want %d; received %v", got, want, n, c.received())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitMailMatching waits up to 20 s for n mails matching re ("to subject").
func waitMailMatching(t *testing.T, c *smtpCatcher, re *regexp.Regexp, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := 0
		for _, m := range c.received() {
			if re.MatchString(m) {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails matching %s after 20s, want %d; received %v", got, re, n, c.received())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logsUpTo sends GET path to the proxy at base and waits (up to 10 s)
// until authproxy and coreapi have both logged it.
func logsUpTo(t *testing.T, logs *signalWriter, base, path string) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	line := `"path":"` + path + `"`
	for deadline := time.Now().Add(10 * time.Second); strings.Count(logs.String(), line) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no access lines of GET %s from both services after 10 s:\n%s", path, logs)
		}
	}
}

// failedRequestRe is a request line of coreapi's or authproxy's access
// log that answered an error: its method, path and status.
var failedRequestRe = regexp.MustCompile(`"method":"[A-Z]+","path":"[^"]*"[^\n]*?"status":[45]\d\d`)

var (
	tenantRe = regexp.MustCompile(`demo\s+tenant (\S+)`)
	memberRe = regexp.MustCompile(`member \S+ / \S+ \(id ([^)]+)\)`)
	adminRe  = regexp.MustCompile(`X-Auth-User-Id: ([^']+)'`)
)

// demoFromTour reads the demo ids back from the printed tour.
func demoFromTour(t *testing.T, tour string) demo {
	t.Helper()
	var d demo
	for re, dst := range map[*regexp.Regexp]*string{tenantRe: &d.TenantID, memberRe: &d.MemberID, adminRe: &d.AdminID} {
		m := re.FindStringSubmatch(tour)
		if m == nil {
			t.Fatalf("tour lacks %s:\n%s", re, tour)
		}
		*dst = m[1]
	}
	if d.TenantID == "" || d.MemberID == "" || d.AdminID == "" {
		t.Fatal(errors.New("empty demo id in the tour"))
	}
	return d
}

// readmeTour is the shell block of README.md's "A 60-second tour", with
// addresses replaced.
func readmeTour(t *testing.T, addrs map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## A 60-second tour")
	if !ok {
		t.Fatal("README.md has no tour")
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	script, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README.md's tour has no sh block")
	}
	for from, to := range addrs {
		script = strings.ReplaceAll(script, from, to)
	}
	return script
}

// publicHost is a listen address as the README spells it (localhost:port).
func publicHost(addr string) string {
	return strings.TrimPrefix(publicURL(addr), "http://")
}
