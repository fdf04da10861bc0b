package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// TestWriteAndQueueCollect: every row written with a context that carries
// a Collector, by Write or by Queue, is recorded once, in the order first
// written, whether its transaction commits or not; auth.keys.changed is
// not; a context without a collector records nothing, and neither does a
// write refused.
func TestWriteAndQueueCollect(t *testing.T) {
	db := dbtest.New(t)
	var c Collector
	ctx := WithCollector(context.Background(), &c)
	u1, u2, ten, key := invalidation.UserSubject("u1"), invalidation.UserSubject("u2"), invalidation.TenantSubject("t1"),
		invalidation.APIKeySubject("abcdefgh01234567")
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		return Write(ctx, tx, Row{Subject: u1, Reason: "a"}, Row{Subject: invalidation.SubjectKeysChanged, Reason: "k"})
	}); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		Queue(ctx, b, Row{Subject: ten, Reason: "b"}, Row{Subject: u1, Reason: "again"})
		return tx.SendBatch(ctx, b).Close()
	}); err != nil {
		t.Fatal(err)
	}
	errBoom := errors.New("boom")
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if err := Write(ctx, tx, Row{Subject: key, Reason: "rolled back"}); err != nil {
			return err
		}
		return errBoom
	}); !errors.Is(err, errBoom) {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		return Write(ctx, tx, Row{Subject: u2, Reason: "ok"}, Row{Subject: "auth.invalidate.session.x", Reason: "refused"})
	}); !errors.Is(err, invalidation.ErrInvalidSubject) {
		t.Fatalf("write of a bad subject: %v", err)
	}
	// Another request's writes, with no collector.
	if err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
		return Write(context.Background(), tx, Row{Subject: u2, Reason: "elsewhere"})
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Header(), u1+" "+ten+" "+key; got != want {
		t.Fatalf("Header() = %q, want %q", got, want)
	}
	var none *Collector
	if got := none.Header(); got != "" {
		t.Fatalf("nil collector's Header() = %q", got)
	}
	if got := new(Collector).Header(); got != "" {
		t.Fatalf("empty collector's Header() = %q", got)
	}
}

// TestCollectorBound: up to MaxReported subjects and MaxReportedBytes
// are listed; one more, or an auth.invalidate.all row, makes the list
// auth.invalidate.all, and it stays so.
func TestCollectorBound(t *testing.T) {
	rows := func(n int, subject func(int) string) []Row {
		r := make([]Row, n)
		for i := range r {
			r[i] = Row{Subject: subject(i)}
		}
		return r
	}
	user := func(i int) string { return invalidation.UserSubject(fmt.Sprintf("00000000-0000-4000-8000-%012d", i)) }
	long := func(i int) string { return invalidation.UserSubject(fmt.Sprintf("%0200d", i)) }
	for _, tc := range []struct {
		name string
		rows []Row
		all  bool
	}{
		{"MaxReported user subjects", rows(MaxReported, user), false},
		{"one more", rows(MaxReported+1, user), true},
		{"the same subject many times", rows(10*MaxReported, func(int) string { return user(1) }), false},
		{"long subjects up to the byte bound", rows(MaxReportedBytes/(len(long(0))+1), long), false},
		{"long subjects past the byte bound", rows(MaxReportedBytes/(len(long(0))+1)+1, long), true},
		{"all", append(rows(3, user), Row{Subject: invalidation.SubjectAll}, Row{Subject: user(9)}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Collector
			for _, r := range tc.rows {
				c.add([]Row{r})
			}
			got := c.Header()
			if tc.all {
				if got != invalidation.SubjectAll {
					t.Fatalf("Header() = %.80q..., want %q", got, invalidation.SubjectAll)
				}
				return
			}
			if len(got) > MaxReportedBytes || strings.Count(got, " ")+1 > MaxReported || got == invalidation.SubjectAll {
				t.Fatalf("Header() of %d bytes, %d subjects", len(got), strings.Count(got, " ")+1)
			}
		})
	}
}
