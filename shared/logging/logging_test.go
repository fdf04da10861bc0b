package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

// Durations print as strings, at any depth; other kinds are untouched.
func TestDurationsAsStrings(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, slog.LevelInfo)
	log.Info("x", "timeout", 15*time.Minute, slog.Group("config", slog.Duration("ttl", 1500*time.Millisecond)),
		"duration_ms", 1.25, "n", 3)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["timeout"] != "15m0s" || m["config"].(map[string]any)["ttl"] != "1.5s" || m["duration_ms"] != 1.25 || m["n"] != 3.0 {
		t.Fatalf("got %s", buf.Bytes())
	}
	buf.Reset()
	log.Debug("dropped")
	if buf.Len() != 0 {
		t.Fatalf("level not applied: %s", buf.Bytes())
	}
}
