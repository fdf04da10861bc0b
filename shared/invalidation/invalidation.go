// Package invalidation names the NATS subjects and the event body coreapi
// publishes when something the proxy caches changes.
package invalidation

import "strings"

// Subjects. A proxy subscribes to SubjectWildcard.
const (
	SubjectPrefix   = "auth.invalidate."
	SubjectWildcard = "auth.invalidate.>"
	SubjectAll      = "auth.invalidate.all"
)

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
