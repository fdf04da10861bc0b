package mail_test

import (
	"context"
	"log/slog"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// dataRefuser is an SMTP server that takes MAIL FROM and every RCPT TO
// and answers DATA as told: code (0: 354, then 250 after the message) to
// the DATA command itself, or, with afterBody, 354 and code once the
// message is sent, for the recipients onlyTo names ("" any).
type dataRefuser struct {
	addr      string
	code      atomic.Int32
	afterBody bool
	onlyTo    string
	accepted  atomic.Int32
}

func startDataRefuser(t *testing.T, afterBody bool, onlyTo string) *dataRefuser {
	t.Helper()
	d := &dataRefuser{afterBody: afterBody, onlyTo: onlyTo}
	d.addr = scriptedSMTP(t, func(tc *textproto.Conn) {
		if tc.PrintfLine("220 datarefuser ESMTP") != nil {
			return
		}
		var rcpt string
		for {
			line, err := tc.ReadLine()
			if err != nil {
				return
			}
			cmd := strings.ToUpper(line)
			code := int(d.code.Load())
			if d.onlyTo != "" && !strings.Contains(strings.ToLower(rcpt), d.onlyTo) {
				code = 0
			}
			switch {
			case strings.HasPrefix(cmd, "QUIT"):
				_ = tc.PrintfLine("221 bye")
				return
			case strings.HasPrefix(cmd, "RCPT TO:"):
				rcpt = line[len("RCPT TO:"):]
				err = tc.PrintfLine("250 ok")
			case strings.HasPrefix(cmd, "DATA") && code != 0 && !d.afterBody:
				err = tc.PrintfLine("%d 5.7.1 message refused by the test", code)
			case strings.HasPrefix(cmd, "DATA"):
				if err = tc.PrintfLine("354 go on"); err != nil {
					return
				}
				if _, err = tc.ReadDotBytes(); err != nil {
					return
				}
				if code != 0 {
					err = tc.PrintfLine("%d 5.7.1 message refused by the test", code)
				} else {
					d.accepted.Add(1)
					err = tc.PrintfLine("250 queued")
				}
			default:
				err = tc.PrintfLine("250 ok")
			}
			if err != nil {
				return
			}
		}
	})
	return d
}

// refusingMessages is coreapi_mail_server_refusing_messages in reg (-1:
// not registered).
func refusingMessages(reg *prometheus.Registry) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "coreapi_mail_server_refusing_messages" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// count runs q, a count, on r's database.
func (r *rig) count(t *testing.T, q string) int {
	t.Helper()
	var n int
	if err := r.db.Pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func dataStages() []struct {
	name      string
	afterBody bool
} {
	return []struct {
		name      string
		afterBody bool
	}{{"DATA", false}, {"end of DATA", true}}
}

// TestRelayRefusingEveryMessageAtDataHoldsTheQueue: a relay that takes
// every RCPT TO but answers 554 to DATA, or once the message is sent,
// refuses every mail for a reason none of them has. Once mails to two
// domains are refused so, with none accepted in between, the replica
// takes it for the server's, as for refused recipients: nothing is
// parked (the first refused mail included), every mail keeps its link,
// the batch ends and the queue is held back with an error logged and
// coreapi_mail_server_refusing_messages raised. Once the relay takes mail
// again every held mail goes out and the gauge falls.
func TestRelayRefusingEveryMessageAtDataHoldsTheQueue(t *testing.T) {
	for _, st := range dataStages() {
		t.Run(st.name, func(t *testing.T) {
			var sessions atomic.Int32
			relay := startDataRefuser(t, st.afterBody, "")
			relay.code.Store(554)
			r := newRig(t, mail.SenderOptions{})
			var logs strings.Builder
			reg := prometheus.NewRegistry()
			s := r.sender(t, mail.SenderOptions{Transport: countingTransport{mustSMTP(t, "smtp://"+relay.addr+"?starttls=off"), &sessions},
				Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Registerer: reg, BackoffBase: time.Hour})
			var msgs []mail.Message
			for _, to := range []string{"a@example.com", "b@example.org", "c@example.net", "d@example.com"} {
				m := verify
				m.To = to
				msgs = append(msgs, m)
			}
			r.enqueue(t, msgs...)
			if _, err := s.SendDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			rows := r.rows(t)
			for i, row := range rows[:2] {
				if row.Status != "pending" || row.Token == nil || row.Attempts != 1 || row.LastErr == nil || !strings.Contains(*row.LastErr, "554") {
					t.Errorf("mail %d, refused at DATA: %+v; want pending, token kept, 1 attempt, the 554 recorded", i+1, row)
				}
			}
			for i, row := range rows[2:] {
				if row.Status != "pending" || row.Token == nil || row.Attempts != 0 {
					t.Errorf("mail %d, not tried: %+v; want pending, token kept, 0 attempts", i+3, row)
				}
			}
			if got := sessions.Load(); got != 2 {
				t.Errorf("%d sessions opened, want 2 (the batch ends at the second refusal)", got)
			}
			if got := refusingMessages(reg); got != 1 {
				t.Errorf("coreapi_mail_server_refusing_messages = %v, want 1", got)
			}
			if !strings.Contains(logs.String(), "mail server refuses every message") {
				t.Errorf("no error logged for the server's refusal; log:\n%s", logs.String())
			}
			// While it lasts, a refusal at DATA is the server's whatever the
			// domain: nothing is parked.
			r.dueNow(t)
			if _, err := s.SendDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			for i, row := range r.rows(t) {
				if row.Status != "pending" || row.Token == nil {
					t.Errorf("mail %d while the relay refuses every message: %+v; want pending, token kept", i+1, row)
				}
			}
			relay.code.Store(0)
			for range 3 {
				r.dueNow(t)
				if _, err := s.SendDue(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			for i, row := range r.rows(t) {
				if row.Status != "sent" {
					t.Errorf("mail %d once the relay takes mail: %+v; want sent", i+1, row)
				}
			}
			if got := relay.accepted.Load(); got != 4 {
				t.Errorf("the relay accepted %d mails, want 4", got)
			}
			if got := refusingMessages(reg); got != 0 {
				t.Errorf("coreapi_mail_server_refusing_messages = %v once a mail went out, want 0", got)
			}
		})
	}
}

// TestOneMessageRefusedAtDataIsParked: a 5xx at DATA for one mail only
// (its content, its recipient's mailbox) is that mail's: once the relay
// accepts another mail, it is parked (not retried for ever), its token
// scrubbed, counted and logged; the other mail goes out.
func TestOneMessageRefusedAtDataIsParked(t *testing.T) {
	for _, st := range dataStages() {
		t.Run(st.name, func(t *testing.T) {
			relay := startDataRefuser(t, st.afterBody, "bad@example.com")
			relay.code.Store(554)
			r := newRig(t, mail.SenderOptions{})
			var logs strings.Builder
			reg := prometheus.NewRegistry()
			s := r.sender(t, mail.SenderOptions{Transport: mustSMTP(t, "smtp://"+relay.addr+"?starttls=off"),
				Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Registerer: reg, BackoffBase: time.Hour})
			bad, good := verify, verify
			bad.To, good.To = "bad@example.com", "good@example.org"
			r.enqueue(t, bad, good)
			if _, err := s.SendDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			rows := r.rows(t)
			if rows[0].Status != "parked" || rows[0].Token != nil || rows[0].LastErr == nil || !strings.Contains(*rows[0].LastErr, "554") {
				t.Errorf("the refused mail: %+v; want parked, token NULL, the 554 recorded", rows[0])
			}
			if rows[1].Status != "sent" {
				t.Errorf("the other mail: %+v; want sent", rows[1])
			}
			if got := failures(reg, "permanent"); got != 1 {
				t.Errorf("permanent failures %v, want 1", got)
			}
			if !strings.Contains(logs.String(), "mail parked") {
				t.Errorf("no log line for the parked mail:\n%s", logs.String())
			}
			if got := refusingMessages(reg); got != 0 {
				t.Errorf("coreapi_mail_server_refusing_messages = %v, want 0", got)
			}
		})
	}
}

// TestTemporaryRefusalAtDataIsRetried: a 4xx at DATA (or after the
// message) is retried with the backoff, never parked at once; the batch
// goes on.
func TestTemporaryRefusalAtDataIsRetried(t *testing.T) {
	for _, st := range dataStages() {
		t.Run(st.name, func(t *testing.T) {
			relay := startDataRefuser(t, st.afterBody, "")
			relay.code.Store(451)
			r := newRig(t, mail.SenderOptions{Transport: mustSMTP(t, "smtp://"+relay.addr+"?starttls=off"), BackoffBase: time.Hour})
			a, b := verify, verify
			a.To, b.To = "a@example.com", "b@example.org"
			r.enqueue(t, a, b)
			if n, err := r.s.SendDue(context.Background()); err != nil || n != 2 {
				t.Fatalf("SendDue = %d, %v; want both claimed", n, err)
			}
			for i, row := range r.rows(t) {
				if row.Status != "pending" || row.Token == nil || row.Attempts != 1 || row.LastErr == nil || !strings.Contains(*row.LastErr, "451") {
					t.Errorf("mail %d: %+v; want pending, token kept, 1 attempt, the 451 recorded", i+1, row)
				}
			}
			if n := r.count(t, `SELECT count(*) FROM mail_queue WHERE next_attempt_at > now() + interval '10 minutes'`); n != 2 {
				t.Errorf("%d mails due after the backoff (15 min, BackoffMax), want 2", n)
			}
			if got := r.failures("temporary"); got != 2 {
				t.Errorf("temporary failures %v, want 2", got)
			}
			relay.code.Store(0)
			r.dueNow(t)
			if _, err := r.s.SendDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			for i, row := range r.rows(t) {
				if row.Status != "sent" {
					t.Errorf("mail %d once the relay takes it: %+v; want sent", i+1, row)
				}
			}
		})
	}
}
