package outbox

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/natstest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit/tcplink"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// TestRelayLeavesASilentConnection: the relay's link to NATS dies without
// closing. The client still reads as connected (it would notice only
// after minutes of unanswered pings), so every batch failed its flush and
// waited for the next, and invalidations stayed pending all that time
// while proxies on healthy links trusted their caches. A flush the server
// does not answer makes the relay reconnect at once.
func TestRelayLeavesASilentConnection(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())
	l := tcplink.New(t, ns.Addr().String())
	nc := connect(t, "nats://"+l.Addr())
	startRelay(t, db.Pool, nc, RelayOptions{Poll: 100 * time.Millisecond, FlushTimeout: 300 * time.Millisecond})

	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked})
	eventually.Within(t, wait, func() error { n := c.distinct(); return want(n == 1, "%d distinct events arrived, want 1", n) })

	l.Silence()
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u2"), Reason: invalidation.ReasonRoleRevoked})
	eventually.Within(t, 5*time.Second, func() error {
		n := c.distinct()
		return want(n == 2, "%d distinct events arrived, want 2: the one committed after the link went silent is still pending", n)
	})
	if n := nc.Stats().Reconnects; n == 0 {
		t.Fatal("the events arrived without a reconnection")
	}
}

// TestRelayKeepsASlowConnection: a server slow to answer (overloaded, a
// long pause) is not a dead link. A batch it does not confirm within
// FlushTimeout fails and stays pending, but the relay keeps its
// connection when the server answers a second ping: forcing a
// reconnection there has every relay of the fleet reconnect at once to the
// server that is already slow. The batch goes out on the same connection.
func TestRelayKeepsASlowConnection(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())
	l := tcplink.New(t, ns.Addr().String())
	nc := connect(t, "nats://"+l.Addr())
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked})
	// Long enough that a loaded machine answers the second ping in time.
	r := NewRelay(db.Pool, nc, quiet(), RelayOptions{FlushTimeout: 2 * time.Second})
	r.confirmHook = l.Hold // the batch and the flush's ping wait in the link
	r.probeHook = l.Release
	if n, err := r.PublishBatch(context.Background()); err == nil {
		t.Errorf("PublishBatch = %d rows, nil error; want an error: NATS did not confirm it within FlushTimeout", n)
	}
	if n := pendingCount(t, db.Pool); n != 1 {
		t.Fatalf("%d rows pending, want 1", n)
	}

	r.confirmHook, r.probeHook = nil, nil
	eventually.Within(t, wait, func() error { return want(nc.IsConnected(), "the relay's connection is %v", nc.Status()) })
	if n, err := r.PublishBatch(context.Background()); err != nil || n != 1 {
		t.Fatalf("PublishBatch after the server answered = %d, %v; want 1, nil", n, err)
	}
	if n := nc.Stats().Reconnects; n != 0 {
		t.Fatalf("the relay reconnected %d times to a server that was slow, not gone", n)
	}
	eventually.Within(t, wait, func() error { n := c.distinct(); return want(n == 1, "%d distinct events arrived, want 1", n) })
}

// TestPublishRefusedByPermissionsStaysPending: the NATS server's subject
// permissions refuse one of the relay's subjects (here auth.keys.changed,
// a deployment that allowed coreapi auth.invalidate.> only). The server
// drops the message and says so apart, and the flush that follows
// succeeds: the row was marked published, the event lost without a
// trace. It must stay pending, and the batch count as a failure.
func TestPublishRefusedByPermissionsStaysPending(t *testing.T) {
	db := dbtest.New(t)
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "core", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{invalidation.SubjectWildcard}},
		}}}}
	ns := natstest.StartWith(t, opts)
	nc := connect(t, "nats://core:pw@"+ns.Addr().String())

	insert(t, db.Pool, Row{Subject: invalidation.SubjectKeysChanged, Reason: invalidation.ReasonKeysChanged})
	r := NewRelay(db.Pool, nc, quiet(), RelayOptions{})
	if _, err := r.PublishBatch(context.Background()); err == nil {
		t.Error("PublishBatch succeeded with its publish refused")
	}
	if got := pendingCount(t, db.Pool); got != 1 {
		t.Fatalf("pending rows = %d, want 1: the refused event was marked published", got)
	}
	// A refusal is the answer of a working connection: it is kept.
	if n := nc.Stats().Reconnects; n != 0 || !nc.IsConnected() {
		t.Fatalf("the refusal made the relay reconnect (%d reconnections, connection %v)", n, nc.Status())
	}
	// An allowed subject still goes out (the refusal is not sticky).
	if _, err := db.Pool.Exec(context.Background(), `DELETE FROM outbox`); err != nil {
		t.Fatal(err)
	}
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked})
	if _, err := r.PublishBatch(context.Background()); err != nil {
		t.Fatalf("PublishBatch of an allowed subject: %v", err)
	}
	if got := pendingCount(t, db.Pool); got != 0 {
		t.Fatalf("pending rows = %d, want 0", got)
	}
}

// refusingNATS runs a server whose user core may publish the subjects under
// auth.invalidate.> only (auth.keys.changed refused) and whose user watch
// may do anything, and returns it with a function that grants core the
// refused subject by reloading the server's configuration (the
// connections stay open).
func refusingNATS(t *testing.T) (ns *server.Server, grant func()) {
	t.Helper()
	opts := func(allow ...string) *server.Options {
		return &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			Users: []*server.User{
				{Username: "core", Password: "pw", Permissions: &server.Permissions{
					Publish: &server.SubjectPermission{Allow: allow},
				}},
				{Username: "watch", Password: "pw"},
			}}
	}
	ns = natstest.StartWith(t, opts(invalidation.SubjectWildcard))
	return ns, func() {
		t.Helper()
		if err := ns.ReloadOptions(opts(invalidation.SubjectWildcard, invalidation.SubjectKeysChanged)); err != nil {
			t.Fatalf("reload the NATS server's permissions: %v", err)
		}
	}
}

// TestARefusedPublicationBacksOff: the NATS server's permissions refuse one
// subject the relay publishes (auth.keys.changed). The batch fails and
// stays pending, and the relay tried it again at every commit's
// notification and every poll: a denied subject kept NATS and PostgreSQL
// busy for as long as it lasted, and the batch's other rows, which the
// server accepts, went out again at each attempt. After a batch NATS did
// not take, the relay waits before the next (Backoff, 1 s by default, then
// twice as long at each failure, up to MaxBackoff, 30 s), whatever commits
// and polls come meanwhile; once the subject is granted, the rows go out
// at the next attempt, without a restart.
func TestARefusedPublicationBacksOff(t *testing.T) {
	if o := NewRelay(nil, nil, quiet(), RelayOptions{}).o; o.Backoff != time.Second || o.MaxBackoff != 30*time.Second {
		t.Fatalf("default waits %v up to %v, want 1s up to 30s", o.Backoff, o.MaxBackoff)
	}
	db := dbtest.New(t)
	ns, grant := refusingNATS(t)
	// The attempts, seen as the arrivals of the batch's row the server
	// accepts.
	var mu sync.Mutex
	var attempts []time.Time
	var keys int
	watch := connect(t, "nats://watch:pw@"+ns.Addr().String())
	for _, subject := range []string{invalidation.SubjectWildcard, invalidation.SubjectKeysChanged} {
		if _, err := watch.Subscribe(subject, func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			switch m.Subject {
			case invalidation.SubjectKeysChanged:
				keys++
			case invalidation.UserSubject("u1"):
				attempts = append(attempts, time.Now())
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	seen := func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(attempts)
	}

	// A poll every 20 ms: without a backoff, an attempt every 20 ms.
	const backoff = 100 * time.Millisecond
	startRelay(t, db.Pool, connect(t, "nats://core:pw@"+ns.Addr().String()), RelayOptions{Poll: 20 * time.Millisecond, Backoff: backoff})
	insert(t, db.Pool,
		Row{Subject: invalidation.SubjectKeysChanged, Reason: invalidation.ReasonKeysChanged},
		Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked})
	eventually.Within(t, wait, func() error { return want(len(seen()) > 0, "no attempt to publish the batch") })
	// A commit during the first wait: its notification does not end it.
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u2"), Reason: invalidation.ReasonRoleRevoked})
	// Attempts one wait, then two, after the first; the next is due four
	// waits after that.
	eventually.Within(t, wait, func() error { n := len(seen()); return want(n >= 3, "%d attempts, want 3", n) })
	got := seen()
	for i := 1; i < len(got); i++ {
		least := time.Duration(1<<(i-1)) * backoff * 9 / 10
		if gap := got[i].Sub(got[i-1]); gap < least {
			t.Errorf("attempt %d came %v after the one before, want at least %v", i+1, gap.Round(time.Millisecond), least)
		}
	}
	if n := pendingCount(t, db.Pool); n != 3 {
		t.Fatalf("%d rows pending with auth.keys.changed refused, want 3", n)
	}

	grant()
	granted := time.Now()
	eventually.Within(t, wait, func() error {
		n := pendingCount(t, db.Pool)
		return want(n == 0, "%d rows pending %v after auth.keys.changed was granted", n, time.Since(granted).Round(time.Millisecond))
	})
	t.Logf("published %v after the grant", time.Since(granted).Round(time.Millisecond))
	eventually.Within(t, wait, func() error {
		mu.Lock()
		defer mu.Unlock()
		return want(keys == 1, "auth.keys.changed arrived %d times, want once", keys)
	})
}

// listenPorts are the client ports of the relays' LISTEN connections to the
// test's database (another process's relay may listen on the same server) that
// the server sees (one that died without a word stays until the server
// notices).
func listenPorts(t *testing.T, db *dbtest.DB) []int {
	t.Helper()
	var ports []int
	if err := db.Pool.QueryRow(context.Background(), `SELECT ARRAY(SELECT client_port FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1 ORDER BY backend_start)`,
		ListenApplicationName).Scan(&ports); err != nil {
		t.Fatal(err)
	}
	return ports
}

// TestADeadListenConnectionIsNoticed: the relay's LISTEN connection sits
// idle between commits, and one that dies without a word (a NAT or a
// firewall dropping it while idle, a partition) would leave the relay
// deaf, believing it heard every commit, until TCP keepalive noticed,
// minutes later: every row waited for the poll, and a database outage
// meanwhile had it send heartbeats straight to NATS over rows it never
// heard of. Quiet for ListenPing, the relay asks the server; a connection
// that does not answer within it is dropped and a new one listens. A
// healthy connection answers every ping and is kept.
func TestADeadListenConnectionIsNoticed(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	events := collect(t, ns.ClientURL())
	c := tcplink.New(t, dbHost(db))
	var logs logbuffer.Buffer
	// No poll to speak of: only notifications make the relay drain.
	// The ping's answer is waited for as long as the quiet before it: long
	// enough here that a loaded machine (every package's tests at once,
	// beside a database under the same load) does not make a healthy
	// connection miss it. 300 ms was missed once.
	const ping = time.Second
	runRelay(t, poolThrough(t, db, c), ns.ClientURL(), &logs, RelayOptions{Poll: time.Hour, ListenPing: ping})
	published := func(n int, when string) {
		t.Helper()
		insert(t, db.Pool, Row{Subject: invalidation.UserSubject(fmt.Sprint("u", n)), Reason: invalidation.ReasonRoleRevoked})
		eventually.Within(t, wait, func() error {
			return want(events.distinct() == n, "%s: %d rows published, want %d", when, events.distinct(), n)
		})
	}
	var first []int
	eventually.Within(t, wait, func() error {
		first = listenPorts(t, db)
		return want(len(first) == 1, "LISTEN connections %v, want one", first)
	})
	published(1, "listening")

	// Four pings later the same connection listens, and still hears.
	time.Sleep(4 * ping)
	if ports := listenPorts(t, db); !slices.Equal(ports, first) {
		t.Fatalf("LISTEN connections %v after quiet pings, want %v kept", ports, first)
	}
	published(2, "after pings")
	if strings.Contains(logs.String(), "outbox listen") {
		t.Fatalf("a healthy LISTEN connection was dropped:\n%s", logs.String())
	}

	if !c.SilenceFrom(first[0]) {
		t.Fatal("no link connection from the LISTEN connection's port")
	}
	eventually.Within(t, wait, func() error {
		ports := listenPorts(t, db)
		return want(len(ports) == 2 && ports[0] == first[0], "LISTEN connections %v, want a new one beside the dead %d", ports, first[0])
	})
	published(3, "after the dead connection")
	if !strings.Contains(logs.String(), "listen connection does not answer") {
		t.Fatalf("the dead connection is not named in the log:\n%s", logs.String())
	}
}

// TestABatchLostWithItsConnectionStaysPending: the relay's NATS connection
// is lost after the batch went out on it and before its flush: the
// server died with the batch unread (here the link drops it, then closes).
// The client sends the flush's ping on the next connection, and that
// server answers it: the flush succeeded, and the rows were marked
// published although no server ever had them. A batch whose connection
// was replaced before NATS confirmed it must fail and stay pending.
func TestABatchLostWithItsConnectionStaysPending(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := collect(t, ns.ClientURL())
	l := tcplink.New(t, ns.Addr().String())
	nc := connect(t, "nats://"+l.Addr())
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked})
	r := NewRelay(db.Pool, nc, quiet(), RelayOptions{})
	r.confirmHook = func() {
		l.Cut()
		eventually.Within(t, wait, func() error {
			return want(nc.IsReconnecting(), "the relay's connection is %v, want reconnecting", nc.Status())
		})
		l.Restore(t)
	}
	l.Silence()
	if n, err := r.PublishBatch(context.Background()); err == nil {
		t.Errorf("PublishBatch = %d rows, nil error; want an error: the connection that carried them was lost before NATS confirmed them", n)
	}
	if n := pendingCount(t, db.Pool); n != 1 {
		t.Fatalf("%d rows pending, want 1: the server never had it", n)
	}

	r.confirmHook = nil
	eventually.Within(t, wait, func() error { return want(nc.IsConnected(), "the relay's connection is %v", nc.Status()) })
	if n, err := r.PublishBatch(context.Background()); err != nil || n != 1 {
		t.Fatalf("PublishBatch on the new connection = %d, %v; want 1, nil", n, err)
	}
	eventually.Within(t, wait, func() error { n := c.distinct(); return want(n == 1, "%d distinct events arrived, want 1", n) })
}

// TestAListenConnectionLostAfterAnOutageIsReplacedAtOnce: the relay
// retries its LISTEN connection with a backoff that doubles at each
// failure, up to 10 s. It was never brought down again once a connection
// listened, so after a database outage (a restart, a failover) every
// later loss of the LISTEN connection, however long after, left the relay
// deaf for as long as that outage's last wait: a connection dropped by a
// NAT was replaced after up to 20 s, not within the 10 s
// docs/operations.md gives, and a commit meanwhile waited for the poll. A
// connection that listened for as long as the wait before it starts the
// backoff over: the relay waits 0.1 s, the first wait, before replacing
// it.
func TestAListenConnectionLostAfterAnOutageIsReplacedAtOnce(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	c := tcplink.New(t, dbHost(db))
	var logs logbuffer.Buffer
	r, _ := runRelay(t, poolThrough(t, db, c), ns.ClientURL(), &logs, RelayOptions{Poll: 20 * time.Millisecond})
	listening := func(not int) int {
		t.Helper()
		var port int
		eventually.Within(t, wait, func() error {
			ports := listenPorts(t, db)
			if len(ports) == 1 && ports[0] != not {
				port = ports[0]
			}
			return want(port != 0, "LISTEN connections %v, want one (not %d)", ports, not)
		})
		return port
	}
	// The waits the relay logged after each lost or failed connection.
	waits := func() []time.Duration {
		var ds []time.Duration
		for _, l := range logged(t, logs.String(), "outbox listen") {
			ds = append(ds, l.RetryIn)
		}
		return ds
	}
	before := listening(0)

	// An outage: the LISTEN connection and every attempt to open another
	// fail (waits of 0.1, 0.2, 0.4 s …) until the relay waits 0.4 s or
	// more; then one listens.
	c.Cut()
	eventually.Within(t, wait, func() error {
		ws := waits()
		return want(len(ws) > 0 && ws[len(ws)-1] >= 400*time.Millisecond, "the relay waited %v, want up to 0.4 s", ws)
	})
	c.Restore(t)
	port := listening(before)
	eventually.Within(t, wait, func() error {
		r.heard.mu.Lock()
		defer r.heard.mu.Unlock()
		return want(r.heard.listen, "the relay does not listen on its new connection")
	})
	listened := time.Now()
	outage := waits()
	// The wait after the outage's last, were the backoff not started over.
	grown := 2 * outage[len(outage)-1]

	// The connection listens for that long, then the server ends it.
	time.Sleep(time.Until(listened.Add(grown)))
	var ended bool
	if err := db.Pool.QueryRow(context.Background(), `SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, ListenApplicationName).Scan(&ended); err != nil || !ended {
		t.Fatalf("terminate the LISTEN connection: %v, %v", ended, err)
	}
	listening(port)
	if after := waits()[len(outage):]; len(after) != 1 || after[0] != 100*time.Millisecond {
		t.Fatalf("the relay waited %v before replacing the connection lost after the outage's waits %v, want 100ms: the backoff started over, not %v",
			after, outage, grown)
	}
}
