package main

import (
	"context"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func serveFor(t *testing.T, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(c *fasthttp.RequestCtx) {
		time.Sleep(delay)
		c.SetBodyString("ok")
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// An open-loop run sends at its rate, not as fast as answers come back,
// and a request that waits for a free connection is late from when it
// was due: a server slower than the rate shows latencies growing far
// beyond its own delay.
func TestOpenLoopRate(t *testing.T) {
	req := [][]byte{rawGET("x", "/", "")}
	fast := serveFor(t, 0)
	r := load{addr: fast, conns: 8, warmup: 200 * time.Millisecond, duration: time.Second, request: cycle(req, 8), want: 200, rate: 500, keep: true}.run(context.Background())
	if r.Requests < 400 || r.Requests > 600 || r.Errors != 0 {
		t.Fatalf("500/s for 1 s: %d requests, %d errors", r.Requests, r.Errors)
	}
	// keep: every measured request's latency, sorted, for pooling slices.
	if int64(len(r.Latencies)) != r.Requests || !slices.IsSorted(r.Latencies) {
		t.Fatalf("kept %d latencies (sorted %v) of %d requests", len(r.Latencies), slices.IsSorted(r.Latencies), r.Requests)
	}
	// One connection, 10 ms a request: 100/s at most, 200/s due. Every
	// request due in the window counts, from when it was due, however late
	// it is sent or answered: the last ones, due near the window's end,
	// are answered a second later, and they are the tail.
	slow := serveFor(t, 10*time.Millisecond)
	r = load{addr: slow, conns: 1, warmup: 0, duration: time.Second, request: cycle(req, 1), want: 200, rate: 200}.run(context.Background())
	if r.Latencies != nil {
		t.Fatal("latencies kept without load.keep")
	}
	if r.Requests < 190 || r.Requests > 201 || r.Errors != 0 {
		t.Fatalf("200 requests due in 1 s, served one at a time in 10 ms: %d counted, %d errors; want every one due", r.Requests, r.Errors)
	}
	if r.P99 < 900*time.Millisecond {
		t.Fatalf("p99 %v: the requests still waiting when the window closed were left out (the last due are answered ≈ 1 s late)", r.P99)
	}
	// The throughput is what was served: 200 answers over the ≈ 2 s
	// until the window's last one, not the 200/s that was due.
	if r.RPS > 120 || r.Elapsed < 1800*time.Millisecond {
		t.Fatalf("%.0f req/s over %v from a server of 100/s", r.RPS, r.Elapsed)
	}
}

// Requests due in the warm-up are not counted, even when answered inside
// the window; each request due in the window is counted exactly once, as
// served or as failed, also when it waited past its timeout.
func TestOpenLoopWindowByDueTime(t *testing.T) {
	req := [][]byte{rawGET("x", "/", "")}
	slow := serveFor(t, 20*time.Millisecond)
	// 100/s due, 50/s served: the warm-up's backlog is answered inside the
	// window, late, and must not count there.
	r := load{addr: slow, conns: 1, warmup: 500 * time.Millisecond, duration: 500 * time.Millisecond, request: cycle(req, 1), want: 200,
		rate: 100, timeout: 300 * time.Millisecond}.run(context.Background())
	if got := r.Requests + r.Errors; got < 48 || got > 51 {
		t.Fatalf("%d served + %d failed; want the 50 due in the window, each once", r.Requests, r.Errors)
	}
	// Waiting behind the backlog, the window's requests pass their 300 ms
	// timeout: failures, not answers, and their latency is not a served
	// one's.
	if r.Errors == 0 || r.FirstErr == "" {
		t.Fatalf("no request timed out: %+v", r)
	}
	if r.Max > 300*time.Millisecond+200*time.Millisecond {
		t.Fatalf("a served request's latency %v is beyond the timeout", r.Max)
	}
}

// serveAlternating answers every other request 503 at once and the others
// 200 after delay.
func serveAlternating(t *testing.T, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &fasthttp.Server{Handler: func(c *fasthttp.RequestCtx) {
		if n.Add(1)%2 == 0 {
			c.Error("busy", fasthttp.StatusServiceUnavailable)
			return
		}
		time.Sleep(delay)
		c.SetBodyString("ok")
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// An answer with another status is a failure: it is not served throughput,
// and its (quick) latency is not among the served requests'.
func TestFailuresAreNotServed(t *testing.T) {
	req := [][]byte{rawGET("x", "/", "")}
	for _, rate := range []float64{0, 100} {
		addr := serveAlternating(t, 5*time.Millisecond)
		r := load{addr: addr, conns: 4, warmup: 100 * time.Millisecond, duration: time.Second, request: cycle(req, 4), want: 200, rate: rate, keep: true}.run(context.Background())
		if r.Requests == 0 || r.Errors == 0 {
			t.Fatalf("rate %v: %d served, %d failed; want both", rate, r.Requests, r.Errors)
		}
		// Every other request fails; at the window's edges up to one
		// request per connection may be in flight (a 200 takes 5 ms, a 503
		// none).
		if d := r.Requests - r.Errors; d < -8 || d > 8 {
			t.Fatalf("rate %v: %d served, %d failed; every other request fails", rate, r.Requests, r.Errors)
		}
		if int64(len(r.Latencies)) != r.Requests {
			t.Fatalf("rate %v: %d latencies for %d served requests", rate, len(r.Latencies), r.Requests)
		}
		if r.P50 < 5*time.Millisecond {
			t.Fatalf("rate %v: p50 %v below the 5 ms every served request takes: the failures' latencies counted", rate, r.P50)
		}
		if want := float64(r.Requests) / r.Elapsed.Seconds(); r.RPS != want {
			t.Fatalf("rate %v: %.1f req/s, want the served %.1f", rate, r.RPS, want)
		}
	}
}
