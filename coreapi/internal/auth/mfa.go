package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oautherr"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// Second-factor policy.
const (
	// ChallengeTTL is how long an mfa_token waits for its code.
	ChallengeTTL = 5 * time.Minute
	// ChallengeAttempts is how many codes one mfa_token may try.
	ChallengeAttempts = 5
	// MFAMaxAge is how recent the second factor must be for disabling it
	// (and for the built-in step-up routes at the proxy).
	MFAMaxAge = 5 * time.Minute
	// CodeWindow is how long an account's count of wrong second-factor
	// codes lasts after the last one (the passwords' policy otherwise
	// applies: 5, then locks of 1 s doubling up to 15 minutes). It is
	// longer than the longest lock on purpose: with the passwords' 15
	// minutes, the first code a 15-minute lock let through was always
	// more than a window after the one before and began a fresh count,
	// so the backoff started over (4 free codes, then 1 s, 2 s, …) at
	// every longest lock, about 670 codes a day instead of 96.
	CodeWindow = 24 * time.Hour
)

// Authentication methods (RFC 8176) and levels carried by access tokens.
//
// AMRFederated is a sign-in through an OIDC provider: RFC 8176 registers
// no value for it, and "fed" is the one Microsoft Entra ID uses ("a
// federated identity provider was used"); the provider's own methods are
// not known.
const (
	AMRPassword  = "pwd"
	AMRFederated = "fed"
	AMROTP       = "otp"
	ACRPassword  = "pwd"
	ACRMFA       = "mfa"
)

func amrPassword() []string { return []string{AMRPassword} }

// acrOf is the level an authentication reaches: mfa with a second factor.
func acrOf(amr []string) string {
	if slices.Contains(amr, AMROTP) {
		return ACRMFA
	}
	return ACRPassword
}

var (
	errBadCode     = problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant, "the code is wrong, already used or expired")
	errBadMFAToken = problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant,
		"the mfa_token is unknown, used, expired or out of attempts")
	errMFAUnavailable = problem.New(fiber.StatusServiceUnavailable, problem.CodeMFAUnavailable,
		"second factors are not configured on this server (MFA_ENCRYPTION_KEYS)")
)

// errSealedUnderMissingKey answers a code for an active secret the server
// cannot read: sealed under a key it no longer has, or under an id whose
// key is not the one that sealed it.
var errSealedUnderMissingKey = problem.New(fiber.StatusServiceUnavailable, problem.CodeMFAUnavailable,
	"this account's second factor cannot be read on this server (its encryption key is not configured): sign in with a recovery code, or ask an administrator")

// errPendingUnreadable answers a confirmation code for a pending secret
// the server cannot read.
var errPendingUnreadable = problem.New(fiber.StatusServiceUnavailable, problem.CodeMFAUnavailable,
	"the pending TOTP secret cannot be read on this server (its encryption key is not configured): start the enrolment again (POST /users/me/mfa/totp)")

// mfaKey names a user's second-factor guesses in login_attempts: the same
// atomic lockout as passwords (login_reserve), under a key of their own so
// a correct password never clears the count of wrong codes, and with a
// window of its own (CodeWindow, Service.codeAttempts).
func mfaKey(userID string) []byte {
	sum := sha256.Sum256([]byte("mfa\x00" + userID))
	return sum[:]
}

// mfaClient is the one client name under mfaKey: second-factor guesses
// count for the account over every client address. Whoever sends a code
// already has the password (or a session), so there is no stranger to
// keep the owner apart from; counted per address, an attacker with the
// password and many addresses would get Threshold codes from each.
const mfaClient = "account"

// sessionAuth reads how the session's holder authenticated, and the
// tenant the session is bound to now (a tenant switch moves it: the
// caller's access token may be of the tenant it left).
func sessionAuth(ctx context.Context, q sessions.DB, sessionID string) (amr []string, at int64, tenantID string, err error) {
	const qAuth = `SELECT amr, floor(extract(epoch FROM auth_time))::bigint, tenant_id::text FROM sessions WHERE id = $1`
	if err := q.QueryRow(ctx, qAuth, sessionID).Scan(&amr, &at, &tenantID); err != nil {
		return nil, 0, "", fmt.Errorf("read session authentication: %w", err)
	}
	return amr, at, tenantID, nil
}

// setSessionAuth records a second factor given now for the session, if it
// is live in tenantID (see sessions.QLiveIn; else sessions.ErrNotFound): otp
// joins the methods of the sign-in it follows. It returns the session's
// methods and auth time.
func setSessionAuth(ctx context.Context, q sessions.DB, userID, sessionID, tenantID string) ([]string, int64, error) {
	const qSet = `
UPDATE sessions SET amr = array_append(array_remove(amr, '` + AMROTP + `'), '` + AMROTP + `'), auth_time = now()
WHERE ` + sessions.QLiveIn + `
RETURNING amr, floor(extract(epoch FROM auth_time))::bigint`
	var (
		amr []string
		at  int64
	)
	err := q.QueryRow(ctx, qSet, sessionID, userID, tenantID).Scan(&amr, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, sessions.ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("record second factor: %w", err)
	}
	return amr, at, nil
}

// errInactive refuses a second factor of an account that is disabled
// (a sign-in's second step, signInTenantNow), and a step-up, an
// enrolment, its confirmation or a change of the factor by one that is
// disabled or no longer an active member of an active tenant, whatever
// the code.
var errInactive = problem.New(fiber.StatusForbidden, problem.CodeUserDisabled, users.ErrInactive.Error())

// activeAccount is users.ActiveAccount, its ErrInactive answered as
// errInactive.
func activeAccount(ctx context.Context, q sessions.DB, userID, tenantID string) (int64, error) {
	tv, err := users.ActiveAccount(ctx, q, userID, tenantID)
	if errors.Is(err, users.ErrInactive) {
		return 0, errInactive
	}
	return tv, err
}

// signInTenantNow is where a sign-in of userID whose second factor was
// just given lands, now that the account, its membership in tenantID or
// the tenant is not active (activeAccount), answered as the password
// grant answers such a sign-in: a disabled account is errInactive (403
// user_disabled); one that named tenantID (requested) is 403 forbidden;
// one that named none lands in the user's oldest active membership in an
// active tenant (users.SignInTenant), or, with none, is errNoMembership.
func signInTenantNow(ctx context.Context, q sessions.DB, userID, tenantID string, requested bool) (string, error) {
	if off, err := accountDisabled(ctx, q, userID); err != nil {
		return "", err
	} else if off {
		return "", errInactive
	}
	if requested {
		return "", errNotMemberOf(tenantID)
	}
	next, err := users.SignInTenant(ctx, q, userID)
	if errors.Is(err, users.ErrNotFound) {
		return "", errNoMembership
	}
	return next, err
}

// hasMFA reports whether the user has an active second factor.
func (s *Service) hasMFA(ctx context.Context, userID string) (bool, error) {
	return HasActiveFactor(ctx, s.pool, userID)
}

// HasActiveFactor reports, through db (a pool, or a transaction that
// locked what the caller needs first), whether the user has an active
// second factor.
func HasActiveFactor(ctx context.Context, db sqldb.DB, userID string) (bool, error) {
	return users.HasActiveFactor(ctx, db, userID)
}

// errFactorConfirmedMeanwhile rolls back a password sign-in's session
// when factorActiveLocked finds a second factor confirmed since the
// sign-in looked for one.
var errFactorConfirmedMeanwhile = errors.New("second factor confirmed meanwhile")

// factorActiveLocked reports, in tx, whether the user has an active second
// factor, with the account's row share-locked until tx ends: a
// confirmation (which locks that row before activating the factor,
// lockUserForFactor) either committed before, and is seen here (the look
// is a statement of its own, after the lock), or waits until tx commits,
// and then ends the session tx opened with the account's other sessions.
// Taken after the session's membership (sessions.Store.CreateAt), in the
// order of an admin's reset of the factor (users.CheckFactorReset).
func factorActiveLocked(ctx context.Context, tx pgx.Tx, userID string) (bool, error) {
	const qLock = `SELECT 1 FROM users WHERE id = $1 FOR SHARE`
	if _, err := tx.Exec(ctx, qLock, userID); err != nil {
		return false, fmt.Errorf("lock user: %w", err)
	}
	return HasActiveFactor(ctx, tx, userID)
}

// factorUse says what a second factor was and who gave it, for the audit.
type factorUse struct {
	userID, tenantID, actor, ip, requestID string
}

// States of an mfa_totp row (the SQL text spells them too).
const (
	totpPending = "pending" // enrolled, first code not yet confirmed
	totpActive  = "active"
)

// totpSecret is a user's TOTP secret as stored (keyID, sealed) and opened
// (plain).
type totpSecret struct {
	keyID  string
	sealed []byte
	plain  []byte
}

// openTOTP loads and opens the user's TOTP secret in the given status;
// found is false when there is none. A secret this server cannot read
// (sealed under a key missing from MFA_ENCRYPTION_KEYS, or under a listed
// id whose key is not the one that sealed it) is unreadable(status), a
// 503 that says what to do, and is logged for the operator. Callers open
// the secret before they count the attempt: a code that cannot be looked
// at must spend none of the owner's tries.
func (s *Service) openTOTP(ctx context.Context, userID, status string) (sec totpSecret, found bool, err error) {
	const qLoad = `SELECT key_id, secret_sealed FROM mfa_totp WHERE user_id = $1 AND status = $2`
	if s.mfa == nil {
		return totpSecret{}, false, errMFAUnavailable
	}
	err = s.pool.QueryRow(ctx, qLoad, userID, status).Scan(&sec.keyID, &sec.sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return totpSecret{}, false, nil
	}
	if err != nil {
		return totpSecret{}, false, fmt.Errorf("load totp secret: %w", err)
	}
	sec.plain, err = s.mfa.Open(sec.keyID, sec.sealed, []byte(userID))
	switch {
	case errors.Is(err, mfa.ErrUnknownKey):
		// An operator dropped a key that still seals secrets: the user
		// is told what to do, the operator what to fix.
		s.log.ErrorContext(ctx, "a TOTP secret is sealed under a key missing from MFA_ENCRYPTION_KEYS: put the key back (its owner can still sign in with a recovery code, or an admin can reset the factor)",
			"key_id", sec.keyID, "user_id", userID, "status", status)
		return totpSecret{}, false, errors.Join(unreadable(status), err)
	case errors.Is(err, mfa.ErrOpen):
		// The id is listed but its key does not open the secret: the id
		// was reused for new key material (or the row was altered).
		s.log.ErrorContext(ctx, "a TOTP secret does not open under the key MFA_ENCRYPTION_KEYS lists with its key id: that id now names other key material than the key that sealed it; list the original key (under a new id for the new one)",
			"key_id", sec.keyID, "user_id", userID, "status", status)
		return totpSecret{}, false, errors.Join(unreadable(status), err)
	case err != nil:
		return totpSecret{}, false, fmt.Errorf("open totp secret of user %s: %w", userID, err)
	}
	return sec, true, nil
}

// unreadable is the answer to a code for a secret openTOTP cannot read:
// an active factor's owner signs in with a recovery code, a pending
// enrolment starts again.
func unreadable(status string) error {
	if status == totpPending {
		return errPendingUnreadable
	}
	return errSealedUnderMissingKey
}

// errStepUsed: a TOTP code of the user's secret whose time step was used
// already, or is older than the last one used. Refused (RFC 6238 section
// 5.2: a code is accepted once), but no wrong guess: the code was right,
// most often sent twice at once (a double submit, a client's retry) and
// accepted for the other request.
var errStepUsed = errors.New("totp time step used already")

// errTOTPSpent answers errStepUsed at the token endpoint (a sign-in's
// second step, a step-up); confirmTOTP answers it with its own code
// (errConfirmSpent).
var errTOTPSpent = problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant, totpSpentDetail)

const totpSpentDetail = "this code has already been used: wait for the next code of the authenticator"

// matchTOTP matches code against the user's opened secret sec (in the
// given status: pending when confirming enrolment, active for a sign-in or
// step-up) and consumes its time step, so the same code (or an older one)
// is never accepted twice. A secret sealed under a retired key is resealed
// under the current one. It returns false for a wrong or expired code, and
// errStepUsed for a code of the secret whose step was used already.
func (s *Service) matchTOTP(ctx context.Context, userID, status string, sec totpSecret, code string) (bool, error) {
	_, ok, err := s.spendTOTP(ctx, userID, status, sec, code)
	return ok, err
}

// spendTOTP is matchTOTP also returning the time step a matched code
// spent, which an act that fails after it gives back (giveBack).
func (s *Service) spendTOTP(ctx context.Context, userID, status string, sec totpSecret, code string) (int64, bool, error) {
	step, ok := mfa.Match(string(sec.plain), code, s.now())
	if !ok {
		return 0, false, nil
	}
	var newKey *string
	var resealed []byte
	if !s.mfa.Current(sec.keyID) {
		id, b, err := s.mfa.Seal(sec.plain, []byte(userID))
		if err != nil {
			return 0, false, err
		}
		newKey, resealed = &id, b
	}
	ok, err := s.consumeStep(ctx, userID, status, sec.sealed, step, newKey, resealed)
	if err != nil {
		return 0, false, err
	}
	if ok {
		return step, true, nil
	}
	if used, err := s.stepUsed(ctx, userID, sec.plain, step); err != nil {
		return 0, false, err
	} else if used {
		return 0, false, errStepUsed
	}
	return 0, false, nil
}

// spentCode is what a matched code used up, for an act that fails after
// it to give back (giveBack): a TOTP code's time step (step, of the secret
// in status), or a recovery code (its stored forms, hash and legacy). The
// zero value spent nothing.
type spentCode struct {
	step         int64
	status       string
	hash, legacy []byte
}

// qGiveBackStep gives back the time step $2 a TOTP code of the user's
// secret in status $3 spent, unless a later step was spent since: the
// code's step is open again, and only that one of those before it.
const qGiveBackStep = `UPDATE mfa_totp SET last_step = $2 - 1 WHERE user_id = $1 AND status = $3 AND last_step = $2`

// qGiveBackRecovery makes a recovery code of the user's that was spent
// unspent again (in either stored form, $2 or $3).
const qGiveBackRecovery = `UPDATE mfa_recovery_codes SET used_at = NULL WHERE user_id = $1 AND code_hash IN ($2, $3) AND used_at IS NOT NULL`

// giveBack answers err, the failure of an act (a sign-in's second step, a
// step-up, an enrolment's confirmation) whose code spent spent
// (verifyFactor, confirmTOTP), once it has given it back: the code was
// accepted by nothing, so the owner's next try with it (the authenticator
// shows a TOTP code until its step ends; a recovery code is one of a few)
// must not be refused as used. A replay stays refused: while the act runs
// the code is spent and a request sending it is refused as used; once
// given back it is spent again by whichever request sends it next, and
// only one can. The give-back runs even when the request was cancelled;
// one that fails leaves the code spent, as before, and is logged.
func (s *Service) giveBack(ctx context.Context, userID string, spent spentCode, err error) error {
	var gerr error
	switch {
	case spent.step != 0:
		_, gerr = s.pool.Exec(context.WithoutCancel(ctx), qGiveBackStep, userID, spent.step, spent.status)
	case spent.hash != nil:
		_, gerr = s.pool.Exec(context.WithoutCancel(ctx), qGiveBackRecovery, userID, spent.hash, spent.legacy)
	}
	if gerr != nil {
		s.log.WarnContext(ctx, "give back spent code", "user_id", userID, "err", gerr.Error())
	}
	return err
}

// stepUsed reports whether the user's TOTP secret is still plain and has
// used step, or a later one. Read after consumeStep found nothing to
// update: a concurrent request that spent the step has committed by then
// (the update waited for its lock). The row is read whatever its status
// (a concurrent confirmation may have made it active since), and its
// secret opened, as that request may have resealed it: the secret, not
// its sealed form, says whether it is the one the code was matched
// against. A secret that does not open here is not that one.
func (s *Service) stepUsed(ctx context.Context, userID string, plain []byte, step int64) (bool, error) {
	const q = `SELECT key_id, secret_sealed FROM mfa_totp WHERE user_id = $1 AND last_step >= $2`
	var (
		keyID  string
		sealed []byte
	)
	err := s.pool.QueryRow(ctx, q, userID, step).Scan(&keyID, &sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look for a used totp step: %w", err)
	}
	now, err := s.mfa.Open(keyID, sealed, []byte(userID))
	if err != nil {
		return false, nil
	}
	return subtle.ConstantTimeCompare(now, plain) == 1, nil
}

// checkTOTP is openTOTP and matchTOTP: false when the user has no secret
// in status, or for a wrong, replayed or expired code.
func (s *Service) checkTOTP(ctx context.Context, userID, code, status string) (bool, error) {
	sec, found, err := s.openTOTP(ctx, userID, status)
	if err != nil || !found {
		return false, err
	}
	ok, err := s.matchTOTP(ctx, userID, status, sec, code)
	if errors.Is(err, errStepUsed) {
		return false, nil
	}
	return ok, err
}

// consumeStep records step as the last one used of the secret sealed as
// sealed (and reseals it when newKey is set), if the user's row still
// holds that secret in status and step is newer than the last one used.
// Bound to the secret: an enrolment restarted since the code was matched
// (a second tab) holds another secret, which a code of the old one must
// not mark as used, nor so let confirmTOTP activate it.
func (s *Service) consumeStep(ctx context.Context, userID, status string, sealed []byte, step int64, newKey *string, resealed []byte) (bool, error) {
	const qConsume = `
UPDATE mfa_totp SET last_step = $3,
    key_id = coalesce($4, key_id), secret_sealed = coalesce($5, secret_sealed)
WHERE user_id = $1 AND status = $2 AND secret_sealed = $6 AND (last_step IS NULL OR last_step < $3)`
	tag, err := s.pool.Exec(ctx, qConsume, userID, status, step, newKey, resealed, sealed)
	if err != nil {
		return false, fmt.Errorf("consume totp step: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// errEnrolmentRestarted: the enrolment was restarted (a new secret) while
// its code was being confirmed.
var errEnrolmentRestarted = problem.New(fiber.StatusConflict, problem.CodeConflict,
	"the TOTP enrolment was restarted meanwhile; confirm with a code of the new secret")

// lockUserForFactor locks the user's row until tx ends, before a second
// factor is made active. A sign-in through a provider links an identity
// to an account by its address only while it holds that row share-locked
// and sees no active factor (the oauth package), so the factor becomes
// active either before such a link is checked, which is then refused, or
// after it is made. Taken before the session's row, in the order of a
// password change or reset (the user's row, then its sessions).
func lockUserForFactor(ctx context.Context, tx pgx.Tx, userID string) error {
	const q = `SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE`
	if _, err := tx.Exec(ctx, q, userID); err != nil {
		return fmt.Errorf("lock user: %w", err)
	}
	return nil
}

// lockFactorAgain takes, in tx, the account's row (lockUserForFactor),
// then its active factor's, and checks the session again (sessions.Fresh,
// a second factor within MFAMaxAge), for a change that only a recent
// second factor may make (disabling the factor, new recovery codes),
// decided on the same check made before tx: a sign-out everywhere or a
// reset may have ended the session since, and one that starts now (each
// moves the account's token version on) waits until tx commits. The
// account must still be able to sign in (activeAccount, read with its row
// locked, as a disabling takes it), and the session still live in the
// token's tenant (sessions.LockLiveIn, as the confirmation locks it).
// errFactorGone: no factor is active any more (an admin's reset);
// sessions.ErrNotFound: the session ended or moved to another tenant;
// errSessionNotFresh: the session is not what the change needs now;
// errInactive: the account, its membership or its tenant is not active.
func lockFactorAgain(ctx context.Context, tx pgx.Tx, id identity.Identity) error {
	const qActive = `SELECT 1 FROM mfa_totp WHERE user_id = $1 AND status = 'active' FOR UPDATE`
	if err := lockUserForFactor(ctx, tx, id.UserID); err != nil {
		return err
	}
	var one int
	if err := tx.QueryRow(ctx, qActive, id.UserID).Scan(&one); errors.Is(err, pgx.ErrNoRows) {
		return errFactorGone
	} else if err != nil {
		return fmt.Errorf("lock totp: %w", err)
	}
	if fresh, err := sessions.Fresh(ctx, tx, id, MFAMaxAge, true); err != nil {
		return err
	} else if !fresh {
		return errSessionNotFresh
	}
	// Fresh does not look at the session's tenant; a tenant switch that
	// commits from here on waits for the row (sessions.Store.Reissue).
	if err := sessions.LockLiveIn(ctx, tx, id.UserID, id.SessionID, id.TenantID); err != nil {
		return err
	}
	_, err := activeAccount(ctx, tx, id.UserID, id.TenantID)
	return err
}

// errFactorGone and errSessionNotFresh: see lockFactorAgain.
var (
	errFactorGone      = errors.New("factor gone")
	errSessionNotFresh = errors.New("session not fresh")
)

// activateTOTP turns the user's pending secret active in tx, only if a
// code of it was just matched (its last_step is set: restarting the
// enrolment clears it). It answers errMFAActive when a concurrent
// confirmation won, errEnrolmentRestarted when the enrolment was
// restarted since the code was matched. The caller holds the user's row
// locked (lockUserForFactor).
func activateTOTP(ctx context.Context, tx pgx.Tx, userID string) error {
	const qActivate = `
UPDATE mfa_totp SET status = 'active', confirmed_at = now()
WHERE user_id = $1 AND status = 'pending' AND last_step IS NOT NULL`
	const qStatus = `SELECT status FROM mfa_totp WHERE user_id = $1`
	tag, err := tx.Exec(ctx, qActivate, userID)
	if err != nil {
		return fmt.Errorf("activate totp: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var status string
	if err := tx.QueryRow(ctx, qStatus, userID).Scan(&status); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("load totp: %w", err)
	}
	if status == totpActive {
		return errMFAActive
	}
	return errEnrolmentRestarted
}

// errNoSuchCode rolls back useRecoveryCode's transaction when the code
// is not one of the user's unspent codes.
var errNoSuchCode = errors.New("no such recovery code")

// errCodeSpent answers a recovery code of the account that is spent
// already: most often by a concurrent request that sent the same code (a
// double submit, a second tab), which won. It is no wrong guess.
var errCodeSpent = problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant, "this recovery code has already been used")

// claimError is claim's refusal as useRecoveryCode returns it: the code
// was not looked at.
type claimError struct{ err error }

func (e claimError) Error() string { return e.err.Error() }
func (e claimError) Unwrap() error { return e.err }

// useRecoveryCode spends one of the user's recovery codes (at most once,
// whatever the concurrency) and audits it. claim, when set, runs first in
// the same transaction (a sign-in's challenge is marked used there): a
// code is spent only with it, and a claim refused spends nothing (its
// error comes back as a claimError). A code of the user's that is spent
// already is errCodeSpent; any other is false.
func (s *Service) useRecoveryCode(ctx context.Context, code string, u factorUse, claim func(pgx.Tx) error) (bool, error) {
	const q = `
UPDATE mfa_recovery_codes SET used_at = now()
WHERE user_id = $1 AND code_hash IN ($2, $3) AND used_at IS NULL
  AND EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND status = 'active')
RETURNING (SELECT count(*) - 1 FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL)`
	// Read after the update found nothing: a concurrent request that spent
	// the code has committed by then (the update waited for its lock).
	const qSpent = `SELECT EXISTS (SELECT 1 FROM mfa_recovery_codes WHERE user_id = $1 AND code_hash IN ($2, $3) AND used_at IS NOT NULL)`
	var ok bool
	hash, legacy := mfa.HashRecovery(u.userID, code), mfa.LegacyHashRecovery(code)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if claim != nil {
			if err := claim(tx); err != nil {
				return claimError{err}
			}
		}
		var left int
		// A code stored by an earlier release is still in its legacy form.
		err := tx.QueryRow(ctx, q, u.userID, hash, legacy).Scan(&left)
		if errors.Is(err, pgx.ErrNoRows) {
			var spent bool
			if err := tx.QueryRow(ctx, qSpent, u.userID, hash, legacy).Scan(&spent); err != nil {
				return fmt.Errorf("look for a spent recovery code: %w", err)
			}
			if spent {
				return errCodeSpent
			}
			return errNoSuchCode // the claim rolls back with it
		}
		if err != nil {
			return fmt.Errorf("use recovery code: %w", err)
		}
		ok = true
		return audit.Write(ctx, tx, audit.Event{TenantID: u.tenantID, ActorUserID: u.actor,
			Action: audit.ActionUserMFARecoveryCodeUsed, TargetType: audit.TargetUser, TargetID: u.userID,
			Data: map[string]any{"remaining": left}, RequestID: u.requestID})
	})
	if errors.Is(err, errNoSuchCode) {
		return false, nil
	}
	return ok, err
}

// verifyFactor checks a second factor of an MFA user: a TOTP code or a
// recovery code. Every attempt is reserved first in the same atomic
// lockout as passwords, for the account whatever the client (mfaClient;
// 429 with Retry-After once locked); a failure is audited. It returns
// errBadCode for a wrong or expired code. A TOTP secret the
// server cannot read is answered (503) before anything is reserved: the
// code is never looked at. claim is useRecoveryCode's: with a recovery
// code, it runs in the transaction that spends the code. A recovery code
// of the account's that is spent already (errCodeSpent), a TOTP code of a
// time step used already (errTOTPSpent), or a recovery code whose claim is
// refused, gives its attempt back and is not audited as a failure: the
// first two were right (most often two requests raced with them), the
// last was not looked at. spent is what the code used up (a TOTP code's
// time step, a recovery code), which the caller gives back if its act
// fails after (giveBack).
func (s *Service) verifyFactor(ctx context.Context, code string, u factorUse, claim func(pgx.Tx) error) (spent spentCode, err error) {
	key := mfaKey(u.userID)
	code = strings.TrimSpace(code)
	recovery := mfa.LooksLikeRecovery(code)
	var (
		sec   totpSecret
		found bool
	)
	if !recovery {
		if sec, found, err = s.openTOTP(ctx, u.userID, totpActive); err != nil {
			return spentCode{}, err
		}
	}
	if err := s.reserve(ctx, s.codeAttempts, key, mfaClient); err != nil {
		return spentCode{}, err
	}
	var ok bool
	switch {
	case recovery:
		if ok, err = s.useRecoveryCode(ctx, code, u, claim); ok {
			spent = spentCode{hash: mfa.HashRecovery(u.userID, code), legacy: mfa.LegacyHashRecovery(code)}
		}
	case found:
		var step int64
		if step, ok, err = s.spendTOTP(ctx, u.userID, totpActive, sec, code); errors.Is(err, errStepUsed) {
			err = errTOTPSpent
		}
		spent = spentCode{step: step, status: totpActive}
	}
	if _, unclaimed := errors.AsType[claimError](err); unclaimed || errors.Is(err, errCodeSpent) || errors.Is(err, errTOTPSpent) {
		if rerr := s.codeAttempts.Refund(ctx, key, mfaClient); rerr != nil {
			return spentCode{}, rerr
		}
		return spentCode{}, err
	}
	if err != nil {
		return spentCode{}, err
	}
	if !ok {
		if err := s.auditFailedCode(ctx, u); err != nil {
			return spentCode{}, err
		}
		return spentCode{}, errBadCode
	}
	if err := s.release(ctx, s.codeAttempts, key, mfaClient); err != nil {
		return spentCode{}, s.giveBack(ctx, u.userID, spent, err)
	}
	return spent, nil
}

// notLookedAt reports whether err refused a code before it was looked at:
// the account's lock (429), or a secret the server cannot read (503).
func notLookedAt(err error) bool {
	if _, locked := errors.AsType[*retryAfterError](err); locked {
		return true
	}
	return errors.Is(err, errMFAUnavailable) || errors.Is(err, errSealedUnderMissingKey)
}

func (s *Service) auditFailedCode(ctx context.Context, u factorUse) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return audit.Write(ctx, tx, audit.Event{TenantID: u.tenantID, ActorUserID: u.actor,
			Action: audit.ActionUserMFACodeFailed, TargetType: audit.TargetUser, TargetID: u.userID,
			Data: map[string]string{"ip": u.ip}, RequestID: u.requestID})
	})
}

// --- sign-in challenge ---

// mfaChallenge is the WWW-Authenticate of the mfa_required answer.
const mfaChallenge = `Bearer error="insufficient_user_authentication", acr_values="mfa"`

// mfaRequiredError is the answer to a correct password of an MFA user:
// 401 problem+json with code and error mfa_required and the mfa_token.
type mfaRequiredError struct {
	token string
}

func (e *mfaRequiredError) Error() string { return problem.CodeMFARequired }

type mfaRequiredBody struct {
	*problem.Problem        // with the RFC 6749 fields, error and error_description
	MFAToken         string `json:"mfa_token"`
	ExpiresIn        int64  `json:"expires_in"`
}

func (e *mfaRequiredError) render(c *fiber.Ctx) error {
	p := oautherr.Annotate(problem.New(fiber.StatusUnauthorized, problem.CodeMFARequired,
		"a second factor is required: send grant_type=mfa_otp with this mfa_token and a code").
		With(httpapi.RequestIDOf(c), c.Path()))
	c.Set(fiber.HeaderContentType, problem.ContentType)
	httpapi.ProblemHeaders(c) // as every problem answer (handleError)
	// A 401 carries a challenge (RFC 9110 section 15.5.2): the RFC 9470
	// one that asks for a second factor, as a step-up's refusal does.
	c.Set(fiber.HeaderWWWAuthenticate, mfaChallenge)
	return c.Status(fiber.StatusUnauthorized).JSON(mfaRequiredBody{Problem: p,
		MFAToken: e.token, ExpiresIn: int64(ChallengeTTL / time.Second)}, problem.ContentType)
}

// challenge stores a sign-in waiting for its second factor and returns the
// error that answers with its mfa_token. The sign-in checked the account
// at token version a.TokenVersion: if the version moved on meanwhile (a
// password reset or change raced it, and ended the pending sign-ins), no
// challenge is stored and the answer is errBadCredentials. The user row
// is share-locked so that a concurrent reset either waits for this insert
// (and then deletes the row) or is seen by it. requested: the sign-in
// named its tenant, a.TenantID (else the code lands where a sign-in naming
// none would then: mfaGrant).
func (s *Service) challenge(ctx context.Context, a users.Credentials, amr []string, requested bool) error {
	const q = `
INSERT INTO mfa_challenges (token_hash, user_id, tenant_id, expires_at, amr, tenant_requested)
SELECT $1, u.id, $3, now() + make_interval(secs => $4), $6, $7
FROM users u WHERE u.id = $2 AND u.token_version = $5
FOR SHARE`
	tok, hash, err := mfa.NewToken()
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, q, hash, a.UserID, *a.TenantID, ChallengeTTL.Seconds(), a.TokenVersion, amr, requested)
	if err != nil {
		return fmt.Errorf("store mfa challenge: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errBadCredentials
	}
	return &mfaRequiredError{token: tok}
}

// passwordSecondFactor is the password grant's MFA hook: nil when the user
// has no second factor, else the mfa_required answer. requested: the
// sign-in named its tenant.
func (s *Service) passwordSecondFactor(ctx context.Context, a users.Credentials, requested bool) error {
	on, err := s.hasMFA(ctx, a.UserID)
	if err != nil || !on {
		return err
	}
	return s.passwordChallenge(ctx, a, requested)
}

// passwordChallenge is challenge for a password sign-in that checked the
// password a.Hash at token version a.TokenVersion. A version moved on
// since by a change that left the password as it was (a factor's
// confirmation, a sign-out everywhere) ended what the account had open,
// not the password just checked: the sign-in is asked for the factor at
// the new version. A password changed or reset since is errBadCredentials.
func (s *Service) passwordChallenge(ctx context.Context, a users.Credentials, requested bool) error {
	err := s.challenge(ctx, a, amrPassword(), requested)
	if !errors.Is(err, errBadCredentials) {
		return err
	}
	cur, perr := users.PasswordOf(ctx, s.pool, a.UserID)
	if errors.Is(perr, users.ErrNotFound) {
		return err
	}
	if perr != nil {
		return perr
	}
	if cur.Hash != a.Hash || cur.TokenVersion == a.TokenVersion {
		return err
	}
	a.TokenVersion = cur.TokenVersion
	return s.challenge(ctx, a, amrPassword(), requested)
}

// externalSecondFactor is the OAuth hand-over's MFA hook: nil when the
// user has no second factor; else the session the callback opened is
// ended and the answer is mfa_required. requested: the sign-in was started
// for its tenant. The ended session joins the user's revoked sessions in
// the projection, so the user's entries are invalidated, as for any
// revocation: no token of that session was ever issued, but a proxy's
// copy would otherwise differ from what coreapi serves.
func (s *Service) externalSecondFactor(ctx context.Context, g Grant, requested bool) error {
	on, err := s.hasMFA(ctx, g.UserID)
	if err != nil || !on {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n, err := s.sessions.Revoke(ctx, tx, g.UserID, g.SessionID, sessions.ReasonMFAPending)
		if err != nil || n == 0 {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(g.UserID), Reason: invalidation.ReasonSessionRevoked})
	})
	if err != nil {
		return err
	}
	tid := g.TenantID
	// The challenge completes the sign-in the callback's session recorded
	// (its amr, ["fed"]: sessions.amr is never empty).
	err = s.challenge(ctx, users.Credentials{UserID: g.UserID, TenantID: &tid, TokenVersion: g.TokenVersion}, g.AMR, requested)
	if errors.Is(err, errBadCredentials) { // signed out everywhere in between
		return errBadHandover
	}
	return err
}

// qGiveBackTry gives an mfa_token's try back: to a request whose code was
// never looked at (the account's lock, a secret the server cannot read).
const qGiveBackTry = `UPDATE mfa_challenges SET attempts = attempts - 1 WHERE token_hash = $1 AND used_at IS NULL AND attempts > 0`

// mfaGrant is grant_type=mfa_otp: {mfa_token, code} finishes a sign-in;
// with a bearer (a verified identity) and {code} it steps the caller's
// session up.
func (s *Service) mfaGrant(c *fiber.Ctx, req tokenRequest) (TokenResponse, error) {
	if req.Code == "" {
		return TokenResponse{}, invalidRequest("code is required", problem.FieldError{Field: "code", Message: "required: a TOTP or recovery code"})
	}
	if len(req.Code) > 64 {
		return TokenResponse{}, errBadCode
	}
	// The tenant is the one the password step chose, or a step-up's
	// session's: one named here must be it (a code is never looked at
	// for another), as a refresh's must be its session's.
	named, err := req.namedTenant()
	if err != nil {
		return TokenResponse{}, err
	}
	if req.MFAToken == "" {
		return s.stepUp(c, req, named)
	}
	ctx := c.UserContext()
	ua, ip := client(c)
	// Each try is claimed before the code is looked at: at most
	// ChallengeAttempts codes per token, however many arrive at once. A
	// request refused before its code is looked at claims none: a try
	// claimed and given back was held meanwhile, and the owner's code
	// sent then found none left. So the claim takes a challenge only in
	// the tenant the request names ($3, "": any), as the OAuth
	// hand-over's code is consumed, and (unless $4: checked already)
	// only while the account, its membership and the tenant are active
	// there, as users.ActiveAccount has them: a sign-in that cannot land
	// there is refused, or lands in the next tenant, below.
	const qClaim = `
UPDATE mfa_challenges c SET attempts = attempts + 1
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() AND attempts < $2
    AND ($3 = '' OR tenant_id::text = $3)
    AND ($4 OR EXISTS (SELECT 1 FROM users u
        JOIN memberships m ON m.user_id = u.id AND m.tenant_id = c.tenant_id
        JOIN tenants t ON t.id = m.tenant_id
        WHERE u.id = c.user_id AND u.status = 'active' AND m.status = 'active' AND t.status = 'active'))
RETURNING user_id::text, tenant_id::text, amr, tenant_requested`
	// qLeft: the challenge a claim left, when there is one: it names
	// another tenant, or its sign-in cannot land in its tenant now.
	const qLeft = `
SELECT user_id::text, tenant_id::text, tenant_requested FROM mfa_challenges
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() AND attempts < $2`
	const qUse = `UPDATE mfa_challenges SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL`
	// qHeld locks the challenge a recovery code claimed: a password reset
	// or change, or a sign-out everywhere, deletes the user's challenges
	// (sessions.RevokeAll) when it ends the sessions.
	const qHeld = `SELECT 1 FROM mfa_challenges WHERE token_hash = $1 FOR UPDATE`
	hash := mfa.HashToken(req.MFAToken)
	var (
		userID, tenantID string
		firstAMR         []string // the sign-in the code completes
		requested        bool     // it named its tenant
	)
	claimTry := func(standingChecked bool) error {
		return s.pool.QueryRow(ctx, qClaim, hash, ChallengeAttempts, named, standingChecked).Scan(&userID, &tenantID, &firstAMR, &requested)
	}
	err = claimTry(false)
	if errors.Is(err, pgx.ErrNoRows) {
		err = s.pool.QueryRow(ctx, qLeft, hash, ChallengeAttempts).Scan(&userID, &tenantID, &requested)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return TokenResponse{}, errBadMFAToken
		case err != nil:
			return TokenResponse{}, fmt.Errorf("look up mfa challenge: %w", err)
		case named != "" && named != tenantID:
			return TokenResponse{}, errSecondFactorOtherTenant
		}
		// A sign-in that can land nowhere now is refused before the code
		// is looked at, as a disabled account's step-up is, and keeps the
		// code and the try: the session below would refuse it
		// (signInTenantNow) only after a recovery code or the TOTP step
		// was spent and the challenge used up, for a refusal no code
		// could change. That is a disabled account, a tenant the sign-in
		// (or this request) named that no longer lets the user in, or,
		// naming none, no active membership left. One naming none whose
		// tenant was left lands in the next one, below; the account may
		// also be active again since the claim.
		if _, err := activeAccount(ctx, s.pool, userID, tenantID); errors.Is(err, errInactive) {
			if _, err := signInTenantNow(ctx, s.pool, userID, tenantID, requested || named != ""); err != nil {
				return TokenResponse{}, err
			}
		} else if err != nil {
			return TokenResponse{}, err
		}
		err = claimTry(true)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return TokenResponse{}, errBadMFAToken
	}
	if err != nil {
		return TokenResponse{}, fmt.Errorf("claim mfa challenge: %w", err)
	}
	if named != "" {
		// Named now, if not by the password step: a tenant left meanwhile
		// is refused, not traded for the next one.
		requested = true
	}
	rid := strings.Clone(httpapi.RequestIDOf(c))
	// A recovery code is spent in the transaction that marks the challenge
	// used: of several sent at once on one challenge, one opens the session
	// and the others, refused, stay unspent. (A TOTP code's step is spent
	// on its own: a second request with it is refused while it is spent.)
	// Either is given back if this sign-in fails after it (giveBack).
	claimed := false
	claim := func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, qUse, hash)
		if err != nil {
			return fmt.Errorf("use mfa challenge: %w", err)
		}
		if tag.RowsAffected() != 1 { // a concurrent code finished it first
			return errBadMFAToken
		}
		claimed = true
		return nil
	}
	spent, err := s.verifyFactor(ctx, req.Code, factorUse{userID: userID, tenantID: tenantID, ip: ip, requestID: rid}, claim)
	if err != nil {
		// A code refused by the account's lock, or for a secret the
		// server cannot read, was never looked at: its try is given back,
		// or whoever guesses codes (holding the password) would use up
		// the owner's mfa_token too by keeping the factor locked, and an
		// owner whose secret cannot be read would have no try left for
		// the recovery code the answer points to. Tries checked stay at
		// most ChallengeAttempts.
		if notLookedAt(err) {
			if _, rerr := s.pool.Exec(ctx, qGiveBackTry, hash); rerr != nil {
				return TokenResponse{}, fmt.Errorf("give back mfa challenge try: %w", rerr)
			}
		}
		return TokenResponse{}, err
	}
	var (
		g  = Grant{UserID: userID, TenantID: tenantID}
		sd sessions.Issued
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if !claimed {
			if err := claim(tx); err != nil {
				return err
			}
		} else if err := tx.QueryRow(ctx, qHeld, hash).Scan(new(int)); errors.Is(err, pgx.ErrNoRows) {
			// Claimed with a recovery code in a transaction of its own,
			// and ended since: the account was taken back meanwhile.
			return errBadMFAToken
		} else if err != nil {
			return fmt.Errorf("hold mfa challenge: %w", err)
		}
		for {
			g.TokenVersion, err = activeAccount(ctx, tx, userID, g.TenantID)
			if err == nil {
				sd, err = s.sessions.CreateWithAMR(ctx, tx, userID, g.TenantID, ua, ip, firstAMR)
				if !errors.Is(err, sessions.ErrNoMembership) && !errors.Is(err, sessions.ErrAccountDisabled) {
					break
				}
				// Removed or disabled in the tenant, the tenant suspended
				// or the account disabled since the check (signInTenantNow
				// reads the account again).
			} else if !errors.Is(err, errInactive) {
				return err
			}
			// Answered as the password grant would answer the sign-in now:
			// one naming no tenant lands in the user's next active one.
			if g.TenantID, err = signInTenantNow(ctx, tx, userID, g.TenantID, requested); err != nil {
				return err
			}
		}
		if err != nil {
			return err
		}
		g.AMR, g.AuthTime, err = setSessionAuth(ctx, tx, userID, sd.SessionID, g.TenantID)
		if errors.Is(err, sessions.ErrNotFound) {
			// The session just opened is stamped with an older token
			// version than the account's: it was signed out everywhere
			// since the insert read the version, as Issue answers it.
			return errSignedOutMeanwhile
		}
		return err
	})
	if err != nil {
		return TokenResponse{}, s.giveBack(ctx, userID, spent, err)
	}
	g.SessionID, g.RefreshToken = sd.SessionID, sd.RefreshToken
	tr, err := s.Issue(ctx, g, func() error { return errSignedOutMeanwhile })
	if err != nil {
		return TokenResponse{}, s.giveBack(ctx, userID, spent, err)
	}
	return tr, nil
}

// errSecondFactorOtherTenant answers a second step (or a step-up) that
// names another tenant than the one it lands in.
var errSecondFactorOtherTenant = invalidRequest(
	"the second factor completes a sign-in to another tenant (the one its password step chose, or the session's for a step-up): leave tenant_id out, or sign in to that tenant",
	problem.FieldError{Field: "tenant_id", Message: "not the tenant this second factor signs in to"})

// stepUp: a caller with a valid session gives a code and gets a new
// access token (and refresh token) for the same session, now with the
// second factor and a fresh auth_time. named is the tenant the request
// named ("": none), which must be the session's.
func (s *Service) stepUp(c *fiber.Ctx, req tokenRequest, named string) (TokenResponse, error) {
	id, ok := httpapi.OptionalIdentityOf(c)
	if !ok || id.SessionID == "" {
		return TokenResponse{}, invalidRequest("mfa_token is required (or a bearer token to step up its session)",
			problem.FieldError{Field: "mfa_token", Message: "required without a bearer"})
	}
	if named != "" && named != id.TenantID {
		return TokenResponse{}, errSecondFactorOtherTenant
	}
	ctx := c.UserContext()
	_, ip := client(c)
	rid := strings.Clone(httpapi.RequestIDOf(c))
	on, err := s.hasMFA(ctx, id.UserID)
	if err != nil {
		return TokenResponse{}, err
	}
	if !on {
		return TokenResponse{}, problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant, "the caller has no second factor to step up with")
	}
	// Checked before the code is, so that a bearer whose session ended, or
	// moved to another tenant, spends no code (setSessionAuth checks again).
	if live, err := sessions.LiveIn(ctx, s.pool, id.UserID, id.SessionID, id.TenantID); err != nil {
		return TokenResponse{}, err
	} else if !live {
		return TokenResponse{}, httpapi.SessionEnded(c)
	}
	// A disabled account, or one disabled in the session's tenant (or of
	// a suspended tenant), is refused (errInactive, 403 user_disabled for
	// all three) and spends no code: a proxy that has not yet heard of the
	// change still forwards its bearer, and the step-up would mint a fresh
	// auth_time and a refresh token for it. Only the disabled account's is
	// its sign-in's answer: a sign-in naming the tenant answers the other
	// two 403 forbidden, but a step-up names no tenant, it asks for its
	// session. (A removal ended the session: refused above.) Checked again
	// in the transaction.
	if _, err := activeAccount(ctx, s.pool, id.UserID, id.TenantID); err != nil {
		return TokenResponse{}, err
	}
	spent, err := s.verifyFactor(ctx, req.Code, factorUse{userID: id.UserID, tenantID: id.TenantID, actor: id.UserID, ip: ip, requestID: rid}, nil)
	if err != nil {
		return TokenResponse{}, err
	}
	g := Grant{UserID: id.UserID, TenantID: id.TenantID, SessionID: id.SessionID}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if g.AMR, g.AuthTime, err = setSessionAuth(ctx, tx, id.UserID, id.SessionID, id.TenantID); err != nil {
			return err
		}
		if g.TokenVersion, err = activeAccount(ctx, tx, id.UserID, id.TenantID); err != nil {
			return err
		}
		g.RefreshToken, g.SessionEnds, err = s.sessions.Reissue(ctx, tx, id.UserID, id.SessionID)
		return err
	})
	if errors.Is(err, sessions.ErrNotFound) || errors.Is(err, pgx.ErrNoRows) {
		err = httpapi.SessionEnded(c)
	}
	if err != nil {
		return TokenResponse{}, s.giveBack(ctx, id.UserID, spent, err)
	}
	tr, err := s.Issue(ctx, g, func() error { return httpapi.SessionEnded(c) })
	if err != nil {
		return TokenResponse{}, s.giveBack(ctx, id.UserID, spent, err)
	}
	return tr, nil
}

// SweepChallenges deletes sign-in challenges that expired. It skips the
// challenges another transaction holds: the end of a user's sign-ins
// (sessions.Store.RevokeAll, DeleteFactor) reaches them by user, and a
// sweep deleting them by expiry could hold one while waiting for another
// the revocation held (a deadlock PostgreSQL ended by failing one of
// them, a password change with a 500). A challenge skipped is taken next
// time. It deletes in batches (sweep.InBatches).
func (s *Service) SweepChallenges(ctx context.Context) (int64, error) {
	const q = `
DELETE FROM mfa_challenges WHERE token_hash IN (
    SELECT token_hash FROM mfa_challenges WHERE expires_at < now()
    LIMIT $1
    FOR UPDATE SKIP LOCKED)`
	n, err := sweep.InBatches(ctx, s.pool, q)
	if err != nil {
		return n, fmt.Errorf("sweep mfa challenges: %w", err)
	}
	return n, nil
}

// --- enrolment ---

type totpEnrolment struct {
	Secret     string `json:"secret"`
	OTPAuthURI string `json:"otpauth_uri"`
}

type totpConfirm struct {
	Code string `json:"code"`
}

type recoveryCodes struct {
	RecoveryCodes []string `json:"recovery_codes"`
}

var errMFAActive = problem.New(fiber.StatusConflict, problem.CodeConflict, "a second factor is already active; disable it first")

// errConfirmSpent answers a confirmation code whose time step was used
// already (errStepUsed).
var errConfirmSpent = problem.New(fiber.StatusBadRequest, problem.CodeInvalidMFACode, totpSpentDetail)

// enrolTOTP starts (or restarts) TOTP enrolment: a new secret replaces a
// pending one; an active factor is 409, an account that could not sign in
// now 403 (errInactive).
func (s *Service) enrolTOTP(c *fiber.Ctx) error {
	const qEmail = `SELECT email FROM users WHERE id = $1`
	if s.mfa == nil {
		return errMFAUnavailable
	}
	id := httpapi.IdentityOf(c)
	ctx := c.UserContext()
	// A second factor locks out whoever lacks it: one enrolled with a
	// session taken from its owner (a leaked token) would keep the owner
	// out of their own account. Enrolling needs a recent sign-in.
	fresh, err := sessions.Fresh(ctx, s.pool, id, MFAMaxAge, false)
	if err != nil {
		return err
	}
	if !fresh {
		return httpapi.NeedRecentSignIn(c, MFAMaxAge, "enrolling a second factor")
	}
	// A session moved to another tenant since the caller's access token
	// was issued is no longer the one the token speaks for, as the
	// confirmation holds (sessions.LiveIn). Checked again in the transaction.
	if live, err := sessions.LiveIn(ctx, s.pool, id.UserID, id.SessionID, id.TenantID); err != nil {
		return err
	} else if !live {
		return httpapi.SessionEnded(c)
	}
	// An account that could not sign in now (disabled, disabled in the
	// session's tenant, or of a suspended tenant) is refused, as its
	// confirmation is: a proxy that has not yet heard of the change still
	// forwards its bearer, and whoever held it would replace the owner's
	// pending secret with one of its own, ready to confirm once the
	// account is active again. Checked again in the transaction.
	if _, err := activeAccount(ctx, s.pool, id.UserID, id.TenantID); err != nil {
		return err
	}
	var email string
	if err := s.pool.QueryRow(ctx, qEmail, id.UserID).Scan(&email); errors.Is(err, pgx.ErrNoRows) {
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, "user not found")
	} else if err != nil {
		return fmt.Errorf("load user: %w", err)
	}
	secret, uri, err := mfa.NewSecret(s.mfaIssuer, email)
	if err != nil {
		return err
	}
	keyID, sealed, err := s.mfa.Seal([]byte(secret), []byte(id.UserID))
	if err != nil {
		return err
	}
	if err := storePending(ctx, s.pool, id, keyID, sealed); errors.Is(err, sessions.ErrNotFound) {
		return httpapi.SessionEnded(c)
	} else if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusCreated).JSON(totpEnrolment{Secret: secret, OTPAuthURI: uri})
}

// storePending stores a new pending TOTP secret (sealed under keyID) for
// id's account in place of a pending one, with the account's row locked
// (lockUserForFactor), then the session's if it is still live in the
// token's tenant (sessions.LockLiveIn, else sessions.ErrNotFound), and the
// account read again (activeAccount, as a disabling takes its row):
// errInactive when it could not sign in now, errMFAActive when a factor
// is active.
func storePending(ctx context.Context, pool *pgxpool.Pool, id identity.Identity, keyID string, sealed []byte) error {
	const qUpsert = `
INSERT INTO mfa_totp (user_id, key_id, secret_sealed) VALUES ($1, $2, $3)
ON CONFLICT (user_id) DO UPDATE SET key_id = EXCLUDED.key_id, secret_sealed = EXCLUDED.secret_sealed,
    last_step = NULL, created_at = now()
WHERE mfa_totp.status = 'pending'`
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := lockUserForFactor(ctx, tx, id.UserID); err != nil {
			return err
		}
		if err := sessions.LockLiveIn(ctx, tx, id.UserID, id.SessionID, id.TenantID); err != nil {
			return err
		}
		if _, err := activeAccount(ctx, tx, id.UserID, id.TenantID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, qUpsert, id.UserID, keyID, sealed)
		if err != nil {
			return fmt.Errorf("store totp secret: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return errMFAActive
		}
		return nil
	})
}

// confirmTOTP activates a pending TOTP factor with a code from it and hands
// out the recovery codes (shown once, stored hashed). As a password change
// does, it ends every other session of the account and its pending email
// changes: a factor enrolled to shut out whoever else holds a session (a
// leaked access or refresh token) shuts them out at once, not when that
// session ends. The caller's session must be live in the caller's tenant
// (see sessions.QLiveIn), else 401 and nothing is activated: an enrolment
// started with a session that has since ended (a sign-out everywhere, a
// password reset) must not become the factor of an account its owner has
// just taken back, by way of a proxy that has not yet heard of the end.
// Nor may an account that could not sign in now (activeAccount).
// The owner's verified address is told (noticeOwner).
func (s *Service) confirmTOTP(c *fiber.Ctx) error {
	const qPending = `SELECT status FROM mfa_totp WHERE user_id = $1`
	id := httpapi.IdentityOf(c)
	var req totpConfirm
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	req.Code = strings.TrimSpace(req.Code)
	if req.Code == "" || len(req.Code) > 64 {
		return httpapi.Invalid("code", "the 6-digit code from the authenticator")
	}
	ctx := c.UserContext()
	var status string
	if err := s.pool.QueryRow(ctx, qPending, id.UserID).Scan(&status); errors.Is(err, pgx.ErrNoRows) {
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, "no TOTP enrolment in progress; POST /users/me/mfa/totp first")
	} else if err != nil {
		return fmt.Errorf("load totp: %w", err)
	}
	if status == totpActive {
		return errMFAActive
	}
	// Before the code is looked at, so that an ended session spends none
	// (setSessionAuth checks again, with the session's row locked).
	if live, err := sessions.LiveIn(ctx, s.pool, id.UserID, id.SessionID, id.TenantID); err != nil {
		return err
	} else if !live {
		return httpapi.SessionEnded(c)
	}
	// An account that could not sign in now (disabled, disabled in the
	// session's tenant, or of a suspended tenant) is refused, as its
	// step-up and its password change are, and spends no code: a proxy
	// that has not yet heard of the change still forwards its bearer, and
	// whoever held it would choose the factor the account comes back with
	// and end its owner's sessions. Checked again in the transaction.
	if _, err := activeAccount(ctx, s.pool, id.UserID, id.TenantID); err != nil {
		return err
	}
	_, ip := client(c)
	rid := strings.Clone(httpapi.RequestIDOf(c))
	u := factorUse{userID: id.UserID, tenantID: id.TenantID, actor: id.UserID, ip: ip, requestID: rid}
	key := mfaKey(id.UserID)
	// Opened before the attempt is counted (see openTOTP).
	sec, found, err := s.openTOTP(ctx, id.UserID, totpPending)
	if err != nil {
		return err
	}
	if err := s.reserve(ctx, s.codeAttempts, key, mfaClient); err != nil {
		return retryAfter(c, err)
	}
	ok := false
	// The step the code spends is given back if the confirmation fails
	// after it (giveBack): the owner confirms again with the same code.
	var spent spentCode
	if found {
		spent.status = totpPending
		spent.step, ok, err = s.spendTOTP(ctx, id.UserID, totpPending, sec, req.Code)
		if errors.Is(err, errStepUsed) {
			// Right, and accepted for another request (a double submit):
			// no wrong guess.
			if err := s.codeAttempts.Refund(ctx, key, mfaClient); err != nil {
				return err
			}
			return errConfirmSpent
		}
		if err != nil {
			return err
		}
	}
	if !ok {
		if err := s.auditFailedCode(ctx, u); err != nil {
			return err
		}
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidMFACode, "the code is wrong, already used or expired")
	}
	if err := s.release(ctx, s.codeAttempts, key, mfaClient); err != nil {
		return s.giveBack(ctx, id.UserID, spent, err)
	}
	codes, err := mfa.NewRecoveryCodes(mfa.RecoveryCodes)
	if err != nil {
		return s.giveBack(ctx, id.UserID, spent, err)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockUserForFactor(ctx, tx, id.UserID); err != nil {
			return err
		}
		// Then the session's row, which stays locked until the factor is
		// active, so a sign-out or reset ends it after, never before. The
		// confirmation is no step-up of the session: a step-up reissues
		// the session's refresh token to whoever gave the code, and this
		// answer carries none, so whoever else holds the session's live
		// refresh token (a thief the owner enrols a factor to shut out)
		// would refresh into the second factor given just now.
		if err := sessions.LockLiveIn(ctx, tx, id.UserID, id.SessionID, id.TenantID); err != nil {
			return err
		}
		// Read with the account's row locked, as a disabling takes it.
		if _, err := activeAccount(ctx, tx, id.UserID, id.TenantID); err != nil {
			return err
		}
		if err := activateTOTP(ctx, tx, id.UserID); err != nil {
			return err
		}
		if err := storeRecoveryCodes(ctx, tx, id.UserID, codes); err != nil {
			return err
		}
		// The owner hears of it: a factor enrolled by whoever else held
		// the password shuts the owner out, and the end of the other
		// sessions below signs the owner out without a word otherwise.
		if err := noticeOwner(ctx, tx, id.UserID, mail.KindMFAEnabled, s.now()); err != nil {
			return err
		}
		// The account's row, then its sessions, as a password change
		// takes them. The token version moves on, as for every mass
		// sign-out: the access tokens of the sessions ended here, and
		// every one issued before, are refused by it once the user's
		// invalidation below makes the proxies refetch the projection
		// (which so need not list the sessions ended). The caller's
		// session goes on at the new version: its refresh token is kept,
		// its access token must be refreshed.
		if err := users.BumpTokenVersion(ctx, tx, id.UserID); err != nil {
			return err
		}
		if err := s.sessions.Restamp(ctx, tx, id.UserID, id.SessionID); err != nil {
			return err
		}
		ended, err := s.sessions.RevokeAllByTenant(ctx, tx, id.UserID, id.SessionID, sessions.ReasonMFAEnabled)
		if err != nil {
			return err
		}
		// An email change one of them asked for must not move the
		// account to another mailbox afterwards.
		if err := onetime.RevokeEmailChanges(ctx, tx, id.UserID); err != nil {
			return err
		}
		// Each tenant's row counts the sessions ended there: its admins
		// are not told of the account's sessions in other tenants.
		if err := audit.WriteForUserEach(ctx, tx, id.UserID, audit.Event{ActorUserID: id.UserID,
			Action: audit.ActionUserMFAEnabled, TargetType: audit.TargetUser, TargetID: id.UserID, RequestID: rid},
			func(tid string) any { return map[string]any{"factor": "totp", "sessions_revoked": ended[tid]} }); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id.UserID), Reason: invalidation.ReasonUserMFAEnabled})
	})
	if errors.Is(err, sessions.ErrNotFound) {
		err = httpapi.SessionEnded(c)
	}
	if err != nil {
		return s.giveBack(ctx, id.UserID, spent, err)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(recoveryCodes{RecoveryCodes: codes})
}

// errNoActiveFactor: the caller has no active second factor.
var errNoActiveFactor = problem.New(fiber.StatusNotFound, problem.CodeNotFound, "no active second factor")

// recentFactor is nil when the caller has an active second factor, its
// session gave it within MFAMaxAge and is still bound to the token's
// tenant, and the account could sign in now (activeAccount): what
// disabling the factor and new recovery codes need. Else
// errNoActiveFactor, the step-up answer (needRecentFactor) saying that
// what needs one, the ended session's answer, or errInactive.
func (s *Service) recentFactor(c *fiber.Ctx, id identity.Identity, what string) error {
	ctx := c.UserContext()
	on, err := s.hasMFA(ctx, id.UserID)
	if err != nil {
		return err
	}
	if !on {
		return errNoActiveFactor
	}
	fresh, err := sessions.Fresh(ctx, s.pool, id, MFAMaxAge, true)
	if err != nil {
		return err
	}
	if !fresh {
		return needRecentFactor(c, what)
	}
	// A session moved to another tenant since the caller's access token
	// was issued (a tenant switch) is no longer the one the token speaks
	// for, as the confirmation and the step-up hold (sessions.LiveIn). Checked
	// again in the transaction (lockFactorAgain).
	if live, err := sessions.LiveIn(ctx, s.pool, id.UserID, id.SessionID, id.TenantID); err != nil {
		return err
	} else if !live {
		return httpapi.SessionEnded(c)
	}
	// An account that could not sign in now (disabled, disabled in the
	// session's tenant, or of a suspended tenant) is refused, as its
	// confirmation, its step-up and its password change are: a proxy
	// that has not yet heard of the change still forwards its bearer, and
	// whoever held it would take the factor off the account it comes back
	// with, or keep ten ways past it. Checked again in the transaction
	// (lockFactorAgain).
	_, err = activeAccount(ctx, s.pool, id.UserID, id.TenantID)
	return err
}

// needRecentFactor is the step-up answer: what needs a second factor
// given in the last MFAMaxAge.
func needRecentFactor(c *fiber.Ctx, what string) error {
	return httpapi.NeedRecentSecondFactor(c, MFAMaxAge, what)
}

// disableTOTP removes the caller's second factor; the session must have
// given it within MFAMaxAge (step up first). The owner's verified address
// is told (noticeOwner).
func (s *Service) disableTOTP(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	ctx := c.UserContext()
	const what = "disabling the second factor"
	if err := s.recentFactor(c, id, what); err != nil {
		return err
	}
	rid := strings.Clone(httpapi.RequestIDOf(c))
	err := s.removeMFA(ctx, id.UserID, func(tx pgx.Tx) error {
		// An admin's reset may have removed the factor meanwhile: nothing
		// left to disable or announce.
		return lockFactorAgain(ctx, tx, id)
	}, func(tx pgx.Tx) error {
		if err := noticeOwner(ctx, tx, id.UserID, mail.KindMFADisabled, s.now()); err != nil {
			return err
		}
		if err := audit.WriteForUser(ctx, tx, id.UserID, audit.Event{ActorUserID: id.UserID,
			Action: audit.ActionUserMFADisabled, TargetType: audit.TargetUser, TargetID: id.UserID,
			Data: map[string]string{"factor": "totp"}, RequestID: rid}); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id.UserID), Reason: invalidation.ReasonUserMFADisabled})
	})
	if err := factorChangeRefused(c, err, what); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// factorChangeRefused is the answer to lockFactorAgain's err (nil: none)
// for what, a change of the factor.
func factorChangeRefused(c *fiber.Ctx, err error, what string) error {
	switch {
	case errors.Is(err, errFactorGone):
		return errNoActiveFactor
	case errors.Is(err, errSessionNotFresh):
		return needRecentFactor(c, what)
	case errors.Is(err, sessions.ErrNotFound):
		return httpapi.SessionEnded(c)
	}
	return err
}

// regenerateRecoveryCodes replaces the caller's recovery codes with a new
// set: every code handed out before stops working at once (a printed sheet
// that was lost, or codes nearly used up). Like disabling the factor, it
// needs a second factor given by this session within MFAMaxAge (step up
// first): a session alone, stolen or left open, must not mint itself a
// way past the factor. The owner's verified address is told
// (noticeOwner): the new codes are a way past the factor for whoever
// asked for them.
func (s *Service) regenerateRecoveryCodes(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	ctx := c.UserContext()
	const what = "new recovery codes"
	if err := s.recentFactor(c, id, what); err != nil {
		return err
	}
	codes, err := mfa.NewRecoveryCodes(mfa.RecoveryCodes)
	if err != nil {
		return err
	}
	rid := strings.Clone(httpapi.RequestIDOf(c))
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// A disable, an admin's reset or a password reset's clean-up in
		// flight ends before, or waits until the new codes are in and
		// then deletes them with the factor.
		if err := lockFactorAgain(ctx, tx, id); err != nil {
			return err
		}
		if err := storeRecoveryCodes(ctx, tx, id.UserID, codes); err != nil {
			return err
		}
		if err := noticeOwner(ctx, tx, id.UserID, mail.KindRecoveryCodes, s.now()); err != nil {
			return err
		}
		return audit.WriteForUser(ctx, tx, id.UserID, audit.Event{ActorUserID: id.UserID,
			Action: audit.ActionUserMFARecoveryCodesRegenerated, TargetType: audit.TargetUser, TargetID: id.UserID,
			Data: map[string]string{"factor": "totp"}, RequestID: rid})
	})
	if err := factorChangeRefused(c, err, what); err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(recoveryCodes{RecoveryCodes: codes})
}

// storeRecoveryCodes replaces, in tx, userID's recovery codes with the
// hashes of codes (the inserts in one batch).
func storeRecoveryCodes(ctx context.Context, tx pgx.Tx, userID string, codes []string) error {
	const (
		qClear = `DELETE FROM mfa_recovery_codes WHERE user_id = $1`
		qCode  = `INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2)`
	)
	if _, err := tx.Exec(ctx, qClear, userID); err != nil {
		return fmt.Errorf("clear recovery codes: %w", err)
	}
	b := &pgx.Batch{}
	for _, code := range codes {
		b.Queue(qCode, userID, mfa.HashRecovery(userID, code))
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("store recovery codes: %w", err)
	}
	return nil
}

// removeMFA deletes a user's factor and recovery codes in one
// transaction: first (when not nil) runs before, and may refuse, and then
// after.
func (s *Service) removeMFA(ctx context.Context, userID string, first, then func(pgx.Tx) error) error {
	return removeFactor(ctx, s.pool, userID, first, then)
}

// removeFactor is removeMFA on pool.
func removeFactor(ctx context.Context, pool *pgxpool.Pool, userID string, first, then func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if first != nil {
			if err := first(tx); err != nil {
				return err
			}
		}
		if _, err := DeleteFactor(ctx, tx, userID); err != nil {
			return err
		}
		return then(tx)
	})
}

// RemovedFactor is what DeleteFactor deleted.
type RemovedFactor struct {
	// Factor: a TOTP factor, active or still pending.
	Factor        bool
	RecoveryCodes int64
}

// DeleteFactor deletes, in tx, userID's TOTP factor (active or pending),
// its recovery codes and the sign-ins waiting for it (mfa_challenges), in
// one round trip. The caller audits it and announces it on the user's
// invalidation subject (ReasonUserMFADisabled or ReasonUserMFAReset).
func DeleteFactor(ctx context.Context, tx pgx.Tx, userID string) (RemovedFactor, error) {
	const qTOTP = `DELETE FROM mfa_totp WHERE user_id = $1`
	const qCodes = `DELETE FROM mfa_recovery_codes WHERE user_id = $1`
	const qChallenges = `DELETE FROM mfa_challenges WHERE user_id = $1`
	b := &pgx.Batch{}
	for _, q := range []string{qTOTP, qCodes, qChallenges} {
		b.Queue(q, userID)
	}
	br := tx.SendBatch(ctx, b)
	var (
		r    RemovedFactor
		tags [3]int64
	)
	for i := range tags {
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			return RemovedFactor{}, fmt.Errorf("remove second factor: %w", err)
		}
		tags[i] = tag.RowsAffected()
	}
	if err := br.Close(); err != nil {
		return RemovedFactor{}, fmt.Errorf("remove second factor: %w", err)
	}
	r.Factor, r.RecoveryCodes = tags[0] > 0, tags[1]
	return r, nil
}

// retryAfter renders a lockout as 429 with Retry-After.
func retryAfter(c *fiber.Ctx, err error) error {
	var ra *retryAfterError
	if errors.As(err, &ra) {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(ra.seconds))
		return ra.Problem
	}
	return err
}

func (s *Service) registerMFA(rt httpapi.Routes) {
	rt.Protected.Post("/users/me/mfa/totp", s.enrolTOTP)
	rt.Protected.Post("/users/me/mfa/totp/confirm", s.confirmTOTP)
	rt.Protected.Delete("/users/me/mfa/totp", s.disableTOTP)
	rt.Protected.Post("/users/me/mfa/recovery-codes", s.regenerateRecoveryCodes)
	rt.Protected.Delete("/users/:id/mfa", httpapi.RequirePermission(roles.UsersWrite), s.resetMFA)
}

// resetMFA is a tenant admin's recovery of a member who lost their second
// factor: the factor and recovery codes are deleted, every session of the
// member is revoked (and its token version bumped), it is audited, and the
// member's verified address is told (noticeOwner). A caller resets their
// own factor with DELETE /users/me/mfa/totp instead (which needs the
// factor).
func (s *Service) resetMFA(c *fiber.Ctx) error {
	const qMember = `SELECT true FROM memberships WHERE tenant_id = $2 AND user_id = $1`
	id := httpapi.IdentityOf(c)
	uid, err := httpapi.UserIDParam(c, "id")
	if err != nil {
		return err
	}
	if uid == id.UserID {
		return problem.New(fiber.StatusForbidden, problem.CodeForbidden, "reset your own second factor with DELETE /users/me/mfa/totp")
	}
	ctx := c.UserContext()
	var member bool
	if err := s.pool.QueryRow(ctx, qMember, uid, id.TenantID).Scan(&member); errors.Is(err, pgx.ErrNoRows) {
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, "no such member")
	} else if err != nil {
		return fmt.Errorf("load member: %w", err)
	}
	a := httpapi.ActorOf(c)
	rid := a.RequestID
	// Whether the member has a factor is told only to a caller who holds
	// every permission the member holds, and the member's other tenants
	// only when there is a factor to reset (users.CheckFactorReset).
	check := func(tx pgx.Tx) error { return users.CheckFactorReset(ctx, tx, s.catalog, id.TenantID, uid, a) }
	err = s.removeMFA(ctx, uid, check, func(tx pgx.Tx) error {
		n, err := signOutAfterReset(ctx, tx, s.sessions, uid)
		if err != nil {
			return err
		}
		if err := noticeOwner(ctx, tx, uid, mail.KindMFAReset, s.now()); err != nil {
			return err
		}
		return audit.WriteWith(ctx, tx, audit.Event{TenantID: id.TenantID, ActorUserID: id.UserID,
			Action: audit.ActionUserMFAReset, TargetType: audit.TargetUser, TargetID: uid,
			Data: map[string]any{"sessions_revoked": n[id.TenantID]}, RequestID: rid},
			outbox.Row{Subject: invalidation.UserSubject(uid), Reason: invalidation.ReasonUserMFAReset})
	})
	if err != nil {
		return resetRefused(err)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// resetRefused is resetMFA's answer to an error of its checks.
func resetRefused(err error) error {
	switch {
	case errors.Is(err, roles.ErrEscalation):
		return problem.New(fiber.StatusForbidden, problem.CodeForbidden,
			"the member holds permissions you do not hold: you cannot reset their second factor")
	case errors.Is(err, users.ErrNoActiveFactor):
		return errNoActiveFactor
	case errors.Is(err, users.ErrMemberElsewhere):
		return problem.New(fiber.StatusForbidden, problem.CodeForbidden,
			"the member belongs to other tenants too, whose access the second factor also guards: the member signs in with a recovery code instead")
	case errors.Is(err, users.ErrNotFound):
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, "no such member")
	}
	return err
}

// signOutAfterReset ends every session of userID whose second factor was
// just reset (ReasonMFAReset), and the email changes they asked for, and
// bumps its token version, so no access token issued before outlives the
// reset. It returns how many sessions ended in each tenant.
func signOutAfterReset(ctx context.Context, tx pgx.Tx, ss *sessions.Store, userID string) (sessions.Revoked, error) {
	const qBump = `UPDATE users SET token_version = token_version + 1, updated_at = now() WHERE id = $1`
	// The account's row first, then its sessions, as a sign-out
	// everywhere and a password change or reset take them: in the other
	// order each waited for what the other held (a deadlock, one of them
	// a 500).
	if _, err := tx.Exec(ctx, qBump, userID); err != nil {
		return nil, fmt.Errorf("bump token version: %w", err)
	}
	n, err := ss.RevokeAllByTenant(ctx, tx, userID, "", sessions.ReasonMFAReset)
	if err != nil {
		return nil, err
	}
	// As a sign-out everywhere and a password change do: an email change
	// one of the sessions ended asked for must not move the account to
	// another mailbox afterwards.
	if err := onetime.RevokeEmailChanges(ctx, tx, userID); err != nil {
		return nil, err
	}
	return n, nil
}

// Errors of ResetMFA.
var (
	ErrNoSuchUser = errors.New("no such user")
	ErrNoFactor   = errors.New("the user has no second factor")
)

// Reset is what ResetMFA did.
type Reset struct {
	UserID          string   `json:"user_id"`
	SessionsRevoked int64    `json:"sessions_revoked"` // in every tenant
	Tenants         []string `json:"tenants"`          // where it was audited
}

// ResetMFA is the operator's recovery of an account that lost its second
// factor and its recovery codes (`coreapi users reset-mfa`), for the case a
// tenant admin may not handle: an account that belongs to several tenants
// (DELETE /users/{id}/mfa refuses it, since the factor guards them all).
// As that route does, it deletes the factor and the recovery codes, ends
// every session and bumps the token version, in one transaction; it is
// audited in each of the account's tenants with no acting user and
// requestID (each row counting the sessions ended in its tenant only), announced on the user's invalidation subject through the
// outbox, and told to the account's verified address (noticeOwner). The
// operator is expected to have checked who asks. As the route, it takes a
// factor enrolled and never confirmed for none (ErrNoFactor): the account
// signs in without it, and nothing is ended, audited or mailed.
func ResetMFA(ctx context.Context, pool *pgxpool.Pool, ss *sessions.Store, userID, requestID string) (Reset, error) {
	const qLock = `SELECT true FROM users WHERE id = $1 FOR UPDATE`
	const qUser = `
SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND status = 'active'),
       ARRAY(SELECT tenant_id::text FROM memberships WHERE user_id = $1 ORDER BY tenant_id)`
	r := Reset{UserID: userID}
	err := removeFactor(ctx, pool, userID, func(tx pgx.Tx) error {
		// The account's row first, then what it has, in a statement of its
		// own: it sees what committed while the lock was waited for (a
		// membership added in another tenant holds the row until it
		// commits), which the locking statement's snapshot would not.
		var has bool
		err := tx.QueryRow(ctx, qLock, userID).Scan(&has)
		if err == nil {
			err = tx.QueryRow(ctx, qUser, userID).Scan(&has, &r.Tenants)
		}
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return ErrNoSuchUser
		case err != nil:
			return fmt.Errorf("load user: %w", err)
		case !has:
			return ErrNoFactor
		}
		return nil
	}, func(tx pgx.Tx) error {
		n, err := signOutAfterReset(ctx, tx, ss, userID)
		if err != nil {
			return err
		}
		r.SessionsRevoked = n.Total()
		if err := noticeOwner(ctx, tx, userID, mail.KindMFAReset, time.Now()); err != nil {
			return err
		}
		b := &pgx.Batch{}
		for _, tid := range r.Tenants {
			err := audit.Queue(ctx, b, audit.Event{TenantID: tid, Action: audit.ActionUserMFAReset, TargetType: audit.TargetUser,
				TargetID: userID, Data: map[string]any{"sessions_revoked": n[tid], "by": "operator"}, RequestID: requestID})
			if err != nil {
				return err
			}
		}
		outbox.Queue(ctx, b, outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonUserMFAReset})
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("write audit events and outbox: %w", err)
		}
		return nil
	})
	return r, err
}
