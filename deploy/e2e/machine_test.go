package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// metadataDoc is the part of the authorization server metadata the suite
// uses.
type metadataDoc struct {
	Issuer                string `json:"issuer"`
	TokenEndpoint         string `json:"token_endpoint"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
	RevocationEndpoint    string `json:"revocation_endpoint"`
}

// getJSON fetches target with hc into v (when it answers 200).
func getJSON(t *testing.T, hc *http.Client, target string, v any) int {
	t.Helper()
	resp, err := hc.Get(target)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", target, err, b)
		}
	}
	return resp.StatusCode
}

// postForm posts a form with HTTP Basic client credentials.
func postForm(t *testing.T, target, id, secret string, vals url.Values) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(vals.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Client credentials end to end: a service account made through proxy A;
// a standard client library discovers the token endpoint from the
// metadata served through the proxy, obtains tokens and calls protected
// routes of coreapi and of the app through proxy B (as principal
// service, narrowed by scope); introspection and revocation through the
// proxies; a deleted secret ends the account's tokens at both proxies.
func TestClientCredentialsThroughTheProxies(t *testing.T) {
	owner := signup(t, sys.proxyA)
	r := call(t, "POST", sys.proxyA.url("/api/v1/service-accounts"), owner.Tokens.AccessToken, map[string]any{"name": "e2e", "roles": []string{"member"}})
	expect(t, r, http.StatusCreated)
	acc := decode[struct{ ID string }](t, r)
	r = call(t, "POST", sys.proxyA.url("/api/v1/service-accounts/"+acc.ID+"/secrets"), owner.Tokens.AccessToken, nil)
	expect(t, r, http.StatusCreated)
	sec := decode[struct {
		ID           string `json:"id"`
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}](t, r)

	var md metadataDoc
	if code := getJSON(t, http.DefaultClient, sys.proxyB.url("/.well-known/oauth-authorization-server"), &md); code != http.StatusOK {
		t.Fatalf("metadata through proxy B: %d", code)
	}
	var oidc metadataDoc
	if code := getJSON(t, http.DefaultClient, sys.proxyA.url("/.well-known/openid-configuration"), &oidc); code != http.StatusOK || oidc != md {
		t.Fatalf("openid-configuration: %d %+v, want %+v", code, oidc, md)
	}
	// PUBLIC_BASE_URL is proxy A's address in this suite.
	if md.Issuer != issuer || md.TokenEndpoint != sys.proxyA.url("/api/v1/auth/token") {
		t.Fatalf("metadata %+v", md)
	}

	ctx := context.Background()
	cfg := clientcredentials.Config{ClientID: sec.ClientID, ClientSecret: sec.ClientSecret, TokenURL: md.TokenEndpoint}
	tok, err := cfg.Token(ctx)
	if err != nil {
		t.Fatalf("client credentials through proxy A: %v", err)
	}
	parts := strings.Split(tok.AccessToken, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || len(parts) != 3 {
		t.Fatalf("access token %q", tok.AccessToken)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil || c["sub"] != acc.ID || c["tid"] != owner.TenantID || c["principal"] != "service" || c["sid"] != nil {
		t.Fatalf("claims %s", payload)
	}
	hc := cfg.Client(ctx)
	if code := getJSON(t, hc, sys.proxyB.url("/notes"), nil); code != http.StatusOK {
		t.Fatalf("GET /notes through proxy B: %d", code)
	}
	var tenant struct{ ID string }
	if code := getJSON(t, hc, sys.proxyB.url("/api/v1/tenant"), &tenant); code != http.StatusOK || tenant.ID != owner.TenantID {
		t.Fatalf("GET /api/v1/tenant through proxy B: %d %+v", code, tenant)
	}
	// The member role has no notes:write.
	if rr := call(t, "POST", sys.proxyB.url("/notes"), tok.AccessToken, `{"text":"x"}`); rr.Status != http.StatusForbidden {
		t.Fatalf("POST /notes without notes:write: %s", rr)
	}
	// The proxy forwarded the service principal: the app's identity check
	// sees a service account writing nothing, and coreapi refuses it the
	// routes of service-account management.
	if rr := call(t, "POST", sys.proxyB.url("/api/v1/service-accounts"), tok.AccessToken, map[string]any{"name": "x"}); rr.Status != http.StatusForbidden {
		t.Fatalf("a service account creating one: %s", rr)
	}

	// A token narrowed to notes:read loses tenant:read at the proxy.
	scoped := clientcredentials.Config{ClientID: sec.ClientID, ClientSecret: sec.ClientSecret, TokenURL: md.TokenEndpoint, Scopes: []string{"notes:read"}}
	shc := scoped.Client(ctx)
	if code := getJSON(t, shc, sys.proxyB.url("/notes"), nil); code != http.StatusOK {
		t.Fatalf("scoped GET /notes: %d", code)
	}
	if code := getJSON(t, shc, sys.proxyB.url("/api/v1/tenant"), nil); code != http.StatusForbidden {
		t.Fatalf("scoped GET /api/v1/tenant: %d, want 403", code)
	}

	// A wrong secret: the library reads the RFC 6749 error.
	bad := clientcredentials.Config{ClientID: sec.ClientID, ClientSecret: "tgcs_wrong", TokenURL: md.TokenEndpoint}
	_, err = bad.Token(ctx)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" || re.Response.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %v", err)
	}

	// Introspection through proxy B: the service token and the owner's.
	rr := postForm(t, sys.proxyB.url("/api/v1/auth/introspect"), sec.ClientID, sec.ClientSecret, url.Values{"token": {tok.AccessToken}})
	expect(t, rr, http.StatusOK)
	in := decode[map[string]any](t, rr)
	if in["active"] != true || in["principal"] != "service" || in["client_id"] != acc.ID || in["tenant_id"] != owner.TenantID {
		t.Fatalf("introspection: %v", in)
	}
	rr = postForm(t, sys.proxyB.url("/api/v1/auth/introspect"), sec.ClientID, sec.ClientSecret, url.Values{"token": {owner.Tokens.AccessToken}})
	if in := decode[map[string]any](t, rr); in["active"] != true || in["principal"] != "user" || in["sub"] != owner.UserID {
		t.Fatalf("introspection of the owner's token: %v", in)
	}
	// Without client authentication.
	req, _ := http.NewRequest(http.MethodPost, sys.proxyB.url("/api/v1/auth/introspect"), strings.NewReader("token="+tok.AccessToken))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("introspection without client auth: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	// Revocation of the owner's refresh token through proxy B: refreshing
	// fails, and the owner's access token is refused at proxy A.
	expect(t, postForm(t, sys.proxyB.url("/api/v1/auth/revoke"), sec.ClientID, sec.ClientSecret,
		url.Values{"token": {owner.Tokens.RefreshToken}, "token_type_hint": {"refresh_token"}}), http.StatusOK)
	rr = call(t, "POST", sys.proxyA.url("/api/v1/auth/token"), "", map[string]string{"grant_type": "refresh_token", "refresh_token": owner.Tokens.RefreshToken})
	if p := expectProblem(t, rr, http.StatusBadRequest); p.OAuthError != "invalid_grant" {
		t.Fatalf("refresh after revocation: %s", rr)
	}
	mustWaitStatus(t, "GET", sys.proxyA.url("/api/v1/users/me"), owner.Tokens.AccessToken, http.StatusUnauthorized, propagation)
	expect(t, postForm(t, sys.proxyA.url("/api/v1/auth/revoke"), sec.ClientID, sec.ClientSecret, url.Values{"token": {"unknown"}}), http.StatusOK)

	// Deleting the secret ends the account's tokens at both proxies.
	other := login(t, sys.proxyA, owner)
	expect(t, call(t, "DELETE", sys.proxyA.url("/api/v1/service-accounts/"+acc.ID+"/secrets/"+sec.ID), other.AccessToken, nil), http.StatusNoContent)
	for _, p := range []*service{sys.proxyA, sys.proxyB} {
		mustWaitStatus(t, "GET", p.url("/notes"), tok.AccessToken, http.StatusUnauthorized, propagation)
	}
	if _, err := (&clientcredentials.Config{ClientID: sec.ClientID, ClientSecret: sec.ClientSecret, TokenURL: md.TokenEndpoint}).Token(ctx); !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("deleted secret: %v", err)
	}
}
