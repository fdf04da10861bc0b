package tracing

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestErrorLoggerBounded: at most one line a second, the next one saying
// how many were left out; a long error is cut.
func TestErrorLoggerBounded(t *testing.T) {
	var buf bytes.Buffer
	h := NewErrorLogger(slog.New(slog.NewJSONHandler(&buf, nil)))
	now := time.Unix(1000, 0)
	h.now = func() time.Time { return now }
	for range 5 {
		h.Handle(errors.New("traces export: refused"))
	}
	now = now.Add(time.Second)
	h.Handle(errors.New(strings.Repeat("é", 1000)))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "errors_not_logged") || !strings.Contains(lines[1], `"errors_not_logged":4`) {
		t.Errorf("left-out count wrong:\n%s", buf.String())
	}
	if len(lines[1]) > MaxErrorBytes+200 || !strings.Contains(lines[1], `..."`) {
		t.Errorf("long error not cut: %d bytes", len(lines[1]))
	}
}
