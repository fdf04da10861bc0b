package natsreach

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
	"github.com/tollgate-auth/tollgate/shared/natsdial"
)

// TestOneLineAFailureAndAReminderAMinute: failed attempts (one a second
// for three minutes) make one warning naming the URL and the cause, a
// reminder each minute, and one line when a connection is made; the next
// failure starts over. What is no failure to reach the server says
// nothing.
func TestOneLineAFailureAndAReminderAMinute(t *testing.T) {
	var buf logbuffer.Buffer
	now := time.Unix(1_000_000, 0)
	r := New(slog.New(slog.NewJSONHandler(&buf, nil)), "nats://coreapi:secret@nats-0:4222", func() time.Time { return now })
	for _, err := range []error{nil, natsdial.ErrNotYet, fmt.Errorf("nats: %w", natsdial.ErrNotYet), nats.ErrAuthorization,
		errors.New("nats: Authorization Violation"), nats.ErrPermissionViolation, nats.ErrMaxSubscriptionsExceeded} {
		r.Failed(err)
	}
	r.Connected() // none going on: nothing said
	if buf.String() != "" {
		t.Fatalf("no failure to reach the server, but:\n%s", buf.String())
	}
	refused := errors.New("dial tcp 10.0.0.1:4222: connect: connection refused")
	for range 180 {
		r.Failed(refused)
		now = now.Add(time.Second)
	}
	r.Connected()
	r.Connected()
	r.Failed(errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{"cannot connect", "still cannot connect", "still cannot connect", "connected to its server", "cannot connect"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) || !strings.Contains(lines[i], `"url":"nats://coreapi:xxxxx@nats-0:4222"`) {
			t.Errorf("line %d = %s, want %q and the URL, masked", i, lines[i], w)
		}
		if w != "connected to its server" && (!strings.Contains(lines[i], `"level":"WARN"`) || !strings.Contains(lines[i], `"err":`)) {
			t.Errorf("line %d = %s, want a warning with the cause", i, lines[i])
		}
	}
	if !strings.Contains(lines[3], `"failures":180`) || !strings.Contains(lines[3], `"level":"INFO"`) {
		t.Errorf("end of the failures = %s, want an info line with their count (180)", lines[3])
	}
	if strings.Contains(buf.String(), "secret") {
		t.Errorf("the password is in the log:\n%s", buf.String())
	}
}

// TestMaskURLs: each URL of a list is masked as the services print a URL
// setting.
func TestMaskURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                       "nats://127.0.0.1:4222",
		"nats://authproxy:pw@nats:4222":               "nats://authproxy:xxxxx@nats:4222",
		"nats://token@nats:4222":                      "nats://xxxxx@nats:4222",
		"tls://a:pw@n1:4222, tls://a:pw@n2:4222":      "tls://a:xxxxx@n1:4222,tls://a:xxxxx@n2:4222",
		"nats://u:p%zz@nats:4222,nats://u:pw@n2:4222": "********,nats://u:xxxxx@n2:4222",
	} {
		if got := MaskURLs(in); got != want {
			t.Errorf("MaskURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
