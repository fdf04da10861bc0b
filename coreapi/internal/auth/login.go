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
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// Problems of the token endpoint. Codes follow RFC 6749 §5.2 error names.
var (
	errBadCredentials  = problem.New(400, problem.CodeInvalidGrant, "invalid email or password")
	errPasswordTooLong = problem.New(400, problem.CodeInvalidRequest, password.ErrTooLong.Error())
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
	TenantID     *string // the membership the sign-in lands in
}

// passwordLogin checks email/password (with lockout) and returns the grant
// subject and tenant; it does not create the session. ip is the client's
// address (httpapi.ClientIP).
func (s *Service) passwordLogin(ctx context.Context, email, pw, tenantID, ip string) (account, error) {
	const qAccount = `
SELECT u.id::text, coalesce(u.password_hash, ''), u.status, u.token_version,
       (SELECT m.tenant_id::text FROM memberships m JOIN tenants t ON t.id = m.tenant_id
        WHERE m.user_id = u.id AND m.status = 'active' AND t.status = 'active'
          AND ($2::uuid IS NULL OR m.tenant_id = $2::uuid)
        ORDER BY m.created_at, m.tenant_id LIMIT 1)
FROM users u
WHERE lower(u.email) = lower($1)`
	if len(pw) > password.MaxBytes {
		return account{}, errPasswordTooLong
	}
	// The attempt is counted before the password is looked at, in the
	// statement that checks the lock: concurrent guesses cannot all pass
	// a lock that the first of them is about to set.
	key := emailKey(email)
	if err := s.reserve(ctx, key, ip); err != nil {
		return account{}, err
	}
	var tid *string
	if tenantID != "" {
		tid = &tenantID
	}
	var a account
	err := s.pool.QueryRow(ctx, qAccount, email, tid).Scan(
		&a.UserID, &a.Hash, &a.Status, &a.TokenVersion, &a.TenantID)
	if errors.Is(err, pgx.ErrNoRows) {
		// Same work and same answers as a wrong password, lockout included
		// (the attempt was counted under the address's hash above).
		if _, err := s.passwords.Verify(ctx, pw, ""); err != nil {
			return account{}, err
		}
		return account{}, errBadCredentials
	}
	if err != nil {
		return account{}, fmt.Errorf("load account: %w", err)
	}
	ok, err := s.passwords.Verify(ctx, pw, a.Hash)
	if err != nil && !errors.Is(err, password.ErrInvalidHash) {
		return account{}, err
	}
	if !ok {
		return account{}, errBadCredentials
	}
	if err := s.release(ctx, key, ip); err != nil {
		return account{}, err
	}
	if s.passwords.NeedsRehash(a.Hash) {
		// Parameters were raised since this hash was made: upgrade it now,
		// while the plaintext is at hand.
		if err := s.rehash(ctx, a.UserID, a.Hash, pw); err != nil {
			s.log.WarnContext(ctx, "password rehash", "user_id", a.UserID, "err", err)
		}
	}
	if a.Status != identity.StatusActive {
		return account{}, problem.New(403, problem.CodeUserDisabled, "this account is disabled")
	}
	if a.TenantID == nil {
		if tenantID != "" {
			return account{}, problem.New(403, problem.CodeForbidden, "no active membership in tenant "+tenantID)
		}
		return account{}, problem.New(403, problem.CodeNoMembership, "this account has no active membership in any tenant")
	}
	return a, nil
}

// reserve counts one password attempt for the address (key) from the
// client ip, or answers 429 with Retry-After when a lock applies (then
// nothing is counted and the password must not be checked). The check and
// the count are one statement (login_reserve, see migration 00003) under
// the rows' locks, so at most Threshold attempts per client get past it
// before the first lock, whatever the concurrency.
func (s *Service) reserve(ctx context.Context, key []byte, ip string) error {
	const q = `SELECT login_reserve($1, $2, $3, $4, $5, $6, $7, $8)`
	l := s.lockout
	var wait int
	err := s.pool.QueryRow(ctx, q, key, clientKey(ip), l.Window.Seconds(), l.Threshold, l.Base.Seconds(),
		l.Max.Seconds(), l.AccountThreshold, l.AccountMax.Seconds()).Scan(&wait)
	if err != nil {
		return fmt.Errorf("reserve sign-in attempt: %w", err)
	}
	if wait > 0 {
		return &retryAfterError{tooManyAttempts(wait), wait}
	}
	return nil
}

// release clears the client's count after a correct password. The
// address's own count is left to expire: it only slows clients that failed.
func (s *Service) release(ctx context.Context, key []byte, ip string) error {
	const q = `
UPDATE login_attempts SET failures = 0, locked_until = NULL
WHERE email_hash = $1 AND client_ip = $2`
	if _, err := s.pool.Exec(ctx, q, key, clientKey(ip)); err != nil {
		return fmt.Errorf("release sign-in attempt: %w", err)
	}
	return nil
}

// clientKey names a client in login_attempts (the empty name is the
// address's own row, so an unknown IP gets a name of its own).
func clientKey(ip string) string {
	if ip == "" {
		return "unknown"
	}
	return ip
}

// emailKey is how login_attempts names an address: the SHA-256 of its
// trimmed, lower-cased form (users.email is unique on lower(email)). The
// address itself is not stored, and an address with no account counts
// exactly like one with an account.
func emailKey(email string) []byte {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(email))))
	return sum[:]
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
