package natsauth

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// TestOneLineARefusalAndAReminderAMinute: refusals at every attempt (one a
// second for three minutes) make one error, a reminder each minute, and
// one line when a connection is made; the next refusal starts over.
func TestOneLineARefusalAndAReminderAMinute(t *testing.T) {
	var buf logbuffer.Buffer
	now := time.Unix(1_000_000, 0)
	r := New(slog.New(slog.NewJSONHandler(&buf, nil)), "fix it", func() time.Time { return now })
	if r.Refused(errors.New("nats: no servers available for connection")) {
		t.Fatal("another error taken for a refusal")
	}
	r.Admitted() // none going on: nothing said
	for range 180 {
		if !r.Refused(nats.ErrAuthorization) {
			t.Fatal("authorization violation not taken for a refusal")
		}
		now = now.Add(time.Second)
	}
	r.Admitted()
	r.Admitted()
	r.Refused(fmt.Errorf("nats: %w", nats.ErrAuthRevoked))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{"nats refuses", "nats still refuses", "nats still refuses", "admits", "nats refuses"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) || !strings.Contains(lines[i], "fix it") && w != "admits" {
			t.Errorf("line %d = %s, want %q and what to fix", i, lines[i], w)
		}
	}
	if !strings.Contains(lines[3], `"refusals":180`) {
		t.Errorf("end of the refusal = %s, want its count (180)", lines[3])
	}
}

// TestRefusalOfTheServersText: before the first connection, the
// connection's last error is the server's text, not the client's sentinel.
func TestRefusalOfTheServersText(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errors.New("nats: Authorization Violation"), true},
		{errors.New("nats: Authentication Expired"), true},
		{nats.ErrAccountAuthExpired, true},
		{nats.ErrPermissionViolation, false},
		{nats.ErrNoServers, false},
		{nil, false},
	} {
		if got := Refusal(tc.err); got != tc.want {
			t.Errorf("Refusal(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
