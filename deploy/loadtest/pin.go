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

// isolation is a placement of processes on CPUs: the load generator (this
// process) on generatorCPUs (CPU 0), the processes measured on
// targetCPUs (every other CPU), anything else listed with the generator.
// undo gives every process every CPU back. It needs at least two CPUs.
type isolation struct {
	pids                      []int // every process pinned, 0: this one
	generatorCPUs, targetCPUs []int
}

// cpuSplit returns CPU 0 and the other CPUs, or an error with fewer than two.
func cpuSplit() (first, rest []int, err error) {
	n := runtime.NumCPU()
	if n < 2 {
		return nil, nil, fmt.Errorf("%d CPU: nothing to isolate the generator on", n)
	}
	for c := 1; c < n; c++ {
		rest = append(rest, c)
	}
	return []int{0}, rest, nil
}

// isolate pins this process (the generator) to CPU 0 and every one of
// targets to the other CPUs, which they share.
func isolate(targets ...int) (*isolation, error) {
	return place(targets, nil)
}

// place pins this process and each of beside to CPU 0 and each of targets
// to the other CPUs. isolateAlone(p, q...) is place([p], q).
func place(targets, beside []int) (*isolation, error) {
	first, rest, err := cpuSplit()
	if err != nil {
		return nil, err
	}
	iso := &isolation{generatorCPUs: first, targetCPUs: rest}
	pin := func(pid int, cpus []int) error {
		iso.pids = append(iso.pids, pid)
		if err := pinProcess(pid, cpus); err != nil {
			iso.undo()
			return err
		}
		return nil
	}
	if err := pin(0, first); err != nil {
		return nil, err
	}
	for _, p := range beside {
		if err := pin(p, first); err != nil {
			return nil, err
		}
	}
	for _, p := range targets {
		if err := pin(p, rest); err != nil {
			return nil, err
		}
	}
	return iso, nil
}

// isolateAlone gives the process measured (target) the CPUs other than
// CPU 0 to itself: this process (the generator) and every one of beside
// (the upstream, the idle proxy) run on CPU 0.
func isolateAlone(target int, beside ...int) (*isolation, error) {
	return place([]int{target}, beside)
}

func (iso *isolation) undo() {
	all := make([]int, runtime.NumCPU())
	for i := range all {
		all[i] = i
	}
	for _, p := range iso.pids {
		_ = pinProcess(p, all)
	}
}
