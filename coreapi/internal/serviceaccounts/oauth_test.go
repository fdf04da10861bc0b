package serviceaccounts_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logging/logtest"
)

const form = "application/x-www-form-urlencoded"

// Client authentication and scope errors of the client_credentials grant
// carry RFC 6749 fields, and the right challenge.
func TestClientCredentialsErrors(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "member")
	s := e.createSecret(t, owner, a.ID)
	cc := url.Values{"grant_type": {"client_credentials"}}
	with := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}

	r := e.form(t, "/api/v1/auth/token", with("client_secret", s.ClientSecret), basic(s.ClientID, s.ClientSecret))
	oauthProblem(t, r, http.StatusBadRequest, "invalid_request")

	r = e.form(t, "/api/v1/auth/token", cc, nil)
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("no credentials: WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
	}
	r = e.form(t, "/api/v1/auth/token", cc, basic(s.ClientID, s.ClientSecret+"x"))
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("wrong Basic secret: WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
	}
	r = e.form(t, "/api/v1/auth/token", with("client_id", s.ClientID, "client_secret", "tgcs_"+strings.Repeat("A", 43)), nil)
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	if h := r.Header.Get("WWW-Authenticate"); h != "" {
		t.Errorf("body credentials: WWW-Authenticate %q, want none", h)
	}
	for name, h := range map[string]string{
		"not base64":    "Basic %%%",
		"no colon":      "Basic " + base64.StdEncoding.EncodeToString([]byte("abc")),
		"bad escape":    "Basic " + base64.StdEncoding.EncodeToString([]byte("%zz:x")),
		"unknown id":    "Basic " + base64.StdEncoding.EncodeToString([]byte("0b7e7a2c-0000-4000-8000-000000000000:"+s.ClientSecret)),
		"not a uuid id": "Basic " + base64.StdEncoding.EncodeToString([]byte("bot:"+s.ClientSecret)),
		"huge":          "Basic " + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", 600)+":x")),
	} {
		r := e.form(t, "/api/v1/auth/token", cc, http.Header{"Authorization": {h}})
		if r.Status != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
			continue
		}
		oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	}
	r = e.form(t, "/api/v1/auth/token", with("client_id", s.ClientID), nil)
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")

	// Scopes: unknown, not held, and a held subset.
	r = e.form(t, "/api/v1/auth/token", with("scope", "nope:read"), basic(s.ClientID, s.ClientSecret))
	oauthProblem(t, r, http.StatusBadRequest, "invalid_scope")
	r = e.form(t, "/api/v1/auth/token", with("scope", "users:write"), basic(s.ClientID, s.ClientSecret))
	oauthProblem(t, r, http.StatusBadRequest, "invalid_scope")
	member := e.IdentityOf(t, a.ID, owner.TenantID)
	if len(member.Permissions) == 0 {
		t.Fatal("the member role grants nothing: the scope test needs a permission")
	}
	tk := e.clientToken(t, s, member.Permissions[0]+" "+member.Permissions[0])
	if tk.Scope != member.Permissions[0] || claimsOf(t, tk.AccessToken)["scope"] != member.Permissions[0] {
		t.Fatalf("scoped token: %q / %v", tk.Scope, claimsOf(t, tk.AccessToken)["scope"])
	}
	if got := e.introspect(t, s, tk.AccessToken); got["scope"] != member.Permissions[0] {
		t.Fatalf("introspected scope %v, want %s", got["scope"], member.Permissions[0])
	}

	// A suspended tenant's client may not use the grant.
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE tenants SET status = 'suspended' WHERE id = $1`, owner.TenantID); err != nil {
		t.Fatal(err)
	}
	r = e.form(t, "/api/v1/auth/token", cc, basic(s.ClientID, s.ClientSecret))
	oauthProblem(t, r, http.StatusBadRequest, "unauthorized_client")
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE tenants SET status = 'active' WHERE id = $1`, owner.TenantID); err != nil {
		t.Fatal(err)
	}

	// Wrong secrets from one client IP lock that IP out of that client id,
	// the right secret included; another IP is not affected.
	fails := e.count(t, `SELECT count(*) FROM audit_events WHERE action = $1 AND target_id = $2`, serviceaccounts.ActionAuthFailed, a.ID)
	if fails < 2 {
		t.Fatalf("%d auth_failed audit events, want one per wrong secret", fails)
	}
	send := func(ip, secret string) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: cc.Encode(), ContentType: form,
			Header: basic(s.ClientID, secret), ClientIP: ip})
	}
	for i := range serviceaccounts.DefaultLimits().Client.N {
		if r := send("198.51.100.7", "wrong"); r.Status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i, r.Status, r.Body)
		}
	}
	r = send("198.51.100.7", s.ClientSecret)
	oauthProblem(t, r, http.StatusTooManyRequests, "temporarily_unavailable")
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if r := send("198.51.100.8", s.ClientSecret); r.Status != http.StatusOK {
		t.Fatalf("another IP: %d %s", r.Status, r.Body)
	}
}

// The existing grants' errors carry the RFC 6749 fields too.
func TestTokenEndpointErrorsCarryOAuthFields(t *testing.T) {
	e := start(t, startOpts{})
	e.owner(t, "owner@example.com")
	cases := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"no grant_type", map[string]string{"email": "owner@example.com"}, 400, "invalid_request"},
		{"unknown grant", map[string]string{"grant_type": "implicit"}, 400, "unsupported_grant_type"},
		{"password missing", map[string]string{"grant_type": "password", "email": "owner@example.com"}, 400, "invalid_request"},
		{"wrong password", map[string]string{"grant_type": "password", "email": "owner@example.com", "password": "wrong password!"}, 400, "invalid_grant"},
		{"bad tenant id", map[string]string{"grant_type": "password", "email": "owner@example.com", "password": pw, "tenant_id": "x"}, 400, "invalid_request"},
		{"refresh missing", map[string]string{"grant_type": "refresh_token"}, 400, "invalid_request"},
		{"refresh unknown", map[string]string{"grant_type": "refresh_token", "refresh_token": "nope"}, 400, "invalid_grant"},
		{"mfa_otp unknown token", map[string]string{"grant_type": "mfa_otp", "mfa_token": "nope", "code": "123456"}, 400, "invalid_grant"},
		{"oauth_handover unknown code", map[string]string{"grant_type": "oauth_handover", "code": "nope"}, 400, "invalid_grant"},
		{"unknown field", map[string]string{"grant_type": "password", "colour": "red"}, 400, "invalid_request"},
		{"wrong type", map[string]any{"grant_type": "password", "email": 5}, 400, "invalid_request"},
		{"malformed JSON", "{", 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: tc.body, ContentType: "application/json"})
			if r.Status == http.StatusOK {
				t.Fatalf("accepted: %s", r.Body)
			}
			p := oauthProblem(t, r, r.Status, tc.code)
			if r.Status != tc.status {
				t.Errorf("status %d, want %d", r.Status, tc.status)
			}
			if p.Code == "" || p.Title == "" {
				t.Errorf("problem fields lost: %+v", p)
			}
		})
	}
	r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: "grant_type=password", ContentType: "text/plain"})
	oauthProblem(t, r, http.StatusUnsupportedMediaType, "invalid_request")
}

// RFC 7662: active user and service tokens are described; expired,
// revoked, another tenant's and garbage are just inactive; the client must
// authenticate.
func TestIntrospection(t *testing.T) {
	e := start(t, startOpts{})
	ownerTk, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "introspector")
	s := e.createSecret(t, owner, a.ID)

	got := e.introspect(t, s, ownerTk.AccessToken)
	if got["active"] != true || got["sub"] != owner.UserID || got["tenant_id"] != owner.TenantID || got["principal"] != "user" ||
		got["session_id"] != owner.SessionID || got["token_type"] != "Bearer" || got["iss"] != issuer || got["aud"] != audience {
		t.Fatalf("user token: %v", got)
	}
	if got["scope"] != strings.Join(owner.Permissions, " ") || got["exp"] == nil || got["iat"] == nil {
		t.Fatalf("user token scope/times: %v (permissions %q)", got, owner.Permissions)
	}
	if _, ok := got["client_id"]; ok {
		t.Fatalf("a user token has a client_id: %v", got)
	}
	svcTk := e.clientToken(t, s, "")
	got = e.introspect(t, s, svcTk.AccessToken)
	if got["active"] != true || got["principal"] != "service" || got["client_id"] != a.ID || got["sub"] != a.ID {
		t.Fatalf("service token: %v", got)
	}
	if _, ok := got["session_id"]; ok {
		t.Fatalf("a service token has a session: %v", got)
	}

	// Expired beyond the leeway, and signed by us otherwise correctly.
	c := claimsOf(t, ownerTk.AccessToken)
	c["iat"], c["nbf"], c["exp"] = time.Now().Add(-20*time.Minute).Unix(), time.Now().Add(-20*time.Minute).Unix(), time.Now().Add(-5*time.Minute).Unix()
	payload, _ := json.Marshal(c)
	expired, err := e.ring.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	// A token whose claims are fine but lives too long is not ours either.
	c["iat"], c["nbf"], c["exp"] = time.Now().Unix(), time.Now().Unix(), time.Now().Add(48*time.Hour).Unix()
	payload, _ = json.Marshal(c)
	longLived, _ := e.ring.Sign(payload)
	c["exp"], c["iss"] = time.Now().Add(5*time.Minute).Unix(), "https://evil.example"
	payload, _ = json.Marshal(c)
	wrongIssuer, _ := e.ring.Sign(payload)
	// A client_credentials-looking token with a session is refused.
	c["iss"], c["principal"] = issuer, "service"
	payload, _ = json.Marshal(c)
	serviceWithSession, _ := e.ring.Sign(payload)
	parts := strings.Split(ownerTk.AccessToken, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x"}`)) + "." + parts[2]

	otherTk, _ := e.owner(t, "other@example.com")
	for name, tok := range map[string]string{
		"expired":              string(expired),
		"too long-lived":       string(longLived),
		"wrong issuer":         string(wrongIssuer),
		"service with session": string(serviceWithSession),
		"tampered":             tampered,
		"another tenant":       otherTk.AccessToken,
		"garbage":              "not a token",
		"three dots":           "a.b.c",
		"refresh token":        ownerTk.RefreshToken,
		"api key":              "tg_abcdefghijklmnop_" + strings.Repeat("A", 43),
		"huge":                 strings.Repeat("a.", 5000),
	} {
		r := e.form(t, "/api/v1/auth/introspect", url.Values{"token": {tok}}, basic(s.ClientID, s.ClientSecret))
		if r.Status != http.StatusOK || string(r.Body) != `{"active":false}` {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}

	// Revoked: the owner logs out; the token is refused at once.
	if r := e.Send(t, owner, http.MethodPost, "/api/v1/auth/logout", nil); r.Status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	if got := e.introspect(t, s, ownerTk.AccessToken); got["active"] != false {
		t.Fatalf("revoked session's token: %v", got)
	}

	// Client authentication is required, in any form.
	r := e.form(t, "/api/v1/auth/introspect", url.Values{"token": {svcTk.AccessToken}}, nil)
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
	}
	r = e.form(t, "/api/v1/auth/introspect", url.Values{"token": {svcTk.AccessToken}}, basic(s.ClientID, "wrong"))
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	// A user's bearer is no client authentication.
	r = e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/introspect", Body: url.Values{"token": {svcTk.AccessToken}}.Encode(),
		ContentType: form, As: owner})
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	// Body credentials and JSON work; a missing token is invalid_request.
	r = e.Send(t, nil, http.MethodPost, "/api/v1/auth/introspect", map[string]string{"token": svcTk.AccessToken, "client_id": s.ClientID, "client_secret": s.ClientSecret})
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"active":true`) {
		t.Fatalf("JSON body credentials: %d %s", r.Status, r.Body)
	}
	r = e.form(t, "/api/v1/auth/introspect", url.Values{}, basic(s.ClientID, s.ClientSecret))
	oauthProblem(t, r, http.StatusBadRequest, "invalid_request")
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
}

// RFC 7009: a refresh token's session ends (and refreshing fails); unknown
// tokens and other tenants' are 200 with nothing done; tg_ keys go to the
// revoker; access tokens are unsupported_token_type.
func TestRevocation(t *testing.T) {
	rv := &revoker{keys: map[string]string{}}
	e := start(t, startOpts{apiKeys: rv})
	ownerTk, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "revoker")
	s := e.createSecret(t, owner, a.ID)
	otherTk, other := e.owner(t, "other@example.com")
	revoke := func(tok, hint string) apitest.Response {
		v := url.Values{"token": {tok}}
		if hint != "" {
			v.Set("token_type_hint", hint)
		}
		return e.form(t, "/api/v1/auth/revoke", v, basic(s.ClientID, s.ClientSecret))
	}

	// Another tenant's refresh token: 200, and it still works.
	if r := revoke(otherTk.RefreshToken, "refresh_token"); r.Status != http.StatusOK || len(r.Body) != 0 {
		t.Fatalf("other tenant's token: %d %s", r.Status, r.Body)
	}
	r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": otherTk.RefreshToken})
	if r.Status != http.StatusOK {
		t.Fatalf("the other tenant's refresh token was revoked: %d %s", r.Status, r.Body)
	}
	_ = other

	// The hint is not trusted: a refresh token sent as access_token is
	// still found and revoked.
	if r := revoke(ownerTk.RefreshToken, "access_token"); r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	r = e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": ownerTk.RefreshToken})
	oauthProblem(t, r, http.StatusBadRequest, "invalid_grant")
	if got := e.introspect(t, s, ownerTk.AccessToken); got["active"] != false {
		t.Fatalf("the revoked session's access token: %v", got)
	}
	if n := e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
		invalidation.UserSubject(owner.UserID), invalidation.ReasonSessionRevoked); n != 1 {
		t.Errorf("outbox rows: %d, want 1", n)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = $2 AND target_id = $3 AND actor_user_id = $4`,
		owner.TenantID, serviceaccounts.ActionTokenRevoked, owner.SessionID, a.ID); n != 1 {
		t.Errorf("revocation audit events: %d, want 1", n)
	}
	// Again, and unknown tokens: 200, nothing more.
	for _, tok := range []string{ownerTk.RefreshToken, "unknown", strings.Repeat("x", 9000)} {
		if r := revoke(tok, ""); r.Status != http.StatusOK {
			t.Errorf("revoke %.20q: %d %s", tok, r.Status, r.Body)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE action = $1`, serviceaccounts.ActionTokenRevoked); n != 1 {
		t.Errorf("revocation audit events after no-ops: %d, want 1", n)
	}

	// API keys go to the revoker with the client's tenant.
	key := "tg_abcdefghijklmnop_" + strings.Repeat("K", 43)
	rv.keys[key] = owner.TenantID
	if r := revoke(key, "api_key"); r.Status != http.StatusOK {
		t.Fatalf("revoke key: %d %s", r.Status, r.Body)
	}
	if _, still := rv.keys[key]; still || !slices.Equal(rv.calls, []string{owner.TenantID + " " + key}) {
		t.Fatalf("revoker calls %q", rv.calls)
	}
	otherKey := "tg_qrstuvwxyz012345_" + strings.Repeat("Z", 43)
	rv.keys[otherKey] = "another-tenant"
	if r := revoke(otherKey, ""); r.Status != http.StatusOK {
		t.Fatalf("revoke another tenant's key: %d", r.Status)
	}
	if _, still := rv.keys[otherKey]; !still {
		t.Fatal("another tenant's key was revoked")
	}

	// A valid access token of the tenant is not revocable on its own.
	svcTk := e.clientToken(t, s, "")
	oauthProblem(t, revoke(svcTk.AccessToken, ""), http.StatusBadRequest, "unsupported_token_type")
	// Another tenant's access token: nothing to say about it.
	if r := revoke(otherTk.AccessToken, ""); r.Status != http.StatusOK {
		t.Fatalf("another tenant's access token: %d %s", r.Status, r.Body)
	}

	// No client authentication for an access token, and no token.
	r = e.form(t, "/api/v1/auth/revoke", url.Values{"token": {otherTk.AccessToken}}, nil)
	oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	oauthProblem(t, e.form(t, "/api/v1/auth/revoke", url.Values{}, basic(s.ClientID, s.ClientSecret)), http.StatusBadRequest, "invalid_request")
}

// TestRevocationByTheTokensHolder: a public client (an app a user signed
// in to) revokes its refresh token without client authentication and
// without an access token (one that expired, sent as a bearer, is no
// client authentication): the session ends, as a sign-out does, audited
// with the user as actor and announced through the outbox; the refresh
// and the session's access token stop working. Unknown, already revoked
// and other tenants' tokens (sent by a client of another tenant) get the
// very same answer and change nothing. Access tokens and API keys still
// need client authentication.
func TestRevocationByTheTokensHolder(t *testing.T) {
	rv := &revoker{keys: map[string]string{}}
	e := start(t, startOpts{apiKeys: rv})
	userTk, user := e.owner(t, "user@example.com")
	otherTk, other := e.owner(t, "other@example.com")
	a := e.createAccount(t, other, "revoker")
	s := e.createSecret(t, other, a.ID)
	revoke := func(tok string, hdr http.Header) apitest.Response {
		return e.form(t, "/api/v1/auth/revoke", url.Values{"token": {tok}}, hdr)
	}
	refresh := func(tok string) apitest.Response {
		return e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": tok})
	}
	outbox := func() int {
		return e.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`,
			invalidation.UserSubject(user.UserID), invalidation.ReasonSessionRevoked)
	}
	// The answer, whatever the token: 200, no body, the same headers
	// (no-store, as every answer of the API).
	answer := func(r apitest.Response) string {
		return strconv.Itoa(r.Status) + " " + string(r.Body) + " " + r.Header.Get("Content-Type") + " " + r.Header.Get("Cache-Control") + " " + r.Header.Get("WWW-Authenticate")
	}
	const want = "200   no-store "

	bearer := http.Header{"Authorization": {"Bearer " + userTk.AccessToken}}
	for name, r := range map[string]apitest.Response{
		"unknown":                         revoke("unknown-"+strings.Repeat("x", 36), nil),
		"unknown, with a bearer":          revoke("unknown-"+strings.Repeat("y", 36), bearer),
		"another tenant's, by its client": revoke(userTk.RefreshToken, basic(s.ClientID, s.ClientSecret)),
		"too long":                        revoke(strings.Repeat("z", 9000), nil),
	} {
		if got := answer(r); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	wantStatus := func(what string, r apitest.Response, status int) {
		t.Helper()
		if r.Status != status {
			t.Fatalf("%s: %d %s, want %d", what, r.Status, r.Body, status)
		}
	}
	if n := outbox(); n != 0 {
		t.Fatalf("%d session revocations announced before any", n)
	}
	// Nothing was revoked: the token refreshes.
	wantStatus("refresh after the no-ops", refresh(userTk.RefreshToken), http.StatusOK)
	// A client of another tenant gets the same answer as the holder, but
	// the session stays.
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, user.SessionID); n != 1 {
		t.Fatal("another tenant's client ended the session")
	}

	// The holder, with a rotated token of the chain (any names the
	// session, as for a client) and an expired access token as bearer.
	if got := answer(revoke(userTk.RefreshToken, bearer)); got != want {
		t.Fatalf("the holder's revocation: %q, want %q", got, want)
	}
	if n := e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NOT NULL AND revoked_reason = $2`,
		user.SessionID, sessions.ReasonLogout); n != 1 {
		t.Fatal("the session was not ended as a sign-out")
	}
	if n := outbox(); n != 1 {
		t.Errorf("%d session revocations announced, want 1", n)
	}
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = $2 AND target_id = $3 AND actor_user_id = $4`,
		user.TenantID, serviceaccounts.ActionTokenRevoked, user.SessionID, user.UserID); n != 1 {
		t.Errorf("revocation audit events with the user as actor: %d, want 1", n)
	}
	oauthProblem(t, refresh(userTk.RefreshToken), http.StatusBadRequest, "invalid_grant")
	// Again: the same answer, nothing more.
	if got := answer(revoke(userTk.RefreshToken, nil)); got != want {
		t.Errorf("revoked again: %q, want %q", got, want)
	}
	if n := outbox(); n != 1 {
		t.Errorf("%d session revocations announced after a repeat, want 1", n)
	}

	// Access tokens and API keys: client authentication, as before.
	oauthProblem(t, revoke(otherTk.AccessToken, nil), http.StatusUnauthorized, "invalid_client")
	key := "tg_abcdefghijklmnop_" + strings.Repeat("K", 43)
	rv.keys[key] = other.TenantID
	oauthProblem(t, revoke(key, nil), http.StatusUnauthorized, "invalid_client")
	if _, still := rv.keys[key]; !still || len(rv.calls) != 0 {
		t.Fatalf("an API key was revoked without client authentication: %q", rv.calls)
	}
	// The other tenant's owner still refreshes.
	wantStatus("the other session", refresh(otherTk.RefreshToken), http.StatusOK)
}

// TestRevocationByAPublicClientNamingItself: many OAuth libraries send a
// public client's client_id, without a secret, with every request. A
// client_id that names no service account (an app's own name, or an id of
// no account) is no client authentication: the holder's revocation ends
// the session. A client_id of a service account without its secret is
// still 401 invalid_client, and the session stays.
func TestRevocationByAPublicClientNamingItself(t *testing.T) {
	e := start(t, startOpts{})
	tkA, a := e.owner(t, "a@example.com")
	tkB, b := e.owner(t, "b@example.com")
	tkC, cu := e.owner(t, "c@example.com")
	acct := e.createAccount(t, cu, "confidential")
	e.createSecret(t, cu, acct.ID)
	live := func(sid string) bool {
		return e.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL`, sid) == 1
	}
	for _, tc := range []struct {
		name, clientID, token, session string
	}{
		{"an app's name", "my-spa", tkA.RefreshToken, a.SessionID},
		{"an id of no account", "0b0e2c38-4c55-4f4a-9b9f-1d7e1c0d2f11", tkB.RefreshToken, b.SessionID},
	} {
		r := e.form(t, "/api/v1/auth/revoke", url.Values{"token": {tc.token}, "client_id": {tc.clientID}}, nil)
		if r.Status != http.StatusOK || len(r.Body) != 0 {
			t.Fatalf("%s: %d %s, want 200 and no body", tc.name, r.Status, r.Body)
		}
		if live(tc.session) {
			t.Errorf("%s: the session is still live", tc.name)
		}
	}

	// A confidential client's id without its secret: refused, nothing
	// revoked, whatever the letter case of the id.
	for _, id := range []string{acct.ClientID, strings.ToUpper(acct.ClientID)} {
		r := e.form(t, "/api/v1/auth/revoke", url.Values{"token": {tkC.RefreshToken}, "client_id": {id}}, nil)
		oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	}
	if !live(cu.SessionID) {
		t.Fatal("a service account's client_id without a secret ended a session")
	}
}

// TestRevocationOfARefreshTokenStartingLikeAKey: a refresh token is 43
// base64url characters, "_" among them, so about one in 262,144 starts with
// "tg_", as an API key does. Such a token sent for revocation went to the
// API-key revoker, which found no key in it, and was answered 200 with its
// session left live: the client took it for revoked. Only a token in an
// API key's whole format is one now; this one ends its session.
func TestRevocationOfARefreshTokenStartingLikeAKey(t *testing.T) {
	rv := &revoker{keys: map[string]string{}}
	e := start(t, startOpts{apiKeys: rv})
	ownerTk, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "revoker")
	s := e.createSecret(t, owner, a.ID)
	// The session's refresh token is one that starts with "tg_".
	tok := "tg_" + ownerTk.RefreshToken[3:]
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE refresh_tokens SET token_hash = $1 WHERE token_hash = $2`,
		sessions.Hash(tok), sessions.Hash(ownerTk.RefreshToken)); err != nil {
		t.Fatal(err)
	}
	if r := e.form(t, "/api/v1/auth/revoke", url.Values{"token": {tok}}, basic(s.ClientID, s.ClientSecret)); r.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if len(rv.calls) != 0 {
		t.Errorf("the refresh token went to the API-key revoker: %q", rv.calls)
	}
	r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": tok})
	oauthProblem(t, r, http.StatusBadRequest, "invalid_grant")
	if n := e.count(t, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND action = $2 AND target_id = $3 AND actor_user_id = $4`,
		owner.TenantID, serviceaccounts.ActionTokenRevoked, owner.SessionID, a.ID); n != 1 {
		t.Errorf("revocation audit events: %d, want 1", n)
	}
}

// RFC 6749 section 3.1: an introspection, revocation or client_credentials
// request that names a parameter more than once, form-encoded or JSON, is
// 400 invalid_request naming it, before client authentication: nothing is
// revoked, counted against the client or audited.
func TestRepeatedParameterRefused(t *testing.T) {
	e := start(t, startOpts{})
	ownerTk, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "member")
	s := e.createSecret(t, owner, a.ID)
	q := url.QueryEscape
	creds := "&client_id=" + q(s.ClientID) + "&client_secret=" + q(s.ClientSecret)
	cases := []struct {
		name, path, body, ct string
		hdr                  http.Header
		param                string
	}{
		{"revoke token", "/api/v1/auth/revoke", "token=" + q(ownerTk.RefreshToken) + "&token=unknown", form, basic(s.ClientID, s.ClientSecret), "token"},
		{"revoke token_type_hint", "/api/v1/auth/revoke", "token=" + q(ownerTk.RefreshToken) + "&token_type_hint=refresh_token&token_type_hint=api_key", form, basic(s.ClientID, s.ClientSecret), "token_type_hint"},
		{"revoke client_secret", "/api/v1/auth/revoke", "token=" + q(ownerTk.RefreshToken) + creds + "&client_secret=wrong", form, nil, "client_secret"},
		{"revoke JSON token", "/api/v1/auth/revoke", `{"token":"` + ownerTk.RefreshToken + `","token":"unknown"}`, "application/json", basic(s.ClientID, s.ClientSecret), "token"},
		{"introspect token", "/api/v1/auth/introspect", "token=" + q(ownerTk.AccessToken) + "&token=unknown", form, basic(s.ClientID, s.ClientSecret), "token"},
		{"introspect client_id", "/api/v1/auth/introspect", "token=" + q(ownerTk.AccessToken) + creds + "&client_id=other", form, nil, "client_id"},
		{"introspect JSON client_secret", "/api/v1/auth/introspect", `{"token":"x","client_id":"` + s.ClientID + `","client_secret":"wrong","Client_Secret":"` + s.ClientSecret + `"}`, "application/json", nil, "client_secret"},
		{"client_credentials scope", "/api/v1/auth/token", "grant_type=client_credentials&scope=users%3Aread&scope=users%3Awrite", form, basic(s.ClientID, s.ClientSecret), "scope"},
		{"client_credentials client_id", "/api/v1/auth/token", "grant_type=client_credentials" + creds + "&client_id=other", form, nil, "client_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: tc.path, Body: tc.body, ContentType: tc.ct, Header: tc.hdr})
			p := oauthProblem(t, r, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(p.OAuthErrorDescription, tc.param) || len(p.Errors) != 1 || p.Errors[0].Field != tc.param {
				t.Errorf("want invalid_request naming %s, got %s", tc.param, r.Body)
			}
			if r.Stats.Queries != 0 {
				t.Errorf("ran %d queries, want the request refused before client authentication", r.Stats.Queries)
			}
		})
	}
	// Nothing was revoked: the owner's session still refreshes.
	r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": ownerTk.RefreshToken})
	if r.Status != http.StatusOK {
		t.Fatalf("refresh after the refused revocations: %d %s", r.Status, r.Body)
	}
}

// TestContentTypeParsed: the token, introspection and revocation
// endpoints read the Content-Type as mime.ParseMediaType does: a
// malformed one (a parameter without a value, an empty one) or a charset
// other than UTF-8 is 415 unsupported_media_type saying which, before any
// work; the form type with charset=utf-8, in any case, is read as the
// form. The type before the first ";" was taken, whatever followed.
func TestContentTypeParsed(t *testing.T) {
	e := start(t, startOpts{})
	ownerTk, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "member")
	s := e.createSecret(t, owner, a.ID)
	bodies := map[string]string{
		"/api/v1/auth/token":      "grant_type=client_credentials",
		"/api/v1/auth/introspect": "token=" + url.QueryEscape(ownerTk.AccessToken),
		"/api/v1/auth/revoke":     "token=unknown",
	}
	for _, path := range []string{"/api/v1/auth/token", "/api/v1/auth/introspect", "/api/v1/auth/revoke"} {
		for _, tc := range []struct{ ct, detail string }{
			{form + "; charset", "malformed Content-Type"},
			{form + ";;", "malformed Content-Type"},
			{form + "; ; charset=utf-8", "malformed Content-Type"},
			{form + "; charset=utf-8; charset=latin1", "malformed Content-Type"},
			{form + " x", "malformed Content-Type"},
			{form + "; charset=iso-8859-1", "charset"},
			{"application/json; charset=latin1", "charset"},
		} {
			t.Run(path+" "+tc.ct, func(t *testing.T) {
				r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: path, Body: bodies[path], ContentType: tc.ct,
					Header: basic(s.ClientID, s.ClientSecret)})
				apitest.WantProblem(t, r, http.StatusUnsupportedMediaType, "unsupported_media_type")
				if p := r.Problem(t); !strings.Contains(p.Detail, tc.detail) || p.OAuthError != "invalid_request" {
					t.Errorf("problem %+v, want invalid_request saying %q", p, tc.detail)
				}
				if r.Stats.Queries != 0 {
					t.Errorf("ran %d queries, want the request refused before any work", r.Stats.Queries)
				}
			})
		}
		for _, ct := range []string{form + "; charset=utf-8", "Application/X-WWW-Form-Urlencoded;Charset=UTF-8", form + `; charset="Utf-8"`} {
			t.Run(path+" "+ct, func(t *testing.T) {
				r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: path, Body: bodies[path], ContentType: ct,
					Header: basic(s.ClientID, s.ClientSecret)})
				apitest.WantStatus(t, r, http.StatusOK)
			})
		}
	}
}

// Without an API-key revoker, tg_ tokens are unknown tokens: 200.
func TestRevocationWithoutAPIKeys(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "revoker")
	s := e.createSecret(t, owner, a.ID)
	r := e.form(t, "/api/v1/auth/revoke", url.Values{"token": {"tg_abcdefghijklmnop_" + strings.Repeat("K", 43)}}, basic(s.ClientID, s.ClientSecret))
	if r.Status != http.StatusOK {
		t.Fatalf("tg_ key without a revoker: %d %s", r.Status, r.Body)
	}
}

type metadata struct {
	Issuer                 string   `json:"issuer"`
	JWKSURI                string   `json:"jwks_uri"`
	TokenEndpoint          string   `json:"token_endpoint"`
	IntrospectionEndpoint  string   `json:"introspection_endpoint"`
	RevocationEndpoint     string   `json:"revocation_endpoint"`
	GrantTypes             []string `json:"grant_types_supported"`
	ResponseTypes          []string `json:"response_types_supported"`
	TokenAuthMethods       []string `json:"token_endpoint_auth_methods_supported"`
	IntrospectionAuth      []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationAuth         []string `json:"revocation_endpoint_auth_methods_supported"`
	Scopes                 []string `json:"scopes_supported"`
	AccessTokenSigningAlgs []string `json:"access_token_signing_alg_values_supported"`
}

func TestDiscovery(t *testing.T) {
	e := start(t, startOpts{})
	r := e.Get(t, nil, serviceaccounts.MetadataPath)
	if r.Status != http.StatusOK || r.Header.Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("metadata: %d %v", r.Status, r.Header)
	}
	var md metadata
	r.JSON(t, &md)
	if md.Issuer != issuer || md.JWKSURI != base+"/.well-known/jwks.json" || md.TokenEndpoint != base+"/api/v1/auth/token" ||
		md.IntrospectionEndpoint != base+"/api/v1/auth/introspect" || md.RevocationEndpoint != base+"/api/v1/auth/revoke" {
		t.Fatalf("metadata URLs: %+v", md)
	}
	if !slices.Contains(md.GrantTypes, "client_credentials") || !slices.Contains(md.GrantTypes, "refresh_token") || len(md.ResponseTypes) != 0 {
		t.Fatalf("grants %q, response types %q", md.GrantTypes, md.ResponseTypes)
	}
	want := []string{"client_secret_basic", "client_secret_post"}
	public := append(slices.Clip(want), "none")
	if !slices.Equal(md.TokenAuthMethods, public) || !slices.Equal(md.IntrospectionAuth, want) || !slices.Equal(md.RevocationAuth, public) {
		t.Fatalf("auth methods: %+v", md)
	}
	if !slices.Equal(md.Scopes, permissions.Builtin().Names()) || !slices.Equal(md.AccessTokenSigningAlgs, []string{"EdDSA"}) {
		t.Fatalf("scopes %q, algs %q", md.Scopes, md.AccessTokenSigningAlgs)
	}
	r2 := e.Get(t, nil, serviceaccounts.OIDCMetadataPath)
	if r2.Status != http.StatusOK || string(r2.Body) != string(r.Body) {
		t.Fatalf("openid-configuration differs: %d %s", r2.Status, r2.Body)
	}
}

// A standard client library finds the token endpoint in the metadata of a
// running core, obtains a token, and understands the errors.
func TestStandardClientLibrary(t *testing.T) {
	// The metadata names PUBLIC_BASE_URL: here a plain reverse proxy in
	// front of the core, known before the core starts.
	var target atomic.Pointer[url.URL]
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httputil.NewSingleHostReverseProxy(target.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	e := start(t, startOpts{baseURL: front.URL})
	u, err := url.Parse(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	target.Store(u)
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "library", "member")
	s := e.createSecret(t, owner, a.ID)

	resp, err := http.Get(front.URL + serviceaccounts.MetadataPath)
	if err != nil {
		t.Fatal(err)
	}
	var md metadata
	err = json.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	if err != nil || md.TokenEndpoint != front.URL+"/api/v1/auth/token" {
		t.Fatalf("metadata: %v %+v", err, md)
	}
	member := e.IdentityOf(t, a.ID, owner.TenantID)
	ctx := context.Background()
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		cfg := clientcredentials.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, TokenURL: md.TokenEndpoint,
			Scopes: member.Permissions[:1], AuthStyle: style}
		tok, err := cfg.Token(ctx)
		if err != nil {
			t.Fatalf("auth style %d: %v", style, err)
		}
		if tok.TokenType != "Bearer" || tok.RefreshToken != "" || tok.Expiry.Before(time.Now().Add(10*time.Minute)) ||
			tok.Extra("scope") != member.Permissions[0] || tok.Extra("tenant_id") != owner.TenantID {
			t.Fatalf("token: %+v", tok)
		}
		if got := e.introspect(t, s, tok.AccessToken); got["active"] != true || got["client_id"] != a.ID {
			t.Fatalf("introspection of the library's token: %v", got)
		}
	}
	bad := clientcredentials.Config{ClientID: s.ClientID, ClientSecret: "wrong", TokenURL: md.TokenEndpoint, AuthStyle: oauth2.AuthStyleInHeader}
	_, err = bad.Token(ctx)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" || re.ErrorDescription == "" || re.Response.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong secret: %v", err)
	}
	scoped := clientcredentials.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, TokenURL: md.TokenEndpoint, Scopes: []string{"tenant:write"}}
	_, err = scoped.Token(ctx)
	if !errors.As(err, &re) || re.ErrorCode != "invalid_scope" {
		t.Fatalf("a scope not held: %v", err)
	}
}

// TestBasicWithClientIDInBody: a client that authenticates with HTTP Basic
// may also name itself with client_id in the body (RFC 6749 section
// 3.2.1; several client libraries always send it): that is one
// authentication method, not two. A client_id that differs from the
// Basic one, or a client_secret beside Basic, is invalid_request.
func TestBasicWithClientIDInBody(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "member")
	s := e.createSecret(t, owner, a.ID)
	other := e.createAccount(t, owner, "other", "member")

	r := e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {s.ClientID}}, basic(s.ClientID, s.ClientSecret))
	if r.Status != http.StatusOK {
		t.Fatalf("Basic plus the same client_id in the body: %d %s, want 200", r.Status, r.Body)
	}
	var tk tokens
	r.JSON(t, &tk)
	r = e.form(t, "/api/v1/auth/introspect", url.Values{"token": {tk.AccessToken}, "client_id": {s.ClientID}}, basic(s.ClientID, s.ClientSecret))
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"active":true`) {
		t.Fatalf("introspection with Basic plus the same client_id: %d %s", r.Status, r.Body)
	}
	r = e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {other.ID}}, basic(s.ClientID, s.ClientSecret))
	oauthProblem(t, r, http.StatusBadRequest, "invalid_request")
	r = e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {s.ClientID}, "client_secret": {s.ClientSecret}}, basic(s.ClientID, s.ClientSecret))
	oauthProblem(t, r, http.StatusBadRequest, "invalid_request")
}

// The client_credentials failure limit counts an IPv6 client by its /64:
// failures from one address of the network lock out its neighbour, not
// another /64.
func TestClientCredentialsLimitGroupsIPv6By64(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "member")
	s := e.createSecret(t, owner, a.ID)
	cc := url.Values{"grant_type": {"client_credentials"}}
	send := func(ip, secret string) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: cc.Encode(), ContentType: form,
			Header: basic(s.ClientID, secret), ClientIP: ip})
	}
	for i := range serviceaccounts.DefaultLimits().Client.N {
		if r := send("2001:db8:1:2::1", "wrong"); r.Status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i, r.Status, r.Body)
		}
	}
	r := send("2001:db8:1:2::2", s.ClientSecret)
	oauthProblem(t, r, http.StatusTooManyRequests, "temporarily_unavailable")
	if r := send("2001:db8:1:3::1", s.ClientSecret); r.Status != http.StatusOK {
		t.Fatalf("another /64: %d %s", r.Status, r.Body)
	}
}

// TestIntrospectionOfAnExpiredSession: introspection is stricter on
// sessions than the proxy: a user's token is inactive once its session has
// ended, by its expiry as by a revocation (an access token issued by the
// last refresh before the session's expiry outlives it by up to its
// lifetime at the proxy).
func TestIntrospectionOfAnExpiredSession(t *testing.T) {
	e := start(t, startOpts{})
	ownerTk, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "introspector")
	s := e.createSecret(t, owner, a.ID)
	if got := e.introspect(t, s, ownerTk.AccessToken); got["active"] != true {
		t.Fatalf("live session's token: %v", got)
	}
	if _, err := e.DB.Pool.Exec(context.Background(), `UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1`, owner.SessionID); err != nil {
		t.Fatal(err)
	}
	if got := e.introspect(t, s, ownerTk.AccessToken); got["active"] != false {
		t.Fatalf("expired session's token: %v", got)
	}
}

// TestIntrospectionUnderTheMFAPolicy: a tenant that requires a second
// factor confines a member who has none to enrolling one (the proxy
// answers 403 mfa_enrollment_required on every other route), so
// introspection, the same checks for an app that asks coreapi instead,
// answers such a member's token inactive: it used to describe it active
// with every permission of the member's roles. A member with an active
// factor, and a service account (which has none to enrol), are described
// as before, and so is the member once the policy is lifted.
func TestIntrospectionUnderTheMFAPolicy(t *testing.T) {
	e := start(t, startOpts{})
	ownerTk, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "introspector")
	s := e.createSecret(t, owner, a.ID)
	svcTk := e.clientToken(t, s, "")
	policy := func(on bool) {
		t.Helper()
		if r := e.Send(t, owner, http.MethodPatch, "/api/v1/tenant", map[string]any{"require_mfa": on}); r.Status != http.StatusOK {
			t.Fatalf("require_mfa %v: %d %s", on, r.Status, r.Body)
		}
	}
	policy(true)
	if got := e.introspect(t, s, ownerTk.AccessToken); got["active"] != false {
		t.Fatalf("token of a member without a second factor under the policy: %v", got)
	}
	if got := e.introspect(t, s, svcTk.AccessToken); got["active"] != true {
		t.Fatalf("service account's token under the policy: %v", got)
	}
	if _, err := e.DB.Pool.Exec(context.Background(),
		`INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, confirmed_at) VALUES ($1, 'k', '\x00', 'active', now())`, owner.UserID); err != nil {
		t.Fatal(err)
	}
	if got := e.introspect(t, s, ownerTk.AccessToken); got["active"] != true || got["scope"] != strings.Join(owner.Permissions, " ") {
		t.Fatalf("token of a member with a second factor under the policy: %v", got)
	}
	// Lifted by the owner, who holds a factor (one the policy confines
	// may not lift it) and has just given it on the session.
	if _, err := e.DB.Pool.Exec(context.Background(),
		`UPDATE sessions SET amr = '{pwd,otp}', auth_time = now() WHERE id = $1`, owner.SessionID); err != nil {
		t.Fatal(err)
	}
	policy(false)
	if _, err := e.DB.Pool.Exec(context.Background(), `DELETE FROM mfa_totp WHERE user_id = $1`, owner.UserID); err != nil {
		t.Fatal(err)
	}
	if got := e.introspect(t, s, ownerTk.AccessToken); got["active"] != true {
		t.Fatalf("token once the policy is lifted: %v", got)
	}
}

// TestBurstOfRightSecretsLeavesTheClientIn: client authentications are
// reserved before the secret is checked, so more at once than
// Limits.Client.N are refused beyond it (429); but only failures may add
// up. A gateway introspecting tokens in parallel used to find itself
// locked out of its own client id for the rest of the 15 minutes, without
// a single wrong secret: every refused reservation stayed counted, and
// the right secrets released only their own.
func TestBurstOfRightSecretsLeavesTheClientIn(t *testing.T) {
	e := start(t, startOpts{})
	ownerTk, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "gateway")
	s := e.createSecret(t, owner, a.ID)
	const ip = "198.51.100.30"
	introspect := func(secret string) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/introspect", ContentType: form,
			Body: url.Values{"token": {ownerTk.AccessToken}}.Encode(), Header: basic(s.ClientID, secret), ClientIP: ip})
	}
	const failures = 5 // and Limits.Client.N - failures in flight: the server's pool (8) keeps room for the refused ones
	for range failures {
		oauthProblem(t, introspect("wrong"), http.StatusUnauthorized, "invalid_client")
	}
	// Hold the right secrets in flight: their look-up stamps the secret's
	// last use, which waits for this lock.
	ctx := context.Background()
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE service_account_secrets SET last_used_at = NULL WHERE user_id = $1`, a.ID); err != nil {
		t.Fatal(err)
	}
	tx, err := e.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // committed below
	if _, err := tx.Exec(ctx, `SELECT 1 FROM service_account_secrets WHERE user_id = $1 FOR UPDATE`, a.ID); err != nil {
		t.Fatal(err)
	}
	inFlight := serviceaccounts.DefaultLimits().Client.N - failures
	statuses := make(chan int, inFlight)
	for range inFlight {
		go func() { statuses <- introspect(s.ClientSecret).Status }()
	}
	const qWaiting = `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`
	for deadline := time.Now().Add(10 * time.Second); e.count(t, qWaiting) < inFlight; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d introspections wait on the secret", inFlight)
		}
	}
	// The limit is reached: more at once are refused, unchecked.
	for range serviceaccounts.DefaultLimits().Client.N {
		oauthProblem(t, introspect(s.ClientSecret), http.StatusTooManyRequests, "temporarily_unavailable")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for range inFlight {
		if st := <-statuses; st != http.StatusOK {
			t.Fatalf("introspection in flight: %d, want 200", st)
		}
	}
	// Only the wrong secrets count: the client is in.
	for i := range serviceaccounts.DefaultLimits().Client.N - failures {
		if r := introspect(s.ClientSecret); r.Status != http.StatusOK {
			t.Fatalf("introspection %d after the burst: %d %s, want 200", i+1, r.Status, r.Body)
		}
	}
}

// TestClientLockRetryAfterRoundsUp: the Retry-After of a locked client is
// the time left in the window rounded up, as every other 429 of coreapi
// says it: rounded to the nearest second, 1.3 s left was "1", and a client
// that waited that long was refused again.
func TestClientLockRetryAfterRoundsUp(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "member")
	s := e.createSecret(t, owner, a.ID)
	cc := url.Values{"grant_type": {"client_credentials"}}
	send := func(secret string) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: cc.Encode(), ContentType: form,
			Header: basic(s.ClientID, secret), ClientIP: "198.51.100.31"})
	}
	for range serviceaccounts.DefaultLimits().Client.N {
		oauthProblem(t, send("wrong"), http.StatusUnauthorized, "invalid_client")
	}
	// The client's counter (not the account's audit budget, which counted
	// the same failures) has 1.3 s left in its window.
	key := ratelimit.Key("client_credentials", strings.ToLower(s.ClientID), ratelimit.ClientKey("198.51.100.31"))
	tag, err := e.DB.Pool.Exec(context.Background(), `UPDATE rate_limits SET window_start = now() - make_interval(secs => $1) + interval '1.3 seconds'
WHERE key = $3 AND hits >= $2`,
		serviceaccounts.DefaultLimits().Client.Window.Seconds(), serviceaccounts.DefaultLimits().Client.N, key)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("move the window: %v, %d rows", err, tag.RowsAffected())
	}
	r := send(s.ClientSecret)
	oauthProblem(t, r, http.StatusTooManyRequests, "temporarily_unavailable")
	if got := r.Header.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q with 1.3 s left, want 2", got)
	}
}

// TestMadeUpClientIDsBoundedPerAddress: failed client authentications are
// counted per client IP too, whatever client ids they name. The counter
// per (client id, client IP) is a row of rate_limits kept two days after
// its window started, so a client naming a new client id in each request,
// which that counter never stops, added a row with each, as fast as it
// could send them (through the proxy: the token endpoint is public). Beyond
// Limits.ClientIP.N the address gets 429 and no row is written; another
// address, and the right secret from it, are not affected.
func TestMadeUpClientIDsBoundedPerAddress(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "member")
	s := e.createSecret(t, owner, a.ID)
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	send := func(id, secret, ip string) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: body, ContentType: form,
			Header: basic(id, secret), ClientIP: ip})
	}
	const qRows = `SELECT count(*) FROM rate_limits`
	before := e.count(t, qRows)
	n := serviceaccounts.DefaultLimits().ClientIP.N * 3
	refused := 0
	for i := range n {
		r := send(fmt.Sprintf("0b7e7a2c-0000-4000-8000-%012d", i), "tgcs_"+strings.Repeat("A", 43), "2001:db8:7::"+strconv.Itoa(i+1))
		switch r.Status {
		case http.StatusUnauthorized:
			oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
		case http.StatusTooManyRequests:
			oauthProblem(t, r, http.StatusTooManyRequests, "temporarily_unavailable")
			if r.Header.Get("Retry-After") == "" {
				t.Fatalf("429 without Retry-After")
			}
			refused++
		default:
			t.Fatalf("made-up client id %d: %d %s", i, r.Status, r.Body)
		}
	}
	// One address (a /64): its own counter and one per client id it was
	// let to try.
	if got, most := e.count(t, qRows)-before, serviceaccounts.DefaultLimits().ClientIP.N+1; got > most {
		t.Fatalf("%d made-up client ids from one address left %d rate_limits rows, want at most %d", n, got, most)
	}
	if want := n - serviceaccounts.DefaultLimits().ClientIP.N; refused != want {
		t.Errorf("%d of %d made-up client ids refused 429, want %d", refused, n, want)
	}
	// Another address is not affected.
	if r := send(s.ClientID, s.ClientSecret, "198.51.100.40"); r.Status != http.StatusOK {
		t.Fatalf("right secret from another address: %d %s", r.Status, r.Body)
	}
	// Right secrets give their reservation back: they never add up.
	for i := range serviceaccounts.DefaultLimits().ClientIP.N + 5 {
		if r := send(s.ClientID, s.ClientSecret, "198.51.100.41"); r.Status != http.StatusOK {
			t.Fatalf("right secret %d from one address: %d %s", i+1, r.Status, r.Body)
		}
	}
}

// TestClientRefusalWarningsBounded: the warnings about refused client
// authentications are at most RefusalLogsPerSecond a second, then one
// line counting those left out. A client whose address is locked out
// wrote a "client authentication locked" warning with each request, as
// fast as it sent them, which LOG_LEVEL=warn (no access lines) did not
// stop. The answers stay 429. No request follows the burst: the count
// still comes.
func TestClientRefusalWarningsBounded(t *testing.T) {
	logs := &testkit.LogBuffer{}
	e := start(t, startOpts{logs: logs})
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	const ip = "198.51.100.50"
	send := func(i int) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: body, ContentType: form,
			Header: basic(fmt.Sprintf("0b7e7a2c-0000-4000-8000-%012d", i), "wrong"), ClientIP: ip})
	}
	for i := range serviceaccounts.DefaultLimits().ClientIP.N {
		oauthProblem(t, send(i), http.StatusUnauthorized, "invalid_client")
	}
	n := 10 * serviceaccounts.RefusalLogsPerSecond
	start := time.Now()
	for i := range n {
		oauthProblem(t, send(i), http.StatusTooManyRequests, "temporarily_unavailable")
	}
	secs := int(time.Now().Unix()-start.Unix()) + 1 // the seconds they were sent in
	got := strings.Count(logs.String(), `"msg":"client authentication locked"`)
	if most := secs * serviceaccounts.RefusalLogsPerSecond; got > most || got == 0 {
		t.Fatalf("%d locked-out requests in under %d s wrote %d warnings, want 1 to %d", n, secs, got, most)
	}
	// A line says how many went unlogged, about a second after the burst
	// when no later refusal comes to take the count.
	eventually.Within(t, 3*time.Second, func() error {
		if !strings.Contains(logs.String(), `"msg":"client authentication refusals not logged"`) {
			return fmt.Errorf("no line counting the refusals not logged:\n%s", logs.String())
		}
		return nil
	})
}

// TestClientRefusalWarningsCountedAtShutdown: the count of the refusal
// warnings a burst left out waited for a timer about a second after it,
// which a coreapi stopping sooner wrote after its last line, or never.
// The server's Shutdown writes it before it returns.
func TestClientRefusalWarningsCountedAtShutdown(t *testing.T) {
	logs := &testkit.LogBuffer{}
	e := start(t, startOpts{logs: logs})
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	const ip = "198.51.100.51"
	send := func(i int) apitest.Response {
		return e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: body, ContentType: form,
			Header: basic(fmt.Sprintf("0b7e7a2c-0000-4000-8000-%012d", i), "wrong"), ClientIP: ip})
	}
	for i := range serviceaccounts.DefaultLimits().ClientIP.N {
		oauthProblem(t, send(i), http.StatusUnauthorized, "invalid_client")
	}
	// Just after a second begins, so that the burst's count is pending
	// when the server stops.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
	n := 3 * serviceaccounts.RefusalLogsPerSecond
	for i := range n {
		oauthProblem(t, send(i), http.StatusTooManyRequests, "temporarily_unavailable")
	}
	if err := e.Server.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines, counted := logtest.CountLines(logs.String(), "client authentication refusals not logged", "client authentication locked")
	if lines+counted != n || counted == 0 {
		t.Fatalf("when Shutdown returned: %d warnings + %d counted unlogged, want every one of the %d, some counted", lines, counted, n)
	}
}

// TestAuthFailureAuditBounded: wrong secrets for one service account are
// audited at most Limits.AuditFailures.N times a window, however many client
// IPs send them. Limits.Client bounds each IP only, so a client with many
// addresses wrote an audit event into the account's tenant for every one,
// without end. The answers stay 401 invalid_client.
func TestAuthFailureAuditBounded(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "bot", "member")
	s := e.createSecret(t, owner, a.ID)
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	n := serviceaccounts.DefaultLimits().AuditFailures.N + 5
	for i := range n {
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: body, ContentType: form,
			Header: basic(s.ClientID, "wrong"), ClientIP: "2001:db8:" + strconv.Itoa(i+1) + "::1"})
		oauthProblem(t, r, http.StatusUnauthorized, "invalid_client")
	}
	if got := e.count(t, `SELECT count(*) FROM audit_events WHERE action = $1 AND target_id = $2`,
		serviceaccounts.ActionAuthFailed, a.ID); got != serviceaccounts.DefaultLimits().AuditFailures.N {
		t.Fatalf("%d auth_failed events after %d wrong secrets from as many addresses, want %d", got, n, serviceaccounts.DefaultLimits().AuditFailures.N)
	}
	// The right secret still works from anywhere.
	if tk := e.clientToken(t, s, ""); tk.AccessToken == "" {
		t.Fatal("no token with the right secret")
	}
}

// TestScopeSyntax: scope tokens are separated by U+0020 only and made of
// %x21 / %x23-5B / %x5D-7E (RFC 6749 section 3.3). A tab, a line break
// or a Unicode space (NBSP, NEL, IDEOGRAPHIC SPACE), which strings.Fields
// took for separators and so granted the permissions on either side, is
// 400 invalid_scope naming the character, and no token is issued;
// repeated, leading and trailing spaces are still only separators.
func TestScopeSyntax(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "ci", "admin")
	s := e.createSecret(t, owner, a.ID)
	held := e.IdentityOf(t, a.ID, owner.TenantID).Permissions
	if len(held) < 2 {
		t.Fatalf("the admin role grants %q: the test needs two permissions", held)
	}
	p0, p1 := held[0], held[1]
	for _, sep := range []string{"\u00a0", "\u0085", "\u3000", "\t", "\n", "\v"} {
		v := url.Values{"grant_type": {"client_credentials"}, "scope": {p0 + sep + p1}}
		r := e.form(t, "/api/v1/auth/token", v, basic(s.ClientID, s.ClientSecret))
		if r.Status != http.StatusBadRequest {
			t.Errorf("separator %U: %d %s", []rune(sep)[0], r.Status, r.Body)
			continue
		}
		p := oauthProblem(t, r, http.StatusBadRequest, "invalid_scope")
		if want := fmt.Sprintf("%U", []rune(sep)[0]); !strings.Contains(p.OAuthErrorDescription, want) {
			t.Errorf("separator %s: description %q does not name it", want, p.OAuthErrorDescription)
		}
	}
	for _, bad := range []string{`"` + p0 + `"`, p0 + `\`, "é"} {
		v := url.Values{"grant_type": {"client_credentials"}, "scope": {bad}}
		oauthProblem(t, e.form(t, "/api/v1/auth/token", v, basic(s.ClientID, s.ClientSecret)), http.StatusBadRequest, "invalid_scope")
	}
	want := []string{p0, p1}
	slices.Sort(want)
	if tk := e.clientToken(t, s, "  "+p1+"   "+p0+" "); tk.Scope != strings.Join(want, " ") {
		t.Fatalf("scope %q, want %q", tk.Scope, strings.Join(want, " "))
	}
}

// TestIntrospectionReadsScopeAsIssued: introspection splits a token's
// scope on U+0020 only, as the grant writes it and the proxy reads it; a
// token whose scope holds another separator is no token coreapi issued,
// and is inactive rather than read as two permissions.
func TestIntrospectionReadsScopeAsIssued(t *testing.T) {
	e := start(t, startOpts{})
	_, owner := e.owner(t, "owner@example.com")
	a := e.createAccount(t, owner, "ci", "admin")
	s := e.createSecret(t, owner, a.ID)
	held := e.IdentityOf(t, a.ID, owner.TenantID).Permissions
	if len(held) < 2 {
		t.Fatalf("the admin role grants %q: the test needs two permissions", held)
	}
	tk := e.clientToken(t, s, held[0]+" "+held[1])
	resign := func(scope string) string {
		parts := strings.Split(tk.AccessToken, ".")
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var claims map[string]any
		if err := json.Unmarshal(payload, &claims); err != nil {
			t.Fatal(err)
		}
		claims["scope"] = scope
		payload, _ = json.Marshal(claims)
		signed, err := e.ring.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		return string(signed)
	}
	if got := e.introspect(t, s, resign(held[0]+"  "+held[1])); got["active"] != true {
		t.Fatalf("a token with its scope as issued, spaces doubled: %v", got)
	}
	for _, sep := range []string{"\u00a0", "\t"} {
		if got := e.introspect(t, s, resign(held[0]+sep+held[1])); got["active"] != false {
			t.Errorf("scope separated by %U: %v", []rune(sep)[0], got)
		}
	}
}
