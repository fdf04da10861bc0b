// Package roles holds the permission vocabulary, the built-in roles every
// tenant starts with, and the storage of a tenant's roles.
package roles

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Permissions.
const (
	TenantRead  = "tenant:read"
	TenantWrite = "tenant:write"
	UsersRead   = "users:read"
	UsersWrite  = "users:write"
	RolesRead   = "roles:read"
	RolesWrite  = "roles:write"
	AuditRead   = "audit:read"
)

// Built-in role names.
const (
	Owner  = "owner"
	Admin  = "admin"
	Member = "member"
)

// AllPermissions returns every permission, in a stable order.
func AllPermissions() []string {
	return []string{TenantRead, TenantWrite, UsersRead, UsersWrite, RolesRead, RolesWrite, AuditRead}
}

// ValidPermission reports whether p is a known permission.
func ValidPermission(p string) bool { return slices.Contains(AllPermissions(), p) }

// Definition describes a role to create.
type Definition struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Permissions []string `json:"permissions"`
}

// Builtin returns the roles every tenant is created with: owner (every
// permission), admin (all but tenant:write) and member (tenant:read).
func Builtin() []Definition {
	all := AllPermissions()
	admin := slices.DeleteFunc(slices.Clone(all), func(p string) bool { return p == TenantWrite })
	return []Definition{
		{Name: Owner, Description: "Full control of the tenant", Permissions: all},
		{Name: Admin, Description: "Manages users and roles", Permissions: admin},
		{Name: Member, Description: "Reads the tenant", Permissions: []string{TenantRead}},
	}
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
)

// Role is one stored role.
type Role struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Permissions []string  `json:"permissions"`
	Builtin     bool      `json:"builtin"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Total       int64     `json:"-"`
}

// Store reads and writes roles.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// ListParams selects a page ordered by name: roles after AfterName.
type ListParams struct {
	TenantID     string
	AfterName    string
	Limit        int
	IncludeTotal bool
}

// List returns one page of the tenant's roles in one query.
func (s *Store) List(ctx context.Context, p ListParams) ([]Role, error) {
	const q = `
SELECT id::text, name, description, permissions, builtin, created_at, updated_at, 0::bigint AS total
FROM roles
WHERE tenant_id = $1 AND name > $2
ORDER BY name
LIMIT $3`
	const qTotal = `
SELECT * FROM (
    SELECT id::text, name, description, permissions, builtin, created_at, updated_at,
           count(*) OVER () AS total
    FROM roles
    WHERE tenant_id = $1
) r
WHERE name > $2
ORDER BY name
LIMIT $3`
	sql := q
	if p.IncludeTotal {
		sql = qTotal
	}
	rows, err := s.pool.Query(ctx, sql, p.TenantID, p.AfterName, p.Limit)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Role])
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	return out, nil
}

// Actor is who makes a change, for the audit trail and escalation checks.
type Actor struct {
	UserID      string
	Permissions []string
	RequestID   string
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

const roleCols = `id::text, name, description, permissions, builtin, created_at, updated_at, 0::bigint AS total`

// Create stores a new custom role.
func (s *Store) Create(ctx context.Context, tenantID string, a Actor, d Definition) (Role, error) {
	if !a.Covers(d.Permissions) {
		return Role{}, ErrEscalation
	}
	const q = `
INSERT INTO roles (tenant_id, name, description, permissions)
VALUES ($1, $2, $3, $4)
RETURNING ` + roleCols
	var r Role
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, q, tenantID, d.Name, d.Description, d.Permissions)
		var err error
		if r, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Role]); err != nil {
			return mapErr(err)
		}
		return audit.Write(ctx, tx, audit.Event{
			TenantID: tenantID, ActorUserID: a.UserID, Action: "role.created",
			TargetType: "role", TargetID: r.ID, Data: d, RequestID: a.RequestID,
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
// every holder's projection, so it also queues a tenant invalidation.
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
		rows, _ := tx.Query(ctx, qLock, tenantID, roleID)
		old, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Role])
		if err != nil {
			return mapErr(err)
		}
		if old.Builtin {
			return ErrBuiltin
		}
		// Changing a role's permissions needs the actor to hold both the old
		// and the new ones: otherwise a role with more power than the actor
		// could be reshaped by them.
		if !a.Covers(old.Permissions) || (p.Permissions != nil && !a.Covers(*p.Permissions)) {
			return ErrEscalation
		}
		var perms any
		if p.Permissions != nil {
			perms = *p.Permissions
		}
		rows, _ = tx.Query(ctx, qUpdate, tenantID, roleID, p.Name, p.Description, perms)
		if r, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Role]); err != nil {
			return mapErr(err)
		}
		// Holders' projections carry the role's name and permissions.
		var announce []outbox.Row
		if r.Name != old.Name || !slices.Equal(r.Permissions, old.Permissions) {
			announce = append(announce, outbox.Row{Subject: invalidation.TenantSubject(tenantID), Reason: "role.updated"})
		}
		return audit.WriteWith(ctx, tx, audit.Event{
			TenantID: tenantID, ActorUserID: a.UserID, Action: "role.updated",
			TargetType: "role", TargetID: roleID, Data: p, RequestID: a.RequestID,
		}, announce...)
	})
	if err != nil {
		return Role{}, fmt.Errorf("update role: %w", err)
	}
	return r, nil
}

// Delete removes a custom role (and so every grant of it).
func (s *Store) Delete(ctx context.Context, tenantID, roleID string, a Actor) error {
	const qLock = `
SELECT ` + roleCols + `
FROM roles WHERE tenant_id = $1 AND id = $2
FOR UPDATE`
	const qDelete = `DELETE FROM roles WHERE tenant_id = $1 AND id = $2`
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, qLock, tenantID, roleID)
		old, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Role])
		if err != nil {
			return mapErr(err)
		}
		if old.Builtin {
			return ErrBuiltin
		}
		if !a.Covers(old.Permissions) {
			return ErrEscalation
		}
		if _, err := tx.Exec(ctx, qDelete, tenantID, roleID); err != nil {
			return mapErr(err)
		}
		return audit.WriteWith(ctx, tx, audit.Event{
			TenantID: tenantID, ActorUserID: a.UserID, Action: "role.deleted",
			TargetType: "role", TargetID: roleID, Data: map[string]any{"name": old.Name}, RequestID: a.RequestID,
		}, outbox.Row{Subject: invalidation.TenantSubject(tenantID), Reason: "role.deleted"})
	})
	if err != nil {
		return fmt.Errorf("delete role: %w", err)
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
