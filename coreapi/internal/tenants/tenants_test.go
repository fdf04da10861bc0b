package tenants

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// TestCreateAndAddMember covers the helpers signup uses, under every exec
// mode (PgBouncer deployments use the non-caching ones).
func TestCreateAndAddMember(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		cfg, err := pgxpool.ParseConfig(db.URL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnConfig.DefaultQueryExecMode = mode
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var uid string
		if err := pool.QueryRow(ctx, `INSERT INTO users (email) VALUES ('u' || $1::text || '@x.test') RETURNING id::text`, mode.String()).Scan(&uid); err != nil {
			t.Fatal(err)
		}
		var ten Tenant
		err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if ten, err = Create(ctx, tx, "T "+mode.String()); err != nil {
				return err
			}
			return AddMember(ctx, tx, ten.ID, uid, roles.Owner)
		})
		if err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		if ten.Status != identity.StatusActive || ten.Name != "T "+mode.String() {
			t.Fatalf("%v: tenant = %+v", mode, ten)
		}
		var names []string
		if err := pool.QueryRow(ctx, `SELECT array_agg(name ORDER BY name) FROM roles WHERE tenant_id = $1 AND builtin`, ten.ID).Scan(&names); err != nil {
			t.Fatal(err)
		}
		if len(names) != 3 || names[0] != "admin" || names[1] != "member" || names[2] != "owner" {
			t.Fatalf("%v: built-in roles = %v", mode, names)
		}
		var perms []string
		if err := pool.QueryRow(ctx, `SELECT permissions FROM roles WHERE tenant_id = $1 AND name = 'admin'`, ten.ID).Scan(&perms); err != nil {
			t.Fatal(err)
		}
		if len(perms) != 7 { // every built-in but tenant:write
			t.Fatalf("%v: admin permissions = %v", mode, perms)
		}
		// Adding again, or with an unknown role, is refused and writes nothing.
		err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return AddMember(ctx, tx, ten.ID, uid, roles.Member) })
		if !errors.Is(err, ErrAlreadyMember) {
			t.Fatalf("%v: second add = %v", mode, err)
		}
		var uid2 string
		if err := pool.QueryRow(ctx, `INSERT INTO users (email) VALUES ('v' || $1::text || '@x.test') RETURNING id::text`, mode.String()).Scan(&uid2); err != nil {
			t.Fatal(err)
		}
		err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return AddMember(ctx, tx, ten.ID, uid2, roles.Member, "wizard") })
		if !errors.Is(err, ErrUnknownRole) {
			t.Fatalf("%v: unknown role = %v", mode, err)
		}
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM memberships WHERE user_id = $1`, uid2).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%v: refused add left %d memberships (%v)", mode, n, err)
		}
		pool.Close()
	}
}
