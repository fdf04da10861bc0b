package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/tollgate-auth/tollgate/shared/problem"

	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
)

// CheckPassword verifies email and password with the same lockout and the
// same answers as the password grant, but picks no tenant and opens no
// session (accepting an invitation with an existing account's password).
// It returns the user id and token version.
func (s *Service) CheckPassword(ctx context.Context, email, pw string) (string, int64, error) {
	const q = `
SELECT u.id::text, coalesce(u.password_hash, ''), u.status, u.token_version, u.failed_logins,
       greatest(ceil(extract(epoch FROM u.locked_until - now())), 0)::int
FROM users u WHERE lower(u.email) = lower($1)`
	if len(pw) > password.MaxBytes {
		return "", 0, errPasswordTooLong
	}
	var a account
	err := s.pool.QueryRow(ctx, q, email).Scan(&a.UserID, &a.Hash, &a.Status, &a.TokenVersion, &a.Failed, &a.RetryAfter)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, s.unknownAccount(ctx, email, pw)
	}
	if err != nil {
		return "", 0, fmt.Errorf("load account: %w", err)
	}
	if a.RetryAfter > 0 {
		return "", 0, &retryAfterError{tooManyAttempts(a.RetryAfter), a.RetryAfter}
	}
	ok, err := s.passwords.Verify(ctx, pw, a.Hash)
	if err != nil && !errors.Is(err, password.ErrInvalidHash) {
		return "", 0, err
	}
	if !ok {
		if err := s.recordFailure(ctx, a.UserID); err != nil {
			return "", 0, err
		}
		return "", 0, errBadCredentials
	}
	if a.Failed > 0 {
		if err := s.resetFailures(ctx, a.UserID); err != nil {
			return "", 0, err
		}
	}
	if a.Status != "active" {
		return "", 0, problem.New(403, "user_disabled", "this account is disabled")
	}
	return a.UserID, a.TokenVersion, nil
}

// RetryAfter reports the Retry-After seconds of a lockout error.
func RetryAfter(err error) (int, bool) {
	var ra *retryAfterError
	if errors.As(err, &ra) {
		return ra.seconds, true
	}
	return 0, false
}

// Sessions is the session store the service opens sessions in.
func (s *Service) Sessions() *sessions.Store { return s.sessions }
