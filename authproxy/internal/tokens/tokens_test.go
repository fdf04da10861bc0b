package tokens

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/jwks"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
)

type fixture struct {
	v   *Verifier
	m   *metrics.Metrics
	key *testenv.Key
}

func newFixture(t testing.TB, negTTL time.Duration) *fixture {
	t.Helper()
	return newFixtureSize(t, negTTL, 1000)
}

func newFixtureSize(t testing.TB, negTTL time.Duration, size int64) *fixture {
	t.Helper()
	core := testenv.NewCore(t)
	key := testenv.NewKey(t, "k1", jwa.EdDSA)
	core.Publish(key)
	m := metrics.New()
	algs := []string{"EdDSA", "ES256", "RS256"}
	kc := jwks.New(jwks.Options{URL: core.URL() + "/.well-known/jwks.json", Algs: algs, Interval: time.Hour,
		Cooldown: time.Hour, Timeout: 5 * time.Second}, slog.New(slog.NewJSONHandler(io.Discard, nil)), m)
	if err := kc.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	v, err := New(Options{Issuer: testenv.Issuer, Audience: testenv.Audience, Algs: algs, Leeway: 30 * time.Second,
		MaxLifetime: time.Hour, MaxTokenBytes: 4096, CacheSize: size, MaxTTL: 5 * time.Minute, NegativeTTL: negTTL}, kc, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return &fixture{v: v, m: m, key: key}
}

func (f *fixture) mint(t testing.TB, sub string) []byte {
	return []byte(testenv.Sign(t, f.key, testenv.DefaultClaims(time.Now(), sub, "t1", "s1"), nil))
}

func (f *fixture) verifications() float64 {
	return testutil.ToFloat64(f.m.VerifyOK) + testutil.ToFloat64(f.m.VerifyFailed)
}

// The cache is indexed by 64 bits of the digest, but a hit must match the
// whole digest: an entry planted under another token's index is ignored.
func TestCacheHitComparesFullDigest(t *testing.T) {
	f := newFixture(t, time.Second)
	victim := f.mint(t, "victim")
	c, err := f.v.Verify(context.Background(), victim)
	if err != nil || c.Sub != "victim" {
		t.Fatalf("Verify(victim) = %+v, %v", c, err)
	}
	// Plant the victim's claims under the index of an attacker's token,
	// as a 64-bit collision would.
	attacker := []byte("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	d := Digest(attacker)
	vd := Digest(victim)
	planted := newEntry(&vd, c, time.Now().Add(time.Hour).UnixNano())
	shard, k := storeKey(&d)
	sh := &f.v.cache.shards[shard]
	sh.mu.Lock()
	sh.m[k] = planted
	sh.mu.Unlock()
	if got, err := f.v.Verify(context.Background(), attacker); err == nil {
		t.Fatalf("colliding token accepted as %q", got.Sub)
	}
	// The same in the front table: a slot shared by two digests.
	f.v.hot[binary.LittleEndian.Uint64(d[8:16])&f.v.mask].e.Store(planted)
	if got, err := f.v.Verify(context.Background(), attacker); err == nil {
		t.Fatalf("colliding token accepted from the front table as %q", got.Sub)
	}
}

// A front-table hit is held to the entry's time in the cache and to the
// token's exp like a cache hit, and purge empties the front table too.
func TestFrontTableExpiryAndPurge(t *testing.T) {
	f := newFixture(t, time.Second)
	var off atomic.Int64
	f.v.opt.Now = func() time.Time { return time.Now().Add(time.Duration(off.Load())) }
	tok := f.mint(t, "u")
	d := Digest(tok)
	if _, err := f.v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	slot := &f.v.hot[binary.LittleEndian.Uint64(d[8:16])&f.v.mask]
	if _, hit, err := f.v.Cached(&d, f.v.opt.Now()); !hit || err != nil || slot.e.Load() == nil {
		t.Fatalf("warm token: hit %v, err %v, slot %v", hit, err, slot.e.Load())
	}
	// Past the cache TTL (MaxTTL 5 min) but before exp: a miss, verified again.
	if _, hit, _ := f.v.Cached(&d, time.Now().Add(6*time.Minute)); hit {
		t.Fatal("entry past its cache TTL still hit")
	}
	// Past exp (15 min + 30 s leeway): refused even if an entry were live.
	e := slot.e.Load()
	e2 := newEntry(&e.digest, e.claims, time.Now().Add(time.Hour).UnixNano())
	slot.e.Store(e2)
	if _, hit, err := f.v.Cached(&d, time.Now().Add(16*time.Minute)); !hit || !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token: hit %v, err %v, want ErrExpired", hit, err)
	}
	f.v.purge()
	if slot.e.Load() != nil {
		t.Fatal("purge left the front table filled")
	}
	n := f.verifications()
	if _, err := f.v.Verify(context.Background(), tok); err != nil || f.verifications() != n+1 {
		t.Fatalf("after purge: err %v, verifications +%v, want +1", err, f.verifications()-n)
	}
}

// The front table's copy of an entry's Aux is used only while it is the
// entry's own: after SetAux, a slot written out of step (two writers
// interleaving, or another entry's state) gives way to the entry's, and
// the slot catches up; an eviction empties the copy with the pointer.
func TestFrontTableAuxFollowsEntry(t *testing.T) {
	f := newFixture(t, time.Second)
	tok := f.mint(t, "u")
	d := Digest(tok)
	if _, err := f.v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	slot := f.v.hotSlot(&d)
	cached := func() unsafe.Pointer {
		t.Helper()
		e, aux, hit, err := f.v.CachedAux(&d, time.Now())
		if !hit || err != nil || e == nil {
			t.Fatalf("warm token: hit %v, err %v", hit, err)
		}
		if aux != e.Aux() {
			t.Fatalf("CachedAux gave %p, the entry holds %p", aux, e.Aux())
		}
		return aux
	}
	if aux := cached(); aux != nil {
		t.Fatalf("aux %p before any SetAux", aux)
	}
	e := slot.e.Load()
	one, two := new(int), new(int)
	e.SetAux(unsafe.Pointer(one))
	if aux := cached(); aux != unsafe.Pointer(one) || atomic.LoadPointer(&slot.aux) != unsafe.Pointer(one) {
		t.Fatalf("after SetAux: aux %p, slot %p, want %p", aux, atomic.LoadPointer(&slot.aux), one)
	}
	// Another entry's state in the slot, as a torn pair of writes leaves it.
	atomic.StorePointer(&slot.aux, unsafe.Pointer(two))
	if aux := cached(); aux != unsafe.Pointer(one) {
		t.Fatalf("stale slot copy %p used, want the entry's %p", aux, one)
	}
	if got := atomic.LoadPointer(&slot.aux); got != unsafe.Pointer(one) {
		t.Fatalf("slot not caught up: %p", got)
	}
	slot.drop(e)
	if slot.e.Load() != nil || atomic.LoadPointer(&slot.aux) != nil {
		t.Fatal("drop left the slot filled")
	}
	// Found in the cache again: the slot is refilled with the entry and its state.
	if aux := cached(); aux != unsafe.Pointer(one) || atomic.LoadPointer(&slot.aux) != unsafe.Pointer(one) {
		t.Fatalf("refilled slot: aux %p, slot %p", aux, atomic.LoadPointer(&slot.aux))
	}
}

func TestNegativeCache(t *testing.T) {
	f := newFixture(t, 100*time.Millisecond)
	bad := f.mint(t, "u")
	// Break the signature with another base64url letter: flipping a bit of
	// the character could make it '-' -> ',' or '_' -> '^', which is not
	// base64url at all (malformed, not a bad signature), for about one
	// signature in 32.
	if bad[len(bad)-3] == 'A' {
		bad[len(bad)-3] = 'B'
	} else {
		bad[len(bad)-3] = 'A'
	}
	if _, err := f.v.Verify(context.Background(), bad); !errors.Is(err, ErrSignature) {
		t.Fatalf("Verify(bad) = %v, want ErrSignature", err)
	}
	// The refusal is remembered apart from verified tokens.
	bd := Digest(bad)
	if e := f.v.negs.get(&bd); e == nil || !errors.Is(e.err, ErrSignature) {
		t.Fatalf("the refusal is not remembered: %+v", e)
	}
	if f.v.cache.get(&bd) != nil {
		t.Fatal("a refusal is in the store of verified tokens")
	}
	n := f.verifications()
	for range 5 {
		if _, err := f.v.Verify(context.Background(), bad); !errors.Is(err, ErrSignature) {
			t.Fatalf("Verify(bad) again = %v, want ErrSignature", err)
		}
	}
	if got := f.verifications(); got != n {
		t.Fatalf("bad token verified %v more times within the negative TTL, want 0", got-n)
	}
	// After the negative TTL the token is looked at again.
	testenv.Eventually(t, func() error {
		_, _ = f.v.Verify(context.Background(), bad)
		return testenv.WantAbove("verifications (the negative entry expired)", f.verifications(), n)
	})
}

// TestMalformedKidRemembered: a token whose kid no key set can hold
// ("../k", a space, 129 characters) was refused without being remembered,
// as an unknown kid is (that one may be a key coreapi has just started to
// use): a flood of one such token was parsed again on every request. The
// kid is part of the token, whose whole digest keys the negative cache,
// so the refusal is remembered like others; a well-formed unknown kid
// still is not.
func TestMalformedKidRemembered(t *testing.T) {
	f := newFixture(t, time.Hour)
	now := time.Now()
	for _, kid := range []any{"../k", "k 1", strings.Repeat("k", 129), ""} {
		tok := []byte(testenv.Sign(t, f.key, testenv.DefaultClaims(now, "u", "t", "s"), testenv.Header{"kid": kid}))
		if _, err := f.v.Verify(context.Background(), tok); !errors.Is(err, ErrKid) {
			t.Fatalf("kid %q: Verify = %v, want ErrKid", kid, err)
		}
		d := Digest(tok)
		if e := f.v.negs.get(&d); e == nil || !errors.Is(e.err, ErrKid) {
			t.Fatalf("kid %q: the refusal is not remembered: %+v", kid, e)
		}
		hits := f.v.neg.Hits.Value()
		if _, err := f.v.Verify(context.Background(), tok); !errors.Is(err, ErrKid) {
			t.Fatalf("kid %q: Verify again = %v, want ErrKid", kid, err)
		}
		if got := f.v.neg.Hits.Value(); got != hits+1 {
			t.Fatalf("kid %q: negative hits +%v, want +1", kid, got-hits)
		}
	}
	unknown := []byte(testenv.Sign(t, f.key, testenv.DefaultClaims(now, "u", "t", "s"), testenv.Header{"kid": "k2"}))
	if _, err := f.v.Verify(context.Background(), unknown); !errors.Is(err, ErrKid) {
		t.Fatalf("unknown kid: Verify = %v, want ErrKid", err)
	}
	if d := Digest(unknown); f.v.negs.get(&d) != nil {
		t.Fatal("a refusal for a well-formed unknown kid is remembered")
	}
}

func TestVerifyTypesAndAlgorithms(t *testing.T) {
	f := newFixture(t, time.Second)
	now := time.Now()
	for _, typ := range []string{"at+jwt", "AT+JWT", "application/at+jwt"} {
		tok := testenv.Sign(t, f.key, testenv.DefaultClaims(now, "u", "t", "s"), testenv.Header{"typ": typ})
		if _, err := f.v.Verify(context.Background(), []byte(tok)); err != nil {
			t.Errorf("typ %q refused: %v", typ, err)
		}
	}
	// A valid ES256 signature under an EdDSA key's kid: alg pinned to the key.
	es := testenv.NewKey(t, "k1", jwa.ES256)
	tok := testenv.Sign(t, es, testenv.DefaultClaims(now, "u", "t", "s"), nil)
	if _, err := f.v.Verify(context.Background(), []byte(tok)); !errors.Is(err, ErrAlg) {
		t.Fatalf("alg mismatch = %v, want ErrAlg", err)
	}
	// aud as a list containing the audience is accepted.
	c := testenv.DefaultClaims(now, "u", "t", "s")
	c["aud"] = []string{"other", testenv.Audience}
	if _, err := f.v.Verify(context.Background(), []byte(testenv.Sign(t, f.key, c, nil))); err != nil {
		t.Fatalf("aud list: %v", err)
	}
	// Leeway: expired 10 s ago is still inside a 30 s leeway.
	c = testenv.DefaultClaims(now.Add(-15*time.Minute-10*time.Second), "u", "t", "s")
	if _, err := f.v.Verify(context.Background(), []byte(testenv.Sign(t, f.key, c, nil))); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	c = testenv.DefaultClaims(now.Add(-15*time.Minute-time.Minute), "u", "t", "s")
	if _, err := f.v.Verify(context.Background(), []byte(testenv.Sign(t, f.key, c, nil))); !errors.Is(err, ErrExpired) {
		t.Fatalf("beyond leeway: %v, want ErrExpired", err)
	}
}

func TestValidID(t *testing.T) {
	for s, want := range map[string]bool{"abc-DEF_1.2": true, "": false, "..": false, "a/b": false, "a b": false,
		"a\nb": false, string(make([]byte, 129)): false, "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001": true} {
		if got := ValidID(s); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", s, got, want)
		}
	}
}

func BenchmarkWarmVerify(b *testing.B) {
	f := newFixture(b, time.Second)
	tok := f.mint(b, "u")
	if _, err := f.v.Verify(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.v.Verify(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkColdVerify: every token new (signature verification, claims,
// cache fill).
func BenchmarkColdVerify(b *testing.B) {
	f := newFixture(b, time.Second)
	const n = 2000
	toks := make([][]byte, n)
	for i := range toks {
		toks[i] = f.mint(b, "u"+strconv.Itoa(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%n == 0 && i > 0 {
			b.StopTimer()
			f.v.purge()
			b.StartTimer()
		}
		if _, err := f.v.Verify(context.Background(), toks[i%n]); err != nil {
			b.Fatal(err)
		}
	}
}

// The verifier keeps nothing that aliases the caller's buffer
// (Fiber reuses request memory): scribbling over it after Verify changes
// no cached claims.
func TestClaimsDoNotAliasInput(t *testing.T) {
	f := newFixture(t, time.Second)
	orig := f.mint(t, "user-1")
	buf := append([]byte(nil), orig...)
	c1, err := f.v.Verify(context.Background(), buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 'A'
	}
	c2, err := f.v.Verify(context.Background(), orig)
	if err != nil {
		t.Fatal(err)
	}
	if c2 != c1 || c2.Sub != "user-1" || c2.Tid != "t1" || c2.Sid != "s1" {
		t.Fatalf("cached claims changed with the input buffer: %+v", c2)
	}
}

// purge drops every cached outcome, so a test or benchmark starts cold.
func (v *Verifier) purge() {
	v.cache.clear()
	v.negs.clear()
	for i := range v.hot {
		v.hot[i] = hotSlot{}
	}
}

// A verified token is served from the front table by the very next
// request: nothing waits for the cache to admit the entry, and nothing
// depends on it.
func TestVerifiedTokenHitsAtOnce(t *testing.T) {
	f := newFixture(t, time.Second)
	for i := range 50 {
		tok := f.mint(t, "u"+strconv.Itoa(i))
		if _, err := f.v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		d := Digest(tok)
		if e, hit, err := f.v.Cached(&d, time.Now()); !hit || err != nil || e.Claims().Sub != "u"+strconv.Itoa(i) {
			t.Fatalf("token %d right after its verification: hit %v, err %v", i, hit, err)
		}
	}
}

// swappedKeys is a key source whose current set a test replaces.
type swappedKeys struct {
	KeySource
	cur atomic.Pointer[jwks.Set]
}

func (k *swappedKeys) Current() *jwks.Set { return k.cur.Load() }

// A hit re-checks exp, iat and nbf (with the leeway) and the key still
// being published from what the entry remembers: the same answers as a
// full re-check, whichever key set is current.
func TestCachedRechecksTimesAndKeySet(t *testing.T) {
	f := newFixture(t, time.Second)
	tok := f.mint(t, "u")
	d := Digest(tok)
	c, err := f.v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	exp, iat := time.Unix(c.Exp, 0), time.Unix(c.Iat, 0)
	lw := f.v.opt.Leeway
	early := ErrIssuedInFuture // checked after nbf, which the test tokens carry at iat
	if c.Nbf != 0 && c.Nbf >= c.Iat {
		early = ErrNotYetValid
	}
	for _, tc := range []struct {
		at      time.Time
		hit     bool
		wantErr error
	}{
		{iat, true, nil},
		{exp.Add(lw - time.Nanosecond), true, nil},
		{exp.Add(lw), true, ErrExpired},
		{iat.Add(-lw), true, nil},
		{iat.Add(-lw - time.Nanosecond), true, early},
	} {
		// The entry's time in the cache is not what this is about.
		e, _, _ := f.v.Cached(&d, iat)
		if e == nil {
			t.Fatal("token not cached")
		}
		e.expires = tc.at.Add(time.Hour).UnixNano()
		_, hit, err := f.v.Cached(&d, tc.at)
		if hit != tc.hit || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
			t.Errorf("Cached at %v: hit %v, err %v; want hit %v, err %v", tc.at, hit, err, tc.hit, tc.wantErr)
		}
		e.expires = time.Now().Add(time.Minute).UnixNano()
	}
	// A new key set that still holds the key: a hit. One without it: a
	// miss (the token is verified again, and refused).
	keys := &swappedKeys{KeySource: f.v.keys}
	old := f.v.keys.Current()
	f.v.keys = keys
	same := &jwks.Set{Keys: map[string]*jwks.Key{}}
	for kid, k := range old.Keys {
		same.Keys[kid] = k
	}
	keys.cur.Store(same)
	if _, hit, err := f.v.Cached(&d, time.Now()); !hit || err != nil {
		t.Fatalf("key set replaced, key kept: hit %v, err %v", hit, err)
	}
	keys.cur.Store(&jwks.Set{Keys: map[string]*jwks.Key{}})
	if _, hit, _ := f.v.Cached(&d, time.Now()); hit {
		t.Fatal("key removed from the set: still a hit")
	}
	keys.cur.Store(same)
	if _, hit, err := f.v.Cached(&d, time.Now()); !hit || err != nil {
		t.Fatalf("key back: hit %v, err %v", hit, err)
	}
}

// secNanos agrees with time.Unix(s, 0).Add(off) wherever that fits in
// unix nanoseconds, and saturates beyond.
func TestSecNanos(t *testing.T) {
	for _, s := range []int64{0, 1, -1, 1_700_000_000, 4_102_444_800, 9_223_371_000, -9_223_371_000} {
		for _, off := range []int64{0, int64(time.Minute), -int64(time.Minute), 1, -1} {
			want := time.Unix(s, 0).Add(time.Duration(off)).UnixNano()
			if got := secNanos(s, off); got != want {
				t.Errorf("secNanos(%d, %d) = %d, want %d", s, off, got, want)
			}
		}
	}
	for _, tc := range []struct{ s, off, want int64 }{
		{math.MaxInt64, 0, math.MaxInt64},
		{math.MaxInt64 / int64(time.Second), int64(time.Minute), math.MaxInt64},
		{math.MaxInt64/int64(time.Second) - 1, int64(time.Hour), math.MaxInt64},
		{math.MinInt64, 0, math.MinInt64},
		{-(math.MaxInt64/int64(time.Second) - 1), -int64(time.Hour), math.MinInt64},
	} {
		if got := secNanos(tc.s, tc.off); got != tc.want {
			t.Errorf("secNanos(%d, %d) = %d, want %d", tc.s, tc.off, got, tc.want)
		}
	}
}

// Ours tells coreapi's tokens (a kid of the key set, or the proxy's
// issuer whatever the kid) from anything else, without verifying or
// fetching.
func TestOurs(t *testing.T) {
	f := newFixture(t, time.Second)
	now := time.Now()
	expired := testenv.DefaultClaims(now.Add(-time.Hour), "u", "t", "s")
	other := testenv.NewKey(t, "k2", jwa.EdDSA)
	foreign := testenv.DefaultClaims(now, "u", "t", "s")
	foreign["iss"] = "https://idp.example.com"
	noIss := testenv.DefaultClaims(now, "u", "t", "s")
	delete(noIss, "iss")
	for _, c := range []struct {
		name string
		tok  string
		want bool
	}{
		{"ours", string(f.mint(t, "u")), true},
		{"ours, expired", testenv.Sign(t, f.key, expired, nil), true},
		{"ours, signature broken", string(f.mint(t, "u")) + "x", true},
		// A key rotated out of the set (or not fetched yet) still signed
		// one of ours: its iss says so.
		{"ours, key not in the set", testenv.Sign(t, other, testenv.DefaultClaims(now, "u", "t", "s"), nil), true},
		{"ours, key not in the set, expired", testenv.Sign(t, other, expired, nil), true},
		{"ours, kid malformed", testenv.Sign(t, other, testenv.DefaultClaims(now, "u", "t", "s"), testenv.Header{"kid": "../k"}), true},
		{"ours, no kid", testenv.Sign(t, other, testenv.DefaultClaims(now, "u", "t", "s"), testenv.Header{"kid": nil}), true},
		{"ours, truncated after the payload", strings.Join(strings.Split(testenv.Sign(t, other, expired, nil), ".")[:2], "."), true},
		{"ours, slashes escaped in iss", strings.Split(testenv.Sign(t, other, expired, nil), ".")[0] + "." +
			base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+strings.ReplaceAll(testenv.Issuer, "/", `\/`)+`","sub":"u"}`)) + ".sig", true},
		{"another issuer's token", testenv.Sign(t, other, foreign, nil), false},
		{"another issuer's token, ours in another claim", testenv.Sign(t, other, withAud(foreign, testenv.Issuer), nil), false},
		{"another issuer's token, no iss", testenv.Sign(t, other, noIss, nil), false},
		{"another issuer's token, payload not base64", strings.Split(testenv.Sign(t, other, foreign, nil), ".")[0] + ".!!!.sig", false},
		{"not an access token type", testenv.Sign(t, f.key, testenv.DefaultClaims(now, "u", "t", "s"), testenv.Header{"typ": "JWT"}), false},
		{"no dot", "eyJhbGciOiJFZERTQSJ9", false},
		{"empty header", ".e30.sig", false},
		{"header not base64", "!!!.e30.sig", false},
		{"an API key", "tg_0123456789abcdef_0123456789abcdef0123456789abcdef0123456", false},
		{"Basic credentials", "dXNlcjpwYXNz", false},
	} {
		if got := f.v.Ours([]byte(c.tok)); got != c.want {
			t.Errorf("%s: Ours = %v, want %v", c.name, got, c.want)
		}
	}
	if f.verifications() != 0 {
		t.Fatal("Ours verified a token")
	}
}

func withAud(c testenv.Claims, aud string) testenv.Claims {
	d := testenv.Claims{}
	for k, v := range c {
		d[k] = v
	}
	d["aud"] = aud
	return d
}

// The issuer's probe is a part every encoder writes as it is, or none.
func TestIssuerProbe(t *testing.T) {
	for iss, want := range map[string]string{
		"https://auth.example.com":        "auth.example.com",
		"http://localhost:8080":           "localhost:8080",
		"https://example.com/tenants/abc": "example.com",
		"https://example.com/a&b":         "",
		"https://exämple.com":             "",
		"":                                "",
	} {
		if got := issuerProbe(iss); got != want {
			t.Errorf("issuerProbe(%q) = %q, want %q", iss, got, want)
		}
	}
}

// A token refused for its signature is refused again from the negative
// cache only while the key set it was checked against is current: once a
// key replaced under its kid is fetched (coreapi announces the change), the
// new key's tokens verify at once, not after NEGATIVE_CACHE_TTL.
func TestNegativeCacheFollowsKeySet(t *testing.T) {
	core := testenv.NewCore(t)
	core.Publish(testenv.NewKey(t, "k1", jwa.EdDSA))
	m := metrics.New()
	algs := []string{"EdDSA"}
	kc := jwks.New(jwks.Options{URL: core.URL() + "/.well-known/jwks.json", Algs: algs, Interval: time.Hour,
		Cooldown: time.Hour, Timeout: 5 * time.Second}, slog.New(slog.NewJSONHandler(io.Discard, nil)), m)
	if err := kc.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	v, err := New(Options{Issuer: testenv.Issuer, Audience: testenv.Audience, Algs: algs, Leeway: 30 * time.Second,
		MaxLifetime: time.Hour, MaxTokenBytes: 4096, CacheSize: 1000, MaxTTL: 5 * time.Minute, NegativeTTL: time.Hour}, kc, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	replacement := testenv.NewKey(t, "k1", jwa.EdDSA)
	tok := []byte(testenv.Sign(t, replacement, testenv.DefaultClaims(time.Now(), "u", "t1", "s1"), nil))
	for range 2 {
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrSignature) {
			t.Fatalf("token of a key the proxy does not have yet: %v, want ErrSignature", err)
		}
	}
	core.Publish(replacement)
	if err := kc.KeysChanged(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("after the replaced key was fetched: %v, want the token verified", err)
	}
}

// TestVerifyEntryAfterAFlightEnded: a request that missed the cache while
// another's verification of its token was in flight, and asks for its own
// after that one ended (singleflight no longer joins them), takes the
// cached outcome: the token is verified once, as for callers that joined
// the flight (under load, 32 concurrent first requests verified twice).
func TestVerifyEntryAfterAFlightEnded(t *testing.T) {
	f := newFixture(t, time.Second)
	tok := f.mint(t, "u")
	d := Digest(tok)
	n := f.verifications()
	if _, err := f.v.VerifyEntry(context.Background(), tok, &d); err != nil {
		t.Fatal(err)
	}
	e, err := f.v.VerifyEntry(context.Background(), tok, &d) // its Cached miss came before
	if err != nil || e.Claims().Sub != "u" {
		t.Fatalf("second VerifyEntry: %+v, %v", e, err)
	}
	if got := f.verifications() - n; got != 1 {
		t.Fatalf("verifications = %v, want 1", got)
	}
	// A refused token likewise: its remembered refusal is taken.
	bad := f.mint(t, "u")
	sig := bytes.LastIndexByte(bad, '.') + 1
	// Another signature, canonically spelled (its first character's six
	// bits all count).
	if bad[sig] == 'A' {
		bad[sig] = 'B'
	} else {
		bad[sig] = 'A'
	}
	bd := Digest(bad)
	n = f.verifications()
	_, err1 := f.v.VerifyEntry(context.Background(), bad, &bd)
	_, err2 := f.v.VerifyEntry(context.Background(), bad, &bd)
	if err1 == nil || err2 == nil || f.verifications()-n != 1 {
		t.Fatalf("refused token: errs %v, %v; verifications %v, want 1", err1, err2, f.verifications()-n)
	}
}

// TestEarlyTokenRefusedOnlyUntilValid: a token issued by a coreapi whose
// clock runs ahead of the proxy's by more than the leeway is refused
// (not yet valid), and that refusal is remembered only until the token
// becomes valid, not for the whole negative TTL: a valid token was
// refused for up to NEGATIVE_CACHE_TTL after its iat and nbf had come
// within the leeway.
func TestEarlyTokenRefusedOnlyUntilValid(t *testing.T) {
	f := newFixture(t, time.Minute)
	var off atomic.Int64
	start := time.Now()
	f.v.opt.Now = func() time.Time { return start.Add(time.Duration(off.Load())) }
	// iat and nbf 40 s ahead: valid from 10 s on, with the 30 s leeway.
	tok := []byte(testenv.Sign(t, f.key, testenv.DefaultClaims(start.Add(40*time.Second), "u", "t1", "s1"), nil))
	_, err := f.v.Verify(context.Background(), tok)
	if !errors.Is(err, ErrNotYetValid) && !errors.Is(err, ErrIssuedInFuture) {
		t.Fatalf("Verify 40 s early = %v, want not yet valid", err)
	}
	off.Store(int64(5 * time.Second))
	if _, err := f.v.Verify(context.Background(), tok); err == nil {
		t.Fatal("accepted 35 s early, beyond the leeway")
	}
	off.Store(int64(11 * time.Second))
	if _, err := f.v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify once within the leeway = %v, want accepted (the refusal outlived the reason for it)", err)
	}
}
