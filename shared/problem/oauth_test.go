package problem

import "testing"

func TestIsOAuthEndpoint(t *testing.T) {
	for path, want := range map[string]bool{
		"/api/v1/auth/token": true, "/api/v1/auth/introspect": true, "/api/v1/auth/revoke": true,
		"/api/v1/auth/revoke/": true, "/API/v1/Auth/Token": true,
		"/api/v1/auth/tokens": false, "/api/v1/auth/token/x": false, "/api/v1/auth": false, "": false, "/": false,
		"/api/v1/auth/token//": false, "/x/api/v1/auth/token": false,
	} {
		if got := IsOAuthEndpoint(path); got != want {
			t.Errorf("IsOAuthEndpoint(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestOAuthErrorOfStatus(t *testing.T) {
	for status, want := range map[int]string{
		400: "invalid_request", 404: "invalid_request", 413: "invalid_request", 415: "invalid_request", 431: "invalid_request",
		401: "invalid_grant", 403: "invalid_grant",
		429: "temporarily_unavailable", 503: "temporarily_unavailable",
		500: "server_error", 502: "server_error", 504: "server_error",
	} {
		if got := OAuthErrorOfStatus(status); got != want {
			t.Errorf("OAuthErrorOfStatus(%d) = %q, want %q", status, got, want)
		}
	}
}
