package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail/mailtest"
)

// TestUsersDeleteScrubsTheMailQueue: a deletion (`coreapi users delete`,
// as DELETE /users/me/account: both are users.DeleteAccount) leaves no
// row of mail_queue holding the account's address, whatever its state:
// the mails already sent or parked, which the retention sweep would have
// kept for days (an erasure request must not wait for it), go in the
// deletion's transaction with those not yet sent. The confirmation of the
// deletion is the one row left, and it goes as soon as it is sent. Only
// an invitation mail still to go, from a tenant the account was not in,
// is kept: it is that tenant's, and its invitation still stands.
func TestUsersDeleteScrubsTheMailQueue(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	q := func(sql string, args ...any) string { t.Helper(); return scanOne[string](t, db, sql, args...) }
	count := func(sql string, args ...any) int { t.Helper(); return scanOne[int](t, db, sql, args...) }
	ta := q(`INSERT INTO tenants (name) VALUES ('Acme') RETURNING id::text`)
	uid := q(`INSERT INTO users (email, email_verified_at) VALUES ('Gone@acme.test', now()) RETURNING id::text`)
	q(`INSERT INTO memberships (tenant_id, user_id) VALUES ($1, $2) RETURNING user_id::text`, ta, uid)
	q(`WITH m AS (INSERT INTO mail_queue (kind, to_address, status, sent_at) VALUES
    ('verify_email', 'Gone@acme.test', 'sent', now()),
    ('password_reset', 'gone@acme.test', 'sent', now()),
    ('invitation', 'GONE@acme.test', 'sent', now()),
    ('password_changed', 'Gone@acme.test', 'pending', NULL),
    ('invitation', 'gone@acme.test', 'pending', NULL),
    ('password_reset', 'other@acme.test', 'sent', now())
  RETURNING 1) SELECT 'ok'`)
	q(`WITH m AS (INSERT INTO mail_queue (kind, to_address, status, last_error) VALUES
    ('password_reset', 'Gone@acme.test', 'parked', '550 <Gone@acme.test>: no such user') RETURNING 1) SELECT 'ok'`)
	env := envOf(map[string]string{"DATABASE_URL": db.URL})
	if err := run(ctx, []string{"users", "delete", uid}, env, &bytes.Buffer{}); err != nil {
		t.Fatalf("users delete: %v", err)
	}
	const left = `SELECT count(*) FROM mail_queue WHERE lower(to_address) = 'gone@acme.test' AND NOT (kind = 'invitation' AND status = 'pending')
  AND kind <> $1`
	if n := count(left, "account_deleted"); n != 0 {
		t.Errorf("%d rows of mail_queue hold the deleted account's address, want 0 (but the confirmation)", n)
	}
	if n := count(`SELECT count(*) FROM mail_queue WHERE to_address = 'Gone@acme.test' AND kind = 'account_deleted' AND status = $1`, "pending"); n != 1 {
		t.Fatalf("%d confirmations queued, want 1", n)
	}
	if n := count(`SELECT count(*) FROM mail_queue WHERE kind = 'invitation' AND status = 'pending' AND to_address = $1`, "gone@acme.test"); n != 1 {
		t.Errorf("the other tenant's invitation mail: %d rows, want 1 (kept)", n)
	}
	if n := count(`SELECT count(*) FROM mail_queue WHERE to_address = $1`, "other@acme.test"); n != 1 {
		t.Errorf("another address's mail: %d rows, want 1 (kept)", n)
	}

	// The confirmation, once sent, goes too.
	srv := mailtest.Start(t)
	tr, err := mail.ParseSMTPURL(srv.URL() + "?starttls=off")
	if err != nil {
		t.Fatal(err)
	}
	s, err := mail.NewSender(mail.SenderOptions{Pool: db.Pool, Transport: tr, From: "no-reply@example.com",
		Links: mail.DefaultLinks("http://localhost:8080"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := s.SendDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	srv.WaitFor(t, "Gone@acme.test", "deleted", 5*time.Second)
	if n := count(`SELECT count(*) FROM mail_queue WHERE lower(to_address) = 'gone@acme.test' AND kind <> $1`, "invitation"); n != 0 {
		t.Errorf("%d rows of mail_queue hold the deleted account's address once its confirmation is sent, want 0", n)
	}
}
