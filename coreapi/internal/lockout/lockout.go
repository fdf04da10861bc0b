// Package lockout counts password and second-factor guesses in
// login_attempts and locks out clients that guess too often: the one
// lockout of sign-in, invitation acceptance, email verification, password
// change and MFA.
// Attempts are counted per (key, client IP), per key and, for an IPv6
// client, per (key, /48); see docs/security.md.
package lockout

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/clientkey"
)

// Policy is the failed-guess backoff.
type Policy struct {
	// Threshold is the attempt count of one client (within Window) from
	// which that client is locked out of the key; the lock lasts
	// Base·2^(attempts−Threshold), at most Max. A correct guess clears
	// the client's count.
	Threshold int
	Base      time.Duration
	Max       time.Duration
	// Window: an attempt more than Window after both the previous one
	// and the end of the client's lock starts the count again. A client
	// that waits out a lock goes on counting: once at Max, it gets one
	// guess per lock.
	Window time.Duration
	// AccountThreshold is the attempt count of the key from every client
	// (within Window) from which the key slows down: locked for
	// Base·2^(attempts−AccountThreshold), at most AccountMax, but only for
	// clients that already failed for it, so guessing from elsewhere cannot
	// lock the owner out. An IPv6 client also waits when another client
	// of its /48 failed for the key within Window: one /48 holds 65,536
	// /64s, each a client of its own.
	AccountThreshold int
	AccountMax       time.Duration
}

// Default: a client is locked after 5 attempts in 15 minutes for 1 s,
// 2 s, 4 s, … up to 15 minutes; the key as a whole slows its failing
// clients after 20 attempts, for at most a minute at a time. A function
// returning a fresh value, so that no caller can change the policy of
// the others of the process: a Store keeps the one it was given.
func Default() Policy {
	return Policy{Threshold: 5, Base: time.Second, Max: 15 * time.Minute, Window: 15 * time.Minute,
		AccountThreshold: 20, AccountMax: time.Minute}
}

// Store keeps the counts.
type Store struct {
	pool   *pgxpool.Pool
	policy Policy
}

// New returns the store; a Policy without Threshold is Default, one
// without AccountThreshold takes Default's address-wide values.
func New(pool *pgxpool.Pool, p Policy) *Store {
	d := Default()
	if p.Threshold <= 0 {
		p = d
	}
	if p.AccountThreshold <= 0 {
		p.AccountThreshold, p.AccountMax = d.AccountThreshold, d.AccountMax
	}
	return &Store{pool: pool, policy: p}
}

// Policy returns the policy in force.
func (s *Store) Policy() Policy { return s.policy }

// EmailKey is how login_attempts names an address: the SHA-256 of its
// mail.Canonical form (trimmed, NFC), lower-cased. users.email is written
// in NFC and unique on lower(email), so every spelling of one address
// counts against one key. The address itself is not stored, and an
// address with no account counts exactly like one with an account.
func EmailKey(email string) []byte {
	sum := sha256.Sum256([]byte(strings.ToLower(mail.Canonical(email))))
	return sum[:]
}

// Reserve counts one attempt for key from the client ip and returns 0, or
// returns the seconds to wait when a lock applies (then nothing is counted
// and the guess must not be checked). The check and the count are one
// statement (login_reserve, see migrations 00003 and 00069) under the rows' locks, so
// at most Threshold attempts per client get past it before the first lock,
// whatever the concurrency.
func (s *Store) Reserve(ctx context.Context, key []byte, ip string) (int, error) {
	return s.ReserveIn(ctx, s.pool, key, ip)
}

// ReserveIn is Reserve through q. In a transaction the rows stay locked
// until it ends and the attempt is counted only if it commits, so a
// caller that counts other budgets in the same transaction can roll back
// all of them when one refuses, without another request seeing them
// counted meanwhile.
func (s *Store) ReserveIn(ctx context.Context, q ratelimit.Querier, key []byte, ip string) (int, error) {
	const qReserve = `SELECT login_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	l := s.policy
	var wait int
	err := q.QueryRow(ctx, qReserve, key, clientKey(ip), networkKey(ip), l.Window.Seconds(), l.Threshold, l.Base.Seconds(),
		l.Max.Seconds(), l.AccountThreshold, l.AccountMax.Seconds()).Scan(&wait)
	if err != nil {
		return 0, fmt.Errorf("reserve attempt: %w", err)
	}
	return max(wait, 0), nil
}

// lockedRows locks, in login_reserve's order (the key's row, the pair's,
// then the network's), the rows of the key $1, of the pair of it and the
// client $2, and of it and the client's network $3 (NULL: none) that
// Release and Refund update (the CTE locked, by client_ip).
const lockedRows = `
WITH locked AS (
    SELECT client_ip FROM login_attempts
    WHERE email_hash = $1 AND client_ip IN ('', $2, $3)
    ORDER BY CASE client_ip WHEN '' THEN 0 WHEN $2 THEN 1 ELSE 2 END
    FOR UPDATE
)
`

// Release follows a correct guess: it clears the counts of the client and
// of its network and gives back the attempt Reserve counted for the key
// as a whole, so that the key's count (which slows failing clients) holds
// failures only: an owner who signs in often must not pass
// AccountThreshold with right answers and then be locked after one typo.
// The network's count is cleared too: whoever gives the password is no
// guesser, and the failures of their network are most likely their own
// typos on another device, which must not hold them back while someone
// elsewhere keeps the key locked. The key's lock, if any, stays. The rows
// are locked in login_reserve's order.
func (s *Store) Release(ctx context.Context, key []byte, ip string) error {
	const q = lockedRows + `UPDATE login_attempts a SET
    failures     = CASE WHEN a.client_ip = '' THEN greatest(a.failures - 1, 0) ELSE 0 END,
    locked_until = CASE WHEN a.client_ip = '' THEN a.locked_until ELSE NULL END
FROM locked
WHERE a.email_hash = $1 AND a.client_ip = locked.client_ip`
	if _, err := s.pool.Exec(ctx, q, key, clientKey(ip), networkKey(ip)); err != nil {
		return fmt.Errorf("release attempt: %w", err)
	}
	return nil
}

// Refund gives back the attempt Reserve counted for key from the client
// ip when the guess turned out to be none: a recovery code a concurrent
// request spent a moment before (the code was right), or a code never
// looked at. Each count (the key's, the client's, its network's) drops by
// one, and a lock whose count falls below the threshold that set it is
// lifted: without this attempt that count would not have locked. A lock
// above it stays; a network's row has none. Rows are locked in
// login_reserve's order.
func (s *Store) Refund(ctx context.Context, key []byte, ip string) error {
	const q = lockedRows + `UPDATE login_attempts a SET
    failures     = greatest(a.failures - 1, 0),
    locked_until = CASE WHEN a.failures - 1 < CASE WHEN a.client_ip = '' THEN $5::int ELSE $4::int END
                        THEN NULL ELSE a.locked_until END
FROM locked
WHERE a.email_hash = $1 AND a.client_ip = locked.client_ip`
	if _, err := s.pool.Exec(ctx, q, key, clientKey(ip), networkKey(ip), s.policy.Threshold, s.policy.AccountThreshold); err != nil {
		return fmt.Errorf("refund attempt: %w", err)
	}
	return nil
}

// Sweep deletes counts (networks' included) whose window has passed since both the last
// attempt and the end of the lock (a count runs on after a lock within
// the window, see migration 00031). It skips
// rows another transaction holds: a Reserve locks the key's row, then
// the pair's, and a sweep deleting in table order could hold the pair's
// while waiting for the key's (a deadlock PostgreSQL ends by failing the
// sign-in). A row skipped is in use, so it is not stale anyway. It
// deletes in batches (sweep.InBatches).
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	const q = `
DELETE FROM login_attempts a
USING (
    SELECT email_hash, client_ip FROM login_attempts
    WHERE last_attempt < now() - make_interval(secs => $1)
      AND (locked_until IS NULL OR locked_until < now() - make_interval(secs => $1))
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) stale
WHERE a.email_hash = stale.email_hash AND a.client_ip = stale.client_ip`
	n, err := sweep.InBatches(ctx, s.pool, q, s.policy.Window.Seconds())
	if err != nil {
		return n, fmt.Errorf("sweep login attempts: %w", err)
	}
	return n, nil
}

// clientKey names a client in login_attempts (the empty name is the key's
// own row, so an unknown IP gets a name of its own); an IPv6 client is its
// /64 (ratelimit.ClientKey).
func clientKey(ip string) string {
	if ip == "" {
		return "unknown"
	}
	return ratelimit.ClientKey(ip)
}

// networkKey names the wider network of the client ip in login_attempts:
// the /48 of an IPv6 client that is its /64 ("2001:db8:1::/48", never the
// name of a client, which is an address or a /64). An IPv4 client, one
// embedded in IPv6, and a name that is no address have none (NULL): the
// /24 of an IPv4 address is often many customers behind one carrier NAT,
// and keying by it would let a guesser there lock the owners out.
func networkKey(ip string) pgtype.Text {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return pgtype.Text{}
	}
	p := clientkey.Prefix(a)
	if p.Addr().Is4() {
		return pgtype.Text{}
	}
	return pgtype.Text{String: netip.PrefixFrom(p.Addr(), 48).Masked().String(), Valid: true}
}
