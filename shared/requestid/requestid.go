// Package requestid accepts a client's X-Request-Id when it is a sane token
// and otherwise generates one.
package requestid

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/tollgate-auth/tollgate/shared/safeid"
)

// Header is the request id header name.
const Header = "X-Request-Id"

// MaxLen is the longest client-supplied id that is kept.
const MaxLen = 128

// Valid reports whether s is acceptable as a request id: 1..MaxLen
// characters from [A-Za-z0-9._:-]. Anything else (spaces, quotes, control
// characters that could forge log lines) is replaced.
func Valid(s string) bool {
	return safeid.Valid(s, MaxLen)
}

// New returns a random 128-bit id, hex encoded.
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// From returns s if it is Valid, else a new id.
func From(s string) string {
	if Valid(s) {
		return s
	}
	return New()
}

// childRandom is how many random hex digits Child appends (64 bits).
const childRandom = 16

// Child returns a request id of its own for a call made on behalf of the
// request parent: parent (cut to fit MaxLen), "." and 64 random bits in
// hex, so logs and audit rows keyed by the call's id still lead to
// parent's. Two calls on behalf of requests that share an id (a client
// that reuses one) get different ids: the id is what makes the
// signatures of two identical signed calls differ. An empty or invalid
// parent gives a fresh id (New).
func Child(parent string) string {
	if !Valid(parent) {
		return New()
	}
	var b [childRandom / 2]byte
	_, _ = rand.Read(b[:])
	parent = parent[:min(len(parent), MaxLen-1-childRandom)]
	return parent + "." + hex.EncodeToString(b[:])
}
