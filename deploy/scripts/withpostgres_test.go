package scripts

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/deploy/internal/pgcheck"
	"github.com/tollgate-auth/tollgate/shared/eventually"
)

var script = filepath.Join("..", "..", "scripts", "with-postgres.sh")

// localURL is the DATABASE_URL of a cluster the script started: its
// superuser with the cluster's password, on 127.0.0.1.
var localURL = regexp.MustCompile(`^postgres://postgres:[0-9a-f]{32}@127\.0\.0\.1:[0-9]+/postgres\?sslmode=disable$`)

// needServer skips unless bash and the PostgreSQL server binaries the
// script looks for are installed.
func needServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	if _, err := exec.LookPath("initdb"); err == nil {
		return
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) > 0 {
		return
	}
	t.Skip("no initdb installed")
}

// withPostgres runs the script with PG_LOCAL=1 (always a local cluster) and
// the extra environment, printing $DATABASE_URL from inside.
func withPostgres(t *testing.T, env ...string) (url string, stderr string, err error) {
	t.Helper()
	cmd := exec.Command("bash", script, "sh", "-c", `printf %s "$DATABASE_URL"`)
	cmd.Env = append(os.Environ(), append([]string{"PG_LOCAL=1", "DATABASE_URL="}, env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("with-postgres.sh did not finish\n%s", errb.String())
	}
	return out.String(), errb.String(), err
}

// persistDir is a PG_PERSIST_DIR in a directory every user can reach (the
// cluster runs as an unprivileged user when the tests run as root).
func persistDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "with-postgres-test-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "postgres")
}

// TestWithPostgresMovesOffATakenPort: a kept cluster (`make run`) whose
// recorded port another program has taken since starts on a free port
// instead of failing on every run (and `make reset` with it).
func TestWithPostgresMovesOffATakenPort(t *testing.T) {
	needServer(t)
	pd := persistDir(t)
	first, stderr, err := withPostgres(t, "PG_PERSIST_DIR="+pd)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, stderr)
	}
	port, err := os.ReadFile(filepath.Join(pd, "port"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strings.TrimSpace(string(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	second, stderr, err := withPostgres(t, "PG_PERSIST_DIR="+pd)
	if err != nil {
		t.Fatalf("second run, with port %s taken: %v\n%s", port, err, stderr)
	}
	if second == first || !localURL.MatchString(second) {
		t.Errorf("second run's DATABASE_URL = %q (first %q)", second, first)
	}
	if !strings.Contains(stderr, "taken") {
		t.Errorf("second run does not say the port moved:\n%s", stderr)
	}
	// The new port is kept for the next run.
	now, _ := os.ReadFile(filepath.Join(pd, "port"))
	if n, err := strconv.Atoi(strings.TrimSpace(string(now))); err != nil || !strings.Contains(second, ":"+strconv.Itoa(n)+"/") {
		t.Errorf("port file holds %q, the run used %q", now, second)
	}
}

// TestWithPostgresUnreachableDirAsRoot: run as root, the cluster runs as an
// unprivileged user; a directory that user cannot reach (a repository under
// /root, mode 0700) is refused up front with what to do, not with initdb's
// "Permission denied".
func TestWithPostgresUnreachableDirAsRoot(t *testing.T) {
	needServer(t)
	if os.Geteuid() != 0 {
		t.Skip("not root")
	}
	closed := t.TempDir() // 0700: only root gets in
	pd := filepath.Join(closed, "repo", ".data", "postgres")
	_, stderr, err := withPostgres(t, "PG_PERSIST_DIR="+pd)
	if err == nil {
		t.Fatalf("succeeded in %s:\n%s", pd, stderr)
	}
	for _, want := range []string{"cannot reach " + pd, "DATABASE_URL", "PG_PERSIST_DIR"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "initdb") {
		t.Errorf("initdb ran:\n%s", stderr)
	}
}

// TestWithPostgresBash32: the script runs under macOS's /bin/bash, which
// is 3.2. An array is expanded only as ${A[@]+"${A[@]}"}: there (and up to
// bash 4.3) "${A[@]}" of an empty array is an unbound variable under
// set -u, so a run as a regular user, whose RUN_AS is empty, stopped at
// initdb. Nor may it use what bash 3.2 lacks (mapfile, associative arrays,
// case conversion in an expansion). This bash is newer, so the text is
// what is checked.
func TestWithPostgresBash32(t *testing.T) {
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	guarded := regexp.MustCompile(`\$\{(\w+)\[@\]\+"\$\{(\w+)\[@\]\}"\}`)
	bare := regexp.MustCompile(`"\$\{\w+\[@\]\}"`)
	lacking := regexp.MustCompile(`\bmapfile\b|\breadarray\b|\b(declare|local|typeset) -A\b|\$\{\w+(,,?|\^\^?)\}`)
	for i, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if m := bare.FindString(guarded.ReplaceAllString(line, "")); m != "" {
			t.Errorf("line %d expands %s unguarded (an unbound variable in bash 3.2 when empty): %s", i+1, m, line)
		}
		if m := lacking.FindString(line); m != "" {
			t.Errorf("line %d uses %q, which bash 3.2 lacks: %s", i+1, m, line)
		}
	}
}

// TestWithPostgresDeepOrSpacedDir: `make run` keeps its cluster in the
// checkout (.data/postgres), wherever that is. A Unix socket there failed
// the start in a checkout whose path is long (a socket path is at most 107
// bytes) and split the server's options in a path with a space. The
// cluster listens on TCP only, so the directory's path does not matter.
func TestWithPostgresDeepOrSpacedDir(t *testing.T) {
	needServer(t)
	for name, dir := range map[string]string{
		"deep":   "checkouts/" + strings.Repeat("d", 80) + "/tollgate/.data",
		"spaced": "My Projects/tollgate/.data",
	} {
		t.Run(name, func(t *testing.T) {
			pd := filepath.Join(filepath.Dir(persistDir(t)), dir, "postgres")
			for p := pd; p != os.TempDir(); p = filepath.Dir(p) {
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			url, stderr, err := withPostgres(t, "PG_PERSIST_DIR="+pd)
			if err != nil {
				t.Fatalf("PG_PERSIST_DIR=%q: %v\n%s", pd, err, stderr)
			}
			if !localURL.MatchString(url) {
				t.Errorf("DATABASE_URL = %q", url)
			}
		})
	}
}

// TestMakeResetInSpacedCheckout: `make reset` removes the checkout's .data
// and nothing else when the checkout's path holds a space; unquoted, its
// rm -rf was given the path's pieces, the first of them a directory
// outside the checkout.
func TestMakeResetInSpacedCheckout(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	root := t.TempDir()
	outside := filepath.Join(root, "My")
	checkout := filepath.Join(root, "My Projects", "tollgate")
	for _, d := range []string{outside, filepath.Join(checkout, "scripts"), filepath.Join(checkout, ".data", "postgres")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(checkout, "Makefile"):                    string(mk),
		filepath.Join(checkout, "scripts", "with-postgres.sh"): "#!/bin/sh\nexit 0\n",
		filepath.Join(outside, "keep"):                         "x",
	}
	for name, body := range files {
		if err := os.WriteFile(name, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("make", "reset", "GO=true")
	cmd.Dir = checkout
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make reset: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("make reset removed %s, outside the checkout: %v", outside, err)
	}
	if _, err := os.Stat(filepath.Join(checkout, ".data")); !os.IsNotExist(err) {
		t.Errorf("make reset left %s/.data: %v", checkout, err)
	}
}

// TestMakeResetUsesTheRecordedCluster: after a `make run` on a cluster
// of its own (PG_LOCAL=1, or 5432 down), `make reset` starts that cluster
// (PG_LOCAL=1, its directory) instead of reaching 127.0.0.1:5432, where it
// dropped a database the stack never used; with a record of another
// server, or none, it finds its server as `make run` does.
func TestMakeResetUsesTheRecordedCluster(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, record, want string
	}{
		{"local cluster", "database=tollgate\nsystem_identifier=7\nlocal=/srv/pg dir\ncreated=true\n", "PG_LOCAL=1 PG_PERSIST_DIR=/srv/pg dir"},
		{"another server", "database=tollgate\nsystem_identifier=7\nlocal=\ncreated=true\n", "PG_LOCAL= PG_PERSIST_DIR={checkout}/.data/postgres"},
		{"no record", "", "PG_LOCAL= PG_PERSIST_DIR={checkout}/.data/postgres"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkout := t.TempDir()
			seen := filepath.Join(t.TempDir(), "seen")
			if err := os.MkdirAll(filepath.Join(checkout, "scripts"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(checkout, ".data"), 0o755); err != nil {
				t.Fatal(err)
			}
			files := map[string]string{
				filepath.Join(checkout, "Makefile"):                    string(mk),
				filepath.Join(checkout, "scripts", "with-postgres.sh"): "#!/bin/sh\nprintf 'PG_LOCAL=%s PG_PERSIST_DIR=%s' \"$PG_LOCAL\" \"$PG_PERSIST_DIR\" >'" + seen + "'\n",
			}
			if tt.record != "" {
				files[filepath.Join(checkout, ".data", "database")] = tt.record
			}
			for name, body := range files {
				if err := os.WriteFile(name, []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("make", "reset", "GO=true")
			cmd.Dir = checkout
			cmd.Env = []string{"PG_LOCAL="} // and no PG_PERSIST_DIR: the Makefile's default
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "PG_LOCAL=") && !strings.HasPrefix(kv, "PG_PERSIST_DIR=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("make reset: %v\n%s", err, out)
			}
			got, err := os.ReadFile(seen)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ReplaceAll(tt.want, "{checkout}", checkout); string(got) != want {
				t.Errorf("make reset ran with-postgres.sh with %q, want %q", got, want)
			}
		})
	}
}

// TestWithPostgresNamesItsKeptCluster: the command learns the directory
// of the kept cluster it runs on (PG_LOCAL_CLUSTER), which `make run`
// records so that `make reset` starts that cluster again; on a throwaway
// cluster, whose databases go with it, and on a server of DATABASE_URL
// (one set in the caller's environment included) it is empty.
func TestWithPostgresNamesItsKeptCluster(t *testing.T) {
	needServer(t)
	pd := persistDir(t)
	run := func(env ...string) string {
		t.Helper()
		cmd := exec.Command("bash", script, "sh", "-c", `printf '[%s]' "$PG_LOCAL_CLUSTER"`)
		cmd.Env = append(os.Environ(), append([]string{"PG_LOCAL_CLUSTER=/stale"}, env...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("with-postgres.sh %v: %v", env, err)
		}
		return string(out)
	}
	if got := run("PG_LOCAL=1", "DATABASE_URL=", "PG_PERSIST_DIR="+pd); got != "["+pd+"]" {
		t.Errorf("kept cluster: PG_LOCAL_CLUSTER = %s, want [%s]", got, pd)
	}
	if got := run("PG_LOCAL=1", "DATABASE_URL=", "PG_PERSIST_DIR="); got != "[]" {
		t.Errorf("throwaway cluster: PG_LOCAL_CLUSTER = %s, want []", got)
	}
	if got := run("DATABASE_URL=postgres://u@h/db"); got != "[]" {
		t.Errorf("DATABASE_URL: PG_LOCAL_CLUSTER = %s, want []", got)
	}
}

// TestMakeRunPassesRunFlags: make run RUNFLAGS=… hands the flags to the
// stack, so a run beside other services (other ports, another database)
// keeps make run's PostgreSQL handling.
func TestMakeRunPassesRunFlags(t *testing.T) {
	cmd := exec.Command("make", "-n", "run", "RUNFLAGS=-proxy-addr 127.0.0.1:18080 -database tollgate_other", "TRACES=1")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "/stack -traces -proxy-addr 127.0.0.1:18080 -database tollgate_other") {
		t.Fatalf("make run does not pass RUNFLAGS (and TRACES) to the stack:\n%s", out)
	}
}

// startScript starts the script with PG_LOCAL=1, the extra environment and
// the given shell command, its stderr in a file (a server left running must
// hold no pipe of the test's).
func startScript(t *testing.T, shell string, env ...string) (*exec.Cmd, *os.File) {
	t.Helper()
	errf, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", script, "sh", "-c", shell)
	cmd.Env = append(os.Environ(), append([]string{"PG_LOCAL=1", "DATABASE_URL="}, env...)...)
	cmd.Stdout, cmd.Stderr = errf, errf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, errf
}

func readFile(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// listening reports whether a server accepts connections on 127.0.0.1:port.
func listening(port string) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stopLeftover stops, at the end of the test, a postmaster still running in
// pd (a failed test's).
func stopLeftover(t *testing.T, pd string) {
	t.Cleanup(func() {
		b, err := os.ReadFile(filepath.Join(pd, "data", "postmaster.pid"))
		if err != nil {
			return
		}
		pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
		if err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGINT) // fast shutdown
			time.Sleep(2 * time.Second)
		}
	})
}

// TestWithPostgresClusterLeftRunning: a kept cluster (`make run`) that a
// killed run left running (kill -9 of the run and of the watchdog that
// stops it, as the OOM killer may do) is stopped and started again by the
// next run; every later `make run` and `make reset` failed with "another
// server might be running" until it was stopped by hand.
func TestWithPostgresClusterLeftRunning(t *testing.T) {
	needServer(t)
	if _, err := exec.LookPath("ps"); err != nil {
		t.Skip("no ps to find the watchdog with")
	}
	pd := persistDir(t)
	stopLeftover(t, pd)
	// The command kills the watchdog (its command line ends with "keeper
	// RUN-PID POSTMASTER-PID") and the script (its parent) as kill -9
	// would: no trap runs. The watchdog may not have started bash yet.
	cmd, errf := startScript(t, `for i in $(seq 100); do
		k=$(ps -eo pid=,args= | awk -v p="$PPID" '/keeper/ && $(NF-1) == p { print $1 }')
		[ -n "$k" ] && break; sleep 0.1; done
	kill -9 $k $PPID`, "PG_PERSIST_DIR="+pd)
	_ = cmd.Wait()
	if !strings.Contains(readFile(t, errf), "starting PostgreSQL") {
		t.Fatalf("the run did not start the cluster:\n%s", readFile(t, errf))
	}
	portb, err := os.ReadFile(filepath.Join(pd, "port"))
	if err != nil {
		t.Fatal(err)
	}
	port := strings.TrimSpace(string(portb))
	if !listening(port) {
		t.Fatal("the killed run's cluster is not running: nothing to test")
	}

	url, stderr, err := withPostgres(t, "PG_PERSIST_DIR="+pd)
	if err != nil {
		t.Fatalf("run after a killed run: %v\n%s", err, stderr)
	}
	if !localURL.MatchString(url) {
		t.Errorf("DATABASE_URL = %q", url)
	}
	if !strings.Contains(stderr, "left running") {
		t.Errorf("the run does not say it stopped the cluster left running:\n%s", stderr)
	}
	if listening(port) {
		t.Errorf("the cluster still runs on port %s after the run", port)
	}
}

// TestWithPostgresKeptClusterStopsAfterAKilledRun: a kept cluster (`make
// run`) whose run is killed before its EXIT trap (kill -9) is stopped once
// the run is gone, and kept; its postmaster ran on, holding its port and
// memory, until the next run or reset.
func TestWithPostgresKeptClusterStopsAfterAKilledRun(t *testing.T) {
	needServer(t)
	pd := persistDir(t)
	stopLeftover(t, pd)
	// The command kills the script (its parent) as kill -9 would: no trap runs.
	cmd, errf := startScript(t, `kill -9 $PPID`, "PG_PERSIST_DIR="+pd)
	_ = cmd.Wait()
	portb, err := os.ReadFile(filepath.Join(pd, "port"))
	if err != nil {
		t.Fatalf("%v\n%s", err, readFile(t, errf))
	}
	port := strings.TrimSpace(string(portb))
	eventually.Within(t, time.Minute, func() error {
		if listening(port) {
			return fmt.Errorf("the killed run's cluster still listens on port %s", port)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(pd, "data", "PG_VERSION")); err != nil {
		t.Errorf("the kept cluster is gone: %v", err)
	}
	url, stderr, err := withPostgres(t, "PG_PERSIST_DIR="+pd)
	if err != nil || !localURL.MatchString(url) {
		t.Errorf("run after the killed run: %q, %v\n%s", url, err, stderr)
	}
}

// TestWithPostgresClusterInUse: a second run on a kept cluster that a run
// still going uses (`make run` in another terminal) is refused and leaves
// that cluster running; it stopped it, pulling the database from under the
// first stack.
func TestWithPostgresClusterInUse(t *testing.T) {
	needServer(t)
	pd := persistDir(t)
	stopLeftover(t, pd)
	flag := filepath.Join(t.TempDir(), "ready")
	release := filepath.Join(t.TempDir(), "release")
	first, firstErr := startScript(t, `: >"`+flag+`"; while [ ! -f "`+release+`" ]; do sleep 0.1; done`, "PG_PERSIST_DIR="+pd)
	done := make(chan error, 1)
	go func() { done <- first.Wait() }()
	defer func() {
		os.WriteFile(release, nil, 0o644)
		select {
		case <-done:
		case <-time.After(time.Minute):
			first.Process.Kill()
		}
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(flag); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("first run ended: %v\n%s", err, readFile(t, firstErr))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("first run not ready\n%s", readFile(t, firstErr))
		}
	}
	portb, _ := os.ReadFile(filepath.Join(pd, "port"))
	port := strings.TrimSpace(string(portb))

	_, stderr, err := withPostgres(t, "PG_PERSIST_DIR="+pd)
	if err == nil {
		t.Errorf("second run on a cluster in use succeeded:\n%s", stderr)
	}
	if !strings.Contains(stderr, "in use by another run") {
		t.Errorf("second run does not say the cluster is in use:\n%s", stderr)
	}
	if !listening(port) {
		t.Errorf("the first run's cluster (port %s) was stopped by the second run", port)
	}
	// A reset (make reset: the stack's -reset) is told to wait for the
	// run, not to take a cluster of its own, which would not hold the
	// database it is to drop.
	reset := exec.Command("bash", script, "sh", "-c", "exit 0", "-reset")
	reset.Env = append(os.Environ(), "PG_LOCAL=1", "DATABASE_URL=", "PG_PERSIST_DIR="+pd)
	var resetErr bytes.Buffer
	reset.Stderr = &resetErr
	if err := reset.Run(); err == nil {
		t.Errorf("a reset on a cluster in use succeeded:\n%s", resetErr.String())
	}
	if msg := resetErr.String(); !strings.Contains(msg, "then reset again") || strings.Contains(msg, "PG_PERSIST_DIR") {
		t.Errorf("a reset on a cluster in use is not told to stop the run and reset again:\n%s", msg)
	}
	if !listening(port) {
		t.Errorf("the first run's cluster (port %s) was stopped by the reset", port)
	}
	os.WriteFile(release, nil, 0o644)
	if err := <-done; err != nil {
		t.Errorf("first run: %v\n%s", err, readFile(t, firstErr))
	}
	done <- nil // for the deferred wait
	if listening(port) {
		t.Errorf("the cluster still runs on port %s after the first run", port)
	}
}

// TestWithPostgresClosedWorkingDirAsRoot: run as root from a directory the
// cluster's unprivileged user cannot enter (a checkout under /root, with
// PG_PERSIST_DIR elsewhere as the README says), the PostgreSQL programs
// run from / and so do not print "could not change directory to ...:
// Permission denied" on every start and stop.
func TestWithPostgresClosedWorkingDirAsRoot(t *testing.T) {
	needServer(t)
	if os.Geteuid() != 0 {
		t.Skip("not root")
	}
	sh, err := filepath.Abs(script)
	if err != nil {
		t.Fatal(err)
	}
	pd := persistDir(t)
	cmd := exec.Command("bash", sh, "sh", "-c", `printf %s "$DATABASE_URL"`)
	cmd.Dir = t.TempDir() // 0700: only root gets in
	cmd.Env = append(os.Environ(), "PG_LOCAL=1", "DATABASE_URL=", "PG_PERSIST_DIR="+pd)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if !localURL.MatchString(out.String()) {
		t.Errorf("DATABASE_URL = %q", out.String())
	}
	if strings.Contains(errb.String(), "could not change directory") {
		t.Errorf("a PostgreSQL program ran in the closed working directory:\n%s", errb.String())
	}
}

// pathWithout returns a PATH holding every program of the usual
// directories but those named: a host where they are not installed.
func pathWithout(t *testing.T, hidden ...string) string {
	t.Helper()
	// Reachable by the cluster's user, who runs initdb from here: t.TempDir's
	// parent is 0700.
	dir, err := os.MkdirTemp("", "with-postgres-path-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if slices.Contains(hidden, name) {
				continue
			}
			// The first directory's wins, as on the PATH.
			if err := os.Symlink(filepath.Join(d, name), filepath.Join(dir, name)); err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
		}
	}
	for _, h := range hidden {
		if _, err := os.Lstat(filepath.Join(dir, h)); err == nil {
			t.Fatalf("%s still on the PATH", h)
		}
	}
	return "PATH=" + dir
}

// TestWithPostgresAsRootWithoutRunuser: run as root, the PostgreSQL
// programs run as an unprivileged user through runuser, which some hosts
// lack (it is util-linux's, and not every image installs it). The script
// then failed on "runuser: command not found" and blamed the directory
// ("cannot reach"); it now switches user with setpriv or sudo, and with
// none of the three says which tools are missing.
func TestWithPostgresAsRootWithoutRunuser(t *testing.T) {
	needServer(t)
	if os.Geteuid() != 0 {
		t.Skip("not root")
	}
	t.Run("setpriv", func(t *testing.T) {
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Skip("setpriv not installed")
		}
		url, stderr, err := withPostgres(t, pathWithout(t, "runuser"))
		if err != nil {
			t.Fatalf("without runuser: %v\n%s", err, stderr)
		}
		if !localURL.MatchString(url) {
			t.Errorf("DATABASE_URL = %q\n%s", url, stderr)
		}
	})
	t.Run("none", func(t *testing.T) {
		_, stderr, err := withPostgres(t, pathWithout(t, "runuser", "setpriv", "sudo"))
		if err == nil {
			t.Fatalf("succeeded without a way to switch user:\n%s", stderr)
		}
		for _, want := range []string{"runuser", "setpriv", "sudo", "DATABASE_URL"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
		for _, wrong := range []string{"cannot reach", "command not found"} {
			if strings.Contains(stderr, wrong) {
				t.Errorf("stderr says %q:\n%s", wrong, stderr)
			}
		}
	})
}

// TestWithPostgresPassesSignalsOn: a SIGTERM or SIGHUP sent to the script
// alone (kill PID, a supervisor or IDE stopping what it started) reaches
// the command, and once the command has ended the cluster stops; the
// script waited for the command to end by itself, which `make run` never
// does, so the stack and the cluster ran on. A SIGINT sent to the whole
// group (Ctrl-C) still reaches the command once, with the database still
// up while it stops.
func TestWithPostgresPassesSignalsOn(t *testing.T) {
	needServer(t)
	for _, tc := range []struct {
		sig   syscall.Signal
		name  string
		group bool
	}{{syscall.SIGTERM, "TERM", false}, {syscall.SIGHUP, "HUP", false}, {syscall.SIGINT, "INT", true}} {
		t.Run(tc.name, func(t *testing.T) {
			pd := persistDir(t)
			stopLeftover(t, pd)
			dir := t.TempDir()
			ready, got := filepath.Join(dir, "ready"), filepath.Join(dir, "got")
			// The command records each signal it gets and whether the
			// database still answered then, and ends on the first.
			errf, err := os.CreateTemp(dir, "stderr")
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("bash", script, "bash", "-c", `port=${DATABASE_URL##*:}; port=${port%%/*}
on() { if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "$1 db-up" >>"`+got+`"; else echo "$1 db-down" >>"`+got+`"; fi; }
trap 'on TERM; exit 0' TERM; trap 'on HUP; exit 0' HUP; trap 'on INT; exit 0' INT
: >"`+ready+`"; while :; do sleep 0.1; done`)
			cmd.Env = append(os.Environ(), "PG_LOCAL=1", "DATABASE_URL=", "PG_PERSIST_DIR="+pd)
			cmd.Stdout, cmd.Stderr = errf, errf
			// A group of its own, as a terminal's job: Ctrl-C signals it whole.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{}) // closed when the script has ended
			go func() { _ = cmd.Wait(); close(done) }()
			defer func() {
				select {
				case <-done:
				default:
					_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					<-done
				}
			}()
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
				if _, err := os.Stat(ready); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the command did not start\n%s", readFile(t, errf))
				}
			}
			portb, _ := os.ReadFile(filepath.Join(pd, "port"))
			port := strings.TrimSpace(string(portb))
			target := cmd.Process.Pid
			if tc.group {
				target = -target // as a terminal's Ctrl-C: the whole process group
			}
			if err := syscall.Kill(target, tc.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("the script still runs 30 s after SIG%s\n%s", tc.name, readFile(t, errf))
			}
			b, _ := os.ReadFile(got)
			if want := tc.name + " db-up\n"; string(b) != want {
				t.Errorf("the command recorded %q, want %q (the signal once, the database up)", b, want)
			}
			if listening(port) {
				t.Errorf("the cluster still runs on port %s after the script ended", port)
			}
		})
	}
}

// TestWithPostgresClusterNeedsThePassword: the cluster the script starts
// admits its superuser only with the password DATABASE_URL carries, from
// 127.0.0.1 too. It trusted every local connection, so any user of the
// machine could connect as the superuser and run commands as the
// cluster's OS user (COPY ... TO PROGRAM): as whoever ran `make run` or
// `make test`, or as postgres when root did, the owner of the system's own
// clusters. A kept cluster made before that (trust, no password file) is
// given a password by its next run.
func TestWithPostgresClusterNeedsThePassword(t *testing.T) {
	needServer(t)
	// Neither may supply a password the URL lacks.
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	pd := persistDir(t)
	stopLeftover(t, pd)
	check := func(t *testing.T) {
		dir := t.TempDir()
		got, release := filepath.Join(dir, "url"), filepath.Join(dir, "release")
		cmd, errf := startScript(t, `printf %s "$DATABASE_URL" >"`+got+`.tmp" && mv "`+got+`.tmp" "`+got+`"
while [ ! -f "`+release+`" ]; do sleep 0.1; done`, "PG_PERSIST_DIR="+pd)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer func() {
			os.WriteFile(release, nil, 0o644)
			select {
			case <-done:
			case <-time.After(time.Minute):
				cmd.Process.Kill()
			}
		}()
		var dbURL string
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if b, err := os.ReadFile(got); err == nil {
				dbURL = string(b)
				break
			}
			select {
			case err := <-done:
				done <- err
				t.Fatalf("the script ended: %v\n%s", err, readFile(t, errf))
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the command did not start\n%s", readFile(t, errf))
			}
		}
		pgcheck.WantPasswordRequired(t, dbURL)
		if !localURL.MatchString(dbURL) {
			t.Errorf("DATABASE_URL = %q", dbURL)
		}
		if b, err := os.ReadFile(filepath.Join(pd, "password")); err != nil || !strings.Contains(dbURL, ":"+strings.TrimSpace(string(b))+"@") {
			t.Errorf("password file %q (%v) is not the URL's", b, err)
		}
		if fi, err := os.Stat(filepath.Join(pd, "password")); err == nil && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("password file mode %v: others may read it", fi.Mode().Perm())
		}
		os.WriteFile(release, nil, 0o644)
		if err := <-done; err != nil {
			t.Errorf("the script: %v\n%s", err, readFile(t, errf))
		}
		done <- nil // for the deferred wait
	}
	t.Run("new", check)
	// The cluster as the script left it before passwords.
	if err := os.Remove(filepath.Join(pd, "password")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pd, "data", "pg_hba.conf"), []byte("host all all 127.0.0.1/32 trust\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("kept from before", check)
}

// TestWithPostgresThrowawayClusterOutlivesNoKilledRun: a throwaway cluster
// (no PG_PERSIST_DIR) whose run is killed before its EXIT trap (kill -9)
// is stopped and removed once the run is gone; a postmaster and its
// directory were left behind for good.
func TestWithPostgresThrowawayClusterOutlivesNoKilledRun(t *testing.T) {
	needServer(t)
	tmp := filepath.Dir(persistDir(t)) // reachable by the cluster's user
	urlFile := filepath.Join(t.TempDir(), "url")
	// The command records the URL, then kills the script (its parent) as
	// kill -9 would: no trap runs.
	cmd, errf := startScript(t, `printf %s "$DATABASE_URL" >"`+urlFile+`"; kill -9 $PPID`, "TMPDIR="+tmp)
	_ = cmd.Wait()
	b, err := os.ReadFile(urlFile)
	if err != nil {
		t.Fatalf("the command did not run: %v\n%s", err, readFile(t, errf))
	}
	m := regexp.MustCompile(`:(\d+)/`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("DATABASE_URL %q has no port", b)
	}
	port := m[1]
	dirs, _ := filepath.Glob(filepath.Join(tmp, "tollgate-pg.*"))
	for _, d := range dirs {
		stopLeftover(t, d)
	}
	eventually.Within(t, time.Minute, func() error {
		if listening(port) {
			return fmt.Errorf("the killed run's cluster still listens on port %s", port)
		}
		if left, _ := filepath.Glob(filepath.Join(tmp, "tollgate-pg.*")); len(left) > 0 {
			return fmt.Errorf("the killed run's cluster directory is left: %v", left)
		}
		return nil
	})
}

// pgBinWithout returns a directory holding the PostgreSQL programs of the
// installation initdb belongs to but those named: packages whose client
// tools are not installed. Hand it to the script as WITH_POSTGRES_BIN_DIRS.
func pgBinWithout(t *testing.T, hidden ...string) string {
	t.Helper()
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
		if len(m) == 0 {
			t.Skip("no initdb installed")
		}
		initdb = m[len(m)-1]
	}
	if initdb, err = filepath.EvalSymlinks(initdb); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "with-postgres-pgbin-") // reachable by the cluster's user
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Dir(initdb))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if slices.Contains(hidden, e.Name()) {
			continue
		}
		if err := os.Symlink(filepath.Join(filepath.Dir(initdb), e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// withSharedPort runs the script as `make run` does (no PG_LOCAL), trying
// 127.0.0.1:port first, with the extra environment, and returns the
// DATABASE_URL the command got.
func withSharedPort(t *testing.T, port string, env ...string) (url string, stderr string, err error) {
	t.Helper()
	cmd := exec.Command("bash", script, "sh", "-c", `printf %s "$DATABASE_URL"`)
	cmd.Env = append(os.Environ(), append([]string{"PG_LOCAL=", "DATABASE_URL=", "PG_PERSIST_DIR=", "GO=", "WITH_POSTGRES_PORT=" + port,
		"PGPASSWORD=", "PGPASSFILE=" + filepath.Join(t.TempDir(), "none"), "TMPDIR=" + filepath.Dir(persistDir(t))}, env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("with-postgres.sh did not finish\n%s", errb.String())
	}
	return out.String(), errb.String(), err
}

// notPostgres listens on a free port of 127.0.0.1 and answers every
// connection as a web server would; it returns the port.
func notPostgres(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 512))
			c.Write([]byte("HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			c.Close()
		}
	}()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestWithPostgresProbesWithoutPsql: on a host without psql (PostgreSQL in
// Docker, no client tools), a port that is open is used only once the
// server is seen to let user postgres in without a password. Without psql
// the script took the open port for such a server, and `make run` then
// failed against a server that wanted a password (or was not PostgreSQL)
// instead of starting a cluster of its own. It now asks the repository's
// Go probe (deploy/cmd/pgprobe), and with no way to tell at all starts its
// own cluster, saying why.
func TestWithPostgresProbesWithoutPsql(t *testing.T) {
	needServer(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on the PATH")
	}
	pgbin := pgBinWithout(t, "psql")
	noPsql := pathWithout(t, "psql", "go")
	withGo := noPsql + ":" + filepath.Dir(goBin)
	wantLocal := func(t *testing.T, url, stderr string, err error, port string, say string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if !localURL.MatchString(url) || strings.Contains(url, ":"+port+"/") {
			t.Errorf("DATABASE_URL = %q, want a cluster of the script's own, not the server on port %s\n%s", url, port, stderr)
		}
		if !strings.Contains(stderr, say) {
			t.Errorf("stderr does not say %q:\n%s", say, stderr)
		}
	}

	t.Run("not PostgreSQL", func(t *testing.T) {
		port := notPostgres(t)
		url, stderr, err := withSharedPort(t, port, withGo, "WITH_POSTGRES_BIN_DIRS="+pgbin)
		wantLocal(t, url, stderr, err, port, "does not let user postgres in without a password")
	})

	t.Run("password required", func(t *testing.T) {
		// A cluster of the script's, which admits no one without its
		// password, stands for the server in Docker.
		pd := persistDir(t)
		stopLeftover(t, pd)
		release := filepath.Join(t.TempDir(), "release")
		ready := filepath.Join(t.TempDir(), "ready")
		first, firstErr := startScript(t, `: >"`+ready+`"; while [ ! -f "`+release+`" ]; do sleep 0.1; done`, "PG_PERSIST_DIR="+pd)
		done := make(chan error, 1)
		go func() { done <- first.Wait() }()
		defer func() {
			os.WriteFile(release, nil, 0o644)
			select {
			case <-done:
			case <-time.After(time.Minute):
				first.Process.Kill()
			}
		}()
		eventually.Within(t, 2*time.Minute, func() error {
			if _, err := os.Stat(ready); err != nil {
				return fmt.Errorf("the first cluster is not up\n%s", readFile(t, firstErr))
			}
			return nil
		})
		portb, _ := os.ReadFile(filepath.Join(pd, "port"))
		port := strings.TrimSpace(string(portb))
		url, stderr, err := withSharedPort(t, port, withGo, "WITH_POSTGRES_BIN_DIRS="+pgbin)
		wantLocal(t, url, stderr, err, port, "does not let user postgres in without a password")
		if !strings.Contains(stderr, "password authentication failed") {
			t.Errorf("stderr does not give the server's reason:\n%s", stderr)
		}
	})

	t.Run("no way to tell", func(t *testing.T) {
		port := notPostgres(t)
		url, stderr, err := withSharedPort(t, port, noPsql, "WITH_POSTGRES_BIN_DIRS="+pgbin)
		wantLocal(t, url, stderr, err, port, "cannot tell")
	})

	t.Run("lets in", func(t *testing.T) {
		// The server the tests run against, when it admits postgres
		// without a password, as the default 127.0.0.1:5432 may.
		const shared = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
		t.Setenv("PGPASSWORD", "")
		t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, shared)
		if err != nil {
			t.Skipf("127.0.0.1:5432 does not let postgres in without a password: %v", err)
		}
		c.Close(ctx)
		url, stderr, err := withSharedPort(t, "5432", withGo, "WITH_POSTGRES_BIN_DIRS="+pgbin)
		if err != nil || url != shared {
			t.Errorf("DATABASE_URL = %q (%v), want %q\n%s", url, err, shared, stderr)
		}
	})
}
