package main

import (
	"context"
	"net"
	"slices"
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
	// One connection, 10 ms a request: 100/s at most, 200/s due.
	slow := serveFor(t, 10*time.Millisecond)
	r = load{addr: slow, conns: 1, warmup: 0, duration: time.Second, request: cycle(req, 1), want: 200, rate: 200}.run(context.Background())
	if r.Latencies != nil {
		t.Fatal("latencies kept without load.keep")
	}
	if r.Requests > 120 {
		t.Fatalf("one 10 ms connection answered %d requests in 1 s", r.Requests)
	}
	if r.P99 < 200*time.Millisecond {
		t.Fatalf("p99 %v: the wait for the connection is not counted (due at 200/s, served at 100/s for 1 s)", r.P99)
	}
}
