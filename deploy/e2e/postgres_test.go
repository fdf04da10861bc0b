package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/deploy/internal/pgcheck"
	"github.com/tollgate-auth/tollgate/deploy/internal/proc"
)

// pgCluster is a throwaway PostgreSQL cluster owned by the suite. It runs the
// postmaster as a direct child process (not daemonised by pg_ctl) so that it
// dies with the test binary even when the binary is killed, and so that the
// suite can stop and start it without disturbing any other test package.
type pgCluster struct {
	base string // parent of the data directory, removed by the suite
	data string
	// password of the superuser postgres, required on every connection:
	// with trust authentication any local user could connect as the
	// superuser and run commands as the cluster's OS user (COPY ... TO
	// PROGRAM) while the suite runs.
	password string
	port     int
	postgres string // path of the postgres binary
	cred     *syscall.Credential
	child    *proc.Child
	logPath  string
}

// installHint is printed when no PostgreSQL server binaries can be found.
const installHint = `the end-to-end suite needs the PostgreSQL server binaries (initdb, postgres) to run
a cluster of its own that it can restart. Install them, for example:
    Debian/Ubuntu:  apt-get install postgresql
    Fedora:         dnf install postgresql-server
    macOS:          brew install postgresql@16
(they are looked up on PATH, in /usr/lib/postgresql/*/bin and in Homebrew's postgresql@N kegs)`

// findPGBin returns the directory holding initdb and postgres.
func findPGBin() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(r))
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	versioned, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first ("9.6" < "15" numerically).
	sort.Slice(versioned, func(i, j int) bool {
		return pgMajor(versioned[i]) > pgMajor(versioned[j])
	})
	dirs = append(dirs, versioned...)
	dirs = append(dirs, "/usr/local/pgsql/bin")
	// Homebrew's postgresql@N is keg-only: its bin is not linked into the prefix.
	for _, prefix := range []string{"/opt/homebrew/opt", "/usr/local/opt"} {
		kegs, _ := filepath.Glob(prefix + "/postgresql*/bin")
		sort.Slice(kegs, func(i, j int) bool { return pgMajor(kegs[i]) > pgMajor(kegs[j]) }) // newest first, as above
		dirs = append(dirs, kegs...)
	}
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New(installHint)
}

// pgMajor is the version a bin directory's parent names: "15" or "9.6"
// (/usr/lib/postgresql), "postgresql@16" (a Homebrew keg); 0 when it names
// none.
func pgMajor(binDir string) float64 {
	name := filepath.Base(filepath.Dir(binDir))
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		name = name[i+1:]
	}
	v, _ := strconv.ParseFloat(name, 64)
	return v
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// unprivileged returns the credential to run PostgreSQL with when the suite
// runs as root (initdb and postgres refuse to run as root), else nil.
func unprivileged() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")
}

// newPGCluster runs initdb in base/data and starts the cluster on port.
func newPGCluster(ctx context.Context, base string, port int) (*pgCluster, error) {
	bin, err := findPGBin()
	if err != nil {
		return nil, err
	}
	cred, err := unprivileged()
	if err != nil {
		return nil, err
	}
	c := &pgCluster{
		base:     base,
		data:     filepath.Join(base, "data"),
		port:     port,
		postgres: filepath.Join(bin, "postgres"),
		cred:     cred,
		logPath:  filepath.Join(base, "postgres.log"),
	}
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(base, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("chown %s: %w", base, err)
		}
	}
	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return nil, err
	}
	c.password = hex.EncodeToString(pw[:])
	// initdb reads it from a file of the cluster's user, removed at once.
	pwFile := filepath.Join(base, "initdb.pw")
	if err := os.WriteFile(pwFile, []byte(c.password+"\n"), 0o600); err != nil {
		return nil, err
	}
	defer os.Remove(pwFile)
	if cred != nil {
		if err := os.Chown(pwFile, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("chown %s: %w", pwFile, err)
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", c.data, "-U", "postgres",
		"--auth=scram-sha-256", "--pwfile="+pwFile, "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.Dir = base
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	os.Remove(pwFile)
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// URL is the connection string of the cluster's postgres database.
func (c *pgCluster) URL() string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable", c.password, c.port)
}

// start runs the postmaster and waits until it accepts connections.
func (c *pgCluster) start(ctx context.Context) error {
	lf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.postgres, "-D", c.data,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(c.port),
		"-c", "unix_socket_directories=",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200")
	cmd.Dir = c.base
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGKILL}
	ch, err := proc.Start("postgres", cmd, func() { lf.Close() })
	if err != nil {
		return err
	}
	c.child = ch
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if ch.Exited() {
			return fmt.Errorf("postgres exited during start-up:\n%s", tail(c.logPath, 30))
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, c.URL())
		if err == nil {
			_ = conn.Close(cctx)
			cancel()
			return nil
		}
		cancel()
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("postgres not accepting connections after 30s: %v\n%s", last, tail(c.logPath, 30))
}

// stop shuts the cluster down in "fast" mode (SIGINT: roll back open
// transactions, disconnect clients), as `pg_ctl stop -m fast` does.
func (c *pgCluster) stop() error {
	if c.child == nil {
		return nil
	}
	err := c.child.Stop(syscall.SIGINT, 30*time.Second)
	c.child = nil
	return err
}

// pids returns the postmaster's pid and those of its children (backends and
// auxiliary processes), read from /proc.
func (c *pgCluster) pids() ([]int, error) {
	if c.child == nil {
		return nil, errors.New("postgres is not running")
	}
	root := c.child.Pid()
	out := []int{root}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(root) {
			out = append(out, pid)
		}
	}
	return out, nil
}

// stopAll freezes the postmaster and its children (SIGSTOP) and waits until
// every one of them is stopped.
func (c *pgCluster) stopAll(timeout time.Duration) error {
	pids, err := c.pids()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := stopProcess(pid, timeout); err != nil {
			if _, serr := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(serr) {
				continue // a backend that exited meanwhile
			}
			return err
		}
	}
	return nil
}

// signalAll sends sig to the postmaster and its children.
func (c *pgCluster) signalAll(sig syscall.Signal) error {
	pids, err := c.pids()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal %d: %w", pid, err)
		}
	}
	return nil
}

// TestPgMajor: the installation search takes the newest version first,
// Debian's directories and Homebrew's kegs alike.
func TestPgMajor(t *testing.T) {
	for dir, want := range map[string]float64{
		"/usr/lib/postgresql/15/bin": 15, "/usr/lib/postgresql/9.6/bin": 9.6,
		"/opt/homebrew/opt/postgresql@16/bin": 16, "/usr/local/opt/postgresql@14/bin": 14,
		"/opt/homebrew/opt/postgresql/bin": 0,
	} {
		if got := pgMajor(dir); got != want {
			t.Errorf("pgMajor(%q) = %v, want %v", dir, got, want)
		}
	}
}

// TestSuiteClusterNeedsThePassword: the suite's cluster admits its
// superuser only with the password its URL carries. It trusted every local
// connection, so any user of the machine could connect as the superuser
// while the suite ran and run commands as the cluster's OS user.
func TestSuiteClusterNeedsThePassword(t *testing.T) {
	pgcheck.WantPasswordRequired(t, sys.pg.URL())
}
