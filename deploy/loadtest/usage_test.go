package main

import (
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// burnEnv makes the test binary, run as a child, burn the share of one
// CPU it names (e.g. "0.3") until killed, instead of running the tests.
const burnEnv = "LOADTEST_TEST_BURN"

func TestMain(m *testing.M) {
	if os.Getenv(syscallChildEnv) != "" {
		syscallChild()
	}
	if s := os.Getenv(burnEnv); s != "" {
		share, err := strconv.ParseFloat(s, 64)
		if err != nil || share <= 0 || share > 1 {
			os.Exit(2)
		}
		burn(share)
	}
	os.Exit(m.Run())
}

// burn keeps one thread busy for share of every 20 ms period, counting
// its own CPU time (so that time it waits for the CPU is not counted as
// burnt), and sleeps the rest of the period.
func burn(share float64) {
	runtime.LockOSThread()
	const period = 20 * time.Millisecond
	busy := time.Duration(share * float64(period))
	threadCPU := func() time.Duration {
		var ts unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
		return time.Duration(ts.Nano())
	}
	for {
		start, c0 := time.Now(), threadCPU()
		for threadCPU()-c0 < busy {
		}
		time.Sleep(time.Until(start.Add(period)))
	}
}

// startBurner starts a child burning share of a CPU.
func startBurner(t *testing.T, share string) int {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), burnEnv+"="+share)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

// The probe reads, over a window, the CPU-s/s of a process burning a known
// share of a CPU (as the proxy), of one that sleeps (as the upstream) and
// of this process (as the generator), and the busy share of the CPU the
// burner is pinned to, which cannot be less than what the burner used
// there.
func TestUsageProbe(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	burner, idle := startBurner(t, "0.3"), sleeper(t)
	iso, err := isolateAlone(burner, idle)
	if err != nil {
		t.Fatal(err)
	}
	defer iso.undo()
	time.Sleep(200 * time.Millisecond) // the child is past its start-up
	p := newUsageProbe(os.Getpid(), idle, burner, iso.generatorCPUs, iso.targetCPUs)
	// The window lasts until the burner has run 0.5 CPU-s (2 s at its 0.3;
	// longer when the rest of the machine's work leaves it less), so that
	// the ticks' rounding is a small part of what is read.
	p.start()
	run0, t0 := schedRun(t, burner), time.Now()
	time.Sleep(time.Second)
	for schedRun(t, burner)-run0 < 500*time.Millisecond && time.Since(t0) < 20*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	run1, window := schedRun(t, burner), time.Since(t0)
	p.end()
	ran := float64(run1-run0) / float64(window)
	u := p.got
	t.Logf("usage %+v over %v; the scheduler's count of the burner's run time %.3f CPU-s/s", u, window.Round(time.Millisecond), ran)
	// The burner uses at most 0.3, and the probe's reading, from the 10 ms
	// ticks of /proc/<pid>/stat, is what the scheduler's own nanosecond
	// count (/proc/<pid>/task/*/schedstat) says it ran, within 40 ms of
	// CPU time over the window (a few ticks, and the reads' own moments).
	if ran*window.Seconds() < 0.3 {
		t.Fatalf("the burner ran %.3f CPU-s/s over %v: too little CPU was left it to check anything", ran, window)
	}
	if u.proxy > 0.36 || math.Abs(u.proxy-ran)*window.Seconds() > 0.04 {
		t.Errorf("burner (0.3 of a CPU, %.3f by the scheduler) read as %.3f CPU-s/s", ran, u.proxy)
	}
	if u.upstream < 0 || u.upstream > 0.02 {
		t.Errorf("sleeping process read as %.3f CPU-s/s", u.upstream)
	}
	if u.generator < 0 || u.generator > 0.2 {
		t.Errorf("this (sleeping) process read as %.3f CPU-s/s", u.generator)
	}
	if u.proxyCPUs < u.proxy/float64(len(iso.targetCPUs))-0.03 || u.proxyCPUs > 1 {
		t.Errorf("the burner's CPUs busy %.3f, the burner alone used %.3f CPU-s/s there", u.proxyCPUs, u.proxy)
	}
	if u.generatorCPUs < 0 || u.generatorCPUs > 1 {
		t.Errorf("CPU 0 busy %.3f", u.generatorCPUs)
	}

	// Unreadable: a process that is gone, and no CPUs given.
	q := newUsageProbe(os.Getpid(), 1<<30, burner, nil, nil)
	q.start()
	q.end()
	if q.got.upstream != -1 || q.got.generatorCPUs != -1 || q.got.proxyCPUs != -1 || q.got.proxy < 0 {
		t.Errorf("unread figures not -1 (or a read one -1): %+v", q.got)
	}
}

// schedRun is the time the scheduler counts the threads of process pid as
// having run (the first field of each /proc/<pid>/task/<tid>/schedstat, in
// nanoseconds): a count apart from the ticks the probe reads.
func schedRun(t *testing.T, pid int) time.Duration {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var sum time.Duration
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/schedstat")
		if err != nil {
			continue // a thread gone meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			t.Fatalf("schedstat of %s: %q", task.Name(), b)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			t.Fatalf("schedstat of %s: %v", task.Name(), err)
		}
		sum += time.Duration(ns)
	}
	return sum
}

// Busy shares come from the per-CPU lines of /proc/stat: idle and iowait
// are not busy, every other field up to steal is; the sum line is skipped.
func TestCPUTicks(t *testing.T) {
	before, err := parseCPUTicks("cpu  10 0 10 80 0 0 0 0 0 0\n" +
		"cpu0 100 1 50 800 20 3 4 2 7 0\n" +
		"cpu1 10 0 10 80 0 0 0 0 0 0\nintr 1 2 3\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := before[0]; got != (cpuTicks{busy: 160, total: 980}) {
		t.Fatalf("cpu0 = %+v, want busy 160 of 980", got)
	}
	after := map[int]cpuTicks{0: {busy: 160 + 90, total: 980 + 100}, 1: {busy: 20 + 10, total: 100 + 100}}
	if got := busyShare(before, after, []int{0}); got != 0.9 {
		t.Errorf("busyShare(cpu0) = %v, want 0.9", got)
	}
	if got := busyShare(before, after, []int{0, 1}); got != 0.5 {
		t.Errorf("busyShare(cpu0, cpu1) = %v, want 0.5", got)
	}
	if got := busyShare(before, after, nil); got != -1 {
		t.Errorf("busyShare(no CPU) = %v, want -1", got)
	}
	if got := busyShare(before, after, []int{7}); got != -1 {
		t.Errorf("busyShare(absent CPU) = %v, want -1", got)
	}
	for _, bad := range []string{"intr 1 2\n", "cpu0 1 2 x 4 5 6 7 8\n"} {
		if _, err := parseCPUTicks(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	live, err := readCPUTicks()
	if err != nil || len(live) != runtime.NumCPU() {
		t.Fatalf("/proc/stat: %d CPUs, %v; want %d", len(live), err, runtime.NumCPU())
	}
	if got := cpuPerSecond(1500*time.Millisecond, 2*time.Second); got != 0.75 {
		t.Errorf("cpuPerSecond = %v, want 0.75", got)
	}
}

// A CPU at 90 % busy or more is named as saturated; below, nothing.
func TestSaturation(t *testing.T) {
	if s := (usage{generatorCPUs: 0.89, proxyCPUs: 0.5}).saturation(); s != "" {
		t.Errorf("saturation below 90 %%: %q", s)
	}
	s := usage{generatorCPUs: 0.95, proxyCPUs: -1}.saturation()
	if !strings.Contains(s, "CPU 0 (the generator's) busy 95 %") || strings.Contains(s, "other CPUs") {
		t.Errorf("saturation = %q", s)
	}
	if s := (usage{generatorCPUs: 0.2, proxyCPUs: 0.97}).saturation(); s != "the other CPUs (the proxy's) busy 97 %" {
		t.Errorf("saturation = %q", s)
	}
}

// The open-loop rate puts the bare proxy at half a CPU, within the
// generator's limit and half the closed-loop rate.
func TestHalfLoadRate(t *testing.T) {
	tests := []struct {
		name      string
		probe     float64
		use       usage
		closed    float64
		want      float64
		whyHas    string
		whyHasNot string
	}{
		// 5,000/s cost the proxy 0.25 CPU-s/s: half a CPU is 10,000/s.
		{"proxy bound", 5000, usage{generator: 0.1, upstream: 0.1, proxy: 0.25}, 40000, 10000, "at 5000 req/s open loop it used 0.25", "lowered"},
		// The generator and upstream would need 0.8 at 10,000/s: held to 0.7.
		{"generator bound", 5000, usage{generator: 0.2, upstream: 0.2, proxy: 0.25}, 40000, 8750, "lowered", "capped"},
		// A cheap proxy is still held to half the closed-loop rate.
		{"capped", 5000, usage{generator: 0.01, upstream: 0.01, proxy: 0.05}, 20000, 10000, "capped", "lowered"},
		{"unmeasured", 5000, usage{generator: -1, upstream: -1, proxy: -1}, 20000, 10000, "could not be measured", "half a CPU"},
	}
	for _, tt := range tests {
		got, why := halfLoadRate(tt.probe, tt.use, tt.closed)
		if math.Abs(got-tt.want) > 0.01 {
			t.Errorf("%s: rate %.2f, want %.2f", tt.name, got, tt.want)
		}
		if !strings.Contains(why, tt.whyHas) || strings.Contains(why, tt.whyHasNot) {
			t.Errorf("%s: why %q, want it to say %q and not %q", tt.name, why, tt.whyHas, tt.whyHasNot)
		}
	}
}
