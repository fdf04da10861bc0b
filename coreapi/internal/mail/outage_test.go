package mail_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// TestOutageLongerThanTheAttemptsParksNothingStillUseful: a mail server
// down for longer than MaxAttempts' backoff used to park the mail that met
// the refusal first (then the next one, and so on), its token scrubbed,
// never retried once the server was back. A mail whose tries fail at the
// server's session is tried again every BackoffMax while it can still
// serve, and goes out when the server is back; one whose link expired
// meanwhile, or a notice queued more than RetryFor ago, is parked.
func TestOutageLongerThanTheAttemptsParksNothingStillUseful(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, mail.SenderOptions{MaxAttempts: 2, BackoffMax: time.Millisecond})
	notice := mail.Message{Kind: mail.KindPasswordChanged, To: "bob@example.com", Data: mail.Data{At: time.Now()}}
	r.smtp.Stop()
	r.enqueue(t, verify, notice)
	rounds := func(n int) {
		t.Helper()
		for range n {
			r.dueNow(t)
			if _, err := r.s.SendDue(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each round, the first due mail meets the refusal and the other is
	// held back: six rounds give both more than MaxAttempts tries.
	rounds(6)
	for i, row := range r.rows(t) {
		if row.Status != "pending" || (i == 0 && row.Token == nil) {
			t.Fatalf("mail %d after an outage past MaxAttempts: %+v; want pending, its token kept", i, row)
		}
	}
	if a := r.rows(t)[0].Attempts + r.rows(t)[1].Attempts; a <= 2*2 {
		t.Fatalf("%d tries in all, want more than MaxAttempts each", a)
	}
	r.smtp.Restart(t)
	rounds(1)
	r.smtp.WaitFor(t, "ada@example.com", "Confirm", 5*time.Second)
	r.smtp.WaitFor(t, "bob@example.com", "", 5*time.Second)
	for i, row := range r.rows(t) {
		if row.Status != "sent" || row.Token != nil {
			t.Errorf("mail %d once the server is back: %+v; want sent", i, row)
		}
	}

	// Bounded: a notice queued more than RetryFor ago is parked after
	// MaxAttempts as before; a link that expired meanwhile is dropped at
	// its turn, never sent (TestExpiredLinkIsDroppedNotSent).
	if _, err := r.db.Pool.Exec(ctx, `DELETE FROM mail_queue`); err != nil {
		t.Fatal(err)
	}
	stale := verify
	stale.Data.ExpiresAt = time.Now().Add(-time.Second)
	r.smtp.Stop()
	r.enqueue(t, stale, notice)
	if _, err := r.db.Pool.Exec(ctx, `UPDATE mail_queue SET created_at = now() - interval '25 hours' WHERE kind = $1`, string(mail.KindPasswordChanged)); err != nil {
		t.Fatal(err)
	}
	rounds(6)
	rows := r.rows(t)
	if len(rows) != 1 {
		t.Fatalf("%d mails left after the outage, want 1 (the notice; the expired link dropped): %+v", len(rows), rows)
	}
	if rows[0].Status != "parked" {
		t.Errorf("the notice queued past RetryFor, after the outage: %+v; want parked", rows[0])
	}
}
