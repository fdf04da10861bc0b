package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// pinProcess sets the CPU affinity of every thread of process pid (0: this
// process) to cpus. Threads started later inherit it from their creator.
func pinProcess(pid int, cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	dir := "/proc/self/task"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/task"
	}
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("affinity of thread %d: %w", tid, err)
		}
	}
	return nil
}

// isolation pins the load generator (this process) to CPU 0 and the
// targets (pids) to the other CPUs, so that generating load takes no CPU
// from what is measured; undo gives every process every CPU back. It
// needs at least two CPUs.
type isolation struct{ pids []int }

func isolate(pids ...int) (*isolation, error) {
	n := runtime.NumCPU()
	if n < 2 {
		return nil, fmt.Errorf("%d CPU: nothing to isolate the generator on", n)
	}
	rest := make([]int, 0, n-1)
	for c := 1; c < n; c++ {
		rest = append(rest, c)
	}
	iso := &isolation{pids: pids}
	if err := pinProcess(0, []int{0}); err != nil {
		iso.undo()
		return nil, err
	}
	for _, p := range pids {
		if err := pinProcess(p, rest); err != nil {
			iso.undo()
			return nil, err
		}
	}
	return iso, nil
}

func (iso *isolation) undo() {
	all := make([]int, runtime.NumCPU())
	for i := range all {
		all[i] = i
	}
	_ = pinProcess(0, all)
	for _, p := range iso.pids {
		_ = pinProcess(p, all)
	}
}
