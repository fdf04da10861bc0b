package users_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// TestFactorResetDuringCatalogRollout: resetting a member's second factor
// needs every permission the member holds, and what the built-in member
// role holds follows the catalog. While a rollout adds notes:read to
// member (member_default), a replica still on the old catalog judged the
// reset by its own, and a manager without notes:read reset the factor of
// a member who holds it under the recorded catalog. That replica now
// refuses it (ErrRollout: 503 catalog_rollout); the replica with the
// recorded catalog refuses the manager (ErrEscalation).
func TestFactorResetDuringCatalogRollout(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	cat, err := permissions.Parse([]byte(`
permissions:
  - {name: notes:read, description: Read notes, member_default: true}
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	// admin's permissions under the built-in catalog.
	managerPerms := []string{"api-keys:write", "audit:read", "roles:read", "roles:write", "tenant:read", "users:read", "users:write"}
	var tenantID, managerID, memberID string
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		ten, err := tenants.Create(ctx, tx, "Acme")
		if err != nil {
			return err
		}
		tenantID = ten.ID
		if err := tx.QueryRow(ctx, `INSERT INTO users (email) VALUES ('manager@acme.test') RETURNING id::text`).Scan(&managerID); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO users (email) VALUES ('member@acme.test') RETURNING id::text`).Scan(&memberID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO roles (tenant_id, name, permissions) VALUES ($1, 'manager', $2)`, tenantID, managerPerms); err != nil {
			return err
		}
		if err := tenants.AddMember(ctx, tx, tenantID, managerID, "manager"); err != nil {
			return err
		}
		if err := tenants.AddMember(ctx, tx, tenantID, memberID, "member"); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status) VALUES ($1, 'k', '\x00', 'active')`, memberID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := permissions.Record(ctx, db.Pool, cat); err != nil {
		t.Fatal(err)
	}
	manager := roles.Actor{UserID: managerID, Permissions: managerPerms}
	check := func(c *permissions.Catalog) error {
		var err error
		if txErr := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			err = users.CheckFactorReset(ctx, tx, c, tenantID, memberID, manager)
			return nil
		}); txErr != nil {
			t.Fatal(txErr)
		}
		return err
	}
	if err := check(permissions.Builtin()); !errors.Is(err, permissions.ErrRollout) {
		t.Errorf("the replica on the old catalog: %v, want ErrRollout", err)
	}
	if err := check(cat); !errors.Is(err, roles.ErrEscalation) {
		t.Errorf("the replica with the recorded catalog: %v, want ErrEscalation", err)
	}
}
