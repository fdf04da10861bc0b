// Package scalesim measures what a fleet of proxies costs past one
// machine: invalidation fan-out from one NATS server (or a 3-node cluster)
// to N subscribers built from the proxy's own invalidation client and
// projection cache, and the cold-start storm of a whole fleet restarting
// against a real coreapi. NATS runs as its own process (Debian's
// nats-server) so its CPU can be read from /proc. It is driven by
// cmd/scalesim (`make bench-scale`) and is not part of `make test`.
package scalesim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrNoNATSServer: no nats-server program was found.
var ErrNoNATSServer = errors.New("nats-server not found: install Debian's package (`apt-get install -y nats-server`, as root) " +
	"or set NATS_SERVER_BIN to a nats-server program; nothing is downloaded")

// FindNATSServer returns the nats-server program: $NATS_SERVER_BIN, then
// PATH, then /usr/sbin and /usr/bin (Debian installs it in /usr/sbin, which
// is not on every user's PATH).
func FindNATSServer(getenv func(string) string) (string, error) {
	if p := getenv("NATS_SERVER_BIN"); p != "" {
		if isExec(p) {
			return p, nil
		}
		return "", fmt.Errorf("NATS_SERVER_BIN=%s is not an executable file: %w", p, ErrNoNATSServer)
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
		if p := filepath.Join(d, "nats-server"); isExec(p) {
			return p, nil
		}
	}
	return "", ErrNoNATSServer
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Node is one nats-server process.
type Node struct {
	Name        string
	ClientPort  int
	MonitorPort int
	ClusterPort int // 0 when not clustered
	cmd         *exec.Cmd
	log         *os.File
}

// URL is the node's client URL.
func (n *Node) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.ClientPort) }

// Pid is the server's process id.
func (n *Node) Pid() int { return n.cmd.Process.Pid }

// nodeArgs are the command-line arguments of node i of a cluster of nodes
// (a cluster of one has no cluster flags).
func nodeArgs(nodes []*Node, i int) []string {
	n := nodes[i]
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(n.ClientPort), "-m", strconv.Itoa(n.MonitorPort), "-n", n.Name}
	if len(nodes) == 1 {
		return args
	}
	var routes []string
	for j, o := range nodes {
		if j != i {
			routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(o.ClusterPort))
		}
	}
	return append(args, "--cluster_name", "tollgate", "--cluster", "nats://127.0.0.1:"+strconv.Itoa(n.ClusterPort),
		"--routes", strings.Join(routes, ","))
}

// Cluster is one or more nats-server processes.
type Cluster struct{ Nodes []*Node }

// StartCluster starts size nats-server processes (routed to each other when
// size > 1), logging into dir, and waits until each is healthy and, for a
// cluster, fully routed.
func StartCluster(bin, dir string, size int) (*Cluster, error) {
	c := &Cluster{}
	for i := range size {
		n := &Node{Name: "scalesim-" + strconv.Itoa(i), ClientPort: freePort(), MonitorPort: freePort()}
		if size > 1 {
			n.ClusterPort = freePort()
		}
		c.Nodes = append(c.Nodes, n)
	}
	for i, n := range c.Nodes {
		f, err := os.Create(filepath.Join(dir, n.Name+".log"))
		if err != nil {
			c.Stop()
			return nil, err
		}
		n.log = f
		n.cmd = exec.Command(bin, nodeArgs(c.Nodes, i)...)
		n.cmd.Stdout, n.cmd.Stderr = f, f
		if err := n.cmd.Start(); err != nil {
			c.Stop()
			return nil, fmt.Errorf("start %s: %w", bin, err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range c.Nodes {
		for {
			v, err := n.Varz()
			if err == nil && v.Routes >= size-1 {
				break
			}
			if time.Now().After(deadline) {
				c.Stop()
				return nil, fmt.Errorf("nats-server %s not ready (routes %d of %d, err %v); see %s", n.Name, v.Routes, size-1, err, n.log.Name())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c, nil
}

// URLs are the client URLs of every node.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.URL()
	}
	return out
}

// Stop terminates every node and waits for it.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			_ = n.cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = n.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = n.cmd.Process.Kill()
				<-done
			}
		}
		if n.log != nil {
			_ = n.log.Close()
		}
	}
}

// CPU is the CPU time every node has used so far.
func (c *Cluster) CPU() (time.Duration, error) {
	var sum time.Duration
	for _, n := range c.Nodes {
		d, err := ProcessCPU(n.Pid())
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// SlowConsumers is the servers' count of slow consumers so far.
func (c *Cluster) SlowConsumers() (int64, error) {
	var sum int64
	for _, n := range c.Nodes {
		v, err := n.Varz()
		if err != nil {
			return 0, err
		}
		sum += v.SlowConsumers
	}
	return sum, nil
}

// Varz is the part of the server's /varz the simulation reads.
type Varz struct {
	Connections   int   `json:"connections"`
	Routes        int   `json:"routes"`
	SlowConsumers int64 `json:"slow_consumers"`
	OutMsgs       int64 `json:"out_msgs"`
	Mem           int64 `json:"mem"`
}

// Varz reads the node's monitoring endpoint.
func (n *Node) Varz() (Varz, error) {
	var v Varz
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(n.MonitorPort) + "/varz")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("varz: %w", err)
	}
	return v, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// ProcessCPU is the user+system CPU time of a process, from
// /proc/<pid>/stat.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("process cpu: %w", err)
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may itself hold spaces and parentheses, so fields are counted after the
// last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("process cpu: no command field in stat")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("process cpu: %d fields after the command, want at least 13", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || ut < 0 || st < 0 {
		return 0, fmt.Errorf("process cpu: bad utime %q or stime %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// freePort asks the kernel for a free loopback port.
func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ProcessRSS is a process's resident set size, from /proc/<pid>/status.
func ProcessRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("process rss: %w", err)
	}
	return parseStatusRSS(string(b))
}

// parseStatusRSS reads the VmRSS line ("VmRSS:   12345 kB") of a
// /proc/<pid>/status text, in bytes.
func parseStatusRSS(status string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("process rss: bad VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("process rss: bad VmRSS line %q", line)
		}
		return kb << 10, nil
	}
	return 0, errors.New("process rss: no VmRSS line")
}
