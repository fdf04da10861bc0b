package app

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/valyala/fasthttp"
)

var benchRemote = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runHandler drives h with one prepared request per iteration, reading the
// (streamed) upstream body to the end as the server would. Besides ns/op it
// reports cpu-µs/op: the CPU time of the whole process (handler, loopback
// upstream, GC, runtime) per request, steadier than wall time on a shared
// machine; compare it between the warm request and the bare forward.
func runHandler(b *testing.B, h fasthttp.RequestHandler, req *fasthttp.Request, wantStatus int) {
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	syncedRun(b, h, req)
	b.ResetTimer()
	cpu0, n := cpuTime(b), 0
	defer func() {
		if n > 0 {
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Microsecond)/float64(n), "cpu-µs/op")
		}
	}()
	// One Init (it allocates); each request then reuses the context the way
	// fasthttp's server does on a kept-alive connection, so allocs/op are
	// the handler's and the client's own.
	ctx.Init(req, benchRemote, nil)
	for b.Loop() {
		n++
		req.CopyTo(&ctx.Request)
		h(&ctx)
		if ctx.Response.StatusCode() != wantStatus {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		_ = ctx.Response.Body()
		ctx.Response.Reset()
	}
}

// BenchmarkWarmRequest is a whole protected request through the proxy's
// handler (request id, hygiene, normalization, rules, cached token, cached
// projection, decision, signing, forwarding to a real loopback upstream)
// with both caches warm.
// The app case routes through a rules file to an app upstream signed with
// its own key, as in front of any service.
func BenchmarkWarmRequest(b *testing.B) {
	for _, tc := range []struct {
		name, accessLog, uri string
		xff                  bool   // an X-Forwarded-For from the (untrusted) peer
		key                  string // "": a JWT; "bearer" or "header": an API key sent so
	}{
		{"core/access_log=false", "false", "/api/v1/users/bench?limit=10", false, ""},
		{"core/access_log=true", "true", "/api/v1/users/bench?limit=10", false, ""},
		// The same line through the logger (log/slog), as written before
		// access lines were buffered.
		{"core/access_log=slog", "true", "/api/v1/users/bench?limit=10", false, ""},
		{"app/access_log=false", "false", "/bench?limit=10", false, ""},
		{"core/untrusted_xff", "false", "/api/v1/users/bench?limit=10", true, ""},
		// The same request with an API key instead of the JWT: the key's
		// entry is found by its public id and its secret's digest compared.
		{"core/api_key_bearer", "false", "/api/v1/users/bench?limit=10", false, "bearer"},
		{"app/api_key_header", "false", "/bench?limit=10", false, "header"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			// Logs go to io.Discard (through logging.Lines, as the command
			// writes them): formatting is measured, the write is not.
			e := start(b, envOpt{vars: map[string]string{"ACCESS_LOG": tc.accessLog, "LOG_LEVEL": "info"},
				slogAccess: strings.HasSuffix(tc.name, "=slog"), unrecordedLog: true,
				rules: appUpstream + "routes:\n  - {prefix: /bench, methods: [GET], upstream: notes, access: protected, permissions: [tenant:read]}\n"})
			req := &fasthttp.Request{}
			req.SetRequestURI(tc.uri)
			req.Header.SetHost("proxy.local")
			switch tc.key {
			case "":
				req.Header.Set("Authorization", "Bearer "+e.token(nil))
			case "bearer":
				secret, _ := e.newAPIKey("tenant:read")
				req.Header.Set("Authorization", "Bearer "+secret)
			case "header":
				secret, _ := e.newAPIKey("tenant:read")
				req.Header.Set("X-API-Key", secret)
			}
			req.Header.Set("Accept", "application/json")
			req.Header.Set("User-Agent", "bench")
			if tc.xff {
				req.Header.Set("X-Forwarded-For", "203.0.113.7")
			}
			h := e.app.Server.Handler()
			warmUp(b, h, req)
			runHandler(b, h, req, 200)
		})
	}
}

// BenchmarkBareForward is the baseline: the same harness and upstream, a
// bare fasthttp HostClient forwarder with the same settings and no auth.
func BenchmarkBareForward(b *testing.B) {
	e := start(b, envOpt{})
	hc := forward.NewHostClient(forward.Options{Addr: e.core.Addr, MaxConns: 1024, MaxConnWait: 2e9, IdleTimeout: 5e9, Timeout: 30e9})
	h := func(ctx *fasthttp.RequestCtx) {
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error(err.Error(), 502)
		}
	}
	req := &fasthttp.Request{}
	req.SetRequestURI("/api/v1/users/bench?limit=10")
	req.Header.SetHost("proxy.local")
	req.Header.Set("Authorization", "Bearer "+e.token(nil))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "bench")
	runHandler(b, h, req, 200)
}

// syncedRun, when BENCH_SYNC names a file prefix, runs BENCH_SYNC_N
// requests (default 10000) once per process between two handshakes, for
// an outside tool to measure exactly that window (scripts/callgrind-warm.sh
// zeroes callgrind's counters at "<prefix>.ready" and dumps them at
// "<prefix>.done"). Without BENCH_SYNC it does nothing. With
// BENCH_SYNC_NAME, only the benchmark of that full name does it: a pattern
// such as HandlerNoIO/authproxy/public also runs HandlerNoIO/authproxy
// (a sub-benchmark matching the pattern's first levels), and that one
// comes first.
func syncedRun(b *testing.B, h fasthttp.RequestHandler, req *fasthttp.Request) {
	prefix := os.Getenv("BENCH_SYNC")
	if prefix == "" || syncedDone {
		return
	}
	if name := os.Getenv("BENCH_SYNC_NAME"); name != "" && name != b.Name() {
		return
	}
	syncedDone = true
	n, err := strconv.Atoi(os.Getenv("BENCH_SYNC_N"))
	if err != nil || n <= 0 {
		n = 10000
	}
	var ctx fasthttp.RequestCtx
	// A collection now, so that a cycle due to the set-up's garbage does not
	// fall into the counted window.
	runtime.GC()
	if err := os.WriteFile(prefix+".ready", nil, 0o600); err != nil {
		b.Fatal(err)
	}
	for { // the tool answers by creating "<prefix>.go"
		if _, err := os.Stat(prefix + ".go"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx.Init(req, benchRemote, nil)
	for range n {
		req.CopyTo(&ctx.Request)
		h(&ctx)
		_ = ctx.Response.Body()
		ctx.Response.Reset()
	}
	if err := os.WriteFile(prefix+".done", nil, 0o600); err != nil {
		b.Fatal(err)
	}
	for { // and "<prefix>.end" once it has its figures
		if _, err := os.Stat(prefix + ".end"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var syncedDone bool

// cannedTransport stands in for the upstream connection: it serializes the
// forwarded request as the real transport would (to a discarding writer)
// and answers with a fixed response, so a benchmark through it measures
// the handler's own work without sockets, system calls or an upstream.
// Each round trip takes a writer of its own from a pool, as each real one
// has its connection's: the parallel benchmarks call it from every CPU.
type cannedTransport struct {
	writers sync.Pool
	body    []byte
}

func newCannedTransport() *cannedTransport {
	t := &cannedTransport{body: []byte(`{"id":"0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001","roles":["member"]}`)}
	t.writers.New = func() any { return bufio.NewWriterSize(io.Discard, 4096) }
	return t
}

func (t *cannedTransport) RoundTrip(_ *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	bw := t.writers.Get().(*bufio.Writer)
	defer t.writers.Put(bw)
	if err := req.Write(bw); err != nil {
		return false, err
	}
	if err := bw.Flush(); err != nil {
		return false, err
	}
	resp.SetStatusCode(fasthttp.StatusOK)
	resp.Header.SetContentType("application/json")
	resp.SetBodyRaw(t.body)
	return false, nil
}

// BenchmarkHandlerNoIO is the gate for changes of the warm path: a whole
// warm protected request through authproxy's handler (request id, hygiene,
// normalization, rules, cached token and projection, decision, identity
// headers and signature, the forwarded request serialized) with the
// upstream's answer canned, next to the same harness forwarding through a
// bare HostClient. No sockets: the difference is the auth work, and its
// allocations are the handler's own.
//
// authproxy/trusted is the same request from a peer in
// TRUSTED_PROXY_CIDRS (an ingress in front of the proxy), whose forwarding
// headers are set one by one; authproxy/public is a request without a
// token on a public route: the pipeline every request runs, with the
// anonymous identity; authproxy/access_log is authproxy with ACCESS_LOG
// on, its line encoded and buffered as the command writes it
// (logging.Lines, to io.Discard: the encoding is measured, the write is
// not). bare/fiber is bare inside a Fiber app, as the load harness's bare
// proxy is.
func BenchmarkHandlerNoIO(b *testing.B) {
	for _, tc := range []struct {
		name string
		o    envOpt
	}{
		{"authproxy", envOpt{}},
		{"authproxy/trusted", envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}}},
		{"authproxy/access_log", envOpt{vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"}, unrecordedLog: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e, h := startCanned(b, tc.o)
			req := benchRequest(e.token(nil))
			warmUp(b, h, req)
			runHandler(b, h, req, 200)
		})
	}
	b.Run("authproxy/public", func(b *testing.B) {
		_, h := startCanned(b, envOpt{})
		req := publicBenchRequest()
		warmUp(b, h, req)
		runHandler(b, h, req, 200)
	})
	b.Run("bare", func(b *testing.B) {
		h := bareCannedHandler()
		runHandler(b, h, benchRequest("x.y.z"), 200)
	})
	b.Run("bare/fiber", func(b *testing.B) {
		h := bareFiberCannedHandler()
		runHandler(b, h, benchRequest("x.y.z"), 200)
	})
}

// BenchmarkHandlerNoIOColdCaches is BenchmarkHandlerNoIO with the CPU's
// caches emptied of the handler's code and data before every request, as
// the other processes (and, on a shared host, other machines) do between
// two of a proxy's requests under load: evict=4MiB writes eight times a
// server core's L2 (the L3 keeps the handler's lines), evict=64MiB more
// than this machine's L3 (every line comes from memory). It reports
// handler-ns/op, the handler's own time without the writes. authproxy's
// difference from bare/fiber here, against its difference in
// BenchmarkHandlerNoIO, is what its larger code and data footprint costs
// when less of it is cached.
func BenchmarkHandlerNoIOColdCaches(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int
	}{{"evict=4MiB", 4 << 20}, {"evict=64MiB", 64 << 20}} {
		b.Run(size.name+"/authproxy", func(b *testing.B) {
			e, h := startCanned(b, envOpt{})
			req := benchRequest(e.token(nil))
			warmUp(b, h, req)
			runHandlerCold(b, h, req, 200, size.bytes)
		})
		b.Run(size.name+"/authproxy/public", func(b *testing.B) {
			_, h := startCanned(b, envOpt{})
			req := publicBenchRequest()
			warmUp(b, h, req)
			runHandlerCold(b, h, req, 200, size.bytes)
		})
		b.Run(size.name+"/bare/fiber", func(b *testing.B) {
			runHandlerCold(b, bareFiberCannedHandler(), benchRequest("x.y.z"), 200, size.bytes)
		})
	}
}

// runHandlerCold is runHandler with evict bytes written (one byte per
// cache line) before each request, timed around the handler alone
// (handler-ns/op; the handler runs on this goroutine, so its wall time is
// its CPU time).
func runHandlerCold(b *testing.B, h fasthttp.RequestHandler, req *fasthttp.Request, wantStatus, evict int) {
	var ctx fasthttp.RequestCtx
	ctx.Init(req, benchRemote, nil)
	buf := make([]byte, evict)
	var inHandler time.Duration
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n++
		req.CopyTo(&ctx.Request)
		for i := 0; i < len(buf); i += 64 {
			buf[i]++
		}
		t0 := time.Now()
		h(&ctx)
		inHandler += time.Since(t0)
		if ctx.Response.StatusCode() != wantStatus {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		ctx.Response.Reset()
	}
	b.ReportMetric(float64(inHandler.Nanoseconds())/float64(n), "handler-ns/op")
}

// bareFiberCannedHandler is bareCannedHandler inside a Fiber app with
// authproxy's server settings, forwarding as the load harness's bare proxy
// does (deploy/loadtest, serveBareProxy): the baseline the process
// harness compares authproxy with, Fiber's own per-request work included.
func bareFiberCannedHandler() fasthttp.RequestHandler {
	hc := cannedClient()
	app := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: 1 << 20, ReadBufferSize: 16 << 10,
		Network: fiber.NetworkTCP, DisablePreParseMultipartForm: true})
	app.All("/*", func(c *fiber.Ctx) error {
		req := c.Request()
		req.Header.Del(fiber.HeaderConnection)
		req.SetHost(hc.Addr)
		if err := hc.Do(req, c.Response()); err != nil {
			return fiber.NewError(fiber.StatusBadGateway, err.Error())
		}
		c.Response().Header.Del(fiber.HeaderConnection)
		return nil
	})
	return app.Handler()
}

// cannedClient is the bare forwarders' client: configured like
// authproxy's, the upstream's answer canned.
func cannedClient() *fasthttp.HostClient {
	hc := forward.NewHostClient(forward.Options{Addr: "upstream.invalid:80", MaxConns: 1024, MaxConnWait: 2e9, IdleTimeout: 5e9, Timeout: 30e9})
	hc.Transport = newCannedTransport()
	return hc
}

// publicBenchURI is authproxy/public's path: a public route (no token),
// forwarded with the anonymous identity.
const publicBenchURI = "/.well-known/jwks.json"

// publicBenchRequest is the benchmarks' request to publicBenchURI, without
// a token.
func publicBenchRequest() *fasthttp.Request {
	req := benchRequest("")
	req.Header.Del("Authorization")
	req.SetRequestURI(publicBenchURI)
	return req
}

// startCanned starts the proxy of o with every upstream's answer canned
// (no sockets past the handler) and returns it with its handler.
func startCanned(b *testing.B, o envOpt) (*env, fasthttp.RequestHandler) {
	e := start(b, o)
	for _, hc := range e.app.Server.Router().Clients {
		hc.Transport = newCannedTransport()
	}
	return e, e.app.Server.Handler()
}

// warmUp sends req through h once, filling the caches, and wants a 200.
func warmUp(b *testing.B, h fasthttp.RequestHandler, req *fasthttp.Request) {
	b.Helper()
	var ctx fasthttp.RequestCtx
	ctx.Init(req, benchRemote, nil)
	h(&ctx)
	if ctx.Response.StatusCode() != 200 {
		b.Fatalf("warm-up status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// bareCannedHandler is the bare forwarder of the no-I/O benchmarks: one
// HostClient configured like authproxy's, the upstream's answer canned.
func bareCannedHandler() fasthttp.RequestHandler {
	hc := cannedClient()
	return func(ctx *fasthttp.RequestCtx) {
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error(err.Error(), 502)
		}
	}
}

// benchRequest is the benchmarks' client request with a bearer token.
func benchRequest(token string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.SetRequestURI("/api/v1/users/bench?limit=10")
	req.Header.SetHost("proxy.local")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "bench")
	return req
}

// BenchmarkHandlerNoIOParallel is BenchmarkHandlerNoIO on every CPU at once
// over a working set of distinct users and tokens, next to the bare
// forwarder on the same CPUs: what the process harness sees (each request
// a different cached entry, cores sharing cache lines) without its network
// noise. ns/op is wall time per request with GOMAXPROCS workers.
func BenchmarkHandlerNoIOParallel(b *testing.B) {
	for _, users := range []int{1, 1000} {
		b.Run("authproxy/users="+strconv.Itoa(users), func(b *testing.B) {
			e, h := startCanned(b, envOpt{})
			reqs := make([]*fasthttp.Request, users)
			for i := range reqs {
				p := defaultProjection()
				p.UserID = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
				e.core.SetProjection(p)
				c := testenv.DefaultClaims(time.Now(), p.UserID, tenantID, sessionID)
				reqs[i] = benchRequest(testenv.Sign(b, e.key, c, nil))
				warmUp(b, h, reqs[i])
			}
			runParallel(b, h, reqs)
		})
	}
	b.Run("bare", func(b *testing.B) {
		h := bareCannedHandler()
		runParallel(b, h, []*fasthttp.Request{benchRequest("x.y.z")})
	})
}

// runParallel drives h from GOMAXPROCS goroutines, each cycling through
// reqs from its own offset, and reports cpu-µs/op like runHandler.
func runParallel(b *testing.B, h fasthttp.RequestHandler, reqs []*fasthttp.Request) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		ctx.Init(reqs[0], benchRemote, nil)
		i := int(next.Add(int64(len(reqs)/2 + 1)))
		for pb.Next() {
			i++
			reqs[i%len(reqs)].CopyTo(&ctx.Request)
			h(&ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Errorf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
				return
			}
			_ = ctx.Response.Body()
			ctx.Response.Reset()
		}
	})
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}
