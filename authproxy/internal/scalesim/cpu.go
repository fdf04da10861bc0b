package scalesim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/projection"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/valyala/fasthttp"
)

// CPURow is the CPU each process spent per request of one kind, from
// /proc, under a closed-loop load.
type CPURow struct {
	Name             string
	Conns            int
	Requests, Errors int64
	Wall             time.Duration
	Proxy, Core, PG  time.Duration // zero Proxy: no proxy in the path
}

// PerRequest is d per successful request.
func (r *CPURow) PerRequest(d time.Duration) time.Duration {
	if r.Requests == 0 {
		return 0
	}
	return d / time.Duration(r.Requests)
}

// cpuSampler reads the CPU of the processes in a request's path.
type cpuSampler struct {
	core     *Core
	proxyPid int // 0: none
}

func (s cpuSampler) read(ctx context.Context) (proxy, core, pg time.Duration, err error) {
	if s.proxyPid != 0 {
		if proxy, err = ProcessCPU(s.proxyPid); err != nil {
			return
		}
	}
	if core, err = ProcessCPU(s.core.Pid()); err != nil {
		return
	}
	pg, _, err = s.core.PostgresCPU(ctx)
	return
}

// CPUWarmup is the unmeasured start of every CPU row: the first requests
// open the connections (coreapi's pool connections and their PostgreSQL
// backends, whose caches start empty; the proxy's to coreapi), which no
// request after them pays.
const CPUWarmup = time.Second

// closedLoop runs conns workers, each calling do, for warmup and then for
// the measured window d, and returns the CPU each process spent in the
// window (read by read at its edges, while the workers run) and the
// requests that ended in it.
func closedLoop(ctx context.Context, name string, read func(context.Context) (proxy, core, pg time.Duration, err error), conns int, warmup, d time.Duration,
	do func(worker, i int) error) (*CPURow, error) {
	r := &CPURow{Name: name, Conns: conns}
	var ok, bad atomic.Int64
	var measuring, stop atomic.Bool
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
				err := do(w, i)
				switch {
				case !measuring.Load():
				case err == nil:
					ok.Add(1)
				default:
					bad.Add(1)
				}
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	sleep := func(d time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	sleep(warmup)
	p0, c0, g0, err := read(ctx)
	if err != nil {
		return nil, err
	}
	measuring.Store(true)
	start := time.Now()
	sleep(d)
	measuring.Store(false)
	r.Wall = time.Since(start)
	p1, c1, g1, err := read(ctx)
	if err != nil {
		return nil, err
	}
	r.Requests, r.Errors = ok.Load(), bad.Load()
	r.Proxy, r.Core, r.PG = p1-p0, c1-c0, max(0, g1-g0)
	return r, ctx.Err()
}

// MeasureProjections fetches projections of the seeded members straight
// from coreapi with the proxy's own fetcher: the cost of one cache miss at
// coreapi and PostgreSQL.
func MeasureProjections(ctx context.Context, core *Core, conns int, d time.Duration) (*CPURow, error) {
	signer, err := identity.NewKeySigner(identity.Key{ID: "core", Secret: core.HMACKey})
	if err != nil {
		return nil, err
	}
	hc := forward.NewInternalClient(forward.Options{Addr: core.Addr, MaxConns: conns, MaxConnWait: 2 * time.Second,
		IdleTimeout: 5 * time.Second, Timeout: 2 * time.Second})
	defer hc.CloseIdleConnections()
	f := projection.NewHTTPFetcher(hc, core.Addr, signer, 2*time.Second, metrics.New())
	n := len(core.Users)
	return closedLoop(ctx, "projection fetch (coreapi direct)", cpuSampler{core: core}.read, conns, CPUWarmup, d, func(w, i int) error {
		_, err := f.Fetch(ctx, core.Users[(w*7919+i)%n], core.TenantID, "")
		return err
	})
}

// Proxy is a real authproxy process in front of a Core.
type Proxy struct {
	Addr, AdminAddr string
	cmd             *exec.Cmd
	log             *os.File
}

// StartProxy starts the authproxy program in front of core.
func StartProxy(bin, dir, natsURL string, core *Core) (*Proxy, error) {
	p := &Proxy{Addr: "127.0.0.1:" + strconv.Itoa(freePort()), AdminAddr: "127.0.0.1:" + strconv.Itoa(freePort())}
	var err error
	if p.log, err = os.Create(filepath.Join(dir, "authproxy-"+core.DBName+".log")); err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin)
	p.cmd.Env = append(os.Environ(), "PROXY_LISTEN_ADDR="+p.Addr, "PROXY_ADMIN_ADDR="+p.AdminAddr,
		"IDENTITY_URL=http://"+core.Addr, "IDENTITY_HMAC_KEY="+base64.StdEncoding.EncodeToString(core.HMACKey),
		"NATS_URL="+natsURL, "LOG_LEVEL=warn")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.log.Close()
		return nil, fmt.Errorf("start authproxy: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + p.AdminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("authproxy not ready after 30 s; see %s", p.log.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RSS is the proxy's resident set size.
func (p *Proxy) RSS() (int64, error) { return ProcessRSS(p.cmd.Process.Pid) }

// Stop ends the proxy.
func (p *Proxy) Stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	}
	p.log.Close()
}

// MeasureStack signs up owners through the proxy and measures, through the
// proxy, warm reads (GET /api/v1/users/me: a cached token and projection at
// the proxy, one query at coreapi) and writes (PATCH /api/v1/users/me: a
// transaction with its audit row).
func MeasureStack(ctx context.Context, core *Core, proxy *Proxy, accounts, conns int, d time.Duration) ([]*CPURow, error) {
	hc := &fasthttp.HostClient{Addr: proxy.Addr, MaxConns: conns, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	tokens := make([]string, accounts)
	for i := range tokens {
		body := fmt.Sprintf(`{"email":"owner-%d-%s@example.com","password":"correct horse battery staple","tenant_name":"Scale %d","display_name":"Owner"}`, i, randHex(4), i)
		st, resp, err := do(hc, "POST", "/api/v1/auth/signup", "", body)
		if err != nil || st/100 != 2 {
			return nil, fmt.Errorf("signup: status %d err %v: %.300s", st, err, resp)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(resp, &tok); err != nil || tok.AccessToken == "" {
			return nil, fmt.Errorf("signup answer: %.300s", resp)
		}
		tokens[i] = tok.AccessToken
	}
	s := cpuSampler{core: core, proxyPid: proxy.cmd.Process.Pid}
	call := func(method, path string, body func(i int) string, want int) func(w, i int) error {
		return func(w, i int) error {
			b := ""
			if body != nil {
				b = body(i)
			}
			st, resp, err := do(hc, method, path, tokens[(w+i)%accounts], b)
			if err != nil {
				return err
			}
			if st != want {
				return fmt.Errorf("%s %s: status %d: %.200s", method, path, st, resp)
			}
			return nil
		}
	}
	// Warm every token and projection first.
	for w := range accounts {
		if err := call("GET", "/api/v1/users/me", nil, 200)(w, 0); err != nil {
			return nil, err
		}
	}
	read, err := closedLoop(ctx, "warm read GET /api/v1/users/me (through authproxy)", s.read, conns, CPUWarmup, d, call("GET", "/api/v1/users/me", nil, 200))
	if err != nil {
		return nil, err
	}
	write, err := closedLoop(ctx, "write PATCH /api/v1/users/me (through authproxy)", s.read, conns, CPUWarmup, d,
		call("PATCH", "/api/v1/users/me", func(i int) string { return `{"display_name":"Owner ` + strconv.Itoa(i) + `"}` }, 200))
	if err != nil {
		return nil, err
	}
	return []*CPURow{read, write}, nil
}

func do(hc *fasthttp.HostClient, method, path, token, body string) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://" + hc.Addr + path)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
	}
	if err := hc.Do(req, resp); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), nil
}

// WriteCPU writes the CPU rows as a Markdown table.
func WriteCPU(w io.Writer, rows []*CPURow) {
	fmt.Fprintln(w, "| request | conns | requests | errors | req/s | authproxy CPU / req | coreapi CPU / req | PostgreSQL CPU / req | total / req |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	us := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
	}
	for _, r := range rows {
		proxy := "–"
		if r.Proxy > 0 {
			proxy = us(r.PerRequest(r.Proxy))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %.0f | %s | %s | %s | %s |\n", r.Name, r.Conns, r.Requests, r.Errors,
			float64(r.Requests)/r.Wall.Seconds(), proxy, us(r.PerRequest(r.Core)), us(r.PerRequest(r.PG)),
			us(r.PerRequest(r.Proxy+r.Core+r.PG)))
	}
}
