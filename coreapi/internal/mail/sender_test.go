package mail_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail/mailtest"
	"github.com/tollgate-auth/tollgate/shared/refused"
)

type rig struct {
	db   *dbtest.DB
	smtp *mailtest.Server
	s    *mail.Sender
	reg  *prometheus.Registry
}

func newRig(t *testing.T, o mail.SenderOptions) *rig {
	t.Helper()
	r := &rig{db: dbtest.New(t), smtp: mailtest.Start(t), reg: prometheus.NewRegistry()}
	tr, err := mail.ParseSMTPURL(r.smtp.URL() + "?starttls=off")
	if err != nil {
		t.Fatal(err)
	}
	if o.Transport == nil {
		o.Transport = tr
	}
	o.Pool, o.From, o.Registerer = r.db.Pool, "Tollgate <no-reply@example.com>", r.reg
	o.Links = mail.DefaultLinks("http://localhost:8080")
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.BackoffBase == 0 {
		o.BackoffBase = time.Millisecond
	}
	if r.s, err = mail.NewSender(o); err != nil {
		t.Fatal(err)
	}
	return r
}

// sender is another sender on r's database with o's settings, sending
// from no-reply@example.com with the rig's links and a silent logger
// unless o sets them (no Registerer unless o sets one: the rig's holds its
// own sender's metrics).
func (r *rig) sender(t *testing.T, o mail.SenderOptions) *mail.Sender {
	t.Helper()
	o.Pool = r.db.Pool
	if o.From == "" {
		o.From = "no-reply@example.com"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Links == (mail.Links{}) {
		o.Links = mail.DefaultLinks("http://localhost:8080")
	}
	s, err := mail.NewSender(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (r *rig) enqueue(t *testing.T, msgs ...mail.Message) {
	t.Helper()
	err := pgx.BeginFunc(context.Background(), r.db.Pool, func(tx pgx.Tx) error {
		for _, m := range msgs {
			if err := mail.Enqueue(context.Background(), tx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

type row struct {
	Status   string
	Attempts int
	Token    *string
	LastErr  *string
}

func (r *rig) rows(t *testing.T) []row {
	t.Helper()
	rows, _ := r.db.Pool.Query(context.Background(), `SELECT status, attempts, token, last_error FROM mail_queue ORDER BY id`)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dueNow makes every pending row due (instead of waiting out the backoff).
func (r *rig) dueNow(t *testing.T) {
	t.Helper()
	if _, err := r.db.Pool.Exec(context.Background(), `UPDATE mail_queue SET next_attempt_at = now() WHERE status = 'pending'`); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) failures(kind string) float64 { return failures(r.reg, kind) }

// failures is coreapi_mail_failures_total{kind} in reg.
func failures(reg *prometheus.Registry, kind string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "coreapi_mail_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

var verify = mail.Message{Kind: mail.KindVerifyEmail, To: "ada@example.com", Token: "tok_abc-123",
	Data: mail.Data{DisplayName: "Ada", ExpiresAt: time.Now().Add(24 * time.Hour)}}

func TestSendScrubsTheToken(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	r.enqueue(t, verify)
	if n, err := r.s.SendDue(context.Background()); err != nil || n != 1 {
		t.Fatalf("SendDue = %d, %v", n, err)
	}
	m := r.smtp.WaitFor(t, "ada@example.com", "Confirm your email", 5*time.Second)
	if got := m.Token(); got != "tok_abc-123" {
		t.Errorf("link token %q, want tok_abc-123; mail:\n%s", got, m.Raw)
	}
	if !strings.Contains(m.Raw, "http://localhost:8080/verify-email?token=") {
		t.Errorf("no verify link in:\n%s", m.Raw)
	}
	if !strings.Contains(m.Raw, "text/html") || !strings.Contains(m.Raw, "text/plain") {
		t.Errorf("want a plain-text and an HTML part:\n%s", m.Raw)
	}
	if id := m.Header.Get("Message-Id"); !strings.HasPrefix(id, "<mail-") {
		t.Errorf("Message-ID %q, want one derived from the row", id)
	}
	rows := r.rows(t)
	if len(rows) != 1 || rows[0].Status != "sent" || rows[0].Token != nil || rows[0].Attempts != 1 {
		t.Errorf("row after send = %+v, want sent, 1 attempt, token NULL", rows)
	}
	if n, _ := r.s.SendDue(context.Background()); n != 0 {
		t.Errorf("a sent row was claimed again")
	}
}

func TestRolledBackChangeSendsNothing(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	err := pgx.BeginFunc(context.Background(), r.db.Pool, func(tx pgx.Tx) error {
		if err := mail.Enqueue(context.Background(), tx, verify); err != nil {
			return err
		}
		return errors.New("the change failed")
	})
	if err == nil {
		t.Fatal("want the transaction to fail")
	}
	if n, err := r.s.SendDue(context.Background()); err != nil || n != 0 {
		t.Errorf("SendDue = %d, %v; want nothing queued", n, err)
	}
}

// Mail server down at send time: the row stays, is retried with backoff
// and delivered once the server is back; nothing is lost.
func TestServerDownThenBack(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	r.smtp.Stop()
	r.enqueue(t, verify)
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows := r.rows(t)
	if rows[0].Status != "pending" || rows[0].Attempts != 1 || rows[0].Token == nil || rows[0].LastErr == nil {
		t.Fatalf("after a failed attempt: %+v; want pending, 1 attempt, token kept, error recorded", rows[0])
	}
	if got := r.failures("temporary"); got != 1 {
		t.Errorf("temporary failures %v, want 1", got)
	}
	r.smtp.Restart(t)
	r.dueNow(t)
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.smtp.WaitFor(t, "ada@example.com", "Confirm", 5*time.Second)
	if rows := r.rows(t); rows[0].Status != "sent" || rows[0].Attempts != 2 || rows[0].Token != nil {
		t.Errorf("after the server came back: %+v", rows[0])
	}
}

// SMTP 5xx to the mail's RCPT TO or to its DATA: the first refusal waits
// for a verdict (pending with its link, one retry); refused again with
// nothing else learnt, the mail is parked, counted, token scrubbed, not
// retried again.
func TestPermanentFailureParks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse func(*mailtest.Server)
	}{
		{"DATA", func(s *mailtest.Server) { s.Refuse(550) }},
		{"RCPT TO", func(s *mailtest.Server) { s.RefuseRcpt(550) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, mail.SenderOptions{})
			tc.refuse(r.smtp)
			r.enqueue(t, verify)
			if _, err := r.s.SendDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			if rows := r.rows(t); rows[0].Status != "pending" || rows[0].Token == nil {
				t.Fatalf("after a first 550: %+v; want pending with its link until a verdict", rows[0])
			}
			r.dueNow(t)
			if _, err := r.s.SendDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			rows := r.rows(t)
			if rows[0].Status != "parked" || rows[0].Token != nil || rows[0].LastErr == nil || !strings.Contains(*rows[0].LastErr, "550") {
				t.Fatalf("after a second 550: %+v; want parked, token NULL, the 550 recorded", rows[0])
			}
			if got := r.failures("permanent"); got != 2 {
				t.Errorf("permanent failures %v, want 2", got)
			}
			r.dueNow(t)
			if n, _ := r.s.SendDue(context.Background()); n != 0 {
				t.Error("a parked row was claimed again")
			}
		})
	}
}

// countingTransport counts the sessions a sender opens: SMTP.Send opens
// one per mail.
type countingTransport struct {
	next mail.Transport
	n    *atomic.Int32
}

func (c countingTransport) Send(ctx context.Context, m mail.Outgoing) error {
	c.n.Add(1)
	return c.next.Send(ctx, m)
}

// A mail server that refuses the session (the connection, TLS, its
// greeting, AUTH, or MAIL FROM for the sender: a wrong SMTP_URL or
// MAIL_FROM, a server that wants TLS or a password) refuses every mail
// alike, for a reason none of them has: nothing is parked, every mail
// stays pending with its token, and every mail goes out once the server is
// set right. The first refusal ends the batch: one session is opened (one
// login a server refusing AUTH sees, where each mail of the batch made
// one), the failure counted temporary and retried with the backoff, and
// the mails not tried are given back without an attempt or an error, due
// with the failed mail's retry.
func TestSessionRefusalParksNothing(t *testing.T) {
	// A port that refuses until the test ends: one freed by a closed
	// listener was taken meanwhile by another test's mail server, and the
	// "refused" session sent the mails.
	closed := refused.Addr(t)
	for _, tc := range []struct {
		name   string
		url    string // SMTP_URL; %s is the test server's address
		refuse func(s *mailtest.Server, code int)
		code   int
		want   string // in last_error
	}{
		{"nothing listening", "smtp://" + closed, nil, 0, "refused"},
		{"greeting 554", "smtp://%s?starttls=off", (*mailtest.Server).Greet, 554, "554"},
		{"implicit TLS to a plain server", "smtps://%s", nil, 0, "tls"},
		{"STARTTLS required, not offered", "smtp://%s?starttls=required", nil, 0, "STARTTLS"},
		{"AUTH 535", "smtp://user:wrong@%s?starttls=off", func(s *mailtest.Server, on int) { s.FailAuth(on != 0) }, 535, "535"},
		{"MAIL FROM 530 (STARTTLS or AUTH first)", "smtp://%s?starttls=off", (*mailtest.Server).RefuseMail, 530, "530"},
		{"MAIL FROM 553 (sender not allowed)", "smtp://%s?starttls=off", (*mailtest.Server).RefuseMail, 553, "553"},
		{"MAIL FROM 451", "smtp://%s?starttls=off", (*mailtest.Server).RefuseMail, 451, "451"},
		{"RCPT TO 530 (AUTH first)", "smtp://%s?starttls=off", (*mailtest.Server).RefuseRcpt, 530, "530"},
		// 421: the server closes the channel (RFC 5321 3.8, 4.2.2: shutting
		// down, or throttling the client), whichever command it answers.
		{"RCPT TO 421 (closing the channel)", "smtp://%s?starttls=off", (*mailtest.Server).RefuseRcpt, 421, "421"},
		{"DATA 421 (closing the channel)", "smtp://%s?starttls=off", (*mailtest.Server).Refuse, 421, "421"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, mail.SenderOptions{})
			url := tc.url
			if strings.Contains(url, "%s") {
				url = fmt.Sprintf(url, r.smtp.Addr)
			}
			reg := prometheus.NewRegistry()
			var sessions atomic.Int32
			failing := r.sender(t, mail.SenderOptions{Transport: countingTransport{mustSMTP(t, url), &sessions}, Registerer: reg, BackoffBase: time.Hour, BackoffMax: time.Hour})
			if tc.refuse != nil {
				tc.refuse(r.smtp, tc.code)
			}
			var msgs []mail.Message
			for _, to := range []string{"a@example.com", "b@example.com", "c@example.com"} {
				m := verify
				m.To, m.Token = to, "tok-"+to[:1]
				msgs = append(msgs, m)
			}
			r.enqueue(t, msgs...)
			if n, err := failing.SendDue(context.Background()); err != nil || n != 3 {
				t.Fatalf("SendDue = %d, %v; want the 3 mails claimed", n, err)
			}
			if got := sessions.Load(); got != 1 {
				t.Errorf("%d sessions opened, want 1: the first refusal ends the batch", got)
			}
			if tc.code == 535 {
				if got := r.smtp.AuthAttempts(); got != 1 {
					t.Errorf("the server saw %d AUTH attempts, want 1", got)
				}
			}
			type timing struct{ AfterBackoff, NoLaterThanFirst bool }
			rows, _ := r.db.Pool.Query(context.Background(), `
SELECT next_attempt_at > now() + interval '30 minutes',
       next_attempt_at <= (SELECT next_attempt_at FROM mail_queue ORDER BY id LIMIT 1) + interval '1 second'
FROM mail_queue ORDER BY id`)
			due, err := pgx.CollectRows(rows, pgx.RowToStructByPos[timing])
			if err != nil {
				t.Fatal(err)
			}
			for i, row := range r.rows(t) {
				lastErr := "<nil>"
				if row.LastErr != nil {
					lastErr = *row.LastErr
				}
				if i == 0 {
					if row.Status != "pending" || row.Token == nil || row.Attempts != 1 || !strings.Contains(lastErr, tc.want) || !due[i].AfterBackoff {
						t.Errorf("mail 1, which met the refusal: %s, token kept %t, %d attempts, error %q, retried after the backoff %t; want pending, token kept, 1 attempt, the error (%q) recorded, retried after the backoff",
							row.Status, row.Token != nil, row.Attempts, lastErr, due[i].AfterBackoff, tc.want)
					}
				} else if row.Status != "pending" || row.Token == nil || row.Attempts != 0 || row.LastErr != nil || !due[i].AfterBackoff || !due[i].NoLaterThanFirst {
					t.Errorf("mail %d, not tried: %s, token kept %t, %d attempts, error %q, due after the backoff %t, no later than mail 1 %t; want pending, token kept, 0 attempts, no error, due with mail 1's retry",
						i+1, row.Status, row.Token != nil, row.Attempts, lastErr, due[i].AfterBackoff, due[i].NoLaterThanFirst)
				}
			}
			if got, parked := failures(reg, "temporary"), failures(reg, "permanent"); got != 1 || parked != 0 {
				t.Errorf("failures: %v temporary, %v permanent; want 1 temporary", got, parked)
			}
			if tc.refuse != nil {
				tc.refuse(r.smtp, 0)
			}
			r.dueNow(t)
			if _, err := r.s.SendDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				if got := r.smtp.WaitFor(t, m.To, "Confirm", 5*time.Second).Token(); got != m.Token {
					t.Errorf("mail to %s has the link token %q, want %q", m.To, got, m.Token)
				}
			}
		})
	}
}

// A refused session also ends the sender's round: Run claims batch after
// batch while they come full, and each would open one more session the
// server refuses. Five mails in batches of two meet one AUTH refusal, not
// three, until the backoff ends.
func TestSessionRefusalEndsTheRound(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	r.smtp.FailAuth(true)
	var sessions atomic.Int32
	s := r.sender(t, mail.SenderOptions{Transport: countingTransport{mustSMTP(t, "smtp://user:wrong@"+r.smtp.Addr+"?starttls=off"), &sessions}, Batch: 2, Poll: time.Hour, BackoffBase: time.Hour})
	var msgs []mail.Message
	for _, to := range []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com", "e@example.com"} {
		m := verify
		m.To = to
		msgs = append(msgs, m)
	}
	r.enqueue(t, msgs...)
	// The end of the round: Run prunes once its batches are done, here a
	// sent row of 8 days ago.
	r.enqueue(t, verify)
	if _, err := r.db.Pool.Exec(context.Background(), `
UPDATE mail_queue SET status = 'sent', token = NULL, sent_at = now() - interval '8 days'
WHERE id = (SELECT max(id) FROM mail_queue)`); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		stop()
		<-done
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		var left int
		if err := r.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM mail_queue WHERE status = 'sent'`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sender's first round did not end within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, auth := sessions.Load(), r.smtp.AuthAttempts(); got != 1 || auth != 1 {
		t.Errorf("first round: %d sessions, %d AUTH attempts; want 1 of each", got, auth)
	}
	var tried int
	if err := r.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM mail_queue WHERE attempts > 0`).Scan(&tried); err != nil {
		t.Fatal(err)
	}
	if tried != 1 {
		t.Errorf("%d mails with an attempt counted, want 1", tried)
	}
}

// After a refused session the sender sends nothing until its backoff
// ends: a mail queued meanwhile is due at once, and sending it would open
// one more session the server refuses (one more failed login).
func TestSessionRefusalPausesTheSender(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	r.smtp.FailAuth(true)
	const poll = 10 * time.Millisecond
	s := r.sender(t, mail.SenderOptions{Transport: mustSMTP(t, "smtp://user:wrong@"+r.smtp.Addr+"?starttls=off"), Poll: poll, BackoffBase: time.Hour})
	a := verify
	a.To = "a@example.com"
	r.enqueue(t, a)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		stop()
		<-done
	}()
	for deadline := time.Now().Add(10 * time.Second); r.smtp.AuthAttempts() == 0; time.Sleep(poll) {
		if time.Now().After(deadline) {
			t.Fatal("no session within 10s")
		}
	}
	b := verify
	b.To = "b@example.com"
	r.enqueue(t, b) // due at once
	time.Sleep(50 * poll)
	if n := r.smtp.AuthAttempts(); n != 1 {
		t.Errorf("%d AUTH attempts after a mail was queued during the backoff, want 1", n)
	}
	var attempts int
	if err := r.db.Pool.QueryRow(context.Background(), `SELECT attempts FROM mail_queue WHERE to_address = 'b@example.com'`).Scan(&attempts); err != nil {
		t.Fatal(err)
	}
	if attempts != 0 {
		t.Errorf("the mail queued during the backoff has %d attempts, want 0 (not tried)", attempts)
	}
}

// A refused session holds back every due mail, not only its batch: the
// next poll would claim the rest of a backlog (or the mails queued since)
// a batch at a time, each batch one more login the server refuses. Seven
// due mails in batches of two meet one AUTH refusal until the backoff
// ends; none but the one tried has an attempt counted. A mail due later
// keeps its time, and one another replica is claiming (its row locked
// meanwhile) is neither waited for nor pushed back: it keeps that claim's
// lease.
func TestSessionRefusalHoldsBackEveryDueMail(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	r.smtp.FailAuth(true)
	var sessions atomic.Int32
	s := r.sender(t, mail.SenderOptions{Transport: countingTransport{mustSMTP(t, "smtp://user:wrong@"+r.smtp.Addr+"?starttls=off"), &sessions}, Batch: 2, BackoffBase: time.Hour, BackoffMax: time.Hour})
	var msgs []mail.Message
	for _, to := range []string{"a", "b", "c", "d", "e", "f", "g", "later"} {
		m := verify
		m.To, m.Token = to+"@example.com", "tok-"+to
		msgs = append(msgs, m)
	}
	r.enqueue(t, msgs...)
	ctx := context.Background()
	idRows, _ := r.db.Pool.Query(ctx, `SELECT id FROM mail_queue ORDER BY id`)
	ids, err := pgx.CollectRows(idRows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	claimedElsewhere, later := ids[6], ids[7]
	var laterDue time.Time
	if err := r.db.Pool.QueryRow(ctx, `
UPDATE mail_queue SET next_attempt_at = now() + interval '10 minutes' WHERE id = $1
RETURNING next_attempt_at`, later).Scan(&laterDue); err != nil {
		t.Fatal(err)
	}
	// Another replica's claim under way: the row stays locked until the
	// claim commits its attempt and lease.
	other, err := r.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	if _, err := other.Exec(ctx, `SELECT id FROM mail_queue WHERE id = $1 FOR UPDATE`, claimedElsewhere); err != nil {
		t.Fatal(err)
	}
	sendCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	n, err := s.SendDue(sendCtx)
	cancel()
	if err != nil || n != 2 {
		t.Fatalf("SendDue = %d, %v; want a batch of 2 claimed, and no wait for the row another replica is claiming", n, err)
	}
	if _, err := other.Exec(ctx, `
UPDATE mail_queue SET attempts = attempts + 1, next_attempt_at = now() + interval '2 minutes' WHERE id = $1`, claimedElsewhere); err != nil {
		t.Fatal(err)
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for poll := range 3 { // the polls of the next seconds
		if n, err := s.SendDue(ctx); err != nil || n != 0 {
			t.Errorf("poll %d after the refusal: SendDue = %d, %v; want nothing due", poll+1, n, err)
		}
	}
	if got, auth := sessions.Load(), r.smtp.AuthAttempts(); got != 1 || auth != 1 {
		t.Errorf("%d sessions, %d AUTH attempts before the backoff ends; want 1 of each", got, auth)
	}
	type timing struct {
		AfterBackoff, NoLaterThanFirst bool
		Due                            time.Time
	}
	timingRows, _ := r.db.Pool.Query(ctx, `
SELECT next_attempt_at > now() + interval '30 minutes',
       next_attempt_at <= (SELECT next_attempt_at FROM mail_queue ORDER BY id LIMIT 1) + interval '1 second',
       next_attempt_at
FROM mail_queue ORDER BY id`)
	timings, err := pgx.CollectRows(timingRows, pgx.RowToStructByPos[timing])
	if err != nil {
		t.Fatal(err)
	}
	for i, row := range r.rows(t) {
		switch id, due := ids[i], timings[i]; {
		case i == 0:
			if row.Status != "pending" || row.Attempts != 1 || row.LastErr == nil || !due.AfterBackoff {
				t.Errorf("mail 1, which met the refusal: %+v, retried after the backoff %t; want pending, 1 attempt, its error, retried after the backoff", row, due.AfterBackoff)
			}
		case id == claimedElsewhere:
			if row.Attempts != 1 || due.AfterBackoff {
				t.Errorf("mail %d, claimed by another replica: %d attempts, pushed to the retry %t; want its claim's attempt and lease kept", i+1, row.Attempts, due.AfterBackoff)
			}
		case id == later:
			if row.Attempts != 0 || !due.Due.Equal(laterDue) {
				t.Errorf("mail %d, due later: %d attempts, due at %v; want 0 attempts, due at %v as before", i+1, row.Attempts, due.Due, laterDue)
			}
		default:
			if row.Status != "pending" || row.Token == nil || row.Attempts != 0 || row.LastErr != nil || !due.AfterBackoff || !due.NoLaterThanFirst {
				t.Errorf("mail %d, not tried: %+v, due after the backoff %t, no later than mail 1 %t; want pending, token kept, 0 attempts, no error, due with mail 1's retry",
					i+1, row, due.AfterBackoff, due.NoLaterThanFirst)
			}
		}
	}
	// The server set right, and the backoff over: every mail goes out.
	r.smtp.FailAuth(false)
	r.dueNow(t)
	for {
		n, err := r.s.SendDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	for _, m := range msgs {
		if got := r.smtp.WaitFor(t, m.To, "Confirm", 5*time.Second).Token(); got != m.Token {
			t.Errorf("mail to %s has the link token %q, want %q", m.To, got, m.Token)
		}
	}
}

// A connection lost at a mail's RCPT TO, without an answer, is no answer
// about the mail: it is the session's, retried with the backoff, and it
// ends the batch as a refusal does.
func TestConnectionLostAtRcptEndsTheBatch(t *testing.T) {
	addr := scriptedSMTP(t, func(tc *textproto.Conn) {
		if tc.PrintfLine("220 hangup ESMTP") != nil {
			return
		}
		for {
			line, err := tc.ReadLine()
			if err != nil || strings.HasPrefix(strings.ToUpper(line), "RCPT") {
				return // hung up, unanswered
			}
			if strings.HasPrefix(strings.ToUpper(line), "EHLO") {
				err = tc.PrintfLine("250 hangup")
			} else {
				err = tc.PrintfLine("250 ok")
			}
			if err != nil {
				return
			}
		}
	})
	var sessions atomic.Int32
	r := newRig(t, mail.SenderOptions{})
	s := r.sender(t, mail.SenderOptions{Transport: countingTransport{mustSMTP(t, "smtp://"+addr+"?starttls=off"), &sessions}, BackoffBase: time.Hour})
	a, b := verify, verify
	a.To, b.To = "a@example.com", "b@example.com"
	r.enqueue(t, a, b)
	if _, err := s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := sessions.Load(); got != 1 {
		t.Errorf("%d sessions opened, want 1", got)
	}
	rows := r.rows(t)
	if rows[0].Status != "pending" || rows[0].Attempts != 1 || rows[0].Token == nil || rows[0].LastErr == nil {
		t.Errorf("mail 1, whose connection was lost: %+v; want pending, 1 attempt, token kept, the error recorded", rows[0])
	}
	if rows[1].Status != "pending" || rows[1].Attempts != 0 || rows[1].Token == nil || rows[1].LastErr != nil {
		t.Errorf("mail 2, not tried: %+v; want pending, 0 attempts, token kept, no error", rows[1])
	}
}

// A mail's own refusal (an answer to its RCPT TO or DATA, 5xx or 4xx) is
// no refusal of the session: the batch goes on with the other mails.
func TestMailRefusalGoesOnWithTheBatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse func(*mailtest.Server, int)
		code   int
		status string
	}{
		{"RCPT TO 550", (*mailtest.Server).RefuseRcpt, 550, "parked"},
		{"RCPT TO 450", (*mailtest.Server).RefuseRcpt, 450, "pending"},
		{"DATA 554", (*mailtest.Server).Refuse, 554, "parked"},
		{"DATA 451", (*mailtest.Server).Refuse, 451, "pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sessions atomic.Int32
			r := newRig(t, mail.SenderOptions{})
			s := r.sender(t, mail.SenderOptions{Transport: countingTransport{mustSMTP(t, r.smtp.URL()+"?starttls=off"), &sessions}})
			tc.refuse(r.smtp, tc.code)
			var msgs []mail.Message
			for _, to := range []string{"a@example.com", "b@example.com", "c@example.com"} {
				m := verify
				m.To = to
				msgs = append(msgs, m)
			}
			r.enqueue(t, msgs...)
			if n, err := s.SendDue(context.Background()); err != nil || n != 3 {
				t.Fatalf("SendDue = %d, %v; want the 3 mails claimed", n, err)
			}
			if got := sessions.Load(); got != 3 {
				t.Errorf("%d sessions opened, want 3: one per mail", got)
			}
			for i, row := range r.rows(t) {
				want := tc.status
				if i == 0 && tc.code >= 500 {
					want = "pending" // the first refusal waits for a verdict
				}
				if row.Status != want || row.Attempts != 1 || row.LastErr == nil || !strings.Contains(*row.LastErr, fmt.Sprint(tc.code)) {
					t.Errorf("mail %d: %+v; want %s after 1 attempt, the %d recorded", i+1, row, want, tc.code)
				}
			}
		})
	}
}

// An SMTP error whose text is not UTF-8 is recorded as any other, each
// run of invalid bytes as one U+FFFD and NUL bytes left out. A server's
// reply line reaches the error quoted (net/textproto), but a SCRAM
// challenge the client does not expect, base64 on the wire, is put in it
// as it decodes: stored as it was, the row's UPDATE failed (PostgreSQL
// 22021), so the mail was neither parked nor its token scrubbed, and it
// was tried again after each lease, beyond MaxAttempts.
func TestSMTPErrorNotUTF8(t *testing.T) {
	addr := scramServer(t, "\xff\xfe\x00no such step \xc3")
	tr, err := mail.ParseSMTPURL("smtp://ada:secret@" + addr + "?starttls=off")
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, mail.SenderOptions{Transport: tr, MaxAttempts: 1, RetryFor: time.Nanosecond})
	// A failure of the session parks only a mail that can no longer
	// serve (TestOutageLongerThanTheAttemptsParksNothingStillUseful): a
	// notice queued more than RetryFor ago.
	r.enqueue(t, mail.Message{Kind: mail.KindPasswordChanged, To: "ada@example.com", Data: mail.Data{At: time.Now()}})
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows := r.rows(t)
	if rows[0].Status != "parked" || rows[0].Attempts != 1 || rows[0].LastErr == nil {
		t.Fatalf("after a failed last attempt: %+v; want parked, 1 attempt, the error recorded", rows[0])
	}
	if got, want := *rows[0].LastErr, "\uFFFDno such step \uFFFD"; !strings.Contains(got, want) {
		t.Fatalf("last_error %q, want it to hold %q", got, want)
	}
}

// scramServer is an SMTP server on 127.0.0.1 that offers AUTH
// SCRAM-SHA-256 (what a client picks without TLS) and answers the client's
// first message with challenge; it answers 250 to whatever follows, 221 to
// QUIT. It returns its address.
func scramServer(t *testing.T, challenge string) string {
	t.Helper()
	steps := []string{"334 ", "334 " + base64.StdEncoding.EncodeToString([]byte(challenge))}
	return scriptedSMTP(t, func(tc *textproto.Conn) {
		if tc.PrintfLine("220 scramserver ESMTP") != nil {
			return
		}
		for step := 0; ; {
			line, err := tc.ReadLine()
			if err != nil {
				return
			}
			cmd := strings.ToUpper(line)
			switch {
			case strings.HasPrefix(cmd, "EHLO"):
				err = tc.PrintfLine("250-scramserver\r\n250 AUTH SCRAM-SHA-256")
			case strings.HasPrefix(cmd, "QUIT"):
				_ = tc.PrintfLine("221 bye")
				return
			case strings.HasPrefix(cmd, "AUTH ") || step > 0 && step < len(steps):
				err = tc.PrintfLine("%s", steps[step])
				step++
			default:
				err = tc.PrintfLine("250 ok")
			}
			if err != nil {
				return
			}
		}
	})
}

// scriptedSMTP is a server on 127.0.0.1 that runs serve on each
// connection it accepts (for at most 10 s), for a conversation mailtest's
// server cannot have. It returns its address.
func scriptedSMTP(t *testing.T, serve func(*textproto.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(textproto.NewConn(c))
			}()
		}
	}()
	return ln.Addr().String()
}

// Prune removes sent rows after Retain and parked rows after RetainParked
// (counted from when they were queued); pending rows and younger ones stay.
func TestPruneSentAndParked(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	ctx := context.Background()
	for range 5 {
		r.enqueue(t, verify)
	}
	// Rows 1-2 sent 8 and 6 days ago, 3-4 parked, queued 31 and 29 days
	// ago, 5 pending since 40 days.
	if _, err := r.db.Pool.Exec(ctx, `
UPDATE mail_queue SET
    status = CASE WHEN rn <= 2 THEN 'sent' WHEN rn <= 4 THEN 'parked' ELSE 'pending' END,
    token = NULL,
    sent_at = CASE rn WHEN 1 THEN now() - interval '8 days' WHEN 2 THEN now() - interval '6 days' END,
    created_at = CASE rn WHEN 3 THEN now() - interval '31 days' WHEN 4 THEN now() - interval '29 days'
                         WHEN 5 THEN now() - interval '40 days' ELSE created_at END
FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM mail_queue) o WHERE o.id = mail_queue.id`); err != nil {
		t.Fatal(err)
	}
	n, err := r.s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows := r.rows(t)
	var got []string
	for _, row := range rows {
		got = append(got, row.Status)
	}
	if n != 2 || strings.Join(got, ",") != "sent,parked,pending" {
		t.Fatalf("pruned %d, left %v; want 2 pruned (the old sent and the old parked row), sent,parked,pending left", n, got)
	}
}

// A 4xx is temporary; after MaxAttempts the row is parked.
func TestTooManyAttemptsParks(t *testing.T) {
	r := newRig(t, mail.SenderOptions{MaxAttempts: 3})
	r.smtp.Refuse(451)
	r.enqueue(t, verify)
	for i := 1; i <= 3; i++ {
		r.dueNow(t)
		if n, err := r.s.SendDue(context.Background()); err != nil || n != 1 {
			t.Fatalf("attempt %d: SendDue = %d, %v", i, n, err)
		}
	}
	if rows := r.rows(t); rows[0].Status != "parked" || rows[0].Attempts != 3 {
		t.Errorf("after 3 temporary failures: %+v; want parked", rows[0])
	}
	if got := r.failures("temporary"); got != 3 {
		t.Errorf("temporary failures %v, want 3", got)
	}
}

// Two senders on one queue (two replicas): every mail goes out once.
func TestConcurrentSendersDeliverOnce(t *testing.T) {
	r := newRig(t, mail.SenderOptions{Batch: 3})
	other := r.sender(t, mail.SenderOptions{Transport: mustSMTP(t, r.smtp.URL()), Batch: 3})
	var msgs []mail.Message
	for i := range 20 {
		m := verify
		m.To = "user" + string(rune('a'+i)) + "@example.com"
		msgs = append(msgs, m)
	}
	r.enqueue(t, msgs...)
	var wg sync.WaitGroup
	for _, s := range []*mail.Sender{r.s, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := s.SendDue(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	got := map[string]int{}
	for _, m := range r.smtp.Messages() {
		got[m.Rcpt[0]]++
	}
	if len(got) != 20 {
		t.Errorf("%d distinct recipients, want 20", len(got))
	}
	for k, n := range got {
		if n != 1 {
			t.Errorf("%s received %d copies", k, n)
		}
	}
}

func mustSMTP(t *testing.T, url string) *mail.SMTP {
	t.Helper()
	s, err := mail.ParseSMTPURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// CR/LF in an address is refused before it is queued; in a name it never
// reaches a header.
func TestHeaderInjection(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	for _, to := range []string{"a@example.com\r\nBcc: evil@example.com", "a@example.com\nBcc: evil@example.com",
		"Eve <a@example.com>", "a@example.com, evil@example.com", "a@example.com;evil@example.com"} {
		err := pgx.BeginFunc(context.Background(), r.db.Pool, func(tx pgx.Tx) error {
			m := verify
			m.To = to
			return mail.Enqueue(context.Background(), tx, m)
		})
		if !errors.Is(err, mail.ErrBadAddress) {
			t.Errorf("Enqueue(to %q) = %v, want ErrBadAddress", to, err)
		}
	}
	inv := mail.Message{Kind: mail.KindInvitation, To: "bob@example.com", Token: "t1",
		Data: mail.Data{TenantName: "Acme\r\nBcc: evil@example.com", InviterName: "Ann\r\nX-Evil: 1", ExpiresAt: time.Now().Add(time.Hour)}}
	r.enqueue(t, inv)
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := r.smtp.WaitFor(t, "bob@example.com", "Acme", 5*time.Second)
	if len(m.Rcpt) != 1 || m.Header.Get("Bcc") != "" || m.Header.Get("X-Evil") != "" {
		t.Errorf("injected header or recipient: rcpt %v, headers %v", m.Rcpt, m.Header)
	}
	if strings.ContainsAny(m.Subject, "\r\n") {
		t.Errorf("subject %q has a line break", m.Subject)
	}
}

// TestSubjectEncodedWordShownAsTyped: a tenant name is plain text, so an
// RFC 2047 encoded word typed into it ("=?UTF-8?B?...?=") reaches the
// recipient as those characters, not decoded by the mail client into
// what the name checks refuse (here U+202E, a right-to-left override,
// and a line break) or into any other text. Each encoded word holds whole
// characters, so a client decoding word by word reads them too.
func TestSubjectEncodedWordShownAsTyped(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	word := "=?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte("\u202eevil\r\nBcc: x")) + "?="
	for i, name := range []string{"Acme " + word, word, "Acme =?us-ascii?Q?Pay=20here?= Ltd", "Äcme " + word + " " + strings.Repeat("long ", 30),
		// A word's 45 bytes end inside an "é": the word ends before it.
		"=?" + strings.Repeat("é", 40)} {
		to := fmt.Sprintf("bob%d@example.com", i)
		inv := mail.Message{Kind: mail.KindInvitation, To: to, Token: "t1",
			Data: mail.Data{TenantName: name, ExpiresAt: time.Now().Add(time.Hour)}}
		r.enqueue(t, inv)
		if _, err := r.s.SendDue(context.Background()); err != nil {
			t.Fatal(err)
		}
		want := "You are invited to join " + name
		m := r.smtp.WaitFor(t, to, "invited", 5*time.Second)
		if m.Subject != want {
			t.Errorf("tenant %q: the recipient reads the subject %q, want %q", name, m.Subject, want)
		}
		// Each word holds whole characters (RFC 2047 section 5): a client
		// decoding word by word shows no broken character.
		var dec mime.WordDecoder
		for _, w := range strings.Fields(m.Header.Get("Subject")) {
			if !strings.HasPrefix(w, "=?") {
				continue
			}
			if text, err := dec.Decode(w); err != nil || !utf8.ValidString(text) {
				t.Errorf("tenant %q: the subject's word %s decodes to %q (%v), not whole characters", name, w, text, err)
			}
		}
	}
}

// TestUnicodeDomainReachesAnASCIIServer: an address whose domain is in
// Unicode, as addresses are stored, reaches a mail server without the
// SMTPUTF8 extension, which refuses a raw UTF-8 address: the envelope and
// the To header name the domain's ASCII (Punycode) form.
func TestUnicodeDomainReachesAnASCIIServer(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	r.smtp.ASCIIOnly(true)
	m := verify
	m.To = "ada@bücher.example"
	r.enqueue(t, m)
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rows := r.rows(t); len(rows) != 1 || rows[0].Status != "sent" {
		t.Fatalf("queue %+v, want the mail sent", rows)
	}
	got := r.smtp.WaitFor(t, "ada@xn--bcher-kva.example", "", 5*time.Second)
	if len(got.Rcpt) != 1 || got.Rcpt[0] != "ada@xn--bcher-kva.example" {
		t.Errorf("RCPT TO %v, want ada@xn--bcher-kva.example", got.Rcpt)
	}
	if to := got.Header.Get("To"); to != "<ada@xn--bcher-kva.example>" {
		t.Errorf("To: %q, want <ada@xn--bcher-kva.example>", to)
	}
}

// TestParseSMTPURL: an SMTP_URL is taken in the documented forms only.
// Anything else in it is refused, naming what is wrong, not ignored: a
// typo (?startls=required) would leave TLS or AUTH other than the
// operator meant, unnoticed. No refusal quotes the password.
func TestParseSMTPURL(t *testing.T) {
	for _, ok := range []string{"smtp://127.0.0.1:1025", "smtp://user:pw@mail.example.com", "smtps://mail.example.com",
		"smtp://mail.example.com:587?starttls=required", "smtp://h:25?starttls=off", "smtp://h?starttls=auto",
		"smtp://h:25/", "smtps://user:pw@[::1]:465/", "smtp://h?", "smtp://h?&starttls=off&", "smtp://h?%73tarttls=off",
		"smtp://us%3Aer:p%2F%3F%23w@h"} {
		if _, err := mail.ParseSMTPURL(ok); err != nil {
			t.Errorf("ParseSMTPURL(%q) = %v", ok, err)
		}
	}
	const pw = "s3cretPW"
	for _, tc := range []struct{ url, want string }{
		// want "": refused, whatever the words.
		{"", ""}, {"mail.example.com", ""}, {"http://mail.example.com", ""}, {"smtp://", ""}, {"smtp://h:0", ""},
		{"smtp://h:99999", ""}, {"smtp://h:x", ""}, {"smtp://h:", "bad port"},
		// Hosts url.Parse leaves in place that no dialler takes.
		{"smtp://]0", ""}, {"smtp://u:p@h]x:25", ""}, {"smtp://a,b", ""}, {"smtp://a!b:25", ""}, {"smtp://h%C3%A9", ""},
		{"smtp://::%25]:10", ""}, {"smtp://[fe80::1%25a]b]", ""},
		// A parameter other than starttls: a typo of it, or one that
		// means nothing here.
		{"smtp://mailer:" + pw + "@mail.example.com:587?startls=required", `unknown query parameter "startls"`},
		{"smtp://mailer:" + pw + "@h?STARTTLS=required", `unknown query parameter "STARTTLS"`},
		{"smtp://h?starttls=off&tls=on&auth=plain", `unknown query parameter "auth", "tls"`},
		{"smtp://h?=off", `unknown query parameter ""`},
		{"smtp://h?starttls=off;x=1", "bad query"},
		{"smtp://h?starttls=%zz", "bad query"},
		// starttls more than once: which would win?
		{"smtp://mailer:" + pw + "@h?starttls=off&starttls=required", "starttls given 2 times"},
		{"smtp://h?starttls=required&starttls=required", "starttls given 2 times"},
		{"smtp://h?starttls=maybe", `starttls="maybe": want auto, required or off`},
		{"smtp://h?starttls", `starttls="": want auto, required or off`},
		{"smtp://h?starttls=Required", `starttls="Required"`},
		// starttls on implicit TLS, where it means nothing.
		{"smtps://mailer:" + pw + "@h?starttls=required", "starttls with smtps://"},
		{"smtps://h?starttls=off", "starttls with smtps://"},
		{"smtps://h:465?starttls=auto", "starttls with smtps://"},
		// User information that leads to no AUTH, or to one with an
		// empty password.
		{"smtp://:" + pw + "@h", "a password without a user name"},
		{"smtps://:" + pw + "@h:465", "a password without a user name"},
		{"smtp://@h", "an empty user name"},
		{"smtp://mailer@h", "a user name without a password"},
		{"smtp://mailer:@h:587", "a user name without a password"},
		// A path, a fragment, an opaque URL: nothing in them is used.
		{"smtp://mailer:" + pw + "@h/mail", "a path after the host"},
		{"smtp://h:25//", "a path after the host"},
		{"smtp://h/%2F", "a path after the host"},
		{"smtp://mailer:" + pw + "@h#starttls=required", "a fragment"},
		{"smtp://h:25?starttls=off#", "a fragment"},
		{"smtp:mailer:" + pw + "@h:25", `no "//" before the host`},
		{"smtp:h:25", `no "//" before the host`},
		// A '/', '?' or '#' left unescaped in the password ends the
		// host: the rest of the password is a path, query or fragment.
		{"smtp://mailer:12?" + pw + "@h", `"@" after the host`},
		{"smtp://mailer:12#" + pw + "@h", `"@" after the host`},
		{"smtp://mailer:12/" + pw + "@h", `"@" after the host`},
		{"smtp://mailer:12?x=" + pw + "@h", `"@" after the host`},
	} {
		_, err := mail.ParseSMTPURL(tc.url)
		if err == nil {
			t.Errorf("ParseSMTPURL(%q) accepted", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSMTPURL(%q) = %v, want it to say %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("ParseSMTPURL(%q) = %v: shows the password", tc.url, err)
		}
	}
}

func TestLinks(t *testing.T) {
	l := mail.Links{VerifyEmail: "https://app.example.com/confirm?t={token}", ResetPassword: "https://app.example.com/reset/{token}",
		AcceptInvitation: "https://app.example.com/join?token={token}"}
	got, err := l.Render(mail.KindPasswordReset, "a@example.com", "x+y/z", mail.Data{ExpiresAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got.Text, "https://app.example.com/reset/x%2By%2Fz") {
		t.Errorf("reset link not from the template, or token unescaped:\n%s", got.Text)
	}
	if !strings.Contains(got.HTML, `href="https://app.example.com/reset/x%2By%2Fz"`) {
		t.Errorf("html link:\n%s", got.HTML)
	}
	inv, err := l.Render(mail.KindInvitation, "a@example.com", "t", mail.Data{TenantName: "<b>Acme</b>", ExpiresAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(inv.HTML, "<b>Acme</b>") || !strings.Contains(inv.HTML, "&lt;b&gt;Acme&lt;/b&gt;") {
		t.Errorf("tenant name not escaped in HTML:\n%s", inv.HTML)
	}
	for _, bad := range []string{"https://app.example.com/confirm", "/relative?t={token}", "ftp://x/{token}"} {
		if mail.CheckLinkTemplate(bad) == nil {
			t.Errorf("CheckLinkTemplate(%q) accepted", bad)
		}
	}
}

func TestValidAddress(t *testing.T) {
	t.Run("sender", func(t *testing.T) {
		// MAIL_FROM may name a relay's own host; nothing else changes.
		for _, s := range []string{"no-reply@localhost", "no-reply@example.com"} {
			if !mail.ValidSender(s) {
				t.Errorf("ValidSender(%q) = false", s)
			}
		}
		for _, s := range []string{"no-reply@[127.0.0.1]", "no-reply@192.0.2.1", "no-reply@exa_mple.com", "no-reply@x.invalid", "Jo <jo@example.com>"} {
			if mail.ValidSender(s) {
				t.Errorf("ValidSender(%q) = true", s)
			}
		}
	})

	// 64 octets of local part, a domain of labels of at most 63.
	label := strings.Repeat("b", 63)
	longest := strings.Repeat("a", 64) + "@" + label + "." + label + "." + strings.Repeat("c", mail.MaxAddress-64-1-2*64-len(".test")) + ".test"
	if len(longest) != mail.MaxAddress {
		t.Fatalf("test address is %d octets", len(longest))
	}
	for _, s := range []string{"a@b.c", "jo@example.com", longest, "jo@invalid.example.com", "jo@x.notinvalid", "jos\u00e9@example.com", "\u7530\u4e2d@example.jp",
		"jo@b\u00fccher.example", "jo@xn--bcher-kva.example", "jo@123.example", "jo@a-b.example", "jo+tag@example.com", "o'hara@example.com"} {
		if !mail.ValidAddress(s) {
			t.Errorf("ValidAddress(%q) = false", s)
		}
	}
	for _, s := range []string{"", "a@", "not an email", "Jo <jo@example.com>", "jo@example.com\r\n", "jo@exa\x00mple.com",
		"x" + longest, // 255 octets: over RFC 5321's path limit
		strings.Repeat("a", 64) + "@" + strings.Repeat("b", 251) + ".test", // the 320 of local part + domain
		strings.Repeat("a", 65) + "@example.com",                           // a local part over RFC 5321's 64 octets
		// A domain that is not a host name of two labels or more: an
		// address literal sends the mail straight to an IP, a single
		// label to the relay's own host or network.
		"ada@[127.0.0.1]", "ada@[::1]", "ada@[IPv6:::1]", "ada@[192.0.2.1]", "ada@192.0.2.1", "ada@b", "ada@localhost", "jo@notinvalid",
		"ada@exa_mple.com", "ada@exa!mple.com", "ada@exa{mple.com", "ada@-example.com", "ada@example-.com", "ada@xn--zz.example",
		"ada@" + strings.Repeat("x", 64) + ".example", "ada@example.com.", "ada@.example.com", "ada@example..com",
		// Quoted local parts and comments.
		`"ada"@example.com`, `"a b"@example.com`, "ada(x)@example.com", "ada@example.com(x)", "ada@(x)example.com",
		// RFC 2606's reserved .invalid, where service accounts' addresses are.
		"0190a0b2-7c4e-7d3a-9f00-000000000001@service-accounts.invalid", "x@SERVICE-ACCOUNTS.INVALID", "x@invalid", "x@a.b.Invalid",
		// Characters that show as nothing or as a space: one address
		// passing for another.
		"a\u00a0@b.test", "a\u200b@b.test", "a\u2060b@b.test", "a@b\u200d.test", "a\u3000@b.test", "\ufeffa@b.test", "a\u0085@b.test", "a\ue000@b.test",
	} {
		if mail.ValidAddress(s) {
			t.Errorf("ValidAddress(%q) = true", s)
		}
	}
}

// slowTransport delivers through next after a pause (a mail server that
// answers slowly).
type slowTransport struct {
	next  mail.Transport
	pause time.Duration
}

func (s slowTransport) Send(ctx context.Context, m mail.Outgoing) error {
	time.Sleep(s.pause)
	return s.next.Send(ctx, m)
}

// A slow mail server makes a batch outlast its lease: each row's lease is
// renewed when its turn comes, so another replica does not take the rows
// still waiting in the batch and send them a second time.
func TestSlowBatchOutlastingTheLeaseSendsOnce(t *testing.T) {
	const lease, pause = 2 * time.Second, 1500 * time.Millisecond
	r := newRig(t, mail.SenderOptions{Batch: 2, Lease: lease})
	slow := r.sender(t, mail.SenderOptions{Transport: slowTransport{mustSMTP(t, r.smtp.URL()), pause}, Batch: 2, Lease: lease})
	a, b := verify, verify
	a.To, b.To = "first@example.com", "second@example.com"
	r.enqueue(t, a, b)
	done := make(chan error, 1)
	go func() {
		_, err := slow.SendDue(context.Background())
		done <- err
	}()
	// The batch's lease has ended, the second row is being sent.
	time.Sleep(lease + 300*time.Millisecond)
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, m := range r.smtp.Messages() {
		got[m.Rcpt[0]]++
	}
	if got["first@example.com"] != 1 || got["second@example.com"] != 1 {
		t.Errorf("copies received: %v, want one each", got)
	}
	for i, row := range r.rows(t) {
		if row.Status != "sent" || row.Attempts != 1 {
			t.Errorf("row %d: %+v; want sent after 1 attempt", i, row)
		}
	}
}

// failingTransport fails every message after a pause (a slow mail server
// that finally refuses).
type failingTransport struct {
	pause time.Duration
	err   error
}

func (f failingTransport) Send(ctx context.Context, m mail.Outgoing) error {
	time.Sleep(f.pause)
	return f.err
}

// A slow sender whose claim has expired fails only after another sender
// reclaimed the row and sent it: the late failure belongs to the older
// claim and leaves the sent row as it is (no error, not parked, not
// pending again).
func TestLateFailureOfAnExpiredClaimLeavesTheRowSent(t *testing.T) {
	const lease, pause = time.Second, 2 * time.Second
	r := newRig(t, mail.SenderOptions{Batch: 1, Lease: lease})
	slow := r.sender(t, mail.SenderOptions{Transport: failingTransport{pause, errors.Join(mail.ErrPermanent, errors.New("550 mailbox unavailable"))}, Batch: 1, Lease: lease})
	r.enqueue(t, verify)
	done := make(chan error, 1)
	go func() {
		_, err := slow.SendDue(context.Background())
		done <- err
	}()
	// The slow sender's lease has ended while its send still waits.
	time.Sleep(lease + 300*time.Millisecond)
	if n, err := r.s.SendDue(context.Background()); err != nil || n != 1 {
		t.Fatalf("second sender: %d claimed, %v; want the expired row", n, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := len(r.smtp.Messages()); got != 1 {
		t.Errorf("%d messages received, want 1", got)
	}
	rows := r.rows(t)
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	if row := rows[0]; row.Status != "sent" || row.LastErr != nil || row.Token != nil || row.Attempts != 2 {
		t.Errorf("after the late failure: %+v; want sent after 2 attempts, no error, token NULL", row)
	}
}

// A mail server that accepted the message (250 after DATA) and then lost
// the connection before answering the commands that end the session: the
// mail was delivered, so the row is sent (its token scrubbed), and it is
// never sent a second time.
func TestDeliveredThenConnectionLostSendsOnce(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	r.smtp.HangUpAfterData(true)
	r.enqueue(t, verify)
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.smtp.WaitFor(t, "ada@example.com", "Confirm", 5*time.Second)
	rows := r.rows(t)
	if rows[0].Status != "sent" || rows[0].Token != nil || rows[0].LastErr != nil {
		t.Errorf("after a delivery whose connection was lost: %+v; want sent, token NULL, no error", rows[0])
	}
	if got := r.failures("temporary") + r.failures("permanent"); got != 0 {
		t.Errorf("%v failures counted for a delivered mail", got)
	}
	r.smtp.HangUpAfterData(false)
	r.dueNow(t)
	if _, err := r.s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(r.smtp.Messages()); got != 1 {
		t.Errorf("%d copies received, want 1", got)
	}
}

// stopTransport stops the sender (cancels its context) around a real
// send: after it when after is set (the stop came while the mail server
// took the message, which an SMTP session, once connected, does not
// interrupt), else before it (the stop came first: nothing goes out).
type stopTransport struct {
	next  mail.Transport
	stop  context.CancelFunc
	after bool
}

func (s stopTransport) Send(ctx context.Context, m mail.Outgoing) error {
	if !s.after {
		s.stop()
	}
	err := s.next.Send(ctx, m)
	if s.after {
		s.stop()
	}
	return err
}

// coreapi stopping while a mail is being sent: one the server took is
// recorded as sent (not sent again once the lease ends, its token not
// kept); one the stop kept from going out, and the rest of the batch, are
// given back, due at once and without the attempt or a failure counted.
func TestStopDuringSendLosesAndRepeatsNothing(t *testing.T) {
	for _, after := range []bool{true, false} {
		t.Run(map[bool]string{true: "delivered", false: "not sent"}[after], func(t *testing.T) {
			r := newRig(t, mail.SenderOptions{})
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			reg := prometheus.NewRegistry()
			s := r.sender(t, mail.SenderOptions{Transport: stopTransport{mustSMTP(t, r.smtp.URL()), stop, after}, Registerer: reg})
			second := verify
			second.To = "bob@example.com"
			r.enqueue(t, verify, second)
			if n, _ := s.SendDue(ctx); n != 2 {
				t.Fatalf("claimed %d, want the batch of 2", n)
			}
			rows, _ := r.db.Pool.Query(context.Background(), `SELECT next_attempt_at <= now() FROM mail_queue ORDER BY id`)
			due, err := pgx.CollectRows(rows, pgx.RowTo[bool])
			if err != nil {
				t.Fatal(err)
			}
			for i, row := range r.rows(t) {
				if i == 0 && after {
					if row.Status != "sent" || row.Token != nil {
						t.Errorf("a mail delivered as the sender stopped: %+v; want sent, token NULL", row)
					}
				} else if row.Status != "pending" || row.Attempts != 0 || row.Token == nil || row.LastErr != nil || !due[i] {
					t.Errorf("mail %d, which the stop kept from going out: %+v (due now: %t); want pending, 0 attempts, token kept, no error, due now",
						i+1, row, due[i])
				}
			}
			if got := failures(reg, "temporary") + failures(reg, "permanent"); got != 0 {
				t.Errorf("%v failures counted", got)
			}
			// Another replica, after the lease.
			if _, err := r.db.Pool.Exec(context.Background(), `UPDATE mail_queue SET next_attempt_at = now() - interval '1 second' WHERE status = 'pending'`); err != nil {
				t.Fatal(err)
			}
			if _, err := r.s.SendDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, m := range r.smtp.Messages() {
				got[m.Rcpt[0]]++
			}
			if got["ada@example.com"] != 1 || got["bob@example.com"] != 1 {
				t.Errorf("copies received: %v, want one each", got)
			}
		})
	}
}

// TestUnicodeSenderDomainReachesAnASCIIServer: a MAIL_FROM whose domain is
// not ASCII (which the configuration takes) is sent in its ASCII form, in
// MAIL FROM and the From header, as a recipient's is: sent as written, a
// server without SMTPUTF8 refused every session at MAIL FROM, and no mail
// ever went out.
func TestUnicodeSenderDomainReachesAnASCIIServer(t *testing.T) {
	r := newRig(t, mail.SenderOptions{})
	r.smtp.ASCIIOnly(true)
	tr, err := mail.ParseSMTPURL(r.smtp.URL() + "?starttls=off")
	if err != nil {
		t.Fatal(err)
	}
	s := r.sender(t, mail.SenderOptions{Transport: tr, From: "Tollgate <no-reply@bücher.example>"})
	r.enqueue(t, verify)
	if _, err := s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rows := r.rows(t); len(rows) != 1 || rows[0].Status != "sent" {
		t.Fatalf("queue %+v, want the mail sent", rows)
	}
	got := r.smtp.WaitFor(t, verify.To, "", 5*time.Second)
	if got.From != "no-reply@xn--bcher-kva.example" {
		t.Errorf("MAIL FROM %q, want no-reply@xn--bcher-kva.example", got.From)
	}
	if from := got.Header.Get("From"); !strings.Contains(from, "<no-reply@xn--bcher-kva.example>") {
		t.Errorf("From: %q, want <no-reply@xn--bcher-kva.example>", from)
	}
}
