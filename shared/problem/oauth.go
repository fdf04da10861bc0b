package problem

import "strings"

// oauthEndpoints are coreapi's token, introspection and revocation
// endpoints (RFC 6749, 7662, 7009): every error answer there, coreapi's or
// a proxy's own, carries the RFC 6749 error and error_description fields.
var oauthEndpoints = [...]string{"/api/v1/auth/token", "/api/v1/auth/introspect", "/api/v1/auth/revoke"}

// IsOAuthEndpoint reports whether path is one of the OAuth endpoints, as
// coreapi's router matches it (any letter case, a trailing slash or not).
func IsOAuthEndpoint(path string) bool {
	path = strings.TrimSuffix(path, "/")
	for _, e := range oauthEndpoints {
		if strings.EqualFold(path, e) {
			return true
		}
	}
	return false
}

// OAuthErrorOfStatus is the RFC 6749 error code of an error answer known
// only by its status: a failure that is not the client's is
// temporarily_unavailable (429, 503) or server_error (other 5xx, the
// authorization endpoint's codes), a refused authentication
// invalid_grant, anything else a request to fix, invalid_request.
func OAuthErrorOfStatus(status int) string {
	switch {
	case status == 429 || status == 503:
		return "temporarily_unavailable"
	case status >= 500:
		return "server_error"
	case status == 401 || status == 403:
		return "invalid_grant"
	}
	return "invalid_request"
}
