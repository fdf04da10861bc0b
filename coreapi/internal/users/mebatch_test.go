package users

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// queryCounter counts the statements a pool sends.
type queryCounter struct {
	mu  sync.Mutex
	sql []string
}

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	q.mu.Lock()
	q.sql = append(q.sql, d.SQL)
	q.mu.Unlock()
	return ctx
}

func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (q *queryCounter) sent() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.sql...)
}

// onePool opens a pool of one connection on db in exec mode mode, its
// statements counted by q.
func onePool(t *testing.T, db *dbtest.DB, mode pgx.QueryExecMode, q *queryCounter) *pgxpool.Pool {
	t.Helper()
	return countedPool(t, db, 1, mode, q)
}

// countedPool is a pool of up to maxConns connections to db in mode, whose
// statements q counts.
func countedPool(tb testing.TB, db *dbtest.DB, maxConns int32, mode pgx.QueryExecMode, q *queryCounter) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.DefaultQueryExecMode = mode
	cfg.ConnConfig.Tracer = q
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// insertedIDs runs an INSERT … RETURNING id::text and returns the ids.
func insertedIDs(tb testing.TB, pool *pgxpool.Pool, sql string) []string {
	tb.Helper()
	rows, err := pool.Query(context.Background(), sql)
	if err != nil {
		tb.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatal(err)
	}
	return ids
}

// TestMeReadsQueuedMeanwhileShareOneRoundTrip: while a /users/me read
// holds the only round trip allowed, the reads that arrive queue, and the
// next round trip carries all of them as one statement. Each caller gets
// its own row (one id twice, one in upper case), one with no row gets
// ErrNotFound alone, and each answer is the one a read on its own gives,
// in the cached-statement mode and with the simple protocol.
func TestMeReadsQueuedMeanwhileShareOneRoundTrip(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	ids := insertedIDs(t, db.Pool, `
INSERT INTO users (email, display_name, status, email_verified_at)
SELECT 'u' || g || '@x.test', 'User ' || g, CASE WHEN g % 2 = 0 THEN 'disabled' ELSE 'active' END,
       CASE WHEN g % 3 = 0 THEN now() END
FROM generate_series(1, 6) g
RETURNING id::text`)
	if _, err := db.Pool.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status) VALUES ($1, 'k', '\x00', 'active')`, ids[2]); err != nil {
		t.Fatal(err)
	}
	const missing = "00000000-0000-4000-8000-000000000000"
	queued := []string{ids[1], ids[2], ids[3], strings.ToUpper(ids[4]), ids[5], ids[1], missing}

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			// What each read gets on its own.
			alone := NewStore(db.Pool, nil, nil, Limits{})
			want := map[string]Me{}
			for _, id := range ids {
				me, err := alone.Me(ctx, identity.Identity{UserID: id})
				if err != nil {
					t.Fatal(err)
				}
				want[id] = me
			}

			var q queryCounter
			pool := onePool(t, db, mode, &q)
			s := NewStore(pool, nil, nil, Limits{})
			s.me.b.runners, s.me.b.extra = 1, 0 // no extra runner, however long the test holds the connection
			held, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			type answer struct {
				me  Me
				err error
			}
			got := make([]answer, 1+len(queued))
			var wg sync.WaitGroup
			read := func(i int, id string) {
				wg.Go(func() {
					got[i].me, got[i].err = s.Me(ctx, identity.Identity{UserID: id})
				})
			}
			// The first read takes the one round trip and waits for the
			// connection; the others queue behind it.
			read(0, ids[0])
			waitState(t, &s.me.b, 1, 0)
			for i, id := range queued {
				read(1+i, id)
			}
			waitState(t, &s.me.b, 1, len(queued))
			before := len(q.sent())
			held.Release()
			wg.Wait()

			sent := q.sent()[before:]
			if len(sent) != 2 || sent[0] != qMe || sent[1] != qMeBatch {
				t.Fatalf("statements sent: %d, want qMe then one qMeBatch: %q", len(sent), sent)
			}
			for i, id := range append([]string{ids[0]}, queued...) {
				if id == missing {
					if !errors.Is(got[i].err, ErrNotFound) {
						t.Errorf("read %d (no such user): err %v, want ErrNotFound", i, got[i].err)
					}
					continue
				}
				w := want[strings.ToLower(id)]
				w.ID = id
				if got[i].err != nil || !sameMe(got[i].me, w) {
					t.Errorf("read %d (%s):\n got %+v, %v\nwant %+v", i, id, got[i].me, got[i].err, w)
				}
			}
			if !got[2].me.MFAEnabled || !got[2].me.EmailVerified || got[3].me.Status != "disabled" {
				t.Errorf("the seeded differences did not come through: %+v %+v", got[2].me, got[3].me)
			}
			// Every read is answered before the runner gives its slot
			// back, so the slot is freed a moment after wg.Wait returns.
			waitState(t, &s.me.b, 0, 0)
		})
	}
}

// TestMeReadPastItsDeadlineWaitsForNoBatch: a /users/me read whose
// request deadline has passed is answered with that deadline, whatever
// round trip its batch waits for. A read that found others queued and a
// runner's slot free (the one in flight stalled) sent their batch itself,
// on a context without its deadline (the batch carries the others' reads),
// and so waited for that round trip, up to batchTimeout, past the request's
// deadline (httpapi.Options.RequestTimeout) and the proxy's
// UPSTREAM_TIMEOUT: a database that stopped answering held such requests
// for 30 s instead of answering them 503 at their deadline. The batch is
// still sent, and the reads queued before it are answered.
func TestMeReadPastItsDeadlineWaitsForNoBatch(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	ids := insertedIDs(t, db.Pool, `
INSERT INTO users (email, display_name) SELECT 'd' || g || '@x.test', 'D' || g FROM generate_series(1, 3) g
RETURNING id::text`)
	var q queryCounter
	pool := onePool(t, db, pgx.QueryExecModeCacheStatement, &q)
	s := NewStore(pool, nil, nil, Limits{})
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	s.me.b.clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	held, err := pool.Acquire(ctx) // the round trips wait for the connection
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if held != nil {
			held.Release()
		}
	}()
	type answer struct {
		me  Me
		err error
	}
	read := func(ctx context.Context, id string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			me, err := s.Me(ctx, identity.Identity{UserID: id})
			ch <- answer{me, err}
		}()
		return ch
	}
	first := read(ctx, ids[0]) // alone: the round trip that stalls
	waitState(t, &s.me.b, 1, 0)
	queued := read(ctx, ids[1]) // before the stall: queued
	waitState(t, &s.me.b, 1, 1)
	mu.Lock()
	now = now.Add(s.me.b.stallAfter) // the round trip in flight stalled
	mu.Unlock()

	late, cancel := context.WithDeadline(ctx, time.Now()) // its request's deadline has passed
	defer cancel()
	select {
	case a := <-read(late, ids[2]):
		if !errors.Is(a.err, context.DeadlineExceeded) {
			t.Errorf("read past its deadline: %+v, %v; want context.DeadlineExceeded", a.me, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read past its deadline waited for the round trip of its batch")
	}

	held.Release()
	held = nil
	for i, ch := range []<-chan answer{first, queued} {
		if a := <-ch; a.err != nil || a.me.Email != "d"+strconv.Itoa(i+1)+"@x.test" {
			t.Errorf("read %d: %+v, %v", i, a.me, a.err)
		}
	}
	waitState(t, &s.me.b, 0, 0)
}

// TestMeBatchWithAnUnreadableRowReadsEachAlone: a batch holding a row it
// cannot decode (an infinite time, which qMe's read refuses too) is read
// again one by one, so that only that user's read fails.
func TestMeBatchWithAnUnreadableRowReadsEachAlone(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	ids := insertedIDs(t, db.Pool, `
INSERT INTO users (email, display_name, updated_at)
VALUES ('ok@x.test', 'OK', now()), ('inf@x.test', 'Inf', 'infinity')
RETURNING id::text`)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			var q queryCounter
			l := newMeLoader(onePool(t, db, mode, &q))
			batch := []*meCall{{id: ids[0], reply: newReply()}, {id: ids[1], reply: newReply()}}
			for _, c := range batch {
				var err error
				if c.key, err = canonicalUUID(c.id); err != nil {
					t.Fatal(err)
				}
			}
			l.send(ctx, batch)
			if batch[0].err != nil || batch[0].me.Email != "ok@x.test" {
				t.Errorf("readable row: %+v, %v", batch[0].me, batch[0].err)
			}
			if batch[1].err == nil || !strings.Contains(batch[1].err.Error(), "Infinity") {
				t.Errorf("infinite updated_at: err %v, want qMe's Infinity error", batch[1].err)
			}
			if sent := q.sent(); len(sent) != 3 || sent[0] != qMeBatch || sent[1] != qMe || sent[2] != qMe {
				t.Errorf("statements: %q, want the batch then each alone", sent)
			}
		})
	}
}

// sameMe compares the fields Me returns.
func sameMe(a, b Me) bool {
	return a.ID == b.ID && a.Email == b.Email && a.EmailVerified == b.EmailVerified && a.DisplayName == b.DisplayName &&
		a.Status == b.Status && a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) && a.MFAEnabled == b.MFAEnabled &&
		a.MembershipStatus == b.MembershipStatus && len(a.Roles) == len(b.Roles) && len(a.Permissions) == len(b.Permissions)
}

// BenchmarkMeParallel is Store.Me from 64 goroutines at once over a pool
// of 8 connections, as the full stack drives it: round-trips/op is the
// statements sent per read (1 without batching).
func BenchmarkMeParallel(b *testing.B) {
	db := dbtest.New(b)
	ctx := context.Background()
	ids := insertedIDs(b, db.Pool, `
INSERT INTO users (email, display_name)
SELECT 'bench-' || g || '@example.com', 'Bench User ' || g FROM generate_series(1, 1000) g
RETURNING id::text`)
	var q queryCounter
	s := NewStore(countedPool(b, db, 8, pgx.QueryExecModeCacheStatement, &q), nil, nil, Limits{})
	var next atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := ids[next.Add(1)%int64(len(ids))]
			if _, err := s.Me(ctx, identity.Identity{UserID: id}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(len(q.sent()))/float64(b.N), "round-trips/op")
}
