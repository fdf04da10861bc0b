package jwks

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/jwtclaims"
)

func pub(t *testing.T, raw any, kid string, alg jwa.KeyAlgorithm, use string) map[string]any {
	t.Helper()
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = k.Set(jwk.KeyIDKey, kid)
	if alg != nil {
		_ = k.Set(jwk.AlgorithmKey, alg)
	}
	if use != "" {
		_ = k.Set(jwk.KeyUsageKey, use)
	}
	b, _ := json.Marshal(k)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// keySet is the JWKS document of keys' public keys.
func keySet(t *testing.T, keys ...*testenv.Key) []byte {
	var ks []map[string]any
	for _, k := range keys {
		ks = append(ks, pub(t, k.Public, k.Kid, k.Alg, "sig"))
	}
	b, _ := json.Marshal(map[string]any{"keys": ks})
	return b
}

// serve starts a real HTTP server answering the JWKS in *body.
func serve(t *testing.T, body *atomic.Value, hits *atomic.Int64) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body.Load().([]byte))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func newClient(url string, now func() time.Time) *Client {
	return New(Options{URL: url, Algs: []string{"EdDSA", "ES256", "RS256"}, Interval: time.Hour, Cooldown: time.Minute,
		Timeout: 5 * time.Second, Now: now}, slog.New(slog.NewJSONHandler(io.Discard, nil)), metrics.New())
}

func TestOnlyUsableKeysKept(t *testing.T) {
	good := testenv.NewKey(t, "good", jwa.EdDSA)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	dup := testenv.NewKey(t, "dup", jwa.EdDSA)
	dup2 := testenv.NewKey(t, "dup", jwa.EdDSA)
	keys := []map[string]any{
		pub(t, good.Public, "good", jwa.EdDSA, "sig"),
		pub(t, ec.Public(), "ec-good", jwa.ES256, ""),
		pub(t, ec.Public(), "no-alg", nil, "sig"),
		pub(t, ec.Public(), "wrong-alg", jwa.RS256, "sig"),
		pub(t, ec384.Public(), "wrong-curve", jwa.ES256, "sig"),
		pub(t, ec.Public(), "enc-use", jwa.ES256, "enc"),
		pub(t, small.Public(), "rsa-1024", jwa.RS256, "sig"),
		pub(t, ec.Public(), "../etc/passwd", jwa.ES256, "sig"),
		pub(t, dup.Public, "dup", jwa.EdDSA, "sig"),
		pub(t, dup2.Public, "dup", jwa.EdDSA, "sig"),
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	var body atomic.Value
	body.Store(b)
	var hits atomic.Int64
	c := newClient(serve(t, &body, &hits), time.Now)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := c.Current().Keys
	if len(got) != 2 || got["good"] == nil || got["ec-good"] == nil {
		names := []string{}
		for k := range got {
			names = append(names, k)
		}
		t.Fatalf("usable keys = %v, want [good ec-good]", names)
	}
	if got["good"].Alg != jwa.EdDSA || got["ec-good"].Alg != jwa.ES256 {
		t.Fatalf("algs = %s %s", got["good"].Alg, got["ec-good"].Alg)
	}
}

// TestSecretMaterialRefused: a key set holding a private key ("d", or
// any other private member: a prime factor, a CRT value) or a symmetric
// one ("k") is refused whole, at the first load (nothing
// loaded, not ready) and at a refresh (the previous set stays), with an
// error naming the key: its keys are not trimmed to the public ones.
func TestSecretMaterialRefused(t *testing.T) {
	good := testenv.NewKey(t, "good", jwa.EdDSA)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	leaks := map[string]map[string]any{
		"ed-private":  pub(t, good.Private, "ed-private", jwa.EdDSA, "sig"),
		"ec-private":  pub(t, ec, "ec-private", jwa.ES256, "sig"),
		"rsa-private": pub(t, rk, "rsa-private", jwa.RS256, "sig"),
		"oct":         pub(t, []byte("0123456789abcdef0123456789abcdef"), "oct", jwa.HS256, "sig"),
	}
	// A public key with a private member but no "d" (RFC 7518 section
	// 6.3.2 asks for "d" with the others, but a broken serialiser need
	// not): one prime factor of n is the whole private key.
	rsaFull := pub(t, rk, "x", jwa.RS256, "sig")
	rsaFull["oth"] = []any{map[string]any{"r": rsaFull["p"], "d": rsaFull["dp"], "t": rsaFull["qi"]}}
	for _, member := range []string{"p", "q", "dp", "dq", "qi", "oth"} {
		kid := "rsa-public-with-" + member
		leak := pub(t, &rk.PublicKey, kid, jwa.RS256, "sig")
		leak[member] = rsaFull[member]
		leaks[kid] = leak
	}
	ecWithK := pub(t, &ec.PublicKey, "ec-public-with-k", jwa.ES256, "sig")
	ecWithK["k"] = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"
	leaks["ec-public-with-k"] = ecWithK
	for kid, leak := range leaks {
		t.Run(kid, func(t *testing.T) {
			doc := func(keys ...map[string]any) []byte {
				b, _ := json.Marshal(map[string]any{"keys": keys})
				return b
			}
			var body atomic.Value
			body.Store(doc(pub(t, good.Public, "good", jwa.EdDSA, "sig"), leak))
			var hits atomic.Int64
			c := newClient(serve(t, &body, &hits), time.Now)
			err := c.Refresh(context.Background())
			if !errors.Is(err, ErrSecretMaterial) || !strings.Contains(err.Error(), kid) {
				t.Fatalf("first load = %v, want ErrSecretMaterial naming %s", err, kid)
			}
			if c.Current() != nil || c.Ready() {
				t.Fatal("a set carrying secret material was loaded")
			}
			body.Store(doc(pub(t, good.Public, "good", jwa.EdDSA, "sig")))
			if err := c.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			prev := c.Current()
			body.Store(doc(leak, pub(t, good.Public, "good", jwa.EdDSA, "sig")))
			if err := c.Refresh(context.Background()); !errors.Is(err, ErrSecretMaterial) {
				t.Fatalf("refresh = %v, want ErrSecretMaterial", err)
			}
			if c.Current() != prev {
				t.Fatal("a refused refresh replaced the previous set")
			}
		})
	}
}

func TestLookupRefetchAndCooldown(t *testing.T) {
	k1 := testenv.NewKey(t, "k1", jwa.EdDSA)
	k2 := testenv.NewKey(t, "k2", jwa.EdDSA)
	var body atomic.Value
	body.Store(keySet(t, k1))
	var hits atomic.Int64
	var off atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(off.Load())) }
	c := newClient(serve(t, &body, &hits), now)
	ctx := context.Background()
	if _, err := c.Lookup(ctx, "k1"); !errors.Is(err, ErrNotLoaded) && err != nil {
		t.Fatalf("lookup before load: %v", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("lookup before load fetched %d times, want 1", hits.Load())
	}
	body.Store(keySet(t, k1, k2))
	if _, err := c.Lookup(ctx, "k2"); !errors.Is(err, ErrUnknownKid) {
		t.Fatalf("k2 within cooldown = %v, want ErrUnknownKid", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("fetched during cooldown: %d", hits.Load())
	}
	off.Store(int64(2 * time.Minute))
	if k, err := c.Lookup(ctx, "k2"); err != nil || k.Kid != "k2" {
		t.Fatalf("k2 after cooldown = %v, %v", k, err)
	}
	if _, err := c.Lookup(ctx, "../k2"); !errors.Is(err, ErrBadKid) {
		t.Fatalf("path kid = %v, want ErrBadKid", err)
	}
	if hits.Load() != 2 {
		t.Fatalf("fetches = %d, want 2", hits.Load())
	}
	// An unchanged key keeps its identity across refreshes (cached tokens
	// stay valid); a removed one disappears.
	before := c.Current().Keys["k1"]
	body.Store(keySet(t, k1))
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Current().Keys["k1"] != before {
		t.Fatal("unchanged key replaced by a new pointer")
	}
	if c.Current().Keys["k2"] != nil {
		t.Fatal("removed key still present")
	}
}

func TestBadJWKSKeepsOldSet(t *testing.T) {
	k1 := testenv.NewKey(t, "k1", jwa.EdDSA)
	b, _ := json.Marshal(map[string]any{"keys": []any{pub(t, k1.Public, "k1", jwa.EdDSA, "sig")}})
	var body atomic.Value
	body.Store(b)
	var hits atomic.Int64
	c := newClient(serve(t, &body, &hits), time.Now)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Not JSON; and JSON that is no JWK Set (RFC 7517 section 5: an
	// object whose "keys" is an array), which jwk.Parse took for an empty
	// set ({"keys":null}, {}) or a set of one (a lone JWK): a JWKS_URL
	// that names another document, or an answer rewritten on the way,
	// dropped every key and failed every token. {"keys":[]} is coreapi's
	// set without keys, and is taken.
	lone, _ := json.Marshal(pub(t, k1.Public, "k1", jwa.EdDSA, "sig"))
	for _, bad := range []string{"{not json", `{"keys":null}`, `{}`, `{"keys":{}}`, `[]`, `null`, string(lone)} {
		body.Store([]byte(bad))
		if err := c.Refresh(context.Background()); err == nil {
			t.Errorf("%s: bad JWKS accepted", bad)
		}
		if c.Current().Keys["k1"] == nil || !c.Ready() {
			t.Fatalf("%s: bad JWKS dropped the previous set", bad)
		}
	}
	body.Store([]byte(`{"keys":[]}`))
	if err := c.Refresh(context.Background()); err != nil || len(c.Current().Keys) != 0 {
		t.Fatalf("an empty key set: %v, keys %v; want it taken", err, c.Current().Keys)
	}
}

// TestKeysChanged: an announced change refetches at once, inside the
// unknown-kid cooldown, without joining a fetch already under way; and
// that older fetch, finishing last, does not put back the older set.
func TestKeysChanged(t *testing.T) {
	a := testenv.NewKey(t, "a", jwa.EdDSA)
	b := testenv.NewKey(t, "b", jwa.EdDSA)
	var body atomic.Value
	body.Store(keySet(t, a))
	var hits atomic.Int64
	gate := make(chan struct{})
	var blockNext atomic.Bool
	entered := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		b := body.Load().([]byte) // read the set as of the request
		if blockNext.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-gate
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	c := newClient(srv.URL, time.Now)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	// An unknown kid starts the cooldown (one refetch, then none for a
	// minute).
	if _, err := c.Lookup(context.Background(), "unknown"); !errors.Is(err, ErrUnknownKid) {
		t.Fatalf("lookup = %v", err)
	}

	// A background refresh reads the old set and is slow to finish.
	blockNext.Store(true)
	slow := make(chan error, 1)
	go func() { slow <- c.Refresh(context.Background()) }()
	<-entered
	body.Store(keySet(t, b))
	before := hits.Load()
	if err := c.KeysChanged(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hits.Load() == before {
		t.Fatal("KeysChanged did not fetch (joined the running fetch, or the cooldown applied)")
	}
	if s := c.Current(); s.Keys["b"] == nil || s.Keys["a"] != nil {
		t.Fatalf("after KeysChanged: keys %v, want only b", s.Keys)
	}
	close(gate)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if s := c.Current(); s.Keys["b"] == nil || s.Keys["a"] != nil {
		t.Fatalf("the older fetch finished last and put back %v, want only b", s.Keys)
	}
}

// TestKeysChangedRetriedUntilFetched: an announced change whose fetch
// fails (coreapi restarting) is not dropped: the refresher retries with
// its backoff until the set is fetched, instead of keeping a removed key
// until the next regular refresh.
func TestKeysChangedRetriedUntilFetched(t *testing.T) {
	a := testenv.NewKey(t, "a", jwa.EdDSA)
	b := testenv.NewKey(t, "b", jwa.EdDSA)
	var body atomic.Value
	body.Store(keySet(t, a, b))
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body.Load().([]byte))
	}))
	t.Cleanup(srv.Close)
	c := newClient(srv.URL, time.Now) // refreshes hourly
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go c.Run(ctx)
	select {
	case <-c.Loaded():
	case <-time.After(5 * time.Second):
		t.Fatal("key set not loaded")
	}

	failing.Store(true)
	body.Store(keySet(t, b)) // a is removed
	if err := c.KeysChanged(context.Background()); err == nil {
		t.Fatal("KeysChanged succeeded against a failing JWKS")
	}
	failing.Store(false)
	eventually.Within(t, 5*time.Second, func() error {
		if s := c.Current(); s.Keys["a"] != nil {
			return errors.New("the removed key is still in the set")
		}
		return nil
	})
}

// TestKeysChangedRetryJoinsNoOlderFetch: the retry of an announced
// change whose own fetch failed fetches anew: joined to a fetch already
// under way (an unknown kid's, a refresh), which read the set before the
// change, it would have taken that fetch's older set for the change's and
// kept a removed key until the next regular refresh.
func TestKeysChangedRetryJoinsNoOlderFetch(t *testing.T) {
	a := testenv.NewKey(t, "a", jwa.EdDSA)
	b := testenv.NewKey(t, "b", jwa.EdDSA)
	var body atomic.Value
	body.Store(keySet(t, a, b))
	var failing, blockNext atomic.Bool
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		set := body.Load().([]byte) // the set as of the request
		if blockNext.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-gate
		} else if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(srv.Close)
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	t.Cleanup(open)                   // before the server closes: it waits for the held request
	c := newClient(srv.URL, time.Now) // refreshes hourly
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go c.Run(ctx)
	select {
	case <-c.Loaded():
	case <-time.After(5 * time.Second):
		t.Fatal("key set not loaded")
	}

	// A fetch that read the set before the change, slow to finish. Loaded
	// is closed inside Run's first fetch, before that fetch leaves the
	// single flight: a Refresh in between joins it and fetches nothing, so
	// it is started again until one reaches the server.
	blockNext.Store(true)
	slow := make(chan error, 1)
	deadline := time.After(10 * time.Second)
held:
	for {
		go func() { slow <- c.Refresh(context.Background()) }()
		select {
		case <-entered:
			break held
		case err := <-slow: // joined the load's fetch
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("no Refresh reached the key server")
		}
	}
	failing.Store(true)
	body.Store(keySet(t, b)) // a is removed
	if err := c.KeysChanged(context.Background()); err == nil {
		t.Fatal("KeysChanged succeeded against a failing JWKS")
	}
	failing.Store(false)
	eventually.Within(t, 3*time.Second, func() error {
		if s := c.Current(); s.Keys["a"] != nil {
			return errors.New("the removed key is still in the set (the retry waits for the older fetch)")
		}
		return nil
	})
	open()
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if s := c.Current(); s.Keys["a"] != nil {
		t.Fatalf("the older fetch finished last and put back %v", s.Keys)
	}
}

// TestURLCredentialNotLogged: a JWKS_URL may carry a credential for the
// key server (https://user:password@...); it is sent, but the client's
// log lines show the URL with the password masked.
func TestURLCredentialNotLogged(t *testing.T) {
	var gotUser, gotPass string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotUser, gotPass, _ = r.BasicAuth()
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	t.Cleanup(srv.Close)
	u := strings.Replace(srv.URL, "http://", "http://keys:secretpw@", 1) + "/jwks.json"
	var logs bytes.Buffer
	c := New(Options{URL: u, Algs: []string{"EdDSA"}, Interval: time.Hour, Cooldown: time.Minute, Timeout: 5 * time.Second},
		slog.New(slog.NewJSONHandler(&logs, nil)), metrics.New())
	_ = c.Refresh(context.Background())
	if gotUser != "keys" || gotPass != "secretpw" {
		t.Fatalf("the key server got credential %q:%q", gotUser, gotPass)
	}
	if !strings.Contains(logs.String(), "keys:xxxxx@") || strings.Contains(logs.String(), "secretpw") {
		t.Fatalf("log lines: %s", logs.String())
	}
}

// TestRedirectNotFollowed: the key set URL answers with a redirect (to
// another server, here one serving another key). The key set is what
// every token is verified against: it is read from the configured URL
// only, so the redirect is an error, at the first load (nothing loaded,
// not ready) and at a refresh (the previous set stays), and the other
// server is never asked.
func TestRedirectNotFollowed(t *testing.T) {
	own := testenv.NewKey(t, "own", jwa.EdDSA)
	other := testenv.NewKey(t, "other", jwa.EdDSA)
	var otherBody atomic.Value
	otherBody.Store(keySet(t, other))
	var otherHits atomic.Int64
	elsewhere := serve(t, &otherBody, &otherHits)
	var redirect atomic.Bool
	redirect.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if redirect.Load() {
			http.Redirect(w, r, elsewhere+"/.well-known/jwks.json", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(keySet(t, own))
	}))
	t.Cleanup(srv.Close)
	c := newClient(srv.URL, time.Now)

	err := c.Refresh(context.Background())
	if !errors.Is(err, ErrRedirect) || !strings.Contains(err.Error(), elsewhere) {
		t.Fatalf("first fetch: err = %v, want ErrRedirect naming %s", err, elsewhere)
	}
	if c.Ready() || c.Current() != nil {
		t.Fatal("a key set was loaded through a redirect")
	}

	redirect.Store(false)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	redirect.Store(true)
	if err := c.Refresh(context.Background()); !errors.Is(err, ErrRedirect) {
		t.Fatalf("refresh: err = %v, want ErrRedirect", err)
	}
	if keys := c.Current().Keys; keys["own"] == nil || keys["other"] != nil {
		t.Fatalf("keys after a redirected refresh: %v, want the previous set (own)", keys)
	}
	if n := otherHits.Load(); n != 0 {
		t.Fatalf("the redirect's target was asked %d times", n)
	}
}

// TestOnSetEndsWithTheCurrentSet: two fetches that finish close together
// (a refresh and an announced change) each make their set current in
// order, and the last set handed to OnSet is the current one. Each fetch
// called OnSet on its own after storing its set, so the one that stored
// first could call it last, with the older set: the streams manager then
// closed the streams of a key the older set lacked (a key just added) as
// if it had been removed, while every request with their tokens passed.
func TestOnSetEndsWithTheCurrentSet(t *testing.T) {
	a := testenv.NewKey(t, "a", jwa.EdDSA)
	b := testenv.NewKey(t, "b", jwa.EdDSA)
	var body atomic.Value
	body.Store(keySet(t, a))
	var hits atomic.Int64
	c := newClient(serve(t, &body, &hits), time.Now)
	var (
		mu      sync.Mutex
		handed  []*Set
		hold    atomic.Bool
		entered = make(chan struct{}, 1)
		release = make(chan struct{})
	)
	c.opt.OnSet = func(s *Set) {
		if s.Keys["b"] == nil && hold.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-release
		}
		mu.Lock()
		handed = append(handed, s)
		mu.Unlock()
	}
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A refresh reads the set without b, makes it current and is slow to
	// hand it on.
	hold.Store(true)
	slow := make(chan error, 1)
	go func() { slow <- c.Refresh(context.Background()) }()
	<-entered
	// Meanwhile b is published and announced.
	body.Store(keySet(t, a, b))
	if err := c.KeysChanged(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	cur := c.Current()
	if cur.Keys["b"] == nil {
		t.Fatal("the announced change's set is not current")
	}
	mu.Lock()
	defer mu.Unlock()
	if last := handed[len(handed)-1]; last != cur {
		t.Fatalf("OnSet was last called with a set holding %d keys (b: %v), not the current one", len(last.Keys), last.Keys["b"] != nil)
	}
}

// TestConcurrentFetchesKeepKeyIdentity: a key that two overlapping fetches
// both find keeps one *Key from the first set that holds it to the next.
// Each fetch matched its keys with the set current when it parsed them, so
// one that parsed before another stored made a second pointer for a key
// just added: streams opened with a token of the first pointer were closed
// as if the key had been removed (the streams manager compares pointers),
// and the verifier verified its cached tokens again.
func TestConcurrentFetchesKeepKeyIdentity(t *testing.T) {
	a := testenv.NewKey(t, "a", jwa.EdDSA)
	b := testenv.NewKey(t, "b", jwa.EdDSA)
	var body atomic.Value
	var hits atomic.Int64
	c := newClient(serve(t, &body, &hits), time.Now)
	var (
		mu     sync.Mutex
		handed []*Set
	)
	c.opt.OnSet = func(s *Set) {
		mu.Lock()
		handed = append(handed, s)
		mu.Unlock()
	}
	ok := func() float64 { return testutil.ToFloat64(c.m.JWKSFetches.WithLabelValues("ok")) }
	ctx := context.Background()
	for range 5 {
		body.Store(keySet(t, a))
		if err := c.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		handed = nil
		mu.Unlock()
		body.Store(keySet(t, a, b))
		// Both fetches parse the set with b before either stores it.
		c.storeMu.Lock()
		errs := make(chan error, 2)
		for range 2 {
			base := ok()
			go func() { errs <- c.fetch(ctx) }()
			eventually.Within(t, 5*time.Second, func() error { return testenv.Want("fetches parsed", ok()-base, 1) })
		}
		c.storeMu.Unlock()
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		want := c.Current().Keys["b"]
		if want == nil {
			t.Fatal("b not in the current set")
		}
		mu.Lock()
		for _, s := range handed {
			if s.Keys["b"] != want {
				mu.Unlock()
				t.Fatalf("b had two pointers in the sets made current (%p and %p)", s.Keys["b"], want)
			}
		}
		mu.Unlock()
	}
}

// TestKeysAnnouncedOfTheHeldSet: auth.keys.changed naming the key set the
// proxy already holds fetches nothing. Every coreapi replica announces the
// keys it starts with, so a rollout of 20 replicas made every proxy fetch
// the same set 20 times. An announcement naming another set, or none,
// still fetches at once, so a removed key stops verifying.
func TestKeysAnnouncedOfTheHeldSet(t *testing.T) {
	a := testenv.NewKey(t, "a", jwa.EdDSA)
	b := testenv.NewKey(t, "b", jwa.EdDSA)
	var body atomic.Value
	body.Store(keySet(t, a, b))
	var hits atomic.Int64
	c := newClient(serve(t, &body, &hits), time.Now)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	digest := func() string {
		t.Helper()
		d, err := invalidation.KeySetDigest(body.Load().([]byte))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	announce := func(d string, wantFetch bool) {
		t.Helper()
		before := hits.Load()
		fetched, err := c.KeysAnnounced(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		if got := hits.Load() - before; fetched != wantFetch || got != map[bool]int64{false: 0, true: 1}[wantFetch] {
			t.Fatalf("announcement of %q: fetched = %v, %d fetches; want a fetch: %v", d, fetched, got, wantFetch)
		}
	}
	// A rollout of 20 replicas, each announcing the set it starts with.
	held := digest()
	for range 20 {
		announce(held, false)
	}
	announce("", true) // names no set (an older coreapi)
	// Key a removed: the announcement names the set without it.
	body.Store(keySet(t, b))
	announce(digest(), true)
	if s := c.Current(); s.Keys["a"] != nil || s.Keys["b"] == nil {
		t.Fatalf("after the removal was announced: keys %v, want only b", s.Keys)
	}
	announce(digest(), false) // the other replicas' announcements of it
	// An announcement naming a set the proxy does not hold (its own
	// coreapi has not reloaded yet) fetches, though that fetch gets the
	// set held.
	announce(held, true)
}

// TestKeysAnnouncedWhileAFetchRuns: an announcement naming the set held
// still fetches while another fetch is under way: that one may have read
// an older set and would store it after the announcement was skipped.
func TestKeysAnnouncedWhileAFetchRuns(t *testing.T) {
	a := testenv.NewKey(t, "a", jwa.EdDSA)
	var hits atomic.Int64
	gate := make(chan struct{})
	var block atomic.Bool
	entered := make(chan struct{}, 1)
	body := keySet(t, a)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		if block.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-gate
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	c := newClient(srv.URL, time.Now)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	held := c.Current().Digest
	block.Store(true)
	slow := make(chan error, 1)
	go func() { slow <- c.Refresh(context.Background()) }()
	<-entered
	before := hits.Load()
	fetched, err := c.KeysAnnounced(context.Background(), held)
	if err != nil {
		t.Fatal(err)
	}
	if !fetched || hits.Load() == before {
		t.Errorf("announcement of the held set while a fetch ran: fetched = %v, %d fetches; want one", fetched, hits.Load()-before)
	}
	close(gate)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if fetched, err := c.KeysAnnounced(context.Background(), held); err != nil || fetched {
		t.Errorf("announcement of the held set once no fetch runs: fetched = %v, %v; want none", fetched, err)
	}
}

// TestDuplicateKidDroppedWhateverTheOtherCopy: a kid published twice is
// dropped even when one copy is not usable here (an algorithm outside
// TOKEN_ALGS, an RSA key too small, a wrong curve): which copy was meant
// cannot be known, and proxies with other TOKEN_ALGS would otherwise
// verify the kid with different keys.
func TestDuplicateKidDroppedWhateverTheOtherCopy(t *testing.T) {
	ed := testenv.NewKey(t, "x", jwa.EdDSA)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	keys := []map[string]any{
		pub(t, ed.Public, "good", jwa.EdDSA, "sig"),
		// The unusable copy first, then the usable one, and the other way round.
		pub(t, small.Public(), "small-first", jwa.RS256, "sig"),
		pub(t, ed.Public, "small-first", jwa.EdDSA, "sig"),
		pub(t, ed.Public, "curve-last", jwa.EdDSA, "sig"),
		pub(t, ec384.Public(), "curve-last", jwa.ES256, "sig"),
		// ES256 is not among this proxy's algorithms.
		pub(t, ec.Public(), "alg-elsewhere", jwa.ES256, "sig"),
		pub(t, ed.Public, "alg-elsewhere", jwa.EdDSA, "sig"),
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	var body atomic.Value
	body.Store(b)
	var hits atomic.Int64
	c := New(Options{URL: serve(t, &body, &hits), Algs: []string{"EdDSA", "RS256"}, Interval: time.Hour, Cooldown: time.Minute,
		Timeout: 5 * time.Second}, slog.New(slog.NewJSONHandler(io.Discard, nil)), metrics.New())
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := c.Current().Keys
	for _, kid := range []string{"small-first", "curve-last", "alg-elsewhere"} {
		if got[kid] != nil {
			t.Errorf("kid %s published twice: kept (%s)", kid, got[kid].Alg)
		}
	}
	if got["good"] == nil || len(got) != 1 {
		t.Errorf("keys = %v, want only good", got)
	}
}

// TestLookupWaitsForAFetchUnderWay: a token of a key just announced
// (auth.keys.changed) that arrives while the change's fetch is under way
// waits for that fetch, whose set holds its kid. Lookup counted that
// fetch's start for the cooldown and found it not failed (it had not
// ended), so it answered ErrUnknownKid from the set being replaced: 401
// for a token of the new key.
func TestLookupWaitsForAFetchUnderWay(t *testing.T) {
	a, b := testenv.NewKey(t, "a", jwa.EdDSA), testenv.NewKey(t, "b", jwa.EdDSA)
	var body atomic.Value
	body.Store(keySet(t, a))
	gate := make(chan struct{})
	var block atomic.Bool
	entered := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if block.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-gate
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body.Load().([]byte))
	}))
	t.Cleanup(srv.Close)
	c := newClient(srv.URL, time.Now)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	body.Store(keySet(t, a, b))
	block.Store(true)
	changed := make(chan error, 1)
	go func() { changed <- c.KeysChanged(context.Background()) }()
	<-entered // the change's fetch is under way
	looked := make(chan error, 1)
	go func() { _, err := c.Lookup(context.Background(), "b"); looked <- err }()
	select {
	case err := <-looked:
		close(gate)
		t.Fatalf("lookup of the announced kid answered %v while the change's fetch was under way, want it to wait for the fetch", err)
	case <-time.After(500 * time.Millisecond):
	}
	close(gate)
	if err := <-changed; err != nil {
		t.Fatal(err)
	}
	if err := <-looked; err != nil {
		t.Fatalf("lookup of the announced kid after the change's fetch: %v", err)
	}
}

// TestKeyWithRepeatedMemberSkipped: a key of the set that names a member
// twice ("kid":"a",…,"kid":"b"), or one of the JWK members in another
// letter case ("KID"), was read by the JWK library one way (the last
// repeat wins; "KID" is no kid) where another reader of coreapi's key set
// takes the first: the proxy verified tokens under a kid, algorithm or key
// that the set does not plainly say. Such a key is not used, as the
// proxy refuses a token header that names a member twice; the others are.
func TestKeyWithRepeatedMemberSkipped(t *testing.T) {
	good := testenv.NewKey(t, "good", jwa.EdDSA)
	other := testenv.NewKey(t, "other", jwa.EdDSA)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	entry := func(m map[string]any) string {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// with adds `"name":value` at the end of an entry, after the member
	// of that name json.Marshal wrote.
	with := func(m map[string]any, name string, value any) string {
		e := entry(m)
		v, _ := json.Marshal(value)
		return e[:len(e)-1] + `,"` + name + `":` + string(v) + "}"
	}
	repeated := map[string]string{
		"kid":          with(pub(t, other.Public, "first", jwa.EdDSA, "sig"), "kid", "second"),
		"alg":          with(pub(t, ec.Public(), "alg-twice", jwa.EdDSA, "sig"), "alg", "ES256"),
		"x":            with(pub(t, other.Public, "x-twice", jwa.EdDSA, "sig"), "x", pub(t, good.Public, "good", jwa.EdDSA, "sig")["x"]),
		"use":          with(pub(t, other.Public, "use-twice", jwa.EdDSA, "enc"), "use", "sig"),
		"kid in upper": with(pub(t, other.Public, "upper", jwa.EdDSA, "sig"), "KID", "upper-too"),
	}
	for name, bad := range repeated {
		t.Run(name, func(t *testing.T) {
			doc := []byte(`{"keys":[` + entry(pub(t, good.Public, "good", jwa.EdDSA, "sig")) + "," + bad + "]}")
			var body atomic.Value
			body.Store(doc)
			var hits atomic.Int64
			c := newClient(serve(t, &body, &hits), time.Now)
			if err := c.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := c.Current().Keys
			if got["good"] == nil || len(got) != 1 {
				names := []string{}
				for k := range got {
					names = append(names, k)
				}
				t.Fatalf("keys = %v, want only good (the entry %s is not one key)", names, bad)
			}
		})
	}
	// The set's own "keys" named twice: which list is the set is as
	// unclear, and the whole document is refused (the previous set stays).
	var body atomic.Value
	body.Store(keySet(t, good))
	var hits atomic.Int64
	c := newClient(serve(t, &body, &hits), time.Now)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	prev := c.Current()
	body.Store([]byte(`{"keys":[` + entry(pub(t, good.Public, "good", jwa.EdDSA, "sig")) + `],"keys":[` +
		entry(pub(t, other.Public, "good", jwa.EdDSA, "sig")) + "]}"))
	if err := c.Refresh(context.Background()); !errors.Is(err, jwtclaims.ErrMemberName) {
		t.Fatalf("a set naming keys twice: %v, want ErrMemberName", err)
	}
	if c.Current() != prev {
		t.Fatal("a refused refresh replaced the previous set")
	}
}
