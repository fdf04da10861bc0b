package auth

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/shared/problem"

	"github.com/tollgate-auth/tollgate/coreapi/internal/lockout"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
)

// Problems of the token endpoint. Codes follow RFC 6749 §5.2 error names.
var (
	errBadCredentials  = problem.New(400, problem.CodeInvalidGrant, "invalid email or password")
	errPasswordTooLong = problem.New(400, problem.CodeInvalidRequest, password.ErrTooLong.Error())
	// errNoMembership answers a sign-in naming no tenant of an account
	// with no active membership in an active tenant.
	errNoMembership = problem.New(403, problem.CodeNoMembership, "this account has no active membership in any tenant")
	// errAccountDisabled answers a sign-in of a disabled account, whatever
	// its memberships.
	errAccountDisabled = problem.New(403, problem.CodeUserDisabled, "this account is disabled")
)

// accountDisabled reports whether userID's account is not active (or no
// longer exists): what a sign-in answers errAccountDisabled.
func accountDisabled(ctx context.Context, q sessions.DB, userID string) (bool, error) {
	const qStatus = `SELECT status FROM users WHERE id = $1`
	var status string
	if err := q.QueryRow(ctx, qStatus, userID).Scan(&status); errors.Is(err, pgx.ErrNoRows) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("load account: %w", err)
	}
	return status != identity.StatusActive, nil
}

// errNotMemberOf answers a sign-in naming tenantID, where the account has
// no active membership or the tenant is not active.
func errNotMemberOf(tenantID string) error {
	return problem.New(403, problem.CodeForbidden, "no active membership in tenant "+tenantID)
}

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

// accountGone reports whether userID's account no longer exists: deleted
// (users.DeleteAccount) after a sign-in checked its password and before
// its session was opened. Such a sign-in is answered as one of an unknown
// address is (errBadCredentials), as it would be a moment later, not as
// one of a disabled account or a former member.
func accountGone(ctx context.Context, q sessions.DB, userID string) (bool, error) {
	const q1 = `SELECT NOT EXISTS (SELECT 1 FROM users WHERE id = $1)`
	var gone bool
	if err := q.QueryRow(ctx, q1, userID).Scan(&gone); err != nil {
		return false, fmt.Errorf("look for the account: %w", err)
	}
	return gone, nil
}

// passwordLogin checks email/password (with lockout) and returns the grant
// subject and tenant; it does not create the session. ip is the client's
// address (httpapi.ClientIP).
func (s *Service) passwordLogin(ctx context.Context, email, pw, tenantID, ip string) (users.Credentials, error) {
	var a users.Credentials
	up, err := s.checkGuess(ctx, email, pw, ip, func() (string, bool, error) {
		var err error
		a, err = users.CredentialsByEmail(ctx, s.pool, email, tenantID)
		return a.Hash, a.NFKC, err
	})
	if err != nil {
		return users.Credentials{}, err
	}
	s.upkeep(ctx, a.UserID, a.Hash, pw, up)
	if a.Status != identity.StatusActive {
		return users.Credentials{}, errAccountDisabled
	}
	if a.TenantID == nil {
		if tenantID != "" {
			return users.Credentials{}, errNotMemberOf(tenantID)
		}
		return users.Credentials{}, errNoMembership
	}
	return a, nil
}

// checkGuess is the one lockout-guarded password check (sign-in,
// invitation acceptance and email verification with a password, password
// change). The attempt is counted under the address and the client before
// the password is looked at, in the statement that checks the lock, so
// concurrent guesses cannot all pass a lock that the first of them is
// about to set. It is counted too against the client's budget over every
// address (reserveGuess): the per-address counts alone let one client try
// a password on any number of addresses, each attempt an argon2 hash. load
// returns the account's hash; users.ErrNotFound costs the same work and
// gets the same answer (errBadCredentials) as a wrong password; nfkc
// reports that the hash is known to hold the password's NFKC form
// (users.Credentials.NFKC), which is then the only form that may match,
// as for an unknown account. The check costs the same whatever the
// account (password.Hasher.VerifyForm): a password sent in another
// Unicode form costs two argon2 runs for every address. A correct
// password clears the client's count for the address and takes its hit
// back from the client's budget, so that only failures add up. Every
// check, right or wrong, counts against the client's budget of checks,
// which nothing gives back: a guess refused before the password was looked
// at is counted nowhere.
//
// At most as many checks as the hashing slots and their waiting room
// take run at once (password.Hasher.Admit); one more is refused with
// password.ErrBusy before anything is counted.
//
// up says what the correct password's stored hash needs (upkeep).
func (s *Service) checkGuess(ctx context.Context, email, pw, ip string, load func() (hash string, nfkc bool, err error)) (up hashUpkeep, err error) {
	if len(pw) > password.MaxBytes {
		return upkeepNone, errPasswordTooLong
	}
	// A place among the checks the hashing slots can take, before any
	// work: a flood beyond them is refused (503) here, counted nowhere,
	// rather than held waiting for the pool and then for a slot.
	done, err := s.passwords.Admit()
	if err != nil {
		return upkeepNone, err
	}
	defer done()
	key := lockout.EmailKey(email)
	client, err := s.reserveGuess(ctx, key, ip)
	if err != nil {
		return upkeepNone, err
	}
	hash, nfkc, err := load()
	if errors.Is(err, users.ErrNotFound) {
		hash = "" // verified against the dummy: never matches
	} else if err != nil {
		return upkeepNone, err
	}
	// An account without a password (created through OAuth) never
	// matches either. Only a hash that may be from before passwords were
	// normalized may match the form as typed too.
	form := password.FormUnknown
	if nfkc || hash == "" {
		form = password.FormNFKC
	}
	m, err := s.passwords.VerifyForm(ctx, pw, hash, form)
	if err != nil && !errors.Is(err, password.ErrInvalidHash) {
		return upkeepNone, err
	}
	if !m.OK() {
		return upkeepNone, errBadCredentials
	}
	switch {
	case m == password.MatchAsTyped || s.passwords.NeedsRehash(hash):
		up = upkeepRehash
	case !nfkc:
		up = upkeepVouch
	}
	if err := s.limiter.Release(ctx, client); err != nil {
		return upkeepNone, err
	}
	return up, s.release(ctx, s.attempts, key, ip)
}

// reserveGuess counts one password guess from the client ip at the
// address key: against the client's budget of checks (reserveChecks),
// its budget of guesses over every address (reserveClient) and the
// address's lockout, in that order and in one transaction, which the
// first refusal rolls back: then nothing is counted, and the password
// must not be checked. The rows counted stay locked until the transaction
// ends, so no other request of the client sees a hit that is then taken
// back. Counted in statements of their own and given back after a later
// refusal, the hits were seen in between: a sign-in or a password hashed
// for the same client was refused 429 although its budget had room. The
// guess hit is returned for a correct password to give back.
func (s *Service) reserveGuess(ctx context.Context, key []byte, ip string) (client ratelimit.Hit, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.reserveChecks(ctx, tx, checkClientKey(ip)); err != nil {
			return err
		}
		var err error
		if client, err = s.reserveClient(ctx, tx, guessClientKey(ip)); err != nil {
			return err
		}
		return s.reserveIn(ctx, tx, s.attempts, key, ip)
	})
	if err != nil {
		return ratelimit.Hit{}, err
	}
	return client, nil
}

// guessClientKey names a client's budget of password guesses over every
// address (an IPv6 client is its /64, ratelimit.ClientKey).
func guessClientKey(ip string) []byte {
	return ratelimit.Key("password-guess", ratelimit.ClientKey(ip))
}

// checkClientKey names a client's budget of password checks, right or
// wrong, over every address (an IPv6 client is its /64).
func checkClientKey(ip string) []byte {
	return ratelimit.PasswordChecksKey(ip)
}

// reserveChecks counts one password check against the client's budget
// (Options.PasswordChecksPerHour) through q, or answers 429 with
// Retry-After when it is spent (then the password must not be checked):
// each check is an argon2 hash, and a correct password, which the budget
// of failures gives back, costs one as well.
func (s *Service) reserveChecks(ctx context.Context, q ratelimit.Querier, checks []byte) error {
	ok, wait, err := ratelimit.AllowIn(ctx, q, checks, s.checkLimit)
	if err != nil {
		return err
	}
	if !ok {
		secs := ratelimit.Seconds(wait)
		return &retryAfterError{problem.New(429, problem.CodeTooManyRequests,
			"too many sign-in attempts from this address; retry after "+strconv.Itoa(secs)+" s"), secs}
	}
	return nil
}

// ReserveHash counts a password hashed for the client ip (a reset's new
// password) against its budget of password checks
// (Options.PasswordChecksPerHour), which every sign-in's check counts
// against too: ok false, with the time until it allows one again, when
// it is spent, and then the password must not be hashed. Each is an argon2
// hash on one of a few hashing slots.
func (s *Service) ReserveHash(ctx context.Context, ip string) (ok bool, wait time.Duration, err error) {
	return s.limiter.Allow(ctx, checkClientKey(ip), s.checkLimit)
}

// reserveClient counts one guess against the client's budget over every
// address (Options.SignInFailuresPerHour) through q, or answers 429 with
// Retry-After when it is spent (then the guess must not be checked).
func (s *Service) reserveClient(ctx context.Context, q ratelimit.Querier, client []byte) (ratelimit.Hit, error) {
	h, ok, wait, err := ratelimit.ReserveIn(ctx, q, client, s.guessLimit)
	if err != nil {
		return ratelimit.Hit{}, err
	}
	if !ok {
		secs := ratelimit.Seconds(wait)
		return ratelimit.Hit{}, &retryAfterError{tooManyAttempts(secs), secs}
	}
	return h, nil
}

// reserve counts one guess under key from the client ip in st (the
// passwords' store, or the second factors'), or answers 429 with
// Retry-After when a lock applies (then the guess must not be checked).
func (s *Service) reserve(ctx context.Context, st *lockout.Store, key []byte, ip string) error {
	return s.reserveIn(ctx, s.pool, st, key, ip)
}

// reserveIn is reserve through q: a transaction counts the guess only if
// it commits.
func (s *Service) reserveIn(ctx context.Context, q ratelimit.Querier, st *lockout.Store, key []byte, ip string) error {
	wait, err := st.ReserveIn(ctx, q, key, ip)
	if err != nil {
		return err
	}
	if wait > 0 {
		return &retryAfterError{tooManyAttempts(wait), wait}
	}
	return nil
}

// release clears the client's count in st after a correct guess.
func (s *Service) release(ctx context.Context, st *lockout.Store, key []byte, ip string) error {
	return st.Release(ctx, key, ip)
}

// hashUpkeep is what a correct password's stored hash needs (checkGuess).
type hashUpkeep uint8

const (
	upkeepNone hashUpkeep = iota
	// upkeepVouch: the hash holds the password's NFKC form with the
	// current parameters, but was not known to: record it
	// (users.VouchNFKC), so that its next checks try that form only.
	upkeepVouch
	// upkeepRehash: the hash matched the password as typed, not its NFKC
	// form (a hash from before passwords were normalized), or was made
	// with other argon2 parameters than the current ones: make it again.
	upkeepRehash
)

// upkeep does what checkGuess found the stored hash oldHash of the
// password pw, just checked, to need: rehash replaces it with one made
// now (in NFKC, with the current parameters); vouch records its form.
// Only the hash or its record changes: the password is the same, so no
// token version moves on, no session ends and nothing is audited. It is
// best effort: on an error the old hash stays (it still verifies) and the
// next sign-in tries again.
func (s *Service) upkeep(ctx context.Context, userID, oldHash, pw string, up hashUpkeep) {
	var err error
	switch up {
	case upkeepNone:
		return
	case upkeepVouch:
		err = users.VouchNFKC(ctx, s.pool, userID, oldHash)
	case upkeepRehash:
		var h string
		if h, err = s.passwords.Hash(ctx, pw); err == nil {
			err = users.Rehash(ctx, s.pool, userID, oldHash, h)
		}
	}
	if err != nil {
		s.log.WarnContext(ctx, "password rehash", "user_id", userID, "err", err)
	}
}
