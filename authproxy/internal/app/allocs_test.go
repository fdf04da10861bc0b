package app

import (
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
// X-Forwarded-For the proxy extends.
func TestWarmRequestAllocatesNothing(t *testing.T) {
	t.Run("untrusted peer", func(t *testing.T) { warmRequestAllocs(t, envOpt{}, "") })
	t.Run("trusted peer", func(t *testing.T) {
		warmRequestAllocs(t, envOpt{vars: map[string]string{"TRUSTED_PROXY_CIDRS": "127.0.0.0/8"}}, "203.0.113.7, 198.51.100.2")
	})
}

func warmRequestAllocs(t *testing.T, o envOpt, xff string) {
	e := start(t, o)
	req := &fasthttp.Request{}
	req.SetRequestURI("/api/v1/users/bench?limit=10")
	req.Header.SetHost("proxy.local")
	req.Header.Set("Authorization", "Bearer "+e.token(nil))
	req.Header.Set("Accept", "application/json")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
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
}
