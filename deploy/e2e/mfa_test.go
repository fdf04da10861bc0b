package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/deploy/internal/authenticator"
)

// totp is the code an authenticator app shows for secret at time at.
func totp(t testing.TB, secret string, at time.Time) string {
	t.Helper()
	code, err := authenticator.Code(secret, at)
	if err != nil {
		t.Fatalf("secret %q: %v", secret, err)
	}
	return code
}

// amrOf reads amr, acr and auth_time from an access token.
func amrOf(t testing.TB, tok string) ([]string, string, int64) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AMR      []string `json:"amr"`
		ACR      string   `json:"acr"`
		AuthTime int64    `json:"auth_time"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.AMR, c.ACR, c.AuthTime
}

// TestMFAThroughTheProxies: enrol with codes computed from the secret, sign
// in with a second factor through the other proxy, a step-up route refused
// with an old token (RFC 9470) and allowed after stepping up, and the
// tenant's MFA policy confining a member who has none.
func TestMFAThroughTheProxies(t *testing.T) {
	owner := signup(t, sys.proxyA)
	old := owner.Tokens.AccessToken

	// Enrol.
	r := call(t, "POST", sys.proxyA.url("/api/v1/users/me/mfa/totp"), old, nil)
	expect(t, r, http.StatusCreated)
	en := decode[struct {
		Secret     string `json:"secret"`
		OTPAuthURI string `json:"otpauth_uri"`
	}](t, r)
	if !strings.Contains(en.OTPAuthURI, "secret="+en.Secret) {
		t.Fatalf("otpauth_uri %s does not carry the secret", en.OTPAuthURI)
	}
	now := time.Now()
	r = call(t, "POST", sys.proxyA.url("/api/v1/users/me/mfa/totp/confirm"), old, map[string]string{"code": totp(t, en.Secret, now)})
	expect(t, r, http.StatusOK)
	codes := decode[struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}](t, r).RecoveryCodes
	if len(codes) != 10 {
		t.Fatalf("%d recovery codes", len(codes))
	}
	// The confirmation moved the account's token version on: the access
	// token it was made with is refused from then on, and the session,
	// which goes on, refreshes into a current one (still without the
	// second factor: the confirmation is no step-up).
	expectProblem(t, call(t, "GET", sys.proxyA.url("/api/v1/users/me"), old, nil), http.StatusUnauthorized)
	r = call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{
		"grant_type": "refresh_token", "refresh_token": owner.Tokens.RefreshToken})
	expect(t, r, http.StatusOK)
	old = decode[tokenResponse](t, r).AccessToken
	if amr, _, _ := amrOf(t, old); !slices.Equal(amr, []string{"pwd"}) {
		t.Fatalf("the confirming session refreshed into amr %v, want [pwd]", amr)
	}

	// Sign in through the other proxy: the password alone is not enough.
	r = call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{
		"grant_type": "password", "email": owner.Email, "password": owner.Password})
	p := expectProblem(t, r, http.StatusUnauthorized)
	ch := decode[struct {
		Error    string `json:"error"`
		MFAToken string `json:"mfa_token"`
	}](t, r)
	if p.Code != "mfa_required" || ch.Error != "mfa_required" || ch.MFAToken == "" {
		t.Fatalf("%s: want mfa_required with an mfa_token", r)
	}
	// The mfa_token is no access token.
	expectProblem(t, call(t, "GET", sys.proxyB.url("/api/v1/users/me"), ch.MFAToken, nil), http.StatusUnauthorized)
	r = call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), "", map[string]string{
		"grant_type": "mfa_otp", "mfa_token": ch.MFAToken, "code": codes[0]})
	expect(t, r, http.StatusOK)
	signedIn := decode[tokenResponse](t, r)
	signedIn.check(t, r)
	if amr, acr, _ := amrOf(t, signedIn.AccessToken); !slices.Equal(amr, []string{"pwd", "otp"}) || acr != "mfa" {
		t.Fatalf("second-factor sign-in: amr %v acr %s", amr, acr)
	}
	expect(t, call(t, "GET", sys.proxyA.url("/api/v1/users/me"), signedIn.AccessToken, nil), http.StatusOK)

	// The signup token says "pwd" only: once the proxies know the user has
	// MFA, a password change with it is refused at the edge.
	change := map[string]string{"current_password": owner.Password, "new_password": "a brand new long password"}
	for _, px := range []*service{sys.proxyA, sys.proxyB} {
		_, r = mustWaitStatus(t, "PUT", px.url("/api/v1/users/me/password"), old, http.StatusUnauthorized, 5*time.Second)
		if p := checkProblem(t, r); p.Code != "insufficient_user_authentication" {
			t.Fatalf("%s: code %q", r, p.Code)
		}
		if got := r.Header.Get("WWW-Authenticate"); got != `Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=300` {
			t.Fatalf("%s: WWW-Authenticate %q", r, got)
		}
	}

	// Step up the signup session with the next code: a new token for it.
	r = call(t, "POST", sys.proxyB.url("/api/v1/auth/token"), old, map[string]string{
		"grant_type": "mfa_otp", "code": totp(t, en.Secret, now.Add(30*time.Second))})
	expect(t, r, http.StatusOK)
	up := decode[tokenResponse](t, r)
	if claimsOf(t, up.AccessToken).Sid != claimsOf(t, old).Sid {
		t.Fatal("step-up changed the session")
	}
	if amr, _, at := amrOf(t, up.AccessToken); !slices.Contains(amr, "otp") || time.Since(time.Unix(at, 0)) > time.Minute {
		t.Fatalf("stepped-up token: amr %v auth_time %d", amr, at)
	}
	// The same code again is refused (replay).
	r = call(t, "POST", sys.proxyA.url("/api/v1/auth/token"), old, map[string]string{
		"grant_type": "mfa_otp", "code": totp(t, en.Secret, now.Add(30*time.Second))})
	expectProblem(t, r, http.StatusBadRequest)

	// Adding a member and changing the tenant's policy need the second
	// factor too: the password-only token cannot, the stepped-up one can.
	for _, px := range []*service{sys.proxyA, sys.proxyB} {
		for _, r := range []reply{
			call(t, "POST", px.url("/api/v1/users"), old, map[string]any{
				"email": "member-" + randToken(5) + "@example.com", "password": testPassword, "roles": []string{"admin"}}),
			call(t, "PATCH", px.url("/api/v1/tenant"), old, map[string]any{"require_mfa": true}),
		} {
			if p := expectProblem(t, r, http.StatusUnauthorized); p.Code != "insufficient_user_authentication" {
				t.Fatalf("%s: code %q", r, p.Code)
			}
		}
	}
	owner.Tokens.AccessToken = up.AccessToken

	// Tenant policy: a member without MFA is confined to enrolment.
	m := addMember(t, owner, sys.proxyA, "member")
	expect(t, call(t, "GET", sys.proxyB.url("/api/v1/tenant"), m.Tokens.AccessToken, nil), http.StatusOK)
	r = call(t, "PATCH", sys.proxyA.url("/api/v1/tenant"), up.AccessToken, map[string]any{"require_mfa": true})
	expect(t, r, http.StatusOK)
	for _, px := range []*service{sys.proxyA, sys.proxyB} {
		took, r := mustWaitStatus(t, "GET", px.url("/api/v1/tenant"), m.Tokens.AccessToken, http.StatusForbidden, 5*time.Second)
		if p := checkProblem(t, r); p.Code != "mfa_enrollment_required" {
			t.Fatalf("%s: code %q", r, p.Code)
		}
		t.Logf("%s: member confined %v after the policy change", px.name, took)
		expect(t, call(t, "GET", px.url("/api/v1/users/me"), m.Tokens.AccessToken, nil), http.StatusOK)
	}
	expect(t, call(t, "POST", sys.proxyA.url("/api/v1/users/me/mfa/totp"), m.Tokens.AccessToken, nil), http.StatusCreated)

	// With the stepped-up token the password change goes through.
	expect(t, call(t, "PUT", sys.proxyA.url("/api/v1/users/me/password"), up.AccessToken, change), http.StatusOK)
}
