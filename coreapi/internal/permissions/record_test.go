package permissions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/natstest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

const (
	v1 = `
permissions:
  - {name: notes:read, description: Read notes, member_default: true}
  - {name: notes:write, description: Create notes}
`
	// v2 drops notes:write.
	v2 = `
permissions:
  - {name: notes:read, description: Read notes, member_default: true}
`
)

func catalog(t *testing.T, text string) *permissions.Catalog {
	t.Helper()
	c, err := permissions.Parse([]byte(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bus is a real NATS server with the outbox relay publishing to it and a
// subscriber recording every auth.invalidate.all message.
type bus struct {
	mu  sync.Mutex
	all []invalidation.Event
}

func startBus(t *testing.T, pool *pgxpool.Pool) *bus {
	t.Helper()
	ns := natstest.Start(t, -1, "")
	b := &bus{}
	sub := natstest.Connect(t, ns.ClientURL())
	if _, err := sub.Subscribe(invalidation.SubjectWildcard, func(m *nats.Msg) {
		if m.Subject != invalidation.SubjectAll {
			return
		}
		var ev invalidation.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Errorf("event %s: %v", m.Data, err)
		}
		b.mu.Lock()
		b.all = append(b.all, ev)
		b.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	relay := outbox.NewRelay(pool, natstest.Connect(t, ns.ClientURL()), slog.New(slog.NewJSONHandler(io.Discard, nil)),
		outbox.RelayOptions{Poll: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	return b
}

func (b *bus) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.all)
}

// waitAll waits until exactly n `all` messages arrived, and checks that no
// more arrive while every outbox row is published.
func (b *bus) waitAll(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for b.count() < n || pending(t, pool) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d auth.invalidate.all messages (got %d, %d rows pending)", n, b.count(), pending(t, pool))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := b.count(); got != n {
		t.Fatalf("auth.invalidate.all messages = %d, want %d", got, n)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range b.all {
		if ev.Reason != invalidation.ReasonCatalogChanged || ev.At <= 0 {
			t.Errorf("event = %+v", ev)
		}
	}
}

func pending(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func storedHash(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var h string
	if err := pool.QueryRow(context.Background(), `SELECT hash FROM permission_catalog`).Scan(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

func record(t *testing.T, pool *pgxpool.Pool, c *permissions.Catalog) bool {
	t.Helper()
	out, err := permissions.Record(context.Background(), pool, c)
	if err != nil {
		t.Fatal(err)
	}
	return out == permissions.Stored
}

// TestRemovedPermissionLeavesEveryProjection: a custom role holding
// notes:write and the member role's member_default notes:read reach the
// projection; starting with a catalog without notes:write records it,
// publishes auth.invalidate.all over real NATS, and the projection (and
// the member's profile) no longer carries it, with no row rewritten.
func TestRemovedPermissionLeavesEveryProjection(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	b := startBus(t, db.Pool)
	cat1, cat2 := catalog(t, v1), catalog(t, v2)

	var tenantID, userID string
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		ten, err := tenants.Create(ctx, tx, "Acme")
		if err != nil {
			return err
		}
		tenantID = ten.ID
		if err := tx.QueryRow(ctx, `INSERT INTO users (email) VALUES ('m@acme.test') RETURNING id::text`).Scan(&userID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO roles (tenant_id, name, permissions) VALUES ($1, 'writer', '{notes:write}')`, tenantID); err != nil {
			return err
		}
		return tenants.AddMember(ctx, tx, tenantID, userID, "member", "writer")
	}); err != nil {
		t.Fatal(err)
	}

	if !record(t, db.Pool, cat1) {
		t.Fatal("first catalog not recorded as a change")
	}
	b.waitAll(t, db.Pool, 1)
	p, err := projection.NewStore(db.Pool, time.Minute, cat1).Get(ctx, userID, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"notes:read", "notes:write", "tenant:read"}; !slices.Equal(p.Permissions, want) {
		t.Fatalf("under v1: %v, want %v", p.Permissions, want)
	}
	if record(t, db.Pool, cat1) {
		t.Fatal("the same catalog recorded again")
	}

	// A replica starts with v2.
	if !record(t, db.Pool, cat2) {
		t.Fatal("v2 not recorded as a change")
	}
	b.waitAll(t, db.Pool, 2)
	if storedHash(t, db.Pool) != cat2.Hash() {
		t.Fatal("stored hash is not v2's")
	}
	p, err = projection.NewStore(db.Pool, time.Minute, cat2).Get(ctx, userID, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"notes:read", "tenant:read"}; !slices.Equal(p.Permissions, want) || !slices.Equal(p.Roles, []string{"member", "writer"}) {
		t.Fatalf("under v2: roles %v permissions %v, want permissions %v", p.Roles, p.Permissions, want)
	}
	// The profile reports the permissions of the identity the proxy signs
	// from this projection.
	me, err := users.NewStore(db.Pool, nil, cat2, users.Limits{}).Me(ctx, identity.Identity{UserID: userID, TenantID: tenantID, Roles: p.Roles, Permissions: p.Permissions})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"notes:read", "tenant:read"}; !slices.Equal(me.Permissions, want) {
		t.Fatalf("profile under v2: %v, want %v", me.Permissions, want)
	}
	// Nothing was rewritten: the role still stores notes:write, and a
	// catalog that declares it again gives it back.
	p, err = projection.NewStore(db.Pool, time.Minute, cat1).Get(ctx, userID, tenantID)
	if err != nil || !slices.Contains(p.Permissions, "notes:write") {
		t.Fatalf("under v1 again: %v, %v", p.Permissions, err)
	}
}

// TestRolloutWithTwoCatalogs: replicas with different catalogs start
// during a rollout. Every replica that stores a new catalog publishes
// auth.invalidate.all; replicas starting together with the same new
// catalog publish it once.
func TestRolloutWithTwoCatalogs(t *testing.T) {
	db := dbtest.New(t)
	b := startBus(t, db.Pool)
	old, next := catalog(t, v1), catalog(t, v2)

	// The old version runs: three replicas start together.
	if n := startTogether(t, db.Pool, old, old, old); n != 1 {
		t.Fatalf("%d of 3 replicas with the first catalog recorded it, want 1", n)
	}
	b.waitAll(t, db.Pool, 1)

	// The rollout: four new replicas start together.
	if n := startTogether(t, db.Pool, next, next, next, next); n != 1 {
		t.Fatalf("%d of 4 new replicas recorded the new catalog, want 1", n)
	}
	b.waitAll(t, db.Pool, 2)
	if storedHash(t, db.Pool) != next.Hash() {
		t.Fatal("stored hash is not the new catalog's")
	}

	// Without versions (both 0), an old replica restarts mid-rollout: it
	// stores its catalog and publishes; the next new replica to start
	// stores the new one again and publishes, so the last start of the
	// rollout leaves the new catalog recorded and the caches flushed after
	// it (TestVersionedRollout orders them).
	if !record(t, db.Pool, old) {
		t.Fatal("restarted old replica did not record its catalog")
	}
	b.waitAll(t, db.Pool, 3)
	if !record(t, db.Pool, next) {
		t.Fatal("new replica after the old restart did not record the new catalog")
	}
	b.waitAll(t, db.Pool, 4)

	// Old and new replicas starting at the same moment: they take turns
	// on the row, and each one that replaces the stored hash (at least
	// one: both catalogs are among them) publishes once, whatever the
	// order.
	for range 5 {
		before := b.count()
		n := startTogether(t, db.Pool, old, next, next, old)
		if n < 1 || n > 4 {
			t.Fatalf("%d replicas recorded a change, want 1 to 4", n)
		}
		b.waitAll(t, db.Pool, before+n)
		if h := storedHash(t, db.Pool); h != old.Hash() && h != next.Hash() {
			t.Fatalf("stored hash %s is neither catalog's", h)
		}
	}
	var rows int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM permission_catalog`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("permission_catalog rows = %d, %v; want 1", rows, err)
	}
}

// startTogether records each catalog from its own goroutine at once and
// returns how many recorded a change.
func startTogether(t *testing.T, pool *pgxpool.Pool, cats ...*permissions.Catalog) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	changed := 0
	gate := make(chan struct{})
	for _, c := range cats {
		wg.Go(func() {
			<-gate
			out, err := permissions.Record(context.Background(), pool, c)
			if err != nil {
				t.Error(err)
				return
			}
			if out == permissions.Stored {
				mu.Lock()
				changed++
				mu.Unlock()
			}
		})
	}
	close(gate)
	wg.Wait()
	return changed
}

// TestCheckCurrentOrderedWithRecord: a change checked against the recorded
// catalog holds the record's row (FOR SHARE) until it ends, so a replica
// recording another catalog waits for it rather than committing between
// the check and the change; once that replica has recorded, the check of
// the old catalog refuses (ErrRollout) and the new one's passes. With no
// catalog recorded yet, nothing is refused.
func TestCheckCurrentOrderedWithRecord(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	old, next := catalog(t, v1), catalog(t, v2)
	check := func(c *permissions.Catalog) error {
		var err error
		if txErr := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			err = permissions.CheckCurrent(ctx, tx, c)
			return nil
		}); txErr != nil {
			t.Fatal(txErr)
		}
		return err
	}
	if err := check(old); err != nil {
		t.Fatalf("no catalog recorded: %v, want nil", err)
	}
	record(t, db.Pool, old)

	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // committed below
	if err := permissions.CheckCurrent(ctx, tx, old); err != nil {
		t.Fatalf("the recorded catalog: %v, want nil", err)
	}
	recorded := make(chan error, 1)
	go func() {
		_, err := permissions.Record(ctx, db.Pool, next)
		recorded <- err
	}()
	eventually.Within(t, 20*time.Second, func() error {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%permission_catalog%'`).Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d backends wait on the catalog's row, want the recording one", n)
		}
		return nil
	})
	select {
	case err := <-recorded:
		t.Fatalf("the new catalog was recorded (%v) while a change checked against the old one was open", err)
	default:
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-recorded; err != nil {
		t.Fatal(err)
	}
	if err := check(old); !errors.Is(err, permissions.ErrRollout) {
		t.Errorf("the old catalog once the new one is recorded: %v, want ErrRollout", err)
	}
	if err := check(next); err != nil {
		t.Errorf("the recorded catalog: %v, want nil", err)
	}
	if err := check(nil); !errors.Is(err, permissions.ErrRollout) {
		t.Errorf("the built-in catalog (nil): %v, want ErrRollout", err)
	}
}

// TestVersionedRollout: catalogs that declare a version are ordered by
// it. Once a newer catalog is recorded, an old replica restarting
// mid-rollout keeps it (Behind) rather than recording its own again: the
// recorded catalog stays the new one, nothing is published, and the old
// replica's changes that hand out privileges are refused (ErrRollout).
// Old and new starting together always leave the new one recorded; a
// catalog of a higher version replaces it (a rollback shipped as a new
// version), and one of the same hash only raises the recorded version.
func TestVersionedRollout(t *testing.T) {
	db := dbtest.New(t)
	b := startBus(t, db.Pool)
	ctx := context.Background()
	old, next := catalog(t, "version: 1\n"+v1), catalog(t, "version: 2\n"+v2)
	outcome := func(c *permissions.Catalog) permissions.Outcome {
		t.Helper()
		out, err := permissions.Record(ctx, db.Pool, c)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	check := func(c *permissions.Catalog) error {
		var err error
		if txErr := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			err = permissions.CheckCurrent(ctx, tx, c)
			return nil
		}); txErr != nil {
			t.Fatal(txErr)
		}
		return err
	}
	stored := func() (string, int64) {
		t.Helper()
		var h string
		var v int64
		if err := db.Pool.QueryRow(ctx, `SELECT hash, version FROM permission_catalog`).Scan(&h, &v); err != nil {
			t.Fatal(err)
		}
		return h, v
	}

	if got := outcome(old); got != permissions.Stored {
		t.Fatalf("first catalog: %v, want stored", got)
	}
	if got := outcome(next); got != permissions.Stored {
		t.Fatalf("newer catalog: %v, want stored", got)
	}
	b.waitAll(t, db.Pool, 2)

	// The old replica restarts mid-rollout.
	if got := outcome(old); got != permissions.Behind {
		t.Fatalf("old catalog after the newer one: %v, want behind", got)
	}
	if h, v := stored(); h != next.Hash() || v != 2 {
		t.Fatalf("recorded %s version %d, want the newer catalog's %s version 2", h, v, next.Hash())
	}
	if err := check(old); !errors.Is(err, permissions.ErrRollout) {
		t.Errorf("the old replica's check: %v, want ErrRollout", err)
	}
	if err := check(next); err != nil {
		t.Errorf("the newer replica's check: %v, want nil", err)
	}
	if got := outcome(next); got != permissions.Current {
		t.Errorf("newer catalog again: %v, want current", got)
	}
	b.waitAll(t, db.Pool, 2)

	// Started together, in any order: the newer one stays recorded.
	for range 5 {
		startTogether(t, db.Pool, old, next, old, next, old)
		if h, v := stored(); h != next.Hash() || v != 2 {
			t.Fatalf("after old and new started together: %s version %d, want the newer catalog's", h, v)
		}
	}
	b.waitAll(t, db.Pool, 2)

	// A rollback ships the old permissions as version 3.
	back := catalog(t, "version: 3\n"+v1)
	if got := outcome(back); got != permissions.Stored {
		t.Fatalf("rollback as version 3: %v, want stored", got)
	}
	b.waitAll(t, db.Pool, 3)
	if got := outcome(next); got != permissions.Behind {
		t.Errorf("version 2 after version 3: %v, want behind", got)
	}
	// The same permissions under a higher version: recorded, nothing to
	// invalidate.
	if got := outcome(catalog(t, "version: 4\n"+v1)); got != permissions.Current {
		t.Errorf("same hash, version 4: %v, want current", got)
	}
	if h, v := stored(); h != back.Hash() || v != 4 {
		t.Errorf("recorded %s version %d, want %s version 4", h, v, back.Hash())
	}
	b.waitAll(t, db.Pool, 3)
}
