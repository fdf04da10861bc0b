package outbox

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/natstest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit/tcplink"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// relayWatch records the relay beats (auth.outbox.relay) and the relay
// lists of the heartbeat rows (auth.outbox.heartbeat with a Nats-Msg-Id)
// that reach url.
type relayWatch struct {
	mu    sync.Mutex
	beats map[string]int
	lists []string // each row's list, joined with ","
}

func watchRelays(t *testing.T, url string) *relayWatch {
	t.Helper()
	w := &relayWatch{beats: map[string]int{}}
	nc := connect(t, url)
	if _, err := nc.Subscribe(invalidation.SubjectRelay, func(m *nats.Msg) {
		var ev invalidation.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.At == 0 || ev.Relay == "" {
			t.Errorf("relay beat %s: want a time and a relay", m.Data)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.beats[ev.Relay]++
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(invalidation.SubjectHeartbeat, func(m *nats.Msg) {
		if m.Header.Get(MsgIDHeader) == "" {
			return
		}
		var ev invalidation.Event
		_ = json.Unmarshal(m.Data, &ev)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.lists = append(w.lists, strings.Join(ev.Relays, ","))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *relayWatch) heard(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.beats[id]
}

// lastList is the newest row's list, and how many rows came.
func (w *relayWatch) lastList() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.lists) == 0 {
		return "", 0
	}
	return w.lists[len(w.lists)-1], len(w.lists)
}

// listedNext waits until a row that came after the next one lists list.
func (w *relayWatch) listedNext(t *testing.T, list string) {
	t.Helper()
	_, n := w.lastList()
	eventually.Within(t, wait, func() error {
		l, m := w.lastList()
		return want(m > n+1 && l == list, "heartbeat rows list %q (%d since), want %q", l, m-n, list)
	})
}

// TestRelaysBeatAndAreListed: every relay publishes its own beat, naming
// it, straight to NATS each heartbeat interval, and registers as
// publishing while NATS confirms those beats; the heartbeat rows list the
// registered relays, so a proxy knows whose beats to expect. A relay that
// stops deletes its row, and the next rows no longer list it.
func TestRelaysBeatAndAreListed(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	w := watchRelays(t, ns.ClientURL())
	o := RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 50 * time.Millisecond}

	o.ID = "relay-a"
	startRelay(t, db.Pool, connect(t, ns.ClientURL()), o)
	eventually.Within(t, wait, func() error { return want(w.heard("relay-a") >= 3, "relay-a heard %d times", w.heard("relay-a")) })
	w.listedNext(t, "relay-a")

	o.ID = "relay-b"
	b := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	w.listedNext(t, "relay-a,relay-b")
	if w.heard("relay-b") == 0 {
		t.Fatal("relay-b listed, never heard")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_relays WHERE id = 'relay-b'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("relay-b's row: %d (%v), want deleted when it stopped", n, err)
	}
	w.listedNext(t, "relay-a")
}

// TestHeartbeatListsAtMostMaxRelaysListed: with more relays registered
// than a heartbeat row may list, the row lists the first
// invalidation.MaxRelaysListed by name and counts the others, so that a
// proxy knows it cannot watch them all (and the row stays within NATS's
// max_payload however many replicas run); the relay says so in an error,
// once, and once more when every relay is listed again.
func TestHeartbeatListsAtMostMaxRelaysListed(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	var logs logbuffer.Buffer
	r := NewRelay(db.Pool, connect(t, startNATS(t, -1, "").ClientURL()), slog.New(slog.NewJSONHandler(&logs, nil)),
		RelayOptions{Heartbeat: time.Second, ID: "self"})
	const extra = 44
	if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox_relays (id, seen_at)
		SELECT 'relay-' || lpad(i::text, 4, '0'), now() FROM generate_series(1, $1) AS i`, invalidation.MaxRelaysListed+extra); err != nil {
		t.Fatal(err)
	}
	row := func() (relays []string, unlisted int) {
		t.Helper()
		if ok, err := r.Beat(ctx); err != nil || !ok {
			t.Fatalf("Beat = %v, %v", ok, err)
		}
		var payload []byte
		if err := db.Pool.QueryRow(ctx, `SELECT payload FROM outbox WHERE subject = $1 ORDER BY id DESC LIMIT 1`,
			invalidation.SubjectHeartbeat).Scan(&payload); err != nil {
			t.Fatal(err)
		}
		var ev invalidation.Event
		if err := json.Unmarshal(payload, &ev); err != nil {
			t.Fatal(err)
		}
		// The next look writes again.
		if _, err := db.Pool.Exec(ctx, `UPDATE outbox SET published_at = now(), created_at = created_at - interval '1 minute'`); err != nil {
			t.Fatal(err)
		}
		return ev.Relays, ev.RelaysUnlisted
	}
	relays, unlisted := row()
	if len(relays) != invalidation.MaxRelaysListed || relays[0] != "relay-0001" ||
		relays[len(relays)-1] != "relay-0256" || unlisted != extra {
		t.Fatalf("heartbeat row lists %d relays (%v...), %d unlisted; want the first %d, %d unlisted",
			len(relays), relays[:min(len(relays), 3)], unlisted, invalidation.MaxRelaysListed, extra)
	}
	row()
	if n := strings.Count(logs.String(), "more coreapi replicas register an outbox relay than a heartbeat lists"); n != 1 {
		t.Fatalf("%d errors logged for the unlisted relays, want 1:\n%s", n, logs.String())
	}
	if _, err := db.Pool.Exec(ctx, `DELETE FROM outbox_relays WHERE id > 'relay-0256'`); err != nil {
		t.Fatal(err)
	}
	if relays, unlisted := row(); len(relays) != invalidation.MaxRelaysListed || unlisted != 0 {
		t.Fatalf("heartbeat row lists %d relays, %d unlisted; want %d, 0", len(relays), unlisted, invalidation.MaxRelaysListed)
	}
	if !strings.Contains(logs.String(), "every registered outbox relay is listed in the heartbeat again") {
		t.Fatalf("no word when every relay is listed again:\n%s", logs.String())
	}
}

// TestRelayListForgetsTheGone: a relay gone without deleting its row (a
// crash) is listed no longer than two and a half intervals after it last
// registered, so the proxies stop expecting its beats before their
// timeout; its row is pruned with the published rows.
func TestRelayListForgetsTheGone(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	r := NewRelay(db.Pool, connect(t, startNATS(t, -1, "").ClientURL()), quiet(), RelayOptions{Heartbeat: time.Second, ID: "self"})
	if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox_relays (id, seen_at) VALUES
		('gone', now() - interval '2 hours'), ('late', now() - interval '3 seconds'), ('recent', now())`); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Beat(ctx); err != nil || !ok {
		t.Fatalf("Beat = %v, %v", ok, err)
	}
	var relays []string
	if err := db.Pool.QueryRow(ctx, `SELECT ARRAY(SELECT jsonb_array_elements_text(payload->'relays')) FROM outbox WHERE subject = $1`,
		invalidation.SubjectHeartbeat).Scan(&relays); err != nil {
		t.Fatal(err)
	}
	// "self" never had a beat confirmed: not registered.
	if !slices.Equal(relays, []string{"recent"}) {
		t.Fatalf("heartbeat row lists %v, want [recent]", relays)
	}
	if _, err := r.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := db.Pool.QueryRow(ctx, `SELECT ARRAY(SELECT id FROM outbox_relays ORDER BY id)`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{"late", "recent"}) {
		t.Fatalf("relays after prune: %v, want [late recent]", ids)
	}
}

// TestRelayWhoseBeatIsRefusedIsNotListed: a relay whose NATS user may not
// publish auth.outbox.relay (a deployment that has not granted it) does
// not register, so no proxy expects beats it would never hear; it says so
// in its log, once, and keeps publishing invalidations and heartbeats.
func TestRelayWhoseBeatIsRefusedIsNotListed(t *testing.T) {
	db := dbtest.New(t)
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "core", Password: "pw", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{invalidation.SubjectWildcard, invalidation.SubjectHeartbeat}},
			}},
			{Username: "watch", Password: "pw"},
		}}
	ns := natstest.StartWith(t, opts)
	w := watchRelays(t, "nats://watch:pw@"+ns.Addr().String())

	var logs logbuffer.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	r := NewRelay(db.Pool, connect(t, "nats://core:pw@"+ns.Addr().String()), log, RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 50 * time.Millisecond, ID: "refused"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	w.listedNext(t, "")
	w.listedNext(t, "")
	if n := w.heard("refused"); n != 0 {
		t.Fatalf("%d beats heard from a relay NATS refuses them", n)
	}
	if n := strings.Count(logs.String(), "nats refuses the relay's beat"); n != 1 {
		t.Fatalf("the refusal logged %d times, want once:\n%s", n, logs.String())
	}
	insert(t, db.Pool, Row{Subject: invalidation.UserSubject("u1"), Reason: invalidation.ReasonRoleRevoked})
	eventually.Within(t, wait, func() error { return want(pendingCount(t, db.Pool) == 0, "the invalidation stays pending") })
}

// startNode runs one node of a NATS cluster in-process, its routes
// solicited towards routes (none: it only accepts them), advertising no
// cluster address, so the route a test cuts is not replaced by another.
func startNode(t *testing.T, name string, routes ...string) *server.Server {
	t.Helper()
	opts := &server.Options{ServerName: name, Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "tollgate", Host: "127.0.0.1", Port: -1, NoAdvertise: true}}
	for _, r := range routes {
		u, err := url.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		opts.Routes = append(opts.Routes, u)
	}
	ns := natstest.StartWith(t, opts)
	return ns
}

// TestARelayCutOffFromTheProxiesNodeIsListedButUnheard: two coreapi
// replicas' relays on two nodes of a NATS cluster, the proxies on the
// second. When the route between the nodes goes, the first relay's
// invalidations no longer reach the proxies (its node accepts them: they
// are marked published), while the second relay's heartbeats still do.
// What tells the proxies is that the heartbeat rows keep listing the
// first relay (it still confirms its beats with its own node) while its
// beats no longer reach them.
func TestARelayCutOffFromTheProxiesNodeIsListedButUnheard(t *testing.T) {
	db := dbtest.New(t)
	a := startNode(t, "a")
	route := tcplink.New(t, a.ClusterAddr().String())
	b := startNode(t, "b", "nats://"+route.Addr())
	eventually.Within(t, wait, func() error {
		return want(a.NumRoutes() > 0 && b.NumRoutes() > 0, "routes: a %d, b %d", a.NumRoutes(), b.NumRoutes())
	})
	w := watchRelays(t, b.ClientURL()) // the proxies' node
	o := RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 50 * time.Millisecond}
	o.ID = "relay-a"
	startRelay(t, db.Pool, connect(t, a.ClientURL()), o)
	o.ID = "relay-b"
	startRelay(t, db.Pool, connect(t, b.ClientURL()), o)
	eventually.Within(t, wait, func() error {
		return want(w.heard("relay-a") > 0 && w.heard("relay-b") > 0, "beats heard: a %d, b %d", w.heard("relay-a"), w.heard("relay-b"))
	})
	w.listedNext(t, "relay-a,relay-b")

	route.Cut()
	eventually.Within(t, wait, func() error {
		return want(a.NumRoutes() == 0 && b.NumRoutes() == 0, "routes: a %d, b %d", a.NumRoutes(), b.NumRoutes())
	})
	heardA := w.heard("relay-a")
	w.listedNext(t, "relay-a,relay-b")
	w.listedNext(t, "relay-a,relay-b")
	if n := w.heard("relay-a") - heardA; n != 0 {
		t.Fatalf("%d beats of relay-a reached the proxies' node across a cut route", n)
	}
}

// runRelay runs a relay on pool until the returned stop is called (or the
// test ends), logging into logs when it is not nil.
func runRelay(t *testing.T, pool *pgxpool.Pool, url string, logs *logbuffer.Buffer, o RelayOptions) (*Relay, func()) {
	t.Helper()
	log := quiet()
	if logs != nil {
		log = slog.New(slog.NewJSONHandler(logs, nil))
	}
	r := NewRelay(pool, connect(t, url), log, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// relayRows is outbox_relays' ids and instances, "id/instance" each.
func relayRows(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	var rows []string
	if err := pool.QueryRow(context.Background(), `SELECT ARRAY(SELECT id || '/' || instance FROM outbox_relays ORDER BY id)`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestARestartedRelayBeatsUnderItsName: a replica whose process restarts
// while the database is away cannot register anew, and no heartbeat row
// changes the list the proxies hold; it keeps its name (coreapi's default:
// the pod's host name and port), so its beats are the ones the proxies
// expect. Once the database is back it replaces its predecessor's row
// without taking it for another live process.
func TestARestartedRelayBeatsUnderItsName(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	w := watchRelays(t, ns.ClientURL())
	c := tcplink.New(t, dbHost(db))
	o := RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 50 * time.Millisecond, ID: "pod-1:8081"}

	_, stop := runRelay(t, poolThrough(t, db, c), ns.ClientURL(), nil, o)
	w.listedNext(t, "pod-1:8081")
	// The database goes away, then the process: its row stays.
	c.Cut()
	stop()

	var logs logbuffer.Buffer
	b, _ := runRelay(t, poolThrough(t, db, c), ns.ClientURL(), &logs, o)
	before := w.heard("pod-1:8081")
	eventually.Within(t, wait, func() error {
		return want(w.heard("pod-1:8081") >= before+3, "%d beats under the listed name since the restart, want 3", w.heard("pod-1:8081")-before)
	})

	c.Restore(t)
	w.listedNext(t, "pod-1:8081")
	w.listedNext(t, "pod-1:8081")
	if rows := relayRows(t, db.Pool); !slices.Equal(rows, []string{"pod-1:8081/" + b.instance}) {
		t.Fatalf("outbox_relays: %v, want the successor's instance under the name", rows)
	}
	if strings.Contains(logs.String(), "same name") {
		t.Fatalf("the successor took its predecessor's row for another process:\n%s", logs.String())
	}
}

// TestTwoRelaysUnderOneNameTakeTwo: two live processes under one name
// (OUTBOX_RELAY_ID set alike, or one host name and port on two hosts)
// would have a proxy take one's beats for the other's, and a relay cut
// off from it go unnoticed. The first to find the other's instance in
// the row logs an error and beats under a name of its own; both are then
// listed and heard, and the names stay put.
func TestTwoRelaysUnderOneNameTakeTwo(t *testing.T) {
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	w := watchRelays(t, ns.ClientURL())
	o := RelayOptions{Poll: 20 * time.Millisecond, Heartbeat: 50 * time.Millisecond, ID: "dup"}
	var logsA, logsB logbuffer.Buffer
	a, _ := runRelay(t, db.Pool, ns.ClientURL(), &logsA, o)
	b, _ := runRelay(t, db.Pool, ns.ClientURL(), &logsB, o)

	var list string
	eventually.Within(t, wait, func() error {
		list, _ = w.lastList()
		return want(list == "dup,dup-"+a.instance || list == "dup,dup-"+b.instance, "heartbeat rows list %q, want dup and one renamed", list)
	})
	renamed := strings.TrimPrefix(list, "dup,")
	w.listedNext(t, list)
	w.listedNext(t, list)
	if w.heard(renamed) == 0 {
		t.Fatalf("%s listed, never heard", renamed)
	}
	heard := w.heard("dup")
	eventually.Within(t, wait, func() error { return want(w.heard("dup") > heard, "dup no longer beats") })
	if n := strings.Count(logsA.String()+logsB.String(), "under the same name"); n != 1 {
		t.Fatalf("the shared name logged %d times, want once:\n%s\n%s", n, logsA.String(), logsB.String())
	}
}

// TestAStoppingRelayLeavesItsSuccessorsRow: a pod restarted while its old
// process is still stopping has the new process take the name over (its
// first registration), and the old one's deregistration then deleted the
// row by name: the successor's. The heartbeat rows no longer listed it
// until its next look, and the proxies stopped expecting its beats. A
// relay deletes only the row that holds its own instance.
func TestAStoppingRelayLeavesItsSuccessorsRow(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	// No ticker fires: each relay registers when the test says so.
	o := RelayOptions{Heartbeat: time.Hour, ID: "pod-1:8081"}
	register := func(r *Relay) {
		t.Helper()
		r.beatRelay()
		if !r.beating() {
			t.Fatalf("relay %s: NATS did not confirm its beat", r.instance)
		}
		if _, err := r.Beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	old := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), o)
	register(old)
	successor := NewRelay(db.Pool, connect(t, ns.ClientURL()), quiet(), o)
	register(successor)
	if rows := relayRows(t, db.Pool); !slices.Equal(rows, []string{"pod-1:8081/" + successor.instance}) {
		t.Fatalf("outbox_relays: %v, want the successor's instance under the name", rows)
	}

	old.deregister(ctx)
	if rows := relayRows(t, db.Pool); !slices.Equal(rows, []string{"pod-1:8081/" + successor.instance}) {
		t.Fatalf("outbox_relays after the old process stopped: %v, want the successor's row kept", rows)
	}
	successor.deregister(ctx)
	if rows := relayRows(t, db.Pool); len(rows) != 0 {
		t.Fatalf("outbox_relays after the successor stopped: %v, want none", rows)
	}
}

// TestARelayRegistersOnlyAtALookWhoseBeatNATSConfirmed: a relay whose
// NATS connection goes away (or whose beats NATS stops confirming) no
// longer registers from its next look on. It went on registering at the
// looks of the next two intervals, so the heartbeat rows listed it up to
// four and a half intervals after the last beat a proxy heard from it,
// past the three and a half of invalidation.MinHeartbeatTimeout: a proxy
// with that timeout (or the default one, five intervals) called its feed
// stale for a relay that was publishing nothing, and purged its caches
// when the row that no longer listed it came.
func TestARelayRegistersOnlyAtALookWhoseBeatNATSConfirmed(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	ns := startNATS(t, -1, "")
	nc := connect(t, ns.ClientURL())
	// No ticker: each look (the relay's beat, then Beat) is the test's,
	// one interval apart as Run's ticks are.
	const interval = time.Second
	r := NewRelay(db.Pool, nc, quiet(), RelayOptions{Heartbeat: interval, ID: "r"})
	seen := func() time.Time {
		t.Helper()
		var at time.Time
		if err := db.Pool.QueryRow(ctx, `SELECT seen_at FROM outbox_relays WHERE id = 'r'`).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	look := func() {
		t.Helper()
		r.beatRelay()
		if _, err := r.Beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	look()
	if !r.beating() {
		t.Fatal("NATS did not confirm the relay's beat")
	}
	last := seen()

	ns.Shutdown()
	eventually.Within(t, wait, func() error { return want(!nc.IsConnected(), "still connected to NATS") })
	time.Sleep(time.Until(start.Add(interval)))
	look() // the next tick: its beat not confirmed
	if at := seen(); !at.Equal(last) {
		t.Fatalf("registered again at a look whose beat NATS did not confirm: seen_at %s, then %s", last, at)
	}
}
