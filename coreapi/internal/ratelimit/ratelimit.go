// Package ratelimit counts hits per key in sliding windows stored in
// PostgreSQL, so every replica shares the same counters. Keys are hashed
// before they are stored: a limit on an email address keeps no address.
//
// A key's row holds the hits of its current window and those of the
// window before, which count as much as the sliding window still covers
// of it: prev × (1 − elapsed/window) + hits. A fixed window starting
// afresh let N hits just before its end and N more just after through
// within moments; the weighted count lets at most one more than N
// through at a boundary.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/clientkey"
)

// Limit is at most N hits per Window.
type Limit struct {
	N      int
	Window time.Duration
}

// Or returns l, or def when l is unset (no count or no window): how the
// services fill the zero fields of their limit options with defaults.
func (l Limit) Or(def Limit) Limit {
	if l.N <= 0 || l.Window <= 0 {
		return def
	}
	return l
}

// Limiter checks and counts hits.
type Limiter struct {
	pool *pgxpool.Pool
}

// New returns a Limiter on pool.
func New(pool *pgxpool.Pool) *Limiter { return &Limiter{pool: pool} }

// Key hashes the parts of a limit key (e.g. "forgot", "addr", email).
func Key(parts ...string) []byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

// ClientKey is how a limit names a client address (clientkey.Of): an
// IPv6 address by its /64, since that is what one customer line or host
// is given (and it can pick any of its 2^64 addresses for each request);
// an IPv4 address as it is, and so an IPv6 address that embeds one
// (IPv4-mapped, 6to4, NAT64, Teredo), since its holder holds every /64
// of it (65,536 of a 6to4 /48); a name that is no address as it is.
func ClientKey(ip string) string { return clientkey.Of(ip) }

// PasswordChecksKey names the client ip's budget of password hashes,
// PASSWORD_CHECKS_PER_HOUR (DefaultPasswordChecks an hour): each password
// checked (a sign-in, whatever its route) or hashed for another (a member
// made with one, a reset) is an argon2 hash, tens of ms of CPU on one of
// a few hashing slots, and every route that makes one counts it here.
func PasswordChecksKey(ip string) []byte {
	return Key("password-check", ClientKey(ip))
}

// DefaultPasswordChecks is PASSWORD_CHECKS_PER_HOUR's default.
const DefaultPasswordChecks = 1000

// Seconds is a wait as a Retry-After value: in whole seconds, rounded up,
// at least 1.
func Seconds(wait time.Duration) int {
	return max(1, int((wait+time.Second-1)/time.Second))
}

// Refused is the error of an act refused by a limit deep in a transaction
// (a mail to an address that has had its share): nothing was written or
// sent. coreapi's error handler answers it with 429 and Retry-After, as
// httpapi.TooMany answers a limit a handler checks itself.
type Refused struct {
	// What is the refusal, as a 429's detail says it (without the wait).
	What string
	// RetryAfter is the time until the limit's weighted count falls under
	// its N, when a hit is allowed again.
	RetryAfter time.Duration
}

func (e *Refused) Error() string {
	return e.What + "; retry after " + strconv.Itoa(Seconds(e.RetryAfter)) + " s"
}

// Allow counts one hit on key and reports whether it is within l: whether
// the weighted count of the sliding window ending now, the hit left out,
// is under l.N. When it is not, retryAfter is the time until it is. One
// statement: the row lock serialises concurrent hits, so each is counted
// exactly once. A hit refused is not counted (the row's hits are those
// let through, or l.N+1 when the window's own reached l.N, which says
// "full, and refused since"), so that a reservation later released
// (Reserve, Release) makes room again whatever was refused meanwhile.
func (r *Limiter) Allow(ctx context.Context, key []byte, l Limit) (ok bool, retryAfter time.Duration, err error) {
	return AllowIn(ctx, r.pool, key, l)
}

// Hit is a hit Reserve counted, which Release takes back: its key, its
// limit, and the start of the window it was counted in.
type Hit struct {
	key    []byte
	limit  Limit
	window time.Time
}

// Reserve is Allow for a hit that may be taken back (Release): an
// allowed hit is returned with the window it was counted in.
func (r *Limiter) Reserve(ctx context.Context, key []byte, l Limit) (h Hit, ok bool, retryAfter time.Duration, err error) {
	return ReserveIn(ctx, r.pool, key, l)
}

// ReserveIn is Reserve through q. In a transaction the hit holds the
// key's row until the transaction ends and is counted only if it
// commits: a caller that reserves several budgets and is refused by a
// later one rolls back instead of releasing the earlier hits, and no
// other request sees them counted meanwhile.
func ReserveIn(ctx context.Context, q Querier, key []byte, l Limit) (h Hit, ok bool, retryAfter time.Duration, err error) {
	window, ok, retryAfter, err := allowIn(ctx, q, key, l)
	if err != nil || !ok {
		return Hit{}, ok, retryAfter, err
	}
	return Hit{key: key, limit: l, window: window}, true, 0, nil
}

// windowSQL is, for the key's row r (window_start, hits, prev_hits), the
// window a hit at now() counts in, under the window parameter win
// (seconds) and the limit parameter n: its start, the hits of the window
// before it (prev, at most n: a refusal's n+1 is no hit) and of its own
// (cur), how far into it now() is (el, seconds), and whether the weighted
// count is full (at least n, so that the hit is refused). A window that
// has ended is followed by the next, contiguous with it, whose previous
// window it is; after two windows nothing stored counts any more, and a
// window starts at now().
func windowSQL(win, n string) string {
	return `SELECT w.start, w.prev, w.cur, w.el, ` + countSQL("w.prev", "w.cur", "w.el", win) + ` >= ` + n + ` AS full FROM (
    SELECT CASE WHEN x.e < ` + win + ` THEN r.window_start
                WHEN x.e < 2 * ` + win + ` THEN r.window_start + make_interval(secs => ` + win + `)
                ELSE now() END AS start,
           CASE WHEN x.e < ` + win + ` THEN r.prev_hits WHEN x.e < 2 * ` + win + ` THEN least(r.hits, ` + n + `) ELSE 0 END AS prev,
           CASE WHEN x.e < ` + win + ` THEN r.hits ELSE 0 END AS cur,
           CASE WHEN x.e < ` + win + ` THEN x.e WHEN x.e < 2 * ` + win + ` THEN x.e - ` + win + ` ELSE 0 END AS el
    FROM (SELECT extract(epoch FROM now() - r.window_start)::float8 AS e) x) w`
}

// countSQL is the weighted count of a window el seconds into it, with
// prev hits in the window before and cur in its own.
func countSQL(prev, cur, el, win string) string {
	return `(` + prev + ` * (1 - ` + el + ` / ` + win + `) + ` + cur + `)`
}

// waitSQL is the seconds until the weighted count of a full window (see
// countSQL) falls under n: within the window, as its previous one's hits
// slide out, when its own hits are fewer than n; else once it ends, when
// they become the previous window's and slide out from its first moment.
func waitSQL(prev, cur, el, win, n string) string {
	return `greatest(CASE WHEN ` + cur + ` >= ` + n + ` THEN ` + win + `
    ELSE coalesce(` + win + ` * (1 - (` + n + ` - ` + cur + `)::float8 / nullif(` + prev + `, 0)), 0) END - ` + el + `, 0)::float8`
}

// hitsSQL is a window's own hits after a hit on it, cur before it, under
// the limit n: one more when the hit is counted; when it is refused, as
// they were, but for hits that reached n, held at n+1 as in a fixed
// window ("full, and refused since", which Release and the next window
// leave out).
func hitsSQL(counted, cur, n string) string {
	return `CASE WHEN ` + counted + ` THEN ` + cur + ` + 1 WHEN ` + cur + ` >= ` + n + ` THEN ` + n + ` + 1 ELSE ` + cur + ` END`
}

// hitSQL is the statement counting one hit: it inserts the row of the key
// rows gives ("VALUES ($1, now(), 1, 0, $3 < 1, " + windowSecondsSQL("$2")
// + ")", or a SELECT of one: key, window_start, hits, prev_hits, refused,
// window_s) or updates it, under the window parameter win (seconds) and
// the limit parameter n (windowSQL), counting the hit only when the
// weighted count is not full, and recording the window (window_s, which
// the sweep reads). It returns whether the hit was refused and, when it
// was, the seconds until the count falls under n (wait_s), and the start of the window the hit counted in
// (window_start), which Release needs. A refusal leaves the hits as
// hitsSQL says; refused says whether the hit was counted, since RETURNING
// sees only the row written.
func hitSQL(rows, win, n string) string {
	win, n = win+"::float8", n+"::int"
	return `INSERT INTO rate_limits AS r (key, window_start, hits, prev_hits, refused, window_s) ` + rows + `
ON CONFLICT (key) DO UPDATE SET (window_start, prev_hits, hits, refused) = (
    SELECT s.start, s.prev, ` + hitsSQL("NOT s.full", "s.cur", n) + `, s.full
    FROM (` + windowSQL(win, n) + `) s),
    window_s = excluded.window_s
RETURNING r.refused, CASE WHEN r.refused THEN ` +
		waitSQL("r.prev_hits", "r.hits", "extract(epoch FROM now() - r.window_start)::float8", win, n) + ` ELSE 0 END AS wait_s, r.window_start`
}

// windowSecondsSQL is the window parameter win (seconds) as a row's
// window_s: whole seconds, rounded up, so that a row is never swept while
// its hits still count.
func windowSecondsSQL(win string) string {
	return `ceil(` + win + `::float8)::int`
}

var (
	qAllow     = hitSQL("VALUES ($1, now(), 1, 0, $3 < 1, "+windowSecondsSQL("$2")+")", "$2", "$3")
	qAllowBoth = allowBothSQL()
	// qRelease takes one hit back from the key $1, counted in the window
	// that began at $2 under the window $3 (seconds) and the limit $4.
	qRelease = `UPDATE rate_limits r SET ` + releaseSQL("$2::timestamptz", "$3::float8", "$4::int") + ` WHERE r.key = $1`
	// qReleaseBoth is qRelease of two hits ($1-$4 the outer, $5-$8 the
	// inner), the rows locked outer first (ReleaseBoth).
	qReleaseBoth = `
WITH locked AS (
    SELECT key FROM rate_limits WHERE key = $1 OR key = $5
    ORDER BY key = $1 DESC
    FOR UPDATE
), a (key, at, win, n) AS (
    VALUES ($1::bytea, $2::timestamptz, $3::float8, $4::int), ($5, $6, $7, $8)
)
UPDATE rate_limits r SET ` + releaseSQL("a.at", "a.win", "a.n") + `
FROM locked JOIN a ON a.key = locked.key
WHERE r.key = locked.key`
)

// allowBothSQL is the statement counting one hit on the outer key $1
// under the window $2 (seconds) and the limit $3, and one on the inner key
// $4 under $5 and $6, the outer only when the inner is counted. It locks
// the outer key's row first (ol), reads its window as a hit now finds it
// (a key without a row: a window starting now, with no hits), counts the
// inner hit when the outer count is not full (i, hitSQL: a hit the outer
// limit refuses writes no row of the inner key), and only then writes the
// outer row (ou, or oi for a new one), its hit counted only if the inner
// one was. Counted first and given back in a second statement when the
// inner limit refused, the outer hit was seen between the two by a request
// queued for the row, refused although the budget had room. The rows are
// locked outer first, then inner, as ReleaseBoth does.
//
// A new outer row is a plain INSERT: a request that found no row, while
// another created it meanwhile, fails with a unique violation, nothing of
// it written (its inner hit neither), and AllowBoth runs it again, now on
// the row. Counting on the row another created, it would have found the
// outer limit full after counting its inner hit.
func allowBothSQL() string {
	win, n, ws := "$2::float8", "$3::int", windowSecondsSQL("$2")
	return `WITH ol AS (
    SELECT window_start, hits, prev_hits FROM rate_limits WHERE key = $1 FOR UPDATE
), ro AS (
    SELECT true AS stored, window_start, hits, prev_hits FROM ol
    UNION ALL
    SELECT false, now(), 0, 0 WHERE NOT EXISTS (SELECT FROM ol)
), os AS (
    SELECT r.stored, s.* FROM ro r, LATERAL (` + windowSQL(win, n) + `) s
), i AS (` + hitSQL("SELECT $4, now(), 1, 0, $6 < 1, "+windowSecondsSQL("$5")+" FROM os WHERE NOT os.full", "$5", "$6") + `
), oc AS (
    SELECT os.*, NOT os.full AND EXISTS (SELECT FROM i WHERE NOT i.refused) AS counted FROM os
), o AS (
    SELECT oc.*, ` + hitsSQL("oc.counted", "oc.cur", n) + ` AS hits FROM oc
), ou AS (
    UPDATE rate_limits r SET (window_start, prev_hits, hits, refused, window_s) = (o.start, o.prev, o.hits, NOT o.counted, ` + ws + `)
    FROM o WHERE r.key = $1 AND o.stored
), oi AS (
    INSERT INTO rate_limits (key, window_start, prev_hits, hits, refused, window_s)
    SELECT $1, o.start, o.prev, o.hits, NOT o.counted, ` + ws + ` FROM o WHERE NOT o.stored AND o.hits > 0
)
SELECT o.full, CASE WHEN o.full THEN ` + waitSQL("o.prev", "o.hits", "o.el", win, n) + ` ELSE 0 END, o.start,
    coalesce(i.refused, false), coalesce(i.wait_s, 0), i.window_start
FROM o LEFT JOIN i ON true`
}

// allowBothAttempts is how many times AllowBoth runs its statement while
// the outer key's row is created by another request meanwhile: once it
// exists, the next run counts on it.
const allowBothAttempts = 3

// outerRowCreated reports whether err is qAllowBoth's insert of a new
// outer row meeting one another request created meanwhile.
func outerRowCreated(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" // unique_violation
}

// WaitSQL is a scalar subquery for a statement that looks at a limit
// without counting a hit: the seconds until a hit on the key of parameter
// key would be allowed under the window parameter win (seconds) and the
// limit parameter n, as Allow counts it; NULL when one would be now.
func WaitSQL(key, win, n string) string {
	win, n = win+"::float8", n+"::int"
	return `(SELECT ` + waitSQL("s.prev", "s.cur", "s.el", win, n) + `
    FROM rate_limits r, LATERAL (` + windowSQL(win, n) + `) s
    WHERE r.key = ` + key + ` AND s.full)`
}

// Querier is what AllowIn counts through: a pool, or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// AllowIn is Allow through q. In a transaction the hit is counted only if
// the transaction commits, so a caller that counts what it then does (a
// mail it queues) and rolls back when refused counts only what was done.
func AllowIn(ctx context.Context, q Querier, key []byte, l Limit) (ok bool, retryAfter time.Duration, err error) {
	_, ok, retryAfter, err = allowIn(ctx, q, key, l)
	return ok, retryAfter, err
}

// allowIn is AllowIn that also returns the start of the window the hit
// was counted in.
func allowIn(ctx context.Context, q Querier, key []byte, l Limit) (window time.Time, ok bool, retryAfter time.Duration, err error) {
	var (
		refused bool
		wait    float64
	)
	if err := q.QueryRow(ctx, qAllow, key, l.Window.Seconds(), l.N).Scan(&refused, &wait, &window); err != nil {
		return time.Time{}, false, 0, fmt.Errorf("rate limit: %w", err)
	}
	if refused {
		return time.Time{}, false, time.Duration(wait * float64(time.Second)), nil
	}
	return window, true, 0, nil
}

// Both are the two hits AllowBoth counted, which ReleaseBoth takes back.
type Both struct {
	outer, inner Hit
}

// AllowBoth counts one hit on outer under lo and one on inner under li,
// in one statement (allowBothSQL), and reports whether both are within
// their limits; when not, retryAfter is the time until the limit that
// refused allows a hit again. A hit outer refuses never reaches inner: no
// row of inner's is written for it (outer bounds how many inner keys a
// client can make, such as a client IP's budget over the ids it names). A
// hit inner refuses is not counted on outer either, so a refused hit
// counts nowhere, as with Allow, and no other request sees it counted
// meanwhile. The hits allowed are returned for ReleaseBoth.
func (r *Limiter) AllowBoth(ctx context.Context, outer []byte, lo Limit, inner []byte, li Limit) (b Both, ok bool, retryAfter time.Duration, err error) {
	for attempt := 1; ; attempt++ {
		b, ok, retryAfter, err = r.allowBoth(ctx, outer, lo, inner, li)
		if err == nil || attempt == allowBothAttempts || !outerRowCreated(err) {
			break
		}
	}
	if err != nil {
		return Both{}, false, 0, fmt.Errorf("rate limit: %w", err)
	}
	return b, ok, retryAfter, nil
}

// allowBoth is one run of AllowBoth's statement.
func (r *Limiter) allowBoth(ctx context.Context, outer []byte, lo Limit, inner []byte, li Limit) (b Both, ok bool, retryAfter time.Duration, err error) {
	var (
		outerRefused, innerRefused bool
		outerWait, innerWait       float64
		outerWindow                time.Time
		innerWindow                *time.Time
	)
	if err := r.pool.QueryRow(ctx, qAllowBoth, outer, lo.Window.Seconds(), lo.N, inner, li.Window.Seconds(), li.N).
		Scan(&outerRefused, &outerWait, &outerWindow, &innerRefused, &innerWait, &innerWindow); err != nil {
		return Both{}, false, 0, err
	}
	switch {
	case outerRefused:
		return Both{}, false, time.Duration(outerWait * float64(time.Second)), nil
	case innerRefused:
		return Both{}, false, time.Duration(innerWait * float64(time.Second)), nil
	}
	b.outer = Hit{key: outer, limit: lo, window: outerWindow}
	b.inner = Hit{key: inner, limit: li, window: *innerWindow}
	return b, true, 0, nil
}

// CheckIn is AllowIn for a write the limit stops: nil when the hit is
// allowed, else a *Refused saying what (a 429's detail) with the time
// until a hit is allowed again.
func CheckIn(ctx context.Context, q Querier, key []byte, l Limit, what string) error {
	ok, wait, err := AllowIn(ctx, q, key, l)
	if err != nil {
		return err
	}
	if !ok {
		return &Refused{What: what, RetryAfter: wait}
	}
	return nil
}

// Period names l's window for a refusal's detail ("1 hour", "24 hours").
func (l Limit) Period() string {
	switch d := l.Window; {
	case d == time.Hour:
		return "1 hour"
	case d > time.Hour && d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + " hours"
	default:
		return d.String()
	}
}

// releaseSQL is the assignment that takes one hit back from the key's
// row r, counted in the window starting at the parameter at under the
// window parameter win (seconds) and the limit parameter n: from the
// window's own hits while the row is still that window's (it may have
// ended since: its hits become the previous window's when the next hit
// comes); from the previous window's when a later hit has moved the row
// on to the window after, where the released hit counts only with that
// window's weight; else not at all (the row has moved on further, or
// started afresh, and the hit no longer counts). A hit taken back from
// the current window's hits after the row moved on erased a hit of that
// window, which the previous window's then carried as a fraction: the
// count fell short by up to a hit for each release across the turn.
func releaseSQL(at, win, n string) string {
	return `(hits, prev_hits) = (
    CASE WHEN r.window_start = ` + at + ` THEN greatest(least(r.hits, ` + n + `) - 1, 0) ELSE r.hits END,
    CASE WHEN r.window_start = ` + at + ` + make_interval(secs => ` + win + `) THEN greatest(r.prev_hits - 1, 0) ELSE r.prev_hits END)`
}

// Release takes back one hit Reserve counted (a reservation that turned
// out fine, such as a correct client secret), so that only failures add
// up. The hits refused meanwhile were never counted: a burst of correct
// attempts beyond l.N, refused past it, leaves nothing behind once those
// let through are released. A hit is taken back from the window it was
// counted in (releaseSQL), never from one that began after it. A Hit
// that was not allowed (its zero value) takes nothing back.
func (r *Limiter) Release(ctx context.Context, h Hit) error {
	if h.key == nil {
		return nil
	}
	if _, err := r.pool.Exec(ctx, qRelease, h.key, h.window, h.limit.Window.Seconds(), h.limit.N); err != nil {
		return fmt.Errorf("rate limit release: %w", err)
	}
	return nil
}

// ReleaseBoth is Release of the two hits AllowBoth counted, in one
// statement. It locks the rows in AllowBoth's order, outer's first: in
// the table's order, which may put inner's first, a release and a count
// of the same two keys at once each held a row the other waited for, and
// PostgreSQL failed one of them.
func (r *Limiter) ReleaseBoth(ctx context.Context, b Both) error {
	if b.outer.key == nil || b.inner.key == nil {
		return nil
	}
	o, i := b.outer, b.inner
	if _, err := r.pool.Exec(ctx, qReleaseBoth, o.key, o.window, o.limit.Window.Seconds(), o.limit.N,
		i.key, i.window, i.limit.Window.Seconds(), i.limit.N); err != nil {
		return fmt.Errorf("rate limit release: %w", err)
	}
	return nil
}

// Sweep deletes the counters whose window started more than two of its
// windows ago (window_s, which every counting statement writes): a
// window's hits count on through the window after it (windowSQL), and
// nothing stored counts any more after that. A counter swept sooner
// forgets hits that still count, and lets them through again; one kept
// for the longest window's two (a minute's counter for two days) filled
// the table with dead counters. It finds them through the index of the
// same expression (rate_limits_kept_until_idx, migration 00049), in UTC
// since a timestamp with a time zone plus an interval depends on the
// session's zone and cannot be indexed. It skips the counters another
// statement holds: AllowBoth locks its outer key's row and then its inner
// key's, and a sweep deleting in the table's order could hold the inner
// one while waiting for the outer (a deadlock PostgreSQL ended by failing
// one of them, the request with a 500). A counter skipped is in use, so
// it is not stale anyway. It deletes in batches (sweep.InBatches).
func (r *Limiter) Sweep(ctx context.Context) (int64, error) {
	n, err := sweep.InBatches(ctx, r.pool, qSweep)
	if err != nil {
		return n, fmt.Errorf("sweep rate limits: %w", err)
	}
	return n, nil
}

// qSweep is Sweep's batch; its predicate compares the expression of
// rate_limits_kept_until_idx, as the migration spells it, so that the
// planner matches it to the index.
const qSweep = `
DELETE FROM rate_limits WHERE key IN (
    SELECT key FROM rate_limits
    WHERE (window_start AT TIME ZONE 'UTC') + make_interval(secs => 2 * window_s) < now() AT TIME ZONE 'UTC'
    LIMIT $1
    FOR UPDATE SKIP LOCKED)`
