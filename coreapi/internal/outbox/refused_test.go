package outbox

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit/tcplink"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// TestRefusedBatchesAreCountedAndBackOffUpToTheCap: the refusals are
// counted apart from the other failures (coreapi_outbox_publish_refused_total),
// the waits double up to MaxBackoff and stop growing there, each is waited
// out before the next attempt, and the refused subjects are reported by
// the relay, not the connection's handler.
func TestRefusedBatchesAreCountedAndBackOffUpToTheCap(t *testing.T) {
	db := dbtest.New(t)
	ns, grant := refusingNATS(t)
	var logs logbuffer.Buffer
	var ready atomic.Pointer[Relay]
	var handed atomic.Int64
	nc, err := nats.Connect("nats://core:pw@"+ns.Addr().String(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if r := ready.Load(); r != nil && r.Refused(err) {
			return
		}
		handed.Add(1)
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r := NewRelay(db.Pool, nc, slog.New(slog.NewJSONHandler(&logs, nil)),
		RelayOptions{Poll: 10 * time.Millisecond, Backoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
	// The attempts, timed as the relay makes them: after the batch went
	// out, before the wait for its confirmation (and so its refusal, and
	// the wait that follows).
	var mu sync.Mutex
	var attempts []time.Time
	r.confirmHook = func() {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now())
	}
	ready.Store(r)
	startRun(t, r)
	rows := make([]Row, 30)
	for i := range rows {
		rows[i] = Row{Subject: invalidation.SubjectKeysChanged, Reason: invalidation.ReasonKeysChanged}
	}
	insert(t, db.Pool, rows...)
	// 20, 40 and 80 ms, then 80 ms each; a poll every 10 ms meanwhile.
	ms := func(ds ...time.Duration) []time.Duration {
		for i := range ds {
			ds[i] *= time.Millisecond
		}
		return ds
	}
	wantWaits := ms(20, 40, 80, 80, 80, 80)
	var reports []logLine
	eventually.Within(t, wait, func() error {
		reports = logged(t, logs.String(), refusalLogged)
		return want(len(reports) >= len(wantWaits), "%d refused batches reported, want %d", len(reports), len(wantWaits))
	})
	var waits []time.Duration
	for _, l := range reports[:len(wantWaits)] {
		waits = append(waits, l.RetryIn)
	}
	if !slices.Equal(waits, wantWaits) {
		t.Errorf("the relay waited %v after its first refused batches, want %v", waits, wantWaits)
	}
	// Each report follows its attempt: there were as many.
	mu.Lock()
	tried := slices.Clone(attempts[:len(wantWaits)])
	mu.Unlock()
	for i := 1; i < len(tried); i++ {
		if gap := tried[i].Sub(tried[i-1]); gap < waits[i-1] {
			t.Errorf("attempt %d came %v after the one before, want at least the %v wait", i+1, gap, waits[i-1])
		}
	}
	if s := r.Stats(); s.Refused != s.Failures {
		t.Errorf("%d failures, %d of them refusals, want all", s.Failures, s.Refused)
	}
	if n := handed.Load(); n != 0 {
		t.Errorf("%d refusals left to the connection's handler", n)
	}
	if n, lines := r.Stats().Refused, len(logged(t, logs.String(), refusalLogged)); int64(lines) > n {
		t.Errorf("%d refusal lines for %d refused batches of %d rows each, want one a batch:\n%s", lines, n, len(rows), logs.String())
	}
	grant()
	eventually.Within(t, wait, func() error { n := pendingCount(t, db.Pool); return want(n == 0, "%d rows pending after the grant", n) })
}

// TestRefusalsAndOutagesAreEachSaid: the relay says once that it cannot
// publish when NATS goes away, and reports each refused batch. A refusal
// had the outage that followed it go unsaid (the relay took itself for
// one that had said it cannot publish already): the last line logged
// was the refusal while NATS was gone. Each outage is said once,
// whatever came before it, each refusal after an outage is reported,
// and the first batch that goes out says so once.
func TestRefusalsAndOutagesAreEachSaid(t *testing.T) {
	db := dbtest.New(t)
	ns, grant := refusingNATS(t)
	l := tcplink.New(t, ns.Addr().String())
	var logs logbuffer.Buffer
	r := NewRelay(db.Pool, connect(t, "nats://core:pw@"+l.Addr()), slog.New(slog.NewJSONHandler(&logs, nil)),
		RelayOptions{Poll: 10 * time.Millisecond, Backoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
	startRun(t, r)
	const refused, down, again = "refused", "cannot publish", "publishing again"
	var wanted []string
	said := func(what string) {
		t.Helper()
		wanted = append(wanted, what)
		eventually.Within(t, wait, func() error {
			got := publishingSaid(t, logs.String())
			return want(slices.Equal(got, wanted), "the relay said %q, want %q", got, wanted)
		})
	}

	insert(t, db.Pool, Row{Subject: invalidation.SubjectKeysChanged, Reason: invalidation.ReasonKeysChanged})
	said(refused)
	for range 2 {
		l.Cut()
		said(down)
		l.Restore(t)
		said(refused)
	}
	grant()
	said(again)
	if n := pendingCount(t, db.Pool); n != 0 {
		t.Fatalf("%d rows pending after the relay said it publishes again", n)
	}
}

// publishingSaid is what a relay's JSON log said of its publishing, in
// order: "refused" for each run of refusal reports (one a refused batch),
// "cannot publish" and "publishing again" for each of those lines.
func publishingSaid(t *testing.T, logs string) []string {
	t.Helper()
	var said []string
	for _, l := range logged(t, logs, "") {
		var what string
		switch {
		case strings.HasPrefix(l.Msg, refusalLogged):
			what = "refused"
			if len(said) > 0 && said[len(said)-1] == what {
				continue
			}
		case strings.HasPrefix(l.Msg, "outbox relay cannot publish"):
			what = "cannot publish"
		case l.Msg == "outbox relay publishing again":
			what = "publishing again"
		default:
			continue
		}
		said = append(said, what)
	}
	return said
}

// refusalLogged begins the line a relay logs at each refused batch
// (reportRefused).
const refusalLogged = "nats refuses outbox publications"

// logLine is what the tests read of a line of a relay's JSON log.
type logLine struct {
	Msg      string
	Subjects []string
	RetryIn  time.Duration `json:"retry_in"` // slog writes a duration in ns
}

// logged is the lines of a relay's JSON log whose message begins with
// msg, in order.
func logged(t *testing.T, logs, msg string) []logLine {
	t.Helper()
	var lines []logLine
	for line := range strings.Lines(logs) {
		var l logLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if strings.HasPrefix(l.Msg, msg) {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestRefusedTakesPublicationRefusals: the relay takes from the
// connection's handler the refusals of its publications, keeps a bounded
// number of their subjects to report, and leaves every other error (a
// refused subscription, an authorization error) to the handler; the
// refusal of its own beat is the beat's to report.
func TestRefusedTakesPublicationRefusals(t *testing.T) {
	r := NewRelay(nil, nil, quiet(), RelayOptions{})
	refusal := func(what, subject string) error {
		return fmt.Errorf("%w: Permissions Violation for %s to %q", nats.ErrPermissionViolation, what, subject)
	}
	for _, err := range []error{
		refusal("Subscription", invalidation.SubjectWildcard),
		nats.ErrAuthorization,
		fmt.Errorf("nats: Permissions Violation for Publish to %q", invalidation.SubjectKeysChanged),
	} {
		if r.Refused(err) {
			t.Errorf("Refused(%v) = true, want it left to the handler", err)
		}
	}
	if !r.Refused(refusal("Publish", invalidation.SubjectRelay)) {
		t.Error("the refusal of the relay's beat left to the handler")
	}
	for i := range maxRefusalsKept + 4 {
		for range 3 {
			if !r.Refused(refusal("Publish", invalidation.UserSubject(fmt.Sprint("u", i)))) {
				t.Fatal("a refused publication left to the handler")
			}
		}
	}
	subjects, others := r.refusals.take()
	if len(subjects) != maxRefusalsKept || others != 12 || subjects[0] != invalidation.UserSubject("u0") {
		t.Fatalf("kept %q and %d other refusals, want the first %d subjects once each and the 12 refusals of the 4 others",
			subjects, others, maxRefusalsKept)
	}
	if subjects, others := r.refusals.take(); len(subjects) != 0 || others != 0 {
		t.Fatalf("kept %q and %d other refusals after they were taken", subjects, others)
	}
}

// TestBackoff: the waits double from Backoff up to MaxBackoff and start over
// after a success; a reconnection ends a wait.
func TestBackoff(t *testing.T) {
	ns := startNATS(t, -1, "")
	nc := connect(t, ns.ClientURL())
	b := backoff{first: 100 * time.Millisecond, max: 350 * time.Millisecond}
	if b.holds(nc) {
		t.Fatal("a wait before any failure")
	}
	for _, d := range []time.Duration{100, 200, 350, 350} {
		if got := b.failed(nc); got != d*time.Millisecond {
			t.Fatalf("wait %v, want %v", got, d*time.Millisecond)
		}
	}
	if !b.holds(nc) {
		t.Fatal("no wait after a failure")
	}
	b.reset()
	if b.holds(nc) {
		t.Fatal("a wait after a success")
	}
	if got := b.failed(nc); got != 100*time.Millisecond {
		t.Fatalf("wait %v after a success and a failure, want 100ms", got)
	}
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, wait, func() error {
		return want(nc.IsConnected() && nc.Stats().Reconnects == 1, "connection %v, %d reconnections", nc.Status(), nc.Stats().Reconnects)
	})
	if b.holds(nc) {
		t.Fatal("a wait across a reconnection")
	}
}

// refusedRelay runs a relay whose waits after a failure last an hour,
// logging into logs, against a NATS server that refuses it
// auth.keys.changed (refusingNATS), and returns it once it refused a
// batch of that subject, with its connection and the grant.
func refusedRelay(t *testing.T, logs *logbuffer.Buffer) (r *Relay, nc *nats.Conn, grant func()) {
	t.Helper()
	db := dbtest.New(t)
	ns, grant := refusingNATS(t)
	nc = connect(t, "nats://core:pw@"+ns.Addr().String())
	r = NewRelay(db.Pool, nc, slog.New(slog.NewJSONHandler(logs, nil)), RelayOptions{Poll: 10 * time.Millisecond, Backoff: time.Hour})
	startRun(t, r)
	insert(t, db.Pool, Row{Subject: invalidation.SubjectKeysChanged, Reason: invalidation.ReasonKeysChanged})
	eventually.Within(t, wait, func() error { n := r.Stats().Refused; return want(n > 0, "no batch refused") })
	return r, nc, grant
}

// TestANewConnectionEndsTheWait: a batch NATS refused has the relay wait
// (here an hour) before the next, but not past a new connection, which
// may be to a server that takes it: the first drain after the
// reconnection (the reconnect handler's Wake, or a poll) publishes it.
func TestANewConnectionEndsTheWait(t *testing.T) {
	var logs logbuffer.Buffer
	r, nc, grant := refusedRelay(t, &logs)
	grant()
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, wait, func() error {
		n := pendingCount(t, r.pool)
		return want(n == 0, "%d rows pending after the reconnection, want the wait ended", n)
	})
	if n := r.Stats().Refused; n != 1 {
		t.Errorf("%d batches refused, want 1: the wait let no other through", n)
	}
}

// TestARefusalReportedTooLateIsForgotten: the connection reports some
// refusals after the batch they failed was reported (Refused). A batch
// that goes out after them forgets them: the next refusal, of another
// subject, names its own, not a subject refused before and granted since.
func TestARefusalReportedTooLateIsForgotten(t *testing.T) {
	var logs logbuffer.Buffer
	r, nc, grant := refusedRelay(t, &logs)
	late := invalidation.UserSubject("late")
	if !r.Refused(fmt.Errorf("%w: Permissions Violation for Publish to %q", nats.ErrPermissionViolation, late)) {
		t.Fatal("the late refusal left to the handler")
	}
	grant()
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, wait, func() error { n := pendingCount(t, r.pool); return want(n == 0, "%d rows pending after the grant", n) })

	// auth.outbox.heartbeat is refused too: the next batch fails at once
	// (the success started the waits over).
	insert(t, r.pool, Row{Subject: invalidation.SubjectHeartbeat})
	eventually.Within(t, wait, func() error { n := r.Stats().Refused; return want(n == 2, "%d batches refused, want 2", n) })
	var reported []string
	if lines := logged(t, logs.String(), refusalLogged); len(lines) > 0 {
		reported = lines[len(lines)-1].Subjects
	}
	if !slices.Equal(reported, []string{invalidation.SubjectHeartbeat}) {
		t.Errorf("the last refusal named %q, want %q only:\n%s", reported, invalidation.SubjectHeartbeat, logs.String())
	}
}
