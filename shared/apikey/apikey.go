// Package apikey holds what coreapi and the proxy share about API keys:
// the secret's format, its generation, and the internal routes (with their
// bodies) through which a proxy resolves a presented key and reports which
// keys were used.
//
// A key is "tg_" + 16 characters [a-z0-9] (the public id, which names the
// key) + "_" + 43 characters [A-Za-z0-9] (the secret part: 43·log2(62) ≈
// 256.03 bits from crypto/rand). Only coreapi can tell whether a secret is
// right: it stores an HMAC of the whole key under a pepper that never
// leaves it.
package apikey

import (
	"crypto/rand"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// Format.
const (
	Prefix      = "tg_"
	PublicIDLen = 16
	SecretLen   = 43
	// Len is the length of a whole key.
	Len = len(Prefix) + PublicIDLen + 1 + SecretLen
)

const (
	lower    = "abcdefghijklmnopqrstuvwxyz0123456789"
	alphanum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

// HasPrefix reports whether v starts with "tg_": a value meant as an API
// key (which may still fail Parse).
func HasPrefix(v []byte) bool {
	return len(v) >= len(Prefix) && v[0] == 't' && v[1] == 'g' && v[2] == '_'
}

// HeadLen is the length of a key's head: the prefix, the public id and
// the "_" after it.
const HeadLen = len(Prefix) + PublicIDLen + 1

// HasHead reports whether v starts as a key does: "tg_", a public id and
// "_", whatever follows (a key cut or mangled after its head is still one
// shown). HasPrefix alone says less: a 43-character base64url token, such
// as coreapi's one-time and refresh tokens, starts with "tg_" about once
// in 262,144, and with a key's head practically never.
func HasHead(v []byte) bool {
	if len(v) < HeadLen || !HasPrefix(v) || v[HeadLen-1] != '_' {
		return false
	}
	for _, c := range v[len(Prefix) : HeadLen-1] {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Parse checks the whole format of key and returns its public id (aliasing
// key). It reads at most Len bytes of a longer value.
func Parse(key []byte) (publicID []byte, ok bool) {
	if len(key) != Len || !HasPrefix(key) || key[len(Prefix)+PublicIDLen] != '_' {
		return nil, false
	}
	id := key[len(Prefix) : len(Prefix)+PublicIDLen]
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return nil, false
		}
	}
	for _, c := range key[len(Prefix)+PublicIDLen+1:] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return nil, false
		}
	}
	return id, true
}

// ValidPublicID reports whether s is a well-formed public id.
func ValidPublicID(s string) bool {
	if len(s) != PublicIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// New returns a fresh key and its public id.
func New() (key, publicID string) {
	b := make([]byte, 0, Len)
	b = append(b, Prefix...)
	b = appendRandom(b, lower, PublicIDLen)
	b = append(b, '_')
	b = appendRandom(b, alphanum, SecretLen)
	return string(b), string(b[len(Prefix) : len(Prefix)+PublicIDLen])
}

// appendRandom appends n characters drawn uniformly from set (at most 256
// characters) by rejection sampling, so no character is more likely than
// another.
func appendRandom(dst []byte, set string, n int) []byte {
	limit := byte(256 - 256%len(set)) // bytes at or above it are rejected
	var buf [64]byte
	for n > 0 {
		// crypto/rand.Read never fails (Go 1.24+): it crashes the program
		// rather than return predictable bytes.
		_, _ = rand.Read(buf[:])
		for _, c := range buf {
			if n == 0 {
				break
			}
			if limit != 0 && c >= limit {
				continue
			}
			dst = append(dst, set[int(c)%len(set)])
			n--
		}
	}
	return dst
}

// Internal routes of coreapi that the proxy calls, signed like the
// projection route (identity.ProjectionPath) over the empty identity.
const (
	// ResolvePath: POST ResolveRequest → 200 Projection; 401 with problem
	// code invalid_token when the secret is wrong (a 401 with another code
	// refuses the caller's signature, not the key); 404 with problem code
	// api_key_unknown when no key has the public id; 410 with
	// api_key_revoked or api_key_expired when the secret is right but the
	// key is revoked or expired. Any other answer is coreapi's fault, or
	// another service's, and names no key.
	ResolvePath = "/internal/v1/api-keys/resolve"
	// UsedPath: POST UsedRequest → 204; records last_used_at (at most once
	// a minute per key, however many proxies report it).
	UsedPath = "/internal/v1/api-keys/used"
)

// ResolveRequest is the body of ResolvePath.
type ResolveRequest struct {
	Key string `json:"key"`
	// ClientIP is the address of the client whose request presented the
	// key, as the proxy would forward it (X-Auth-Client-Ip): the resolve is
	// the proxy's own call, whose signature names no client, so coreapi
	// learns it only here, for the audit row of a revoked key's use.
	// Empty: not known.
	ClientIP string `json:"client_ip,omitempty"`
}

// Projection is what a key may do now: its user's projection in its
// tenant (statuses, email, MFA state) whose Permissions are the key's own
// intersected with the user's current ones, and whose Roles are empty (a
// key holds permissions, not roles).
type Projection struct {
	identity.Projection
	KeyID    string `json:"key_id"`
	PublicID string `json:"public_id"`
	Kind     string `json:"kind"`
	// ExpiresAt is when the key stops working (nil: never).
	ExpiresAt *time.Time `json:"expires_at"`
}

// UsedRequest is the body of UsedPath: public ids of keys used since the
// last report.
type UsedRequest struct {
	Keys []string `json:"keys"`
}

// MaxUsedKeys bounds one UsedRequest.
const MaxUsedKeys = 1000
