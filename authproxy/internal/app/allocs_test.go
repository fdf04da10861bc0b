package app

import (
	"bytes"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestWarmRequestAllocatesNothing: a warm protected request, forwarded to
// a real loopback upstream and its answer read as the server writes it,
// allocates nothing in the whole process (handler, upstream client and
// its transport), so a proxy under steady load makes no garbage for its
// collector. fasthttp's own transport allocated four objects a request for
// a streamed answer (forward.NewHostClient now sets shared/fasttransport).
//
// The same from a peer in TRUSTED_PROXY_CIDRS (an ingress), whose
// X-Forwarded-For the proxy extends; and on a route with strip_prefix,
// whose X-Forwarded-Prefix the proxy writes (after a trusted peer's own).
// And with ACCESS_LOG on, its line buffered as the command writes it
// (logging.Lines, here to io.Discard): the line is encoded into the
// request's pooled buffer and copied into the batch, without allocating.
func TestWarmRequestAllocatesNothing(t *testing.T) {
	const core = "/api/v1/users/bench?limit=10"
	trusted := envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}}
	stripped := appUpstream + "routes:\n  - {prefix: /billing, upstream: notes, access: protected, strip_prefix: true}\n"
	t.Run("untrusted peer", func(t *testing.T) { warmRequestAllocs(t, envOpt{}, core, nil) })
	t.Run("trusted peer", func(t *testing.T) {
		warmRequestAllocs(t, trusted, core, map[string]string{"X-Forwarded-For": "203.0.113.7, 198.51.100.2"})
	})
	t.Run("access log on, buffered", func(t *testing.T) {
		var lines requestLines
		e := warmRequestAllocs(t, envOpt{vars: map[string]string{"ACCESS_LOG": "true", "LOG_LEVEL": "info"}, unrecordedLog: true, logOut: &lines}, core, nil)
		if err := e.logs.flush(); err != nil {
			t.Fatal(err)
		}
		// Every request measured wrote its line.
		if n := lines.n.Load(); n < 2200 {
			t.Fatalf("%d access lines written, want one per request (2200)", n)
		}
	})
	t.Run("strip_prefix, untrusted peer", func(t *testing.T) {
		warmRequestAllocs(t, envOpt{rules: stripped}, "/billing/bench?limit=10", nil)
	})
	t.Run("strip_prefix, trusted peer", func(t *testing.T) {
		trusted.rules = stripped
		warmRequestAllocs(t, trusted, "/billing/bench?limit=10",
			map[string]string{"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Prefix": "/shop"})
	})
}

// requestLines counts the access lines written to it, and keeps nothing.
type requestLines struct{ n atomic.Int64 }

func (l *requestLines) Write(p []byte) (int, error) {
	l.n.Add(int64(bytes.Count(p, []byte(`"msg":"request"`))))
	return len(p), nil
}

func warmRequestAllocs(t *testing.T, o envOpt, path string, hdr map[string]string) *env {
	e := start(t, o)
	req := &fasthttp.Request{}
	req.SetRequestURI(path)
	req.Header.SetHost("proxy.local")
	req.Header.Set("Authorization", "Bearer "+e.token(nil))
	req.Header.Set("Accept", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	h := e.app.Server.Handler()
	var ctx fasthttp.RequestCtx
	ctx.Init(req, benchRemote, nil)
	do := func() {
		req.CopyTo(&ctx.Request)
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		_ = ctx.Response.Body()
		ctx.Response.Reset()
	}
	for range 200 { // the caches, the pools and the upstream connection warm
		do()
	}
	// The average over many requests: a background goroutine's rare
	// allocation (a metrics scrape, a timer) does not reach one a request.
	if n := testing.AllocsPerRun(2000, do); n != 0 {
		t.Fatalf("%v allocations per warm request, want 0", n)
	}
	return e
}
