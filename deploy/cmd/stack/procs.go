package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the migrations
	"github.com/nats-io/nats-server/v2/server"

	"github.com/tollgate-auth/tollgate/deploy/internal/proc"
)

// child is one service process whose output is forwarded line by line with
// its name as a prefix.
type child struct {
	*proc.Child
	out *prefixWriter
}

func startChild(logger *slog.Logger, name, path string, args, env []string, logs io.Writer) (*child, error) {
	out := newPrefixWriter(logs, fmt.Sprintf("%-9s | ", name))
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	// Its own process group: a terminal's Ctrl-C reaches only this runner,
	// which then stops the children in order.
	cmd.SysProcAttr = sysProcAttr()
	pc, err := proc.Start(name, cmd, out.Flush)
	if err != nil {
		return nil, err
	}
	logger.Info("started", "service", name, "pid", pc.Pid())
	return &child{Child: pc, out: out}, nil
}

// stop sends SIGTERM, waits up to timeout, then kills.
func (c *child) stop(logger *slog.Logger, timeout time.Duration) {
	if c.Exited() {
		return
	}
	if err := c.Stop(syscall.SIGTERM, timeout); err != nil {
		logger.Warn("did not stop in time; killed", "service", c.Name, "timeout", timeout)
		return
	}
	logger.Info("stopped", "service", c.Name)
}

// waitReady polls url until it answers 200, the child exits, ctx ends or
// timeout passes.
func waitReady(ctx context.Context, url string, timeout time.Duration, c *child) error {
	return proc.WaitReady(ctx, url, timeout, c.Child)
}

// stackPort is one address the stack listens on, and the flag that moves it.
type stackPort struct{ flag, addr string }

// portsFree fails, naming every busy address and its flag, when a service
// port is taken (most often by a stack still running in another terminal,
// but 8080 and 8081 are popular), and says how to move the stack's: with
// the flags through RUNFLAGS, each here suggested 10000 ports higher.
func portsFree(ports ...stackPort) error {
	var busy, moves []string
	for _, p := range ports {
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			busy = append(busy, p.addr+" ("+p.flag+")")
			moves = append(moves, p.flag+" "+movedAddr(p.addr))
			continue
		}
		l.Close()
	}
	if len(busy) > 0 {
		return fmt.Errorf("ports in use: %s; another make run still running? Stop it (Ctrl-C), "+
			"or what else listens there, or give the stack other addresses: make run RUNFLAGS='%s'",
			strings.Join(busy, ", "), strings.Join(moves, " "))
	}
	return nil
}

// movedAddr is addr with its port 10000 higher (or lower, near the top),
// the suggestion of portsFree.
func movedAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		return addr
	}
	if n += 10000; n > 65535 {
		n -= 20000
	}
	return net.JoinHostPort(host, strconv.Itoa(n))
}

// build compiles both services and the example app into dir.
func build(ctx context.Context, root, dir string, logs io.Writer) error {
	gobin := os.Getenv("GO")
	if gobin == "" {
		gobin = "go"
	}
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", dir+string(os.PathSeparator),
		"./coreapi/cmd/coreapi", "./authproxy/cmd/authproxy", "./deploy/examples/notes/cmd/notes")
	cmd.Dir = root
	out := newPrefixWriter(logs, "go build  | ")
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.Flush()
	if err != nil {
		return fmt.Errorf("build coreapi, authproxy and notes: %w", err)
	}
	return nil
}

// embeddedNATS is the in-process NATS server of `make run` and the URL
// each service connects with.
type embeddedNATS struct {
	*server.Server
	// coreURL and proxyURL name the users of deploy/nats/tollgate.conf,
	// coreapi and authproxy, with their passwords: the permissions the
	// services get in production, so that `make run` refuses what
	// production refuses.
	coreURL, proxyURL string
}

// natsPasswordVars are the variables deploy/nats/tollgate.conf takes the
// users' passwords from.
var natsPasswordVars = [2]string{"TOLLGATE_NATS_COREAPI_PASSWORD", "TOLLGATE_NATS_AUTHPROXY_PASSWORD"}

// startNATS runs an in-process NATS server on 127.0.0.1:4222, or on a random
// port when 4222 is taken, with the users and permissions of the shipped
// configuration (root/deploy/nats/tollgate.conf) and a fresh random
// password for each: a client that presents none (another local user) is
// refused, and neither service may do what its user may not.
func startNATS(root string) (*embeddedNATS, error) {
	port := 4222
	if l, err := net.Listen("tcp", "127.0.0.1:4222"); err != nil {
		port = server.RANDOM_PORT
	} else {
		l.Close()
	}
	var pw [2]string
	for i, name := range natsPasswordVars {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		pw[i] = hex.EncodeToString(b)
		// The configuration file reads them from the environment; they
		// leave it again at once, so that no child inherits them.
		prev, had := os.LookupEnv(name)
		os.Setenv(name, pw[i])
		defer func() {
			if had {
				os.Setenv(name, prev)
			} else {
				os.Unsetenv(name)
			}
		}()
	}
	opts, err := server.ProcessConfigFile(filepath.Join(root, "deploy", "nats", "tollgate.conf"))
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	opts.ServerName = "tollgate-stack"
	opts.Host, opts.Port = "127.0.0.1", port
	opts.NoSigs, opts.NoLog = true, true
	opts.HTTPPort = 0
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats: not ready after 10s")
	}
	addr := ns.Addr().String()
	return &embeddedNATS{Server: ns,
		coreURL:  "nats://coreapi:" + pw[0] + "@" + addr,
		proxyURL: "nats://authproxy:" + pw[1] + "@" + addr,
	}, nil
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes whole lines to w, each preceded by prefix. A partial
// line is held until its newline arrives, Flush is called, or it grows past
// maxLine.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix []byte
	buf    []byte
}

const maxLine = 64 << 10

func newPrefixWriter(w io.Writer, prefix string) *prefixWriter {
	return &prefixWriter{w: w, prefix: []byte(prefix)}
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		if err := p.emit(p.buf[:i+1]); err != nil {
			return len(b), err
		}
		p.buf = p.buf[i+1:]
	}
	if len(p.buf) > maxLine {
		if err := p.emit(append(p.buf, '\n')); err != nil {
			return len(b), err
		}
		p.buf = p.buf[:0]
	}
	if len(p.buf) == 0 {
		p.buf = nil // release the backing array between bursts
	}
	return len(b), nil
}

// Flush writes a held partial line, newline-terminated.
func (p *prefixWriter) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		_ = p.emit(append(p.buf, '\n'))
		p.buf = nil
	}
}

func (p *prefixWriter) emit(line []byte) error {
	out := make([]byte, 0, len(p.prefix)+len(line))
	out = append(append(out, p.prefix...), line...)
	_, err := p.w.Write(out)
	return err
}
