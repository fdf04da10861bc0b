package natsinv

import (
	"log/slog"
	"net"
	"strconv"
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
		refusing, _ := startUserServer(t, port, "another")
		// Some twenty attempts in 2 s.
		time.Sleep(2 * time.Second)
		if refusals, errs, _ := natsauthtest.RefusalLines(logs); refusals != 1 || errs != 1 {
			t.Fatalf("%d lines name the refusal in 2 s (%d errors saying what to fix), want 1:\n%s", refusals, errs, logs.String())
		}
		refusing.Shutdown()
		refusing.WaitForShutdown()
		startUserServer(t, port, "pw")
		testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
		testenv.Eventually(t, func() error {
			_, _, ended := natsauthtest.RefusalLines(logs)
			return testenv.Want("lines saying the refusal ended", ended, 1)
		})
	})
	t.Run("from the start", func(t *testing.T) {
		refusing, port := startUserServer(t, -1, "another")
		s, logs := connectRefusable(t, port)
		time.Sleep(2 * time.Second)
		if refusals, errs, _ := natsauthtest.RefusalLines(logs); refusals != 1 || errs != 1 {
			t.Fatalf("%d lines name the refusal in 2 s (%d errors saying what to fix), want 1:\n%s", refusals, errs, logs.String())
		}
		refusing.Shutdown()
		refusing.WaitForShutdown()
		startUserServer(t, port, "pw")
		testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
		testenv.Eventually(t, func() error {
			_, _, ended := natsauthtest.RefusalLines(logs)
			return testenv.Want("lines saying the refusal ended", ended, 1)
		})
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
	s, err := Connect(Options{URL: url,
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
	refusing, port := startUserServer(t, -1, "another")
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
	time.Sleep(time.Second) // some ten attempts more
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
