package oauth_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestProviderEndpointsOverHTTPS: the issuer is https (config), and so
// must be every endpoint its discovery document names and every redirect
// a provider's answer makes (http only to a loopback host, as the
// issuer): over plain http to another host, anyone on the path could
// serve a key set of their own (and sign ID tokens for any account), read
// the client secret sent to the token endpoint, or answer the browser
// sent to the authorization endpoint. The provider's HTTP client here
// reaches the fake provider whatever host a URL names, so that only the
// check, not the network, refuses such a URL.
func TestProviderEndpointsOverHTTPS(t *testing.T) {
	anyHost := func(o *oauth.Options) {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				idp := o.Providers[0].Issuer[len("http://"):]
				return (&net.Dialer{}).DialContext(ctx, network, idp)
			}}}
	}
	for _, tt := range []struct{ member, url string }{
		{"jwks_uri", "http://keys.example.net/jwks"},
		{"token_endpoint", "http://idp.example.net/token"},
		{"authorization_endpoint", "http://idp.example.net/authorize"},
	} {
		t.Run(tt.member, func(t *testing.T) {
			x := start(t, anyHost)
			x.idp.Mu.Lock()
			x.idp.Endpoints = map[string]string{tt.member: tt.url}
			x.idp.Mu.Unlock()
			r := x.authorize(t, "", "198.51.100.1")
			if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeProviderUnavailable {
				t.Fatalf("authorize with %s %s: %d %s %s, want 502 %s", tt.member, tt.url, r.Status, r.Header.Get("Location"), r.Body, problem.CodeProviderUnavailable)
			}
			if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
				t.Errorf("oauth_states = %d, want 0", n)
			}
		})
	}
	t.Run("redirect to http", func(t *testing.T) {
		x := start(t, anyHost)
		x.idp.Mu.Lock()
		x.idp.Endpoints = map[string]string{"jwks_uri": x.idp.URL + "/moved"}
		x.idp.MovedTo = "http://keys.example.net/jwks"
		x.idp.Mu.Unlock()
		st := x.beginFrom(t, "", "198.51.100.2")
		r := x.callback(t, x.approve(t, st), st.cookie)
		if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeInvalidIDToken {
			t.Fatalf("callback with a key set redirected to http: %d %s, want 502 %s", r.Status, r.Body, problem.CodeInvalidIDToken)
		}
		if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
			t.Errorf("users = %d, want 0", n)
		}
		// A redirect on a loopback host (the fake provider's own) is
		// followed, as the issuer there may be http.
		x.idp.Mu.Lock()
		x.idp.MovedTo = x.idp.URL + "/jwks"
		x.idp.Mu.Unlock()
		x.finish(t, x.beginFrom(t, "", "198.51.100.3"))
	})
}
