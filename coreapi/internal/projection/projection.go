// Package projection builds the small per-(user, tenant) auth projection
// that authproxy caches: statuses, role names, flattened permissions, token
// version and recently revoked sessions, in one query.
package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// ErrNotFound: the user has no membership in the tenant (or either is
// unknown).
var ErrNotFound = errors.New("no membership for this user and tenant")

// Store loads projections.
type Store struct {
	pool *pgxpool.Pool
	// all and member are the live catalog's permissions and the member
	// role's, bound to the query as $4 and $5.
	all, member string
	// revokedWithin is how far back revoked sessions are listed: the
	// access-token lifetime plus the largest leeway any proxy accepts past
	// exp, after which their tokens are dead everywhere.
	revokedWithin time.Duration
}

// NewStore returns a Store; revokedWithin is the access-token TTL plus
// TOKEN_MAX_LEEWAY, c the live permission catalog (nil: the built-in one).
func NewStore(pool *pgxpool.Pool, revokedWithin time.Duration, c *permissions.Catalog) *Store {
	if c == nil {
		c = permissions.Builtin()
	}
	all, member := roles.CatalogArgs(c)
	return &Store{pool: pool, revokedWithin: revokedWithin, all: all, member: member}
}

// rolePerms is roles.PermissionsSQL("r", "$4::text[]", "$5::text[]") (a
// test holds them equal), spelled out to keep the query a constant: built-in
// roles follow the live catalog; the ANY($4) filter drops what a custom
// role stored but the catalog no longer declares.
const rolePerms = `CASE WHEN NOT r.builtin THEN r.permissions WHEN r.name = 'owner' THEN $4::text[]` +
	` WHEN r.name = 'admin' THEN array_remove($4::text[], 'tenant:write') WHEN r.name = 'member' THEN $5::text[]` +
	` ELSE '{}'::text[] END`

// Get returns the projection of userID in tenantID in one query.
//
// The revoked sessions listed are those whose tokens the token version does
// not already refuse: a session's access tokens carry at most its stamp
// (sessions.token_version, raised only by a reissue), so one stamped below
// the user's version is refused by tv < token_version whatever the list
// says. Every mass revocation (a sign-out everywhere, a password change or
// reset, a second factor's confirmation, an MFA reset) bumps the version in its transaction, so its
// sessions stay out of the list: a user who signed in tens of thousands of
// times (a script that never signs out) and then signed out everywhere had a
// projection past the proxy's 1 MiB bound, and no request of theirs got
// through until the sessions aged out of the window. Sessions from before
// the stamp (NULL) are listed as before.
func (s *Store) Get(ctx context.Context, userID, tenantID string) (identity.Projection, error) {
	const q = `
SELECT u.id::text, m.tenant_id::text, u.email, u.email_verified_at IS NOT NULL, u.status, m.status, t.status,
       ARRAY(SELECT r.name FROM membership_roles mr
             JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
             WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id
             ORDER BY r.name),
       ARRAY(SELECT DISTINCT p FROM membership_roles mr
             JOIN roles r ON r.tenant_id = mr.tenant_id AND r.id = mr.role_id
             CROSS JOIN LATERAL unnest(` + rolePerms + `) AS p
             WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id AND p = ANY($4::text[])
             ORDER BY p),
       u.token_version,
       ARRAY(SELECT s.id::text FROM sessions s
             WHERE s.user_id = u.id AND s.revoked_at IS NOT NULL
               AND s.revoked_at > now() - make_interval(secs => $3)
               AND NOT coalesce(s.token_version < u.token_version, false)
             ORDER BY s.id),
       EXISTS (SELECT 1 FROM mfa_totp f WHERE f.user_id = u.id AND f.status = 'active'),
       t.require_mfa
FROM memberships m
JOIN users u ON u.id = m.user_id
JOIN tenants t ON t.id = m.tenant_id
WHERE m.tenant_id = $2 AND m.user_id = $1`
	var p identity.Projection
	err := s.pool.QueryRow(ctx, q, userID, tenantID, s.revokedWithin.Seconds(), s.all, s.member).Scan(
		&p.UserID, &p.TenantID, &p.Email, &p.EmailVerified, &p.UserStatus, &p.MembershipStatus, &p.TenantStatus,
		&p.Roles, &p.Permissions, &p.TokenVersion, &p.RevokedSessions,
		&p.MFAEnabled, &p.TenantRequireMFA)
	if errors.Is(err, pgx.ErrNoRows) {
		return identity.Projection{}, ErrNotFound
	}
	if err != nil {
		return identity.Projection{}, fmt.Errorf("load projection: %w", err)
	}
	return p, nil
}
