package headers

import (
	"strings"
	"testing"
)

// foldByByte is asciiFold one byte at a time: the reference foldWord and
// the word-wise asciiFold must answer as.
func foldByByte(a []byte, s string) bool {
	if len(a) != len(s) {
		return false
	}
	for i := range len(a) {
		c := a[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// foldWord lower-cases exactly the ASCII capital letters among eight
// bytes, every byte value in every lane; asciiFold, which compares eight
// bytes at a time with it, answers as a byte-by-byte comparison for names
// of every length around a word's, each byte of the name replaced by every
// value; and bearerScheme reads "bearer " in any case as bearerCandidate
// did (equalFold's '_' for '-' cannot matter: "bearer " holds neither),
// and authorizationName as asciiFold(k, "authorization").
func TestFoldWord(t *testing.T) {
	for v := range 256 {
		for lane := range 8 {
			w := uint64(v) << (8 * lane)
			want := uint64(v)
			if v >= 'A' && v <= 'Z' {
				want += 'a' - 'A'
			}
			if got := foldWord(w | 0x4141414141414141&^(0xff<<(8*lane))); got>>(8*lane)&0xff != want {
				t.Fatalf("byte %#x in lane %d: %#x", v, lane, got>>(8*lane)&0xff)
			}
		}
	}
	for _, s := range []string{"te", "upgrade", "x-api-key", "authorization", "x-request-id", "sec-websocket-protocol", "abcdefgh", "abcdefg", "abcdefghi"} {
		up := []byte(strings.ToUpper(s))
		if !asciiFold(up, s) || !asciiFold([]byte(s), s) {
			t.Fatalf("%q: its own spellings refused", s)
		}
		for i := range len(s) {
			for v := range 256 {
				a := []byte(s)
				a[i] = byte(v)
				if got, want := asciiFold(a, s), foldByByte(a, s); got != want {
					t.Fatalf("asciiFold(%q, %q) = %v, want %v", a, s, got, want)
				}
			}
		}
		if asciiFold([]byte(s+"x"), s) || asciiFold([]byte(s)[:len(s)-1], s) {
			t.Fatalf("%q: another length accepted", s)
		}
	}
	for i := range len("authorization") {
		for v := range 256 {
			a := []byte("Authorization")
			a[i] = byte(v)
			if got, want := authorizationName(a), foldByByte(a, "authorization"); got != want {
				t.Fatalf("authorizationName(%q) = %v, want %v", a, got, want)
			}
		}
	}
	for _, k := range []string{"", "Authorizatio", "Authorizations", "AUTHORIZATION", "authorization"} {
		if got, want := authorizationName([]byte(k)), foldByByte([]byte(k), "authorization"); got != want {
			t.Fatalf("authorizationName(%q) = %v, want %v", k, got, want)
		}
	}
	const scheme = "bearer "
	for i := range len(scheme) + 1 {
		for v := range 256 {
			a := []byte("Bearer x.y.z")
			a[i] = byte(v)
			if got, want := bearerScheme(a), equalFold(a[:len(scheme)], scheme); got != want {
				t.Fatalf("bearerScheme(%q) = %v, want %v", a, got, want)
			}
		}
	}
}
