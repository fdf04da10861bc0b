package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// Channel is the PostgreSQL NOTIFY channel the outbox trigger signals.
const Channel = "outbox"

// MsgIDHeader carries the outbox row id on every published message, so a
// consumer (or a JetStream stream) can drop the rare duplicate: delivery is
// at least once.
const MsgIDHeader = "Nats-Msg-Id"

// ErrNATSDown means the relay's NATS connection is not connected; rows stay
// pending and are retried.
var ErrNATSDown = errors.New("nats not connected")

// errPublish marks a batch that failed on NATS's side (a publish, its
// flush, a refusal), not the database's.
var errPublish = errors.New("publish")

// RelayOptions tune a Relay; zero values take the defaults.
type RelayOptions struct {
	// Batch is the most rows published per transaction (default 256).
	Batch int
	// Poll is the fallback interval when no notification arrives (LISTEN
	// unavailable, e.g. behind PgBouncer in transaction mode, or NATS was
	// down) (default 1s).
	Poll time.Duration
	// Retain is how long published rows are kept before pruning (default 1h).
	Retain time.Duration
	// PruneEvery is the pruning interval (default 1m).
	PruneEvery time.Duration
	// FlushTimeout bounds the wait for NATS to confirm a batch (default
	// 5s). A connection that answers neither that confirmation nor a
	// second ping within it again is dropped for a new one.
	FlushTimeout time.Duration
	// ListenPing is how long the LISTEN connection may stay quiet before
	// the relay asks its server whether it is still there, and how long
	// the answer may take (default 5s): a connection that died without a
	// word (a NAT or firewall that dropped it while idle, a partition)
	// would otherwise leave the relay deaf, believing it heard every
	// commit, until TCP keepalive noticed minutes later. The pings also
	// keep such middleboxes from dropping it.
	//
	// It also bounds each database step of the relay (a transaction's
	// begin, claim, mark or commit; each statement of a heartbeat look, of
	// a prune, of a backlog reading), to one Heartbeat interval (at least
	// 1s) when that is shorter: a database that stops answering without
	// closing anything (a partition, a server stopped with SIGSTOP) held
	// the relay's loop on its pooled connection for ever, and no
	// heartbeat went out, neither through the outbox nor straight to NATS.
	// A step that does not end in time fails as the database being
	// unreachable (its connection is closed), as a refused connection
	// does; so that a database that answers, but slowly (a lock another
	// session holds, a slow statement), is not taken for one gone, the
	// server ends each statement of a step itself a fifth sooner
	// (lock_timeout, statement_timeout), and the relay tries again as
	// after any other failed statement. NATS's confirmation of a batch is
	// not a database step (FlushTimeout bounds it), nor is the last flush
	// when Run ends (FlushTimeout bounds it, and its statements).
	ListenPing time.Duration
	// Heartbeat is how often the relay looks whether a heartbeat row is
	// due (see Beat); zero: never (coreapi's OUTBOX_HEARTBEAT_INTERVAL
	// sets it, 2 s by default). Every look also publishes the relay's
	// own beat (auth.outbox.relay) straight to NATS.
	Heartbeat time.Duration
	// Backoff is how long the relay waits before it tries again after a
	// batch NATS did not take (a subject its permissions refuse, a
	// confirmation that did not come, a connection replaced before it
	// came) (default 1s); the wait doubles at each failure after, up to
	// MaxBackoff (default 30s), and a batch NATS takes starts it over.
	// Commits' notifications and polls do not cut it short (a subject
	// refused for good had the batch, and its log lines, repeated at each);
	// a reconnection of NATS does.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// BacklogEvery is how often the relay reads the outbox's backlog
	// (ReadBacklog: how many rows are pending, how old the oldest is)
	// for Backlog, the gauges' source (default 5s). One indexed statement
	// a reading, whatever the traffic: the backlog is what an outage of
	// NATS, or a subject its permissions refuse, leaves behind, which the
	// failure counters alone do not tell.
	BacklogEvery time.Duration
	// BacklogCap is the most pending rows a reading counts (default
	// DefaultBacklogCap): a backlog beyond it reads as BacklogCap, and
	// counting it costs no more than that many entries of
	// outbox_pending_idx.
	BacklogCap int
	// ID names the relay in its beats and in outbox_relays (default: the
	// host name and 8 random hex digits, unique to the process). It should
	// stay the same when the process restarts (the pod's name and
	// coreapi's port: coreapi's default), so that a replica
	// restarted while the database is away, which cannot register anew,
	// beats under the name the proxies already expect (its own beat: having
	// drained nothing, it publishes no heartbeat straight to NATS); and it
	// must differ between live processes: a relay that finds another
	// process registered under its name since its own last registration
	// logs an error and appends its instance to its name (see Beat).
	ID string
	// stepped, when set (tests), runs on Run's goroutine after each of its
	// drains (beat false) and after each heartbeat look (beat true), once
	// what it published (the relay's beat, a heartbeat straight to NATS)
	// is handed to the NATS client.
	stepped func(beat bool)
	// step is how long one database step of the relay may take (see
	// ListenPing), set by defaults.
	step time.Duration
}

func (o *RelayOptions) defaults() {
	if o.Batch <= 0 {
		o.Batch = 256
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Retain <= 0 {
		o.Retain = time.Hour
	}
	if o.PruneEvery <= 0 {
		o.PruneEvery = time.Minute
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = 5 * time.Second
	}
	if o.ListenPing <= 0 {
		o.ListenPing = 5 * time.Second
	}
	o.step = o.ListenPing
	if o.Heartbeat > 0 {
		o.step = min(o.ListenPing, max(o.Heartbeat, time.Second))
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.Backoff)
	if o.BacklogEvery <= 0 {
		o.BacklogEvery = 5 * time.Second
	}
	if o.BacklogCap <= 0 {
		o.BacklogCap = DefaultBacklogCap
	}
	if o.ID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "relay"
		}
		o.ID = host + "-" + newInstance()
	}
}

// newInstance is 8 random hex digits naming one relay process in
// outbox_relays, apart from its ID, which a restarted process keeps.
func newInstance() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Relay publishes committed outbox rows to NATS. Any number of relays (one
// per replica) can run against one database: each batch is claimed with
// FOR UPDATE SKIP LOCKED and marked published in the same transaction, so
// two relays never publish the same row at the same time, and a relay that
// dies mid-batch releases its rows to the others.
type Relay struct {
	pool *pgxpool.Pool
	nc   *nats.Conn
	log  *slog.Logger
	o    RelayOptions
	wake chan struct{}
	// begin begins the transaction of a step (stepTx, claimAndPublish)
	// with the server's bounds of a step (beginBounded).
	begin pgx.TxOptions

	published     atomic.Int64
	failures      atomic.Int64
	refused       atomic.Int64
	undeliverable atomic.Int64
	// backlogRows and backlogAge are the last backlog reading
	// (ReadBacklog), the age in ns.
	backlogRows atomic.Int64
	backlogAge  atomic.Int64
	// refusals are the subjects NATS refused since the relay last reported
	// them (Refused).
	refusals refusals
	// notes counts the notifications listen heard (and its LISTENs, after
	// which rows committed meanwhile may be waiting): a commit since.
	notes atomic.Int64
	// heard holds the rows those notifications announced.
	heard heard
	// beatAt is when NATS last confirmed the relay's own beat, in ns on
	// the monotonic clock since born (a wall clock step must not register
	// a silent relay, or unregister a beating one); beatRefused whether
	// the last one was refused (logged once).
	born        time.Time
	beatAt      atomic.Int64
	beatRefused bool
	// instance names this process in outbox_relays; registered is whether
	// it registered there since it started (Beat).
	instance   string
	registered bool
	// unlisted is how many registered relays the last heartbeat row this
	// relay wrote left unlisted (invalidation.MaxRelaysListed).
	unlisted int64
	// confirmHook, when set (tests), runs in publish between the
	// publications and the wait for their confirmation; probeHook in
	// confirm, before the second ping that follows a flush timed out.
	confirmHook func()
	probeHook   func()
}

// NewRelay returns a relay publishing through nc. The caller owns nc
// (connect it with reconnects enabled; drain it after Run returns).
func NewRelay(pool *pgxpool.Pool, nc *nats.Conn, log *slog.Logger, o RelayOptions) *Relay {
	o.defaults()
	return &Relay{pool: pool, nc: nc, log: log, o: o, wake: make(chan struct{}, 1), begin: beginBounded(o.step), born: time.Now(),
		instance: newInstance()}
}

// RelayStats counts what a relay did since it started.
type RelayStats struct {
	Published int64 // rows published and marked
	Failures  int64 // batches that could not be published
	// Refused counts the failures that were a refusal of NATS's
	// permissions (a subject coreapi's NATS user may not publish).
	Refused int64
	// Undeliverable counts the publications of rows whose subject
	// invalidation.CheckSubject refuses, sent as auth.invalidate.all
	// instead.
	Undeliverable int64
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Published: r.published.Load(), Failures: r.failures.Load(), Refused: r.refused.Load(),
		Undeliverable: r.undeliverable.Load()}
}

// DefaultBacklogCap is RelayOptions.BacklogCap's default: about 2 ms of
// an index-only scan, and a backlog far beyond any a healthy relay leaves.
const DefaultBacklogCap = 10_000

// Backlog is the outbox's backlog as a reading found it: the rows not
// yet published (up to RelayOptions.BacklogCap), and the age of the
// oldest of them, the first in the relays' order, which holds back every
// later one (0 when none is pending).
type Backlog struct {
	Rows      int64
	OldestAge time.Duration
}

// Backlog returns the last backlog reading (zero before the first). A
// reading that failed (the database unreachable) leaves the one before.
func (r *Relay) Backlog() Backlog {
	return Backlog{Rows: r.backlogRows.Load(), OldestAge: time.Duration(r.backlogAge.Load())}
}

// ReadBacklog reads the outbox's backlog, keeps it for Backlog, and
// returns it. Both parts walk outbox_pending_idx (the pending rows' ids):
// the count stops at BacklogCap entries, and the oldest row is the first
// entry. The age is the database's reckoning (created_at is its clock).
func (r *Relay) ReadBacklog(ctx context.Context) (Backlog, error) {
	return r.readBacklog(ctx, r.pool)
}

// readBacklog is ReadBacklog through db.
func (r *Relay) readBacklog(ctx context.Context, db sqldb.DB) (Backlog, error) {
	const q = `
SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE published_at IS NULL LIMIT $1) pending),
       coalesce((SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox
                 WHERE published_at IS NULL ORDER BY id LIMIT 1), 0)`
	var rows int64
	var age float64
	if err := db.QueryRow(ctx, q, r.o.BacklogCap).Scan(&rows, &age); err != nil {
		return Backlog{}, fmt.Errorf("read outbox backlog: %w", err)
	}
	b := Backlog{Rows: rows, OldestAge: max(time.Duration(age*float64(time.Second)), 0)}
	if rows > 0 && b.OldestAge == 0 {
		b.OldestAge = 1 // pending: not the none of an empty backlog
	}
	r.backlogRows.Store(b.Rows)
	r.backlogAge.Store(int64(b.OldestAge))
	return b, nil
}

// watchBacklog reads the backlog at once and every BacklogEvery until ctx
// ends, apart from the drains: a drain that waits on NATS must not hold
// the reading back. A failed reading is logged at debug level (the
// relay's own failures are logged as such) and tried at the next tick.
func (r *Relay) watchBacklog(ctx context.Context) {
	t := time.NewTicker(r.o.BacklogEvery)
	defer t.Stop()
	for {
		if err := r.stepTx(ctx, func(ctx context.Context, tx pgx.Tx) error { _, err := r.readBacklog(ctx, tx); return err }); err != nil && ctx.Err() == nil {
			r.log.Debug("outbox backlog not read", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// bounded runs f, one database step of the relay, with ctx bounded by
// RelayOptions.ListenPing's step bound: a database that stops answering
// fails the step (pgx closes its connection) instead of holding the
// relay for ever.
func (r *Relay) bounded(ctx context.Context, f func(context.Context) error) error {
	return boundedBy(ctx, r.o.step, f)
}

// boundedBy runs f with ctx bounded by bound.
func boundedBy(ctx context.Context, bound time.Duration, f func(context.Context) error) error {
	sctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	return f(sctx)
}

// serverBound is how long the server lets a statement of a step bounded
// by bound run, or wait for a lock, before it ends it itself: a fifth
// sooner than the relay stops waiting for its answer. A database that
// answers, but slowly (a lock another session holds, a statement stuck
// behind a migration), then fails the statement with 55P03 or 57014,
// which is not the database being unreachable (unreachable): the relay
// tries again, and publishes no heartbeat straight to NATS. Only a
// database that does not answer at all reaches the step bound.
func serverBound(bound time.Duration) time.Duration { return bound - bound/5 }

// beginBounded is the options of a transaction of a step bounded by
// bound: its BEGIN sets the server's bounds (serverBound) for the
// transaction, in the same round trip (pgx sends a statement without
// arguments as a simple query). The pool is coreapi's, so they are set
// for the relay's transactions only, never for its connections.
func beginBounded(bound time.Duration) pgx.TxOptions {
	ms := max(serverBound(bound).Milliseconds(), 1)
	return pgx.TxOptions{BeginQuery: fmt.Sprintf("BEGIN; SET LOCAL lock_timeout = %d; SET LOCAL statement_timeout = %d", ms, ms)}
}

// stepTx runs f, one database step of the relay (bounded), in a
// transaction with the server's bounds of a step (beginBounded), which
// it commits when f succeeds.
func (r *Relay) stepTx(ctx context.Context, f func(context.Context, pgx.Tx) error) error {
	return r.bounded(ctx, func(ctx context.Context) error {
		return pgx.BeginTxFunc(ctx, r.pool, r.begin, func(tx pgx.Tx) error { return f(ctx, tx) })
	})
}

// boundedExec is a sqldb.DB whose Exec is one step (stepTx):
// sweep.InBatches's statements, each a step of its own. Query and
// QueryRow are the pool's.
type boundedExec struct {
	sqldb.DB
	r *Relay
}

func (b boundedExec) Exec(ctx context.Context, sql string, args ...any) (tag pgconn.CommandTag, err error) {
	err = b.r.stepTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err = tx.Exec(ctx, sql, args...)
		return err
	})
	return tag, err
}

// Wake asks the relay to look for pending rows now (e.g. from a NATS
// reconnect handler), unless it is waiting after a batch NATS did not take
// (RelayOptions.Backoff) on the same connection. It never blocks.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes pending rows until ctx ends: at start, on every
// notification, on every poll tick (after a batch NATS did not take, only
// once RelayOptions.Backoff's wait is over, or NATS reconnected), and
// prunes old published rows. When
// ctx ends it publishes what is still pending once more (within
// FlushTimeout, and only while NATS is connected): rows committed by the
// last requests before a shutdown, whose notification may not have been
// acted on yet, go out now instead of waiting for another replica's relay
// or this one's next start.
func (r *Relay) Run(ctx context.Context) error {
	defer r.flush(ctx)
	if r.o.Heartbeat > 0 {
		defer r.deregister(ctx)
	}
	go r.listen(ctx)
	var watching sync.WaitGroup
	defer watching.Wait()
	watching.Go(func() { r.watchBacklog(ctx) })
	poll := time.NewTicker(r.o.Poll)
	defer poll.Stop()
	prune := time.NewTicker(r.o.PruneEvery)
	defer prune.Stop()
	var beat <-chan time.Time
	if r.o.Heartbeat > 0 {
		t := time.NewTicker(r.o.Heartbeat)
		defer t.Stop()
		beat = t.C
	}
	var said drainSaid
	beatFailing := false
	w := dbWatch{cover: r.publishHeard}
	b := backoff{first: r.o.Backoff, max: r.o.MaxBackoff}
	var retry <-chan time.Time
	drain := true
	for {
		if drain && !b.holds(r.nc) {
			r.drainAndTell(ctx, &w, &b, &said)
			if r.o.stepped != nil {
				r.o.stepped(false)
			}
			retry = nil
			if b.holds(r.nc) {
				retry = time.After(time.Until(b.until))
			}
		}
		woken := false
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
			woken = true
		case <-poll.C:
		case <-retry:
		case <-beat:
			r.beatRelay()
			// The row's trigger wakes the relays (this one too): it is
			// published by the next drain.
			_, err := r.Beat(ctx)
			if err != nil && ctx.Err() == nil {
				n := r.notes.Load()
				w.drained(err, n, n) // the database's failure, seen before the next drain's
				if w.lost {
					r.beatDirect(&w)
				}
			}
			if err == nil {
				w.answered()
			}
			switch {
			case err != nil && ctx.Err() == nil && !beatFailing:
				r.log.Warn("outbox heartbeat not written", "err", err)
				beatFailing = true
			case err == nil && beatFailing:
				r.log.Info("outbox heartbeat written again")
				beatFailing = false
			}
			if r.o.stepped != nil {
				r.o.stepped(true)
			}
		case <-prune.C:
			if w.lost {
				break // the next prune, once the database is back
			}
			if n, err := r.Prune(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("outbox prune", "err", err)
			} else if n > 0 {
				r.log.Debug("outbox pruned", "rows", n)
			}
		}
		// While the database is unreachable under a drained outbox
		// (w.lost), only the heartbeat looks and the wakes (a commit's
		// notification, a LISTEN lost or begun, NATS reconnected) try it:
		// a database that does not answer holds each try for a step
		// (RelayOptions.ListenPing), and drains at every poll left the
		// looks, and so the heartbeats straight to NATS, several steps
		// apart. A look that reaches it ends the outage, and the drains
		// resume. A relay without heartbeat looks drains at every poll.
		drain = woken || !w.lost || beat == nil
	}
}

// drainSaid is what Run's drains have logged, so that each thing is said
// once: failing, that a drain failed since the last that succeeded (the
// next that does says the relay publishes again); down, that the relay
// cannot publish, said once an outage. A refusal ends the outage (NATS
// answered: a later one is said again), as a success does; it is reported
// at each refused batch (reportRefused), whatever came before it.
type drainSaid struct{ failing, down bool }

// drainAndTell is one of Run's drains: it publishes the pending rows,
// keeps w and b up to date, and logs what changed (said). A batch NATS did
// not take has b hold the next drain back.
func (r *Relay) drainAndTell(ctx context.Context, w *dbWatch, b *backoff, said *drainSaid) {
	notes := r.notes.Load()
	held, err := r.drain(ctx, r.heard.upTo(notes))
	if err == nil {
		r.heard.forget(notes, held)
		b.reset()
		r.refusals.take() // reported by the connection too late for the last failure
	}
	w.drained(err, notes, r.notes.Load())
	switch {
	case err != nil && ctx.Err() == nil:
		r.failures.Add(1)
		refused := errors.Is(err, nats.ErrPermissionViolation)
		if errors.Is(err, errPublish) {
			wait := b.failed(r.nc)
			if refused {
				r.refused.Add(1)
				r.reportRefused(err, wait)
			}
		}
		switch {
		case refused:
			said.down = false
		case !said.down: // log the outage once, not on every poll
			r.log.Warn("outbox relay cannot publish; rows stay pending", "err", err)
			said.down = true
		}
		said.failing = true
	case err == nil && said.failing:
		r.log.Info("outbox relay publishing again")
		*said = drainSaid{}
	}
}

// backoff is how long Run waits before its next drain after a batch NATS
// did not take (RelayOptions.Backoff, MaxBackoff).
type backoff struct {
	first, max time.Duration
	// next is the wait after the next failure (0: first); until is when
	// the current wait ends (zero: none), unless the connection, whose
	// count of reconnections was reconnects then, is replaced before.
	next       time.Duration
	until      time.Time
	reconnects uint64
}

// failed starts a wait after a failure on nc, and returns how long it is.
func (b *backoff) failed(nc *nats.Conn) time.Duration {
	d := b.next
	if d == 0 {
		d = b.first
	}
	b.next = min(2*d, b.max)
	b.until = time.Now().Add(d)
	b.reconnects = nc.Stats().Reconnects
	return d
}

// reset ends the wait, and the next failure's starts over.
func (b *backoff) reset() { b.next, b.until = 0, time.Time{} }

// holds reports whether the next drain must wait still: the wait has not
// ended, and nc is the connection the failure was on (a new one may be to
// a server that takes the batch: the reconnect handler's Wake drains).
func (b *backoff) holds(nc *nats.Conn) bool {
	return !b.until.IsZero() && time.Now().Before(b.until) && nc.Stats().Reconnects == b.reconnects
}

// maxRefusalsKept bounds the refused subjects a relay keeps to report: a
// deny that covers a kind (auth.invalidate.user.>) refuses a subject a
// row.
const maxRefusalsKept = 16

// refusals are the subjects NATS refused the relay, in the order it did,
// and how many refusals of other subjects came after maxRefusalsKept.
type refusals struct {
	mu       sync.Mutex
	subjects []string
	others   int
}

func (f *refusals) add(subject string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case slices.Contains(f.subjects, subject):
	case len(f.subjects) < maxRefusalsKept:
		f.subjects = append(f.subjects, subject)
	default:
		f.others++
	}
}

// take returns the subjects and the count of the other refusals, and
// forgets them.
func (f *refusals) take() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	subjects, others := f.subjects, f.others
	f.subjects, f.others = nil, 0
	return subjects, others
}

// Refused takes an asynchronous error of the relay's NATS connection (give
// it every one, from the connection's nats.ErrorHandler) and reports
// whether it is the relay's to log: a publication the server's
// permissions refused. The relay logs the refused subjects itself, once
// a subject at each failed batch, and its batches back off: the server
// refuses every message, up to a batch's 256 rows at each attempt, and
// a handler that logged each flooded the log for as long as the refusal
// lasted. A refusal of the relay's own beat (auth.outbox.relay) is logged
// once by the beat.
func (r *Relay) Refused(err error) bool {
	subject, ok := refusedPublication(err)
	if !ok {
		return false
	}
	if subject != invalidation.SubjectRelay {
		r.refusals.add(subject)
	}
	return true
}

// refusedPublication returns the subject of a publication NATS's
// permissions refused, as the client reports it (`nats: permissions
// violation: Permissions Violation for Publish to "auth.keys.changed"`),
// and whether err is one.
func refusedPublication(err error) (string, bool) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return "", false
	}
	const to = `for publish to "`
	msg := err.Error()
	i := strings.Index(strings.ToLower(msg), to)
	if i < 0 {
		return "", false
	}
	subject, _, _ := strings.Cut(msg[i+len(to):], `"`)
	return truncate(subject, 2*invalidation.MaxSubjectLen), true
}

// reportRefused logs a batch that failed with err, a refusal of NATS's
// permissions, after which the relay waits for wait: one line naming
// the subjects refused since the last report (err names the last one:
// those the connection reports after the batch failed go into the next).
func (r *Relay) reportRefused(err error, wait time.Duration) {
	subjects, others := r.refusals.take()
	if subject, ok := refusedPublication(err); ok && !slices.Contains(subjects, subject) {
		subjects = append(subjects, subject)
	}
	r.log.Error("nats refuses outbox publications: their events are not delivered, and their batch and every row after it stay pending; grant coreapi's NATS user publish on these subjects",
		"subjects", subjects, "other_refusals", others, "retry_in", wait, "err", err)
}

// flush is Run's last publication, after ctx (Run's) ended.
func (r *Relay) flush(ctx context.Context) {
	if !r.nc.IsConnected() {
		return // the rows stay for the next relay; a shutdown does not wait on NATS
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.o.FlushTimeout)
	defer cancel()
	for {
		// Rows locked by another transaction are waited for, not skipped:
		// the batch the loop had in flight when ctx ended was cancelled,
		// and its connection releases its rows only once the server has
		// seen it closed. Another relay's batch, once committed, no longer
		// matches (published_at is set) and is not published twice. The
		// wait is FlushTimeout's, not a step's of the loop (which would
		// give up on the lock sooner).
		n, _, err := r.claimAndPublish(fctx, r.o.FlushTimeout, qClaimWaiting, r.o.Batch)
		if err != nil {
			r.log.Warn("outbox relay stopping with rows pending", "err", err)
			return
		}
		if n == 0 {
			return
		}
	}
}

// listen holds a dedicated connection LISTENing on Channel and wakes the
// loop on each notification; on error it reconnects with backoff while the
// poll ticker keeps rows flowing. A connection that listened for at least
// the wait its loss would be followed by (twice the wait before it)
// starts the backoff over: the waits of an outage
// long past must not hold back the replacement of a connection lost
// later, while a server that drops each connection as soon as it listens
// still has the waits grow.
func (r *Relay) listen(ctx context.Context) {
	const firstBackoff = 100 * time.Millisecond
	backoff := firstBackoff
	for ctx.Err() == nil {
		listened, err := r.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if listened >= backoff {
			backoff = firstBackoff
		}
		// Commits from now on are not heard; a drain at once tells a
		// database gone with the connection from one still up.
		r.heard.deafen(&r.notes)
		r.Wake()
		r.log.Warn("outbox listen", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// ListenApplicationName is the application_name of a relay's LISTEN
// connection (pg_stat_activity), apart from its pool's.
const ListenApplicationName = "tollgate-outbox-listen"

// listenOnce listens on one connection until it fails, and reports for
// how long it listened (0: it never did).
func (r *Relay) listenOnce(ctx context.Context) (time.Duration, error) {
	cfg := r.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = ListenApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	lctx, cancel := context.WithTimeout(ctx, r.o.ListenPing)
	_, err = conn.Exec(lctx, "LISTEN "+Channel)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("listen: %w", err)
	}
	since := time.Now()
	r.heard.listening(&r.notes) // rows committed while we were not listening: unknown
	r.Wake()
	for {
		wctx, cancel := context.WithTimeout(ctx, r.o.ListenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			r.hear(n.Payload)
			r.Wake()
			continue
		case ctx.Err() != nil || !pgconn.Timeout(err):
			return max(time.Since(since), 1), fmt.Errorf("wait for notification: %w", err)
		}
		// Quiet for ListenPing (a wait that times out leaves the
		// connection usable): a connection that does not answer now is
		// dead, and commits are no longer heard.
		pctx, cancel := context.WithTimeout(ctx, r.o.ListenPing)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return max(time.Since(since), 1), fmt.Errorf("listen connection does not answer: %w", err)
		}
	}
}

// maxHeard bounds the rows heard and not yet drained that a relay keeps
// (a drain forgets them); beyond it the oldest go, and the relay no longer
// knows every row announced since its last drain.
const maxHeard = 4096

// heard is what the relay's notifications announced since its last
// successful drain began: each notification's rows, by its number in
// Relay.notes. A notification that announced no row the relay could read
// (a LISTEN begun, rows too many for one notification, a trigger older
// than migration 00016) leaves a dark number: the rows committed before
// it are not all known.
//
// held are rows announced before the last successful drain began that it
// found still pending and did not claim: another relay's batch holds them
// (FOR UPDATE SKIP LOCKED), and its publication may yet fail. They are
// known rows to publish until a drain finds them published.
//
// The rows committed while the relay is not listening (before its first
// LISTEN, or since its connection was lost) are not heard: a drain that
// began after listening stopped and succeeded (deafDrained) saw the
// database up while commits could go unheard, and nothing is known until
// a LISTEN is begun again.
type heard struct {
	mu          sync.Mutex
	notes       []heardNote
	rows        int
	dark        int64
	held        []pending
	overflow    bool // more rows held than the relay keeps
	listen      bool
	deafAt      int64
	deafDrained bool
}

type heardNote struct {
	seq  int64
	rows []pending
}

// announced is one row as the outbox trigger's notification carries it.
type announced struct {
	ID        int64           `json:"id"`
	Subject   string          `json:"subject"`
	Payload   json.RawMessage `json:"payload"`
	CreatedAt time.Time       `json:"created_at"`
}

// hear counts a notification and keeps the rows its payload announces.
func (r *Relay) hear(payload string) {
	var rows []announced
	if payload != "" {
		if err := json.Unmarshal([]byte(payload), &rows); err != nil {
			rows = nil
		}
	}
	h := &r.heard
	h.mu.Lock()
	defer h.mu.Unlock()
	seq := r.notes.Add(1)
	if len(rows) == 0 {
		h.dark = seq
		return
	}
	note := heardNote{seq: seq, rows: make([]pending, len(rows))}
	for i, a := range rows {
		note.rows[i] = pending{ID: a.ID, Subject: a.Subject, Payload: a.Payload, CreatedAt: a.CreatedAt}
	}
	h.notes = append(h.notes, note)
	h.rows += len(rows)
	for h.rows > maxHeard {
		h.dark = max(h.dark, h.notes[0].seq)
		h.rows -= len(h.notes[0].rows)
		h.notes = h.notes[1:]
	}
}

// listening records a LISTEN begun: the rows committed before it are not
// all known (a dark number), those after it are heard.
func (h *heard) listening(notes *atomic.Int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dark = notes.Add(1)
	h.listen, h.deafDrained = true, false
}

// deafen records that the relay stopped listening (its LISTEN connection
// was lost), numbered in notes so that a drain tells whether it began
// after.
func (h *heard) deafen(notes *atomic.Int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.listen {
		h.listen = false
		h.deafAt = notes.Add(1)
	}
}

// upTo returns the ids of the rows announced by the notes numbered up to
// seq, and of the rows held: a drain that begins now reports which of
// them another relay still holds.
func (h *heard) upTo(seq int64) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []int64
	for _, n := range h.notes {
		if n.seq > seq {
			break
		}
		for _, p := range n.rows {
			ids = append(ids, p.ID)
		}
	}
	for _, p := range h.held {
		ids = append(ids, p.ID)
	}
	return ids
}

// forget drops the notes numbered up to seq: a drain that began after them
// succeeded, and saw their rows committed; held are those of their rows
// (and of the rows held before) that it found pending without claiming
// them: another relay's batch holds them.
func (h *heard) forget(seq int64, held []pending) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := 0
	for i < len(h.notes) && h.notes[i].seq <= seq {
		h.rows -= len(h.notes[i].rows)
		i++
	}
	h.notes = append(h.notes[:0], h.notes[i:]...)
	h.held, h.overflow = held, len(held) > maxHeard
	if h.overflow {
		h.held = nil
	}
	if !h.listen && seq >= h.deafAt {
		h.deafDrained = true
	}
}

// since returns the rows held and those announced by the notes numbered
// after from up to to, and whether they are all of the rows committed
// since the last successful drain began that it may not have published.
func (h *heard) since(from, to int64) ([]pending, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dark > from || h.overflow || (!h.listen && h.deafDrained) {
		return nil, false
	}
	rows := append([]pending(nil), h.held...)
	for _, n := range h.notes {
		if n.seq > from && n.seq <= to {
			rows = append(rows, n.rows...)
		}
	}
	return rows, true
}

// published drops the rows held: NATS confirmed them.
func (h *heard) published() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = nil
}

// publishHeard publishes, straight to NATS, the rows another relay held
// through the last successful drain and those announced by the
// notifications numbered after from up to to, when it knows them all,
// and reports whether it did: the database became unreachable before a
// drain published them. The drains publish them again once it is back,
// under the same Nats-Msg-Id (an eviction is idempotent), and mark them.
func (r *Relay) publishHeard(from, to int64) bool {
	rows, ok := r.heard.since(from, to)
	if !ok {
		return false
	}
	if len(rows) == 0 {
		return true
	}
	if !r.nc.IsConnected() {
		return false
	}
	if err := r.publish(rows); err != nil {
		r.log.Warn("outbox rows heard before the database became unreachable not published", "rows", len(rows), "err", err)
		return false
	}
	r.heard.published()
	r.log.Warn("database unreachable before the outbox was drained: published the rows its notifications announced", "rows", len(rows))
	return true
}

// Drain publishes batches until no pending row is left (or one fails).
func (r *Relay) Drain(ctx context.Context) error {
	_, err := r.drain(ctx, nil)
	return err
}

// drain is Drain, reporting which of the rows numbered watch its last
// batch found pending without claiming them (another relay holds them).
func (r *Relay) drain(ctx context.Context, watch []int64) ([]pending, error) {
	for {
		n, held, err := r.publishBatch(ctx, watch)
		if err != nil {
			return nil, err
		}
		if n < r.o.Batch {
			return held, nil
		}
	}
}

type pending struct {
	ID        int64
	Subject   string
	Payload   []byte
	CreatedAt time.Time
}

// PublishBatch claims up to Batch pending rows, publishes them, waits for
// NATS to confirm, and marks them published, all in one transaction. If
// anything fails the transaction rolls back and the rows stay pending.
func (r *Relay) PublishBatch(ctx context.Context) (int, error) {
	n, _, err := r.publishBatch(ctx, nil)
	return n, err
}

// publishBatch is PublishBatch, reporting too which of the rows numbered
// watch are pending and were not claimed: another relay's batch holds
// them (SKIP LOCKED passed them over), in the claim's snapshot.
func (r *Relay) publishBatch(ctx context.Context, watch []int64) (int, []pending, error) {
	if watch == nil {
		watch = []int64{}
	}
	return r.claimAndPublish(ctx, r.o.step, qClaim, r.o.Batch, watch)
}

const (
	// qClaim claims up to $1 pending rows that no other transaction
	// holds, and lists those of the rows numbered $2 that are pending and
	// held by another.
	qClaim = `
WITH claimed AS MATERIALIZED (
    SELECT id, subject, payload, created_at FROM outbox
    WHERE published_at IS NULL
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
SELECT id, subject, payload, created_at, false FROM claimed
UNION ALL
SELECT id, subject, payload, created_at, true FROM outbox
WHERE id = ANY($2) AND published_at IS NULL AND id NOT IN (SELECT id FROM claimed)`
	// qClaimWaiting is qClaim waiting for the rows another transaction
	// holds (the last flush): once that one ends they are claimed if
	// still pending, passed over if it published them.
	qClaimWaiting = `
SELECT id, subject, payload, created_at, false FROM outbox
WHERE published_at IS NULL
ORDER BY id
LIMIT $1
FOR UPDATE`
	qMark = `UPDATE outbox SET published_at = now() WHERE id = ANY($1)`
)

// claimAndPublish is publishBatch with each database step bounded by
// bound (RelayOptions.ListenPing's step bound, or the last flush's
// FlushTimeout), its claim (qClaim or qClaimWaiting) and the claim's
// arguments.
func (r *Relay) claimAndPublish(ctx context.Context, bound time.Duration, claim string, args ...any) (int, []pending, error) {
	if !r.nc.IsConnected() {
		return 0, nil, ErrNATSDown
	}
	begin := r.begin
	if bound != r.o.step {
		begin = beginBounded(bound)
	}
	step := func(f func(context.Context) error) error { return boundedBy(ctx, bound, f) }
	// Each database step is bounded apart, not the transaction: the wait
	// for NATS's confirmation in between is not the database's.
	var tx pgx.Tx
	if err := step(func(ctx context.Context) (err error) { tx, err = r.pool.BeginTx(ctx, begin); return err }); err != nil {
		return 0, nil, err
	}
	defer func() {
		// After the commit a no-op; after a failure the connection is
		// closed if the rollback fails too.
		_ = step(func(ctx context.Context) error { return tx.Rollback(ctx) })
	}()
	var batch, held []pending
	err := step(func(ctx context.Context) error {
		rows, _ := tx.Query(ctx, claim, args...)
		var p pending
		var other bool
		_, err := pgx.ForEachRow(rows, []any{&p.ID, &p.Subject, &p.Payload, &p.CreatedAt, &other}, func() error {
			if other {
				held = append(held, p)
			} else {
				batch = append(batch, p)
			}
			p = pending{}
			return nil
		})
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	if len(batch) > 0 {
		if err := r.publish(batch); err != nil {
			return 0, nil, err
		}
		ids := make([]int64, len(batch))
		for i, p := range batch {
			ids[i] = p.ID
		}
		if err := step(func(ctx context.Context) error { _, err := tx.Exec(ctx, qMark, ids); return err }); err != nil {
			return 0, nil, fmt.Errorf("mark published: %w", err)
		}
	}
	if err := step(func(ctx context.Context) error { return tx.Commit(ctx) }); err != nil {
		return 0, nil, err
	}
	r.published.Add(int64(len(batch)))
	return len(batch), held, nil
}

// publish publishes rows and waits for NATS to confirm them; an error
// wraps errPublish.
func (r *Relay) publish(rows []pending) error {
	// The server answers a publish its permissions refuse with an error
	// of its own, before the flush's answer, and drops the message: the
	// flush alone would have the row marked published.
	before := r.sending()
	for _, p := range rows {
		subject := p.Subject
		if err := invalidation.CheckSubject(subject); err != nil {
			// Left pending, the row would hold back every later one for
			// ever (one too long for NATS's protocol line has the server
			// close the connection, which the client does not reopen);
			// what it named is unknown, so everything goes. Written by
			// hand, or by a release that did not check subjects (Write
			// refuses them).
			r.undeliverable.Add(1)
			r.log.Error("outbox row has a subject NATS cannot deliver or no proxy can act on; publishing auth.invalidate.all instead",
				"id", p.ID, "subject", truncate(subject, 2*invalidation.MaxSubjectLen), "err", err)
			subject = invalidation.SubjectAll
		}
		msg := &nats.Msg{Subject: subject, Data: body(p), Header: nats.Header{}}
		msg.Header.Set(MsgIDHeader, strconv.FormatInt(p.ID, 10))
		if max := r.nc.MaxPayload(); max > 0 && int64(len(msg.Data)+msgHeaderRoom) > max {
			// The server's max_payload refuses it (the client does, before
			// sending): left pending, it would hold back every later row
			// for ever. Its payload is what is too long (a reason written
			// by hand, a heartbeat listing relays with long names under a
			// lowered max_payload); the subject says what to drop.
			r.log.Error("outbox row too large for NATS's max_payload; publishing it without its payload",
				"id", p.ID, "subject", subject, "bytes", len(msg.Data), "max_payload", max)
			msg.Data = shrunk(p, subject)
		}
		if err := r.nc.PublishMsg(msg); err != nil {
			return fmt.Errorf("%w %s: %w", errPublish, subject, err)
		}
	}
	if r.confirmHook != nil {
		r.confirmHook()
	}
	return r.confirm(before)
}

// sent is the state of the relay's NATS connection before a publication,
// against which confirm judges it: its last error and its count of
// reconnections.
type sent struct {
	lastErr    error
	reconnects uint64
}

// sending reads the connection's state before a publication (confirm).
func (r *Relay) sending() sent {
	return sent{lastErr: r.nc.LastError(), reconnects: r.nc.Stats().Reconnects}
}

// confirm waits for NATS to confirm what was published since sending
// returned before; an error wraps errPublish. Core NATS has no
// per-message ack: a flush round trip proves the server has received
// everything published before it on the same connection, and a
// publication its permissions refused is answered with an error of its
// own before the flush's answer.
//
// A connection lost meanwhile takes with it what it had not yet
// delivered (the client's buffer, the socket's, a server that died with
// them unread), while the flush's ping, sent once the client is
// reconnecting, waits in its buffer for the next connection, whose server
// answers it: a flush that succeeded across a reconnection proves nothing
// of what went out before it, and the publication fails (it is sent
// again; a duplicate eviction is harmless).
func (r *Relay) confirm(before sent) error {
	if err := r.nc.FlushTimeout(r.o.FlushTimeout); err != nil {
		if r.dead(err, before) {
			// The connection reads as up but the server answers nothing: a
			// link that died without closing, which the client would
			// notice only after minutes of unanswered pings, while every
			// batch waits and fails. A new connection is tried at once.
			r.log.Warn("outbox relay's NATS connection does not answer; reconnecting", "err", err)
			if rerr := r.nc.ForceReconnect(); rerr != nil {
				r.log.Warn("outbox relay reconnect", "err", rerr)
			}
		}
		return fmt.Errorf("%w: flush nats: %w", errPublish, err)
	}
	if n := r.nc.Stats().Reconnects; n != before.reconnects {
		return fmt.Errorf("%w: nats reconnected before confirming the publication", errPublish)
	}
	if err := r.nc.LastError(); err != before.lastErr && errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("%w refused: %w", errPublish, err)
	}
	return nil
}

// dead reports whether a flush that failed with err, on the connection
// whose state before the publication was before, leaves it unusable: the
// flush timed out on that very connection, which still reads as up, and a
// second ping gets no answer within FlushTimeout either. A server that
// answers it (pings are answered in order, after what came before them)
// is slow, not gone. No other failure makes the relay reconnect: a
// connection lost meanwhile (the flush's answer cleared, ErrConnectionClosed)
// is one the client is already replacing, or one closed (the relay's own
// shutdown); a refusal (permissions) is the server's answer on a
// connection that works. Forcing a reconnection over them would throw
// away a working connection, each relay of the fleet at once when the
// server is slow for all.
func (r *Relay) dead(err error, before sent) bool {
	replaced := func() bool {
		return !r.nc.IsConnected() || r.nc.IsDraining() || r.nc.Stats().Reconnects != before.reconnects
	}
	if !errors.Is(err, nats.ErrTimeout) || replaced() {
		return false
	}
	if r.probeHook != nil {
		r.probeHook()
	}
	err = r.nc.FlushTimeout(r.o.FlushTimeout)
	return errors.Is(err, nats.ErrTimeout) && !replaced()
}

// truncate is s cut to at most n bytes, for a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// msgHeaderRoom bounds the headers of a row's message (Nats-Msg-Id and
// the header line), counted by NATS against max_payload.
const msgHeaderRoom = 64

// shrunk is the body of a row whose payload is too large to publish: its
// time alone (an auth.keys.changed without its key set's digest has every
// proxy refetch), and on a heartbeat its interval and the count of the
// relays it listed, as unlisted: a proxy then knows it cannot watch them,
// and calls its feed stale.
func shrunk(p pending, subject string) []byte {
	var ev invalidation.Event
	_ = json.Unmarshal(p.Payload, &ev)
	out := invalidation.Event{At: ev.At}
	if out.At == 0 {
		out.At = p.CreatedAt.UnixMilli()
	}
	if subject == invalidation.SubjectHeartbeat {
		out.IntervalMS = ev.IntervalMS
		out.RelaysUnlisted = max(len(ev.Relays)+ev.RelaysUnlisted, 1)
	}
	b, _ := json.Marshal(out)
	return b
}

// body is the invalidation.Event for a row; "at" defaults to the row's
// creation time when the writer did not set it.
func body(p pending) []byte {
	var ev invalidation.Event
	if err := json.Unmarshal(p.Payload, &ev); err != nil || ev.At == 0 {
		ev.At = p.CreatedAt.UnixMilli()
	}
	b, _ := json.Marshal(ev)
	return b
}

// Beat writes a heartbeat row (subject auth.outbox.heartbeat) when the
// newest one is older than three quarters of Heartbeat and already
// published, or there is none, and reports whether it wrote one. Every
// replica's relay looks every Heartbeat, so the fleet's proxies get one
// heartbeat every three quarters of an interval to one interval whatever
// the number of replicas (two replicas that look at the same moment may
// both write one: harmless); the quarter's slack lets the relay that wrote
// the last one write the next at its next look, however much sooner than
// a full interval after the write that look's statement starts (a full
// interval, and one relay wrote at every other look about half the time).
// While no relay can publish, at most one row per replica waits
// unpublished: the rows do not pile up into a burst for when one can
// again. A proxy that hears none for NATS_HEARTBEAT_TIMEOUT trusts its
// caches only for MAX_STALENESS: the relays are not publishing, although
// NATS may be up for the proxy.
//
// First, while NATS confirms the relay's own beats (beatRelay), Beat
// registers the relay in outbox_relays; the row it writes lists the
// relays registered in the last relayListed intervals (payload "relays"),
// whose beats each proxy then expects: the first
// invalidation.MaxRelaysListed by name, the others counted (payload
// "relays_unlisted"; an error says so once), which keeps the row within
// NATS's max_payload and has the proxies call their feed stale.
func (r *Relay) Beat(ctx context.Context) (bool, error) {
	// A process's first registration takes the name over (from a
	// predecessor's row: a process restarted under the same name); after
	// that it renews only a row that still holds its instance, so one that
	// finds another's (a live process under the same name, whose beats a
	// proxy would take for this relay's) changes nothing.
	const qRegister = `
INSERT INTO outbox_relays (id, seen_at, instance) VALUES ($1, now(), $2)
ON CONFLICT (id) DO UPDATE SET seen_at = now(), instance = excluded.instance
WHERE NOT $3 OR outbox_relays.instance = excluded.instance`
	// The subject is written out, not a parameter: the partial index
	// outbox_heartbeat_idx serves a generic plan only for its literal.
	// The row lists the first $4 relays (invalidation.MaxRelaysListed) by
	// name and counts the others in relays_unlisted.
	const q = `
WITH live AS (SELECT id FROM outbox_relays WHERE seen_at > now() - make_interval(secs => $2))
INSERT INTO outbox (subject, payload)
SELECT '` + invalidation.SubjectHeartbeat + `',
       jsonb_build_object('relays', coalesce((SELECT jsonb_agg(id ORDER BY id)
                                              FROM (SELECT id FROM live ORDER BY id LIMIT $4) listed), '[]'),
                          'interval_ms', $3::bigint)
       || (SELECT CASE WHEN count(*) > $4 THEN jsonb_build_object('relays_unlisted', count(*) - $4) ELSE '{}'::jsonb END
           FROM live)
WHERE coalesce((SELECT created_at < now() - make_interval(secs => $1) AND published_at IS NOT NULL
                FROM outbox WHERE subject = '` + invalidation.SubjectHeartbeat + `'
                ORDER BY created_at DESC LIMIT 1), true)
RETURNING coalesce((payload->>'relays_unlisted')::bigint, 0)`
	db := boundedExec{r.pool, r}
	if r.beating() {
		tag, err := db.Exec(ctx, qRegister, r.o.ID, r.instance, r.registered)
		if err != nil {
			return false, fmt.Errorf("outbox relay register: %w", err)
		}
		// The other process keeps the shared name; this relay takes one
		// of its own, listed by the next rows (the shared one stays
		// listed, the other's).
		if tag.RowsAffected() == 0 {
			shared := r.o.ID
			r.o.ID += "-" + r.instance
			r.log.Error("another coreapi process registers its outbox relay under the same name: give each replica its own OUTBOX_RELAY_ID; this relay now beats under a name of its own",
				"relay", shared, "now", r.o.ID)
			if _, err := db.Exec(ctx, qRegister, r.o.ID, r.instance, false); err != nil {
				return false, fmt.Errorf("outbox relay register: %w", err)
			}
		}
		r.registered = true
	}
	var unlisted int64
	err := r.stepTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, q, 0.75*r.o.Heartbeat.Seconds(), relayListed*r.o.Heartbeat.Seconds(), r.o.Heartbeat.Milliseconds(),
			invalidation.MaxRelaysListed).Scan(&unlisted)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("outbox heartbeat: %w", err)
	}
	switch {
	case unlisted > 0 && r.unlisted == 0:
		r.log.Error("more coreapi replicas register an outbox relay than a heartbeat lists: the proxies cannot expect every relay's beat, and call their invalidation feed stale while this lasts; run fewer replicas against one database",
			"listed", invalidation.MaxRelaysListed, "unlisted", unlisted)
	case unlisted == 0 && r.unlisted > 0:
		r.log.Info("every registered outbox relay is listed in the heartbeat again")
	}
	r.unlisted = unlisted
	return true, nil
}

// relayListed is how many heartbeat intervals a relay stays listed in the
// heartbeat rows after it last registered (invalidation.RelayListed),
// sooner than the proxies' NATS_HEARTBEAT_TIMEOUT (at least
// invalidation.MinHeartbeatTimeout) would call its silence stale.
const relayListed = invalidation.RelayListed

// beating reports whether NATS confirmed the relay's own beat at this
// look (beatRelay runs just before Beat), within the last half interval,
// not at the look before: only then does the relay register as
// publishing (a relay whose beats NATS refuses, or that cannot reach
// NATS, would have every proxy expect beats it never hears). A relay
// that went on registering at the looks after its last confirmed beat
// stayed listed longer than invalidation.MinHeartbeatTimeout allows for:
// its proxies called their feed stale, and purged their caches, whenever
// its NATS connection went away.
func (r *Relay) beating() bool {
	at := r.beatAt.Load()
	return at != 0 && time.Since(r.born)-time.Duration(at) < r.o.Heartbeat/2
}

// beatRelay publishes the relay's own beat (auth.outbox.relay, naming it)
// straight to NATS and waits for the server to confirm it. A proxy that
// finds the relay listed in the heartbeat rows but does not hear its beat
// knows that what the relay publishes does not reach it (the relay's NATS
// node has lost its route to the proxy's), although other relays'
// heartbeats do.
func (r *Relay) beatRelay() {
	if !r.nc.IsConnected() {
		return
	}
	b, _ := json.Marshal(invalidation.Event{At: time.Now().UnixMilli(), Relay: r.o.ID})
	before := r.sending()
	err := r.nc.Publish(invalidation.SubjectRelay, b)
	if err == nil {
		err = r.confirm(before)
	}
	switch {
	case err == nil:
		r.beatAt.Store(max(int64(time.Since(r.born)), 1))
		if r.beatRefused {
			r.log.Info("outbox relay beat accepted again", "relay", r.o.ID)
			r.beatRefused = false
		}
	case errors.Is(err, nats.ErrPermissionViolation):
		if !r.beatRefused {
			r.log.Error("nats refuses the relay's beat on "+invalidation.SubjectRelay+
				": the relay does not register as publishing, and the proxies cannot tell whether its events reach them; grant coreapi's NATS user publish on it",
				"relay", r.o.ID, "err", err)
			r.beatRefused = true
		}
	default:
		r.log.Warn("outbox relay beat not published", "relay", r.o.ID, "err", err)
	}
}

// deregister deletes the relay's row from outbox_relays when Run ends, so
// that the next heartbeat rows no longer list it (best effort: a relay
// gone without it is delisted after relayListed intervals). Only a row
// that still holds its instance: a successor that took the name over (the
// pod restarted while this process was still stopping) keeps its own.
func (r *Relay) deregister(ctx context.Context) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if _, err := r.pool.Exec(dctx, `DELETE FROM outbox_relays WHERE id = $1 AND instance = $2`, r.o.ID, r.instance); err != nil {
		r.log.Warn("outbox relay deregister", "relay", r.o.ID, "err", err)
	}
}

// dbWatch follows the drains of one relay, to tell a database that went
// away under a relay that was keeping up from every other failure.
type dbWatch struct {
	// clear: the last drain published every row it could see. lost: the
	// database became unreachable while clear, with every commit notified
	// since that drain began, and every row another relay held through
	// it, published (cover), and has stayed so.
	clear, lost, told bool
	// mark is the relay's notes when the last drain that succeeded began,
	// or up to which cover published what they announced.
	mark int64
	// cover publishes the rows held by another relay through the last
	// successful drain and those announced by the notes after from up to
	// to, and reports whether it did (it knew them all, the relay
	// listening; NATS confirmed).
	cover func(from, to int64) bool
}

// drained records a drain's (or a heartbeat's) outcome: err, with the
// relay's notes when it began and when it ended. A notification heard
// since the last successful drain began is a row that drain may not have
// seen (one committed just before the database went away, or a full batch
// left for the next), and a row another relay's batch held through it
// may never be published (that batch's NATS publication failing): unless
// cover publishes them, at each failure (a notification may come late),
// the relay is not clear of them, and must stay silent. So must a relay
// that could not hear every commit since that drain began.
func (w *dbWatch) drained(err error, began, ended int64) {
	switch {
	case err == nil:
		w.clear, w.lost, w.told, w.mark = true, false, false, began
	case errors.Is(err, ErrNATSDown) || errors.Is(err, errPublish) || !unreachable(err):
		w.clear, w.lost = false, false
	default:
		w.lost = (w.lost || w.clear) && w.cover(w.mark, ended)
		if w.lost {
			w.mark = ended
		}
		w.clear = false
	}
}

// answered records a heartbeat look that reached the database: the
// outage is over, and the relay is clear again only once a drain
// succeeds.
func (w *dbWatch) answered() { w.lost = false }

// unreachable reports whether err, from the database, means it could not
// be reached (a connection refused, broken or timed out) rather than a
// statement that failed. A server that answered a connection with a
// refusal of its own (this relay's role or password refused, too many
// connections, no such database) is up, and other replicas may commit
// through it: only a server starting up, shutting down or in recovery
// (57P03), or a connection exception (class 08), counts. So does a server
// that refuses the relay's writes as read-only (25006: a primary demoted
// to a standby by a failover, which the pool's connections still reach;
// sqldb.Unavailable): nothing commits through it either. Every other
// error is judged as the HTTP layer judges it (sqldb.Unavailable: a
// connection that broke, a socket that ended mid-message, a timeout):
// a statement the server ended itself, a lock not granted within
// lock_timeout (55P03) or a statement past statement_timeout (57014),
// is a server that answers, and does not count. Only a step that got no
// answer within its bound (RelayOptions.ListenPing) does.
func unreachable(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	if errors.As(err, &ce) && errors.As(err, &pe) {
		return pe.Code == "57P03" || strings.HasPrefix(pe.Code, "08")
	}
	return sqldb.Unavailable(err)
}

// beatDirect publishes a heartbeat straight to NATS, not through the
// outbox, while the database is unreachable (or read-only) after a drain
// that published every row it could see, the rows committed since then
// published from their notifications (publishHeard): nothing commits
// while it is away, and what committed before went out, so the proxies
// may keep trusting their caches. Without it, every database outage longer than
// the proxies' NATS_HEARTBEAT_TIMEOUT + MAX_STALENESS (a failover) would
// have them refuse every request whose projection they must refetch. A
// relay that was not keeping up, or whose failure is not the database's
// reachability (a refused statement, a lock), publishes none: its
// silence is what the proxies must hear.
func (r *Relay) beatDirect(w *dbWatch) {
	if !r.nc.IsConnected() {
		return
	}
	b, _ := json.Marshal(invalidation.Event{At: time.Now().UnixMilli(), Reason: invalidation.ReasonDatabaseUnreachable})
	if err := r.nc.Publish(invalidation.SubjectHeartbeat, b); err != nil {
		r.log.Warn("outbox heartbeat not published", "err", err)
		return
	}
	if !w.told {
		r.log.Warn("database unreachable (or read-only) after the outbox was drained: heartbeats go straight to NATS until it is back")
		w.told = true
	}
}

// Prune deletes rows published more than Retain ago, in batches
// (sweep.InBatches): a relay that was stopped for a while, or a burst of
// changes, leaves more than one statement should hold.
func (r *Relay) Prune(ctx context.Context) (int64, error) {
	const q = `
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED)`
	db := boundedExec{r.pool, r}
	n, err := sweep.InBatches(ctx, db, q, r.o.Retain.Seconds())
	if err != nil {
		return n, fmt.Errorf("prune outbox: %w", err)
	}
	// Relays gone without deleting their row (a crash, a killed pod).
	if _, err := db.Exec(ctx, `DELETE FROM outbox_relays WHERE seen_at < now() - make_interval(secs => $1)`, r.o.Retain.Seconds()); err != nil {
		return n, fmt.Errorf("prune outbox relays: %w", err)
	}
	return n, nil
}
