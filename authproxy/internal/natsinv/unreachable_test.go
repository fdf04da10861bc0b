package natsinv

import (
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
	"github.com/tollgate-auth/tollgate/shared/natsauth/natsauthtest"
	"github.com/tollgate-auth/tollgate/shared/natsdial"
)

// closedPort returns a port of 127.0.0.1 that nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// TestUnreachableServerLoggedOnce: the proxy starts with no NATS server
// at its URL (connection refused), then one starts there. The client
// reports each failed attempt to the reconnect error handler alone, which
// was not set: the log named neither the server nor the cause, however
// long the feed stayed down. Now one warning names the URL (its password
// masked) and the cause, reminders come at most once a minute, and one
// info line names the URL once the connection is made.
func TestUnreachableServerLoggedOnce(t *testing.T) {
	port := closedPort(t)
	masked := "nats://authproxy:xxxxx@127.0.0.1:" + strconv.Itoa(port)
	failed := make(chan error, 128)
	logs := &logbuffer.Buffer{}
	s := connectHooked(t, "nats://authproxy:pw@127.0.0.1:"+strconv.Itoa(port), logs, func(err error) {
		if !errors.Is(err, natsdial.ErrNotYet) { // nats.Connect's own pass, no attempt
			select {
			case failed <- err:
			default:
			}
		}
	})
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
	startUserServer(t, port, "pw")
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	testenv.Eventually(t, func() error {
		warns, infos := natsauthtest.URLLines(t, logs, masked)
		return testenv.Want("warnings and info lines naming the URL", [2]int{warns, infos}, [2]int{1, 1})
	})
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

// TestFailedHandshakeLoggedOnce: a server is there but the handshake
// fails (a tls:// URL, a server without TLS), which the client reports to
// no handler at all. One warning names the URL and the cause.
func TestFailedHandshakeLoggedOnce(t *testing.T) {
	ns, port := startUserServer(t, -1, "pw")
	url := "tls://authproxy:pw@127.0.0.1:" + strconv.Itoa(port)
	logs := &logbuffer.Buffer{}
	s := connectURL(t, url, logs)
	// Five handshakes fail (the server accepts each connection): the
	// client goes on to the next only once the one before failed.
	testenv.Eventually(t, func() error {
		varz, err := ns.Varz(nil)
		if err != nil {
			return err
		}
		return testenv.WantAtLeast("connections accepted", varz.TotalConnections, 5)
	})
	if s.Connected() {
		t.Fatal("connected over tls:// to a server without TLS")
	}
	masked := "tls://authproxy:xxxxx@127.0.0.1:" + strconv.Itoa(port)
	if warns, _ := natsauthtest.URLLines(t, logs, masked); warns != 1 {
		t.Fatalf("%d warnings name %s after five failed handshakes, want 1:\n%s", warns, masked, logs.String())
	}
	if !strings.Contains(logs.String(), "secure connection not available") {
		t.Fatalf("the warning does not say why:\n%s", logs.String())
	}
}
