package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// usage is what the processes and CPUs of an open-loop row did over its
// measured window: each process's CPU-seconds per second (utime+stime from
// /proc/<pid>/stat ÷ the window's wall time; 1 is one CPU kept busy), and
// the busy share of the generator's CPUs and of the measured proxy's CPUs
// from /proc/stat (0 to 1 per CPU; every process on the machine counts, so
// other work shows). -1 where unread.
type usage struct {
	generator, upstream, proxy float64
	generatorCPUs, proxyCPUs   float64
}

// usageProbe samples /proc at the start and end of a window (load's
// onStart and onEnd).
type usageProbe struct {
	pids                     [3]int // generator, upstream, proxy
	generatorCPUs, proxyCPUs []int  // nil: not pinned, not read
	t0                       time.Time
	cpu0                     [3]time.Duration
	err0                     [3]error
	stat0                    map[int]cpuTicks
	statErr0                 error
	got                      usage
}

func newUsageProbe(generator, upstream, proxy int, generatorCPUs, proxyCPUs []int) *usageProbe {
	return &usageProbe{pids: [3]int{generator, upstream, proxy}, generatorCPUs: generatorCPUs, proxyCPUs: proxyCPUs}
}

func (u *usageProbe) start() {
	u.stat0, u.statErr0 = readCPUTicks()
	for i, p := range u.pids {
		u.cpu0[i], u.err0[i] = procCPU(p)
	}
	u.t0 = time.Now()
}

func (u *usageProbe) end() {
	elapsed := time.Since(u.t0)
	var per [3]float64
	for i, p := range u.pids {
		per[i] = -1
		c, err := procCPU(p)
		if err == nil && u.err0[i] == nil {
			per[i] = cpuPerSecond(c-u.cpu0[i], elapsed)
		}
	}
	u.got = usage{generator: per[0], upstream: per[1], proxy: per[2], generatorCPUs: -1, proxyCPUs: -1}
	stat1, err := readCPUTicks()
	if err == nil && u.statErr0 == nil {
		u.got.generatorCPUs = busyShare(u.stat0, stat1, u.generatorCPUs)
		u.got.proxyCPUs = busyShare(u.stat0, stat1, u.proxyCPUs)
	}
}

// cpuPerSecond is CPU time used over a wall-clock window, in CPU-s/s.
func cpuPerSecond(cpu, wall time.Duration) float64 {
	if wall <= 0 || cpu < 0 {
		return -1
	}
	return cpu.Seconds() / wall.Seconds()
}

// cpuTicks is one CPU's line of /proc/stat: the ticks it spent busy and in
// all (idle and iowait are not busy).
type cpuTicks struct{ busy, total uint64 }

func readCPUTicks() (map[int]cpuTicks, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	return parseCPUTicks(string(b))
}

// parseCPUTicks reads the per-CPU lines ("cpuN user nice system idle
// iowait irq softirq steal ..."; guest time is already in user) of
// /proc/stat.
func parseCPUTicks(stat string) (map[int]cpuTicks, error) {
	out := map[int]cpuTicks{}
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(f[0], "cpu"))
		if err != nil {
			continue
		}
		var t cpuTicks
		for i, s := range f[1:9] { // user .. steal
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/stat %s: bad field %q", f[0], s)
			}
			t.total += v
			if i != 3 && i != 4 { // idle, iowait
				t.busy += v
			}
		}
		out[n] = t
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("/proc/stat: no per-CPU line")
	}
	return out, nil
}

// busyShare is the busy part of the ticks cpus spent between two reads of
// /proc/stat, 0 to 1 (-1: no CPU given, or none read).
func busyShare(before, after map[int]cpuTicks, cpus []int) float64 {
	var busy, total uint64
	for _, c := range cpus {
		a, okA := after[c]
		b, okB := before[c]
		if !okA || !okB || a.total < b.total || a.busy < b.busy {
			continue
		}
		busy += a.busy - b.busy
		total += a.total - b.total
	}
	if total == 0 {
		return -1
	}
	return float64(busy) / float64(total)
}

// saturated is the busy share from which a CPU counts as saturated: its
// run queue, not the process measured, then sets the latency.
const saturated = 0.9

// saturation names the CPUs of u that were saturated ("" when none).
func (u usage) saturation() string {
	var s []string
	if u.generatorCPUs >= saturated {
		s = append(s, fmt.Sprintf("CPU 0 (the generator's) busy %.0f %%", 100*u.generatorCPUs))
	}
	if u.proxyCPUs >= saturated {
		s = append(s, fmt.Sprintf("the other CPUs (the proxy's) busy %.0f %%", 100*u.proxyCPUs))
	}
	return strings.Join(s, ", ")
}

// cpuPS formats CPU-seconds per second ("–": unread).
func cpuPS(v float64) string {
	if v < 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

// busyPct formats a busy share as a percentage ("–": unread).
func busyPct(v float64) string {
	if v < 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*v)
}
