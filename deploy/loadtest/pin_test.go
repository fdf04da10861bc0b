package main

import (
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// isolate puts this process on CPU 0 and a target on the others, every
// thread of each, and undo gives both every CPU back.
func TestIsolate(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	affinity := func(pid int) unix.CPUSet {
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(pid, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	iso, err := isolate(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if s := affinity(unix.Gettid()); s.Count() != 1 || !s.IsSet(0) {
		t.Errorf("generator thread on %d CPUs (CPU 0: %v), want CPU 0 only", s.Count(), s.IsSet(0))
	}
	if s := affinity(cmd.Process.Pid); s.IsSet(0) || s.Count() != runtime.NumCPU()-1 {
		t.Errorf("target on %d CPUs (CPU 0: %v), want all but CPU 0", s.Count(), s.IsSet(0))
	}
	iso.undo()
	for _, pid := range []int{unix.Gettid(), cmd.Process.Pid} {
		if s := affinity(pid); s.Count() != runtime.NumCPU() {
			t.Errorf("after undo, %d is on %d of %d CPUs", pid, s.Count(), runtime.NumCPU())
		}
	}
}
