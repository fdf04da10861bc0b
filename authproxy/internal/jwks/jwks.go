// Package jwks keeps the proxy's copy of coreapi's JSON Web Key Set: fetched
// at start (readiness waits for it), refreshed in the background, and
// refetched at most once per cooldown, singleflighted, when a token names an
// unknown key id, and refetched at once when coreapi announces a change of
// its keys (KeysChanged). Each usable key is pinned to the algorithm it declares, so
// a token can only be verified with the algorithm its key was published for.
package jwks

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/jwtclaims"
	"github.com/tollgate-auth/tollgate/shared/safeid"
	"golang.org/x/sync/singleflight"
)

// Errors of Lookup.
var (
	ErrBadKid     = errors.New("jwks: malformed key id")
	ErrUnknownKid = errors.New("jwks: unknown key id")
	ErrNotLoaded  = errors.New("jwks: key set not loaded or not refreshable")
	// ErrSecretMaterial: a fetched key set holds a private or symmetric
	// key; it is refused whole.
	ErrSecretMaterial = errors.New("jwks: key set carries secret key material")
	// ErrRedirect: the key set URL answered with a redirect, which is not
	// followed.
	ErrRedirect = errors.New("jwks: the key set URL redirects; redirects are not followed")
)

// errLastFetchFailed: an unknown kid within the refetch cooldown, the
// last fetch (the one that started last) having failed.
var errLastFetchFailed = errors.New("jwks: the last fetch failed; the next one is due after the refetch cooldown")

// maxBody bounds a JWKS response.
const maxBody = 1 << 20

// Key is one usable verification key.
type Key struct {
	Kid    string
	Alg    jwa.SignatureAlgorithm
	Public any // ed25519.PublicKey, *ecdsa.PublicKey or *rsa.PublicKey
	thumb  string
}

// Set is an immutable snapshot of the key set.
type Set struct {
	Keys      map[string]*Key
	FetchedAt time.Time
	// Digest is the invalidation.KeySetDigest of the document the set
	// was read from (every key in it, usable or not): coreapi names the
	// set it serves so in auth.keys.changed (see KeysAnnounced).
	Digest string
}

// Options configure a Client.
type Options struct {
	URL      string
	Algs     []string      // allowed algorithms, e.g. EdDSA, ES256, RS256
	Interval time.Duration // background refresh
	Cooldown time.Duration // minimum time between unknown-kid refetches
	Timeout  time.Duration // per fetch
	HTTP     *http.Client  // nil: a client with Timeout that follows no redirect
	// TLS, when set, is the TLS client configuration of an https:// URL
	// (IDENTITY_CA_FILE's certificates trusted besides the system's);
	// nil: Go's defaults. Ignored with HTTP.
	TLS  *tls.Config
	Now  func() time.Time
	Rand func() float64 // uniform in [0, 1) for jitter; nil: math/rand/v2
	// OnSet, when set, is called after a fetched key set (by Run,
	// Refresh, KeysChanged or an unknown kid's refetch) is made current,
	// with the set current then: holders of what was checked against an
	// earlier set (open streams) can drop what a removed key signed. Calls
	// never overlap, and the last one is always made with the current set:
	// sets made current while a call runs are handed on once it returns,
	// the newest only, possibly by another fetch's goroutine.
	OnSet func(*Set)
}

// Client holds the current key set.
type Client struct {
	opt Options
	// shown is opt.URL as logged: its password, if any, masked.
	shown string
	algs  map[jwa.SignatureAlgorithm]bool
	log   *slog.Logger
	m     *metrics.Metrics
	cur   atomic.Pointer[Set]
	last  atomic.Int64 // unix nanos of the last fetch attempt
	// failed: the newest fetch to end (the one that started last among
	// those ended, see settled) failed, so the current set may lack a key
	// coreapi serves now (see Lookup).
	failed atomic.Bool
	// started numbers fetches; stored is the number of the fetch whose
	// set is current. A fetch that started before another but finished
	// after it must not put back the older set.
	started atomic.Uint64
	// inFlight counts the fetches under way (see KeysAnnounced and
	// Lookup); it changes under flightMu, and idle is signalled when it
	// drops to zero.
	inFlight atomic.Int64
	flightMu sync.Mutex
	idle     *sync.Cond
	storeMu  sync.Mutex
	stored   uint64
	// settled (under storeMu) is the number of the fetch whose outcome
	// failed holds: an older fetch that ends after a newer one does not
	// overwrite it. The last to end judged instead: a slow fetch failing
	// after a newer one succeeded made every unknown kid 503 for the
	// cooldown, one succeeding after a newer one failed made a key just
	// announced 401.
	settled uint64
	// handMu guards handing sets to OnSet: handing is true while a
	// goroutine does (it hands on every newer set before it stops), and
	// handed is the set OnSet last got.
	handMu  sync.Mutex
	handing bool
	handed  *Set
	sf      singleflight.Group
	loaded  chan struct{}
	loadedF atomic.Bool
	// retry wakes Run to fetch now, and to keep at it with backoff until
	// a fetch succeeds: an announced change whose own fetch failed.
	retry chan struct{}
}

// New returns a Client; call Run to load and refresh the set.
func New(opt Options, log *slog.Logger, m *metrics.Metrics) *Client {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Rand == nil {
		opt.Rand = rand.Float64
	}
	if opt.HTTP == nil {
		// The key set is what every token is verified against: it comes
		// from JWKS_URL and nowhere else. A redirect (to another host, or
		// from https to http, where anyone on the path may answer) is an
		// error naming its target, never followed.
		opt.HTTP = &http.Client{Timeout: opt.Timeout, CheckRedirect: refuseRedirect}
		if opt.TLS != nil {
			// Verified against the URL's host, as always; only the
			// trusted roots differ from Go's defaults.
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = opt.TLS.Clone()
			opt.HTTP.Transport = tr
		}
	}
	c := &Client{opt: opt, algs: map[jwa.SignatureAlgorithm]bool{}, log: log, m: m, loaded: make(chan struct{}), retry: make(chan struct{}, 1)}
	c.idle = sync.NewCond(&c.flightMu)
	c.shown = opt.URL
	if u, err := url.Parse(opt.URL); err == nil {
		c.shown = u.Redacted()
	}
	for _, a := range opt.Algs {
		c.algs[jwa.SignatureAlgorithm(a)] = true
	}
	return c
}

// Ready reports whether a key set with at least one key is loaded.
func (c *Client) Ready() bool {
	s := c.cur.Load()
	return s != nil && len(s.Keys) > 0
}

// Loaded is closed once the first fetch has succeeded.
func (c *Client) Loaded() <-chan struct{} { return c.loaded }

// Current returns the current snapshot (nil before the first fetch).
func (c *Client) Current() *Set { return c.cur.Load() }

// Age is the time since the current set was fetched.
func (c *Client) Age() time.Duration {
	s := c.cur.Load()
	if s == nil {
		return 0
	}
	return c.opt.Now().Sub(s.FetchedAt)
}

// ValidKid reports whether kid is a sane key id: 1..128 characters from
// [A-Za-z0-9._:-], not "." or "..". Anything else (path characters
// included) is refused before any lookup or refetch.
func ValidKid(kid string) bool {
	return kid != "." && kid != ".." && safeid.Valid(kid, 128)
}

// Lookup returns the key for kid. An unknown kid triggers one refetch,
// shared by all concurrent callers and at most once per cooldown; within
// the cooldown, when the fetch that started last failed, it is
// ErrNotLoaded, not ErrUnknownKid.
func (c *Client) Lookup(ctx context.Context, kid string) (*Key, error) {
	if !ValidKid(kid) {
		return nil, ErrBadKid
	}
	if s := c.cur.Load(); s != nil {
		if k := s.Keys[kid]; k != nil {
			return k, nil
		}
	}
	c.m.UnknownKids.Inc()
	// Always join the flight: a caller arriving while a refetch is running
	// waits for it instead of being refused by the cooldown it started.
	_, err, _ := c.sf.Do("refresh", func() (any, error) {
		// A fetch outside the flight (an announced key change's, the
		// first NATS connection's) may be reading the set that holds the
		// kid: its start counts for the cooldown, and its outcome is not
		// known yet, so wait for it rather than answer from the set it
		// is replacing (the kid unknown: 401 for a token of a key just
		// announced).
		if within, failed := c.lastFetch(); within {
			if failed {
				// The set could not be fetched: the kid may be in the
				// one coreapi serves now.
				return nil, errLastFetchFailed
			}
			return nil, nil
		}
		return nil, c.fetch(context.WithoutCancel(ctx))
	})
	if err != nil {
		// Whether the kid is genuinely new cannot be known: unavailable,
		// not invalid.
		return nil, fmt.Errorf("%w: refresh for kid: %w", ErrNotLoaded, err)
	}
	s := c.cur.Load()
	if s == nil {
		return nil, ErrNotLoaded
	}
	if k := s.Keys[kid]; k != nil {
		return k, nil
	}
	return nil, ErrUnknownKid
}

// Run loads the set (retrying with jittered exponential backoff until it
// succeeds) and then refreshes it about every Interval (±10 %, jittered)
// until ctx ends; after a failed KeysChanged it fetches at once, retrying
// with the same backoff until it succeeds. Such a retry fetches on its own,
// as KeysChanged does: joined to a fetch already under way (an unknown
// kid's), which may have read the set before the change, it would take
// that older set for the change's and keep a removed key until the next
// regular refresh.
func (c *Client) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	changed := false // a KeysChanged whose fetch failed is being retried
	for {
		var err error
		if changed {
			err = c.fetch(ctx)
		} else {
			_, err, _ = c.sf.Do("refresh", func() (any, error) { return nil, c.fetch(ctx) })
		}
		wait := spread(c.opt.Interval, c.opt.Rand())
		if err != nil {
			wait = halfJitter(backoff, c.opt.Rand())
			c.log.Warn("jwks fetch", "err", err, "url", c.shown, "retry_in", wait.String())
			backoff = min(backoff*2, 5*time.Second, c.opt.Interval)
		} else {
			backoff, changed = 100*time.Millisecond, false
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-c.retry:
			t.Stop()
			changed = true
		}
	}
}

// Refresh fetches the set now.
func (c *Client) Refresh(ctx context.Context) error {
	_, err, _ := c.sf.Do("refresh", func() (any, error) { return nil, c.fetch(ctx) })
	return err
}

// KeysChanged fetches the set at once, whatever the unknown-kid cooldown,
// and without joining a fetch already under way (which may have read the
// set before the change). Keys that left the set stop verifying as soon as
// it returns: cached tokens are checked against the current set on every
// hit. It is called when coreapi announces auth.keys.changed. If the
// fetch fails, Run fetches again at once and then with its backoff until
// one succeeds: the change is not left to the next regular refresh.
func (c *Client) KeysChanged(ctx context.Context) error {
	err := c.fetch(ctx)
	if err != nil {
		select {
		case c.retry <- struct{}{}:
		default: // a retry is already due
		}
	}
	return err
}

// KeysAnnounced handles an auth.keys.changed that names the key set its
// coreapi serves (digest, the invalidation.KeySetDigest of its JWKS; ""
// when the event names none): when the current set was read from a
// document of that digest, the proxy already holds exactly the announced
// keys and nothing is fetched; otherwise it is KeysChanged. Every coreapi
// replica announces the keys it starts with, so without this a rollout of
// N replicas made every proxy fetch the set N times, though the keys did
// not change. No change is missed: every replica announces each change of
// its own set, after serving it, so the last announcement of a change
// names the set every replica serves, and a proxy holding another one
// fetches. Nor is the fetch skipped while another one is under way: that
// one may have read an older set, and store it once this returns.
func (c *Client) KeysAnnounced(ctx context.Context, digest string) (fetched bool, err error) {
	if s := c.cur.Load(); digest != "" && s != nil && s.Digest == digest && c.inFlight.Load() == 0 {
		return false, nil
	}
	return true, c.KeysChanged(ctx)
}

// lastFetch waits until no fetch is under way (each ends within its
// download's timeout), then reports whether the last one started within
// the cooldown and whether it failed (settled). Read under flightMu with
// none under way, the two belong to the same, finished, fetch: a fetch
// that starts after this counts itself in flight before it stores its
// start.
func (c *Client) lastFetch() (within, failed bool) {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	for c.inFlight.Load() > 0 {
		c.idle.Wait()
	}
	return c.opt.Now().Sub(time.Unix(0, c.last.Load())) < c.opt.Cooldown, c.failed.Load()
}

func (c *Client) fetch(ctx context.Context) error {
	c.flightMu.Lock()
	c.inFlight.Add(1)
	c.flightMu.Unlock()
	defer func() {
		c.flightMu.Lock()
		if c.inFlight.Add(-1) == 0 {
			c.idle.Broadcast()
		}
		c.flightMu.Unlock()
	}()
	seq := c.started.Add(1)
	c.last.Store(c.opt.Now().UnixNano())
	s, err := c.download(ctx)
	if err != nil {
		c.m.JWKSFetches.WithLabelValues("error").Inc()
	} else {
		c.m.JWKSFetches.WithLabelValues("ok").Inc()
	}
	c.storeMu.Lock()
	if seq > c.settled {
		c.settled = seq
		c.failed.Store(err != nil)
	}
	if err != nil {
		c.storeMu.Unlock()
		return err
	}
	if seq < c.stored {
		c.storeMu.Unlock()
		return nil // a later fetch already stored a newer set
	}
	// An unchanged key keeps its pointer, so that what was checked
	// against it (cached tokens, open streams) stays valid across
	// refreshes. Matched against the set this one replaces, not the one
	// current when it was parsed: another fetch may have stored a set
	// since, whose new keys would otherwise get a second pointer here.
	if prev := c.cur.Load(); prev != nil {
		for kid, k := range s.Keys {
			if old := prev.Keys[kid]; old != nil && old.thumb == k.thumb && old.Alg == k.Alg {
				s.Keys[kid] = old
			}
		}
	}
	c.stored = seq
	c.cur.Store(s)
	c.m.JWKSKeys.Set(float64(len(s.Keys))) // in the order of the stores
	c.storeMu.Unlock()
	c.handOn()
	if len(s.Keys) == 0 {
		c.log.Warn("jwks has no usable key", "url", c.shown)
	} else if c.loadedF.CompareAndSwap(false, true) {
		close(c.loaded)
	}
	return nil
}

// handOn calls OnSet with the current set, unless another goroutine is
// doing so: that one then hands on the newest set once its call returns.
// Calls made by each fetch on its own, after storing, could come in
// another order than the stores: the last call was then made with an
// older set, and its holder (the streams manager) took the keys that set
// lacked, added since, for removed.
func (c *Client) handOn() {
	if c.opt.OnSet == nil {
		return
	}
	c.handMu.Lock()
	if c.handing {
		c.handMu.Unlock()
		return
	}
	c.handing = true
	for {
		s := c.cur.Load()
		if s == c.handed {
			c.handing = false
			c.handMu.Unlock()
			return
		}
		c.handed = s
		c.handMu.Unlock()
		c.opt.OnSet(s)
		c.handMu.Lock()
	}
}

func (c *Client) download(ctx context.Context) (*Set, error) {
	if c.opt.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opt.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.opt.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.opt.HTTP.Do(req)
	if err != nil {
		c.m.UpstreamErrors.WithLabelValues("jwks", "transport").Inc()
		return nil, fmt.Errorf("get jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.m.UpstreamErrors.WithLabelValues("jwks", "status").Inc()
		return nil, fmt.Errorf("get jwks: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read jwks: %w", err)
	}
	if len(body) > maxBody {
		return nil, errors.New("read jwks: body larger than 1 MiB")
	}
	return c.parse(body)
}

// refuseRedirect is the CheckRedirect of the key set's client: no
// redirect is followed.
func refuseRedirect(req *http.Request, _ []*http.Request) error {
	return fmt.Errorf("%w (to %s): set JWKS_URL to the key set's own URL", ErrRedirect, req.URL.Redacted())
}

// errNotASet refuses a document that is no JWK Set (RFC 7517 section 5).
var errNotASet = errors.New(`parse jwks: not a JWK Set: want an object whose "keys" member is an array`)

// isKeySet reports whether body is a JSON object whose "keys" member is an
// array: jwk.Parse takes {"keys":null} and {} for a set without keys, and
// a lone JWK for a set of one, so a JWKS_URL that names another document
// (or an answer rewritten on its way) would replace every key.
func isKeySet(body []byte) bool {
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return false
	}
	keys, ok := doc["keys"]
	return ok && len(keys) > 0 && keys[0] == '['
}

func (c *Client) parse(body []byte) (*Set, error) {
	if !isKeySet(body) {
		return nil, errNotASet
	}
	// "keys" named twice: jwx reads both lists as one set, and
	// encoding/json the last.
	if err := jwtclaims.CheckMemberNames(body, []string{"keys"}); err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	// A key set that carries secret material (a private key's "d" or
	// any other private member, a symmetric "k") is refused whole, not trimmed to its public keys:
	// whoever serves it has published the key that signs, so neither the
	// document nor its source can be trusted. The previous set stays.
	for i := 0; i < set.Len(); i++ {
		jk, _ := set.Key(i)
		if what := secretPart(jk); what != "" {
			return nil, fmt.Errorf("%w: key %q carries %s: the signing key is exposed (rotate it) and the whole set is refused",
				ErrSecretMaterial, jk.KeyID(), what)
		}
	}
	s := &Set{Keys: make(map[string]*Key, set.Len()), FetchedAt: c.opt.Now()}
	// Not named ("") when it cannot be computed: every announcement then
	// refetches.
	s.Digest, _ = invalidation.KeySetDigest(body)
	// Two keys under one kid: neither can be trusted to be the one meant,
	// even when only one of them is usable here (another proxy, with other
	// TOKEN_ALGS, would take the other one).
	kids := make(map[string]int, set.Len())
	for i := 0; i < set.Len(); i++ {
		jk, _ := set.Key(i)
		kids[jk.KeyID()]++
	}
	entries, err := keyEntries(body, set.Len())
	if err != nil {
		return nil, err
	}
	for i := 0; i < set.Len(); i++ {
		jk, _ := set.Key(i)
		if kids[jk.KeyID()] > 1 {
			c.log.Warn("jwks duplicate kid skipped", "kid", jk.KeyID())
			continue
		}
		// A member named twice is read last-wins by jwx and first-wins
		// by other readers of the set; a JWK member in another letter
		// case is no member to jwx: the key is not plainly one key. As
		// a token header's, such members are refused.
		if err := jwtclaims.CheckMemberNames(entries[i], jwkMembers()); err != nil {
			c.log.Warn("jwks key skipped", "kid", jk.KeyID(), "err", err)
			continue
		}
		k, err := c.usable(jk)
		if err != nil {
			c.log.Warn("jwks key skipped", "kid", jk.KeyID(), "err", err)
			continue
		}
		s.Keys[k.Kid] = k
	}
	return s, nil
}

// jwkMembers are the JWK members jwx reads (RFC 7517 section 4, RFC
// 7518 section 6): each may appear once, in its exact case.
func jwkMembers() []string {
	return []string{"kty", "use", "key_ops", "alg", "kid", "x5u", "x5c", "x5t", "x5t#S256",
		"crv", "x", "y", "n", "e", "d", "p", "q", "dp", "dq", "qi", "oth", "k"}
}

// keyEntries returns the entries of the "keys" array of body, a key set
// jwx parsed into n keys, one for each entry and in their order.
func keyEntries(body []byte, n int) ([]json.RawMessage, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	if len(doc.Keys) != n {
		return nil, fmt.Errorf("parse jwks: %d entries read as %d keys", len(doc.Keys), n)
	}
	return doc.Keys, nil
}

// privateMembers are the JWK members that hold secret key material (RFC
// 7518 section 6: an RSA key's "d" and its CRT members, an EC or OKP
// key's "d", an oct key's "k").
func privateMembers() []string { return []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} }

// secretPart names the secret member jk carries, "" when it is a public
// key. A key parsed as public may still carry one: jwx takes an RSA key
// without "d" for a public key and keeps its "p" (one prime factor of n,
// the whole private key) as an extra member.
func secretPart(jk jwk.Key) string {
	switch jk.(type) {
	case jwk.RSAPrivateKey, jwk.ECDSAPrivateKey, jwk.OKPPrivateKey:
		return `private key material ("d")`
	case jwk.SymmetricKey:
		return `a symmetric secret ("k")`
	}
	for _, m := range privateMembers() {
		if _, ok := jk.Get(m); ok {
			return fmt.Sprintf("private key material (%q)", m)
		}
	}
	return ""
}

func (c *Client) usable(jk jwk.Key) (*Key, error) {
	kid := jk.KeyID()
	if !ValidKid(kid) {
		return nil, ErrBadKid
	}
	if u := jk.KeyUsage(); u != "" && u != "sig" {
		return nil, fmt.Errorf("use %q is not sig", u)
	}
	// key_ops (RFC 7517 section 4.3), when present, lists every operation
	// the key is meant for: a key published for encryption, or for none,
	// verifies nothing, whatever its use says.
	if _, ok := jk.Get(jwk.KeyOpsKey); ok && !slices.Contains(jk.KeyOps(), jwk.KeyOpVerify) {
		return nil, fmt.Errorf("key_ops %v do not include verify", jk.KeyOps())
	}
	alg := jwa.SignatureAlgorithm(jk.Algorithm().String())
	if alg == "" {
		return nil, errors.New("no alg: keys must declare their algorithm")
	}
	if !c.algs[alg] {
		return nil, fmt.Errorf("alg %q not allowed", alg)
	}
	var raw any
	if err := jk.Raw(&raw); err != nil {
		return nil, fmt.Errorf("raw key: %w", err)
	}
	ok := false
	switch pk := raw.(type) {
	case ed25519.PublicKey:
		ok = alg == jwa.EdDSA && len(pk) == ed25519.PublicKeySize
	case *ecdsa.PublicKey:
		ok = alg == jwa.ES256 && pk.Curve == elliptic.P256() ||
			alg == jwa.ES384 && pk.Curve == elliptic.P384() ||
			alg == jwa.ES512 && pk.Curve == elliptic.P521()
	case *rsa.PublicKey:
		ok = (alg == jwa.RS256 || alg == jwa.RS384 || alg == jwa.RS512 || alg == jwa.PS256 ||
			alg == jwa.PS384 || alg == jwa.PS512) && pk.N.BitLen() >= 2048
	default:
		return nil, fmt.Errorf("key type %T is not a public signature key", raw)
	}
	if !ok {
		return nil, fmt.Errorf("key type %T does not fit alg %s", raw, alg)
	}
	tp, err := jk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("thumbprint: %w", err)
	}
	return &Key{Kid: kid, Alg: alg, Public: raw, thumb: string(tp)}, nil
}
