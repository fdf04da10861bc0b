// Package audit records who changed what in a tenant (written in the same
// transaction as the change) and lists those records newest first.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
)

// Actions: the audit_events.action values, read back by GET /audit and by
// operators filtering the table. A new kind of record adds its name here.
const (
	ActionTenantCreated     = "tenant.created"
	ActionTenantUpdated     = "tenant.updated"
	ActionTenantSuspended   = "tenant.suspended"
	ActionTenantReactivated = "tenant.reactivated"

	ActionMemberAdded       = "member.added"
	ActionMemberUpdated     = "member.updated"
	ActionMemberRemoved     = "member.removed"
	ActionMemberRoleGranted = "member.role_granted"
	ActionMemberRoleRevoked = "member.role_revoked"

	ActionRoleCreated = "role.created"
	ActionRoleUpdated = "role.updated"
	ActionRoleDeleted = "role.deleted"

	ActionInvitationCreated  = "invitation.created"
	ActionInvitationRevoked  = "invitation.revoked"
	ActionInvitationResent   = "invitation.resent"
	ActionInvitationAccepted = "invitation.accepted"

	ActionUserProfileUpdated              = "user.profile_updated"
	ActionUserEmailChangeRequested        = "user.email_change_requested"
	ActionUserEmailChanged                = "user.email_changed"
	ActionUserEmailVerified               = "user.email_verified"
	ActionUserVerificationSent            = "user.verification_sent"
	ActionUserLogoutGlobal                = "user.logout_global"
	ActionUserPasswordChanged             = "user.password_changed"
	ActionUserPasswordResetRequested      = "user.password_reset_requested"
	ActionUserPasswordReset               = "user.password_reset"
	ActionUserMFAEnabled                  = "user.mfa_enabled"
	ActionUserMFADisabled                 = "user.mfa_disabled"
	ActionUserMFAReset                    = "user.mfa_reset"
	ActionUserMFACodeFailed               = "user.mfa_code_failed"
	ActionUserMFARecoveryCodeUsed         = "user.mfa_recovery_code_used"
	ActionUserMFARecoveryCodesRegenerated = "user.mfa_recovery_codes_regenerated"
	// ActionUserUnverifiedAccessCleared: a password reset proved an
	// address the account had never proven, and ended what whoever held
	// the password before could have left (API keys, service-account
	// secrets, the second factor, pending invitations); data says what.
	ActionUserUnverifiedAccessCleared = "user.unverified_access_cleared"
	// ActionUserIdentityLinked: an external (OIDC) identity was linked to
	// an existing account by its verified address; it signs in to the
	// account from then on.
	ActionUserIdentityLinked = "user.identity_linked"
	// ActionUserIdentityUnlinked: the account's owner removed the
	// identities of a provider (DELETE /users/me/identities/{provider});
	// they no longer sign in to it. data names the provider and subjects.
	ActionUserIdentityUnlinked = "user.identity_unlinked"
	// ActionUserDeleted: the account was deleted (DELETE /users/me/account by its
	// owner, data.by "self"; `coreapi users delete`, data.by "operator"),
	// written in each tenant it belonged to. The events it caused keep its
	// id as their actor (migration 00020).
	ActionUserDeleted = "user.deleted"

	ActionAPIKeyCreated = "api_key.created"
	ActionAPIKeyRevoked = "api_key.revoked"
	// ActionAPIKeyUsedAfterRevocation: the right secret of a revoked key
	// was presented (a leaked key still in use somewhere).
	ActionAPIKeyUsedAfterRevocation = "api_key.used_after_revocation"

	// ActionRefreshTokenReused: a refresh token was presented again after
	// its rotation's grace window (a stolen token, or a client that kept
	// an old one), and its session was revoked.
	ActionRefreshTokenReused = "session.refresh_token_reused"
	// ActionHandoverCodeReused: an OAuth hand-over code was presented
	// again after its exchange (a stolen code, or the app's exchange
	// coming after a thief's), and the session it opened was revoked.
	ActionHandoverCodeReused = "session.handover_code_reused"
	// ActionSessionRevoked: a user signed one of their sessions out
	// (DELETE /users/me/sessions/{id}), audited in the session's tenant.
	ActionSessionRevoked = "session.revoked"
)

// Target types of audit events: what an event's TargetID names.
const (
	TargetUser       = "user"
	TargetRole       = "role"
	TargetTenant     = "tenant"
	TargetInvitation = "invitation"
	TargetSession    = "session"
)

// apiKeyKey is the context key of the API key a request acts through.
type apiKeyKey struct{}

// apiKeyActor is the API key (KeyID) a request is authenticated by and
// the user it acts as.
type apiKeyActor struct{ userID, keyID string }

// WithAPIKey returns ctx for a request authenticated by the API key keyID,
// which acts as userID: every event written under it whose actor is userID
// records the key (audit_events.api_key_id, migration 00062), so that the
// log tells which key made a change, not only whose it was. The request's
// context carries it, as it carries the outbox collector, so that no write
// of an audit event can leave it out.
func WithAPIKey(ctx context.Context, userID, keyID string) context.Context {
	return context.WithValue(ctx, apiKeyKey{}, apiKeyActor{userID: userID, keyID: keyID})
}

// APIKeyOf is the API key (its id) through which actor acts in ctx, ""
// for none: what a statement that inserts audit rows itself, rather than
// through Write or Queue, records as their api_key_id.
func APIKeyOf(ctx context.Context, actor string) string {
	if a, ok := ctx.Value(apiKeyKey{}).(apiKeyActor); ok && actor != "" && a.userID == actor {
		return a.keyID
	}
	return ""
}

// Event is one audit record to write.
type Event struct {
	TenantID    string
	ActorUserID string // empty for system actions
	Action      string // one of the Action constants
	TargetType  string // a Target* constant
	TargetID    string
	Data        any // marshalled to JSON; nil means {}
	RequestID   string
}

const qInsert = `
INSERT INTO audit_events (tenant_id, actor_user_id, action, target_type, target_id, data, request_id, api_key_id)
VALUES ($1, NULLIF($2, '')::uuid, $3, $4, $5, $6::jsonb, $7, NULLIF($8, '')::uuid)`

// args are qInsert's arguments for e written under ctx (WithAPIKey).
func args(ctx context.Context, e Event) ([]any, error) {
	data := []byte("{}")
	if e.Data != nil {
		b, err := json.Marshal(e.Data)
		if err != nil {
			return nil, fmt.Errorf("marshal audit data: %w", err)
		}
		data = b
	}
	// A string, not []byte: in the exec and simple-protocol modes (PgBouncer)
	// []byte would be sent as bytea.
	return []any{e.TenantID, e.ActorUserID, e.Action, e.TargetType, e.TargetID, string(data), e.RequestID,
		APIKeyOf(ctx, e.ActorUserID)}, nil
}

// Write inserts e inside the caller's transaction.
func Write(ctx context.Context, tx pgx.Tx, e Event) error {
	a, err := args(ctx, e)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, qInsert, a...); err != nil {
		return fmt.Errorf("write audit event: %w", err)
	}
	return nil
}

// MaskEmail is addr masked: the first character of the local part, then
// "***@" and the domain ("n***@example.com"), for a reader who may know
// the address but must not learn it from us (a link's page, the notice of
// an email change to the old address). The audit log holds no masked
// address: an address a user has not confirmed is left out of the
// events written in every tenant (user.verification_sent of an email
// change), as its first character and domain still say whose it is.
func MaskEmail(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return "***"
	}
	r, _ := utf8.DecodeRuneInString(addr)
	return string(r) + "***" + addr[at:]
}

// WriteForUser writes e once in every tenant userID belongs to (events of
// an account, such as a password reset, have no single tenant); e.TenantID
// is ignored.
func WriteForUser(ctx context.Context, tx pgx.Tx, userID string, e Event) error {
	const q = `
INSERT INTO audit_events (tenant_id, actor_user_id, action, target_type, target_id, data, request_id, api_key_id)
SELECT m.tenant_id, NULLIF($2, '')::uuid, $3, $4, $5, $6::jsonb, $7, NULLIF($8, '')::uuid
FROM memberships m WHERE m.user_id = $1`
	a, err := args(ctx, e)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, q, append([]any{userID}, a[1:]...)...); err != nil {
		return fmt.Errorf("write audit events: %w", err)
	}
	return nil
}

// WriteForUserEach is WriteForUser for an event whose data differs by
// tenant: in each tenant userID belongs to, e is written with data(tenant
// id) as its Data. What a tenant's row says of the account must be that
// tenant's (its sessions ended, say), not what the account did elsewhere.
func WriteForUserEach(ctx context.Context, tx pgx.Tx, userID string, e Event, data func(tenantID string) any) error {
	const qTenants = `SELECT tenant_id::text FROM memberships WHERE user_id = $1 ORDER BY tenant_id`
	rows, _ := tx.Query(ctx, qTenants, userID)
	tenantIDs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("tenants of the account: %w", err)
	}
	b := &pgx.Batch{}
	for _, tid := range tenantIDs {
		e.TenantID, e.Data = tid, data(tid)
		if err := Queue(ctx, b, e); err != nil {
			return err
		}
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write audit events: %w", err)
	}
	return nil
}

// Queue adds the insert of e, written under ctx (WithAPIKey), to a batch
// sent inside the caller's transaction.
func Queue(ctx context.Context, b *pgx.Batch, e Event) error {
	a, err := args(ctx, e)
	if err != nil {
		return err
	}
	b.Queue(qInsert, a...)
	return nil
}

// Record is one stored audit event (written as tenantapi's auditEvent).
type Record struct {
	ID          int64   `db:"id"`
	ActorUserID *string `db:"actor_user_id"`
	// APIKeyID is the API key the actor acted through (nil: none, or an
	// event written before migration 00062).
	APIKeyID   *string         `db:"api_key_id"`
	Action     string          `db:"action"`
	TargetType string          `db:"target_type"`
	TargetID   string          `db:"target_id"`
	Data       json.RawMessage `db:"data"`
	RequestID  string          `db:"request_id"`
	CreatedAt  time.Time       `db:"created_at"`
}

// Store reads audit events.
type Store struct {
	db Querier
}

// Querier is what Store needs from a pool.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// NewStore returns a Store reading through db.
func NewStore(db Querier) *Store { return &Store{db: db} }

// ListParams selects a page: events with id below BeforeID (0 = newest),
// at most Limit of them. HideAddresses leaves the account addresses out
// of each event's data (addressFree), for a reader who may not read
// the tenant's members.
type ListParams struct {
	TenantID      string
	BeforeID      int64
	Limit         int
	IncludeTotal  bool
	HideAddresses bool
}

// List returns up to p.Limit events, newest first, in one query, and with
// IncludeTotal the tenant's total event count (else 0).
func (s *Store) List(ctx context.Context, p ListParams) ([]Record, int64, error) {
	const q = `
SELECT id, actor_user_id::text, api_key_id::text, action, target_type, target_id,
       CASE WHEN $4::boolean THEN ` + addressFree + ` ELSE data END AS data, request_id, created_at, 0::bigint AS total
FROM audit_events e
WHERE tenant_id = $1 AND ($2::bigint = 0 OR id < $2)
ORDER BY id DESC
LIMIT $3`
	// The total by a subquery PostgreSQL runs once, counting the
	// tenant's index entries, not by count(*) OVER (), which read and
	// buffered every event of the tenant, data included, before the first
	// row: with 297,000 events, 64-86 ms a page against 376-536 ms.
	const qTotal = `
SELECT id, actor_user_id::text, api_key_id::text, action, target_type, target_id,
       CASE WHEN $4::boolean THEN ` + addressFree + ` ELSE data END AS data, request_id, created_at,
       (SELECT count(*) FROM audit_events WHERE tenant_id = $1) AS total
FROM audit_events e
WHERE tenant_id = $1 AND ($2::bigint = 0 OR id < $2)
ORDER BY id DESC
LIMIT $3`
	sql := q
	if p.IncludeTotal {
		sql = qTotal
	}
	rows, err := s.db.Query(ctx, sql, p.TenantID, p.BeforeID, p.Limit, p.HideAddresses)
	if err != nil {
		return nil, 0, fmt.Errorf("list audit events: %w", err)
	}
	type counted struct {
		Record
		Total int64 `db:"total"`
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByName[counted])
	if err != nil {
		return nil, 0, fmt.Errorf("list audit events: %w", err)
	}
	out, total, err := sqldb.Split(got, func(c counted) (Record, int64) { return c.Record, c.Total })
	if p.IncludeTotal && len(out) == 0 && p.BeforeID != 0 { // past the end (a cursor past the oldest event): no row to carry the total
		if total, err = sqldb.Count(ctx, s.db, `SELECT count(*) FROM audit_events WHERE tenant_id = $1`, p.TenantID); err != nil {
			return nil, 0, fmt.Errorf("count audit events: %w", err)
		}
	}
	return out, total, err
}

// addressFree is the SQL expression of the data of List's row e without
// the account addresses it holds: data.email (a member added, an
// invitation, a verification link, an identity linked by an earlier
// release) and the from and to of user.email_changed. What else an event
// says stays (the from and to of other changes, the provider, the roles).
// An address is what the member list shows (users:read): audit:read alone
// does not show it, as such a caller cannot list the members.
const addressFree = `(e.data - 'email' - CASE WHEN e.action = '` + ActionUserEmailChanged +
	`' THEN '{from,to}'::text[] ELSE '{}'::text[] END)`

// SweepBatch is how many events one statement of Sweep looks at.
const SweepBatch = 5000

// SweepBatches bounds the statements of one Sweep, so that a first run
// over years of events spreads over several sweeps.
const SweepBatches = 20

// Sweep deletes the events older than keep (AUDIT_RETENTION), oldest
// first, and returns how many it deleted. Each statement reads the
// SweepBatch oldest events by id (the primary key: no scan of the table)
// and deletes those created before the cutoff; it stops at the first
// statement that deletes fewer (sweep.InBatchesOf). Ids follow creation
// up to the length of a transaction (created_at is its start), so an
// event may outlive the cutoff by that long.
func Sweep(ctx context.Context, db sqldb.DB, keep time.Duration) (int64, error) {
	const q = `
DELETE FROM audit_events WHERE id IN (
    SELECT id FROM (SELECT id, created_at FROM audit_events ORDER BY id LIMIT $2) oldest
    WHERE created_at < now() - make_interval(secs => $1))`
	n, err := sweep.InBatchesOf(ctx, db, SweepBatch, SweepBatches, q, keep.Seconds())
	if err != nil {
		return n, fmt.Errorf("sweep audit events: %w", err)
	}
	return n, nil
}

// WriteWith inserts e and the outbox rows announcing the same change inside
// the caller's transaction, in one round trip.
func WriteWith(ctx context.Context, tx pgx.Tx, e Event, rows ...outbox.Row) error {
	if len(rows) == 0 {
		return Write(ctx, tx, e)
	}
	b := &pgx.Batch{}
	if err := Queue(ctx, b, e); err != nil {
		return err
	}
	outbox.Queue(ctx, b, rows...)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write audit event and outbox: %w", err)
	}
	return nil
}
