package mail_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// refusing is coreapi_mail_server_refusing_recipients in reg (-1: not
// registered).
func refusing(reg *prometheus.Registry) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "coreapi_mail_server_refusing_recipients" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// TestRelayRefusingEveryRecipientParksNothingMore: a mail server that
// refuses every recipient with a 5xx at RCPT TO (a relay that does not
// relay for coreapi, "554 5.7.1 Relay access denied": a wrong SMTP_URL)
// refuses them for a reason none of the mails has. The first refusal
// waits for a verdict (pending with its link); a second one, to another
// domain, with no mail accepted in between, shows the server refuses
// every recipient: that mail stays pending with its link too, the batch
// ends and the rest of the queue waits the backoff, as for a refused
// session, with an error logged and a gauge raised for the alert. No mail
// is parked, the first refused included. Once the server takes mail
// again, every held mail goes out and the gauge falls.
func TestRelayRefusingEveryRecipientParksNothingMore(t *testing.T) {
	var sessions atomic.Int32
	r := newRig(t, mail.SenderOptions{})
	r.smtp.RefuseRcpt(554)
	var logs strings.Builder
	reg := prometheus.NewRegistry()
	s := r.sender(t, mail.SenderOptions{Transport: countingTransport{mustSMTP(t, r.smtp.URL()+"?starttls=off"), &sessions},
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
	if rows[0].Status != "pending" || rows[0].Token == nil || rows[0].Attempts != 1 {
		t.Errorf("mail 1, the first refused: %+v; want pending, token kept, 1 attempt (the server refuses every recipient)", rows[0])
	}
	if rows[1].Status != "pending" || rows[1].Token == nil || rows[1].Attempts != 1 || rows[1].LastErr == nil || !strings.Contains(*rows[1].LastErr, "554") {
		t.Errorf("mail 2, refused to another domain: %+v; want pending, token kept, 1 attempt, the 554 recorded", rows[1])
	}
	for i, row := range rows[2:] {
		if row.Status != "pending" || row.Token == nil || row.Attempts != 0 {
			t.Errorf("mail %d, not tried: %+v; want pending, token kept, 0 attempts", i+3, row)
		}
	}
	if got := sessions.Load(); got != 2 {
		t.Errorf("%d sessions opened, want 2 (the batch ends at the second refusal)", got)
	}
	if got := refusing(reg); got != 1 {
		t.Errorf("coreapi_mail_server_refusing_recipients = %v, want 1", got)
	}
	if got := failures(reg, "permanent"); got != 1 {
		t.Errorf("permanent failures %v, want 1", got)
	}
	if strings.Contains(logs.String(), "mail parked") {
		t.Errorf("a mail was parked; log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "mail server refuses every recipient") {
		t.Errorf("no error logged for the server's refusal; log:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "b@example.org") {
		t.Errorf("the log names a recipient:\n%s", logs.String())
	}
	// While it lasts, a refusal is the server's whatever its domain.
	r.dueNow(t)
	if _, err := s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.rows(t); got[1].Status != "pending" || got[1].Token == nil {
		t.Errorf("mail 2, refused again: %+v; want pending, token kept", got[1])
	}
	// Set right: every mail held goes out.
	r.smtp.RefuseRcpt(0)
	for range 3 {
		r.dueNow(t)
		if _, err := s.SendDue(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for i, row := range r.rows(t) {
		if row.Status != "sent" {
			t.Errorf("mail %d once the server takes mail: %+v; want sent", i+1, row)
		}
	}
	if got := refusing(reg); got != 0 {
		t.Errorf("coreapi_mail_server_refusing_recipients = %v once a mail went out, want 0", got)
	}
}

// TestAuthRefusalAtRcptParksNothing: a 535 (authentication credentials
// invalid) or 538 (encryption required) answered to RCPT TO is about the
// session, not the recipient: the mail stays pending with its link, and
// the batch ends, as for a 530.
func TestAuthRefusalAtRcptParksNothing(t *testing.T) {
	for _, code := range []int{535, 534, 538} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			r := newRig(t, mail.SenderOptions{BackoffBase: time.Hour})
			r.smtp.RefuseRcpt(code)
			a, b := verify, verify
			a.To, b.To = "a@example.com", "b@example.com"
			r.enqueue(t, a, b)
			if _, err := r.s.SendDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			rows := r.rows(t)
			if rows[0].Status != "pending" || rows[0].Token == nil || rows[0].Attempts != 1 {
				t.Errorf("mail 1: %+v; want pending, token kept, 1 attempt", rows[0])
			}
			if rows[1].Status != "pending" || rows[1].Attempts != 0 {
				t.Errorf("mail 2: %+v; want pending, not tried (the batch ended)", rows[1])
			}
		})
	}
}

// TestRefusedRecipientParkedOnceTheServerAcceptsAnother: the first
// recipient refused with a 5xx waits for a verdict, pending with its
// link; once the server accepts another mail the refusal was its own and
// it is parked, its token scrubbed, counted and logged. Refused again
// with nothing else learnt (a quiet queue), it is parked at that retry:
// never retried for ever.
func TestRefusedRecipientParkedOnceTheServerAcceptsAnother(t *testing.T) {
	r := newRig(t, mail.SenderOptions{BackoffBase: time.Hour})
	r.smtp.RefuseRcpt(550)
	bad := verify
	bad.To = "gone@example.com"
	r.enqueue(t, bad)
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rows := r.rows(t); rows[0].Status != "pending" || rows[0].Token == nil {
		t.Fatalf("the first refused mail: %+v; want pending with its link until a verdict", rows[0])
	}
	// The server accepts another mail: the refusal was the recipient's.
	r.smtp.RefuseRcpt(0)
	good := verify
	good.To = "here@example.org"
	r.enqueue(t, good)
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows := r.rows(t)
	if rows[0].Status != "parked" || rows[0].Token != nil || rows[0].LastErr == nil || !strings.Contains(*rows[0].LastErr, "550") {
		t.Errorf("the refused mail once another was accepted: %+v; want parked, token NULL, the 550 recorded", rows[0])
	}
	if rows[1].Status != "sent" {
		t.Errorf("the other mail: %+v; want sent", rows[1])
	}
	if got := r.parked(); got != 1 {
		t.Errorf("coreapi_mail_parked_total = %v, want 1", got)
	}

	// Refused again at its retry, nothing else learnt: parked then.
	r.smtp.RefuseRcpt(550)
	again := verify
	again.To = "alone@example.net"
	r.enqueue(t, again)
	for range 2 {
		r.dueNow(t)
		if _, err := r.s.SendDue(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if row := r.rows(t)[2]; row.Status != "parked" || row.Attempts != 2 || row.Token != nil {
		t.Errorf("a mail refused twice, nothing else learnt: %+v; want parked after 2 attempts", row)
	}
}

// parked is coreapi_mail_parked_total in r's registry (-1: not
// registered).
func (r *rig) parked() float64 {
	mfs, _ := r.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "coreapi_mail_parked_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return -1
}
