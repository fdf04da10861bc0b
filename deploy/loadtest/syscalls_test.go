package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseStraceSummary(t *testing.T) {
	const out = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 61.59    0.421399           4     97823     48891 read
 36.37    0.248833           5     48934           write
  1.20    0.008229           3      2512           epoll_pwait
  0.00    0.000000           0         1         1 futex
------ ----------- ----------- --------- --------- ----------------
100.00    0.684211           4    149270     48892 total
`
	got, err := parseStraceSummary(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := syscallCounts{"read": 97823, "write": 48934, "epoll_pwait": 2512, "futex": 1}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %d, want %d", k, got[k], v)
		}
	}
	if _, err := parseStraceSummary(strings.NewReader("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n")); err == nil {
		t.Error("no table: got no error")
	}
}

func TestParsePerfStat(t *testing.T) {
	const out = `# started on Mon Dec  7 16:06:03 2026

31790,,raw_syscalls:sys_enter,50019100,100.00,,
12,,page-faults,50019100,100.00,,
7,,context-switches,50019100,100.00,,
0,,syscalls:sys_enter_read,50046042,100.00,,
31766,,syscalls:sys_enter_write,50072221,100.00,,
<not counted>,,syscalls:sys_enter_futex,0,100.00,,
`
	got, err := parsePerfStat(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	// 24 calls counted by raw_syscalls but by no named tracepoint are
	// "other"; the software events are not system calls.
	want := syscallCounts{"write": 31766, "other": 24, "page-faults": 12, "context-switches": 7}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %d, want %d", k, got[k], v)
		}
	}
	rows := syscallTable([]syscallCounts{{"write": 10}, got}, []int64{5, 31766})
	if last := rows[len(rows)-1]; last.name != "total" || last.per[0] != 2 || last.per[1] != float64(31766+24)/31766 {
		t.Errorf("total row %+v: want 2 and the second's calls (page faults and context switches left out) ÷ its requests", last)
	}
	if _, err := parsePerfStat(strings.NewReader("0,,syscalls:sys_enter_read,1,100.00,,\n")); err == nil {
		t.Error("no raw_syscalls count: got no error")
	}
}

func TestParseProcIO(t *testing.T) {
	r, w, err := parseProcIO("rchar: 6976\nwchar: 12\nsyscr: 10\nsyscw: 1\nread_bytes: 0\n")
	if err != nil || r != 6976 || w != 12 {
		t.Errorf("got %d, %d, %v; want 6976, 12, nil", r, w, err)
	}
	if _, _, err := parseProcIO("syscr: 10\n"); err == nil {
		t.Error("no rchar: got no error")
	}
}

// syscallChildEnv makes this test binary a child that, on each line read
// from its standard input, makes that many getppid calls (which the Go
// runtime itself never makes) and answers "done".
const syscallChildEnv = "LOADTEST_SYSCALL_CHILD"

func syscallChild() {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var n int
		for _, c := range sc.Text() {
			n = n*10 + int(c-'0')
		}
		for range n {
			syscall.Getppid()
		}
		os.Stdout.WriteString("done\n")
	}
	os.Exit(0)
}

// Each tracer counts the calls made inside its window and none made
// before it opened or after it closed.
func TestTracersCountTheWindow(t *testing.T) {
	for _, name := range []string{"perf", "strace"} {
		t.Run(name, func(t *testing.T) {
			if _, err := exec.LookPath(name); err != nil {
				t.Skipf("%s is not installed", name)
			}
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(self)
			cmd.Env = append(os.Environ(), syscallChildEnv+"=1")
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			answers := bufio.NewScanner(stdout)
			calls := func(n string) {
				t.Helper()
				if _, err := in.Write([]byte(n + "\n")); err != nil {
					t.Fatal(err)
				}
				if !answers.Scan() || answers.Text() != "done" {
					t.Fatalf("child: %q, %v", answers.Text(), answers.Err())
				}
			}
			calls("500") // before the window
			waitReading(t, cmd.Process.Pid)
			tr, err := newTracer(name, cmd.Process.Pid, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := tr.start(ctx); err != nil {
				t.Fatal(err)
			}
			calls("1000")
			calls("234")
			// The answer reaches this process while the write is still
			// stopped at its exit for strace, which counts a call there:
			// the window closes once the child waits for its next line.
			waitReading(t, cmd.Process.Pid)
			got, err := tr.stop()
			if err != nil {
				t.Fatal(err)
			}
			calls("700") // after it
			if got["getppid"] != 1234 {
				t.Errorf("getppid: got %d, want 1234 (all: %v)", got["getppid"], got)
			}
			// The read of the first line began before the window.
			if got["read"] < 1 || got["write"] < 2 {
				t.Errorf("read %d, write %d: want the second line read and both answered at least", got["read"], got["write"])
			}
		})
	}
}

// waitReading returns once a thread of process pid sleeps in a read of
// its standard input: every call the child made before it has returned,
// so a tracer has seen each one end.
func waitReading(t *testing.T, pid int) {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	var last []string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		tasks, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		last = last[:0]
		for _, task := range tasks {
			stat, err1 := os.ReadFile(dir + task.Name() + "/stat")
			call, err2 := os.ReadFile(dir + task.Name() + "/syscall")
			if err1 != nil || err2 != nil {
				continue // a thread gone meanwhile
			}
			// The state follows the command name, which is in parentheses.
			after := string(stat[bytes.LastIndexByte(stat, ')')+1:])
			state, _, _ := strings.Cut(strings.TrimSpace(after), " ")
			f := strings.Fields(string(call))
			if state == "S" && len(f) > 1 && f[0] == "0" && f[1] == "0x0" { // read(0, ...)
				return
			}
			last = append(last, task.Name()+" "+state+" "+strings.Join(f[:min(len(f), 2)], " "))
		}
	}
	t.Fatalf("child %d: no thread reads its standard input after 30s (thread, state, call, first argument: %v)", pid, last)
}

func TestUnknownTracer(t *testing.T) {
	if _, err := newTracer("ltrace", 1, t.TempDir()); err == nil {
		t.Error("got no error")
	}
}

// perf's software events are rows only when every window counted them:
// strace's windows do not, and a 0 there would read as none happening.
func TestKernelTableRows(t *testing.T) {
	perf := []syscallWindow{
		{counts: syscallCounts{"read": 8, "page-faults": 0, "context-switches": 3}, requests: 2, read: 640, written: 660, cpu: 80 * time.Microsecond, sys: 50 * time.Microsecond},
		{counts: syscallCounts{"read": 8, "page-faults": 2, "context-switches": 4}, requests: 2, read: 1760, written: 1820, cpu: 100 * time.Microsecond, sys: 56 * time.Microsecond},
	}
	strace := []syscallWindow{{counts: syscallCounts{"read": 8}, requests: 2}, {counts: syscallCounts{"read": 8}, requests: 2}}
	names := func(rows []syscallRow) string {
		var n []string
		for _, r := range rows {
			n = append(n, r.name)
		}
		return strings.Join(n, ", ")
	}
	rows := kernelTable(perf)
	if got, want := names(rows), "bytes read, bytes written, page-faults, context-switches, CPU µs (utime + stime), kernel µs (stime)"; got != want {
		t.Errorf("perf rows: got %s, want %s", got, want)
	}
	if got := rows[0].per; got[0] != 320 || got[1] != 880 {
		t.Errorf("bytes read per request: got %v, want [320 880]", got)
	}
	if got := rows[5].per; got[0] != 25 || got[1] != 28 {
		t.Errorf("kernel µs per request: got %v, want [25 28]", got)
	}
	if got, want := names(kernelTable(strace)), "bytes read, bytes written, CPU µs (utime + stime), kernel µs (stime)"; got != want {
		t.Errorf("strace rows: got %s, want %s", got, want)
	}
}

// A tracer that cannot attach says so when the window opens, with the
// tool's own words, rather than counting nothing.
func TestTracerRefusedAtStart(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	pid := gone.Process.Pid // exited and reaped: no such process
	// What each tool says of a process that is gone.
	for name, says := range map[string]string{"perf": "problems finding threads", "strace": "no such process"} {
		t.Run(name, func(t *testing.T) {
			if _, err := exec.LookPath(name); err != nil {
				t.Skipf("%s is not installed", name)
			}
			tr, err := newTracer(name, pid, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = tr.start(ctx)
			if err == nil {
				_, _ = tr.stop()
				t.Fatalf("pid %d is gone: got no error", pid)
			}
			if msg := strings.ToLower(err.Error()); !strings.Contains(msg, strconv.Itoa(pid)) || !strings.Contains(msg, says) || strings.Contains(msg, "usage") {
				t.Errorf("got %q: want the pid and the tool's reason (%q), without its usage text", err, says)
			}
		})
	}
}
