package pathnorm

import (
	"math/rand/v2"
	"testing"
)

// normalByByte is normal as it was before it read each byte's class: the
// reference normal must answer as.
func normalByByte(raw []byte) bool {
	seg := 1
	for i := 1; i < len(raw); i++ {
		c := raw[i]
		if !pathChars[c] || c == '~' || c == '(' || c == ':' && (i+1 == len(raw) || raw[i+1] == '$' || raw[i+1] == '/') {
			return false
		}
		if c == '/' {
			if emptyOrDotEnd(raw[seg:i]) {
				return false
			}
			seg = i + 1
		}
	}
	return len(raw) == 1 || !emptyOrDotEnd(raw[seg:])
}

// normal reads one class per byte (plainClass): the class table holds
// every byte's, and normal answers as the byte-by-byte reference for
// every byte value at every place of paths around the usual ones, and for
// random paths over the bytes that matter ('/', '.', ':', '$', '~', '(',
// '%', letters).
func TestNormalByClass(t *testing.T) {
	for c := range 256 {
		want := uint8(plainPlain)
		switch {
		case c == '/':
			want = plainSlash
		case c == ':':
			want = plainColon
		case !pathChars[c] || c == '~' || c == '(':
			want = plainNot
		}
		if got := plainClass[c]; got != want {
			t.Fatalf("class of %#x = %d, want %d", c, got, want)
		}
	}
	for _, p := range []string{"/", "/a", "/api/v1/users/bench", "/a/b:", "/a:b/c", "/.well-known/jwks.json", "/x/"} {
		for i := 1; i <= len(p); i++ {
			for v := range 256 {
				raw := []byte(p[:i] + "?" + p[i:])
				raw[i] = byte(v)
				if got, want := normal(raw), normalByByte(raw); got != want {
					t.Fatalf("normal(%q) = %v, want %v", raw, got, want)
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 5))
	const alphabet = "//..::$~(%ab"
	for range 200000 {
		raw := []byte{'/'}
		for range r.IntN(12) {
			raw = append(raw, alphabet[r.IntN(len(alphabet))])
		}
		if got, want := normal(raw), normalByByte(raw); got != want {
			t.Fatalf("normal(%q) = %v, want %v", raw, got, want)
		}
	}
}
