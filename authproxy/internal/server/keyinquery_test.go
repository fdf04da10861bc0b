package server

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
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

// decodedContains, the scan that lets a query with escapes but no token
// by, answers as decoding the query and looking for the word, for every
// query over the bytes that matter up to four bytes long; minQueryToken
// is the shortest JWS Verifier.Ours could take.
func TestDecodedContains(t *testing.T) {
	const alphabet = "eyJ%6549a"
	decode := func(q []byte) []byte {
		var out []byte
		for i := 0; i < len(q); i++ {
			c := q[i]
			if c == '%' && i+2 < len(q) {
				var d [1]byte
				if _, err := hex.Decode(d[:], q[i+1:i+3]); err == nil {
					c = d[0]
					i += 2
				}
			}
			out = append(out, c)
		}
		return out
	}
	var all func(q []byte)
	all = func(q []byte) {
		if got, want := decodedContains(q, "eyJ"), bytes.Contains(decode(q), []byte("eyJ")); got != want {
			t.Fatalf("decodedContains(%q) = %v, want %v", q, got, want)
		}
		if len(q) == 4 {
			return
		}
		for i := range len(alphabet) {
			all(append(q, alphabet[i]))
		}
	}
	all(nil)
	for q, want := range map[string]bool{"a=%65%79%4a": true, "a=%65%79%4A": true, "a=e%79J": true, "a=%65yj": false, "a=e%7": false} {
		if got := decodedContains([]byte(q), "eyJ"); got != want {
			t.Fatalf("decodedContains(%q) = %v, want %v", q, got, want)
		}
	}
	if h := base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"at+jwt"}`)) + "."; minQueryToken != len(h) {
		t.Fatalf("minQueryToken = %d, want %d (%s)", minQueryToken, len(h), h)
	}
}
