// Package tenants stores tenants: creation with their built-in roles (used
// by signup), reads, updates, and the list of a user's tenants.
package tenants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// MaxName is the longest tenant name, in characters.
const MaxName = 200

// Errors.
var (
	// ErrNotFound: no such tenant.
	ErrNotFound = errors.New("tenant not found")
	// ErrAlreadyMember: the user already belongs to the tenant.
	ErrAlreadyMember = errors.New("user is already a member of this tenant")
	// ErrUnknownRole: a role name that the tenant does not have.
	ErrUnknownRole = errors.New("unknown role")
	// ErrWeakening: a patch would turn the tenant's MFA policy off, and
	// its caller may not (Store.UpdateAsMember).
	ErrWeakening = errors.New("turning the tenant's MFA policy off needs a person's session with a recent second factor")
)

// Tenant is one stored tenant (written as tenantapi.Tenant).
type Tenant struct {
	ID        string    `db:"id"`
	Name      string    `db:"name"`
	Status    string    `db:"status"`
	CreatedAt time.Time `db:"created_at"`
	UpdatedAt time.Time `db:"updated_at"`
	// RequireMFA: members without a second factor reach only the
	// enrolment routes (enforced at the proxy).
	RequireMFA bool `db:"require_mfa"`
}

const tenantCols = `id::text, name, status, created_at, updated_at, require_mfa`

// Create inserts a tenant together with its built-in roles (owner, admin,
// member), in one statement inside the caller's transaction. Signup calls
// it, then AddMember(ctx, tx, t.ID, userID, roles.Owner).
func Create(ctx context.Context, tx pgx.Tx, name string) (Tenant, error) {
	const q = `
WITH t AS (
    INSERT INTO tenants (name) VALUES ($1)
    RETURNING ` + tenantCols + `
), r AS (
    INSERT INTO roles (tenant_id, name, description, permissions, builtin)
    SELECT t.id::uuid, d.name, d.description, d.permissions, true
    FROM t, jsonb_to_recordset($2::jsonb) AS d(name text, description text, permissions text[])
)
SELECT * FROM t`
	defs, err := json.Marshal(roles.Builtin())
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	rows, _ := tx.Query(ctx, q, name, string(defs)) // text, not bytea, in every exec mode
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Tenant])
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	return t, nil
}

// roleGrantFK is membership_roles' foreign key to roles (migration 00001).
const roleGrantFK = "membership_roles_tenant_id_role_id_fkey"

// AddMember makes userID an active member of tenantID holding the named
// roles, in one statement inside the caller's transaction. It returns
// ErrAlreadyMember or ErrUnknownRole (nothing is written then, once the
// caller rolls back). It writes neither audit nor outbox rows: the caller
// knows why the member is added.
func AddMember(ctx context.Context, tx pgx.Tx, tenantID, userID string, roleNames ...string) error {
	if roleNames == nil {
		roleNames = []string{}
	}
	return addMember(ctx, tx, tenantID, userID, `r.name = ANY($3::text[])`, roleNames, len(uniq(roleNames)))
}

// AddMemberWithRoles is AddMember with the roles given by id: those an
// accepted invitation hands out are the roles it was sent with, whatever
// their names are now.
func AddMemberWithRoles(ctx context.Context, tx pgx.Tx, tenantID, userID string, roleIDs []string) error {
	if roleIDs == nil {
		roleIDs = []string{}
	}
	return addMember(ctx, tx, tenantID, userID, `r.id = ANY($3::uuid[])`, roleIDs, len(uniq(roleIDs)))
}

// addMember is AddMember's statement, the roles being those of the tenant
// that match keys (bound as $3), of which want must be found.
func addMember(ctx context.Context, tx pgx.Tx, tenantID, userID, match string, keys []string, want int) error {
	q := `
WITH m AS (
    INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2)
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, user_id
), g AS (
    INSERT INTO membership_roles (tenant_id, user_id, role_id)
    SELECT m.tenant_id, m.user_id, r.id
    FROM m JOIN roles r ON r.tenant_id = m.tenant_id AND ` + match + `
    RETURNING role_id
)
SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM g)`
	var added, granted int
	if err := tx.QueryRow(ctx, q, tenantID, userID, keys).Scan(&added, &granted); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23503" && pe.ConstraintName == roleGrantFK {
			// A role the statement found was deleted by a transaction
			// that committed while the grant waited for its row: the
			// role is unknown now, as it would be to a later request.
			return ErrUnknownRole
		}
		return fmt.Errorf("add member: %w", err)
	}
	if added == 0 {
		return ErrAlreadyMember
	}
	if granted != want {
		return ErrUnknownRole
	}
	return nil
}

func uniq(s []string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, v := range s {
		m[v] = true
	}
	return m
}

// Store reads and updates tenants.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Get returns the tenant.
func (s *Store) Get(ctx context.Context, id string) (Tenant, error) {
	const q = `SELECT ` + tenantCols + ` FROM tenants WHERE id = $1`
	rows, _ := s.pool.Query(ctx, q, id)
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Tenant])
	if err != nil {
		return Tenant{}, fmt.Errorf("get tenant: %w", mapErr(err))
	}
	return t, nil
}

// Patch is a partial update; nil fields are left alone.
type Patch struct {
	Name   *string `json:"name,omitempty"`
	Status *string `json:"status,omitempty"`
	// RequireMFA switches the tenant's MFA policy.
	RequireMFA *bool `json:"require_mfa,omitempty"`
}

// Update changes the tenant; a status change is announced on the tenant's
// invalidation subject (every projection in it carries the tenant status).
// The tenant API never passes a status: suspension and reactivation are
// operator actions (`coreapi tenants suspend|reactivate`, which call
// Update with only a status).
//
// A patch that changes nothing (every field absent or equal to the stored
// value: renaming a tenant to its name, reactivating an active one) writes
// nothing: updated_at stays, and there is no audit row and no
// invalidation, as for a member's status set to the one it has or a role
// granted to a member who holds it. changed reports whether it wrote.
//
// Each change is audited: a status change as tenant.suspended or
// tenant.reactivated ({"status": …}), a change of name or MFA policy as
// tenant.updated ({"from": …, "to": …}); a patch that does both writes
// both rows, so neither change goes unrecorded.
func (s *Store) Update(ctx context.Context, id string, actor roles.Actor, p Patch) (t Tenant, changed bool, err error) {
	return s.update(ctx, id, actor, p, nil)
}

// UpdateAsMember is Update for a member of the tenant (PATCH /tenant),
// decided on what actor holds when it runs, not on what its request was
// signed with: the tenant's lock is taken first (roles.LockTenant, which
// orders it after every demotion, each holding that lock), then actor's
// permissions are narrowed to those its membership grants now
// (roles.Live, under the catalog whose arrays are all and member), and
// without tenant:write it is roles.ErrEscalation: an owner demoted
// meanwhile neither renames the tenant nor changes its MFA policy.
//
// A patch that would turn the MFA policy off (it is on, under the
// tenant's lock) is a weakening: it goes on only if mayWeaken, run in the
// same transaction, returns nil; its error is returned as it is and
// nothing is written (a nil mayWeaken refuses with ErrWeakening). Turning
// the policy on, or a patch that leaves it off, does not call it.
func (s *Store) UpdateAsMember(ctx context.Context, id string, actor roles.Actor, p Patch, all, member string, mayWeaken func(pgx.Tx) error) (Tenant, bool, error) {
	return s.update(ctx, id, actor, p, func(tx pgx.Tx) error {
		if err := roles.LockTenant(ctx, tx, id); err != nil {
			return err
		}
		if _, err := roles.Live(ctx, tx, all, member, id, actor, roles.TenantWrite); err != nil {
			return err
		}
		if p.RequireMFA == nil || *p.RequireMFA {
			return nil
		}
		// Read under the tenant's lock: a policy turned on by a change
		// that committed meanwhile is seen.
		const q = `SELECT require_mfa FROM tenants WHERE id = $1`
		var on bool
		if err := tx.QueryRow(ctx, q, id).Scan(&on); err != nil {
			return mapErr(err)
		}
		switch {
		case !on:
			return nil
		case mayWeaken == nil:
			return ErrWeakening
		}
		return mayWeaken(tx)
	})
}

func (s *Store) update(ctx context.Context, id string, actor roles.Actor, p Patch, first func(pgx.Tx) error) (t Tenant, changed bool, err error) {
	// The UPDATE runs only when a value differs: a no-op leaves the row,
	// and its updated_at, as they were. The locking read "old" is what the
	// audit's "from" records, so a concurrent change cannot slip in
	// between. It takes the tenant's lock (FOR NO KEY UPDATE, as
	// roles.LockTenant): the id is never changed, and FOR UPDATE held back
	// the foreign-key check of every insert referencing the tenant (a
	// sign-in's session, a new member, an audit event) until it committed.
	const q = `
WITH old AS (SELECT ` + tenantCols + ` FROM tenants WHERE id = $1 FOR NO KEY UPDATE),
new AS (
    UPDATE tenants t SET
        name = COALESCE($2, t.name),
        status = COALESCE($3, t.status),
        require_mfa = COALESCE($4, t.require_mfa),
        updated_at = now()
    FROM old
    WHERE t.id = $1
      AND (COALESCE($2, old.name), COALESCE($3, old.status), COALESCE($4, old.require_mfa))
          IS DISTINCT FROM (old.name, old.status, old.require_mfa)
    RETURNING t.name, t.status, t.updated_at, t.require_mfa
)
SELECT old.id, COALESCE(new.name, old.name), COALESCE(new.status, old.status), old.created_at,
       COALESCE(new.updated_at, old.updated_at), COALESCE(new.require_mfa, old.require_mfa),
       new.status IS NOT NULL, old.name, old.status, old.require_mfa
FROM old LEFT JOIN new ON true`
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if first != nil {
			if err := first(tx); err != nil {
				return err
			}
		}
		var (
			oldName, oldStatus string
			oldMFA             bool
		)
		err := tx.QueryRow(ctx, q, id, p.Name, p.Status, p.RequireMFA).Scan(&t.ID, &t.Name, &t.Status, &t.CreatedAt, &t.UpdatedAt,
			&t.RequireMFA, &changed, &oldName, &oldStatus, &oldMFA)
		if err != nil {
			return mapErr(err)
		}
		if !changed {
			return nil
		}
		b := &pgx.Batch{}
		ev := audit.Event{TenantID: id, ActorUserID: actor.UserID, TargetType: audit.TargetTenant, TargetID: id, RequestID: actor.RequestID}
		if oldStatus != t.Status {
			// The action names the change; the data keeps the status it set.
			e := ev
			e.Action = audit.ActionTenantReactivated
			if t.Status == identity.StatusSuspended {
				e.Action = audit.ActionTenantSuspended
			}
			e.Data = map[string]string{"status": t.Status}
			if err := audit.Queue(ctx, b, e); err != nil {
				return err
			}
			outbox.Queue(ctx, b, outbox.Row{Subject: invalidation.TenantSubject(id), Reason: invalidation.ReasonTenantStatus(t.Status)})
		}
		if oldName != t.Name || oldMFA != t.RequireMFA {
			// tenant.updated says what changed, as role.updated does: the
			// tenant's editable fields before and after.
			e := ev
			e.Action = audit.ActionTenantUpdated
			e.Data = map[string]auditedTenant{
				"from": {Name: oldName, RequireMFA: oldMFA},
				"to":   {Name: t.Name, RequireMFA: t.RequireMFA},
			}
			if err := audit.Queue(ctx, b, e); err != nil {
				return err
			}
			if oldMFA != t.RequireMFA {
				// Every projection in the tenant carries the policy.
				outbox.Queue(ctx, b, outbox.Row{Subject: invalidation.TenantSubject(id), Reason: invalidation.ReasonTenantRequireMFA})
			}
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("write audit events and outbox: %w", err)
		}
		return nil
	})
	if err != nil {
		return Tenant{}, false, fmt.Errorf("update tenant: %w", err)
	}
	return t, changed, nil
}

// auditedTenant is what the audit row of a tenant's update records of the
// tenant, before and after: the fields PATCH /tenant can change.
type auditedTenant struct {
	Name       string `json:"name"`
	RequireMFA bool   `json:"require_mfa"`
}

// Membership is one of a user's tenants, with the user's roles in it
// (written as tenantapi's membership).
type Membership struct {
	ID               string    `db:"id"`
	Name             string    `db:"name"`
	Status           string    `db:"status"`
	MembershipStatus string    `db:"membership_status"`
	Roles            []string  `db:"roles"`
	JoinedAt         time.Time `db:"joined_at"`
}

// ListParams selects a page of a user's tenants ordered by join time.
type ListParams struct {
	UserID       string
	After        time.Time // join time of the last row of the previous page
	AfterID      string
	Limit        int
	IncludeTotal bool
}

// ListForUser returns a page of the user's tenants, each with the user's
// role names (the membership's role_names, kept by triggers), in one
// query.
func (s *Store) ListForUser(ctx context.Context, p ListParams) ([]Membership, int64, error) {
	const q = `
SELECT t.id::text AS id, t.name, t.status, m.status AS membership_status, m.role_names AS roles,
       m.created_at AS joined_at, m.total
FROM (
    SELECT tenant_id, user_id, status, role_names, created_at,
           CASE WHEN $4 THEN count(*) OVER () ELSE 0 END AS total
    FROM memberships
    WHERE user_id = $1
) m
JOIN tenants t ON t.id = m.tenant_id
WHERE (m.created_at, m.tenant_id) > ($2, $3::uuid)
ORDER BY m.created_at, m.tenant_id
LIMIT $5`
	after, afterID := p.After, p.AfterID
	if afterID == "" {
		after, afterID = time.Time{}, "00000000-0000-0000-0000-000000000000"
	}
	rows, err := s.pool.Query(ctx, q, p.UserID, after, afterID, p.IncludeTotal, p.Limit)
	if err != nil {
		return nil, 0, fmt.Errorf("list tenants of user: %w", err)
	}
	type counted struct {
		Membership
		Total int64 `db:"total"`
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByName[counted])
	if err != nil {
		return nil, 0, fmt.Errorf("list tenants of user: %w", err)
	}
	out, total, err := sqldb.Split(got, func(c counted) (Membership, int64) { return c.Membership, c.Total })
	if p.IncludeTotal && len(out) == 0 && p.AfterID != "" { // past the end: no row to carry the total
		if total, err = sqldb.Count(ctx, s.pool, `SELECT count(*) FROM memberships WHERE user_id = $1`, p.UserID); err != nil {
			return nil, 0, fmt.Errorf("count tenants of user: %w", err)
		}
	}
	return out, total, err
}

func mapErr(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" {
		return ErrNotFound
	}
	return err
}
