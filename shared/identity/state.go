package identity

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"fmt"
	"hash"
	"strconv"
	"sync"
)

// IdentityMAC is a signer's HMAC-SHA256 state after the identity block
// (AppendIdentityBlock) of one identity: a proxy keeps one per cached token
// and per upstream key, and signing a request then hashes only the request
// tail. The state is as secret as the key. Safe for concurrent use.
type IdentityMAC struct {
	s *KeySigner
	// inner is the marshaled SHA-256 state after K^ipad and the identity
	// block, held in the struct (not behind a slice) so that a proxy that
	// keeps the struct in its cache entry reads it from the same memory.
	// Its length field is cut back to the last whole block: the block's
	// unhashed tail, the first nx bytes of its buffer field, is hashed
	// again with the request's tail (see AppendSignatureWith).
	inner [stateSize]byte
	nx    uint8
}

// stateSize is the length of a marshaled SHA-256 state (crypto/sha256's
// format: magic, the eight words, the block buffer, the length).
const stateSize = 4 + 32 + 64 + 8

// The offsets of a marshaled state's block buffer and length (big-endian
// bytes hashed so far).
const (
	stateBuf = 4 + 32
	stateLen = stateBuf + 64
)

// padStates returns the marshaled SHA-256 states after the HMAC key's inner
// and outer pads (RFC 2104).
func padStates(secret []byte) (inner, outer []byte) {
	k := secret
	if len(k) > sha256.BlockSize {
		s := sha256.Sum256(k)
		k = s[:]
	}
	var pad [sha256.BlockSize]byte
	state := func(x byte) []byte {
		for i := range pad {
			pad[i] = x
			if i < len(k) {
				pad[i] ^= k[i]
			}
		}
		h := sha256.New()
		h.Write(pad[:])
		b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			panic("identity: sha256 state: " + err.Error())
		}
		return b
	}
	return state(0x36), state(0x5c)
}

// NewIdentityMAC returns the state after the identity block of id under
// this signer's key.
func (s *KeySigner) NewIdentityMAC(id *Identity) *IdentityMAC {
	s.padOnce.Do(func() { s.ipad, s.opad = padStates(s.key.Secret) })
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(s.ipad); err != nil {
		panic("identity: sha256 state: " + err.Error())
	}
	h.Write(AppendIdentityBlock(make([]byte, 0, 256), s.key.ID, id))
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || len(b) != stateSize {
		panic(fmt.Sprintf("identity: sha256 state of %d bytes: %v", len(b), err))
	}
	m := &IdentityMAC{s: s}
	copy(m.inner[:], b)
	// The state is kept as of the last whole block, its buffered bytes
	// hashed again with each request's tail: one write of whole blocks
	// per request, where a state with a part-filled buffer takes two
	// (the buffer's block, then the tail's), each a pass of the block
	// function's setup (TestIdentityMACMatchesAppendSignature checks the value).
	n := binary.BigEndian.Uint64(m.inner[stateLen:])
	m.nx = uint8(n % sha256.BlockSize)
	binary.BigEndian.PutUint64(m.inner[stateLen:], n-uint64(m.nx))
	return m
}

// Signer is the signer the state belongs to.
func (m *IdentityMAC) Signer() *KeySigner { return m.s }

// MACScratch is the working memory of signing one request's tail: a
// caller that signs one request at a time (a proxy's per-request state)
// keeps one and passes it to AppendSignatureWith; the zero value is ready.
// Not safe for concurrent use.
type MACScratch struct {
	h    hash.Hash
	u    encoding.BinaryUnmarshaler
	tail []byte
	sum  []byte
	// ts is the decimal form of the timestamp tsOf: kept from one
	// request to the next, as many are signed within one millisecond.
	ts   []byte
	tsOf int64
}

// Timestamp is the decimal X-Auth-Timestamp of the request last signed
// with t: AppendSignatureWith formats it for the request tail, so the
// header that carries it need not format it again.
func (t *MACScratch) Timestamp() []byte { return t.ts }

var tailStates = sync.Pool{New: func() any { return new(MACScratch) }}

// AppendSignature appends the X-Auth-Signature value for r and the
// identity m was made for: the same value as KeySigner.AppendSignature.
func (m *IdentityMAC) AppendSignature(dst []byte, r *Request) []byte {
	t := tailStates.Get().(*MACScratch)
	dst = m.AppendSignatureWith(dst, r, t)
	if cap(t.tail) <= 64<<10 {
		tailStates.Put(t)
	}
	return dst
}

// AppendSignatureWith is AppendSignature with the caller's scratch memory.
func (m *IdentityMAC) AppendSignatureWith(dst []byte, r *Request, t *MACScratch) []byte {
	if t.h == nil {
		t.h = sha256.New()
		t.u = t.h.(encoding.BinaryUnmarshaler)
		t.tail, t.sum = make([]byte, 0, 512), make([]byte, 0, sha256.Size)
	}
	if err := t.u.UnmarshalBinary(m.inner[:]); err != nil {
		panic("identity: sha256 state: " + err.Error())
	}
	if r.Timestamp != t.tsOf || len(t.ts) == 0 {
		t.setTimestamp(r.Timestamp)
	}
	t.tail = append(t.tail[:0], m.inner[stateBuf:stateBuf+int(m.nx)]...) // the identity block's unhashed end
	t.tail = appendTailAfterTimestamp(append(t.tail, t.ts...), r)        // AppendRequestTail
	t.h.Write(t.tail)
	t.sum = t.h.Sum(t.sum[:0])
	if err := t.u.UnmarshalBinary(m.s.opad); err != nil {
		panic("identity: sha256 state: " + err.Error())
	}
	t.h.Write(t.sum)
	t.sum = t.h.Sum(t.sum[:0])
	dst = append(dst, VersionV2...)
	dst = append(dst, '=')
	return appendSig(dst, (*[sha256.Size]byte)(t.sum))
}

// setTimestamp makes ts the decimal form of ms. A later millisecond than
// the one ts holds, the usual case, is added to ts's digits in place, which
// touches the last one or two of them; anything else is formatted afresh.
func (t *MACScratch) setTimestamp(ms int64) {
	if d := ms - t.tsOf; len(t.ts) > 0 && t.tsOf >= 0 && d > 0 && d < 1e9 {
		for i := len(t.ts) - 1; i >= 0; i-- {
			v := int64(t.ts[i]-'0') + d
			t.ts[i], d = '0'+byte(v%10), v/10
			if d == 0 {
				t.tsOf = ms
				return
			}
		}
		// A carry out of the first digit: one digit more.
	}
	t.ts, t.tsOf = strconv.AppendInt(t.ts[:0], ms, 10), ms
}

// appendSig appends sum in unpadded base64url (base64.RawURLEncoding's
// output, TestAppendSig), unrolled for the one length it has: the
// library's loop costs several times as much per request. Six bytes at a
// time become eight characters stored as one word (two sigQuads), then
// the last two bytes three characters.
func appendSig(dst []byte, sum *[sha256.Size]byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, sigLen)...)
	out := (*[sigLen]byte)(dst[n:])
	for i := range sha256.Size / 6 { // 5 groups of 6 bytes: 40 characters
		// The word's low two bytes are the next group's (or, for the
		// last, the sum's last two): sigQuad does not read them.
		v := binary.BigEndian.Uint64(sum[6*i:])
		binary.LittleEndian.PutUint64(out[8*i:], sigQuad(v)|sigQuad(v<<24)<<32)
	}
	v := uint(sum[30])<<16 | uint(sum[31])<<8 // the last 2 bytes: 3 characters
	out[40] = sigAlphabet[v>>18&63]
	out[41] = sigAlphabet[v>>12&63]
	out[42] = sigAlphabet[v>>6&63]
	return dst
}

// sigAlphabet is base64url's.
const sigAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// sigQuad is the four base64url characters of the three bytes at the top
// of v (big-endian), as the low four bytes of a little-endian word, the
// first character lowest (TestSigQuad). Small enough to be inlined.
func sigQuad(v uint64) uint64 {
	return uint64(sigAlphabet[v>>58&63]) | uint64(sigAlphabet[v>>52&63])<<8 |
		uint64(sigAlphabet[v>>46&63])<<16 | uint64(sigAlphabet[v>>40&63])<<24
}

// sigLen is the length of an encoded HMAC-SHA256 (unpadded base64url).
const sigLen = (sha256.Size*8 + 5) / 6
