package oauth_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestProviderErrorWithABadState: an error response (error=...) whose
// state is spent or expired, sent by a browser that still holds the
// state's binding cookie, is answered 400 invalid_state or expired_state,
// as a response with a code is: it was answered 400 provider_error,
// passing on its error and error_description as the provider's refusal
// of a sign-in that was no longer under way.
func TestProviderErrorWithABadState(t *testing.T) {
	x := start(t)
	refusal := func(st started) string {
		return "/api/v1/auth/oauth/fake/callback?error=access_denied&error_description=user+said+no&state=" + url.QueryEscape(st.state)
	}
	t.Run("spent", func(t *testing.T) {
		st := x.begin(t, "")
		x.finish(t, st)
		r := x.callback(t, refusal(st), st.cookie)
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidState {
			t.Fatalf("error response with a spent state: %d %s, want 400 %s", r.Status, r.Body, problem.CodeInvalidState)
		}
	})
	t.Run("expired", func(t *testing.T) {
		st := x.begin(t, "")
		if _, err := x.DB.Pool.Exec(context.Background(), `UPDATE oauth_states SET expires_at = now() - interval '1 second'`); err != nil {
			t.Fatal(err)
		}
		r := x.callback(t, refusal(st), st.cookie)
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeExpiredState {
			t.Fatalf("error response with an expired state: %d %s, want 400 %s", r.Status, r.Body, problem.CodeExpiredState)
		}
		if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != 0 {
			t.Errorf("state rows = %d, want 0 (the expired state is spent)", n)
		}
	})
	t.Run("live", func(t *testing.T) {
		st := x.begin(t, "")
		r := x.callback(t, refusal(st), st.cookie)
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeProviderError {
			t.Fatalf("error response with a live state: %d %s, want 400 %s", r.Status, r.Body, problem.CodeProviderError)
		}
	})
}
