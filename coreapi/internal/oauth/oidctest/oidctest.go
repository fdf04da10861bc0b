// Package oidctest runs a fake OpenID Connect provider on loopback for
// tests of the sign-in through a provider.
package oidctest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Provider is a minimal OpenID Connect provider on loopback: discovery,
// an authorization endpoint that approves at once (as the configured user)
// and redirects back, a token endpoint that checks the client, the
// redirect_uri and PKCE, and a JWKS.
type Provider struct {
	t   testing.TB
	URL string
	// ClientID and Secret are the one client the provider knows.
	ClientID string
	Secret   string
	// Key signs the ID tokens (RS256).
	Key jwk.Key
	pub jwk.Set

	// Mu guards the fields below, which a test may change between
	// sign-ins.
	Mu    sync.Mutex
	codes map[string]grant
	// What the next approval says about the user.
	Subject, Email, Name string
	Verified             bool
	// HostedDomain, when set, is sent as Google's hd claim (the hosted
	// domain of the user's account); none when empty.
	HostedDomain string
	// NonceOverride, when set, replaces the nonce in issued ID tokens.
	NonceOverride string
	// Claims are set in issued ID tokens over the usual ones ("aud",
	// "azp", "sub", "email_verified", ...); a nil value removes a claim.
	Claims    map[string]any
	Exchanges int
	// DiscoveryStall delays each discovery answer (a slow or hung
	// provider); Discoveries counts the discovery requests.
	DiscoveryStall time.Duration
	Discoveries    int
	// SignedInAt is when the provider last authenticated the user (its
	// own session): ID tokens say so in auth_time, none when zero. An
	// authorization request with max_age authenticates the user again
	// (SignedInAt becomes now) when SignedInAt is zero or older, unless
	// IgnoreMaxAge. MaxAges are the max_age values the requests carried
	// ("" for none).
	SignedInAt   time.Time
	IgnoreMaxAge bool
	MaxAges      []string
	// DiscoveryPadding and KeysPadding add that many bytes of white
	// space to the discovery document and the key set (still valid JSON).
	DiscoveryPadding, KeysPadding int
	// DiscoveryError, when set, is the discovery's answer instead of the
	// document: a provider failing with a body of its choosing.
	DiscoveryError string
	// Endpoints replace members of the discovery document
	// ("authorization_endpoint", "token_endpoint", "jwks_uri").
	Endpoints map[string]string
	// IssParam makes the provider say in its discovery document that
	// every authorization response names its issuer (RFC 9207), and name
	// it in the redirect back.
	IssParam bool
	// Issuer, when set, is the issuer the provider names in place of URL:
	// in its discovery document (whose endpoints are then under it), its
	// ID tokens and RFC 9207's iss. An https one, such as Google's, is
	// reached through Route. Set it before the first discovery.
	Issuer string
	// MovedTo is where GET /moved redirects (302).
	MovedTo string
	// Sign, when set, signs issued ID tokens in place of the provider's
	// key (RS256): another key, another algorithm, none.
	Sign func(jwt.Token) ([]byte, error)
	// TokenAnswer, when set, answers every token request in place of the
	// checks (its form parsed): a failing provider's status, content type
	// and body.
	TokenAnswer func(r *http.Request) (status int, contentType, body string)
}

type grant struct {
	nonce, challenge, redirect, subject, email, name, hd string
	verified                                             bool
	authTime                                             time.Time
}

// New starts a provider, stopped when t ends. It approves as idp-user-1,
// oidc@example.com, verified, until told otherwise.
func New(t testing.TB) *Provider {
	t.Helper()
	raw, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = key.Set(jwk.KeyIDKey, "idp-key")
	_ = key.Set(jwk.AlgorithmKey, jwa.RS256)
	pubKey, _ := jwk.PublicKeyOf(key)
	pub := jwk.NewSet()
	_ = pub.AddKey(pubKey)
	f := &Provider{t: t, ClientID: "tollgate-client", Secret: "s3cret", Key: key, pub: pub, codes: map[string]grant{},
		Subject: "idp-user-1", Email: "oidc@example.com", Name: "Oidc User", Verified: true}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.URL = "http://" + ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", f.discovery)
	mux.HandleFunc("GET /authorize", f.authorize)
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("GET /moved", func(w http.ResponseWriter, r *http.Request) {
		f.Mu.Lock()
		to := f.MovedTo
		f.Mu.Unlock()
		http.Redirect(w, r, to, http.StatusFound)
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		f.Mu.Lock()
		pad := f.KeysPadding
		f.Mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(f.pub)
		_, _ = w.Write(bytes.Repeat([]byte{' '}, pad))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

// IssuerURL is the issuer the provider names: Issuer, or URL.
func (f *Provider) IssuerURL() string {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.issuer()
}

// issuer is IssuerURL with Mu held.
func (f *Provider) issuer() string {
	if f.Issuer != "" {
		return f.Issuer
	}
	return f.URL
}

// Route is a transport that sends the requests for the scheme and host of
// from to those of to (plain http to the provider's loopback URL), and
// every other request as it is: a client of a provider whose Issuer is
// one no test can listen at.
func Route(from, to string) http.RoundTripper {
	return routed{from: from, to: to}
}

type routed struct{ from, to string }

func (rt routed) RoundTrip(r *http.Request) (*http.Response, error) {
	from, err := url.Parse(rt.from)
	if err != nil {
		return nil, err
	}
	to, err := url.Parse(rt.to)
	if err != nil {
		return nil, err
	}
	if r.URL.Scheme == from.Scheme && r.URL.Host == from.Host {
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host, r.Host = to.Scheme, to.Host, to.Host
	}
	return http.DefaultTransport.RoundTrip(r)
}

func (f *Provider) discovery(w http.ResponseWriter, r *http.Request) {
	f.Mu.Lock()
	f.Discoveries++
	stall, pad, failure := f.DiscoveryStall, f.DiscoveryPadding, f.DiscoveryError
	endpoints := maps.Clone(f.Endpoints)
	issParam := f.IssParam
	base := f.issuer()
	f.Mu.Unlock()
	if failure != "" {
		http.Error(w, failure, http.StatusInternalServerError)
		return
	}
	if stall > 0 {
		select {
		case <-time.After(stall):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	doc := map[string]any{
		"issuer":                                base,
		"authorization_endpoint":                base + "/authorize",
		"token_endpoint":                        base + "/token",
		"jwks_uri":                              base + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
	}
	if issParam {
		doc["authorization_response_iss_parameter_supported"] = true
	}
	for k, v := range endpoints {
		doc[k] = v
	}
	_ = json.NewEncoder(w).Encode(doc)
	_, _ = w.Write(bytes.Repeat([]byte{' '}, pad))
}

func (f *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != f.ClientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	code := base64.RawURLEncoding.EncodeToString(b[:])
	f.Mu.Lock()
	f.MaxAges = append(f.MaxAges, q.Get("max_age"))
	if v := q.Get("max_age"); v != "" && !f.IgnoreMaxAge {
		if age, err := strconv.Atoi(v); err != nil || f.SignedInAt.IsZero() || time.Since(f.SignedInAt) > time.Duration(age)*time.Second {
			f.SignedInAt = time.Now() // the user signs in again
		}
	}
	f.codes[code] = grant{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri"),
		subject: f.Subject, email: f.Email, name: f.Name, hd: f.HostedDomain, verified: f.Verified, authTime: f.SignedInAt}
	issParam, iss := f.IssParam, f.issuer()
	f.Mu.Unlock()
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	bq := back.Query()
	bq.Set("code", code)
	bq.Set("state", q.Get("state"))
	if issParam {
		bq.Set("iss", iss)
	}
	back.RawQuery = bq.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (f *Provider) tokenError(w http.ResponseWriter, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}

func (f *Provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		f.tokenError(w, "invalid_request")
		return
	}
	f.Mu.Lock()
	answer := f.TokenAnswer
	f.Mu.Unlock()
	if answer != nil {
		status, ct, body := answer(r)
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != f.ClientID || secret != f.Secret {
		f.tokenError(w, "invalid_client")
		return
	}
	code := r.PostForm.Get("code")
	f.Mu.Lock()
	g, found := f.codes[code]
	delete(f.codes, code) // single use
	f.Exchanges++
	override := f.NonceOverride
	extra := maps.Clone(f.Claims)
	sign := f.Sign
	iss := f.issuer()
	f.Mu.Unlock()
	if sign == nil {
		sign = func(tok jwt.Token) ([]byte, error) { return jwt.Sign(tok, jwt.WithKey(jwa.RS256, f.Key)) }
	}
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case r.PostForm.Get("grant_type") != "authorization_code" || !found:
		f.tokenError(w, "invalid_grant")
		return
	case base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
		f.tokenError(w, "invalid_grant") // PKCE failed
		return
	case r.PostForm.Get("redirect_uri") != g.redirect:
		f.tokenError(w, "invalid_grant")
		return
	}
	nonce := g.nonce
	if override != "" {
		nonce = override
	}
	now := time.Now()
	tok, err := jwt.NewBuilder().Issuer(iss).Audience([]string{f.ClientID}).Subject(g.subject).
		IssuedAt(now).Expiration(now.Add(5*time.Minute)).
		Claim("nonce", nonce).Claim("email", g.email).Claim("email_verified", g.verified).Claim("name", g.name).Build()
	if err != nil {
		f.t.Errorf("fake idp: %v", err)
		return
	}
	if g.hd != "" {
		if err := tok.Set("hd", g.hd); err != nil {
			f.t.Errorf("fake idp: hd: %v", err)
			return
		}
	}
	if !g.authTime.IsZero() {
		if err := tok.Set("auth_time", g.authTime.Unix()); err != nil {
			f.t.Errorf("fake idp: auth_time: %v", err)
			return
		}
	}
	for k, v := range extra {
		if v == nil {
			err = tok.Remove(k)
		} else {
			err = tok.Set(k, v)
		}
		if err != nil {
			f.t.Errorf("fake idp: claim %s: %v", k, err)
			return
		}
	}
	signed, err := sign(tok)
	if err != nil {
		f.t.Errorf("fake idp: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": "idp-access", "token_type": "Bearer", "expires_in": 300, "id_token": string(signed),
	})
}
