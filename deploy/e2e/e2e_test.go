package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// allPermissions is what the built-in owner role grants: the built-in
// permissions and the catalog's (the example notes app's).
var allPermissions = []string{"tenant:read", "tenant:write", "users:read", "users:write", "roles:read", "roles:write", "audit:read", "api-keys:write", "notes:read", "notes:write"}

// propagation bounds how long the suite waits for a change made through one
// instance to show at another. It is a deadline for polling, not a target:
// the revocation test measures the real figure.
const propagation = 5 * time.Second

func TestSignupTokenAndMeThroughEitherProxy(t *testing.T) {
	for _, tc := range []struct {
		name                string
		signupVia, loginVia *service
	}{
		{"signup via A, password grant via B", sys.proxyA, sys.proxyB},
		{"signup via B, password grant via A", sys.proxyB, sys.proxyA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			owner := signup(t, tc.signupVia)
			tok := login(t, tc.loginVia, owner)
			c := claimsOf(t, tok.AccessToken)
			if c.Sub != owner.UserID || c.Tid != owner.TenantID {
				t.Fatalf("password grant token: sub %q tid %q, want %q %q", c.Sub, c.Tid, owner.UserID, owner.TenantID)
			}
			if c.Sid == claimsOf(t, owner.Tokens.AccessToken).Sid {
				t.Errorf("password grant reused the signup session %q; want a new session", c.Sid)
			}
			for _, p := range []*service{sys.proxyA, sys.proxyB} {
				for i, at := range []string{owner.Tokens.AccessToken, tok.AccessToken} {
					got := me(t, p, at)
					if got.ID != owner.UserID || !strings.EqualFold(got.Email, owner.Email) || got.TenantID != owner.TenantID {
						t.Errorf("%s token %d: /users/me = %+v, want id %s email %s tenant %s", p.name, i, got, owner.UserID, owner.Email, owner.TenantID)
					}
					if !slices.Contains(got.Roles, "owner") || !hasAll(got.Permissions, allPermissions...) {
						t.Errorf("%s token %d: roles %v permissions %v, want owner with %v", p.name, i, got.Roles, got.Permissions, allPermissions)
					}
				}
			}
		})
	}

	owner := signup(t, sys.proxyA)
	t.Run("bad credentials", func(t *testing.T) {
		wrong := call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{
			"grant_type": "password", "email": owner.Email, "password": "not the password",
		})
		unknown := call(t, "POST", sys.proxyA.url("/api/v1/auth/token"), "", map[string]string{
			"grant_type": "password", "email": "nobody-" + randToken(4) + "@example.com", "password": "not the password",
		})
		// RFC 6749 5.2: a bad resource-owner credential is invalid_grant, 400.
		pw, pu := expectProblem(t, wrong, http.StatusBadRequest), expectProblem(t, unknown, http.StatusBadRequest)
		if pw.Code != "invalid_grant" {
			t.Errorf("wrong password: code %q, want invalid_grant", pw.Code)
		}
		if pw.Code != pu.Code || pw.Detail != pu.Detail {
			t.Errorf("wrong password answers %q/%q, unknown account %q/%q: want the same answer", pw.Code, pw.Detail, pu.Code, pu.Detail)
		}
	})
	t.Run("bad requests get problems", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			method string
			path   string
			token  string
			body   any
			want   int
		}{
			{"no token", "GET", "/api/v1/users/me", "", nil, http.StatusUnauthorized},
			{"garbage token", "GET", "/api/v1/users/me", "not.a.jwt", nil, http.StatusUnauthorized},
			{"signup with malformed JSON", "POST", "/api/v1/auth/signup", "", `{"email":`, http.StatusBadRequest},
			{"signup without password", "POST", "/api/v1/auth/signup", "", map[string]string{"email": "x-" + randToken(4) + "@example.com", "tenant_name": "X"}, http.StatusUnprocessableEntity},
			{"signup with a bad email", "POST", "/api/v1/auth/signup", "", map[string]string{"email": "not-an-email", "password": testPassword, "tenant_name": "X"}, http.StatusUnprocessableEntity},
			{"unknown grant type", "POST", "/api/v1/auth/token", "", map[string]string{"grant_type": "magic"}, http.StatusBadRequest},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, p := range []*service{sys.proxyA, sys.proxyB} {
					r := call(t, tc.method, p.url(tc.path), tc.token, tc.body)
					expectProblem(t, r, tc.want)
					if tc.want == http.StatusUnauthorized && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", r, r.Header.Get("WWW-Authenticate"))
					}
				}
			})
		}
	})
	t.Run("request id reaches the core", func(t *testing.T) {
		// The suite's client is no trusted peer of the proxy: the id it
		// sends is logged apart, and the proxy's is the request's.
		sent := "e2e-" + randToken(8)
		req, _ := http.NewRequest("GET", sys.proxyB.url("/api/v1/users/me"), nil)
		req.Header.Set("Authorization", "Bearer "+owner.Tokens.AccessToken)
		req.Header.Set("X-Request-Id", sent)
		resp, err := apiClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		id := resp.Header.Get("X-Request-Id")
		if resp.StatusCode != http.StatusOK || id == "" || id == sent {
			t.Fatalf("status %d, X-Request-Id %q; want 200 with the proxy's own id, not %q", resp.StatusCode, id, sent)
		}
		if len(linesWith(t, sys.proxyB, "client_request_id", sent)) == 0 {
			t.Errorf("%s logged nothing with client_request_id %s", sys.proxyB.name, sent)
		}
		for _, svc := range []*service{sys.proxyB, sys.coreB} {
			if len(linesWith(t, svc, "request_id", id)) == 0 {
				t.Errorf("%s logged nothing for request id %s", svc.name, id)
			}
		}
	})
	t.Run("client-sent identity headers are ignored", func(t *testing.T) {
		other := signup(t, sys.proxyB)
		req, _ := http.NewRequest("GET", sys.proxyA.url("/api/v1/users/me"), nil)
		req.Header.Set("Authorization", "Bearer "+owner.Tokens.AccessToken)
		req.Header.Set("X-Auth-User-Id", other.UserID)
		req.Header.Set("X-Auth-Tenant-Id", other.TenantID)
		req.Header.Set("X_Auth_Permissions", "tenant:write")
		resp, err := apiClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		r := reply{Method: "GET", URL: req.URL.String(), Status: resp.StatusCode, Header: resp.Header, Body: body}
		expect(t, r, http.StatusOK)
		if got := decode[meBody](t, r); got.ID != owner.UserID || got.TenantID != owner.TenantID {
			t.Errorf("/users/me with forged identity headers: id %q tenant %q, want the token's %q %q", got.ID, got.TenantID, owner.UserID, owner.TenantID)
		}
	})
}

// TestRoleRevokeReachesOtherProxy revokes a role through proxy/core A and
// measures how long the user's requests through proxy B keep succeeding.
func TestRoleRevokeReachesOtherProxy(t *testing.T) {
	const trials = 20
	owner := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member", "admin")
	roleURL := sys.proxyA.url("/api/v1/users/" + m.UserID + "/roles/admin")
	// GET /users needs users:read, which the admin role grants and member does not.
	probeB := sys.proxyB.url("/api/v1/users?limit=1")

	// The suite also listens on NATS, to tell the relay's share of the
	// latency (commit → event) from the proxy's (event → 403).
	nc, err := nats.Connect(sys.natsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	events := make(chan time.Time, 64)
	sub, err := nc.Subscribe(invalidation.UserSubject(m.UserID), func(*nats.Msg) { events <- time.Now() })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	var lat, evLat []time.Duration
	for i := range trials {
		if i > 0 {
			r := call(t, "PUT", roleURL, owner.Tokens.AccessToken, nil)
			if r.Status/100 != 2 {
				t.Fatalf("trial %d: grant admin: %s", i, r)
			}
		}
		mustWaitStatus(t, "GET", probeB, m.Tokens.AccessToken, http.StatusOK, propagation)
		// A second request, so that proxy B serves it from its caches.
		expect(t, call(t, "GET", probeB, m.Tokens.AccessToken, nil), http.StatusOK)

		for len(events) > 0 { // the grant's event
			<-events
		}
		r := call(t, "DELETE", roleURL, owner.Tokens.AccessToken, nil)
		revoked := time.Now()
		if r.Status/100 != 2 {
			t.Fatalf("trial %d: revoke admin: %s", i, r)
		}
		// Polling every millisecond rather than back to back: each probe that
		// still succeeds costs core B a query, and on a small machine a tight
		// loop would slow down the very relay it is timing.
		d, got, err := waitStatus("GET", probeB, m.Tokens.AccessToken, http.StatusForbidden, propagation, time.Millisecond)
		if err != nil {
			t.Fatalf("trial %d: after the revoke through A, proxy B: %v", i, err)
		}
		if i == 0 {
			expectProblem(t, got, http.StatusForbidden)
		}
		lat = append(lat, d)
		select {
		case at := <-events:
			ev := at.Sub(revoked)
			evLat = append(evLat, ev)
			t.Logf("trial %2d: event after %v, 403 at proxy B after %v", i, ev, d)
		case <-time.After(propagation):
			t.Fatalf("trial %d: no event on %s after the revoke", i, invalidation.UserSubject(m.UserID))
		}
	}
	slices.Sort(evLat)
	t.Logf("revoke 2xx → event on NATS (negative: before the 2xx reached the client): p50 %v max %v", evLat[len(evLat)/2], evLat[len(evLat)-1])
	slices.Sort(lat)
	p50, p90, worst := lat[len(lat)/2], lat[len(lat)*9/10], lat[len(lat)-1]
	t.Logf("revocation through A → 403 at proxy B, %d trials: min %v p50 %v p90 %v max %v", trials, lat[0], p50, p90, worst)
	if p50 > 100*time.Millisecond {
		t.Errorf("median revocation-to-403 latency %v, want within 100ms", p50)
	}

	// The revoke took only the admin role: the user is still a member.
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		got := me(t, p, m.Tokens.AccessToken)
		if slices.Contains(got.Roles, "admin") || !slices.Contains(got.Roles, "member") {
			t.Errorf("%s: roles after revoke %v, want member without admin", p.name, got.Roles)
		}
		expectProblem(t, call(t, "GET", p.url("/api/v1/users?limit=1"), m.Tokens.AccessToken, nil), http.StatusForbidden)
	}
}

func TestLogoutGlobal(t *testing.T) {
	owner := signup(t, sys.proxyA)
	second := login(t, sys.proxyB, owner)
	tokens := []string{owner.Tokens.AccessToken, second.AccessToken}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		for _, tok := range tokens {
			me(t, p, tok) // both sessions live and cached at both proxies
		}
	}

	r := call(t, "POST", sys.proxyA.url("/api/v1/auth/logout"), owner.Tokens.AccessToken, map[string]string{"scope": "global"})
	if r.Status/100 != 2 {
		t.Fatalf("logout global: %s", r)
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		for i, tok := range tokens {
			_, got := mustWaitStatus(t, "GET", p.url("/api/v1/users/me"), tok, http.StatusUnauthorized, propagation)
			expectProblem(t, got, http.StatusUnauthorized)
			if h := got.Header.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
				t.Errorf("%s, session %d after logout: WWW-Authenticate %q, want error=\"invalid_token\"", p.name, i, h)
			}
		}
	}
	for i, rt := range []string{owner.Tokens.RefreshToken, second.RefreshToken} {
		r := call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{"grant_type": "refresh_token", "refresh_token": rt})
		if r.Status != http.StatusBadRequest && r.Status != http.StatusUnauthorized {
			t.Errorf("refresh of session %d after global logout: %s, want 400 or 401", i, r)
		} else {
			checkProblem(t, r)
		}
	}
	// Logging out everywhere does not lock the account.
	again := login(t, sys.proxyB, owner)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		if got := me(t, p, again.AccessToken); got.ID != owner.UserID {
			t.Errorf("%s: /users/me after a new login: id %q, want %q", p.name, got.ID, owner.UserID)
		}
	}
}

// TestOAuthStartedOnCoreAFinishedOnCoreB starts an OIDC login through proxy A
// (so core A stores the state, PKCE verifier, nonce and the hash of the
// browser-binding cookie) and delivers the provider's callback to proxy B
// (core B), which must find that state in the shared database, accept it only
// with the browser's cookie, redeem the code with the verifier, check the
// nonce, and send the browser to the app's return_to with a one-time code that
// the app exchanges (through either proxy, with the code_verifier of the
// code_challenge it started with) for tokens.
func TestOAuthStartedOnCoreAFinishedOnCoreB(t *testing.T) {
	u := oidcUser{Subject: "sub-" + randToken(6), Email: "oidc-" + randToken(5) + "@example.com", Name: "Oidc User"}
	sys.oidc.loginAs(u)
	t.Cleanup(func() {
		for _, p := range sys.oidc.takeProblems() {
			t.Errorf("fake provider rejected a request from coreapi: %s", p)
		}
	})

	if r := call(t, "GET", sys.proxyA.url("/api/v1/auth/oauth/"+oidcProvider+"/authorize"), "", nil); r.Status != http.StatusBadRequest {
		t.Fatalf("authorize without return_to while an allow-list is set: %s, want 400", r)
	}
	fl := startOAuth(t, sys.proxyA)
	q := sys.oidc.lastAuthorize()
	if q.Get("code_challenge_method") != "S256" || q.Get("nonce") == "" || q.Get("state") == "" {
		t.Errorf("authorization request %v lacks PKCE S256, nonce or state", q)
	}
	callback := fl.callback
	if !strings.HasPrefix(callback, sys.oidc.redirectURL+"?") {
		t.Fatalf("provider redirects to %q, want proxy B's callback %s", callback, sys.oidc.redirectURL)
	}

	t.Run("callback without the browser's cookie", func(t *testing.T) {
		// Whoever holds the callback URL but not the cookie gets nothing,
		// and the provider is not asked.
		calls := sys.oidc.tokenRequests()
		r := call(t, "GET", callback, "", nil)
		if r.Status != http.StatusBadRequest {
			t.Fatalf("callback without the cookie: %s, want 400", r)
		}
		if p := checkProblem(t, r); p.Code != "state_not_bound" {
			t.Errorf("code = %q, want state_not_bound", p.Code)
		}
		if got := sys.oidc.tokenRequests(); got != calls {
			t.Errorf("an unbound callback made %d token requests to the provider, want 0", got-calls)
		}
	})

	done := browserGet(t, callback, fl.cookie)
	tok := exchangeHandover(t, sys.proxyA, done, fl.verifier)
	c := claimsOf(t, tok)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		got := me(t, p, tok)
		if got.ID != c.Sub || !strings.EqualFold(got.Email, u.Email) {
			t.Errorf("%s: /users/me after OIDC login = %+v, want id %s email %s", p.name, got, c.Sub, u.Email)
		}
	}

	t.Run("hand-over code is used once", func(t *testing.T) {
		loc, _ := url.Parse(done.Header.Get("Location"))
		r := call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", url.Values{"grant_type": {"oauth_handover"}, "code": {loc.Query().Get("code")}, "code_verifier": {fl.verifier}, "redirect_uri": {oauthReturnURL}})
		if r.Status != http.StatusBadRequest {
			t.Fatalf("second exchange of the code: %s, want 400", r)
		}
		checkProblem(t, r)
	})
	t.Run("state is consumed once", func(t *testing.T) {
		// A replayed state must be refused before any code exchange: the
		// provider sees no second token request.
		calls := sys.oidc.tokenRequests()
		defer func() {
			if got := sys.oidc.tokenRequests(); got != calls {
				t.Errorf("replayed callbacks made %d token requests to the provider, want 0", got-calls)
			}
		}()
		for _, p := range []*service{sys.proxyB, sys.proxyA} {
			r := browserGet(t, strings.Replace(callback, sys.proxyB.addr, p.addr, 1), fl.cookie)
			if r.Status < 400 || r.Status >= 500 {
				t.Errorf("replayed callback through %s: %s, want 4xx", p.name, r)
				continue
			}
			checkProblem(t, r)
		}
	})
	t.Run("unknown state", func(t *testing.T) {
		calls := sys.oidc.tokenRequests()
		cb, _ := url.Parse(callback)
		q := cb.Query()
		q.Set("state", randToken(16))
		cb.RawQuery = q.Encode()
		r := browserGet(t, cb.String(), fl.cookie)
		if r.Status < 400 || r.Status >= 500 {
			t.Fatalf("callback with an unknown state: %s, want 4xx", r)
		}
		checkProblem(t, r)
		if got := sys.oidc.tokenRequests(); got != calls {
			t.Errorf("a callback with an unknown state made %d token requests to the provider, want 0", got-calls)
		}
	})
	t.Run("second login links the same user", func(t *testing.T) {
		fl2 := startOAuth(t, sys.proxyB)
		tok2 := exchangeHandover(t, sys.proxyB, browserGet(t, fl2.callback, fl2.cookie), fl2.verifier)
		if got := claimsOf(t, tok2).Sub; got != c.Sub {
			t.Errorf("second OIDC login of the same subject signed in user %q, want %q", got, c.Sub)
		}
	})
}

// oauthFlow is a sign-in started by a browser: the binding cookie it got,
// the callback URL the provider sent it back to, and the app's PKCE
// code_verifier, whose S256 challenge started it.
type oauthFlow struct {
	cookie   *http.Cookie
	callback string
	verifier string
}

// startOAuth starts a sign-in through p with the app's return_to and lets
// the provider approve it.
func startOAuth(t *testing.T, p *service) oauthFlow {
	t.Helper()
	verifier := randToken(32)
	sum := sha256.Sum256([]byte(verifier))
	start := call(t, "GET", p.url("/api/v1/auth/oauth/"+oidcProvider+"/authorize?return_to="+url.QueryEscape(oauthReturnURL)+
		"&code_challenge="+base64.RawURLEncoding.EncodeToString(sum[:])+"&code_challenge_method=S256"), "", nil)
	if start.Status != http.StatusFound {
		t.Fatalf("authorize through %s: %s, want a redirect to the provider", p.name, start)
	}
	loc := start.Header.Get("Location")
	if !strings.HasPrefix(loc, sys.oidc.issuer()+"/authorize?") {
		t.Fatalf("authorize through %s redirects to %q, want the provider's authorization endpoint", p.name, loc)
	}
	fl := oauthFlow{verifier: verifier}
	for _, c := range (&http.Response{Header: start.Header}).Cookies() {
		if strings.HasPrefix(c.Name, "__Host-") && c.Secure && c.HttpOnly && c.SameSite == http.SameSiteLaxMode {
			fl.cookie = c
		}
	}
	if fl.cookie == nil {
		t.Fatalf("authorize through %s set no __Host- binding cookie (Secure, HttpOnly, SameSite=Lax): %v", p.name, start.Header.Values("Set-Cookie"))
	}
	atProvider := call(t, "GET", loc, "", nil)
	if atProvider.Status != http.StatusFound {
		t.Fatalf("provider authorize: %s (problems: %v)", atProvider, sys.oidc.takeProblems())
	}
	fl.callback = atProvider.Header.Get("Location")
	return fl
}

// browserGet is a GET that carries a cookie, as the browser would.
func browserGet(t *testing.T, target string, c *http.Cookie) reply {
	t.Helper()
	r, err := sendWith("GET", target, "", nil, http.Header{"Cookie": {c.Name + "=" + c.Value}})
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return r
}

// appRefusal checks the end of an OIDC login that coreapi refused after
// the flow's state was verified: a redirect to the app's return_to with
// error=access_denied and no code (the sign-in entered no account), and
// returns its error_code, coreapi's problem code.
func appRefusal(t *testing.T, r reply) string {
	t.Helper()
	if r.Status != http.StatusFound {
		t.Fatalf("OIDC callback: %s, want a redirect to the app with an error", r)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || loc.Scheme+"://"+loc.Host+loc.Path != oauthReturnURL {
		t.Fatalf("%s: Location %q, want %s?error=...", r, r.Header.Get("Location"), oauthReturnURL)
	}
	q := loc.Query()
	if q.Has("code") || q.Get("error") != "access_denied" {
		t.Fatalf("%s: Location %q, want error=access_denied and no code: the sign-in entered an account", r, loc)
	}
	return q.Get("error_code")
}

// exchangeHandover checks the end of an OIDC login (a redirect to the app's
// return_to carrying a one-time code and no token) and exchanges the code
// through p for an access token, as the app would, with its verifier and
// its return_to as redirect_uri.
func exchangeHandover(t *testing.T, p *service, r reply, verifier string) string {
	t.Helper()
	if r.Status != http.StatusFound {
		t.Fatalf("OIDC callback: %s, want a redirect to the app", r)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || loc.Scheme+"://"+loc.Host+loc.Path != oauthReturnURL {
		t.Fatalf("%s: Location %q, want %s?code=...", r, r.Header.Get("Location"), oauthReturnURL)
	}
	if strings.Contains(loc.String(), "token") || strings.Contains(string(r.Body), "access_token") {
		t.Fatalf("%s: a token travels in the redirect or page: %s", r, loc)
	}
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("%s: redirect carries no code", r)
	}
	ex := call(t, "POST", p.url("/api/v1/auth/token"), "", url.Values{"grant_type": {"oauth_handover"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {oauthReturnURL}})
	tr := decode[tokenResponse](t, ex)
	tr.check(t, ex)
	return tr.AccessToken
}

// TestRefreshRotationAcrossInstances sends the same refresh token to proxy A
// and proxy B at once: both must succeed with the same successor (neither
// request logs the user out), and reuse after the grace window must revoke
// the session everywhere.
func TestRefreshRotationAcrossInstances(t *testing.T) {
	owner := signup(t, sys.proxyA)
	sid := claimsOf(t, owner.Tokens.AccessToken).Sid
	refresh := func(p *service, rt string) (reply, error) {
		return send("POST", p.url("/api/v1/auth/token"), "", map[string]string{"grant_type": "refresh_token", "refresh_token": rt})
	}

	rt := owner.Tokens.RefreshToken
	first := rt
	var live []string // access tokens of the session
	for round := range 3 {
		var wg sync.WaitGroup
		var replies [2]reply
		var errs [2]error
		gate := make(chan struct{})
		for i, p := range []*service{sys.proxyA, sys.proxyB} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				replies[i], errs[i] = refresh(p, rt)
			}()
		}
		close(gate)
		wg.Wait()
		var got [2]tokenResponse
		for i := range replies {
			if errs[i] != nil {
				t.Fatalf("round %d, request %d: %v", round, i, errs[i])
			}
			expect(t, replies[i], http.StatusOK)
			got[i] = decode[tokenResponse](t, replies[i])
			got[i].check(t, replies[i])
			if s := claimsOf(t, got[i].AccessToken).Sid; s != sid {
				t.Errorf("round %d: refreshed token has sid %q, want the session's %q", round, s, sid)
			}
			live = append(live, got[i].AccessToken)
		}
		if got[0].RefreshToken != got[1].RefreshToken {
			t.Fatalf("round %d: concurrent refreshes through A and B returned different successors", round)
		}
		if got[0].RefreshToken == rt {
			t.Fatalf("round %d: refresh token not rotated", round)
		}
		rt = got[0].RefreshToken
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		for _, at := range live {
			me(t, p, at)
		}
	}

	// Waiting out the grace window is the behaviour under test here, not a
	// synchronisation.
	time.Sleep(refreshGrace + 500*time.Millisecond)
	r, err := refresh(sys.proxyB, first)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusBadRequest && r.Status != http.StatusUnauthorized {
		t.Fatalf("reuse of a rotated refresh token after the grace window: %s, want 400 or 401", r)
	}
	checkProblem(t, r)
	// Reuse means theft: the whole session is revoked, its newest refresh
	// token and its access tokens included.
	r, err = refresh(sys.proxyA, rt)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusBadRequest && r.Status != http.StatusUnauthorized {
		t.Errorf("newest refresh token of a session revoked for reuse: %s, want 400 or 401", r)
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		for _, at := range append(live, owner.Tokens.AccessToken) {
			mustWaitStatus(t, "GET", p.url("/api/v1/users/me"), at, http.StatusUnauthorized, propagation)
		}
	}
}

// TestCoreKilled kills core A: proxy A must answer tokens it has not cached
// with 503 problem+json and Retry-After, within its upstream timeout; once
// core A is back, proxy A serves again without being restarted.
func TestCoreKilled(t *testing.T) {
	ctx := context.Background()
	t.Cleanup(func() {
		if sys.coreA.child.Exited() {
			if err := sys.coreA.start(ctx); err != nil {
				t.Errorf("restart core A: %v", err)
			}
		}
	})
	owner := signup(t, sys.proxyB) // neither token nor projection cached at proxy A
	warm := signup(t, sys.proxyA)  // token and projection cached at proxy A
	me(t, sys.proxyA, warm.Tokens.AccessToken)
	proxyPid := sys.proxyA.child.Pid()

	sys.coreA.kill()
	r, err := send("GET", sys.proxyA.url("/api/v1/users/me"), owner.Tokens.AccessToken, nil)
	if err != nil {
		t.Fatalf("proxy A with core A dead: %v (after %v)", err, r.Elapsed)
	}
	expectProblem(t, r, http.StatusServiceUnavailable)
	t.Logf("core A dead: proxy A answered %d in %v", r.Status, r.Elapsed)
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra <= 0 {
		t.Errorf("%s: Retry-After %q, want a positive number of seconds", r, r.Header.Get("Retry-After"))
	}
	if r.Elapsed > upstreamTimeout+time.Second {
		t.Errorf("503 took %v, want within the upstream timeout %v", r.Elapsed, upstreamTimeout)
	}
	// A cached identity does not help: the request itself has nowhere to go.
	r = call(t, "GET", sys.proxyA.url("/api/v1/users/me"), warm.Tokens.AccessToken, nil)
	expectProblem(t, r, http.StatusServiceUnavailable)
	if r.Elapsed > upstreamTimeout+time.Second {
		t.Errorf("503 for a cached token took %v, want within the upstream timeout %v", r.Elapsed, upstreamTimeout)
	}
	// The other instance is unaffected.
	if got := me(t, sys.proxyB, owner.Tokens.AccessToken); got.ID != owner.UserID {
		t.Errorf("proxy B: id %q, want %q", got.ID, owner.UserID)
	}

	if err := sys.coreA.start(ctx); err != nil {
		t.Fatal(err)
	}
	_, got := mustWaitStatus(t, "GET", sys.proxyA.url("/api/v1/users/me"), owner.Tokens.AccessToken, http.StatusOK, 15*time.Second)
	if m := decode[meBody](t, got); m.ID != owner.UserID {
		t.Errorf("proxy A after core A restart: id %q, want %q", m.ID, owner.UserID)
	}
	if sys.proxyA.child.Exited() || sys.proxyA.child.Pid() != proxyPid {
		t.Errorf("proxy A was restarted or died (pid %d, was %d)", sys.proxyA.child.Pid(), proxyPid)
	}
}

// TestCoreHung stops core A (SIGSTOP: connections are accepted by the kernel,
// nothing answers): proxy A must give up within its timeouts with a problem,
// not hang, and recover when core A continues. An uncached identity waits
// for the projection fetch (PROJECTION_TIMEOUT), a cached one for the
// forwarded request (UPSTREAM_TIMEOUT).
func TestCoreHung(t *testing.T) {
	cold := signup(t, sys.proxyB) // unknown to proxy A
	warm := signup(t, sys.proxyA)
	me(t, sys.proxyA, warm.Tokens.AccessToken)
	pid := sys.coreA.child.Pid()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	if err := stopProcess(pid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()

	cases := []struct {
		name    string
		token   string
		timeout time.Duration
	}{
		{"uncached identity", cold.Tokens.AccessToken, projectionTimeout},
		{"cached identity", warm.Tokens.AccessToken, upstreamTimeout},
	}
	var wg sync.WaitGroup
	replies := make([]reply, len(cases))
	errs := make([]error, len(cases))
	for i, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i], errs[i] = send("GET", sys.proxyA.url("/api/v1/users/me"), tc.token, nil)
		}()
	}
	wg.Wait()
	resume()
	for i, tc := range cases {
		r := replies[i]
		if errs[i] != nil {
			t.Errorf("%s, core A hung: %v after %v", tc.name, errs[i], r.Elapsed)
			continue
		}
		if r.Status != http.StatusServiceUnavailable && r.Status != http.StatusGatewayTimeout {
			id := r.Header.Get("X-Request-Id")
			t.Errorf("%s: %s after %v, want 503 or 504 (core A pid %d, stopped at %v); logs of request %s:\n%s\n%s",
				tc.name, r, r.Elapsed, pid, stoppedAt.Format(time.RFC3339Nano), id,
				grepLog(sys.proxyA.logPath, id), grepLog(sys.coreA.logPath, id))
			continue
		}
		checkProblem(t, r)
		t.Logf("core A hung, %s: proxy A answered %d in %v", tc.name, r.Status, r.Elapsed)
		if r.Elapsed > tc.timeout+time.Second {
			t.Errorf("%s: proxy A answered after %v, want within its %v timeout", tc.name, r.Elapsed, tc.timeout)
		}
	}
	for _, a := range []account{cold, warm} {
		mustWaitStatus(t, "GET", sys.proxyA.url("/api/v1/users/me"), a.Tokens.AccessToken, http.StatusOK, 15*time.Second)
	}
}

// TestNATSRestart shuts NATS down and starts it again on the same port:
// a change made while it was down must reach both proxies, and so must
// changes made after it came back.
func TestNATSRestart(t *testing.T) {
	owner := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member", "admin")
	roleA := sys.proxyA.url("/api/v1/users/" + m.UserID + "/roles/admin")
	roleB := sys.proxyB.url("/api/v1/users/" + m.UserID + "/roles/admin")
	probe := func(p *service) string { return p.url("/api/v1/users?limit=1") }
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		expect(t, call(t, "GET", probe(p), m.Tokens.AccessToken, nil), http.StatusOK)
	}
	back := natsDown(t)
	r := call(t, "DELETE", roleA, owner.Tokens.AccessToken, nil)
	if r.Status/100 != 2 {
		t.Fatalf("revoke while NATS is down: %s", r)
	}
	back()
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		mustWaitStatus(t, "GET", probe(p), m.Tokens.AccessToken, http.StatusForbidden, propagation)
	}

	// After the restart, invalidations flow again both ways: a grant through
	// A must lift the cached 403 at both proxies, a revoke through B restore it.
	if r := call(t, "PUT", roleA, owner.Tokens.AccessToken, nil); r.Status/100 != 2 {
		t.Fatalf("grant after NATS restart: %s", r)
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		mustWaitStatus(t, "GET", probe(p), m.Tokens.AccessToken, http.StatusOK, propagation)
	}
	if r := call(t, "DELETE", roleB, owner.Tokens.AccessToken, nil); r.Status/100 != 2 {
		t.Fatalf("revoke through B after NATS restart: %s", r)
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		mustWaitStatus(t, "GET", probe(p), m.Tokens.AccessToken, http.StatusForbidden, propagation)
	}
}

// TestPostgresRestart stops PostgreSQL: requests that need it fail with a
// problem within the timeout; once it is back, every service recovers
// without a restart, including the outbox relay that carries invalidations.
func TestPostgresRestart(t *testing.T) {
	ctx := context.Background()
	owner := signup(t, sys.proxyA)
	m := addMember(t, owner, sys.proxyA, "member", "admin")
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		me(t, p, owner.Tokens.AccessToken)
		expect(t, call(t, "GET", p.url("/api/v1/users?limit=1"), m.Tokens.AccessToken, nil), http.StatusOK)
	}
	pids := map[string]int{}
	for _, s := range []*service{sys.coreA, sys.coreB, sys.proxyA, sys.proxyB} {
		pids[s.name] = s.child.Pid()
	}
	t.Cleanup(func() {
		if sys.pg.child == nil {
			if err := sys.pg.start(ctx); err != nil {
				t.Errorf("restart postgres: %v", err)
			}
		}
	})

	if err := sys.pg.stop(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, method, path string
		token              string
		body               any
		via                *service
	}{
		{"read through A", "GET", "/api/v1/users/me", owner.Tokens.AccessToken, nil, sys.proxyA},
		{"list through B", "GET", "/api/v1/users?limit=5", owner.Tokens.AccessToken, nil, sys.proxyB},
		{"password grant through A", "POST", "/api/v1/auth/token", "", map[string]string{"grant_type": "password", "email": owner.Email, "password": owner.Password}, sys.proxyA},
		{"refresh through B", "POST", "/api/v1/auth/token", "", map[string]string{"grant_type": "refresh_token", "refresh_token": owner.Tokens.RefreshToken}, sys.proxyB},
	} {
		t.Run("down/"+tc.name, func(t *testing.T) {
			r, err := send(tc.method, tc.via.url(tc.path), tc.token, tc.body)
			if err != nil {
				t.Fatalf("%v after %v", err, r.Elapsed)
			}
			if r.Status != http.StatusServiceUnavailable {
				t.Fatalf("%s: want 503 while PostgreSQL is down", r)
			}
			if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra <= 0 {
				t.Errorf("%s: Retry-After %q, want a positive number of seconds", r, r.Header.Get("Retry-After"))
			}
			pr := checkProblem(t, r)
			t.Logf("while PostgreSQL is down: %s %s → %d %s in %v", tc.method, tc.path, r.Status, pr.Code, r.Elapsed)
			if r.Elapsed > 10*time.Second {
				t.Errorf("%s took %v, want a prompt failure", r, r.Elapsed)
			}
		})
	}

	if err := sys.pg.start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		mustWaitStatus(t, "GET", p.url("/api/v1/users/me"), owner.Tokens.AccessToken, http.StatusOK, 20*time.Second)
		mustWaitStatus(t, "GET", p.url("/api/v1/users?limit=5"), owner.Tokens.AccessToken, http.StatusOK, 20*time.Second)
	}
	login(t, sys.proxyB, owner)
	// Writes commit and their invalidations still reach the proxies.
	r := call(t, "DELETE", sys.proxyB.url("/api/v1/users/"+m.UserID+"/roles/admin"), owner.Tokens.AccessToken, nil)
	if r.Status/100 != 2 {
		t.Fatalf("revoke after PostgreSQL restart: %s", r)
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		mustWaitStatus(t, "GET", p.url("/api/v1/users?limit=1"), m.Tokens.AccessToken, http.StatusForbidden, propagation)
	}
	for _, s := range []*service{sys.coreA, sys.coreB, sys.proxyA, sys.proxyB} {
		if s.child.Exited() || s.child.Pid() != pids[s.name] {
			t.Errorf("%s was restarted or died during the PostgreSQL restart", s.name)
		}
	}
}

// TestPostgresHung freezes PostgreSQL (SIGSTOP to every server process: the
// kernel still accepts connections, nothing answers). Requests must fail
// within the proxy's upstream timeout rather than hang, and succeed again
// once PostgreSQL continues, with nothing restarted.
func TestPostgresHung(t *testing.T) {
	owner := signup(t, sys.proxyA)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		me(t, p, owner.Tokens.AccessToken)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := sys.pg.signalAll(syscall.SIGCONT); err != nil {
				t.Errorf("resume postgres: %v", err)
			}
		}
	}
	t.Cleanup(resume)
	if err := sys.pg.stopAll(5 * time.Second); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	var replies [2]reply
	var errs [2]error
	for i, p := range []*service{sys.proxyA, sys.proxyB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i], errs[i] = send("GET", p.url("/api/v1/users/me"), owner.Tokens.AccessToken, nil)
		}()
	}
	wg.Wait()
	resume()
	for i, r := range replies {
		if errs[i] != nil {
			t.Errorf("request %d with PostgreSQL frozen: %v after %v", i, errs[i], r.Elapsed)
			continue
		}
		if r.Status < 500 {
			t.Errorf("%s: want 5xx while PostgreSQL is frozen", r)
			continue
		}
		pr := checkProblem(t, r)
		t.Logf("while PostgreSQL is frozen: %s → %d %s in %v", r.URL, r.Status, pr.Code, r.Elapsed)
		if r.Elapsed > upstreamTimeout+2*time.Second {
			t.Errorf("%s took %v, want within the upstream timeout %v", r, r.Elapsed, upstreamTimeout)
		}
	}
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		mustWaitStatus(t, "GET", p.url("/api/v1/users/me"), owner.Tokens.AccessToken, http.StatusOK, 20*time.Second)
	}
	login(t, sys.proxyA, owner)
}

// TestConcurrentGuessesAcrossInstances sends 40 wrong passwords for one
// account at once, half through proxy A (core A) and half through proxy B
// (core B): the attempts are reserved in PostgreSQL in the statement that
// checks the lock, so exactly the threshold (5) are evaluated whatever the
// concurrency and the replica, and the rest are answered 429.
//
// It is the last test of the file on purpose: the burst leaves each proxy
// with a couple of dozen idle keep-alive connections to its core, which the
// fault tests above (a killed or hung core) were not written to meet. (A
// request that meets a stale pooled connection is retried once on a fresh
// one or answered 503, not 502: authproxy/internal/forward.)
func TestConcurrentGuessesAcrossInstances(t *testing.T) {
	a := signup(t, sys.proxyA)
	const n, threshold = 40, 5
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	gun := make(chan struct{})
	for i := range n {
		via := sys.proxyA
		if i%2 == 1 {
			via = sys.proxyB
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gun
			r, err := send("POST", via.url("/api/v1/auth/token"), "", map[string]string{
				"grant_type": "password", "email": a.Email, "password": "wrong " + randToken(4)})
			if err != nil {
				t.Errorf("guess through %s: %v", via.name, err)
				return
			}
			statuses <- r.Status
		}()
	}
	start := time.Now()
	close(gun)
	wg.Wait()
	burst := time.Since(start)
	close(statuses)
	counts := map[int]int{}
	for st := range statuses {
		counts[st]++
	}
	// The first lock lasts a second, the next two, and so on: a burst that
	// a loaded machine stretches past the first lock's end lets one more
	// guess through, as a client that waits out the lock would (the
	// policy, not a race). Within the first lock, exactly threshold.
	most := threshold
	for lock, end := time.Second, time.Second; end < burst; lock, end = 2*lock, end+2*lock {
		most++
	}
	if got := counts[http.StatusBadRequest]; got < threshold || got > most || got+counts[http.StatusTooManyRequests] != n {
		t.Fatalf("%d concurrent guesses through two proxies in %v: %v, want %d evaluated (400; up to %d in a burst this long) and the rest refused (429)",
			n, burst, counts, threshold, most)
	}
	if most > threshold {
		t.Logf("the burst took %v, past the first lock: %d guesses evaluated", burst, counts[http.StatusBadRequest])
	}
}

// TestBuiltInPublicGetsServed: the public documents and link pages that
// authproxy routes to coreapi on its own (no rules file) answer through
// either proxy, with no token: none is a route to nowhere. (The OAuth
// sign-in paths need a provider and are covered by their own tests.)
func TestBuiltInPublicGetsServed(t *testing.T) {
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		for _, path := range []string{"/api/v1/health", "/openapi.json", "/api/v1/openapi.json", "/.well-known/jwks.json",
			"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server",
			"/verify-email", "/reset-password", "/accept-invitation"} {
			r, err := send("GET", p.url(path), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != 200 {
				t.Errorf("%s GET %s: %s", p.name, path, r)
			}
		}
	}
}
