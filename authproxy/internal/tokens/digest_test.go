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
	if sum := sha256.Sum256(a); d == Name(sum[:NameSize]) || d == Name(sum[NameSize:]) {
		t.Fatal("digest is part of the plain SHA-256")
	}
	seen := map[Name]bool{d: true}
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
	var into Name
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
		d := new(Name)
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
