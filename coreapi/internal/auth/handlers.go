package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/oautherr"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// JWKSPath is where the public keys are served.
const JWKSPath = "/.well-known/jwks.json"

// Register adds the sign-in routes (an httpapi.Options.Register hook).
func (s *Service) Register(rt httpapi.Routes) {
	rt.Root.Get(JWKSPath, s.jwks)
	rt.Public.Post("/auth/signup", s.signup)
	rt.Optional.Post("/auth/token", oautherr.Wrap(s.token))
	rt.Protected.Post("/auth/logout", s.logout)
	rt.Protected.Post("/auth/switch-tenant", s.switchTenant)
	rt.Protected.Put("/users/me/password", s.changePassword)
	rt.Protected.Get("/users/me/sessions", s.listSessions)
	rt.Protected.Delete("/users/me/sessions/:id", s.revokeSession)
	s.registerMFA(rt)
}

func (s *Service) jwks(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, "application/json")
	// Short enough that a removed key stops being trusted soon, long
	// enough that proxies do not refetch on every start.
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	return c.Send(s.keys.JWKS())
}

// client describes where a sign-in comes from (copied out of Fiber's
// buffers). The address is httpapi.ClientIP's: the proxy's signed client
// IP, never X-Forwarded-For.
func client(c *fiber.Ctx) (ua, ip string) {
	return strings.Clone(c.Get(fiber.HeaderUserAgent)), httpapi.ClientIP(c)
}

func validation(errs []problem.FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "the request has invalid fields")
	p.Errors = errs
	return p
}

// --- signup ---

type signupRequest struct {
	Email       string `json:"email"`
	Password    string `json:"password"`
	TenantName  string `json:"tenant_name"`
	DisplayName string `json:"display_name"`
}

type userView struct {
	ID          string `json:"id"`
	Email       string `json:"email"`
	DisplayName string `json:"display_name"`
}

var errEmailTaken = problem.New(fiber.StatusConflict, problem.CodeEmailTaken, "an account with this email already exists")

func (s *Service) signup(c *fiber.Ctx) error {
	var req signupRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	req.Email = strings.TrimSpace(req.Email)
	req.TenantName = strings.TrimSpace(req.TenantName)
	var errs []problem.FieldError
	if !mail.ValidAddress(req.Email) {
		errs = append(errs, problem.FieldError{Field: "email", Message: "a valid email address is required"})
	}
	if err := password.CheckNew(req.Password); err != nil {
		errs = append(errs, problem.FieldError{Field: "password", Message: err.Error()})
	}
	if n := utf8.RuneCountInString(req.TenantName); n < 1 || n > 200 {
		errs = append(errs, problem.FieldError{Field: "tenant_name", Message: "1 to 200 characters"})
	}
	if utf8.RuneCountInString(req.DisplayName) > 200 {
		errs = append(errs, problem.FieldError{Field: "display_name", Message: "at most 200 characters"})
	}
	if err := validation(errs); err != nil {
		return err
	}
	ctx := c.UserContext()
	hash, err := s.passwords.Hash(ctx, req.Password)
	if err != nil {
		return err
	}
	ua, ip := client(c)
	rid := strings.Clone(httpapi.RequestIDOf(c))
	var (
		user   userView
		tenant tenants.Tenant
		issued sessions.Issued
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		user, err = createUser(ctx, tx, req.Email, req.DisplayName, hash)
		if err != nil {
			return err
		}
		if tenant, err = tenants.Create(ctx, tx, req.TenantName); err != nil {
			return err
		}
		if err := tenants.AddMember(ctx, tx, tenant.ID, user.ID, roles.Owner); err != nil {
			return err
		}
		if issued, err = s.sessions.Create(ctx, tx, user.ID, tenant.ID, ua, ip); err != nil {
			return err
		}
		if err := onetime.SendVerification(ctx, tx, user.ID, user.Email, user.DisplayName, false, rid); err != nil {
			return err
		}
		return audit.Write(ctx, tx, audit.Event{
			TenantID: tenant.ID, ActorUserID: user.ID, Action: audit.ActionTenantCreated, TargetType: "tenant",
			TargetID: tenant.ID, Data: map[string]string{"via": "signup"}, RequestID: rid,
		})
	})
	if err != nil {
		return err
	}
	resp, err := s.Issue(Grant{UserID: user.ID, TenantID: tenant.ID, SessionID: issued.SessionID, RefreshToken: issued.RefreshToken})
	if err != nil {
		return err
	}
	resp.User, resp.Tenant = user, tenant
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusCreated).JSON(resp)
}

// createUser inserts a user; a taken email is errEmailTaken.
func createUser(ctx context.Context, tx pgx.Tx, email, displayName, hash string) (userView, error) {
	const q = `
INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, NULLIF($3, ''))
RETURNING id::text, email, display_name`
	var u userView
	err := tx.QueryRow(ctx, q, email, displayName, hash).Scan(&u.ID, &u.Email, &u.DisplayName)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return userView{}, errEmailTaken
	}
	if err != nil {
		return userView{}, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}

// --- token endpoint ---

type tokenRequest struct {
	GrantType    string `json:"grant_type"`
	Email        string `json:"email"`
	Username     string `json:"username"` // RFC 6749 name of the same field
	Password     string `json:"password"`
	TenantID     string `json:"tenant_id"`
	RefreshToken string `json:"refresh_token"`
	Code         string `json:"code"`          // grant_type=oauth_handover, mfa_otp
	MFAToken     string `json:"mfa_token"`     // grant_type=mfa_otp
	Scope        string `json:"scope"`         // client_credentials; accepted, ignored by the others
	ClientID     string `json:"client_id"`     // client_credentials; accepted, ignored by the others
	ClientSecret string `json:"client_secret"` // client_credentials
}

func invalidRequest(detail string, fields ...problem.FieldError) *problem.Problem {
	p := problem.New(fiber.StatusBadRequest, problem.CodeInvalidRequest, detail)
	p.Errors = fields
	return p
}

// decodeToken reads a token request as JSON or as
// application/x-www-form-urlencoded (RFC 6749 §4.3, §6).
func decodeToken(c *fiber.Ctx) (tokenRequest, error) {
	var req tokenRequest
	ct := strings.ToLower(strings.TrimSpace(strings.SplitN(c.Get(fiber.HeaderContentType), ";", 2)[0]))
	if ct == fiber.MIMEApplicationForm {
		args := c.Request().PostArgs()
		if err := httpapi.CheckForm(args); err != nil {
			return req, err
		}
		get := func(k string) string { return string(args.Peek(k)) } // string() copies
		req = tokenRequest{
			GrantType: get("grant_type"), Email: get("email"), Username: get("username"),
			Password: get("password"), TenantID: get("tenant_id"), RefreshToken: get("refresh_token"),
			Code: get("code"), MFAToken: get("mfa_token"),
			Scope: get("scope"), ClientID: get("client_id"), ClientSecret: get("client_secret"),
		}
		return req, nil
	}
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		var p *problem.Problem
		if errors.As(err, &p) && p.Status == fiber.StatusUnsupportedMediaType {
			return req, problem.New(fiber.StatusUnsupportedMediaType, problem.CodeUnsupportedMedia,
				"send the body as application/json or application/x-www-form-urlencoded")
		}
		return req, err
	}
	return req, nil
}

func (s *Service) token(c *fiber.Ctx) error {
	// RFC 6749 §5.1: token responses must not be cached.
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("Pragma", "no-cache")
	req, err := decodeToken(c)
	if err != nil {
		return err
	}
	var resp TokenResponse
	switch req.GrantType {
	case "password":
		resp, err = s.passwordGrant(c, req)
	case "refresh_token":
		resp, err = s.refreshGrant(c.UserContext(), req)
	case "oauth_handover":
		resp, err = s.handoverGrant(c.UserContext(), req)
	case "mfa_otp":
		resp, err = s.mfaGrant(c, req)
	case "client_credentials":
		return s.clientCredentials(c, req)
	case "":
		return invalidRequest("grant_type is required", problem.FieldError{Field: "grant_type", Message: "required: " + grantList})
	default:
		return problem.New(fiber.StatusBadRequest, problem.CodeUnsupportedGrantType, "grant_type must be "+grantList)
	}
	if err != nil {
		var mr *mfaRequiredError
		if errors.As(err, &mr) {
			return mr.render(c)
		}
		var ra *retryAfterError
		if errors.As(err, &ra) {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(ra.seconds))
			return ra.Problem
		}
		return err
	}
	return c.JSON(resp)
}

func (s *Service) passwordGrant(c *fiber.Ctx, req tokenRequest) (TokenResponse, error) {
	email := strings.TrimSpace(req.Email)
	if email == "" {
		email = strings.TrimSpace(req.Username)
	}
	var missing []problem.FieldError
	if email == "" {
		missing = append(missing, problem.FieldError{Field: "email", Message: "required"})
	}
	if req.Password == "" {
		missing = append(missing, problem.FieldError{Field: "password", Message: "required"})
	}
	if len(missing) > 0 {
		return TokenResponse{}, invalidRequest("email and password are required", missing...)
	}
	if len(req.Password) > password.MaxBytes {
		return TokenResponse{}, errPasswordTooLong
	}
	if len(email) > users.MaxEmail {
		return TokenResponse{}, errBadCredentials
	}
	if req.TenantID != "" {
		if !ids.Valid(req.TenantID) {
			return TokenResponse{}, invalidRequest("tenant_id must be a UUID", problem.FieldError{Field: "tenant_id", Message: "must be a UUID"})
		}
	}
	ctx := c.UserContext()
	ua, ip := client(c)
	a, err := s.passwordLogin(ctx, email, req.Password, req.TenantID, ip)
	if err != nil {
		return TokenResponse{}, err
	}
	if err := s.passwordSecondFactor(ctx, a); err != nil {
		return TokenResponse{}, err
	}
	issued, err := s.sessions.CreateAt(ctx, s.pool, a.UserID, *a.TenantID, ua, ip, a.TokenVersion)
	if err != nil {
		return TokenResponse{}, err
	}
	return s.Issue(Grant{UserID: a.UserID, TenantID: *a.TenantID, SessionID: issued.SessionID,
		TokenVersion: a.TokenVersion, RefreshToken: issued.RefreshToken})
}

func (s *Service) refreshGrant(ctx context.Context, req tokenRequest) (TokenResponse, error) {
	if req.RefreshToken == "" {
		return TokenResponse{}, invalidRequest("refresh_token is required", problem.FieldError{Field: "refresh_token", Message: "required"})
	}
	r, err := s.sessions.Rotate(ctx, req.RefreshToken)
	switch {
	case errors.Is(err, sessions.ErrInvalidToken), errors.Is(err, sessions.ErrExpired),
		errors.Is(err, sessions.ErrRevoked), errors.Is(err, sessions.ErrReused), errors.Is(err, sessions.ErrInactive):
		return TokenResponse{}, problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant, err.Error())
	case err != nil:
		return TokenResponse{}, err
	}
	return s.Issue(Grant{UserID: r.UserID, TenantID: r.TenantID, SessionID: r.SessionID,
		TokenVersion: r.TokenVersion, RefreshToken: r.RefreshToken, AMR: r.AMR, AuthTime: r.AuthTime})
}

// --- logout ---

type logoutRequest struct {
	Scope string `json:"scope"`
}

func (s *Service) logout(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	scope := strings.Clone(c.Query("scope"))
	if len(c.Body()) > 0 {
		var req logoutRequest
		if err := httpapi.DecodeJSON(c, &req); err != nil {
			return err
		}
		if req.Scope != "" {
			scope = req.Scope
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
		const qBump = `UPDATE users SET token_version = token_version + 1, updated_at = now() WHERE id = $1`
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := s.sessions.RevokeAll(ctx, tx, id.UserID, "", sessions.ReasonLogoutGlobal); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, qBump, id.UserID); err != nil {
				return fmt.Errorf("bump token version: %w", err)
			}
			if err := audit.Write(ctx, tx, audit.Event{TenantID: id.TenantID, ActorUserID: id.UserID,
				Action: audit.ActionUserLogoutGlobal, TargetType: "user", TargetID: id.UserID, RequestID: rid}); err != nil {
				return err
			}
			return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id.UserID), Reason: invalidation.ReasonUserLogoutGlobal})
		})
		if err != nil {
			return err
		}
	default:
		return validation([]problem.FieldError{{Field: "scope", Message: "must be local or global"}})
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// --- switch-tenant ---

type switchRequest struct {
	TenantID string `json:"tenant_id"`
}

func (s *Service) switchTenant(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	var req switchRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	tid, ok := ids.Parse(req.TenantID)
	if !ok {
		return validation([]problem.FieldError{{Field: "tenant_id", Message: "a tenant UUID is required"}})
	}
	if id.SessionID == "" {
		return invalidRequest("the access token names no session")
	}
	const qMember = `
SELECT u.token_version FROM memberships m
JOIN users u ON u.id = m.user_id
JOIN tenants t ON t.id = m.tenant_id
WHERE m.user_id = $1 AND m.tenant_id = $2
  AND m.status = 'active' AND t.status = 'active' AND u.status = 'active'`
	ctx := c.UserContext()
	var (
		tv       int64
		tok      string
		amr      []string
		authTime int64
		err      error
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, qMember, id.UserID, tid).Scan(&tv); errors.Is(err, pgx.ErrNoRows) {
			return problem.New(fiber.StatusForbidden, problem.CodeForbidden, "no active membership in that tenant")
		} else if err != nil {
			return fmt.Errorf("check membership: %w", err)
		}
		if err := s.sessions.MoveTenant(ctx, tx, id.UserID, id.SessionID, tid); err != nil {
			return err
		}
		if tok, err = s.sessions.Reissue(ctx, tx, id.UserID, id.SessionID); err != nil {
			return err
		}
		amr, authTime, err = sessionAuth(ctx, tx, id.SessionID)
		return err
	})
	if errors.Is(err, sessions.ErrNotFound) {
		return problem.New(fiber.StatusUnauthorized, problem.CodeInvalidToken, "the session has ended")
	}
	if err != nil {
		return err
	}
	resp, err := s.Issue(Grant{UserID: id.UserID, TenantID: tid, SessionID: id.SessionID, TokenVersion: tv, RefreshToken: tok,
		AMR: amr, AuthTime: authTime})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(resp)
}

// --- password change ---

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

type sessionList struct {
	Data       []sessionView `json:"data"`
	NextCursor *string       `json:"next_cursor"`
}

type cursor struct {
	CreatedAt time.Time `json:"c"`
	ID        string    `json:"i"`
}

var errBadCursor = problem.New(fiber.StatusBadRequest, problem.CodeInvalidCursor, "cursor is not one this list returned")

func (s *Service) listSessions(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	limit := 50
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			return problem.New(fiber.StatusBadRequest, problem.CodeInvalidLimit, "limit must be an integer from 1 to 200")
		}
		limit = n
	}
	var after *sessions.Cursor
	if v := c.Query("cursor"); v != "" {
		raw, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil {
			return errBadCursor
		}
		var cur cursor
		if err := json.Unmarshal(raw, &cur); err != nil || cur.CreatedAt.IsZero() {
			return errBadCursor
		}
		if !ids.Valid(cur.ID) {
			return errBadCursor
		}
		after = &sessions.Cursor{CreatedAt: cur.CreatedAt, ID: cur.ID}
	}
	list, err := s.sessions.List(c.UserContext(), id.UserID, limit+1, after)
	if err != nil {
		return err
	}
	out := sessionList{Data: make([]sessionView, 0, min(len(list), limit))}
	for i, ss := range list {
		if i == limit {
			last := list[limit-1]
			b, _ := json.Marshal(cursor{CreatedAt: last.CreatedAt, ID: last.ID})
			nc := base64.RawURLEncoding.EncodeToString(b)
			out.NextCursor = &nc
			break
		}
		out.Data = append(out.Data, sessionView{
			ID: ss.ID, TenantID: ss.TenantID, UserAgent: ss.UserAgent, IP: ss.IP,
			CreatedAt: ss.CreatedAt, LastUsedAt: ss.LastUsedAt, ExpiresAt: ss.ExpiresAt,
			Current: ss.ID == id.SessionID,
		})
	}
	return c.JSON(out)
}

func (s *Service) revokeSession(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	sid, ok := ids.Parse(c.Params("id"))
	if !ok {
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidID, "id must be a UUID")
	}
	ctx := c.UserContext()
	var (
		n   int64
		err error
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n, err = s.sessions.Revoke(ctx, tx, id.UserID, sid, sessions.ReasonRevoked)
		if err != nil || n == 0 {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Row{Subject: invalidation.UserSubject(id.UserID), Reason: invalidation.ReasonSessionRevoked})
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return problem.New(fiber.StatusNotFound, problem.CodeNotFound, "no such active session")
	}
	return c.SendStatus(fiber.StatusNoContent)
}
