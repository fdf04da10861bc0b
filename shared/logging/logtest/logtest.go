// Package logtest holds checks of the services' log lines shared by their
// tests.
package logtest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/logging"
)

// WantPanicLine checks the "panic" lines among logs (JSON lines) that hold
// match: there must be one, and each must carry the panic value redacted
// (starting with wantPanic) and cut to logging.MaxRedactedBytes, and a
// stack trace cut to logging.MaxStackBytes (the panic raised deep enough
// that its stack is longer).
func WantPanicLine(t testing.TB, logs, match, wantPanic string) {
	t.Helper()
	var found bool
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `"msg":"panic"`) || !strings.Contains(line, match) {
			continue
		}
		var rec struct{ Panic, Stack string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("panic line: %v: %s", err, line)
		}
		found = true
		if !strings.HasPrefix(rec.Panic, wantPanic) {
			t.Errorf("panic value %.100q..., want it redacted", rec.Panic)
		}
		if len(rec.Panic) > logging.MaxRedactedBytes+len("...") {
			t.Errorf("panic value of %d bytes logged, want at most %d", len(rec.Panic), logging.MaxRedactedBytes+3)
		}
		if !strings.HasPrefix(rec.Stack, "goroutine ") {
			t.Errorf("stack %.100q, want the stack trace", rec.Stack)
		}
		if len(rec.Stack) > logging.MaxStackBytes+len("...") || !strings.HasSuffix(rec.Stack, "...") {
			t.Errorf("stack of %d bytes logged, want it cut to %d and ...", len(rec.Stack), logging.MaxStackBytes)
		}
	}
	if !found {
		t.Fatalf("no panic line holding %q:\n%s", match, logs)
	}
}

// CountLines reads logs (JSON lines) for a bounded kind of line: lines is
// how many are named one of msgs, counted the sum of the "count" of those
// named unlogged (the lines a logging.Budget left out). Together they
// account for every line the kind was asked to write.
func CountLines(logs, unlogged string, msgs ...string) (lines, counted int) {
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Msg   string
			Count int
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		switch {
		case rec.Msg == unlogged:
			counted += rec.Count
		case slices.Contains(msgs, rec.Msg):
			lines++
		}
	}
	return lines, counted
}
