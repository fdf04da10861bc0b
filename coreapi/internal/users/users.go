// Package users stores users as members of a tenant: the caller's own
// profile, the tenant's member list, adding and removing members, and
// granting and revoking roles. Every change is one transaction that also
// writes an audit row and, when the proxy's cached projection changes, an
// outbox row.
package users

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeys"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Field limits (mirror the schema's CHECK constraints).
const (
	MaxDisplayName = 200
)

// Errors.
var (
	// ErrNotFound: no such user in this tenant.
	ErrNotFound = errors.New("user not found")
	// ErrAlreadyMember: the user already belongs to this tenant.
	ErrAlreadyMember = errors.New("user is already a member of this tenant")
	// ErrLastOwner: the change would leave the tenant without an active owner.
	ErrLastOwner = errors.New("the tenant must keep at least one active owner")
	// ErrNoHasher: a password was given but no password hasher is configured.
	ErrNoHasher = errors.New("password hashing is not configured")
	// ErrEmailTaken: another account has this email address.
	ErrEmailTaken = errors.New("an account with this email already exists")
	// ErrSameEmail: an email change to the address the account has.
	ErrSameEmail = errors.New("this is already the account's email address")
	// ErrServiceOwner: the owner role granted to a service account (a
	// machine owns no tenant).
	ErrServiceOwner = errors.New("a service account cannot hold the owner role")
	// ErrServiceAccount: a service account's membership removed through
	// the member route, which would leave the account, its client secrets
	// and its user row behind with no membership to come back to.
	ErrServiceAccount = errors.New("this member is a service account: delete it with DELETE /api/v1/service-accounts/{id}, which also deletes its client secrets")
)

// Member is a user seen from one tenant. The API writes it as tenantapi's
// member (the JSON names live in the HTTP layer).
type Member struct {
	ID          string
	Email       string
	DisplayName string
	Status      string // membership status in this tenant (as in Me)
	UserStatus  string // the account's global status
	Roles       []string
	CreatedAt   time.Time // when they joined the tenant
	UpdatedAt   time.Time
}

// Me is the caller's own profile in the current tenant (written as
// tenantapi's me).
type Me struct {
	ID               string
	Email            string
	EmailVerified    bool
	DisplayName      string
	Status           string
	TenantID         string
	MembershipStatus string
	Roles            []string
	Permissions      []string
	CreatedAt        time.Time
	UpdatedAt        time.Time
	// MFAEnabled: the user has an active second factor.
	MFAEnabled bool
}

// PasswordHasher turns a password into a stored hash (argon2id in
// production); declared here because Create is its user.
type PasswordHasher interface {
	Hash(ctx context.Context, password string) (string, error)
}

// Limits bound the mails the Store's changes send (a zero field takes
// its default). They are each Store's own, passed by its owner.
type Limits struct {
	// Invitations bound the invitation POST /users sends to an address
	// that has an account, and, by TenantMail, the verification mails
	// of the accounts it makes (TENANT_MAILS_PER_HOUR).
	Invitations invitations.Limits
}

// Store reads and writes members.
type Store struct {
	pool    *pgxpool.Pool
	hasher  PasswordHasher
	catalog *permissions.Catalog
	limits  Limits
	// all and member are the catalog's permissions and the member role's,
	// bound as $3 and $4 of the queries that use permsOf.
	all, member string
	// me and list batch concurrent Me and List reads (batch.go).
	me   *meLoader
	list *listLoader
}

// NewStore returns a Store on pool; hasher may be nil when no member is ever
// created with a password; c is the live permission catalog (nil: the
// built-in one); l bounds the mails it sends.
func NewStore(pool *pgxpool.Pool, hasher PasswordHasher, c *permissions.Catalog, l Limits) *Store {
	if c == nil {
		c = permissions.Builtin()
	}
	l.Invitations = l.Invitations.OrDefault()
	all, member := roles.CatalogArgs(c)
	return &Store{pool: pool, hasher: hasher, catalog: c, limits: l, all: all, member: member, me: newMeLoader(pool), list: newListLoader(pool)}
}

// permsOf is the sorted union of the permissions of membership m's roles
// under the live catalog, bound as $3 (every permission) and $4 (the
// member role's); rolePerms is roles.PermissionsSQL("r", "$3::text[]",
// "$4::text[]") (a test holds them equal), spelled out to keep the queries
// constants. A membership's role names are its role_names column, kept
// equal to membership_roles by triggers (migration 00010).
const (
	rolePerms = `CASE WHEN NOT r.builtin THEN r.permissions WHEN r.name = 'owner' THEN $3::text[]` +
		` WHEN r.name = 'admin' THEN array_remove($3::text[], 'tenant:write') WHEN r.name = 'member' THEN $4::text[]` +
		` ELSE '{}'::text[] END`
	permsOf = `ARRAY(
    SELECT DISTINCT p FROM membership_roles mr
    JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
    CROSS JOIN LATERAL unnest(` + rolePerms + `) AS p
    WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id AND p = ANY($3::text[])
    ORDER BY p)`
	mfaEnabled = `EXISTS (SELECT 1 FROM mfa_totp f WHERE f.user_id = u.id AND f.status = 'active')`
	memberCols = `u.id, u.email, u.display_name, m.status, u.status, m.role_names, m.created_at, GREATEST(m.updated_at, u.updated_at)`
)

// qMe reads the caller's own row by primary key: everything of the profile
// that the verified identity does not carry.
const qMe = `
SELECT u.email, u.email_verified_at IS NOT NULL, u.display_name, u.status, u.created_at, u.updated_at, ` + mfaEnabled + `
FROM users u WHERE u.id = $1`

// Me returns the caller's profile in the identity's tenant, in one query
// by primary key. The roles, permissions and membership come from the
// verified identity, not the database: the proxy signs them from the
// projection it authorized the request with, which it forwards only for an
// active user, membership and tenant (docs/architecture.md, "What GET
// /users/me trusts"), so the answer says what this request may do.
func (s *Store) Me(ctx context.Context, id identity.Identity) (Me, error) {
	me := meOf(id)
	if err := s.me.load(ctx, id.UserID, &me); err != nil {
		return Me{}, fmt.Errorf("get me: %w", mapErr(err))
	}
	return me, nil
}

// scanMe reads the one row of qMe into me (pgx.ErrNoRows without one), as
// QueryRow(...).Scan would. In the binary format of the cached statement
// modes it decodes the row itself: pgx builds a scan plan per column for
// every query's rows (allocating for the times), and this is every
// /users/me request's only query. The two strings share one allocation
// and the status is interned. Other formats (the simple protocol's text)
// are scanned by pgx.
func scanMe(rows pgx.Rows, me *Me) error {
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if f := rows.FieldDescriptions(); len(f) != 7 || !meBinary(f) {
		if err := rows.Scan(&me.Email, &me.EmailVerified, &me.DisplayName, &me.Status, &me.CreatedAt, &me.UpdatedAt, &me.MFAEnabled); err != nil {
			return err
		}
		rows.Close()
		return rows.Err()
	}
	if err := decodeMe(rows.RawValues(), me); err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

// meBinary reports whether qMe's columns in f (its 7, without the id of
// qMeBatch) that decodeMe reads as binary are in the binary format.
func meBinary(f []pgconn.FieldDescription) bool {
	return f[1].Format == pgx.BinaryFormatCode && f[4].Format == pgx.BinaryFormatCode &&
		f[5].Format == pgx.BinaryFormatCode && f[6].Format == pgx.BinaryFormatCode
}

// decodeMe decodes the 7 binary values of qMe's row into me.
func decodeMe(raw [][]byte, me *Me) error {
	for i, v := range raw {
		if v == nil {
			return fmt.Errorf("me: column %d is NULL", i)
		}
	}
	var err error
	if me.EmailVerified, err = binaryBool(raw[1]); err != nil {
		return err
	}
	if me.MFAEnabled, err = binaryBool(raw[6]); err != nil {
		return err
	}
	if me.CreatedAt, err = binaryTimestamptz(raw[4]); err != nil {
		return err
	}
	if me.UpdatedAt, err = binaryTimestamptz(raw[5]); err != nil {
		return err
	}
	text := string(raw[0]) + string(raw[2]) // one allocation: the operands are not copied first
	me.Email, me.DisplayName = text[:len(raw[0])], text[len(raw[0]):]
	me.Status = status(raw[3])
	return nil
}

// binaryBool decodes a bool in PostgreSQL's binary format.
func binaryBool(b []byte) (bool, error) {
	if len(b) != 1 {
		return false, fmt.Errorf("bool: %d bytes, want 1", len(b))
	}
	return b[0] != 0, nil
}

// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC), and
// the binary encodings of timestamptz's infinity and -infinity.
const (
	pgEpochMicros      = 946684800000000
	pgInfinity         = math.MaxInt64
	pgNegativeInfinity = math.MinInt64
)

// binaryTimestamptz decodes a timestamptz in PostgreSQL's binary format
// (microseconds from 2000-01-01 UTC) to the time.Time pgx scans from it:
// in time.Local, as time.Unix returns it; an infinity is an error, as
// pgx's is for a time.Time.
func binaryTimestamptz(b []byte) (time.Time, error) {
	if len(b) != 8 {
		return time.Time{}, fmt.Errorf("timestamptz: %d bytes, want 8", len(b))
	}
	us := int64(binary.BigEndian.Uint64(b))
	switch us {
	case pgInfinity:
		return time.Time{}, errors.New("cannot scan Infinity into *time.Time")
	case pgNegativeInfinity:
		return time.Time{}, errors.New("cannot scan -Infinity into *time.Time")
	}
	return time.Unix(pgEpochMicros/1_000_000+us/1_000_000, pgEpochMicros%1_000_000*1_000+us%1_000_000*1_000), nil
}

// meOf is the part of the profile the verified identity carries.
func meOf(id identity.Identity) Me {
	me := Me{ID: id.UserID, TenantID: id.TenantID, MembershipStatus: identity.StatusActive,
		Roles: id.Roles, Permissions: id.Permissions}
	if me.Roles == nil {
		me.Roles = []string{}
	}
	if me.Permissions == nil {
		me.Permissions = []string{}
	}
	return me
}

// MePatch is a change of the caller's own account (PATCH /users/me): a
// new display name, an email change to start, or both.
type MePatch struct {
	// DisplayName, when set, is the new display name. The projection
	// does not carry it, so nothing is invalidated; the name the account
	// already has changes nothing and writes nothing.
	DisplayName *string
	// NameLimit bounds the account's display-name changes (DisplayNameKey).
	NameLimit ratelimit.Limit
	// Email, when set, starts an email change: a verification link goes
	// to the new address, which becomes the account's only when the link
	// is used (see package lifecycle).
	Email *string
	// EmailMaxAge is how recent the sign-in asking for an email change
	// must be (with the second factor, for an account that has one).
	EmailMaxAge time.Duration
}

// ErrNotFresh: the sign-in of the live session asking for an email
// change is older than allowed.
var ErrNotFresh = errors.New("the session's sign-in is too old")

// ErrNotFreshFactor: the account asking for an email change has an
// active second factor, and its session has not given it within the
// allowed age (a sign-in with the password alone, or an older one).
var ErrNotFreshFactor = errors.New("the session has not given the account's second factor recently")

// PatchMe applies p for the caller id in one transaction, all or nothing:
// a request that asks for both changes and is refused for either (a
// guard, a limit) writes neither, and one accepted makes both.
//
// Every change needs, read with the account's row locked, a session still
// bound to the identity's tenant (sessions.LockLiveIn, else
// sessions.ErrNotFound: a tenant switch moves it, and the token it left
// behind names a tenant the session is no longer in) and an account that
// could sign in to that tenant now (ActiveAccount, else ErrInactive),
// whose bearer a proxy that has not yet heard of a disabling still
// forwards.
//
// A display-name change counts against p.NameLimit, per account, in the
// transaction: each writes an audit row in every tenant the account
// belongs to, so any member could otherwise flood the logs of the
// account's other tenants. Over it, the change is a *ratelimit.Refused.
// The audit row's "from" is the name read under the row's lock, the name
// this change replaced, not one a concurrent change wrote in between.
//
// An email change to an address another account has is ErrEmailTaken, to
// the account's own ErrSameEmail; one to an address that has had
// onetime.AddressMailLimit verification mails in the window, whichever
// accounts asked, is a *ratelimit.Refused. Its session must be live and
// its sign-in within p.EmailMaxAge, with the second factor for an account
// that has an active one, as its session and its access token say
// (sessions.Fresh), checked with the account's row locked (else
// sessions.ErrNotFound for a session that ended, before the sign-in's
// age is looked at, then ErrNotFreshFactor for an account with a factor,
// ErrNotFresh for one without): the address is where a password reset
// goes, so the factor that guards the sign-in guards its move too. A
// factor's confirmation locks the row as well, and is seen once
// committed. A password reset or change, or a sign-out everywhere,
// locks it too, so either it ends the session first and the change is
// refused, or it comes after and revokes the change with the other
// pending ones. Checked only before (as the handler does), a change could
// be stored just after a reset ended the session that asked for it, and
// outlive the reset.
func (s *Store) PatchMe(ctx context.Context, id identity.Identity, p MePatch, requestID string) (Me, error) {
	const (
		// An email change takes the row FOR UPDATE, a name change alone
		// FOR NO KEY UPDATE; $2 is the new address ('' for none).
		qRow = `
SELECT u.email, u.display_name,
       $2 <> '' AND EXISTS (SELECT 1 FROM users o WHERE lower(o.email) = lower($2) AND o.id <> u.id)
FROM users u
WHERE u.id = $1 AND EXISTS (SELECT 1 FROM memberships WHERE tenant_id = $3 AND user_id = $1)`
		qLockEmail = qRow + `
FOR UPDATE OF u`
		qLockName = qRow + `
FOR NO KEY UPDATE OF u`
		qUpdate = `UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1`
	)
	userID, tenantID := id.UserID, id.TenantID
	me := meOf(id)
	q, newEmail := qLockName, ""
	if p.Email != nil {
		q, newEmail = qLockEmail, *p.Email
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			current, old string
			taken        bool
		)
		if err := tx.QueryRow(ctx, q, userID, newEmail, tenantID).Scan(&current, &old, &taken); err != nil {
			return mapErr(err)
		}
		// Statements after the lock: they see a revocation or a
		// disabling committed by whoever held the row before. The
		// session first: one that ended is answered as ended, not as one
		// to step up. A tenant switch that commits from here on waits
		// for the session's row.
		if err := sessions.LockLiveIn(ctx, tx, userID, id.SessionID, tenantID); err != nil {
			return err
		}
		if p.Email != nil {
			// The factor looked for after the lock, in a statement of its
			// own: a confirmation (which locks the row too) committed
			// while this waited is seen.
			mfa, err := HasActiveFactor(ctx, tx, userID)
			if err != nil {
				return err
			}
			if fresh, err := sessions.Fresh(ctx, tx, id, p.EmailMaxAge, mfa); err != nil {
				return err
			} else if !fresh && mfa {
				return ErrNotFreshFactor
			} else if !fresh {
				return ErrNotFresh
			}
		}
		if _, err := ActiveAccount(ctx, tx, userID, tenantID); err != nil {
			return err
		}
		if p.Email != nil {
			if taken {
				return ErrEmailTaken
			}
			if mail.SameAddress(current, newEmail) {
				return ErrSameEmail
			}
		}
		// The name it already has changes nothing and writes nothing
		// (no updated_at, no audit row, no hit), as for a tenant or a role.
		rename := p.DisplayName != nil && *p.DisplayName != old
		if rename {
			if err := ratelimit.CheckIn(ctx, tx, DisplayNameKey(userID), p.NameLimit,
				fmt.Sprintf("too many display name changes: at most %d in %s", p.NameLimit.N, p.NameLimit.Period())); err != nil {
				return err
			}
		}
		if p.Email != nil {
			// Each account's own limit says nothing of the address:
			// bounded per address too (a *ratelimit.Refused).
			if err := onetime.CountAddressMail(ctx, tx, newEmail); err != nil {
				return err
			}
			if err := onetime.SendVerification(ctx, tx, userID, newEmail, true, requestID); err != nil {
				return err
			}
			if err := audit.WriteForUser(ctx, tx, userID, audit.Event{
				ActorUserID: userID, Action: audit.ActionUserEmailChangeRequested,
				TargetType: audit.TargetUser, TargetID: userID, RequestID: requestID,
			}); err != nil {
				return err
			}
		}
		if rename {
			if _, err := tx.Exec(ctx, qUpdate, userID, *p.DisplayName); err != nil {
				return mapErr(err)
			}
			if err := audit.WriteForUser(ctx, tx, userID, audit.Event{
				ActorUserID: userID, Action: audit.ActionUserProfileUpdated,
				TargetType: audit.TargetUser, TargetID: userID, RequestID: requestID,
				Data: map[string]auditedProfile{"from": {DisplayName: old}, "to": {DisplayName: *p.DisplayName}},
			}); err != nil {
				return err
			}
		}
		return mapErr(tx.QueryRow(ctx, qMe, userID).Scan(&me.Email, &me.EmailVerified, &me.DisplayName, &me.Status,
			&me.CreatedAt, &me.UpdatedAt, &me.MFAEnabled))
	})
	if err != nil {
		return Me{}, fmt.Errorf("patch me: %w", err)
	}
	return me, nil
}

// DisplayNameKey is the rate-limit key of an account's display-name
// changes.
func DisplayNameKey(userID string) []byte { return ratelimit.Key("display-name-change", userID) }

// auditedProfile is what the audit row of a profile change records of the
// account, before and after: what PATCH /users/me changes directly (an
// email change waits for its link and is audited as user.email_changed).
type auditedProfile struct {
	DisplayName string `json:"display_name"`
}

// ListParams selects a page of members ordered by join time then id.
type ListParams struct {
	TenantID     string
	After        time.Time
	AfterID      string // empty: first page
	Limit        int
	IncludeTotal bool
}

// List returns a page of the tenant's members, each with its role names,
// in one query (qList, or qListBatch with the pages other requests asked
// for meanwhile: listbatch.go). The role names are the membership's
// role_names column (no roles subquery per member); each member's user row
// is joined by primary key in page order (OFFSET 0 keeps the join a nested
// loop over the page: without it the planner may hash the whole users
// table for 50 rows).
func (s *Store) List(ctx context.Context, p ListParams) ([]Member, int64, error) {
	c := &listCall{tenantID: p.TenantID, after: p.After, afterID: p.AfterID, limit: p.Limit, withTotal: p.IncludeTotal}
	if c.afterID == "" {
		c.after, c.afterID = time.Time{}, "00000000-0000-0000-0000-000000000000"
	}
	out, total, err := s.list.load(ctx, c)
	if err == nil && p.IncludeTotal && len(out) == 0 && p.AfterID != "" { // past the end: no row to carry the total
		total, err = sqldb.Count(ctx, s.pool, qMemberCount, p.TenantID)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("list members: %w", err)
	}
	return out, total, nil
}

// qList is List's page query; qListTotal adds the tenant's number of
// members.
const qList = `
SELECT ` + memberCols + `, 0::bigint
FROM (
    SELECT tenant_id, user_id, status, role_names, created_at, updated_at
    FROM memberships
    WHERE tenant_id = $1 AND (created_at, user_id) > ($2, $3::uuid)
    ORDER BY created_at, user_id
    LIMIT $4
) m
CROSS JOIN LATERAL (SELECT id, email, display_name, status, updated_at FROM users WHERE id = m.user_id OFFSET 0) u
ORDER BY m.created_at, m.user_id`

// With a total: the tenant's number of members, kept in
// tenant_member_counts by triggers (migration 00011), read once for the
// page (an uncorrelated subquery) instead of a window over every member.
const qListTotal = `
SELECT ` + memberCols + `, ` + memberCount + `
FROM (
    SELECT tenant_id, user_id, status, role_names, created_at, updated_at
    FROM memberships
    WHERE tenant_id = $1 AND (created_at, user_id) > ($2, $3::uuid)
    ORDER BY created_at, user_id
    LIMIT $4
) m
CROSS JOIN LATERAL (SELECT id, email, display_name, status, updated_at FROM users WHERE id = m.user_id OFFSET 0) u
ORDER BY m.created_at, m.user_id`

// memberCount is the number of members of tenant $1 (kept by triggers in
// tenant_member_counts); qMemberCount reads it alone, for a page past the
// end of the list.
const (
	memberCount  = `coalesce((SELECT c.members FROM tenant_member_counts c WHERE c.tenant_id = $1), 0)`
	qMemberCount = `SELECT ` + memberCount + `::bigint`
)

// scanMembers reads rows of memberCols plus a total into Members: this is
// the member list's hot loop, so it allocates per page, not per member.
// The strings of the page (ids, emails, display names, role names) are
// copied into one growing buffer and the role lists share one backing
// array; the id comes in binary (16 bytes, formatted here as PostgreSQL's
// text would be) and the role names are read from text[]'s binary form.
// In text format (the simple protocol) pgx scans ids and roles instead.
// The two status columns, one of a few constants, are interned. The times
// and the total are scanned by pgx (no allocation per row). n is a
// capacity hint; total is the page's count column.
func scanMembers(rows pgx.Rows, n int) (out []Member, total int64, err error) {
	return scanMemberRows(rows, n, nil)
}

// scanMemberRows is scanMembers; with pages not nil, each row is led by
// one more column, the number of the page it belongs to (qListBatch's
// ord), and the number and the count column of each row are appended to
// *pages.
func scanMemberRows(rows pgx.Rows, n int, pages *[]pageRow) (out []Member, total int64, err error) {
	defer rows.Close()
	n = max(0, min(n, 1000))
	out = make([]Member, 0, n)
	var (
		m     Member
		id    string
		ord   int64
		text  = make([]byte, 0, n*96) // the page's strings
		roles = make([]string, 0, n)  // the page's role lists, one after another
	)
	dest := []any{nil, nil, nil, nil, nil, nil, &m.CreatedAt, &m.UpdatedAt, &total}
	off := 0 // of the member's columns in the row
	if pages != nil {
		dest, off = append([]any{&ord}, dest...), 1
	}
	binID, binRoles := false, false
	for first := true; rows.Next(); first = false {
		if first {
			f := rows.FieldDescriptions()
			binID, binRoles = f[off].Format == pgx.BinaryFormatCode, f[off+5].Format == pgx.BinaryFormatCode
			if !binID {
				dest[off] = &id
			}
			if !binRoles {
				dest[off+5] = &m.Roles
			}
		}
		m.Roles = nil // a fresh slice per member, never one shared with the previous row
		if err := rows.Scan(dest...); err != nil {
			return nil, 0, err
		}
		if pages != nil {
			*pages = append(*pages, pageRow{ord: ord, total: total})
		}
		raw := rows.RawValues()[off:]
		// Strings made from text never change: appending only writes past
		// them, and a growing append copies to a new array and leaves the
		// old one to the strings that point into it.
		from := len(text)
		if binID {
			if len(raw[0]) != 16 {
				return nil, 0, fmt.Errorf("member id: %d bytes, want 16", len(raw[0]))
			}
			text = appendUUID(text, raw[0])
		} else {
			text = append(text, id...)
		}
		m.ID = unsafeString(text, from)
		from = len(text)
		text = append(text, raw[1]...)
		m.Email = unsafeString(text, from)
		from = len(text)
		text = append(text, raw[2]...)
		m.DisplayName = unsafeString(text, from)
		m.Status, m.UserStatus = status(raw[3]), status(raw[4])
		if binRoles {
			if m.Roles, text, roles, err = textArray(raw[5], text, roles); err != nil {
				return nil, 0, fmt.Errorf("member roles: %w", err)
			}
		}
		out = append(out, m)
	}
	return out, total, rows.Err()
}

// unsafeString is text[from:] as a string, without a copy: text must never
// be written below its current length again.
func unsafeString(text []byte, from int) string {
	return unsafe.String(unsafe.SliceData(text[from:]), len(text)-from)
}

// appendUUID appends the 16 bytes of a binary uuid in PostgreSQL's text
// form (lower-case hex, 8-4-4-4-12).
func appendUUID(b, u []byte) []byte {
	const hexDigits = "0123456789abcdef"
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

// textArray reads a one-dimensional text[] without NULLs in PostgreSQL's
// binary array format (ndim, has-null flag, element type, then per
// dimension its length and lower bound, then each element's length and
// bytes). The names are appended to text and the list to roles; it
// returns the list (empty, not nil, for an empty array) as a slice of
// roles that appending to cannot spill into the next member's list.
func textArray(src, text []byte, roles []string) ([]string, []byte, []string, error) {
	be := binary.BigEndian
	if len(src) < 12 {
		return nil, text, roles, fmt.Errorf("array: %d bytes", len(src))
	}
	ndim := be.Uint32(src)
	if ndim == 0 {
		return []string{}, text, roles, nil
	}
	if ndim != 1 || len(src) < 20 {
		return nil, text, roles, fmt.Errorf("array: %d dimensions, want 1", ndim)
	}
	count := int(int32(be.Uint32(src[12:])))
	if count < 0 {
		return nil, text, roles, fmt.Errorf("array: %d elements", count)
	}
	p := src[20:]
	start := len(text)
	for range count {
		if len(p) < 4 {
			return nil, text, roles, fmt.Errorf("array: truncated")
		}
		l := int32(be.Uint32(p))
		if l < 0 {
			return nil, text, roles, fmt.Errorf("array: NULL element")
		}
		if len(p) < 4+int(l) {
			return nil, text, roles, fmt.Errorf("array: truncated")
		}
		text = append(text, p[4:4+l]...)
		p = p[4+l:]
	}
	if cap(roles)-len(roles) < count {
		roles = make([]string, 0, max(count, 2*cap(roles))) // the old array stays with the lists already made
	}
	first := len(roles)
	p = src[20:]
	for range count {
		l := int(be.Uint32(p))
		roles = append(roles, unsafeString(text[:start+l], start))
		start += l
		p = p[4+l:]
	}
	return roles[first:len(roles):len(roles)], text, roles, nil
}

// status returns a status column's text (text travels as its bytes in
// both wire formats), the constant when it is one.
func status(b []byte) string {
	switch string(b) {
	case identity.StatusActive:
		return identity.StatusActive
	case identity.StatusDisabled:
		return identity.StatusDisabled
	}
	return string(b)
}

const qGetMember = `
SELECT ` + memberCols + `, 0::bigint
FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.tenant_id = $1 AND m.user_id = $2`

// Get returns one member of the tenant, in one query.
func (s *Store) Get(ctx context.Context, tenantID, userID string) (Member, error) {
	m, err := getOne(ctx, s.pool, tenantID, userID)
	if err != nil {
		return Member{}, fmt.Errorf("get member: %w", err)
	}
	return m, nil
}

func getTx(ctx context.Context, tx pgx.Tx, tenantID, userID string) (Member, error) {
	return getOne(ctx, tx, tenantID, userID)
}

func getOne(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, tenantID, userID string) (Member, error) {
	rows, err := q.Query(ctx, qGetMember, tenantID, userID)
	if err != nil {
		return Member{}, mapErr(err)
	}
	ms, _, err := scanMembers(rows, 1)
	if err != nil {
		return Member{}, mapErr(err)
	}
	if len(ms) != 1 {
		return Member{}, ErrNotFound
	}
	return ms[0], nil
}

// NewMember is the body of POST /users.
type NewMember struct {
	Email       string
	Password    string // optional; only for a user that does not exist yet
	DisplayName string
	Roles       []string // defaults to member
	// BeforeHash, when set, runs right before Password is hashed, once
	// the cheap refusals have been looked for (Create): it charges the
	// hash to the caller's budget, and an error it returns refuses the
	// request, unhashed and with nothing written.
	BeforeHash func(context.Context) error
}

// How create treats the password: hashed is the write with the hash made
// (or no password); unhashed is the write for an address that had an
// account (an invitation, the password ignored, never hashed), refused
// with errNeedsHash should a user be made after all (the account was
// deleted meanwhile).
type createMode uint8

const (
	hashed createMode = iota
	unhashed
)

var errNeedsHash = errors.New("the new user needs its password hashed")

// Create adds a member to the tenant, creating the user if the email is
// new. For an address that already has an account nobody is added: an
// invitation is created instead (returned, with a zero Member), which
// that account's owner may accept. Nothing of the existing account leaks
// into the answer, and a password given for it is ignored. A member added
// ends the tenant's pending invitation to the address, which nobody could
// accept or resend any more (invitations.WithdrawForMember, data.via
// member.added).
//
// A password costs an argon2 hash (tens of ms of CPU on one of a few
// hashing slots), so it is hashed only once the cheap refusals have been
// looked for, in one statement outside the transaction (precheck): an
// address that has an account (invited, or a member already: 409) is
// never hashed for, and an unknown role or a spent mail limit is refused
// unhashed. Then n.BeforeHash charges the hash, and the transaction
// checks everything again, as it does without a password.
func (s *Store) Create(ctx context.Context, tenantID string, a roles.Actor, n NewMember) (Member, *invitations.Invitation, error) {
	if len(n.Roles) == 0 {
		n.Roles = []string{roles.Member}
	}
	if n.Password == "" {
		return s.create(ctx, tenantID, n, a, "", hashed)
	}
	if s.hasher == nil {
		return Member{}, nil, ErrNoHasher
	}
	taken, err := s.precheck(ctx, tenantID, n)
	if err != nil {
		return Member{}, nil, fmt.Errorf("create member: %w", err)
	}
	if taken {
		m, inv, err := s.create(ctx, tenantID, n, a, "", unhashed)
		if !errors.Is(err, errNeedsHash) {
			return m, inv, err
		}
	}
	if n.BeforeHash != nil {
		if err := n.BeforeHash(ctx); err != nil {
			return Member{}, nil, err
		}
	}
	h, err := s.hasher.Hash(ctx, n.Password)
	if err != nil {
		return Member{}, nil, fmt.Errorf("create member: %w", err)
	}
	return s.create(ctx, tenantID, n, a, h, hashed)
}

// qPrecheck reads, for a new member: whether its address has an account,
// how many of its roles the tenant has, and the time until the tenant's
// mail limit and the address's verification mails allow one more when
// they are spent (NULL: not spent), as ratelimit.AllowIn counts them.
var qPrecheck = `
SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1)),
       (SELECT count(*) FROM roles WHERE tenant_id = $2 AND name = ANY($3::text[])),
       ` + ratelimit.WaitSQL("$4", "$5", "$6") + `,
       ` + ratelimit.WaitSQL("$7", "$8", "$9")

// precheck looks for what refuses a new member without a lock or a write,
// before its password is hashed: an unknown role (tenants.ErrUnknownRole),
// a spent mail limit of the tenant or of the address (*ratelimit.Refused,
// as the transaction's counts answer). taken reports that the address has
// an account: it is invited instead, and its password never hashed.
func (s *Store) precheck(ctx context.Context, tenantID string, n NewMember) (taken bool, err error) {
	var (
		found                int
		tenantWait, addrWait *float64
	)
	tl, al := s.limits.Invitations.TenantMail, onetime.AddressMailLimit()
	if err := s.pool.QueryRow(ctx, qPrecheck, n.Email, tenantID, n.Roles,
		invitations.TenantMailKey(tenantID), tl.Window.Seconds(), tl.N,
		onetime.AddressMailKey(n.Email), al.Window.Seconds(), al.N).Scan(&taken, &found, &tenantWait, &addrWait); err != nil {
		return false, err
	}
	switch {
	case taken:
		return true, nil
	case found != len(SortedUnique(n.Roles)):
		return false, tenants.ErrUnknownRole
	case tenantWait != nil:
		return false, &ratelimit.Refused{What: invitations.TenantMailRefusal, RetryAfter: time.Duration(*tenantWait * float64(time.Second))}
	case addrWait != nil:
		return false, &ratelimit.Refused{What: onetime.AddressMailRefusal, RetryAfter: time.Duration(*addrWait * float64(time.Second))}
	}
	return false, nil
}

// create is Create's transaction, in mode, with hash the password's hash
// (empty: none, or not made yet).
func (s *Store) create(ctx context.Context, tenantID string, n NewMember, a roles.Actor, hash string, mode createMode) (Member, *invitations.Invitation, error) {
	var (
		m   Member
		inv *invitations.Invitation
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// What the actor holds now, not what the request was signed with,
		// read after the tenant's lock (first, before the roles'), so a
		// demotion being committed is waited for and seen.
		a, err := roles.LockedLive(ctx, tx, s.all, s.member, tenantID, a, roles.UsersWrite)
		if err != nil {
			return err
		}
		// The new member's roles hold what this replica's catalog says
		// only if it is the recorded one (a rollout may be under way).
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		// A member made with a password of the caller's choosing outlives
		// the caller's session: one ended (a password reset, the proxy not
		// told yet) makes none, as it makes no API key (sessions.CheckLive).
		if err := sessions.CheckLive(ctx, tx, a.UserID, a.SessionID); err != nil {
			return err
		}
		// The roles stay locked until the member holds them: a change of
		// their permissions waits (roles.Handed).
		found, perms, err := roles.Handed(ctx, tx, s.all, s.member, tenantID, n.Roles)
		if err != nil {
			return err
		}
		if !a.Covers(perms) {
			return roles.ErrEscalation
		}
		// A name that is no role now must not become one (created or
		// renamed to) before the grant, unchecked.
		if found != len(SortedUnique(n.Roles)) {
			return tenants.ErrUnknownRole
		}
		u, err := Insert(ctx, tx, NewUser{Email: n.Email, DisplayName: n.DisplayName, PasswordHash: hash, PasswordByAdmin: true})
		userID := u.ID
		if errors.Is(err, ErrEmailTaken) {
			// An account exists: its owner must consent.
			i, err := invitations.Create(ctx, tx, s.catalog, s.limits.Invitations, tenantID, a, n.Email, n.Roles)
			if errors.Is(err, invitations.ErrUnknownRole) {
				return tenants.ErrUnknownRole
			}
			if errors.Is(err, invitations.ErrIsMember) {
				return ErrAlreadyMember
			}
			inv = &i
			return err
		}
		if err != nil {
			return mapErr(err)
		}
		if mode == unhashed {
			return errNeedsHash
		}
		if err := tenants.AddMember(ctx, tx, tenantID, userID, n.Roles...); err != nil {
			if errors.Is(err, tenants.ErrAlreadyMember) {
				return ErrAlreadyMember
			}
			return err
		}
		// An invitation to the address, pending (it had no account), can
		// be neither accepted nor resent now: it ends with the adding.
		if err := invitations.WithdrawForMember(ctx, tx, tenantID, userID, a.UserID, a.RequestID, audit.ActionMemberAdded); err != nil {
			return err
		}
		// The new account's owner has not proven the address yet; the
		// mail counts against the tenant's mail limit, as an invitation's,
		// and against its inbox's: "victim+1@…", "victim+2@…" are new
		// accounts each, one inbox.
		if err := onetime.CountAddressMail(ctx, tx, n.Email); err != nil {
			return err
		}
		if err := invitations.CountTenantMail(ctx, tx, s.limits.Invitations.TenantMail, tenantID); err != nil {
			return err
		}
		if err := onetime.SendVerification(ctx, tx, userID, n.Email, false, a.RequestID); err != nil {
			return err
		}
		// The proxy may hold a "no membership" answer for this user.
		if err := audit.WriteWith(ctx, tx, audit.Event{
			TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionMemberAdded,
			TargetType: audit.TargetUser, TargetID: userID, RequestID: a.RequestID,
			Data: map[string]any{"email": n.Email, "roles": n.Roles, "user_created": true},
		}, outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonMemberAdded}); err != nil {
			return err
		}
		m, err = getTx(ctx, tx, tenantID, userID)
		return err
	})
	if err != nil {
		return Member{}, nil, fmt.Errorf("create member: %w", err)
	}
	return m, inv, nil
}

// qTarget reads the target member's status, whether it is an active owner,
// the union of its roles' permissions, whether another active owner
// exists, and whether the member is a service account.
const qTarget = `
SELECT m.status,
       EXISTS (SELECT 1 FROM membership_roles mr JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
               WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id AND r.builtin AND r.name = 'owner'),
       ` + permsOf + `,
       EXISTS (SELECT 1 FROM membership_roles mr
               JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
               JOIN memberships o ON o.tenant_id = mr.tenant_id AND o.user_id = mr.user_id
               JOIN users ou ON ou.id = o.user_id
               WHERE mr.tenant_id = m.tenant_id AND mr.user_id <> m.user_id
                 AND r.builtin AND r.name = 'owner' AND o.status = 'active' AND ou.status = 'active'),
       (SELECT u.kind = 'service' FROM users u WHERE u.id = m.user_id)
FROM memberships m
WHERE m.tenant_id = $1 AND m.user_id = $2
FOR NO KEY UPDATE OF m`

type target struct {
	status     string
	owner      bool
	perms      []string
	otherOwner bool
	service    bool // a service account's membership
}

// lockTarget takes the tenant's lock (roles.LockTenant), which serialises
// every change that can remove an owner or demote a member, narrows the
// actor's permissions to those it holds now (roles.Live: a change
// committed before the lock may have demoted it), then reads and locks
// the target.
func (s *Store) lockTarget(ctx context.Context, tx pgx.Tx, tenantID, userID string, a *roles.Actor) (target, error) {
	live, err := roles.LockedLive(ctx, tx, s.all, s.member, tenantID, *a, roles.UsersWrite)
	if err != nil {
		return target{}, err
	}
	*a = live
	return readTarget(ctx, tx, s.all, s.member, tenantID, userID)
}

// readTarget reads qTarget for the member (locking its row), with the
// catalog's arrays all and member (roles.CatalogArgs).
func readTarget(ctx context.Context, tx pgx.Tx, all, member, tenantID, userID string) (target, error) {
	var t target
	err := tx.QueryRow(ctx, qTarget, tenantID, userID, all, member).Scan(&t.status, &t.owner, &t.perms, &t.otherOwner, &t.service)
	return t, mapErr(err)
}

// ErrMemberElsewhere: the member belongs to another tenant too.
var ErrMemberElsewhere = errors.New("the member belongs to other tenants too")

// ErrNoActiveFactor: the member has no active second factor (none, or
// one enrolled but not confirmed).
var ErrNoActiveFactor = errors.New("the member has no active second factor")

// CheckFactorReset is the check, in tx, before a tenant admin a removes the
// second factor of the member userID (DELETE /users/{id}/mfa). It locks the
// membership row (readTarget). a must hold every permission the
// member holds in the tenant (else roles.ErrEscalation), as for disabling
// or removing it. The member must have an active second factor (else
// ErrNoActiveFactor), and only then belong to no other tenant (else
// ErrMemberElsewhere): the factor is the account's, so it guards the
// account's other tenants too, where a has no say; that the member
// belongs to other tenants is said only when there is a factor to reset.
// ErrNotFound: no such member.
func CheckFactorReset(ctx context.Context, tx pgx.Tx, c *permissions.Catalog, tenantID, userID string, a roles.Actor) error {
	const qElsewhere = `SELECT EXISTS (SELECT 1 FROM memberships WHERE user_id = $1 AND tenant_id <> $2)`
	const qLockAccount = `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`
	all, member := roles.CatalogArgs(c)
	// Ordered with every other change of a member (the tenant's lock),
	// and decided on what the actor holds now (roles.Live).
	a, err := roles.LockedLive(ctx, tx, all, member, tenantID, a, roles.UsersWrite)
	if err != nil {
		return err
	}
	t, err := readTarget(ctx, tx, all, member, tenantID, userID)
	if err != nil {
		return err
	}
	// What the member holds (t.perms) follows the catalog: judged by c
	// only if it is the recorded one.
	if err := permissions.CheckCurrent(ctx, tx, c); err != nil {
		return err
	}
	if !a.Covers(t.perms) {
		return roles.ErrEscalation
	}
	// The account's row, locked, holds back a membership being added in
	// another tenant (an invitation accepted there: its foreign key check
	// shares the row), and the looks below, statements of their own, see
	// one that committed while this waited. Unlocked, a join committing
	// just after the look let the factor be removed from an account that
	// belongs to another tenant by then. So does the factor's own look:
	// the member's disable or confirmation holds the row while it changes
	// the factor, and the locking statement's snapshot, older than that
	// change, reset a factor already disabled (ending every session) and
	// found none in one just confirmed.
	if _, err := tx.Exec(ctx, qLockAccount, userID); err != nil {
		return fmt.Errorf("lock account: %w", err)
	}
	active, err := HasActiveFactor(ctx, tx, userID)
	if err != nil {
		return err
	}
	if !active {
		return ErrNoActiveFactor
	}
	var elsewhere bool
	if err := tx.QueryRow(ctx, qElsewhere, userID, tenantID).Scan(&elsewhere); err != nil {
		return fmt.Errorf("other memberships: %w", err)
	}
	if elsewhere {
		return ErrMemberElsewhere
	}
	return nil
}

// Patch is a partial update of a member; nil fields are left alone.
type Patch struct {
	Status *string `json:"status,omitempty"` // membership status: active or disabled
}

// Update changes a member's status in the tenant. Disabling the last active
// owner is refused.
func (s *Store) Update(ctx context.Context, tenantID, userID string, a roles.Actor, p Patch) (Member, error) {
	const q = `UPDATE memberships SET status = $3, updated_at = now() WHERE tenant_id = $1 AND user_id = $2`
	var m Member
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		t, err := s.lockTarget(ctx, tx, tenantID, userID, &a)
		if err != nil {
			return err
		}
		if p.Status != nil && *p.Status != t.status {
			// Enabling a member gives back what its roles hold, and either
			// change needs what the member holds (t.perms), both judged
			// by this replica's catalog: only if it is the recorded one.
			if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
				return err
			}
			if !a.Covers(t.perms) {
				return roles.ErrEscalation
			}
			if *p.Status != identity.StatusActive && t.owner && !t.otherOwner {
				return ErrLastOwner
			}
			if _, err := tx.Exec(ctx, q, tenantID, userID, *p.Status); err != nil {
				return err
			}
			// The row says what changed, as role.updated does: the
			// membership's status before (read under the lock above, so
			// no concurrent change can slip in between) and after.
			if err := audit.WriteWith(ctx, tx, audit.Event{
				TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionMemberUpdated,
				TargetType: audit.TargetUser, TargetID: userID, RequestID: a.RequestID,
				Data: map[string]auditedMember{"from": {Status: t.status}, "to": {Status: *p.Status}},
			}, outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonMemberStatus(*p.Status)}); err != nil {
				return err
			}
		}
		m, err = getTx(ctx, tx, tenantID, userID)
		return err
	})
	if err != nil {
		return Member{}, fmt.Errorf("update member: %w", err)
	}
	return m, nil
}

// auditedMember is what the audit row of a member's update records of the
// membership, before and after: the fields a PATCH can change, named as
// the API names them.
type auditedMember struct {
	Status string `json:"membership_status"`
}

// Remove takes the user out of the tenant (the account itself stays).
// Removing the last active owner is refused. Every live API key acting as
// the user in the tenant is revoked in the same transaction, each audited
// and announced as a revocation (apikeys.RevokeUserKeys, data.via
// "member.removed"), so the audit log tells what ended and proxies drop
// the keys at once; none comes back if the user is added again. So do the
// user's sessions bound to the tenant, and the tenant's pending
// invitations to the user's address (invitations.WithdrawForMember).
// A service account is ErrServiceAccount: it is deleted whole, with its
// secrets, by serviceaccounts.Store.Delete.
func (s *Store) Remove(ctx context.Context, tenantID, userID string, a roles.Actor) error {
	const q = `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`
	const qLockAccount = `SELECT 1 FROM users WHERE id = $1 FOR SHARE`
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		t, err := s.lockTarget(ctx, tx, tenantID, userID, &a)
		if err != nil {
			return err
		}
		if t.service {
			return ErrServiceAccount
		}
		// What the member holds (t.perms) follows the catalog: judged by
		// this replica's only if it is the recorded one.
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		if !a.Covers(t.perms) {
			return roles.ErrEscalation
		}
		if t.owner && t.status == identity.StatusActive && !t.otherOwner {
			return ErrLastOwner
		}
		// The account's row before its sessions, as a password change or
		// reset, a sign-out everywhere and a factor's confirmation take
		// them: the change holds the row and ends the other sessions
		// before the one it keeps, so ending them here without the row
		// waited for the change while it waited for this (a deadlock, one
		// of them a 500).
		if _, err := tx.Exec(ctx, qLockAccount, userID); err != nil {
			return fmt.Errorf("lock account: %w", err)
		}
		// Before the membership's row is deleted: an accept of one of
		// these, holding the invitation, then finds the member still
		// there (409) instead of waiting for the deletion while the
		// removal waits for the invitation.
		if err := invitations.WithdrawForMember(ctx, tx, tenantID, userID, a.UserID, a.RequestID, audit.ActionMemberRemoved); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, q, tenantID, userID); err != nil {
			return err
		}
		if _, err := apikeys.RevokeUserKeys(ctx, tx, tenantID, userID, a.UserID, a.RequestID, audit.ActionMemberRemoved); err != nil {
			return err
		}
		if err := sessions.RevokeInTenant(ctx, tx, userID, tenantID); err != nil {
			return err
		}
		return audit.WriteWith(ctx, tx, audit.Event{
			TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionMemberRemoved,
			TargetType: audit.TargetUser, TargetID: userID, RequestID: a.RequestID,
		}, outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonMemberRemoved})
	})
	if err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	return nil
}

const qRole = `SELECT id::text, builtin, permissions FROM roles WHERE tenant_id = $1 AND name = $2`

// GrantRole gives the member the named role. Granting a role the member
// already holds changes nothing and writes nothing. The actor must hold
// every permission of the role (roles.Handing: a custom role's stored
// ones, also those the catalog does not declare). The owner role is never
// a service account's (ErrServiceOwner).
//
// It takes the tenant's lock first (roles.LockTenant), as the other member
// changes do: the grant's foreign-key check holds the membership against
// its deletion and its refresh of the role names then waits for the
// membership's lock, so a removal that locked the membership first and
// then deleted it waited for the grant while the grant waited for it.
func (s *Store) GrantRole(ctx context.Context, tenantID, userID, roleName string, a roles.Actor) (Member, error) {
	const q = `
INSERT INTO membership_roles (tenant_id, user_id, role_id) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING`
	const qService = `SELECT kind = 'service' FROM users WHERE id = $1`
	const qHeld = `
SELECT count(*), COALESCE(bool_or(role_id = $3), false) FROM membership_roles WHERE tenant_id = $1 AND user_id = $2`
	var m Member
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := roles.LockedLive(ctx, tx, s.all, s.member, tenantID, a, roles.UsersWrite)
		if err != nil {
			return err
		}
		// A built-in role is judged by this replica's catalog, which
		// must be the recorded one (permissions.CheckCurrent).
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		if _, err := getTx(ctx, tx, tenantID, userID); err != nil {
			return err
		}
		// The role stays locked until the grant commits, so that a change
		// of its permissions (roles.Store.Update) waits for it rather
		// than slipping in between this check and the grant, which the
		// grant's foreign-key check would then wait for and let through.
		var roleID string
		var builtin bool
		var perms []string
		if err := tx.QueryRow(ctx, qRole+` FOR SHARE`, tenantID, roleName).Scan(&roleID, &builtin, &perms); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return roles.ErrNotFound
			}
			return err
		}
		if !a.Covers(roles.Handing(s.catalog, roleName, builtin, perms)) {
			return roles.ErrEscalation
		}
		if builtin && roleName == roles.Owner {
			var service bool
			if err := tx.QueryRow(ctx, qService, userID).Scan(&service); err != nil {
				return mapErr(err)
			}
			if service {
				return ErrServiceOwner
			}
		}
		var held int
		var has bool
		if err := tx.QueryRow(ctx, qHeld, tenantID, userID, roleID).Scan(&held, &has); err != nil {
			return fmt.Errorf("count roles held: %w", err)
		}
		if held >= roles.MaxMemberRoles && !has {
			return roles.ErrMemberRoles
		}
		tag, err := tx.Exec(ctx, q, tenantID, userID, roleID)
		if err != nil {
			return mapErr(err)
		}
		if tag.RowsAffected() > 0 {
			if err := audit.WriteWith(ctx, tx, audit.Event{
				TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionMemberRoleGranted,
				TargetType: audit.TargetUser, TargetID: userID, Data: map[string]any{"role": roleName}, RequestID: a.RequestID,
			}, outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonRoleGranted}); err != nil {
				return err
			}
		}
		m, err = getTx(ctx, tx, tenantID, userID)
		return err
	})
	if err != nil {
		return Member{}, fmt.Errorf("grant role: %w", err)
	}
	return m, nil
}

// RevokeRole takes the named role from the member; revoking a role the
// member does not hold changes nothing. The actor must hold every
// permission of the role and every permission the member holds, as for
// disabling or removing the member: one who holds less cannot demote
// them. Taking owner from the last active owner is refused.
func (s *Store) RevokeRole(ctx context.Context, tenantID, userID, roleName string, a roles.Actor) (Member, error) {
	const q = `DELETE FROM membership_roles WHERE tenant_id = $1 AND user_id = $2 AND role_id = $3`
	var m Member
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		t, err := s.lockTarget(ctx, tx, tenantID, userID, &a)
		if err != nil {
			return err
		}
		var roleID string
		var builtin bool
		var perms []string
		if err := tx.QueryRow(ctx, qRole, tenantID, roleName).Scan(&roleID, &builtin, &perms); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return roles.ErrNotFound
			}
			return err
		}
		// What the role and the member hold follow the catalog: judged
		// by this replica's only if it is the recorded one.
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		if !a.Covers(roles.EffectivePermissions(s.catalog, roleName, builtin, perms)) || !a.Covers(t.perms) {
			return roles.ErrEscalation
		}
		if builtin && roleName == roles.Owner && t.owner && t.status == identity.StatusActive && !t.otherOwner {
			return ErrLastOwner
		}
		tag, err := tx.Exec(ctx, q, tenantID, userID, roleID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() > 0 {
			if err := audit.WriteWith(ctx, tx, audit.Event{
				TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionMemberRoleRevoked,
				TargetType: audit.TargetUser, TargetID: userID, Data: map[string]any{"role": roleName}, RequestID: a.RequestID,
			}, outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonRoleRevoked}); err != nil {
				return err
			}
		}
		m, err = getTx(ctx, tx, tenantID, userID)
		return err
	})
	if err != nil {
		return Member{}, fmt.Errorf("revoke role: %w", err)
	}
	return m, nil
}

// SortedUnique is a helper for callers validating role lists.
func SortedUnique(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23503": // foreign key: the tenant or user vanished
			return ErrNotFound
		case "23505":
			return ErrAlreadyMember
		}
	}
	return err
}
