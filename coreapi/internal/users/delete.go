package users

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Who deletes an account (DeleteOptions.By, the audit row's data.by).
const (
	DeletedBySelf     = "self"
	DeletedByOperator = "operator"
)

// ErrSoleOwner: the account is the last active owner of a tenant that has
// other members. The error DeleteAccount returns is a *SoleOwnerError,
// which names the tenants.
var ErrSoleOwner = errors.New("the account is the last active owner of a tenant with other members")

// OwnedTenant is a tenant the account is the last active owner of.
type OwnedTenant struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// SoleOwnerError is ErrSoleOwner with the tenants.
type SoleOwnerError struct{ Tenants []OwnedTenant }

func (e *SoleOwnerError) Error() string {
	names := make([]string, len(e.Tenants))
	for i, t := range e.Tenants {
		names[i] = fmt.Sprintf("%q (%s)", t.Name, t.ID)
	}
	return ErrSoleOwner.Error() + ": " + strings.Join(names, ", ") + "; make another member an owner first"
}

// Is makes errors.Is(err, ErrSoleOwner) hold.
func (e *SoleOwnerError) Is(target error) bool { return target == ErrSoleOwner }

// DeleteOptions says who deletes an account and how.
type DeleteOptions struct {
	// By is DeletedBySelf or DeletedByOperator.
	By string
	// ActorUserID is the audit rows' actor: the account itself when its
	// owner deletes it, empty for the operator.
	ActorUserID string
	RequestID   string
	// Force deletes an account even when it is the last active owner of
	// a tenant with other members (the operator's --force): the tenant is
	// left without an owner (Deleted.LeftWithoutOwner).
	Force bool
	// Check, when set, runs in the transaction once the account's row is
	// locked (the route's checks of the caller's session); its error
	// rolls everything back and is returned.
	Check func(ctx context.Context, tx pgx.Tx) error
}

// Deleted is what DeleteAccount did.
type Deleted struct {
	UserID string `json:"user_id"`
	// Tenants are the tenants the account belonged to, where the deletion
	// is audited.
	Tenants          []string      `json:"tenants"`
	SessionsEnded    int64         `json:"sessions_ended"`
	APIKeysRevoked   int           `json:"api_keys_revoked"`
	LeftWithoutOwner []OwnedTenant `json:"left_without_owner,omitempty"`
}

// qDeleteMail ($1 the address, $2 the account) is DeleteAccount's
// deletion of queued mail. Every row about the account goes, whichever address it went to
// (the verification of an address it was moving to, the notice of a
// move and the reset links sent to an address it left: user_id names
// it, and the deletion of the account's row would cascade to it as well), and
// every row to its address, sent and parked ones too (their address
// and body would otherwise outlive the account until the retention
// sweep), but an invitation mail still to go: it is a tenant's the
// account was not in (those of its tenants were just withdrawn), and
// that invitation stands. A row queued before user_id was (migration
// 00060) names no account: one still to go with one of the account's
// one-time tokens to another address (the link of a pending email
// change) is found by the token, whose hash is the action token's
// (onetime.Hash, SHA-256); the queue keeps a raw token until the mail
// is sent. Each of the three is an index's (migrations 00060 and 00064),
// so that a deletion reads only its rows, however long the queue: the
// account's tokens are read first (ARRAY, run once), their digests then
// looked up in the queue's index of mail_token_digest(token).
const qDeleteMail = `
DELETE FROM mail_queue m
WHERE m.user_id = $2
   OR (lower(m.to_address) = lower($1) AND (m.kind <> 'invitation' OR m.status <> 'pending'))
   OR (m.token IS NOT NULL AND mail_token_digest(m.token) = ANY (ARRAY(
       SELECT t.token_hash FROM action_tokens t WHERE t.user_id = $2)))`

// DeleteAccount deletes the account userID (a person's; a service account
// is ErrServiceAccount: DELETE /service-accounts/{id} deletes it) in one
// transaction, for its owner (DELETE /users/me/account) or the operator (`coreapi
// users delete`). It takes the locks every change of a member takes, in
// the same order: the tenants' (roles.LockTenant), then its memberships
// (FOR UPDATE: a sign-in's new session waits for its membership, then
// finds none), then the account's row (FOR UPDATE: a membership being
// added waits, then fails on the missing row), then runs o.Check. An account that is
// the last active owner of a tenant with other members is refused
// (*SoleOwnerError) unless o.Force. Then, in each tenant it belongs to,
// the pending invitations to its address are withdrawn and every live API
// key acting as it (tenant and personal) is revoked, each audited and
// announced (data.via user.deleted), as a member's removal does; the
// deletion is audited (user.deleted) in each; every row of mail_queue
// about the account (user_id, to whichever address: one it left, one it
// was moving to) or to its address is deleted, sent and parked ones too,
// but for an invitation mail not yet sent (another tenant's, whose
// invitation stands), and so is a mail queued before user_id was that
// carries one of its one-time tokens to another address (the link of a
// pending email change); the row is deleted, which deletes with it its sessions and
// refresh tokens, keys, memberships and roles, linked identities and
// their unlinks, second factor and recovery codes, one-time tokens and
// OAuth states (foreign keys ON DELETE CASCADE), while the audit events it
// caused keep its id (migration 00020) and the invitations it sent stay
// the tenant's: their sender becomes unknown, so, as those of a sender
// who left, they are accepted only once a tenant admin resends them. The address is free for a
// new account at once. The user's invalidation subject is announced
// through the outbox, so every proxy drops what it holds of the account,
// and a confirmation is queued to the address when it was verified
// (mail.KindAccountDeleted), sent only once all this committed, and its
// row deleted once sent (Sender). ErrNotFound:
// no such account.
func DeleteAccount(ctx context.Context, pool *pgxpool.Pool, userID string, o DeleteOptions) (Deleted, error) {
	const qTenants = `
SELECT tenant_id::text FROM memberships WHERE user_id = $1
UNION SELECT tenant_id::text FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL
ORDER BY 1`
	const qLockMemberships = `SELECT 1 FROM memberships WHERE user_id = $1 ORDER BY tenant_id FOR UPDATE`
	const qLock = `SELECT email, kind = 'service', email_verified_at IS NOT NULL FROM users WHERE id = $1 FOR UPDATE`
	const qSoleOwner = `
SELECT t.id::text, t.name FROM memberships m JOIN tenants t ON t.id = m.tenant_id
WHERE m.user_id = $1 AND m.status = 'active'
  AND EXISTS (SELECT 1 FROM membership_roles mr JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
              WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id AND r.builtin AND r.name = 'owner')
  AND NOT EXISTS (SELECT 1 FROM membership_roles mr
                  JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
                  JOIN memberships o ON o.tenant_id = mr.tenant_id AND o.user_id = mr.user_id
                  JOIN users ou ON ou.id = o.user_id
                  WHERE mr.tenant_id = m.tenant_id AND mr.user_id <> m.user_id
                    AND r.builtin AND r.name = 'owner' AND o.status = 'active' AND ou.status = 'active')
  AND EXISTS (SELECT 1 FROM memberships o WHERE o.tenant_id = m.tenant_id AND o.user_id <> m.user_id)
ORDER BY t.name, t.id`
	const qSessions = `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()`
	const qDelete = `DELETE FROM users WHERE id = $1`
	d := Deleted{UserID: userID}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		tenantIDs := func() ([]string, error) {
			rows, _ := tx.Query(ctx, qTenants, userID)
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return nil, fmt.Errorf("tenants of the account: %w", err)
			}
			return ids, nil
		}
		locked, err := tenantIDs()
		if err != nil {
			return err
		}
		for _, tid := range locked {
			if err := roles.LockTenant(ctx, tx, tid); err != nil {
				return err
			}
		}
		// The memberships before the account's row, as a sign-in takes
		// them (its session's membership, then the row) and a member's
		// removal: held after the row, a sign-in that had its membership
		// and waited for the row deadlocked with the delete below, which
		// waited for the membership.
		if _, err := tx.Exec(ctx, qLockMemberships, userID); err != nil {
			return fmt.Errorf("lock memberships: %w", err)
		}
		var (
			email             string
			service, verified bool
		)
		if err := tx.QueryRow(ctx, qLock, userID).Scan(&email, &service, &verified); errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return fmt.Errorf("lock account: %w", err)
		}
		if service {
			return ErrServiceAccount
		}
		if o.Check != nil {
			if err := o.Check(ctx, tx); err != nil {
				return err
			}
		}
		// A membership added while the lock above was waited for (its
		// insert held the row until it committed) is seen now; its tenant
		// is locked too, out of the usual order, which only such a race
		// takes.
		if d.Tenants, err = tenantIDs(); err != nil {
			return err
		}
		for _, tid := range d.Tenants {
			if !slices.Contains(locked, tid) {
				if err := roles.LockTenant(ctx, tx, tid); err != nil {
					return err
				}
			}
		}
		rows, _ := tx.Query(ctx, qSoleOwner, userID)
		owned, err := pgx.CollectRows(rows, pgx.RowToStructByPos[OwnedTenant])
		if err != nil {
			return fmt.Errorf("tenants left without an owner: %w", err)
		}
		if len(owned) > 0 && !o.Force {
			return &SoleOwnerError{Tenants: owned}
		}
		d.LeftWithoutOwner = owned
		if err := tx.QueryRow(ctx, qSessions, userID).Scan(&d.SessionsEnded); err != nil {
			return fmt.Errorf("count sessions: %w", err)
		}
		for _, tid := range d.Tenants {
			if err := invitations.WithdrawForMember(ctx, tx, tid, userID, o.ActorUserID, o.RequestID, audit.ActionUserDeleted); err != nil {
				return err
			}
			n, err := apikeys.RevokeUserKeys(ctx, tx, tid, userID, o.ActorUserID, o.RequestID, audit.ActionUserDeleted)
			if err != nil {
				return err
			}
			d.APIKeysRevoked += n
			data := map[string]any{"by": o.By}
			if slices.ContainsFunc(owned, func(t OwnedTenant) bool { return t.ID == tid }) {
				data["left_without_owner"] = true
			}
			if err := audit.Write(ctx, tx, audit.Event{TenantID: tid, ActorUserID: o.ActorUserID, Action: audit.ActionUserDeleted,
				TargetType: audit.TargetUser, TargetID: userID, RequestID: o.RequestID, Data: data}); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, qDeleteMail, email, userID); err != nil {
			return fmt.Errorf("delete queued mail: %w", err)
		}
		if _, err := tx.Exec(ctx, qDelete, userID); err != nil {
			return fmt.Errorf("delete account: %w", err)
		}
		if err := outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonUserDeleted}); err != nil {
			return err
		}
		if verified {
			// No UserID: the account it confirms is gone; the Sender
			// deletes the row once it is sent.
			return mail.EnqueueOrPark(ctx, tx, mail.Message{Kind: mail.KindAccountDeleted, To: email, Data: mail.Data{At: time.Now()}})
		}
		return nil
	})
	if err != nil {
		return Deleted{}, fmt.Errorf("delete account: %w", err)
	}
	if d.Tenants == nil {
		d.Tenants = []string{}
	}
	return d, nil
}
