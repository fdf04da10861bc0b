package outbox

import (
	"context"
	"errors"
	"testing"

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
		Queue(b, Row{Subject: u, Reason: "batched"})
		Queue(b) // nothing
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
