package oauth_test

import (
	"net/http"
	"sync"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// refresh runs the refresh grant with tok.
func (x *env) refresh(t *testing.T, tok string) apitest.Response {
	t.Helper()
	return x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": tok})
}

// TestHandoverCodeReuseEndsItsSession: a hand-over code presented again
// after it was exchanged (RFC 6749 section 4.1.2, RFC 9700 section 4.5:
// a code read from a URL, a log or a Referer and replayed, or the app's
// own exchange coming second to a thief's) is refused, and the session
// the first exchange handed out ends: whoever exchanged it first, the
// tokens it got stop working. The end is audited and announced to the
// proxies, as a refresh token's reuse is.
func TestHandoverCodeReuseEndsItsSession(t *testing.T) {
	const app = "https://app.example.com/signed-in"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app} })
	pk := newAppPKCE(t)
	code := x.codeAt(t, x.begin(t, pk.query(app)))
	r := x.exchangeWith(t, app, code, pk.verifier)
	if r.Status != http.StatusOK {
		t.Fatalf("first exchange: %d %s", r.Status, r.Body)
	}
	var first tokens
	r.JSON(t, &first)
	uid := sub(t, first.AccessToken)

	if r := x.exchangeWith(t, app, code, pk.verifier); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Fatalf("second exchange of one code: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}
	if r := x.refresh(t, first.RefreshToken); r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant" {
		t.Errorf("refresh with the tokens of the first exchange after the code's reuse: %d %s, want 400 invalid_grant", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_reason = $2`, uid, sessions.ReasonHandoverReuse); n != 1 {
		t.Errorf("%d sessions ended as %s, want 1", n, sessions.ReasonHandoverReuse)
	}
	if n := x.count(t, `SELECT count(*) FROM audit_events WHERE action = $1 AND data->>'user_id' = $2`, audit.ActionHandoverCodeReused, uid); n != 1 {
		t.Errorf("%d %s audit events, want 1", n, audit.ActionHandoverCodeReused)
	}
	if n := x.count(t, `SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'reason' = $2`, invalidation.UserSubject(uid), invalidation.ReasonSessionRevoked); n < 1 {
		t.Error("the session's end was not announced to the proxies")
	}

	// Unknown and expired codes end nothing: only a code exchanged before.
	other := x.codeAt(t, x.begin(t, pk.query(app)))
	if r := x.exchangeWith(t, app, other[:42]+"A", pk.verifier); r.Status != http.StatusBadRequest {
		t.Fatalf("unknown code: %d %s", r.Status, r.Body)
	}
	r = x.exchangeWith(t, app, other, pk.verifier)
	if r.Status != http.StatusOK {
		t.Fatalf("exchange of another sign-in's code after an unknown one: %d %s", r.Status, r.Body)
	}
	var second tokens
	r.JSON(t, &second)
	if r := x.refresh(t, second.RefreshToken); r.Status != http.StatusOK {
		t.Errorf("refresh of a session whose code was used once: %d %s", r.Status, r.Body)
	}
}

// TestHandoverCodeExchangedTwiceAtOnce: two exchanges of one code at once
// (a thief racing the app) hand out no session that outlives them: at most
// one gets tokens, and those stop working once the other has been refused.
func TestHandoverCodeExchangedTwiceAtOnce(t *testing.T) {
	const app = "https://app.example.com/signed-in"
	x := start(t, func(o *oauth.Options) { o.AllowedReturnURLs = []string{app} })
	for i := 0; i < 5; i++ {
		pk := newAppPKCE(t)
		code := x.codeAt(t, x.begin(t, pk.query(app)))
		var (
			wg      sync.WaitGroup
			answers [2]apitest.Response
		)
		for j := range answers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answers[j] = x.exchangeWith(t, app, code, pk.verifier)
			}()
		}
		wg.Wait()
		ok := 0
		for _, r := range answers {
			switch {
			case r.Status == http.StatusOK:
				ok++
				var tk tokens
				r.JSON(t, &tk)
				if rr := x.refresh(t, tk.RefreshToken); rr.Status != http.StatusBadRequest {
					t.Errorf("round %d: refresh with the tokens of one of two exchanges of one code: %d %s, want 400", i, rr.Status, rr.Body)
				}
			case r.Status != http.StatusBadRequest || r.Problem(t).Code != "invalid_grant":
				t.Errorf("round %d: exchange: %d %s, want 200 or 400 invalid_grant", i, r.Status, r.Body)
			}
		}
		if ok > 1 {
			t.Errorf("round %d: both exchanges of one code got tokens", i)
		}
	}
}
