package requestid

import (
	"strings"
	"testing"
)

func TestFrom(t *testing.T) {
	if got := From("abc-123_x.y:z"); got != "abc-123_x.y:z" {
		t.Fatalf("sane id replaced: %q", got)
	}
	for _, bad := range []string{"", "has space", "quote\"", "new\nline", string(make([]byte, MaxLen+1))} {
		got := From(bad)
		if got == bad || !Valid(got) || len(got) != 32 {
			t.Errorf("From(%q) = %q, want a fresh 32-char id", bad, got)
		}
	}
	a, b := New(), New()
	if a == b {
		t.Fatalf("two ids collided: %q", a)
	}
}

func TestChild(t *testing.T) {
	long := strings.Repeat("a", MaxLen)
	for _, parent := range []string{"abc-123", long, "", "has space"} {
		a, b := Child(parent), Child(parent)
		if a == b || !Valid(a) || !Valid(b) {
			t.Fatalf("Child(%q) = %q, %q: want two different valid ids", parent, a, b)
		}
		if Valid(parent) && !strings.HasPrefix(a, parent[:min(len(parent), MaxLen-17)]+".") {
			t.Errorf("Child(%q) = %q: want the parent's id first", parent, a)
		}
	}
	if got := Child(long); len(got) != MaxLen {
		t.Errorf("len(Child(%d characters)) = %d, want %d", MaxLen, len(got), MaxLen)
	}
}
