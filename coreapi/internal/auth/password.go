package auth

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

type passwordChange struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

func (s *Service) changePassword(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	var req passwordChange
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	var errs []problem.FieldError
	if req.CurrentPassword == "" {
		errs = append(errs, problem.FieldError{Field: "current_password", Message: "required"})
	} else if len(req.CurrentPassword) > password.MaxBytes {
		errs = append(errs, problem.FieldError{Field: "current_password", Message: password.ErrTooLong.Error()})
	}
	if err := password.CheckNew(req.NewPassword); err != nil {
		errs = append(errs, problem.FieldError{Field: "new_password", Message: err.Error()})
	}
	if err := validation(errs); err != nil {
		return err
	}
	ctx := c.UserContext()
	const qLoad = `SELECT coalesce(password_hash, ''), email FROM users WHERE id = $1`
	var hash, email string
	if err := s.pool.QueryRow(ctx, qLoad, id.UserID).Scan(&hash, &email); errors.Is(err, pgx.ErrNoRows) {
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, "user not found")
	} else if err != nil {
		return fmt.Errorf("load password: %w", err)
	}
	// The current password is a password guess like a sign-in: the same
	// counters (address and client), reserved before the check.
	key, ip := emailKey(email), httpapi.ClientIP(c)
	if err := s.reserve(ctx, key, ip); err != nil {
		var ra *retryAfterError
		if errors.As(err, &ra) {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(ra.seconds))
			return ra.Problem
		}
		return err
	}
	// Accounts created through OAuth have no password: they cannot change
	// one they never had (Verify against the dummy never matches).
	ok, err := s.passwords.Verify(ctx, req.CurrentPassword, hash)
	if err != nil && !errors.Is(err, password.ErrInvalidHash) {
		return err
	}
	if !ok {
		return problem.New(fiber.StatusForbidden, problem.CodeInvalidCurrentPassword, "the current password is wrong")
	}
	if err := s.release(ctx, key, ip); err != nil {
		return err
	}
	newHash, err := s.passwords.Hash(ctx, req.NewPassword)
	if err != nil {
		return err
	}
	const qUpdate = `
UPDATE users SET password_hash = $2, token_version = token_version + 1, updated_at = now()
WHERE id = $1
RETURNING token_version`
	rid := strings.Clone(httpapi.RequestIDOf(c))
	var (
		tv       int64
		tok      string
		amr      []string
		authTime int64
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, qUpdate, id.UserID, newHash).Scan(&tv); err != nil {
			return fmt.Errorf("update password: %w", err)
		}
		if _, err := s.sessions.RevokeAll(ctx, tx, id.UserID, id.SessionID, sessions.ReasonPasswordChange); err != nil {
			return err
		}
		if id.SessionID != "" {
			if tok, err = s.sessions.Reissue(ctx, tx, id.UserID, id.SessionID); err != nil {
				return err
			}
			if amr, authTime, err = sessionAuth(ctx, tx, id.SessionID); err != nil {
				return err
			}
		}
		if err := audit.Write(ctx, tx, audit.Event{TenantID: id.TenantID, ActorUserID: id.UserID,
			Action: audit.ActionUserPasswordChanged, TargetType: "user", TargetID: id.UserID, RequestID: rid}); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id.UserID), Reason: invalidation.ReasonUserPasswordChanged})
	})
	if errors.Is(err, sessions.ErrNotFound) {
		return problem.New(fiber.StatusUnauthorized, problem.CodeInvalidToken, "the session has ended")
	}
	if err != nil {
		return err
	}
	if tok == "" { // no session to keep: every session is signed out
		return c.SendStatus(fiber.StatusNoContent)
	}
	// The token version moved on, so the caller's access token is stale;
	// hand it fresh tokens for the session it keeps.
	resp, err := s.Issue(Grant{UserID: id.UserID, TenantID: id.TenantID, SessionID: id.SessionID, TokenVersion: tv, RefreshToken: tok,
		AMR: amr, AuthTime: authTime})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(resp)
}
