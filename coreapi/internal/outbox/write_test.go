package outbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

func TestWriteCommitsAndRollsBackWithTheTransaction(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	u, ten := invalidation.UserSubject("u1"), invalidation.TenantSubject("t1")

	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		return Write(ctx, tx, Row{Subject: u, Reason: "role.granted"}, Row{Subject: ten, Reason: "tenant.suspended"})
	})
	if err != nil {
		t.Fatal(err)
	}
	errBoom := errors.New("boom")
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if err := Write(ctx, tx, Row{Subject: invalidation.SubjectAll, Reason: "lost"}); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("err = %v", err)
	}
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		Queue(ctx, b, Row{Subject: u, Reason: "batched"})
		Queue(ctx, b) // nothing
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return Write(ctx, tx) }); err != nil {
		t.Fatalf("empty write: %v", err)
	}

	rows, err := db.Pool.Query(ctx, `SELECT subject, payload->>'reason', (payload->>'at')::bigint, published_at IS NULL FROM outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Subject, Reason string
		At              int64
		Pending         bool
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ subject, reason string }{{u, "role.granted"}, {ten, "tenant.suspended"}, {u, "batched"}}
	if len(got) != len(want) {
		t.Fatalf("rows = %+v, want %v", got, want)
	}
	for i, w := range want {
		if got[i].Subject != w.subject || got[i].Reason != w.reason || got[i].At <= 0 || !got[i].Pending {
			t.Errorf("row %d = %+v, want %v pending with at > 0", i, got[i], w)
		}
	}
}

// TestNotificationAnnouncesTheRows: the outbox trigger's notification
// carries the rows each statement inserted (id, subject, payload,
// creation time), in the form the relay reads; rows too many for one
// notification (8000 bytes) are announced by an empty one.
func TestNotificationAnnouncesTheRows(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		t.Fatal(err)
	}
	next := func() string {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := conn.Conn().WaitForNotification(wctx)
		if err != nil {
			t.Fatal(err)
		}
		return n.Payload
	}
	u, ten := invalidation.UserSubject("u1"), invalidation.TenantSubject("t1")
	insert(t, db.Pool, Row{Subject: u, Reason: "role.granted"}, Row{Subject: ten, Reason: "tenant.suspended"})
	r := &Relay{}
	r.hear(next())
	heard, ok := r.heard.since(0, 1)
	if !ok || len(heard) != 2 {
		t.Fatalf("heard %+v, %v; want the 2 rows", heard, ok)
	}
	rows, err := db.Pool.Query(ctx, `SELECT id, subject, payload, created_at FROM outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pending, error) {
		var p pending
		err := row.Scan(&p.ID, &p.Subject, &p.Payload, &p.CreatedAt)
		return p, err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range stored {
		h := heard[i]
		if h.ID != p.ID || h.Subject != p.Subject || !h.CreatedAt.Equal(p.CreatedAt) || string(body(h)) != string(body(p)) {
			t.Errorf("row %d heard as %+v (body %s), stored as %+v (body %s)", i, h, body(h), p, body(p))
		}
	}

	many := make([]Row, 80)
	for i := range many {
		many[i] = Row{Subject: u, Reason: "role.granted"}
	}
	insert(t, db.Pool, many...)
	if p := next(); p != "" {
		t.Fatalf("80 rows announced in %d bytes, want an empty notification", len(p))
	}
}

// TestWriteRefusesASubjectNATSWouldNotDeliver: a row whose subject NATS
// refuses, takes for good or delivers where no proxy understands it fails
// the write that carries it, loudly, rather than committing an
// invalidation that never arrives; the transaction writes nothing.
func TestWriteRefusesASubjectNATSWouldNotDeliver(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	good := Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked}
	for _, subject := range []string{
		invalidation.UserSubject(strings.Repeat("a", 5000)),
		invalidation.UserSubject(""),
		invalidation.UserSubject("a b"),
		invalidation.TenantSubject("*"),
		invalidation.UserSubject(">"),
		"auth.invalidate.session.x",
	} {
		bad := Row{Subject: subject, Reason: invalidation.ReasonRoleRevoked}
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return Write(ctx, tx, good, bad) })
		if !errors.Is(err, invalidation.ErrInvalidSubject) {
			t.Errorf("Write(%.40q) = %v, want ErrInvalidSubject", subject, err)
		}
		err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			Queue(ctx, b, good, bad)
			b.Queue(`SELECT 1`)
			return tx.SendBatch(ctx, b).Close()
		})
		if !errors.Is(err, invalidation.ErrInvalidSubject) {
			t.Errorf("Queue(%.40q) = %v, want ErrInvalidSubject", subject, err)
		}
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d outbox rows written, want none", n)
	}
}
