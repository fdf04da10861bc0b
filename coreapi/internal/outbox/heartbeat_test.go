package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit/tcplink"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/refused"
)

// TestBeatWritesOneHeartbeatPerInterval: a heartbeat row is written when
// there is none, or when the newest is older than the interval and
// published; never while the newest is young, or old but still pending
// (no relay could publish it: no pile-up for when one can).
func TestBeatWritesOneHeartbeatPerInterval(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{Heartbeat: time.Minute})
	ctx := context.Background()
	beat := func(want bool, when string) {
		t.Helper()
		wrote, err := r.Beat(ctx)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if wrote != want {
			t.Fatalf("%s: wrote %v, want %v", when, wrote, want)
		}
	}
	age := func(d time.Duration) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET created_at = created_at - make_interval(secs => $1) WHERE subject = $2`,
			d.Seconds(), invalidation.SubjectHeartbeat); err != nil {
			t.Fatal(err)
		}
	}
	beat(true, "no heartbeat yet")
	beat(false, "the newest pending and young")
	age(2 * time.Minute)
	beat(false, "the newest pending and old")
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	beat(true, "the newest published and old")
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	beat(false, "the newest published and young")
	var rows, pending int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox WHERE subject = $1`,
		invalidation.SubjectHeartbeat).Scan(&rows, &pending); err != nil {
		t.Fatal(err)
	}
	if rows != 2 || pending != 0 {
		t.Fatalf("%d heartbeat rows, %d pending; want 2, 0", rows, pending)
	}
	// Each row announces the interval, so that a proxy can tell whether
	// its timeout fits it.
	var intervals []int64
	if err := db.Pool.QueryRow(ctx, `SELECT ARRAY(SELECT (payload->>'interval_ms')::bigint FROM outbox WHERE subject = $1)`,
		invalidation.SubjectHeartbeat).Scan(&intervals); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(intervals, []int64{60000, 60000}) {
		t.Fatalf("the rows' interval_ms: %v, want 60000 each", intervals)
	}
}

// TestBeatDueAtTheNextTick: a relay looks every interval, and the row it
// wrote at one tick is due at the next even when that tick's statement
// starts a little sooner after the write than the interval (the write was
// held up by a drain, the database answered faster): it is due once three
// quarters of the interval have passed. Due only at the full interval, it
// was written at every other tick about half the time, one relay's
// heartbeats coming two intervals apart (12 in 4 s at 200 ms).
func TestBeatDueAtTheNextTick(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	r := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{Heartbeat: time.Minute})
	ctx := context.Background()
	setAge := func(d time.Duration) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET created_at = now() - make_interval(secs => $1) WHERE subject = $2`,
			d.Seconds(), invalidation.SubjectHeartbeat); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		age  time.Duration
		want bool
	}{{0, false}, {30 * time.Second, false}, {44 * time.Second, false}, {46 * time.Second, true}, {59 * time.Second, true}} {
		if _, err := db.Pool.Exec(ctx, `DELETE FROM outbox`); err != nil {
			t.Fatal(err)
		}
		if wrote, err := r.Beat(ctx); err != nil || !wrote {
			t.Fatalf("first heartbeat: %v, %v", wrote, err)
		}
		if err := r.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		setAge(c.age)
		wrote, err := r.Beat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if wrote != c.want {
			t.Fatalf("newest published %s ago, interval 1m: wrote %v, want %v", c.age, wrote, c.want)
		}
	}
}

// TestRelayPublishesHeartbeats: a running relay with a heartbeat interval
// writes heartbeat rows and publishes them on auth.outbox.heartbeat, with
// the row's creation time and its id; without one it writes none.
func TestRelayPublishesHeartbeats(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	got := make(chan *nats.Msg, 64)
	sub := connect(t, ns.ClientURL())
	if _, err := sub.Subscribe(invalidation.SubjectHeartbeat, func(m *nats.Msg) {
		select {
		case got <- m:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}

	var st steps
	startRelay(t, db.Pool, connect(t, ns.ClientURL()), RelayOptions{Poll: 20 * time.Millisecond, stepped: st.hook})
	// As long as three heartbeat intervals of the relay below: a relay
	// that beat by default would have written a row.
	st.await(t, false, 8)
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE subject = $1`, invalidation.SubjectHeartbeat).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d heartbeat rows (%v) from a relay without a heartbeat interval, want 0", n, err)
	}

	start := time.Now()
	startRelay(t, db.Pool, connect(t, ns.ClientURL()), RelayOptions{Poll: time.Hour, Heartbeat: 50 * time.Millisecond})
	for i := range 3 {
		select {
		case m := <-got:
			var ev invalidation.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil || ev.At < start.Add(-time.Second).UnixMilli() {
				t.Fatalf("heartbeat %d: body %s (%v), want the row's creation time", i, m.Data, err)
			}
			if m.Header.Get(MsgIDHeader) == "" {
				t.Fatalf("heartbeat %d without %s", i, MsgIDHeader)
			}
		case <-time.After(wait):
			t.Fatalf("%d heartbeats in %s, want 3", i, wait)
		}
	}
}

// poolThrough is a pool on db's database whose connections go through c,
// configured further by each of opts.
func poolThrough(t *testing.T, db *dbtest.DB, c *tcplink.Link, opts ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(c.Addr())
	p, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(p)
	cfg.ConnConfig.ConnectTimeout = time.Second
	cfg.ConnConfig.Fallbacks = nil
	for _, o := range opts {
		o(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// steps counts a relay's drains and heartbeat looks
// (RelayOptions.stepped).
type steps struct{ drains, beats atomic.Int64 }

func (s *steps) hook(beat bool) {
	if beat {
		s.beats.Add(1)
	} else {
		s.drains.Add(1)
	}
}

// await waits for n more heartbeat looks (beat) or drains than were made
// when it was called.
func (s *steps) await(t *testing.T, beat bool, n int64) {
	t.Helper()
	c, what := &s.drains, "drains"
	if beat {
		c, what = &s.beats, "heartbeat looks"
	}
	target := c.Load() + n
	eventually.Within(t, wait, func() error { return want(c.Load() >= target, "%d %s, want %d", c.Load(), what, target) })
}

// heartbeats collects what arrives on auth.outbox.heartbeat: the outbox's
// rows (with their id) and the relays' direct ones (without). settle
// returns once everything published through via before it was called has
// been counted: via's publications reached the server (a flush), the
// server's deliveries to the collector were read before its own flush's
// answer, and each one read was counted.
func heartbeats(t *testing.T, url string) (rows, direct func() int, settle func(via *nats.Conn)) {
	t.Helper()
	var mu sync.Mutex
	var nRows, nDirect, nSeen int
	nc := connect(t, url)
	sub, err := nc.Subscribe(invalidation.SubjectHeartbeat, func(m *nats.Msg) {
		var ev invalidation.Event
		_ = json.Unmarshal(m.Data, &ev)
		mu.Lock()
		defer mu.Unlock()
		nSeen++
		switch {
		case m.Header.Get(MsgIDHeader) != "":
			nRows++
		case ev.Reason == invalidation.ReasonDatabaseUnreachable && ev.At > 0:
			nDirect++
		default:
			t.Errorf("a heartbeat neither from the outbox nor a direct one: %s", m.Data)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	read := func(n *int) func() int {
		return func() int { mu.Lock(); defer mu.Unlock(); return *n }
	}
	settle = func(via *nats.Conn) {
		t.Helper()
		settled(t, via, nc, sub, read(&nSeen))
	}
	return read(&nRows), read(&nDirect), settle
}

// settled returns once everything published through via before it was
// called has been counted by sub's handler (seen): via's publications
// reached the server (a flush), the server's deliveries to sub's
// connection nc were read before its own flush's answer, and each one
// read was counted.
func settled(t *testing.T, via, nc *nats.Conn, sub *nats.Subscription, seen func() int) {
	t.Helper()
	for _, c := range []*nats.Conn{via, nc} {
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	eventually.Within(t, wait, func() error {
		delivered, err := sub.Delivered()
		if err != nil {
			return err
		}
		queued, _, err := sub.Pending()
		if err != nil {
			return err
		}
		n := seen()
		return want(int64(n) == delivered+int64(queued), "%d messages counted of %d read", n, delivered+int64(queued))
	})
}

// TestHeartbeatWhileTheDatabaseIsAway: a relay that had published every
// row it could see when the database went away keeps the proxies'
// heartbeat coming straight through NATS (nothing commits meanwhile), so
// a failover does not make every proxy distrust its caches; a relay that
// never reached the database (it was not keeping up) stays silent.
func TestHeartbeatWhileTheDatabaseIsAway(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	rows, direct, settle := heartbeats(t, ns.ClientURL())
	host := dbHost(db)

	down := tcplink.New(t, host)
	down.Cut()
	var st steps
	downNC := connect(t, ns.ClientURL())
	startRelay(t, poolThrough(t, db, down), downNC, RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 100 * time.Millisecond, stepped: st.hook})
	st.await(t, true, 5)
	settle(downNC)
	if r, d := rows(), direct(); r != 0 || d != 0 {
		t.Fatalf("a relay that never reached the database: %d outbox and %d direct heartbeats, want none", r, d)
	}

	c := tcplink.New(t, host)
	var upSteps steps
	r := startRelay(t, poolThrough(t, db, c), connect(t, ns.ClientURL()), RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 200 * time.Millisecond, stepped: upSteps.hook})
	eventually.Within(t, wait, func() error { return want(rows() >= 1, "no heartbeat through the outbox") })
	// The relay is clear once a drain that began after its LISTEN has
	// succeeded (the second to end after it is seen listening): what was
	// committed before it is published, and what it heard of since is
	// published from the notifications once the database is away.
	heardIs(t, r, "begun to listen", func(hd *heard) bool { return hd.listen })
	upSteps.await(t, false, 2)
	c.Cut()
	before := direct()
	eventually.Within(t, wait, func() error {
		return want(direct() >= before+3, "%d direct heartbeats since the database went away, want 3", direct()-before)
	})
}

// TestHeartbeatWhileTheDatabaseHangs: a database that stops answering
// without closing anything (a partition, a server stopped with SIGSTOP)
// held the relay's drain on its pooled connection for ever, the
// relay's loop with it: no heartbeat went out, neither through the
// outbox nor straight to NATS (nor the relay's own beat), and every
// proxy refused its warm requests once MAX_STALENESS was over, as if
// the relay were not keeping up. Each database step of the loop is
// bounded, so the relay takes the silence for an unreachable database
// and publishes the heartbeat straight to NATS, as for one that
// refuses its connections, soon enough for the proxies' timeout; once
// the database answers, heartbeats go through the outbox again.
func TestHeartbeatWhileTheDatabaseHangs(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	rows, direct, _ := heartbeats(t, ns.ClientURL())
	w := watchRelays(t, ns.ClientURL())
	c := tcplink.New(t, dbHost(db))
	var st steps
	const interval = 200 * time.Millisecond
	r := startRelay(t, poolThrough(t, db, c), connect(t, ns.ClientURL()),
		RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: interval, ID: "hangs", stepped: st.hook})
	eventually.Within(t, wait, func() error { return want(rows() >= 1, "no heartbeat through the outbox") })
	heardIs(t, r, "begun to listen", func(hd *heard) bool { return hd.listen })
	st.await(t, false, 2)
	c.Freeze()
	// Closed before the relay stops: its connections, held by nothing
	// but the freeze, then end at once.
	t.Cleanup(c.Cut)
	frozen := time.Now()
	before, beats := direct(), w.heard("hangs")
	// A step is bounded by an interval, at least a second: the drain the
	// freeze caught, then a heartbeat look, fail within a few seconds,
	// far less than the proxies' timeout of at least 3.5 intervals
	// allows at a default interval; 10 s here leaves room for a busy
	// machine.
	eventually.Within(t, 10*time.Second, func() error {
		return want(direct() >= before+3, "%d direct heartbeats in %s since the database stopped answering, want 3",
			direct()-before, time.Since(frozen).Round(time.Millisecond))
	})
	if n := w.heard("hangs"); n <= beats {
		t.Fatalf("no beat of the relay's own since the database stopped answering")
	}

	// The database answers again: a heartbeat look reaches it, and the
	// drains, held back meanwhile, publish its rows again.
	c.Thaw()
	n := rows()
	eventually.Within(t, wait, func() error {
		return want(rows() >= n+2, "%d heartbeats through the outbox since the database answers again, want 2", rows()-n)
	})
}

// TestNoDirectHeartbeatWhileALockHoldsTheRelay: a database that answers
// but keeps a relay's statement waiting (a lock another session holds, a
// slow statement) is not unreachable: the server ends the statement
// (lock_timeout, statement_timeout) before the relay's step bound, and
// the relay retries as after any other failure. It publishes no
// heartbeat straight to NATS (the proxies must hear its silence), and
// its outbox heartbeats resume as soon as the lock goes. The step bound
// alone took the wait for a database gone and sent direct heartbeats.
func TestNoDirectHeartbeatWhileALockHoldsTheRelay(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	rows, direct, settle := heartbeats(t, ns.ClientURL())
	var st steps
	nc := connect(t, ns.ClientURL())
	startRelay(t, db.Pool, nc, RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: time.Second, ID: "locked", stepped: st.hook})
	eventually.Within(t, wait, func() error { return want(rows() >= 1, "no heartbeat through the outbox") })
	ctx := context.Background()
	eventually.Within(t, wait, func() error {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox_relays WHERE id = 'locked'`).Scan(&n); err != nil {
			return err
		}
		return want(n == 1, "the relay is not registered")
	})
	st.await(t, false, 2)
	holder, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx) }()
	if _, err := holder.Exec(ctx, `SELECT 1 FROM outbox_relays WHERE id = 'locked' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	locked := time.Now()
	// Four looks meet the lock (more than the step bound of a second
	// each): a relay that took them for an unreachable database sent a
	// direct heartbeat at each from the second on.
	st.await(t, true, 4)
	settle(nc)
	if d := direct(); d != 0 {
		t.Fatalf("%d direct heartbeats in %s while a lock held the relay's statements, want none",
			d, time.Since(locked).Round(time.Millisecond))
	}
	// The drains go on meanwhile: a row committed now is published.
	c := collect(t, ns.ClientURL())
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonUserLogoutGlobal})
	eventually.Within(t, wait, func() error { n := c.distinct(); return want(n == 1, "%d events arrived, want 1", n) })

	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	released, n := time.Now(), rows()
	// The next look or the one after writes a heartbeat row, which the
	// next drain publishes.
	eventually.Within(t, 3*time.Second, func() error {
		return want(rows() > n, "no heartbeat through the outbox %s after the lock went", time.Since(released).Round(time.Millisecond))
	})
	settle(nc)
	if d := direct(); d != 0 {
		t.Fatalf("%d direct heartbeats, want none", d)
	}
}

// staysSilent waits for ten heartbeat looks of h's relay after the
// database went away, and for what it published by then to be counted,
// and wants neither an event nor a direct heartbeat from it: rows it does
// not know wait unpublished, so it must stay silent.
func staysSilent(t *testing.T, h *held, events *collector, waiting string) {
	t.Helper()
	h.steps.await(t, true, 10)
	events.settle(t, h.nc)
	h.settle(h.nc)
	if n := events.distinct(); n != 0 {
		t.Fatalf("%d events published: the relay was not held back, or published rows it was not told of", n)
	}
	if d := h.direct(); d != 0 {
		t.Fatalf("%d direct heartbeats while %s waits unpublished, want none", d, waiting)
	}
}

// dbHost is the host:port of db's server.
func dbHost(db *dbtest.DB) string {
	host := strings.TrimPrefix(db.URL, "postgres://")
	host = host[strings.Index(host, "@")+1:]
	return host[:strings.IndexAny(host, "/?")]
}

// held is a relay started by heldRelay.
type held struct {
	r     *Relay
	steps *steps
	nc    *nats.Conn // the relay's
	// c is the link the pool's one connection (and the relay's LISTEN
	// connection) goes through.
	c    *tcplink.Link
	pool *pgxpool.Pool
	// direct counts the heartbeats seen straight from the relay; settle
	// returns once those published through via were counted.
	direct func() int
	settle func(via *nats.Conn)
}

// heldRelay starts a relay on db, whose one connection goes through a
// link, publishing to ns, and waits for its first outbox heartbeats. The
// test then holds the pool's one connection so that the relay's drains
// wait for it, commits a row (and waits for the relay to hear its
// notification), and cuts the link: the database went away before the
// relay could publish the row.
func heldRelay(t *testing.T, db *dbtest.DB, ns *server.Server) *held {
	t.Helper()
	rows, direct, settle := heartbeats(t, ns.ClientURL())
	h := &held{steps: &steps{}, nc: connect(t, ns.ClientURL()), c: tcplink.New(t, dbHost(db)), direct: direct, settle: settle}
	h.pool = poolThrough(t, db, h.c, func(cfg *pgxpool.Config) { cfg.MaxConns = 1 })
	h.r = startRelay(t, h.pool, h.nc, RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 100 * time.Millisecond, stepped: h.steps.hook})
	eventually.Within(t, wait, func() error { return want(rows() >= 2, "no heartbeat through the outbox") })
	return h
}

// heardIs waits until the relay's notes say what ok wants of them.
func (h *held) heardIs(t *testing.T, what string, ok func(*heard) bool) {
	t.Helper()
	heardIs(t, h.r, what, ok)
}

// heardIs waits until r's notes say what ok wants of them.
func heardIs(t *testing.T, r *Relay, what string, ok func(*heard) bool) {
	t.Helper()
	eventually.Within(t, wait, func() error {
		r.heard.mu.Lock()
		defer r.heard.mu.Unlock()
		return want(ok(&r.heard), "the relay has not %s", what)
	})
}

// heardRow waits until the relay heard the notification announcing row
// id, and has not drained it since.
func (h *held) heardRow(t *testing.T, id int64) {
	t.Helper()
	h.heardIs(t, fmt.Sprintf("heard row %d announced", id), func(hd *heard) bool {
		for _, n := range hd.notes {
			for _, p := range n.rows {
				if p.ID == id {
					return true
				}
			}
		}
		return false
	})
}

// newestID is the id of the newest outbox row.
func newestID(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var id int64
	if err := pool.QueryRow(context.Background(), `SELECT max(id) FROM outbox`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestANotifiedRowGoesOutWhileTheDatabaseIsAway: a row committed after
// the relay's last drain, whose notification the relay heard but which it
// could not publish before the database went away (its statements waited
// for a connection), is a revocation the proxies have not applied. The
// notification announced the row, so the relay publishes it from there,
// under its row id, and only then the heartbeat straight to NATS: a
// failover on a database written to all the time neither holds the
// revocation back until it is over nor silences the heartbeat (which
// would have the proxies refuse what they must refetch).
func TestANotifiedRowGoesOutWhileTheDatabaseIsAway(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	events := collect(t, ns.ClientURL())
	h := heldRelay(t, db, ns)

	held, err := h.pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	subject := "auth.invalidate.user.00000000-0000-0000-0000-000000000001"
	insert(t, db.Pool, Row{Subject: subject, Reason: invalidation.ReasonRoleRevoked})
	var id int64
	if err := db.Pool.QueryRow(context.Background(), `SELECT id FROM outbox WHERE subject = $1`, subject).Scan(&id); err != nil {
		t.Fatal(err)
	}
	h.heardRow(t, id)
	events.settle(t, h.nc)
	if n := events.distinct(); n != 0 {
		t.Fatalf("%d events published before the database went away: the relay was not held back", n)
	}
	h.c.Cut()
	held.Release()

	eventually.Within(t, wait, func() error {
		return want(events.distinct() == 1, "%d events published, want the revocation", events.distinct())
	})
	events.mu.Lock()
	m := events.msgs[0]
	events.mu.Unlock()
	var ev invalidation.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if m.Subject != subject || m.Header.Get(MsgIDHeader) != strconv.FormatInt(id, 10) ||
		ev.Reason != invalidation.ReasonRoleRevoked || ev.At == 0 {
		t.Fatalf("published %s %q %s, want %s, id %d, reason %s and a time", m.Subject, m.Header.Get(MsgIDHeader), m.Data, subject, id, invalidation.ReasonRoleRevoked)
	}
	eventually.Within(t, wait, func() error {
		return want(h.direct() >= 2, "%d direct heartbeats since the revocation went out, want 2", h.direct())
	})
	if n := pendingCount(t, db.Pool); n == 0 {
		t.Fatal("the row was marked published without the database")
	}
}

// TestNoDirectHeartbeatOverAnUnannouncedRow: rows whose notification
// could not carry them (too many for its 8000 bytes; likewise a trigger
// from before migration 00016, or a LISTEN begun again) are revocations
// the relay cannot publish without the database: it publishes no
// heartbeat straight to NATS, so the proxies' silence bounds how long
// they trust their caches.
func TestNoDirectHeartbeatOverAnUnannouncedRow(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	events := collect(t, ns.ClientURL())
	h := heldRelay(t, db, ns)

	held, err := h.pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	many := make([]Row, 80)
	for i := range many {
		many[i] = Row{Subject: fmt.Sprintf("auth.invalidate.user.00000000-0000-0000-0000-%012d", i), Reason: invalidation.ReasonRoleRevoked}
	}
	before := h.r.notes.Load()
	insert(t, db.Pool, many...)
	// The notification, without its rows: they do not fit.
	h.heardIs(t, "heard a notification without rows", func(hd *heard) bool { return hd.dark > before })
	h.c.Cut()
	held.Release()

	staysSilent(t, h, events, "revocations the relay was not told of")
	if n := pendingCount(t, db.Pool); n != len(many) {
		t.Fatalf("%d rows pending, want %d", n, len(many))
	}
}

// TestNoDirectHeartbeatWhenTheServerRefusesTheRelay: a server that
// answers the relay's connections with a refusal (its role may no longer
// log in; likewise a password refused, too many connections, a database
// that does not exist) is up, and other replicas may commit through it:
// the relay publishes no heartbeat straight to NATS.
func TestNoDirectHeartbeatWhenTheServerRefusesTheRelay(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	rows, direct, settle := heartbeats(t, ns.ClientURL())
	ctx := context.Background()
	role := "relay_" + db.Name
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON outbox, outbox_relays TO ` + role,
		`GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ` + role,
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = db.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
		_, _ = db.Pool.Exec(ctx, `DROP OWNED BY `+role)
		_, _ = db.Pool.Exec(ctx, `DROP ROLE `+role)
	})

	c := tcplink.New(t, dbHost(db))
	pool := poolThrough(t, db, c, func(cfg *pgxpool.Config) { cfg.ConnConfig.User = role })
	var st steps
	relayNC := connect(t, ns.ClientURL())
	startRelay(t, pool, relayNC, RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 100 * time.Millisecond, stepped: st.hook})
	eventually.Within(t, wait, func() error { return want(rows() >= 2, "no heartbeat through the outbox") })

	for _, q := range []string{
		`ALTER ROLE ` + role + ` NOLOGIN`,
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '` + role + `'`,
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Two looks for the relay to find its connections ended, then ten
	// while the server refuses new ones.
	st.await(t, true, 2)
	settle(relayNC)
	before := direct()
	st.await(t, true, 10)
	settle(relayNC)
	if d := direct() - before; d != 0 {
		t.Fatalf("%d direct heartbeats in ten heartbeat looks while the server refuses the relay's connections, want none", d)
	}
}

// TestDBWatch: the relay takes the database's unreachability for an
// outage under a drained outbox (and publishes heartbeats straight to
// NATS) only after a drain that succeeded, with every commit notified
// since it began published from its notification (cover), and only while
// every failure since is the connection's (or a server turned read-only):
// a failure on NATS's side, a statement refused, or a notification heard
// in between whose rows cover cannot publish leaves it silent, and a
// success clears the outage.
func TestDBWatch(t *testing.T) {
	_, connErr := pgx.Connect(context.Background(), "postgres://postgres@"+refused.Addr(t)+"/postgres?connect_timeout=2")
	if connErr == nil || !unreachable(connErr) {
		t.Fatalf("a refused dial: %v, want an unreachable database", connErr)
	}
	closed := fmt.Errorf("claim outbox rows: %w", pgconn.ErrConnClosed)
	readOnly := fmt.Errorf("claim outbox rows: %w", &pgconn.PgError{Code: "25006", Message: "cannot execute SELECT FOR UPDATE in a read-only transaction"})
	type step struct {
		err          error
		began, ended int64
	}
	for _, tc := range []struct {
		name  string
		steps []step
		// refused: the ranges cover cannot publish (a row it does not
		// know, the relay not listening, NATS refusing); covered: the
		// ranges it was asked for.
		refused string
		lost    bool
		covered string
	}{
		{name: "drained, then the connection broke", steps: []step{{nil, 1, 1}, {closed, 1, 1}}, lost: true, covered: "(1,1]"},
		{name: "drained, then the dial refused", steps: []step{{nil, 1, 1}, {connErr, 1, 1}, {connErr, 1, 1}}, lost: true, covered: "(1,1] (1,1]"},
		{name: "drained, then the server read-only", steps: []step{{nil, 1, 1}, {readOnly, 1, 1}}, lost: true, covered: "(1,1]"},
		{name: "drained, then the connection broke, with nothing heard since but what cover cannot publish (a row another relay held, the relay not listening)",
			steps: []step{{nil, 1, 1}, {closed, 1, 1}, {connErr, 1, 1}}, refused: "(1,1]", covered: "(1,1]"},
		{name: "never drained", steps: []step{{connErr, 0, 0}}},
		{name: "a commit notified since the drain began", steps: []step{{nil, 1, 1}, {closed, 1, 2}}, refused: "(1,2]", covered: "(1,2]"},
		{name: "a commit notified since the drain began, its rows published from the notification",
			steps: []step{{nil, 1, 1}, {closed, 1, 2}, {connErr, 2, 2}}, lost: true, covered: "(1,2] (2,2]"},
		{name: "a commit notified during the drain that succeeded", steps: []step{{nil, 1, 2}, {closed, 2, 2}}, refused: "(1,2]", covered: "(1,2]"},
		{name: "a commit notified during the drain that succeeded, its rows published",
			steps: []step{{nil, 1, 2}, {closed, 2, 2}}, lost: true, covered: "(1,2]"},
		{name: "a commit notified during the outage, its rows published",
			steps: []step{{nil, 1, 1}, {closed, 1, 1}, {connErr, 3, 3}}, lost: true, covered: "(1,1] (1,3]"},
		{name: "a commit notified during the outage", steps: []step{{nil, 1, 1}, {closed, 1, 1}, {connErr, 3, 3}, {connErr, 3, 3}},
			refused: "(1,3]", covered: "(1,1] (1,3]"},
		{name: "NATS down before the database went", steps: []step{{nil, 1, 1}, {ErrNATSDown, 1, 1}, {connErr, 1, 2}}},
		// A broken NATS socket reads as a network error too: what counts is
		// which side it came from.
		{name: "a NATS write failed before the database went", steps: []step{{nil, 1, 1},
			{fmt.Errorf("%w: flush nats: %w", errPublish, &net.OpError{Op: "write", Net: "tcp", Err: errors.New("broken pipe")}), 1, 1}, {connErr, 1, 1}}},
		{name: "a statement refused", steps: []step{{nil, 1, 1}, {&pgconn.PgError{Code: "42501"}, 1, 1}}},
		{name: "a statement refused during the outage", steps: []step{{nil, 1, 1}, {connErr, 1, 1}, {&pgconn.PgError{Code: "55P03"}, 1, 1}}, covered: "(1,1]"},
		{name: "the database back", steps: []step{{nil, 1, 1}, {connErr, 1, 1}, {nil, 1, 1}}, covered: "(1,1]"},
	} {
		var covered []string
		w := dbWatch{cover: func(from, to int64) bool {
			r := fmt.Sprintf("(%d,%d]", from, to)
			covered = append(covered, r)
			return !slices.Contains(strings.Fields(tc.refused), r)
		}}
		for _, s := range tc.steps {
			w.drained(s.err, s.began, s.ended)
		}
		if w.lost != tc.lost {
			t.Errorf("%s: lost = %v, want %v", tc.name, w.lost, tc.lost)
		}
		if got := strings.Join(covered, " "); got != tc.covered {
			t.Errorf("%s: cover asked for %q, want %q", tc.name, got, tc.covered)
		}
	}
}

// TestHeard: the relay keeps the rows its notifications announced until a
// drain that began after them succeeds, and knows when it does not have
// them all: a notification without rows (a LISTEN begun, rows too many
// for one notification, an older trigger), a payload it cannot read, or
// more rows than it keeps.
func TestHeard(t *testing.T) {
	r := &Relay{}
	note := func(ids ...int64) string {
		var b strings.Builder
		b.WriteString("[")
		for i, id := range ids {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"id": %d, "subject": "auth.invalidate.user.00000000-0000-0000-0000-000000000001", "payload": {"at": 5, "reason": "role.revoked"}, "created_at": "2026-12-05T01:02:03.456789+00:00"}`, id)
		}
		b.WriteString("]")
		return b.String()
	}
	ids := func(rows []pending) []int64 {
		var out []int64
		for _, p := range rows {
			out = append(out, p.ID)
		}
		return out
	}
	r.heard.listening(&r.notes) // 1: LISTEN
	r.hear(note(7))             // 2
	r.hear(note(8, 9))          // 3
	if _, ok := r.heard.since(0, 3); ok {
		t.Fatal("the rows committed before the LISTEN are known")
	}
	rows, ok := r.heard.since(1, 3)
	if !ok || fmt.Sprint(ids(rows)) != "[7 8 9]" {
		t.Fatalf("since(1, 3) = %v, %v; want [7 8 9], true", ids(rows), ok)
	}
	if p := rows[1]; p.Subject != "auth.invalidate.user.00000000-0000-0000-0000-000000000001" ||
		string(p.Payload) != `{"at": 5, "reason": "role.revoked"}` || p.CreatedAt.UnixMicro() != time.Date(2026, 12, 5, 1, 2, 3, 456789000, time.UTC).UnixMicro() {
		t.Fatalf("row 8 heard as %+v", p)
	}
	if rows, ok := r.heard.since(2, 2); !ok || len(rows) != 0 {
		t.Fatalf("since(2, 2) = %v, %v; want none, true", ids(rows), ok)
	}
	r.heard.forget(2, nil)
	if rows, ok := r.heard.since(1, 3); !ok || fmt.Sprint(ids(rows)) != "[8 9]" {
		t.Fatalf("after forget(2), since(1, 3) = %v, %v; want [8 9], true", ids(rows), ok)
	}
	r.hear("not json") // 4
	if _, ok := r.heard.since(3, 4); ok {
		t.Fatal("a payload the relay cannot read is taken as known rows")
	}
	r.hear(note(10)) // 5
	if rows, ok := r.heard.since(4, 5); !ok || fmt.Sprint(ids(rows)) != "[10]" {
		t.Fatalf("since(4, 5) = %v, %v; want [10], true", ids(rows), ok)
	}

	r = &Relay{}
	big := make([]int64, maxHeard/2)
	r.hear(note(big...)) // 1
	r.hear(note(big...)) // 2
	if _, ok := r.heard.since(0, 2); !ok {
		t.Fatal("as many rows as the relay keeps are not all known")
	}
	r.hear(note(1)) // 3: the first note goes
	if _, ok := r.heard.since(0, 3); ok {
		t.Fatal("more rows than the relay keeps are all known")
	}
	if rows, ok := r.heard.since(1, 3); !ok || len(rows) != maxHeard/2+1 {
		t.Fatalf("since(1, 3): %d rows, %v; want %d, true", len(rows), ok, maxHeard/2+1)
	}
}

// TestARowAnotherRelayHoldsGoesOutWhileTheDatabaseIsAway: another relay
// claimed a notified row (FOR UPDATE SKIP LOCKED) and has not published
// it yet (its NATS node went away with the database's zone, say). This
// relay's drain skips the row and succeeds; the database then goes away
// before the other relay's batch ends. The row is a revocation nobody
// has published: the relay that heard it publishes it from its
// notification before any heartbeat straight to NATS, as it does a row no
// drain saw.
func TestARowAnotherRelayHoldsGoesOutWhileTheDatabaseIsAway(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	events := collect(t, ns.ClientURL())
	h := heldRelay(t, db, ns)
	ctx := context.Background()

	held, err := h.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subject := "auth.invalidate.user.00000000-0000-0000-0000-000000000001"
	insert(t, db.Pool, Row{Subject: subject, Reason: invalidation.ReasonRoleRevoked})
	// The other relay's batch: the row claimed, its publication pending.
	other, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Rollback(context.Background()) })
	var id int64
	if err := other.QueryRow(ctx, `SELECT id FROM outbox WHERE subject = $1 FOR UPDATE`, subject).Scan(&id); err != nil {
		t.Fatal(err)
	}
	held.Release()
	// The relay drains, past the claimed row, and keeps it as one
	// another relay holds.
	h.heardIs(t, fmt.Sprintf("found row %d held by another relay", id), func(hd *heard) bool {
		return slices.ContainsFunc(hd.held, func(p pending) bool { return p.ID == id })
	})
	events.settle(t, h.nc)
	if n := events.distinct(); n != 0 {
		t.Fatalf("%d events published: the row was not held by the other relay", n)
	}
	h.c.Cut()

	eventually.Within(t, wait, func() error {
		return want(h.direct() >= 2, "%d direct heartbeats since the database went away, want 2", h.direct())
	})
	if n := events.distinct(); n != 1 {
		t.Fatalf("%d events published, want the revocation the other relay held before heartbeats straight to NATS", n)
	}
	events.mu.Lock()
	m := events.msgs[0]
	events.mu.Unlock()
	if m.Subject != subject || m.Header.Get(MsgIDHeader) != strconv.FormatInt(id, 10) {
		t.Fatalf("published %s %q, want %s, id %d", m.Subject, m.Header.Get(MsgIDHeader), subject, id)
	}
}

// TestNoDirectHeartbeatWhileNotListening: the relay's LISTEN connection
// is lost (ended by the server, here) and cannot be opened again, while
// the pool's connection still drains. A commit meanwhile is not heard:
// when the database then goes away before the relay drained it, the relay
// cannot know of it, and publishes no heartbeat straight to NATS.
func TestNoDirectHeartbeatWhileNotListening(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	events := collect(t, ns.ClientURL())
	h := heldRelay(t, db, ns)
	ctx := context.Background()

	h.c.RefuseNew()
	var ended int
	if err := db.Pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN `+Channel+`'`).Scan(&ended); err != nil || ended != 1 {
		t.Fatalf("ended %d LISTEN connections (%v), want 1", ended, err)
	}
	h.heardIs(t, "drained since it stopped listening", func(hd *heard) bool { return !hd.listen && hd.deafDrained })

	held, err := h.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	insert(t, db.Pool, Row{Subject: "auth.invalidate.user.00000000-0000-0000-0000-000000000001", Reason: invalidation.ReasonRoleRevoked})
	h.c.Cut()
	held.Release()

	staysSilent(t, h, events, "a revocation the relay could not hear")
}

// TestALookThatWritesNoHeartbeatAnnouncesNothing: every relay looks every
// interval whether a heartbeat row is due, and all but about one a
// interval find it is not: their statement inserts no row. The outbox's
// statement trigger fired for it all the same, with an empty
// notification, which every relay must take for rows it does not know:
// one heard after the last drain began silenced the relay through a
// database outage during which nothing had been committed. A statement
// that inserts nothing announces nothing.
func TestALookThatWritesNoHeartbeatAnnouncesNothing(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	h := heldRelay(t, db, ns)
	ctx := context.Background()

	held, err := h.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Another replica's look: its interval is long, the newest row young.
	other := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), RelayOptions{Heartbeat: time.Hour})
	if wrote, err := other.Beat(ctx); err != nil || wrote {
		t.Fatalf("the other relay's look: wrote %v, %v; want nothing written", wrote, err)
	}
	// A row committed after the look: notifications come in the order
	// of their commits, so a notification of the look would be heard
	// before this row's. The relay publishes the row from its
	// notification when the database goes away.
	insert(t, db.Pool, Row{Subject: "auth.invalidate.user.00000000-0000-0000-0000-000000000001", Reason: invalidation.ReasonRoleRevoked})
	h.heardRow(t, newestID(t, db.Pool))
	h.c.Cut()
	held.Release()

	eventually.Within(t, wait, func() error {
		return want(h.direct() >= 2, "%d direct heartbeats since the database went away with nothing committed but a row announced, want 2", h.direct())
	})
}
