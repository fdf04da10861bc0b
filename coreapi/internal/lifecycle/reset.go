package lifecycle

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

type forgotBody struct {
	Email string `json:"email"`
}

// forgotAnswer is the one answer of the forgot route, whatever happened.
var forgotAnswer = Accepted{Message: "if an account has this address, a link to reset its password is on its way"}

// forgotPassword always answers 202 with the same body: an unknown
// address, a disabled account and an address over its mail limit look
// exactly like a mail sent. Only the per-IP limit answers 429 (it says
// nothing about any address).
func (s *Service) forgotPassword(c *fiber.Ctx) error {
	var b forgotBody
	if err := decode(c, &b); err != nil {
		return formError(c, PageResetPassword, "", err)
	}
	email := mail.Canonical(b.Email)
	if email == "" || len(email) > mail.MaxStoredAddress {
		return formError(c, PageResetPassword, "", httpapi.Invalid("email", "an email address is required"))
	}
	ctx := c.UserContext()
	ok, wait, err := s.limiter.Allow(ctx, ratelimit.Key("forgot", "ip", ratelimit.ClientKey(clientIP(c))), s.limits.ForgotPerIP)
	if err != nil {
		return err
	}
	if !ok {
		return tooMany(c, wait, "too many password reset requests from this address")
	}
	ok, _, err = s.limiter.Allow(ctx, ratelimit.Key("forgot", "addr", strings.ToLower(email)), s.limits.ForgotPerAddress)
	if err != nil {
		return err
	}
	if ok {
		if err := s.startReset(c, email); err != nil {
			return err
		}
	}
	if isForm(c) {
		return c.Redirect(PageResetPassword+"?sent=1", fiber.StatusSeeOther)
	}
	return c.Status(fiber.StatusAccepted).JSON(forgotAnswer)
}

// startReset issues a reset token and queues its mail when the address
// has an active account of a person (a service account has no password
// to reset); it does the same round trips either way up to
// that point. The account's row is locked, so concurrent requests take
// turns and each revokes the links before it: only the newest works.
func (s *Service) startReset(c *fiber.Ctx, email string) error {
	const q = `SELECT id::text, email, display_name FROM users WHERE lower(email) = lower($1) AND status = 'active' AND kind = 'human' FOR UPDATE`
	ctx := c.UserContext()
	rid := strings.Clone(httpapi.RequestIDOf(c))
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var uid, addr, name string
		err := tx.QueryRow(ctx, q, email).Scan(&uid, &addr, &name)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && !mail.ValidAddress(addr)) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("find account: %w", err)
		}
		// Only the newest reset link works.
		if err := onetime.Revoke(ctx, tx, uid, onetime.PasswordReset); err != nil {
			return err
		}
		raw, exp, err := onetime.Issue(ctx, tx, onetime.PasswordReset, uid, addr, onetime.ResetTTL)
		if err != nil {
			return err
		}
		if err := mail.Enqueue(ctx, tx, mail.Message{Kind: mail.KindPasswordReset, To: addr, Token: raw,
			Data: mail.Data{DisplayName: name, ExpiresAt: exp}}); err != nil {
			return err
		}
		return auditUser(ctx, tx, uid, "", audit.ActionUserPasswordResetRequested, rid, nil)
	})
}

type resetBody struct {
	Token       string `json:"token"`
	NewPassword string `json:"new_password"`
}

// resetPassword consumes a reset token: the password is set, the address
// counts as verified (the link reached it), the token version moves on
// and every session is revoked (the proxies hear it through the outbox);
// pending email changes die with them.
func (s *Service) resetPassword(c *fiber.Ctx) error {
	var b resetBody
	if err := decode(c, &b); err != nil {
		return formError(c, PageResetPassword, "", err)
	}
	if b.Token == "" {
		return formError(c, PageResetPassword, "", httpapi.Invalid("token", "required"))
	}
	if err := password.CheckNew(b.NewPassword); err != nil {
		return formError(c, PageResetPassword, b.Token, httpapi.Invalid("new_password", err.Error()))
	}
	ctx := c.UserContext()
	// A cheap look-up first: random or expired tokens must not cost an
	// argon2 hash each.
	if err := onetime.Check(ctx, s.pool, onetime.PasswordReset, b.Token); err != nil {
		return formError(c, PageResetPassword, "", err)
	}
	hash, err := s.passwords.Hash(ctx, b.NewPassword)
	if err != nil {
		return err
	}
	const qSet = `
UPDATE users SET password_hash = $2, token_version = token_version + 1,
       email_verified_at = coalesce(email_verified_at, now()),
       failed_logins = 0, locked_until = NULL, updated_at = now()
WHERE id = $1 AND lower(email) = lower($3)`
	rid := strings.Clone(httpapi.RequestIDOf(c))
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		t, err := onetime.Consume(ctx, tx, onetime.PasswordReset, b.Token)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, qSet, t.UserID, hash, t.Email)
		if err != nil {
			return fmt.Errorf("reset password: %w", err)
		}
		if tag.RowsAffected() == 0 { // the address changed since the mail
			return onetime.ErrInvalid
		}
		if _, err := s.auth.Sessions().RevokeAll(ctx, tx, t.UserID, "", "password_reset"); err != nil {
			return err
		}
		if err := onetime.Revoke(ctx, tx, t.UserID, onetime.PasswordReset); err != nil {
			return err
		}
		if err := onetime.RevokeEmailChanges(ctx, tx, t.UserID); err != nil {
			return err
		}
		if err := auditUser(ctx, tx, t.UserID, t.UserID, audit.ActionUserPasswordReset, rid, nil); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(t.UserID), Reason: invalidation.ReasonUserPasswordReset})
	})
	if err != nil {
		return formError(c, PageResetPassword, b.Token, err)
	}
	return done(c, PageResetPassword, fiber.StatusNoContent, nil)
}
