package pgtrace

import (
	"context"
	"fmt"
	"reflect"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-auth/tollgate/shared/logging"
)

// redactingProvider hands otelpgx tracers whose spans record an error
// redacted as coreapi's log lines record it (logging.Redact: quoted text
// dropped, credentials taken out, cut to 512 bytes). otelpgx puts a failed
// statement's error whole in its span's status and exception event, and
// PostgreSQL's and pgx's errors quote the statement's values (`invalid
// input syntax for type uuid: "<an address>"`, pgx's `unable to encode
// "<value>"`), which the `request failed` line leaves out.
type redactingProvider struct{ trace.TracerProvider }

func (p redactingProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return redactingTracer{p.TracerProvider.Tracer(name, opts...)}
}

type redactingTracer struct{ trace.Tracer }

// Start starts the span and puts its redacting wrapper in the context,
// where otelpgx finds it again to record the statement's end.
func (t redactingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	ctx, span := t.Tracer.Start(ctx, name, opts...)
	if !span.IsRecording() {
		return ctx, span
	}
	s := redactingSpan{span}
	return trace.ContextWithSpan(ctx, s), s
}

type redactingSpan struct{ trace.Span }

func (s redactingSpan) SetStatus(code codes.Code, description string) {
	s.Span.SetStatus(code, logging.Redact(description))
}

// RecordError records err as the SDK does (an "exception" event with the
// error's type and message), its message redacted.
func (s redactingSpan) RecordError(err error, opts ...trace.EventOption) {
	if err == nil {
		return
	}
	opts = append(opts, trace.WithAttributes(
		attribute.String("exception.type", errorType(err)),
		attribute.String("exception.message", logging.Redact(err.Error()))))
	s.Span.AddEvent("exception", opts...)
}

// errorType names err's type as the SDK's RecordError does.
func errorType(err error) string {
	t := reflect.TypeOf(err)
	if t.PkgPath() == "" && t.Name() == "" {
		return t.String() // a pointer, say
	}
	return fmt.Sprintf("%s.%s", t.PkgPath(), t.Name())
}
