package natsinv

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

var rowID atomic.Int64

// heartbeatRow publishes a heartbeat as the outbox does (with a
// Nats-Msg-Id), listing relays (nil: the field absent, as from an older
// coreapi), and returns when it was published.
func heartbeatRow(t *testing.T, nc *nats.Conn, relays ...string) time.Time {
	t.Helper()
	return publishRow(t, nc, invalidation.Event{At: time.Now().UnixMilli(), Relays: relays})
}

// rowTakenIn publishes ev as a heartbeat row (publishRow) and waits until
// the subscriber whose metrics m are has taken it in.
func rowTakenIn(t *testing.T, nc *nats.Conn, m *metrics.Metrics, ev invalidation.Event) {
	t.Helper()
	before := testutil.ToFloat64(m.Invalidations.WithLabelValues("heartbeat"))
	publishRow(t, nc, ev)
	testenv.Eventually(t, func() error {
		return testenv.Want("heartbeats taken in", testutil.ToFloat64(m.Invalidations.WithLabelValues("heartbeat")), before+1)
	})
}

// publishRow publishes ev as a heartbeat row (with a Nats-Msg-Id) and
// returns when it was published.
func publishRow(t *testing.T, nc *nats.Conn, ev invalidation.Event) time.Time {
	t.Helper()
	b, _ := json.Marshal(ev)
	msg := &nats.Msg{Subject: invalidation.SubjectHeartbeat, Data: b, Header: nats.Header{}}
	msg.Header.Set(nats.MsgIdHdr, "row-"+strconv.FormatInt(rowID.Add(1), 10))
	at := time.Now()
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return at
}

// relaysHeard is how many relay beats the subscriber took in.
func relaysHeard(m *metrics.Metrics) float64 {
	return testutil.ToFloat64(m.Invalidations.WithLabelValues("relay"))
}

// TestUnheardRelayIsStale: the heartbeats keep coming (the other relays
// publish them), but a relay the heartbeat rows list is never heard: its
// NATS node may have lost its route to the proxy's, and what it publishes,
// accepted by its server, never arrives. After HeartbeatTimeout from its
// listing (not before: a relay just listed is given that long) the feed is
// stale, the bound counted from that grace's start, and the warning names
// that relay alone; its beat ends it with a purge. A relay heard all along
// keeps the feed fresh.
func TestUnheardRelayIsStale(t *testing.T) {
	n := testenv.StartNATS(t)
	r := &downRecorder{recorder: newRecorder(t)}
	var logs logbuffer.Buffer
	const timeout = 600 * time.Millisecond
	f := startFeed(t, n, Options{HeartbeatTimeout: timeout}, r, metrics.New(), slog.New(slog.NewJSONHandler(&logs, nil)))
	// beats brings a direct heartbeat (it leaves the list as it is) and
	// the beats of relays, and returns their arrival.
	beats := func(relays ...string) (at time.Time) {
		at = f.heartbeat()
		for _, id := range relays {
			at = f.relay(id)
		}
		return at
	}

	// r1 is listed and heard within the timeout each time: fresh well
	// past it.
	f.relay("r1")
	f.row("r1")
	for i := range 6 {
		f.advance(timeout / 2)
		f.wantStale(r, false, 0, fmt.Sprintf("r1's beat %d due", i+1))
		beats("r1")
	}

	// r2 is listed too, and never heard: stale once given the timeout from
	// its listing, not before, the bound counted from the listing.
	reconnects, _ := r.count()
	listed := f.row("r1", "r2")
	f.advance(timeout - time.Millisecond)
	f.wantStale(r, false, 0, "r2 listed, its grace not yet over")
	beats("r1")
	f.advance(2 * time.Millisecond)
	f.wantStale(r, true, 1, "r2 listed, its grace over")
	if at := r.lastDown(); !at.Equal(listed) {
		t.Fatalf("staleness counted from %s, want r2's listing, %s", at.Format(time.StampMicro), listed.Format(time.StampMicro))
	}
	// The warning, written as the feed turned stale, names r2 alone, and
	// is not written again while r2 stays unheard.
	for range 3 {
		beats("r1")
		f.advance(timeout / 2)
	}
	f.wantStale(r, true, 1, "r2 unheard on")
	unheard := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "outbox relays unheard") {
			unheard++
			if !strings.Contains(line, `"relays":["r2"]`) {
				t.Errorf("the warning does not name r2 alone: %s", line)
			}
		}
	}
	if unheard != 1 {
		t.Errorf("%d warnings of unheard relays, want 1; log:\n%s", unheard, logs.String())
	}

	// r2's beat ends it, with one purge; its beats after it purge no more.
	f.relay("r2")
	f.wantStale(r, false, 0, "r2 heard")
	var last time.Time
	for range 3 {
		f.advance(timeout / 2)
		last = beats("r1", "r2")
	}
	f.wantStale(r, false, 0, "r2 heard on")
	if rc, _ := r.count(); rc != reconnects+1 {
		t.Fatalf("r2 heard with %d purges, want 1", rc-reconnects)
	}

	// r2 falls silent: stale again, counted from its last beat.
	f.advance(timeout - time.Millisecond)
	f.wantStale(r, false, 0, "r2 silent, the timeout not yet over")
	beats("r1")
	f.advance(2 * time.Millisecond)
	f.wantStale(r, true, 1, "r2 silent, the timeout over")
	if at := r.lastDown(); !at.Equal(last) {
		t.Fatalf("staleness counted from %s, want r2's last beat, %s", at.Format(time.StampMicro), last.Format(time.StampMicro))
	}
}

// TestUnlistedRelaysAreStale: a heartbeat row that counts relays it could
// not list (more coreapi replicas than invalidation.MaxRelaysListed) makes
// the feed stale once HeartbeatTimeout has passed, although every listed
// relay is heard: whether what the others publish reaches this proxy is
// unknown. The error says so once; a row that lists every relay again ends
// the staleness with a purge.
func TestUnlistedRelaysAreStale(t *testing.T) {
	n := testenv.StartNATS(t)
	r := &downRecorder{recorder: newRecorder(t)}
	var logs logbuffer.Buffer
	const timeout = 400 * time.Millisecond
	f := startFeed(t, n, Options{HeartbeatTimeout: timeout}, r, metrics.New(), slog.New(slog.NewJSONHandler(&logs, nil)))
	// beats brings a direct heartbeat and r1's beat: every listed relay
	// is heard, and the heartbeats go on.
	beats := func() {
		f.heartbeat()
		f.relay("r1")
	}
	f.relay("r1")

	// Stale a timeout after the first row that counts unlisted relays, not
	// before: the next one, counting them too, gives them no new grace.
	reconnects, _ := r.count()
	unlisted := invalidation.Event{Relays: []string{"r1"}, RelaysUnlisted: 3}
	listed := f.rowOf(unlisted)
	f.advance(timeout / 2)
	beats()
	f.rowOf(unlisted)
	f.advance(timeout/2 - time.Millisecond)
	f.wantStale(r, false, 0, "relays unlisted, the timeout not yet over")
	beats()
	f.advance(2 * time.Millisecond)
	f.wantStale(r, true, 1, "relays unlisted, the timeout over")
	if at := r.lastDown(); !at.Equal(listed) {
		t.Fatalf("staleness counted from %s, want the first row that counts unlisted relays, %s", at.Format(time.StampMicro), listed.Format(time.StampMicro))
	}
	if n := strings.Count(logs.String(), "coreapi runs more outbox relays than a heartbeat lists"); n != 1 {
		t.Fatalf("%d errors for the unlisted relays, want 1:\n%s", n, logs.String())
	}

	// A row that lists every relay again ends it, with one purge.
	f.row("r1")
	f.wantStale(r, false, 0, "every relay listed again")
	for range 3 {
		f.advance(timeout / 2)
		beats()
	}
	f.wantStale(r, false, 0, "every relay listed, beats on")
	if rc, _ := r.count(); rc != reconnects+1 {
		t.Fatalf("every relay listed again with %d purges, want 1", rc-reconnects)
	}
}

// TestRowDelistsRelay: a listed relay unheard makes the feed stale, and
// heartbeats straight from a relay (no Nats-Msg-Id: the database
// unreachable) do not change the list; the next heartbeat row that no
// longer lists it (here one with no list at all, as from a coreapi older
// than the field) ends the staleness with a purge.
func TestRowDelistsRelay(t *testing.T) {
	n := testenv.StartNATS(t)
	r := &downRecorder{recorder: newRecorder(t)}
	const timeout = 400 * time.Millisecond
	f := startFeed(t, n, Options{HeartbeatTimeout: timeout}, r, metrics.New(), quiet())
	f.row("r2")
	f.advance(timeout / 2)
	f.heartbeat()
	f.advance(timeout/2 + time.Millisecond)
	f.wantStale(r, true, 1, "r2 listed and unheard")

	// Direct heartbeats go on, one with the reason a relay gives them:
	// r2 stays expected.
	b, _ := json.Marshal(invalidation.Event{At: f.now().UnixMilli(), Reason: invalidation.ReasonDatabaseUnreachable})
	f.takenIn("heartbeat", &nats.Msg{Subject: invalidation.SubjectHeartbeat, Data: b})
	for range 4 {
		f.advance(timeout / 2)
		f.heartbeat()
	}
	f.wantStale(r, true, 1, "direct heartbeats only")

	reconnects, _ := r.count()
	f.row() // no relays: r2 is no longer expected
	f.wantStale(r, false, 0, "r2 delisted")
	for range 3 {
		f.advance(timeout / 2)
		f.heartbeat()
	}
	f.wantStale(r, false, 0, "r2 delisted, heartbeats on")
	if rc, _ := r.count(); rc != reconnects+1 {
		t.Fatalf("r2 delisted with %d purges, want 1", rc-reconnects)
	}
}

// TestRelayGraceOnReconnect: a NATS restart purges as ever; the list of
// relays stays, and each listed relay is given HeartbeatTimeout from the
// new connection to be heard.
func TestRelayGraceOnReconnect(t *testing.T) {
	n := testenv.StartNATS(t)
	r := &downRecorder{recorder: newRecorder(t)}
	const timeout = 600 * time.Millisecond
	f := startFeed(t, n, Options{HeartbeatTimeout: timeout, ReconnectWait: 20 * time.Millisecond, MaxReconnect: 50 * time.Millisecond},
		r, metrics.New(), quiet())
	f.row("r2")
	f.advance(timeout / 2)
	f.heartbeat()
	f.advance(timeout/2 + time.Millisecond)
	f.wantStale(r, true, 1, "r2 listed and unheard")

	reconnects, _ := r.count()
	n.Stop()
	n.Start()
	testenv.Eventually(t, func() error {
		rc, _ := r.count()
		return testenv.WantAtLeast("reconnections", rc, reconnects+1)
	})
	testenv.Eventually(t, func() error { return testenv.Want("connected", f.s.Connected(), true) })
	live := f.now()
	// A publisher of its own on the new server: the heartbeats go on, and
	// only r2's silence can make the feed stale.
	pub, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	f.pub = pub
	f.wantStale(r, false, 0, "reconnected")
	f.advance(timeout / 2)
	f.heartbeat()
	f.advance(timeout/2 - time.Millisecond)
	f.wantStale(r, false, 0, "reconnected, r2's grace not yet over")
	f.heartbeat()
	f.advance(2 * time.Millisecond)
	f.wantStale(r, true, 1, "reconnected, r2's grace over (r2 still listed)")
	if at := r.lastDown(); !at.Equal(live) {
		t.Fatalf("staleness counted from %s, want the reconnection, %s", at.Format(time.StampMicro), live.Format(time.StampMicro))
	}
}

// TestRelayNotWatchedWithoutTimeout: with HeartbeatTimeout 0 the proxy
// does not subscribe to auth.outbox.relay (nor to the heartbeat); with it,
// it does.
func TestRelayNotWatchedWithoutTimeout(t *testing.T) {
	ns := startServer(t, &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	for _, timeout := range []time.Duration{0, time.Second} {
		s, err := Connect(Options{URL: ns.ClientURL(), HeartbeatTimeout: timeout}, newRecorder(t), quiet(), metrics.New())
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
		connz, err := ns.Connz(&natsserver.ConnzOptions{Subscriptions: true})
		if err != nil {
			t.Fatal(err)
		}
		var subs []string
		for _, c := range connz.Conns {
			subs = append(subs, c.Subs...)
		}
		var relay, heartbeat bool
		for _, sub := range subs {
			relay = relay || sub == invalidation.SubjectRelay
			heartbeat = heartbeat || sub == invalidation.SubjectHeartbeat
		}
		if relay != (timeout > 0) || heartbeat != (timeout > 0) {
			t.Errorf("HeartbeatTimeout %s: subscriptions %v", timeout, subs)
		}
		_ = s.Close(time.Second)
	}
}

// TestRelayMemoryBounded: whatever is published on auth.outbox.relay and
// listed in the heartbeat rows, the proxy keeps at most maxRelaysHeard
// relays' last beats and maxRelaysListed listed relays. A listed relay's
// beat is always kept, an unlisted one's only while there is room once
// the relays neither listed nor heard within the timeout are dropped;
// beats that name no relay, or one too long, are ignored.
func TestRelayMemoryBounded(t *testing.T) {
	n := testenv.StartNATS(t)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	m := metrics.New()
	const timeout = time.Minute
	s, pub := connectWithPublisher(t, n, Options{HeartbeatTimeout: timeout, Now: now}, newRecorder(t), m)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	state := func() (heard, listed int, has func(string) bool) {
		s.linkMu.Lock()
		defer s.linkMu.Unlock()
		ids := map[string]bool{}
		for id := range s.heard {
			ids[id] = true
		}
		return len(s.heard), len(s.listed), func(id string) bool { return ids[id] }
	}
	publishBeats := func(ids ...string) {
		t.Helper()
		want := relaysHeard(m) + float64(len(ids))
		for _, id := range ids {
			b, _ := json.Marshal(invalidation.Event{Relay: id})
			if err := pub.Publish(invalidation.SubjectRelay, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, func() error { return testenv.WantAtLeast("relay beats", relaysHeard(m), want) })
	}
	idsFrom := func(prefix string, k int) []string {
		ids := make([]string, k)
		for i := range ids {
			ids[i] = prefix + strconv.Itoa(i)
		}
		return ids
	}

	// More listed relays than are taken: the first maxRelaysListed.
	listed := idsFrom("listed-", maxRelaysListed+50)
	heartbeatRow(t, pub, listed...)
	testenv.Eventually(t, func() error {
		_, l, _ := state()
		return testenv.Want("listed relays", l, maxRelaysListed)
	})
	s.linkMu.Lock()
	unlisted := s.unlisted
	s.linkMu.Unlock()
	if unlisted != 50 {
		t.Fatalf("%d relays counted as unlisted, want the 50 past the bound", unlisted)
	}

	// More unlisted relays heard than are kept.
	publishBeats(idsFrom("unlisted-", maxRelaysHeard+100)...)
	if h, _, _ := state(); h != maxRelaysHeard {
		t.Fatalf("%d relays heard kept, want %d", h, maxRelaysHeard)
	}
	// A listed relay's beat is kept even so; one listed past the bound is
	// no more kept than any unlisted one.
	publishBeats(listed[0], listed[maxRelaysListed])
	if h, _, has := state(); h != maxRelaysHeard || !has(listed[0]) || has(listed[maxRelaysListed]) {
		t.Fatalf("%d relays heard kept (want %d), the listed relay's beat kept: %v, the one past the bound: %v",
			h, maxRelaysHeard, has(listed[0]), has(listed[maxRelaysListed]))
	}

	// Past the timeout, a new relay's beat drops those unlisted.
	clock.Add(int64(2 * timeout))
	publishBeats("new")
	if h, _, has := state(); h != 2 || !has("new") || !has(listed[0]) {
		t.Fatalf("%d relays heard kept, want 2 (the listed one and the new one)", h)
	}

	// Beats that name no relay, or one too long, are not taken in.
	before := relaysHeard(m)
	for _, body := range []string{`{"at":1}`, `not json`, `{"relay":""}`, `{"relay":"` + strings.Repeat("x", maxRelayID+1) + `"}`} {
		if err := pub.Publish(invalidation.SubjectRelay, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	publishBeats("last")
	if got := relaysHeard(m); got != before+1 {
		t.Fatalf("%v relay beats taken in, want 1 (the last)", got-before)
	}
	if h, _, _ := state(); h != 3 {
		t.Fatalf("%d relays heard kept, want 3", h)
	}
}

// TestListedRelaysBoundedAcrossRows: a heartbeat row that lists new
// relays before those an earlier row listed keeps the first
// maxRelaysListed of its own order and counts the rest as unlisted, as it
// does for a first row: the relays listed before were kept past the bound,
// so rows could grow the listed set without end (and the relays past the
// bound were expected to beat rather than counted as unlisted).
func TestListedRelaysBoundedAcrossRows(t *testing.T) {
	n := testenv.StartNATS(t)
	m := metrics.New()
	s, pub := connectWithPublisher(t, n, Options{HeartbeatTimeout: time.Minute}, newRecorder(t), m)
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	ids := func(prefix string) []string {
		out := make([]string, maxRelaysListed)
		for i := range out {
			out[i] = prefix + strconv.Itoa(i)
		}
		return out
	}
	row := func(relays []string) {
		t.Helper()
		rowTakenIn(t, pub, m, invalidation.Event{At: time.Now().UnixMilli(), Relays: relays})
	}
	old, fresh := ids("old-"), ids("new-")
	row(old)
	row(append(slices.Clone(fresh), old...))
	s.linkMu.Lock()
	listed, unlisted := len(s.listed), s.unlisted
	_, keptOld := s.listed[old[0]]
	_, keptNew := s.listed[fresh[0]]
	s.linkMu.Unlock()
	if listed != maxRelaysListed || unlisted != maxRelaysListed || keptOld || !keptNew {
		t.Fatalf("%d relays listed (want %d), %d unlisted (want %d), the row's first kept: %v, one past the bound kept: %v",
			listed, maxRelaysListed, unlisted, maxRelaysListed, keptNew, keptOld)
	}
}

// timeoutChecked connects a subscriber whose heartbeat timeout is 10 s,
// logging to the buffer it returns, with its metrics and a publisher.
func timeoutChecked(t *testing.T) (*nats.Conn, *metrics.Metrics, *logbuffer.Buffer) {
	t.Helper()
	n := testenv.StartNATS(t)
	m := metrics.New()
	logs := &logbuffer.Buffer{}
	s, pub := connectLogged(t, n, Options{HeartbeatTimeout: 10 * time.Second}, newRecorder(t), m,
		slog.New(slog.NewJSONHandler(logs, nil)))
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	return pub, m, logs
}

// TestHeartbeatTimeoutCheckedAgainstTheInterval: the heartbeat rows
// announce coreapi's OUTBOX_HEARTBEAT_INTERVAL, so a proxy whose timeout is
// shorter than invalidation.MinHeartbeatTimeout of it (which would make
// the feed stale, and purge the caches, at every relay that stops without
// deregistering) says so: an error naming the least timeout, once per
// interval announced, and authproxy_nats_heartbeat_timeout_short. A row
// without the field (an older coreapi) leaves both as they are.
func TestHeartbeatTimeoutCheckedAgainstTheInterval(t *testing.T) {
	pub, m, logs := timeoutChecked(t)

	row := func(interval time.Duration) {
		t.Helper()
		rowTakenIn(t, pub, m, invalidation.Event{At: time.Now().UnixMilli(), IntervalMS: interval.Milliseconds()})
	}
	short := func(want float64, when string) {
		t.Helper()
		if got := testutil.ToFloat64(m.HeartbeatTimeoutShort); got != want {
			t.Fatalf("%s: authproxy_nats_heartbeat_timeout_short = %v, want %v", when, got, want)
		}
	}
	const complaint = "NATS_HEARTBEAT_TIMEOUT is too short"

	row(2 * time.Second) // the defaults: 10 s against 7 s
	short(0, "interval 2s")
	row(3 * time.Second) // 10.5 s needed
	row(3 * time.Second)
	short(1, "interval 3s")
	if n := strings.Count(logs.String(), complaint); n != 1 || !strings.Contains(logs.String(), `"at_least":"10.5s"`) {
		t.Fatalf("the short timeout logged %d times, want once with at_least 10.5s:\n%s", n, logs.String())
	}
	row(0) // an older coreapi: nothing to compare
	short(1, "a row without the interval")
	// Once the last intervalRows rows all announce 1s, 1s is the one.
	for range intervalRows - 1 {
		row(time.Second)
	}
	short(1, "interval 1s, the last rows but one")
	row(time.Second)
	short(0, "interval 1s")
	if n := strings.Count(logs.String(), complaint); n != 1 {
		t.Fatalf("logged %d times in all, want once", n)
	}
}

// TestHeartbeatIntervalsInTurn: replicas with different
// OUTBOX_HEARTBEAT_INTERVAL values (a rollout that changes it) write rows
// in turn; the timeout is checked against the longest, once, and
// authproxy_nats_heartbeat_timeout_short stays 1 throughout. It was
// checked against each row's, an error logged at every other row and the
// gauge flapping, so an alert held for minutes never fired.
func TestHeartbeatIntervalsInTurn(t *testing.T) {
	pub, m, logs := timeoutChecked(t)
	for i := range 12 {
		interval := 2 * time.Second // 7 s needed
		if i%2 == 1 {
			interval = 3 * time.Second // 10.5 s needed
		}
		rowTakenIn(t, pub, m, invalidation.Event{At: time.Now().UnixMilli(), IntervalMS: interval.Milliseconds()})
		if got, want := testutil.ToFloat64(m.HeartbeatTimeoutShort), map[bool]float64{true: 0, false: 1}[i == 0]; got != want {
			t.Fatalf("row %d (%s): authproxy_nats_heartbeat_timeout_short = %v, want %v", i, interval, got, want)
		}
	}
	if n := strings.Count(logs.String(), "NATS_HEARTBEAT_TIMEOUT is too short"); n != 1 {
		t.Fatalf("the short timeout logged %d times over 12 rows, want once:\n%s", n, logs.String())
	}
}
