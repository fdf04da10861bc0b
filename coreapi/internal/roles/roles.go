// Package roles holds the built-in roles every tenant starts with, what a
// role holds under the live permission catalog, and the storage of a
// tenant's roles.
package roles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/apikeylive"
	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/clientsecret"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Built-in permissions (see package permissions for the catalog).
const (
	TenantRead   = permissions.TenantRead
	TenantWrite  = permissions.TenantWrite
	UsersRead    = permissions.UsersRead
	UsersWrite   = permissions.UsersWrite
	RolesRead    = permissions.RolesRead
	RolesWrite   = permissions.RolesWrite
	AuditRead    = permissions.AuditRead
	APIKeysWrite = permissions.APIKeysWrite
)

// Built-in role names.
const (
	Owner  = "owner"
	Admin  = "admin"
	Member = "member"
)

// Definition describes a role to create.
type Definition struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Permissions []string `json:"permissions"`
}

// Builtin returns the roles every tenant is created with: owner (every
// permission), admin (all but tenant:write) and member (tenant:read). The
// permissions stored with them are those of the built-in catalog and are
// never read back: what a built-in role holds is computed from the live
// catalog (EffectivePermissions, PermissionsSQL), so a catalog change
// reaches every tenant without rewriting rows.
func Builtin() []Definition {
	c := permissions.Builtin()
	return []Definition{
		{Name: Owner, Description: "Full control of the tenant", Permissions: c.Names()},
		{Name: Admin, Description: "Manages users and roles", Permissions: c.AdminNames()},
		{Name: Member, Description: "Reads the tenant", Permissions: c.MemberNames()},
	}
}

// EffectivePermissions returns what a role holds under catalog c: for the
// built-in owner every permission, for admin all but tenant:write, for
// member tenant:read plus the member_default ones; for a custom role its
// stored permissions that are still in the catalog. It agrees with
// PermissionsSQL.
func EffectivePermissions(c *permissions.Catalog, name string, builtin bool, stored []string) []string {
	if !builtin {
		return c.Known(stored)
	}
	switch name {
	case Owner:
		return slices.Clone(c.Names())
	case Admin:
		return slices.Clone(c.AdminNames())
	case Member:
		return slices.Clone(c.MemberNames())
	}
	return []string{}
}

// Handing returns what handing out a role (granting it, adding a member or
// a service account with it, inviting to it) needs its giver to hold under
// catalog c: what a built-in role holds under c, and every permission a
// custom role stores, those c does not declare included. Such a
// permission is one a replica of another version declares during a
// catalog rollout, or one taken out of the catalog, which holders regain
// when it is declared again: judged by c alone the role would be handed
// out on the say of a giver who does not hold it, and the replicas that
// declare it would then grant it. A giver's permissions are those c
// declares (Live), so such a role is handed out by no one under c.
func Handing(c *permissions.Catalog, name string, builtin bool, stored []string) []string {
	if !builtin {
		return slices.Clone(stored)
	}
	return EffectivePermissions(c, name, builtin, stored)
}

// HandingSQL is the SQL condition that permission p, an element of
// PermissionsSQL of the same role row (bound to the catalog's array all),
// counts in what handing the role out needs (Handing): every one of a
// built-in role, which PermissionsSQL takes from the catalog, and every
// one a custom role stores, declared by the catalog or not.
func HandingSQL(r, p, all string) string {
	return `(NOT ` + r + `.builtin OR ` + p + ` = ANY(` + all + `))`
}

// PermissionsSQL is the SQL expression of the permissions of role row r
// before the catalog filter: all and member are placeholders (e.g.
// "$3::text[]") bound to CatalogArgs. Callers that unnest it must keep
// only the elements = ANY(all), which drops permissions a custom role
// stored but the catalog no longer declares. The projection, the member
// profile and the escalation checks all use it, so built-in roles follow
// the live catalog in the same single query.
func PermissionsSQL(r, all, member string) string {
	return `CASE WHEN NOT ` + r + `.builtin THEN ` + r + `.permissions` +
		` WHEN ` + r + `.name = '` + Owner + `' THEN ` + all +
		` WHEN ` + r + `.name = '` + Admin + `' THEN array_remove(` + all + `, '` + TenantWrite + `')` +
		` WHEN ` + r + `.name = '` + Member + `' THEN ` + member +
		` ELSE '{}'::text[] END`
}

// CatalogArgs returns the two query arguments PermissionsSQL's placeholders
// stand for: every permission of c, and the member role's, as PostgreSQL
// array literals. pgx sends a string argument as text as it is, so binding
// them costs no encoding per query (names need no quoting: their syntax
// admits neither commas, braces, quotes nor spaces).
func CatalogArgs(c *permissions.Catalog) (all, member string) {
	return arrayLiteral(c.Names()), arrayLiteral(c.MemberNames())
}

func arrayLiteral(names []string) string {
	return "{" + strings.Join(names, ",") + "}"
}

// Name rules (mirrors the roles.name CHECK constraint).
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ValidName reports whether s is an acceptable role name.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// MaxDescription is the longest role description, in characters.
const MaxDescription = 500

// Errors.
var (
	// ErrNotFound: no such role in this tenant.
	ErrNotFound = errors.New("role not found")
	// ErrNameTaken: another role of the tenant has this name.
	ErrNameTaken = errors.New("role name already used in this tenant")
	// ErrBuiltin: built-in roles cannot be changed or deleted.
	ErrBuiltin = errors.New("built-in roles cannot be changed or deleted")
	// ErrEscalation: the actor tried to create, change, grant or revoke a
	// role carrying permissions the actor does not hold.
	ErrEscalation = errors.New("role carries permissions the caller does not hold")
	// ErrNeedsUsersWrite: the actor tried to rename a role, change its
	// permissions or delete it without users:write (holdersChange).
	ErrNeedsUsersWrite = errors.New("renaming a role, changing its permissions or deleting it changes what its holders hold: " +
		"it requires permission " + UsersWrite + ", as granting and revoking it do")
	// ErrTooManyRoles: the tenant already has MaxCustomRoles custom roles.
	ErrTooManyRoles = fmt.Errorf("the tenant has the most custom roles it may (%d); delete unused ones first", MaxCustomRoles)
	// ErrMemberRoles: the member already holds MaxMemberRoles roles.
	ErrMemberRoles = fmt.Errorf("the member holds the most roles one may (%d); revoke one first", MaxMemberRoles)
)

// MaxCustomRoles bounds a tenant's custom roles (ErrTooManyRoles), and
// MaxMemberRoles the roles one member holds (ErrMemberRoles): every role
// a member holds is a name in its projection and in the X-Auth-Roles
// header of each of its requests.
const (
	MaxCustomRoles = 1000
	MaxMemberRoles = 50
)

// Role is one stored role (written as tenantapi's role).
type Role struct {
	ID          string    `db:"id"`
	Name        string    `db:"name"`
	Description string    `db:"description"`
	Permissions []string  `db:"permissions"`
	Builtin     bool      `db:"builtin"`
	CreatedAt   time.Time `db:"created_at"`
	UpdatedAt   time.Time `db:"updated_at"`
}

// Store reads and writes roles.
type Store struct {
	pool    *pgxpool.Pool
	catalog *permissions.Catalog
	// all and member are the catalog's arrays (CatalogArgs), for Live.
	all, member string
}

// NewStore returns a Store on pool; roles are shown and checked under
// catalog c (nil: the built-in catalog).
func NewStore(pool *pgxpool.Pool, c *permissions.Catalog) *Store {
	if c == nil {
		c = permissions.Builtin()
	}
	all, member := CatalogArgs(c)
	return &Store{pool: pool, catalog: c, all: all, member: member}
}

// effective replaces the stored permissions of r by what it holds under
// the live catalog.
func (s *Store) effective(r *Role) {
	r.Permissions = EffectivePermissions(s.catalog, r.Name, r.Builtin, r.Permissions)
}

// ListParams selects a page in creation order: roles after the one
// created at After with id AfterID (AfterID empty: the first page). The
// keyset is immutable, so a role renamed while a client pages through the
// list is listed once, as a name cursor did not do (a role renamed past it
// came again, one renamed before it never came).
type ListParams struct {
	TenantID     string
	After        time.Time
	AfterID      string
	Limit        int
	IncludeTotal bool
}

// List returns one page of the tenant's roles in one query, oldest first
// (the built-in roles, made with the tenant, before its custom ones),
// along the index roles_tenant_created_idx (migration 00068). roles.id,
// not id: an ORDER BY name is the output column first, here id::text.
func (s *Store) List(ctx context.Context, p ListParams) ([]Role, int64, error) {
	const q = `
SELECT id::text, name, description, permissions, builtin, created_at, updated_at, 0::bigint AS total
FROM roles
WHERE tenant_id = $1 AND (created_at, roles.id) > ($2, $3::uuid)
ORDER BY created_at, roles.id
LIMIT $4`
	const qTotal = `
SELECT * FROM (
    SELECT id::text, name, description, permissions, builtin, created_at, updated_at,
           count(*) OVER () AS total
    FROM roles
    WHERE tenant_id = $1
) r
WHERE (created_at, id::uuid) > ($2, $3::uuid)
ORDER BY created_at, id::uuid
LIMIT $4`
	after, afterID := p.After, p.AfterID
	if afterID == "" {
		after, afterID = time.Time{}, "00000000-0000-0000-0000-000000000000"
	}
	sql := q
	if p.IncludeTotal {
		sql = qTotal
	}
	rows, err := s.pool.Query(ctx, sql, p.TenantID, after, afterID, p.Limit)
	if err != nil {
		return nil, 0, fmt.Errorf("list roles: %w", err)
	}
	type counted struct {
		Role
		Total int64 `db:"total"`
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByName[counted])
	if err != nil {
		return nil, 0, fmt.Errorf("list roles: %w", err)
	}
	out, total, err := sqldb.Split(got, func(c counted) (Role, int64) { return c.Role, c.Total })
	if p.IncludeTotal && len(out) == 0 && p.AfterID != "" { // past the end: no row to carry the total
		if total, err = sqldb.Count(ctx, s.pool, `SELECT count(*) FROM roles WHERE tenant_id = $1`, p.TenantID); err != nil {
			return nil, 0, fmt.Errorf("count roles: %w", err)
		}
	}
	for i := range out {
		s.effective(&out[i])
	}
	return out, total, err
}

// Actor is who makes a change, for the audit trail and escalation checks.
type Actor struct {
	UserID      string
	Permissions []string
	RequestID   string
	// SessionID is the session the actor's request was signed with
	// (httpapi.SessionOf): "" for a caller with none. A change that makes
	// a credential checks it is still live (sessions.CheckLive).
	SessionID string
	// APIKeyID is the API key the actor's request was made with
	// (httpapi.APIKeyOf): "" for a caller that is not a key. Live
	// checks it is still live (apikeylive.Hold).
	APIKeyID string
	// SecretID is the client secret the actor's access token was
	// obtained with (httpapi.ClientSecretOf): "" for a caller that is not
	// a service account's token, or one of a token that names none. Live
	// checks it still exists (clientsecret.Hold).
	SecretID string
}

// Covers reports whether the actor holds every permission in perms.
func (a Actor) Covers(perms []string) bool {
	for _, p := range perms {
		if !slices.Contains(a.Permissions, p) {
			return false
		}
	}
	return true
}

// HeldSQL is the SQL expression (an array, sorted) of the permissions the
// user whose id is user holds in tenant tenant now, under the catalog
// whose arrays are bound to the placeholders all and member
// (CatalogArgs): none unless the membership, the account and the tenant
// are active, as the projection the proxy authorizes with gives none; and
// none for a person without an active second factor in a tenant that
// requires one, whom the proxy confines to enrolling one (a service
// account has none to enrol and is exempt, as at the proxy). Live reads
// it for a change's caller, and an invitation's accept for its sender
// (invitations.GrantableRoles).
func HeldSQL(tenant, user, all, member string) string {
	return `ARRAY(
    SELECT DISTINCT p
    FROM memberships m
    JOIN users u ON u.id = m.user_id AND u.status = 'active'
    JOIN tenants t ON t.id = m.tenant_id AND t.status = 'active'
    JOIN membership_roles mr ON mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id
    JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
    CROSS JOIN LATERAL unnest(` + PermissionsSQL("r", all, member) + `) AS p
    WHERE m.tenant_id = ` + tenant + ` AND m.user_id = ` + user + ` AND m.status = 'active' AND p = ANY(` + all + `)
      AND (NOT t.require_mfa OR u.kind = 'service'
           OR EXISTS (SELECT 1 FROM mfa_totp f WHERE f.user_id = u.id AND f.status = 'active'))
    ORDER BY p)`
}

// qLive reads the permissions user $2 holds in tenant $1 now (HeldSQL),
// under the catalog whose arrays all and member are $3 and $4.
var qLive = `SELECT ` + HeldSQL("$1", "$2::uuid", "$3::text[]", "$4::text[]")

// Live returns a with its permissions narrowed, in tx, to those its user
// holds in the tenant now, under the catalog whose arrays all and member
// are (CatalogArgs). The signed identity's permissions are those of the
// projection the proxy authorized the request with: a request in flight
// as its caller is demoted, or authorized from a projection the
// demotion's invalidation has not reached yet, carries what the caller
// no longer holds; so does one of a person the tenant's MFA policy
// confines since (qLive), which the policy's change, locking the tenant's
// row, is ordered with. Read after the tenant's lock (LockTenant), which every
// change that can demote a member takes (a grant, a revocation, a role's
// edit or deletion, a member's disabling or removal), it sees every such
// change committed before this one: two admins demoting each other at once cannot both
// succeed, as each change comes after the other's. An API key's
// permissions, already its own narrowed to its user's, stay within the
// key's, and a service account's within its token's. An actor without a
// user holds nothing. need is the permission the route asked of the
// signed identity: ErrEscalation when the actor no longer holds it; ""
// for a route that asks none (a personal API key's creation), where the
// narrowed permissions are all that matters.
//
// An actor acting with an API key (a.APIKeyID) whose key has been
// revoked or has expired is apikeylive.ErrEnded, and a service account's
// token whose client secret (a.SecretID) has been deleted is
// clientsecret.ErrDeleted: a change a proxy that has not yet heard of it
// let through, or one that passed the request's own check
// (httpapi.liveCredential) before the revocation or deletion committed.
// Both rows are read FOR SHARE and held until tx ends (apikeylive.Hold,
// clientsecret.Hold), so a revocation that takes no tenant lock (by the
// key's secret, apikeys.Store.RevokeSecret) is ordered with the change
// too: committed before, it is seen; after, it waits for tx.
func Live(ctx context.Context, tx pgx.Tx, all, member, tenantID string, a Actor, need string) (Actor, error) {
	if a.UserID == "" || (len(a.Permissions) == 0 && need != "") {
		return Actor{}, ErrEscalation
	}
	if err := apikeylive.Hold(ctx, tx, tenantID, a.UserID, a.APIKeyID); err != nil {
		return Actor{}, err
	}
	if err := clientsecret.Hold(ctx, tx, a.UserID, a.SecretID); err != nil {
		return Actor{}, err
	}
	if len(a.Permissions) == 0 {
		return a, nil
	}
	var now []string
	if err := tx.QueryRow(ctx, qLive, tenantID, a.UserID, all, member).Scan(&now); err != nil {
		return Actor{}, fmt.Errorf("actor's permissions: %w", err)
	}
	held := make([]string, 0, len(a.Permissions))
	for _, p := range a.Permissions {
		if slices.Contains(now, p) {
			held = append(held, p)
		}
	}
	a.Permissions = held
	if need != "" && !slices.Contains(held, need) {
		return Actor{}, ErrEscalation
	}
	return a, nil
}

// LockedLive takes the tenant's lock (LockTenant) and returns Live under
// it: the two steps, in that order and first in the transaction, of every
// change decided on what its caller holds when it runs.
func LockedLive(ctx context.Context, tx pgx.Tx, all, member, tenantID string, a Actor, need string) (Actor, error) {
	if err := LockTenant(ctx, tx, tenantID); err != nil {
		return Actor{}, err
	}
	return Live(ctx, tx, all, member, tenantID, a, need)
}

const roleCols = `id::text, name, description, permissions, builtin, created_at, updated_at`

// Create stores a new custom role.
func (s *Store) Create(ctx context.Context, tenantID string, a Actor, d Definition) (Role, error) {
	if !a.Covers(d.Permissions) {
		return Role{}, ErrEscalation
	}
	const q = `
INSERT INTO roles (tenant_id, name, description, permissions)
VALUES ($1, $2, $3, $4)
RETURNING ` + roleCols
	const qCount = `SELECT count(*) FROM roles WHERE tenant_id = $1 AND NOT builtin`
	var r Role
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialized in the tenant, so the limit holds.
		a, err := LockedLive(ctx, tx, s.all, s.member, tenantID, a, RolesWrite)
		if err != nil {
			return err
		}
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		if !a.Covers(d.Permissions) {
			return ErrEscalation
		}
		var n int
		if err := tx.QueryRow(ctx, qCount, tenantID).Scan(&n); err != nil {
			return fmt.Errorf("count roles: %w", err)
		}
		if n >= MaxCustomRoles {
			return ErrTooManyRoles
		}
		rows, _ := tx.Query(ctx, q, tenantID, d.Name, d.Description, d.Permissions)
		if r, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Role]); err != nil {
			return mapErr(err)
		}
		return audit.Write(ctx, tx, audit.Event{
			TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionRoleCreated,
			TargetType: audit.TargetRole, TargetID: r.ID, Data: d, RequestID: a.RequestID,
		})
	})
	if err != nil {
		return Role{}, fmt.Errorf("create role: %w", err)
	}
	return r, nil
}

// Patch is a partial update; nil fields are left alone.
type Patch struct {
	Name        *string   `json:"name,omitempty"`
	Description *string   `json:"description,omitempty"`
	Permissions *[]string `json:"permissions,omitempty"`
}

// Update changes a custom role. Changing its name or permissions changes
// every holder's projection, so it also queues a tenant invalidation. A
// patch that changes nothing writes nothing and returns the role. The
// actor must hold the role's old and new permissions; to change its name
// or permissions, users:write (holdersChange); and, when the patch
// renames it or takes permissions out of it, every permission of its
// holders (coversHolders).
func (s *Store) Update(ctx context.Context, tenantID, roleID string, a Actor, p Patch) (Role, error) {
	const qLock = `
SELECT ` + roleCols + `
FROM roles WHERE tenant_id = $1 AND id = $2
FOR UPDATE`
	const qUpdate = `
UPDATE roles SET
    name = COALESCE($3, name),
    description = COALESCE($4, description),
    permissions = COALESCE($5, permissions),
    updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING ` + roleCols
	var r Role
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The tenant's lock first, as Delete: a change of the role's
		// permissions can demote its holders, so it is ordered with every
		// other such change, and the actor's are read after it (Live).
		a, err := LockedLive(ctx, tx, s.all, s.member, tenantID, a, RolesWrite)
		if err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, qLock, tenantID, roleID)
		old, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Role])
		if err != nil {
			return mapErr(err)
		}
		if old.Builtin {
			return ErrBuiltin
		}
		stored := old.Permissions
		s.effective(&old)
		// Changing a role's permissions needs the actor to hold both the old
		// and the new ones: otherwise a role with more power than the actor
		// could be reshaped by them.
		if !a.Covers(old.Permissions) || (p.Permissions != nil && !a.Covers(*p.Permissions)) {
			return ErrEscalation
		}
		renamed := p.Name != nil && *p.Name != old.Name
		if renamed || (p.Permissions != nil && !slices.Equal(*p.Permissions, stored)) {
			if err := holdersChange(a); err != nil {
				return err
			}
			// An edit of the role's permissions reshapes what its holders
			// hold, and a new name takes the old one from them, judged by
			// what they hold (coversHolders): both are judged by this
			// replica's catalog, so only if it is the recorded one. Its
			// description alone grants and takes nothing.
			if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
				return err
			}
		}
		// Taking permissions out of the role takes them from its holders,
		// and a new name the one they held: as revoking it from each, that
		// needs what they hold.
		if renamed || (p.Permissions != nil && !(Actor{Permissions: s.catalog.Known(*p.Permissions)}).Covers(old.Permissions)) {
			if err := s.coversHolders(ctx, tx, tenantID, roleID, a); err != nil {
				return err
			}
		}
		// A patch that changes nothing writes nothing (no updated_at, no
		// audit row, no invalidation), as a member's status set to the
		// one it has: the role is answered as it is.
		if (p.Name == nil || *p.Name == old.Name) && (p.Description == nil || *p.Description == old.Description) &&
			(p.Permissions == nil || slices.Equal(*p.Permissions, stored)) {
			r = old
			return nil
		}
		var perms any
		if p.Permissions != nil {
			perms = *p.Permissions
		}
		rows, _ = tx.Query(ctx, qUpdate, tenantID, roleID, p.Name, p.Description, perms)
		if r, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Role]); err != nil {
			return mapErr(err)
		}
		changed := !slices.Equal(r.Permissions, stored)
		s.effective(&r)
		// Holders' projections carry the role's name and permissions: a
		// change of the stored ones is announced even when this catalog
		// shows none, as a replica with another catalog (a rollout) may
		// declare a permission this one drops, and grant it.
		var announce []outbox.Row
		if r.Name != old.Name || changed {
			announce = append(announce, outbox.Row{Subject: invalidation.TenantSubject(tenantID), Reason: invalidation.ReasonRoleUpdated})
		}
		// The row says what changed, as user.email_changed does: the
		// role's editable fields before ("from") and after ("to"), not
		// the request alone, which tells no one what the role was.
		return audit.WriteWith(ctx, tx, audit.Event{
			TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionRoleUpdated,
			TargetType: audit.TargetRole, TargetID: roleID, RequestID: a.RequestID,
			Data: map[string]auditedRole{"from": auditedOf(old), "to": auditedOf(r)},
		}, announce...)
	})
	if err != nil {
		return Role{}, fmt.Errorf("update role: %w", err)
	}
	return r, nil
}

// auditedRole is what the audit row of a role's update records of the
// role, before and after: the fields a PATCH can change.
type auditedRole struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Permissions []string `json:"permissions"`
}

func auditedOf(r Role) auditedRole {
	return auditedRole{Name: r.Name, Description: r.Description, Permissions: r.Permissions}
}

// LockTenant takes the tenant's lock: its row, FOR NO KEY UPDATE, which
// does not block foreign-key checks against the tenant. Every change that
// can remove an owner in a tenant takes it (package users), so two
// concurrent removals cannot both see "another owner remains". A grant,
// the creation, change and deletion of a role and the deletion of a
// service account take it too (users.Store.GrantRole, Store.Create,
// Store.Update, Store.Delete, serviceaccounts.Store.Delete), and first,
// so that none of them takes the same row locks as these changes in the
// opposite order and waits for one that waits for it. The other
// changes decided on what their caller holds (Live) take it first too,
// so that they come after every demotion committed before: a new
// member's addition (users.Store.Create, before the roles'), an API key's
// creation and a revocation of another's key (package apikeys, before
// its key lock), a service account's creation and the creation and
// deletion of its secrets (package serviceaccounts, before the account's
// row), an invitation's creation, resending and withdrawal (package
// invitations, before the invitation's row), and a change of the tenant
// itself (PATCH /tenant, tenants.Store.UpdateAsMember; the operator's
// suspension locks the row in the same mode).
func LockTenant(ctx context.Context, tx pgx.Tx, tenantID string) error {
	const q = `SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE`
	if _, err := tx.Exec(ctx, q, tenantID); err != nil {
		return fmt.Errorf("lock tenant: %w", err)
	}
	return nil
}

// Handed reads, in tx, the tenant's roles named in names that are about to
// be handed out (to a new member, a service account, an invitee): how many
// of the names are roles, and the sorted permissions handing them out
// needs (Handing) under the catalog whose arrays all and member are
// (CatalogArgs): what they grant under it, and what a custom role stores
// beyond it. It
// locks the roles it reads (FOR SHARE) until tx ends, so that a change of
// their permissions, which locks its role (Store.Update), cannot commit
// between the caller's escalation check and its grant: without the lock,
// the grant's foreign-key check waited for such a change and then went
// through, handing out what the check never saw. A caller that takes the
// tenant's lock (LockTenant) takes it first, as Store.Delete does.
func Handed(ctx context.Context, tx pgx.Tx, all, member, tenantID string, names []string) (found int, perms []string, err error) {
	q := `
WITH r AS MATERIALIZED (
    SELECT name, builtin, permissions FROM roles
    WHERE tenant_id = $1 AND name = ANY($2::text[])
    ORDER BY id
    FOR SHARE
)
SELECT (SELECT count(*) FROM r),
       ARRAY(SELECT DISTINCT p FROM r, unnest(` + PermissionsSQL("r", "$3::text[]", "$4::text[]") + `) p
             WHERE ` + HandingSQL("r", "p", "$3::text[]") + ` ORDER BY p)`
	if err := tx.QueryRow(ctx, q, tenantID, names, all, member).Scan(&found, &perms); err != nil {
		return 0, nil, fmt.Errorf("roles handed out: %w", err)
	}
	return found, perms, nil
}

// Delete removes a custom role (and so every grant of it). The actor must
// hold users:write (holdersChange), the role's permissions and every
// permission of its holders (coversHolders). Each holder loses the role as
// a revocation would take it, and is audited as one: member.role_revoked
// with data.via role.deleted, before the role.deleted row, so a member's
// trail says when and by whom the role went (as a removal audits each key
// it revokes), and with which API key (audit.APIKeyOf), as every event of
// the request says.
//
// It first takes the tenant's lock (LockTenant), as every change of a
// membership that revokes a role or removes a member does: the deletion's
// cascade drops the holders' grants and then locks their memberships to
// refresh their role names, while such a change locks the membership and
// then drops the grant, so the two, unordered, waited for each other.
func (s *Store) Delete(ctx context.Context, tenantID, roleID string, a Actor) error {
	const qLock = `
SELECT ` + roleCols + `
FROM roles WHERE tenant_id = $1 AND id = $2
FOR UPDATE`
	// The holders' rows and the deletion in one statement: its snapshot
	// still holds the grants the deletion's cascade drops.
	const qDelete = `
WITH revoked AS (
    INSERT INTO audit_events (tenant_id, actor_user_id, action, target_type, target_id, data, request_id, api_key_id)
    SELECT mr.tenant_id, NULLIF($3, '')::uuid, $4, $5, mr.user_id::text, $6::jsonb, $7, NULLIF($8, '')::uuid
    FROM membership_roles mr
    WHERE mr.tenant_id = $1 AND mr.role_id = $2
    ORDER BY mr.user_id
)
DELETE FROM roles WHERE tenant_id = $1 AND id = $2`
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := LockedLive(ctx, tx, s.all, s.member, tenantID, a, RolesWrite)
		if err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, qLock, tenantID, roleID)
		old, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Role])
		if err != nil {
			return mapErr(err)
		}
		if old.Builtin {
			return ErrBuiltin
		}
		if err := holdersChange(a); err != nil {
			return err
		}
		s.effective(&old)
		if !a.Covers(old.Permissions) {
			return ErrEscalation
		}
		// What the holders hold follows the catalog (the built-in
		// roles): judged by this replica's only if it is the recorded
		// one (coversHolders).
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		if err := s.coversHolders(ctx, tx, tenantID, roleID, a); err != nil {
			return err
		}
		revoked, err := json.Marshal(map[string]string{"role": old.Name, "via": audit.ActionRoleDeleted})
		if err != nil {
			return fmt.Errorf("holders' audit data: %w", err)
		}
		if _, err := tx.Exec(ctx, qDelete, tenantID, roleID, a.UserID, audit.ActionMemberRoleRevoked, audit.TargetUser,
			string(revoked), a.RequestID, audit.APIKeyOf(ctx, a.UserID)); err != nil {
			return mapErr(err)
		}
		return audit.WriteWith(ctx, tx, audit.Event{
			TenantID: tenantID, ActorUserID: a.UserID, Action: audit.ActionRoleDeleted,
			TargetType: audit.TargetRole, TargetID: roleID, Data: map[string]any{"name": old.Name}, RequestID: a.RequestID,
		}, outbox.Row{Subject: invalidation.TenantSubject(tenantID), Reason: invalidation.ReasonRoleDeleted})
	})
	if err != nil {
		return fmt.Errorf("delete role: %w", err)
	}
	return nil
}

// holdersChange is ErrNeedsUsersWrite unless a holds users:write. A new
// name, new permissions or the deletion of a role change what each of
// its holders holds (the role names their requests carry, which an app
// may authorize on, and their permissions) and what the pending
// invitations of it hand out: as granting or revoking the role does
// (users.Store.GrantRole, RevokeRole), that needs users:write, which
// roles:write alone, the right to define roles, does not give.
func holdersChange(a Actor) error {
	if !a.Covers([]string{UsersWrite}) {
		return ErrNeedsUsersWrite
	}
	return nil
}

// qHolders reads every permission the members holding role $2 of tenant
// $1 hold, through any of their roles, under the catalog whose arrays are
// $3 and $4 (CatalogArgs), whatever their membership's status: what
// revoking the role from each of them would need (users.Store.RevokeRole).
var qHolders = `
SELECT ARRAY(
    SELECT DISTINCT p
    FROM membership_roles h
    JOIN membership_roles mr ON mr.tenant_id = h.tenant_id AND mr.user_id = h.user_id
    JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
    CROSS JOIN LATERAL unnest(` + PermissionsSQL("r", "$3::text[]", "$4::text[]") + `) AS p
    WHERE h.tenant_id = $1 AND h.role_id = $2 AND p = ANY($3::text[])
    ORDER BY p)`

// coversHolders is ErrEscalation unless a holds every permission of every
// member holding role roleID. Deleting a role, or taking permissions out
// of it, demotes its holders: like revoking it from each of them, it
// needs every permission they hold, so that one who holds less cannot
// demote them this way either. Called with the tenant's lock (which every
// grant and revocation takes first) and the role's row lock held (which an
// invitation's accept, handing the role out, waits for), so the holders
// read are those the change reaches, and after permissions.CheckCurrent:
// what they hold is read under this replica's catalog, and under another
// (a rollout) a holder may hold what the actor does not.
func (s *Store) coversHolders(ctx context.Context, tx pgx.Tx, tenantID, roleID string, a Actor) error {
	var held []string
	if err := tx.QueryRow(ctx, qHolders, tenantID, roleID, s.all, s.member).Scan(&held); err != nil {
		return fmt.Errorf("holders' permissions: %w", err)
	}
	if !a.Covers(held) {
		return ErrEscalation
	}
	return nil
}

func mapErr(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return ErrNameTaken
	}
	return err
}
