package server

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// mayHoldTG, the one pass that lets most queries by, answers as the two
// scans it replaces (a raw "tg", any '%') for every query over the bytes
// that matter, up to three bytes long, and for random longer ones.
func TestMayHoldTG(t *testing.T) {
	const alphabet = "tg%xT"
	ref := func(q []byte) bool { return bytes.Contains(q, []byte("tg")) || bytes.IndexByte(q, '%') >= 0 }
	var all func(q []byte)
	all = func(q []byte) {
		if got, want := mayHoldTG(q), ref(q); got != want {
			t.Fatalf("mayHoldTG(%q) = %v, want %v", q, got, want)
		}
		if len(q) == 3 {
			return
		}
		for i := range len(alphabet) {
			all(append(q, alphabet[i]))
		}
	}
	all(nil)
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		q := make([]byte, r.IntN(40))
		for i := range q {
			q[i] = alphabet[r.IntN(len(alphabet))]
		}
		if got, want := mayHoldTG(q), ref(q); got != want {
			t.Fatalf("mayHoldTG(%q) = %v, want %v", q, got, want)
		}
	}
	const head = "tg_0123456789abcdef_" // a key's head: apikey.HasHead
	for q, want := range map[string]bool{"limit=10": false, "k=" + head + "x": true, "k=%74g" + head[2:] + "x": true, head + "=1": true, "k=tg_x": false} {
		if got := keyInQuery([]byte(q)); got != want {
			t.Fatalf("keyInQuery(%q) = %v, want %v", q, got, want)
		}
	}
}
