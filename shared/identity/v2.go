package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-auth/tollgate/shared/secretfile"
)

// Header names added by identity headers v2 (the v1 names above keep their
// meaning).
const (
	HeaderKeyID         = "X-Auth-Key-Id"
	HeaderPrincipal     = "X-Auth-Principal"
	HeaderEmailVerified = "X-Auth-Email-Verified"
	HeaderAMR           = "X-Auth-Amr"
	HeaderAuthTime      = "X-Auth-Auth-Time"
	HeaderClientIP      = "X-Auth-Client-Ip"
	// HeaderRequestID is the request id the signature binds; it is the
	// ordinary request-id header, not an X-Auth-* one.
	HeaderRequestID = "X-Request-Id"
)

// VersionV2 prefixes the v2 canonical string and signature ("v2=...").
const VersionV2 = "v2"

// Principal kinds carried in X-Auth-Principal.
const (
	PrincipalUser      = "user"
	PrincipalAPIKey    = "api_key"
	PrincipalService   = "service"
	PrincipalAnonymous = "anonymous"
)

// EmptyBodySHA256 is the digest signed for a request without a body.
var EmptyBodySHA256 = sha256.Sum256(nil)

// Errors of the v2 verifier beyond those shared with v1.
var (
	ErrUnknownKey = errors.New("identity: unknown key id")
	ErrVersion    = errors.New("identity: unsupported signature version")
	ErrKeyID      = errors.New("identity: key id must be 1-64 of [A-Za-z0-9._-]")
	// ErrReplayed: a signature that verified, but was accepted before
	// within its window (the same request sent again). Verify never
	// returns it; the replay filters do (package replay, used by coreapi
	// and the verify and fiberid middlewares).
	ErrReplayed = errors.New("identity: signature already used")
)

// Key is one named HMAC key. Every upstream has its own: an app's key can
// sign nothing that coreapi (which holds only the core key) accepts.
type Key struct {
	ID     string
	Secret []byte
}

// String hides the secret.
func (k Key) String() string { return k.ID + ":***" }

// ValidKeyID reports whether id may name a key: 1 to 64 bytes of
// [A-Za-z0-9._-], so it never needs escaping in a header or the canonical
// string.
func ValidKeyID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ParseKeys parses a key list: entries "id:base64" separated by commas,
// spaces or newlines (a mounted Secret may hold one per line). The first
// entry is the one a signer uses; verifiers accept them all. Ids must be
// unique.
func ParseKeys(text string) ([]Key, error) {
	fields := strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
	if len(fields) == 0 {
		return nil, errors.New("identity keys: empty")
	}
	keys := make([]Key, 0, len(fields))
	seen := map[string]bool{}
	for i, f := range fields {
		id, secret, ok := strings.Cut(f, ":")
		if !ok {
			return nil, fmt.Errorf("identity keys: entry %d: want id:base64", i+1)
		}
		if !ValidKeyID(id) {
			return nil, fmt.Errorf("identity keys: entry %d: %w", i+1, ErrKeyID)
		}
		// Errors name the entry by its position only: one written
		// backwards ("secret:id") has its URL-safe secret where the id
		// goes, and a message quoting the id printed it to the log.
		if seen[id] {
			return nil, fmt.Errorf("identity keys: entry %d: key id listed twice", i+1)
		}
		seen[id] = true
		b, err := ParseKey(secret)
		if err != nil {
			return nil, fmt.Errorf("identity keys: entry %d: %w", i+1, err)
		}
		keys = append(keys, Key{ID: id, Secret: b})
	}
	return keys, nil
}

// LoadKeys returns the key list from value if it is set, else from the file
// at path.
func LoadKeys(value, path string) ([]Key, error) {
	switch {
	case value != "" && path != "":
		return nil, errors.New("identity keys: set either the keys or the keys file, not both")
	case value != "":
		return ParseKeys(value)
	case path != "":
		b, err := secretfile.Read(path)
		if err != nil {
			return nil, fmt.Errorf("identity keys: %w", err)
		}
		return ParseKeys(string(b))
	}
	return nil, errors.New("identity keys: not configured")
}

// Request is the per-request tail of the v2 canonical string: what binds a
// signature to one request.
type Request struct {
	Timestamp  int64  // unix milliseconds
	RequestID  string // the forwarded X-Request-Id
	ClientIP   string // the forwarded X-Auth-Client-Ip
	Method     string
	PathQuery  string // the forwarded path and query, exactly as sent
	BodySHA256 [sha256.Size]byte
}

// BoolString renders X-Auth-Email-Verified.
func BoolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// MaxAuthTime is the largest X-Auth-Auth-Time a verifier accepts: 2^53-1,
// the largest integer a JavaScript number (JSON's, Node's) holds exactly.
// Above it the Node verifier read another number than the one signed, so
// both refuse it (ErrMalformed); no real sign-in is that late. The signer
// (FormatAuthTime, AppendIdentityBlock, EachHeader) leaves a later one out.
const MaxAuthTime = 1<<53 - 1

// signedAuthTime reports whether t is an auth time the signer writes:
// positive and at most MaxAuthTime. Any other is left out (the header and
// the canonical field empty: unknown), so the signer never produces an
// X-Auth-Auth-Time a verifier refuses as malformed.
func signedAuthTime(t int64) bool { return t > 0 && t <= MaxAuthTime }

// FormatAuthTime renders X-Auth-Auth-Time: unix seconds, or "" when
// unknown (t <= 0) or past what a verifier reads (t > MaxAuthTime), as
// AppendIdentityBlock signs it.
func FormatAuthTime(t int64) string {
	if !signedAuthTime(t) {
		return ""
	}
	return strconv.FormatInt(t, 10)
}

// AppendIdentityBlock appends the identity block of the v2 canonical string:
// "v2\n" and the ten identity fields, each followed by '\n'. It depends only
// on the key and the identity, so a proxy can keep the HMAC state after it
// per cached token and hash only the request tail.
func AppendIdentityBlock(dst []byte, keyID string, id *Identity) []byte {
	dst = append(dst, VersionV2...)
	dst = append(dst, '\n')
	dst = append(append(dst, keyID...), '\n')
	dst = append(append(dst, id.Principal...), '\n')
	dst = append(append(dst, id.UserID...), '\n')
	dst = append(append(dst, id.TenantID...), '\n')
	dst = append(append(dst, id.SessionID...), '\n')
	dst = append(AppendList(dst, id.Roles), '\n')
	dst = append(AppendList(dst, id.Permissions), '\n')
	dst = append(append(dst, BoolString(id.EmailVerified)...), '\n')
	dst = append(AppendList(dst, id.AMR), '\n')
	if signedAuthTime(id.AuthTime) {
		dst = strconv.AppendInt(dst, id.AuthTime, 10)
	}
	return append(dst, '\n')
}

// AppendRequestTail appends the request tail of the v2 canonical string:
// timestamp, request id, client IP, method, path+query and the lower-case hex
// SHA-256 of the body, separated by '\n', with no final newline.
func AppendRequestTail(dst []byte, r *Request) []byte {
	return appendTailAfterTimestamp(strconv.AppendInt(dst, r.Timestamp, 10), r)
}

// appendTailAfterTimestamp appends the request tail from the newline
// after the timestamp on.
//
// A proxy signs every request's tail: it is sized once and written in
// place, each separator a byte stored and each field one copy
// (TestRequestTailSizedOnce), where an append per part paid a copy call
// and a capacity check for each one-byte separator too.
func appendTailAfterTimestamp(dst []byte, r *Request) []byte {
	n, size := len(dst), 5+len(r.RequestID)+len(r.ClientIP)+len(r.Method)+len(r.PathQuery)+hex.EncodedLen(sha256.Size)
	dst = slices.Grow(dst, size)[:n+size]
	b := dst[n:]
	b[0] = '\n'
	i := 1 + copy(b[1:], r.RequestID)
	b[i] = '\n'
	i += 1 + copy(b[i+1:], r.ClientIP)
	b[i] = '\n'
	i += 1 + copy(b[i+1:], r.Method)
	b[i] = '\n'
	i += 1 + copy(b[i+1:], r.PathQuery)
	b[i] = '\n'
	if emptyBody(&r.BodySHA256) { // most requests: no body
		copy(b[i+1:], emptyBodyHex)
	} else {
		hex.Encode(b[i+1:], r.BodySHA256[:])
	}
	return dst
}

// emptyBody reports whether sum is EmptyBodySHA256, a word at a time: the
// arrays' comparison is a call.
func emptyBody(sum *[sha256.Size]byte) bool {
	e := &EmptyBodySHA256
	le := binary.LittleEndian
	return le.Uint64(sum[0:]) == le.Uint64(e[0:]) && le.Uint64(sum[8:]) == le.Uint64(e[8:]) &&
		le.Uint64(sum[16:]) == le.Uint64(e[16:]) && le.Uint64(sum[24:]) == le.Uint64(e[24:])
}

// AppendParts appends each of parts. A proxy writes its per-request
// header lines and signing tails with it: one short loop instead of an
// inlined append (and its growth check) per name, separator and value, so
// the code each request runs, and fetches anew when other processes have
// evicted it, is smaller.
func AppendParts(dst []byte, parts ...string) []byte {
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}

// emptyBodyHex is the hex SHA-256 of an empty body.
var emptyBodyHex = hex.EncodeToString(EmptyBodySHA256[:])

// AppendCanonicalV2 appends the whole v2 canonical string.
func AppendCanonicalV2(dst []byte, keyID string, id *Identity, r *Request) []byte {
	return AppendRequestTail(AppendIdentityBlock(dst, keyID, id), r)
}

// KeySigner signs v2 identity headers with one key and verifies them against
// it. It is safe for concurrent use.
type KeySigner struct {
	key  Key
	macs sync.Pool // of *macState
	// The SHA-256 states after the key's HMAC pads, for IdentityMAC.
	padOnce    sync.Once
	ipad, opad []byte
}

// NewKeySigner returns a signer for k.
func NewKeySigner(k Key) (*KeySigner, error) {
	if !ValidKeyID(k.ID) {
		return nil, ErrKeyID
	}
	if len(k.Secret) < MinKeyLen {
		return nil, ErrShortKey
	}
	s := &KeySigner{key: Key{ID: k.ID, Secret: append([]byte(nil), k.Secret...)}}
	s.macs.New = func() any {
		return &macState{h: hmac.New(sha256.New, s.key.Secret), canon: make([]byte, 0, 512), sum: make([]byte, 0, sha256.Size)}
	}
	return s, nil
}

// KeyID is the id sent in X-Auth-Key-Id.
func (s *KeySigner) KeyID() string { return s.key.ID }

// NewMAC returns a fresh HMAC-SHA256 keyed with this signer's secret, for
// callers that keep hash state (see AppendIdentityBlock).
func (s *KeySigner) NewMAC() hash.Hash { return hmac.New(sha256.New, s.key.Secret) }

func (s *KeySigner) mac(dst []byte, id *Identity, r *Request) []byte {
	m := s.macs.Get().(*macState)
	if n := canonicalLenV2(s.key.ID, id, r); cap(m.canon) < n {
		// One allocation of the size needed: appended field by field, a
		// canonical string of large headers cost twice its size.
		m.canon = make([]byte, 0, n)
	}
	m.canon = AppendCanonicalV2(m.canon[:0], s.key.ID, id, r)
	m.h.Reset()
	m.h.Write(m.canon)
	m.sum = m.h.Sum(m.sum[:0])
	dst = append(dst, m.sum...)
	if cap(m.canon) <= 64<<10 {
		s.macs.Put(m)
	}
	return dst
}

// canonicalLenV2 is the length of AppendCanonicalV2's string, at most: a
// timestamp is counted at its longest.
func canonicalLenV2(keyID string, id *Identity, r *Request) int {
	n := len(VersionV2) + len(keyID) + len(id.Principal) + len(id.UserID) + len(id.TenantID) + len(id.SessionID) +
		len("false") + len("9007199254740991") + len("-9223372036854775808") + len(r.RequestID) + len(r.ClientIP) +
		len(r.Method) + len(r.PathQuery) + 2*sha256.Size + 16
	for _, l := range [...][]string{id.Roles, id.Permissions, id.AMR} {
		for _, v := range l {
			n += len(v) + 1
		}
	}
	return n
}

// AppendSignature appends the X-Auth-Signature value ("v2=" +
// base64url(HMAC)) for the identity and request to dst.
func (s *KeySigner) AppendSignature(dst []byte, id *Identity, r *Request) []byte {
	var sum [sha256.Size]byte
	dst = append(dst, VersionV2...)
	dst = append(dst, '=')
	return base64.RawURLEncoding.AppendEncode(dst, s.mac(sum[:0], id, r))
}

// Sign returns the X-Auth-Signature value for the identity and request.
func (s *KeySigner) Sign(id *Identity, r *Request) string {
	var buf [64]byte
	return string(s.AppendSignature(buf[:0], id, r))
}

// Verifier checks v2 signatures against a list of keys (current and
// retired ones during a rotation) within a timestamp window.
type Verifier struct {
	keys   map[string]*KeySigner
	window time.Duration
}

// NewVerifier returns a verifier accepting signatures made with any of keys.
// window <= 0 selects DefaultWindow.
func NewVerifier(keys []Key, window time.Duration) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("identity: no verification keys")
	}
	if window <= 0 {
		window = DefaultWindow
	}
	v := &Verifier{keys: make(map[string]*KeySigner, len(keys)), window: window}
	// Keys are named by position, never by id: an entry written
	// backwards has its secret where the id goes (see ParseKeys).
	for i, k := range keys {
		s, err := NewKeySigner(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		if _, dup := v.keys[k.ID]; dup {
			return nil, fmt.Errorf("key %d: key id listed twice", i+1)
		}
		v.keys[k.ID] = s
	}
	return v, nil
}

// Window is the accepted timestamp skew.
func (v *Verifier) Window() time.Duration { return v.window }

// Headers reads one request header by its canonical name; "" when absent.
// net/http's Header.Get and a fasthttp Peek wrapper both fit.
type Headers func(name string) string

// Verify checks the v2 identity headers of one request at time now and
// returns the identity they assert. method, pathQuery and bodySHA256 are
// the request as received; the request id and client IP come from the
// headers. It returns an error (one of the package's sentinels) unless the
// signature is authentic under one of the verifier's keys, the timestamp
// lies within the window and the request carries a request id
// (ErrMalformed without one).
func (v *Verifier) Verify(now time.Time, get Headers, method, pathQuery string, bodySHA256 [sha256.Size]byte) (Identity, error) {
	sig, ts := get(HeaderSignature), get(HeaderTimestamp)
	if sig == "" || ts == "" {
		return Identity{}, ErrMissing
	}
	if !strings.HasPrefix(sig, VersionV2+"=") {
		if strings.HasPrefix(sig, Version+"=") {
			return Identity{}, ErrVersion
		}
		return Identity{}, ErrMalformed
	}
	var got [sha256.Size]byte
	enc := sig[len(VersionV2)+1:]
	if base64.RawURLEncoding.DecodedLen(len(enc)) != sha256.Size {
		return Identity{}, ErrMalformed
	}
	// Strict: the last character's two unused bits are zero, else four
	// header values would carry one signature.
	if n, err := strictSig.Decode(got[:], []byte(enc)); err != nil || n != sha256.Size {
		return Identity{}, ErrMalformed
	}
	// The canonical string holds the header's bytes, written here from
	// the number: only its one spelling (no sign, no leading zero) is that.
	tsv, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || tsv <= 0 || len(ts) > 16 || ts[0] == '+' || ts[0] == '0' {
		return Identity{}, ErrMalformed
	}
	signer, ok := v.keys[get(HeaderKeyID)]
	if !ok {
		return Identity{}, ErrUnknownKey
	}
	// The lists are hashed as the headers hold them and split only once
	// the signature verified: split first, a forged request's header of
	// commas cost sixteen bytes of slice per byte sent.
	roles, perms, amr := get(HeaderRoles), get(HeaderPermissions), get(HeaderAMR)
	id := Identity{
		Principal: get(HeaderPrincipal),
		UserID:    get(HeaderUserID),
		TenantID:  get(HeaderTenantID),
		SessionID: get(HeaderSessionID),
	}
	switch get(HeaderEmailVerified) {
	case "true":
		id.EmailVerified = true
	case "false":
	default:
		return Identity{}, ErrMalformed
	}
	if at := get(HeaderAuthTime); at != "" {
		if id.AuthTime, err = strconv.ParseInt(at, 10, 64); err != nil || id.AuthTime <= 0 || id.AuthTime > MaxAuthTime || len(at) > 16 || at[0] == '+' || at[0] == '0' {
			return Identity{}, ErrMalformed
		}
	}
	switch id.Principal {
	case PrincipalUser, PrincipalAPIKey, PrincipalService, PrincipalAnonymous:
	default:
		return Identity{}, ErrMalformed
	}
	r := Request{Timestamp: tsv, RequestID: get(HeaderRequestID), ClientIP: get(HeaderClientIP), Method: method, PathQuery: pathQuery, BodySHA256: bodySHA256}
	// The request id is what makes the signatures of two identical
	// requests differ; a signer that sends none cannot be told from a
	// replay. The proxy always sends one.
	// signed is the identity as hashed: its lists the headers' values
	// (kept apart from id, which is returned, so that raw stays on the
	// stack).
	var raw [3][1]string
	signed := id
	signed.Roles, signed.Permissions, signed.AMR = asSigned(&raw[0], roles), asSigned(&raw[1], perms), asSigned(&raw[2], amr)
	if r.RequestID == "" || hasNewlineV2(&signed, &r) {
		return Identity{}, ErrMalformed
	}
	skew := now.UnixMilli() - tsv
	if w := v.window.Milliseconds(); skew > w || -skew > w {
		return Identity{}, ErrExpired
	}
	var sum [sha256.Size]byte
	if !hmac.Equal(signer.mac(sum[:0], &signed, &r), got[:]) {
		return Identity{}, ErrSignature
	}
	id.Roles, id.Permissions, id.AMR = splitLists(roles, perms, amr)
	id.KeyID = signer.key.ID
	return id, nil
}

// splitLists is SplitList of each of the three lists, in one allocation:
// each list is a slice of one array, its capacity cut at its end so that
// an append to one cannot write over the next.
func splitLists(roles, perms, amr string) (r, p, a []string) {
	n := 0
	for _, l := range [...]string{roles, perms, amr} {
		if l != "" {
			n += strings.Count(l, ",") + 1
		}
	}
	if n == 0 {
		return nil, nil, nil
	}
	buf := make([]string, 0, n)
	var out [3][]string
	for i, l := range [...]string{roles, perms, amr} {
		if l == "" {
			continue
		}
		start := len(buf)
		for {
			v, rest, more := strings.Cut(l, ",")
			buf = append(buf, v)
			if !more {
				break
			}
			l = rest
		}
		out[i] = buf[start:len(buf):len(buf)]
	}
	return out[0], out[1], out[2]
}

// asSigned returns list, a header's comma-joined list, as the one-element
// list that AppendList writes as it is (nil when empty), in the array at
// one.
func asSigned(one *[1]string, list string) []string {
	if list == "" {
		return nil
	}
	one[0] = list
	return one[:]
}

// hasNewlineV2 reports whether a field holds CR or LF, or a list (as
// asSigned holds it: the header's value) an empty element.
func hasNewlineV2(id *Identity, r *Request) bool {
	for _, s := range [...]string{id.Principal, id.UserID, id.TenantID, id.SessionID, r.RequestID, r.ClientIP, r.Method, r.PathQuery} {
		if strings.ContainsAny(s, "\n\r") {
			return true
		}
	}
	for _, l := range [...][]string{id.Roles, id.Permissions, id.AMR} {
		for _, v := range l {
			if v == "" || v[0] == ',' || v[len(v)-1] == ',' || strings.Contains(v, ",,") || strings.ContainsAny(v, "\n\r") {
				return true
			}
		}
	}
	return false
}

// strictSig decodes the signature of X-Auth-Signature: base64url without
// padding, refusing what an encoder never writes.
var strictSig = base64.RawURLEncoding.Strict()

// Reason names a verification error for logs and metrics: missing,
// malformed, expired, signature, unknown_key, version or replay
// (ErrReplayed). Anything else is malformed.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrMissing):
		return "missing"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrSignature):
		return "signature"
	case errors.Is(err, ErrUnknownKey):
		return "unknown_key"
	case errors.Is(err, ErrVersion):
		return "version"
	case errors.Is(err, ErrReplayed):
		return "replay"
	}
	return "malformed"
}
