package oauth_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail/mailtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth/oidctest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
)

// The public callback URL (through the proxy); tests replay its path and
// query against the coreapi under test.
const redirectURL = "http://localhost:8080/api/v1/auth/oauth/fake/callback"

type env struct {
	*apitest.Env
	idp       *oidctest.Provider
	configure func(*httpapi.Options)
	svc       *oauth.Service
	noFollow  *http.Client
	// beforeIssue is the auth service's BeforeIssue hook (nil: none).
	beforeIssue atomic.Pointer[func(sessionID string)]
	// lc, sender and smtp, with startWithLifecycle: the account
	// lifecycle's service (password reset, verification), and the sender
	// of the mail it queues, delivered to smtp.
	lc     *lifecycle.Service
	sender *mail.Sender
	smtp   *mailtest.Server
}

func start(t *testing.T, opts ...func(*oauth.Options)) *env {
	t.Helper()
	return startWith(t, nil, opts...)
}

// startWith is start with sealer sealing TOTP secrets (nil: enrolment is
// unavailable).
func startWith(t *testing.T, sealer *mfa.Sealer, opts ...func(*oauth.Options)) *env {
	t.Helper()
	return startEnv(t, sealer, false, opts...)
}

// startWithLifecycle is start with the account lifecycle's routes
// (forgot and reset password, verification) served too, and their mail
// delivered to x.smtp (x.mail).
func startWithLifecycle(t *testing.T, opts ...func(*oauth.Options)) *env {
	t.Helper()
	return startEnv(t, nil, true, opts...)
}

func startEnv(t *testing.T, sealer *mfa.Sealer, withLifecycle bool, opts ...func(*oauth.Options)) *env {
	t.Helper()
	idp := oidctest.New(t)
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
		store := sessions.New(o.Pool, time.Hour, 10*time.Second)
		a, err := auth.New(auth.Options{Logger: o.Logger, Pool: o.Pool, Keys: ring, Passwords: h, Sessions: store,
			Issuer: "http://localhost:8080", Audience: "tollgate", AccessTTL: 15 * time.Minute, MFA: sealer,
			BeforeIssue: func(sessionID string) {
				if f := x.beforeIssue.Load(); f != nil {
					(*f)(sessionID)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		// x.idp, not idp: an instance started later (second) may be given
		// another provider under the same name. It vouches for every
		// domain (OIDC_FAKE_EMAIL_DOMAINS=*) unless a test says otherwise.
		oo := oauth.Options{Logger: o.Logger, Pool: o.Pool, Auth: a, Sessions: store,
			Providers: []config.OIDCProvider{{Name: "fake", Issuer: x.idp.URL, ClientID: x.idp.ClientID,
				ClientSecret: x.idp.Secret, RedirectURL: redirectURL, Scopes: []string{"openid", "email", "profile"},
				EmailDomains: []string{config.AnyEmailDomain}}}}
		for _, f := range opts {
			f(&oo)
		}
		svc, err := oauth.New(oo)
		if err != nil {
			t.Fatal(err)
		}
		if x.svc == nil {
			x.svc = svc
		}
		o.Register = append(o.Register, a.Register, svc.Register)
		if withLifecycle {
			lc, err := lifecycle.New(lifecycle.Options{Logger: o.Logger, Pool: o.Pool, Auth: a, Passwords: h})
			if err != nil {
				t.Fatal(err)
			}
			if x.lc == nil {
				x.lc = lc
			}
			o.Register = append(o.Register, lc.Register)
			o.ErrorMappers = append(o.ErrorMappers, lifecycle.MapError)
		}
	}
	x.Env = apitest.Start(t, apitest.Options{Coverage: coverage, Configure: x.configure})
	x.Client.CheckRedirect = x.noFollow.CheckRedirect
	if withLifecycle {
		t.Cleanup(x.lc.WaitResets) // before the database goes
		x.smtp = mailtest.Start(t)
		tr, err := mail.ParseSMTPURL(x.smtp.URL())
		if err != nil {
			t.Fatal(err)
		}
		x.sender, err = mail.NewSender(mail.SenderOptions{Pool: x.DB.Pool, Transport: tr, From: "no-reply@example.com",
			Links: mail.DefaultLinks("http://localhost:8080"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			BackoffBase: time.Millisecond, LinkCheck: x.lc.MailLinkRefusal})
		if err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// mail sends what is queued (once the resets running after their answer
// are done) and returns the newest mail to rcpt whose subject contains
// subject. Only with startWithLifecycle.
func (x *env) mail(t *testing.T, rcpt, subject string) mailtest.Message {
	t.Helper()
	x.lc.WaitResets()
	for {
		n, err := x.sender.SendDue(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	return x.smtp.WaitFor(t, rcpt, subject, 5*time.Second)
}

// second starts another coreapi instance on the same database: nothing
// but PostgreSQL is shared with the first. It is configured as the first
// (apitest's default): v1 accepted, so the browser's unsigned requests to
// its public routes are served, as they are on the first.
func (x *env) second(t *testing.T) string {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), x.DB.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	o := httpapi.Options{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Pool: pool, IdentityKeys: apitest.Keys(),
		AcceptV1: true, CursorKey: httpapi.DeriveCursorKey(apitest.Key())}
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

// started is a sign-in begun by a browser: where the provider is, the
// state, and the binding cookie the browser got.
type started struct {
	loc    *url.URL
	state  string
	cookie *http.Cookie
}

// begin starts a sign-in (as the browser at 192.0.2.1 unless the query
// says otherwise through ip) and returns it.
func (x *env) begin(t *testing.T, query string) started {
	t.Helper()
	return x.beginFrom(t, query, "192.0.2.1")
}

func (x *env) beginFrom(t *testing.T, query, ip string) started {
	t.Helper()
	r := x.authorize(t, query, ip)
	if r.Status != http.StatusFound {
		t.Fatalf("authorize: %d %s", r.Status, r.Body)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), x.idp.IssuerURL()+"/authorize?") {
		t.Fatalf("Location = %q, want the provider's authorization endpoint", r.Header.Get("Location"))
	}
	st := started{loc: loc, state: loc.Query().Get("state")}
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == oauth.CookieName(st.state) {
			st.cookie = c
		}
	}
	if st.cookie == nil {
		t.Fatalf("authorize set no binding cookie %s: %v", oauth.CookieName(st.state), r.Header.Values("Set-Cookie"))
	}
	return st
}

func (x *env) authorize(t *testing.T, query, ip string) apitest.Response {
	t.Helper()
	return x.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/auth/oauth/fake/authorize" + query,
		ClientIP: ip})
}

// approve lets the provider approve and returns the callback path+query
// it sends the browser back to.
func (x *env) approve(t *testing.T, st started) string {
	t.Helper()
	resp, err := x.noFollow.Get(st.loc.String())
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

// callback sends the browser back to coreapi with cookie (nil: none).
func (x *env) callback(t *testing.T, path string, cookie *http.Cookie) apitest.Response {
	t.Helper()
	h := http.Header{}
	if cookie != nil {
		h.Set("Cookie", cookie.Name+"="+cookie.Value)
	}
	return x.Do(t, apitest.Request{Method: http.MethodGet, Path: path, Header: h})
}

// handover reads the hand-over code of a callback without return_to.
func handover(t *testing.T, r apitest.Response) string {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("callback: %d %s", r.Status, r.Body)
	}
	var h struct {
		Code string `json:"code"`
	}
	r.JSON(t, &h)
	if len(h.Code) != 43 {
		t.Fatalf("callback body %s: want {code} with a 256-bit code", r.Body)
	}
	if strings.Contains(string(r.Body), "access_token") || strings.Contains(string(r.Body), "refresh_token") {
		t.Fatalf("callback body carries tokens: %s", r.Body)
	}
	return h.Code
}

func (x *env) exchange(t *testing.T, code string) apitest.Response {
	t.Helper()
	return x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "oauth_handover", "code": code})
}

// finish completes a begun sign-in in its browser and exchanges the code.
func (x *env) finish(t *testing.T, st started) tokens {
	t.Helper()
	code := handover(t, x.callback(t, x.approve(t, st), st.cookie))
	r := x.exchange(t, code)
	if r.Status != http.StatusOK {
		t.Fatalf("exchange: %d %s", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	return tk
}

type tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TenantID     string `json:"tenant_id"`
}

// amrOf is an access token's amr and acr claims.
func amrOf(t *testing.T, access string) ([]string, string) {
	t.Helper()
	parts := strings.Split(access, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AMR []string `json:"amr"`
		ACR string   `json:"acr"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.AMR, c.ACR
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

// signup creates an account with a password (its address unverified) and
// returns its tokens.
func (x *env) signup(t *testing.T, email string) tokens {
	t.Helper()
	su := x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup", map[string]string{"email": email, "password": "a long password", "tenant_name": "Mine"})
	if su.Status != http.StatusCreated {
		t.Fatalf("signup: %d", su.Status)
	}
	var st tokens
	su.JSON(t, &st)
	return st
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
	st := x.begin(t, "")
	q := st.loc.Query()
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 43 {
			t.Errorf("%s = %q, want a 256-bit random value", k, q.Get(k))
		}
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("response_type") != "code" ||
		q.Get("redirect_uri") != redirectURL || !strings.Contains(q.Get("scope"), "openid") {
		t.Errorf("authorization request = %v", q)
	}
	// The binding cookie: __Host- (Secure, Path=/, no Domain), HttpOnly,
	// SameSite=Lax, as long as the state lives; only its hash is stored.
	c := st.cookie
	if !strings.HasPrefix(c.Name, "__Host-") || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode ||
		c.Path != "/" || c.Domain != "" || c.MaxAge != int(oauth.StateTTL/time.Second) || len(c.Value) < 43 {
		t.Errorf("binding cookie = %+v", c)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states WHERE browser_hash = sha256(convert_to($1, 'UTF8'))`, c.Value); n != 1 {
		t.Error("browser binding not stored as the cookie value's SHA-256")
	}
	var ttl float64
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT extract(epoch FROM expires_at - created_at) FROM oauth_states`).Scan(&ttl); err != nil {
		t.Fatalf("state row: %v", err)
	}
	if ttl != oauth.StateTTL.Seconds() {
		t.Errorf("state lifetime = %vs, want %v", ttl, oauth.StateTTL)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states WHERE state_hash = sha256(convert_to($1, 'UTF8'))`, st.state); n != 1 {
		t.Error("state not stored as its SHA-256")
	}

	r := x.callback(t, x.approve(t, st), st.cookie)
	code := handover(t, r)
	// The spent cookie is cleared.
	cleared := false
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		cleared = cleared || (c.Name == st.cookie.Name && c.MaxAge < 0)
	}
	if !cleared {
		t.Errorf("callback did not clear the binding cookie: %v", r.Header.Values("Set-Cookie"))
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_handovers WHERE code_hash = sha256(convert_to($1, 'UTF8')) AND expires_at <= now() + interval '60 seconds'`, code); n != 1 {
		t.Error("hand-over code not stored as its SHA-256 with a 60 s lifetime")
	}
	ex := x.exchange(t, code)
	if ex.Status != http.StatusOK {
		t.Fatalf("exchange: %d %s", ex.Status, ex.Body)
	}
	var tk tokens
	ex.JSON(t, &tk)
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
	// The code works once.
	if r := x.exchange(t, code); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Errorf("second exchange of a code: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}

	// Signing in again finds the same user.
	again := x.finish(t, x.begin(t, ""))
	if sub(t, again.AccessToken) != uid {
		t.Errorf("second sign-in: user %s, want %s", sub(t, again.AccessToken), uid)
	}
	// And its refresh token works with the token endpoint.
	if rr := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": again.RefreshToken}); rr.Status != http.StatusOK {
		t.Errorf("refresh: %d %s", rr.Status, rr.Body)
	}
}

// TestInvisibleNameClaim: a name claim of only zero-width characters
// names neither the new account nor its tenant, which is named after the
// address as for an account without a name: it passed for a name and
// showed as none.
func TestInvisibleNameClaim(t *testing.T) {
	x := start(t)
	x.idp.Name = "\u200b\u2060 \ufeff"
	tk := x.finish(t, x.begin(t, ""))
	var display, tenant string
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT u.display_name, t.name FROM users u, tenants t WHERE u.id = $1 AND t.id = $2`,
		sub(t, tk.AccessToken), tk.TenantID).Scan(&display, &tenant); err != nil {
		t.Fatal(err)
	}
	if display != "" || tenant != x.idp.Email {
		t.Errorf("display name %q, tenant %q; want none and %q", display, tenant, x.idp.Email)
	}
}

// TestLinksExistingAccountByVerifiedEmail: a provider authoritative for
// the address's domain (OIDC_<NAME>_EMAIL_DOMAINS lists it) links its
// verified address to the account of that address, once the account's
// own address is proven. Not listed, it does not.
func TestLinksExistingAccountByVerifiedEmail(t *testing.T) {
	domains := []string{"example.com"}
	x := start(t, func(o *oauth.Options) { o.Providers[0].EmailDomains = slices.Clone(domains) })
	st := x.signup(t, "oidc@example.com")
	// The address was never proven: the account is not entered (the
	// takeover through linking), nothing is linked, no session opened.
	first := x.begin(t, "?tenant_id="+st.TenantID)
	r := x.callback(t, x.approve(t, first), first.cookie)
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
	// An instance on which the provider is not authoritative for
	// example.com links nothing.
	domains = []string{"example.org"}
	other := x.second(t)
	if status, p := x.callbackOn(t, other, x.begin(t, "?tenant_id="+st.TenantID)); status != http.StatusConflict || p.Code != problem.CodeProviderNotAuthoritative {
		t.Fatalf("sign-in through a provider not authoritative for the domain: %d %s, want 409 %s", status, p.Code, problem.CodeProviderNotAuthoritative)
	}
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("%d identities linked by a provider not authoritative for the domain", n)
	}
	// Where it is, the provider's identity links.
	tk := x.finish(t, x.begin(t, "?tenant_id="+st.TenantID))
	if sub(t, tk.AccessToken) != sub(t, st.AccessToken) || tk.TenantID != st.TenantID {
		t.Errorf("sign-in of an existing email: user %s tenant %s, want %s %s", sub(t, tk.AccessToken), tk.TenantID, sub(t, st.AccessToken), st.TenantID)
	}
	// The link is a new way into the account: audited in its tenant, once
	// (a later sign-in through the linked identity links nothing), without
	// the provider's address.
	x.finish(t, x.begin(t, "?tenant_id="+st.TenantID))
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.identity_linked' AND target_id = $1
		AND tenant_id = $2 AND data->>'provider' = 'fake' AND data->>'subject' <> '' AND data->'email' IS NULL`, sub(t, st.AccessToken), st.TenantID); n != 1 {
		t.Errorf("%d identity_linked audit events, want 1", n)
	}

	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email, x.idp.Verified = "other-subject", "unverified@example.com", false
	x.idp.Mu.Unlock()
	b := x.begin(t, "")
	if r := x.callback(t, x.approve(t, b), b.cookie); r.Status != http.StatusForbidden {
		t.Errorf("unverified email: %d %s", r.Status, r.Body)
	}
}

// TestIdentityLinkNoticeMailed: a provider identity linked to an existing
// account by its address is a new way into it, and its owner is told, at
// the account's verified address, in the link's own transaction: whoever
// holds an account at the provider with that address (a mailbox recycled
// by its provider, an administrator of the provider's domain) had a
// sign-in path into the account of which its owner heard nothing. A
// later sign-in through the link, and a refused link, mail nothing; an
// account the sign-in creates gets no notice (nothing of it existed).
func TestIdentityLinkNoticeMailed(t *testing.T) {
	x := start(t)
	st := x.signup(t, "linked@example.com")
	notices := func(to string) int {
		t.Helper()
		return x.count(t, `SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked' AND to_address = $1
			AND data->>'provider' = 'fake' AND (data->>'at') IS NOT NULL`, to)
	}
	x.idp.Mu.Lock()
	x.idp.Email = "linked@example.com"
	x.idp.Mu.Unlock()
	// Not verified: refused, nothing mailed.
	first := x.begin(t, "?tenant_id="+st.TenantID)
	if r := x.callback(t, x.approve(t, first), first.cookie); r.Status != http.StatusConflict {
		t.Fatalf("sign-in for an unverified account's address: %d %s", r.Status, r.Body)
	}
	if n := notices("linked@example.com"); n != 0 {
		t.Fatalf("%d link notices for a refused link", n)
	}
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, sub(t, st.AccessToken)); err != nil {
		t.Fatal(err)
	}
	x.finish(t, x.begin(t, "?tenant_id="+st.TenantID))
	if n := notices("linked@example.com"); n != 1 {
		t.Fatalf("%d link notices to the account's address, want 1", n)
	}
	x.finish(t, x.begin(t, "?tenant_id="+st.TenantID))
	if n := notices("linked@example.com"); n != 1 {
		t.Errorf("%d link notices after a sign-in through the link, want still 1", n)
	}
	// A new account: no notice.
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email = "fresh-subject", "fresh@example.com"
	x.idp.Mu.Unlock()
	x.finish(t, x.begin(t, ""))
	if n := notices("fresh@example.com"); n != 0 {
		t.Errorf("%d link notices for an account the sign-in created", n)
	}
}

// TestNoLinkToAnAdminSetPassword: a tenant admin who created a member's
// account with a password of their choosing (POST /users) keeps knowing
// it. Once the member proved the address (the mailed link), an OIDC
// sign-in with it must not enter that account, or the member would use it
// through the provider, in every tenant it joins, while the admin kept
// password access. A password change does not end it: it proves only the
// current password, which the admin knows (the admin could change it to
// another of theirs). After a reset, which proves the mailbox and clears
// the mark, it links.
func TestNoLinkToAnAdminSetPassword(t *testing.T) {
	x := start(t)
	admin := x.signup(t, "admin@example.com")
	adminID := x.IdentityOf(t, sub(t, admin.AccessToken), admin.TenantID)
	r := x.Send(t, &adminID, http.MethodPost, "/api/v1/users",
		map[string]string{"email": "oidc@example.com", "password": "the admin's choice"})
	if r.Status != http.StatusCreated {
		t.Fatalf("POST /users: %d %s", r.Status, r.Body)
	}
	var member struct {
		ID string `json:"id"`
	}
	r.JSON(t, &member)
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, member.ID); err != nil {
		t.Fatal(err)
	}

	st := x.begin(t, "")
	r = x.callback(t, x.approve(t, st), st.cookie)
	if r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeAdminPasswordBeforeLinking {
		t.Fatalf("sign-in for an account with an admin-set password: %d %s", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("%d identities linked to an account whose password an admin set", n)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, member.ID); n != 0 {
		t.Errorf("%d sessions opened for the account", n)
	}

	// A change of the password (by the member, or by the admin who knows
	// it): still refused.
	memberID := x.IdentityOf(t, member.ID, admin.TenantID)
	if r := x.Send(t, &memberID, http.MethodPut, "/api/v1/users/me/password",
		map[string]string{"current_password": "the admin's choice", "new_password": "the admin's second choice"}); r.Status/100 != 2 {
		t.Fatalf("password change: %d %s", r.Status, r.Body)
	}
	st = x.begin(t, "")
	if r := x.callback(t, x.approve(t, st), st.cookie); r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeAdminPasswordBeforeLinking {
		t.Fatalf("sign-in after a password change: %d %s, want 409 %s", r.Status, r.Body, problem.CodeAdminPasswordBeforeLinking)
	}
	// A reset clears the mark (lifecycle's tests reset through the
	// mailed link): the provider's identity links to the account.
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET password_set_by_admin = false WHERE id = $1`, member.ID); err != nil {
		t.Fatal(err)
	}
	if tk := x.finish(t, x.begin(t, "")); sub(t, tk.AccessToken) != member.ID {
		t.Errorf("sign-in after the reset: user %s, want %s", sub(t, tk.AccessToken), member.ID)
	}
}

// TestNoLinkToAnAccountWithASecondFactor: the provider's word for an
// address is one factor, and not the account's: linked by email, it would
// stand for the password of an account whose owner asked for two, and let
// whoever holds that provider account (or a provider that vouches for
// addresses it does not control) ask for mfa_tokens and spend the
// factor's attempts until it locks. An account with an active second
// factor is never linked to a new provider identity; nothing is linked,
// no session opened, no link audited. A factor still being enrolled is
// none yet, and once the owner removes theirs, the identity links.
func TestNoLinkToAnAccountWithASecondFactor(t *testing.T) {
	x := start(t)
	st := x.signup(t, "oidc@example.com")
	uid := sub(t, st.AccessToken)
	ctx := context.Background()
	if _, err := x.DB.Pool.Exec(ctx, `UPDATE users SET email_verified_at = now() WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	if _, err := x.DB.Pool.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status) VALUES ($1, 'k', '\x00', 'active')`, uid); err != nil {
		t.Fatal(err)
	}
	b := x.begin(t, "")
	r := x.callback(t, x.approve(t, b), b.cookie)
	if r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeMFABeforeLinking {
		t.Fatalf("sign-in for an account with a second factor: %d %s, want 409 %s", r.Status, r.Body, problem.CodeMFABeforeLinking)
	}
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("%d identities linked to an account with a second factor", n)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, uid); n != 1 {
		t.Errorf("%d sessions of the account, want only the signup's", n)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = 'user.identity_linked'`); n != 0 {
		t.Errorf("%d identity_linked audit events for a refused link", n)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_handovers`); n != 0 {
		t.Errorf("%d hand-over codes made for a refused link", n)
	}

	// A factor being enrolled (not confirmed) guards nothing yet: the
	// identity links, as to any verified account.
	if _, err := x.DB.Pool.Exec(ctx, `UPDATE mfa_totp SET status = 'pending' WHERE user_id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	if tk := x.finish(t, x.begin(t, "")); sub(t, tk.AccessToken) != uid {
		t.Errorf("sign-in with the factor pending: user %s, want %s", sub(t, tk.AccessToken), uid)
	}
	// Linked, it signs in as before: the factor, once active, is asked
	// for at the exchange (TestExternalSignInAsksForTheSecondFactor).
	if _, err := x.DB.Pool.Exec(ctx, `UPDATE mfa_totp SET status = 'active' WHERE user_id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	b = x.begin(t, "")
	if r := x.exchange(t, handover(t, x.callback(t, x.approve(t, b), b.cookie))); r.Status != http.StatusUnauthorized || r.Problem(t).Code != problem.CodeMFARequired {
		t.Errorf("linked identity of an account with a second factor: %d %s, want 401 %s", r.Status, r.Body, problem.CodeMFARequired)
	}
}

// TestNoSecondSubjectOfAProviderByAddress: once an account is linked to
// a provider's subject, that subject is its owner at the provider. Another
// subject of the same provider whose verified address is the account's is
// someone else to whom the provider gave the address later (a mailbox
// recycled after its holder left, an account deleted and created again):
// linked by address, they would take over the earlier holder's account
// and its data. Such a sign-in is refused, nothing linked, no session
// opened; the linked subject keeps signing in.
func TestNoSecondSubjectOfAProviderByAddress(t *testing.T) {
	x := start(t)
	owner := sub(t, x.finish(t, x.begin(t, "")).AccessToken)
	x.idp.Mu.Lock()
	x.idp.Subject = "idp-user-2" // the same address, now someone else's
	x.idp.Mu.Unlock()
	b := x.begin(t, "")
	r := x.callback(t, x.approve(t, b), b.cookie)
	if r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeOtherSubjectLinked {
		t.Fatalf("sign-in of another subject with a linked account's address: %d %s, want 409 %s", r.Status, r.Body, problem.CodeOtherSubjectLinked)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE subject = 'idp-user-2'`); n != 0 {
		t.Errorf("%d identities of the second subject linked", n)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, owner); n != 1 {
		t.Errorf("the account has %d sessions, want its owner's 1", n)
	}
	x.idp.Mu.Lock()
	x.idp.Subject = "idp-user-1"
	x.idp.Mu.Unlock()
	if got := sub(t, x.finish(t, x.begin(t, "")).AccessToken); got != owner {
		t.Errorf("the linked subject signed in as %s, want %s", got, owner)
	}
}

// TestStateBoundToBrowser: whoever holds a callback URL (code + state) but
// not the browser's cookie cannot finish the sign-in (stolen callback URL),
// and a prepared callback cannot log a victim into the attacker's account
// (login CSRF): the victim's browser has no cookie for that state.
func TestStateBoundToBrowser(t *testing.T) {
	x := start(t)
	victim := x.begin(t, "")
	cb := x.approve(t, victim)

	// No cookie at all: refused before any database or provider work.
	r := x.callback(t, cb, nil)
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeStateNotBound {
		t.Fatalf("callback without the cookie: %d %s, want 400 %s", r.Status, r.Body, problem.CodeStateNotBound)
	}
	if r.Stats.Queries != 0 {
		t.Errorf("refused callback ran %d queries", r.Stats.Queries)
	}
	// The attacker's own binding value under the victim's cookie name.
	attacker := x.begin(t, "")
	forged := &http.Cookie{Name: victim.cookie.Name, Value: attacker.cookie.Value}
	if r := x.callback(t, cb, forged); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_state" {
		t.Fatalf("callback with another browser's cookie: %d %s, want 400 invalid_state", r.Status, r.Body)
	}
	// The provider error path is bound too.
	if r := x.callback(t, "/api/v1/auth/oauth/fake/callback?error=access_denied&state="+url.QueryEscape(victim.state), nil); r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeStateNotBound {
		t.Fatalf("provider error without the cookie: %d %s", r.Status, r.Body)
	}
	x.idp.Mu.Lock()
	exchanges := x.idp.Exchanges
	x.idp.Mu.Unlock()
	if exchanges != 0 {
		t.Errorf("code exchanges = %d, want 0 (unbound callbacks must not reach the provider)", exchanges)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions`); n != 0 {
		t.Errorf("sessions = %d, want 0", n)
	}
	// The victim's own browser still finishes: the refused attempts did not
	// spend the state.
	handover(t, x.callback(t, cb, victim.cookie))
}

// TestHeadStartsAndFinishesNothing: a HEAD (a link checker, a mail
// scanner) on authorize or the callback is refused with 405 and Allow:
// GET; it stores no state, spends no rate limit, and does not consume the
// state of a flow under way.
func TestHeadStartsAndFinishesNothing(t *testing.T) {
	x := start(t, func(o *oauth.Options) { o.AuthorizePerMinute = 2 })
	head := func(path string, cookie *http.Cookie) apitest.Response {
		t.Helper()
		h := http.Header{}
		if cookie != nil {
			h.Set("Cookie", cookie.Name+"="+cookie.Value)
		}
		r := x.Do(t, apitest.Request{Method: http.MethodHead, Path: path, Header: h, ClientIP: "192.0.2.1", Undocumented: true})
		if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != http.MethodGet {
			t.Fatalf("HEAD %s: %d Allow=%q, want 405 with Allow: GET", path, r.Status, r.Header.Get("Allow"))
		}
		if r.Stats.Queries != 0 {
			t.Errorf("HEAD %s ran %d queries, want none", path, r.Stats.Queries)
		}
		return r
	}
	for range 3 {
		head("/api/v1/auth/oauth/fake/authorize", nil)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Fatalf("state rows after HEAD = %d, want 0", n)
	}
	// The HEADs spent none of the address's two starts.
	x.begin(t, "")
	st := x.begin(t, "")
	cb := x.approve(t, st)
	head(cb, st.cookie)
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 2 {
		t.Errorf("state rows after HEAD on the callback = %d, want 2 (none consumed)", n)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions`); n != 0 {
		t.Errorf("sessions after HEAD on the callback = %d, want 0", n)
	}
	handover(t, x.callback(t, cb, st.cookie))
}

// TestGetOnlyAllow: authorize and the callback answer GET only, so every
// 405 on them (HEAD, POST, OPTIONS, DELETE) says Allow: GET. A POST was
// told Allow: GET, HEAD, and a client that followed it with a HEAD met
// another 405.
func TestGetOnlyAllow(t *testing.T) {
	x := start(t)
	for _, path := range []string{"/api/v1/auth/oauth/fake/authorize", "/api/v1/auth/oauth/fake/callback"} {
		for _, m := range []string{http.MethodHead, http.MethodPost, http.MethodOptions, http.MethodDelete, http.MethodPut} {
			r := x.Do(t, apitest.Request{Method: m, Path: path, ClientIP: "192.0.2.9", Undocumented: true})
			if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != http.MethodGet {
				t.Errorf("%s %s: %d Allow=%q, want 405 with Allow: GET", m, path, r.Status, r.Header.Get("Allow"))
				continue
			}
			if m != http.MethodHead {
				apitest.WantProblem(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
			}
			if r.Stats.Queries != 0 {
				t.Errorf("%s %s ran %d queries, want none", m, path, r.Stats.Queries)
			}
		}
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Fatalf("state rows = %d, want 0", n)
	}
}

func TestReplayedState(t *testing.T) {
	x := start(t)
	st := x.begin(t, "")
	cb := x.approve(t, st)
	handover(t, x.callback(t, cb, st.cookie))
	r := x.callback(t, cb, st.cookie)
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_state" {
		t.Errorf("replayed callback: %d %s", r.Status, r.Body)
	}
	x.idp.Mu.Lock()
	exchanges := x.idp.Exchanges
	x.idp.Mu.Unlock()
	if exchanges != 1 {
		t.Errorf("code exchanges = %d, want 1 (the replay must not reach the provider)", exchanges)
	}
}

func TestExpiredState(t *testing.T) {
	x := start(t)
	st := x.begin(t, "")
	cb := x.approve(t, st)
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE oauth_states SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	r := x.callback(t, cb, st.cookie)
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != "expired_state" {
		t.Errorf("expired state: %d %s", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions`); n != 0 {
		t.Errorf("sessions = %d, want 0", n)
	}
}

func TestWrongNonce(t *testing.T) {
	x := start(t)
	x.idp.Mu.Lock()
	x.idp.NonceOverride = "not-the-nonce-of-this-flow"
	x.idp.Mu.Unlock()
	st := x.begin(t, "")
	r := x.callback(t, x.approve(t, st), st.cookie)
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != "nonce_mismatch" {
		t.Errorf("wrong nonce: %d %s", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
		t.Errorf("users = %d, want 0", n)
	}
}

func TestProviderErrorParam(t *testing.T) {
	x := start(t)
	st := x.begin(t, "")
	r := x.callback(t, "/api/v1/auth/oauth/fake/callback?error=access_denied&error_description=user+said+no&state="+url.QueryEscape(st.state), st.cookie)
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

// TestCodeExchangeRefusals: a code the provider refuses as such
// (invalid_grant: used, expired, made up) is the browser's bad code, 400
// invalid_code. A refusal of this service as a client (invalid_client:
// a wrong OIDC_<NAME>_CLIENT_SECRET) is no fault of the browser's and no
// new sign-in mends it: it was answered as the browser's bad code too,
// and logged nowhere, so the operator never heard why every sign-in
// failed. It is 502 provider_error, logged with the provider's answer.
func TestCodeExchangeRefusals(t *testing.T) {
	t.Run("a code the provider does not know", func(t *testing.T) {
		x := start(t)
		st := x.begin(t, "")
		x.approve(t, st)
		r := x.callback(t, "/api/v1/auth/oauth/fake/callback?code=made-up&state="+url.QueryEscape(st.state), st.cookie)
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidCode {
			t.Fatalf("callback with an unknown code: %d %s, want 400 %s", r.Status, r.Body, problem.CodeInvalidCode)
		}
	})
	t.Run("this service refused as a client", func(t *testing.T) {
		logs := &testkit.LogBuffer{}
		x := start(t, func(o *oauth.Options) {
			o.Providers[0].ClientSecret = "not-the-secret"
			o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		})
		st := x.begin(t, "")
		r := x.callback(t, x.approve(t, st), st.cookie)
		if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeProviderError {
			t.Fatalf("callback with a wrong client secret: %d %s, want 502 %s", r.Status, r.Body, problem.CodeProviderError)
		}
		if !strings.Contains(logs.String(), "oidc code exchange") || !strings.Contains(logs.String(), "invalid_client") {
			t.Errorf("log = %q, want the code exchange's invalid_client", logs.String())
		}
		if n := x.count(t, `SELECT count(*) FROM sessions`); n != 0 {
			t.Errorf("sessions = %d, want 0", n)
		}
	})
	// A provider's error answer is logged cut, without what the request
	// sent it: the oauth2 library's error holds the whole body (a failing
	// endpoint's page of any size, which may quote the request).
	for _, tt := range []struct {
		name, ct, want string
		status         int
		body           func(echo string) string
	}{
		{"a large page", "text/html", "<html>", http.StatusInternalServerError,
			func(echo string) string { return "<html>" + echo + strings.Repeat("x", 64<<10) + "</html>" }},
		{"a large error description", "application/json", "invalid_client: ", http.StatusUnauthorized,
			func(echo string) string {
				b, _ := json.Marshal(map[string]string{"error": "invalid_client",
					"error_description": echo + strings.Repeat("x", 64<<10)})
				return string(b)
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs := &testkit.LogBuffer{}
			x := start(t, func(o *oauth.Options) {
				o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			})
			x.idp.TokenAnswer = func(r *http.Request) (int, string, string) {
				// The request as a careless provider would quote it.
				return tt.status, tt.ct, tt.body("request: " + r.Header.Get("Authorization") + " " + r.PostForm.Encode() + " ")
			}
			st := x.begin(t, "")
			back := x.approve(t, st)
			u, err := url.Parse(back)
			if err != nil {
				t.Fatal(err)
			}
			code := u.Query().Get("code")
			r := x.callback(t, back, st.cookie)
			if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeProviderError {
				t.Fatalf("callback: %d %s, want 502 %s", r.Status, r.Body, problem.CodeProviderError)
			}
			var line struct {
				Msg, Err string
				Status   int
			}
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, `"msg":"oidc code exchange"`) {
					if err := json.Unmarshal([]byte(l), &line); err != nil {
						t.Fatalf("log line: %v: %s", err, l)
					}
				}
			}
			if line.Msg == "" {
				t.Fatalf("no oidc code exchange line: %s", logs)
			}
			if line.Status != tt.status || !strings.HasPrefix(line.Err, tt.want+"request: ") ||
				!strings.Contains(line.Err, "client_secret=[redacted]&code=[redacted]&") {
				t.Errorf("logged status %d, err %.200q..., want %d and %q", line.Status, line.Err, tt.status, tt.want)
			}
			if len(line.Err) > 512+len("...") {
				t.Errorf("logged %d bytes of the provider's answer, want at most 515", len(line.Err))
			}
			for _, secret := range []string{x.idp.Secret, code} {
				if code == "" || strings.Contains(logs.String(), secret) {
					t.Errorf("the log holds %q (the client secret or the code): %.600s", secret, logs)
				}
			}
		})
	}
}

func TestFlowAcrossInstances(t *testing.T) {
	x := start(t)
	other := x.second(t)
	st := x.begin(t, "") // started on the first instance
	req, err := http.NewRequest(http.MethodGet, other+x.approve(t, st), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: st.cookie.Name, Value: st.cookie.Value})
	resp, err := http.DefaultClient.Do(req) // finished on the second
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h oauth.Handover
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != http.StatusOK || h.Code == "" {
		t.Fatalf("callback on the second instance: %d %v", resp.StatusCode, err)
	}
	// ... and the code is exchanged on the first.
	if r := x.exchange(t, h.Code); r.Status != http.StatusOK {
		t.Fatalf("exchange on the first instance: %d %s", r.Status, r.Body)
	}
}

// TestSubjectOfAnotherIssuer: a subject is unique only within its issuer
// (OpenID Connect Core 5.7). Once a provider's name points at another
// issuer (another IdP, realm or organisation), that issuer's user with a
// subject linked under the old one must not enter the old one's account.
// An identity linked before issuers were recorded takes its first
// sign-in's.
func TestSubjectOfAnotherIssuer(t *testing.T) {
	x := start(t)
	owner := sub(t, x.finish(t, x.begin(t, "")).AccessToken)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE provider = 'fake' AND subject = 'idp-user-1' AND issuer = $1`, x.idp.URL); n != 1 {
		t.Fatal("identity linked without its issuer")
	}

	// The same provider name, now another issuer, whose user has the
	// same subject (and an address of their own).
	first := x.idp
	x.idp = oidctest.New(t)
	x.idp.Email = "someone-else@example.com"
	other := x.second(t)
	signIn := func(t *testing.T) (*http.Response, []byte) {
		t.Helper()
		start, err := x.noFollow.Get(other + "/api/v1/auth/oauth/fake/authorize")
		if err != nil {
			t.Fatal(err)
		}
		start.Body.Close()
		loc, err := url.Parse(start.Header.Get("Location"))
		if err != nil || start.StatusCode != http.StatusFound {
			t.Fatalf("authorize: %d %q", start.StatusCode, start.Header.Get("Location"))
		}
		req, err := http.NewRequest(http.MethodGet, other+x.approve(t, started{loc: loc}), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range start.Cookies() {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
		resp, err := x.noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	resp, body := signIn(t)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), `"code":"conflict"`) {
		var h oauth.Handover
		if json.Unmarshal(body, &h) == nil && h.Code != "" {
			var tk tokens
			if r := x.exchange(t, h.Code); r.Status == http.StatusOK {
				r.JSON(t, &tk)
				t.Errorf("signed in as %s (the first issuer's account: %v)", sub(t, tk.AccessToken), sub(t, tk.AccessToken) == owner)
			}
		}
		t.Fatalf("sign-in through another issuer with a linked subject: %d %s, want 409 conflict", resp.StatusCode, body)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, owner); n != 1 {
		t.Errorf("the first issuer's account has %d sessions, want its own 1", n)
	}

	// Linked before issuers were recorded: the first sign-in (through the
	// first instance's, the first issuer) records its issuer, and the
	// other issuer is refused from then on.
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE identities SET issuer = NULL`); err != nil {
		t.Fatal(err)
	}
	second := x.idp
	x.idp = first
	if got := sub(t, x.finish(t, x.begin(t, "")).AccessToken); got != owner {
		t.Fatalf("first sign-in of an identity linked before issuers were recorded: user %s, want %s", got, owner)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1 AND issuer = $2`, owner, first.URL); n != 1 {
		t.Error("the identity's first sign-in did not record its issuer")
	}
	x.idp = second
	if resp, body := signIn(t); resp.StatusCode != http.StatusConflict {
		t.Errorf("another issuer after the identity recorded its first: %d %s, want 409", resp.StatusCode, body)
	}
}

// TestReturnTo: with OAUTH_ALLOWED_RETURN_URLS set, return_to is required
// and checked; the callback redirects to it with a one-time code and never
// puts a token in the URL or the page.
func TestReturnTo(t *testing.T) {
	const app = "https://app.example.com/signed-in?from=tollgate"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app, "http://localhost:3000/cb"} })
	for _, tc := range []struct{ name, query string }{
		{"missing", ""},
		{"not listed", "?return_to=" + url.QueryEscape("https://evil.example/steal")},
		{"prefix of a listed one", "?return_to=" + url.QueryEscape("https://app.example.com/signed-in")},
		{"listed one plus a path", "?return_to=" + url.QueryEscape("http://localhost:3000/cb/../x")},
		// Every other spelling of a listed URL, or of another host, is
		// not the listed URL: the list is compared byte for byte.
		{"scheme-relative", "?return_to=" + url.QueryEscape("//evil.example/signed-in?from=tollgate")},
		{"backslashes", "?return_to=" + url.QueryEscape(`\\evil.example/signed-in?from=tollgate`)},
		{"scheme without slashes", "?return_to=" + url.QueryEscape("https:evil.example/signed-in?from=tollgate")},
		{"listed host as userinfo", "?return_to=" + url.QueryEscape("https://app.example.com@evil.example/signed-in?from=tollgate")},
		{"host in upper case", "?return_to=" + url.QueryEscape("https://APP.example.com/signed-in?from=tollgate")},
		{"host with a trailing dot", "?return_to=" + url.QueryEscape("https://app.example.com./signed-in?from=tollgate")},
		{"percent-encoded path", "?return_to=" + url.QueryEscape("https://app.example.com/%73igned-in?from=tollgate")},
		{"listed one plus a fragment", "?return_to=" + url.QueryEscape(app+"#x")},
		{"percent-encoded twice", "?return_to=" + url.QueryEscape(url.QueryEscape(app))},
	} {
		r := x.authorize(t, tc.query, "192.0.2.5")
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeReturnToNotAllowed {
			t.Errorf("return_to %s: %d %s, want 400 %s", tc.name, r.Status, r.Body, problem.CodeReturnToNotAllowed)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Fatalf("refused starts wrote %d state rows", n)
	}
	pk := newAppPKCE(t)
	st := x.begin(t, pk.query(app))
	r := x.callback(t, x.approve(t, st), st.cookie)
	if r.Status != http.StatusFound {
		t.Fatalf("callback: %d %s, want 302 to return_to", r.Status, r.Body)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || loc.Scheme+"://"+loc.Host+loc.Path != "https://app.example.com/signed-in" || loc.Query().Get("from") != "tollgate" {
		t.Fatalf("Location = %q, want %s with the code added", r.Header.Get("Location"), app)
	}
	if strings.Contains(loc.RawQuery, "token") || strings.Contains(string(r.Body), "token") {
		t.Errorf("tokens in the redirect: %s %s", loc, r.Body)
	}
	if r.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("Referrer-Policy = %q, want no-referrer", r.Header.Get("Referrer-Policy"))
	}
	code := loc.Query().Get("code")
	ex := x.exchangeWith(t, app, code, pk.verifier)
	if ex.Status != http.StatusOK {
		t.Fatalf("exchange: %d %s", ex.Status, ex.Body)
	}
	var tk tokens
	ex.JSON(t, &tk)
	if tk.AccessToken == "" || tk.RefreshToken == "" {
		t.Fatalf("exchange gave %s", ex.Body)
	}
	if r := x.exchangeWith(t, app, code, pk.verifier); r.Status != http.StatusBadRequest {
		t.Errorf("second exchange: %d, want 400", r.Status)
	}
}

// appPKCE is an app's proof key for the hand-over (RFC 7636): the
// verifier it keeps and the S256 challenge it sends to authorize.
type appPKCE struct{ verifier, challenge string }

func newAppPKCE(t *testing.T) appPKCE {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	v := base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(v))
	return appPKCE{verifier: v, challenge: base64.RawURLEncoding.EncodeToString(sum[:])}
}

// query is the authorize query of a sign-in that ends at returnTo.
func (p appPKCE) query(returnTo string) string {
	return "?return_to=" + url.QueryEscape(returnTo) + "&code_challenge=" + p.challenge + "&code_challenge_method=S256"
}

// exchangeWith exchanges a hand-over code as the app at returnTo (its
// redirect_uri; "": none) holding verifier does ("": none).
func (x *env) exchangeWith(t *testing.T, returnTo, code, verifier string) apitest.Response {
	t.Helper()
	body := map[string]string{"grant_type": "oauth_handover", "code": code}
	if verifier != "" {
		body["code_verifier"] = verifier
	}
	if returnTo != "" {
		body["redirect_uri"] = returnTo
	}
	return x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", body)
}

// codeAt runs a begun sign-in's callback in its browser and returns the
// hand-over code of the redirect to return_to.
func (x *env) codeAt(t *testing.T, st started) string {
	t.Helper()
	r := x.callback(t, x.approve(t, st), st.cookie)
	if r.Status != http.StatusFound {
		t.Fatalf("callback: %d %s, want 302 to return_to", r.Status, r.Body)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("Location = %q, want return_to?code=...", r.Header.Get("Location"))
	}
	return loc.Query().Get("code")
}

// TestHandoverBoundToTheAppsFlow: login CSRF one step after the callback.
// Someone signs in with their own provider account, stops at the redirect
// to return_to?code=..., and sends a victim's browser there: the victim's
// app must not exchange that code into the attacker's session. With an
// allow-list, authorize requires the app's S256 code_challenge; the
// hand-over code is exchanged only with its code_verifier, so another
// flow's code (or a stolen one) fails at the app that did not start it.
func TestHandoverBoundToTheAppsFlow(t *testing.T) {
	const app = "https://app.example.com/signed-in"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app} })
	attacker, victim := newAppPKCE(t), newAppPKCE(t)

	for _, tc := range []struct{ name, query string }{
		{"no code_challenge", "?return_to=" + url.QueryEscape(app)},
		{"plain method", "?return_to=" + url.QueryEscape(app) + "&code_challenge=" + victim.verifier + "&code_challenge_method=plain"},
		{"method left to its plain default", "?return_to=" + url.QueryEscape(app) + "&code_challenge=" + victim.challenge},
		{"method without a challenge", "?return_to=" + url.QueryEscape(app) + "&code_challenge_method=S256"},
		{"not a SHA-256", "?return_to=" + url.QueryEscape(app) + "&code_challenge=" + victim.challenge[:42] + "&code_challenge_method=S256"},
		{"two challenges", victim.query(app) + "&code_challenge=" + attacker.challenge},
	} {
		r := x.authorize(t, tc.query, "192.0.2.5")
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidRequest {
			t.Errorf("authorize, %s: %d %s, want 400 %s", tc.name, r.Status, r.Body, problem.CodeInvalidRequest)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
		t.Fatalf("refused starts wrote %d state rows", n)
	}

	// The attacker's own sign-in, up to the redirect to the app.
	x.idp.Subject, x.idp.Email = "attacker-sub", "attacker@example.com"
	planted := x.codeAt(t, x.begin(t, attacker.query(app)))
	// The victim's app started a sign-in of its own (or none): the code
	// it is handed is not its flow's, and is refused, and spent.
	for _, tc := range []struct{ name, verifier string }{
		{"the victim app's verifier", victim.verifier},
		{"no verifier", ""},
	} {
		code := planted
		if tc.verifier == "" {
			code = x.codeAt(t, x.begin(t, attacker.query(app)))
		}
		if r := x.exchangeWith(t, app, code, tc.verifier); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
			t.Errorf("exchange of another flow's code with %s: %d %s, want 400 invalid_grant", tc.name, r.Status, r.Body)
		}
		if r := x.exchangeWith(t, app, code, attacker.verifier); r.Status != http.StatusBadRequest {
			t.Errorf("a code refused once works afterwards: %d %s", r.Status, r.Body)
		}
	}
	if r := x.exchangeWith(t, app, x.codeAt(t, x.begin(t, attacker.query(app))), strings.Repeat("~", 42)); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Errorf("exchange with a malformed verifier: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}

	// The app's own flow: its verifier opens its session.
	x.idp.Subject, x.idp.Email = "victim-sub", "victim@example.com"
	r := x.exchangeWith(t, app, x.codeAt(t, x.begin(t, victim.query(app))), victim.verifier)
	if r.Status != http.StatusOK {
		t.Fatalf("exchange with the flow's verifier: %d %s", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	if n := x.count(t, `SELECT count(*) FROM identities WHERE subject = 'victim-sub' AND user_id = $1`, sub(t, tk.AccessToken)); n != 1 {
		t.Error("the app's exchange did not sign in its own flow's user")
	}
}

// TestReturnToKeepsItsQuery: the callback adds the hand-over code to an
// allow-listed return_to and leaves the app's own parameters as the
// operator listed them: a pair with ";" (which Go's query parser drops
// whole) or an escape spelled another way still reaches the app. A code
// parameter already in the listed URL is replaced, never doubled, so the
// app reads only the hand-over code.
func TestReturnToKeepsItsQuery(t *testing.T) {
	for _, tc := range []struct{ name, app, want string }{
		{"semicolons", "https://app.example.com/cb?view=list;sort=name&from=tollgate", "view=list;sort=name&from=tollgate"},
		{"escapes kept as written", "https://app.example.com/cb?next=/notes/1&q=a%20b", "next=/notes/1&q=a%20b"},
		{"a code of its own", "https://app.example.com/cb?code=stale&a=1;code=old;b=2", "a=1;b=2"},
		{"no query", "https://app.example.com/cb", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{tc.app} })
			pk := newAppPKCE(t)
			st := x.begin(t, pk.query(tc.app))
			r := x.callback(t, x.approve(t, st), st.cookie)
			if r.Status != http.StatusFound {
				t.Fatalf("callback: %d %s, want 302 to return_to", r.Status, r.Body)
			}
			loc := r.Header.Get("Location")
			base, query, _ := strings.Cut(tc.app, "?")
			rest, ok := strings.CutPrefix(loc, base+"?")
			if !ok {
				t.Fatalf("Location = %q, want %s?...", loc, base)
			}
			i := strings.LastIndex(rest, "code=")
			if i < 0 {
				t.Fatalf("Location = %q, want a code", loc)
			}
			kept, code := rest[:i], rest[i+len("code="):]
			code, _, _ = strings.Cut(code, "&")
			if want := tc.want; want != "" {
				want += "&"
				if kept != want {
					t.Errorf("Location = %q: the app's parameters are %q, want %q (listed as %q)", loc, kept, want, query)
				}
			} else if kept != "" {
				t.Errorf("Location = %q: parameters %q added besides the code", loc, kept)
			}
			if r := x.exchangeWith(t, tc.app, code, pk.verifier); r.Status != http.StatusOK {
				t.Errorf("exchange of the code in %q: %d %s", loc, r.Status, r.Body)
			}
		})
	}
}

// TestReturnToWithoutAllowList: no list configured, a return_to is refused
// (it could not be checked).
func TestReturnToWithoutAllowList(t *testing.T) {
	x := start(t)
	r := x.authorize(t, "?return_to="+url.QueryEscape("https://app.example.com/cb"), "192.0.2.5")
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeReturnToNotAllowed {
		t.Fatalf("return_to without a list: %d %s", r.Status, r.Body)
	}
}

// TestHandoverExchange: the code is single-use, lives 60 s, and dies with
// its session.
func TestHandoverExchange(t *testing.T) {
	x := start(t)
	code := func() string {
		st := x.begin(t, "")
		return handover(t, x.callback(t, x.approve(t, st), st.cookie))
	}
	expired := code()
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE oauth_handovers SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	revoked := code()
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE sessions SET revoked_at = now() WHERE id = (SELECT session_id FROM oauth_handovers WHERE code_hash = sha256(convert_to($1, 'UTF8')))`, revoked); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		body   any
		ct     string
		status int
		code   string
		noDB   bool
	}{
		{"missing code", map[string]string{"grant_type": "oauth_handover"}, "", 400, "invalid_request", true},
		{"malformed code", map[string]string{"grant_type": "oauth_handover", "code": "short"}, "", 400, "invalid_grant", true},
		{"not base64url", map[string]string{"grant_type": "oauth_handover", "code": strings.Repeat("!", 43)}, "", 400, "invalid_grant", true},
		{"unknown code", map[string]string{"grant_type": "oauth_handover", "code": strings.Repeat("A", 43)}, "", 400, "invalid_grant", false},
		{"expired code", map[string]string{"grant_type": "oauth_handover", "code": expired}, "", 400, "invalid_grant", false},
		{"session revoked since", map[string]string{"grant_type": "oauth_handover", "code": revoked}, "", 400, "invalid_grant", false},
		{"NUL in code (form)", "grant_type=oauth_handover&code=%00", "application/x-www-form-urlencoded", 400, "bad_request", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: tt.body, ContentType: tt.ct})
			if r.Status != tt.status || r.Problem(t).Code != tt.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tt.status, tt.code)
			}
			if tt.noDB && r.Stats.Queries != 0 {
				t.Errorf("ran %d queries, want none", r.Stats.Queries)
			}
		})
	}
	// Form-encoded exchange works like JSON.
	form := url.Values{"grant_type": {"oauth_handover"}, "code": {code()}}.Encode()
	if r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: form, ContentType: "application/x-www-form-urlencoded"}); r.Status != http.StatusOK {
		t.Fatalf("form exchange: %d %s", r.Status, r.Body)
	}
	// Without an allow-list the app's code_challenge is optional; given,
	// the code needs its verifier (in a form too), and a code made without
	// one is refused to an app that sends a verifier: that app started
	// another flow.
	pk := newAppPKCE(t)
	if r := x.exchangeWith(t, "", code(), pk.verifier); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Errorf("verifier for a code made without a challenge: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}
	withChallenge := func() string {
		st := x.begin(t, "?code_challenge="+pk.challenge+"&code_challenge_method=S256")
		return handover(t, x.callback(t, x.approve(t, st), st.cookie))
	}
	if r := x.exchange(t, withChallenge()); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Errorf("no verifier for a code made with a challenge: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}
	form = url.Values{"grant_type": {"oauth_handover"}, "code": {withChallenge()}, "code_verifier": {pk.verifier}}.Encode()
	if r := x.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: form, ContentType: "application/x-www-form-urlencoded"}); r.Status != http.StatusOK {
		t.Fatalf("form exchange with the verifier: %d %s", r.Status, r.Body)
	}
}

// TestHandoverRacingSignOut: a session signed out after the exchange
// reissued its refresh token and before its access token was signed gets
// no token (one issued after revoked_at would outlive the projection's
// revoked list): the answer of a session signed out before the exchange.
func TestHandoverRacingSignOut(t *testing.T) {
	x := start(t)
	st := x.begin(t, "")
	c := handover(t, x.callback(t, x.approve(t, st), st.cookie))
	revoked := make(chan string, 1)
	f := func(sessionID string) {
		select {
		case revoked <- sessionID:
		default:
		}
		const q = `UPDATE sessions SET revoked_at = clock_timestamp(), revoked_reason = 'logout' WHERE id = $1`
		if _, err := x.DB.Pool.Exec(context.Background(), q, sessionID); err != nil {
			t.Error(err)
		}
	}
	x.beforeIssue.Store(&f)
	r := x.exchange(t, c)
	x.beforeIssue.Store(nil)
	select {
	case <-revoked:
	default:
		t.Fatalf("no token was issued: %d %s", r.Status, r.Body)
	}
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidGrant {
		t.Fatalf("exchange of a session signed out before the signing: %d %s, want 400 %s", r.Status, r.Body, problem.CodeInvalidGrant)
	}
	if strings.Contains(string(r.Body), "access_token") {
		t.Errorf("answer carries an access token: %s", r.Body)
	}
}

// TestHandoverRefusedAfterMembershipEnds: a sign-in whose standing in its
// tenant ended between the callback and the exchange gets no tokens. A
// member's removal (DELETE /users/{id}, through the store) ends the
// member's sessions in the tenant, the callback's among them: 400
// invalid_grant, as for any session ended since the callback. A member
// disabled there or a tenant suspended, which end no session, get the
// password grant's refusal of that tenant, 403 forbidden; an account
// disabled meanwhile the answer its sign-in gets (403 user_disabled; it
// was 400 invalid_grant, as for an unknown code). The removal was made
// with a raw DELETE of the membership, which left the session live and
// answered 403 forbidden, never what a real removal answers.
func TestHandoverRefusedAfterMembershipEnds(t *testing.T) {
	disabled := identity.StatusDisabled
	for _, tt := range []struct {
		name   string
		change func(t *testing.T, x *env, members *users.Store, admin roles.Actor, userID, tenantID string)
		status int
		code   string
	}{
		{"membership removed", func(t *testing.T, _ *env, members *users.Store, admin roles.Actor, userID, tenantID string) {
			if err := members.Remove(t.Context(), tenantID, userID, admin); err != nil {
				t.Fatal(err)
			}
		}, http.StatusBadRequest, problem.CodeInvalidGrant},
		{"membership disabled", func(t *testing.T, _ *env, members *users.Store, admin roles.Actor, userID, tenantID string) {
			if _, err := members.Update(t.Context(), tenantID, userID, admin, users.Patch{Status: &disabled}); err != nil {
				t.Fatal(err)
			}
		}, http.StatusForbidden, problem.CodeForbidden},
		{"tenant suspended", func(t *testing.T, x *env, _ *users.Store, _ roles.Actor, _, tenantID string) {
			x.Suspend(t, tenantID)
		}, http.StatusForbidden, problem.CodeForbidden},
		{"account disabled", func(t *testing.T, x *env, _ *users.Store, _ roles.Actor, userID, _ string) {
			// No route disables an account: an operator's change.
			if _, err := x.DB.Pool.Exec(t.Context(), `UPDATE users SET status = 'disabled' WHERE id = $1`, userID); err != nil {
				t.Fatal(err)
			}
		}, http.StatusForbidden, problem.CodeUserDisabled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x := start(t)
			uid := sub(t, x.finish(t, x.begin(t, "")).AccessToken)
			team := x.SeedTenant(t, "Team")
			owner := x.SeedUserIn(t, team.ID, "owner@example.com", "owner")
			x.SeedMember(t, team.ID, uid, "member")
			st := x.begin(t, "?tenant_id="+team.ID)
			c := handover(t, x.callback(t, x.approve(t, st), st.cookie))
			tt.change(t, x, users.NewStore(x.DB.Pool, nil, nil, users.Limits{}),
				roles.Actor{UserID: owner.UserID, Permissions: owner.Permissions, RequestID: "test"}, uid, team.ID)
			r := x.exchange(t, c)
			if r.Status != tt.status || r.Problem(t).Code != tt.code {
				t.Fatalf("exchange: %d %s, want %d %s", r.Status, r.Body, tt.status, tt.code)
			}
		})
	}
}

// TestHandoverRacingTheMembersStanding: the exchange read the account's,
// the membership's and the tenant's statuses as it consumed the code, then
// reissued the session's refresh token in a later transaction: a member
// disabled, an account disabled or a tenant suspended in between got the
// session's tokens, its step taken after the change committed. The test
// holds the session's row, where the reissue waits, while the change is
// made. A change that committed before the session's step is answered as
// one made before the exchange (403); a member's disable may instead wait
// for the exchange (its membership held until the exchange commits), which
// then precedes it: 200.
func TestHandoverRacingTheMembersStanding(t *testing.T) {
	disabled := identity.StatusDisabled
	for _, tt := range []struct {
		name   string
		change func(t *testing.T, x *env, members *users.Store, admin roles.Actor, userID, tenantID string)
		// waits: the change may wait for the exchange (else it never does).
		waits bool
		code  string
	}{
		{"membership disabled", func(t *testing.T, _ *env, members *users.Store, admin roles.Actor, userID, tenantID string) {
			if _, err := members.Update(context.Background(), tenantID, userID, admin, users.Patch{Status: &disabled}); err != nil {
				t.Error(err)
			}
		}, true, problem.CodeForbidden},
		{"tenant suspended", func(t *testing.T, x *env, _ *users.Store, _ roles.Actor, _, tenantID string) {
			st := identity.StatusSuspended
			if _, _, err := tenants.NewStore(x.DB.Pool).Update(context.Background(), tenantID, roles.Actor{RequestID: "operator-test"}, tenants.Patch{Status: &st}); err != nil {
				t.Error(err)
			}
		}, false, problem.CodeForbidden},
		{"account disabled", func(t *testing.T, x *env, _ *users.Store, _ roles.Actor, userID, _ string) {
			if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET status = 'disabled' WHERE id = $1`, userID); err != nil {
				t.Error(err)
			}
		}, false, problem.CodeUserDisabled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			x := start(t)
			uid := sub(t, x.finish(t, x.begin(t, "")).AccessToken)
			team := x.SeedTenant(t, "Team")
			owner := x.SeedUserIn(t, team.ID, "owner@example.com", "owner")
			x.SeedMember(t, team.ID, uid, "member")
			st := x.begin(t, "?tenant_id="+team.ID)
			c := handover(t, x.callback(t, x.approve(t, st), st.cookie))
			var sid string
			if err := x.DB.Pool.QueryRow(ctx, `SELECT session_id::text FROM oauth_handovers`).Scan(&sid); err != nil {
				t.Fatal(err)
			}
			hold := x.DB.Hold(t, `SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE`, sid)
			exchange := dbtest.AnsweredOrWaiting(t, x.DB, func() apitest.Response { return x.exchange(t, c) })
			changed := dbtest.AnsweredOrWaitingFor(t, x.DB, 2, func() struct{} {
				tt.change(t, x, users.NewStore(x.DB.Pool, nil, nil, users.Limits{}),
					roles.Actor{UserID: owner.UserID, Permissions: owner.Permissions, RequestID: "test"}, uid, team.ID)
				return struct{}{}
			})
			// Committed before the exchange's session step, or waiting for
			// the exchange.
			first := x.count(t, `SELECT count(*) FROM users u JOIN memberships m ON m.user_id = u.id JOIN tenants t ON t.id = m.tenant_id
WHERE u.id = $1 AND t.id = $2 AND u.status = 'active' AND m.status = 'active' AND t.status = 'active'`, uid, team.ID) == 0
			if !first && !tt.waits {
				t.Fatal("the change waits for the exchange")
			}
			if err := hold.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			r := exchange()
			changed()
			if first {
				if r.Status != http.StatusForbidden || r.Problem(t).Code != tt.code {
					t.Fatalf("exchange after the change: %d %s, want 403 %s", r.Status, r.Body, tt.code)
				}
				if n := x.count(t, `SELECT count(*) FROM refresh_tokens WHERE session_id = $1`, sid); n != 1 {
					t.Errorf("%d refresh tokens of the session, want the callback's alone", n)
				}
				return
			}
			if r.Status != http.StatusOK {
				t.Fatalf("exchange before the change: %d %s, want 200", r.Status, r.Body)
			}
		})
	}
}

// TestSignInWithoutTenantRacingRemoval: a provider's sign-in naming no
// tenant lands in the user's oldest active membership; when the user is
// removed from that tenant between the pick and the session's creation,
// it lands in the next one, as a sign-in just after the removal does, and
// with none left it is answered as such a sign-in is (403
// no_membership), as the password grant does. It answered 403
// no_membership "in the requested tenant" though the user had another,
// and had requested none.
func TestSignInWithoutTenantRacingRemoval(t *testing.T) {
	for _, another := range []bool{true, false} {
		name := "no other tenant"
		if another {
			name = "another tenant"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			x := start(t)
			first := x.finish(t, x.begin(t, ""))
			uid := sub(t, first.AccessToken)
			second := x.SeedTenant(t, "Second")
			if another {
				x.SeedMember(t, second.ID, uid, "member")
			}

			// The removal from the oldest tenant (as DELETE /users/{id}
			// runs it), held uncommitted.
			remove := x.HoldRemoval(t, first.TenantID, uid)
			st := x.begin(t, "")
			back := x.approve(t, st)
			callback := dbtest.AnsweredOrWaiting(t, x.DB, func() apitest.Response { // at the membership's row
				return x.callback(t, back, st.cookie)
			})
			if err := remove.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			r := callback()
			if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND tenant_id = $2 AND revoked_at IS NULL`, uid, first.TenantID); n != 0 {
				t.Errorf("live sessions in the tenant left = %d, want 0", n)
			}
			if !another {
				if r.Status != http.StatusForbidden || r.Problem(t).Code != problem.CodeNoMembership {
					t.Fatalf("callback: %d %s, want 403 %s", r.Status, r.Body, problem.CodeNoMembership)
				}
				return
			}
			ex := x.exchange(t, handover(t, r))
			if ex.Status != http.StatusOK {
				t.Fatalf("exchange: %d %s, want 200 in the other tenant", ex.Status, ex.Body)
			}
			var got tokens
			ex.JSON(t, &got)
			if got.TenantID != second.ID {
				t.Errorf("signed in to %s, want the other tenant %s", got.TenantID, second.ID)
			}
		})
	}
}

// TestSignInAnsweredAsThePasswordGrant: a provider's sign-in that may not
// land is refused as a password sign-in of the same account is: a
// disabled account 403 user_disabled, whatever its memberships and the
// tenant asked for; a sign-in started for a tenant where the user is no
// active member, or that is suspended, 403 forbidden; one started for
// none, with no active membership in an active tenant, 403 no_membership.
// A disabled account without a membership, or one asking for another
// tenant, was 403 no_membership, and so was every sign-in started for a
// tenant the user could not enter.
func TestSignInAnsweredAsThePasswordGrant(t *testing.T) {
	const (
		qDisableAccount    = `UPDATE users SET status = 'disabled' WHERE id = $1`
		qDisableMembership = `UPDATE memberships SET status = 'disabled' WHERE user_id = $1`
		qRemove            = `DELETE FROM memberships WHERE user_id = $1`
		qSuspend           = `UPDATE tenants SET status = 'suspended' WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1)`
	)
	for _, tt := range []struct {
		name   string
		change []string
		asked  string // "own", "other" or "" (none)
		status int
		code   string
	}{
		{"disabled account", []string{qDisableAccount}, "", http.StatusForbidden, problem.CodeUserDisabled},
		{"disabled account without a membership", []string{qDisableAccount, qRemove}, "", http.StatusForbidden, problem.CodeUserDisabled},
		{"disabled account asking for another tenant", []string{qDisableAccount}, "other", http.StatusForbidden, problem.CodeUserDisabled},
		{"no membership", []string{qRemove}, "", http.StatusForbidden, problem.CodeNoMembership},
		{"disabled member", []string{qDisableMembership}, "", http.StatusForbidden, problem.CodeNoMembership},
		{"suspended tenant", []string{qSuspend}, "", http.StatusForbidden, problem.CodeNoMembership},
		{"another tenant asked", nil, "other", http.StatusForbidden, problem.CodeForbidden},
		{"disabled member of the tenant asked", []string{qDisableMembership}, "own", http.StatusForbidden, problem.CodeForbidden},
		{"suspended tenant asked", []string{qSuspend}, "own", http.StatusForbidden, problem.CodeForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x := start(t)
			first := x.finish(t, x.begin(t, ""))
			uid := sub(t, first.AccessToken)
			other := x.SeedTenant(t, "Other")
			for _, q := range tt.change {
				if _, err := x.DB.Pool.Exec(context.Background(), q, uid); err != nil {
					t.Fatal(err)
				}
			}
			query := ""
			switch tt.asked {
			case "own":
				query = "?tenant_id=" + first.TenantID
			case "other":
				query = "?tenant_id=" + other.ID
			}
			st := x.begin(t, query)
			r := x.callback(t, x.approve(t, st), st.cookie)
			if r.Status != tt.status || r.Problem(t).Code != tt.code {
				t.Fatalf("callback: %d %s, want %d %s", r.Status, r.Body, tt.status, tt.code)
			}
			if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL`, uid); n != 1 {
				t.Errorf("%d live sessions, want the first sign-in's only", n)
			}
		})
	}
}

func TestCallbackBadInput(t *testing.T) {
	x := start(t)
	st := x.begin(t, "")
	state := st.state
	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"missing code", "/api/v1/auth/oauth/fake/callback?state=" + url.QueryEscape(state), 400, "invalid_request"},
		{"missing state", "/api/v1/auth/oauth/fake/callback?code=abc", 400, "invalid_request"},
		{"unknown state", "/api/v1/auth/oauth/fake/callback?code=abc&state=forged", 400, "state_not_bound"},
		{"unknown provider callback", "/api/v1/auth/oauth/nope/callback?code=abc&state=x", 404, "unknown_provider"},
		{"unknown provider authorize", "/api/v1/auth/oauth/nope/authorize", 404, "unknown_provider"},
		{"bad tenant_id", "/api/v1/auth/oauth/fake/authorize?tenant_id=zzz", 400, "invalid_request"},
		{"unknown tenant_id", "/api/v1/auth/oauth/fake/authorize?tenant_id=00000000-0000-0000-0000-000000000000", 400, "invalid_request"},
		// Each parameter at most once (RFC 6749 3.1): none of these
		// spends the state.
		{"two codes", "/api/v1/auth/oauth/fake/callback?code=abc&code=def&state=" + url.QueryEscape(state), 400, "invalid_request"},
		{"two states", "/api/v1/auth/oauth/fake/callback?code=abc&state=" + url.QueryEscape(state) + "&state=x", 400, "invalid_request"},
		{"two errors", "/api/v1/auth/oauth/fake/callback?error=a&error=b&state=" + url.QueryEscape(state), 400, "invalid_request"},
		{"two return_to", "/api/v1/auth/oauth/fake/authorize?return_to=%2Fa&return_to=%2Fb", 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := x.callback(t, tt.path, st.cookie)
			if r.Status != tt.status || r.Problem(t).Code != tt.code {
				t.Errorf("%s: %d %s, want %d %s", tt.path, r.Status, r.Body, tt.status, tt.code)
			}
		})
	}
	// The missing-code request did not burn the real state.
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 1 {
		t.Errorf("state rows = %d, want 1", n)
	}
	// A forged state with a cookie made for it is still unknown.
	forged := &http.Cookie{Name: oauth.CookieName("forged"), Value: st.cookie.Value}
	if r := x.callback(t, "/api/v1/auth/oauth/fake/callback?code=abc&state=forged", forged); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_state" {
		t.Errorf("forged state: %d %s", r.Status, r.Body)
	}
	// A code the provider does not know.
	r := x.callback(t, "/api/v1/auth/oauth/fake/callback?code=bogus&state="+url.QueryEscape(state), st.cookie)
	if r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_code" {
		t.Errorf("bogus code: %d %s", r.Status, r.Body)
	}
}

// TestAuthorizeRateLimit: each client IP may start a bounded number of
// sign-ins per minute; a refused start writes nothing but its count.
func TestAuthorizeRateLimit(t *testing.T) {
	x := start(t, func(o *oauth.Options) { o.AuthorizePerMinute = 3 })
	for i := range 3 {
		if r := x.authorize(t, "", "203.0.113.7"); r.Status != http.StatusFound {
			t.Fatalf("start %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	r := x.authorize(t, "", "203.0.113.7")
	if r.Status != http.StatusTooManyRequests || r.Problem(t).Code != problem.CodeTooManyRequests {
		t.Fatalf("start over the limit: %d %s, want 429", r.Status, r.Body)
	}
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After = %q, want 1..60 s", r.Header.Get("Retry-After"))
	}
	if r.Stats.Queries != 1 || r.Stats.Transactions != 0 {
		t.Errorf("refused start ran %d queries in %d transactions, want its count only", r.Stats.Queries, r.Stats.Transactions)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 3 {
		t.Errorf("state rows = %d, want 3", n)
	}
	// Another address is not affected; the same one is again once the
	// sliding minute no longer holds its starts.
	if r := x.authorize(t, "", "203.0.113.8"); r.Status != http.StatusFound {
		t.Errorf("another address: %d %s", r.Status, r.Body)
	}
	x.minutesPass(t, 2)
	if r := x.authorize(t, "", "203.0.113.7"); r.Status != http.StatusFound {
		t.Errorf("two minutes later: %d %s", r.Status, r.Body)
	}
}

// minutesPass makes n minutes pass for every rate limit's window.
func (x *env) minutesPass(t *testing.T, n float64) {
	t.Helper()
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE rate_limits SET window_start = window_start - make_interval(secs => $1)`, n*60); err != nil {
		t.Fatal(err)
	}
}

// TestAuthorizeRateLimitAcrossInstances: the starts of a client IP are
// counted over every coreapi instance, in a sliding minute: counted in
// each instance's memory, N instances let N times the limit through, and
// the limit's worth at a minute's end and again at the next one's start
// passed together.
func TestAuthorizeRateLimitAcrossInstances(t *testing.T) {
	x := start(t, func(o *oauth.Options) { o.AuthorizePerMinute = 4 })
	other := x.second(t)
	const path = "/api/v1/auth/oauth/fake/authorize"
	// on starts a sign-in from apitest.DefaultClientIP on the first
	// instance or, with second, on the other one.
	on := func(second bool) int {
		t.Helper()
		if !second {
			return x.authorize(t, "", apitest.DefaultClientIP).Status
		}
		req, err := http.NewRequest(http.MethodGet, other+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(requestid.Header, requestid.New())
		x.SignV2(req.Header, identity.Identity{}, http.MethodGet, path, nil)
		resp, err := x.noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After on the other instance")
		}
		return resp.StatusCode
	}
	for i, second := range []bool{false, true, false, true} {
		if got := on(second); got != http.StatusFound {
			t.Fatalf("start %d (other instance %v): %d, want 302", i+1, second, got)
		}
	}
	for _, second := range []bool{true, false} {
		if got := on(second); got != http.StatusTooManyRequests {
			t.Fatalf("start over the limit shared by both instances (other instance %v): %d, want 429", second, got)
		}
	}
	// The minute ended a second ago: 4 × 59/60 still count, so one more
	// start passes, on either instance, and no more.
	x.minutesPass(t, 1+1.0/60)
	allowed := 0
	for _, second := range []bool{true, false, true, false} {
		if on(second) == http.StatusFound {
			allowed++
		}
	}
	if allowed != 1 {
		t.Errorf("%d starts allowed just after a full minute, want 1 (the limit counted afresh let 4 through on each instance)", allowed)
	}
}

// TestAuthorizeTableBounded: the pending states are capped whatever the
// number of client addresses, and expired ones are swept.
func TestAuthorizeTableBounded(t *testing.T) {
	x := start(t, func(o *oauth.Options) { o.MaxPendingStates = 2 })
	x.beginFrom(t, "", "198.51.100.1")
	x.beginFrom(t, "", "198.51.100.2")
	r := x.authorize(t, "", "198.51.100.3")
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("start over the cap: %d %s, want 503 with Retry-After", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 2 {
		t.Fatalf("state rows = %d, want the cap of 2", n)
	}
	// Expired rows neither count nor stay.
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE oauth_states SET expires_at = now() - interval '1 minute'`); err != nil {
		t.Fatal(err)
	}
	x.beginFrom(t, "", "198.51.100.3")
	if n, err := x.svc.Sweep(context.Background()); err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want the 2 expired rows", n, err)
	}
}

// TestStatesFullWarningsBounded: while the pending states are at their cap
// every start is refused, and one warning a second at most says so,
// whatever the number of clients and addresses refused (each wrote a
// line). The count of those left out comes in the warning of a later
// start or, when none comes, on its own about a second later; that
// warning is the one of its second: a start just after it in the same
// second wrote a second warning, and now waits for the next.
func TestStatesFullWarningsBounded(t *testing.T) {
	logs := &testkit.LogBuffer{}
	x := start(t, func(o *oauth.Options) {
		o.MaxPendingStates = 1
		o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	x.beginFrom(t, "", "198.51.100.1")
	refuse := func(i int) {
		t.Helper()
		if r := x.authorize(t, "", fmt.Sprintf("198.51.100.%d", 10+i)); r.Status != http.StatusServiceUnavailable {
			t.Fatalf("start %d over the cap: %d %s", i, r.Status, r.Body)
		}
	}
	const n = 40
	for i := range n {
		refuse(i)
	}
	// No start follows: the count of those left out comes all the same.
	// A start at once after it, in the second of its line.
	var written int
	eventually.Within(t, 3*time.Second, func() error {
		lines, refused := statesFull(t, logs.String())
		if lines+refused < n {
			return fmt.Errorf("%d warnings counting %d refused starts, want the %d accounted for:\n%s", lines, refused, n, logs.String())
		}
		written = lines
		return nil
	})
	refuse(n)
	eventually.Within(t, 3*time.Second, func() error {
		if lines, _ := statesFull(t, logs.String()); lines == written {
			return fmt.Errorf("no warning about the start after the count:\n%s", logs.String())
		}
		return nil
	})
	perSecond := map[int64]int{}
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec struct {
			Msg  string
			Time time.Time
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "oauth states full" {
			continue
		}
		if perSecond[rec.Time.Unix()]++; perSecond[rec.Time.Unix()] > 1 {
			t.Fatalf("two warnings in the second %s:\n%s", rec.Time.Truncate(time.Second), logs.String())
		}
	}
}

// TestStatesFullCountedAtShutdown: the count of the refused starts no
// warning took waited for a timer about a second after them, which a
// coreapi stopping sooner wrote after its last line, or never. The
// server's Shutdown writes it before it returns.
func TestStatesFullCountedAtShutdown(t *testing.T) {
	logs := &testkit.LogBuffer{}
	x := start(t, func(o *oauth.Options) {
		o.MaxPendingStates = 1
		o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	x.beginFrom(t, "", "198.51.100.1")
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
	const n = 5
	for i := range n {
		if r := x.authorize(t, "", fmt.Sprintf("198.51.100.%d", 10+i)); r.Status != http.StatusServiceUnavailable {
			t.Fatalf("start %d over the cap: %d %s", i, r.Status, r.Body)
		}
	}
	if err := x.Server.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines, refused := statesFull(t, logs.String())
	if lines != 2 || refused != n-1 {
		t.Fatalf("when Shutdown returned: %d warnings counting %d refused starts, want 2 counting the %d left out", lines, refused, n-1)
	}
}

// statesFull counts the "oauth states full" warnings in logs and adds up
// the refused starts they count.
func statesFull(t *testing.T, logs string) (lines, refused int) {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Msg     string
			Refused int `json:"refused_since_last_line"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "oauth states full" {
			continue
		}
		lines++
		refused += rec.Refused
	}
	return lines, refused
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
	// Expired hand-over codes go too.
	st := x.begin(t, "")
	handover(t, x.callback(t, x.approve(t, st), st.cookie))
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE oauth_handovers SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if n, err := x.svc.Sweep(context.Background()); err != nil || n != 1 {
		t.Errorf("Sweep of an expired code = %d, %v; want 1", n, err)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_handovers`); n != 0 {
		t.Errorf("hand-over rows left = %d", n)
	}
}

// TestCallbackClientIP: the session of an OAuth sign-in records the client
// IP the proxy signed; a spoofed X-Forwarded-For changes nothing.
func TestCallbackClientIP(t *testing.T) {
	x := start(t)
	spoof := http.Header{}
	spoof.Set("X-Forwarded-For", "203.0.113.66")
	st := x.begin(t, "")
	spoof.Set("Cookie", st.cookie.Name+"="+st.cookie.Value)
	code := handover(t, x.Do(t, apitest.Request{Method: http.MethodGet, Path: x.approve(t, st), Header: spoof, ClientIP: "198.51.100.44"}))
	r := x.exchange(t, code)
	if r.Status != http.StatusOK {
		t.Fatalf("exchange: %d %s", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND ip = '198.51.100.44'`, sub(t, tk.AccessToken)); n != 1 {
		t.Fatalf("sessions with the signed client IP = %d, want 1", n)
	}
}

// refusedAsLookAlike signs in as the provider's subject with its verified
// email and wants 409: an address the provider vouched for that is not
// the one coreapi would look up.
func (x *env) refusedAsLookAlike(t *testing.T, subject, email, what string) {
	t.Helper()
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email, x.idp.Verified = subject, email, true
	x.idp.Mu.Unlock()
	b := x.begin(t, "")
	if r := x.callback(t, x.approve(t, b), b.cookie); r.Status != http.StatusConflict {
		t.Errorf("sign-in for %s: %d %s, want 409", what, r.Status, r.Body)
	}
}

// TestNoLinkByUnicodeCaseVariant: an address that PostgreSQL's lower()
// and NFC fold onto an account's (KELVIN SIGN U+212A lowers to "k", and
// NFC replaces it with "K") is another address; the provider vouching for
// it proves nothing of the account's mailbox, so the sign-in neither
// enters nor links that account, nor creates one of the folded address.
func TestNoLinkByUnicodeCaseVariant(t *testing.T) {
	x := start(t)
	st := x.signup(t, "kate@example.com")
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, sub(t, st.AccessToken)); err != nil {
		t.Fatal(err)
	}
	x.refusedAsLookAlike(t, "attacker", "\u212Aate@example.com", "a Unicode variant of a verified account's address")
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("%d identities linked to the account of another address", n)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, sub(t, st.AccessToken)); n != 1 {
		t.Errorf("%d sessions of the account, want only the signup's", n)
	}
	// Nor is an account of the replacement created for it: NFC turns
	// KELVIN SIGN into "K", and the provider did not vouch for "Kim".
	x.refusedAsLookAlike(t, "attacker", "\u212Aim@example.com", "an address with KELVIN SIGN and no account")
	if n := x.count(t, `SELECT count(*) FROM users`); n != 1 {
		t.Errorf("%d accounts, want only kate's", n)
	}
	// The account's own address in another letter case still links.
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email = "kate", "Kate@Example.com"
	x.idp.Mu.Unlock()
	if tk := x.finish(t, x.begin(t, "")); sub(t, tk.AccessToken) != sub(t, st.AccessToken) {
		t.Errorf("sign-in with a letter-case variant: user %s, want %s", sub(t, tk.AccessToken), sub(t, st.AccessToken))
	}
}

// TestNoLinkByADomainItsLowerCaseRenames: IDNA's mapping takes U+1E9E
// (capital sharp s) to "ss", while its lower case, as lower() and any
// provider that lowers addresses have it, is U+00DF "ß": "STRA\u1E9EE.example"
// is "stra\u00dfe.example" (xn--strae-oqa), another domain than
// "strasse.example". The provider vouched for the former; the sign-in
// neither enters nor links the latter's account, nor creates one of it.
func TestNoLinkByADomainItsLowerCaseRenames(t *testing.T) {
	x := start(t)
	st := x.signup(t, "ada@strasse.example")
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, sub(t, st.AccessToken)); err != nil {
		t.Fatal(err)
	}
	x.refusedAsLookAlike(t, "attacker", "ada@STRA\u1E9EE.example", "a capital sharp s spelling of another domain")
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("%d identities linked to the account of another domain", n)
	}
	x.refusedAsLookAlike(t, "attacker", "kim@STRA\u1E9EE.example", "a capital sharp s domain and no account")
	if n := x.count(t, `SELECT count(*) FROM users`); n != 1 {
		t.Errorf("%d accounts, want only ada's", n)
	}
	// The account's domain in capitals still links.
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email = "ada", "ada@STRASSE.Example"
	x.idp.Mu.Unlock()
	if tk := x.finish(t, x.begin(t, "")); sub(t, tk.AccessToken) != sub(t, st.AccessToken) {
		t.Errorf("sign-in with the domain in capitals: user %s, want %s", sub(t, tk.AccessToken), sub(t, st.AccessToken))
	}
}

// TestLinksAddressByItsDomainSpelling: a provider that spells an
// account's domain in Punycode (or with a trailing dot) vouches for that
// same address: the sign-in links to the account of the Unicode spelling
// instead of creating a second one.
func TestLinksAddressByItsDomainSpelling(t *testing.T) {
	x := start(t)
	st := x.signup(t, "ada@b\u00fccher.example")
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, sub(t, st.AccessToken)); err != nil {
		t.Fatal(err)
	}
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email, x.idp.Verified = "ada", "ada@xn--bcher-kva.example.", true
	x.idp.Mu.Unlock()
	if tk := x.finish(t, x.begin(t, "")); sub(t, tk.AccessToken) != sub(t, st.AccessToken) {
		t.Errorf("sign-in with the Punycode spelling: user %s, want the account %s", sub(t, tk.AccessToken), sub(t, st.AccessToken))
	}
	if n := x.count(t, `SELECT count(*) FROM users`); n != 1 {
		t.Errorf("%d accounts for one address", n)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE email = $1`, "ada@b\u00fccher.example"); n != 1 {
		t.Errorf("the identity does not record the Unicode spelling")
	}
}

// TestLinksAddressByItsNFCForm: a provider that spells an account's address
// decomposed (e + U+0301 where the account has U+00E9) vouches for that
// same address: the sign-in links to the account instead of creating a
// second one, and the identity records the composed spelling. Letter case
// still counts only for ASCII letters, compared in NFC.
func TestLinksAddressByItsNFCForm(t *testing.T) {
	x := start(t)
	st := x.signup(t, "jos\u00e9@example.com")
	if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE users SET email_verified_at = now() WHERE id = $1`, sub(t, st.AccessToken)); err != nil {
		t.Fatal(err)
	}
	x.refusedAsLookAlike(t, "other", "JOSE\u0301@example.com", "a non-ASCII letter-case variant (\u00c9 for \u00e9)")
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email = "jose", "Jose\u0301@Example.com"
	x.idp.Mu.Unlock()
	if tk := x.finish(t, x.begin(t, "")); sub(t, tk.AccessToken) != sub(t, st.AccessToken) {
		t.Errorf("sign-in with the NFD spelling: user %s, want the account %s", sub(t, tk.AccessToken), sub(t, st.AccessToken))
	}
	if n := x.count(t, `SELECT count(*) FROM users`); n != 1 {
		t.Errorf("%d accounts for one address", n)
	}
	// The domain in its one spelling (mail.Canonical): lower case.
	if n := x.count(t, `SELECT count(*) FROM identities WHERE email = $1`, "Jos\u00e9@example.com"); n != 1 {
		t.Errorf("the identity does not record the NFC spelling")
	}

	// A new address given decomposed is stored composed.
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email = "zoe", "zoe\u0308@example.com"
	x.idp.Mu.Unlock()
	tk := x.finish(t, x.begin(t, ""))
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND email = $2`, sub(t, tk.AccessToken), "zo\u00eb@example.com"); n != 1 {
		t.Errorf("the account created for an NFD address is not stored in NFC")
	}
}

// TestIDTokenForAnotherClient: an ID token that names another client as
// its authorized party (azp), or that has several audiences without
// naming this client as azp, was not issued to this client: no account is
// created or entered (OpenID Connect Core 3.1.3.7, steps 3 to 5).
func TestIDTokenForAnotherClient(t *testing.T) {
	x := start(t)
	for _, tc := range []struct {
		name   string
		claims map[string]any
		ok     bool
	}{
		{"azp of another client", map[string]any{"azp": "other-client"}, false},
		{"another audience beside ours, no azp", map[string]any{"aud": []string{"tollgate-client", "other-client"}}, false},
		{"another audience beside ours, azp theirs", map[string]any{"aud": []string{"tollgate-client", "other-client"}, "azp": "other-client"}, false},
		{"another audience beside ours, azp ours", map[string]any{"aud": []string{"tollgate-client", "other-client"}, "azp": "tollgate-client"}, true},
		{"azp ours", map[string]any{"azp": "tollgate-client"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x.idp.Mu.Lock()
			x.idp.Claims = tc.claims
			x.idp.Mu.Unlock()
			users := x.count(t, `SELECT count(*) FROM users`)
			st := x.begin(t, "")
			r := x.callback(t, x.approve(t, st), st.cookie)
			if tc.ok {
				handover(t, r)
				return
			}
			if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeInvalidIDToken {
				t.Fatalf("callback: %d %s, want 502 %s", r.Status, r.Body, problem.CodeInvalidIDToken)
			}
			if n := x.count(t, `SELECT count(*) FROM users`); n != users {
				t.Errorf("users = %d, want %d (none created)", n, users)
			}
		})
	}
}

// TestIDTokenWithoutSubject: a provider identity is its subject; an ID
// token without one (or an empty one) identifies nobody, and must not
// link "" to the first account it signs in (every later subject-less
// token would enter that account). A subject longer than OpenID Connect
// allows (255 characters) is refused too, as is one with a control
// character: NUL, which PostgreSQL cannot store, was a 500 internal error,
// and a line break or a C1 control is no part of an identifier.
func TestIDTokenWithoutSubject(t *testing.T) {
	x := start(t)
	for _, claims := range []map[string]any{{"sub": nil}, {"sub": ""}, {"sub": strings.Repeat("s", 256)},
		{"sub": "idp-user\x00"}, {"sub": "idp\nuser"}, {"sub": "idp\u0085user"}} {
		x.idp.Mu.Lock()
		x.idp.Claims = claims
		x.idp.Mu.Unlock()
		st := x.begin(t, "")
		r := x.callback(t, x.approve(t, st), st.cookie)
		if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeInvalidIDToken {
			t.Fatalf("ID token with %v: %d %s, want 502 %s", claims, r.Status, r.Body, problem.CodeInvalidIDToken)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("identities = %d, want 0", n)
	}
}

// TestProviderAddressMustBeOnePlainAddress: the provider's address is
// checked as every other address an account can get: one plain address,
// outside the reserved .invalid domain (where service accounts' addresses
// are), whose local part passes for no other (mail.ValidNewAddress).
// Otherwise no account is created or linked (422), whatever the
// provider says of its verification.
func TestProviderAddressMustBeOnePlainAddress(t *testing.T) {
	x := start(t)
	for i, email := range []string{
		"0b7e7a2c-0000-4000-8000-000000000000@service-accounts.invalid",
		"eve@example.invalid",
		"Eve <eve@example.com>",
		"eve@example.com, victim@example.com",
		"eve@example.com\r\nBcc: victim@example.com",
		strings.Repeat("e", 250) + "@example.com",
		// A local part that passes for another's: a full-width letter, a
		// Cyrillic letter among Latin ones.
		"\uff45ve@example.com",
		"\u0435ve@example.com",
	} {
		x.idp.Mu.Lock()
		x.idp.Subject, x.idp.Email, x.idp.Verified = "subject-"+strconv.Itoa(i), email, true
		x.idp.Mu.Unlock()
		st := x.begin(t, "")
		r := x.callback(t, x.approve(t, st), st.cookie)
		if r.Status != http.StatusUnprocessableEntity || r.Problem(t).Code != problem.CodeValidation {
			t.Errorf("provider address %q: %d %s, want 422 %s", email, r.Status, r.Body, problem.CodeValidation)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
		t.Errorf("users = %d, want 0", n)
	}
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("identities = %d, want 0", n)
	}
}

// TestDiscoveryOfAHungProvider: while a provider's discovery hangs, the
// sign-ins that arrive share one attempt and its outcome (502
// provider_unavailable after one client timeout) instead of queueing for
// one timeout each; once the provider answers, sign-ins start again.
func TestDiscoveryOfAHungProvider(t *testing.T) {
	const timeout = 400 * time.Millisecond
	x := start(t, func(o *oauth.Options) { o.HTTPClient = &http.Client{Timeout: timeout} })
	x.idp.Mu.Lock()
	x.idp.DiscoveryStall = time.Minute
	x.idp.Mu.Unlock()
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		slowest time.Duration
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			r := x.authorize(t, "", "198.51.100."+strconv.Itoa(i+1))
			took := time.Since(began)
			if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeProviderUnavailable {
				t.Errorf("authorize while discovery hangs: %d %s, want 502 %s", r.Status, r.Body, problem.CodeProviderUnavailable)
			}
			mu.Lock()
			slowest = max(slowest, took)
			mu.Unlock()
		}()
	}
	wg.Wait()
	// Queued one behind the other, the last would wait n timeouts.
	if slowest > 3*timeout {
		t.Errorf("slowest of %d concurrent sign-ins took %v, want about one provider timeout (%v)", n, slowest, timeout)
	}
	x.idp.Mu.Lock()
	tries := x.idp.Discoveries
	x.idp.DiscoveryStall = 0
	x.idp.Mu.Unlock()
	if tries > 2 {
		t.Errorf("discovery requests = %d for %d concurrent sign-ins, want them to share one", tries, n)
	}
	x.beginFrom(t, "", "198.51.100.99")
}

// TestProviderAnswersBounded: go-oidc reads a provider's discovery
// document and key set whole, so a provider (or whoever answers at its
// address) could have each replica hold an answer of any size in memory
// until the client's timeout. An answer past MaxProviderResponse is
// refused as one that does not parse: the discovery fails (502
// provider_unavailable), the ID token does not verify (502
// invalid_id_token); nothing is signed in. Answers up to the bound pass.
func TestProviderAnswersBounded(t *testing.T) {
	x := start(t)
	x.idp.Mu.Lock()
	x.idp.DiscoveryPadding = oauth.MaxProviderResponse
	x.idp.Mu.Unlock()
	r := x.authorize(t, "", "198.51.100.1")
	if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeProviderUnavailable {
		t.Fatalf("authorize with a discovery document over the bound: %d %s, want 502 %s", r.Status, r.Body, problem.CodeProviderUnavailable)
	}
	x.idp.Mu.Lock()
	x.idp.DiscoveryPadding = oauth.MaxProviderResponse - 2048 // the document itself is under 1 KiB
	x.idp.KeysPadding = oauth.MaxProviderResponse
	x.idp.Mu.Unlock()
	st := x.beginFrom(t, "", "198.51.100.2")
	r = x.callback(t, x.approve(t, st), st.cookie)
	if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeInvalidIDToken {
		t.Fatalf("callback with a key set over the bound: %d %s, want 502 %s", r.Status, r.Body, problem.CodeInvalidIDToken)
	}
	if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
		t.Errorf("users = %d, want 0", n)
	}
	x.idp.Mu.Lock()
	x.idp.KeysPadding = oauth.MaxProviderResponse - 4096
	x.idp.Mu.Unlock()
	x.finish(t, x.beginFrom(t, "", "198.51.100.3"))
}

// TestEmailVerifiedNotABoolean: only a JSON true vouches for the address;
// a string ("true" or "false"), a number or null is not a verification,
// but it does not make the whole ID token malformed either: an identity
// already linked (by its subject) still signs in.
func TestEmailVerifiedNotABoolean(t *testing.T) {
	x := start(t)
	for _, v := range []any{"true", "false", 1} {
		x.idp.Mu.Lock()
		x.idp.Claims = map[string]any{"email_verified": v}
		x.idp.Mu.Unlock()
		st := x.begin(t, "")
		r := x.callback(t, x.approve(t, st), st.cookie)
		if r.Status != http.StatusForbidden || r.Problem(t).Code != problem.CodeEmailNotVerified {
			t.Errorf("first sign-in with email_verified %#v: %d %s, want 403 %s", v, r.Status, r.Body, problem.CodeEmailNotVerified)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
		t.Fatalf("users = %d, want 0", n)
	}
	x.idp.Mu.Lock()
	x.idp.Claims = nil
	x.idp.Mu.Unlock()
	uid := sub(t, x.finish(t, x.begin(t, "")).AccessToken)
	for _, v := range []any{"true", "false", 1} {
		x.idp.Mu.Lock()
		x.idp.Claims = map[string]any{"email_verified": v}
		x.idp.Mu.Unlock()
		if got := sub(t, x.finish(t, x.begin(t, "")).AccessToken); got != uid {
			t.Errorf("linked identity with email_verified %#v: user %s, want %s", v, got, uid)
		}
	}
}

// TestBindingCookiesBounded: each started sign-in leaves a binding cookie
// in the browser for 10 minutes; abandoned starts (or a page that keeps
// navigating the browser to authorize) must not pile up cookies until the
// browser's requests to this host no longer fit the server's header
// limit. Once a browser carries MaxBindingCookies of them, a new start
// clears them all (their flows are abandoned or must start again).
func TestBindingCookiesBounded(t *testing.T) {
	x := start(t)
	h := http.Header{}
	var names []string
	for i := range oauth.MaxBindingCookies {
		st := x.beginFrom(t, "", "192.0.2."+strconv.Itoa(i+1))
		names = append(names, st.cookie.Name)
		h.Add("Cookie", st.cookie.Name+"="+st.cookie.Value)
	}
	r := x.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/auth/oauth/fake/authorize", Header: h, ClientIP: "192.0.2.200"})
	if r.Status != http.StatusFound {
		t.Fatalf("authorize: %d %s", r.Status, r.Body)
	}
	cleared, set := map[string]bool{}, 0
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		switch {
		case c.MaxAge < 0:
			cleared[c.Name] = true
		case strings.HasPrefix(c.Name, oauth.CookiePrefix):
			set++
		}
	}
	for _, n := range names {
		if !cleared[n] {
			t.Errorf("binding cookie %s not cleared: %v", n, r.Header.Values("Set-Cookie"))
		}
	}
	if set != 1 {
		t.Errorf("new binding cookies = %d, want 1", set)
	}
	// Below the bound nothing is cleared.
	h = http.Header{}
	h.Add("Cookie", names[0]+"=x")
	r = x.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/auth/oauth/fake/authorize", Header: h, ClientIP: "192.0.2.201"})
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.MaxAge < 0 {
			t.Errorf("cookie %s cleared below the bound", c.Name)
		}
	}
}

// TestAuthorizeRateLimitGroupsIPv6By64: the authorize limit counts an IPv6
// client by its /64: starts from one address of the network use up its
// neighbour's allowance, not another /64's.
func TestAuthorizeRateLimitGroupsIPv6By64(t *testing.T) {
	x := start(t, func(o *oauth.Options) { o.AuthorizePerMinute = 2 })
	for i := range 2 {
		if r := x.authorize(t, "", "2001:db8:1:2::1"); r.Status != http.StatusFound {
			t.Fatalf("start %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	r := x.authorize(t, "", "2001:db8:1:2::2")
	if r.Status != http.StatusTooManyRequests || r.Problem(t).Code != problem.CodeTooManyRequests {
		t.Fatalf("start from the same /64: %d %s, want 429", r.Status, r.Body)
	}
	if r := x.authorize(t, "", "2001:db8:1:3::1"); r.Status != http.StatusFound {
		t.Errorf("another /64: %d %s", r.Status, r.Body)
	}
}

// TestProviderFailureLoggedCut: a provider's failing discovery answer is
// logged cut (logging.Redact), not whole: go-oidc puts the answer's body
// in its error, up to MaxProviderResponse, and one provider failing with
// a large page wrote lines that container runtimes split.
func TestProviderFailureLoggedCut(t *testing.T) {
	logs := &testkit.LogBuffer{}
	x := start(t, func(o *oauth.Options) {
		o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	x.idp.Mu.Lock()
	x.idp.DiscoveryError = "<html>" + strings.Repeat("x", 64<<10) + "</html>"
	x.idp.Mu.Unlock()
	r := x.authorize(t, "", "198.51.100.7")
	if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeProviderUnavailable {
		t.Fatalf("authorize while discovery fails: %d %s", r.Status, r.Body)
	}
	out := logs.String()
	if !strings.Contains(out, "oidc discovery") {
		t.Fatalf("no discovery warning in %q", out)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if len(line) > 2048 {
			t.Errorf("a log line of %d bytes: %.200s...", len(line), line)
		}
	}
}

// TestProviderErrorPassedOnAsPlainText: a provider's error and
// error_description are passed on in the problem's detail only as RFC
// 6749 (section 4.1.2.1) allows them: printable ASCII without '"' and
// '\'. A description with a line break, a control character or a
// bidirectional override (which shows text reversed in whatever page or
// log prints the detail) was passed on as it came, whoever wrote it. Such
// a value is left out; the refusal is still 400 provider_error, and the
// state is spent.
func TestProviderErrorPassedOnAsPlainText(t *testing.T) {
	x := start(t)
	for _, tc := range []struct{ name, err, desc, want, unwanted string }{
		{"bidirectional override", "access_denied", "call \u202e0001-555 ot", "access_denied", "\u202e"},
		{"line break", "access_denied", "denied\nSign in at https://evil.example instead", "access_denied", "evil.example"},
		{"control character in the code", "access_denied\x1b[31m", "", "", "\x1b"},
		{"non-ASCII in the code", "acc\u00e8s_refus\u00e9", "", "", "\u00e8"},
		{"quote and backslash", `access_denied"\`, "", "", `\`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := x.begin(t, "")
			q := url.Values{"error": {tc.err}, "state": {st.state}}
			if tc.desc != "" {
				q.Set("error_description", tc.desc)
			}
			r := x.callback(t, "/api/v1/auth/oauth/fake/callback?"+q.Encode(), st.cookie)
			p := r.Problem(t)
			if r.Status != http.StatusBadRequest || p.Code != problem.CodeProviderError {
				t.Fatalf("callback: %d %s, want 400 %s", r.Status, r.Body, problem.CodeProviderError)
			}
			if strings.Contains(p.Detail, tc.unwanted) || !strings.Contains(p.Detail, tc.want) {
				t.Errorf("detail %q, want %q in it and no %q", p.Detail, tc.want, tc.unwanted)
			}
			if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
				t.Errorf("state rows = %d, want 0 (the flow is over)", n)
			}
		})
	}
	// A description RFC 6749 allows is passed on.
	st := x.begin(t, "")
	r := x.callback(t, "/api/v1/auth/oauth/fake/callback?error=access_denied&error_description="+url.QueryEscape("The user <said> no!")+"&state="+url.QueryEscape(st.state), st.cookie)
	if p := r.Problem(t); !strings.Contains(p.Detail, "access_denied (The user <said> no!)") {
		t.Errorf("detail %q, want the error and its description", p.Detail)
	}
}

// TestReturnToDelistedSinceTheStart: a sign-in ends at the return_to it
// started with only while that URL is still one of
// OAUTH_ALLOWED_RETURN_URLS. The list was read at the start only, so for
// the state's 10 minutes a URL the operator removed (a domain given up,
// an app retired), on an instance restarted with the new list or another
// replica that has it, still got the hand-over codes of the flows started
// before. The callback now checks it again before the code is exchanged
// (400 return_to_not_allowed, nothing opened); a URL still listed ends
// as before.
func TestReturnToDelistedSinceTheStart(t *testing.T) {
	const app, old = "https://app.example.com/cb", "https://old.example.com/cb"
	list := []string{app, old}
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = slices.Clone(list) })
	pk := newAppPKCE(t)
	delisted, kept := x.begin(t, pk.query(old)), x.begin(t, pk.query(app))
	list = []string{app}
	other := x.second(t) // an instance with the new list
	finish := func(st started) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, other+x.approve(t, st), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.AddCookie(&http.Cookie{Name: st.cookie.Name, Value: st.cookie.Value})
		resp, err := x.noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	before := x.exchanges()
	resp := finish(delisted)
	var p problem.Problem
	_ = json.NewDecoder(resp.Body).Decode(&p)
	if resp.StatusCode != http.StatusBadRequest || p.Code != problem.CodeReturnToNotAllowed {
		t.Fatalf("callback of a flow whose return_to was delisted: %d %s Location=%q, want 400 %s",
			resp.StatusCode, p.Code, resp.Header.Get("Location"), problem.CodeReturnToNotAllowed)
	}
	if n := x.exchanges(); n != before {
		t.Errorf("%d code exchanges, want none", n-before)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions`) + x.count(t, `SELECT count(*) FROM oauth_handovers`); n != 0 {
		t.Errorf("%d sessions and hand-over codes, want none", n)
	}
	if resp := finish(kept); resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), app+"?code=") {
		t.Errorf("callback of a flow whose return_to is still listed: %d Location=%q, want 302 to %s", resp.StatusCode, resp.Header.Get("Location"), app)
	}
}
