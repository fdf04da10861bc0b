package oauth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// The public callback URL (through the proxy); tests replay its path and
// query against the coreapi under test.
const redirectURL = "http://localhost:8080/api/v1/auth/oauth/fake/callback"

type env struct {
	*apitest.Env
	idp       *fakeIDP
	configure func(*httpapi.Options)
	svc       *oauth.Service
	noFollow  *http.Client
}

func start(t *testing.T) *env {
	t.Helper()
	idp := newFakeIDP(t)
	dir := t.TempDir()
	if _, err := keys.Generate(dir, keys.AlgEdDSA, time.Now()); err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Load(dir, keys.AlgEdDSA)
	if err != nil {
		t.Fatal(err)
	}
	x := &env{idp: idp, noFollow: &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	x.configure = func(o *httpapi.Options) {
		h := password.New(password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 0)
		o.Passwords = h
		store := sessions.New(o.Pool, time.Hour, 10*time.Second)
		a, err := auth.New(auth.Options{Logger: o.Logger, Pool: o.Pool, Keys: ring, Passwords: h, Sessions: store,
			Issuer: "http://localhost:8080", Audience: "tollgate", AccessTTL: 15 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := oauth.New(oauth.Options{Logger: o.Logger, Pool: o.Pool, Auth: a, Sessions: store,
			Providers: []config.OIDCProvider{{Name: "fake", Issuer: idp.URL, ClientID: idp.clientID,
				ClientSecret: idp.secret, RedirectURL: redirectURL, Scopes: []string{"openid", "email", "profile"}}}})
		if err != nil {
			t.Fatal(err)
		}
		if x.svc == nil {
			x.svc = svc
		}
		o.Register = append(o.Register, a.Register, svc.Register)
	}
	x.Env = apitest.Start(t, apitest.Options{Coverage: coverage, Configure: x.configure})
	x.Client.CheckRedirect = x.noFollow.CheckRedirect
	return x
}

// second starts another coreapi instance on the same database: nothing
// but PostgreSQL is shared with the first.
func (x *env) second(t *testing.T) string {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), x.DB.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	signer, err := identity.NewSigner(apitest.Key(), identity.DefaultWindow)
	if err != nil {
		t.Fatal(err)
	}
	o := httpapi.Options{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Pool: pool, Signer: signer,
		CursorKey: httpapi.DeriveCursorKey(apitest.Key())}
	x.configure(&o)
	srv, err := httpapi.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String()
}

// begin starts a sign-in and returns the provider URL coreapi redirects to.
func (x *env) begin(t *testing.T, query string) *url.URL {
	t.Helper()
	r := x.Get(t, nil, "/api/v1/auth/oauth/fake/authorize"+query)
	if r.Status != http.StatusFound {
		t.Fatalf("authorize: %d %s", r.Status, r.Body)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), x.idp.URL+"/authorize?") {
		t.Fatalf("Location = %q, want the provider's authorization endpoint", r.Header.Get("Location"))
	}
	return loc
}

// approve lets the provider approve and returns the callback path+query
// it sends the browser back to.
func (x *env) approve(t *testing.T, loc *url.URL) string {
	t.Helper()
	resp, err := x.noFollow.Get(loc.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("provider authorize: %d", resp.StatusCode)
	}
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || back.Path != "/api/v1/auth/oauth/fake/callback" {
		t.Fatalf("provider redirect = %q", resp.Header.Get("Location"))
	}
	return back.RequestURI()
}

type tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TenantID     string `json:"tenant_id"`
}

func sub(t *testing.T, access string) string {
	t.Helper()
	parts := strings.Split(access, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(b, &c)
	return c.Sub
}

func (x *env) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := x.DB.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestHappyPath(t *testing.T) {
	x := start(t)
	loc := x.begin(t, "")
	q := loc.Query()
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 43 {
			t.Errorf("%s = %q, want a 256-bit random value", k, q.Get(k))
		}
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("response_type") != "code" ||
		q.Get("redirect_uri") != redirectURL || !strings.Contains(q.Get("scope"), "openid") {
		t.Errorf("authorization request = %v", q)
	}
	var ttl float64
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT extract(epoch FROM expires_at - created_at) FROM oauth_states`).Scan(&ttl); err != nil {
		t.Fatalf("state row: %v", err)
	}
	if ttl != oauth.StateTTL.Seconds() {
		t.Errorf("state lifetime = %vs, want %v", ttl, oauth.StateTTL)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states WHERE state_hash = sha256(convert_to($1, 'UTF8'))`, q.Get("state")); n != 1 {
		t.Error("state not stored as its SHA-256")
	}

	r := x.Get(t, nil, x.approve(t, loc))
	if r.Status != http.StatusOK {
		t.Fatalf("callback: %d %s", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	uid := sub(t, tk.AccessToken)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE provider = 'fake' AND subject = 'idp-user-1' AND user_id = $1`, uid); n != 1 {
		t.Error("identity not linked to the token's user")
	}
	if n := x.count(t, `SELECT count(*) FROM memberships m JOIN membership_roles mr USING (tenant_id, user_id) WHERE m.user_id = $1 AND m.tenant_id = $2`, uid, tk.TenantID); n != 1 {
		t.Error("new account has no owned tenant")
	}
	// The provider vouched for the address: the fresh account is verified.
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND email_verified_at IS NOT NULL`, uid); n != 1 {
		t.Error("an account created from a provider-verified email is not verified")
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Errorf("state rows left = %d, want 0 (consumed)", n)
	}

	// Signing in again finds the same user.
	r = x.Get(t, nil, x.approve(t, x.begin(t, "")))
	var again tokens
	r.JSON(t, &again)
	if r.Status != http.StatusOK || sub(t, again.AccessToken) != uid {
		t.Errorf("second sign-in: %d, user %s, want %s", r.Status, sub(t, again.AccessToken), uid)
	}
	// And its refresh token works with the token endpoint.
	if rr := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": again.RefreshToken}); rr.Status != http.StatusOK {
		t.Errorf("refresh: %d %s", rr.Status, rr.Body)
	}
}

func TestLinksExistingAccountByVerifiedEmail(t *testing.T) {
	x := start(t)
	su := x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup", map[string]string{"email": "oidc@example.com", "password": "a long password", "tenant_name": "Mine"})
	if su.Status != http.StatusCreated {
		t.Fatalf("signup: %d", su.Status)
	}
	var st tokens
	su.JSON(t, &st)
	// The address was never proven: the account is not entered (the
	// takeover through linking), nothing is linked, no session opened.
	r := x.Get(t, nil, x.approve(t, x.begin(t, "?tenant_id="+st.TenantID)))
	if r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeVerifyBeforeLinking {
		t.Fatalf("sign-in for an unverified account's address: %d %s", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("%d identities linked to an unverified account", n)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, sub(t, st.AccessToken)); n != 1 {
		t.Errorf("%d sessions of the account, want only the signup's", n)
	}
	// Once its owner proved the address, the provider's identity links.
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, sub(t, st.AccessToken)); err != nil {
		t.Fatal(err)
	}
	r = x.Get(t, nil, x.approve(t, x.begin(t, "?tenant_id="+st.TenantID)))
	var tk tokens
	r.JSON(t, &tk)
	if r.Status != http.StatusOK || sub(t, tk.AccessToken) != sub(t, st.AccessToken) || tk.TenantID != st.TenantID {
		t.Errorf("sign-in of an existing email: %d user %s tenant %s, want %s %s", r.Status, sub(t, tk.AccessToken), tk.TenantID, sub(t, st.AccessToken), st.TenantID)
	}

	x.idp.mu.Lock()
	x.idp.Subject, x.idp.Email, x.idp.Verified = "other-subject", "unverified@example.com", false
	x.idp.mu.Unlock()
	if r := x.Get(t, nil, x.approve(t, x.begin(t, ""))); r.Status != http.StatusForbidden {
		t.Errorf("unverified email: %d %s", r.Status, r.Body)
	}
}

func TestReplayedState(t *testing.T) {
	x := start(t)
	cb := x.approve(t, x.begin(t, ""))
	if r := x.Get(t, nil, cb); r.Status != http.StatusOK {
		t.Fatalf("first callback: %d %s", r.Status, r.Body)
	}
	r := x.Get(t, nil, cb)
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_state" {
		t.Errorf("replayed callback: %d %s", r.Status, r.Body)
	}
	x.idp.mu.Lock()
	exchanges := x.idp.Exchanges
	x.idp.mu.Unlock()
	if exchanges != 1 {
		t.Errorf("code exchanges = %d, want 1 (the replay must not reach the provider)", exchanges)
	}
}

func TestExpiredState(t *testing.T) {
	x := start(t)
	cb := x.approve(t, x.begin(t, ""))
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE oauth_states SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	r := x.Get(t, nil, cb)
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != "expired_state" {
		t.Errorf("expired state: %d %s", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions`); n != 0 {
		t.Errorf("sessions = %d, want 0", n)
	}
}

func TestWrongNonce(t *testing.T) {
	x := start(t)
	x.idp.mu.Lock()
	x.idp.NonceOverride = "not-the-nonce-of-this-flow"
	x.idp.mu.Unlock()
	r := x.Get(t, nil, x.approve(t, x.begin(t, "")))
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != "nonce_mismatch" {
		t.Errorf("wrong nonce: %d %s", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
		t.Errorf("users = %d, want 0", n)
	}
}

func TestProviderErrorParam(t *testing.T) {
	x := start(t)
	state := x.begin(t, "").Query().Get("state")
	r := x.Get(t, nil, "/api/v1/auth/oauth/fake/callback?error=access_denied&error_description=user+said+no&state="+url.QueryEscape(state))
	if r.Status != http.StatusBadRequest {
		t.Fatalf("provider error: %d %s", r.Status, r.Body)
	}
	if p := r.Problem(t); p.Code != "provider_error" || !strings.Contains(p.Detail, "access_denied") {
		t.Errorf("problem = %+v", p)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Errorf("state rows = %d, want 0 (the flow is over)", n)
	}
}

func TestFlowAcrossInstances(t *testing.T) {
	x := start(t)
	other := x.second(t)
	cb := x.approve(t, x.begin(t, "")) // started on the first instance
	resp, err := http.Get(other + cb)  // finished on the second
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tk tokens
	if err := json.NewDecoder(resp.Body).Decode(&tk); err != nil || resp.StatusCode != http.StatusOK || tk.AccessToken == "" {
		t.Fatalf("callback on the second instance: %d %v", resp.StatusCode, err)
	}
}

func TestCallbackBadInput(t *testing.T) {
	x := start(t)
	state := x.begin(t, "").Query().Get("state")
	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"missing code", "/api/v1/auth/oauth/fake/callback?state=" + url.QueryEscape(state), 400, "invalid_request"},
		{"missing state", "/api/v1/auth/oauth/fake/callback?code=abc", 400, "invalid_request"},
		{"unknown state", "/api/v1/auth/oauth/fake/callback?code=abc&state=forged", 400, "invalid_state"},
		{"unknown provider callback", "/api/v1/auth/oauth/nope/callback?code=abc&state=x", 404, "unknown_provider"},
		{"unknown provider authorize", "/api/v1/auth/oauth/nope/authorize", 404, "unknown_provider"},
		{"bad tenant_id", "/api/v1/auth/oauth/fake/authorize?tenant_id=zzz", 400, "invalid_request"},
		{"unknown tenant_id", "/api/v1/auth/oauth/fake/authorize?tenant_id=00000000-0000-0000-0000-000000000000", 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := x.Get(t, nil, tt.path)
			if r.Status != tt.status || r.Problem(t).Code != tt.code {
				t.Errorf("%s: %d %s, want %d %s", tt.path, r.Status, r.Body, tt.status, tt.code)
			}
		})
	}
	// The missing-code request did not burn the real state.
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 1 {
		t.Errorf("state rows = %d, want 1", n)
	}
	// A code the provider does not know.
	r := x.Get(t, nil, "/api/v1/auth/oauth/fake/callback?code=bogus&state="+url.QueryEscape(state))
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_code" {
		t.Errorf("bogus code: %d %s", r.Status, r.Body)
	}
}

func TestSweep(t *testing.T) {
	x := start(t)
	x.begin(t, "")
	x.begin(t, "")
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE oauth_states SET expires_at = now() - interval '1 minute' WHERE ctid IN (SELECT ctid FROM oauth_states LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	n, err := x.svc.Sweep(context.Background())
	if err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want 1", n, err)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 1 {
		t.Errorf("rows left = %d, want 1 (the live one)", n)
	}
}
