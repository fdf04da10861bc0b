package serviceaccounts_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/serviceaccounts"
)

// TestDiscoveryNamesWhatTheTokenEndpointTakes: the metadata says what the
// token endpoint does (RFC 8414), checked against the endpoint itself. It
// serves public clients, which authenticate with nothing (a signed-in
// app's refresh_token and oauth_handover grants): "none" is among
// token_endpoint_auth_methods_supported, as it is among the revocation
// endpoint's for the same clients; an omitted "none" tells a library
// that reads the metadata that a public client cannot use the endpoint.
// The oauth_handover grant checks an RFC 7636 code_verifier, S256 only:
// code_challenge_methods_supported says so (RFC 8414 reads an omitted
// member as no PKCE), and never "plain".
func TestDiscoveryNamesWhatTheTokenEndpointTakes(t *testing.T) {
	e := start(t, startOpts{})
	var md struct {
		TokenAuth []string `json:"token_endpoint_auth_methods_supported"`
		PKCE      []string `json:"code_challenge_methods_supported"`
	}
	r := e.Get(t, nil, serviceaccounts.MetadataPath)
	if r.Status != http.StatusOK {
		t.Fatalf("metadata: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &md)

	// A public client: a refresh without any client authentication works.
	tk, _ := e.owner(t, "owner@example.com")
	ref := e.form(t, "/api/v1/auth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}}, nil)
	if ref.Status != http.StatusOK {
		t.Fatalf("refresh without client authentication: %d %s", ref.Status, ref.Body)
	}
	if !slices.Contains(md.TokenAuth, "none") {
		t.Errorf("token_endpoint_auth_methods_supported = %q: the endpoint serves public clients, want \"none\" listed", md.TokenAuth)
	}
	for _, m := range []string{"client_secret_basic", "client_secret_post"} {
		if !slices.Contains(md.TokenAuth, m) {
			t.Errorf("token_endpoint_auth_methods_supported = %q, want %s", md.TokenAuth, m)
		}
	}
	if !slices.Equal(md.PKCE, []string{"S256"}) {
		t.Errorf("code_challenge_methods_supported = %q, want [S256] (the hand-over's code_verifier, S256 only)", md.PKCE)
	}
}

// TestDiscoveryPromisesTheIssuerInTheRedirect: the OAuth callback's
// redirect to return_to names the issuer (iss, RFC 9207; see
// oauth.TestHandoverRedirectNamesTheIssuer), and the metadata says so
// (authorization_response_iss_parameter_supported), so that an app's
// library requires iss rather than take an answer without one.
func TestDiscoveryPromisesTheIssuerInTheRedirect(t *testing.T) {
	e := start(t, startOpts{})
	var md map[string]any
	r := e.Get(t, nil, serviceaccounts.MetadataPath)
	if r.Status != http.StatusOK {
		t.Fatalf("metadata: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &md)
	if got := md["authorization_response_iss_parameter_supported"]; got != true {
		t.Errorf("authorization_response_iss_parameter_supported = %v, want true", got)
	}
}
