package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/tollgate-auth/tollgate/shared/problem"

	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
)

// Problems of the token endpoint. Codes follow RFC 6749 §5.2 error names.
var (
	errBadCredentials  = problem.New(400, "invalid_grant", "invalid email or password")
	errPasswordTooLong = problem.New(400, "invalid_request", password.ErrTooLong.Error())
)

func tooManyAttempts(retryAfter int) *problem.Problem {
	return problem.New(429, problem.CodeTooManyRequests,
		"too many failed sign-in attempts; retry after "+strconv.Itoa(retryAfter)+" s")
}

// retryAfterError carries the Retry-After seconds of a 429.
type retryAfterError struct {
	*problem.Problem
	seconds int
}

func (e *retryAfterError) Unwrap() error { return e.Problem }

type account struct {
	UserID       string
	Hash         string
	Status       string
	TokenVersion int64
	Failed       int
	RetryAfter   int     // seconds the account is still locked, 0 if not
	TenantID     *string // the membership the sign-in lands in
}

// passwordLogin checks email/password (with lockout) and returns the grant
// subject and tenant; it does not create the session.
func (s *Service) passwordLogin(ctx context.Context, email, pw, tenantID string) (account, error) {
	const qAccount = `
SELECT u.id::text, coalesce(u.password_hash, ''), u.status, u.token_version, u.failed_logins,
       greatest(ceil(extract(epoch FROM u.locked_until - now())), 0)::int,
       (SELECT m.tenant_id::text FROM memberships m JOIN tenants t ON t.id = m.tenant_id
        WHERE m.user_id = u.id AND m.status = 'active' AND t.status = 'active'
          AND ($2::uuid IS NULL OR m.tenant_id = $2::uuid)
        ORDER BY m.created_at, m.tenant_id LIMIT 1)
FROM users u
WHERE lower(u.email) = lower($1)`
	if len(pw) > password.MaxBytes {
		return account{}, errPasswordTooLong
	}
	var tid *string
	if tenantID != "" {
		tid = &tenantID
	}
	var a account
	err := s.pool.QueryRow(ctx, qAccount, email, tid).Scan(
		&a.UserID, &a.Hash, &a.Status, &a.TokenVersion, &a.Failed, &a.RetryAfter, &a.TenantID)
	if errors.Is(err, pgx.ErrNoRows) {
		// Same work and same answers as a wrong password, lockout included.
		return account{}, s.unknownAccount(ctx, email, pw)
	}
	if err != nil {
		return account{}, fmt.Errorf("load account: %w", err)
	}
	if a.RetryAfter > 0 {
		return account{}, &retryAfterError{tooManyAttempts(a.RetryAfter), a.RetryAfter}
	}
	ok, err := s.passwords.Verify(ctx, pw, a.Hash)
	if err != nil && !errors.Is(err, password.ErrInvalidHash) {
		return account{}, err
	}
	if !ok {
		if err := s.recordFailure(ctx, a.UserID); err != nil {
			return account{}, err
		}
		return account{}, errBadCredentials
	}
	if a.Failed > 0 {
		if err := s.resetFailures(ctx, a.UserID); err != nil {
			return account{}, err
		}
	}
	if s.passwords.NeedsRehash(a.Hash) {
		// Parameters were raised since this hash was made: upgrade it now,
		// while the plaintext is at hand.
		if err := s.rehash(ctx, a.UserID, a.Hash, pw); err != nil {
			s.log.Warn("password rehash", "user_id", a.UserID, "err", err)
		}
	}
	if a.Status != "active" {
		return account{}, problem.New(403, "user_disabled", "this account is disabled")
	}
	if a.TenantID == nil {
		if tenantID != "" {
			return account{}, problem.New(403, problem.CodeForbidden, "no active membership in tenant "+tenantID)
		}
		return account{}, problem.New(403, "no_membership", "this account has no active membership in any tenant")
	}
	return a, nil
}

// recordFailure counts a failed attempt and, from the threshold on, locks
// the account for an exponentially growing time. One statement: every
// SET expression sees the row before the update, so concurrent failures
// serialise on the row lock and each counts.
func (s *Service) recordFailure(ctx context.Context, userID string) error {
	const qFail = `
WITH n AS (
    SELECT id, CASE WHEN last_failed_login > now() - make_interval(secs => $2)
                    THEN failed_logins + 1 ELSE 1 END AS v
    FROM users WHERE id = $1 FOR UPDATE
)
UPDATE users u SET
    failed_logins = n.v,
    last_failed_login = now(),
    locked_until = CASE WHEN n.v >= $3
                        THEN now() + make_interval(secs => least($4 * power(2, n.v - $3), $5))
                        ELSE u.locked_until END
FROM n WHERE u.id = n.id`
	l := s.lockout
	_, err := s.pool.Exec(ctx, qFail, userID, l.Window.Seconds(), l.Threshold, l.Base.Seconds(), l.Max.Seconds())
	if err != nil {
		return fmt.Errorf("record failed login: %w", err)
	}
	return nil
}

// unknownAccount answers a sign-in for an address with no account exactly
// as for an account with a wrong password: a dummy hash is verified, and
// failures count towards the same lockout, in login_failures.
func (s *Service) unknownAccount(ctx context.Context, email, pw string) error {
	const qLocked = `
SELECT greatest(ceil(extract(epoch FROM locked_until - now())), 0)::int
FROM login_failures WHERE email_hash = $1`
	key := emailKey(email)
	var wait int
	err := s.pool.QueryRow(ctx, qLocked, key).Scan(&wait)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("load login failures: %w", err)
	}
	if wait > 0 {
		return &retryAfterError{tooManyAttempts(wait), wait}
	}
	if _, err := s.passwords.Verify(ctx, pw, ""); err != nil {
		return err
	}
	if err := s.recordUnknownFailure(ctx, key); err != nil {
		return err
	}
	return errBadCredentials
}

// recordUnknownFailure is recordFailure for login_failures: the row is
// created if needed, then updated under its lock, in one round trip.
func (s *Service) recordUnknownFailure(ctx context.Context, key []byte) error {
	const qEnsure = `INSERT INTO login_failures (email_hash) VALUES ($1) ON CONFLICT DO NOTHING`
	const qFail = `
WITH n AS (
    SELECT email_hash, CASE WHEN last_failed_login > now() - make_interval(secs => $2)
                            THEN failed_logins + 1 ELSE 1 END AS v
    FROM login_failures WHERE email_hash = $1 FOR UPDATE
)
UPDATE login_failures f SET
    failed_logins = n.v,
    last_failed_login = now(),
    locked_until = CASE WHEN n.v >= $3
                        THEN now() + make_interval(secs => least($4 * power(2, n.v - $3), $5))
                        ELSE f.locked_until END
FROM n WHERE f.email_hash = n.email_hash`
	l := s.lockout
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(qEnsure, key)
		b.Queue(qFail, key, l.Window.Seconds(), l.Threshold, l.Base.Seconds(), l.Max.Seconds())
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("record failed login: %w", err)
	}
	return nil
}

// emailKey is how login_failures names an address: the SHA-256 of its
// trimmed, lower-cased form (users.email is unique on lower(email)).
func emailKey(email string) []byte {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(email))))
	return sum[:]
}

func (s *Service) resetFailures(ctx context.Context, userID string) error {
	const qReset = `UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1`
	if _, err := s.pool.Exec(ctx, qReset, userID); err != nil {
		return fmt.Errorf("reset failed logins: %w", err)
	}
	return nil
}

func (s *Service) rehash(ctx context.Context, userID, oldHash, pw string) error {
	const q = `UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2`
	h, err := s.passwords.Hash(ctx, pw)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, q, userID, oldHash, h); err != nil {
		return fmt.Errorf("store rehashed password: %w", err)
	}
	return nil
}
