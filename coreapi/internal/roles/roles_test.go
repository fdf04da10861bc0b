package roles_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// TestRoleEditUnderAnotherCatalogInvalidates: during a rollout, replicas
// with different catalogs serve at once. Taking notes:write out of a role
// on a replica whose catalog does not declare it changes nothing that
// replica shows, but the holders' projections built by a replica that
// declares it carried notes:write: the edit must queue the tenant's
// invalidation all the same, or proxies keep granting it.
func TestRoleEditUnderAnotherCatalogInvalidates(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	withNotes, err := permissions.Parse([]byte(`[{name: notes:write, description: Write notes}]`), "test")
	if err != nil {
		t.Fatal(err)
	}
	builtin := permissions.Builtin()

	var tenantID, ownerID, holderID, roleID string
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		ten, err := tenants.Create(ctx, tx, "Acme")
		if err != nil {
			return err
		}
		tenantID = ten.ID
		for _, u := range []struct {
			email string
			id    *string
		}{{"o@acme.test", &ownerID}, {"h@acme.test", &holderID}} {
			if err := tx.QueryRow(ctx, `INSERT INTO users (email) VALUES ($1) RETURNING id::text`, u.email).Scan(u.id); err != nil {
				return err
			}
		}
		if err := tx.QueryRow(ctx, `INSERT INTO roles (tenant_id, name, permissions) VALUES ($1, 'writer', '{notes:write,tenant:read}') RETURNING id::text`, tenantID).Scan(&roleID); err != nil {
			return err
		}
		if err := tenants.AddMember(ctx, tx, tenantID, ownerID, roles.Owner); err != nil {
			return err
		}
		return tenants.AddMember(ctx, tx, tenantID, holderID, "writer")
	}); err != nil {
		t.Fatal(err)
	}
	p, err := projection.NewStore(db.Pool, 0, withNotes).Get(ctx, holderID, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	if !p.HasPermission("notes:write") {
		t.Fatalf("holder's projection under the catalog declaring notes:write: %v", p.Permissions)
	}

	// A replica still on the built-in catalog takes notes:write out.
	owner := roles.Actor{UserID: ownerID, Permissions: builtin.Names()}
	perms := []string{roles.TenantRead}
	if _, err := roles.NewStore(db.Pool, builtin).Update(ctx, tenantID, roleID, owner, roles.Patch{Permissions: &perms}); err != nil {
		t.Fatal(err)
	}
	p, err = projection.NewStore(db.Pool, 0, withNotes).Get(ctx, holderID, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	if p.HasPermission("notes:write") {
		t.Fatalf("holder still holds notes:write: %v", p.Permissions)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.TenantSubject(tenantID)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d invalidations of the tenant queued, want 1: projections cached with notes:write are kept", n)
	}
}
