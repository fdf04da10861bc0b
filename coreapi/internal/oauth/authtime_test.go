package oauth_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// claimsOf is an access token's sub, tid, sid and auth_time.
func claimsOf(t *testing.T, access string) (sub, tid, sid string, authTime int64) {
	t.Helper()
	parts := strings.Split(access, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Sub      string `json:"sub"`
		TID      string `json:"tid"`
		SID      string `json:"sid"`
		AuthTime int64  `json:"auth_time"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Sub, c.TID, c.SID, c.AuthTime
}

// identityFor is the identity the proxy forwards for an access token.
func (x *env) identityFor(t *testing.T, tk tokens) *identity.Identity {
	t.Helper()
	uid, tid, sid, _ := claimsOf(t, tk.AccessToken)
	id := x.IdentityOf(t, uid, tid)
	id.SessionID = sid
	return &id
}

// TestSessionAuthTimeIsTheProviders: an OIDC sign-in opens a session on the
// strength of the provider's own session, which may have authenticated
// the user hours before. The session's auth_time (the access token's, the
// one a rules-file max_auth_age and the "sign-in within the last 5
// minutes" of an email change or an enrolment look at) is when the
// provider authenticated the user (the ID token's auth_time), not the time
// of the callback: taking the callback's made a bounce through the
// provider's single sign-on, with no credential given anywhere, count as a
// fresh sign-in. An app asks for a recent authentication with max_age at
// authorize (RFC 9470), which the provider is asked for, and whose answer
// is checked.
func TestSessionAuthTimeIsTheProviders(t *testing.T) {
	x := start(t)
	signedIn := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	x.idp.Mu.Lock()
	x.idp.SignedInAt = signedIn
	x.idp.Mu.Unlock()
	tk := x.finish(t, x.begin(t, ""))
	if _, _, _, at := claimsOf(t, tk.AccessToken); at != signedIn.Unix() {
		t.Fatalf("auth_time = %d, want the provider's %d (%v ago)", at, signedIn.Unix(), time.Since(time.Unix(at, 0)).Round(time.Second))
	}
	r := x.Send(t, x.identityFor(t, tk), http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "moved@example.com"})
	if r.Status != http.StatusUnauthorized || r.Problem(t).Code != problem.CodeInsufficientUserAuthentication {
		t.Fatalf("email change after a sign-in the provider made 2 h ago: %d %s, want 401 %s", r.Status, r.Body, problem.CodeInsufficientUserAuthentication)
	}
	// The app asks for a recent authentication: the provider is asked
	// for it, authenticates the user again, and says so.
	tk = x.finish(t, x.begin(t, "?max_age=300"))
	x.idp.Mu.Lock()
	asked := x.idp.MaxAges[len(x.idp.MaxAges)-1]
	x.idp.Mu.Unlock()
	if asked != "300" {
		t.Errorf("max_age asked of the provider = %q, want 300", asked)
	}
	if _, _, _, at := claimsOf(t, tk.AccessToken); time.Since(time.Unix(at, 0)) > time.Minute {
		t.Fatalf("auth_time after max_age=300 = %v ago, want now", time.Since(time.Unix(at, 0)).Round(time.Second))
	}
	r = x.Send(t, x.identityFor(t, tk), http.MethodPatch, "/api/v1/users/me", map[string]string{"email": "moved@example.com"})
	if r.Status != http.StatusAccepted {
		t.Fatalf("email change after authenticating again: %d %s, want 202", r.Status, r.Body)
	}
}

// TestMaxAgeChecked: a provider that answers a sign-in with max_age must
// say when it authenticated the user, no longer ago than max_age (OpenID
// Connect Core 3.1.2.1); otherwise the sign-in is refused (502
// invalid_id_token), no session opened. Without max_age, a provider that
// does not say is taken to have authenticated the user now, and one whose
// auth_time is ahead of the clock as now. A malformed max_age is 400
// invalid_request before anything is stored.
func TestMaxAgeChecked(t *testing.T) {
	x := start(t)
	x.idp.Mu.Lock()
	x.idp.IgnoreMaxAge = true
	x.idp.SignedInAt = time.Now().Add(-time.Hour)
	x.idp.Mu.Unlock()
	st := x.begin(t, "?max_age=300")
	r := x.callback(t, x.approve(t, st), st.cookie)
	if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeInvalidIDToken {
		t.Fatalf("provider ignoring max_age: %d %s, want 502 %s", r.Status, r.Body, problem.CodeInvalidIDToken)
	}
	x.idp.Mu.Lock()
	x.idp.SignedInAt = time.Time{} // no auth_time
	x.idp.Mu.Unlock()
	st = x.begin(t, "?max_age=0")
	r = x.callback(t, x.approve(t, st), st.cookie)
	if r.Status != http.StatusBadGateway || r.Problem(t).Code != problem.CodeInvalidIDToken {
		t.Fatalf("no auth_time for max_age: %d %s, want 502 %s", r.Status, r.Body, problem.CodeInvalidIDToken)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions`); n != 0 {
		t.Fatalf("sessions = %d, want 0", n)
	}
	// Within max_age (and its leeway): signed in.
	x.idp.Mu.Lock()
	x.idp.SignedInAt = time.Now().Add(-30 * time.Second).Truncate(time.Second)
	x.idp.Mu.Unlock()
	tk := x.finish(t, x.begin(t, "?max_age=0"))
	if _, _, _, at := claimsOf(t, tk.AccessToken); time.Since(time.Unix(at, 0)) < 29*time.Second {
		t.Errorf("auth_time %v ago, want the provider's (30 s ago)", time.Since(time.Unix(at, 0)).Round(time.Second))
	}

	x.idp.Mu.Lock()
	x.idp.SignedInAt = time.Time{}
	x.idp.Mu.Unlock()
	tk = x.finish(t, x.begin(t, ""))
	if _, _, _, at := claimsOf(t, tk.AccessToken); time.Since(time.Unix(at, 0)) > time.Minute {
		t.Errorf("no auth_time, no max_age: auth_time %v ago, want now", time.Since(time.Unix(at, 0)).Round(time.Second))
	}
	x.idp.Mu.Lock()
	x.idp.SignedInAt = time.Now().Add(time.Hour)
	x.idp.Mu.Unlock()
	tk = x.finish(t, x.begin(t, ""))
	if _, _, _, at := claimsOf(t, tk.AccessToken); at > time.Now().Unix() {
		t.Errorf("auth_time ahead of the clock: %v from now, want now", time.Until(time.Unix(at, 0)).Round(time.Second))
	}

	states := x.count(t, `SELECT count(*) FROM oauth_states`)
	for _, v := range []string{"-1", "abc", "1e3", "+5", "1234567890", "%20300", "300&max_age=300"} {
		r := x.authorize(t, "?max_age="+v, "198.51.100.7")
		if r.Status != http.StatusBadRequest || r.Problem(t).Code != problem.CodeInvalidRequest {
			t.Errorf("max_age=%s: %d %s, want 400 %s", v, r.Status, r.Body, problem.CodeInvalidRequest)
		}
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_states`); n != states {
		t.Errorf("states = %d after refused starts, want %d", n, states)
	}
}
