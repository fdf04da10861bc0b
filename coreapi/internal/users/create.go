package users

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
)

// NewUser is an account to create: by a signup, a first OIDC sign-in, an
// accepted invitation or a tenant admin (POST /users).
type NewUser struct {
	Email        string
	DisplayName  string
	PasswordHash string // "" for an account without a password; made by password.Hasher.Hash (NFKC)
	// Verified starts the account with its address proven (a provider
	// vouched for it, or an invitation link sent to it was used).
	Verified bool
	// PasswordByAdmin: a tenant admin chose PasswordHash (POST /users),
	// so the admin knows it, and any password changed from it, until
	// the owner resets it (SetPassword).
	PasswordByAdmin bool
}

// Created is a user just inserted.
type Created struct {
	ID           string
	TokenVersion int64
}

// Insert creates a user in tx. An address that has an account already (in
// any letter case, including one a concurrent transaction is creating) is
// ErrEmailTaken, and tx remains usable.
func Insert(ctx context.Context, tx pgx.Tx, n NewUser) (Created, error) {
	const q = `
INSERT INTO users (email, display_name, password_hash, password_nfkc_hash, email_verified_at, password_set_by_admin)
VALUES ($1, $2, NULLIF($3, ''), NULLIF($3, ''), CASE WHEN $4::bool THEN now() END, $5 AND $3 <> '')
ON CONFLICT ((lower(email))) DO NOTHING
RETURNING id::text, token_version`
	var c Created
	err := tx.QueryRow(ctx, q, n.Email, n.DisplayName, n.PasswordHash, n.Verified, n.PasswordByAdmin).Scan(&c.ID, &c.TokenVersion)
	if errors.Is(err, pgx.ErrNoRows) {
		return Created{}, ErrEmailTaken
	}
	if err != nil {
		return Created{}, fmt.Errorf("create user: %w", err)
	}
	return c, nil
}

// InsertWithTenant creates a user and a tenant of its own that it owns (a
// signup, a first OIDC sign-in), and audits the tenant's creation with
// data {"via": via}. A taken address is ErrEmailTaken.
func InsertWithTenant(ctx context.Context, tx pgx.Tx, n NewUser, tenantName, via, requestID string) (Created, tenants.Tenant, error) {
	u, err := Insert(ctx, tx, n)
	if err != nil {
		return Created{}, tenants.Tenant{}, err
	}
	t, err := tenants.Create(ctx, tx, tenantName)
	if err != nil {
		return Created{}, tenants.Tenant{}, err
	}
	if err := tenants.AddMember(ctx, tx, t.ID, u.ID, roles.Owner); err != nil {
		return Created{}, tenants.Tenant{}, err
	}
	err = audit.Write(ctx, tx, audit.Event{TenantID: t.ID, ActorUserID: u.ID, Action: audit.ActionTenantCreated,
		TargetType: audit.TargetTenant, TargetID: t.ID, Data: map[string]string{"via": via}, RequestID: requestID})
	if err != nil {
		return Created{}, tenants.Tenant{}, err
	}
	return u, t, nil
}
