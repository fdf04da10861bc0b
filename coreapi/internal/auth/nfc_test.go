package auth_test

import (
	"net/http"
	"testing"
)

// The one address josé@example.com, its é precomposed (U+00E9, NFC) and
// decomposed (e + U+0301, NFD).
const (
	joseNFC = "jos\u00e9@example.com"
	joseNFD = "jose\u0301@example.com"
)

// TestSignupAndSignInCompareNFC: an address is one account whatever the
// Unicode composition of its spelling. A signup with the decomposed
// spelling of an existing account's address is taken, and a sign-in with
// it reaches that account. A new account stores the composed (NFC) form.
func TestSignupAndSignInCompareNFC(t *testing.T) {
	t.Parallel()
	e := start(t, cheap)
	su := e.signup(t, joseNFC, "Mine")
	for _, spelling := range []string{joseNFD, "JOSE\u0301@example.com", " " + joseNFD + " "} {
		r := e.Send(t, nil, http.MethodPost, "/api/v1/auth/signup",
			map[string]string{"email": spelling, "password": pw, "tenant_name": "Again"})
		if r.Status != http.StatusConflict || r.Problem(t).Code != "email_taken" {
			t.Errorf("signup %+q after %+q: %d %s, want 409 email_taken", spelling, joseNFC, r.Status, r.Body)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM users`); n != 1 {
		t.Errorf("%d accounts for one address", n)
	}
	for _, spelling := range []string{joseNFD, "JOSE\u0301@example.com", "JOS\u00c9@example.com"} {
		if tk := e.login(t, spelling); tk.TenantID != su.TenantID {
			t.Errorf("sign-in as %+q: tenant %s, want %s", spelling, tk.TenantID, su.TenantID)
		}
	}
	// The form's username too.
	if r := e.token(t, map[string]string{"grant_type": "password", "username": joseNFD, "password": pw}); r.Status != http.StatusOK {
		t.Errorf("sign-in with the NFD username: %d %s", r.Status, r.Body)
	}

	// A decomposed spelling is stored composed, and answered so.
	const zoeNFC, zoeNFD = "zo\u00eb@example.com", "zoe\u0308@example.com"
	tk := e.signup(t, zoeNFD, "Zoe")
	if n := e.count(t, `SELECT count(*) FROM users WHERE email = $1`, zoeNFC); n != 1 {
		t.Errorf("an NFD signup is not stored in NFC")
	}
	if got := e.login(t, zoeNFC); got.TenantID != tk.TenantID {
		t.Errorf("sign-in as the NFC spelling of an NFD signup: tenant %s, want %s", got.TenantID, tk.TenantID)
	}
}
