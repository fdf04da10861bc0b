package tenants

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
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

// TestUpdateAuditsEveryChange: Update records each change it makes (a
// status change and a change of name or MFA policy in one patch write both
// their rows, and announce both), and a patch that changes nothing writes
// nothing: no audit row, no outbox row, the same updated_at. No route
// sends a status with another field, but nothing in Update may drop one.
func TestUpdateAuditsEveryChange(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	var id string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO tenants (name) VALUES ('Acme') RETURNING id::text`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	s := NewStore(db.Pool)
	str := func(v string) *string { return &v }
	yes, no := true, false
	type row struct{ action, data string }
	steps := []struct {
		name    string
		patch   Patch
		changed bool
		audit   []row
		reasons []string
	}{
		{"empty", Patch{}, false, nil, nil},
		{"same name", Patch{Name: str("Acme")}, false, nil, nil},
		{"same everything", Patch{Name: str("Acme"), Status: str(identity.StatusActive), RequireMFA: &no}, false, nil, nil},
		{"name and status", Patch{Name: str("Beta"), Status: str(identity.StatusSuspended)}, true, []row{
			{"tenant.suspended", `{"status": "suspended"}`},
			{"tenant.updated", `{"from": {"name": "Acme", "require_mfa": false}, "to": {"name": "Beta", "require_mfa": false}}`},
		}, []string{"tenant.suspended"}},
		{"suspend suspended", Patch{Status: str(identity.StatusSuspended)}, false, nil, nil},
		{"status and require_mfa", Patch{Status: str(identity.StatusActive), RequireMFA: &yes}, true, []row{
			{"tenant.reactivated", `{"status": "active"}`},
			{"tenant.updated", `{"from": {"name": "Beta", "require_mfa": false}, "to": {"name": "Beta", "require_mfa": true}}`},
		}, []string{"tenant.active", "tenant.require_mfa"}},
		{"reactivate active", Patch{Status: str(identity.StatusActive), RequireMFA: &yes}, false, nil, nil},
		{"name", Patch{Name: str("Gamma")}, true, []row{
			{"tenant.updated", `{"from": {"name": "Beta", "require_mfa": true}, "to": {"name": "Gamma", "require_mfa": true}}`},
		}, nil},
	}
	prev, err := s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var lastAudit, lastOutbox int64
	for _, st := range steps {
		got, changed, err := s.Update(ctx, id, roles.Actor{RequestID: "r"}, st.patch)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if changed != st.changed {
			t.Errorf("%s: changed = %v, want %v", st.name, changed, st.changed)
		}
		stored, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !got.UpdatedAt.Equal(stored.UpdatedAt) || got.Name != stored.Name || got.Status != stored.Status || got.RequireMFA != stored.RequireMFA {
			t.Errorf("%s: returned %+v, stored %+v", st.name, got, stored)
		}
		if !st.changed && !stored.UpdatedAt.Equal(prev.UpdatedAt) {
			t.Errorf("%s: updated_at moved from %v to %v for no change", st.name, prev.UpdatedAt, stored.UpdatedAt)
		}
		prev = stored

		var audited []row
		rows, _ := db.Pool.Query(ctx, `SELECT id, action, data::text FROM audit_events WHERE id > $1 ORDER BY id`, lastAudit)
		for rows.Next() {
			var r row
			if err := rows.Scan(&lastAudit, &r.action, &r.data); err != nil {
				t.Fatal(err)
			}
			audited = append(audited, r)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		for i := range st.audit { // as jsonb writes it
			if err := db.Pool.QueryRow(ctx, `SELECT $1::jsonb::text`, st.audit[i].data).Scan(&st.audit[i].data); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(audited, st.audit) {
			t.Errorf("%s: audit rows %q, want %q", st.name, audited, st.audit)
		}
		var reasons []string
		rows, _ = db.Pool.Query(ctx, `SELECT id, payload->>'reason' FROM outbox WHERE id > $1 ORDER BY id`, lastOutbox)
		for rows.Next() {
			var r string
			if err := rows.Scan(&lastOutbox, &r); err != nil {
				t.Fatal(err)
			}
			reasons = append(reasons, r)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(reasons, st.reasons) {
			t.Errorf("%s: outbox reasons %q, want %q", st.name, reasons, st.reasons)
		}
	}
	if _, _, err := s.Update(ctx, "00000000-0000-0000-0000-000000000001", roles.Actor{}, Patch{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of no tenant = %v, want ErrNotFound", err)
	}
}

// TestChangeLeavesInsertsIntoTheTenantAlone: a change of the tenant, a
// member's (PATCH /tenant) or the operator's (a suspension), locks the
// tenant's row FOR NO KEY UPDATE, as roles.LockTenant does: the foreign-key
// check of an insert referencing the tenant (FOR KEY SHARE: a sign-in's
// session, a new member) does not wait for it. Locked FOR UPDATE, every
// sign-in to the tenant waited for the change to commit. The change is
// held, its row locks taken, at its outbox row (the test holds the outbox
// table) while the insert runs.
func TestChangeLeavesInsertsIntoTheTenantAlone(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	all, member := roles.CatalogArgs(permissions.Builtin())
	yes, suspended := true, identity.StatusSuspended
	var n int
	newUser := func(t *testing.T) string {
		t.Helper()
		n++
		var id string
		if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email) VALUES ('u' || $1::int || '@x.test') RETURNING id::text`, n).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	s := NewStore(db.Pool)
	changes := []struct {
		name   string
		change func(tenantID, ownerID string) error
	}{
		{"member's change", func(tenantID, ownerID string) error {
			a := roles.Actor{UserID: ownerID, Permissions: []string{roles.TenantWrite}, RequestID: "r"}
			_, _, err := s.UpdateAsMember(ctx, tenantID, a, Patch{RequireMFA: &yes}, all, member, nil)
			return err
		}},
		{"operator's suspension", func(tenantID, _ string) error {
			_, _, err := s.Update(ctx, tenantID, roles.Actor{RequestID: "r"}, Patch{Status: &suspended})
			return err
		}},
	}
	inserts := []struct {
		name string
		// insert inserts a row referencing the tenant, of its member or
		// of an account joining it.
		insert func(tenantID, member, joining string) error
	}{
		{"session", func(tenantID, member, _ string) error {
			_, err := sessions.New(db.Pool, time.Hour, 10*time.Second).Create(ctx, db.Pool, member, tenantID, "ua", "127.0.0.1")
			return err
		}},
		{"member", func(tenantID, _, joining string) error {
			return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return AddMember(ctx, tx, tenantID, joining, roles.Member) })
		}},
	}
	for _, c := range changes {
		for _, in := range inserts {
			t.Run(c.name+", "+in.name, func(t *testing.T) {
				owner, signingIn, joining := newUser(t), newUser(t), newUser(t)
				var ten Tenant
				err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
					var err error
					if ten, err = Create(ctx, tx, "Acme"); err != nil {
						return err
					}
					if err := AddMember(ctx, tx, ten.ID, owner, roles.Owner); err != nil {
						return err
					}
					return AddMember(ctx, tx, ten.ID, signingIn, roles.Member)
				})
				if err != nil {
					t.Fatal(err)
				}
				hold := db.Hold(t, `LOCK TABLE outbox IN SHARE MODE`)
				changed := make(chan error, 1)
				go func() { changed <- c.change(ten.ID, owner) }()
				db.WaitForLockWaiters(t, 1) // the change, at its outbox row
				inserted := make(chan struct{})
				insert := dbtest.AnsweredOrWaitingFor(t, db, 2, func() error {
					defer close(inserted)
					return in.insert(ten.ID, signingIn, joining)
				})
				select {
				case <-inserted:
				default:
					t.Error("the insert waits for the tenant's change to commit")
				}
				if err := hold.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				if err := insert(); err != nil {
					t.Errorf("insert: %v", err)
				}
				if err := <-changed; err != nil {
					t.Errorf("change: %v", err)
				}
			})
		}
	}
}
