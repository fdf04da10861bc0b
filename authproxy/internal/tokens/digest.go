package tokens

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
)

// The cache's name of a token is a keyed digest: two GMAC tags (AES-GCM
// over the token as additional data, nothing encrypted) under two AES-256
// keys drawn at random when the process starts and never leaving it. A
// tag is a secret-keyed universal hash: without the keys, two tokens get
// the same 128-bit tag with probability at most about len/16 / 2^128, and
// nobody outside the process ever sees a tag, so an attacker cannot search
// for a collision; the second, independent tag makes the whole 32-byte
// name as unlikely to collide. Unlike SHA-256 of the token, the name is no
// fingerprint that could be checked against a guessed token offline, and
// it costs a fraction of SHA-256 (AES and carry-less multiplication in
// hardware): see docs/security.md, "Token cache keys".
var digestAEADs = func() (a [2]cipher.AEAD) {
	for i := range a {
		var key [32]byte
		if _, err := rand.Read(key[:]); err != nil {
			panic("tokens: random digest key: " + err.Error())
		}
		b, err := aes.NewCipher(key[:])
		if err != nil {
			panic("tokens: digest key: " + err.Error())
		}
		if a[i], err = cipher.NewGCM(b); err != nil {
			panic("tokens: digest key: " + err.Error())
		}
	}
	return a
}()

// digestNonce is fixed: the tags are never published, only compared, so
// the nonce need not vary (GMAC's nonce guards tags an attacker sees).
var digestNonce [12]byte

// Digest is the cache's name of a token (see DigestTo). The cache never
// holds the token itself.
func Digest(token []byte) [sha256.Size]byte {
	var d [sha256.Size]byte
	DigestTo(&d, token)
	return d
}

// DigestTo writes the cache's name of token to d without allocating when
// d is already on the heap (e.g. in per-request scratch space).
func DigestTo(d *[sha256.Size]byte, token []byte) {
	digestAEADs[0].Seal(d[:0], digestNonce[:], nil, token)
	digestAEADs[1].Seal(d[16:16], digestNonce[:], nil, token)
}
