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

// TestClipPathRedactsCredentials: a segment shaped like one of our
// credentials is recorded as RedactedSegment, the rest of the path as it
// is; what only looks like one (ids, digests, slugs, short runs) stays.
func TestClipPathRedactsCredentials(t *testing.T) {
	key := "tg_abcdefghij012345_Q7xk2LmN9pRsT4vWyZ1aBcDeFgHiJkLmNoPqRsTuVwX"
	token := "dIVG2vnYDZMqaKFjM2nfA0a8N0kFA2CPKUy-NMkl_38"
	jws := "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiIxIn0.MEUCIQDx3kQm7Vv9YpQ2ZtN0aLr5sJw8uXcHbGfEd1IkOoPqRs"
	for _, tt := range []struct{ path, want string }{
		{"/notes/" + key, "/notes/[redacted]"},
		{"/notes/" + key + "/x", "/notes/[redacted]/x"},
		{"/k/key=" + key + ";v=1", "/k/[redacted]"},
		{"/k/tg_abcdefghij012345_short", "/k/[redacted]"}, // a key's head: its public id
		{"/reset/" + token, "/reset/[redacted]"},
		{"/t/" + jws + "/", "/t/[redacted]/"},
		{"/" + token + "/" + token, "/[redacted]/[redacted]"},
		{"/api/v1/users/3f2504e0-4f89-41d3-9a5c-0305e82c3301", ""},
		{"/sha/" + strings.Repeat("ab12", 16), ""},
		{"/sha/" + strings.Repeat("AB12", 16), ""},
		{"/blog/" + strings.Repeat("a-long-lower-case-slug-", 4), ""},
		{"/k/tg_ABCDEFGHIJ012345_x", ""},
		{"/k/" + token[:42], ""},
		{"/a/b.c/", ""},
		{"", ""},
		{"/", ""},
	} {
		want := tt.want
		if want == "" {
			want = tt.path
		}
		if got := ClipPath(tt.path); got != want {
			t.Errorf("ClipPath(%q) = %q, want %q", tt.path, got, want)
		}
	}
	// Redacted before it is cut: a credential across the limit is not
	// recorded in part.
	long := "/" + strings.Repeat("b", MaxPathBytes-20) + "/" + key
	if got := ClipPath(long); strings.Contains(got, key[:20]) || !strings.HasSuffix(got, "/[redacted]") {
		t.Errorf("credential across the limit recorded as %q", got[MaxPathBytes-40:])
	}
	clean := "/api/v1/users/3f2504e0-4f89-41d3-9a5c-0305e82c3301/roles"
	if n := testing.AllocsPerRun(100, func() { _ = ClipPath(clean) }); n != 0 {
		t.Errorf("%v allocations for a path without a credential", n)
	}
}
