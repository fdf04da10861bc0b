package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
)

// MailLinkRefusal is the mail.LinkCheck of the links this package mails:
// why the link of a queued mail of kind k with the raw token can no
// longer work when its turn comes, "" when it can. An invitation is asked
// as its accept and the tenant's list decide (invitations.Store.MailRefusal:
// its tenant deleted, its inviter's right to send it removed, a role of
// it deleted, its address a member's, expired...); a verification or
// reset link as its page checks it (onetime.Check: "invalid" once its
// token is gone, "expired" past its expiry), and an email change's
// verification also as its confirmation refuses it ("email_taken": its
// new address another account's since). Such a mail is dropped, not
// sent: its link would only say it no longer works.
func (s *Service) MailLinkRefusal(ctx context.Context, k mail.Kind, token string) (string, error) {
	var p onetime.Purpose
	switch k {
	case mail.KindInvitation:
		return s.invitations.MailRefusal(ctx, token)
	case mail.KindVerifyEmail:
		p = onetime.VerifyEmail
	case mail.KindPasswordReset:
		p = onetime.PasswordReset
	default:
		return "", nil
	}
	t, err := onetime.Check(ctx, s.pool, p, token)
	switch {
	case errors.Is(err, onetime.ErrInvalid):
		return "invalid", nil
	case errors.Is(err, onetime.ErrExpired):
		return "expired", nil
	case err != nil:
		return "", err
	}
	if p == onetime.VerifyEmail {
		return addressTakenMeanwhile(ctx, s.pool, t)
	}
	return "", nil
}

// addressTakenMeanwhile is "email_taken" when t, a verify_email token, is
// an email change's whose new address another account has taken since
// (compared as users_email_lower_key compares addresses): its
// confirmation would be refused (errEmailTaken). A token of the account's
// own address, or of one nobody else has, is "".
func addressTakenMeanwhile(ctx context.Context, db sqldb.DB, t onetime.Token) (string, error) {
	const q = `SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1) AND id <> $2)`
	var taken bool
	if err := db.QueryRow(ctx, q, t.Email, t.UserID).Scan(&taken); err != nil {
		return "", fmt.Errorf("check the address of an email change: %w", err)
	}
	if taken {
		return "email_taken", nil
	}
	return "", nil
}
