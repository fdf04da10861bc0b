package server

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

// TestLocalEviction: the writes whose invalidation the proxy can tell
// from the request are matched as coreapi routes them, their ids parsed
// as coreapi parses them; every other write evicts nothing.
func TestLocalEviction(t *testing.T) {
	const (
		id    = "44444444-4444-4444-8444-444444444444"
		upper = "ABCDEF01-2345-4678-89AB-CDEF01234567"
		lower = "abcdef01-2345-4678-89ab-cdef01234567"
	)
	for _, tc := range []struct {
		method, path string
		want         eviction
		user         string
	}{
		{"POST", "/api/v1/auth/logout", evictCaller, ""},
		{"DELETE", "/api/v1/users/me/sessions/" + id, evictCaller, ""},
		{"PUT", "/api/v1/users/me/password", evictCaller, ""},
		{"POST", "/api/v1/users/me/mfa/totp/confirm", evictCaller, ""},
		{"DELETE", "/api/v1/users/me/mfa/totp", evictCaller, ""},
		{"PATCH", "/api/v1/users/" + id, evictUser, id},
		{"DELETE", "/api/v1/users/" + id, evictUser, id},
		{"DELETE", "/api/v1/users/" + upper, evictUser, lower},
		{"DELETE", "/api/v1/users/me", evictCaller, ""},
		{"PUT", "/api/v1/users/" + id + "/roles/admin", evictUser, id},
		{"DELETE", "/api/v1/users/" + id + "/roles/admin", evictUser, id},
		{"PUT", "/api/v1/users/me/roles/admin", evictCaller, ""},
		{"DELETE", "/api/v1/users/" + id + "/mfa", evictUser, id},
		{"DELETE", "/API/V1/Users/" + id + "/MFA", evictUser, id},
		{"PATCH", "/api/v1/roles/" + id, evictTenant, ""},
		{"DELETE", "/api/v1/roles/" + id, evictTenant, ""},
		{"PATCH", "/api/v1/tenant", evictTenant, ""},
		{"DELETE", "/api/v1/service-accounts/" + id, evictUser, id},
		{"DELETE", "/api/v1/service-accounts/" + id + "/secrets/" + upper, evictUser, id},
		{"DELETE", "/api/v1/api-keys/" + id, evictKey, id},
		{"DELETE", "/api/v1/api-keys/" + upper, evictKey, lower},
		{"DELETE", "/api/v1/users/me/api-keys/" + id, evictOwnKey, id},
		{"DELETE", "/API/V1/Users/Me/Api-Keys/" + upper, evictOwnKey, lower},

		// PATCH /users/me is the caller's profile: coreapi announces nothing.
		{"PATCH", "/api/v1/users/me", evictNothing, ""},
		// Ids that are not coreapi's.
		{"DELETE", "/api/v1/users/not-a-uuid", evictNothing, ""},
		{"DELETE", "/api/v1/users/ME", evictNothing, ""},
		{"DELETE", "/api/v1/users/" + strings.ReplaceAll(id, "-", ""), evictNothing, ""},
		{"DELETE", "/api/v1/users/{" + id + "}", evictNothing, ""},
		{"DELETE", "/api/v1/users/urn:uuid:" + id, evictNothing, ""},
		{"DELETE", "/api/v1/users/" + id[:35] + "g", evictNothing, ""},
		{"DELETE", "/api/v1/users/" + id[:8] + "_" + id[9:], evictNothing, ""},
		{"DELETE", "/api/v1/users/" + id + "0", evictNothing, ""},
		{"PATCH", "/api/v1/roles/admin", evictNothing, ""},
		{"DELETE", "/api/v1/service-accounts/" + id + "/secrets/x", evictNothing, ""},
		{"DELETE", "/api/v1/api-keys/tg_" + id, evictNothing, ""},
		{"DELETE", "/api/v1/api-keys/" + strings.ReplaceAll(id, "-", ""), evictNothing, ""},
		{"DELETE", "/api/v1/users/me/api-keys/not-a-uuid", evictNothing, ""},
		// Another user's keys are not a route of coreapi's.
		{"DELETE", "/api/v1/users/" + id + "/api-keys/" + id, evictNothing, ""},
		// Writes that change no projection, or that the path cannot tell.
		{"POST", "/api/v1/users", evictNothing, ""},
		{"POST", "/api/v1/roles", evictNothing, ""},
		{"POST", "/api/v1/users/me/mfa/totp", evictNothing, ""},
		{"POST", "/api/v1/users/me/mfa/recovery-codes", evictNothing, ""},
		{"POST", "/api/v1/service-accounts/" + id + "/secrets", evictNothing, ""},
		{"POST", "/api/v1/api-keys", evictNothing, ""},
		{"POST", "/api/v1/users/me/api-keys", evictNothing, ""},
		{"PATCH", "/api/v1/api-keys/" + id, evictNothing, ""},
		{"DELETE", "/api/v1/api-keys/" + id + "/x", evictNothing, ""},
		{"DELETE", "/api/v1/invitations/" + id, evictNothing, ""},
		// Other methods, shapes and places.
		{"GET", "/api/v1/users/" + id, evictNothing, ""},
		{"POST", "/api/v1/users/" + id, evictNothing, ""},
		{"PUT", "/api/v1/users/" + id, evictNothing, ""},
		{"PATCH", "/api/v1/users/" + id + "/roles/admin", evictNothing, ""},
		{"DELETE", "/api/v1/users/" + id + "/roles", evictNothing, ""},
		{"DELETE", "/api/v1/users/" + id + "/roles/admin/x", evictNothing, ""},
		{"DELETE", "/api/v1/users/" + id + "/mfa/totp", evictNothing, ""},
		{"DELETE", "/api/v1/tenant", evictNothing, ""},
		{"DELETE", "/api/v1/users/me/mfa/totp/confirm", evictNothing, ""},
		{"DELETE", "/api/v2/users/" + id, evictNothing, ""},
		{"DELETE", "/notes/users/" + id, evictNothing, ""},
		{"DELETE", "/api/v1/", evictNothing, ""},
		{"DELETE", "/api/v1/a/b/c/d/e/f/g", evictNothing, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			got, user := localEviction([]byte(tc.method), []byte(tc.path))
			if got != tc.want || user != tc.user {
				t.Fatalf("localEviction = %d %q, want %d %q", got, user, tc.want, tc.user)
			}
		})
	}
}

// FuzzParseUUID: parseUUID takes what coreapi's ids.Parse takes (the
// 36-character spellings uuid.Parse accepts) and gives its canonical form.
func FuzzParseUUID(f *testing.F) {
	for _, s := range []string{"44444444-4444-4444-8444-444444444444", "ABCDEF01-2345-4678-89AB-CDEF01234567",
		"urn:uuid:44444444-4444-4444-8444-44444444", "{44444444-4444-4444-8444-4444444444}", "me", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseUUID(s)
		u, err := uuid.Parse(s)
		want := len(s) == 36 && err == nil
		if ok != want || ok && got != u.String() {
			t.Fatalf("parseUUID(%q) = %q, %v; uuid.Parse: %v, %v", s, got, ok, u, err)
		}
	})
}
