// Package invalidation names the NATS subjects and the event body coreapi
// publishes when something the proxy caches changes: a user, tenant or
// everything (auth.invalidate.>), or coreapi's signing keys
// (auth.keys.changed).
package invalidation

import "strings"

// Subjects. A proxy subscribes to SubjectWildcard.
const (
	SubjectPrefix   = "auth.invalidate."
	SubjectWildcard = "auth.invalidate.>"
	SubjectAll      = "auth.invalidate.all"
	// SubjectKeysChanged announces that a coreapi's set of published
	// signing keys changed (a key file added or removed): proxies refetch
	// the JWKS at once, bypassing the unknown-kid cooldown, so tokens of a
	// removed key stop verifying. It is outside auth.invalidate.>, so a
	// proxy subscribes to it separately.
	SubjectKeysChanged = "auth.keys.changed"
)

// ReasonKeysChanged is the Event reason published on SubjectKeysChanged.
const ReasonKeysChanged = "keys_changed"

// UserSubject is the subject invalidating every cached entry of one user.
func UserSubject(userID string) string { return SubjectPrefix + "user." + userID }

// TenantSubject is the subject invalidating every cached entry of a tenant.
func TenantSubject(tenantID string) string { return SubjectPrefix + "tenant." + tenantID }

// Event is the JSON body of an invalidation message.
type Event struct {
	// At is when the change committed, in unix milliseconds; the proxy
	// reports now-At as invalidation lag.
	At int64 `json:"at"`
	// Reason is informational ("role_revoked", "logout_global", ...).
	Reason string `json:"reason,omitempty"`
}

// Kind of an invalidation subject.
type Kind int

// Kinds of subject.
const (
	KindUnknown Kind = iota
	KindUser
	KindTenant
	KindAll
)

// Parse splits a subject into its kind and id.
func Parse(subject string) (Kind, string) {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok {
		return KindUnknown, ""
	}
	if rest == "all" {
		return KindAll, ""
	}
	if id, ok := strings.CutPrefix(rest, "user."); ok && id != "" && !strings.Contains(id, ".") {
		return KindUser, id
	}
	if id, ok := strings.CutPrefix(rest, "tenant."); ok && id != "" && !strings.Contains(id, ".") {
		return KindTenant, id
	}
	return KindUnknown, ""
}
