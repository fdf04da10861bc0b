package lifecycle_test

import (
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/lifecycle"
)

// TestAccountAddressesAreMailDomains: the address of a new account, a new
// member, an invitation or an email change has a host name for its domain.
// An address literal ("ada@[127.0.0.1]") was taken: its mail went straight
// to that IP, past any policy on domains; so was a single label
// ("root@localhost", delivered on the relay's own host), a character no
// host name holds, or a local part over SMTP's 64 octets. Each is the
// answer to any bad address there, 422 validation_failed naming email;
// nothing is written.
func TestAccountAddressesAreMailDomains(t *testing.T) {
	t.Parallel()
	x := start(t, lifecycle.Limits{})
	owner := x.signup(t, "owner@example.com")
	for _, addr := range []string{"ada@[127.0.0.1]", "ada@[::1]", "ada@[IPv6:::1]", "ada@localhost", "ada@intranet", "ada@192.0.2.1",
		"ada@exa_mple.com", "ada@exa!mple.com", "ada@-example.com", "ada@" + strings.Repeat("x", 64) + ".example", strings.Repeat("a", 65) + "@example.com",
		`"ada"@example.com`, "ada(x)@example.com", "ada@example.com(x)", "ada@xn--zz.example"} {
		for _, req := range []apitest.Request{
			{Method: "POST", Path: "/api/v1/auth/signup", Body: map[string]string{"email": addr, "password": pw, "tenant_name": "Literal"}},
			{Method: "POST", Path: "/api/v1/users", Body: map[string]any{"email": addr}, As: &owner.id},
			{Method: "POST", Path: "/api/v1/invitations", Body: map[string]any{"email": addr, "roles": []string{"member"}}, As: &owner.id},
			{Method: "PATCH", Path: "/api/v1/users/me", Body: map[string]any{"email": addr}, As: &owner.id},
		} {
			r := x.Do(t, req)
			if r.Status != 422 {
				t.Errorf("%s %s with %q: %d, want 422; body %s", req.Method, req.Path, addr, r.Status, r.Body)
				continue
			}
			apitest.WantProblem(t, r, 422, "validation_failed")
			if p := r.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "email" {
				t.Errorf("%s %s with %q: errors %+v, want one naming email", req.Method, req.Path, addr, p.Errors)
			}
		}
	}
	// The same requests with an address of a host name pass the check
	// (the email change may then want a recent sign-in).
	for i, req := range []apitest.Request{
		{Method: "POST", Path: "/api/v1/auth/signup", Body: map[string]string{"email": "ada@mail.example.com", "password": pw, "tenant_name": "Named"}},
		{Method: "POST", Path: "/api/v1/users", Body: map[string]any{"email": "bob@b\u00fccher.example"}, As: &owner.id},
		{Method: "POST", Path: "/api/v1/invitations", Body: map[string]any{"email": "cy@123.example", "roles": []string{"member"}}, As: &owner.id},
		{Method: "PATCH", Path: "/api/v1/users/me", Body: map[string]any{"email": strings.Repeat("d", 64) + "@x.example"}, As: &owner.id},
	} {
		if r := x.Do(t, req); r.Status == 422 || r.Status >= 500 {
			t.Errorf("%d: %s %s: %d; body %s", i, req.Method, req.Path, r.Status, r.Body)
		}
	}
}
