package app

import (
	"net"
	"testing"

	"github.com/tollgate-auth/tollgate/authproxy/internal/forward"
	"github.com/valyala/fasthttp"
)

var benchRemote = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

// runHandler drives h with one prepared request per iteration, reading the
// (streamed) upstream body to the end as the server would.
func runHandler(b *testing.B, h fasthttp.RequestHandler, req *fasthttp.Request, wantStatus int) {
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ctx.Init(req, benchRemote, nil)
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
	for _, tc := range []struct{ name, accessLog, uri string }{
		{"core/access_log=false", "false", "/api/v1/users/bench?limit=10"},
		{"core/access_log=true", "true", "/api/v1/users/bench?limit=10"},
		{"app/access_log=false", "false", "/bench?limit=10"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			// Logs go to io.Discard through the JSON handler: formatting
			// is measured, the write is not.
			e := start(b, envOpt{vars: map[string]string{"ACCESS_LOG": tc.accessLog, "LOG_LEVEL": "info"},
				rules: appUpstream + "routes:\n  - {prefix: /bench, methods: [GET], upstream: notes, access: protected, permissions: [tenant:read]}\n"})
			req := &fasthttp.Request{}
			req.SetRequestURI(tc.uri)
			req.Header.SetHost("proxy.local")
			req.Header.Set("Authorization", "Bearer "+e.token(nil))
			req.Header.Set("Accept", "application/json")
			req.Header.Set("User-Agent", "bench")
			h := e.app.Server.App().Handler()
			var ctx fasthttp.RequestCtx
			ctx.Init(req, benchRemote, nil)
			h(&ctx) // warm both caches
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("warm-up status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
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
