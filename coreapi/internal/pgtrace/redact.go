package pgtrace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
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
// "<value>"`), which the `request failed` line leaves out. A failed
// connection's error names the user, the database, the host and the port,
// which the spans' attributes leave out
// (WithDisableConnectionDetailsInAttributes): it is recorded as what
// failed without them.
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
	s := &redactingSpan{Span: span}
	return trace.ContextWithSpan(ctx, s), s
}

// redactingSpan records errors redacted. otelpgx records an error as
// RecordError(err) then SetStatus(codes.Error, err.Error()): the status
// takes the text the error was recorded with when it is that error's.
type redactingSpan struct {
	trace.Span
	mu             sync.Mutex
	errText, shown string // the last error RecordError took, and as recorded
}

func (s *redactingSpan) SetStatus(code codes.Code, description string) {
	s.mu.Lock()
	if description != "" && description == s.errText {
		description = s.shown
	} else {
		description = logging.Redact(description)
	}
	s.mu.Unlock()
	s.Span.SetStatus(code, description)
}

// RecordError records err as the SDK does (an "exception" event with the
// error's type and message), its message redacted (errorText).
func (s *redactingSpan) RecordError(err error, opts ...trace.EventOption) {
	if err == nil {
		return
	}
	shown := errorText(err)
	s.mu.Lock()
	s.errText, s.shown = err.Error(), shown
	s.mu.Unlock()
	opts = append(opts, trace.WithAttributes(
		attribute.String("exception.type", errorType(err)),
		attribute.String("exception.message", shown)))
	s.Span.AddEvent("exception", opts...)
}

// errorText is err as a span records it: redacted (logging.Redact), and
// for a failed connection what failed without the user, database, host
// and port pgconn's error names.
func errorText(err error) string {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return logging.Redact(err.Error())
	}
	const failed = "failed to connect"
	var pe *pgconn.PgError
	var se *os.SyscallError
	switch {
	case errors.As(err, &pe):
		return failed + ": " + logging.Redact(pe.Error())
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return failed + ": timeout"
	case errors.As(err, &se):
		return failed + ": " + se.Syscall + ": " + se.Err.Error()
	}
	return failed
}

// errorType names err's type as the SDK's RecordError does.
func errorType(err error) string {
	t := reflect.TypeOf(err)
	if t.PkgPath() == "" && t.Name() == "" {
		return t.String() // a pointer, say
	}
	return fmt.Sprintf("%s.%s", t.PkgPath(), t.Name())
}
