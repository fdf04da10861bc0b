package requestid

import "testing"

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
