package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestAppendStringAsSlog: a string is encoded as log/slog's JSON
// handler encodes it, whatever bytes it holds.
func TestAppendStringAsSlog(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "tab\tnl\ncr\r", "\x00\x01\x1f\x7f", "<html>&amp;",
		"caf\u00e9 \u2028 \u2029 \U0001F600", "bad \xff\xfe utf8 \xe2\x82", "/notes/%C3%A9?x=1",
	} {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == "k" {
				return a
			}
			return slog.Attr{}
		}})).Info("", "k", s)
		want := strings.TrimSuffix(strings.TrimPrefix(buf.String(), `{"k":`), "}\n")
		got := string(AppendString(nil, s))
		if got != want {
			t.Errorf("%q: got %s, slog writes %s", s, got, want)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("%q: %s is not JSON: %v", s, got, err)
		}
	}
}

// TestAppendTime: the time as log/slog's JSON handler writes a record's
// (compared with its own output): RFC 3339 with the nanoseconds, trailing
// zeros trimmed.
func TestAppendTime(t *testing.T) {
	zone := time.FixedZone("x", -(3*3600 + 30*60))
	for _, tm := range []time.Time{
		time.Date(2026, 12, 4, 10, 5, 0, 0, time.UTC),
		time.Date(2026, 12, 4, 10, 5, 0, 999_999_999, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 120_000_000, zone),
		time.Date(2026, 1, 2, 3, 4, 5, 7_654_321, zone),
		time.Now(),
	} {
		var buf bytes.Buffer
		if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), slog.NewRecord(tm, slog.LevelInfo, "", 0)); err != nil {
			t.Fatal(err)
		}
		want, _, _ := strings.Cut(strings.TrimPrefix(buf.String(), `{"time":"`), `"`)
		if got := string(AppendTime([]byte("x"), tm)); got != "x"+want {
			t.Errorf("%v: %s, slog writes %s", tm, got, want)
		}
	}
}
