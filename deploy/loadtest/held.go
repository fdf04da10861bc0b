package main

import (
	"bufio"
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// heldResult is the outcome of holding many keep-alive connections open
// through authproxy, each sending a request per interval.
type heldResult struct {
	target, established int
	requests, errors    int64
	firstErr            string
	kinds               []kindCount // errors by kind, most frequent first
	// proxy is what authproxy's own counters say of the hold (upstream
	// errors by kind, projection fetches refused by the bound, ...).
	proxy         []counterDelta
	p50, p99, max time.Duration
	// first: each connection's first request, all of them sent within one
	// interval of the ramp's end (the storm of new connections: the
	// proxy's per-connection memory is touched then). late: the requests
	// started in the second half of the hold (the steady state).
	firstP99, firstMax        time.Duration
	lateP50, lateP99, lateMax time.Duration
	lateN                     int
	rssKB                     int64
	rssIdleKB                 int64
	hold, interval            time.Duration
}

func (h *harness) holdConns(ctx context.Context, reqs [][]byte) *heldResult {
	n, hold, every := h.o.heldConns, h.o.hold, h.o.heldInterval
	res := &heldResult{target: n, hold: hold, interval: every, rssIdleKB: rssKB(h.proxy.pid())}
	h.logf("holding %d connections for %s", n, hold)
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		lats        heldLatencies
		established atomic.Int64
		requests    atomic.Int64
		errs        atomic.Int64
		firstErr    atomic.Value
		kinds       errKinds
	)
	fail := func(err error, kind string) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
		kinds.add(kind)
	}
	before := scrape("http://" + h.proxyAdmin + "/metrics")
	rampEnd := time.Now().Add(10 * time.Second)
	deadline := rampEnd.Add(hold)
	sem := make(chan struct{}, 256) // dials in flight
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			conn, err := net.DialTimeout("tcp", h.proxyAddr, 10*time.Second)
			<-sem
			if err != nil {
				fail(err, "dial: "+transportKind(err))
				return
			}
			defer conn.Close()
			established.Add(1)
			br := bufio.NewReaderSize(conn, 4096)
			var resp fasthttp.Response
			var lat heldLatencies
			lat.all = make([]uint32, 0, int(hold/every)+2)
			// Spread the first request of each connection over the interval.
			time.Sleep(time.Until(rampEnd) + time.Duration(rand.Int64N(int64(every))))
			for k := 0; time.Now().Before(deadline) && ctx.Err() == nil; k++ {
				start := time.Now()
				_ = conn.SetDeadline(start.Add(10 * time.Second))
				_, err := conn.Write(reqs[(i+k)%len(reqs)])
				if err == nil {
					resp.Reset()
					err = resp.Read(br)
				}
				requests.Add(1)
				if err != nil {
					fail(err, transportKind(err))
					return
				}
				if resp.StatusCode() != 200 {
					fail(&statusErr{resp.StatusCode()}, responseKind(&resp))
				}
				lat.add(k, start.Sub(rampEnd), hold, uint32(time.Since(start).Microseconds()))
				time.Sleep(every - time.Since(start))
			}
			mu.Lock()
			lats.merge(&lat)
			mu.Unlock()
		}(i)
	}
	// Sample RSS while every connection is open.
	go func() {
		time.Sleep(time.Until(rampEnd) + hold/2)
		r := rssKB(h.proxy.pid())
		mu.Lock()
		res.rssKB = r
		mu.Unlock()
	}()
	wg.Wait()
	res.proxy = changedCounters(before, scrape("http://"+h.proxyAdmin+"/metrics"), "authproxy_upstream_errors_total", "authproxy_projection_fetches_total", "authproxy_token_verifications_total")
	res.kinds = kinds.counts()
	res.established = int(established.Load())
	res.requests, res.errors = requests.Load(), errs.Load()
	if v := firstErr.Load(); v != nil {
		res.firstErr = v.(string)
	}
	res.p50, res.p99, res.max = percentiles(lats.all)
	_, res.firstP99, res.firstMax = percentiles(lats.first)
	res.lateP50, res.lateP99, res.lateMax = percentiles(lats.late)
	res.lateN = len(lats.late)
	h.logf("held %d/%d connections: %d requests, %d errors, p99 %v, proxy RSS %d KB; errors: %s; proxy counters: %v", res.established, n, res.requests, res.errors, res.p99, res.rssKB, formatKinds(res.kinds), res.proxy)
	return res
}

// heldLatencies are the hold's request latencies (µs): all of them, each
// connection's first, and those started in the hold's second half.
type heldLatencies struct{ all, first, late []uint32 }

// add records request k of a connection, started since after the ramp's
// end, of a hold lasting hold.
func (l *heldLatencies) add(k int, since, hold time.Duration, us uint32) {
	l.all = append(l.all, us)
	if k == 0 {
		l.first = append(l.first, us)
	}
	if since >= hold/2 {
		l.late = append(l.late, us)
	}
}

func (l *heldLatencies) merge(o *heldLatencies) {
	l.all = append(l.all, o.all...)
	l.first = append(l.first, o.first...)
	l.late = append(l.late, o.late...)
}

type statusErr struct{ code int }

func (e *statusErr) Error() string { return "status " + fasthttp.StatusMessage(e.code) }
