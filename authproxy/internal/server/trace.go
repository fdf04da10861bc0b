package server

import (
	"context"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// Tracing is what the server traces requests with. Deps.Tracing nil means
// tracing is off: the request path then only tests that pointer (and
// st.trace.on), and adds no header.
type Tracing struct {
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
}

// reqTrace is a request's tracing state, kept in the pooled state.
type reqTrace struct {
	on   bool
	span trace.Span
	ctx  context.Context // carries span
	id   [32]byte        // the trace id in hex, for the logs
}

// traceBegin starts the request's server span. The client's traceparent
// is its parent only when the peer is a trusted proxy (TRUSTED_PROXY_CIDRS);
// from anyone else it was never ours to adopt, and hygiene removes it
// before forwarding. The span starts at the request's start.
func (s *Server) traceBegin(c *fiber.Ctx, st *state) {
	ctx := context.Background()
	if s.trusted(c) {
		ctx = s.tracing.Propagator.Extract(ctx, tracing.RequestHeaderCarrier{H: &c.Request().Header})
	}
	ctx, span := s.tracing.Tracer.Start(ctx, "authproxy", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(st.start))
	st.trace.on, st.trace.span, st.trace.ctx = true, span, ctx
	tid := span.SpanContext().TraceID()
	hex.Encode(st.trace.id[:], tid[:])
}

// traceEnd names the span after its route and ends it with the request's
// outcome.
func (s *Server) traceEnd(c *fiber.Ctx, st *state, status int) {
	span := st.trace.span
	if span.IsRecording() {
		method := string(c.Request().Header.Method())
		if !problem.KnownMethod(c.Request().Header.Method()) {
			method = "_OTHER" // OpenTelemetry's name for a method outside the known set: span names stay few
		}
		name := method
		if st.route != "" {
			name += " " + st.route
		}
		span.SetName(name)
		span.SetAttributes(
			attribute.String("http.request.method", method),
			attribute.String("url.path", strings.Clone(logging.ClipPath(b2s(st.path)))), // st.path is reused
			attribute.String("http.route", st.route),
			attribute.Int("http.response.status_code", status),
			attribute.String("tollgate.request_id", string(st.reqID)),
			attribute.String("tollgate.outcome", st.outcome),
			attribute.String("tollgate.upstream", st.upstream),
			attribute.String("tollgate.principal", st.principal),
			attribute.String("tollgate.token_cache", st.tokenCache),
		)
		if userID, tenantID := st.ids(); userID != "" {
			span.SetAttributes(attribute.String("tollgate.user_id", userID), attribute.String("tollgate.tenant_id", tenantID))
		}
		if status >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(status))
		}
	}
	span.End()
	st.trace = reqTrace{}
}

// traceChild starts a child span of the request's (token verification,
// projection fetch); its context carries it to the code that calls out.
func (s *Server) traceChild(st *state, name string) (context.Context, trace.Span) {
	return s.tracing.Tracer.Start(st.trace.ctx, name)
}

// endChild ends a child span, recording err.
func endChild(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// traceInject writes the request's span context as traceparent (and
// tracestate) on the request to the upstream, in place of every trace
// header a trusted peer sent: setting one replaces only its first line,
// and the propagator sets no tracestate when the span has none, which
// would leave beside the proxy's traceparent a tracestate it did not
// adopt (one of a traceparent that does not parse, or over 32 members)
// or a second traceparent. Out of line (noinline): most requests are not
// traced.
//
//go:noinline
func (s *Server) traceInject(h *fasthttp.RequestHeader, st *state) {
	if st.trusted { // from anyone else hygiene removed them
		h.Del(tracing.HeaderTraceparent)
		h.Del(tracing.HeaderTracestate)
	}
	s.tracing.Propagator.Inject(st.trace.ctx, tracing.RequestHeaderCarrier{H: h})
}

// logArgs are a log line's key-value pairs followed by the request id and,
// when the request is traced, its trace id: every line about a request can
// be found from either. Out of line (noinline): each call site would
// otherwise carry the appends in its own code.
//
//go:noinline
func (st *state) logArgs(kv ...any) []any {
	kv = append(kv, "request_id", string(st.reqID))
	if st.trace.on {
		kv = append(kv, "trace_id", string(st.trace.id[:]))
	}
	return kv
}

// traceAttr is the trace_id attribute of a traced request's log lines;
// the empty Attr, which handlers leave out, when it is not traced.
func (st *state) traceAttr() slog.Attr {
	if !st.trace.on {
		return slog.Attr{}
	}
	return slog.String("trace_id", b2s(st.trace.id[:]))
}
