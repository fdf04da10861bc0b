package clip_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tollgate-auth/tollgate/shared/clip"
)

func TestString(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"", 5, ""},
		{"abc", 5, "abc"},
		{"abc", 3, "abc"},
		{"abcdef", 3, "abc"},
		{"abc", 0, ""},
		{"abc", -1, ""},
		{"aé", 2, "a"},           // é is 2 bytes: not cut in half
		{"aé", 3, "aé"},          // fits exactly
		{"a€b", 2, "a"},          // € is 3 bytes: cut after its first
		{"a€b", 3, "a"},          // and after its second
		{"a€b", 4, "a€"},         // whole
		{"a😀b", 2, "a"},          // 😀 is 4 bytes: cut after its first,
		{"a😀b", 3, "a"},          // second,
		{"a😀b", 4, "a"},          // third
		{"a😀b", 5, "a😀"},         // whole
		{"😀", 3, ""},             // nothing whole fits
		{"😀", 1, ""},             //
		{"éé", 3, "é"},           //
		{"ab\u0301c", 3, "ab"},   // a combining mark is a character of its own
		{"é\xffabc", 3, "é\xff"}, // invalid input is cut by bytes
		{"\x80\x80\x80\x80\x80\x80", 5, "\x80\x80\x80\x80\x80"}, // no character start near the cut
	}
	for _, tt := range tests {
		got := clip.String(tt.s, tt.n)
		if got != tt.want {
			t.Errorf("String(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
		if utf8.ValidString(tt.s) && !utf8.ValidString(got) {
			t.Errorf("String(%q, %d) = %q is not valid UTF-8", tt.s, tt.n, got)
		}
	}
}

// TestStringEveryCut cuts text of 1- to 4-byte characters at every length:
// the result is valid, a prefix, at most n bytes, and at most the cut
// character short of n.
func TestStringEveryCut(t *testing.T) {
	s := strings.Repeat("aé€😀", 3)
	for n := 0; n <= len(s)+1; n++ {
		got := clip.String(s, n)
		if !utf8.ValidString(got) || !strings.HasPrefix(s, got) || len(got) > n || n-len(got) >= utf8.UTFMax && len(got) < len(s) {
			t.Errorf("String(%q, %d) = %q (%d bytes)", s, n, got, len(got))
		}
		if len(got) < len(s) {
			if r, size := utf8.DecodeRuneInString(s[len(got):]); len(got)+size <= n {
				t.Errorf("String(%q, %d) = %q left out %q, which fits", s, n, got, r)
			}
		}
	}
	long := strings.Repeat("x", 100)
	if a := testing.AllocsPerRun(100, func() { _ = clip.String(long, 50) }); a != 0 {
		t.Errorf("%v allocations", a)
	}
}

func TestMark(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc..."},
		{"a€b", 3, "a..."}, // cut on a character boundary, then marked
		{"a€b", 5, "a€b"},  // fits exactly: no mark
		{"😀", 2, "..."},    // nothing whole fits: only the mark
		{"abc", 0, "..."},  //
		{"abc", -1, "..."}, //
	}
	for _, tt := range tests {
		if got := clip.Mark(tt.s, tt.n); got != tt.want {
			t.Errorf("Mark(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
	long := strings.Repeat("x", 100)
	if a := testing.AllocsPerRun(100, func() { _ = clip.Mark(long, 100) }); a != 0 {
		t.Errorf("%v allocations for a text that fits", a)
	}
}

func TestText(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"a\xffb", 10, "a\uFFFDb"},
		{"a\x00b", 10, "ab"},
		{"caf\xe9\xff", 4, "caf"}, // U+FFFD is 3 bytes: not cut in half
	}
	for _, tt := range tests {
		got := clip.Text(tt.s, tt.n)
		if got != tt.want || !utf8.ValidString(got) {
			t.Errorf("Text(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
