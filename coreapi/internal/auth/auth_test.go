package auth_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys/keytest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

const (
	issuer   = "http://localhost:8080"
	audience = "tollgate"
	pw       = "correct horse battery"
)

// cheap argon2 parameters keep the suite fast; the benchmarks use OWASP's.
var cheap = password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

type env struct {
	*apitest.Env
	ring   *keys.Ring
	keyDir string
	svc    *auth.Service
	// passwords is the service's Hasher.
	passwords *password.Hasher
	// beforeIssue is the service's BeforeIssue hook (nil: none); set it
	// with onIssue.
	beforeIssue atomic.Pointer[func(sessionID string)]
	// skew moves the service's clock (auth.Options.Now) ahead of this
	// process's and the database's, in nanoseconds.
	skew atomic.Int64
}

// onIssue runs f in every token issue, between the session's step and
// the signing, until the test ends or onIssue(t, nil).
func (e *env) onIssue(t testing.TB, f func(sessionID string)) {
	t.Helper()
	if f == nil {
		e.beforeIssue.Store(nil)
		return
	}
	e.beforeIssue.Store(&f)
	t.Cleanup(func() { e.beforeIssue.Store(nil) })
}

// mfaKeys is the MFA_ENCRYPTION_KEYS of the test servers.
const mfaKeys = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="

func testSealer(t testing.TB, text string) *mfa.Sealer {
	t.Helper()
	ks, err := mfa.ParseKeys(text)
	if err != nil {
		t.Fatal(err)
	}
	s, err := mfa.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func start(t testing.TB, p password.Params, ringOpts ...keys.Option) *env {
	t.Helper()
	return startWithMaxAge(t, p, 0, ringOpts...)
}

// startWithMaxAge is start with sessions bounded to maxAge from their
// sign-in (SESSION_MAX_AGE; 0: none).
func startWithMaxAge(t testing.TB, p password.Params, maxAge time.Duration, ringOpts ...keys.Option) *env {
	t.Helper()
	return startWith(t, p, maxAge, auth.Lockout{}, ringOpts...)
}

// startWith is start with sessions bounded to maxAge and the lockout
// policy l (its zero value: auth.DefaultLockout).
func startWith(t testing.TB, p password.Params, maxAge time.Duration, l auth.Lockout, ringOpts ...keys.Option) *env {
	t.Helper()
	ring, dir := keytest.Ring(t, ringOpts...)
	e := &env{ring: ring, keyDir: dir}
	h := password.New(p, 0)
	e.passwords = h
	e.Env = apitest.Start(t, apitest.Options{Coverage: coverage, Passwords: h, Configure: func(o *httpapi.Options) {
		ss := sessions.New(o.Pool, time.Hour, 10*time.Second)
		ss.SetMaxAge(maxAge)
		svc, err := auth.New(auth.Options{
			Logger: o.Logger, Pool: o.Pool, Keys: ring, Passwords: h,
			Sessions: ss,
			Issuer:   issuer, Audience: audience, AccessTTL: 15 * time.Minute,
			MFA: testSealer(t, mfaKeys), Lockout: l,
			Now: func() time.Time { return time.Now().Add(time.Duration(e.skew.Load())) },
			BeforeIssue: func(sessionID string) {
				if f := e.beforeIssue.Load(); f != nil {
					(*f)(sessionID)
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		e.svc = svc
		o.Register = append(o.Register, svc.Register)
	}})
	return e
}

type tokens struct {
	AccessToken  string          `json:"access_token"`
	TokenType    string          `json:"token_type"`
	ExpiresIn    int64           `json:"expires_in"`
	RefreshToken string          `json:"refresh_token"`
	TenantID     string          `json:"tenant_id"`
	User         json.RawMessage `json:"user"`
	Tenant       json.RawMessage `json:"tenant"`
}

func (e *env) signup(t testing.TB, email, tenant string) tokens {
	t.Helper()
	r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
		map[string]string{"email": email, "password": pw, "tenant_name": tenant, "display_name": "D"})
	if r.Status != http.StatusCreated {
		t.Fatalf("signup %s: %d %s", email, r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	return tk
}

func (e *env) token(t testing.TB, body any) apitest.Response {
	t.Helper()
	return e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", body)
}

func (e *env) login(t testing.TB, email string) tokens {
	t.Helper()
	r := e.token(t, map[string]string{"grant_type": "password", "email": email, "password": pw})
	if r.Status != http.StatusOK {
		t.Fatalf("login %s: %d %s", email, r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	return tk
}

func (e *env) refresh(t testing.TB, rt string) apitest.Response {
	t.Helper()
	return e.token(t, map[string]string{"grant_type": "refresh_token", "refresh_token": rt})
}

// verify checks the access token against the served JWKS the way authproxy
// does and returns its claims.
func (e *env) verify(t testing.TB, tok string) jwt.Token {
	t.Helper()
	r := e.Get(t, nil, auth.JWKSPath)
	if r.Status != http.StatusOK {
		t.Fatalf("jwks: %d", r.Status)
	}
	set, err := jwk.Parse(r.Body)
	if err != nil {
		t.Fatalf("jwks: %v", err)
	}
	parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set, jws.WithRequireKid(true)),
		jwt.WithIssuer(issuer), jwt.WithAudience(audience), jwt.WithValidate(true))
	if err != nil {
		t.Fatalf("access token does not verify: %v", err)
	}
	return parsed
}

// claims decodes the token payload without verification.
func claims(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *env) identityFor(t testing.TB, tk tokens) *identity.Identity {
	t.Helper()
	c := claims(t, tk.AccessToken)
	id := e.IdentityOf(t, c["sub"].(string), c["tid"].(string))
	id.SessionID = c["sid"].(string)
	return &id
}

// waitLockedOrDone waits until n sessions of the database wait on a lock
// or done is closed, failing the test after 10 s.
func (e *env) waitLockedOrDone(t testing.TB, n int, done <-chan struct{}) {
	t.Helper()
	const q = `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return
		default:
		}
		if e.count(t, q) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d sessions wait on a lock, and the request has not finished", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) count(t testing.TB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.DB.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestSignupIssuesContractTokens(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	before := time.Now().Unix()
	tk := e.signup(t, "owner@example.com", "Acme")

	if tk.TokenType != "Bearer" || tk.ExpiresIn != 900 || tk.RefreshToken == "" || tk.TenantID == "" {
		t.Errorf("token response = %+v", tk)
	}
	var user struct{ ID, Email string }
	var tenant struct{ ID, Name string }
	_ = json.Unmarshal(tk.User, &user)
	_ = json.Unmarshal(tk.Tenant, &tenant)
	if user.Email != "owner@example.com" || tenant.Name != "Acme" || tenant.ID != tk.TenantID {
		t.Errorf("user %+v tenant %+v, want owner@example.com in Acme (%s)", user, tenant, tk.TenantID)
	}

	parsed := e.verify(t, tk.AccessToken)
	if parsed.Subject() != user.ID {
		t.Errorf("sub = %q, want %q", parsed.Subject(), user.ID)
	}
	c := claims(t, tk.AccessToken)
	var names []string
	for k := range c {
		names = append(names, k)
	}
	sort.Strings(names)
	if got, want := strings.Join(names, ","), "acr,amr,aud,auth_time,exp,iat,iss,jti,nbf,sid,sub,tid,tv"; got != want {
		t.Errorf("claims = %s, want exactly %s", got, want)
	}
	if c["tid"] != tk.TenantID || c["tv"] != float64(0) || c["aud"] != audience || c["iss"] != issuer {
		t.Errorf("claims = %v", c)
	}
	iat, exp := int64(c["iat"].(float64)), int64(c["exp"].(float64))
	if exp-iat != 900 || iat < before || c["nbf"] != c["iat"] {
		t.Errorf("iat %d nbf %v exp %d, want exp = iat + 900 and nbf = iat", iat, c["nbf"], exp)
	}
	msg, err := jws.Parse([]byte(tk.AccessToken))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.Type() != "at+jwt" || h.KeyID() != e.ring.SigningKeyID() || h.Algorithm() != "EdDSA" {
		t.Errorf("header typ=%q kid=%q alg=%q", h.Type(), h.KeyID(), h.Algorithm())
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND user_id = $2 AND tenant_id = $3`, c["sid"], user.ID, tk.TenantID); n != 1 {
		t.Errorf("session named by sid not found")
	}
	// The owner can use the tenant API right away.
	me := e.Get(t, e.identityFor(t, tk), "/api/v1/users/me")
	if me.Status != http.StatusOK || !strings.Contains(string(me.Body), `"owner"`) {
		t.Errorf("GET /users/me as the new owner: %d %s", me.Status, me.Body)
	}

	if r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
		map[string]string{"email": "OWNER@example.com", "password": pw, "tenant_name": "Again"}); r.Status != http.StatusConflict || r.Problem(t).Code != "email_taken" {
		t.Errorf("second signup with the same email: %d %s", r.Status, r.Body)
	}
	if n := e.count(t, `SELECT count(*) FROM tenants`); n != 1 {
		t.Errorf("tenants after a rejected signup = %d, want 1", n)
	}
}

// TestJWKSCacheShorterThanActivation: a cached copy of the JWKS expires
// well before a key published after it starts signing (a fifth of the
// activation delay, at most a minute), so a resource server honouring
// Cache-Control never holds a set without the signing key; with keys that
// sign at once, caches must revalidate.
func TestJWKSCacheShorterThanActivation(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		delay time.Duration
		want  string
	}{
		{5 * time.Minute, "public, max-age=60"},
		{time.Minute, "public, max-age=12"},
		{0, "public, max-age=0"},
	} {
		t.Run(tt.delay.String(), func(t *testing.T) {
			e := start(t, cheap, keys.WithActivationDelay(tt.delay))
			r := e.Get(t, nil, auth.JWKSPath)
			if r.Status != http.StatusOK {
				t.Fatalf("status %d", r.Status)
			}
			if cc := r.Header.Get("Cache-Control"); cc != tt.want {
				t.Errorf("activation delay %s: Cache-Control = %q, want %q", tt.delay, cc, tt.want)
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	r := e.Get(t, nil, auth.JWKSPath)
	if r.Status != http.StatusOK {
		t.Fatalf("status %d", r.Status)
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	r.JSON(t, &doc)
	if len(doc.Keys) != 1 || doc.Keys[0]["kid"] != e.ring.SigningKeyID() {
		t.Fatalf("keys = %v", doc.Keys)
	}
	for _, priv := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
		if _, ok := doc.Keys[0][priv]; ok {
			t.Errorf("JWKS carries private member %q", priv)
		}
	}
}

func TestPasswordGrantJSONAndForm(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	su := e.signup(t, "a@example.com", "A")
	tk := e.login(t, "A@Example.com") // email is case-insensitive
	if tk.TenantID != su.TenantID {
		t.Errorf("tenant = %s, want %s", tk.TenantID, su.TenantID)
	}
	e.verify(t, tk.AccessToken)

	form := url.Values{"grant_type": {"password"}, "username": {"a@example.com"}, "password": {pw}, "tenant_id": {su.TenantID}}
	r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: form.Encode(),
		ContentType: "application/x-www-form-urlencoded"})
	if r.Status != http.StatusOK {
		t.Fatalf("form password grant: %d %s", r.Status, r.Body)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	var ftk tokens
	r.JSON(t, &ftk)
	e.verify(t, ftk.AccessToken)

	form = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {ftk.RefreshToken}}
	r = e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: form.Encode(),
		ContentType: "application/x-www-form-urlencoded"})
	if r.Status != http.StatusOK {
		t.Errorf("form refresh grant: %d %s", r.Status, r.Body)
	}
	// Each login is its own session.
	if n := e.count(t, `SELECT count(*) FROM sessions`); n != 3 {
		t.Errorf("sessions = %d, want 3", n)
	}
}

// RFC 6749 section 3.1: a token request that names a parameter more than
// once, form-encoded or JSON, is 400 invalid_request naming it, before any
// work, whatever the values; an unrecognized parameter is ignored,
// repeated or not.
func TestRepeatedParameterRefused(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "p@example.com", "P")
	const form = "application/x-www-form-urlencoded"
	rt := url.QueryEscape(tk.RefreshToken)
	tests := []struct {
		name, body, ct, param string
	}{
		{"grant_type", "grant_type=password&grant_type=refresh_token&refresh_token=" + rt, form, "grant_type"},
		{"grant_type with the same value", "grant_type=refresh_token&refresh_token=" + rt + "&grant_type=refresh_token", form, "grant_type"},
		{"refresh_token", "grant_type=refresh_token&refresh_token=" + rt + "&refresh_token=" + strings.Repeat("A", 43), form, "refresh_token"},
		{"refresh_token once empty", "grant_type=refresh_token&refresh_token=" + rt + "&refresh_token=", form, "refresh_token"},
		{"password", "grant_type=password&username=p%40example.com&password=" + url.QueryEscape(pw) + "&password=x", form, "password"},
		{"email", "grant_type=password&email=p%40example.com&email=q%40example.com&password=" + url.QueryEscape(pw), form, "email"},
		{"email and username that differ", "grant_type=password&email=p%40example.com&username=q%40example.com&password=" + url.QueryEscape(pw), form, "username"},
		// U+017F LONG S: strings.EqualFold takes it for "s", lower() does not.
		{"email and username that lower() tells apart", "grant_type=password&email=s%40example.com&username=%C5%BF%40example.com&password=" + url.QueryEscape(pw), form, "username"},
		{"scope", "grant_type=client_credentials&scope=a&scope=b", form, "scope"},
		{"client_id", "grant_type=client_credentials&client_id=a&client_id=b&client_secret=s", form, "client_id"},
		{"JSON member", `{"grant_type":"refresh_token","refresh_token":"` + tk.RefreshToken + `","refresh_token":"x"}`, "", "refresh_token"},
		{"JSON member in another case", `{"grant_type":"password","Grant_Type":"refresh_token","refresh_token":"` + tk.RefreshToken + `"}`, "", "grant_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: tt.body, ContentType: tt.ct})
			if r.Status != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400; body %s", r.Status, r.Body)
			}
			p := r.Problem(t)
			if p.OAuthError != "invalid_request" || p.Code != "invalid_request" || !strings.Contains(p.OAuthErrorDescription, tt.param) ||
				len(p.Errors) != 1 || p.Errors[0].Field != tt.param {
				t.Errorf("want invalid_request naming %s, got %s", tt.param, r.Body)
			}
			if r.Stats.Queries != 0 {
				t.Errorf("ran %d queries, want the request refused before any", r.Stats.Queries)
			}
		})
	}
	// The refresh token was never used; an unrecognized parameter (RFC
	// 8707's resource, which may repeat) is ignored.
	r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", ContentType: form,
		Body: "grant_type=refresh_token&refresh_token=" + rt + "&resource=https%3A%2F%2Fa.example&resource=https%3A%2F%2Fb.example"})
	if r.Status != http.StatusOK {
		t.Fatalf("refresh with a repeated unrecognized parameter: %d %s", r.Status, r.Body)
	}
	// email and username naming one address in two letter cases are one
	// account: signed in.
	r = e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", ContentType: form,
		Body: "grant_type=password&email=p%40example.com&username=P%40Example.COM&password=" + url.QueryEscape(pw)})
	if r.Status != http.StatusOK {
		t.Fatalf("email and username in two letter cases: %d %s", r.Status, r.Body)
	}
}

// TestAccessTokenEndsWithItsSession: an access token issued for a
// session expires no later than the session (SESSION_MAX_AGE from its
// sign-in), whichever path issues it: a refresh, the successor handed
// out again within the grace window, a tenant switch, a password change.
// It used to get the full ACCESS_TOKEN_TTL, so a token issued in the
// session's last minutes kept acting for up to that long after the
// session's end, which no refresh can move and no revocation of the
// session (listed only while live) reaches.
func TestAccessTokenEndsWithItsSession(t *testing.T) {
	t.Parallel()
	e := startWithMaxAge(t, cheap, 20*time.Minute) // ACCESS_TOKEN_TTL 15m
	tk := e.signup(t, "end@example.com", "End")
	id := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, id.UserID, "member")
	// The session signed in 10 minutes ago: it ends in 10 minutes.
	if n := e.count(t, `UPDATE sessions SET created_at = created_at - interval '10 minutes' WHERE id = $1 RETURNING 1`, id.SessionID); n != 1 {
		t.Fatal("no session moved")
	}
	var ends int64
	if err := e.DB.Pool.QueryRow(context.Background(),
		`SELECT floor(extract(epoch FROM created_at + interval '20 minutes'))::bigint FROM sessions WHERE id = $1`, id.SessionID).Scan(&ends); err != nil {
		t.Fatal(err)
	}
	check := func(what string, r apitest.Response) tokens {
		t.Helper()
		if r.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
		var got tokens
		r.JSON(t, &got)
		c := claims(t, got.AccessToken)
		exp, iat := int64(c["exp"].(float64)), int64(c["iat"].(float64))
		if exp > ends {
			t.Errorf("%s: the access token expires %ds after its session", what, exp-ends)
		}
		if exp <= iat || got.ExpiresIn != exp-iat {
			t.Errorf("%s: exp %d, iat %d, expires_in %d; want expires_in exp-iat > 0", what, exp, iat, got.ExpiresIn)
		}
		return got
	}
	rotated := check("refresh", e.refresh(t, tk.RefreshToken))
	check("the successor again within the grace window", e.refresh(t, tk.RefreshToken))
	id = e.identityFor(t, rotated)
	switched := check("tenant switch", e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant",
		map[string]string{"tenant_id": second.ID, "refresh_token": rotated.RefreshToken}))
	check("password change", e.Send(t, e.identityFor(t, switched), http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": pw, "new_password": "a brand new password"}))
}

func TestRefreshRotates(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "r@example.com", "R")
	r := e.refresh(t, tk.RefreshToken)
	if r.Status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	var next tokens
	r.JSON(t, &next)
	if next.RefreshToken == tk.RefreshToken {
		t.Error("refresh token not rotated")
	}
	a, b := claims(t, tk.AccessToken), claims(t, next.AccessToken)
	if a["sid"] != b["sid"] || a["sub"] != b["sub"] || a["tid"] != b["tid"] || a["jti"] == b["jti"] {
		t.Errorf("claims before %v after %v: want same sid/sub/tid, new jti", a, b)
	}
	e.verify(t, next.AccessToken)
}

// TestRefreshNamingAnotherTenantRefused: a refresh token is of one
// session, signed in to one tenant, and a refresh keeps it there. A
// refresh that names another tenant (tenant_id, as the password grant
// takes it) is refused, 400 invalid_request naming tenant_id, before the
// token is looked at: it was answered with tokens of the session's own
// tenant, so a client that asked for tenant B acted in tenant A without a
// word. The token is not spent: it refreshes afterwards, in its tenant.
func TestRefreshNamingAnotherTenantRefused(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "rt@example.com", "First")
	id := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second") // the user is a member there too
	e.SeedMember(t, second.ID, id.UserID, "member")
	stranger := e.SeedTenant(t, "Stranger")
	for _, tid := range []string{second.ID, stranger.ID} {
		r := e.token(t, map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken, "tenant_id": tid})
		apitest.WantProblem(t, r, http.StatusBadRequest, "invalid_request")
		if !strings.Contains(string(r.Body), "tenant_id") {
			t.Errorf("refresh naming tenant %s: %s, want the field tenant_id named", tid, r.Body)
		}
	}
	r := e.token(t, map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken, "tenant_id": "nope"})
	apitest.WantProblem(t, r, http.StatusBadRequest, "invalid_request")
	if r.Stats.Queries != 0 {
		t.Errorf("a malformed tenant_id ran %d queries, want none", r.Stats.Queries)
	}
	if n := e.count(t, `SELECT count(*) FROM refresh_tokens WHERE token_hash = $1 AND replaced_by IS NULL AND rotated_at IS NULL`, sessions.Hash(tk.RefreshToken)); n != 1 {
		t.Fatal("a refused refresh spent the refresh token")
	}
	// Naming the session's own tenant, in either letter case (as the
	// password grant reads it), is a refresh like any other.
	r = e.token(t, map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken, "tenant_id": strings.ToUpper(tk.TenantID)})
	if r.Status != http.StatusOK {
		t.Fatalf("refresh naming its own tenant: %d %s", r.Status, r.Body)
	}
	var next tokens
	r.JSON(t, &next)
	if c := claims(t, next.AccessToken); c["tid"] != tk.TenantID || next.TenantID != tk.TenantID {
		t.Errorf("refresh: tid %v, tenant_id %s, want %s", c["tid"], next.TenantID, tk.TenantID)
	}
	if r := e.refresh(t, next.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("the successor: %d %s", r.Status, r.Body)
	}
}

// TestConcurrentRefreshOverHTTP: 20 clients refresh with one token at the
// same moment; all get 200 and the same successor; nobody is logged out.
func TestConcurrentRefreshOverHTTP(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "c@example.com", "C")
	const n = 20
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		got   = make([]tokens, n)
		codes = make([]int, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			r := e.refresh(t, tk.RefreshToken)
			codes[i] = r.Status
			_ = json.Unmarshal(r.Body, &got[i])
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if codes[i] != http.StatusOK {
			t.Fatalf("refresh %d: status %d", i, codes[i])
		}
		if got[i].RefreshToken != got[0].RefreshToken {
			t.Errorf("refresh %d got another successor", i)
		}
	}
	if r := e.refresh(t, got[0].RefreshToken); r.Status != http.StatusOK {
		t.Errorf("successor refresh: %d %s", r.Status, r.Body)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "b@example.com", "B")
	huge := strings.Repeat("x", 1_000_000)
	// b@example.com once normalized (IDNA drops soft hyphens from a
	// domain), but over the bound Canonical normalizes.
	padded := "b@exam" + strings.Repeat("\u00ad", mail.MaxCanonicalInput) + "ple.com"

	revoked := e.login(t, "b@example.com")
	if r := e.Send(t, e.identityFor(t, revoked), http.MethodPost, "/api/v1/auth/logout", nil); r.Status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	expired := e.login(t, "b@example.com")
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1`, sessions.Hash(expired.RefreshToken)); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		path   string
		body   any
		ct     string
		status int
		code   string
		noDB   bool // rejected before any query (and before any hashing)
	}{
		{"wrong password", "/api/v1/auth/token", map[string]string{"grant_type": "password", "email": "b@example.com", "password": "wrong password"}, "", 400, "invalid_grant", false},
		{"unknown account", "/api/v1/auth/token", map[string]string{"grant_type": "password", "email": "nobody@example.com", "password": "wrong password"}, "", 400, "invalid_grant", false},
		{"unknown grant_type", "/api/v1/auth/token", map[string]string{"grant_type": "client_credentials"}, "", 400, "unsupported_grant_type", true},
		{"missing grant_type", "/api/v1/auth/token", map[string]string{"email": "b@example.com"}, "", 400, "invalid_request", true},
		{"missing password", "/api/v1/auth/token", map[string]string{"grant_type": "password", "email": "b@example.com"}, "", 400, "invalid_request", true},
		{"missing email", "/api/v1/auth/token", map[string]string{"grant_type": "password", "password": "x"}, "", 400, "invalid_request", true},
		{"missing refresh_token", "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token"}, "", 400, "invalid_request", true},
		{"1 MB password at login", "/api/v1/auth/token", map[string]string{"grant_type": "password", "email": "b@example.com", "password": huge}, "", 400, "invalid_request", true},
		{"over-long address at login, right password", "/api/v1/auth/token", map[string]string{"grant_type": "password", "email": padded, "password": pw}, "", 400, "invalid_grant", true},
		{"over-long username at login, right password", "/api/v1/auth/token", map[string]string{"grant_type": "password", "username": padded, "password": pw}, "", 400, "invalid_grant", true},
		{"over-long address at signup", "/api/v1/auth/signup", map[string]string{"email": "n@exam" + strings.Repeat("\u00ad", mail.MaxCanonicalInput) + "ple.com", "password": pw, "tenant_name": "N"}, "", 422, "validation_failed", true},
		{"1 MB password at signup", "/api/v1/auth/signup", map[string]string{"email": "n@example.com", "password": huge, "tenant_name": "N"}, "", 422, "validation_failed", true},
		{"bad tenant_id", "/api/v1/auth/token", map[string]string{"grant_type": "password", "email": "b@example.com", "password": pw, "tenant_id": "nope"}, "", 400, "invalid_request", true},
		{"malformed refresh token", "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": "garbage"}, "", 400, "invalid_grant", true},
		{"unknown refresh token", "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": strings.Repeat("A", 43)}, "", 400, "invalid_grant", false},
		{"expired refresh token", "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": expired.RefreshToken}, "", 400, "invalid_grant", false},
		{"revoked refresh token", "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": revoked.RefreshToken}, "", 400, "invalid_grant", false},
		{"malformed JSON", "/api/v1/auth/token", `{"grant_type":`, "", 400, "malformed_json", true},
		{"text/plain", "/api/v1/auth/token", "grant_type=password", "text/plain", 415, "unsupported_media_type", true},
		{"signup missing fields", "/api/v1/auth/signup", map[string]string{}, "", 422, "validation_failed", true},
		{"signup short password", "/api/v1/auth/signup", map[string]string{"email": "s@example.com", "password": "short", "tenant_name": "S"}, "", 422, "validation_failed", true},
		{"signup password of eight spaces", "/api/v1/auth/signup", map[string]string{"email": "s@example.com", "password": "        ", "tenant_name": "S"}, "", 422, "validation_failed", true},
		{"signup password of other white space", "/api/v1/auth/signup", map[string]string{"email": "s@example.com", "password": "\t\u00a0\u3000\u2003\n\u2028\u205f ", "tenant_name": "S"}, "", 422, "validation_failed", true},
		{"signup bad email", "/api/v1/auth/signup", map[string]string{"email": "not an email", "password": pw, "tenant_name": "S"}, "", 422, "validation_failed", true},
		{"signup email over 254 octets", "/api/v1/auth/signup", map[string]string{"email": strings.Repeat("a", 248) + "@x.test", "password": pw, "tenant_name": "S"}, "", 422, "validation_failed", true},
		{"NUL in login email", "/api/v1/auth/token", `{"grant_type":"password","email":"b@example.com\u0000","password":"x"}`, "", 400, "bad_request", true},
		{"NUL in login password", "/api/v1/auth/token", `{"grant_type":"password","email":"b@example.com","password":"a\u0000b"}`, "", 400, "bad_request", true},
		{"NUL in form login", "/api/v1/auth/token", "grant_type=password&email=b%40example.com%00&password=x", "application/x-www-form-urlencoded", 400, "bad_request", true},
		{"invalid UTF-8 in form login", "/api/v1/auth/token", "grant_type=password&email=b%40example.com&password=%ff%fe", "application/x-www-form-urlencoded", 400, "bad_request", true},
		{"invalid UTF-8 in JSON login", "/api/v1/auth/token", "{\"grant_type\":\"password\",\"email\":\"b@example.com\",\"password\":\"\xff\"}", "", 400, "bad_request", true},
		{"NUL in signup tenant name", "/api/v1/auth/signup", `{"email":"z@example.com","password":"correct horse battery","tenant_name":"T\u0000"}`, "", 400, "bad_request", true},
		{"NUL in signup display name", "/api/v1/auth/signup", `{"email":"z@example.com","password":"correct horse battery","tenant_name":"T","display_name":"\u0000"}`, "", 400, "bad_request", true},
		{"signup tenant name with a bidi override", "/api/v1/auth/signup", `{"email":"z@example.com","password":"correct horse battery","tenant_name":"Acme\u202emoc.live"}`, "", 422, "validation_failed", true},
		{"signup tenant name of zero-width characters", "/api/v1/auth/signup", `{"email":"z@example.com","password":"correct horse battery","tenant_name":"\u200b\u200d"}`, "", 422, "validation_failed", true},
		{"signup display name of zero-width characters", "/api/v1/auth/signup", `{"email":"z@example.com","password":"correct horse battery","tenant_name":"T","display_name":"\u200b\ufeff"}`, "", 422, "validation_failed", true},
		{"signup display name with an escape", "/api/v1/auth/signup", `{"email":"z@example.com","password":"correct horse battery","tenant_name":"T","display_name":"\u001b[2JBob"}`, "", 422, "validation_failed", true},
		{"signup unknown field", "/api/v1/auth/signup", map[string]any{"email": "s@example.com", "password": pw, "tenant_name": "S", "admin": true}, "", 422, "unknown_field", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: tt.path, Body: tt.body, ContentType: tt.ct})
			if r.Status != tt.status {
				t.Fatalf("status = %d, want %d; body %s", r.Status, tt.status, r.Body)
			}
			if p := r.Problem(t); p.Code != tt.code || p.Detail == "" && p.Title == "" {
				t.Errorf("code = %q, want %q (detail %q)", p.Code, tt.code, p.Detail)
			}
			if tt.noDB && r.Stats.Queries != 0 {
				t.Errorf("ran %d queries, want the request refused before any", r.Stats.Queries)
			}
		})
	}
	// Nothing was lost: the account still signs in, its first session works.
	e.login(t, "b@example.com")
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("refresh after bad input: %d %s", r.Status, r.Body)
	}
}

func TestUnknownAccountLooksLikeWrongPassword(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "k@example.com", "K")
	wrong := e.token(t, map[string]string{"grant_type": "password", "email": "k@example.com", "password": "nope nope"}).Problem(t)
	unknown := e.token(t, map[string]string{"grant_type": "password", "email": "x@example.com", "password": "nope nope"}).Problem(t)
	if wrong.Status != unknown.Status || wrong.Code != unknown.Code || wrong.Detail != unknown.Detail || wrong.Title != unknown.Title {
		t.Errorf("wrong password %+v vs unknown account %+v", wrong, unknown)
	}
}

func TestLockoutBackoff(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "l@example.com", "L")
	bad := map[string]string{"grant_type": "password", "email": "l@example.com", "password": "wrong password"}
	for i := range auth.DefaultLockout().Threshold {
		if r := e.token(t, bad); r.Status != http.StatusBadRequest {
			t.Fatalf("attempt %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	for _, body := range []map[string]string{bad, {"grant_type": "password", "email": "l@example.com", "password": pw}} {
		r := e.token(t, body)
		if r.Status != http.StatusTooManyRequests {
			t.Fatalf("attempt while locked: %d %s", r.Status, r.Body)
		}
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("Retry-After = %q, want a positive number of seconds", r.Header.Get("Retry-After"))
		}
		if p := r.Problem(t); p.Code != "too_many_requests" {
			t.Errorf("code = %q", p.Code)
		}
	}
	// The count lives in PostgreSQL, shared by every replica; refused
	// attempts are not counted.
	if n := e.count(t, `SELECT failures FROM login_attempts WHERE client_ip <> ''`); n != auth.DefaultLockout().Threshold {
		t.Errorf("failures = %d, want %d", n, auth.DefaultLockout().Threshold)
	}
	// Once the lock has passed, one more guess is allowed, and it locks
	// again at once (for twice as long): no fresh round of guesses.
	unlock := func() {
		t.Helper()
		if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE login_attempts SET locked_until = now() - interval '1 second'`); err != nil {
			t.Fatal(err)
		}
	}
	unlock()
	if r := e.token(t, bad); r.Status != http.StatusBadRequest {
		t.Fatalf("first attempt after the lock: %d %s", r.Status, r.Body)
	}
	r := e.token(t, bad)
	if r.Status != http.StatusTooManyRequests {
		t.Fatalf("second attempt after the lock: %d %s, want 429", r.Status, r.Body)
	}
	if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 2 {
		t.Errorf("Retry-After after the 6th attempt = %d, want >= 2 (doubled)", ra)
	}
	// The right password works once unlocked and clears the client's count.
	unlock()
	e.login(t, "l@example.com")
	if n := e.count(t, `SELECT failures FROM login_attempts WHERE client_ip <> ''`); n != 0 {
		t.Errorf("failures after success = %d, want 0", n)
	}
}

// concurrentGuesses sends n wrong passwords for email at once from client
// ip and returns how many were evaluated (400) and refused (429).
func (e *env) concurrentGuesses(t *testing.T, path string, body func() any, as *identity.Identity, ip string, n int) (evaluated, refused int) {
	t.Helper()
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	startGun := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGun
			method := http.MethodPost
			if as != nil {
				method = http.MethodPut
			}
			r := e.Do(t, apitest.Request{Method: method, Path: path, Body: body(), As: as,
				ClientIP: ip})
			statuses <- r.Status
		}()
	}
	close(startGun)
	wg.Wait()
	close(statuses)
	for st := range statuses {
		switch st {
		case http.StatusBadRequest, http.StatusForbidden:
			evaluated++
		case http.StatusTooManyRequests:
			refused++
		default:
			t.Errorf("unexpected status %d", st)
		}
	}
	return evaluated, refused
}

// TestLockoutConcurrentGuesses: 40 wrong passwords sent at once are not all
// evaluated; exactly Threshold are, the rest get 429. The same for an
// address with no account, and for the current-password check of
// PUT /users/me/password. The first lock lasts an hour here, not the
// default second: the 40 requests of a loaded machine can take longer
// than a second to arrive, and a guess after a lock has lapsed is
// rightly evaluated.
func TestLockoutConcurrentGuesses(t *testing.T) {
	t.Parallel()
	policy := auth.DefaultLockout()
	policy.Base = time.Hour
	policy.Max = 2 * time.Hour
	e := startWith(t, cheap, 0, policy)
	tk := e.signup(t, "c@example.com", "C")
	const n = 40
	limit := policy.Threshold
	cases := []struct {
		name string
		path string
		as   *identity.Identity
		body func() any
	}{
		{"existing account", "/api/v1/auth/token", nil, func() any {
			return map[string]string{"grant_type": "password", "email": "c@example.com", "password": "wrong password"}
		}},
		{"unknown address", "/api/v1/auth/token", nil, func() any {
			return map[string]string{"grant_type": "password", "email": "ghost@example.com", "password": "wrong password"}
		}},
		{"current password", "/api/v1/users/me/password", e.identityFor(t, tk), func() any {
			return map[string]string{"current_password": "wrong password", "new_password": "another long password"}
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ip := "198.51.100." + strconv.Itoa(i+1)
			evaluated, refused := e.concurrentGuesses(t, tc.path, tc.body, tc.as, ip, n)
			if evaluated != limit || refused != n-limit {
				t.Fatalf("%d guesses at once: %d evaluated, %d refused; want %d evaluated, %d refused",
					n, evaluated, refused, limit, n-limit)
			}
		})
	}
}

// TestLockoutPerClient: an attacker who knows only the address locks out
// their own client, not the owner's; the address-wide slowdown holds back
// clients that failed, never a clean one.
func TestLockoutPerClient(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "v@example.com", "V")
	send := func(ip, password string) apitest.Response {
		t.Helper()
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token",
			Body:     map[string]string{"grant_type": "password", "email": "v@example.com", "password": password},
			ClientIP: ip})
	}
	// The attacker exhausts one client's budget.
	for i := range auth.DefaultLockout().Threshold {
		if r := send("203.0.113.9", "guess "+strconv.Itoa(i)); r.Status != http.StatusBadRequest {
			t.Fatalf("attacker guess %d: %d %s", i, r.Status, r.Body)
		}
	}
	if r := send("203.0.113.9", "guess again"); r.Status != http.StatusTooManyRequests {
		t.Fatalf("attacker after the threshold: %d, want 429", r.Status)
	}
	// The owner, from their own client, still signs in.
	if r := send("192.0.2.1", pw); r.Status != http.StatusOK {
		t.Fatalf("owner from another client: %d %s, want 200", r.Status, r.Body)
	}
	// Many clients together reach the address-wide threshold: from then
	// on a client that already failed is slowed down...
	// Each fresh client gets its guess (it has not failed yet); past the
	// threshold the address is locked for a few seconds.
	fails := auth.DefaultLockout().Threshold // the attacker's counted attempts so far (the owner's sign-in gave its own back)
	for i := 0; fails < auth.DefaultLockout().AccountThreshold+4; i++ {
		ip := "203.0.113." + strconv.Itoa(20+i)
		if r := send(ip, "guess"); r.Status != http.StatusBadRequest {
			t.Fatalf("distributed guess %d from %s: %d %s", i, ip, r.Status, r.Body)
		}
		fails++
	}
	if r := send("203.0.113.20", "guess"); r.Status != http.StatusTooManyRequests {
		t.Fatalf("a failing client past the address-wide threshold: %d %s, want 429", r.Status, r.Body)
	} else if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 1 || ra > int(auth.DefaultLockout().AccountMax/time.Second) {
		t.Errorf("address-wide Retry-After = %d, want 1..%d s", ra, int(auth.DefaultLockout().AccountMax/time.Second))
	}
	// ...but a clean client is not: the owner is never locked out by others.
	if r := send("192.0.2.77", pw); r.Status != http.StatusOK {
		t.Fatalf("owner from a clean client during the slowdown: %d %s, want 200", r.Status, r.Body)
	}
}

// TestLockoutUnknownAccount: an address with no account locks out after the
// same number of failures, with the same 429, so a lockout does not reveal
// which addresses have accounts.
func TestLockoutUnknownAccount(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	bad := map[string]string{"grant_type": "password", "email": "Nobody@Example.com", "password": "wrong password"}
	for i := range auth.DefaultLockout().Threshold {
		r := e.token(t, bad)
		if r.Status != http.StatusBadRequest {
			t.Fatalf("attempt %d: %d %s", i+1, r.Status, r.Body)
		}
		if p := r.Problem(t); p.Code != "invalid_grant" {
			t.Fatalf("attempt %d: code %q, want invalid_grant (as for a wrong password)", i+1, p.Code)
		}
	}
	// Another spelling of the same address is the same counter.
	r := e.token(t, map[string]string{"grant_type": "password", "email": " nobody@example.COM", "password": "x"})
	if r.Status != http.StatusTooManyRequests {
		t.Fatalf("attempt while locked: %d %s", r.Status, r.Body)
	}
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After = %q, want a positive number of seconds", r.Header.Get("Retry-After"))
	}
	if p := r.Problem(t); p.Code != "too_many_requests" {
		t.Errorf("code = %q", p.Code)
	}
	if n := e.count(t, `SELECT failures FROM login_attempts WHERE client_ip <> ''`); n != auth.DefaultLockout().Threshold {
		t.Errorf("failures = %d, want %d", n, auth.DefaultLockout().Threshold)
	}
	if n := e.count(t, `SELECT count(*) FROM login_attempts WHERE position('nobody' in encode(email_hash, 'escape')) > 0`); n != 0 {
		t.Error("login_attempts stores the address")
	}
	// Expired records are swept (the client's row and the address's row):
	// a window has passed since the last attempt and since the lock ended.
	if _, err := e.DB.Pool.Exec(context.Background(),
		`UPDATE login_attempts SET locked_until = now() - interval '1 day', last_attempt = now() - interval '1 day'`); err != nil {
		t.Fatal(err)
	}
	if n, err := e.svc.SweepLoginAttempts(context.Background()); err != nil || n != 2 {
		t.Fatalf("SweepLoginAttempts = %d, %v; want 2 rows", n, err)
	}
}

func TestLogoutLocal(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "o@example.com", "O")
	other := e.login(t, "o@example.com")
	id := e.identityFor(t, tk)
	if r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout", Body: map[string]string{"scope": "local"}, As: id}); r.Status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("refresh of a logged-out session: %d", r.Status)
	}
	if r := e.refresh(t, other.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("the other session was affected: %d", r.Status)
	}
	// The projection lists the revoked session for the proxy.
	r := e.Do(t, apitest.Request{Method: http.MethodGet, Path: identity.ProjectionPath + "/" + id.UserID + "?tenant_id=" + id.TenantID, Service: true})
	var p identity.Projection
	r.JSON(t, &p)
	if !p.SessionRevoked(id.SessionID) || p.TokenVersion != 0 {
		t.Errorf("projection = %+v, want session %s revoked and tv 0", p, id.SessionID)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = 'session.revoked'`, invalidation.UserSubject(id.UserID)); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
	if r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout?scope=everywhere", As: e.identityFor(t, other)}); r.Status != http.StatusUnprocessableEntity {
		t.Errorf("bad scope: %d", r.Status)
	}
	// A repeated scope is refused whatever the values, naming it, and
	// signs nothing out (the other session still refreshes below).
	for _, q := range []string{"scope=local&scope=global", "scope=global&scope=global", "scope=&scope=global"} {
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout?" + q, As: e.identityFor(t, other)})
		apitest.WantProblem(t, r, http.StatusBadRequest, "invalid_query")
		if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "scope" {
			t.Errorf("%s: errors = %+v, want scope named", q, p.Errors)
		}
	}
	// A scope in the body and another in the query is refused, naming it,
	// and signs nothing out: the body used to win in silence, so a
	// ?scope=local in the log recorded one session where every one ended.
	for _, c := range []struct{ query, body string }{{"local", "global"}, {"global", "local"}, {"local", "everywhere"}} {
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout?scope=" + c.query,
			Body: map[string]string{"scope": c.body}, As: e.identityFor(t, other)})
		apitest.WantProblem(t, r, http.StatusBadRequest, "invalid_request")
		if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "scope" {
			t.Errorf("query %s, body %s: errors = %+v, want scope named", c.query, c.body, p.Errors)
		}
	}
	if r := e.refresh(t, other.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("a refused logout signed the session out: %d", r.Status)
	}
	// The same scope in both is one scope.
	third := e.login(t, "o@example.com")
	if r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout?scope=local",
		Body: map[string]string{"scope": "local"}, As: e.identityFor(t, third)}); r.Status != http.StatusNoContent {
		t.Errorf("the same scope in the query and the body: %d %s", r.Status, r.Body)
	}
	if r := e.refresh(t, third.RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("refresh of the session signed out with scope in both: %d", r.Status)
	}
	if r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout"}); r.Status != http.StatusUnauthorized {
		t.Errorf("logout without identity: %d", r.Status)
	}
}

// TestLogoutEmptyScopeRefused: a scope sent without a value, in the
// query (?scope=, or the name alone) or the body ("scope": ""), is
// refused naming scope and signs nothing out: it was served as the
// default, local, so a sign-out everywhere whose value was lost on its
// way into the request ended one session and answered 204, and the other
// sessions stayed live. Leaving scope out still means local.
func TestLogoutEmptyScopeRefused(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "e@example.com", "E")
	id := e.identityFor(t, tk)
	for _, c := range []struct {
		query  string
		body   any
		status int
		code   string
	}{
		{"?scope=", nil, http.StatusBadRequest, "invalid_query"},
		{"?scope", nil, http.StatusBadRequest, "invalid_query"},
		{"?scope=", map[string]string{"scope": "global"}, http.StatusBadRequest, "invalid_query"},
		{"", map[string]string{"scope": ""}, http.StatusUnprocessableEntity, "validation_failed"},
		{"?scope=global", map[string]string{"scope": ""}, http.StatusUnprocessableEntity, "validation_failed"},
	} {
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout" + c.query, Body: c.body, As: id})
		apitest.WantProblem(t, r, c.status, c.code)
		if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "scope" {
			t.Errorf("%s %v: errors = %+v, want scope named", c.query, c.body, p.Errors)
		}
	}
	// scope in another letter case was ignored: a sign-out of this
	// session alone, where a reader of the URL that matches names without
	// regard to case saw one everywhere.
	for _, q := range []string{"?Scope=global", "?SCOPE=global", "?scope=local&sCope=global"} {
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout" + q, As: id})
		apitest.WantProblem(t, r, http.StatusBadRequest, "invalid_query")
		if p := r.Problem(t); len(p.Errors) != 1 || !strings.EqualFold(p.Errors[0].Field, "scope") || p.Errors[0].Field == "scope" {
			t.Errorf("%s: errors = %+v, want the parameter named as sent", q, p.Errors)
		}
	}
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusOK {
		t.Fatalf("a refused logout signed the session out: %d %s", r.Status, r.Body)
	}
}

func TestLogoutGlobal(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "g@example.com", "G")
	other := e.login(t, "g@example.com")
	id := e.identityFor(t, tk)
	if r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout?scope=global", As: id}); r.Status != http.StatusNoContent {
		t.Fatalf("logout global: %d %s", r.Status, r.Body)
	}
	for _, rt := range []string{tk.RefreshToken, other.RefreshToken} {
		if r := e.refresh(t, rt); r.Status != http.StatusBadRequest {
			t.Errorf("refresh after global logout: %d", r.Status)
		}
	}
	if n := e.count(t, `SELECT token_version FROM users WHERE id = $1`, id.UserID); n != 1 {
		t.Errorf("token_version = %d, want 1", n)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = 'user.logout_global'`, invalidation.UserSubject(id.UserID)); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
	// A new login carries the new token version.
	if c := claims(t, e.login(t, "g@example.com").AccessToken); c["tv"] != float64(1) {
		t.Errorf("tv after global logout = %v, want 1", c["tv"])
	}
}

func TestSwitchTenant(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "s@example.com", "First")
	id := e.identityFor(t, tk)
	other := e.signup(t, "other@example.com", "Other") // another user's session
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, id.UserID, "member")
	stranger := e.SeedTenant(t, "Stranger")

	r := e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": stranger.ID, "refresh_token": tk.RefreshToken})
	if r.Status != http.StatusForbidden {
		t.Errorf("switch to a tenant without membership: %d %s", r.Status, r.Body)
	}
	// The access token alone does not switch: the switch ends the
	// session's refresh token and hands out its successor, so the caller
	// shows it holds the current one (a stolen access token would
	// otherwise become a refresh token for the session's lifetime and log
	// its owner out).
	for _, bad := range []struct {
		body        map[string]string
		status      int
		code, field string
	}{
		{map[string]string{"tenant_id": second.ID}, http.StatusUnprocessableEntity, "validation_failed", "refresh_token"},
		{map[string]string{"tenant_id": second.ID, "refresh_token": "garbage"}, http.StatusBadRequest, "invalid_grant", ""},
		{map[string]string{"tenant_id": second.ID, "refresh_token": strings.Repeat("A", 43)}, http.StatusBadRequest, "invalid_grant", ""},
		{map[string]string{"tenant_id": second.ID, "refresh_token": other.RefreshToken}, http.StatusBadRequest, "invalid_grant", ""},
	} {
		r := e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", bad.body)
		apitest.WantProblem(t, r, bad.status, bad.code)
		if bad.field != "" && !strings.Contains(string(r.Body), bad.field) {
			t.Errorf("switch without a refresh token: %s, want the field %s named", r.Body, bad.field)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND tenant_id = $2`, id.SessionID, tk.TenantID); n != 1 {
		t.Fatal("a refused switch moved the session")
	}
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusOK {
		t.Fatalf("a refused switch ended the refresh token: %d %s", r.Status, r.Body)
	} else {
		var rotated tokens
		r.JSON(t, &rotated)
		// The token it was rotated from is no longer the session's.
		sw := e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": tk.RefreshToken})
		apitest.WantProblem(t, sw, http.StatusBadRequest, "invalid_grant")
		tk.RefreshToken = rotated.RefreshToken
	}
	r = e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": tk.RefreshToken})
	if r.Status != http.StatusOK {
		t.Fatalf("switch: %d %s", r.Status, r.Body)
	}
	var sw tokens
	r.JSON(t, &sw)
	c := e.verify(t, sw.AccessToken)
	if tid, _ := c.Get("tid"); tid != second.ID || sw.TenantID != second.ID {
		t.Errorf("tid = %v, want %s", tid, second.ID)
	}
	if sid, _ := c.Get("sid"); sid != id.SessionID {
		t.Errorf("sid = %v, want the same session %s", sid, id.SessionID)
	}
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("pre-switch refresh token still works: %d", r.Status)
	}
	r = e.refresh(t, sw.RefreshToken)
	var after tokens
	r.JSON(t, &after)
	if r.Status != http.StatusOK || after.TenantID != second.ID {
		t.Errorf("refresh after switch: %d tenant %s, want %s", r.Status, after.TenantID, second.ID)
	}
	for _, body := range []any{map[string]string{"tenant_id": "x", "refresh_token": sw.RefreshToken}, map[string]string{}} {
		if r := e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", body); r.Status != http.StatusUnprocessableEntity {
			t.Errorf("switch %v: %d", body, r.Status)
		}
	}
}

// TestSwitchTenantOfADisabledAccount: a tenant switch of a disabled
// account, whose bearer a proxy that has not yet heard of it still
// forwards, is refused with the answer its sign-in gets (403
// user_disabled), as a step-up and a password change are; it was 403
// forbidden "no active membership in that tenant", though the account
// was a member there. The session stays where it was.
func TestSwitchTenantOfADisabledAccount(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "off@example.com", "First")
	id := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, id.UserID, "member")
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE users SET status = 'disabled' WHERE id = $1`, id.UserID); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "sign-in", e.token(t, map[string]string{"grant_type": "password", "email": "off@example.com", "password": pw, "tenant_id": second.ID}),
		http.StatusForbidden, "user_disabled")
	r := e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": tk.RefreshToken})
	apitest.WantProblem(t, r, http.StatusForbidden, "user_disabled")
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND tenant_id = $2`, id.SessionID, tk.TenantID); n != 1 {
		t.Error("a refused switch moved the session")
	}
}

// TestSwitchedAwayTokenEndsWithItsSession: a tenant switch keeps the
// session (the same sid), so the access token issued for the tenant the
// caller left stays valid there until it expires. Signing the session out
// with the new tenant's token must end it in the old tenant as well: the
// projection of every tenant of the user lists the session as revoked,
// whichever tenant the session is bound to now.
func TestSwitchedAwayTokenEndsWithItsSession(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "switcher@example.com", "First")
	id := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, id.UserID, "member")
	r := e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": tk.RefreshToken})
	if r.Status != http.StatusOK {
		t.Fatalf("switch: %d %s", r.Status, r.Body)
	}
	var sw tokens
	r.JSON(t, &sw)
	projection := func(tenantID string) identity.Projection {
		t.Helper()
		r := e.Do(t, apitest.Request{Method: http.MethodGet, Path: identity.ProjectionPath + "/" + id.UserID + "?tenant_id=" + tenantID, Service: true})
		if r.Status != http.StatusOK {
			t.Fatalf("projection of %s: %d %s", tenantID, r.Status, r.Body)
		}
		var p identity.Projection
		r.JSON(t, &p)
		return p
	}
	if p := projection(tk.TenantID); p.SessionRevoked(id.SessionID) {
		t.Fatalf("the switch revoked the session in the tenant it left: %+v", p)
	}
	if r := e.Send(t, e.identityFor(t, sw), http.MethodPost, "/api/v1/auth/logout", nil); r.Status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	for _, tid := range []string{tk.TenantID, second.ID} {
		if p := projection(tid); !p.SessionRevoked(id.SessionID) {
			t.Errorf("after the sign-out, the projection in %s does not list session %s as revoked: the token issued there before the switch would still pass", tid, id.SessionID)
		}
	}
}

// TestSwitchTenantIsNoWayAroundReuseDetection: whoever stole a session's
// access and refresh tokens and switched it to the tenant it is already in
// holds the session's new refresh token. The owner's refresh token, ended
// by the switch, presented after the grace window is reuse as a rotated
// one is: the session ends for both, rather than the owner being told the
// token expired while the thief keeps the session for its lifetime.
func TestSwitchTenantIsNoWayAroundReuseDetection(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "laundered@example.com", "L")
	id := e.identityFor(t, tk)
	r := e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": tk.TenantID, "refresh_token": tk.RefreshToken})
	if r.Status != http.StatusOK {
		t.Fatalf("switch to the same tenant: %d %s", r.Status, r.Body)
	}
	var thief tokens
	r.JSON(t, &thief)
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE refresh_tokens SET rotated_at = now() - interval '1 minute' WHERE token_hash = $1`, sessions.Hash(tk.RefreshToken)); err != nil {
		t.Fatal(err)
	}
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Fatalf("the owner's ended token after grace: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}
	if r := e.refresh(t, thief.RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("the switch's refresh token after the reuse: %d %s, want 400", r.Status, r.Body)
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_reason = 'refresh_token_reuse'`, id.SessionID); n != 1 {
		t.Errorf("sessions revoked for reuse = %d, want 1", n)
	}
}

// TestSwitchTenantRefusesStaleSession: a session opened by a sign-in
// that checked the password just before a reset (stamped with the old
// token version, so no refresh opens it) must not come back through a
// tenant switch, which stamps the session anew and hands out a refresh
// token. Its access token still passes a proxy that has not yet heard of
// the reset; coreapi refuses it here.
func TestSwitchTenantRefusesStaleSession(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "stale@example.com", "First")
	id := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, id.UserID, "member")
	// What the race leaves: the reset moved the version on and revoked
	// the sessions it saw; this one was inserted after, under the old one.
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE users SET token_version = token_version + 1 WHERE id = $1`, id.UserID); err != nil {
		t.Fatal(err)
	}
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusBadRequest {
		t.Fatalf("refresh of the stale session: %d %s, want 400", r.Status, r.Body)
	}
	for _, tid := range []string{second.ID, tk.TenantID} {
		r := e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": tid, "refresh_token": tk.RefreshToken})
		if r.Status == http.StatusOK {
			var sw tokens
			r.JSON(t, &sw)
			if rr := e.refresh(t, sw.RefreshToken); rr.Status == http.StatusOK {
				t.Errorf("the refresh token of the switch to %s refreshes the stale session", tid)
			}
		}
		apitest.WantProblem(t, r, http.StatusUnauthorized, "invalid_token")
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND tenant_id = $2`, id.SessionID, tk.TenantID); n != 1 {
		t.Error("the stale session was moved")
	}
}

// TestSwitchTenantRacingRemoval: a tenant switch that found the caller a
// member of the tenant just before the caller was removed from it must
// not leave the session bound to that tenant and live: the removal ends
// the member's sessions there for good, and this one would refresh again
// once the user is added back. Here the switch has read the membership
// and waits for the session's row (held by another transaction) while
// the removal runs.
func TestSwitchTenantRacingRemoval(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	tk := e.signup(t, "moving@example.com", "First")
	id := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second")
	admin := e.SeedUserIn(t, second.ID, "admin@example.com", "owner")
	e.SeedMember(t, second.ID, id.UserID, "member")

	hold := e.DB.Hold(t, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, id.SessionID)
	var (
		wg      sync.WaitGroup
		sw, rm  apitest.Response
		removed = make(chan struct{})
	)
	wg.Go(func() {
		sw = e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": tk.RefreshToken})
	})
	e.DB.WaitForLockWaiters(t, 1) // the switch, at the session's row
	wg.Go(func() {
		defer close(removed)
		rm = e.Send(t, &admin, http.MethodDelete, "/api/v1/users/"+id.UserID, nil)
	})
	e.waitLockedOrDone(t, 2, removed) // the removal waits for the switch, or has run past it
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if rm.Status != http.StatusNoContent {
		t.Fatalf("removal: %d %s", rm.Status, rm.Body)
	}
	if sw.Status != http.StatusOK {
		// Refused: the switch saw the removal. Nothing to bring back.
		apitest.WantProblem(t, sw, http.StatusForbidden, "forbidden")
		return
	}
	var moved tokens
	sw.JSON(t, &moved)
	e.SeedMember(t, second.ID, id.UserID, "member")
	if r := e.refresh(t, moved.RefreshToken); r.Status == http.StatusOK {
		t.Error("the session switched into the tenant the user was being removed from refreshes again once the user is added back")
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, id.SessionID); n != 0 {
		t.Error("the session switched into the tenant during the removal is live")
	}
}

// TestPasswordGrantRacingRemoval: a sign-in that read the membership just
// before the user's removal from the tenant committed is refused (403),
// not answered with a session the removal missed (which would refresh
// again once the user is added back) nor with a server error.
func TestPasswordGrantRacingRemoval(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	tk := e.signup(t, "leaving@example.com", "First")
	second := e.SeedTenant(t, "Second")
	uid := claims(t, tk.AccessToken)["sub"].(string)
	e.SeedMember(t, second.ID, uid, "member")

	// The removal (as DELETE /users/{id} runs it), held uncommitted.
	remove := e.HoldRemoval(t, second.ID, uid)
	var (
		wg   sync.WaitGroup
		r    apitest.Response
		done = make(chan struct{})
	)
	wg.Go(func() {
		defer close(done)
		r = e.token(t, map[string]string{"grant_type": "password", "email": "leaving@example.com", "password": pw, "tenant_id": second.ID})
	})
	e.waitLockedOrDone(t, 1, done) // the new session waits at the membership's row, or was made past it
	if err := remove.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	apitest.WantProblem(t, r, http.StatusForbidden, "forbidden")
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND tenant_id = $2`, uid, second.ID); n != 0 {
		t.Errorf("sessions in the tenant left = %d, want 0", n)
	}
}

// TestPasswordGrantWithoutTenantRacingRemoval: a sign-in naming no tenant
// lands in the user's oldest active membership; when the user is removed
// from that tenant between the pick and the session's creation, it lands
// in the next one, as a sign-in just after the removal does, and with
// none left it is answered as such a sign-in is (403 no_membership). It
// answered 403 forbidden naming the tenant it had picked, which the
// client never asked for.
func TestPasswordGrantWithoutTenantRacingRemoval(t *testing.T) {
	t.Parallel()
	for _, another := range []bool{true, false} {
		name := "no other tenant"
		if another {
			name = "another tenant"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			tk := e.signup(t, "leaving@example.com", "First")
			uid := claims(t, tk.AccessToken)["sub"].(string)
			second := e.SeedTenant(t, "Second")
			if another {
				e.SeedMember(t, second.ID, uid, "member")
			}

			// The removal from the oldest tenant (as DELETE /users/{id}
			// runs it), held uncommitted.
			remove := e.HoldRemoval(t, tk.TenantID, uid)
			signIn := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response { // at the membership's row
				return e.token(t, map[string]string{"grant_type": "password", "email": "leaving@example.com", "password": pw})
			})
			if err := remove.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			r := signIn()
			if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND tenant_id = $2 AND revoked_at IS NULL`, uid, tk.TenantID); n != 0 {
				t.Errorf("live sessions in the tenant left = %d, want 0", n)
			}
			if !another {
				apitest.WantProblem(t, r, http.StatusForbidden, "no_membership")
				return
			}
			if r.Status != http.StatusOK {
				t.Fatalf("sign-in: %d %s, want 200 in the other tenant", r.Status, r.Body)
			}
			var got tokens
			r.JSON(t, &got)
			if got.TenantID != second.ID || claims(t, got.AccessToken)["tid"] != second.ID {
				t.Errorf("signed in to %s, want the other tenant %s", got.TenantID, second.ID)
			}
		})
	}
}

// TestPasswordGrantRacingMemberDisable: a sign-in whose tenant pick read
// the membership active just before the member was disabled there is
// answered as a sign-in just after the disable: 403 forbidden when it
// named the tenant; naming none, it lands in the user's next active
// tenant, or with none is 403 no_membership. It got a session and tokens
// in the tenant that the proxy and the refresh then refused. The disable
// (as PATCH /users/{id} runs it) is held uncommitted while the session is
// created.
func TestPasswordGrantRacingMemberDisable(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name           string
		named, another bool
		status         int
		code           string
	}{
		{"tenant named", true, true, http.StatusForbidden, "forbidden"},
		{"no tenant named, another tenant", false, true, http.StatusOK, ""},
		{"no tenant named, no other tenant", false, false, http.StatusForbidden, "no_membership"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, cheap)
			tk := e.signup(t, "disabled@example.com", "First")
			uid := claims(t, tk.AccessToken)["sub"].(string)
			second := e.SeedTenant(t, "Second")
			if c.another {
				e.SeedMember(t, second.ID, uid, "member")
			}
			body := map[string]string{"grant_type": "password", "email": "disabled@example.com", "password": pw}
			left, other := tk.TenantID, second.ID
			if c.named {
				body["tenant_id"] = second.ID
				left, other = second.ID, tk.TenantID
			}
			disable := e.DB.Hold(t, `UPDATE memberships SET status = 'disabled' WHERE tenant_id = $1 AND user_id = $2`, left, uid)
			signIn := dbtest.AnsweredOrWaiting(t, e.DB, func() apitest.Response { // at the membership's row
				return e.token(t, body)
			})
			if err := disable.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			r := signIn()
			if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND tenant_id = $2 AND id <> $3`,
				uid, left, claims(t, tk.AccessToken)["sid"]); n != 0 {
				t.Errorf("sign-in sessions in the tenant the member was disabled in = %d, want 0", n)
			}
			if c.status != http.StatusOK {
				apitest.WantProblem(t, r, c.status, c.code)
				return
			}
			if r.Status != http.StatusOK {
				t.Fatalf("sign-in: %d %s, want 200 in the other tenant", r.Status, r.Body)
			}
			var got tokens
			r.JSON(t, &got)
			if got.TenantID != other || claims(t, got.AccessToken)["tid"] != other {
				t.Errorf("signed in to %s, want the other tenant %s", got.TenantID, other)
			}
		})
	}
}

func TestSessionsListAndRevoke(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "m@example.com", "M")
	id := e.identityFor(t, tk)
	var others []tokens
	for range 3 {
		others = append(others, e.login(t, "m@example.com"))
	}
	intruder := e.signup(t, "i@example.com", "I")

	type list struct {
		Data []struct {
			ID      string `json:"id"`
			Current bool   `json:"current"`
		} `json:"data"`
		NextCursor *string `json:"next_cursor"`
	}
	var all []string
	current := 0
	path := "/api/v1/users/me/sessions?limit=3"
	var firstCursor string
	for range 3 {
		r := e.Get(t, id, path)
		if r.Status != http.StatusOK {
			t.Fatalf("list: %d %s", r.Status, r.Body)
		}
		var l list
		r.JSON(t, &l)
		for _, s := range l.Data {
			all = append(all, s.ID)
			if s.Current {
				current++
				if s.ID != id.SessionID {
					t.Errorf("current = %s, want %s", s.ID, id.SessionID)
				}
			}
		}
		if l.NextCursor == nil {
			break
		}
		if firstCursor == "" {
			firstCursor = *l.NextCursor
		}
		path = "/api/v1/users/me/sessions?limit=3&cursor=" + url.QueryEscape(*l.NextCursor)
	}
	// Cursors are signed and bound to their user: another user's list, an
	// altered cursor and an unsigned keyset (what the list once returned)
	// are refused.
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"c":"2020-01-01T00:00:00Z","i":"` + id.SessionID + `"}`))
	// One character changed mid-cursor, where every bit counts: the last
	// ones may already read "AA", or differ from it only in the unused
	// bits of the final character (a cursor unchanged once decoded).
	mid := len(firstCursor) / 2
	swap := byte('A')
	if firstCursor[mid] == 'A' {
		swap = 'B'
	}
	altered := firstCursor[:mid] + string(swap) + firstCursor[mid+1:]
	for name, cur := range map[string]string{"other user": firstCursor, "altered": altered, "unsigned": unsigned} {
		as := id
		if name == "other user" {
			as = e.identityFor(t, intruder)
		}
		if r := e.Get(t, as, "/api/v1/users/me/sessions?cursor="+url.QueryEscape(cur)); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_cursor" {
			t.Errorf("%s cursor: %d %s", name, r.Status, r.Body)
		}
	}
	if len(all) != 4 || current != 1 {
		t.Errorf("listed %d sessions (%d current), want 4 (1 current)", len(all), current)
	}

	victim := claims(t, others[0].AccessToken)["sid"].(string)
	if r := e.Send(t, e.identityFor(t, intruder), http.MethodDelete, "/api/v1/users/me/sessions/"+victim, nil); r.Status != http.StatusNotFound {
		t.Errorf("another user's session: %d", r.Status)
	}
	if r := e.Send(t, id, http.MethodDelete, "/api/v1/users/me/sessions/"+victim, nil); r.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if r := e.Send(t, id, http.MethodDelete, "/api/v1/users/me/sessions/"+victim, nil); r.Status != http.StatusNotFound {
		t.Errorf("revoke twice: %d", r.Status)
	}
	if r := e.Send(t, id, http.MethodDelete, "/api/v1/users/me/sessions/not-a-uuid", nil); r.Status != http.StatusBadRequest {
		t.Errorf("bad id: %d", r.Status)
	}
	// Only the hyphenated spelling is an id (uuid.Parse alone takes bare hex).
	if r := e.Send(t, id, http.MethodDelete, "/api/v1/users/me/sessions/"+strings.ReplaceAll(victim, "-", ""), nil); r.Status != http.StatusBadRequest {
		t.Errorf("id without hyphens: %d", r.Status)
	}
	if r := e.refresh(t, others[0].RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("refresh of a revoked session: %d", r.Status)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.UserSubject(id.UserID)); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
	if r := e.Get(t, id, "/api/v1/users/me/sessions?cursor=%21%21"); r.Status != http.StatusBadRequest {
		t.Errorf("bad cursor: %d", r.Status)
	}
	// A bad limit is the same problem as on every other list.
	for _, q := range []string{"limit=0", "limit=201", "limit=x", "include_total=maybe"} {
		apitest.WantProblem(t, e.Get(t, id, "/api/v1/users/me/sessions?"+q), http.StatusBadRequest, "invalid_query")
	}
	// The list has no total: asking for one is refused, naming the
	// parameter, rather than answered without it.
	for _, q := range []string{"include_total=true", "include_total=1"} {
		r := e.Get(t, id, "/api/v1/users/me/sessions?"+q)
		apitest.WantProblem(t, r, http.StatusBadRequest, "invalid_query")
		if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "include_total" || !strings.Contains(p.Errors[0].Message, "no total") {
			t.Errorf("%s: errors = %+v, want include_total: this list has no total", q, p.Errors)
		}
	}
	apitest.WantStatus(t, e.Get(t, id, "/api/v1/users/me/sessions?include_total=false"), http.StatusOK)
}

// TestSessionRevokeAudited: signing one session out is audited in the
// session's tenant (actor, session, user); an expired session is no longer
// active, so revoking it is 404 and writes nothing.
func TestSessionRevokeAudited(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "s@example.com", "S")
	id := e.identityFor(t, tk)
	other := claims(t, e.login(t, "s@example.com").AccessToken)["sid"].(string)
	expired := claims(t, e.login(t, "s@example.com").AccessToken)["sid"].(string)
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1`, expired); err != nil {
		t.Fatal(err)
	}
	if r := e.Send(t, id, http.MethodDelete, "/api/v1/users/me/sessions/"+other, nil); r.Status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	const q = `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = 'session.revoked'
  AND actor_user_id = $2 AND target_type = 'session' AND target_id = $3 AND data->>'user_id' = $2::text`
	if n := e.count(t, q, tk.TenantID, id.UserID, other); n != 1 {
		t.Errorf("session.revoked audit rows = %d, want 1", n)
	}
	if r := e.Send(t, id, http.MethodDelete, "/api/v1/users/me/sessions/"+expired, nil); r.Status != http.StatusNotFound {
		t.Errorf("revoke an expired session: %d %s, want 404", r.Status, r.Body)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.revoked'`); n != 1 {
		t.Errorf("session.revoked audit rows = %d after the expired one, want 1", n)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.UserSubject(id.UserID)); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
}

// TestAccountEventsAuditedInEveryTenant: a password change, a sign-out
// everywhere, and a second factor enabled or disabled are the account's,
// not one tenant's: they guard (or end) its access to every tenant it
// belongs to, so each tenant's log records them. They were written in the
// tenant the request was signed for only, where an admin of the other
// tenant never saw them.
func TestAccountEventsAuditedInEveryTenant(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk, secret, _ := e.mfaUser(t, "both@example.com")
	as := e.identityFor(t, tk)
	other := e.identityFor(t, e.signup(t, "other-owner@example.com", "Other"))
	e.SeedMember(t, other.TenantID, as.UserID, "member")
	in := func(action string, want ...string) {
		t.Helper()
		var got []string
		if err := e.DB.Pool.QueryRow(context.Background(), `SELECT ARRAY(SELECT tenant_id::text FROM audit_events
WHERE action = $1 AND target_id = $2 AND actor_user_id = $2::uuid ORDER BY tenant_id)`, action, as.UserID).Scan(&got); err != nil {
			t.Fatal(err)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s audited in tenants %v, want %v", action, got, want)
		}
	}
	// Enabled before the account joined the other tenant: its own only.
	in("user.mfa_enabled", as.TenantID)

	r := e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": codeAt(t, secret, time.Now().Add(30*time.Second))})
	if r.Status != http.StatusOK {
		t.Fatalf("step up: %d %s", r.Status, r.Body)
	}
	var up tokens
	r.JSON(t, &up)
	upAs := e.identityFor(t, up)
	if r := e.Send(t, upAs, http.MethodDelete, "/api/v1/users/me/mfa/totp", nil); r.Status != http.StatusNoContent {
		t.Fatalf("disable: %d %s", r.Status, r.Body)
	}
	in("user.mfa_disabled", as.TenantID, other.TenantID)
	en := e.enrol(t, upAs)
	if r := e.confirm(t, upAs, codeAt(t, en.Secret, time.Now())); r.Status != http.StatusOK {
		t.Fatalf("confirm: %d %s", r.Status, r.Body)
	}
	in("user.mfa_enabled", as.TenantID, as.TenantID, other.TenantID)

	if r := e.Send(t, upAs, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": "a brand new password"}); r.Status != http.StatusOK {
		t.Fatalf("password change: %d %s", r.Status, r.Body)
	}
	in("user.password_changed", as.TenantID, other.TenantID)
	if r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout?scope=global", As: upAs}); r.Status != http.StatusNoContent && r.Status != http.StatusOK {
		t.Fatalf("global logout: %d %s", r.Status, r.Body)
	}
	in("user.logout_global", as.TenantID, other.TenantID)
}

func TestPasswordChange(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "p@example.com", "P")
	other := e.login(t, "p@example.com")
	id := e.identityFor(t, tk)
	const newPW = "a brand new password"

	r := e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": "wrong one", "new_password": newPW})
	if r.Status != http.StatusForbidden {
		t.Fatalf("wrong current password: %d %s", r.Status, r.Body)
	}
	r = e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": "short"})
	if r.Status != http.StatusUnprocessableEntity {
		t.Errorf("short new password: %d", r.Status)
	}
	r = e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": "\u3000       \t"})
	if r.Status != http.StatusUnprocessableEntity || r.Stats.Queries != 0 {
		t.Errorf("new password of white space: %d after %d queries, want 422 before any", r.Status, r.Stats.Queries)
	} else if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "new_password" {
		t.Errorf("new password of white space: errors %+v, want one naming new_password", p.Errors)
	}
	r = e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": strings.Repeat("y", 1_000_000)})
	if r.Status != http.StatusUnprocessableEntity || r.Stats.Queries != 0 {
		t.Errorf("1 MB new password: %d after %d queries, want 422 before any", r.Status, r.Stats.Queries)
	}
	r = e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": newPW})
	if r.Status != http.StatusOK {
		t.Fatalf("change: %d %s", r.Status, r.Body)
	}
	var fresh tokens
	r.JSON(t, &fresh)
	if c := claims(t, fresh.AccessToken); c["tv"] != float64(1) || c["sid"] != id.SessionID {
		t.Errorf("fresh token claims = %v, want tv 1 and the same session", c)
	}
	if r := e.refresh(t, other.RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("other session survived the password change: %d", r.Status)
	}
	if r := e.refresh(t, fresh.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("this session's new refresh token: %d", r.Status)
	}
	if r := e.token(t, map[string]string{"grant_type": "password", "email": "p@example.com", "password": pw}); r.Status != http.StatusBadRequest {
		t.Errorf("old password still works: %d", r.Status)
	}
	if r := e.token(t, map[string]string{"grant_type": "password", "email": "p@example.com", "password": newPW}); r.Status != http.StatusOK {
		t.Errorf("new password: %d %s", r.Status, r.Body)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = 'user.password_changed'`, invalidation.UserSubject(id.UserID)); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
}

// TestPasswordChangeOfAnInactiveAccount: a disabled account, or one
// disabled in the session's tenant (or of a suspended tenant), cannot
// change its password with a bearer that a proxy which has not yet heard
// of the change still forwards: whoever held the session and the password
// would choose the password the account comes back with once enabled, and
// get fresh tokens for a sign-in the password grant refuses. Nothing
// changes: the password, the other sessions and the refresh token stand.
func TestPasswordChangeOfAnInactiveAccount(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	tk := e.signup(t, "inactive-change@example.com", "I")
	other := e.login(t, "inactive-change@example.com")
	id := e.identityFor(t, tk)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.DB.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	change := func(newPW string) apitest.Response {
		return e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": newPW})
	}
	for _, tc := range inactiveStates() {
		exec(tc.off, id.UserID)
		wantStatus(t, "password change of a "+tc.name, change("chosen while "+tc.name), http.StatusForbidden, "user_disabled")
		exec(tc.on, id.UserID)
		if n := e.count(t, `SELECT token_version FROM users WHERE id = $1`, id.UserID); n != 0 {
			t.Fatalf("%s: token version %d, want 0: the refused change moved it on", tc.name, n)
		}
	}
	if r := e.refresh(t, other.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("the other session was ended by a refused change: %d %s", r.Status, r.Body)
	}
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("the session's refresh token was reissued by a refused change: %d %s", r.Status, r.Body)
	}
	e.login(t, "inactive-change@example.com") // the password is the one it was
	wantStatus(t, "password change once active", change("chosen while active"), http.StatusOK, "")
}

// TestPasswordChangeOfAStaleSession: a session stamped with an older token
// version than the account's (opened by a sign-in that raced a sign-out
// everywhere or a reset, after they ended the others) is no live session:
// its bearer, which a proxy that has not yet heard of the new version
// still forwards, cannot change the password, and the change must not
// stamp the session anew (its refresh token would refresh again) nor end
// the sessions the owner opened since.
func TestPasswordChangeOfAStaleSession(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "stale-change@example.com", "S")
	id := e.identityFor(t, tk)
	// What the race leaves: the version moved on and the sessions seen
	// were revoked; this one was inserted after, under the old version.
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE users SET token_version = token_version + 1 WHERE id = $1`, id.UserID); err != nil {
		t.Fatal(err)
	}
	owner := e.login(t, "stale-change@example.com")
	r := e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": "chosen with a stale session"})
	apitest.WantProblem(t, r, http.StatusUnauthorized, "invalid_token")
	if n := e.count(t, `SELECT token_version FROM users WHERE id = $1`, id.UserID); n != 1 {
		t.Errorf("token version %d, want 1: the refused change moved it on", n)
	}
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("refresh of the stale session after the change: %d %s, want 400", r.Status, r.Body)
	}
	if r := e.refresh(t, owner.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("the owner's session was ended by a refused change: %d %s", r.Status, r.Body)
	}
	e.login(t, "stale-change@example.com") // the password is the one it was
}

// TestPasswordChangeRacingReset: a change checks the current password
// before its transaction. A reset that commits in between (the account's
// owner locking out whoever knew the old password) must stand: the change,
// made with a password no longer current, is refused and changes nothing.
// With a session, the reset's revocation of it stopped the change too (as
// a 401); an identity without one (a signed identity names no session
// when it has none) replaced the reset's password.
func TestPasswordChangeRacingReset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, cheap)
	const resetPW = "the owner's reset password"
	resetHash, err := password.New(cheap, 1).Hash(ctx, resetPW)
	if err != nil {
		t.Fatal(err)
	}
	for i, withSession := range []bool{true, false} {
		email := fmt.Sprintf("race%d@example.com", i)
		id := e.identityFor(t, e.signup(t, email, "Race"))
		if !withSession {
			id.SessionID = ""
		}
		// The reset (as POST /auth/password/reset runs it), holding the
		// account's row.
		reset := e.DB.Hold(t, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, id.UserID)
		var (
			wg   sync.WaitGroup
			r    apitest.Response
			done = make(chan struct{})
		)
		wg.Go(func() {
			defer close(done)
			r = e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": "the old password's holder's choice"})
		})
		e.waitLockedOrDone(t, 1, done) // the change waits at the account's row
		if _, err := reset.Exec(ctx, `UPDATE users SET password_hash = $2, token_version = token_version + 1 WHERE id = $1`, id.UserID, resetHash); err != nil {
			t.Fatal(err)
		}
		if _, err := reset.Exec(ctx, `UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL`, id.UserID); err != nil {
			t.Fatal(err)
		}
		if err := reset.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		apitest.WantProblem(t, r, http.StatusForbidden, "invalid_current_password")
		if r := e.token(t, map[string]string{"grant_type": "password", "email": email, "password": resetPW}); r.Status != http.StatusOK {
			t.Errorf("session %v: the reset's password after the change: %d %s", withSession, r.Status, r.Body)
		}
		if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = 'user.password_changed'`, invalidation.UserSubject(id.UserID)); n != 0 {
			t.Errorf("session %v: outbox rows of a change = %d, want 0", withSession, n)
		}
	}
}

// TestPasswordChangeWithTheTokenOfATenantLeft: after a tenant switch, the
// access token of the tenant left keeps acting there until it expires.
// A password change made with it keeps the session, now the new tenant's,
// and hands out tokens for that session: an access token of the session's
// tenant, not a fresh one for the tenant left, which would outlive the
// old token and disagree with the session its refresh token renews.
func TestPasswordChangeWithTheTokenOfATenantLeft(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "left@example.com", "First")
	id := e.identityFor(t, tk)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, id.UserID, "member")
	if r := e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": second.ID, "refresh_token": tk.RefreshToken}); r.Status != http.StatusOK {
		t.Fatalf("switch: %d %s", r.Status, r.Body)
	}
	// id is the first tenant's identity, as the token issued there before
	// the switch still signs.
	r := e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": "a brand new password"})
	if r.Status != http.StatusOK {
		t.Fatalf("change: %d %s", r.Status, r.Body)
	}
	var fresh tokens
	r.JSON(t, &fresh)
	if c := claims(t, fresh.AccessToken); c["tid"] != second.ID || fresh.TenantID != second.ID || c["sid"] != id.SessionID {
		t.Errorf("tokens after the change: tid %v, tenant_id %s, sid %v; want the session's tenant %s and session %s",
			c["tid"], fresh.TenantID, c["sid"], second.ID, id.SessionID)
	}
	r = e.refresh(t, fresh.RefreshToken)
	var after tokens
	r.JSON(t, &after)
	if r.Status != http.StatusOK || after.TenantID != fresh.TenantID {
		t.Errorf("refresh after the change: %d, tenant %s; want 200 in the tenant the change answered (%s)", r.Status, after.TenantID, fresh.TenantID)
	}
}

// TestKeyRotationThroughJWKS: after a key is added, tokens of the old key
// still verify with the served JWKS and new tokens use the new key; once
// the old key is removed, its tokens stop verifying.
func TestKeyRotationThroughJWKS(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	old := e.signup(t, "k@example.com", "K")
	oldKid := e.ring.SigningKeyID()
	newKid, err := keys.Generate(e.keyDir, keys.AlgEdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ring.Reload(); err != nil {
		t.Fatal(err)
	}
	e.verify(t, old.AccessToken)
	fresh := e.login(t, "k@example.com")
	msg, _ := jws.Parse([]byte(fresh.AccessToken))
	if kid := msg.Signatures()[0].ProtectedHeaders().KeyID(); kid != newKid {
		t.Errorf("new token kid = %s, want the newest key %s", kid, newKid)
	}
	if err := os.Remove(filepath.Join(e.keyDir, oldKid+".pem")); err != nil {
		t.Fatal(err)
	}
	if err := e.ring.Reload(); err != nil {
		t.Fatal(err)
	}
	set, err := jwk.Parse(e.Get(t, nil, auth.JWKSPath).Body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.Parse([]byte(old.AccessToken), jwt.WithKeySet(set, jws.WithRequireKid(true))); err == nil {
		t.Error("token of a removed key still verifies with the served JWKS")
	}
	e.verify(t, fresh.AccessToken)
}

func TestLoginUpgradesOldHash(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "old@example.com", "Old")
	weaker := cheap
	weaker.Memory = cheap.Memory / 2
	old, err := password.New(weaker, 1).Hash(context.Background(), pw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE users SET password_hash = $1`, old); err != nil {
		t.Fatal(err)
	}
	e.login(t, "old@example.com")
	var got string
	if err := e.DB.Pool.QueryRow(context.Background(), `SELECT password_hash FROM users`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := "$argon2id$v=19$m=" + strconv.Itoa(int(cheap.Memory)) + ","; !strings.HasPrefix(got, want) {
		t.Errorf("hash after login = %q, want upgraded to %q...", got, want)
	}
	e.login(t, "old@example.com") // and the upgraded hash verifies
}

// TestRefreshReuseAfterGraceRevokesSession: an old refresh token presented
// after the grace window is treated as stolen: the session ends (successor
// included), the proxy learns it through the projection and an event.
func TestRefreshReuseAfterGraceRevokesSession(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "reuse@example.com", "R")
	id := e.identityFor(t, tk)
	r := e.refresh(t, tk.RefreshToken)
	var next tokens
	r.JSON(t, &next)
	if r.Status != http.StatusOK {
		t.Fatalf("refresh: %d", r.Status)
	}
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE refresh_tokens SET rotated_at = now() - interval '1 minute' WHERE token_hash = $1`, sessions.Hash(tk.RefreshToken)); err != nil {
		t.Fatal(err)
	}
	reuse := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token",
		Body:     map[string]string{"grant_type": "refresh_token", "refresh_token": tk.RefreshToken},
		Header:   http.Header{requestid.Header: {"reuse-req-1"}},
		ClientIP: "198.51.100.23"})
	if reuse.Status != http.StatusBadRequest || reuse.Problem(t).Code != "invalid_grant" {
		t.Fatalf("reuse after grace: %d %s", reuse.Status, reuse.Body)
	}
	if r := e.refresh(t, next.RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("successor after reuse detection: %d, want 400", r.Status)
	}
	// The audit row names the request that presented the token, and its
	// client IP (the signed one).
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.refresh_token_reused' AND target_id = $1
		AND request_id = 'reuse-req-1' AND data->>'client_ip' = '198.51.100.23'`, id.SessionID); n != 1 {
		t.Errorf("reuse audit rows with the request's id and client IP = %d, want 1", n)
	}
	pr := e.Do(t, apitest.Request{Method: http.MethodGet, Path: identity.ProjectionPath + "/" + id.UserID + "?tenant_id=" + id.TenantID, Service: true})
	var p identity.Projection
	pr.JSON(t, &p)
	if !p.SessionRevoked(id.SessionID) {
		t.Errorf("projection does not list session %s as revoked: %+v", id.SessionID, p)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = 'session.revoked'`, invalidation.UserSubject(id.UserID)); n != 1 {
		t.Errorf("outbox rows = %d, want 1", n)
	}
}

// TestRefreshRacingSignOut: a sign-out that commits between the refresh's
// rotation and the signing of its access token, or that has revoked the
// session by then and commits only later, leaves no token: one issued
// after revoked_at would outlive the projection's revoked list.
func TestRefreshRacingSignOut(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	const qRevoke = `UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = 'logout' WHERE id = $1`
	refused := func(t *testing.T, r apitest.Response) {
		t.Helper()
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
			t.Fatalf("refresh of a session signed out before the signing: %d %s, want 400 invalid_grant", r.Status, r.Body)
		}
		if strings.Contains(string(r.Body), "access_token") {
			t.Errorf("answer carries an access token: %s", r.Body)
		}
	}
	t.Run("committed", func(t *testing.T) {
		tk := e.signup(t, "race1@example.com", "R1")
		id := e.identityFor(t, tk)
		e.onIssue(t, func(sessionID string) {
			if sessionID != id.SessionID {
				return
			}
			if _, err := e.DB.Pool.Exec(context.Background(), qRevoke, sessionID); err != nil {
				t.Error(err)
			}
		})
		refused(t, e.refresh(t, tk.RefreshToken))
	})

	// The revocation's transaction has updated the row but commits only
	// once the grant's check waits for it.
	t.Run("committed after the check began", func(t *testing.T) {
		tk := e.signup(t, "race2@example.com", "R2")
		id := e.identityFor(t, tk)
		ctx := context.Background()
		committed := make(chan struct{})
		done := make(chan struct{})
		e.onIssue(t, func(sessionID string) {
			if sessionID != id.SessionID {
				return
			}
			tx, err := e.DB.Pool.Begin(ctx)
			if err != nil {
				t.Error(err)
				close(committed)
				return
			}
			if _, err := tx.Exec(ctx, qRevoke, sessionID); err != nil {
				t.Error(err)
			}
			go func() {
				defer close(committed)
				const q = `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`
			wait: // until the grant's check waits on the row, or the grant has answered
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					select {
					case <-done:
						break wait
					default:
					}
					var n int
					if err := e.DB.Pool.QueryRow(ctx, q).Scan(&n); err == nil && n > 0 {
						break
					}
				}
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
				}
			}()
		})
		r := e.refresh(t, tk.RefreshToken)
		close(done)
		<-committed
		refused(t, r)
	})
}

// TestIssueRacingSignOut: every path that issues a session's access token
// (not only the refresh grant) gives none when the session is signed out
// between the path's step on it (created, reissued, stepped up) and the
// signing: the token would be issued after revoked_at, and outlive the
// projection's revoked list. Each path answers as it answers an ended
// session.
func TestIssueRacingSignOut(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	const qRevoke = `UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = 'logout' WHERE id = $1`
	// qReset ends the session as a password reset or a sign-out
	// everywhere does for the proxy: the token version moves on.
	const qReset = `UPDATE users SET token_version = token_version + 1 WHERE id = (SELECT user_id FROM sessions WHERE id = $1)`
	const ended = `Bearer error="invalid_token", error_description="the session has ended"`
	for _, tc := range []struct {
		name string
		// setup prepares an account and returns the request that issues
		// the token.
		setup  func(t *testing.T, email string) func() apitest.Response
		status int
		code   string
		// end is the statement that ends the session (qRevoke if empty).
		end string
		// challenge is the answer's WWW-Authenticate: the RFC 6750
		// challenge where a bearer was sent, none otherwise.
		challenge string
	}{
		{"password grant", func(t *testing.T, email string) func() apitest.Response {
			e.signup(t, email, "T "+email)
			return func() apitest.Response {
				return e.token(t, map[string]string{"grant_type": "password", "email": email, "password": pw})
			}
		}, http.StatusBadRequest, "invalid_grant", "", ""},
		{"password grant racing a reset", func(t *testing.T, email string) func() apitest.Response {
			e.signup(t, email, "T "+email)
			return func() apitest.Response {
				return e.token(t, map[string]string{"grant_type": "password", "email": email, "password": pw})
			}
		}, http.StatusBadRequest, "invalid_grant", qReset, ""},
		{"refresh grant", func(t *testing.T, email string) func() apitest.Response {
			tk := e.signup(t, email, "T "+email)
			return func() apitest.Response { return e.refresh(t, tk.RefreshToken) }
		}, http.StatusBadRequest, "invalid_grant", "", ""},
		{"signup", func(t *testing.T, email string) func() apitest.Response {
			return func() apitest.Response {
				return e.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
					map[string]string{"email": email, "password": pw, "tenant_name": "T " + email, "display_name": "D"})
			}
		}, http.StatusUnauthorized, "invalid_token", "", ""},
		{"tenant switch", func(t *testing.T, email string) func() apitest.Response {
			tk := e.signup(t, email, "T "+email)
			id := e.identityFor(t, tk)
			second := e.SeedTenant(t, "Second "+email)
			e.SeedMember(t, second.ID, id.UserID, "member")
			return func() apitest.Response {
				return e.Send(t, id, http.MethodPost, "/api/v1/auth/switch-tenant",
					map[string]string{"tenant_id": second.ID, "refresh_token": tk.RefreshToken})
			}
		}, http.StatusUnauthorized, "invalid_token", "", ended},
		{"password change", func(t *testing.T, email string) func() apitest.Response {
			id := e.identityFor(t, e.signup(t, email, "T "+email))
			return func() apitest.Response {
				return e.Send(t, id, http.MethodPut, "/api/v1/users/me/password",
					map[string]string{"current_password": pw, "new_password": "a brand new password"})
			}
		}, http.StatusUnauthorized, "invalid_token", "", ended},
		{"second factor sign-in", func(t *testing.T, email string) func() apitest.Response {
			_, _, codes := e.mfaUser(t, email)
			mt := e.challenge(t, email)
			return func() apitest.Response { return e.mfaOTP(t, mt, codes[0]) }
		}, http.StatusBadRequest, "invalid_grant", "", ""},
		{"step-up", func(t *testing.T, email string) func() apitest.Response {
			tk, _, codes := e.mfaUser(t, email)
			as := e.identityFor(t, tk)
			return func() apitest.Response {
				return e.Send(t, as, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": codes[0]})
			}
		}, http.StatusUnauthorized, "invalid_token", "", ended},
	} {
		t.Run(tc.name, func(t *testing.T) {
			email := strings.ReplaceAll(tc.name, " ", "-") + "@example.com"
			send := tc.setup(t, email)
			end := cmp.Or(tc.end, qRevoke)
			revoked := make(chan string, 1)
			e.onIssue(t, func(sessionID string) {
				select {
				case revoked <- sessionID:
				default:
				}
				if _, err := e.DB.Pool.Exec(context.Background(), end, sessionID); err != nil {
					t.Error(err)
				}
			})
			r := send()
			e.onIssue(t, nil)
			select {
			case <-revoked:
			default:
				t.Fatalf("no token was issued: %d %s", r.Status, r.Body)
			}
			if r.Status != tc.status || r.Problem(t).Code != tc.code {
				t.Fatalf("%s of a session signed out before the signing: %d %s, want %d %s", tc.name, r.Status, r.Body, tc.status, tc.code)
			}
			if strings.Contains(string(r.Body), "access_token") {
				t.Errorf("answer carries an access token: %s", r.Body)
			}
			if h := r.Header.Get("WWW-Authenticate"); h != tc.challenge {
				t.Errorf("%s: WWW-Authenticate %q, want %q", tc.name, h, tc.challenge)
			}
		})
	}
}

// TestPasswordChangeEndsAThiefsChain: whoever stole a refresh token and
// refreshed it twice at once (T0 to T1 to T2) holds T0, rotated moments
// ago. Its owner changes the password, keeping the session: T0 yields no
// access token of the new token version afterwards, within the grace
// window or not.
func TestPasswordChangeEndsAThiefsChain(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "chain@example.com", "C")
	id := e.identityFor(t, tk)
	var t1 tokens
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusOK {
		t.Fatalf("refresh T0: %d %s", r.Status, r.Body)
	} else {
		r.JSON(t, &t1)
	}
	if r := e.refresh(t, t1.RefreshToken); r.Status != http.StatusOK {
		t.Fatalf("refresh T1: %d %s", r.Status, r.Body)
	}
	r := e.Send(t, id, http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": "a brand new password"})
	if r.Status != http.StatusOK {
		t.Fatalf("change: %d %s", r.Status, r.Body)
	}
	var kept tokens
	r.JSON(t, &kept)
	if r := e.refresh(t, tk.RefreshToken); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Fatalf("T0 after the password change: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}
	if r := e.refresh(t, kept.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("the owner's new refresh token: %d %s", r.Status, r.Body)
	}
}

func TestPasswordGrantTenantChoice(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	first := e.signup(t, "two@example.com", "First")
	uid := claims(t, first.AccessToken)["sub"].(string)
	second := e.SeedTenant(t, "Second")
	e.SeedMember(t, second.ID, uid, "member")
	stranger := e.SeedTenant(t, "Stranger")

	grant := func(tenant string) apitest.Response {
		body := map[string]string{"grant_type": "password", "email": "two@example.com", "password": pw}
		if tenant != "" {
			body["tenant_id"] = tenant
		}
		return e.token(t, body)
	}
	tests := []struct {
		name, tenant string
		status       int
		wantTenant   string
		code         string
	}{
		{"default is the oldest membership", "", 200, first.TenantID, ""},
		{"explicit tenant", second.ID, 200, second.ID, ""},
		{"tenant without membership", stranger.ID, 403, "", "forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := grant(tt.tenant)
			if r.Status != tt.status {
				t.Fatalf("status %d %s, want %d", r.Status, r.Body, tt.status)
			}
			if tt.status == 200 {
				var tk tokens
				r.JSON(t, &tk)
				if tk.TenantID != tt.wantTenant || claims(t, tk.AccessToken)["tid"] != tt.wantTenant {
					t.Errorf("tenant = %s, want %s", tk.TenantID, tt.wantTenant)
				}
			} else if c := r.Problem(t).Code; c != tt.code {
				t.Errorf("code = %q, want %q", c, tt.code)
			}
		})
	}
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE users SET status = 'disabled' WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	if r := grant(""); r.Status != http.StatusForbidden || r.Problem(t).Code != "user_disabled" {
		t.Errorf("disabled user: %d %s", r.Status, r.Body)
	}
	if r := e.refresh(t, first.RefreshToken); r.Status != http.StatusBadRequest {
		t.Errorf("refresh of a disabled user: %d", r.Status)
	}
}

// TestSessionIPIgnoresForwardedFor: a session records the client IP the
// proxy signed; a spoofed X-Forwarded-For (or Forwarded, X-Real-Ip)
// changes nothing, signed or not (unsigned: the peer's address).
func TestSessionIPIgnoresForwardedFor(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	spoof := http.Header{}
	spoof.Set("X-Forwarded-For", "203.0.113.66")
	spoof.Set("X-Real-Ip", "203.0.113.67")
	spoof.Set("Forwarded", "for=203.0.113.68")
	r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/signup", Header: spoof, ClientIP: "198.51.100.23",
		Body: map[string]string{"email": "ip@example.com", "password": pw, "tenant_name": "IP"}})
	if r.Status != http.StatusCreated {
		t.Fatalf("signup: %d %s", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	login := func(req apitest.Request) {
		t.Helper()
		req.Method, req.Path, req.Header = http.MethodPost, "/api/v1/auth/token", spoof
		req.Body = map[string]string{"grant_type": "password", "email": "ip@example.com", "password": pw}
		if r := e.Do(t, req); r.Status != http.StatusOK {
			t.Fatalf("login: %d %s", r.Status, r.Body)
		}
	}
	login(apitest.Request{ClientIP: "2001:db8::23"})
	login(apitest.Request{Unsigned: true})
	var l struct {
		Data []struct {
			IP string `json:"ip"`
		} `json:"data"`
	}
	e.Get(t, e.identityFor(t, tk), "/api/v1/users/me/sessions").JSON(t, &l)
	var ips []string
	for _, s := range l.Data {
		ips = append(ips, s.IP)
	}
	sort.Strings(ips)
	if got, want := strings.Join(ips, " "), "127.0.0.1 198.51.100.23 2001:db8::23"; got != want {
		t.Fatalf("session IPs = %s, want %s", got, want)
	}
}

// TestSessionsListLeavesOutStaleVersions: a session stamped with an older
// token version than the user's (one opened by a sign-in that raced a
// password reset: no refresh opens it) is not listed as live; listed, it
// looked to the account's owner like a session that outlived the reset.
func TestSessionsListLeavesOutStaleVersions(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	stale := e.signup(t, "listed@example.com", "L")
	staleID := e.identityFor(t, stale).SessionID
	// What the race leaves: the reset moved the version on after this
	// session was stamped, and did not see it to revoke it.
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE users SET token_version = token_version + 1 WHERE id = $1`,
		e.identityFor(t, stale).UserID); err != nil {
		t.Fatal(err)
	}
	fresh := e.login(t, "listed@example.com")
	var l struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	r := e.Get(t, e.identityFor(t, fresh), "/api/v1/users/me/sessions")
	if r.Status != http.StatusOK {
		t.Fatalf("list: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &l)
	if len(l.Data) != 1 || l.Data[0].ID != e.identityFor(t, fresh).SessionID {
		t.Fatalf("sessions listed: %+v, want only the one signed in after the reset (not %s)", l.Data, staleID)
	}
}

// TestSignupLimitedPerClient: one client address makes at most
// DefaultSignupPerHour sign-ups an hour (each hashes a password and mails
// an address); the next is 429 with Retry-After, before anything is hashed
// or written, while another address still signs up.
func TestSignupLimitedPerClient(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	send := func(ip, email string) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/signup", ClientIP: ip,
			Body: map[string]string{"email": email, "password": pw, "tenant_name": "T"}})
	}
	for i := range auth.DefaultSignupPerHour {
		if r := send("198.51.100.7", fmt.Sprintf("s%d@example.com", i)); r.Status != http.StatusCreated {
			t.Fatalf("sign-up %d: %d %s", i, r.Status, r.Body)
		}
	}
	r := send("198.51.100.7", "over@example.com")
	apitest.WantProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if n := e.count(t, `SELECT count(*) FROM users WHERE email = 'over@example.com'`); n != 0 {
		t.Errorf("the refused sign-up created %d users", n)
	}
	if r := send("198.51.100.8", "over@example.com"); r.Status != http.StatusCreated {
		t.Fatalf("another address: %d %s", r.Status, r.Body)
	}
}

// TestSignupMailsPerInboxLimited: each sign-up mails a verification link,
// and every "+tag" of one inbox is an address without an account, so
// sign-ups from many client addresses (each within its own limit) flooded
// that inbox. They count against its verification mails over every
// account: past the limit 429 with Retry-After, nothing written.
func TestSignupMailsPerInboxLimited(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	send := func(i int) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/signup", ClientIP: fmt.Sprintf("198.51.100.%d", 10+i),
			Body: map[string]string{"email": fmt.Sprintf("Inbox+%d@example.org", i), "password": pw, "tenant_name": "T"}})
	}
	n := onetime.AddressMailLimit().N
	for i := range n {
		if r := send(i); r.Status != http.StatusCreated {
			t.Fatalf("sign-up %d: %d %s", i, r.Status, r.Body)
		}
	}
	r := send(n)
	apitest.WantProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if c := e.count(t, `SELECT count(*) FROM users WHERE lower(email) LIKE 'inbox+%@example.org'`); c != n {
		t.Errorf("%d accounts, want %d: the refused sign-up wrote one", c, n)
	}
	if r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/signup", ClientIP: "198.51.100.99",
		Body: map[string]string{"email": "other+1@example.org", "password": pw, "tenant_name": "T"}}); r.Status != http.StatusCreated {
		t.Fatalf("another inbox: %d %s", r.Status, r.Body)
	}
}

// TestPasswordGuessesLimitedPerClient: one client address gets
// DefaultSignInFailuresPerHour wrong passwords an hour over every address
// (the per-address lockout alone let it try a password on any number of
// addresses, each an argon2 hash); past it every password check from that
// client is 429 with Retry-After, unchecked, the right password and the
// current password of a password change included, while another client
// signs in. Correct passwords, and guesses the address lockout refused
// unchecked, do not spend the budget.
func TestPasswordGuessesLimitedPerClient(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "owner@example.com", "O")
	const sprayer = "203.0.113.50"
	guess := func(ip, email, password string) apitest.Response {
		t.Helper()
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", ClientIP: ip,
			Body: map[string]string{"grant_type": "password", "email": email, "password": password}})
	}
	for i := range 3 {
		if r := guess(sprayer, "owner@example.com", pw); r.Status != http.StatusOK {
			t.Fatalf("correct sign-in %d: %d %s", i, r.Status, r.Body)
		}
	}
	evaluated := 0
	for range auth.DefaultLockout().Threshold {
		if r := guess(sprayer, "locked@example.com", "Summer2024!"); r.Status != http.StatusBadRequest {
			t.Fatalf("guess for one address: %d %s", r.Status, r.Body)
		}
		evaluated++
	}
	for range 3 {
		if r := guess(sprayer, "locked@example.com", "Summer2024!"); r.Status != http.StatusTooManyRequests {
			t.Fatalf("guess past the address's lock: %d %s, want 429", r.Status, r.Body)
		}
	}
	for i := 0; evaluated < auth.DefaultSignInFailuresPerHour; i++ {
		if r := guess(sprayer, fmt.Sprintf("u%d@example.com", i), "Summer2024!"); r.Status != http.StatusBadRequest {
			t.Fatalf("guess %d over many addresses: %d %s, want 400", evaluated+1, r.Status, r.Body)
		}
		evaluated++
	}
	for _, tc := range []struct{ email, password string }{{"fresh@example.com", "Summer2024!"}, {"owner@example.com", pw}} {
		r := guess(sprayer, tc.email, tc.password)
		apitest.WantProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 3600 {
			t.Errorf("Retry-After = %q, want 1..3600 s", r.Header.Get("Retry-After"))
		}
	}
	// The budget is the client's wherever it guesses: the current password
	// of a password change too.
	tk := e.login(t, "owner@example.com") // another client
	r := e.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/users/me/password", ClientIP: sprayer, As: e.identityFor(t, tk),
		Body: map[string]string{"current_password": pw, "new_password": "another long password"}})
	apitest.WantProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if r := guess("198.51.100.60", "fresh@example.com", "Summer2024!"); r.Status != http.StatusBadRequest {
		t.Errorf("a guess from another client: %d %s, want 400", r.Status, r.Body)
	}
}

// TestOwnSignInsDoNotSlowTheOwner: the address-wide count holds failures,
// not the owner's own sign-ins. An account signed in to often (a script,
// a shared device) used to pass the address-wide threshold with correct
// passwords alone, and a single typo then cost its owner a 429 of up to a
// minute, the right password included.
func TestOwnSignInsDoNotSlowTheOwner(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "often@example.com", "O")
	send := func(password string) apitest.Response {
		t.Helper()
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", ClientIP: "192.0.2.44",
			Body: map[string]string{"grant_type": "password", "email": "often@example.com", "password": password}})
	}
	for i := range 2 * auth.DefaultLockout().AccountThreshold {
		if r := send(pw); r.Status != http.StatusOK {
			t.Fatalf("sign-in %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	if r := send("a typo of it"); r.Status != http.StatusBadRequest {
		t.Fatalf("typo: %d %s, want 400", r.Status, r.Body)
	}
	if r := send(pw); r.Status != http.StatusOK {
		t.Fatalf("the right password after one typo: %d %s, want 200", r.Status, r.Body)
	}
}

// TestProjectionLeavesOutSessionsTheVersionEnds: the sessions a sign-out
// everywhere ends are refused by the token version it bumps, so the
// projection does not list them: a user with tens of thousands of sessions
// (a script that never signs out) who then signed out everywhere had a
// projection past the proxy's 1 MiB bound. A session revoked on its own
// after that is listed.
func TestProjectionLeavesOutSessionsTheVersionEnds(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	tk := e.signup(t, "many@example.com", "M")
	id := e.identityFor(t, tk)
	// Thousands of sessions, stamped as sign-in stamps them.
	if _, err := e.DB.Pool.Exec(context.Background(), `
INSERT INTO sessions (user_id, tenant_id, expires_at, token_version)
SELECT $1, $2, now() + interval '1 day', (SELECT token_version FROM users WHERE id = $1) FROM generate_series(1, 30000)`,
		id.UserID, id.TenantID); err != nil {
		t.Fatal(err)
	}
	if r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout", Body: map[string]string{"scope": "global"}, As: id}); r.Status != http.StatusNoContent {
		t.Fatalf("logout everywhere: %d %s", r.Status, r.Body)
	}
	projection := func() (identity.Projection, int) {
		t.Helper()
		r := e.Do(t, apitest.Request{Method: http.MethodGet, Path: identity.ProjectionPath + "/" + id.UserID + "?tenant_id=" + id.TenantID, Service: true})
		apitest.WantStatus(t, r, http.StatusOK)
		var p identity.Projection
		r.JSON(t, &p)
		return p, len(r.Body)
	}
	p, size := projection()
	if p.TokenVersion != 1 || len(p.RevokedSessions) != 0 {
		t.Fatalf("after a sign-out everywhere: tv %d, %d revoked sessions listed (%d bytes), want tv 1 and none: the version refuses them", p.TokenVersion, len(p.RevokedSessions), size)
	}

	// A session opened since, revoked on its own, is listed.
	later := e.login(t, "many@example.com")
	lid := e.identityFor(t, later)
	if r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/logout", Body: map[string]string{"scope": "local"}, As: lid}); r.Status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	if p, _ := projection(); !slices.Equal(p.RevokedSessions, []string{lid.SessionID}) {
		t.Fatalf("revoked sessions = %v, want only %s", p.RevokedSessions, lid.SessionID)
	}
}

// TestFormParamsBounded: a form body of more than httpapi.MaxFormParams
// parameters is refused (400 invalid_request) before it is parsed. Parsed,
// "&a" repeated through a 1 MiB body (half a million parameters) allocated
// 158 MiB, and the request's pooled context kept 36 MiB of it for the
// requests after; unknown parameters up to the bound are still ignored
// (RFC 6749 section 3.2).
func TestFormParamsBounded(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "f@example.com", "F")
	grant := "grant_type=password&email=f%40example.com&password=" + url.QueryEscape(pw)
	form := func(body string) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: body,
			ContentType: "application/x-www-form-urlencoded"})
	}
	if r := form(grant + strings.Repeat("&x=1", httpapi.MaxFormParams-3)); r.Status != http.StatusOK {
		t.Errorf("%d parameters: %d %s, want 200", httpapi.MaxFormParams, r.Status, r.Body)
	}
	if r := form(grant + strings.Repeat("&x=1", httpapi.MaxFormParams-2)); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_request" {
		t.Errorf("%d parameters: %d %s, want 400 invalid_request", httpapi.MaxFormParams+1, r.Status, r.Body)
	}
	huge := "grant_type=password" + strings.Repeat("&a", (1<<20-64)/2)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := form(huge)
	runtime.ReadMemStats(&after)
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_request" {
		t.Errorf("1 MiB of parameters: %d %s, want 400 invalid_request", r.Status, r.Body)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 32<<20 {
		t.Errorf("1 MiB of parameters allocated %d MiB, want under 32", got>>20)
	}
}

// TestFormInAnyLetterCase: a form body's media type in another letter
// case is the same type (RFC 9110 section 8.3.1), read as a form by
// MediaType and by fasthttp's parse of the body alike: a parser that
// compared the type as written would read every field empty (400
// "grant_type is required").
func TestFormInAnyLetterCase(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "case@example.com", "C")
	grant := "grant_type=password&email=case%40example.com&password=" + url.QueryEscape(pw)
	for _, ct := range []string{"application/x-www-form-urlencoded", "Application/X-WWW-Form-Urlencoded",
		"APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8"} {
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: grant, ContentType: ct})
		if r.Status != http.StatusOK {
			t.Errorf("%s: %d %s, want 200", ct, r.Status, r.Body)
		}
		r = e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: grant + "&grant_type=password", ContentType: ct})
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_request" {
			t.Errorf("%s, grant_type twice: %d %s, want 400 invalid_request", ct, r.Status, r.Body)
		}
	}
}

// TestPasswordChecksLimitedPerClient: every password checked, right or
// wrong, counts against the client's budget of checks
// (PasswordChecksPerHour); past it a check is 429 with Retry-After before
// anything is hashed, the right password included, and another client
// keeps its own. Correct sign-ins, which the budget of failures gives
// back, were unbounded: from one address, whoever knew one password (any
// account signed up) kept every hashing slot busy, and everyone else's
// sign-in waited (from 45 ms to 900 ms on two cores). A check refused by
// another limit does not count.
func TestPasswordChecksLimitedPerClient(t *testing.T) {
	t.Parallel()
	const budget = 4
	ring, dir := keytest.Ring(t)
	e := &env{ring: ring, keyDir: dir}
	h := password.New(cheap, 0)
	e.Env = apitest.Start(t, apitest.Options{Coverage: coverage, Passwords: h, Configure: func(o *httpapi.Options) {
		svc, err := auth.New(auth.Options{Logger: o.Logger, Pool: o.Pool, Keys: ring, Passwords: h,
			Sessions: sessions.New(o.Pool, time.Hour, 10*time.Second), Issuer: issuer, Audience: audience,
			AccessTTL: 15 * time.Minute, MFA: testSealer(t, mfaKeys), SignInFailuresPerHour: 2, PasswordChecksPerHour: budget})
		if err != nil {
			t.Fatal(err)
		}
		e.svc = svc
		o.Register = append(o.Register, svc.Register)
	}})
	e.signup(t, "owner@example.com", "O")
	const client = "203.0.113.70"
	signIn := func(ip, password string) apitest.Response {
		t.Helper()
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", ClientIP: ip,
			Body: map[string]string{"grant_type": "password", "email": "owner@example.com", "password": password}})
	}
	// One wrong password and budget-1 right ones: budget checks.
	if r := signIn(client, "wrong password"); r.Status != http.StatusBadRequest {
		t.Fatalf("wrong password: %d %s", r.Status, r.Body)
	}
	for i := range budget - 1 {
		if r := signIn(client, pw); r.Status != http.StatusOK {
			t.Fatalf("correct sign-in %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	r := signIn(client, pw)
	apitest.WantProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 3600 {
		t.Errorf("Retry-After = %q, want 1..3600 s", r.Header.Get("Retry-After"))
	}
	if r := signIn("198.51.100.70", pw); r.Status != http.StatusOK {
		t.Errorf("another client: %d %s, want 200", r.Status, r.Body)
	}
	// A check the failures' budget refuses is not counted against this
	// one: a client that spent its failures keeps its checks for the hour.
	const other = "198.51.100.71"
	for range 2 {
		if r := signIn(other, "wrong password"); r.Status != http.StatusBadRequest {
			t.Fatalf("wrong password: %d %s", r.Status, r.Body)
		}
	}
	for range budget {
		apitest.WantProblem(t, signIn(other, pw), http.StatusTooManyRequests, "too_many_requests")
	}
	if n := e.count(t, `SELECT coalesce(sum(hits), 0)::int FROM rate_limits WHERE key = $1`,
		ratelimit.Key("password-check", ratelimit.ClientKey(other))); n != 2 {
		t.Errorf("checks counted for a client refused by its failures' budget: %d, want 2", n)
	}
}

// TestSweepHandoversBesideTheSessionsSweep: the sweep of expired hand-over
// codes passes over the codes another transaction holds, so it cannot
// deadlock with the sweep of ended sessions, whose cascade deletes the
// codes of each session it deletes, session after session, while the
// hand-over sweep took them by expiry: each held a code the other waited
// for, and PostgreSQL failed one of them.
func TestSweepHandoversBesideTheSessionsSweep(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	ctx := context.Background()
	ten := e.SeedTenant(t, "Acme")
	uid := e.SeedUser(t, "ada@example.test", "Ada")
	// Two sessions revoked long ago, the one revoked first written first,
	// and a live one.
	var first, second, live string
	for _, s := range []struct {
		id      *string
		revoked string // how long ago ("": live)
	}{{&first, "3 hours"}, {&second, "2 hours"}, {&live, ""}} {
		if err := e.DB.Pool.QueryRow(ctx, `INSERT INTO sessions (user_id, tenant_id, expires_at, revoked_at)
VALUES ($1, $2, now() + interval '1 day', now() - NULLIF($3, '')::interval) RETURNING id::text`, uid, ten.ID, s.revoked).Scan(s.id); err != nil {
			t.Fatal(err)
		}
	}
	// Expired codes, by expiry (and in the table's order): the second
	// session's, the live one's, the first session's.
	ofSecond, ofLive, ofFirst := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	for _, h := range []struct {
		hash    []byte
		session string
		ago     string
	}{{ofSecond, second, "30 minutes"}, {ofLive, live, "20 minutes"}, {ofFirst, first, "10 minutes"}} {
		if _, err := e.DB.Pool.Exec(ctx, `INSERT INTO oauth_handovers (code_hash, user_id, session_id, expires_at)
VALUES ($1, $2, $3, now() - $4::interval)`, h.hash, uid, h.session, h.ago); err != nil {
			t.Fatal(err)
		}
	}
	hold := e.DB.Hold(t, `SELECT 1 FROM oauth_handovers WHERE code_hash = $1 FOR UPDATE`, ofLive)
	// waitOrDone waits until n sessions wait on a lock or done answers.
	waitOrDone := func(n int, done <-chan error) (error, bool) {
		for deadline := time.Now().Add(10 * time.Second); e.count(t, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`) < n; time.Sleep(5 * time.Millisecond) {
			select {
			case err := <-done:
				return err, true
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("the sweep neither ended nor waits")
			}
		}
		return nil, false
	}
	codes := make(chan error, 1)
	go func() {
		_, err := e.svc.SweepHandovers(ctx)
		codes <- err
	}()
	codesErr, codesDone := waitOrDone(1, codes)
	swept := make(chan error, 1)
	go func() {
		_, err := e.svc.Sessions().Sweep(ctx, time.Hour)
		swept <- err
	}()
	n := 2
	if codesDone {
		n = 1
	}
	sweptErr, sweptDone := waitOrDone(n, swept)
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !codesDone {
		codesErr = <-codes
	}
	if !sweptDone {
		sweptErr = <-swept
	}
	if codesErr != nil {
		t.Errorf("SweepHandovers beside the sessions sweep = %v", codesErr)
	}
	if sweptErr != nil {
		t.Errorf("sessions sweep beside SweepHandovers = %v", sweptErr)
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, uid); n != 1 {
		t.Errorf("%d sessions left, want the live one", n)
	}
	if n := e.count(t, `SELECT count(*) FROM oauth_handovers WHERE session_id IN ($1, $2)`, first, second); n != 0 {
		t.Errorf("%d codes of the swept sessions left, want 0", n)
	}
}

// TestSignInTokenNamesTheSessionsAuthTime: the access token a sign-in
// issues with a new session names the session's auth_time, the one every
// refresh of it names, not the signing process's clock. Read from that
// clock, it was a second past the database's at a second's turn (and the
// token's recent authentication outlived the session's by as much), and
// a refresh then named another time than the sign-in's token.
func TestSignInTokenNamesTheSessionsAuthTime(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.skew.Store(int64(5 * time.Second)) // the service's clock ahead of the database's
	for _, tc := range []struct {
		name string
		get  func() tokens
	}{
		{"signup", func() tokens { return e.signup(t, "authtime@example.com", "A") }},
		{"password grant", func() tokens { return e.login(t, "authtime@example.com") }},
	} {
		tk := tc.get()
		_, _, signedAt := amrOf(t, tk.AccessToken)
		sid, _ := claims(t, tk.AccessToken)["sid"].(string)
		var stored int64
		if err := e.DB.Pool.QueryRow(context.Background(), `SELECT floor(extract(epoch FROM auth_time))::bigint FROM sessions WHERE id = $1`, sid).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if signedAt != stored {
			t.Errorf("%s: the token's auth_time is %d, the session's %d", tc.name, signedAt, stored)
		}
		r := e.refresh(t, tk.RefreshToken)
		if r.Status != http.StatusOK {
			t.Fatalf("%s: refresh: %d %s", tc.name, r.Status, r.Body)
		}
		var next tokens
		r.JSON(t, &next)
		if _, _, at := amrOf(t, next.AccessToken); at != signedAt {
			t.Errorf("%s: the refresh names auth_time %d, the sign-in's token %d", tc.name, at, signedAt)
		}
	}
}

// inactiveStates are the ways an account comes to be unable to sign in
// (its status, its membership's, its tenant's), each with the statement
// that brings it about (off) and the one that ends it (on), both taking
// the user's id.
func inactiveStates() []struct{ name, off, on string } {
	return []struct{ name, off, on string }{
		{"disabled account", `UPDATE users SET status = 'disabled' WHERE id = $1`, `UPDATE users SET status = 'active' WHERE id = $1`},
		{"disabled membership", `UPDATE memberships SET status = 'disabled' WHERE user_id = $1`, `UPDATE memberships SET status = 'active' WHERE user_id = $1`},
		{"suspended tenant", `UPDATE tenants SET status = 'suspended' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`,
			`UPDATE tenants SET status = 'active' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`},
	}
}

// TestPasswordGrantNamesTheTenantCanonically: a sign-in naming, in upper
// case, a tenant the account is not a member of is refused naming the
// tenant as every other answer does, in lower case (the grant checked
// tenant_id's form, then went on with the spelling as sent).
func TestPasswordGrantNamesTheTenantCanonically(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	e.signup(t, "canon@example.com", "First")
	other := e.SeedTenant(t, "Other")
	r := e.token(t, map[string]string{"grant_type": "password", "email": "canon@example.com", "password": pw, "tenant_id": strings.ToUpper(other.ID)})
	apitest.WantProblem(t, r, http.StatusForbidden, "forbidden")
	if body := string(r.Body); !strings.Contains(body, other.ID) || strings.Contains(body, strings.ToUpper(other.ID)) {
		t.Errorf("refusal %s, want it to name tenant %s in lower case", body, other.ID)
	}
}
