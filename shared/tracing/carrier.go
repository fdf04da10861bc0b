package tracing

import (
	"bytes"
	"context"
	"log/slog"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
)

// Header names of the W3C Trace Context.
const (
	HeaderTraceparent = "Traceparent"
	HeaderTracestate  = "Tracestate"
)

// RequestHeaderCarrier is a propagation.TextMapCarrier over fasthttp (and
// so Fiber) request headers. The propagator's lower-case names are used in
// their canonical form, the form fasthttp stores received headers in: a
// header set with normalizing disabled (as the proxy forwards) then
// replaces the received one instead of standing beside it.
type RequestHeaderCarrier struct{ H *fasthttp.RequestHeader }

func canonical(key string) string {
	switch key {
	case "traceparent":
		return HeaderTraceparent
	case "tracestate":
		return HeaderTracestate
	}
	return key
}

// Get returns the first value of key; for tracestate, every value joined
// with commas: W3C Trace Context lets a sender split the list over several
// header fields, which the receiver combines (only the first was read, the
// entries of the others lost).
func (c RequestHeaderCarrier) Get(key string) string {
	k := canonical(key)
	if k == HeaderTracestate {
		if vs := c.H.PeekAll(k); len(vs) > 1 {
			return string(bytes.Join(vs, []byte{','}))
		}
	}
	return string(c.H.Peek(k))
}

// Set replaces key.
func (c RequestHeaderCarrier) Set(key, value string) { c.H.Set(canonical(key), value) }

// Keys lists the header names.
func (c RequestHeaderCarrier) Keys() []string {
	var ks []string
	for k := range c.H.All() {
		ks = append(ks, string(k))
	}
	return ks
}

// LogHandler adds trace_id and span_id to each record logged with a context
// that carries a valid span (slog's *Context methods and LogAttrs).
type LogHandler struct{ slog.Handler }

// Handle implements slog.Handler.
func (h LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h LogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return LogHandler{h.Handler.WithAttrs(as)}
}

// WithGroup implements slog.Handler.
func (h LogHandler) WithGroup(name string) slog.Handler { return LogHandler{h.Handler.WithGroup(name)} }
