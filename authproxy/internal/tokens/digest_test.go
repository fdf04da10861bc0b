package tokens

import (
	"crypto/sha256"
	"testing"
)

// A token's name is stable within the process, differs between tokens
// (even one byte apart, even a prefix), and is not the token's plain
// SHA-256 (which anyone could compute from a guessed token).
func TestDigest(t *testing.T) {
	a := []byte("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln")
	d := Digest(a)
	if Digest(a) != d {
		t.Fatal("digest not stable")
	}
	if d == sha256.Sum256(a) {
		t.Fatal("digest is the plain SHA-256")
	}
	if [16]byte(d[:16]) == [16]byte(d[16:]) {
		t.Fatal("the two halves are the same tag")
	}
	seen := map[[32]byte]bool{d: true}
	for i := range a {
		b := append([]byte(nil), a...)
		b[i] ^= 1
		for _, x := range [][]byte{b, a[:i]} {
			dx := Digest(x)
			if seen[dx] {
				t.Fatalf("collision for %q", x)
			}
			seen[dx] = true
		}
	}
	var into [32]byte
	DigestTo(&into, a)
	if into != d {
		t.Fatal("DigestTo differs from Digest")
	}
}

func BenchmarkDigest(b *testing.B) {
	tok := make([]byte, 700) // a typical access token with its claims
	for i := range tok {
		tok[i] = 'a' + byte(i%26)
	}
	b.Run("keyed", func(b *testing.B) {
		d := new([32]byte)
		b.ReportAllocs()
		b.SetBytes(int64(len(tok)))
		for b.Loop() {
			DigestTo(d, tok)
		}
	})
	b.Run("sha256", func(b *testing.B) {
		d := new([32]byte)
		b.ReportAllocs()
		b.SetBytes(int64(len(tok)))
		for b.Loop() {
			*d = sha256.Sum256(tok)
		}
	})
}
