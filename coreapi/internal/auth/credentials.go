package auth

import (
	"context"
	"errors"

	"github.com/tollgate-auth/tollgate/shared/problem"

	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// CheckPassword verifies email and password with the same lockout and the
// same answers as the password grant (the attempt is reserved under the
// address and the client IP before the password is looked at), but picks
// no tenant and opens no session (accepting an invitation with an
// existing account's password). It returns the user id and token version.
// A correct password of an account with a second factor is
// ErrSecondFactor: the password alone does not prove its owner, so the
// caller must sign in (with the second factor) and act on its bearer.
// A correct password's stale hash is made again, as on a sign-in.
func (s *Service) CheckPassword(ctx context.Context, email, pw, ip string) (string, int64, error) {
	var a users.Credentials
	stale, err := s.checkGuess(ctx, email, pw, ip, func() (string, error) {
		var err error
		a, err = users.CredentialsByEmail(ctx, s.pool, email, "")
		return a.Hash, err
	})
	if err != nil {
		return "", 0, err
	}
	if stale {
		s.rehash(ctx, a.UserID, a.Hash, pw)
	}
	if a.Status != identity.StatusActive {
		return "", 0, problem.New(403, problem.CodeUserDisabled, "this account is disabled")
	}
	// Checked after the password, as the password grant does: only its
	// owner learns that the account has a second factor.
	if on, err := s.hasMFA(ctx, a.UserID); err != nil {
		return "", 0, err
	} else if on {
		return "", 0, ErrSecondFactor
	}
	return a.UserID, a.TokenVersion, nil
}

// ErrSecondFactor is CheckPassword's answer to a correct password of an
// account with a second factor.
var ErrSecondFactor = problem.New(401, problem.CodeAccountExists,
	"this account has a second factor: sign in with it, then accept signed in")

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
