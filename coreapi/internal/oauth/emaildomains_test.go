package oauth_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oauth"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// withDomains sets the fake provider's OIDC_FAKE_EMAIL_DOMAINS (none:
// unset).
func withDomains(domains ...string) func(*oauth.Options) {
	return func(o *oauth.Options) { o.Providers[0].EmailDomains = domains }
}

// provideHD makes the fake provider approve the next sign-ins as subject
// with the verified address email and the hosted domain hd ("": none).
func (x *env) provideHD(subject, email, hd string) {
	x.idp.Mu.Lock()
	x.idp.Subject, x.idp.Email, x.idp.Verified, x.idp.HostedDomain = subject, email, true, hd
	x.idp.Mu.Unlock()
}

// callbackOn finishes st's sign-in in its browser on the coreapi instance
// at base (second), and returns the status and the problem answered.
func (x *env) callbackOn(t *testing.T, base string, st started) (int, problem.Problem) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+x.approve(t, st), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: st.cookie.Name, Value: st.cookie.Value})
	resp, err := x.noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p problem.Problem
	_ = json.NewDecoder(resp.Body).Decode(&p)
	return resp.StatusCode, p
}

// refusedAsNotAuthoritative checks that a sign-in through the provider as
// it now approves is refused 409 provider_not_authoritative, and that it
// entered nothing of the account victim: no identity linked, no session
// opened or ended (its own refresh token still works), no hand-over code,
// no link audited or mailed.
func (x *env) refusedAsNotAuthoritative(t *testing.T, victim tokens, victimEmail string) {
	t.Helper()
	st := x.begin(t, "")
	r := x.callback(t, x.approve(t, st), st.cookie)
	if r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeProviderNotAuthoritative {
		t.Fatalf("sign-in with the address of an account, through a provider not authoritative for it: %d %s, want 409 %s",
			r.Status, r.Body, problem.CodeProviderNotAuthoritative)
	}
	uid := sub(t, victim.AccessToken)
	for q, want := range map[string]int{
		`SELECT count(*) FROM identities`:                                                       0,
		`SELECT count(*) FROM oauth_handovers`:                                                  0,
		`SELECT count(*) FROM audit_events WHERE action = 'user.identity_linked'`:               0,
		`SELECT count(*) FROM mail_queue WHERE kind = 'identity_linked'`:                        0,
		`SELECT count(*) FROM sessions WHERE user_id = '` + uid + `' AND revoked_at IS NULL`:    1,
		`SELECT count(*) FROM users WHERE lower(email) = lower('` + victimEmail + `')`:          1,
		`SELECT count(*) FROM users WHERE id = '` + uid + `' AND email_verified_at IS NOT NULL`: 1,
	} {
		if n := x.count(t, q); n != want {
			t.Errorf("%s: %d, want %d", q, n, want)
		}
	}
	if rr := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": victim.RefreshToken}); rr.Status != http.StatusOK {
		t.Errorf("the account's own refresh after the refused sign-in: %d %s", rr.Status, rr.Body)
	}
}

// TestNoLinkByAnAddressTheProviderIsNotAuthoritativeFor: a provider that
// is not authoritative for an address's domain (a company's IdP, whose
// admins can mark any address verified; Google, where anyone opens an
// account under any address) does not vouch for it, whatever its
// email_verified says. Its sign-in with the verified address of an
// existing account (victim@bank.example) is refused: linked, it handed
// whoever held that provider account the victim's tokens. So with
// OIDC_<NAME>_EMAIL_DOMAINS unset (no domain vouched for) and with other
// domains listed.
func TestNoLinkByAnAddressTheProviderIsNotAuthoritativeFor(t *testing.T) {
	for _, tt := range []struct {
		name    string
		domains []string
	}{
		{"unset", nil},
		{"other domains listed", []string{"example.com", "bank.example.org"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x := start(t, withDomains(tt.domains...))
			victim := x.verifiedAccount(t, "victim@bank.example")
			x.provideHD("squatter", "victim@bank.example", "")
			x.refusedAsNotAuthoritative(t, victim, "victim@bank.example")
			// In another letter case or spelling of the domain too.
			x.provideHD("squatter", "victim@BANK.example.", "")
			x.refusedAsNotAuthoritative(t, victim, "victim@bank.example")
		})
	}
}

// TestAnyDomainLinks: with OIDC_<NAME>_EMAIL_DOMAINS=* the operator trusts
// the provider for every domain, knowingly: a verified address links to
// its account as before the setting existed.
func TestAnyDomainLinks(t *testing.T) {
	x := start(t, withDomains(config.AnyEmailDomain))
	victim := x.verifiedAccount(t, "owner@bank.example")
	x.provideHD("owner-at-idp", "owner@bank.example", "")
	if tk := x.finish(t, x.begin(t, "")); sub(t, tk.AccessToken) != sub(t, victim.AccessToken) {
		t.Errorf("sign-in with *: user %s, want the account %s", sub(t, tk.AccessToken), sub(t, victim.AccessToken))
	}
}

// TestHostedDomainMustBeTheAddresssDomain: Google says in hd which
// Workspace domain an account belongs to; an account of another hosted
// domain (or a consumer account, which has none) can carry an address at
// a listed domain. With domains listed, an address whose token names
// another hosted domain is not vouched for: no link to its account, and
// a new account of it starts unverified. An hd naming the address's
// domain (in any spelling) vouches, as a token without hd does.
func TestHostedDomainMustBeTheAddresssDomain(t *testing.T) {
	x := start(t, withDomains("bank.example"))
	victim := x.verifiedAccount(t, "victim@bank.example")
	x.provideHD("squatter", "victim@bank.example", "other.example")
	x.refusedAsNotAuthoritative(t, victim, "victim@bank.example")

	x.provideHD("fresh", "fresh@bank.example", "other.example")
	fresh := sub(t, x.finish(t, x.begin(t, "")).AccessToken)
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND email_verified_at IS NULL`, fresh); n != 1 {
		t.Error("an account created from an address whose hd names another domain is verified")
	}

	x.provideHD("owner-at-idp", "victim@bank.example", "BANK.example")
	if tk := x.finish(t, x.begin(t, "")); sub(t, tk.AccessToken) != sub(t, victim.AccessToken) {
		t.Errorf("sign-in with the address's own hd: user %s, want the account %s", sub(t, tk.AccessToken), sub(t, victim.AccessToken))
	}
}

// TestAccountOfAnUnvouchedAddressTakenBackByAReset: a first sign-in with
// an address no account has, through a provider not authoritative for its
// domain, creates the account with its address unverified (the
// projection says so, and routes that require a verified address refuse
// it). So when the mailbox's owner takes the account back with a password
// reset, the reset proves an address the account never proved, and ends
// what the sign-in's holder has: their sessions and their linked
// identity, through which they then sign in to nothing.
func TestAccountOfAnUnvouchedAddressTakenBackByAReset(t *testing.T) {
	x := startWithLifecycle(t, withDomains("example.com"))
	x.provideHD("squatter", "owner@bank.example", "")
	squat := x.finish(t, x.begin(t, ""))
	uid := sub(t, squat.AccessToken)
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND email_verified_at IS NULL`, uid); n != 1 {
		t.Fatal("an account created from an address the provider is not authoritative for is verified")
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1 AND subject = 'squatter'`, uid); n != 1 {
		t.Fatalf("%d identities of the sign-in linked to its account, want 1", n)
	}
	if got := sub(t, x.finish(t, x.begin(t, "")).AccessToken); got != uid {
		t.Fatalf("second sign-in through the provider: user %s, want %s", got, uid)
	}

	// The mailbox's owner resets the password.
	if r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/forgot", map[string]string{"email": "owner@bank.example"}); r.Status != http.StatusAccepted {
		t.Fatalf("forgot: %d %s", r.Status, r.Body)
	}
	tok := x.mail(t, "owner@bank.example", "Reset").Token()
	if r := x.Send(t, nil, http.MethodPost, "/api/v1/auth/password/reset",
		map[string]string{"token": tok, "new_password": "the owner's own password"}); r.Status != http.StatusNoContent {
		t.Fatalf("reset: %d %s", r.Status, r.Body)
	}
	if n := x.count(t, `SELECT count(*) FROM identities WHERE user_id = $1`, uid); n != 0 {
		t.Errorf("%d identities of the account left after its owner's reset", n)
	}
	if n := x.count(t, `SELECT count(*) FROM users WHERE id = $1 AND email_verified_at IS NOT NULL`, uid); n != 1 {
		t.Error("the reset did not prove the address")
	}
	if rr := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "refresh_token", "refresh_token": squat.RefreshToken}); rr.Status != http.StatusBadRequest {
		t.Errorf("the sign-in's refresh after the reset: %d %s, want 400", rr.Status, rr.Body)
	}
	// The provider's account signs in to nothing now.
	st := x.begin(t, "")
	if r := x.callback(t, x.approve(t, st), st.cookie); r.Status != http.StatusConflict || r.Problem(t).Code != problem.CodeProviderNotAuthoritative {
		t.Errorf("sign-in through the removed identity: %d %s, want 409 %s", r.Status, r.Body, problem.CodeProviderNotAuthoritative)
	}
	if tk := x.Send(t, nil, http.MethodPost, "/api/v1/auth/token", map[string]string{"grant_type": "password",
		"email": "owner@bank.example", "password": "the owner's own password"}); tk.Status != http.StatusOK {
		t.Errorf("the owner's sign-in: %d %s", tk.Status, tk.Body)
	}
}
