package auth

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

type passwordChange struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

// PasswordChangeMaxAge is how recent the second factor of an account that
// has one must be to change its password (the proxy's CoreStepUpAge). An
// account without one proves itself with its current password alone.
const PasswordChangeMaxAge = 5 * time.Minute

// errPasswordChangeNotRecent: the account has an active second factor and
// the session has not given it within PasswordChangeMaxAge.
var errPasswordChangeNotRecent = errors.New("no second factor given recently")

// passwordChangeNeedsFactor answers errPasswordChangeNotRecent, as the
// account's deletion answers a missing factor.
func passwordChangeNeedsFactor(c *fiber.Ctx) error {
	return httpapi.NeedRecentSecondFactor(c, PasswordChangeMaxAge, "changing the password")
}

// changePassword changes the caller's password, given the current one;
// for an account with an active second factor, also that factor given on
// the session within PasswordChangeMaxAge, checked before the password is
// and again with the account's row locked.
func (s *Service) changePassword(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	var req passwordChange
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	var v httpapi.Checks
	if req.CurrentPassword == "" {
		v.Add("current_password", "required")
	} else if len(req.CurrentPassword) > password.MaxBytes {
		v.Add("current_password", password.ErrTooLong.Error())
	}
	if err := password.CheckNew(req.NewPassword); err != nil {
		v.Add("new_password", err.Error())
	}
	if err := v.Err(); err != nil {
		return err
	}
	ctx := c.UserContext()
	cur, err := users.PasswordOf(ctx, s.pool, id.UserID)
	if errors.Is(err, users.ErrNotFound) {
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, "user not found")
	} else if err != nil {
		return err
	}
	// The caller's session must be live: one stamped with an older token
	// version than the account's (a sign-in that raced a sign-out
	// everywhere or a reset) is ended for everything, and the reissue
	// below would stamp it anew. A revocation committed after this check
	// the reissue finds.
	if err := sessions.CheckLive(ctx, s.pool, id.UserID, id.SessionID); errors.Is(err, sessions.ErrEnded) {
		return httpapi.SessionEnded(c)
	} else if err != nil {
		return err
	}
	// The password is a credential: for an account with a second factor,
	// changing it needs that factor given recently, as the proxy asks
	// (decided there from its projection, which may lag a confirmation).
	// Checked again with the account's row locked, below.
	mfa, err := s.hasMFA(ctx, id.UserID)
	if err != nil {
		return err
	}
	if mfa {
		if fresh, err := sessions.Fresh(ctx, s.pool, id, PasswordChangeMaxAge, true); err != nil {
			return err
		} else if !fresh {
			return passwordChangeNeedsFactor(c)
		}
	}
	// The current password is a password guess like a sign-in: the same
	// counters (address and client), reserved before the check. Accounts
	// created through OAuth have no password: they cannot change one they
	// never had.
	// A stale hash of the current password needs no rehash: the new
	// password's hash replaces it below.
	_, err = s.checkGuess(ctx, cur.Email, req.CurrentPassword, httpapi.ClientIP(c), func() (string, bool, error) { return cur.Hash, cur.NFKC, nil })
	if ra := (*retryAfterError)(nil); errors.As(err, &ra) {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(ra.seconds))
		return ra.Problem
	}
	if errors.Is(err, errBadCredentials) {
		return problem.New(fiber.StatusForbidden, problem.CodeInvalidCurrentPassword, "the current password is wrong")
	}
	if err != nil {
		return err
	}
	newHash, err := s.passwords.Hash(ctx, req.NewPassword)
	if err != nil {
		return err
	}
	rid := strings.Clone(httpapi.RequestIDOf(c))
	var (
		tv       int64
		tok      string
		amr      []string
		authTime int64
		tenantID string
		ends     int64
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The factor looked for with the row locked, as a confirmation
		// locks it, and the session's authentication before SetPassword
		// moves the token version on (which ends it for Fresh).
		if err := lockUserForFactor(ctx, tx, id.UserID); err != nil {
			return err
		}
		if mfa, err := HasActiveFactor(ctx, tx, id.UserID); err != nil {
			return err
		} else if mfa {
			if fresh, err := sessions.Fresh(ctx, tx, id, PasswordChangeMaxAge, true); err != nil {
				return err
			} else if !fresh {
				return errPasswordChangeNotRecent
			}
		}
		// Only over the hash the current password was checked against: a
		// reset committed since (its owner locking out whoever knew the old
		// password) must not be overwritten by a change made with it.
		if tv, err = users.SetPassword(ctx, tx, id.UserID, cur.Hash, newHash); err != nil {
			return err
		}
		// The owner hears of it, at the address reset links go to.
		if err := noticeOwner(ctx, tx, id.UserID, mail.KindPasswordChanged, s.now()); err != nil {
			return err
		}
		if _, err := s.sessions.RevokeAll(ctx, tx, id.UserID, id.SessionID, sessions.ReasonPasswordChange); err != nil {
			return err
		}
		// A reset link mailed before the change must not undo it, nor an
		// email change asked for before it move the account away.
		if err := onetime.Revoke(ctx, tx, id.UserID, onetime.PasswordReset); err != nil {
			return err
		}
		if err := onetime.RevokeEmailChanges(ctx, tx, id.UserID); err != nil {
			return err
		}
		if id.SessionID != "" {
			if tok, ends, err = s.sessions.Reissue(ctx, tx, id.UserID, id.SessionID); err != nil {
				return err
			}
			// The tokens are the session's: of the tenant it is bound to,
			// which a tenant switch since the caller's access token was
			// issued has changed (that token keeps acting in the tenant
			// left only until it expires).
			if amr, authTime, tenantID, err = sessionAuth(ctx, tx, id.SessionID); err != nil {
				return err
			}
		}
		// An account that could not sign in now (disabled, disabled or
		// removed in the session's tenant, or of a suspended tenant) is
		// refused, as its step-up is: a proxy that has not yet heard of
		// the change still forwards its bearer, and whoever held it would
		// choose the password the account comes back with, and get tokens
		// the sign-in refuses. Read with the account's row locked
		// (SetPassword), as a disabling takes it.
		tid := id.TenantID
		if tok != "" {
			tid = tenantID
		}
		if _, err := activeAccount(ctx, tx, id.UserID, tid); err != nil {
			return err
		}
		if err := audit.WriteForUser(ctx, tx, id.UserID, audit.Event{ActorUserID: id.UserID,
			Action: audit.ActionUserPasswordChanged, TargetType: audit.TargetUser, TargetID: id.UserID, RequestID: rid}); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id.UserID), Reason: invalidation.ReasonUserPasswordChanged})
	})
	if errors.Is(err, sessions.ErrNotFound) {
		return httpapi.SessionEnded(c)
	}
	if errors.Is(err, errPasswordChangeNotRecent) {
		return passwordChangeNeedsFactor(c)
	}
	if errors.Is(err, users.ErrPasswordChanged) {
		return problem.New(fiber.StatusForbidden, problem.CodeInvalidCurrentPassword, "the current password is wrong: the password changed meanwhile")
	}
	if err != nil {
		return err
	}
	if tok == "" { // no session to keep: every session is signed out
		return c.SendStatus(fiber.StatusNoContent)
	}
	// The token version moved on, so the caller's access token is stale;
	// hand it fresh tokens for the session it keeps.
	resp, err := s.Issue(ctx, Grant{UserID: id.UserID, TenantID: tenantID, SessionID: id.SessionID, TokenVersion: tv, RefreshToken: tok,
		AMR: amr, AuthTime: authTime, SessionEnds: ends}, func() error { return httpapi.SessionEnded(c) })
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(resp)
}
