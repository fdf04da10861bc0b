package natsinv

import (
	"encoding/json"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
	"github.com/tollgate-auth/tollgate/shared/natsauth/natsauthtest"
)

// startUserServer runs a NATS server on port (-1: a free one) that admits
// user authproxy with password pw only, and returns it with its port.
func startUserServer(t *testing.T, port int, pw string) (*natsserver.Server, int) {
	t.Helper()
	ns := startServer(t, &natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: "authproxy", Password: pw}}})
	return ns, ns.Addr().(*net.TCPAddr).Port
}

// refuser is a NATS server's authentication that refuses every client,
// as a server that has another password for the proxy does, and tells of
// each attempt on attempts.
type refuser struct{ attempts chan struct{} }

func (r refuser) Check(natsserver.ClientAuthentication) bool {
	select {
	case r.attempts <- struct{}{}:
	default:
	}
	return false
}

// startRefusingServer runs a NATS server on port (-1: a free one) that
// refuses every client's credentials (Authorization Violation), and
// returns it with its port and a channel told of each attempt (some
// hundred kept).
func startRefusingServer(t *testing.T, port int) (*natsserver.Server, int, <-chan struct{}) {
	t.Helper()
	r := refuser{attempts: make(chan struct{}, 128)}
	ns := startServer(t, &natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true, CustomClientAuthentication: r})
	return ns, ns.Addr().(*net.TCPAddr).Port, r.attempts
}

// awaitAttempts waits until n more attempts were made at a server of
// startRefusingServer: each after the one before was refused and its
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

// wantRefusalLoggedOnce fails the test unless logs name a refusal of the
// credentials in one line, an error saying what to fix, and its end in
// one line counting at least least refusals.
func wantRefusalLoggedOnce(t *testing.T, logs *logbuffer.Buffer, least int) {
	t.Helper()
	refusals, errs, ended := natsauthtest.RefusalLines(logs)
	counted := -1
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var l struct{ Refusals int }
		if strings.Contains(line, "admits this service's credentials again") && json.Unmarshal([]byte(line), &l) == nil {
			counted = l.Refusals
		}
	}
	if refusals != 1 || errs != 1 || ended != 1 || counted < least {
		t.Fatalf("%d lines name the refusal (%d errors saying what to fix), %d say it ended, after %d refusals counted; want 1, 1, 1 after %d at least:\n%s",
			refusals, errs, ended, counted, least, logs.String())
	}
}

// TestRefusedCredentialsLoggedOnce: NATS refuses the proxy's credentials
// (a password rotated on one side only), at the start and after a
// restart. The client reports the refusal at every reconnection attempt
// and the connection's handler logged each as a warning, forever (one
// each MaxReconnect, here 100 ms); at the start, before any connection,
// it reported none, and nothing said why the feed was down. The refusal
// is now one error naming it and what to fix (reminders at most once a
// minute), and its end one line; authproxy_nats_connected stays the
// signal.
func TestRefusedCredentialsLoggedOnce(t *testing.T) {
	t.Run("after a restart", func(t *testing.T) {
		ns, port := startUserServer(t, -1, "pw")
		s, logs := connectRefusable(t, port)
		testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
		ns.Shutdown()
		ns.WaitForShutdown()
		refusing, _, attempts := startRefusingServer(t, port)
		awaitAttempts(t, attempts, 4)
		refusing.Shutdown()
		refusing.WaitForShutdown()
		startUserServer(t, port, "pw")
		testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
		testenv.Eventually(t, func() error {
			_, _, ended := natsauthtest.RefusalLines(logs)
			return testenv.Want("lines saying the refusal ended", ended, 1)
		})
		// The line that says the refusal ended comes after every refusal
		// the client handed on: at least the first three attempts'.
		wantRefusalLoggedOnce(t, logs, 3)
	})
	t.Run("from the start", func(t *testing.T) {
		refusing, port, attempts := startRefusingServer(t, -1)
		s, logs := connectRefusable(t, port)
		awaitAttempts(t, attempts, 4)
		refusing.Shutdown()
		refusing.WaitForShutdown()
		startUserServer(t, port, "pw")
		testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
		testenv.Eventually(t, func() error {
			_, _, ended := natsauthtest.RefusalLines(logs)
			return testenv.Want("lines saying the refusal ended", ended, 1)
		})
		// Before the first connection the refusals are read from the
		// connection's last error, one poll at a time: at least one.
		wantRefusalLoggedOnce(t, logs, 1)
	})
}

// connectRefusable connects a subscriber as authproxy with password pw to
// the server on port, trying again every 100 ms at most, and returns it
// with its log.
func connectRefusable(t *testing.T, port int) (*Subscriber, *logbuffer.Buffer) {
	t.Helper()
	logs := &logbuffer.Buffer{}
	return connectURL(t, "nats://authproxy:pw@127.0.0.1:"+strconv.Itoa(port), logs), logs
}

// connectURL connects a subscriber to url, trying again every 100 ms at
// most, logging to logs.
func connectURL(t *testing.T, url string, logs *logbuffer.Buffer) *Subscriber {
	t.Helper()
	return connectHooked(t, url, logs, nil)
}

// connectHooked is connectURL with failed told of each failed attempt
// the client reports (Options.failed).
func connectHooked(t *testing.T, url string, logs *logbuffer.Buffer, failed func(error)) *Subscriber {
	t.Helper()
	s, err := Connect(Options{URL: url, failed: failed,
		ReconnectWait: 50 * time.Millisecond, MaxReconnect: 100 * time.Millisecond, DropCheck: 10 * time.Millisecond},
		newRecorder(t), slog.New(slog.NewJSONHandler(logs, nil)), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(time.Second) })
	return s
}

// TestRefusedAtStartOnePoll: before the first connection one poll of
// the connection's last error reports both what the client gives no
// handler: refused credentials, to the credentials' reporter, and
// failed handshakes, to the unreachable server's. A proxy started
// against a server that refuses its password logs the refusal once, as
// a refusal (no warning that the server cannot be reached), reports the
// feed down (authproxy_nats_connected 0, not connected) meanwhile, and
// once admitted reports it up and logs the refusal's end.
func TestRefusedAtStartOnePoll(t *testing.T) {
	refusing, port, attempts := startRefusingServer(t, -1)
	logs := &logbuffer.Buffer{}
	m := metrics.New()
	s, err := Connect(Options{URL: "nats://authproxy:pw@127.0.0.1:" + strconv.Itoa(port),
		ReconnectWait: 50 * time.Millisecond, MaxReconnect: 100 * time.Millisecond, DropCheck: 10 * time.Millisecond},
		newRecorder(t), slog.New(slog.NewJSONHandler(logs, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(time.Second) })
	masked := "nats://authproxy:xxxxx@127.0.0.1:" + strconv.Itoa(port)
	testenv.Eventually(t, func() error {
		refusals, errs, _ := natsauthtest.RefusalLines(logs)
		return testenv.Want("refusal lines (errors saying what to fix)", [2]int{refusals, errs}, [2]int{1, 1})
	})
	// Some attempts more, after the line: those made before it go.
	for len(attempts) > 0 {
		<-attempts
	}
	awaitAttempts(t, attempts, 5)
	if refusals, errs, _ := natsauthtest.RefusalLines(logs); refusals != 1 || errs != 1 {
		t.Fatalf("%d lines name the refusal (%d errors saying what to fix), want 1:\n%s", refusals, errs, logs.String())
	}
	if warns, _ := natsauthtest.URLLines(t, logs, masked); warns != 0 {
		t.Fatalf("%d warnings call the refusing server unreachable, want none:\n%s", warns, logs.String())
	}
	if s.Connected() || testutil.ToFloat64(m.NATSConnected) != 0 {
		t.Fatalf("connected %v, authproxy_nats_connected %v while refused, want false and 0", s.Connected(), testutil.ToFloat64(m.NATSConnected))
	}
	refusing.Shutdown()
	refusing.WaitForShutdown()
	startUserServer(t, port, "pw")
	testenv.Eventually(t, func() error {
		return testenv.Want("connected, authproxy_nats_connected", [2]any{s.Connected(), testutil.ToFloat64(m.NATSConnected)}, [2]any{true, 1.0})
	})
	testenv.Eventually(t, func() error {
		_, _, ended := natsauthtest.RefusalLines(logs)
		return testenv.Want("lines saying the refusal ended", ended, 1)
	})
}
