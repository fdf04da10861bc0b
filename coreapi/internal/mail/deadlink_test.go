package mail_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// dropped is coreapi_mail_dropped_total{reason} in reg (-1: no such
// series).
func dropped(reg *prometheus.Registry, reason string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "coreapi_mail_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// TestExpiredLinkIsDroppedNotSent: a mail whose one-time link expired
// while it waited (a backlog after an outage of the mail server) is
// deleted at its turn, not sent: its link would only say that it has
// expired. It is counted and logged; a live mail beside it goes out, and
// a notice (no link) is sent whatever its age.
func TestExpiredLinkIsDroppedNotSent(t *testing.T) {
	var logs strings.Builder
	reg := prometheus.NewRegistry()
	r := newRig(t, mail.SenderOptions{})
	s := r.sender(t, mail.SenderOptions{Transport: mustSMTP(t, r.smtp.URL()+"?starttls=off"), Registerer: reg,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	stale, live := verify, verify
	stale.To, stale.Data.ExpiresAt = "stale@example.com", time.Now().Add(-time.Second)
	live.To = "live@example.com"
	notice := mail.Message{Kind: mail.KindPasswordChanged, To: "old@example.com", Data: mail.Data{At: time.Now().Add(-48 * time.Hour)}}
	r.enqueue(t, stale, live, notice)
	if _, err := s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.smtp.WaitFor(t, "live@example.com", "Confirm", 5*time.Second)
	r.smtp.WaitFor(t, "old@example.com", "", 5*time.Second)
	if n := len(r.smtp.Messages()); n != 2 {
		t.Errorf("%d mails received, want 2 (none with the expired link)", n)
	}
	rows := r.rows(t)
	if len(rows) != 2 || rows[0].Status != "sent" || rows[1].Status != "sent" {
		t.Errorf("rows %+v; want the expired link's deleted, the two others sent", rows)
	}
	if got := dropped(reg, "expired"); got != 1 {
		t.Errorf("coreapi_mail_dropped_total{reason=expired} = %v, want 1", got)
	}
	if !strings.Contains(logs.String(), "mail dropped") || !strings.Contains(logs.String(), `"reason":"expired"`) {
		t.Errorf("no log line for the dropped mail:\n%s", logs.String())
	}
}
