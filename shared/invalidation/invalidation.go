// Package invalidation names the NATS subjects and the event body coreapi
// publishes when something the proxy caches changes: a user, tenant or
// everything (auth.invalidate.>), or coreapi's signing keys
// (auth.keys.changed), the outbox's heartbeat (auth.outbox.heartbeat),
// and each relay's own beat (auth.outbox.relay).
package invalidation

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

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
	// SubjectHeartbeat is an outbox row written every
	// OUTBOX_HEARTBEAT_INTERVAL by whichever coreapi replica finds the last
	// one old and published, and published by the relays in turn like any
	// other row: a proxy that receives it knows the rows committed before
	// it went out, so one that hears none for NATS_HEARTBEAT_TIMEOUT
	// trusts its caches only for MAX_STALENESS, as when NATS is down (the
	// relays may be unable to publish while the proxy is connected). It
	// is outside auth.invalidate.>, so a proxy subscribes to it separately.
	SubjectHeartbeat = "auth.outbox.heartbeat"
	// SubjectRelay is a relay's own beat, published straight to NATS (not
	// through the outbox) every OUTBOX_HEARTBEAT_INTERVAL by each coreapi
	// relay while NATS accepts its publications, its Event naming it in
	// Relay. The heartbeat rows list the relays registered as publishing
	// (Event.Relays): a proxy that hears no beat from one of them for
	// NATS_HEARTBEAT_TIMEOUT does not receive what that relay publishes
	// (its NATS node has lost its route to the proxy's), and trusts its
	// caches only for MAX_STALENESS. Outside auth.invalidate.>.
	SubjectRelay = "auth.outbox.relay"
)

// Reasons: the Event reason of each kind of change, spelled
// "<thing>.<what happened>". They are informational (logs, debugging); no
// consumer branches on them.
const (
	ReasonMemberAdded         = "member.added"
	ReasonMemberRemoved       = "member.removed"
	ReasonRoleGranted         = "role.granted"
	ReasonRoleRevoked         = "role.revoked"
	ReasonRoleUpdated         = "role.updated"
	ReasonRoleDeleted         = "role.deleted"
	ReasonTenantRequireMFA    = "tenant.require_mfa"
	ReasonSessionRevoked      = "session.revoked"
	ReasonUserLogoutGlobal    = "user.logout_global"
	ReasonUserPasswordChanged = "user.password_changed"
	ReasonUserPasswordReset   = "user.password_reset"
	ReasonUserMFAEnabled      = "user.mfa_enabled"
	ReasonUserMFADisabled     = "user.mfa_disabled"
	ReasonUserMFAReset        = "user.mfa_reset"
	ReasonUserEmailVerified   = "user.email_verified"
	ReasonUserEmailChanged    = "user.email_changed"
	ReasonUserDeleted         = "user.deleted"
	ReasonCatalogChanged      = "permission_catalog.changed"
	ReasonAPIKeyRevoked       = "api_key.revoked"
	// ReasonKeysChanged is the reason published on SubjectKeysChanged.
	ReasonKeysChanged = "keys.changed"
	// ReasonDatabaseUnreachable is the reason of a heartbeat a relay
	// publishes straight to NATS while coreapi's database is unreachable
	// (SubjectHeartbeat).
	ReasonDatabaseUnreachable = "heartbeat.database_unreachable"
)

// ReasonMemberStatus is the reason of a membership's status change
// ("member.active", "member.disabled").
func ReasonMemberStatus(status string) string { return "member." + status }

// ReasonTenantStatus is the reason of a tenant's status change
// ("tenant.active", "tenant.suspended").
func ReasonTenantStatus(status string) string { return "tenant." + status }

// UserSubject is the subject invalidating every cached entry of one user.
func UserSubject(userID string) string { return SubjectPrefix + "user." + userID }

// TenantSubject is the subject invalidating every cached entry of a tenant.
func TenantSubject(tenantID string) string { return SubjectPrefix + "tenant." + tenantID }

// APIKeySubject is the subject invalidating one API key, named by its
// public id (the 16 characters after "tg_"): a proxy caches keys by it.
func APIKeySubject(publicID string) string { return SubjectPrefix + "apikey." + publicID }

// HeaderInvalidated is the response header in which coreapi names what a
// request invalidated: the distinct subjects of the outbox rows it wrote,
// separated by a space, in the auth.invalidate.user.<id>,
// auth.invalidate.tenant.<id>, auth.invalidate.apikey.<public id> or
// auth.invalidate.all form (all past a bound). It is an internal contract
// between coreapi and the proxy: the proxy that forwarded the request
// evicts what the header names before it answers, the NATS events
// following later, and removes the header from every answer it relays.
const HeaderInvalidated = "X-Auth-Invalidated"

// Event is the JSON body of an invalidation message.
type Event struct {
	// At is when the change committed, in unix milliseconds; the proxy
	// reports now-At as invalidation lag.
	At int64 `json:"at"`
	// Reason is informational: one of the Reason constants.
	Reason string `json:"reason,omitempty"`
	// Relay names the relay that published a SubjectRelay beat.
	Relay string `json:"relay,omitempty"`
	// Relays, on a heartbeat row (SubjectHeartbeat with a Nats-Msg-Id),
	// are the relays registered as publishing when it was written,
	// sorted: a proxy expects a SubjectRelay beat from each, and each row
	// replaces the list of the one before (absent: none, as from a coreapi
	// older than the field). A heartbeat a relay publishes straight to
	// NATS (no Nats-Msg-Id, the database unreachable) carries none and
	// leaves the list as it was.
	Relays []string `json:"relays,omitempty"`
	// RelaysUnlisted, on a heartbeat row, is how many more relays were
	// registered as publishing than the row lists (MaxRelaysListed): a
	// proxy cannot expect their beats, and calls its feed stale while a
	// row says so, as for a listed relay it does not hear.
	RelaysUnlisted int `json:"relays_unlisted,omitempty"`
	// IntervalMS, on a heartbeat row, is the OUTBOX_HEARTBEAT_INTERVAL of
	// the coreapi that wrote it, in milliseconds (absent from an older
	// one): a proxy whose heartbeat timeout is shorter than
	// MinHeartbeatTimeout of it says so.
	IntervalMS int64 `json:"interval_ms,omitempty"`
	// Keys, on a SubjectKeysChanged event, is the KeySetDigest of the
	// JWKS document the announcing coreapi serves (absent from an older
	// one): a proxy whose key set already is that document need not
	// refetch it. Every replica announces the keys it starts with, so a
	// rollout would otherwise make every proxy fetch the set once per
	// replica.
	Keys string `json:"keys,omitempty"`
}

// RelayListed is how many heartbeat intervals a relay stays listed in the
// heartbeat rows after it last registered: a look or two may come late,
// and a relay gone without deleting its row is delisted within about two
// and a half intervals.
const RelayListed = 2.5

// MinHeartbeatTimeout is the shortest heartbeat timeout a proxy can keep
// without false staleness with relays writing a heartbeat row every
// interval: rows come up to an interval apart, and a relay gone without
// deleting its row (a crash) stays listed RelayListed intervals after its
// last beat, delisted by the row after that, up to an interval later.
// Shorter, the proxy calls its feed stale (and purges its caches when it
// ends) at every such crash.
func MinHeartbeatTimeout(interval time.Duration) time.Duration {
	return time.Duration((RelayListed + 1) * float64(interval))
}

// MaxRelayLen bounds a relay's name (Event.Relay, Event.Relays): a proxy
// ignores a longer one, in a beat as in a heartbeat row's list, so that
// what it keeps stays bounded whatever is published on SubjectRelay. A
// relay named longer is not watched: a proxy never misses its beats.
const MaxRelayLen = 1024

// MaxRelaysListed bounds the relays a heartbeat row lists (Event.Relays),
// the first by name; the others are counted (Event.RelaysUnlisted). It
// bounds the coreapi replicas of one database whose beats the proxies can
// watch, and the row: MaxRelaysListed names of up to MaxRelayLen bytes fit
// well within NATS's default max_payload (1 MiB), which a row must never
// exceed (one the server refuses would stay pending, and every row behind
// it).
const MaxRelaysListed = 256

// MaxRelayIDLen bounds the name a relay is given (coreapi's
// OUTBOX_RELAY_ID): a relay that finds another process registered under
// its name appends "-" and 8 hex digits of its own, and that name too must
// stay within MaxRelayLen.
const MaxRelayIDLen = MaxRelayLen - 9

// MaxSubjectLen bounds a subject coreapi publishes: far above any id's (a
// UUID, an API key's public id), far below the 4 KiB protocol line NATS
// takes by default. A longer line makes the server close the publishing
// connection, which the client then does not reopen.
const MaxSubjectLen = 256

// ErrInvalidSubject is the error of CheckSubject.
var ErrInvalidSubject = errors.New("invalid invalidation subject")

// CheckSubject reports whether subject can go through coreapi's outbox:
// SubjectAll, SubjectKeysChanged, SubjectHeartbeat, or a user, tenant or
// API-key subject (Parse) whose id is one token (no '.', nor an empty one)
// without a wildcard ('*', '>'), white space or control character, and no
// longer than MaxSubjectLen in all. NATS refuses some of the others, one
// too long for good, and delivers the rest where no proxy can tell what they
// name (a wildcard is a literal in a published subject). The error wraps
// ErrInvalidSubject.
func CheckSubject(subject string) error {
	if len(subject) > MaxSubjectLen {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidSubject, len(subject), MaxSubjectLen)
	}
	switch subject {
	case SubjectAll, SubjectKeysChanged, SubjectHeartbeat:
		return nil
	}
	kind, id := Parse(subject)
	if kind == KindUnknown {
		return fmt.Errorf("%w: %q is not a user, tenant or API-key subject", ErrInvalidSubject, subject)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c == 0x7f || c == '*' || c == '>' {
			return fmt.Errorf("%w: %q: the id holds %q", ErrInvalidSubject, subject, c)
		}
	}
	return nil
}

// Kind of an invalidation subject.
type Kind int

// Kinds of subject.
const (
	KindUnknown Kind = iota
	KindUser
	KindTenant
	KindAll
	KindAPIKey
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
	if id, ok := strings.CutPrefix(rest, "apikey."); ok && id != "" && !strings.Contains(id, ".") {
		return KindAPIKey, id
	}
	return KindUnknown, ""
}
