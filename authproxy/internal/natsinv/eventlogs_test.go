package natsinv

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
)

// TestEventWarningsBounded: the warnings an event's own content causes
// (a body that is not JSON, a subject under auth.invalidate.> the proxy
// does not understand, a heartbeat row whose body is not JSON) are at
// most eventLogsPerSecond a second, whoever publishes how many such
// events; the ones left out are counted in a line of their own, written
// at the latest when the subscriber closes. Each event still has its
// effect.
func TestEventWarningsBounded(t *testing.T) {
	const sent = 1000
	for _, tc := range []struct {
		name, subject, body, msg, kind string
		row                            bool // a heartbeat row (Nats-Msg-Id)
	}{
		{"body not JSON", invalidation.UserSubject("u1"), "not json", `"msg":"invalidation body"`, "user", false},
		{"subject not understood", "auth.invalidate.widget.w1", "{}", `"msg":"invalidation subject not understood; purging caches"`, "unknown", false},
		{"heartbeat row not JSON", invalidation.SubjectHeartbeat, "not json", `"msg":"outbox heartbeat body"`, "heartbeat", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testenv.StartNATS(t)
			m := metrics.New()
			var buf logbuffer.Buffer
			s, pub := connectLogged(t, n, Options{HeartbeatTimeout: time.Hour}, newRecorder(t), m, slog.New(slog.NewJSONHandler(&buf, nil)))
			testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
			start := time.Now()
			for i := range sent {
				msg := nats.NewMsg(tc.subject)
				msg.Data = []byte(tc.body)
				if tc.row {
					msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("hb-%d", i))
				}
				if err := pub.PublishMsg(msg); err != nil {
					t.Fatal(err)
				}
			}
			if err := pub.Flush(); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, func() error {
				return testenv.Want("events handled", testutil.ToFloat64(m.Invalidations.WithLabelValues(tc.kind)), float64(sent))
			})
			allowed := eventLogsPerSecond * int(time.Now().Unix()-start.Unix()+1)
			if err := s.Close(time.Second); err != nil {
				t.Fatal(err)
			}
			written, counted := 0, int64(0)
			for _, line := range strings.Split(buf.String(), "\n") {
				if strings.Contains(line, tc.msg) {
					written++
				}
				var rec struct {
					Msg   string
					Count int64
				}
				if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "nats event lines not logged" {
					counted += rec.Count
				}
			}
			if written == 0 || written > allowed {
				t.Fatalf("%d warnings written for %d events, want 1 to %d", written, sent, allowed)
			}
			if int64(written)+counted != sent {
				t.Fatalf("%d warnings written and %d counted as left out, want %d in all", written, counted, sent)
			}
		})
	}
}

// TestHeartbeatRowLinesBounded: heartbeat rows (anything published on
// auth.outbox.heartbeat with a Nats-Msg-Id) that alternate between
// listing every relay and not, or that each announce a longer interval
// than NATS_HEARTBEAT_TIMEOUT allows, wrote a line each ("coreapi runs
// more outbox relays than a heartbeat lists", "every outbox relay is
// listed in the heartbeat again", "NATS_HEARTBEAT_TIMEOUT is too
// short"): they are bounded as the other lines events cause, and the
// ones left out counted.
func TestHeartbeatRowLinesBounded(t *testing.T) {
	const sent = 1000
	n := testenv.StartNATS(t)
	m := metrics.New()
	var buf logbuffer.Buffer
	s, pub := connectLogged(t, n, Options{HeartbeatTimeout: time.Second}, newRecorder(t), m, slog.New(slog.NewJSONHandler(&buf, nil)))
	testenv.Eventually(t, func() error { return testenv.Want("connected", s.Connected(), true) })
	start := time.Now()
	for i := range sent {
		ev := invalidation.Event{At: time.Now().UnixMilli(), Relays: []string{"r1"}, RelaysUnlisted: i % 2,
			IntervalMS: int64(time.Hour/time.Millisecond) + int64(i)}
		b, _ := json.Marshal(ev)
		msg := nats.NewMsg(invalidation.SubjectHeartbeat)
		msg.Data = b
		msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("hb-%d", i))
		if err := pub.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, func() error {
		return testenv.Want("heartbeats handled", testutil.ToFloat64(m.Invalidations.WithLabelValues("heartbeat")), float64(sent))
	})
	allowed := eventLogsPerSecond * int(time.Now().Unix()-start.Unix()+1)
	if err := s.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	written, counted := 0, int64(0)
	for _, line := range strings.Split(buf.String(), "\n") {
		for _, msg := range []string{`"msg":"coreapi runs more outbox relays`, `"msg":"every outbox relay is listed`, `"msg":"NATS_HEARTBEAT_TIMEOUT is too short`} {
			if strings.Contains(line, msg) {
				written++
			}
		}
		var rec struct {
			Msg   string
			Count int64
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "nats event lines not logged" {
			counted += rec.Count
		}
	}
	if written == 0 || written > allowed {
		t.Fatalf("%d lines written for %d heartbeat rows, want 1 to %d", written, sent, allowed)
	}
	if got := testutil.ToFloat64(m.HeartbeatTimeoutShort); got != 1 {
		t.Fatalf("authproxy heartbeat timeout short = %v, want 1", got)
	}
	if counted == 0 {
		t.Fatalf("%d lines written and none counted as left out", written)
	}
}
