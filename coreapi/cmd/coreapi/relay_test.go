package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/config"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/testkit"
	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/natsauth/natsauthtest"
	"github.com/tollgate-auth/tollgate/shared/natsdial"
	"github.com/tollgate-auth/tollgate/shared/silent"
)

// startAuthNATS runs a NATS server on port (-1: a free one) that admits
// user coreapi with password pw only, and returns it with its port.
func startAuthNATS(t *testing.T, port int, pw string) (*natsserver.Server, int) {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: "coreapi", Password: pw}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return ns, ns.Addr().(*net.TCPAddr).Port
}

// refuser is a NATS server's authentication that refuses every client,
// as a server that has another password for coreapi does, and tells of
// each attempt on attempts.
type refuser struct{ attempts chan struct{} }

func (r refuser) Check(natsserver.ClientAuthentication) bool {
	select {
	case r.attempts <- struct{}{}:
	default:
	}
	return false
}

// startRefusingNATS runs a NATS server on port that refuses every
// client's credentials (Authorization Violation), and returns it with a
// channel told of each attempt (some hundred kept).
func startRefusingNATS(t *testing.T, port int) (*natsserver.Server, <-chan struct{}) {
	t.Helper()
	r := refuser{attempts: make(chan struct{}, 128)}
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		CustomClientAuthentication: r})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return ns, r.attempts
}

// awaitAttempts waits until n more attempts were made at a server of
// startRefusingNATS: each after the one before was refused and its
// refusal handed on by the client.
func awaitAttempts(t *testing.T, attempts <-chan struct{}, n int) {
	t.Helper()
	deadline := time.After(time.Duration(n) * 5 * time.Second)
	for i := range n {
		select {
		case <-attempts:
		case <-deadline:
			t.Fatalf("%d attempts at the refusing server, want %d", i, n)
		}
	}
}

// refusalsEnded reads, from the line of logs that says a refusal of the
// credentials ended, how many refusals it counted (-1: no such line).
func refusalsEnded(t *testing.T, logs *testkit.LogBuffer) int {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !strings.Contains(line, "admits this service's credentials again") {
			continue
		}
		var l struct{ Refusals int }
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		return l.Refusals
	}
	return -1
}

// TestRelayOutlastsRefusedCredentials: NATS comes back from a restart
// refusing coreapi's credentials for a while (an account resolver or an
// auth callout not ready yet, a configuration rolled back), then admits
// them again. The client's default gives up for good after the same
// authorization error twice from a server: the relay would never publish
// again, every later change waiting in the outbox until coreapi restarts
// while the proxies, connected, trust their caches for the whole TTL.
func TestRelayOutlastsRefusedCredentials(t *testing.T) {
	db := dbtest.New(t)
	ns, port := startAuthNATS(t, -1, "pw")
	url := "nats://coreapi:pw@127.0.0.1:" + strconv.Itoa(port)
	run, err := startRelay(config.Config{NATSURL: url}, slog.New(slog.NewJSONHandler(io.Discard, nil)), db.Pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	defer func() { cancel(); <-done }()

	ns.Shutdown()
	ns.WaitForShutdown()
	refusing, attempts := startRefusingNATS(t, port)
	// Several reconnection attempts are refused: the client's default
	// gave up at the second.
	awaitAttempts(t, attempts, 3)
	refusing.Shutdown()
	refusing.WaitForShutdown()
	ns, _ = startAuthNATS(t, port, "pw")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	expectRelayed(t, url, db, 10*time.Second, "after NATS admitted the relay again")
}

// TestRelayStopLogsNoWarning: stopping the relay closes its NATS
// connection, which is no lost link: no "nats disconnected" warning (it
// came with a null error on every clean stop).
func TestRelayStopLogsNoWarning(t *testing.T) {
	db := dbtest.New(t)
	ns, port := startAuthNATS(t, -1, "pw")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	var buf testkit.LogBuffer
	run, err := startRelay(config.Config{NATSURL: "nats://coreapi:pw@127.0.0.1:" + strconv.Itoa(port)},
		slog.New(slog.NewJSONHandler(&buf, nil)), db.Pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	// Connected (in the background) before the stop: that connection's
	// close is what must not warn.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), `"msg":"nats connected"`) {
		if time.Now().After(deadline) {
			t.Fatalf("not connected within 10 s:\n%s", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if strings.Contains(buf.String(), `"level":"WARN"`) {
		t.Fatalf("a clean stop logged a warning:\n%s", buf.String())
	}
}

// TestRelayStartWaitsOnNoSilentServer: startRelay tried every server of
// NATS_URL before it returned, and one that accepts and never answers (a
// partition, a stale address) held coreapi's start 2 s each, 6 s for
// three. It now returns at once; the relay connects in the background to
// the server that answers and publishes there.
func TestRelayStartWaitsOnNoSilentServer(t *testing.T) {
	db := dbtest.New(t)
	ns, port := startAuthNATS(t, -1, "pw")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	good := "nats://coreapi:pw@127.0.0.1:" + strconv.Itoa(port)
	url := strings.Join([]string{"nats://" + silent.Addr(t), "nats://" + silent.Addr(t), "nats://" + silent.Addr(t), good}, ",")
	begin := time.Now()
	run, err := startRelay(config.Config{NATSURL: url}, slog.New(slog.NewJSONHandler(io.Discard, nil)), db.Pool, nil)
	took := time.Since(begin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("startRelay returned after %v", took)
	if took > 500*time.Millisecond {
		t.Errorf("startRelay returned after %v with three silent servers, want at once", took)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	defer func() { cancel(); <-done }()

	// The silent servers are tried in the background (2 s each at most,
	// in the client's random order) before or after the one that answers.
	expectRelayed(t, good, db, 15*time.Second, "with silent servers beside the one that answers")
}

// TestRefusedPublicationsAreLoggedOncePerSubject: NATS's permissions refuse
// a subject the relay publishes (auth.keys.changed, to a user granted
// auth.invalidate.> only). The connection's error handler logged every
// refused message as a warning, and the relay tried the batch again at
// every notification and poll: 40 pending rows of that subject wrote 40
// lines at each attempt, for as long as the refusal lasted. The refusal
// is now the relay's to report, at error level (the events are not
// delivered), naming each refused subject once per attempt, and the
// attempts back off (1 s, then 2 s, ...).
func TestRefusedPublicationsAreLoggedOncePerSubject(t *testing.T) {
	db := dbtest.New(t)
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: "coreapi", Password: "pw", Permissions: &natsserver.Permissions{
			Publish: &natsserver.SubjectPermission{Allow: []string{invalidation.SubjectWildcard}},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	var buf testkit.LogBuffer
	run, err := startRelay(config.Config{NATSURL: "nats://coreapi:pw@" + ns.Addr().String()},
		slog.New(slog.NewJSONHandler(&buf, nil)), db.Pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	defer func() { cancel(); <-done }()

	rows := make([]outbox.Row, 40)
	for i := range rows {
		rows[i] = outbox.Row{Subject: invalidation.SubjectKeysChanged, Reason: invalidation.ReasonKeysChanged}
	}
	if err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
		return outbox.Write(context.Background(), tx, rows...)
	}); err != nil {
		t.Fatal(err)
	}
	// Attempts at once, 1 s and 3 s later (a poll every second
	// meanwhile): the third's report is awaited.
	type report struct {
		Time       time.Time
		Level, Msg string
		Subjects   []string
		RetryIn    time.Duration `json:"retry_in"`
	}
	var reports []report
	var lines []string
	eventually.Within(t, 10*time.Second, func() error {
		reports, lines = nil, strings.Split(strings.TrimSpace(buf.String()), "\n")
		for _, line := range lines {
			var r report
			if err := json.Unmarshal([]byte(line), &r); err == nil && strings.HasPrefix(r.Msg, "nats refuses outbox publications") {
				reports = append(reports, r)
			}
		}
		if len(reports) < 3 {
			return fmt.Errorf("%d refused batches reported, want 3", len(reports))
		}
		return nil
	})
	// One line an attempt, at error, naming the subject once: none from
	// the connection's handler (40 a refused batch).
	named := 0
	for _, line := range lines {
		if strings.Contains(line, invalidation.SubjectKeysChanged) {
			named++
		}
	}
	for _, r := range reports {
		if r.Level != "ERROR" || !slices.Equal(r.Subjects, []string{invalidation.SubjectKeysChanged}) {
			t.Errorf("refusal reported at %s naming %q, want at ERROR naming %s", r.Level, r.Subjects, invalidation.SubjectKeysChanged)
		}
	}
	if named != len(reports) {
		t.Errorf("%d lines name the refused subject over %d refused batches, want one a batch:\n%s", named, len(reports), buf.String())
	}
	// Each report is written just after its wait began (10 ms allowed
	// between the two), and the next attempt starts once it is over.
	for i, r := range reports[:2] {
		if want := time.Second << i; r.RetryIn != want {
			t.Errorf("the relay waited %v after refused batch %d, want %v", r.RetryIn, i+1, want)
		}
		if gap := reports[i+1].Time.Sub(r.Time); gap < r.RetryIn-10*time.Millisecond {
			t.Errorf("refused batch %d reported %v after the one before, want at least its %v wait", i+2, gap, r.RetryIn)
		}
	}
}

// expectRelayed subscribes to the invalidations on the NATS server at url,
// writes one outbox row for user u1 and fails the test (saying when: what)
// unless the relay publishes it there within wait.
func expectRelayed(t *testing.T, url string, db *dbtest.DB, wait time.Duration, what string) {
	t.Helper()
	sub, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got, err := sub.SubscribeSync(invalidation.SubjectWildcard)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
		return outbox.Write(context.Background(), tx, outbox.Row{Subject: invalidation.UserSubject("u1"), Reason: "test"})
	}); err != nil {
		t.Fatal(err)
	}
	msg, err := got.NextMsg(wait)
	if err != nil {
		t.Fatalf("no invalidation published %s: %v", what, err)
	}
	if msg.Subject != invalidation.UserSubject("u1") {
		t.Fatalf("published %s %s, want %s", msg.Subject, what, invalidation.UserSubject("u1"))
	}
}

// TestRefusedCredentialsLoggedOnce: NATS refuses the relay's credentials
// (a password rotated on one side only), at the start and after a
// restart. The client reports the refusal at every reconnection attempt,
// about two a second forever, and the connection's handler logged each
// as a warning; at the start, before any connection, it reported none,
// and nothing said why the relay could not publish. The refusal is now
// one error naming it and what to fix (reminders at most once a minute),
// and its end one line.
func TestRefusedCredentialsLoggedOnce(t *testing.T) {
	db := dbtest.New(t)
	t.Run("after a restart", func(t *testing.T) {
		ns, port := startAuthNATS(t, -1, "pw")
		url := "nats://coreapi:pw@127.0.0.1:" + strconv.Itoa(port)
		logs := runRelayLogged(t, url, db)
		expectRelayed(t, url, db, 10*time.Second, "before the restart")
		ns.Shutdown()
		ns.WaitForShutdown()
		refusing, attempts := startRefusingNATS(t, port)
		awaitAttempts(t, attempts, 4)
		refusing.Shutdown()
		refusing.WaitForShutdown()
		ns, _ = startAuthNATS(t, port, "pw")
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		expectRelayed(t, url, db, 10*time.Second, "after NATS admitted the relay again")
		// The line that says the refusal ended comes after every refusal
		// the client handed on: at least the first three attempts'.
		wantRefusalLoggedOnce(t, logs, 3)
	})
	t.Run("from the start", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		refusing, attempts := startRefusingNATS(t, port)
		url := "nats://coreapi:pw@127.0.0.1:" + strconv.Itoa(port)
		logs := runRelayLogged(t, url, db)
		awaitAttempts(t, attempts, 4)
		refusing.Shutdown()
		refusing.WaitForShutdown()
		ns, _ := startAuthNATS(t, port, "pw")
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		expectRelayed(t, url, db, 10*time.Second, "after NATS admitted the relay")
		wantRefusalLoggedOnce(t, logs, 1)
	})
}

// wantRefusalLoggedOnce fails the test unless logs name a refusal of the
// credentials in one line, an error saying what to fix, and its end in
// one line counting at least least refusals.
func wantRefusalLoggedOnce(t *testing.T, logs *testkit.LogBuffer, least int) {
	t.Helper()
	refusals, errs, ended := natsauthtest.RefusalLines(logs)
	if counted := refusalsEnded(t, logs); refusals != 1 || errs != 1 || ended != 1 || counted < least {
		t.Fatalf("%d lines name the refusal (%d errors saying what to fix), %d say it ended, after %d refusals counted; want 1, 1, 1 after %d at least:\n%s",
			refusals, errs, ended, counted, least, logs.String())
	}
}

// runRelayLogged runs the relay of url until the test ends, and returns
// its log.
func runRelayLogged(t *testing.T, url string, db *dbtest.DB) *testkit.LogBuffer {
	t.Helper()
	return runRelayHooked(t, url, db, relayHooks{})
}

// runRelayHooked is runRelayLogged with h.
func runRelayHooked(t *testing.T, url string, db *dbtest.DB, h relayHooks) *testkit.LogBuffer {
	t.Helper()
	logs := &testkit.LogBuffer{}
	run, err := startRelayHooked(config.Config{NATSURL: url}, slog.New(slog.NewJSONHandler(logs, nil)), db.Pool, nil, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return logs
}

// TestUnreachableServerLoggedOnce: coreapi starts with no NATS server at
// its URL (connection refused), then one starts there. The client reports
// each failed attempt to the reconnect error handler alone, which was not
// set: the relay's log said "nats not connected", naming neither the
// server nor the cause. Now one warning names the URL (its password
// masked) and the cause, reminders come at most once a minute, and one
// info line names the URL once the connection is made.
func TestUnreachableServerLoggedOnce(t *testing.T) {
	db := dbtest.New(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	url := "nats://coreapi:pw@127.0.0.1:" + strconv.Itoa(port)
	masked := "nats://coreapi:xxxxx@127.0.0.1:" + strconv.Itoa(port)
	failed := make(chan error, 128)
	logs := runRelayHooked(t, url, db, relayHooks{failed: func(err error) {
		if !errors.Is(err, natsdial.ErrNotYet) { // nats.Connect's own pass, no attempt
			select {
			case failed <- err:
			default:
			}
		}
	}})
	// Four attempts fail, each reported (and logged, or not) before the
	// hook is told.
	for i := range 4 {
		select {
		case <-failed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d failed attempts reported, want 4:\n%s", i, logs.String())
		}
	}
	if warns, infos := natsauthtest.URLLines(t, logs, masked); warns != 1 || infos != 0 {
		t.Fatalf("%d warnings and %d info lines name %s after four failed attempts, want 1 and 0:\n%s", warns, infos, masked, logs.String())
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Fatalf("the warning does not say why:\n%s", logs.String())
	}
	ns, _ := startAuthNATS(t, port, "pw")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	expectRelayed(t, url, db, 10*time.Second, "once NATS was up")
	if warns, infos := natsauthtest.URLLines(t, logs, masked); warns != 1 || infos != 1 {
		t.Fatalf("%d warnings and %d info lines name %s, want 1 and 1:\n%s", warns, infos, masked, logs.String())
	}
	// The info line counts the failures that one warning stood for.
	for _, line := range strings.Split(logs.String(), "\n") {
		var l struct {
			Msg, URL string
			Failures int
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.URL == masked && l.Msg == "nats connected to its server after failed attempts" && l.Failures < 4 {
			t.Fatalf("the connection counted %d failures, want the four awaited at least: %s", l.Failures, line)
		}
	}
}

// TestBacklogGauges: while NATS is down, the rows the writes leave in
// the outbox pile up, and coreapi's metrics said only that batches
// failed. coreapi_outbox_pending_rows and
// coreapi_outbox_oldest_pending_age_seconds now show how many rows wait
// and how old the oldest is (growing while the outage lasts), and go back
// to 0 once NATS is back and the relay has published them.
func TestBacklogGauges(t *testing.T) {
	db := dbtest.New(t)
	ns, port := startAuthNATS(t, -1, "pw")
	url := "nats://coreapi:pw@127.0.0.1:" + strconv.Itoa(port)
	reg := prometheus.NewRegistry()
	run, err := startRelayHooked(config.Config{NATSURL: url}, slog.New(slog.NewJSONHandler(io.Discard, nil)), db.Pool, reg,
		relayHooks{backlogEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	defer func() { cancel(); <-done }()
	gauges := func() (rows, age float64, err error) {
		mfs, err := reg.Gather()
		if err != nil {
			return 0, 0, err
		}
		found := 0
		for _, mf := range mfs {
			switch mf.GetName() {
			case "coreapi_outbox_pending_rows":
				rows, found = mf.GetMetric()[0].GetGauge().GetValue(), found+1
			case "coreapi_outbox_oldest_pending_age_seconds":
				age, found = mf.GetMetric()[0].GetGauge().GetValue(), found+1
			}
		}
		if found != 2 {
			return 0, 0, fmt.Errorf("%d of the two backlog gauges registered", found)
		}
		return rows, age, nil
	}
	expectRelayed(t, url, db, 10*time.Second, "before the outage")

	ns.Shutdown()
	ns.WaitForShutdown()
	const written = 3
	for i := range written {
		if err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
			return outbox.Write(context.Background(), tx, outbox.Row{Subject: invalidation.UserSubject("u" + strconv.Itoa(i)), Reason: "test"})
		}); err != nil {
			t.Fatal(err)
		}
	}
	var firstAge float64
	eventually.Within(t, 10*time.Second, func() error {
		rows, age, err := gauges()
		if err == nil && (rows != written || age <= 0) {
			err = fmt.Errorf("pending rows %v, oldest age %v s while NATS is down, want %d and above 0", rows, age, written)
		}
		firstAge = age
		return err
	})
	eventually.Within(t, 10*time.Second, func() error {
		rows, age, err := gauges()
		if err == nil && (rows != written || age < firstAge+0.2) {
			err = fmt.Errorf("pending rows %v, oldest age %v s while NATS is down, want %d and at least %v", rows, age, written, firstAge+0.2)
		}
		return err
	})

	ns, _ = startAuthNATS(t, port, "pw")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	eventually.Within(t, 15*time.Second, func() error {
		rows, age, err := gauges()
		if err == nil && (rows != 0 || age != 0) {
			err = fmt.Errorf("pending rows %v, oldest age %v s after NATS is back, want 0 and 0", rows, age)
		}
		return err
	})
}
