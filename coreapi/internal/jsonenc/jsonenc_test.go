package jsonenc

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var samples = []string{
	"", "plain", "Ünïcødé ✓ 日本語", `quote " and \ backslash`, "<script>&amp;</script>",
	"\x00\x01\x07\x08\x09\x0a\x0b\x0c\x0d\x1f\x7f", "line\u2028sep\u2029para", "bad \xff\xfe utf8 \xc3",
	"emoji 🙂 and surrogate-free", strings.Repeat("a<", 100), "\u00e9\u0301", "tail\\",
}

func TestStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range samples {
		want, _ := json.Marshal(s)
		if got := String(nil, s); string(got) != string(want) {
			t.Errorf("String(%q) = %s, want %s", s, got, want)
		}
	}
}

func FuzzString(f *testing.F) {
	for _, s := range samples {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := String([]byte("x"), s); string(got[1:]) != string(want) {
			t.Fatalf("String(%q) = %s, want %s", s, got[1:], want)
		}
	})
}

func TestStringsMatchesEncodingJSON(t *testing.T) {
	for _, l := range [][]string{nil, {}, {"a"}, {"a", "b<", ""}, samples} {
		want, _ := json.Marshal(l)
		if got := Strings(nil, l); string(got) != string(want) {
			t.Errorf("Strings(%q) = %s, want %s", l, got, want)
		}
	}
}

func TestTimeMatchesEncodingJSON(t *testing.T) {
	ny := time.FixedZone("EST", -5*3600)
	for _, tm := range []time.Time{
		{}, time.Unix(0, 0).UTC(), time.Date(2026, 12, 1, 17, 32, 54, 123456000, time.UTC),
		time.Date(2026, 12, 1, 17, 32, 54, 120000000, ny), time.Date(1999, 1, 2, 3, 4, 5, 1, time.Local),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		want, err := json.Marshal(tm)
		if err != nil {
			t.Fatal(err)
		}
		if got := Time(nil, tm); string(got) != string(want) {
			t.Errorf("Time(%v) = %s, want %s", tm, got, want)
		}
	}
}

func TestScalars(t *testing.T) {
	if got := string(Bool(Int(Key(nil, "n"), -42), true)); got != `"n":-42true` {
		t.Fatalf("got %s", got)
	}
}
