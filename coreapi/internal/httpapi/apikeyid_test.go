package httpapi_test

import (
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apitest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestAPIKeyIDKeptApartFromTheSession: the X-Auth-Session-Id of an
// api_key request names the key. Handlers read it as APIKeyOf, never as
// the caller's session (IdentityOf's SessionID and SessionOf are empty),
// so that nothing that looks a session up takes a key's id for one, even
// the id of one of the user's live sessions; a user's session stays its
// session, and names no key.
func TestAPIKeyIDKeptApartFromTheSession(t *testing.T) {
	t.Parallel()
	type caller struct {
		Session   string `json:"session"`
		SessionOf string `json:"session_of"`
		APIKey    string `json:"api_key"`
	}
	e := start(t, apitest.Options{AllowUndocumented: true, Configure: func(opts *httpapi.Options) {
		opts.Register = append(opts.Register, func(rt httpapi.Routes) {
			rt.Protected.Get("/echo/caller", func(c *fiber.Ctx) error {
				return c.JSON(caller{Session: httpapi.IdentityOf(c).SessionID, SessionOf: httpapi.SessionOf(c), APIKey: httpapi.APIKeyOf(c)})
			})
		})
	}})
	ten := e.SeedTenant(t, "Acme")
	user := e.SeedUserIn(t, ten.ID, "key-id@acme.test", "owner")
	user.SessionID = e.SeedSession(t, user.UserID, user.TenantID)
	key := user
	key.Principal, key.Roles = identity.PrincipalAPIKey, nil
	for _, tc := range []struct {
		name string
		as   identity.Identity
		want caller
	}{
		{"user", user, caller{Session: user.SessionID, SessionOf: user.SessionID}},
		{"api key", with(key, "0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c"), caller{APIKey: "0b6f1c2e-6a1d-4f0e-9c3b-2d7e8f9a0b1c"}},
		{"api key naming a live session", with(key, user.SessionID), caller{APIKey: user.SessionID}},
		{"api key naming none", with(key, ""), caller{}},
	} {
		r := e.Do(t, apitest.Request{Method: "GET", Path: "/api/v1/echo/caller", As: &tc.as})
		apitest.WantStatus(t, r, 200)
		var got caller
		r.JSON(t, &got)
		if got != tc.want {
			t.Errorf("%s: handlers saw %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// with is id with session field sid.
func with(id identity.Identity, sid string) identity.Identity {
	id.SessionID = sid
	return id
}
