package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
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

// TestAppendStringEveryByteAnywhere: each byte value, at each place of a
// string long enough for the eight-byte scan and its tail, is encoded as
// log/slog encodes it (the word-at-a-time check must miss no byte that
// needs escaping, and stop at none that does not).
func TestAppendStringEveryByteAnywhere(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == "k" {
			return a
		}
		return slog.Attr{}
	}})
	log := slog.New(h)
	for c := range 256 {
		for at := range 19 {
			s := []byte(strings.Repeat("a", 19))
			s[at] = byte(c)
			buf.Reset()
			log.Info("", "k", string(s))
			want := strings.TrimSuffix(strings.TrimPrefix(buf.String(), `{"k":`), "}\n")
			if got := string(AppendString(nil, string(s))); got != want {
				t.Fatalf("byte %#x at %d: got %s, slog writes %s", c, at, got, want)
			}
		}
	}
}

// TestTimeCacheAsAppendTime: the cache writes what AppendTime writes, for
// times within one second and across seconds, zones, years and the zero
// fraction, in any order.
func TestTimeCacheAsAppendTime(t *testing.T) {
	east, west := time.FixedZone("e", 5*3600+45*60), time.FixedZone("w", -(3*3600+30*60))
	base := time.Date(2026, 12, 4, 23, 59, 59, 0, time.UTC)
	var times []time.Time
	for _, d := range []time.Duration{0, 1, 10, 999_999_999, time.Second, time.Second + 120*time.Millisecond, 2*time.Second + 7_654_321, time.Minute} {
		for _, loc := range []*time.Location{time.UTC, east, west, time.Local} {
			times = append(times, base.Add(d).In(loc))
		}
	}
	times = append(times,
		time.Date(9999, 12, 31, 23, 59, 59, 500, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 1, time.UTC), // beyond RFC 3339's four digits
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999, time.UTC),
		time.Now(), time.Now().Add(time.Nanosecond), base, base.In(east), base)
	var c TimeCache
	for _, tm := range times {
		want := string(AppendTime([]byte("x"), tm))
		if got := string(c.Append([]byte("x"), tm)); got != want {
			t.Errorf("%v: %s, AppendTime writes %s", tm, got, want)
		}
	}
}

// TestAppendMillisAsAppendFloat: a duration in microseconds is written in
// milliseconds as strconv writes float64(us)/1000, the shortest decimal.
func TestAppendMillisAsAppendFloat(t *testing.T) {
	check := func(us int64) {
		t.Helper()
		want := string(strconv.AppendFloat([]byte("x"), float64(us)/1000, 'f', -1, 64))
		if got := string(AppendMillis([]byte("x"), us)); got != want {
			t.Fatalf("%d µs: %s, strconv writes %s", us, got, want)
		}
	}
	for us := int64(-200_000); us <= 200_000; us++ {
		check(us)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		check(r.Int64N(1 << 52))
		check(-r.Int64N(1 << 52))
	}
	for _, us := range []int64{maxExactMicros - 1, maxExactMicros, maxExactMicros + 1, 1<<62 + 3, -1 << 62, math.MaxInt64, math.MinInt64} {
		check(us)
	}
}
