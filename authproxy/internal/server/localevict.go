package server

import (
	"strings"

	"github.com/gofiber/fiber/v2"
)

// eviction is what a write coreapi answered 2xx evicts at once at the proxy
// that forwarded it: what the write's own invalidation, still on its way
// over NATS, will evict (docs/architecture.md, "what changes trigger which
// event").
type eviction uint8

const (
	evictNothing eviction = iota
	// evictCaller: the caller's projections (auth.invalidate.user.<caller>).
	evictCaller
	// evictUser: the projections of the user the path names.
	evictUser
	// evictTenant: the projections of the caller's tenant
	// (auth.invalidate.tenant.<tenant>), the tenant of the verified
	// token, never one the request names.
	evictTenant
	// evictKey: the API key of the caller's tenant whose key id the path
	// names (DELETE /api-keys/{id}: any key of the tenant).
	evictKey
	// evictOwnKey: the caller's own personal key in the caller's tenant
	// whose key id the path names (DELETE /users/me/api-keys/{id}).
	evictOwnKey
)

// apiPrefix is where coreapi's routes lie.
const apiPrefix = "/api/v1/"

// maxWriteSegments is the most segments after apiPrefix of a write that
// evicts (users/me/mfa/totp/confirm).
const maxWriteSegments = 5

// localEviction reports what a coreapi write, method on the normalized
// path (no repeated or trailing slash), evicts once answered 2xx, and for
// evictUser the user's id, for evictKey and evictOwnKey the key's id, in
// canonical (lower-case) form:
//
//   - a logout, a session revocation, a password change (endsSession), a
//     second factor confirmed or removed by its owner
//     (POST /users/me/mfa/totp/confirm, DELETE /users/me/mfa/totp): the
//     caller;
//   - a member disabled or enabled (PATCH /users/{id}), removed
//     (DELETE /users/{id}, which also revokes their keys and sessions in
//     the tenant), granted or revoked a role (PUT, DELETE
//     /users/{id}/roles/{role}), their second factor reset
//     (DELETE /users/{id}/mfa); a service account deleted
//     (DELETE /service-accounts/{id}) or one of its secrets
//     (DELETE /service-accounts/{id}/secrets/{secret_id}): that user;
//   - a role edited or deleted (PATCH, DELETE /roles/{id}), the tenant
//     edited (PATCH /tenant: coreapi announces a change of its MFA
//     policy, and the proxy cannot tell that from the path): the caller's
//     tenant;
//   - an API key revoked by a tenant admin (DELETE /api-keys/{id}): that
//     key, if it acts in the caller's tenant; by its owner
//     (DELETE /users/me/api-keys/{id}): that key, if it is the caller's
//     personal key in the caller's tenant. The path names the key's id,
//     not its public id, by which the proxy caches it
//     (projection.Cache.InvalidateKeyID).
//
// An id is what coreapi takes: a UUID in its 36-character form, in either
// case, or, where coreapi reads the user's id with "me" for the caller
// (the /users/{id} routes), "me"; a path holding anything else evicts
// nothing. Literal segments are compared ignoring case, as endsSession
// does (coreapi routes case-sensitively, so another spelling is never
// answered 2xx). PATCH /users/me is coreapi's own-profile edit, which
// announces nothing.
func localEviction(method, path []byte) (eviction, string) {
	if endsSession(method, path) {
		return evictCaller, ""
	}
	if len(path) <= len(apiPrefix) || !strings.EqualFold(b2s(path[:len(apiPrefix)]), apiPrefix) {
		return evictNothing, ""
	}
	var seg [maxWriteSegments]string
	n := 0
	for s := b2s(path[len(apiPrefix):]); ; n++ {
		if n == len(seg) {
			return evictNothing, ""
		}
		var more bool
		seg[n], s, more = strings.Cut(s, "/")
		if !more {
			n++
			break
		}
	}
	is := func(i int, lit string) bool { return strings.EqualFold(seg[i], lit) }
	m := b2s(method)
	switch {
	case n == 1 && m == fiber.MethodPatch && is(0, "tenant"):
		return evictTenant, ""
	case n == 2 && (m == fiber.MethodPatch || m == fiber.MethodDelete) && is(0, "roles"):
		if _, ok := parseUUID(seg[1]); ok {
			return evictTenant, ""
		}
	case n == 2 && m == fiber.MethodPatch && is(0, "users") && seg[1] != "me",
		n == 2 && m == fiber.MethodDelete && is(0, "users"),
		n == 4 && (m == fiber.MethodPut || m == fiber.MethodDelete) && is(0, "users") && is(2, "roles"),
		n == 3 && m == fiber.MethodDelete && is(0, "users") && is(2, "mfa"):
		return userParam(seg[1])
	case n == 4 && m == fiber.MethodDelete && is(0, "users") && is(1, "me") && is(2, "mfa") && is(3, "totp"),
		n == 5 && m == fiber.MethodPost && is(0, "users") && is(1, "me") && is(2, "mfa") && is(3, "totp") && is(4, "confirm"):
		return evictCaller, ""
	case n == 2 && m == fiber.MethodDelete && is(0, "api-keys"):
		if id, ok := parseUUID(seg[1]); ok {
			return evictKey, id
		}
	case n == 4 && m == fiber.MethodDelete && is(0, "users") && is(1, "me") && is(2, "api-keys"):
		if id, ok := parseUUID(seg[3]); ok {
			return evictOwnKey, id
		}
	case n == 2 && m == fiber.MethodDelete && is(0, "service-accounts"):
		if id, ok := parseUUID(seg[1]); ok {
			return evictUser, id
		}
	case n == 4 && m == fiber.MethodDelete && is(0, "service-accounts") && is(2, "secrets"):
		if id, ok := parseUUID(seg[1]); ok {
			if _, ok := parseUUID(seg[3]); ok {
				return evictUser, id
			}
		}
	}
	return evictNothing, ""
}

// userParam reads a user id of a /users/{id} path as coreapi does
// (httpapi.UserIDParam): "me" is the caller, else a UUID.
func userParam(s string) (eviction, string) {
	if s == "me" {
		return evictCaller, ""
	}
	if id, ok := parseUUID(s); ok {
		return evictUser, id
	}
	return evictNothing, ""
}

// parseUUID returns s in lower case when it is a UUID in its 36-character
// hyphenated form, in either case: the spelling coreapi's ids.Parse
// accepts (not the braces, "urn:uuid:" or bare hex uuid.Parse also takes),
// and the form in which it names the user in the invalidation.
func parseUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	var b [36]byte
	for i := range len(s) {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return "", false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			c += 'a' - 'A'
		default:
			return "", false
		}
		b[i] = c
	}
	return string(b[:]), true
}
