package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

type verifyBody struct {
	Token string `json:"token"`
	// Password is the account's password: proof that whoever uses the
	// link holds the account (else its bearer token).
	Password *string `json:"password"`
}

// Verified is the answer of a verification.
type Verified struct {
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
}

var (
	errEmailTaken = problem.New(fiber.StatusConflict, problem.CodeEmailTaken, "another account has this email address now")
	// errProofRequired: a link used by someone who may not hold the
	// account. Whoever signed up with another person's address (or asked
	// to move their account to it) chose the password: the mailbox's
	// owner opening the link must not vouch for them.
	errProofRequired = problem.New(fiber.StatusUnauthorized, problem.CodeAccountProofRequired,
		"confirming the address needs proof that the account is yours: its password, or its access token (sign in, then confirm); if you did not create the account, reset its password instead")
	errBearerRequired = problem.New(fiber.StatusUnauthorized, problem.CodeAccountProofRequired,
		"this account has no password: sign in to it, then confirm the address with its access token")
	errOtherAccount = problem.New(fiber.StatusForbidden, problem.CodeLinkAccountMismatch,
		"this link was sent for another account than the one signed in")
	// errVerifyDisabled: a disabled account's address is neither
	// confirmed nor changed (the sign-in's answer); the link stays
	// usable should the account be enabled again.
	errVerifyDisabled = problem.New(fiber.StatusForbidden, problem.CodeUserDisabled,
		"this account is disabled: its address cannot be confirmed or changed")
	errChangedWhileVerifying = problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant,
		"the account's password or sessions changed while the address was confirmed: try again")
)

// holder is how a verification proves that it comes from whoever holds
// the account the link was sent for.
type holder struct {
	// sessionID is the bearer's session, when the caller is signed in as
	// the account (checked live under the account's lock).
	sessionID string
	bearer    bool
	// checkedTV is the token version the password was checked under (-1:
	// no password given).
	checkedTV int64
}

// proof names h in the audit data.
func (h holder) proof() string {
	switch {
	case h.bearer:
		return "session"
	case h.checkedTV >= 0:
		return "password"
	}
	return "none"
}

// proveHolder checks, before the link is consumed, the proof the request
// carries that it comes from the holder of userID: a bearer must be that
// account's (else errOtherAccount), and a password is checked as a
// sign-in's guess (auth.CheckPasswordOf: the same lockout). Without
// either, or for an account without a password, the transaction decides
// (confirm). A second factor is not asked for: the verification opens no
// session, and what tells the account's holder from the mailbox's owner
// is the password that whoever created the account chose.
func (s *Service) proveHolder(c *fiber.Ctx, userID string, pw *string) (holder, error) {
	if id, ok := httpapi.OptionalIdentityOf(c); ok {
		if id.UserID != userID {
			return holder{}, errOtherAccount
		}
		return holder{bearer: true, sessionID: id.SessionID, checkedTV: -1}, nil
	}
	if pw == nil || *pw == "" {
		return holder{checkedTV: -1}, nil
	}
	tv, err := s.auth.CheckPasswordOf(c.UserContext(), userID, *pw, clientIP(c))
	switch {
	case errors.Is(err, auth.ErrNoPassword): // nothing checked: no proof
		return holder{checkedTV: -1}, nil
	case errors.Is(err, users.ErrNotFound): // gone with its tokens
		return holder{}, onetime.ErrInvalid
	case err != nil:
		return holder{}, err
	}
	return holder{checkedTV: tv}, nil
}

// verifying is the account a link is used for, read under its lock.
type verifying struct {
	email        string
	verified     bool
	tokenVersion int64
	// hasPassword and federated: whether anyone can hold the account (by
	// its password, or through an identity provider).
	hasPassword, federated bool
	status                 string
}

// confirm decides, under the account's lock, whether h proves holding the
// account a: a bearer's session must still be live (a password reset or
// a sign-out everywhere ends it), a password must not have changed since
// it was checked. Without proof, only an account nobody can hold (no
// password, no identity: a member a tenant admin added without one,
// before any sign-in) has its own address verified by the link alone.
func (h holder) confirm(ctx context.Context, tx pgx.Tx, userID string, a verifying, own bool) error {
	switch {
	case h.bearer:
		return bearerLive(ctx, tx, userID, h.sessionID)
	case h.checkedTV >= 0:
		if a.tokenVersion != h.checkedTV {
			return errChangedWhileVerifying
		}
		return nil
	case a.hasPassword:
		return errProofRequired
	case a.federated || !own:
		return errBearerRequired
	}
	return nil
}

// bearerLive is sessions.ErrEnded unless sessionID, the session of a
// bearer who proves holding the account userID (a verification's, an
// invitation's accept), is that account's live session: a proxy that has
// not yet heard of its end (a sign-out, a password reset) still forwards
// the bearer. Call it under the account's lock, which a password reset
// and a sign-out everywhere take too. A bearer without a session proves
// nothing.
func bearerLive(ctx context.Context, tx pgx.Tx, userID, sessionID string) error {
	if sessionID == "" {
		return sessions.ErrEnded
	}
	return sessions.CheckLive(ctx, tx, userID, sessionID)
}

// verifyEmail consumes a verify_email token: the address it names becomes
// the account's verified address (for an email change, the address
// changes now, outstanding reset links die, and the previous address, if
// it was verified, is told). The request must prove that it comes from
// the account's holder (proveHolder, confirm): reaching the mailbox alone
// would vouch for whoever chose the password. A disabled account is
// refused (errVerifyDisabled), as its sign-in is. A refusal leaves the
// link usable.
func (s *Service) verifyEmail(c *fiber.Ctx) error {
	var b verifyBody
	if err := decode(c, &b); err != nil {
		return formError(c, PageVerifyEmail, "", err)
	}
	if b.Token == "" {
		return formError(c, PageVerifyEmail, "", httpapi.Invalid("token", "required"))
	}
	const (
		qUser = `
SELECT email, email_verified_at IS NOT NULL, token_version, password_hash IS NOT NULL,
       EXISTS (SELECT 1 FROM identities WHERE user_id = u.id), status
FROM users u WHERE id = $1 FOR UPDATE`
		qVerify = `UPDATE users SET email_verified_at = now(), updated_at = now() WHERE id = $1`
		qChange = `UPDATE users SET email = $2, email_verified_at = now(), updated_at = now() WHERE id = $1`
	)
	ctx := c.UserContext()
	// First, so that a dead link costs no password hash. An expired
	// link's page names its address (the token stays in the redirect).
	tok, err := onetime.Check(ctx, s.pool, onetime.VerifyEmail, b.Token)
	if err != nil {
		return formError(c, PageVerifyEmail, b.Token, err)
	}
	h, err := s.proveHolder(c, tok.UserID, b.Password)
	if err != nil {
		if secs, ok := auth.RetryAfter(err); ok {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(secs))
		}
		return formError(c, PageVerifyEmail, b.Token, err)
	}
	rid := strings.Clone(httpapi.RequestIDOf(c))
	var out Verified
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockTenantsOfAddressChange(ctx, tx, b.Token); err != nil {
			return err
		}
		// The account's row before the token (see onetime.LockUser).
		if err := onetime.LockUser(ctx, tx, onetime.VerifyEmail, b.Token); err != nil {
			return err
		}
		t, err := onetime.Consume(ctx, tx, onetime.VerifyEmail, b.Token)
		if err != nil {
			return err
		}
		if t.UserID != tok.UserID { // a token names one account for good
			return onetime.ErrInvalid
		}
		var a verifying
		if err := tx.QueryRow(ctx, qUser, t.UserID).Scan(&a.email, &a.verified, &a.tokenVersion, &a.hasPassword, &a.federated, &a.status); err != nil {
			return fmt.Errorf("load user: %w", err)
		}
		current, verified := a.email, a.verified
		own := mail.SameAddress(current, t.Email)
		// Refused, the transaction rolls back and the link stays usable.
		if err := h.confirm(ctx, tx, t.UserID, a, own); err != nil {
			return err
		}
		// After the proof, as a sign-in says so after the password: only
		// the account's holder learns that it is disabled.
		if a.status != identity.StatusActive {
			return errVerifyDisabled
		}
		out = Verified{Email: t.Email, EmailVerified: true}
		if own {
			if verified {
				return nil // a second link of the same address: nothing changes
			}
			if _, err := tx.Exec(ctx, qVerify, t.UserID); err != nil {
				return fmt.Errorf("verify email: %w", err)
			}
			if err := auditUser(ctx, tx, t.UserID, t.UserID, audit.ActionUserEmailVerified, rid,
				map[string]string{"email": t.Email, "proof": h.proof()}); err != nil {
				return err
			}
			return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(t.UserID), Reason: invalidation.ReasonUserEmailVerified})
		}
		if _, err := tx.Exec(ctx, qChange, t.UserID, t.Email); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "23505" {
				return errEmailTaken
			}
			return fmt.Errorf("change email: %w", err)
		}
		// A reset link mailed to the old address must not outlive it.
		if err := onetime.Revoke(ctx, tx, t.UserID, onetime.PasswordReset, onetime.VerifyEmail); err != nil {
			return err
		}
		// Nor must an invitation to it of the account's tenants, which
		// the removal of the member would no longer find; and one to the
		// new address there is now a member's.
		if err := invitations.WithdrawForAddressChange(ctx, tx, t.UserID, current, t.Email, rid); err != nil {
			return err
		}
		// The old address, if its owner proved it, hears of the move: a
		// change by whoever signed in with the password (every later
		// reset link goes to the new address) does not go unnoticed. The
		// new address is masked: the old mailbox may be someone else's
		// by now. An address never proven may be anyone's: no mail.
		// An old address stored before ValidAddress refused it gets
		// the notice parked, with the reason, for the operator to see.
		if verified {
			if err := mail.EnqueueOrPark(ctx, tx, mail.Message{Kind: mail.KindEmailChanged, To: current,
				Data: mail.Data{NewAddress: audit.MaskEmail(t.Email)}, UserID: t.UserID}); err != nil {
				return err
			}
		}
		if err := auditUser(ctx, tx, t.UserID, t.UserID, audit.ActionUserEmailChanged, rid,
			map[string]string{"from": current, "to": t.Email, "proof": h.proof()}); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(t.UserID), Reason: invalidation.ReasonUserEmailChanged})
	})
	if errors.Is(err, sessions.ErrEnded) {
		err = httpapi.SessionEnded(c)
	}
	if err != nil {
		// The token goes back to the page unless the link itself is
		// dead (formError): the owner retries with the password.
		return formError(c, PageVerifyEmail, b.Token, err)
	}
	return done(c, PageVerifyEmail, fiber.StatusOK, out)
}

// lockTenantsOfAddressChange locks, in tx, the tenants whose pending
// invitations an email change by the verify_email token raw withdraws
// (invitations.WithdrawForAddressChange: those to the account's address
// or to the new one, of the tenants it is a member of), in the order of
// their ids; nothing when raw changes no address or there are none.
// Before the account's row, as an accept takes the tenant's lock before
// the invitation's row and then the account's, or, creating an account
// with the invited address, waits on the address the change takes or
// frees: taken in the other order, the two waited for each other. The
// tenants are read before the lock; the withdrawal reads the invitations
// again, under it.
func lockTenantsOfAddressChange(ctx context.Context, tx pgx.Tx, raw string) error {
	q := `
WITH u AS (
    SELECT u.id, u.email, t.email AS new_email FROM action_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = $1 AND t.purpose = $2 AND lower(t.email) <> lower(u.email))
SELECT 1 FROM tenants WHERE id IN (
    SELECT i.tenant_id FROM u
    JOIN memberships m ON m.user_id = u.id
    JOIN invitations i ON i.tenant_id = m.tenant_id AND i.status = 'pending'
        AND (` + invitations.InvitedIsSQL("i.email", "u.email") + ` OR ` + invitations.InvitedIsSQL("i.email", "u.new_email") + `))
ORDER BY id FOR NO KEY UPDATE`
	if !onetime.Plausible(raw) {
		return nil
	}
	if _, err := tx.Exec(ctx, q, onetime.Hash(raw), string(onetime.VerifyEmail)); err != nil {
		return fmt.Errorf("lock the tenants of invitations to the addresses changed: %w", err)
	}
	return nil
}

// Accepted is the body of every 202 of this package.
type Accepted struct {
	Message string `json:"message"`
}

// errResendDisabled: an account that could not sign in now (disabled,
// disabled in the session's tenant, or of a suspended tenant) gets no
// verification link (users.ActiveAccount).
var errResendDisabled = problem.New(fiber.StatusForbidden, problem.CodeUserDisabled,
	"the account or its membership is no longer active: no verification link is sent")

// resendVerification mails a new link: to the address of a pending email
// change if there is one, else to the account's unverified address. The
// bearer's session must be live and still bound to the token's tenant
// (401 invalid_token otherwise), and the account able to sign in to it.
func (s *Service) resendVerification(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	ctx := c.UserContext()
	// A session that has ended, or moved to another tenant than the
	// token's (a tenant switch), is no longer the one the token speaks
	// for, as the email change itself holds: 401 invalid_token, before
	// the request counts against the limit. Checked again with the
	// session's row locked.
	if live, err := sessions.LiveIn(ctx, s.pool, id.UserID, id.SessionID, id.TenantID); err != nil {
		return err
	} else if !live {
		return httpapi.SessionEnded(c)
	}
	ok, wait, err := s.limiter.Allow(ctx, ratelimit.Key("resend", id.UserID), s.limits.Resend)
	if err != nil {
		return err
	}
	if !ok {
		return tooMany(c, wait, "too many verification mails requested")
	}
	const q = `
SELECT u.email, u.email_verified_at IS NOT NULL,
       (SELECT t.email FROM action_tokens t
        WHERE t.user_id = u.id AND t.purpose = 'verify_email' AND t.expires_at > now()
        ORDER BY t.created_at DESC LIMIT 1)
FROM users u WHERE u.id = $1`
	rid := strings.Clone(httpapi.RequestIDOf(c))
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			email    string
			verified bool
			pending  *string
		)
		// The account's row first, as an email change takes it, and only
		// then the address's mail count (CountAddressMail): taken the
		// other way round, a resend and a change to the same address
		// would each wait for the other. The query comes after the lock,
		// so it sees a change committed by whoever held the row.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, id.UserID); err != nil {
			return fmt.Errorf("lock user: %w", err)
		}
		if err := tx.QueryRow(ctx, q, id.UserID).Scan(&email, &verified, &pending); errors.Is(err, pgx.ErrNoRows) {
			// Deleted while this waited for its row: its sessions went
			// with it.
			return sessions.ErrNotFound
		} else if err != nil {
			return fmt.Errorf("load user: %w", err)
		}
		// A tenant switch or a sign-out that commits from here on waits
		// for the session's row.
		if err := sessions.LockLiveIn(ctx, tx, id.UserID, id.SessionID, id.TenantID); err != nil {
			return err
		}
		// An account that could not sign in now gets no new link, as it
		// may start no email change: one mailed while a proxy still
		// forwards its bearer would outlive the disabling.
		if _, err := users.ActiveAccount(ctx, tx, id.UserID, id.TenantID); errors.Is(err, users.ErrInactive) {
			return errResendDisabled
		} else if err != nil {
			return err
		}
		to, change := email, false
		if pending != nil && !mail.SameAddress(*pending, email) {
			to, change = *pending, true
		} else if verified {
			return problem.New(fiber.StatusConflict, problem.CodeAlreadyVerified, "the email address is already verified")
		}
		// Bounded per address too, whichever accounts ask.
		if err := onetime.CountAddressMail(ctx, tx, to); err != nil {
			return err
		}
		return onetime.SendVerification(ctx, tx, id.UserID, to, change, rid)
	})
	if errors.Is(err, sessions.ErrNotFound) {
		return httpapi.SessionEnded(c)
	}
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusAccepted).JSON(Accepted{Message: "a verification link is on its way"})
}
