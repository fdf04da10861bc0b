package tracing

import (
	"log/slog"
	"sync"
	"time"

	"github.com/tollgate-auth/tollgate/shared/clip"
)

// ErrorLogger is an OpenTelemetry error handler (otel.SetErrorHandler)
// that writes each error as a warning of the service's log: one JSON
// record (the collector's answer, which the exporter quotes whole, is
// escaped like any value and cut to MaxErrorBytes), at most one a second
// (a collector that refuses every export would otherwise write a line per
// batch); the next line written counts those left out.
type ErrorLogger struct {
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	last    time.Time
	dropped int64
}

// MaxErrorBytes bounds an error's text in the log.
const MaxErrorBytes = 512

// NewErrorLogger returns an ErrorLogger writing to log (slog.Default()
// when nil).
func NewErrorLogger(log *slog.Logger) *ErrorLogger {
	if log == nil {
		log = slog.Default()
	}
	return &ErrorLogger{log: log, now: time.Now}
}

// Handle implements otel.ErrorHandler.
func (h *ErrorLogger) Handle(err error) {
	if err == nil {
		return
	}
	h.mu.Lock()
	now := h.now()
	if !h.last.IsZero() && now.Sub(h.last) < time.Second {
		h.dropped++
		h.mu.Unlock()
		return
	}
	h.last = now
	dropped := h.dropped
	h.dropped = 0
	h.mu.Unlock()
	args := []any{"err", clip.Mark(err.Error(), MaxErrorBytes)}
	if dropped > 0 {
		args = append(args, "errors_not_logged", dropped)
	}
	h.log.Warn("tracing", args...)
}
