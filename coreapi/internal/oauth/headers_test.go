package oauth_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
)

// TestCallbackAnswersStayPrivate: every answer of the callback (the
// redirect with the hand-over code, the code as JSON, and each refusal,
// whose request URL still holds the provider's code and state) is kept
// out of caches and Referer headers and is not sniffed into another type.
func TestCallbackAnswersStayPrivate(t *testing.T) {
	want := map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
	check := func(t *testing.T, name string, r apitest.Response, status int) {
		t.Helper()
		if r.Status != status {
			t.Errorf("%s: %d %s, want %d", name, r.Status, r.Body, status)
		}
		for h, v := range want {
			if got := r.Header.Get(h); got != v {
				t.Errorf("%s: %s = %q, want %q", name, h, got, v)
			}
		}
	}

	x := start(t)
	st := x.begin(t, "")
	check(t, "code as JSON", x.callback(t, x.approve(t, st), st.cookie), http.StatusOK)

	st = x.begin(t, "")
	q := "?code=bogus&state=" + url.QueryEscape(st.state)
	for _, tc := range []struct {
		name, path string
		cookie     *http.Cookie
		status     int
	}{
		{"unknown provider", "/api/v1/auth/oauth/nope/callback" + q, st.cookie, http.StatusNotFound},
		{"no state", "/api/v1/auth/oauth/fake/callback?code=bogus", st.cookie, http.StatusBadRequest},
		{"no binding cookie", "/api/v1/auth/oauth/fake/callback" + q, nil, http.StatusBadRequest},
		{"two codes", "/api/v1/auth/oauth/fake/callback" + q + "&code=again", st.cookie, http.StatusBadRequest},
		{"code refused by the provider", "/api/v1/auth/oauth/fake/callback" + q, st.cookie, http.StatusBadRequest},
		{"state spent", "/api/v1/auth/oauth/fake/callback" + q, st.cookie, http.StatusBadRequest},
	} {
		check(t, tc.name, x.callback(t, tc.path, tc.cookie), tc.status)
	}
	st = x.begin(t, "")
	check(t, "provider error", x.callback(t, "/api/v1/auth/oauth/fake/callback?error=access_denied&state="+url.QueryEscape(st.state), st.cookie),
		http.StatusBadRequest)

	const app = "https://app.example.com/signed-in"
	y := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app} })
	st = y.begin(t, newAppPKCE(t).query(app))
	check(t, "redirect to return_to", y.callback(t, y.approve(t, st), st.cookie), http.StatusFound)
}
