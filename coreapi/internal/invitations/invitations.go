// Package invitations stores invitations into a tenant. An invitation
// adds nobody: the invitee accepts it with the mailed token (proof of the
// mailbox) and, for an existing account, that account's own credentials
// (see package lifecycle). Creating one queues the mail in the same
// transaction; roles are never above the inviter's, checked again at
// accept, nor above the caller's who resends or withdraws one.
//
// An invitation holds the roles themselves (invitation_roles, migration
// 00040), not their names: it hands out the roles its inviter chose,
// under whatever names they have when it is accepted, and never another
// role created since under one of those names. A role deleted since
// leaves the invitation (ON DELETE CASCADE), which then can be neither
// accepted nor resent (ErrRoleDeleted): its tenant withdraws it and
// invites again.
package invitations

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
)

// TTL is how long an invitation can be accepted.
const TTL = 7 * 24 * time.Hour

// Statuses.
const (
	StatusPending  = "pending"
	StatusAccepted = "accepted"
	StatusRevoked  = "revoked"
	StatusExpired  = "expired"
)

// Errors.
var (
	ErrNotFound    = errors.New("invitation not found")
	ErrPending     = errors.New("this address already has a pending invitation to this tenant; resend it instead")
	ErrNotPending  = errors.New("the invitation is no longer pending")
	ErrIsMember    = errors.New("this address already belongs to a member of this tenant")
	ErrUnknownRole = errors.New("unknown role")
	// ErrRoleDeleted: a role the invitation was sent with has been
	// deleted since.
	ErrRoleDeleted = errors.New("a role this invitation grants was deleted since it was sent; withdraw it and invite again")
)

// Limits bound the invitation and account mails a tenant's members cause
// (a zero field takes its DefaultLimits value). They are each Store's own,
// passed by its owner, so that the services of one process each keep what
// they were configured with.
type Limits struct {
	// Mail bounds the invitation mails one tenant sends to one address
	// (creations, through POST /invitations or POST /users, and resends
	// together): each mails someone who never asked for it, and anyone
	// can sign up and own a tenant.
	Mail ratelimit.Limit
	// InboxMail bounds the invitation mails one inbox gets over every
	// tenant together: Mail is one tenant's, and anyone can sign up, as
	// often as the sign-up limit allows and without proving an address,
	// and own a tenant, each a fresh Mail budget for the same mailbox.
	InboxMail ratelimit.Limit
	// TenantMail bounds, over every address together, the mails one
	// tenant's members cause to be sent to others: invitations (creations
	// and resends) and the verification mail of an account created by
	// POST /users (TENANT_MAILS_PER_HOUR an hour). Mail alone bounds one
	// address, and a tenant, which anyone can sign up and own, could
	// otherwise mail any number of addresses of its choosing, its own
	// name in each.
	TenantMail ratelimit.Limit
}

// DefaultTenantMailsPerHour is TenantMail's default
// (TENANT_MAILS_PER_HOUR).
const DefaultTenantMailsPerHour = 200

// DefaultLimits returns the limits a Store has unless told otherwise: 3
// invitation mails a tenant to an inbox and 10 to an inbox over every
// tenant an hour, DefaultTenantMailsPerHour mails a tenant an hour.
func DefaultLimits() Limits {
	return Limits{
		Mail:       ratelimit.Limit{N: 3, Window: time.Hour},
		InboxMail:  ratelimit.Limit{N: 10, Window: time.Hour},
		TenantMail: ratelimit.Limit{N: DefaultTenantMailsPerHour, Window: time.Hour},
	}
}

// OrDefault returns l with each zero field replaced by its DefaultLimits
// value.
func (l Limits) OrDefault() Limits {
	d := DefaultLimits()
	return Limits{Mail: l.Mail.Or(d.Mail), InboxMail: l.InboxMail.Or(d.InboxMail), TenantMail: l.TenantMail.Or(d.TenantMail)}
}

// countMail counts, in tx, one invitation mail from tenantID to email's
// inbox (mail.Inbox: a "+tag" is no other inbox) against l.Mail and,
// over every tenant, l.InboxMail (a *ratelimit.Refused above either:
// nothing is written or mailed), then against l.TenantMail. The hit
// commits with the mail, and a caller refused rolls back, so only mails
// sent are counted.
func countMail(ctx context.Context, tx pgx.Tx, l Limits, tenantID, email string) error {
	l = l.OrDefault()
	inbox := mail.Inbox(email)
	key := ratelimit.Key("invitation-mail", tenantID, inbox)
	if err := ratelimit.CheckIn(ctx, tx, key, l.Mail, "too many invitation mails to this address"); err != nil {
		return err
	}
	if err := ratelimit.CheckIn(ctx, tx, ratelimit.Key("invitation-inbox-mail", inbox), l.InboxMail,
		"too many invitation mails to this address"); err != nil {
		return err
	}
	return CountTenantMail(ctx, tx, l.TenantMail, tenantID)
}

// CountTenantMail counts, in tx, one mail a member of tenantID causes to
// be sent to someone else against limit, the caller's Limits.TenantMail
// (a *ratelimit.Refused above it; a zero limit is the default). As
// countMail's, the hit commits with the mail.
func CountTenantMail(ctx context.Context, tx pgx.Tx, limit ratelimit.Limit, tenantID string) error {
	return ratelimit.CheckIn(ctx, tx, TenantMailKey(tenantID), Limits{TenantMail: limit}.OrDefault().TenantMail, TenantMailRefusal)
}

// TenantMailKey is the key of tenantID's count under Limits.TenantMail.
func TenantMailKey(tenantID string) []byte { return ratelimit.Key("tenant-mail", tenantID) }

// TenantMailRefusal is the refusal of a mail past Limits.TenantMail.
const TenantMailRefusal = "this tenant has sent as many invitation and account mails as it may this hour (TENANT_MAILS_PER_HOUR)"

// Invitation is one invitation as its tenant sees it (written as
// tenantapi.Invitation). Roles are, while it is pending, the names its
// roles have now (a role deleted since is not among them); once it is no
// longer pending, the names they had when it was sent.
type Invitation struct {
	ID        string    `db:"id"`
	Email     string    `db:"email"`
	Roles     []string  `db:"roles"`
	Status    string    `db:"status"`
	ExpiresAt time.Time `db:"expires_at"`
	CreatedAt time.Time `db:"created_at"`
	// Refusal is why POST /invitations/accept would refuse it now (one of
	// the Refused* codes, tenantRefusal's finding), nil when it would take
	// it: a pending invitation can be dead (its sender demoted, a role
	// deleted, its tenant suspended) and its tenant's admins must see it.
	// Create and Resend, which have just checked all of it, answer nil.
	Refusal *string `db:"refusal"`
}

// rolesNow is the names the roles of invitation row i have now, in Go's
// sort order (COLLATE "C", as users.SortedUnique sorts the names given).
const rolesNow = `ARRAY(SELECT r.name FROM invitation_roles ir
    JOIN roles r ON r.tenant_id = ir.tenant_id AND r.id = ir.role_id
    WHERE ir.tenant_id = i.tenant_id AND ir.invitation_id = i.id ORDER BY r.name COLLATE "C")`

// roleDeleted is whether a role invitation row i was sent with (its
// names, invitations.roles) has been deleted since: it holds fewer roles.
const roleDeleted = `((SELECT count(*) FROM invitation_roles ir WHERE ir.tenant_id = i.tenant_id AND ir.invitation_id = i.id)
    < (SELECT count(DISTINCT n) FROM unnest(i.roles) n))`

// cols reads an Invitation from row i; a pending one past its expiry
// shows expired.
const cols = `i.id::text AS id, i.email, CASE WHEN i.status = 'pending' THEN ` + rolesNow + ` ELSE i.roles END AS roles,
    CASE WHEN i.status = 'pending' AND i.expires_at <= now() THEN 'expired' ELSE i.status END AS status,
    i.expires_at, i.created_at`

// Store reads and writes invitations.
type Store struct {
	pool    *pgxpool.Pool
	catalog *permissions.Catalog
	limits  Limits
}

// NewStore returns a Store on pool; c is the live permission catalog (nil:
// the built-in one), which says what the built-in roles an invitation
// names grant; l bounds the mails it sends (a zero field: the default).
func NewStore(pool *pgxpool.Pool, c *permissions.Catalog, l Limits) *Store {
	if c == nil {
		c = permissions.Builtin()
	}
	return &Store{pool: pool, catalog: c, limits: l.OrDefault()}
}

// The permissions of role row r under the live catalog (roles.CatalogArgs:
// every permission, and the member role's): built-in roles hold what the
// catalog gives them, not what their rows stored.
var (
	prepPerms   = roles.PermissionsSQL("r", "$5::text[]", "$6::text[]")
	changePerms = roles.PermissionsSQL("r", "$3::text[]", "$4::text[]")
)

// invitedPerms is the permissions invitation row i's roles grant, with the
// catalog's arrays bound as $3 and $4 (the statement of Revoke returns it,
// and rolls back when the caller does not hold them).
var invitedPerms = `ARRAY(SELECT DISTINCT p FROM invitation_roles ir
    JOIN roles r ON r.tenant_id = ir.tenant_id AND r.id = ir.role_id, unnest(` + changePerms + `) p
    WHERE ir.tenant_id = i.tenant_id AND ir.invitation_id = i.id AND p = ANY($3::text[]))`

// resentPerms is what handing invitation row i's roles out again needs
// (roles.Handing: what they grant, and what a custom role stores beyond
// the catalog), with the catalog's arrays bound as $3 and $4 (the
// statement of Resend returns it, and rolls back when the caller does not
// hold them).
var resentPerms = `ARRAY(SELECT DISTINCT p FROM invitation_roles ir
    JOIN roles r ON r.tenant_id = ir.tenant_id AND r.id = ir.role_id, unnest(` + changePerms + `) p
    WHERE ir.tenant_id = i.tenant_id AND ir.invitation_id = i.id AND ` + roles.HandingSQL("r", "p", "$3::text[]") + `)`

// InvitedIsSQL is the SQL condition that the invited address inv (an SQL
// expression, an invitations.email) is the address addr (an SQL
// expression: an account's as stored, or one in mail.Canonical form): the
// invited one in Unicode NFC, as the accept reads it (find:
// mail.Canonical), then both in lower case, as the unique index of
// accounts compares addresses. coreapi writes every address in NFC, but
// a row can hold another form: migration 00012 leaves a pending
// invitation whose NFC form another one of its tenant has, and pods of an
// earlier release may write one during a rollout. Every query that
// matches an invitation to an account or a member says it this way (GET
// /users/me/invitations, the membership checks, the withdrawals), so
// that none misses an invitation the accept would take as the account's,
// nor finds one it would refuse (invitations_email_nfc_idx, migration
// 00050, indexes the invited side), and the one pending invitation an
// address may have in a tenant is its invited side's
// (invitations_tenant_email_nfc_key, migration 00051: Create's ErrPending). The domain's one spelling, IDNA's
// (address.Canonical), is beyond SQL: a row migration 00044 left in
// another one is reported by it, for the operator to resolve.
func InvitedIsSQL(inv, addr string) string {
	return `lower(normalize(` + inv + `, NFC)) = lower(` + addr + `)`
}

// dropUnsent deletes the invitation mails still to go whose link carries
// the token of an invitation of the CTE ended (mail.DropUnsentSQL: its
// column token_hash, the digest invitations store): one withdrawn (by a
// tenant admin, a member's addition, removal or change of address, an
// account's deletion, a reset that ends what the account sent), one whose
// token a resend replaced, one marked expired by a new invitation. Such a
// mail, queued and not yet sent (an SMTP outage, a backlog), would
// otherwise still go out, with a link the accept refuses. Every statement
// that ends an invitation's token runs it in the same statement, so the
// mail goes with the change or stays with its rollback.
var dropUnsent = mail.DropUnsentSQL("ended", `m.kind = '`+string(mail.KindInvitation)+`'`)

// addressIsMember is whether the address email (an SQL expression) belongs
// to a member, in any status, of tenant tenant: such an address is
// neither invited (Create) nor invited again (Resend), as its link could
// only be refused at accept.
func addressIsMember(tenant, email string) string {
	return `EXISTS (SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id
               WHERE m.tenant_id = ` + tenant + ` AND ` + InvitedIsSQL(email, "u.email") + `)`
}

// qPrep reads, for Create, the tenant's name, the inviter's, the ids of
// the named roles that exist (in the order of their names), the
// permissions handing them out needs (roles.Handing: what they grant, and
// what a custom role stores beyond the catalog) and whether the address
// is a member already.
var qPrep = `
SELECT t.name,
       coalesce((SELECT display_name FROM users WHERE id = NULLIF($3, '')::uuid), ''),
       ARRAY(SELECT r.id::text FROM roles r WHERE r.tenant_id = t.id AND r.name = ANY($4::text[]) ORDER BY r.name COLLATE "C"),
       (SELECT coalesce(array_agg(DISTINCT p), '{}') FROM roles r, unnest(` + prepPerms + `) p
        WHERE r.tenant_id = t.id AND r.name = ANY($4::text[]) AND ` + roles.HandingSQL("r", "p", "$5::text[]") + `),
       ` + addressIsMember("t.id", "$2") + `
FROM tenants t WHERE t.id = $1`

// Create invites email into tenantID with roles (default member) inside
// tx, and queues the invitation mail. The inviter a must hold every
// permission the roles grant under the catalog c (else
// roles.ErrEscalation). The invitation holds the roles the names are now
// (the caller holds the tenant's lock, which a role's renaming and
// deletion take too), stored by id. The mail counts against l (a zero
// field: the default).
func Create(ctx context.Context, tx pgx.Tx, c *permissions.Catalog, l Limits, tenantID string, a roles.Actor, email string, roleNames []string) (Invitation, error) {
	var (
		qExpire = `
WITH ended AS (
    UPDATE invitations SET status = 'expired', updated_at = now()
    WHERE tenant_id = $1 AND ` + InvitedIsSQL("email", "$2") + ` AND status = 'pending' AND expires_at <= now()
    RETURNING token_hash)
` + dropUnsent
		// The roles are inserted with the invitation, so the trigger that
		// resolves the names of an invitation inserted without them
		// (migration 00040) leaves them be.
		qInsert = `
WITH i AS (
    INSERT INTO invitations (tenant_id, email, roles, token_hash, invited_by, expires_at)
    VALUES ($1, $2, $3, $4, NULLIF($5, '')::uuid, now() + make_interval(secs => $6))
    RETURNING id, email, status, expires_at, created_at, tenant_id
), g AS (
    INSERT INTO invitation_roles (tenant_id, invitation_id, role_id)
    SELECT i.tenant_id, i.id, unnest($7::uuid[]) FROM i
)
SELECT i.id::text AS id, i.email, $3::text[] AS roles, i.status, i.expires_at, i.created_at, NULL::text AS refusal FROM i`
	)
	if len(roleNames) == 0 {
		roleNames = []string{roles.Member}
	}
	roleNames = slices.Compact(slices.Sorted(slices.Values(roleNames)))
	var (
		tenantName, inviter string
		roleIDs             []string
		perms               []string
		member              bool
	)
	all, memberPerms := roles.CatalogArgs(c)
	if err := tx.QueryRow(ctx, qPrep, tenantID, email, a.UserID, roleNames, all, memberPerms).Scan(&tenantName, &inviter, &roleIDs, &perms, &member); err != nil {
		return Invitation{}, fmt.Errorf("prepare invitation: %w", err)
	}
	if len(roleIDs) != len(roleNames) {
		return Invitation{}, ErrUnknownRole
	}
	if !a.Covers(perms) {
		return Invitation{}, roles.ErrEscalation
	}
	if member {
		return Invitation{}, ErrIsMember
	}
	if err := countMail(ctx, tx, l, tenantID, email); err != nil {
		return Invitation{}, err
	}
	if _, err := tx.Exec(ctx, qExpire, tenantID, email); err != nil {
		return Invitation{}, fmt.Errorf("expire invitations: %w", err)
	}
	raw, hash, err := onetime.New()
	if err != nil {
		return Invitation{}, err
	}
	rows, _ := tx.Query(ctx, qInsert, tenantID, email, roleNames, hash, a.UserID, TTL.Seconds(), roleIDs)
	inv, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Invitation])
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return Invitation{}, ErrPending
	}
	if errors.As(err, &pe) && pe.Code == "23503" {
		return Invitation{}, ErrUnknownRole // a role deleted meanwhile: unknown now
	}
	if err != nil {
		return Invitation{}, fmt.Errorf("create invitation: %w", err)
	}
	// No UserID: an invitation is the tenant's, to an address, whoever
	// holds it (mail.Message); an account's deletion keeps it while it is
	// still to go.
	err = mail.Enqueue(ctx, tx, mail.Message{Kind: mail.KindInvitation, To: email, Token: raw,
		Data: mail.Data{TenantName: tenantName, InviterName: inviter, ExpiresAt: inv.ExpiresAt}})
	if err != nil {
		return Invitation{}, err
	}
	err = audit.Write(ctx, tx, audit.Event{TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionInvitationCreated,
		TargetType: audit.TargetInvitation, TargetID: inv.ID, RequestID: a.RequestID,
		Data: map[string]any{"email": email, "roles": roleNames, "role_ids": roleIDs}})
	return inv, err
}

// Create is the package-level Create in its own transaction, decided on
// what a holds when it runs (live). An inviter whose session
// (a.SessionID) has ended is sessions.ErrEnded, checked after the
// tenant's lock, which a password reset of an account with an unproven
// address takes before it withdraws the invitations the account sent
// (WithdrawSentBy): one sent on the say of a session the reset ended, by
// way of a proxy that has not yet heard, would outlive it.
func (s *Store) Create(ctx context.Context, tenantID string, a roles.Actor, email string, roleNames []string) (Invitation, error) {
	var inv Invitation
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := s.live(ctx, tx, tenantID, a)
		if err != nil {
			return err
		}
		// The invitation's roles are judged by this replica's catalog:
		// only if it is the recorded one.
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		if err := sessions.CheckLive(ctx, tx, a.UserID, a.SessionID); err != nil {
			return err
		}
		inv, err = Create(ctx, tx, s.catalog, s.limits, tenantID, a, email, roleNames)
		return err
	})
	return inv, err
}

// live takes the tenant's lock, first, and returns a with its permissions
// narrowed to those it holds now (roles.LockedLive): an
// invitation's creation, resending and withdrawal decide on them, not on
// what the request was signed with, which a caller demoted, disabled or
// removed meanwhile (or before the proxy heard of it) no longer holds.
// The lock orders the change after every demotion committed before it.
func (s *Store) live(ctx context.Context, tx pgx.Tx, tenantID string, a roles.Actor) (roles.Actor, error) {
	all, member := roles.CatalogArgs(s.catalog)
	return roles.LockedLive(ctx, tx, all, member, tenantID, a, roles.UsersWrite)
}

// Cursor is a position in a tenant's invitation list.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// qList reads a page of a tenant's invitations, each with its refusal
// under the catalog whose arrays are $5 and $6.
var qList = `
SELECT ` + cols + `, ` + tenantRefusal("$5::text[]", "$6::text[]") + ` AS refusal
FROM invitations i JOIN tenants t ON t.id = i.tenant_id
WHERE i.tenant_id = $1 AND (i.created_at, i.id) > ($2, $3::uuid)
ORDER BY i.created_at, i.id
LIMIT $4`

// List returns up to limit invitations of the tenant after the cursor
// (oldest first), each with the refusal an accept would answer now.
func (s *Store) List(ctx context.Context, tenantID string, limit int, after *Cursor) ([]Invitation, error) {
	at, id := time.Time{}, "00000000-0000-0000-0000-000000000000"
	if after != nil {
		at, id = after.CreatedAt, after.ID
	}
	all, member := roles.CatalogArgs(s.catalog)
	rows, _ := s.pool.Query(ctx, qList, tenantID, at, id, limit, all, member)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[Invitation])
	if err != nil {
		return nil, fmt.Errorf("list invitations: %w", err)
	}
	return out, nil
}

// Revoke withdraws a pending invitation, and its mail still queued
// (dropUnsent; so do the other withdrawals below). As with making one, a
// must hold every permission its roles grant, and users:write, when it
// runs (live; else roles.ErrEscalation): whoever could not have sent it
// cannot withdraw it either.
func (s *Store) Revoke(ctx context.Context, tenantID, id string, a roles.Actor) error {
	q := `
WITH ended AS (
    UPDATE invitations i SET status = 'revoked', updated_at = now()
    WHERE i.tenant_id = $1 AND i.id = $2 AND i.status = 'pending'
    RETURNING i.email, ` + invitedPerms + ` AS perms, i.token_hash
), dropped AS (` + dropUnsent + `)
SELECT email, perms FROM ended`
	all, member := roles.CatalogArgs(s.catalog)
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := s.live(ctx, tx, tenantID, a)
		if err != nil {
			return err
		}
		var (
			email string
			perms []string
		)
		err = tx.QueryRow(ctx, q, tenantID, id, all, member).Scan(&email, &perms)
		if errors.Is(err, pgx.ErrNoRows) {
			return s.missing(ctx, tx, tenantID, id)
		}
		if err != nil {
			return fmt.Errorf("revoke invitation: %w", err)
		}
		if !a.Covers(perms) {
			return roles.ErrEscalation
		}
		return audit.Write(ctx, tx, audit.Event{TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionInvitationRevoked,
			TargetType: audit.TargetInvitation, TargetID: id, RequestID: a.RequestID, Data: map[string]any{"email": email}})
	})
}

// WithdrawForMember withdraws, in tx, the pending invitations of tenantID
// to the address of userID, a member being added or removed by actorID,
// each audited as invitation.revoked with data.via naming the change
// (member.added, invitation.accepted, member.removed). An address can
// become a member while an invitation to it is pending: added with POST
// /users (an address without an account is added, not invited), a
// member's address changed to an invited one (WithdrawForAddressChange),
// or one of two pending invitations to it accepted (spelled in two
// normal forms: migration 00012 left such pairs). Added, the member makes
// the invitation one nobody can accept or resend, which the tenant's list
// would show pending until it expired; removed, its link must not let
// them join again. The caller holds the tenant's lock.
func WithdrawForMember(ctx context.Context, tx pgx.Tx, tenantID, userID, actorID, requestID, via string) error {
	q := `
WITH ended AS (
    UPDATE invitations i SET status = 'revoked', updated_at = now()
    FROM users u
    WHERE u.id = $2 AND i.tenant_id = $1 AND i.status = 'pending' AND ` + InvitedIsSQL("i.email", "u.email") + `
    RETURNING i.id::text AS id, i.email, i.token_hash
), dropped AS (` + dropUnsent + `)
SELECT id, email FROM ended`
	rows, _ := tx.Query(ctx, q, tenantID, userID)
	type withdrawn struct{ ID, Email string }
	ws, err := pgx.CollectRows(rows, pgx.RowToStructByPos[withdrawn])
	if err != nil {
		return fmt.Errorf("withdraw invitations: %w", err)
	}
	for _, w := range ws {
		if err := audit.Write(ctx, tx, audit.Event{TenantID: tenantID, ActorUserID: actorID, Action: audit.ActionInvitationRevoked,
			TargetType: audit.TargetInvitation, TargetID: w.ID, RequestID: requestID,
			Data: map[string]any{"email": w.Email, "via": via}}); err != nil {
			return err
		}
	}
	return nil
}

// WithdrawForAddressChange withdraws, in tx, the pending invitations to
// from or to of the tenants where userID is a member (in any status), an
// account whose address is changing from from to to. One to from was
// pending when the member came to hold the address (see
// WithdrawForMember), and once the address is no member's, no removal
// finds it by the member's address, so its link, which the member still
// reads in the mailbox they left, would let them join again, as a new
// account, after their removal. One to to is addressed to a member once
// the change commits, as POST /users of the address would make it
// (WithdrawForMember, member.added): nobody could accept or resend it,
// and the tenant's list showed it pending (already_member) with its link
// live. Invitations of other tenants to either address stay: they are
// not the member's to end (and to is theirs to accept). Each is audited
// in its tenant as invitation.revoked with the member as actor and
// data.via user.email_changed. The caller takes the tenants' locks
// (roles.LockTenant) first, as an accept and a creation do before the
// invitation's row.
func WithdrawForAddressChange(ctx context.Context, tx pgx.Tx, userID, from, to, requestID string) error {
	q := `
WITH ended AS (
    UPDATE invitations i SET status = 'revoked', updated_at = now()
    FROM memberships m
    WHERE m.user_id = $1 AND i.tenant_id = m.tenant_id AND i.status = 'pending'
      AND (` + InvitedIsSQL("i.email", "$2") + ` OR ` + InvitedIsSQL("i.email", "$3") + `)
    RETURNING i.id::text AS id, i.tenant_id::text AS tenant_id, i.email, i.token_hash
), dropped AS (` + dropUnsent + `)
SELECT id, tenant_id, email FROM ended`
	rows, _ := tx.Query(ctx, q, userID, from, to)
	type withdrawn struct{ ID, TenantID, Email string }
	ws, err := pgx.CollectRows(rows, pgx.RowToStructByPos[withdrawn])
	if err != nil {
		return fmt.Errorf("withdraw invitations: %w", err)
	}
	if len(ws) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, w := range ws {
		if err := audit.Queue(ctx, b, audit.Event{TenantID: w.TenantID, ActorUserID: userID, Action: audit.ActionInvitationRevoked,
			TargetType: audit.TargetInvitation, TargetID: w.ID, RequestID: requestID,
			Data: map[string]any{"email": w.Email, "via": audit.ActionUserEmailChanged}}); err != nil {
			return err
		}
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("audit withdrawn invitations: %w", err)
	}
	return nil
}

// WithdrawSentBy withdraws, in tx, every pending invitation userID sent,
// in every tenant, each audited as invitation.revoked in its tenant with
// data via naming the cause; it returns how many in each tenant (by
// tenant id). A password reset that proves an address the account never
// had proven calls it: the earlier holder of the password may have
// invited addresses of their own.
func WithdrawSentBy(ctx context.Context, tx pgx.Tx, userID, actorID, requestID, via string) (map[string]int, error) {
	q := `
WITH ended AS (
    UPDATE invitations SET status = 'revoked', updated_at = now()
    WHERE invited_by = $1 AND status = 'pending'
    RETURNING id::text AS id, tenant_id::text AS tenant_id, email, token_hash
), dropped AS (` + dropUnsent + `)
SELECT id, tenant_id, email FROM ended`
	rows, _ := tx.Query(ctx, q, userID)
	type withdrawn struct{ ID, TenantID, Email string }
	ws, err := pgx.CollectRows(rows, pgx.RowToStructByPos[withdrawn])
	if err != nil {
		return nil, fmt.Errorf("withdraw invitations: %w", err)
	}
	withdrawnIn := map[string]int{}
	if len(ws) == 0 {
		return withdrawnIn, nil
	}
	b := &pgx.Batch{}
	for _, w := range ws {
		if err := audit.Queue(ctx, b, audit.Event{TenantID: w.TenantID, ActorUserID: actorID, Action: audit.ActionInvitationRevoked,
			TargetType: audit.TargetInvitation, TargetID: w.ID, RequestID: requestID,
			Data: map[string]any{"email": w.Email, "via": via}}); err != nil {
			return nil, err
		}
		withdrawnIn[w.TenantID]++
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("audit withdrawn invitations: %w", err)
	}
	return withdrawnIn, nil
}

// missing tells ErrNotFound from ErrNotPending.
func (s *Store) missing(ctx context.Context, tx pgx.Tx, tenantID, id string) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM invitations WHERE tenant_id = $1 AND id = $2)`, tenantID, id).Scan(&exists); err != nil {
		return fmt.Errorf("find invitation: %w", err)
	}
	if exists {
		return ErrNotPending
	}
	return ErrNotFound
}

// Resend gives a pending invitation a new token and expiry and mails it
// again; the previous link dies, and its mail if still queued. As with
// making one, a must hold every permission its roles grant, and users:write, when it runs (live; else
// roles.ErrEscalation): a new link and expiry hand the roles out again,
// on a's say. So a becomes the invitation's sender (invited_by), whom the
// mail names and the accept checks (GrantableRoles): an invitation whose
// first sender was removed or demoted since, resent by someone who may
// send it, can be accepted, and one resent by someone demoted since
// cannot. One a role of which was deleted since is ErrRoleDeleted, and
// one to an address that belongs to a member of the tenant since it was
// sent is ErrIsMember, as creating it would be: its link could not be
// accepted. A caller whose session (a.SessionID) has
// ended is sessions.ErrEnded, checked after the tenant's lock as Create
// checks it: made the sender after a password reset withdrew the
// invitations the account sent, the earlier holder of the password would
// have one pending again, with a new link.
func (s *Store) Resend(ctx context.Context, tenantID, id string, a roles.Actor) (Invitation, error) {
	// ended reads the token being replaced (the statement's snapshot:
	// the row before its update), whose mail, if still to go, is dropped.
	q := `
WITH ended AS (SELECT token_hash FROM invitations WHERE tenant_id = $1 AND id = $2 AND status = 'pending'),
dropped AS (` + dropUnsent + `)
UPDATE invitations i SET token_hash = $5, expires_at = now() + make_interval(secs => $6), updated_at = now(),
    invited_by = NULLIF($7, '')::uuid
WHERE i.tenant_id = $1 AND i.id = $2 AND i.status = 'pending'
RETURNING ` + cols + `, (SELECT name FROM tenants WHERE id = i.tenant_id),
    coalesce((SELECT display_name FROM users WHERE id = NULLIF($7, '')::uuid), ''), ` + resentPerms + `, ` + roleDeleted + `,
    ` + addressIsMember("i.tenant_id", "i.email")
	all, member := roles.CatalogArgs(s.catalog)
	var inv Invitation
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := s.live(ctx, tx, tenantID, a)
		if err != nil {
			return err
		}
		// A resend renews what the invitation hands out, judged by this
		// replica's catalog: only if it is the recorded one.
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		if err := sessions.CheckLive(ctx, tx, a.UserID, a.SessionID); err != nil {
			return err
		}
		raw, hash, err := onetime.New()
		if err != nil {
			return err
		}
		var (
			tenantName, inviter string
			perms               []string
			deleted, isMember   bool
		)
		err = tx.QueryRow(ctx, q, tenantID, id, all, member, hash, TTL.Seconds(), a.UserID).Scan(
			&inv.ID, &inv.Email, &inv.Roles, &inv.Status, &inv.ExpiresAt, &inv.CreatedAt, &tenantName, &inviter, &perms, &deleted, &isMember)
		if errors.Is(err, pgx.ErrNoRows) {
			return s.missing(ctx, tx, tenantID, id)
		}
		if err != nil {
			return fmt.Errorf("resend invitation: %w", err)
		}
		if !a.Covers(perms) {
			return roles.ErrEscalation
		}
		if deleted {
			return ErrRoleDeleted
		}
		if isMember {
			return ErrIsMember
		}
		if err := countMail(ctx, tx, s.limits, tenantID, inv.Email); err != nil {
			return err
		}
		err = mail.Enqueue(ctx, tx, mail.Message{Kind: mail.KindInvitation, To: inv.Email, Token: raw,
			Data: mail.Data{TenantName: tenantName, InviterName: inviter, ExpiresAt: inv.ExpiresAt}})
		if err != nil {
			return err
		}
		return audit.Write(ctx, tx, audit.Event{TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionInvitationResent,
			TargetType: audit.TargetInvitation, TargetID: id, RequestID: a.RequestID})
	})
	return inv, err
}

// Mine is a pending invitation addressed to the caller (written as
// lifecycle's myInvitation); Roles are the names its roles have now.
type Mine struct {
	ID         string    `db:"id"`
	TenantID   string    `db:"tenant_id"`
	TenantName string    `db:"tenant_name"`
	Roles      []string  `db:"roles"`
	ExpiresAt  time.Time `db:"expires_at"`
	CreatedAt  time.Time `db:"created_at"`
}

// qForUser reads a page of the invitations addressed to user $1 that an
// accept would take now (refusal, the accept's own test, finds nothing to
// refuse), into a tenant they do not belong to (the accept's membership
// insert would conflict), under the catalog whose arrays are $5 and $6.
var qForUser = `
SELECT i.id::text AS id, i.tenant_id::text AS tenant_id, t.name AS tenant_name, ` + rolesNow + ` AS roles,
       i.expires_at, i.created_at
FROM users u
JOIN invitations i ON ` + InvitedIsSQL("i.email", "u.email") + ` AND i.status = 'pending' AND i.expires_at > now()
JOIN tenants t ON t.id = i.tenant_id
WHERE u.id = $1 AND ($2::timestamptz IS NULL OR (i.created_at, i.id) < ($2, $3::uuid))
  AND ` + refusal("$5::text[]", "$6::text[]") + ` IS NULL
  AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = i.tenant_id AND m.user_id = u.id)
ORDER BY i.created_at DESC, i.id DESC
LIMIT $4`

// ForUser lists a page of the invitations addressed to userID's email
// that userID could accept now, newest first: at most limit, after the
// cursor when it is not nil (keyset on created_at and id, both
// descending). One the accept would refuse (Refusal, or a tenant userID
// belongs to already) is not listed: its tenant alone can do something
// about it, and the list tells a non-member nothing of the tenant's
// members, roles or status.
func (s *Store) ForUser(ctx context.Context, userID string, limit int, after *Cursor) ([]Mine, error) {
	all, member := roles.CatalogArgs(s.catalog)
	var (
		at *time.Time
		id *string
	)
	if after != nil {
		at, id = &after.CreatedAt, &after.ID
	}
	rows, _ := s.pool.Query(ctx, qForUser, userID, at, id, limit, all, member)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[Mine])
	if err != nil {
		return nil, fmt.Errorf("list my invitations: %w", err)
	}
	return out, nil
}

// Pending is an invitation being accepted, locked in the caller's
// transaction.
type Pending struct {
	ID       string
	TenantID string
	// Email is the invited address in mail.Canonical form, whatever the
	// row holds: migration 00012 leaves the spelling of a pending
	// invitation whose NFC form another one of its tenant has.
	Email string
	// Roles are the names the invitation's roles had when it was sent
	// (invitations.roles): what it grants is GrantableRoles'.
	Roles     []string
	InvitedBy *string
	// Refusal is why the invitation cannot be accepted now (one of the
	// Refused* codes), "" when it can: refusal's finding.
	Refusal string
}

// Why an invitation cannot be accepted (Pending.Refusal, Grant.Refusal),
// in the order refusal tells them.
const (
	RefusedRevoked = "revoked"
	// RefusedExpired: past its expiry, still pending or marked expired
	// (a new invitation to its address, sent after it expired, marks it
	// so): it was never used.
	RefusedExpired = "expired"
	RefusedUsed    = "used"
	// RefusedTenantSuspended: the operator's suspension admits nobody;
	// the invitation stays pending.
	RefusedTenantSuspended = "tenant_suspended"
	// RefusedInviter: its sender may no longer send it (inviterMay).
	RefusedInviter = "inviter_cannot_grant"
	// RefusedRoleDeleted: a role it was sent with has been deleted since.
	RefusedRoleDeleted = "role_deleted"
	// RefusedMember: its address belongs to a member of its tenant (the
	// accept's membership would conflict; refusal, which is about the
	// invitation, leaves it to the accept, and the tenant's list tells it).
	RefusedMember = "already_member"
)

// inviterMay is the SQL condition that the sender of invitation row i may
// still send it: a person (a service account is no sender: machines may
// not send or resend invitations, as a person they invite would outlive
// them, and one a service account resent before that rule is not
// accepted) who holds users:write and every permission handing the
// invitation's roles out needs (roles.Handing: what they grant, and what
// a custom role stores beyond the catalog, which nobody holds under it),
// as a change's caller holds them (roles.HeldSQL: nothing once their
// membership, account or tenant is not active, nor, in a tenant that
// requires a second factor, while they have none), under the catalog
// whose arrays are bound to all and member (roles.CatalogArgs).
// An inviter who left, was demoted or is so confined can no longer hand
// out what the invitation names, nor the membership itself: a role
// granting nothing (one without permissions, or one deleted since) let
// an inviter removed from the tenant bring an address of their own back
// in.
func inviterMay(all, member string) string {
	return `(NOT EXISTS (SELECT 1 FROM users s WHERE s.id = i.invited_by AND s.kind = 'service')
     AND ` + roles.HeldSQL("i.tenant_id", "i.invited_by", all, member) + ` @> ('{` + roles.UsersWrite + `}'::text[] || ARRAY(
         SELECT DISTINCT x FROM invitation_roles ir JOIN roles ro ON ro.tenant_id = ir.tenant_id AND ro.id = ir.role_id,
             unnest(` + roles.PermissionsSQL("ro", all, member) + `) x
         WHERE ir.tenant_id = i.tenant_id AND ir.invitation_id = i.id AND ` + roles.HandingSQL("ro", "x", all) + `)))`
}

// refusal is the SQL expression (text) of why invitation row i, of tenant
// row t, cannot be accepted now, one of the Refused* codes, or NULL when
// it can, under the catalog whose arrays are bound to all and member: the
// one test of the accept (Lock, GrantableRoles) and of the invitee's list
// (ForUser), so that the list offers what the accept takes. What is about
// the account accepting (its address, status and password, a membership
// it holds already) the accept checks besides.
func refusal(all, member string) string {
	return `(CASE WHEN i.status = '` + StatusRevoked + `' THEN '` + RefusedRevoked + `'
      WHEN i.status = '` + StatusExpired + `' OR (i.status = '` + StatusPending + `' AND i.expires_at <= now()) THEN '` + RefusedExpired + `'
      WHEN i.status <> '` + StatusPending + `' THEN '` + RefusedUsed + `'
      WHEN t.status <> 'active' THEN '` + RefusedTenantSuspended + `'
      WHEN NOT ` + inviterMay(all, member) + ` THEN '` + RefusedInviter + `'
      WHEN ` + roleDeleted + ` THEN '` + RefusedRoleDeleted + `'
 END)`
}

// tenantRefusal is refusal and then, for an invitation it finds nothing
// to refuse, RefusedMember when its address belongs to a member of its
// tenant (the accept's membership would conflict): what the tenant's
// list tells of each invitation, so that one the accept would refuse is
// never shown as live.
func tenantRefusal(all, member string) string {
	return `coalesce(` + refusal(all, member) + `,
    CASE WHEN ` + addressIsMember("i.tenant_id", "i.email") + ` THEN '` + RefusedMember + `' END)`
}

// ErrInvalidToken: no invitation has this token (never issued, replaced by
// a resend, or tampered with).
var ErrInvalidToken = errors.New("the invitation link is not valid")

// The lookup of an invitation by its token, Lock's and Preview's: a
// Pending's columns, then (Preview) the extra ones, then the invitation's
// row found by the token's digest.
var (
	qPendingCols = `
SELECT i.id::text, i.tenant_id::text, i.email, i.roles, i.invited_by::text,
       coalesce(` + refusal("$2::text[]", "$3::text[]") + `, '')`
	qByToken = `
FROM invitations i JOIN tenants t ON t.id = i.tenant_id
WHERE i.token_hash = $1`
)

// find reads the invitation of a raw token with q (the columns of
// qPendingCols, then those extra points to), digested as mailed tokens
// are, its refusal under the catalog c; ErrInvalidToken when no
// invitation has it.
func find(ctx context.Context, db sqldb.DB, c *permissions.Catalog, q, raw string, extra ...any) (Pending, error) {
	if !onetime.Plausible(raw) {
		return Pending{}, ErrInvalidToken
	}
	all, member := roles.CatalogArgs(c)
	var p Pending
	dst := append([]any{&p.ID, &p.TenantID, &p.Email, &p.Roles, &p.InvitedBy, &p.Refusal}, extra...)
	err := db.QueryRow(ctx, q, onetime.Hash(raw), all, member).Scan(dst...)
	if errors.Is(err, pgx.ErrNoRows) {
		return Pending{}, ErrInvalidToken
	}
	if err != nil {
		return Pending{}, fmt.Errorf("find invitation: %w", err)
	}
	p.Email = mail.Canonical(p.Email)
	return p, nil
}

// Lock finds the invitation of a raw token and locks it (FOR UPDATE),
// with its refusal under the catalog c.
func Lock(ctx context.Context, tx pgx.Tx, c *permissions.Catalog, raw string) (Pending, error) {
	return find(ctx, tx, c, qPendingCols+qByToken+` FOR UPDATE OF i`, raw)
}

// Preview is an invitation as the page its link opens shows it, before
// anything is accepted (Store.Preview).
type Preview struct {
	Pending
	// TenantName is the inviting tenant's name, as stored.
	TenantName string
	// InviterName is the display name the invitation's sender
	// (invited_by) has now (the mail named them as they were then): ""
	// when the invitation records no sender or the sender has no name.
	InviterName string
}

// Preview finds the invitation of a raw token as the accept finds it
// (Lock: the same plausibility check, digest and index, the same
// ErrInvalidToken), without locking it or writing anything, for the page
// the link opens: whoever holds the link, which an accept takes as proof
// of the mailbox, reads what its mail told them, and of a token they do
// not hold learns what the accept would answer. The caller decides (usable,
// as the accept does, on Refusal) whether it can still be accepted.
func (s *Store) Preview(ctx context.Context, raw string) (Preview, error) {
	const extra = `, t.name, coalesce((SELECT u.display_name FROM users u WHERE u.id = i.invited_by), '')`
	var v Preview
	p, err := find(ctx, s.pool, s.catalog, qPendingCols+extra+qByToken, raw, &v.TenantName, &v.InviterName)
	v.Pending = p
	return v, err
}

// qMailRefusal reads, for MailRefusal, the tenant's refusal
// (tenantRefusal) of the invitation of token digest $1 under the catalog
// whose arrays are $2 and $3.
var qMailRefusal = `
SELECT coalesce(` + tenantRefusal("$2::text[]", "$3::text[]") + `, '')
FROM invitations i JOIN tenants t ON t.id = i.tenant_id
WHERE i.token_hash = $1`

// RefusedInvalid is MailRefusal's answer for a token no invitation has
// (its tenant deleted with its invitations, or replaced by a resend).
const RefusedInvalid = "invalid"

// MailRefusal is why the invitation whose mail carries the raw token can
// no longer be accepted, asked when its mail's turn comes
// (mail.LinkCheck): RefusedInvalid when no invitation has the token, else
// the tenant's list's refusal (tenantRefusal: revoked, expired, used, its
// inviter no longer allowed to send it, a role of it deleted, its address
// a member's), "" when it can still be accepted. A suspended tenant is
// not a refusal here: the operator may reactivate it within the
// invitation's lifetime, and its mail goes out.
func (s *Store) MailRefusal(ctx context.Context, raw string) (string, error) {
	if !onetime.Plausible(raw) {
		return RefusedInvalid, nil
	}
	all, member := roles.CatalogArgs(s.catalog)
	var why string
	err := s.pool.QueryRow(ctx, qMailRefusal, onetime.Hash(raw), all, member).Scan(&why)
	if errors.Is(err, pgx.ErrNoRows) {
		return RefusedInvalid, nil
	}
	if err != nil {
		return "", fmt.Errorf("check invitation link: %w", err)
	}
	if why == RefusedTenantSuspended {
		return "", nil
	}
	return why, nil
}

// qGrantable reads, for GrantableRoles, the invitation's roles (those it
// holds: a deleted one is gone), by name and id, and locks them (FOR
// SHARE) until the accept commits, so that a change of their permissions
// waits for it instead of committing between the check (qRefusal) and
// the grant, which the grant's foreign-key check would wait for and then
// let through (roles.Handed).
const qGrantable = `
WITH r AS MATERIALIZED (
    SELECT ro.id, ro.name
    FROM invitation_roles ir JOIN roles ro ON ro.tenant_id = ir.tenant_id AND ro.id = ir.role_id
    WHERE ir.tenant_id = $1 AND ir.invitation_id = $2
    ORDER BY ro.id
    FOR SHARE OF ro
)
SELECT ARRAY(SELECT r.name FROM r ORDER BY r.name COLLATE "C"),
       ARRAY(SELECT r.id::text FROM r ORDER BY r.name COLLATE "C")`

// qRefusal reads the refusal of invitation $2 of tenant $1 under the
// catalog whose arrays are $3 and $4.
var qRefusal = `
SELECT coalesce(` + refusal("$3::text[]", "$4::text[]") + `, '')
FROM invitations i JOIN tenants t ON t.id = i.tenant_id
WHERE i.tenant_id = $1 AND i.id = $2`

// Grant is what an accepted invitation hands out (GrantableRoles).
type Grant struct {
	// Names and IDs are the invitation's roles, by their names now
	// (sorted) and, in the same order, their ids.
	Names, IDs []string
	// Refusal is why the invitation cannot be accepted (Pending.Refusal),
	// read once its roles are locked: "" when it can.
	Refusal string
}

// GrantableRoles re-checks an invitation at accept, its roles locked: the
// roles it holds (the very roles it was sent with, renamed or not, less
// any deleted since), and its refusal under the live catalog c, read in a
// statement of its own after the lock (in the same round trip), so that
// it sees a change of the roles' permissions that committed while the
// lock waited: the inviter must hold what the roles grant now.
func GrantableRoles(ctx context.Context, tx pgx.Tx, c *permissions.Catalog, p Pending) (Grant, error) {
	all, member := roles.CatalogArgs(c)
	var g Grant
	b := &pgx.Batch{}
	b.Queue(qGrantable, p.TenantID, p.ID).QueryRow(func(row pgx.Row) error {
		return row.Scan(&g.Names, &g.IDs)
	})
	b.Queue(qRefusal, p.TenantID, p.ID, all, member).QueryRow(func(row pgx.Row) error {
		return row.Scan(&g.Refusal)
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return Grant{}, fmt.Errorf("check invitation roles: %w", err)
	}
	return g, nil
}

// MarkAccepted records the accept.
func MarkAccepted(ctx context.Context, tx pgx.Tx, id, userID string) error {
	const q = `UPDATE invitations SET status = 'accepted', accepted_by = $2, updated_at = now() WHERE id = $1`
	if _, err := tx.Exec(ctx, q, id, userID); err != nil {
		return fmt.Errorf("accept invitation: %w", err)
	}
	return nil
}
