package lifecycle

import (
	"context"
	"errors"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
)

// MailLinkRefusal is the mail.LinkCheck of the links this package mails:
// why the link of a queued mail of kind k with the raw token can no
// longer work when its turn comes, "" when it can. An invitation is asked
// as its accept and the tenant's list decide (invitations.Store.MailRefusal:
// its tenant deleted, its inviter's right to send it removed, a role of
// it deleted, its address a member's, expired...); a verification or
// reset link as its page checks it (onetime.Check: "invalid" once its
// token is gone, "expired" past its expiry). Such a mail is dropped, not
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
	_, err := onetime.Check(ctx, s.pool, p, token)
	switch {
	case errors.Is(err, onetime.ErrInvalid):
		return "invalid", nil
	case errors.Is(err, onetime.ErrExpired):
		return "expired", nil
	case err != nil:
		return "", err
	}
	return "", nil
}
