package oauth_test

import (
	"net/http"
	"testing"

	"github.com/tollgate-auth/tollgate/shared/problem"
)

// TestProviderAccountWithAnUnprovenAddressEntersNothing: account takeover
// by pre-registration at the provider. Someone opens an account at a
// configured provider with the address of an existing, verified account
// here, which the provider has not verified (email_verified false, or not
// a JSON true), and signs in through it: the sign-in is refused (403
// email_not_verified) before the account is looked up, in any letter case
// of the address, so nothing is linked, no session opened, no hand-over
// code made and no notice mailed; the owner's own sign-in stays as it was.
func TestProviderAccountWithAnUnprovenAddressEntersNothing(t *testing.T) {
	x := start(t)
	owner := x.signedInOwner(t, "owner@example.com")
	notices := x.count(t, `SELECT count(*) FROM mail_queue`)
	for _, tc := range []struct {
		name, email string
		claim       any // email_verified as the ID token holds it; nil: the idp's bool
	}{
		{"email_verified false", "owner@example.com", nil},
		{"email_verified false, another letter case", "Owner@Example.com", nil},
		{"email_verified as the string true", "owner@example.com", "true"},
		{"email_verified absent", "owner@example.com", "absent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x.provide("squatter-subject", tc.email, false)
			x.idp.Mu.Lock()
			switch tc.claim {
			case nil:
				x.idp.Claims = nil
			case "absent":
				x.idp.Claims = map[string]any{"email_verified": nil}
			default:
				x.idp.Claims = map[string]any{"email_verified": tc.claim}
			}
			x.idp.Mu.Unlock()
			st := x.begin(t, "")
			r := x.callback(t, x.approve(t, st), st.cookie)
			if r.Status != http.StatusForbidden || r.Problem(t).Code != problem.CodeEmailNotVerified {
				t.Fatalf("sign-in with the owner's unproven address: %d %s, want 403 %s", r.Status, r.Body, problem.CodeEmailNotVerified)
			}
		})
	}
	x.idp.Mu.Lock()
	x.idp.Claims = nil
	x.idp.Mu.Unlock()
	if n := x.count(t, `SELECT count(*) FROM identities`); n != 0 {
		t.Errorf("%d identities linked", n)
	}
	if n := x.count(t, `SELECT count(*) FROM sessions WHERE user_id = $1`, owner.UserID); n != 1 {
		t.Errorf("%d sessions of the owner's account, want only the owner's own", n)
	}
	if n := x.count(t, `SELECT count(*) FROM oauth_handovers`); n != 0 {
		t.Errorf("%d hand-over codes made", n)
	}
	if n := x.count(t, `SELECT count(*) FROM mail_queue`); n != notices {
		t.Errorf("%d mails queued, want none", n-notices)
	}
	if n := x.count(t, `SELECT count(*) FROM users`); n != 1 {
		t.Errorf("%d accounts, want the owner's only", n)
	}
}
