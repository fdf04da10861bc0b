package mail_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// TestLinkCheckDropsDeadLinks: a mail whose link LinkCheck finds dead
// (an invitation that can no longer be accepted, a token gone) is
// deleted unsent with LinkCheck's reason; one it finds live goes out; an
// error of the check sends nothing and keeps the mail.
func TestLinkCheckDropsDeadLinks(t *testing.T) {
	checkErr := errors.New("database away")
	check := func(_ context.Context, k mail.Kind, tok string) (string, error) {
		switch tok {
		case "tok_dead":
			return "inviter_cannot_grant", nil
		case "tok_err":
			return "", checkErr
		}
		return "", nil
	}
	reg := prometheus.NewRegistry()
	r := newRig(t, mail.SenderOptions{})
	s := r.sender(t, mail.SenderOptions{Transport: mustSMTP(t, r.smtp.URL()+"?starttls=off"), Registerer: reg, LinkCheck: check})
	dead := mail.Message{Kind: mail.KindInvitation, To: "dead@example.com", Token: "tok_dead",
		Data: mail.Data{TenantName: "Acme", ExpiresAt: time.Now().Add(time.Hour)}}
	live := dead
	live.To, live.Token = "live@example.com", "tok_live"
	r.enqueue(t, dead, live)
	if _, err := s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.smtp.WaitFor(t, "live@example.com", "", 5*time.Second)
	if n := len(r.smtp.Messages()); n != 1 {
		t.Errorf("%d mails received, want 1 (not the dead link's)", n)
	}
	if rows := r.rows(t); len(rows) != 1 || rows[0].Status != "sent" {
		t.Errorf("rows %+v; want only the live mail's, sent", rows)
	}
	if got := dropped(reg, "inviter_cannot_grant"); got != 1 {
		t.Errorf("coreapi_mail_dropped_total{reason=inviter_cannot_grant} = %v, want 1", got)
	}

	failing := dead
	failing.To, failing.Token = "later@example.com", "tok_err"
	r.enqueue(t, failing)
	if _, err := s.SendDue(context.Background()); !errors.Is(err, checkErr) {
		t.Errorf("SendDue with a failing check: %v; want its error", err)
	}
	if rows := r.rows(t); len(rows) != 2 || rows[1].Status != "pending" || rows[1].Token == nil {
		t.Errorf("rows %+v; want the mail whose check failed pending with its token", rows)
	}
}

// TestLinkCheckErrorGivesTheBatchBack: the link check failing (its
// database away for a moment) ends the batch, and the mail it was
// checking, with the rest of the batch not yet tried, goes back to the
// queue at once, its attempt not counted, instead of waiting out the
// claim's lease: the next poll (of this sender or another) takes it
// again, and it goes out once the check answers.
func TestLinkCheckErrorGivesTheBatchBack(t *testing.T) {
	checkErr := errors.New("database away")
	var failing atomic.Bool
	failing.Store(true)
	check := func(context.Context, mail.Kind, string) (string, error) {
		if failing.Load() {
			return "", checkErr
		}
		return "", nil
	}
	r := newRig(t, mail.SenderOptions{})
	s := r.sender(t, mail.SenderOptions{Transport: mustSMTP(t, r.smtp.URL()+"?starttls=off"), LinkCheck: check,
		Lease: time.Hour})
	first := mail.Message{Kind: mail.KindInvitation, To: "first@example.com", Token: "tok_first",
		Data: mail.Data{TenantName: "Acme", ExpiresAt: time.Now().Add(time.Hour)}}
	second := first
	second.To, second.Token = "second@example.com", "tok_second"
	r.enqueue(t, first, second)
	if _, err := s.SendDue(context.Background()); !errors.Is(err, checkErr) {
		t.Fatalf("SendDue with a failing check: %v; want its error", err)
	}
	var due, attempts int
	if err := r.db.Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE next_attempt_at <= now()), coalesce(sum(attempts), 0)
		FROM mail_queue WHERE status = 'pending' AND token IS NOT NULL`).Scan(&due, &attempts); err != nil {
		t.Fatal(err)
	}
	if due != 2 || attempts != 0 {
		t.Errorf("after a failed check: %d of 2 mails due at once, %d attempts counted; want 2 and 0 (not held for the lease)", due, attempts)
	}

	failing.Store(false)
	if _, err := s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.smtp.WaitFor(t, "first@example.com", "", 5*time.Second)
	r.smtp.WaitFor(t, "second@example.com", "", 5*time.Second)
}
