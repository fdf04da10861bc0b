package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// fakeOIDC is an OpenID Connect provider standing in for an outside party:
// discovery, JWKS, an /authorize endpoint that "logs the user in" at once and
// redirects back with a code, and a /token endpoint that checks the client
// credentials, the redirect URI and the PKCE verifier before returning an
// RS256 ID token carrying the nonce from the authorization request.
type fakeOIDC struct {
	srv          *httptest.Server
	clientID     string
	clientSecret string
	redirectURL  string
	key          jwk.Key // private, with kid and alg
	jwks         []byte

	mu         sync.Mutex
	next       oidcUser            // who the next /authorize logs in
	codes      map[string]oidcCode // issued, not yet redeemed
	problems   []string            // protocol violations seen from the client
	lastAuth   url.Values          // query of the last /authorize request
	tokenCalls int                 // requests to /token
}

type oidcUser struct {
	Subject, Email, Name string
}

type oidcCode struct {
	user        oidcUser
	challenge   string
	nonce       string
	redirectURI string
}

func newFakeOIDC(clientID, clientSecret string) (*fakeOIDC, error) {
	raw, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	key, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, err
	}
	_ = key.Set(jwk.KeyIDKey, "fake-oidc-1")
	_ = key.Set(jwk.AlgorithmKey, jwa.RS256)
	_ = key.Set(jwk.KeyUsageKey, "sig")
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	p := &fakeOIDC{clientID: clientID, clientSecret: clientSecret, key: key, jwks: jwks, codes: map[string]oidcCode{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(p.jwks)
	})
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	p.srv = httptest.NewServer(mux)
	return p, nil
}

func (p *fakeOIDC) issuer() string { return p.srv.URL }

func (p *fakeOIDC) close() { p.srv.Close() }

// loginAs sets who the next authorization request authenticates.
func (p *fakeOIDC) loginAs(u oidcUser) {
	p.mu.Lock()
	p.next = u
	p.mu.Unlock()
}

// takeProblems returns and clears the protocol violations recorded so far.
func (p *fakeOIDC) takeProblems() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.problems
	p.problems = nil
	return out
}

func (p *fakeOIDC) lastAuthorize() url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastAuth
}

func (p *fakeOIDC) problem(w http.ResponseWriter, status int, code, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.mu.Lock()
	p.problems = append(p.problems, code+": "+msg)
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": msg})
}

func (p *fakeOIDC) discovery(w http.ResponseWriter, _ *http.Request) {
	iss := p.issuer()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                iss,
		"authorization_endpoint":                iss + "/authorize",
		"token_endpoint":                        iss + "/token",
		"jwks_uri":                              iss + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
		"scopes_supported":                      []string{"openid", "email", "profile"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"grant_types_supported":                 []string{"authorization_code"},
	})
}

func (p *fakeOIDC) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	p.lastAuth = q
	u := p.next
	p.mu.Unlock()
	switch {
	case q.Get("response_type") != "code":
		p.problem(w, 400, "unsupported_response_type", "response_type %q", q.Get("response_type"))
	case q.Get("client_id") != p.clientID:
		p.problem(w, 400, "invalid_client", "client_id %q", q.Get("client_id"))
	case q.Get("redirect_uri") != p.redirectURL:
		p.problem(w, 400, "invalid_request", "redirect_uri %q, registered %q", q.Get("redirect_uri"), p.redirectURL)
	case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		p.problem(w, 400, "invalid_request", "PKCE S256 required, got method %q", q.Get("code_challenge_method"))
	case q.Get("state") == "":
		p.problem(w, 400, "invalid_request", "no state")
	case q.Get("nonce") == "":
		p.problem(w, 400, "invalid_request", "no nonce")
	case u.Subject == "":
		p.problem(w, 400, "access_denied", "no user set with loginAs")
	default:
		code := randToken(16)
		p.mu.Lock()
		p.codes[code] = oidcCode{user: u, challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), redirectURI: q.Get("redirect_uri")}
		p.mu.Unlock()
		back, _ := url.Parse(q.Get("redirect_uri"))
		bq := back.Query()
		bq.Set("code", code)
		bq.Set("state", q.Get("state"))
		back.RawQuery = bq.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
	}
}

// tokenRequests returns how many requests /token has received.
func (p *fakeOIDC) tokenRequests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokenCalls
}

func (p *fakeOIDC) token(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.tokenCalls++
	p.mu.Unlock()
	if err := r.ParseForm(); err != nil {
		p.problem(w, 400, "invalid_request", "form: %v", err)
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		// RFC 6749 2.3.1: client credentials are form-urlencoded inside Basic.
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != p.clientID || subtle.ConstantTimeCompare([]byte(secret), []byte(p.clientSecret)) != 1 {
		p.problem(w, 401, "invalid_client", "client authentication failed for %q", id)
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "authorization_code" {
		p.problem(w, 400, "unsupported_grant_type", "grant_type %q", gt)
		return
	}
	code := r.PostForm.Get("code")
	p.mu.Lock()
	c, found := p.codes[code]
	delete(p.codes, code) // a code is redeemable once
	p.mu.Unlock()
	if !found {
		p.problem(w, 400, "invalid_grant", "unknown or already redeemed code")
		return
	}
	if ru := r.PostForm.Get("redirect_uri"); ru != c.redirectURI {
		p.problem(w, 400, "invalid_grant", "redirect_uri %q differs from the authorization request's %q", ru, c.redirectURI)
		return
	}
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
		p.problem(w, 400, "invalid_grant", "PKCE code_verifier does not match the code_challenge")
		return
	}
	now := time.Now()
	tok, err := jwt.NewBuilder().
		Issuer(p.issuer()).
		Subject(c.user.Subject).
		Audience([]string{p.clientID}).
		IssuedAt(now).
		Expiration(now.Add(5*time.Minute)).
		Claim("nonce", c.nonce).
		Claim("email", c.user.Email).
		Claim("email_verified", true).
		Claim("name", c.user.Name).
		Build()
	if err != nil {
		p.problem(w, 500, "server_error", "build id token: %v", err)
		return
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256, p.key))
	if err != nil {
		p.problem(w, 500, "server_error", "sign id token: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": randToken(16),
		"token_type":   "Bearer",
		"expires_in":   300,
		"id_token":     string(signed),
	})
}
