package main

import (
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func affinity(t *testing.T, pid int) unix.CPUSet {
	t.Helper()
	var s unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func sleeper(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

// onlyCPU0 and notCPU0 check the two sides of a placement.
func onlyCPU0(t *testing.T, what string, pid int) {
	t.Helper()
	if s := affinity(t, pid); s.Count() != 1 || !s.IsSet(0) {
		t.Errorf("%s on %d CPUs (CPU 0: %v), want CPU 0 only", what, s.Count(), s.IsSet(0))
	}
}

func notCPU0(t *testing.T, what string, pid int) {
	t.Helper()
	if s := affinity(t, pid); s.IsSet(0) || s.Count() != runtime.NumCPU()-1 {
		t.Errorf("%s on %d CPUs (CPU 0: %v), want all but CPU 0", what, s.Count(), s.IsSet(0))
	}
}

func everyCPU(t *testing.T, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if s := affinity(t, pid); s.Count() != runtime.NumCPU() {
			t.Errorf("after undo, %d is on %d of %d CPUs", pid, s.Count(), runtime.NumCPU())
		}
	}
}

// isolate (the shared placement) puts this process on CPU 0 and every
// target on the others, every thread of each, and undo gives them every
// CPU back.
func TestIsolate(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	a, b := sleeper(t), sleeper(t)
	iso, err := isolate(a, b)
	if err != nil {
		t.Fatal(err)
	}
	onlyCPU0(t, "generator thread", unix.Gettid())
	notCPU0(t, "target a", a)
	notCPU0(t, "target b", b)
	if len(iso.generatorCPUs) != 1 || iso.generatorCPUs[0] != 0 || len(iso.targetCPUs) != runtime.NumCPU()-1 || iso.targetCPUs[0] != 1 {
		t.Errorf("placement says generator on %v, targets on %v", iso.generatorCPUs, iso.targetCPUs)
	}
	iso.undo()
	everyCPU(t, unix.Gettid(), a, b)
}

// isolateAlone (the open-loop rows' default placement) gives the proxy
// measured the CPUs other than CPU 0 to itself, and puts this process (the
// generator), the upstream and the idle proxy on CPU 0; undo gives every
// one of them every CPU back.
func TestIsolateAlone(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	proxy, upstream, idle := sleeper(t), sleeper(t), sleeper(t)
	iso, err := isolateAlone(proxy, upstream, idle)
	if err != nil {
		t.Fatal(err)
	}
	onlyCPU0(t, "generator thread", unix.Gettid())
	onlyCPU0(t, "upstream", upstream)
	onlyCPU0(t, "idle proxy", idle)
	notCPU0(t, "proxy measured", proxy)
	iso.undo()
	everyCPU(t, unix.Gettid(), proxy, upstream, idle)

	// A process that is gone: an error, and nothing left pinned.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := isolateAlone(gone.Process.Pid, upstream); err == nil {
		t.Fatal("pinned a process that has exited")
	}
	everyCPU(t, unix.Gettid(), upstream)
}
