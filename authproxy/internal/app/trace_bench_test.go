package app

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tollgate-auth/tollgate/shared/tracing"
	"github.com/valyala/fasthttp"
)

// countingExporter is an in-memory exporter that keeps only a count: a
// benchmark's millions of spans would not fit in tracetest's.
type countingExporter struct{ n atomic.Int64 }

func (c *countingExporter) ExportSpans(_ context.Context, s []sdktrace.ReadOnlySpan) error {
	c.n.Add(int64(len(s)))
	return nil
}

func (c *countingExporter) Shutdown(context.Context) error { return nil }

// BenchmarkWarmRequestTraced is BenchmarkWarmRequest's core case
// (access log off) with tracing on: parentbased_traceidratio at 1 % and
// 100 %, spans batched to an in-memory exporter as in production.
func BenchmarkWarmRequestTraced(b *testing.B) {
	for _, ratio := range []float64{0.01, 1} {
		b.Run("sampled="+strconv.FormatFloat(ratio*100, 'g', -1, 64)+"%", func(b *testing.B) {
			c, err := tracing.Load(func(k string) string {
				return map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
					"OTEL_TRACES_SAMPLER_ARG": strconv.FormatFloat(ratio, 'g', -1, 64)}[k]
			}, "authproxy")
			if err != nil {
				b.Fatal(err)
			}
			exp := &countingExporter{}
			p, err := tracing.NewWith(c, sdktrace.WithBatcher(exp))
			if err != nil {
				b.Fatal(err)
			}
			e := start(b, envOpt{vars: map[string]string{"ACCESS_LOG": "false", "LOG_LEVEL": "info"}, tracing: p})
			req := &fasthttp.Request{}
			req.SetRequestURI("/api/v1/users/bench?limit=10")
			req.Header.SetHost("proxy.local")
			req.Header.Set("Authorization", "Bearer "+e.token(nil))
			req.Header.Set("Accept", "application/json")
			req.Header.Set("User-Agent", "bench")
			h := e.app.Server.Handler()
			var ctx fasthttp.RequestCtx
			ctx.Init(req, benchRemote, nil)
			h(&ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("warm-up status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
			runHandler(b, h, req, 200)
			b.StopTimer()
			_ = p.ForceFlush(context.Background())
			if ratio == 1 && exp.n.Load() == 0 {
				b.Fatalf("%d spans exported for %d requests", exp.n.Load(), b.N)
			}
		})
	}
}
