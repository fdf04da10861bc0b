package outbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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

// TestCoveredRowsWrittenAsAny: rows whose cover the request also wrote
// (Row.CoveredBy) are left out of the collector's list only: Write and
// Queue insert them as any other row, with their reason, so their events
// go out as before.
func TestCoveredRowsWrittenAsAny(t *testing.T) {
	db := dbtest.New(t)
	var c Collector
	ctx := WithCollector(context.Background(), &c)
	owner := invalidation.UserSubject("owner")
	k1, k2 := invalidation.APIKeySubject("abcdefgh01234567"), invalidation.APIKeySubject("abcdefgh76543210")
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		Queue(ctx, b, Row{Subject: k1, Reason: "r1", CoveredBy: owner})
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		return Write(ctx, tx, Row{Subject: owner, Reason: "u"}, Row{Subject: k2, Reason: "r2", CoveredBy: owner})
	}); err != nil {
		t.Fatal(err)
	}
	if got := c.Header(); got != owner {
		t.Fatalf("Header() = %q, want %q", got, owner)
	}
	rows, _ := db.Pool.Query(ctx, `SELECT subject || ' ' || (payload - 'at')::text FROM outbox ORDER BY id`)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{k1 + ` {"reason": "r1"}`, owner + ` {"reason": "u"}`, k2 + ` {"reason": "r2"}`}
	if !slices.Equal(got, want) {
		t.Fatalf("outbox rows %q, want %q", got, want)
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

// TestCollectorCovered: a row covered by a subject (Row.CoveredBy) is not
// listed when the request also wrote that subject, before or after it;
// it is listed, in the order first written, when the request did not, or
// when it was also written uncovered. MaxReported applies to the list
// reported: a hundred keys covered by the user's subject make a list of
// one subject, not auth.invalidate.all.
func TestCollectorCovered(t *testing.T) {
	owner, other := invalidation.UserSubject("owner"), invalidation.UserSubject("other")
	ten := invalidation.TenantSubject("t1")
	key := func(i int) string { return invalidation.APIKeySubject(fmt.Sprintf("key%013d", i)) }
	keys := func(n int, cover string) []Row {
		r := make([]Row, n)
		for i := range r {
			r[i] = Row{Subject: key(i), CoveredBy: cover}
		}
		return r
	}
	plain := func(subjects ...string) []Row {
		r := make([]Row, len(subjects))
		for i, s := range subjects {
			r[i] = Row{Subject: s}
		}
		return r
	}
	for _, tc := range []struct {
		name   string
		writes [][]Row // one add each
		want   []string
	}{
		{"the owner written after its keys", [][]Row{plain(ten), keys(3, owner), plain(owner)}, []string{ten, owner}},
		{"the owner written before its keys", [][]Row{plain(owner), keys(3, owner), plain(ten)}, []string{owner, ten}},
		{"in the same write", [][]Row{append(keys(2, owner), Row{Subject: owner})}, []string{owner}},
		{"the owner not written", [][]Row{keys(2, owner), plain(other)}, []string{key(0), key(1), other}},
		{"only some keys' owner written", [][]Row{{{Subject: key(0), CoveredBy: owner}, {Subject: key(1), CoveredBy: other}}, plain(owner)},
			[]string{key(1), owner}},
		{"a key also written uncovered, before", [][]Row{plain(key(1)), keys(3, owner), plain(owner)}, []string{key(1), owner}},
		{"a key also written uncovered, after", [][]Row{keys(3, owner), plain(key(1)), plain(owner)}, []string{key(1), owner}},
		{"a covered key written twice", [][]Row{keys(2, owner), keys(2, owner)}, []string{key(0), key(1)}},
		{"more than MaxReported keys, the owner after", [][]Row{keys(2*MaxReported, owner), plain(owner)}, []string{owner}},
		{"more than MaxReported keys, the owner before", [][]Row{plain(owner), keys(2*MaxReported, owner)}, []string{owner}},
		{"more than MaxReported keys of two owners", [][]Row{keys(MaxReported, owner), plain(owner),
			{{Subject: key(MaxReported + 1), CoveredBy: other}}, plain(other, ten)}, []string{owner, other, ten}},
		{"more than MaxReported keys, the owner not written", [][]Row{keys(MaxReported+1, owner)}, []string{invalidation.SubjectAll}},
		{"MaxReported keys, the owner not written", [][]Row{keys(MaxReported, owner)}, func() []string {
			s := make([]string, MaxReported)
			for i := range s {
				s[i] = key(i)
			}
			return s
		}()},
		{"MaxReported listed with the uncovered keys", [][]Row{keys(MaxReported-1, owner), plain(other, ten)}, []string{invalidation.SubjectAll}},
		{"MaxCovered keys pending", [][]Row{keys(MaxCovered, owner), plain(owner)}, []string{owner}},
		{"more than MaxCovered keys pending", [][]Row{keys(MaxCovered+1, owner), plain(owner)}, []string{invalidation.SubjectAll}},
		{"more than MaxCovered keys, the owner first", [][]Row{plain(owner), keys(2*MaxCovered, owner)}, []string{owner}},
		{"all", [][]Row{plain(owner), keys(2, owner), plain(invalidation.SubjectAll), keys(2, other)}, []string{invalidation.SubjectAll}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Collector
			for _, w := range tc.writes {
				c.add(w)
			}
			if got, want := c.Header(), strings.Join(tc.want, " "); got != want {
				t.Fatalf("Header() = %.200q, want %.200q", got, want)
			}
		})
	}
}

// TestCollectorCoveredConcurrent: the writes of one request's
// transactions running at once (its collector shared) are all recorded,
// the keys their owner covers dropped whichever came first (run with
// -race).
func TestCollectorCoveredConcurrent(t *testing.T) {
	const writers = 8
	var c Collector
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := invalidation.UserSubject(fmt.Sprintf("owner%d", w))
			for i := range 2 * MaxReported {
				c.add([]Row{{Subject: invalidation.APIKeySubject(fmt.Sprintf("k%d%014d", w, i)), CoveredBy: owner}})
				if i == MaxReported {
					c.add([]Row{{Subject: owner}})
				}
			}
		}()
	}
	wg.Wait()
	got := strings.Fields(c.Header())
	slices.Sort(got)
	var want []string
	for w := range writers {
		want = append(want, invalidation.UserSubject(fmt.Sprintf("owner%d", w)))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Header() names %q, want %q", got, want)
	}
}
