package logging

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClipPath(t *testing.T) {
	short := "/api/v1/users/" + strings.Repeat("a", 100)
	if got := ClipPath(short); got != short {
		t.Errorf("short path changed: %q", got)
	}
	long := "/" + strings.Repeat("b", 3*MaxPathBytes)
	if got := ClipPath(long); got != long[:MaxPathBytes] {
		t.Errorf("long path cut to %d bytes, want %d", len(got), MaxPathBytes)
	}
	// A rune across the limit is left out whole.
	multi := "/" + strings.Repeat("é", MaxPathBytes)
	got := ClipPath(multi)
	if len(got) > MaxPathBytes || len(got) < MaxPathBytes-utf8.UTFMax || !utf8.ValidString(got) {
		t.Errorf("cut to %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
	if n := testing.AllocsPerRun(100, func() { _ = ClipPath(long) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

func TestClipStack(t *testing.T) {
	short := []byte("goroutine 1 [running]:\nmain.main()\n")
	if got := ClipStack(short); got != string(short) {
		t.Errorf("short stack changed: %q", got)
	}
	for _, n := range []int{MaxStackBytes + 1, MaxStackBytes + 2, 4 * MaxStackBytes} {
		long := []byte(strings.Repeat("x", n))
		if got := ClipStack(long); got != string(long[:MaxStackBytes])+"..." {
			t.Errorf("stack of %d bytes cut to %d bytes, want %d and ...", n, len(got), MaxStackBytes)
		}
	}
	// A character across the limit is left out whole.
	multi := []byte("goroutine 1 [running]:\n" + strings.Repeat("é", MaxStackBytes))
	got := ClipStack(multi)
	if len(got) > MaxStackBytes+3 || len(got) < MaxStackBytes || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Errorf("cut to %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}
