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
