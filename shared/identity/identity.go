// Package identity is the contract between authproxy and coreapi: the names
// of the forwarded identity headers, the canonical string they are signed
// over, HMAC-SHA256 signing and verification with a bounded timestamp
// window, and the auth projection the proxy caches per (user, tenant).
//
// The proxy strips every client-sent header whose name starts with
// "x-auth-" (see IsIdentityHeader) and then adds the headers below, signed
// with a key shared by the two containers of a pod. coreapi trusts them only
// after Verify succeeds; it never parses a JWT.
package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header names of the identity contract.
const (
	HeaderUserID      = "X-Auth-User-Id"
	HeaderTenantID    = "X-Auth-Tenant-Id"
	HeaderSessionID   = "X-Auth-Session-Id"
	HeaderRoles       = "X-Auth-Roles"
	HeaderPermissions = "X-Auth-Permissions"
	HeaderTimestamp   = "X-Auth-Timestamp"
	HeaderSignature   = "X-Auth-Signature"
)

// Version is the signature scheme version; it prefixes both the canonical
// string and the signature header value ("v1=...").
const Version = "v1"

// DefaultWindow is how old (or how far in the future) a signed timestamp may
// be before Verify rejects it.
const DefaultWindow = 30 * time.Second

// MinKeyLen is the shortest HMAC key accepted by NewSigner.
const MinKeyLen = 32

// Errors returned by Verify. All of them mean "treat the request as
// unauthenticated"; they are distinct so that logs and metrics can tell a
// clock problem from a forgery.
var (
	ErrMissing   = errors.New("identity: missing signature or timestamp")
	ErrMalformed = errors.New("identity: malformed signature or timestamp")
	ErrExpired   = errors.New("identity: timestamp outside the accepted window")
	ErrSignature = errors.New("identity: signature mismatch")
	ErrShortKey  = errors.New("identity: key shorter than 32 bytes")
)

// Identity is what the proxy asserts about the caller of one request. An
// empty Identity (all fields zero) is used to authenticate the proxy's own
// calls to coreapi's internal endpoints.
type Identity struct {
	// Principal is the kind of caller (PrincipalUser, ...); v2 only.
	Principal   string
	UserID      string
	TenantID    string
	SessionID   string
	Roles       []string
	Permissions []string
	// EmailVerified, AMR (authentication methods, e.g. "pwd", "otp") and
	// AuthTime (unix seconds of the sign-in; 0 unknown) are v2 only.
	EmailVerified bool
	AMR           []string
	AuthTime      int64
	// KeyID is set by Verifier.Verify to the id of the key that verified
	// the signature; it is not part of what a signer is given.
	KeyID string
}

// Has reports whether the identity carries the permission p.
func (id Identity) Has(p string) bool { return slices.Contains(id.Permissions, p) }

// Signer signs and verifies identity headers with one HMAC key.
type Signer struct {
	key    []byte
	window time.Duration
	macs   sync.Pool // of *macState; hmac.New allocates ~1 KB
}

// macState is a pooled HMAC with a buffer for the canonical string, so
// signing and verifying do not allocate.
type macState struct {
	h     hash.Hash
	canon []byte
	sum   []byte
}

// NewSigner returns a Signer for key. window <= 0 selects DefaultWindow.
func NewSigner(key []byte, window time.Duration) (*Signer, error) {
	if len(key) < MinKeyLen {
		return nil, ErrShortKey
	}
	if window <= 0 {
		window = DefaultWindow
	}
	k := make([]byte, len(key))
	copy(k, key)
	s := &Signer{key: k, window: window}
	s.macs.New = func() any {
		return &macState{h: hmac.New(sha256.New, s.key), canon: make([]byte, 0, 512), sum: make([]byte, 0, sha256.Size)}
	}
	return s, nil
}

// mac appends the HMAC of the canonical string of the arguments to dst.
func (s *Signer) mac(dst []byte, ts int64, method, pathQuery string, id Identity) []byte {
	m := s.macs.Get().(*macState)
	m.canon = AppendCanonical(m.canon[:0], ts, method, pathQuery, id)
	m.h.Reset()
	m.h.Write(m.canon)
	m.sum = m.h.Sum(m.sum[:0])
	dst = append(dst, m.sum...)
	if cap(m.canon) <= 64<<10 { // don't keep huge buffers from odd requests
		s.macs.Put(m)
	}
	return dst
}

// AppendCanonical appends the canonical string for the given values to dst.
// Fields are separated by '\n'; the lists are joined with ','. None of the
// values may contain '\n' (Sign and Verify enforce it), so the encoding is
// unambiguous.
func AppendCanonical(dst []byte, ts int64, method, pathQuery string, id Identity) []byte {
	dst = append(dst, Version...)
	dst = append(dst, '\n')
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, '\n')
	dst = append(dst, method...)
	dst = append(dst, '\n')
	dst = append(dst, pathQuery...)
	dst = append(dst, '\n')
	dst = append(dst, id.UserID...)
	dst = append(dst, '\n')
	dst = append(dst, id.TenantID...)
	dst = append(dst, '\n')
	dst = append(dst, id.SessionID...)
	dst = append(dst, '\n')
	dst = AppendList(dst, id.Roles)
	dst = append(dst, '\n')
	dst = AppendList(dst, id.Permissions)
	return dst
}

// AppendList appends list as JoinList renders it: its values joined by
// commas.
func AppendList(dst []byte, list []string) []byte {
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, s...)
	}
	return dst
}

// JoinList renders a role or permission list as it travels in a header.
func JoinList(list []string) string { return strings.Join(list, ",") }

// AppendHeaderLine appends the HTTP/1.1 header line "name: value\r\n": a
// proxy writes known-clean identity headers (no CR or LF in name or value)
// as ready-made lines.
func AppendHeaderLine(dst []byte, name, value string) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// SplitList parses a header list; the empty string is the empty list.
func SplitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// Sign returns the X-Auth-Signature value ("v1=" + base64url(HMAC)) for the
// request described by the arguments, timestamped ts (unix milliseconds).
func (s *Signer) Sign(ts int64, method, pathQuery string, id Identity) string {
	var buf [512]byte
	return string(s.AppendSignature(buf[:0], ts, method, pathQuery, id))
}

// AppendSignature is Sign appending to dst, for callers that avoid
// allocations on a hot path.
func (s *Signer) AppendSignature(dst []byte, ts int64, method, pathQuery string, id Identity) []byte {
	var sum [sha256.Size]byte
	dst = append(dst, Version...)
	dst = append(dst, '=')
	return base64.RawURLEncoding.AppendEncode(dst, s.mac(sum[:0], ts, method, pathQuery, id))
}

// Verify checks a signature and timestamp header pair (as received) against
// the request and identity values, at time now. It returns nil only when the
// signature is authentic and the timestamp lies within the window.
func (s *Signer) Verify(now time.Time, timestamp, signature, method, pathQuery string, id Identity) error {
	if timestamp == "" || signature == "" {
		return ErrMissing
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || ts <= 0 || len(timestamp) > 16 {
		return ErrMalformed
	}
	if !strings.HasPrefix(signature, Version+"=") {
		return ErrMalformed
	}
	enc := signature[len(Version)+1:]
	if base64.RawURLEncoding.DecodedLen(len(enc)) != sha256.Size {
		return ErrMalformed
	}
	var got [sha256.Size]byte
	if n, err := base64.RawURLEncoding.Decode(got[:], []byte(enc)); err != nil || n != sha256.Size {
		return ErrMalformed
	}
	if hasNewline(method, pathQuery, id) {
		return ErrMalformed
	}
	skew := now.UnixMilli() - ts
	if skew > s.window.Milliseconds() || -skew > s.window.Milliseconds() {
		return ErrExpired
	}
	var sum [sha256.Size]byte
	if !hmac.Equal(s.mac(sum[:0], ts, method, pathQuery, id), got[:]) {
		return ErrSignature
	}
	return nil
}

func hasNewline(method, pathQuery string, id Identity) bool {
	if strings.ContainsAny(method, "\n\r") || strings.ContainsAny(pathQuery, "\n\r") ||
		strings.ContainsAny(id.UserID, "\n\r") || strings.ContainsAny(id.TenantID, "\n\r") ||
		strings.ContainsAny(id.SessionID, "\n\r") {
		return true
	}
	for _, l := range [][]string{id.Roles, id.Permissions} {
		for _, v := range l {
			if strings.ContainsAny(v, "\n\r,") {
				return true
			}
		}
	}
	return false
}

// IsIdentityHeader reports whether a header name, lower-cased and with '_'
// read as '-', starts with "x-auth-". Such headers are reserved for the
// proxy: any client-sent one is dropped. It does not allocate.
func IsIdentityHeader(name string) bool {
	const prefix = "x-auth-"
	if len(name) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c == '_' {
			c = '-'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}
