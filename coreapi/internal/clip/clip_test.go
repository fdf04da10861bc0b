package clip_test

import (
	"testing"
	"unicode/utf8"

	"github.com/tollgate-auth/tollgate/coreapi/internal/clip"
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
		{"a€b", 3, "a"},          // € is 3 bytes
		{"a€b", 4, "a€"},         //
		{"😀", 3, ""},             // nothing whole fits
		{"é\xffabc", 3, "é\xff"}, // invalid input is cut by bytes
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
