package mail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/clip"
	"github.com/tollgate-auth/tollgate/shared/logging"
)

// SenderOptions configure a Sender; zero durations and counts take the
// defaults.
type SenderOptions struct {
	Pool      *pgxpool.Pool
	Transport Transport
	Links     Links
	From      string // MAIL_FROM
	// MessageIDHost is the domain of Message-IDs (default: the host of
	// the verify link).
	MessageIDHost string
	Logger        *slog.Logger
	// Registerer receives coreapi_mail_sent_total,
	// coreapi_mail_failures_total, coreapi_mail_parked_total and
	// coreapi_mail_dropped_total.
	Registerer prometheus.Registerer
	// LinkCheck tells, at send time, whether the link of a mail with a
	// one-time token can still work (see LinkCheck); nil: only the
	// link's expiry (Data.ExpiresAt) is checked.
	LinkCheck LinkCheck

	Batch       int           // rows claimed per round (default 16)
	Poll        time.Duration // how often due rows are looked for (default 1s)
	Lease       time.Duration // a claimed row is retried after this if its sender died (default 2m)
	BackoffBase time.Duration // first retry delay, doubled per attempt (default 10s)
	BackoffMax  time.Duration // longest retry delay (default 15m)
	MaxAttempts int           // then the row is parked (default 12), unless RetryFor keeps it
	// RetryFor: a mail whose last try failed at the mail server's session
	// (ErrSession: the server down or refusing the connection, AUTH or the
	// sender; not the mail's fault) is not parked after MaxAttempts while
	// it can still serve: it is tried again every BackoffMax until its link
	// expires (Data.ExpiresAt), or, for a mail without a link (a notice),
	// until RetryFor after it was queued (default 24h). An outage longer
	// than MaxAttempts' backoff so parks no mail the server could take
	// once it is back.
	RetryFor time.Duration
	Retain   time.Duration // sent rows are pruned after this (default 7 days)
	// RetainParked: parked rows (kept for the operator to see why) are
	// pruned this long after they were queued (default 30 days).
	RetainParked time.Duration
}

// LinkCheck reports why the link of a mail of kind k, carrying the raw
// one-time token, can no longer work: "" when it can, else a short
// reason for coreapi_mail_dropped_total and the log (a fixed set: the
// refusals of the accept or of the token check, such as "invalid",
// "expired", "inviter_cannot_grant", "already_member", "email_taken"). An
// error sends nothing: the mail goes back to the queue at once. Whatever ends a
// token on purpose drops its mail in the same transaction
// (DropUnsentSQL); this catches what makes a link useless without ending
// its token: its expiry passing in a backlog, an invitation's tenant
// deleted, its inviter's right to invite removed, its address become a
// member's, an email change's new address taken by another account.
type LinkCheck func(ctx context.Context, k Kind, token string) (reason string, err error)

// Sender delivers queued mail. Any number of Senders (one per replica) may
// run against one database.
type Sender struct {
	o       SenderOptions
	sent    prometheus.Counter
	failed  *prometheus.CounterVec
	parked  prometheus.Counter
	dropped *prometheus.CounterVec
	lastRun time.Time

	// refusingRcpt and refusingData are 1 while the mail server refuses
	// every mail at RCPT TO (coreapi_mail_server_refusing_recipients), at
	// DATA (coreapi_mail_server_refusing_messages): refusal.
	refusingRcpt prometheus.Gauge
	refusingData prometheus.Gauge
	mu           sync.Mutex
	// refusals[at] is what the 5xx refusals at stage at since the server
	// last accepted a mail tell.
	refusals [stages]refusals
}

// refusals is what the 5xx refusals of mails at one stage (RCPT TO or
// DATA) since the mail server last accepted a mail tell (Sender.refusal).
type refusals struct {
	// domain is the domain of the first mail refused ("" none); all,
	// whether a mail to another domain was refused since: the server
	// refuses every mail at this stage.
	domain string
	all    bool
	// first is the first mail refused, kept pending with its link until
	// a verdict (nil: none waits): parked once the server accepts a
	// mail, retried with the others if it refuses every one.
	first *suspect
}

// suspect is a mail refused with nothing yet telling whether the refusal
// is its own or the server's.
type suspect struct {
	id       int64
	attempts int
	kind     string
	err      string // the refusal, addresses redacted, for the log
}

// verdict is what a refusal of a mail is taken for (Sender.refusal).
type verdict int

const (
	verdictMail   verdict = iota // the mail's own: parked
	verdictFirst                 // the first since the server accepted one: kept until a verdict
	verdictServer                // the server refuses every mail that way: held, as a refused session
)

// NewSender validates o and registers the metrics.
func NewSender(o SenderOptions) (*Sender, error) {
	if o.Pool == nil || o.Transport == nil || o.Logger == nil || o.From == "" {
		return nil, errors.New("mail: Pool, Transport, Logger and From are required")
	}
	if o.Batch <= 0 {
		o.Batch = 16
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Lease <= 0 {
		o.Lease = 2 * time.Minute
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 10 * time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 15 * time.Minute
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 12
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 24 * time.Hour
	}
	if o.Retain <= 0 {
		o.Retain = 7 * 24 * time.Hour
	}
	if o.RetainParked <= 0 {
		o.RetainParked = 30 * 24 * time.Hour
	}
	if o.MessageIDHost == "" {
		o.MessageIDHost = hostOf(o.Links.VerifyEmail)
	}
	s := &Sender{
		o: o,
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coreapi_mail_sent_total", Help: "Mails handed to the mail server by this replica."}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coreapi_mail_failures_total", Help: "Failed mail deliveries by this replica (kind: temporary or permanent)."}, []string{"kind"}),
		parked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coreapi_mail_parked_total", Help: "Mails parked (permanent failure or too many attempts) by this replica."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coreapi_mail_dropped_total", Help: "Mails deleted unsent by this replica because their link could no longer work when their turn came (reason: expired, invalid, or why the invitation can no longer be accepted)."}, []string{"reason"}),
		refusingRcpt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coreapi_mail_server_refusing_recipients", Help: "1 while the mail server refuses every recipient this replica names (recipients at two domains refused at RCPT TO, none accepted since); the queue is held back."}),
		refusingData: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coreapi_mail_server_refusing_messages", Help: "1 while the mail server refuses every message this replica sends (mails to two domains refused with a 5xx at DATA, none accepted since); the queue is held back."}),
	}
	s.failed.WithLabelValues("temporary")
	s.failed.WithLabelValues("permanent")
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{s.sent, s.failed, s.parked, s.dropped, s.refusingRcpt, s.refusingData} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register mail metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Run sends due mail every Poll until ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	t := time.NewTicker(s.o.Poll)
	defer t.Stop()
	// paused: until when a refused session's backoff runs. The refused
	// batch and every row due then wait for it (holdBack), but a mail
	// queued since is due at once, and sending it would open one more
	// session the server refuses (one more failed login, for a server
	// refusing AUTH): this sender sends nothing until then.
	var paused time.Time
	for {
		for time.Now().After(paused) {
			n, refused, err := s.sendDue(ctx)
			if err != nil && ctx.Err() == nil {
				s.o.Logger.Warn("mail queue", "err", err)
			}
			// A refused session waits out its backoff (the loop's
			// condition ends the round): another batch now would open
			// another session the server refuses.
			if refused > 0 {
				paused = time.Now().Add(refused)
			}
			if n < s.o.Batch || err != nil {
				break
			}
		}
		if time.Since(s.lastRun) > time.Hour {
			s.lastRun = time.Now()
			if n, err := s.Prune(ctx); err != nil && ctx.Err() == nil {
				s.o.Logger.Warn("prune mail queue", "err", err)
			} else if n > 0 {
				s.o.Logger.Info("pruned mail queue", "rows", n)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type claimed struct {
	ID       int64
	Kind     string
	To       string
	Data     []byte
	Token    *string
	Attempts int
	Queued   time.Time
}

// SendDue claims up to Batch due rows and tries each once; it returns how
// many it claimed. The claim is committed before sending (attempts counted,
// next_attempt_at pushed by the lease), so no transaction stays open
// during SMTP and a sender that dies mid-send leaves its rows to others.
// A failure of the mail server's session (ErrSession) ends the batch: the
// rows not yet tried would each open a session the server refuses alike
// (a server refusing AUTH would see a failed login per row, and some lock
// the account after a few), so they are given back, due with the failed
// row's retry, and every other due row no sender holds waits that retry
// too.
func (s *Sender) SendDue(ctx context.Context) (int, error) {
	n, _, err := s.sendDue(ctx)
	return n, err
}

// sendDue is SendDue, also telling, when the batch ended at a refused
// session, the failed row's retry (0: not refused).
func (s *Sender) sendDue(ctx context.Context) (n int, refused time.Duration, err error) {
	const qClaim = `
UPDATE mail_queue q SET attempts = q.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
FROM (
    SELECT id FROM mail_queue
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) c
WHERE q.id = c.id
RETURNING q.id, q.kind, q.to_address, q.data, q.token, q.attempts, q.created_at`
	rows, err := s.o.Pool.Query(ctx, qClaim, s.o.Batch, s.o.Lease.Seconds())
	if err != nil {
		return 0, 0, fmt.Errorf("claim mail: %w", err)
	}
	batch, err := pgx.CollectRows(rows, pgx.RowToStructByPos[claimed])
	if err != nil {
		return 0, 0, fmt.Errorf("claim mail: %w", err)
	}
	for i, m := range batch {
		if ctx.Err() != nil { // stopping: the rows not yet tried go back
			return len(batch), 0, errors.Join(ctx.Err(), s.giveBack(ctx, 0, batch[i:]...))
		}
		retry, err := s.deliver(ctx, m)
		if err != nil {
			// The rows not yet tried go back at once, whatever ended the
			// batch (the sender stopping, the database away for a
			// moment), rather than waiting out their lease.
			return len(batch), 0, errors.Join(err, s.giveBack(ctx, 0, batch[i+1:]...))
		}
		if retry > 0 {
			return len(batch), retry, errors.Join(s.giveBack(ctx, retry, batch[i+1:]...), s.holdBack(ctx, retry))
		}
	}
	return len(batch), 0, nil
}

// giveBack returns claimed rows that did not go out, without the attempt
// their claim counted, due after the given delay rather than after the
// lease: at once (0) for the rows the sender's stop kept from going out,
// for another replica (or this one once restarted); with the failed row's
// retry for those a refused session kept back. A row claimed again since
// (its lease ended) is left alone.
func (s *Sender) giveBack(ctx context.Context, after time.Duration, ms ...claimed) error {
	const q = `
UPDATE mail_queue SET attempts = attempts - 1, next_attempt_at = now() + make_interval(secs => $3)
WHERE id = $1 AND attempts = $2 AND status = 'pending'`
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	for _, m := range ms {
		if _, err := s.o.Pool.Exec(ctx, q, m.ID, m.Attempts, after.Seconds()); err != nil {
			return fmt.Errorf("give back mail %d: %w", m.ID, err)
		}
	}
	return nil
}

// holdBack makes every due mail no claim holds wait the given delay (the
// retry of the mail whose session was refused), its attempts unchanged: the
// next poll would claim them, a batch at a time, and each batch would open
// one more session the server refuses alike (one more failed login for a
// server refusing AUTH). Rows another sender holds are left alone: a claim
// pushed their next_attempt_at past now, and one under way has them locked
// (skipped rather than waited for). Mails that fall due later are not held
// back.
func (s *Sender) holdBack(ctx context.Context, after time.Duration) error {
	const q = `
UPDATE mail_queue q SET next_attempt_at = now() + make_interval(secs => $1)
FROM (
    SELECT id FROM mail_queue
    WHERE status = 'pending' AND next_attempt_at <= now()
    FOR UPDATE SKIP LOCKED
) d
WHERE q.id = d.id`
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if _, err := s.o.Pool.Exec(ctx, q, after.Seconds()); err != nil {
		return fmt.Errorf("hold back due mail: %w", err)
	}
	return nil
}

// recordTimeout bounds the recording of a send's outcome, which does not
// end with the sender's context.
const recordTimeout = 5 * time.Second

// deliver sends m and records the outcome. For a failure of the mail
// server's session (ErrSession) it returns the delay of m's retry, which
// the rest of the batch waits as well; else 0.
func (s *Sender) deliver(ctx context.Context, m claimed) (time.Duration, error) {
	const (
		// The claim covers the whole batch, whose rows are sent one after
		// the other: a slow mail server can make the batch outlast the
		// lease, and another sender would then claim (and send) the rows
		// still waiting here. Each row's lease starts again when its turn
		// comes, if the row is still this claim's (attempts unchanged);
		// otherwise another sender has it and it is skipped.
		qRenew = `
UPDATE mail_queue SET next_attempt_at = now() + make_interval(secs => $3)
WHERE id = $1 AND attempts = $2 AND status = 'pending'`
		// Only this claim's failure is recorded: a late one must not undo
		// what a sender that claimed the row after it did.
		qFail = `
UPDATE mail_queue SET last_error = $2,
       next_attempt_at = now() + make_interval(secs => $3),
       status = CASE WHEN $4 THEN 'parked' ELSE 'pending' END,
       token  = CASE WHEN $4 THEN NULL ELSE token END
WHERE id = $1 AND attempts = $5 AND status = 'pending'`
	)
	leaseEnd := time.Now().Add(s.o.Lease)
	if tag, err := s.o.Pool.Exec(ctx, qRenew, m.ID, m.Attempts, s.o.Lease.Seconds()); err != nil {
		return 0, fmt.Errorf("renew the lease of mail %d: %w", m.ID, err)
	} else if tag.RowsAffected() == 0 {
		return 0, nil
	}
	var d Data
	if err := json.Unmarshal(m.Data, &d); err != nil {
		return 0, fmt.Errorf("mail %d: data: %w", m.ID, err)
	}
	tok := ""
	if m.Token != nil {
		tok = *m.Token
		if reason, err := s.deadLink(ctx, Kind(m.Kind), tok, d); err != nil {
			// Nothing was tried: the mail goes back at once, for the
			// next poll, rather than after the lease.
			return 0, errors.Join(fmt.Errorf("check the link of mail %d: %w", m.ID, err), s.giveBack(ctx, 0, m))
		} else if reason != "" {
			return 0, s.drop(ctx, m, reason)
		}
	}
	out := Outgoing{From: s.o.From, MessageID: "mail-" + strconv.FormatInt(m.ID, 10) + "@" + s.o.MessageIDHost}
	var sendErr error
	if !ValidAddress(m.To) {
		// Queued by EnqueueOrPark for an address stored before
		// ValidAddress refused it: parked, never sent.
		sendErr = fmt.Errorf("%w: %w", ErrPermanent, whyNotMailed(m.To))
	} else if m.Token == nil && Kind(m.Kind).hasToken() {
		// Only a row whose token was scrubbed (an earlier send that lost
		// its acknowledgement) has none: the link would be dead.
		sendErr = fmt.Errorf("%w: the token is gone", ErrPermanent)
	} else if out.Rendered, sendErr = s.o.Links.Render(Kind(m.Kind), m.To, tok, d); sendErr != nil {
		sendErr = fmt.Errorf("%w: render: %v", ErrPermanent, sendErr)
	} else {
		sendErr = s.o.Transport.Send(ctx, out)
	}
	var rf refused
	hold := false // a first refusal, kept pending with its link until a verdict
	if errors.As(sendErr, &rf) {
		switch s.refusal(m, rf.at, sendErr) {
		case verdictServer:
			// Not the mail's: kept pending with its link, the batch ended
			// and the queue held back, as for a refused session.
			sendErr = fmt.Errorf("%w: %s: %s", ErrSession, refusingAll(rf.at), strings.TrimPrefix(sendErr.Error(), ErrPermanent.Error()+": "))
		case verdictFirst:
			hold = true
		}
	}
	// What the send did is recorded even if the sender is stopping
	// meanwhile (ctx ends at shutdown): an SMTP session, once connected,
	// runs to its end, and a mail it delivered but left pending would be
	// sent again after the lease, its token kept until then.
	if sendErr != nil && ctx.Err() != nil {
		return 0, errors.Join(ctx.Err(), s.giveBack(ctx, 0, m))
	}
	rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if sendErr == nil {
		if err := s.recordSent(ctx, m.ID, leaseEnd); err != nil {
			return 0, fmt.Errorf("mark mail %d sent: %w", m.ID, err)
		}
		s.sent.Inc()
		return 0, s.accepted(ctx)
	}
	permanent := errors.Is(sendErr, ErrPermanent)
	park := permanent && !hold || m.Attempts >= s.o.MaxAttempts && !s.outlasts(m, d, sendErr)
	if permanent {
		s.failed.WithLabelValues("permanent").Inc()
	} else {
		s.failed.WithLabelValues("temporary").Inc()
	}
	delay := s.o.BackoffBase << min(m.Attempts-1, 30)
	if delay > s.o.BackoffMax || delay <= 0 {
		delay = s.o.BackoffMax
	}
	// The server's reply often names the recipient, and go-mail adds the
	// affected recipients: the log gets the error without addresses (as
	// coreapi's "request failed" line keeps them out), its status codes
	// kept; the row, which holds the address anyway, gets it whole.
	logged := logging.RedactAddresses(sendErr.Error())
	switch {
	case park:
		s.parked.Inc()
		s.o.Logger.Error("mail parked", "mail_id", m.ID, "kind", m.Kind, "attempts", m.Attempts, "err", logged)
	case hold:
		s.o.Logger.Warn("mail refused; held until the mail server accepts or refuses another mail",
			"mail_id", m.ID, "kind", m.Kind, "attempts", m.Attempts, "retry_in", delay, "err", logged)
	default:
		s.o.Logger.Warn("mail delivery failed; will retry", "mail_id", m.ID, "kind", m.Kind, "attempts", m.Attempts, "retry_in", delay, "err", logged)
	}
	if _, err := s.o.Pool.Exec(rec, qFail, m.ID, clip.Text(sendErr.Error(), 1000), delay.Seconds(), park, m.Attempts); err != nil {
		return 0, fmt.Errorf("record mail %d failure: %w", m.ID, err)
	}
	if errors.Is(sendErr, ErrSession) {
		return delay, nil
	}
	return 0, nil
}

// deadLink is why the link of a mail of kind k with token tok (Data d)
// can no longer work, "" when it can: its expiry has passed (a backlog
// after an outage), or LinkCheck says so.
func (s *Sender) deadLink(ctx context.Context, k Kind, tok string, d Data) (string, error) {
	if !k.hasToken() {
		return "", nil
	}
	if !d.ExpiresAt.IsZero() && !time.Now().Before(d.ExpiresAt) {
		return "expired", nil
	}
	if s.o.LinkCheck == nil {
		return "", nil
	}
	return s.o.LinkCheck(ctx, k, tok)
}

// drop deletes m, not sent, whose link can no longer work (reason), as
// DropUnsentSQL deletes the mails of a token that ended: mailed, it
// would only open a page saying so. It is counted
// (coreapi_mail_dropped_total{reason}) and logged. A row claimed again
// since (its lease ended) is left alone.
func (s *Sender) drop(ctx context.Context, m claimed, reason string) error {
	const q = `DELETE FROM mail_queue WHERE id = $1 AND attempts = $2 AND status = 'pending'`
	rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	tag, err := s.o.Pool.Exec(rec, q, m.ID, m.Attempts)
	if err != nil {
		return fmt.Errorf("drop mail %d: %w", m.ID, err)
	}
	if tag.RowsAffected() == 1 {
		s.dropped.WithLabelValues(reason).Inc()
		s.o.Logger.Info("mail dropped: its link can no longer work", "mail_id", m.ID, "kind", m.Kind, "reason", reason)
	}
	return nil
}

// refusingAll is what the error of a mail held by a server that refuses
// every mail at stage at says.
func refusingAll(at stage) string {
	switch at {
	case atRcpt:
		return "the mail server refuses every recipient (recipients at two domains refused, none accepted since)"
	case atData:
		return "the mail server refuses every message (mails to two domains refused at DATA, none accepted since)"
	}
	return ""
}

// refusal notes that the mail server refused m with a 5xx at stage at
// (err), and tells what the refusal is taken for. A relay that does not
// relay for coreapi ("554 5.7.1 Relay access denied": a wrong SMTP_URL)
// answers every RCPT TO so, and one whose policy refuses every message
// coreapi sends (a content filter, a sender it does not take) answers
// every DATA so; parking each mail would scrub the link of every mail
// queued for a fault that is none of theirs. Nothing in one answer tells
// that apart from a mailbox that does not exist or a message refused for
// itself: a refusal at a stage is the server's (verdictServer) once a
// mail to another domain has been refused at that stage too with no mail
// accepted in between, and from then on, until the server accepts a
// mail. The first refusal since the server last accepted a mail waits
// for that verdict (verdictFirst: kept pending with its link, and parked
// once the server accepts a mail, or when it is refused again with
// nothing else learnt), so that a relay that goes bad parks no mail at
// all. Refusals at one domain only stay their mails' (verdictMail:
// parked; that domain's mail system may refuse them all). The first
// verdictServer at a stage is logged as an error and raises its gauge.
func (s *Sender) refusal(m claimed, at stage, err error) verdict {
	i := strings.LastIndexByte(m.To, '@')
	domain := inboxDomain(strings.ToLower(m.To[i+1:]))
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &s.refusals[at]
	switch {
	case r.all:
		return verdictServer
	case r.domain == "":
		r.domain = domain
		r.first = &suspect{id: m.ID, attempts: m.Attempts, kind: m.Kind, err: logging.RedactAddresses(err.Error())}
		return verdictFirst
	case r.domain == domain:
		if r.first != nil && r.first.id == m.ID {
			r.first = nil // refused again, nothing else learnt: its own
		}
		return verdictMail
	}
	r.all, r.first = true, nil
	what := "recipient; holding the queue back until it accepts one"
	if at == atData {
		what = "message; holding the queue back until it accepts one"
		s.refusingData.Set(1)
	} else {
		s.refusingRcpt.Set(1)
	}
	s.o.Logger.Error("mail server refuses every "+what, "mail_id", m.ID, "err", logging.RedactAddresses(err.Error()))
	return verdictServer
}

// accepted notes that the mail server accepted a mail: the refusals
// before it were their mails', and a first refused mail still waiting for
// a verdict is parked now (its token scrubbed), unless it has been
// claimed again since (its attempts changed) or has gone.
func (s *Sender) accepted(ctx context.Context) error {
	const qPark = `
UPDATE mail_queue SET status = 'parked', token = NULL, next_attempt_at = now()
WHERE id = $1 AND attempts = $2 AND status = 'pending'`
	s.mu.Lock()
	var waiting []suspect
	for at := range s.refusals {
		if f := s.refusals[at].first; f != nil {
			waiting = append(waiting, *f)
		}
		s.refusals[at] = refusals{}
	}
	s.refusingRcpt.Set(0)
	s.refusingData.Set(0)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	for _, f := range waiting {
		tag, err := s.o.Pool.Exec(ctx, qPark, f.id, f.attempts)
		if err != nil {
			return fmt.Errorf("park mail %d: %w", f.id, err)
		}
		if tag.RowsAffected() == 1 {
			s.parked.Inc()
			s.o.Logger.Error("mail parked", "mail_id", f.id, "kind", f.kind, "attempts", f.attempts, "err", f.err)
		}
	}
	return nil
}

// recordSent marks the row id sent, its token scrubbed; the row of a
// KindAccountDeleted mail is deleted instead: the account it confirms is
// gone, and so must its address be (users.DeleteAccount deleted the
// other rows to it). The mail is out:
// a database away for a moment (a failover, its connections cut) would
// otherwise leave the row pending with its token, and the mail would go
// out a second time, a live link in each copy, once its lease ended
// (leaseEnd). So the mark is tried again, with a short backoff, until
// then; once the sender stops (ctx), for recordTimeout at most.
func (s *Sender) recordSent(ctx context.Context, id int64, leaseEnd time.Time) error {
	const qSent = `
WITH gone AS (DELETE FROM mail_queue WHERE id = $1 AND kind = 'account_deleted' RETURNING id)
UPDATE mail_queue SET status = 'sent', sent_at = now(), token = NULL, last_error = NULL
WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM gone)`
	var stopBy time.Time
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		_, err := s.o.Pool.Exec(rec, qSent, id)
		cancel()
		if err == nil {
			return nil
		}
		deadline := leaseEnd
		if ctx.Err() != nil {
			if stopBy.IsZero() {
				stopBy = time.Now().Add(recordTimeout)
			}
			if stopBy.Before(deadline) {
				deadline = stopBy
			}
		}
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		s.o.Logger.Warn("mail sent, not yet recorded; trying again", "mail_id", id, "retry_in", wait, "err", err)
		time.Sleep(wait)
	}
}

// outlasts reports whether m, whose try failed with err, is still worth
// trying past MaxAttempts (SenderOptions.RetryFor): the failure was the
// server's session, not the mail's, and the mail can still serve (its
// link has not expired; one without a link was queued less than RetryFor
// ago).
func (s *Sender) outlasts(m claimed, d Data, err error) bool {
	if !errors.Is(err, ErrSession) {
		return false
	}
	until := m.Queued.Add(s.o.RetryFor)
	if Kind(m.Kind).hasToken() {
		until = d.ExpiresAt
	}
	return time.Now().Before(until)
}

// Prune deletes sent rows older than Retain and parked rows queued more
// than RetainParked ago: a parked row keeps its address and error for the
// operator (and an alert names them), not for ever. It deletes in batches
// (sweep.InBatches), finding the parked rows through their partial index
// (migration 00047).
func (s *Sender) Prune(ctx context.Context) (int64, error) {
	const q = `
DELETE FROM mail_queue WHERE id IN (
    SELECT id FROM mail_queue
    WHERE status = 'sent' AND sent_at < now() - make_interval(secs => $1)
       OR status = 'parked' AND created_at < now() - make_interval(secs => $2)
    LIMIT $3
    FOR UPDATE SKIP LOCKED)`
	n, err := sweep.InBatches(ctx, s.o.Pool, q, s.o.Retain.Seconds(), s.o.RetainParked.Seconds())
	if err != nil {
		return n, fmt.Errorf("prune mail: %w", err)
	}
	return n, nil
}
