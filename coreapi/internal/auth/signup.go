package auth

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

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
	req.Email = mail.Canonical(req.Email)
	req.TenantName = strings.TrimSpace(req.TenantName)
	req.DisplayName = strings.TrimSpace(req.DisplayName) // as PATCH /users/me trims it
	var v httpapi.Checks
	if !mail.ValidNewAddress(req.Email) {
		v.Add("email", "a valid email address is required")
	}
	if err := password.CheckNew(req.Password); err != nil {
		v.Add("password", err.Error())
	}
	if n := utf8.RuneCountInString(req.TenantName); n < 1 || n > 200 {
		v.Add("tenant_name", "1 to 200 characters")
	} else {
		v.Text("tenant_name", req.TenantName, 1, 200)
	}
	v.Text("display_name", req.DisplayName, 0, 200)
	if err := v.Err(); err != nil {
		return err
	}
	ctx := c.UserContext()
	ua, ip := client(c)
	// Each sign-up hashes a password (the costliest work coreapi does)
	// and mails an address: bounded per client before either.
	ok, wait, err := s.limiter.Allow(ctx, ratelimit.Key("signup", ratelimit.ClientKey(ip)), s.signupLimit)
	if err != nil {
		return err
	}
	if !ok {
		return httpapi.TooMany(c, wait, "too many sign-ups from this address")
	}
	hash, err := s.passwords.Hash(ctx, req.Password)
	if err != nil {
		return err
	}
	rid := strings.Clone(httpapi.RequestIDOf(c))
	var (
		user   userView
		tenant tenants.Tenant
		issued sessions.Issued
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		u, t, err := users.InsertWithTenant(ctx, tx, users.NewUser{Email: req.Email, DisplayName: req.DisplayName, PasswordHash: hash},
			req.TenantName, "signup", rid)
		if err != nil {
			return err
		}
		user, tenant = userView{ID: u.ID, Email: req.Email, DisplayName: req.DisplayName}, t
		if issued, err = s.sessions.Create(ctx, tx, user.ID, tenant.ID, ua, ip); err != nil {
			return err
		}
		// Each "+tag" of one inbox is an address without an account: the
		// per-client limit alone let clients at many addresses mail it
		// without bound.
		if err := onetime.CountAddressMail(ctx, tx, user.Email); err != nil {
			return err
		}
		return onetime.SendVerification(ctx, tx, user.ID, user.Email, false, rid)
	})
	if errors.Is(err, users.ErrEmailTaken) {
		return errEmailTaken
	}
	if err != nil {
		return err
	}
	// The account stays: signed out before its tokens were issued (by
	// whoever holds its password already), it signs in.
	resp, err := s.Issue(ctx, Grant{UserID: user.ID, TenantID: tenant.ID, SessionID: issued.SessionID, RefreshToken: issued.RefreshToken, AuthTime: issued.AuthTime},
		func() error { return errSessionEnded })
	if err != nil {
		return err
	}
	resp.User, resp.Tenant = user, tenantapi.Tenant(tenant)
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusCreated).JSON(resp)
}
