package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/tollgate-auth/tollgate/shared/problem"

	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// CheckPassword verifies email and password with the same lockout and the
// same answers as the password grant (the attempt is reserved under the
// address and the client IP before the password is looked at), but picks
// no tenant and opens no session (accepting an invitation with an
// existing account's password). It returns the user id and token version.
func (s *Service) CheckPassword(ctx context.Context, email, pw, ip string) (string, int64, error) {
	const q = `
SELECT u.id::text, coalesce(u.password_hash, ''), u.status, u.token_version
FROM users u WHERE lower(u.email) = lower($1)`
	if len(pw) > password.MaxBytes {
		return "", 0, errPasswordTooLong
	}
	key := emailKey(email)
	if err := s.reserve(ctx, key, ip); err != nil {
		return "", 0, err
	}
	var a account
	err := s.pool.QueryRow(ctx, q, email).Scan(&a.UserID, &a.Hash, &a.Status, &a.TokenVersion)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := s.passwords.Verify(ctx, pw, ""); err != nil {
			return "", 0, err
		}
		return "", 0, errBadCredentials
	}
	if err != nil {
		return "", 0, fmt.Errorf("load account: %w", err)
	}
	ok, err := s.passwords.Verify(ctx, pw, a.Hash)
	if err != nil && !errors.Is(err, password.ErrInvalidHash) {
		return "", 0, err
	}
	if !ok {
		return "", 0, errBadCredentials
	}
	if err := s.release(ctx, key, ip); err != nil {
		return "", 0, err
	}
	if a.Status != identity.StatusActive {
		return "", 0, problem.New(403, problem.CodeUserDisabled, "this account is disabled")
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
