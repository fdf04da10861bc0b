package tokens

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
)

// The cache's name of a token is a keyed digest: a GMAC tag (AES-GCM over
// the token as additional data, nothing encrypted) under an AES-256 key
// drawn at random when the process starts and never leaving it. A tag is
// a secret-keyed universal hash: without the key, two distinct tokens get
// the same 128-bit tag with probability at most about len/16 / 2^128, and
// nobody outside the process ever sees a tag, so an attacker cannot search
// for a collision other than by sending requests, each of which tells only
// "accepted or not". Unlike SHA-256 of the token, the name is no
// fingerprint that could be checked against a guessed token offline, and
// it costs a fraction of SHA-256 (AES and carry-less multiplication in
// hardware): see docs/security.md, "Token cache keys".
var digestAEAD = func() cipher.AEAD {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		panic("tokens: random digest key: " + err.Error())
	}
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic("tokens: digest key: " + err.Error())
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic("tokens: digest key: " + err.Error())
	}
	return a
}()

// NameSize is the length of a token's cache name: one GMAC tag.
const NameSize = 16

// Name is the cache's name of a token (see DigestTo).
type Name = [NameSize]byte

// digestNonce is fixed: the tags are never published, only compared, so
// the nonce need not vary (GMAC's nonce guards tags an attacker sees).
var digestNonce [12]byte

// Digest is the cache's name of a token (see DigestTo). The cache never
// holds the token itself.
func Digest(token []byte) Name {
	var d Name
	DigestTo(&d, token)
	return d
}

// DigestTo writes the cache's name of token to d without allocating when
// d is already on the heap (e.g. in per-request scratch space).
func DigestTo(d *Name, token []byte) {
	digestAEAD.Seal(d[:0], digestNonce[:], nil, token)
}
