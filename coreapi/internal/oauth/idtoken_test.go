package oauth_test

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestIDTokenChecks pins the checks of an ID token that go-oidc makes
// for the callback (OpenID Connect Core 3.1.3.7): its issuer must be the
// provider's, its audience this client, it must not have expired, and it
// must be signed by a key of the provider's key set with an algorithm
// the provider announces (RS256 here): not unsigned ("none"), not HMAC
// keyed with the provider's public key (algorithm confusion), not by
// another key under the provider's kid. Each is refused with 502
// invalid_id_token and nothing is created; a token without the flow's
// nonce is 400 nonce_mismatch.
func TestIDTokenChecks(t *testing.T) {
	x := start(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := jwk.FromRaw(other)
	if err != nil {
		t.Fatal(err)
	}
	_ = otherKey.Set(jwk.KeyIDKey, "idp-key") // the provider's kid
	var priv rsa.PrivateKey
	if err := x.idp.Key.Raw(&priv); err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	// handMade signs a token's claims as alg says, with the provider's kid.
	handMade := func(alg string, sign func([]byte) []byte) func(jwt.Token) ([]byte, error) {
		return func(tok jwt.Token) ([]byte, error) {
			claims, err := json.Marshal(tok)
			if err != nil {
				return nil, err
			}
			head, _ := json.Marshal(map[string]string{"alg": alg, "kid": "idp-key", "typ": "JWT"})
			in := base64.RawURLEncoding.EncodeToString(head) + "." + base64.RawURLEncoding.EncodeToString(claims)
			return []byte(in + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(in)))), nil
		}
	}
	for _, tc := range []struct {
		name   string
		claims map[string]any
		sign   func(jwt.Token) ([]byte, error)
		code   string
	}{
		{name: "another issuer", claims: map[string]any{"iss": "https://idp.example.net"}},
		{name: "the issuer with a trailing slash", claims: map[string]any{"iss": x.idp.URL + "/"}},
		{name: "another audience only", claims: map[string]any{"aud": []string{"other-client"}}},
		{name: "no audience", claims: map[string]any{"aud": nil}},
		{name: "expired", claims: map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}},
		{name: "no expiry", claims: map[string]any{"exp": nil}},
		{name: "unsigned", sign: handMade("none", func([]byte) []byte { return nil })},
		{name: "HS256 keyed with the public key", sign: handMade("HS256", func(in []byte) []byte {
			m := hmac.New(sha256.New, pubDER)
			m.Write(in)
			return m.Sum(nil)
		})},
		{name: "another key under the provider's kid", sign: func(tok jwt.Token) ([]byte, error) {
			return jwt.Sign(tok, jwt.WithKey(jwa.RS256, otherKey))
		}},
		{name: "no nonce", claims: map[string]any{"nonce": nil}, code: problem.CodeNonceMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x.idp.Mu.Lock()
			x.idp.Claims, x.idp.Sign = tc.claims, tc.sign
			x.idp.Mu.Unlock()
			st := x.begin(t, "")
			r := x.callback(t, x.approve(t, st), st.cookie)
			status, code := http.StatusBadGateway, problem.CodeInvalidIDToken
			if tc.code != "" {
				status, code = http.StatusBadRequest, tc.code
			}
			if r.Status != status || r.Problem(t).Code != code {
				t.Fatalf("callback: %d %s, want %d %s", r.Status, r.Body, status, code)
			}
			if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
				t.Errorf("users = %d, want 0 (none created)", n)
			}
		})
	}
	// The same provider, with its own claims and key, signs in.
	x.idp.Mu.Lock()
	x.idp.Claims, x.idp.Sign = nil, nil
	x.idp.Mu.Unlock()
	x.finish(t, x.begin(t, ""))
}

// TestIDTokenClaimNamesExact: the callback reads an ID token's claims by
// their exact names, each named once (RFC 7519 sections 4 and 7.3).
// encoding/json alone matched a member in another letter case, or with
// Unicode folding ("ſub" for sub), to the claim, and let the last of a
// repeated name win: a token with no email_verified but an
// "Email_Verified": true (a claim of another name, such as one a provider
// maps from a profile attribute its user edits) vouched for the address,
// and one whose sub was the signer's own user but which also carried
// "ſub" named another subject entered that subject's account. Each is now
// 502 invalid_id_token, nothing created, linked or opened.
func TestIDTokenClaimNamesExact(t *testing.T) {
	x := start(t)
	var priv rsa.PrivateKey
	if err := x.idp.Key.Raw(&priv); err != nil {
		t.Fatal(err)
	}
	// withMembers signs the token's claims, with the members extra
	// appended as written, under the provider's key and kid.
	withMembers := func(extra string) func(jwt.Token) ([]byte, error) {
		return func(tok jwt.Token) ([]byte, error) {
			claims, err := json.Marshal(tok)
			if err != nil {
				return nil, err
			}
			claims = append(claims[:len(claims)-1], ","+extra+"}"...)
			head, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": "idp-key", "typ": "JWT"})
			in := base64.RawURLEncoding.EncodeToString(head) + "." + base64.RawURLEncoding.EncodeToString(claims)
			sum := sha256.Sum256([]byte(in))
			sig, err := rsa.SignPKCS1v15(rand.Reader, &priv, crypto.SHA256, sum[:])
			if err != nil {
				return nil, err
			}
			return []byte(in + "." + base64.RawURLEncoding.EncodeToString(sig)), nil
		}
	}
	refused := func(t *testing.T, claims map[string]any, extra string) {
		t.Helper()
		x.idp.Mu.Lock()
		x.idp.Claims, x.idp.Sign = claims, withMembers(extra)
		x.idp.Mu.Unlock()
		st := x.begin(t, "")
		r := x.callback(t, x.approve(t, st), st.cookie)
		if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeInvalidIDToken {
			t.Errorf("callback: %d %s, want 502 %s", r.Status, r.Body, problem.CodeInvalidIDToken)
		}
	}
	for _, tc := range []struct {
		name   string
		claims map[string]any
		extra  string
	}{
		{"email_verified absent, Email_Verified true", map[string]any{"email_verified": nil}, `"Email_Verified":true`},
		{"email_verified false, then true", map[string]any{"email_verified": false}, `"email_verified":true`},
		{"email_verified false, escaped repeat true", map[string]any{"email_verified": false}, `"email\u005fverified":true`},
		{"email_verified absent, EMAIL_VERIFIED true", map[string]any{"email_verified": nil}, `"EMAIL_VERIFIED":true`},
		{"another address as Email", nil, `"Email":"victim@example.com"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused(t, tc.claims, tc.extra)
			if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
				t.Errorf("users = %d, want 0 (none created)", n)
			}
		})
	}

	// The provider's user idp-user-1 signs in and has an account.
	x.idp.Mu.Lock()
	x.idp.Claims, x.idp.Sign = nil, nil
	x.idp.Mu.Unlock()
	victim := sub(t, x.finish(t, x.begin(t, "")).AccessToken)
	// Another of its users, whose token also names idp-user-1 under a
	// name that folds onto sub.
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email = "idp-attacker", "attacker@example.com"
	x.idp.Mu.Unlock()
	for _, extra := range []string{`"\u017fub":"idp-user-1"`, `"SUB":"idp-user-1"`, `"sub":"idp-user-1"`} {
		t.Run(extra, func(t *testing.T) {
			refused(t, nil, extra)
			if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, victim); n != 1 {
				t.Errorf("sessions of idp-user-1's account = %d, want 1 (its own sign-in only)", n)
			}
			if n := x.count(t, `SELECT count(*) FROM users`); n != 1 {
				t.Errorf("users = %d, want 1", n)
			}
		})
	}
	// Claims nobody reads may be named in any case, once.
	x.idp.Mu.Lock()
	x.idp.Sign = withMembers(`"Groups":["a"],"x-Custom":1`)
	x.idp.Mu.Unlock()
	x.finish(t, x.begin(t, ""))
}
