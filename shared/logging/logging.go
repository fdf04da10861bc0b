// Package logging builds the services' JSON loggers, so that both write
// the same shapes: a time.Duration is written as a string ("15m0s"), never
// as slog's integer nanoseconds; request durations are logged by the
// services as duration_ms, a float.
package logging

import (
	"io"
	"log/slog"
)

// New returns a JSON logger writing to w at level.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(NewHandler(w, level))
}

// NewHandler is New's handler (for wrapping).
func NewHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: replace})
}

func replace(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
