package mail_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// cutDatabase delivers through next, then cuts every connection to the
// queue's database (a failover, a restart, a proxy in between dropping
// them) before the sender records the delivery.
type cutDatabase struct {
	t    *testing.T
	next mail.Transport
	url  string
}

func (c cutDatabase) Send(ctx context.Context, m mail.Outgoing) error {
	if err := c.next.Send(ctx, m); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, c.url)
	if err != nil {
		c.t.Error(err)
		return nil
	}
	defer conn.Close(context.Background())
	const q = `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()`
	var n int
	if err := conn.QueryRow(ctx, q).Scan(&n); err != nil || n == 0 {
		c.t.Errorf("cut %d connections: %v", n, err)
	}
	return nil
}

// TestConnectionsCutAfterDeliverySendsOnce: the database connections cut
// between the mail server's acceptance of a mail and the recording of it
// (the database away for a moment) left the row pending with its token,
// and the mail went out a second time once its lease ended, a live link
// in each copy. The delivery is recorded once the database answers again.
func TestConnectionsCutAfterDeliverySendsOnce(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	s := r.sender(t, mail.SenderOptions{Transport: cutDatabase{t, mustSMTP(t, r.smtp.URL()+"?starttls=off"), r.db.URL}})
	r.enqueue(t, verify)
	if _, err := s.SendDue(context.Background()); err != nil {
		t.Errorf("SendDue with the connections cut after the delivery: %v", err)
	}
	r.smtp.WaitFor(t, "ada@example.com", "Confirm", 5*time.Second)
	if rows := r.rows(t); rows[0].Status != "sent" || rows[0].Token != nil {
		t.Errorf("a delivered mail whose connections were cut: %+v; want sent, token NULL", rows[0])
	}
	// Another replica, once the lease has ended.
	if _, err := r.db.Pool.Exec(context.Background(), `UPDATE mail_queue SET next_attempt_at = now() - interval '1 second' WHERE status = 'pending'`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(r.smtp.Messages()); got != 1 {
		t.Errorf("%d copies received, want 1", got)
	}
}
