// Package accountroutes is the one table of coreapi's routes that some
// principals may not use, whatever permissions they carry: the routes that
// act on a person's own account (sign-in, sessions, credentials, second
// factor, email address, invitations, personal API keys, linked sign-in
// providers, the account's deletion), the creation
// of API keys, service accounts, client secrets and members, and the reset
// of a member's second factor. authproxy refuses these before forwarding and coreapi
// refuses them again behind it (defense in depth: a proxy bug or a
// misconfigured rules file must not turn a leaked read-only key into an
// account takeover). Both answer 403 problem+json with code
// principal_not_allowed.
//
// An API key is refused on all of them: a leaked key must not change the
// email and then reset the password, sign the user out, or accept an
// invitation on their behalf, and a key never creates a key (it would mint
// a successor without its expiry). Nor does it list the tenants of the
// person who created it: it acts in its own tenant only. A service account is refused on the
// routes that only make sense for a person: it has no password, second
// factor, sessions, real address or invitations, and its personal keys
// would outlive its deletion. Neither adds or invites a member: the person
// made would outlive the key, the secret and the service account. Neither
// resets a member's second factor: that is a recovery step for a person,
// decided by a person, not something a leaked secret may do to every
// member.
package accountroutes

import (
	"strings"

	"github.com/tollgate-auth/tollgate/shared/identity"
)

// Refused principals of a rule (a bit set).
const (
	APIKey  = 1 << iota // identity.PrincipalAPIKey
	Service             // identity.PrincipalService
)

// Rule is one refused route.
type Rule struct {
	// Method is the HTTP method (a GET rule covers HEAD too).
	Method string
	// Path is coreapi's route pattern as registered, "/api/v1/..."; a
	// ":name" segment matches any one segment.
	Path string
	// Refuse is the set of refused principals.
	Refuse int
}

// Rules is the table. coreapi's tests check that every rule names a
// registered route and that every signed-in route under /api/v1/auth and
// /api/v1/users/me is either here or deliberately open to keys and
// service accounts.
var Rules = []Rule{
	// Sign-in and sessions.
	{"POST", "/api/v1/auth/token", APIKey}, // a step-up needs a person's session
	{"POST", "/api/v1/auth/logout", APIKey},
	{"POST", "/api/v1/auth/switch-tenant", APIKey | Service},
	{"GET", "/api/v1/users/me/sessions", APIKey | Service},
	{"DELETE", "/api/v1/users/me/sessions/:id", APIKey | Service},
	// Credentials and the second factor.
	{"PUT", "/api/v1/users/me/password", APIKey | Service},
	{"POST", "/api/v1/users/me/mfa/totp", APIKey | Service},
	{"POST", "/api/v1/users/me/mfa/totp/confirm", APIKey | Service},
	{"DELETE", "/api/v1/users/me/mfa/totp", APIKey | Service},
	{"POST", "/api/v1/users/me/mfa/recovery-codes", APIKey | Service},
	// The sign-in providers linked to the account: a person's ways in.
	{"GET", "/api/v1/users/me/identities", APIKey | Service},
	{"POST", "/api/v1/users/me/identities/:provider", APIKey | Service},
	{"POST", "/api/v1/users/me/identities/:provider/confirm", APIKey | Service},
	{"DELETE", "/api/v1/users/me/identities/:provider", APIKey | Service},
	// The address.
	{"PATCH", "/api/v1/users/me", APIKey | Service},
	// The account itself: its deletion ends every way in.
	{"DELETE", "/api/v1/users/me/account", APIKey | Service},
	{"POST", "/api/v1/auth/verify-email/resend", APIKey | Service},
	// A bearer proves that a verification comes from the account's holder:
	// a key must not vouch for the mailbox in its person's place.
	{"POST", "/api/v1/auth/verify-email", APIKey | Service},
	// Invitations.
	{"GET", "/api/v1/users/me/invitations", APIKey | Service},
	{"POST", "/api/v1/invitations/accept", APIKey | Service},
	// A person's tenants: a key acts in its own tenant only, and the list
	// would tell whoever holds it the other tenants of the person who
	// created it, their names and the person's roles there. A service
	// account has one tenant, its own.
	{"GET", "/api/v1/users/me/tenants", APIKey},
	// API keys: a key never creates one; personal keys are a person's.
	{"POST", "/api/v1/api-keys", APIKey},
	{"GET", "/api/v1/users/me/api-keys", Service},
	{"POST", "/api/v1/users/me/api-keys", APIKey | Service},
	{"DELETE", "/api/v1/users/me/api-keys/:id", Service},
	// Service accounts: a client secret made with a key would outlive the
	// key's revocation and expiry, as a key made with a key would.
	{"POST", "/api/v1/service-accounts", APIKey},
	{"POST", "/api/v1/service-accounts/:id/secrets", APIKey},
	// New members: an account added with a password its maker chose, or
	// invited to a mailbox of its choosing, is a person who outlives the
	// key's revocation and expiry, the secret's deletion and the service
	// account's, and who may then make keys, service accounts and secrets.
	{"POST", "/api/v1/users", APIKey | Service},
	{"POST", "/api/v1/invitations", APIKey | Service},
	// A resend mails a new link and makes its caller the sender the
	// accept checks: it revives an invitation (one whose sender left, one
	// expired) as sending it would.
	{"POST", "/api/v1/invitations/:id/resend", APIKey | Service},
	// A member's second factor: its reset is a recovery step for a
	// person, decided by a person; a leaked secret or key must not strip
	// every member's factor (and sign them out).
	{"DELETE", "/api/v1/users/:id/mfa", APIKey | Service},
}

// Bit returns principal's bit in Rule.Refuse (0: user, anonymous and
// unknown principals, which no rule refuses).
func Bit(principal string) int {
	switch principal {
	case identity.PrincipalAPIKey:
		return APIKey
	case identity.PrincipalService:
		return Service
	}
	return 0
}

// Find returns the rule registered for exactly method and pattern (as
// coreapi registers its routes), or nil.
func Find(method, pattern string) *Rule {
	for i := range Rules {
		if r := &Rules[i]; r.Method == method && r.Path == pattern {
			return r
		}
	}
	return nil
}

// Index returns the index in Rules of the rule refusing principal to
// call method on path (a normalized request path: no duplicate or
// trailing slashes), or -1. It does not allocate.
func Index(principal string, method, path []byte) int {
	bit := Bit(principal)
	if bit == 0 {
		return -1
	}
	m := string(method)
	if m == "HEAD" {
		m = "GET"
	}
	for i := range Rules {
		r := &Rules[i]
		if r.Refuse&bit != 0 && r.Method == m && match(r.Path, path) {
			return i
		}
	}
	return -1
}

// Detail is the problem detail of r refusing principal.
func Detail(principal string, r *Rule) string {
	if r.Method == "POST" && (r.Path == "/api/v1/users" || r.Path == "/api/v1/invitations" || r.Path == "/api/v1/invitations/:id/resend") {
		return "API keys and service accounts cannot add or invite members: the account would outlive the key or the service account; use a person's access token"
	}
	if r.Method == "DELETE" && r.Path == "/api/v1/users/:id/mfa" {
		return "API keys and service accounts cannot reset a member's second factor: a reset is a recovery step for a person, decided by a person; use a person's access token"
	}
	if principal == identity.PrincipalService {
		return "service accounts cannot use this route: it acts on a person's own sign-in, sessions, credentials, address, invitations or API keys"
	}
	if r.Method == "POST" && (r.Path == "/api/v1/api-keys" || r.Path == "/api/v1/users/me/api-keys") {
		return "an API key cannot create API keys"
	}
	if r.Method == "GET" && r.Path == "/api/v1/users/me/tenants" {
		return "an API key acts in its own tenant only and cannot list the other tenants of the person who created it; use an access token"
	}
	if r.Method == "POST" && strings.HasPrefix(r.Path, "/api/v1/service-accounts") {
		return "an API key cannot create service accounts or their secrets: they would outlive the key"
	}
	return "API keys cannot change sign-in, sessions, credentials, invitations or the account's email; use an access token"
}

// match reports whether path matches pattern segment by segment, a
// ":name" pattern segment matching any one non-empty segment.
func match(pattern string, path []byte) bool {
	i, j := 0, 0
	for i < len(pattern) && j < len(path) {
		if pattern[i] == ':' && i > 0 && pattern[i-1] == '/' {
			for i < len(pattern) && pattern[i] != '/' {
				i++
			}
			start := j
			for j < len(path) && path[j] != '/' {
				j++
			}
			if j == start {
				return false
			}
			continue
		}
		if pattern[i] != path[j] {
			return false
		}
		i, j = i+1, j+1
	}
	return i == len(pattern) && j == len(path)
}
