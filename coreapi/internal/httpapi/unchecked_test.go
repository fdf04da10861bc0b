package httpapi_test

import (
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestUncheckedMachineWritesCounted: a proxy of the first release
// forwards an API key's and a service token's requests without the key's
// or the client secret's id, so their writes cannot be checked against a
// revocation (liveCredential). Each is counted by principal in
// coreapi_machine_writes_unchecked_total, which stays still once every
// proxy names them: the operator's sign that every proxy is upgraded.
// Writes that name their credential, reads, and a person's writes are not
// counted.
func TestUncheckedMachineWritesCounted(t *testing.T) {
	t.Parallel()
	e := start(t, apitest.Options{AllowUndocumented: true, Configure: func(opts *httpapi.Options) {
		opts.Register = append(opts.Register, func(rt httpapi.Routes) {
			ok := func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusNoContent) }
			rt.Protected.Get("/echo/write", ok)
			rt.Protected.Post("/echo/write", ok)
		})
	}})
	ten := e.SeedTenant(t, "Acme")
	user := e.SeedUserIn(t, ten.ID, "unchecked@acme.test", "owner")
	key := e.AsKey(t, user) // names its key, as the proxies of this release do
	oldKey := with(key, "")
	token := with(user, "")
	token.Principal = identity.PrincipalService
	const name = "coreapi_machine_writes_unchecked_total"
	counted := func(principal string) float64 {
		t.Helper()
		return metricValue(t, e, name, `principal="`+principal+`"`)
	}
	for _, tc := range []struct {
		name, method string
		as           identity.Identity
		key, service float64
	}{
		{"a person's write", "POST", user, 0, 0},
		{"a key's write naming it", "POST", key, 0, 0},
		{"a key's read naming none", "GET", oldKey, 0, 0},
		{"a key's write naming none", "POST", oldKey, 1, 0},
		{"a service token's write naming no secret", "POST", token, 1, 1},
		{"another of each", "POST", oldKey, 2, 1},
	} {
		apitest.WantStatus(t, e.Do(t, apitest.Request{Method: tc.method, Path: "/api/v1/echo/write", As: &tc.as}), 204)
		if k, s := counted("api_key"), counted("service"); k != tc.key || s != tc.service {
			t.Errorf("after %s: %v key and %v service writes counted, want %v and %v", tc.name, k, s, tc.key, tc.service)
		}
	}
}
