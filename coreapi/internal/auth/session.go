package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// --- logout ---

type logoutRequest struct {
	Scope *string `json:"scope"` // nil: left out; "" is refused
}

func (s *Service) logout(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	// scope at most once: of two, which one is meant would be a guess, and
	// another reader of the URL may take the other.
	var scope string
	if err := httpapi.ReadQuery(c.Context().QueryArgs(), []httpapi.FormField{{Name: "scope", Dst: &scope}}); err != nil {
		return err
	}
	// Sent without a value (?scope=, or the name alone), scope is refused
	// rather than read as left out (local), as a list's empty page
	// parameter is: a sign-out everywhere whose value was lost on its way
	// into the URL would end this session alone, and say it succeeded.
	if scope == "" && c.Context().QueryArgs().Has("scope") {
		p := problem.New(fiber.StatusBadRequest, problem.CodeInvalidQuery, "scope is sent without a value; send local or global, or leave it out")
		p.Errors = []problem.FieldError{{Field: "scope", Message: "sent without a value; give one or leave the parameter out"}}
		return p
	}
	if len(c.Request().Body()) > 0 { // as sent: c.Body() would decompress
		var req logoutRequest
		if err := httpapi.DecodeJSON(c, &req); err != nil {
			return err
		}
		switch {
		case req.Scope == nil:
		case *req.Scope == "":
			return httpapi.Invalid("scope", "must be local or global")
		case scope != "" && scope != *req.Scope:
			// The body used to win in silence: a gateway or a log that
			// reads the query would record another sign-out than the
			// one done.
			return invalidRequest("the body and the query name different scopes; send scope once",
				problem.FieldError{Field: "scope", Message: "the body's differs from the query's"})
		default:
			scope = *req.Scope
		}
	}
	if scope == "" {
		scope = "local"
	}
	ctx := c.UserContext()
	rid := strings.Clone(httpapi.RequestIDOf(c))
	switch scope {
	case "local":
		if id.SessionID == "" {
			return invalidRequest("the access token names no session; use scope=global")
		}
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			n, err := s.sessions.Revoke(ctx, tx, id.UserID, id.SessionID, sessions.ReasonLogout)
			if err != nil || n == 0 {
				return err
			}
			return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id.UserID), Reason: invalidation.ReasonSessionRevoked})
		})
		if err != nil {
			return err
		}
	case "global":
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			// The account's row first, then its sessions, as a password
			// reset or change takes them: in the other order, a reset
			// holding the row waited for the sessions this held while
			// this waited for the row (a deadlock, one of them a 500).
			if err := users.BumpTokenVersion(ctx, tx, id.UserID); err != nil {
				return err
			}
			if _, err := s.sessions.RevokeAll(ctx, tx, id.UserID, "", sessions.ReasonLogoutGlobal); err != nil {
				return err
			}
			// Signing out everywhere takes the account back from whoever
			// held a session: an email change that session asked for must
			// not move the account to their mailbox afterwards.
			if err := onetime.RevokeEmailChanges(ctx, tx, id.UserID); err != nil {
				return err
			}
			if err := audit.WriteForUser(ctx, tx, id.UserID, audit.Event{ActorUserID: id.UserID,
				Action: audit.ActionUserLogoutGlobal, TargetType: audit.TargetUser, TargetID: id.UserID, RequestID: rid}); err != nil {
				return err
			}
			return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id.UserID), Reason: invalidation.ReasonUserLogoutGlobal})
		})
		if err != nil {
			return err
		}
	default:
		return httpapi.Invalid("scope", "must be local or global")
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// --- switch-tenant ---

type switchRequest struct {
	TenantID string `json:"tenant_id"`
	// RefreshToken is the session's current refresh token: the switch
	// ends it and returns its successor, so the caller proves it holds
	// it (sessions.HoldsLive).
	RefreshToken string `json:"refresh_token"`
}

// errSessionEnded answers a sign-up whose new session was signed out
// before its tokens were issued. No bearer was sent, so no RFC 6750
// challenge: a route called with one answers httpapi.SessionEnded.
var errSessionEnded = problem.New(fiber.StatusUnauthorized, problem.CodeInvalidToken, "the session has ended")

// errSwitchRefreshToken answers a tenant switch whose refresh token is not
// the session's live one, as the token endpoint answers such a token.
var errSwitchRefreshToken = problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant,
	"the refresh token is not this session's current one")

func (s *Service) switchTenant(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	var req switchRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	tid, ok := ids.Parse(req.TenantID)
	if !ok {
		return httpapi.Invalid("tenant_id", "a tenant UUID is required")
	}
	if req.RefreshToken == "" {
		return httpapi.Invalid("refresh_token", "the session's current refresh token is required")
	}
	if id.SessionID == "" {
		return invalidRequest("the access token names no session")
	}
	ctx := c.UserContext()
	var (
		tv       int64
		tok      string
		amr      []string
		authTime int64
		ends     int64
		err      error
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if tv, err = users.ActiveMembership(ctx, tx, id.UserID, tid); errors.Is(err, users.ErrNotFound) {
			// A disabled account (whose bearer a proxy that has not yet
			// heard of it forwards) gets its sign-in's answer, as a
			// step-up and a password change do.
			if off, err := accountDisabled(ctx, tx, id.UserID); err != nil {
				return err
			} else if off {
				return errAccountDisabled
			}
			return problem.New(fiber.StatusForbidden, problem.CodeForbidden, "no active membership in that tenant")
		} else if err != nil {
			return err
		}
		if err := s.sessions.MoveTenant(ctx, tx, id.UserID, id.SessionID, tid); err != nil {
			return err
		}
		// The session is live (an ended one is 401 above): its refresh
		// token must be the caller's.
		if held, err := s.sessions.HoldsLive(ctx, tx, id.UserID, id.SessionID, req.RefreshToken); err != nil {
			return err
		} else if !held {
			return errSwitchRefreshToken
		}
		if tok, ends, err = s.sessions.Reissue(ctx, tx, id.UserID, id.SessionID); err != nil {
			return err
		}
		amr, authTime, _, err = sessionAuth(ctx, tx, id.SessionID)
		return err
	})
	if errors.Is(err, sessions.ErrNotFound) {
		return httpapi.SessionEnded(c)
	}
	if err != nil {
		return err
	}
	resp, err := s.Issue(ctx, Grant{UserID: id.UserID, TenantID: tid, SessionID: id.SessionID, TokenVersion: tv, RefreshToken: tok,
		AMR: amr, AuthTime: authTime, SessionEnds: ends}, func() error { return httpapi.SessionEnded(c) })
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(resp)
}

// --- sessions ---

type sessionView struct {
	ID         string    `json:"id"`
	TenantID   string    `json:"tenant_id"`
	UserAgent  string    `json:"user_agent"`
	IP         string    `json:"ip"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Current    bool      `json:"current"`
}

func (s *Service) listSessions(c *fiber.Ctx) error {
	pq, err := httpapi.ParsePageWithoutTotal(c)
	if err != nil {
		return err
	}
	id := httpapi.IdentityOf(c)
	var after *sessions.Cursor
	if pq.Cursor != "" {
		t, sid, err := s.cursors.DecodeAfter("sessions", id.UserID, pq.Cursor)
		if err != nil {
			return err
		}
		after = &sessions.Cursor{CreatedAt: t, ID: sid}
	}
	list, err := s.sessions.List(c.UserContext(), id.UserID, pq.Limit+1, after)
	if err != nil {
		return err
	}
	return c.JSON(httpapi.MapPage(httpapi.Page(list, 0, pq, func(ss sessions.Session) string {
		return s.cursors.After("sessions", id.UserID, ss.CreatedAt, ss.ID)
	}), func(ss sessions.Session) sessionView {
		return sessionView{
			ID: ss.ID, TenantID: ss.TenantID, UserAgent: ss.UserAgent, IP: ss.IP,
			CreatedAt: ss.CreatedAt, LastUsedAt: ss.LastUsedAt, ExpiresAt: ss.ExpiresAt,
			Current: ss.ID == id.SessionID,
		}
	}))
}

func (s *Service) revokeSession(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	sid, ok := ids.Parse(c.Params("id"))
	if !ok {
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidID, "id must be a UUID")
	}
	ctx := c.UserContext()
	rid := strings.Clone(httpapi.RequestIDOf(c))
	var revoked bool
	// Another session than the caller's: signed out by an owner who
	// thinks it is not theirs.
	other := sid != id.SessionID
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The account's row first, then its sessions and its mailed
		// tokens, as a sign-out everywhere takes them.
		if other {
			if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, id.UserID); err != nil {
				return fmt.Errorf("lock user: %w", err)
			}
		}
		tid, ok, err := s.sessions.RevokeLive(ctx, tx, id.UserID, sid, sessions.ReasonRevoked)
		if err != nil || !ok {
			return err
		}
		revoked = true
		// An email change that session asked for must not move the
		// account to its holder's mailbox afterwards, with the password
		// alone (a verification asks for no second factor), as after a
		// sign-out everywhere. Which session asked is not recorded: every
		// pending change ends; a link of the account's own address stays.
		if other {
			if err := onetime.RevokeEmailChanges(ctx, tx, id.UserID); err != nil {
				return err
			}
		}
		// Signing a device out is what an owner does who thinks a session
		// is not theirs: the session's tenant sees it, as it sees a
		// refresh-token reuse.
		return audit.WriteWith(ctx, tx, audit.Event{TenantID: tid, ActorUserID: id.UserID,
			Action: audit.ActionSessionRevoked, TargetType: audit.TargetSession, TargetID: sid,
			Data: map[string]string{"user_id": id.UserID}, RequestID: rid},
			outbox.Row{Subject: invalidation.UserSubject(id.UserID), Reason: invalidation.ReasonSessionRevoked})
	})
	if err != nil {
		return err
	}
	if !revoked {
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, "no such active session")
	}
	return c.SendStatus(fiber.StatusNoContent)
}
