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
	up, err := s.checkGuess(ctx, email, pw, ip, func() (string, bool, error) {
		var err error
		a, err = users.CredentialsByEmail(ctx, s.pool, email, "")
		return a.Hash, a.NFKC, err
	})
	if err != nil {
		return "", 0, err
	}
	s.upkeep(ctx, a.UserID, a.Hash, pw, up)
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
// account with a second factor: the caller answers with
// httpapi.NeedSecondFactorSignIn, which tells the client to sign in with
// the factor and act on the bearer token it gets.
var ErrSecondFactor = errors.New("the account has a second factor: its password alone does not prove its owner")

// ErrNoPassword is CheckPasswordOf's answer for an account without a
// password (one that signs in through an identity provider): nothing
// was checked or counted.
var ErrNoPassword = errors.New("the account has no password")

// errWrongPassword is CheckPasswordOf's refusal of a wrong password: the
// password grant's (400 invalid_grant), without the address, which the
// caller did not give.
var errWrongPassword = problem.New(400, problem.CodeInvalidGrant, "the password is wrong")

// CheckPasswordOf verifies pw as the password of the account userID,
// counted as a guess of a sign-in with the account's address is (the
// same per-address lockout and the same budget of the client over every
// address, reserved before the password is looked at), so that no route
// guesses a password faster than the password grant allows. It returns
// the token version read with the hash: a password change or reset
// committed since moves it on. A wrong password is 400 invalid_grant, a
// lockout 429 with RetryAfter; an account without a password is
// ErrNoPassword (nothing counted). A correct password's stale hash is
// made again, as on a sign-in. It says nothing of the account's status
// or second factor: the caller decides what the password proves.
func (s *Service) CheckPasswordOf(ctx context.Context, userID, pw, ip string) (int64, error) {
	cur, err := users.PasswordOf(ctx, s.pool, userID)
	if err != nil {
		return 0, err
	}
	if cur.Hash == "" {
		return 0, ErrNoPassword
	}
	up, err := s.checkGuess(ctx, cur.Email, pw, ip, func() (string, bool, error) { return cur.Hash, cur.NFKC, nil })
	if errors.Is(err, errBadCredentials) {
		return 0, errWrongPassword
	}
	if err != nil {
		return 0, err
	}
	s.upkeep(ctx, userID, cur.Hash, pw, up)
	return cur.TokenVersion, nil
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
