package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/natstest"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// startNATS runs a real nats-server in-process on 127.0.0.1 (port -1 picks
// a free one), optionally with JetStream storing in storeDir.
func startNATS(t *testing.T, port int, storeDir string) *server.Server {
	t.Helper()
	return natstest.Start(t, port, storeDir)
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	return natstest.Connect(t, url)
}

func quiet() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

func startRelay(t *testing.T, pool *pgxpool.Pool, nc *nats.Conn, o RelayOptions) *Relay {
	t.Helper()
	r := NewRelay(pool, nc, quiet(), o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	return r
}

// insert commits rows through the package's own writer.
func insert(t *testing.T, pool *pgxpool.Pool, rows ...Row) {
	t.Helper()
	if err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		return Write(context.Background(), tx, rows...)
	}); err != nil {
		t.Fatalf("insert outbox rows: %v", err)
	}
}

func pendingCount(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// wait is how long a test waits for the relay.
const wait = 20 * time.Second

// want returns nil if ok, else an error saying what was seen.
func want(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, args...)
}

// collector records every message on the invalidation subjects by row id.
type collector struct {
	mu   sync.Mutex
	seen map[string]int
	msgs []*nats.Msg
	nc   *nats.Conn
	sub  *nats.Subscription
}

func collect(t *testing.T, url string) *collector {
	t.Helper()
	c := &collector{seen: map[string]int{}, nc: connect(t, url)}
	sub, err := c.nc.Subscribe(invalidation.SubjectWildcard, func(m *nats.Msg) {
		c.mu.Lock()
		c.seen[m.Header.Get(MsgIDHeader)]++
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	c.sub = sub
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

// settle returns once everything published through via before it was
// called has been recorded.
func (c *collector) settle(t *testing.T, via *nats.Conn) {
	t.Helper()
	settled(t, via, c.nc, c.sub, func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.msgs)
	})
}

func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func TestRelayPublishesEvent(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())
	// Poll an hour: only LISTEN/NOTIFY (or the wake-up that follows
	// LISTEN) can deliver within the test.
	startRelay(t, db.Pool, connect(t, ns.ClientURL()), RelayOptions{Poll: time.Hour})

	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonUserLogoutGlobal})
	eventually.Within(t, wait, func() error { n := c.distinct(); return want(n == 1, "%d distinct events arrived, want 1", n) })
	insert(t, db.Pool, Row{Subject: invalidation.TenantSubject("t1"), Reason: invalidation.ReasonTenantStatus("suspended")})
	eventually.Within(t, wait, func() error { n := c.distinct(); return want(n == 2, "%d distinct events arrived, want 2", n) })

	// The message can reach the collector before the relay commits its
	// mark: wait for the mark, not just the message.
	eventually.Within(t, wait, func() error { n := pendingCount(t, db.Pool); return want(n == 0, "%d rows not marked published", n) })

	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.msgs[0]
	if m.Subject != invalidation.UserSubject("u1") {
		t.Errorf("subject = %q, want %q", m.Subject, invalidation.UserSubject("u1"))
	}
	var ev invalidation.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatalf("body %s: %v", m.Data, err)
	}
	if ev.Reason != invalidation.ReasonUserLogoutGlobal || ev.At <= 0 || time.Since(time.UnixMilli(ev.At)) > time.Minute {
		t.Errorf("event = %+v, want reason user.logout_global and a recent at", ev)
	}
	// The relay marks rows published after NATS confirms, so a subscriber
	// may see the message just before the mark commits.
	eventually.Within(t, wait, func() error { n := pendingCount(t, db.Pool); return want(n == 0, "%d rows left pending", n) })
}

// TestRelayDeliversAfterNATSOutage: an event committed while NATS is down
// stays pending and is delivered once NATS is back. A JetStream stream
// records what reaches the server, so nothing depends on when a subscriber
// reconnects.
func TestRelayDeliversAfterNATSOutage(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	store := t.TempDir()
	ns := startNATS(t, -1, store)
	port := ns.Addr().(*net.TCPAddr).Port
	url := ns.ClientURL()
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "INV", Subjects: []string{invalidation.SubjectWildcard}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	relayConn := connect(t, url)
	r := startRelay(t, db.Pool, relayConn, RelayOptions{Poll: 20 * time.Millisecond})

	ns.Shutdown()
	ns.WaitForShutdown()
	eventually.Within(t, wait, func() error {
		return want(!relayConn.IsConnected(), "the relay's connection is still %v", relayConn.Status())
	})

	subject := invalidation.UserSubject("outage")
	insert(t, db.Pool, Row{Subject: subject, Reason: invalidation.ReasonUserPasswordChanged})
	failures := r.Stats().Failures
	eventually.Within(t, wait, func() error {
		n := r.Stats().Failures
		return want(n > failures+1, "publish failures = %d, want more than %d", n, failures+1)
	})
	if got := pendingCount(t, db.Pool); got != 1 {
		t.Fatalf("pending rows while NATS is down = %d, want 1", got)
	}

	ns2 := startNATS(t, port, store)
	eventually.Within(t, wait, func() error {
		n := pendingCount(t, db.Pool)
		return want(n == 0, "%d rows pending after NATS is back", n)
	})

	js2, err := jetstream.New(connect(t, ns2.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js2.Stream(ctx, "INV")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatalf("event not delivered to NATS: %v", err)
	}
	var ev invalidation.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Reason != invalidation.ReasonUserPasswordChanged {
		t.Errorf("delivered event = %s (%v), want reason user.password_changed", msg.Data, err)
	}
}

// TestTwoRelaysNeverPublishTheSameRow runs two relays with small batches
// against rows committed concurrently: every row arrives exactly once.
func TestTwoRelaysNeverPublishTheSameRow(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())
	o := RelayOptions{Batch: 7, Poll: 10 * time.Millisecond}
	r1 := startRelay(t, db.Pool, connect(t, ns.ClientURL()), o)
	r2 := startRelay(t, db.Pool, connect(t, ns.ClientURL()), o)

	const writers, perWriter = 10, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				insert(t, db.Pool, Row{Subject: invalidation.UserSubject(strconv.Itoa(w*perWriter + i)), Reason: "test"})
			}
		})
	}
	wg.Wait()
	const total = writers * perWriter
	eventually.Within(t, wait, func() error {
		p, n := pendingCount(t, db.Pool), c.distinct()
		return want(p == 0 && n == total, "%d rows pending, %d of %d distinct events arrived", p, n, total)
	})

	// A relay counts a row once its batch commits, which can come after
	// the collector saw the message.
	eventually.Within(t, wait, func() error {
		s1, s2 := r1.Stats(), r2.Stats()
		return want(s1.Published+s2.Published >= total, "relays counted %d + %d published, want %d", s1.Published, s2.Published, total)
	})

	c.mu.Lock()
	defer c.mu.Unlock()
	for id, n := range c.seen {
		if n != 1 {
			t.Errorf("row %s published %d times, want once", id, n)
		}
	}
	s1, s2 := r1.Stats(), r2.Stats()
	if s1.Published+s2.Published != total {
		t.Errorf("relays marked %d + %d rows, want %d in total", s1.Published, s2.Published, total)
	}
	t.Logf("relay 1 published %d, relay 2 published %d", s1.Published, s2.Published)
}

// TestRowCommittedBeforeCrashIsDelivered: a process commits a change and
// dies before publishing, while a relay of its own holds the row locked
// mid-batch; a relay started later delivers it.
func TestRowCommittedBeforeCrashIsDelivered(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())

	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("crash"), Reason: invalidation.ReasonSessionRevoked})
	// The dying relay: claims the row, then its connection drops without
	// COMMIT.
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var claimed int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT id FROM outbox WHERE published_at IS NULL FOR UPDATE SKIP LOCKED) s`).Scan(&claimed); err != nil || claimed != 1 {
		t.Fatalf("claim = %d, %v", claimed, err)
	}
	// While it holds the lock, another relay's batch skips the row.
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{})
	if n, err := r.PublishBatch(ctx); err != nil || n != 0 {
		t.Fatalf("batch while the row is locked = %d, %v; want 0 (skipped)", n, err)
	}
	if err := conn.PgConn().Close(ctx); err != nil { // abrupt: no COMMIT, no ROLLBACK
		t.Fatal(err)
	}

	startRelay(t, db.Pool, connect(t, ns.ClientURL()), RelayOptions{Poll: 20 * time.Millisecond})
	eventually.Within(t, wait, func() error {
		n, p := c.distinct(), pendingCount(t, db.Pool)
		return want(n == 1 && p == 0, "%d distinct events, %d rows pending; want 1 and 0", n, p)
	})
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	insert(t, db.Pool, Row{Subject: "auth.invalidate.all", Reason: "a"}, Row{Subject: "auth.invalidate.all", Reason: "b"}, Row{Subject: "auth.invalidate.all", Reason: "c"})
	if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET published_at = now() - interval '2 hours' WHERE payload->>'reason' = 'a'`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET published_at = now() - interval '1 minute' WHERE payload->>'reason' = 'b'`); err != nil {
		t.Fatal(err)
	}
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{Retain: time.Hour})
	n, err := r.Prune(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1 (only the row published 2h ago)", n, err)
	}
	var left []string
	rows, _ := db.Pool.Query(ctx, `SELECT payload->>'reason' FROM outbox ORDER BY id`)
	left, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(left) != 2 || left[0] != "b" || left[1] != "c" {
		t.Errorf("rows left = %v, %v; want [b c]", left, err)
	}
}

func TestPublishBatchNATSDown(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	nc := connect(t, ns.ClientURL())
	ns.Shutdown()
	ns.WaitForShutdown()
	eventually.Within(t, wait, func() error { return want(!nc.IsConnected(), "the client's connection is still %v", nc.Status()) })
	insert(t, db.Pool, Row{Subject: "auth.invalidate.all", Reason: "x"})
	r := NewRelay(db.Pool, nc, quiet(), RelayOptions{})
	if _, err := r.PublishBatch(context.Background()); err == nil {
		t.Fatal("PublishBatch with NATS down succeeded")
	}
	if got := pendingCount(t, db.Pool); got != 1 {
		t.Errorf("pending rows = %d, want 1", got)
	}
}

// TestUnpublishableRowDoesNotHoldBackTheOthers: a row whose subject NATS
// refuses (white space), takes for good (one longer than its 4 KiB
// protocol line: the server closes the connection, and the client does
// not reopen it, so the relay published nothing more) or delivers where no
// proxy understands it (an empty id, a wildcard, a literal in a published
// subject) is never going to be delivered as written. Write refuses them,
// but one written otherwise (by hand, by an older release) must not stay
// pending at the head of the queue, where every later invalidation would
// wait behind it for ever; it goes out as auth.invalidate.all instead
// (what it named is unknown, so everything is dropped), counted, and the
// rows after it follow.
func TestUnpublishableRowDoesNotHoldBackTheOthers(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())
	bad := []string{
		invalidation.UserSubject("a b"),
		invalidation.UserSubject(""),
		invalidation.UserSubject(strings.Repeat("a", 5000)),
		invalidation.TenantSubject("*"),
		invalidation.UserSubject(">"),
	}
	for _, s := range bad {
		if _, err := db.Pool.Exec(context.Background(), `INSERT INTO outbox (subject, payload) VALUES ($1, $2)`,
			s, `{"reason": "`+invalidation.ReasonMemberRemoved+`"}`); err != nil {
			t.Fatal(err)
		}
	}
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u2"), Reason: invalidation.ReasonRoleRevoked})
	nc := connect(t, ns.ClientURL())
	r := NewRelay(db.Pool, nc, quiet(), RelayOptions{})
	if _, err := r.PublishBatch(context.Background()); err != nil {
		t.Fatalf("PublishBatch: %v (connection %v, %v)", err, nc.Status(), nc.LastError())
	}
	if got := pendingCount(t, db.Pool); got != 0 {
		t.Errorf("pending rows = %d, want 0", got)
	}
	if !nc.IsConnected() {
		t.Errorf("the relay's connection is %v (%v) after the batch", nc.Status(), nc.LastError())
	}
	if n := r.Stats().Undeliverable; n != int64(len(bad)) {
		t.Errorf("Stats().Undeliverable = %d, want %d", n, len(bad))
	}
	eventually.Within(t, wait, func() error {
		n := c.distinct()
		return want(n == len(bad)+1, "%d distinct events arrived, want %d", n, len(bad)+1)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	var got []string
	for _, m := range c.msgs {
		got = append(got, m.Subject)
	}
	var wantSubjects []string
	for range bad {
		wantSubjects = append(wantSubjects, invalidation.SubjectAll)
	}
	wantSubjects = append(wantSubjects, invalidation.UserSubject("u2"))
	if fmt.Sprint(got) != fmt.Sprint(wantSubjects) {
		t.Errorf("subjects = %v, want %v", got, wantSubjects)
	}
	var ev invalidation.Event
	if err := json.Unmarshal(c.msgs[0].Data, &ev); err != nil || ev.Reason != invalidation.ReasonMemberRemoved {
		t.Errorf("body of the stand-in = %s (%v), want the row's reason", c.msgs[0].Data, err)
	}
}

// TestOversizedRowDoesNotHoldBackTheOthers: a row whose message NATS's
// max_payload refuses (a reason written by hand; a heartbeat listing many
// relays with long names under a lowered max_payload) would fail its batch
// for ever, every later row waiting behind it. It goes out under its own
// subject without its payload (its time alone; a heartbeat with its
// relays counted as unlisted, so the proxies know they cannot watch
// them), and the rows after it follow.
func TestOversizedRowDoesNotHoldBackTheOthers(t *testing.T) {
	db := dbtest.New(t)
	ns := natstest.StartWith(t, &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxPayload: 2048})
	got := make(chan *nats.Msg, 16)
	sub := connect(t, ns.ClientURL())
	if _, err := sub.ChanSubscribe("auth.>", got); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	relays := make([]string, 100)
	for i := range relays {
		relays[i] = fmt.Sprintf("coreapi-%03d-with-a-long-pod-name", i)
	}
	list, _ := json.Marshal(relays)
	for _, r := range []struct{ subject, payload string }{
		{invalidation.UserSubject("u1"), `{"reason": "` + strings.Repeat("x", 4000) + `", "at": 1234}`},
		{invalidation.SubjectHeartbeat, `{"relays": ` + string(list) + `, "interval_ms": 2000}`},
	} {
		if _, err := db.Pool.Exec(context.Background(), `INSERT INTO outbox (subject, payload) VALUES ($1, $2)`, r.subject, r.payload); err != nil {
			t.Fatal(err)
		}
	}
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u2"), Reason: invalidation.ReasonRoleRevoked})
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{})
	if _, err := r.PublishBatch(context.Background()); err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	if n := pendingCount(t, db.Pool); n != 0 {
		t.Fatalf("pending rows = %d, want 0", n)
	}
	var bodies []string
	for range 3 {
		select {
		case m := <-got:
			bodies = append(bodies, m.Subject+" "+string(m.Data))
		case <-time.After(wait):
			t.Fatalf("only %d messages arrived: %v", len(bodies), bodies)
		}
	}
	wantBodies := []string{
		invalidation.UserSubject("u1") + ` {"at":1234}`,
		invalidation.SubjectHeartbeat + ` {"at":`,
		invalidation.UserSubject("u2") + ` {"at":`,
	}
	for i, b := range bodies {
		if !strings.HasPrefix(b, wantBodies[i]) {
			t.Errorf("message %d = %.200s, want %s...", i, b, wantBodies[i])
		}
	}
	var hb invalidation.Event
	if err := json.Unmarshal([]byte(strings.TrimPrefix(bodies[1], invalidation.SubjectHeartbeat+" ")), &hb); err != nil ||
		hb.RelaysUnlisted != len(relays) || len(hb.Relays) != 0 || hb.IntervalMS != 2000 {
		t.Errorf("heartbeat = %s (%v), want its %d relays counted as unlisted and its interval", bodies[1], err, len(relays))
	}
}

// TestRelayPublishesPendingRowsWhenStopped: rows still pending when the
// relay is told to stop (the writes of the last requests before a
// shutdown) are published before Run returns, not left for another relay.
func TestRelayPublishesPendingRowsWhenStopped(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonUserLogoutGlobal})
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{Poll: time.Hour})
	// Stopped before it could act on the row: Run's loop publishes
	// nothing with an ended context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := pendingCount(t, db.Pool); n != 0 {
		t.Fatalf("%d rows left pending after Run returned, want 0", n)
	}
	eventually.Within(t, wait, func() error { n := c.distinct(); return want(n == 1, "%d distinct events arrived, want 1", n) })
}

// TestRelayStoppingWaitsForRowsAnotherTransactionHolds: the last flush
// waits for a row another transaction holds (the loop's own cancelled
// batch, whose connection releases it only once the server has seen it
// closed, or another relay's batch) instead of passing it over: released
// still pending, it is published before Run returns; published by the
// holder, it is not published again.
func TestRelayStoppingWaitsForRowsAnotherTransactionHolds(t *testing.T) {
	for _, holderPublishes := range []bool{false, true} {
		t.Run(fmt.Sprintf("holder_publishes=%v", holderPublishes), func(t *testing.T) {
			db := dbtest.New(t)
			ns := startNATS(t, -1, "")
			c := collect(t, ns.ClientURL())
			insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonUserLogoutGlobal})
			ctx := context.Background()
			holder, err := db.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = holder.Rollback(ctx) }()
			var id int64
			if err := holder.QueryRow(ctx, `SELECT id FROM outbox WHERE published_at IS NULL FOR UPDATE`).Scan(&id); err != nil {
				t.Fatal(err)
			}
			r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{Poll: time.Hour})
			stopped, cancel := context.WithCancel(ctx)
			cancel()
			done := make(chan error, 1)
			go func() { done <- r.Run(stopped) }()
			// The flush is waiting on the row's lock (a wait nothing else
			// shows): Run must not have returned before it is released.
			eventually.Within(t, wait, func() error {
				var waiting bool
				err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FROM outbox%')`).Scan(&waiting)
				if err != nil {
					return err
				}
				select {
				case err := <-done:
					t.Fatalf("Run returned (%v) while another transaction held a pending row", err)
				default:
				}
				return want(waiting, "the relay's flush is not waiting for the held row")
			})
			if holderPublishes {
				if _, err := holder.Exec(ctx, `UPDATE outbox SET published_at = now() WHERE id = $1`, id); err != nil {
					t.Fatal(err)
				}
				if err := holder.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			} else if err := holder.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			if n := pendingCount(t, db.Pool); n != 0 {
				t.Fatalf("%d rows left pending after Run returned, want 0", n)
			}
			if holderPublishes {
				// A flush round trip on the collector's side would not
				// order it after the relay's publications: the relay's
				// own count says what it published.
				if n := r.Stats().Published; n != 0 {
					t.Fatalf("the relay published %d rows another relay had published", n)
				}
				return
			}
			eventually.Within(t, wait, func() error {
				n := c.distinct()
				return want(n == 1, "%d distinct events arrived, want 1", n)
			})
		})
	}
}

// TestRelayStoppingWaitsForALockLongerThanAStep: the last flush waits
// for a held row up to FlushTimeout, not one database step of the loop
// (a heartbeat interval, at least a second): a batch cancelled with the
// loop, or another relay's batch waiting on NATS, may hold it longer.
func TestRelayStoppingWaitsForALockLongerThanAStep(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonUserLogoutGlobal})
	ctx := context.Background()
	holder, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx) }()
	if _, err := holder.Exec(ctx, `SELECT id FROM outbox WHERE published_at IS NULL FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	// A step of a second; FlushTimeout 5 s by default.
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{Poll: time.Hour, Heartbeat: time.Second})
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(stopped) }()
	// The lock goes after two steps.
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while another transaction held a pending row", err)
	case <-time.After(2 * time.Second):
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := pendingCount(t, db.Pool); n != 0 {
		t.Fatalf("%d rows left pending after Run returned, want 0", n)
	}
	eventually.Within(t, wait, func() error { n := c.distinct(); return want(n == 1, "%d distinct events arrived, want 1", n) })
}
