// Package tokens verifies access tokens once and remembers the result.
//
// A verified token is cached under 64 bits of its digest (a keyed digest,
// see Digest), and the entry holds the full 32-byte digest, compared on
// every hit, so a 64-bit
// collision can never hand one token another's claims. The cache keeps
// every verified token it is given (no admission policy) and makes room by
// CLOCK eviction (see store); remembered refusals are held apart, in a
// smaller store, so refused tokens never push out valid ones. exp and nbf are re-checked on every hit, and so is the key: a
// token whose key left the key set is verified again (and fails). Bad
// tokens are remembered briefly (negative cache). Concurrent first sightings
// of one token share a single verification (singleflight).
//
// A direct-mapped table of entry pointers sits in front of the cache, so a
// warm token costs one atomic load and no admission-policy work; its
// entries obey the same checks (full digest, the entry's own expiry, exp,
// nbf, the key). An entry records its key, and callers may attach state
// derived from the token to it (SetAux), which lives and dies with it.
package tokens

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/tollgate-auth/tollgate/authproxy/internal/jwks"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/jwtclaims"
	"golang.org/x/sync/singleflight"
)

// Verification errors. All but ErrKeysUnavailable mean "invalid token".
var (
	ErrMalformed       = errors.New("token: malformed")
	ErrTooLarge        = errors.New("token: too large")
	ErrHeader          = errors.New("token: forbidden or malformed header")
	ErrType            = errors.New("token: typ is not at+jwt")
	ErrAlg             = errors.New("token: algorithm not allowed for this key")
	ErrKid             = errors.New("token: unknown or malformed kid")
	ErrSignature       = errors.New("token: bad signature")
	ErrIssuer          = errors.New("token: wrong issuer")
	ErrAudience        = errors.New("token: wrong audience")
	ErrExpired         = errors.New("token: expired")
	ErrNotYetValid     = errors.New("token: not yet valid")
	ErrIssuedInFuture  = errors.New("token: issued in the future")
	ErrLifetime        = errors.New("token: lifetime too long")
	ErrClaims          = errors.New("token: missing or malformed claims")
	ErrKeysUnavailable = errors.New("token: key set unavailable")
)

// errMalformedKid is ErrKid for a kid no key set can hold (jwks.ValidKid):
// unlike an unknown one, it is the token's fault for good.
var errMalformedKid = fmt.Errorf("%w: not a valid key id", ErrKid)

// Claims are the verified contents of an access token. They are shared by
// every request carrying the token: never modify them.
type Claims struct {
	Sub, Tid, Sid, Jti string
	TV                 int64
	Exp, Nbf, Iat      int64 // unix seconds; Nbf 0 when absent
	// AMR lists the authentication methods (amr claim; nil when absent)
	// and AuthTime is the auth_time claim (0 when absent); both travel in
	// the identity headers.
	AMR      []string
	AuthTime int64
	// Principal is identity.PrincipalUser, or identity.PrincipalService
	// for a client_credentials token of a service account (claim
	// "principal": "service"; such a token names no session, and Sid is
	// then its csid claim, the client secret it was obtained with, or ""
	// without one). Always one of the constants, never request memory.
	Principal string
	// Scope, when the token has a scope claim, narrows its permissions to
	// these (the space-separated claim, split); nil: no narrowing.
	Scope []string
	Key   *jwks.Key
}

// KeySource is the key set the verifier reads.
type KeySource interface {
	Lookup(ctx context.Context, kid string) (*jwks.Key, error)
	Current() *jwks.Set
}

// Options configure a Verifier.
type Options struct {
	Issuer, Audience string
	Algs             []string
	Leeway           time.Duration
	MaxLifetime      time.Duration
	MaxTokenBytes    int
	// CacheSize is the number of entries the cache holds (0: 100,000);
	// EntryCost the bytes charged for each (0: EntryBytes plus nothing
	// attached). The cache's budget is their product.
	CacheSize   int64
	EntryCost   int64
	MaxTTL      time.Duration // cap on a positive entry's TTL
	NegativeTTL time.Duration
	Now         func() time.Time
}

// Entry is one cached outcome: the claims of a verified token, or the error
// of a refused one. Shared by every request carrying the token: never
// modify it, except through SetAux.
type Entry struct {
	// What a hit reads first, together: the digest it compares, the
	// entry's own expiry and the claims every hit re-checks (copies of
	// the claims' exp, nbf, iat and key), so that a lookup does not also
	// fetch the claims from memory, a cache miss of its own once the
	// working set outgrows the CPU caches.
	digest        Name
	expires       int64 // unix nanos: the end of its time in the cache
	exp, nbf, iat int64
	key           *jwks.Key
	claims        *Claims // nil: negative entry
	err           error
	// aux is the caller's state (SetAux), always of one concrete type.
	aux  unsafe.Pointer
	ref  atomic.Uint32 // CLOCK mark: hit since the hand last passed
	slot int32         // in its store shard's ring
	// set is the key set the token's key was last found in: while it is
	// still the current set (sets are immutable), the key is still there.
	// In a refusal for the signature or the algorithm, the set it was
	// refused against: the refusal holds only while that set is current.
	set atomic.Pointer[jwks.Set]
}

// Claims are the entry's verified claims.
func (e *Entry) Claims() *Claims { return e.claims }

// Aux is what the caller attached with SetAux (nil when nothing): state
// derived from the token that lives and dies with its cache entry, as a
// pointer the caller converts back to its one concrete type.
func (e *Entry) Aux() unsafe.Pointer { return atomic.LoadPointer(&e.aux) }

// SetAux attaches p, a pointer to the caller's state (always of one
// concrete type, never modified once attached), to the entry. The front
// table's copy of it catches up at the entry's next hit (CachedAux).
func (e *Entry) SetAux(p unsafe.Pointer) { atomic.StorePointer(&e.aux, p) }

// NewEntry returns an entry for claims established elsewhere (an API key
// resolved by coreapi), never cached here: callers attach their state to
// it (SetAux) as to a cached token's.
func NewEntry(c *Claims) *Entry { return newEntry(nil, c, math.MaxInt64) }

// newEntry is the entry of a verified token with digest d (nil: none)
// and claims c, in the cache until expires (unix nanos).
func newEntry(d *Name, c *Claims, expires int64) *Entry {
	e := &Entry{claims: c, expires: expires, exp: c.Exp, nbf: c.Nbf, iat: c.Iat, key: c.Key}
	if d != nil {
		e.digest = *d
	}
	return e
}

// EntryBytes is the heap an entry of a verified token costs while cached:
// the entry, its claims and their strings, and the cache's bookkeeping for
// it (its share of the front table included: 2 to 4 slots of 16 bytes);
// state a caller attaches (SetAux) is on top. It is measured by
// TestEntryBytesMeasured, which fails when the real cost drifts from it.
const EntryBytes = 593

// The front table has at least hotPerEntry slots per entry the cache
// holds, a power of two, at most hotMax (two pointers, 16 bytes a slot).
// A working set of n tokens in m slots is served from it at about
// e^(-n/m) or better, the rest colliding in their slots and found in the
// cache's shards (a read lock, a map lookup and more memory touched):
// 61 % or more with the cache full, 83 % measured for 100,000 tokens at
// the default budget's 262,144 slots (51 % in the 65,536 slots it had
// when its size did not follow the cache's; BenchmarkWarmLookup).
const (
	hotPerEntry = 2
	hotMax      = 1 << 22
)

// Verifier verifies tokens and caches the outcome.
type Verifier struct {
	opt   Options
	algs  map[string]bool
	keys  KeySource
	cache *store // verified tokens
	negs  *store // remembered refusals
	// hot is a direct-mapped table in front of the cache, indexed by
	// digest bits: a hit there costs one atomic load and no lock. A slot
	// holds the entry of a verified token, put there when it was verified
	// or found in the cache, and emptied when the cache evicts it, so the
	// table keeps (but for a lookup racing an eviction) nothing alive
	// beyond the cache's budget; every hit
	// checks it as a cache hit is checked (its key still in the set, its
	// times).
	// It is sized from the cache (hotPerEntry), so that a working set
	// the cache holds is mostly served from it.
	hot  []hotSlot
	mask uint64
	sf   singleflight.Group
	m    *metrics.Metrics
	pos  metrics.CacheCounters
	neg  metrics.CacheCounters
	// issProbe is a part of the issuer JSON encoders write as it is (see
	// issuerProbe): a payload without it does not carry the issuer. Last,
	// out of the way of the fields a warm lookup reads.
	issProbe []byte
}

// New returns a Verifier; Close releases its cache.
func New(opt Options, keys KeySource, m *metrics.Metrics) (*Verifier, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.CacheSize <= 0 {
		opt.CacheSize = 100_000
	}
	if opt.EntryCost <= 0 {
		opt.EntryCost = EntryBytes
	}
	v := &Verifier{opt: opt, keys: keys, m: m, algs: map[string]bool{}, issProbe: []byte(issuerProbe(opt.Issuer)),
		pos: m.Cache(metrics.CacheToken), neg: m.Cache(metrics.CacheNegative)}
	for _, a := range opt.Algs {
		v.algs[a] = true
	}
	n := uint64(1)
	for n < hotPerEntry*uint64(opt.CacheSize) && n < hotMax {
		n <<= 1
	}
	v.hot, v.mask = make([]hotSlot, n), n-1
	v.cache = newStore(opt.CacheSize, v.pos.Evictions)
	v.cache.onEvict = func(e *Entry) { v.hotSlot(&e.digest).drop(e) }
	v.negs = newStore(max(opt.CacheSize/NegativeShare, storeShards), v.neg.Evictions)
	maxCost := func() int64 { return v.cache.capacity() * opt.EntryCost }
	m.CacheSize(metrics.CacheToken, opt.EntryCost, maxCost, func() int64 { return maxCost() - v.cache.len()*opt.EntryCost })
	negMax := func() int64 { return v.negs.capacity() * NegativeEntryBytes }
	m.CacheSize(metrics.CacheNegative, NegativeEntryBytes, negMax, func() int64 { return negMax() - v.negs.len()*NegativeEntryBytes })
	return v, nil
}

// NegativeShare sizes the store of remembered refusals: it holds at most
// 1/NegativeShare as many entries as the cache of verified tokens (at
// NegativeEntryBytes each, a few percent of the budget).
const NegativeShare = 16

// NegativeEntryBytes is the heap a remembered refusal costs (the entry and
// its store bookkeeping; no claims), measured by TestEntryBytesMeasured.
const NegativeEntryBytes = 185

// Close releases the caches.
func (v *Verifier) Close() {
	v.cache.clear()
	v.negs.clear()
}

// Cached looks up the token with digest d at time now. hit is false when
// the token must be verified (VerifyEntry); otherwise it returns the
// entry of a valid token, or the error of a refused one (a remembered
// failure, or the expiry found by re-checking the cached claims). A hit is
// only ever the outcome for the very token that was verified (the whole
// digest is compared), so a caller may skip its syntax checks on a hit.
func (v *Verifier) Cached(d *Name, now time.Time) (e *Entry, hit bool, err error) {
	e, _, hit, err = v.CachedAux(d, now)
	return e, hit, err
}

// CachedAux is Cached that also returns the entry's Aux. A warm request
// has it from the front-table slot, read together with the entry's
// pointer: the caller's loads through it need not wait for the entry's
// memory, which is checked meanwhile (the slot's copy is used only when
// it is the entry's current one).
func (v *Verifier) CachedAux(d *Name, now time.Time) (e *Entry, aux unsafe.Pointer, hit bool, err error) {
	slot := v.hotSlot(d)
	e, aux = slot.e.Load(), atomic.LoadPointer(&slot.aux)
	if e != nil && e.digest == *d {
		e.touch()
		if e.Aux() != aux {
			// A branch, not a conditional move: predicted not taken, the
			// caller's loads through aux start before e's memory arrives.
			aux = slot.catchUp(e)
		}
	} else if e = v.cache.get(d); e != nil {
		aux = slot.set(e)
	} else if e = v.negs.get(d); e == nil {
		return nil, nil, false, nil
	}
	live := now.UnixNano() < e.expires
	if e.claims == nil {
		if !live {
			return nil, nil, false, nil
		}
		if s := e.set.Load(); s != nil && s != v.keys.Current() {
			// Refused for its signature or algorithm against another
			// key set: a key replaced under its kid may verify it now.
			return nil, nil, false, nil
		}
		v.neg.Hits.Inc()
		return nil, nil, true, e.err
	}
	switch err := v.recheck(now, e); {
	case err == nil && live:
		v.pos.Hits.Inc()
		return e, aux, true, nil
	case err != nil && !errors.Is(err, ErrKid):
		// Expired or not yet valid: refused without a new verification.
		v.pos.Hits.Inc()
		return nil, nil, true, err
	}
	// The key left the set (a new verification will refuse the token), or
	// the entry's time in the cache is over.
	return nil, nil, false, nil
}

// Verify returns the claims of a valid token. token may alias request
// memory: it is not kept.
func (v *Verifier) Verify(ctx context.Context, token []byte) (*Claims, error) {
	if len(token) > v.opt.MaxTokenBytes {
		return nil, ErrTooLarge
	}
	d := Digest(token)
	e, hit, err := v.Cached(&d, v.opt.Now())
	if !hit {
		e, err = v.VerifyEntry(ctx, token, &d)
	}
	if err != nil {
		return nil, err
	}
	return e.claims, nil
}

// VerifyEntry verifies a token whose digest d missed the cache (Cached),
// caches the outcome, and returns the entry of a valid token. Concurrent
// calls for one token share one verification.
func (v *Verifier) VerifyEntry(ctx context.Context, token []byte, d *Name) (*Entry, error) {
	if len(token) > v.opt.MaxTokenBytes {
		return nil, ErrTooLarge
	}
	v.pos.Misses.Inc()
	res, err, _ := v.sf.Do(string(d[:]), func() (any, error) {
		// A caller that missed the cache while another's verification of
		// the token was in flight, and reached here after that one ended,
		// finds its outcome cached: it is not verified again.
		if e, hit, err := v.Cached(d, v.opt.Now()); hit {
			return e, err
		}
		// The set before the verification: if another becomes current
		// meanwhile, a refusal remembered against this one is not used.
		set := v.keys.Current()
		c, err := v.verify(ctx, token)
		now := v.opt.Now()
		switch {
		case err == nil:
			ttl := min(time.Unix(c.Exp, 0).Add(v.opt.Leeway).Sub(now), v.opt.MaxTTL)
			e := newEntry(d, c, now.Add(ttl).UnixNano())
			if ttl > 0 {
				v.remember(e, now)
			}
			return e, nil
		case errors.Is(err, ErrKeysUnavailable), errors.Is(err, ErrKid) && !errors.Is(err, errMalformedKid):
			// Not (necessarily) the token's fault: an unknown kid may be a
			// key coreapi has just started to use, known after the next
			// refetch. Do not remember. A malformed kid is remembered below:
			// it is part of the token, whose whole digest is the key.
		default:
			// Not put in the front table: refused tokens must not push
			// out the entries of valid ones there.
			if v.opt.NegativeTTL > 0 {
				ne := &Entry{digest: *d, err: err, expires: now.Add(v.opt.NegativeTTL).UnixNano()}
				if c != nil {
					// Not yet valid (the issuer's clock ahead of ours):
					// refused until it is, not for the whole TTL.
					ne.expires = min(ne.expires, v.validFrom(c))
				}
				if errors.Is(err, ErrSignature) || errors.Is(err, ErrAlg) {
					// Refusals that depend on the key material hold only
					// while this key set is current.
					ne.set.Store(set)
				}
				v.negs.put(ne, now.UnixNano())
			}
		}
		return nil, err
	})
	if err != nil {
		return nil, err
	}
	return res.(*Entry), nil
}

// remember caches the entry e of a verified token and puts it in its
// front-table slot; every hit re-checks the entry's own expiry.
func (v *Verifier) remember(e *Entry, now time.Time) {
	v.cache.put(e, now.UnixNano())
	v.hotSlot(&e.digest).set(e)
}

// hotSlot is the front-table slot of digest d.
func (v *Verifier) hotSlot(d *Name) *hotSlot {
	return &v.hot[binary.LittleEndian.Uint64(d[8:16])&v.mask]
}

// hotSlot is one slot of the front table: an entry and a copy of its Aux.
// The two words are written one after the other, not as a pair, so a
// reader may see one entry's pointer with another's (or an older) Aux:
// every hit compares the copy with the entry's own (CachedAux).
type hotSlot struct {
	e   atomic.Pointer[Entry]
	aux unsafe.Pointer // atomic
}

// set puts e in the slot and returns its Aux.
func (s *hotSlot) set(e *Entry) unsafe.Pointer {
	aux := e.Aux()
	s.e.Store(e)
	atomic.StorePointer(&s.aux, aux)
	return aux
}

// catchUp copies the Aux of e, found in the slot, to the slot after a
// SetAux, and returns it. Out of line: a warm request does not run it.
//
//go:noinline
func (s *hotSlot) catchUp(e *Entry) unsafe.Pointer {
	aux := e.Aux()
	atomic.StorePointer(&s.aux, aux)
	return aux
}

// drop empties the slot if it holds e (evicted from the cache), so that
// neither the entry nor its Aux is kept alive by the table.
func (s *hotSlot) drop(e *Entry) {
	if s.e.CompareAndSwap(e, nil) {
		atomic.StorePointer(&s.aux, nil)
	}
}

// recheck applies the time-dependent checks and the key-still-published
// check to the cached claims of e, from the copies the entry keeps; the
// key check is a pointer comparison while the key set is the one the key
// was last found in (sets are immutable).
func (v *Verifier) recheck(now time.Time, e *Entry) error {
	if err := v.checkTimes(now, e.exp, e.nbf, e.iat); err != nil {
		return err
	}
	s := v.keys.Current()
	if s != nil && s == e.set.Load() {
		return nil
	}
	if s == nil || e.key == nil || s.Keys[e.key.Kid] != e.key {
		return ErrKid
	}
	e.set.Store(s)
	return nil
}

// checkTimes checks exp, nbf and iat (unix seconds) with the leeway
// against now, in unix nanoseconds: integer comparisons, every hit runs
// them.
func (v *Verifier) checkTimes(now time.Time, exp, nbf, iat int64) error {
	n, lw := now.UnixNano(), int64(v.opt.Leeway)
	if n >= secNanos(exp, lw) {
		return ErrExpired
	}
	if nbf != 0 && n < secNanos(nbf, -lw) {
		return ErrNotYetValid
	}
	if n < secNanos(iat, -lw) {
		return ErrIssuedInFuture
	}
	return nil
}

// secNanos is unix second s plus off nanoseconds, in unix nanoseconds,
// saturated to the int64 range (a time past 2262 compares as the latest).
func secNanos(s, off int64) int64 {
	const lim = math.MaxInt64/int64(time.Second) - 1
	switch {
	case s > lim:
		return math.MaxInt64
	case s < -lim:
		return math.MinInt64
	}
	r := s * 1e9
	switch {
	case off > 0 && r > math.MaxInt64-off:
		return math.MaxInt64
	case off < 0 && r < math.MinInt64-off:
		return math.MinInt64
	}
	return r + off
}

// Ours reports whether token has the shape of an access token this proxy
// verifies: a JWS whose protected header parses as one of coreapi's (typ
// at+jwt) and that either names a key id of the current key set or,
// whatever its kid, carries the proxy's issuer in its iss claim: a token
// signed with a key that has left the set (rotated out after a leak) or
// that is not fetched yet is still ours. It verifies nothing (see Verify)
// and fetches nothing: it tells a token issued by coreapi from a third
// party's credentials, so that one of ours is kept from an upstream that
// does not need it.
func (v *Verifier) Ours(token []byte) bool {
	i := bytes.IndexByte(token, '.')
	if i <= 0 {
		return false
	}
	h, err := jwtclaims.ParseHeader(token[:i])
	if err != nil {
		return false
	}
	if jwks.ValidKid(h.Kid) {
		if set := v.keys.Current(); set != nil && set.Keys[h.Kid] != nil {
			return true
		}
	}
	return v.ourIssuer(token[i+1:])
}

// ourIssuer reports whether rest, a compact JWS after its header's dot,
// starts with a payload whose iss claim is the proxy's issuer. Nothing is
// verified: a forged token claiming the issuer counts too, and is as
// useless to an upstream as a genuine one.
//
//go:noinline
func (v *Verifier) ourIssuer(rest []byte) bool {
	if v.opt.Issuer == "" || v.opt.MaxTokenBytes > 0 && len(rest) > v.opt.MaxTokenBytes {
		return false
	}
	if j := bytes.IndexByte(rest, '.'); j >= 0 {
		rest = rest[:j]
	}
	b := make([]byte, base64.RawURLEncoding.DecodedLen(len(rest)))
	n, err := base64.RawURLEncoding.Decode(b, rest)
	if err != nil || len(v.issProbe) > 0 && !bytes.Contains(b[:n], v.issProbe) {
		// A third party's token, the usual case here, is told apart
		// without a JSON decoding.
		return false
	}
	var p struct {
		Iss string `json:"iss"`
	}
	return json.Unmarshal(b[:n], &p) == nil && p.Iss == v.opt.Issuer
}

// issuerProbe returns the longest run of the issuer between slashes (an
// encoder may write "/" as "\/"), or "" when the issuer has a character an
// encoder may escape otherwise (then every candidate payload is decoded).
func issuerProbe(iss string) string {
	var best string
	for _, part := range strings.Split(iss, "/") {
		for i := 0; i < len(part); i++ {
			if c := part[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return ""
			}
		}
		if len(part) > len(best) {
			best = part
		}
	}
	return best
}

// verify does the full check of a token not seen before. A token refused
// as not yet valid (ErrNotYetValid, ErrIssuedInFuture) comes with its
// claims, all else checked.
func (v *Verifier) verify(ctx context.Context, token []byte) (*Claims, error) {
	parts := bytes.Split(token, []byte{'.'})
	if len(parts) != 3 || len(parts[0]) == 0 || len(parts[1]) == 0 || len(parts[2]) == 0 {
		return nil, ErrMalformed
	}
	// One spelling per token, the signer's (the header's is checked by
	// ParseHeader): the JWS library would take the payload and signature
	// in other base64 spellings too.
	if !jwtclaims.CanonicalSegment(parts[1]) || !jwtclaims.CanonicalSegment(parts[2]) {
		return nil, ErrMalformed
	}
	h, err := jwtclaims.ParseHeader(parts[0])
	switch err {
	case nil:
	case jwtclaims.ErrHeaderParam:
		return nil, ErrHeader
	case jwtclaims.ErrType:
		return nil, ErrType
	default:
		return nil, ErrMalformed
	}
	if !v.algs[h.Alg] {
		return nil, ErrAlg
	}
	if !jwks.ValidKid(h.Kid) {
		return nil, errMalformedKid
	}
	key, err := v.keys.Lookup(ctx, h.Kid)
	switch {
	case errors.Is(err, jwks.ErrNotLoaded):
		return nil, ErrKeysUnavailable
	case err != nil:
		return nil, ErrKid
	}
	// The algorithm is the key's, never the token's choice.
	if jwa.SignatureAlgorithm(h.Alg) != key.Alg {
		return nil, ErrAlg
	}
	body, err := jws.Verify(token, jws.WithKey(key.Alg, key.Public))
	if err != nil {
		v.m.VerifyFailed.Inc()
		return nil, ErrSignature
	}
	v.m.VerifyOK.Inc()
	var p jwtclaims.Payload
	if err := jwtclaims.DecodePayload(body, &p); err != nil {
		return nil, ErrClaims
	}
	if p.Iss != v.opt.Issuer {
		return nil, ErrIssuer
	}
	if !jwtclaims.HasAudience(p.Aud, v.opt.Audience) {
		return nil, ErrAudience
	}
	c := &Claims{Sub: p.Sub, Tid: p.Tid, Sid: p.Sid, Jti: p.Jti, Key: key}
	var ok bool
	if c.Exp, ok = jwtclaims.NumericDate(p.Exp); !ok {
		return nil, ErrClaims
	}
	if c.Iat, ok = jwtclaims.NumericDate(p.Iat); !ok {
		return nil, ErrClaims
	}
	if p.Nbf != nil {
		if c.Nbf, ok = jwtclaims.NumericDate(p.Nbf); !ok {
			return nil, ErrClaims
		}
	}
	if p.TV == nil {
		return nil, ErrClaims
	}
	if c.TV, err = p.TV.Int64(); err != nil || c.TV < 0 {
		return nil, ErrClaims
	}
	switch {
	case p.Principal == nil:
		c.Principal = identity.PrincipalUser
		if !ValidID(c.Sid) {
			return nil, ErrClaims
		}
	case *p.Principal == identity.PrincipalService && c.Sid == "":
		c.Principal = identity.PrincipalService
		// The client secret the token was obtained with stands where a
		// user's token has its session: forwarded as X-Auth-Session-Id,
		// so that coreapi refuses the token's writes once the secret is
		// deleted, whether or not this proxy has heard of it. Absent
		// from tokens issued before the claim was added.
		if p.SecretID != "" && !ValidID(p.SecretID) {
			return nil, ErrClaims
		}
		c.Sid = p.SecretID
	default:
		return nil, ErrClaims
	}
	if !ValidID(c.Sub) || !ValidID(c.Tid) {
		return nil, ErrClaims
	}
	if p.Scope != nil {
		// Tokens separated by U+0020 only (RFC 6749 section 3.3), as
		// coreapi reads them: any other space is part of a token, which
		// validScope then refuses.
		c.Scope = jwtclaims.SplitScope(*p.Scope)
		for _, sc := range c.Scope {
			if !validScope(sc) {
				return nil, ErrClaims
			}
		}
	}
	for _, m := range p.AMR {
		if !ValidID(m) {
			return nil, ErrClaims
		}
	}
	c.AMR = p.AMR
	if p.AuthTime != nil {
		if c.AuthTime, ok = jwtclaims.NumericDate(p.AuthTime); !ok || c.AuthTime <= 0 {
			return nil, ErrClaims
		}
	}
	if c.Exp <= c.Iat || time.Duration(c.Exp-c.Iat)*time.Second > v.opt.MaxLifetime {
		return nil, ErrLifetime
	}
	if err := v.checkTimes(v.opt.Now(), c.Exp, c.Nbf, c.Iat); err != nil {
		if errors.Is(err, ErrExpired) {
			return nil, err
		}
		return c, err // not yet valid: see VerifyEntry
	}
	return c, nil
}

// validFrom is when c, refused as not yet valid, becomes valid: its nbf
// and iat both within the leeway (unix nanoseconds).
func (v *Verifier) validFrom(c *Claims) int64 {
	lw := -int64(v.opt.Leeway)
	from := secNanos(c.Iat, lw)
	if c.Nbf != 0 {
		from = max(from, secNanos(c.Nbf, lw))
	}
	return from
}

// validScope reports whether s is a permission name as the catalog spells
// them (resource:action of [a-z0-9-]), at most 128 bytes.
func validScope(s string) bool {
	if len(s) > 128 || strings.Count(s, ":") != 1 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

// ValidID reports whether s is a sane id claim (user, tenant, session): 1..128
// characters from [A-Za-z0-9._-]. Ids travel in a URL path and in signed
// headers, so nothing else is accepted.
func ValidID(s string) bool {
	if s == "" || len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}
