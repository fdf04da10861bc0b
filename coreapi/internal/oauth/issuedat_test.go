package oauth_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestIDTokenIssuedAt: the callback refuses an ID token without iat, or
// issued more than oauth.IssuedAtLeeway ahead of coreapi's clock (502
// invalid_id_token, nothing created): OpenID Connect Core 2 requires the
// claim, and go-oidc checks neither, so a token minted for later (by a
// provider whose clock is wrong, or one signed ahead to be replayed) was
// taken. A token issued within the leeway ahead signs in.
func TestIDTokenIssuedAt(t *testing.T) {
	x := start(t)
	for _, tc := range []struct {
		name   string
		claims map[string]any
	}{
		{"no iat", map[string]any{"iat": nil}},
		{"iat an hour ahead", map[string]any{"iat": time.Now().Add(time.Hour).Unix()}},
		{"iat past the leeway", map[string]any{"iat": time.Now().Add(oauth.IssuedAtLeeway + 30*time.Second).Unix()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x.idp.Mu.Lock()
			x.idp.Claims = tc.claims
			x.idp.Mu.Unlock()
			st := x.begin(t, "")
			r := x.callback(t, x.approve(t, st), st.cookie)
			if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeInvalidIDToken {
				t.Fatalf("callback: %d %s, want 502 %s", r.Status, r.Body, problem.CodeInvalidIDToken)
			}
			if n := x.count(t, `SELECT count(*) FROM users`); n != 0 {
				t.Errorf("users = %d, want 0 (none created)", n)
			}
		})
	}
	// A provider's clock a little ahead of ours: taken.
	x.idp.Mu.Lock()
	x.idp.Claims = map[string]any{"iat": time.Now().Add(oauth.IssuedAtLeeway - 30*time.Second).Unix()}
	x.idp.Mu.Unlock()
	x.finish(t, x.begin(t, ""))
}
