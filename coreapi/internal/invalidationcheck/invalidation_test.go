package invalidationcheck_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/keys/keytest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth/oidctest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/openapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

const pw = "correct horse battery"

// untouched are the documented operations that write but change nothing a
// proxy caches, and are therefore not run below, each with why. An
// operation that writes is either a row of operations or listed here.
var untouched = map[string]string{
	"oauthAuthorize":        "stores the started sign-in (its state, PKCE verifier and nonce), which nothing cached holds",
	"oauthOpenLink":         "gives a started link its state and browser binding, which nothing cached holds",
	"reportAPIKeysUsed":     "the proxies' own report; records last_used_at, which no lookup returns",
	"resolveAPIKey":         "the proxies' own lookup; writes only the audit row of a revoked key's use",
	"unlinkMyIdentity":      "removes the account's links to a sign-in provider, which no projection or key lookup holds",
	"linkMyIdentity":        "stores the started link of a sign-in provider (its flow, PKCE verifier and nonce), which nothing cached holds",
	"confirmMyIdentityLink": "links a sign-in provider to the caller's account (and spends its link code), which no projection or key lookup holds",
}

// writingReads are the documented GET operations that write, each with
// what it writes: their method does not tell them from the reads, so they
// are named here, and each is then a row of operations or untouched.
var writingReads = map[string]string{
	"oauthAuthorize": "the started sign-in",
	"oauthOpenLink":  "the started link's state, its ticket spent",
	"oauthCallback":  "an account, an identity linked to one, a session, or a link's code",
}

// env is the full API: tenant API, sign-in (also through an OpenID
// Connect provider, idp), account lifecycle, API keys, service accounts
// and TOTP.
type env struct {
	*apitest.Env
	keys *apikeys.Service
	lc   *lifecycle.Service
	proj *projection.Store
	idp  *oidctest.Provider
}

func start(t *testing.T) *env {
	t.Helper()
	h := password.New(password.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 0)
	ring, _ := keytest.Ring(t)
	x := &env{idp: oidctest.New(t)}
	x.Env = apitest.Start(t, apitest.Options{Passwords: h, Configure: func(o *httpapi.Options) {
		store := sessions.New(o.Pool, time.Hour, 10*time.Second)
		ks, err := apikeys.New(apikeys.Options{Logger: o.Logger, Pool: o.Pool, Pepper: []byte("0123456789abcdef0123456789abcdef")})
		if err != nil {
			t.Fatal(err)
		}
		sa, err := serviceaccounts.New(serviceaccounts.Options{Logger: o.Logger, Pool: o.Pool, Keys: ring, Sessions: store,
			Projections: projection.NewStore(o.Pool, 16*time.Minute, nil), Limiter: ratelimit.New(o.Pool),
			Issuer: "http://localhost:8080", Audience: "tollgate", AccessTTL: 15 * time.Minute,
			PublicBaseURL: "http://localhost:8080/", APIKeys: ks})
		if err != nil {
			t.Fatal(err)
		}
		mk, err := mfa.ParseKeys("k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
		if err != nil {
			t.Fatal(err)
		}
		sealer, err := mfa.NewSealer(mk)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := auth.New(auth.Options{Logger: o.Logger, Pool: o.Pool, Keys: ring, Passwords: h, Sessions: store,
			Issuer: "http://localhost:8080", Audience: "tollgate", AccessTTL: 15 * time.Minute, MFA: sealer, ClientCredentials: sa})
		if err != nil {
			t.Fatal(err)
		}
		lc, err := lifecycle.New(lifecycle.Options{Logger: o.Logger, Pool: o.Pool, Auth: svc, Passwords: h})
		if err != nil {
			t.Fatal(err)
		}
		oa, err := oauth.New(oauth.Options{Logger: o.Logger, Pool: o.Pool, Auth: svc, Sessions: store,
			Providers: []config.OIDCProvider{{Name: "fake", Issuer: x.idp.URL, ClientID: x.idp.ClientID,
				ClientSecret: x.idp.Secret, RedirectURL: "http://localhost:8080/api/v1/auth/oauth/fake/callback",
				// Vouching for every domain: a sign-in links to an
				// existing account by its address.
				Scopes: []string{"openid", "email", "profile"}, EmailDomains: []string{config.AnyEmailDomain}}}})
		if err != nil {
			t.Fatal(err)
		}
		x.keys, x.lc = ks, lc
		o.Register = append(o.Register, ks.Register, sa.Register, svc.Register, lc.Register, oa.Register)
		o.ErrorMappers = append(o.ErrorMappers, apikeys.MapError, serviceaccounts.ErrorProblem, lifecycle.MapError)
	}})
	t.Cleanup(x.lc.WaitResets)
	x.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	x.proj = projection.NewStore(x.DB.Pool, 16*time.Minute, nil)
	return x
}

// account is a person who signed in: their session's tokens.
type account struct {
	email, password string
	userID          string
	access, refresh string
	sid, tid        string
	amr             []string
	authTime        int64
}

// as is the identity a proxy would forward for a's access token now.
func (x *env) as(t *testing.T, a *account) *identity.Identity {
	t.Helper()
	p, err := x.proj.Get(context.Background(), a.userID, a.tid)
	if err != nil {
		t.Fatalf("projection of %s in %s: %v", a.email, a.tid, err)
	}
	return &identity.Identity{Principal: identity.PrincipalUser, UserID: a.userID, TenantID: a.tid, SessionID: a.sid,
		Roles: p.Roles, Permissions: p.Permissions, EmailVerified: p.EmailVerified, AMR: a.amr, AuthTime: a.authTime}
}

// tokens fills a from a token response.
func (a *account) tokens(t *testing.T, r apitest.Response) {
	t.Helper()
	var tk struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	r.JSON(t, &tk)
	parts := strings.Split(tk.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %s", r.Body)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Sub, Tid, Sid string
		Amr           []string
		AuthTime      int64 `json:"auth_time"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	a.access, a.refresh = tk.AccessToken, tk.RefreshToken
	a.userID, a.tid, a.sid, a.amr, a.authTime = c.Sub, c.Tid, c.Sid, c.Amr, c.AuthTime
}

func want2xx(t *testing.T, what string, r apitest.Response) apitest.Response {
	t.Helper()
	if r.Status < 200 || r.Status > 299 {
		t.Fatalf("%s: %d %s", what, r.Status, r.Body)
	}
	return r
}

func (x *env) signup(t *testing.T, email, tenant string) *account {
	t.Helper()
	a := &account{email: email, password: pw}
	a.tokens(t, want2xx(t, "signup "+email, x.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
		map[string]string{"email": email, "password": pw, "tenant_name": tenant})))
	return a
}

// providerSignIn signs in through the provider as a browser does, as the
// provider's user subject with the verified address email: the start, the
// provider's approval, the callback (oauthCallback), and the exchange of
// the hand-over code, whose answer it returns.
func (x *env) providerSignIn(t *testing.T, subject, email string) apitest.Response {
	t.Helper()
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email, x.idp.Verified = subject, email, true
	x.idp.Mu.Unlock()
	r := x.Get(t, nil, "/api/v1/auth/oauth/fake/authorize")
	loc, err := url.Parse(r.Header.Get("Location"))
	if r.Status != http.StatusFound || err != nil {
		t.Fatalf("authorize: %d %s", r.Status, r.Body)
	}
	state := loc.Query().Get("state")
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == oauth.CookieName(state) {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatalf("authorize set no binding cookie: %v", r.Header.Values("Set-Cookie"))
	}
	resp, err := x.Client.Get(loc.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("provider authorize: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	r = want2xx(t, "callback", x.Do(t, apitest.Request{Method: http.MethodGet, Path: back.RequestURI(),
		Header: http.Header{"Cookie": {cookie.Name + "=" + cookie.Value}}}))
	return x.Send(t, nil, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "oauth_handover", "code": jsonField(t, r, "code")})
}

func (x *env) signIn(t *testing.T, email, password string) *account {
	t.Helper()
	a := &account{email: email, password: password}
	a.tokens(t, want2xx(t, "sign in "+email, x.Send(t, nil, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "password", "email": email, "password": password})))
	return a
}

// addMember creates a member of as's tenant with a password, and signs
// them in.
func (x *env) addMember(t *testing.T, as *account, email string, roles ...string) *account {
	t.Helper()
	want2xx(t, "add "+email, x.Send(t, x.as(t, as), http.MethodPost, "/api/v1/users",
		map[string]any{"email": email, "password": pw, "roles": roles}))
	return x.signIn(t, email, pw)
}

// mailToken is the one-time token of the newest mail of kind queued to
// address.
func (x *env) mailToken(t *testing.T, kind, address string) string {
	t.Helper()
	x.lc.WaitResets()
	var tok string
	err := x.DB.Pool.QueryRow(context.Background(),
		`SELECT token FROM mail_queue WHERE kind = $1 AND lower(to_address) = lower($2) AND token IS NOT NULL ORDER BY id DESC LIMIT 1`,
		kind, address).Scan(&tok)
	if err != nil {
		t.Fatalf("%s mail to %s: %v", kind, address, err)
	}
	return tok
}

func (x *env) totp(t *testing.T, secret string) string {
	t.Helper()
	// The next step's code: the current one may have been spent.
	c, err := mfa.Code(secret, time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enrol gives a a confirmed TOTP factor and returns its recovery codes.
func (x *env) enrol(t *testing.T, a *account) []string {
	t.Helper()
	r := want2xx(t, "enrol", x.Send(t, x.as(t, a), http.MethodPost, "/api/v1/users/me/mfa/totp", nil))
	c, err := mfa.Code(jsonField(t, r, "secret"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r = want2xx(t, "confirm", x.Send(t, x.as(t, a), http.MethodPost, "/api/v1/users/me/mfa/totp/confirm", map[string]string{"code": c}))
	var rc struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	r.JSON(t, &rc)
	return rc.RecoveryCodes
}

func jsonField(t *testing.T, r apitest.Response, field string) string {
	t.Helper()
	var m map[string]any
	r.JSON(t, &m)
	s, _ := m[field].(string)
	if s == "" {
		t.Fatalf("no %s in %s", field, r.Body)
	}
	return s
}

// key is an API key of the world, by its whole secret.
type key struct{ id, secret string }

// world is what the operations act on.
type world struct {
	ownerA, ownerB, admin, member, memberOther, auditor, mfaUser, off, both, squat *account
	// leaver deletes its own account, with its key (leaverKey).
	leaver                                          *account
	leaverKey                                       key
	mfaSecret                                       string
	recovery                                        []string
	saID, saClient, saSecret, saSecretID, saSecret2 string
	tenantKey, memberKey, saKey, auditorKey         key
	roleAuditors, roleWriters                       string
	invNew, invSpare                                string
	keys                                            []key

	// fed signed up through the provider (as idp-fed) and has a second
	// factor, with these recovery codes.
	fed         *account
	fedRecovery []string
}

// seed builds two tenants A and B: owners, an admin, a member, a member
// with a custom role, a member with a second factor, a disabled member, a
// person of both tenants (signed up with their own tenant and joined A
// through an invitation), a service account with a secret and an API key,
// API keys of the tenant and of a member, pending invitations, sessions.
func seed(t *testing.T, x *env) *world {
	t.Helper()
	w := &world{}
	w.ownerA = x.signup(t, "owner@a.test", "A")
	w.ownerB = x.signup(t, "owner@b.test", "B")
	o := x.as(t, w.ownerA)
	r := want2xx(t, "create role", x.Send(t, o, http.MethodPost, "/api/v1/roles",
		map[string]any{"name": "auditors", "permissions": []string{"audit:read"}}))
	w.roleAuditors = jsonField(t, r, "id")
	w.admin = x.addMember(t, w.ownerA, "admin@a.test", "admin")
	w.member = x.addMember(t, w.ownerA, "member@a.test", "member")
	w.memberOther = x.signIn(t, "member@a.test", pw)
	w.auditor = x.addMember(t, w.ownerA, "auditor@a.test", "auditors")
	w.off = x.addMember(t, w.ownerA, "off@a.test", "member")
	want2xx(t, "disable", x.Send(t, o, http.MethodPatch, "/api/v1/users/"+w.off.userID, map[string]string{"membership_status": "disabled"}))

	// A member with a second factor, and B's owner (B will require one).
	w.mfaUser = x.addMember(t, w.ownerA, "mfa@a.test", "member")
	recoveryMFA := x.enrol(t, w.mfaUser)
	// It steps up: its email change (below) takes a second factor given
	// in the last 5 minutes.
	refreshMFA := w.mfaUser.refresh
	w.mfaUser.tokens(t, want2xx(t, "step up the member with a second factor", x.Send(t, x.as(t, w.mfaUser), http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "mfa_otp", "code": recoveryMFA[0]})))
	if w.mfaUser.refresh == "" {
		w.mfaUser.refresh = refreshMFA
	}
	recoveryB := x.enrol(t, w.ownerB)
	// B's owner steps up: turning B's policy off (below) takes a second
	// factor given in the last 5 minutes.
	refreshB := w.ownerB.refresh
	w.ownerB.tokens(t, want2xx(t, "step up B's owner", x.Send(t, x.as(t, w.ownerB), http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "mfa_otp", "code": recoveryB[0]})))
	if w.ownerB.refresh == "" {
		w.ownerB.refresh = refreshB
	}

	// A person of both tenants (their own, C, and A).
	w.both = x.signup(t, "both@c.test", "C")
	want2xx(t, "invite both", x.Send(t, o, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "both@c.test", "roles": []string{"member"}}))
	want2xx(t, "accept", x.Send(t, x.as(t, w.both), http.MethodPost, "/api/v1/invitations/accept",
		map[string]string{"token": x.mailToken(t, "invitation", "both@c.test")}))
	// And of B, through POST /users's invitation.
	want2xx(t, "invite both to B", x.Send(t, x.as(t, w.ownerB), http.MethodPost, "/api/v1/users", map[string]any{"email": "both@c.test", "roles": []string{"admin"}}))
	want2xx(t, "accept B", x.Send(t, x.as(t, w.both), http.MethodPost, "/api/v1/invitations/accept",
		map[string]string{"token": x.mailToken(t, "invitation", "both@c.test")}))

	// A service account with a secret and a key it minted.
	r = want2xx(t, "service account", x.Send(t, o, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "ci", "roles": []string{"admin"}}))
	w.saID = jsonField(t, r, "id")
	r = want2xx(t, "secret", x.Send(t, o, http.MethodPost, "/api/v1/service-accounts/"+w.saID+"/secrets", nil))
	w.saClient, w.saSecret, w.saSecretID = jsonField(t, r, "client_id"), jsonField(t, r, "client_secret"), jsonField(t, r, "id")
	r = want2xx(t, "client credentials", x.Send(t, nil, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "client_credentials", "client_id": w.saClient, "client_secret": w.saSecret}))
	sa := &account{}
	sa.tokens(t, r)
	saID := x.as(t, sa)
	saID.Principal = identity.PrincipalService
	r = want2xx(t, "key of the service account", x.Send(t, saID, http.MethodPost, "/api/v1/api-keys",
		map[string]any{"name": "sa", "permissions": []string{"users:read"}}))
	w.saKey = key{jsonField(t, r, "id"), jsonField(t, r, "secret")}

	// Keys of the tenant and of the member.
	r = want2xx(t, "tenant key", x.Send(t, o, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "t", "permissions": []string{"users:read", "tenant:read"}}))
	w.tenantKey = key{jsonField(t, r, "id"), jsonField(t, r, "secret")}
	r = want2xx(t, "member key", x.Send(t, x.as(t, w.member), http.MethodPost, "/api/v1/users/me/api-keys", map[string]any{"name": "m", "permissions": []string{"tenant:read"}}))
	w.memberKey = key{jsonField(t, r, "id"), jsonField(t, r, "secret")}
	r = want2xx(t, "auditor key", x.Send(t, x.as(t, w.auditor), http.MethodPost, "/api/v1/users/me/api-keys", map[string]any{"name": "a", "permissions": []string{"audit:read"}}))
	w.auditorKey = key{jsonField(t, r, "id"), jsonField(t, r, "secret")}
	w.leaver = x.addMember(t, w.ownerA, "leaver@a.test", "member")
	r = want2xx(t, "leaver key", x.Send(t, x.as(t, w.leaver), http.MethodPost, "/api/v1/users/me/api-keys", map[string]any{"name": "l", "permissions": []string{"tenant:read"}}))
	w.leaverKey = key{jsonField(t, r, "id"), jsonField(t, r, "secret")}
	w.keys = append(w.keys, w.saKey, w.tenantKey, w.memberKey, w.auditorKey, w.leaverKey)

	// An account of a tenant Q that never proved its address, with what
	// whoever chose its password could leave behind: a service account
	// with a secret and a key it minted, a key of its own, a second factor.
	w.squat = x.signup(t, "squat@q.test", "Q")
	q := x.as(t, w.squat)
	r = want2xx(t, "squat service account", x.Send(t, q, http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "bot", "roles": []string{"admin"}}))
	qsa := jsonField(t, r, "id")
	r = want2xx(t, "squat secret", x.Send(t, q, http.MethodPost, "/api/v1/service-accounts/"+qsa+"/secrets", nil))
	r = want2xx(t, "squat client credentials", x.Send(t, nil, http.MethodPost, "/api/v1/auth/token",
		map[string]string{"grant_type": "client_credentials", "client_id": jsonField(t, r, "client_id"), "client_secret": jsonField(t, r, "client_secret")}))
	qa := &account{}
	qa.tokens(t, r)
	qid := x.as(t, qa)
	qid.Principal = identity.PrincipalService
	for _, k := range []struct {
		as   *identity.Identity
		path string
	}{{qid, "/api/v1/api-keys"}, {q, "/api/v1/users/me/api-keys"}} {
		r = want2xx(t, "squat key", x.Send(t, k.as, http.MethodPost, k.path, map[string]any{"name": "k", "permissions": []string{"tenant:read"}}))
		w.keys = append(w.keys, key{jsonField(t, r, "id"), jsonField(t, r, "secret")})
	}
	x.enrol(t, w.squat)

	// An account made through the provider, with a second factor.
	w.fed = &account{email: "fed@f.test"}
	w.fed.tokens(t, want2xx(t, "provider sign-in", x.providerSignIn(t, "idp-fed", "fed@f.test")))
	w.fedRecovery = x.enrol(t, w.fed)

	// An account that never verified its address, invited to A.
	x.signup(t, "solo@s.test", "S")
	want2xx(t, "invite solo", x.Send(t, o, http.MethodPost, "/api/v1/invitations", map[string]any{"email": "solo@s.test", "roles": []string{"member"}}))

	// Pending invitations.
	for _, inv := range []struct {
		to   *string
		addr string
	}{{&w.invNew, "new@x.test"}, {&w.invSpare, "spare@x.test"}} {
		r = want2xx(t, "invite "+inv.addr, x.Send(t, o, http.MethodPost, "/api/v1/invitations", map[string]any{"email": inv.addr, "roles": []string{"member"}}))
		*inv.to = jsonField(t, r, "id")
	}
	return w
}

// snapshot is what the proxies could have cached: every (user, tenant)
// projection and every key's lookup.
type snapshot struct {
	users, tenants map[string]bool
	proj           map[[2]string]string // (user, tenant) → projection or error
	keys           map[string]string    // public id → lookup or error
	keyOwner       map[string][2]string // public id → (user, tenant)
}

func (x *env) snapshot(t *testing.T, w *world) snapshot {
	t.Helper()
	ctx := context.Background()
	s := snapshot{users: map[string]bool{}, tenants: map[string]bool{}, proj: map[[2]string]string{},
		keys: map[string]string{}, keyOwner: map[string][2]string{}}
	for _, u := range x.Strings(t, `SELECT id::text FROM users`) {
		s.users[u] = true
	}
	for _, tid := range x.Strings(t, `SELECT id::text FROM tenants`) {
		s.tenants[tid] = true
	}
	for u := range s.users {
		for tid := range s.tenants {
			p, err := x.proj.Get(ctx, u, tid)
			s.proj[[2]string{u, tid}] = describe(t, p, err, projection.ErrNotFound)
		}
	}
	for _, k := range w.keys {
		p, err := x.keys.Store().Resolve(ctx, k.secret, "", "")
		pid := k.secret[3:19]
		s.keys[pid] = describe(t, p, err, apikeys.ErrNotFound, apikeys.ErrRevoked, apikeys.ErrExpired, apikeys.ErrWrongSecret)
		var owner [2]string
		// A key deleted with its service account has no row left.
		err = x.DB.Pool.QueryRow(ctx, `SELECT user_id::text, tenant_id::text FROM api_keys WHERE public_id = $1`, pid).Scan(&owner[0], &owner[1])
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		s.keyOwner[pid] = owner
	}
	return s
}

func describe(t *testing.T, v any, err error, expected ...error) string {
	t.Helper()
	if err != nil {
		for _, e := range expected {
			if errors.Is(err, e) {
				return "error: " + e.Error()
			}
		}
		t.Fatalf("lookup: %v", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (x *env) lastOutboxID(t *testing.T) int64 {
	t.Helper()
	var id int64
	if err := x.DB.Pool.QueryRow(context.Background(), `SELECT coalesce(max(id), 0) FROM outbox`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// covers reports whether subjects invalidate what names: a user's entry in
// a tenant (user, tenant), or a key (its public id, its user and tenant).
func covers(subjects map[string]bool, user, tenant, publicID string) bool {
	if subjects[invalidation.SubjectAll] || subjects[invalidation.UserSubject(user)] || subjects[invalidation.TenantSubject(tenant)] {
		return true
	}
	return publicID != "" && subjects[invalidation.APIKeySubject(publicID)]
}

// operation is one row: a documented operation run on the world.
type operation struct {
	op   string // operationId
	name string
	// quiet: the row changes nothing a proxy caches (else a row that
	// changes nothing fails: it no longer exercises what it names).
	quiet bool
	run   func(t *testing.T, x *env, w *world)
}

func operations() []operation {
	send := func(t *testing.T, x *env, as *identity.Identity, method, path string, body any) apitest.Response {
		t.Helper()
		return want2xx(t, method+" "+path, x.Send(t, as, method, path, body))
	}
	owner := func(t *testing.T, x *env, w *world) *identity.Identity { return x.as(t, w.ownerA) }
	return []operation{
		{"grantRole", "grant a custom role", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPut, "/api/v1/users/"+w.member.userID+"/roles/auditors", nil)
		}},
		{"revokeRole", "revoke a custom role", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodDelete, "/api/v1/users/"+w.member.userID+"/roles/auditors", nil)
		}},
		{"patchUser", "enable a member", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPatch, "/api/v1/users/"+w.off.userID, map[string]string{"membership_status": "active"})
		}},
		{"patchUser", "disable a member", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPatch, "/api/v1/users/"+w.off.userID, map[string]string{"membership_status": "disabled"})
		}},
		{"createRole", "create a role", true, func(t *testing.T, x *env, w *world) {
			r := send(t, x, owner(t, x, w), http.MethodPost, "/api/v1/roles", map[string]any{"name": "writers", "permissions": []string{"users:write"}})
			w.roleWriters = jsonField(t, r, "id")
		}},
		{"grantRole", "grant a new role", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPut, "/api/v1/users/"+w.member.userID+"/roles/writers", nil)
		}},
		{"patchRole", "edit the permissions of a role held", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPatch, "/api/v1/roles/"+w.roleAuditors, map[string]any{"permissions": []string{"audit:read", "users:read"}})
		}},
		{"patchRole", "rename a role held", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPatch, "/api/v1/roles/"+w.roleWriters, map[string]any{"name": "editors"})
		}},
		{"deleteRole", "delete a role held", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodDelete, "/api/v1/roles/"+w.roleWriters, nil)
		}},
		{"patchTenant", "rename the tenant", true, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPatch, "/api/v1/tenant", map[string]any{"name": "A2"})
		}},
		{"patchTenant", "require MFA", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.ownerB), http.MethodPatch, "/api/v1/tenant", map[string]any{"require_mfa": true})
		}},
		{"patchTenant", "stop requiring MFA", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.ownerB), http.MethodPatch, "/api/v1/tenant", map[string]any{"require_mfa": false})
		}},
		{"patchMe", "change one's display name", true, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.member), http.MethodPatch, "/api/v1/users/me", map[string]any{"display_name": "M"})
		}},
		{"resendVerification", "resend the verification mail", true, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.admin), http.MethodPost, "/api/v1/auth/verify-email/resend", nil)
		}},
		{"verifyEmail", "verify one's address", false, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": x.mailToken(t, "verify_email", "admin@a.test"), "password": pw})
		}},
		{"patchMe", "ask for an email change", true, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.auditor), http.MethodPatch, "/api/v1/users/me", map[string]any{"email": "auditor2@a.test"})
		}},
		{"verifyEmail", "confirm an email change", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.auditor), http.MethodPost, "/api/v1/auth/verify-email", map[string]string{"token": x.mailToken(t, "verify_email", "auditor2@a.test")})
		}},
		{"changePassword", "change one's password", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.admin), http.MethodPut, "/api/v1/users/me/password", map[string]string{"current_password": pw, "new_password": pw + " 2"})
			w.admin.password = pw + " 2"
		}},
		{"forgotPassword", "ask for a reset link", true, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "both@c.test"})
		}},
		{"resetPassword", "reset a password", false, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": x.mailToken(t, "password_reset", "both@c.test"), "new_password": pw + " 3"})
			w.both = x.signIn(t, "both@c.test", pw+" 3")
		}},
		{"oauthCallback", "link a provider's account to an existing account (its address proven by the reset)", true, func(t *testing.T, x *env, w *world) {
			want2xx(t, "provider sign-in", x.providerSignIn(t, "idp-both", "both@c.test"))
		}},
		{"oauthCallback", "create an account through a provider", true, func(t *testing.T, x *env, w *world) {
			want2xx(t, "provider sign-in", x.providerSignIn(t, "idp-new", "fed-new@x.test"))
		}},
		{"oauthCallback", "sign in through a provider with a second factor", false, func(t *testing.T, x *env, w *world) {
			r := x.providerSignIn(t, "idp-fed", "fed@f.test")
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("exchange of a user with a second factor: %d %s, want 401 mfa_required", r.Status, r.Body)
			}
			send(t, x, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp",
				"mfa_token": jsonField(t, r, "mfa_token"), "code": w.fedRecovery[0]})
		}},
		{"forgotPassword", "ask for a reset link to an address never proven", true, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "squat@q.test"})
		}},
		{"resetPassword", "reset the password of an address never proven", false, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/auth/password/reset", map[string]string{"token": x.mailToken(t, "password_reset", "squat@q.test"), "new_password": pw + " 4"})
		}},
		{"issueToken", "sign in with a password", true, func(t *testing.T, x *env, w *world) {
			w.member = x.signIn(t, "member@a.test", pw)
		}},
		{"issueToken", "refresh", true, func(t *testing.T, x *env, w *world) {
			w.member.tokens(t, send(t, x, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": w.member.refresh}))
		}},
		{"issueToken", "present a rotated refresh token after the grace window", false, func(t *testing.T, x *env, w *world) {
			a := x.signIn(t, w.admin.email, w.admin.password) // a sign-in changes no projection
			rotated := a.refresh
			a.tokens(t, send(t, x, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": rotated}))
			if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE refresh_tokens SET rotated_at = now() - interval '1 minute' WHERE token_hash = $1`, sessions.Hash(rotated)); err != nil {
				t.Fatal(err)
			}
			r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": rotated})
			if r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
				t.Fatalf("reuse after the grace window: %d %s, want 400 invalid_grant", r.Status, r.Body)
			}
		}},
		{"issueToken", "client credentials", true, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "client_credentials", "client_id": w.saClient, "client_secret": w.saSecret})
		}},
		{"revokeToken", "a service account revokes a member's refresh token", false, func(t *testing.T, x *env, w *world) {
			a := x.signIn(t, "member@a.test", pw) // a sign-in changes no projection
			send(t, x, nil, http.MethodPost, "/api/v1/auth/revoke", map[string]string{"token": a.refresh, "client_id": w.saClient, "client_secret": w.saSecret})
		}},
		{"revokeToken", "a service account revokes an API key", false, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/auth/revoke", map[string]string{"token": w.auditorKey.secret, "client_id": w.saClient, "client_secret": w.saSecret})
		}},
		{"grantRole", "grant a role to a service account", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPut, "/api/v1/users/"+w.saID+"/roles/auditors", nil)
		}},
		{"patchMe", "change the address of an account never verified", true, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.mfaUser), http.MethodPatch, "/api/v1/users/me", map[string]any{"email": "mfa2@a.test"})
		}},
		{"acceptInvitation", "accept with one's password", false, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": x.mailToken(t, "invitation", "solo@s.test"), "password": pw})
		}},
		{"switchTenant", "switch tenant", true, func(t *testing.T, x *env, w *world) {
			var b *account = w.both
			r := send(t, x, x.as(t, b), http.MethodPost, "/api/v1/auth/switch-tenant", map[string]string{"tenant_id": w.ownerA.tid, "refresh_token": b.refresh})
			b.tokens(t, r)
		}},
		{"enrolTOTP", "enrol a second factor", true, func(t *testing.T, x *env, w *world) {
			r := send(t, x, x.as(t, w.auditor), http.MethodPost, "/api/v1/users/me/mfa/totp", nil)
			w.mfaSecret = jsonField(t, r, "secret") // the auditor's from now on; the member's factor is reset below
		}},
		{"confirmTOTP", "confirm a second factor", false, func(t *testing.T, x *env, w *world) {
			r := send(t, x, x.as(t, w.auditor), http.MethodPost, "/api/v1/users/me/mfa/totp/confirm", map[string]string{"code": x.totp(t, w.mfaSecret)})
			var rc struct {
				RecoveryCodes []string `json:"recovery_codes"`
			}
			r.JSON(t, &rc)
			w.recovery = rc.RecoveryCodes
		}},
		{"issueToken", "step up", true, func(t *testing.T, x *env, w *world) {
			refresh := w.auditor.refresh
			w.auditor.tokens(t, send(t, x, x.as(t, w.auditor), http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "mfa_otp", "code": w.recovery[0]}))
			if w.auditor.refresh == "" {
				w.auditor.refresh = refresh
			}
		}},
		{"regenerateRecoveryCodes", "new recovery codes", true, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.auditor), http.MethodPost, "/api/v1/users/me/mfa/recovery-codes", nil)
		}},
		{"disableTOTP", "remove one's second factor", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.auditor), http.MethodDelete, "/api/v1/users/me/mfa/totp", nil)
		}},
		{"resetMFA", "reset a member's second factor", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodDelete, "/api/v1/users/"+w.mfaUser.userID+"/mfa", nil)
		}},
		{"revokeSession", "end another session of one's own", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.member), http.MethodDelete, "/api/v1/users/me/sessions/"+w.memberOther.sid, nil)
		}},
		{"logout", "sign out", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.admin), http.MethodPost, "/api/v1/auth/logout", map[string]string{"scope": "local"})
		}},
		{"logout", "sign out everywhere", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.auditor), http.MethodPost, "/api/v1/auth/logout", map[string]string{"scope": "global"})
		}},
		{"revokeToken", "revoke a refresh token", false, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/auth/revoke", map[string]string{"token": w.member.refresh})
		}},
		{"introspectToken", "introspect a token", true, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/auth/introspect", map[string]string{"token": w.both.access, "client_id": w.saClient, "client_secret": w.saSecret})
		}},
		{"createAPIKey", "create a tenant key", true, func(t *testing.T, x *env, w *world) {
			r := send(t, x, owner(t, x, w), http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "t2", "permissions": []string{"tenant:read"}})
			w.keys = append(w.keys, key{jsonField(t, r, "id"), jsonField(t, r, "secret")})
		}},
		{"createMyAPIKey", "create a personal key", true, func(t *testing.T, x *env, w *world) {
			r := send(t, x, x.as(t, w.both), http.MethodPost, "/api/v1/users/me/api-keys", map[string]any{"name": "b", "permissions": []string{"tenant:read"}})
			w.keys = append(w.keys, key{jsonField(t, r, "id"), jsonField(t, r, "secret")})
		}},
		{"revokeAPIKey", "revoke a tenant key", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodDelete, "/api/v1/api-keys/"+w.tenantKey.id, nil)
		}},
		{"revokeMyAPIKey", "revoke one's key", false, func(t *testing.T, x *env, w *world) {
			k := w.keys[len(w.keys)-1]
			send(t, x, x.as(t, w.both), http.MethodDelete, "/api/v1/users/me/api-keys/"+k.id, nil)
		}},
		{"createServiceAccount", "create a service account", true, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPost, "/api/v1/service-accounts", map[string]any{"name": "ci2", "roles": []string{"member"}})
		}},
		{"createClientSecret", "rotate a client secret", true, func(t *testing.T, x *env, w *world) {
			r := send(t, x, owner(t, x, w), http.MethodPost, "/api/v1/service-accounts/"+w.saID+"/secrets", nil)
			w.saSecret2 = jsonField(t, r, "id")
		}},
		{"deleteClientSecret", "delete the older client secret", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodDelete, "/api/v1/service-accounts/"+w.saID+"/secrets/"+w.saSecretID, nil)
		}},
		{"deleteClientSecret", "delete the last client secret", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodDelete, "/api/v1/service-accounts/"+w.saID+"/secrets/"+w.saSecret2, nil)
		}},
		{"deleteServiceAccount", "delete a service account", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodDelete, "/api/v1/service-accounts/"+w.saID, nil)
		}},
		{"createInvitation", "invite", true, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPost, "/api/v1/invitations", map[string]any{"email": "later@x.test", "roles": []string{"member"}})
		}},
		{"resendInvitation", "resend an invitation", true, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPost, "/api/v1/invitations/"+w.invSpare+"/resend", nil)
		}},
		{"revokeInvitation", "revoke an invitation", true, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodDelete, "/api/v1/invitations/"+w.invSpare, nil)
		}},
		{"acceptInvitation", "accept as a new account", true, func(t *testing.T, x *env, w *world) {
			send(t, x, nil, http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": x.mailToken(t, "invitation", "new@x.test"), "password": pw})
		}},
		{"createUser", "add an existing account (invited)", true, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.ownerB), http.MethodPost, "/api/v1/users", map[string]any{"email": "owner@a.test", "roles": []string{"member"}})
		}},
		{"acceptInvitation", "accept with one's bearer", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.ownerA), http.MethodPost, "/api/v1/invitations/accept", map[string]string{"token": x.mailToken(t, "invitation", "owner@a.test")})
		}},
		{"createUser", "add a new member", true, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodPost, "/api/v1/users", map[string]any{"email": "fresh@a.test", "password": pw, "roles": []string{"member"}})
		}},
		{"deleteUser", "remove a member who holds a key", false, func(t *testing.T, x *env, w *world) {
			send(t, x, owner(t, x, w), http.MethodDelete, "/api/v1/users/"+w.member.userID, nil)
		}},
		{"createAccount", "sign up", true, func(t *testing.T, x *env, w *world) {
			x.signup(t, "later2@x.test", "D")
		}},
		{"deleteMyAccount", "delete one's account, which holds a key", false, func(t *testing.T, x *env, w *world) {
			send(t, x, x.as(t, w.leaver), http.MethodDelete, "/api/v1/users/me/account", nil)
		}},
	}
}

// settle waits for what runs after an answer (password resets).
func (x *env) settle(t *testing.T) { t.Helper(); x.lc.WaitResets() }

// TestEveryCachedChangeIsInvalidated runs every documented operation that
// writes, one after the other on one seeded world, and checks that every
// projection and API-key lookup the operation changed is covered by an
// invalidation subject the operation wrote to the outbox: the user's, the
// tenant's, the key's, or all.
func TestEveryCachedChangeIsInvalidated(t *testing.T) {
	x := start(t)
	w := seed(t, x)
	ops := operations()
	ran := map[string]bool{}
	for _, o := range ops {
		ran[o.op] = true
		t.Run(o.op+"/"+o.name, func(t *testing.T) {
			x.settle(t)
			before := x.snapshot(t, w)
			from := x.lastOutboxID(t)
			o.run(t, x, w)
			x.settle(t)
			subjects := map[string]bool{}
			for _, s := range x.Strings(t, `SELECT subject FROM outbox WHERE id > $1`, from) {
				subjects[s] = true
			}
			after := x.snapshot(t, w)
			used := map[string]bool{}
			for pair, was := range before.proj {
				if now := after.proj[pair]; now != was {
					if !covers(subjects, pair[0], pair[1], "") {
						t.Errorf("projection of user %s in tenant %s changed, no invalidation covers it (wrote %v)\nwas %s\nnow %s",
							pair[0], pair[1], keysOf(subjects), was, now)
					}
					mark(used, pair[0], pair[1], "")
				}
			}
			for pid, was := range before.keys {
				if now := after.keys[pid]; now != was {
					owner := before.keyOwner[pid]
					if !covers(subjects, owner[0], owner[1], pid) {
						t.Errorf("lookup of API key %s changed, no invalidation covers it (wrote %v)\nwas %s\nnow %s",
							pid, keysOf(subjects), was, now)
					}
					mark(used, owner[0], owner[1], pid)
				}
			}
			if len(used) == 0 && !o.quiet {
				t.Errorf("changed nothing a proxy caches; the row no longer exercises a change (or mark it quiet)")
			}
			for s := range subjects {
				if strings.HasPrefix(s, invalidation.SubjectPrefix) && !used[s] {
					t.Logf("information: %s invalidated nothing that changed", s)
				}
			}
		})
	}
	// A route that writes is in the table or says why it cannot change
	// what the proxies cache; a row names a documented operation.
	writing := writingOperations(t)
	for op := range ran {
		if !slices.Contains(writing, op) {
			t.Errorf("row of %s: no documented operation that writes has this id", op)
		}
	}
	for _, op := range writing {
		if !ran[op] {
			if _, ok := untouched[op]; !ok {
				t.Errorf("operation %s writes but is neither run here nor listed in untouched", op)
			}
		}
	}
}

func mark(used map[string]bool, user, tenant, publicID string) {
	used[invalidation.UserSubject(user)] = true
	used[invalidation.TenantSubject(tenant)] = true
	used[invalidation.SubjectAll] = true
	if publicID != "" {
		used[invalidation.APIKeySubject(publicID)] = true
	}
}

func keysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// writingOperations are the documented operations (the public document
// and the internal one) whose method is not GET, HEAD or OPTIONS, and the
// GET operations of writingReads.
func writingOperations(t *testing.T) []string {
	t.Helper()
	doc, err := openapi.Internal()
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	var out []string
	reads := map[string]bool{}
	for _, item := range d.Paths {
		for method, raw := range item {
			switch method {
			case "parameters", "summary", "description", "servers":
				continue
			}
			var op struct {
				OperationID string `json:"operationId"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatal(err)
			}
			switch method {
			case "get", "head", "options":
				if _, ok := writingReads[op.OperationID]; !ok {
					continue
				}
				reads[op.OperationID] = true
			}
			out = append(out, op.OperationID)
		}
	}
	for op := range writingReads {
		if !reads[op] {
			t.Errorf("writingReads names %s, which is no documented GET operation", op)
		}
	}
	slices.Sort(out)
	return out
}
