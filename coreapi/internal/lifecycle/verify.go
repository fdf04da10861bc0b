package lifecycle

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

type tokenBody struct {
	Token string `json:"token"`
}

// Verified is the answer of a verification.
type Verified struct {
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
}

var errEmailTaken = problem.New(fiber.StatusConflict, problem.CodeEmailTaken, "another account has this email address now")

// verifyEmail consumes a verify_email token: the address it names becomes
// the account's verified address (for an email change, the address
// changes now, outstanding reset links die, and the previous address, if
// it was verified, is told).
func (s *Service) verifyEmail(c *fiber.Ctx) error {
	var b tokenBody
	if err := decode(c, &b); err != nil {
		return formError(c, PageVerifyEmail, "", err)
	}
	if b.Token == "" {
		return formError(c, PageVerifyEmail, "", httpapi.Invalid("token", "required"))
	}
	const (
		qUser   = `SELECT email, email_verified_at IS NOT NULL FROM users WHERE id = $1 FOR UPDATE`
		qVerify = `UPDATE users SET email_verified_at = now(), updated_at = now() WHERE id = $1`
		qChange = `UPDATE users SET email = $2, email_verified_at = now(), updated_at = now() WHERE id = $1`
	)
	ctx := c.UserContext()
	// Outside the transaction, which an expired token rolls back: Check
	// deletes it.
	if err := onetime.Check(ctx, s.pool, onetime.VerifyEmail, b.Token); err != nil {
		return formError(c, PageVerifyEmail, "", err)
	}
	rid := strings.Clone(httpapi.RequestIDOf(c))
	var out Verified
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The account's row before the token (see onetime.LockUser).
		if err := onetime.LockUser(ctx, tx, onetime.VerifyEmail, b.Token); err != nil {
			return err
		}
		t, err := onetime.Consume(ctx, tx, onetime.VerifyEmail, b.Token)
		if err != nil {
			return err
		}
		var (
			current  string
			verified bool
		)
		if err := tx.QueryRow(ctx, qUser, t.UserID).Scan(&current, &verified); err != nil {
			return fmt.Errorf("load user: %w", err)
		}
		out = Verified{Email: t.Email, EmailVerified: true}
		if strings.EqualFold(current, t.Email) {
			if verified {
				return nil // a second link of the same address: nothing changes
			}
			if _, err := tx.Exec(ctx, qVerify, t.UserID); err != nil {
				return fmt.Errorf("verify email: %w", err)
			}
			if err := auditUser(ctx, tx, t.UserID, t.UserID, audit.ActionUserEmailVerified, rid, map[string]string{"email": t.Email}); err != nil {
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
		// The old address, if its owner proved it, hears of the move: a
		// change by whoever signed in with the password (every later
		// reset link goes to the new address) does not go unnoticed. The
		// new address is masked: the old mailbox may be someone else's
		// by now. An address never proven may be anyone's: no mail.
		if verified && mail.ValidAddress(current) {
			if err := mail.Enqueue(ctx, tx, mail.Message{Kind: mail.KindEmailChanged, To: current,
				Data: mail.Data{NewAddress: audit.MaskEmail(t.Email)}}); err != nil {
				return err
			}
		}
		if err := auditUser(ctx, tx, t.UserID, t.UserID, audit.ActionUserEmailChanged, rid, map[string]string{"from": current, "to": t.Email}); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(t.UserID), Reason: invalidation.ReasonUserEmailChanged})
	})
	if err != nil {
		return formError(c, PageVerifyEmail, "", err)
	}
	return done(c, PageVerifyEmail, fiber.StatusOK, out)
}

// Accepted is the body of every 202 of this package.
type Accepted struct {
	Message string `json:"message"`
}

// resendVerification mails a new link: to the address of a pending email
// change if there is one, else to the account's unverified address.
func (s *Service) resendVerification(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	ctx := c.UserContext()
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
		if err := tx.QueryRow(ctx, q, id.UserID).Scan(&email, &verified, &pending); err != nil {
			return fmt.Errorf("load user: %w", err)
		}
		to, change := email, false
		if pending != nil && !strings.EqualFold(*pending, email) {
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
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusAccepted).JSON(Accepted{Message: "a verification link is on its way"})
}
