package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// syscallCounts is a process's system calls over a window, by name, as
// the tracer summed them; perf also counts the events named by
// kernelEvents, which are not system calls.
type syscallCounts map[string]int64

// kernelEvents are the perf software events counted beside the system
// calls: the kernel's work a process causes without a call of its own.
func kernelEvents() []string { return []string{"page-faults", "context-switches"} }

// parseStraceSummary reads the table `strace -c` writes: a header, a rule,
// one line per system call (% time, seconds, usecs/call, calls, errors
// (may be empty), name), a rule, and the total line, which is left out.
func parseStraceSummary(r io.Reader) (syscallCounts, error) {
	out := syscallCounts{}
	sc := bufio.NewScanner(r)
	rules := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "------"):
			rules++
			continue
		case rules != 1 || line == "":
			continue
		}
		f := strings.Fields(line)
		if len(f) != 5 && len(f) != 6 {
			return nil, fmt.Errorf("strace summary: unexpected line %q", line)
		}
		n, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("strace summary: calls of %q: %w", line, err)
		}
		out[f[len(f)-1]] += n
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if rules < 2 {
		return nil, fmt.Errorf("strace summary: no table (%d rules)", rules)
	}
	return out, nil
}

// syscallTracer counts a process's system calls over a window: start
// returns once the counting runs, stop ends it and returns the counts.
type syscallTracer interface {
	start(ctx context.Context) error
	stop() (syscallCounts, error)
}

// newTracer returns the tracer named by -syscall-tracer for process pid,
// writing its output under dir.
func newTracer(name string, pid int, dir string) (syscallTracer, error) {
	file := filepath.Join(dir, fmt.Sprintf("%s.%d", name, pid))
	switch name {
	case "perf":
		return &perfTracer{pid: pid, file: file}, nil
	case "strace":
		return &straceTracer{pid: pid, file: file}, nil
	}
	return nil, fmt.Errorf("unknown -syscall-tracer %q (want perf or strace)", name)
}

// perfTracer is `perf stat` on tracepoints of the system calls, attached
// to every thread of pid with its counters off, then switched on and off
// through its control pipe: each switch is acknowledged, so the counted
// window is the one the load measures. The kernel counts; the process is
// not stopped on each call, as under strace.
type perfTracer struct {
	pid  int
	file string
	cmd  *exec.Cmd
	ctl  *os.File // written: "enable", "disable"
	ack  *bufio.Reader
	ackR *os.File
}

// perfSyscalls are the system calls counted one by one; any other lands
// in "other" (raw_syscalls:sys_enter counts them all). Opening every
// syscalls tracepoint takes seconds; these are what a Go server makes.
func perfSyscalls() []string {
	return []string{"read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
		"epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_ctl", "futex", "nanosleep", "clock_nanosleep", "sched_yield",
		"getrandom", "madvise", "mmap", "munmap", "mprotect", "tgkill", "rt_sigreturn", "rt_sigprocmask", "sigaltstack",
		"accept4", "connect", "socket", "close", "shutdown", "setsockopt", "getsockopt", "fcntl", "clone", "clone3",
		"openat", "getpid", "getppid", "gettid"}
}

func (t *perfTracer) start(ctx context.Context) error {
	events := append([]string{"raw_syscalls:sys_enter"}, kernelEvents()...)
	for _, n := range perfSyscalls() {
		events = append(events, "syscalls:sys_enter_"+n)
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return err
	}
	ackR, ackW, err := os.Pipe()
	if err != nil {
		return err
	}
	t.ctl, t.ack, t.ackR = ctlW, bufio.NewReader(ackR), ackR
	t.cmd = exec.CommandContext(ctx, "perf", "stat", "-x", ",", "-o", t.file, "--delay=-1", "--control", "fd:3,4",
		"-e", strings.Join(events, ","), "-p", strconv.Itoa(t.pid))
	t.cmd.ExtraFiles = []*os.File{ctlR, ackW}
	var stderr bytes.Buffer
	t.cmd.Stderr = &stderr
	err = t.cmd.Start()
	// perf holds its ends now: an acknowledgement read ends if it exits.
	_, _ = ctlR.Close(), ackW.Close()
	if err != nil {
		return fmt.Errorf("perf stat -p %d: %w", t.pid, err)
	}
	if err := t.command("enable"); err != nil {
		// perf has exited (or is stopped now): its reason is on stderr.
		_ = t.cmd.Process.Kill()
		_ = t.cmd.Wait()
		t.cmd = nil
		_, _ = t.ctl.Close(), t.ackR.Close()
		why, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n") // then its usage text
		return fmt.Errorf("%w: %s", err, why)
	}
	return nil
}

// command sends cmd to perf and waits for its acknowledgement.
func (t *perfTracer) command(cmd string) error {
	if _, err := fmt.Fprintln(t.ctl, cmd); err != nil {
		return fmt.Errorf("perf stat -p %d: %s: %w", t.pid, cmd, err)
	}
	done := make(chan error, 1)
	go func() {
		line, err := t.ack.ReadString('\n')
		// perf may write a NUL before its answer.
		if err == nil && strings.Trim(line, "\x00 \n") != "ack" {
			err = fmt.Errorf("answered %q", line)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("perf stat -p %d: %s: %w", t.pid, cmd, err)
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("perf stat -p %d: %s: no acknowledgement in 30s", t.pid, cmd)
	}
}

func (t *perfTracer) stop() (syscallCounts, error) {
	if t.cmd == nil || t.cmd.Process == nil {
		return nil, errors.New("perf stat: not started")
	}
	cerr := t.command("disable")
	_ = t.cmd.Process.Signal(syscall.SIGINT) // perf writes its counts and exits
	werr := t.cmd.Wait()
	_, _ = t.ctl.Close(), t.ackR.Close()
	if cerr != nil {
		return nil, cerr
	}
	f, err := os.Open(t.file)
	if err != nil {
		return nil, fmt.Errorf("perf stat -p %d: %w (%v)", t.pid, err, werr)
	}
	defer f.Close()
	return parsePerfStat(f)
}

// parsePerfStat reads `perf stat -x ,` output: count,unit,event,... per
// line, "<not counted>" for an event that never ran. raw_syscalls'
// count, less the named ones', is filed as "other".
func parsePerfStat(r io.Reader) (syscallCounts, error) {
	out, events := syscallCounts{}, syscallCounts{}
	var all int64
	seen := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if len(f) < 3 {
			continue
		}
		var n int64
		if f[0] != "<not counted>" && f[0] != "<not supported>" {
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("perf stat: count of %q: %w", sc.Text(), err)
			}
			n = v
		}
		switch ev := f[2]; {
		case slices.Contains(kernelEvents(), ev):
			events[ev] = n
		case ev == "raw_syscalls:sys_enter":
			all, seen = n, true
		case strings.HasPrefix(ev, "syscalls:sys_enter_"):
			if n > 0 {
				out[strings.TrimPrefix(ev, "syscalls:sys_enter_")] = n
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !seen {
		return nil, errors.New("perf stat: no raw_syscalls:sys_enter count")
	}
	named := int64(0)
	for _, n := range out {
		named += n
	}
	if all > named {
		out["other"] = all - named
	}
	maps.Copy(out, events)
	return out, nil
}

// straceTracer is `strace -c -f -p PID`: every thread is stopped at each
// system call, which slows the process several times over (both proxies
// alike), so the runtime's timing-driven calls (sysmon's sleeps, idle
// threads' wake-ups) are counted at another pace than without it. strace
// counts a call when it handles the call's return: one whose thread is
// still stopped there when the window closes is not counted, though its
// effect (bytes written) may already be seen.
type straceTracer struct {
	pid  int
	file string
	cmd  *exec.Cmd
}

func (t *straceTracer) start(ctx context.Context) error {
	t.cmd = exec.CommandContext(ctx, "strace", "-c", "-f", "-o", t.file, "-p", strconv.Itoa(t.pid))
	stderr, err := t.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := t.cmd.Start(); err != nil {
		return fmt.Errorf("strace -p %d: %w", t.pid, err)
	}
	// strace says "Process N attached" once it traces the process's
	// threads; the window opens then, not when strace was started. A
	// strace that exits first said why.
	type answer struct {
		attached bool
		said     string // when not attached: what strace said before it exited
	}
	attached := make(chan answer, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var said []string
		for sc.Scan() {
			if strings.Contains(sc.Text(), "attached") {
				attached <- answer{attached: true}
				_, _ = io.Copy(io.Discard, stderr)
				return
			}
			said = append(said, sc.Text())
		}
		attached <- answer{said: strings.Join(said, "; ")}
	}()
	fail := func(why string) error {
		_ = t.cmd.Process.Kill()
		_ = t.cmd.Wait()
		t.cmd = nil
		return fmt.Errorf("strace -p %d: %s", t.pid, why)
	}
	select {
	case a := <-attached:
		if !a.attached {
			return fail("not attached: " + a.said)
		}
		return nil
	case <-time.After(10 * time.Second):
		return fail("not attached after 10s")
	}
}

func (t *straceTracer) stop() (syscallCounts, error) {
	if t.cmd == nil || t.cmd.Process == nil {
		return nil, errors.New("strace: not started")
	}
	_ = t.cmd.Process.Signal(syscall.SIGINT) // strace detaches and writes its summary
	werr := t.cmd.Wait()
	f, err := os.Open(t.file)
	if err != nil {
		return nil, fmt.Errorf("strace -p %d: %w (%v)", t.pid, err, werr)
	}
	defer f.Close()
	return parseStraceSummary(f)
}

// syscallRow is one system call's count per answered request for each
// target.
type syscallRow struct {
	name string
	per  []float64
}

// syscallTable divides each target's counts by its requests and lists
// every system call any target made at least once in 1000 requests, the
// largest difference (last target − first) first, then the total.
func syscallTable(counts []syscallCounts, requests []int64) []syscallRow {
	names := map[string]bool{}
	for _, c := range counts {
		for n := range c {
			names[n] = !slices.Contains(kernelEvents(), n)
		}
	}
	var rows []syscallRow
	total := syscallRow{name: "total", per: make([]float64, len(counts))}
	for n, call := range names {
		if !call {
			continue
		}
		r := syscallRow{name: n, per: make([]float64, len(counts))}
		keep := false
		for i, c := range counts {
			if requests[i] > 0 {
				r.per[i] = float64(c[n]) / float64(requests[i])
			}
			total.per[i] += r.per[i]
			keep = keep || r.per[i] >= 0.001
		}
		if keep {
			rows = append(rows, r)
		}
	}
	last := len(counts) - 1
	slices.SortFunc(rows, func(a, b syscallRow) int {
		da, db := a.per[last]-a.per[0], b.per[last]-b.per[0]
		switch {
		case da > db:
			return -1
		case da < db:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	return append(rows, total)
}

// writeSyscallTable prints the table as Markdown, with the difference
// (last − first) as the last column.
func writeSyscallTable(out io.Writer, heads []string, rows []syscallRow) {
	fmt.Fprintf(out, "| system call | %s | %s − %s |\n|---|%s---:|\n", strings.Join(heads, " | "), heads[len(heads)-1], heads[0], strings.Repeat("---:|", len(heads)))
	for _, r := range rows {
		cells := make([]string, len(r.per))
		for i, v := range r.per {
			cells[i] = fmt.Sprintf("%.3f", v)
		}
		fmt.Fprintf(out, "| %s | %s | %+.3f |\n", r.name, strings.Join(cells, " | "), r.per[len(r.per)-1]-r.per[0])
	}
}

// procIO reads the bytes process pid has passed to read and write system
// calls so far (rchar, wchar of /proc/<pid>/io: sockets included).
func procIO(pid int) (read, written int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseProcIO(string(b))
}

func parseProcIO(s string) (read, written int64, err error) {
	found := 0
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "rchar" && k != "wchar") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("proc io: %s: %w", k, err)
		}
		if k == "rchar" {
			read = n
		} else {
			written = n
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("proc io: no rchar and wchar")
	}
	return read, written, nil
}

// syscallWindow is what one process did over the traced window.
type syscallWindow struct {
	counts            syscallCounts
	requests          int64
	read, written     int64         // bytes through read and write calls
	cpu, sys          time.Duration // utime + stime, stime
	errStart, errStop error
}

// trace runs tr over the measured window of l, reading the process's
// bytes and CPU times at both ends.
func trace(ctx context.Context, tr syscallTracer, pid int, l load) syscallWindow {
	var w syscallWindow
	var r0, w0 int64
	var c0, s0 time.Duration
	var errIO error
	l.onStart = func() {
		w.errStart = tr.start(ctx)
		r0, w0, errIO = procIO(pid)
		if errIO == nil {
			c0, s0, errIO = procTimes(pid)
		}
	}
	l.onEnd = func() {
		r1, w1, err := procIO(pid)
		c1, s1, err2 := procTimes(pid)
		w.counts, w.errStop = tr.stop()
		w.read, w.written, w.cpu, w.sys = r1-r0, w1-w0, c1-c0, s1-s0
		w.errStop = errors.Join(w.errStop, errIO, err, err2)
	}
	res := l.run(ctx)
	w.requests = res.Requests
	return w
}

// syscallsOnly starts the synthetic targets and counts, with tracer, the
// system calls per answered request of the bare proxy and of authproxy
// warm, both loaded at once (half the connections each) over one window
// of -duration, and prints them side by side, then the bytes the calls
// moved, perf's page faults and context switches, and the CPU times (under
// the tracer). Counts, unlike times, hold on a machine busy with other
// work.
func (h *harness) syscallsOnly(ctx context.Context, tracer string, out io.Writer) error {
	if _, err := exec.LookPath(tracer); err != nil {
		return fmt.Errorf("-only syscalls -syscall-tracer %s: %w", tracer, err)
	}
	noAuth, warmReqs, err := h.startWarm(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pids: bare %d, authproxy %d, upstream %d\n", h.bare.pid(), h.proxy.pid(), h.upstream.pid())
	ts := []togetherTarget{{h.bareAddr, h.bare, noAuth}, {h.proxyAddr, h.proxy, warmReqs}}
	ws := make([]syscallWindow, len(ts))
	conns := max(h.o.conns/2, 1)
	var wg sync.WaitGroup
	for i, t := range ts {
		tr, err := newTracer(tracer, t.p.pid(), h.work)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws[i] = trace(ctx, tr, t.p.pid(), load{addr: t.addr, conns: conns, warmup: pairedWarmup, duration: h.o.duration, request: cycle(t.reqs, conns), want: 200})
		}()
	}
	wg.Wait()
	counts, requests := make([]syscallCounts, len(ws)), make([]int64, len(ws))
	for i, w := range ws {
		if err := errors.Join(w.errStart, w.errStop); err != nil {
			return fmt.Errorf("pid %d: %w", ts[i].p.pid(), err)
		}
		counts[i], requests[i] = w.counts, w.requests
	}
	fmt.Fprintf(out, "requests answered under %s over %s: bare %d, authproxy warm %d\n", tracer, h.o.duration, requests[0], requests[1])
	writeSyscallTable(out, []string{"bare proxy", "authproxy warm"}, syscallTable(counts, requests))
	fmt.Fprintln(out)
	writeSyscallTable(out, []string{"bare proxy", "authproxy warm"}, kernelTable(ws))
	return ctx.Err()
}

// kernelTable is the per-request rows beside the system calls: the bytes
// read and written, perf's software events (left out when a window lacks
// them: strace does not count them), and the CPU times read over the
// window (µs; under the tracer's cost).
func kernelTable(ws []syscallWindow) []syscallRow {
	var evs []string
	for _, ev := range kernelEvents() {
		if !slices.ContainsFunc(ws, func(w syscallWindow) bool { _, ok := w.counts[ev]; return !ok }) {
			evs = append(evs, ev)
		}
	}
	rows := []syscallRow{{name: "bytes read"}, {name: "bytes written"}}
	for _, ev := range evs {
		rows = append(rows, syscallRow{name: ev})
	}
	rows = append(rows, syscallRow{name: "CPU µs (utime + stime)"}, syscallRow{name: "kernel µs (stime)"})
	for _, w := range ws {
		n := float64(max(w.requests, 1))
		v := []float64{float64(w.read) / n, float64(w.written) / n}
		for _, ev := range evs {
			v = append(v, float64(w.counts[ev])/n)
		}
		v = append(v, float64(w.cpu)/float64(time.Microsecond)/n, float64(w.sys)/float64(time.Microsecond)/n)
		for i := range rows {
			rows[i].per = append(rows[i].per, v[i])
		}
	}
	return rows
}
