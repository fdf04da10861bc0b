package safeid

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, c := range []struct {
		s    string
		max  int
		want bool
	}{
		{"abc-XYZ_09.:", 12, true},
		{"a", 1, true},
		{"", 5, false},
		{"abcdef", 5, false},
		{strings.Repeat("x", 128), 128, true},
		{strings.Repeat("x", 129), 128, false},
		{"a b", 5, false},
		{"a/b", 5, false},
		{"a\"b", 5, false},
		{"a\nb", 5, false},
		{"é", 5, false},
		{"a=b", 5, false},
	} {
		if got := Valid(c.s, c.max); got != c.want {
			t.Errorf("Valid(%q, %d) = %v, want %v", c.s, c.max, got, c.want)
		}
	}
}
