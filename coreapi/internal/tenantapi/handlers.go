package tenantapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	mailq "github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// Register adds the tenant API's routes (an Options.Register hook of
// httpapi).
func (s *Server) Register(rt httpapi.Routes) {
	s.cursor = rt.Cursors
	p := rt.Protected
	p.Get("/users/me", s.getMe)
	p.Patch("/users/me", s.patchMe)
	p.Get("/users/me/tenants", s.listMyTenants)
	// The account itself, in every tenant; DELETE /users/me (below, as
	// /users/:id) only leaves the token's tenant.
	p.Delete("/users/me/account", s.deleteMyAccount)

	p.Get("/tenant", httpapi.RequirePermission(roles.TenantRead), s.getTenant)
	p.Patch("/tenant", httpapi.RequirePermission(roles.TenantWrite), s.patchTenant)

	p.Get("/users", httpapi.RequirePermission(roles.UsersRead), s.listUsers)
	p.Post("/users", httpapi.RequirePermission(roles.UsersWrite), s.createUser)
	p.Get("/users/:id", httpapi.RequirePermission(roles.UsersRead), s.getUser)
	p.Patch("/users/:id", httpapi.RequirePermission(roles.UsersWrite), s.patchUser)
	p.Delete("/users/:id", httpapi.RequirePermission(roles.UsersWrite), s.deleteUser)
	p.Put("/users/:id/roles/:role", httpapi.RequirePermission(roles.UsersWrite), s.grantRole)
	p.Delete("/users/:id/roles/:role", httpapi.RequirePermission(roles.UsersWrite), s.revokeRole)

	p.Get("/roles", httpapi.RequirePermission(roles.RolesRead), s.listRoles)
	p.Post("/roles", httpapi.RequirePermission(roles.RolesWrite), s.createRole)
	p.Patch("/roles/:id", httpapi.RequirePermission(roles.RolesWrite), s.patchRole)
	p.Delete("/roles/:id", httpapi.RequirePermission(roles.RolesWrite), s.deleteRole)

	p.Get("/audit-events", httpapi.RequirePermission(roles.AuditRead), s.listAudit)

	// The vocabulary is the deployment's, the same for every tenant, and
	// every member needs it (e.g. to choose the permissions of their own
	// API keys): any verified identity may read it.
	p.Get("/permissions", s.listPermissions)
}

// --- self ---

func (s *Server) getMe(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	m, err := s.users.Me(c.UserContext(), id)
	if err != nil {
		return err
	}
	out := me(m)
	return httpapi.SendJSON(c, fiber.StatusOK, &out)
}

// DeleteMaxAge is how recent the sign-in (with the second factor, for an
// account that has one) of DELETE /users/me/account must be, as for the
// other changes of a person's ways in.
const DeleteMaxAge = 5 * time.Minute

// errNotRecent: the caller's sign-in is older than DeleteMaxAge, or
// lacks the second factor its account has.
var errNotRecent = errors.New("sign-in not recent enough")

// deleteMyAccount deletes the caller's account (users.DeleteAccount). It needs a
// sign-in within DeleteMaxAge, with the second factor for an account that
// has one, of a session still bound to the token's tenant, by an account
// that could sign in now; all checked once the account's memberships and
// row are locked, which a sign-in's new session (at its membership), a
// password change and a factor's confirmation wait for. API keys and service accounts are refused before
// (accountroutes). A last active owner of a tenant with other members is
// refused (409 sole_owner, naming the tenants).
func (s *Server) deleteMyAccount(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	var mfa bool
	_, err := users.DeleteAccount(c.UserContext(), s.pool, id.UserID, users.DeleteOptions{
		By: users.DeletedBySelf, ActorUserID: id.UserID, RequestID: strings.Clone(httpapi.RequestIDOf(c)),
		Check: func(ctx context.Context, tx pgx.Tx) error {
			var err error
			if mfa, err = users.HasActiveFactor(ctx, tx, id.UserID); err != nil {
				return err
			}
			// The session first: an ended one is answered as ended, not
			// as one to step up, which it never could (Fresh finds no
			// live session and so no recent sign-in).
			if err := sessions.LockLiveIn(ctx, tx, id.UserID, id.SessionID, id.TenantID); err != nil {
				return err
			}
			if fresh, err := sessions.Fresh(ctx, tx, id, DeleteMaxAge, mfa); err != nil {
				return err
			} else if !fresh {
				return errNotRecent
			}
			_, err = users.ActiveAccount(ctx, tx, id.UserID, id.TenantID)
			return err
		},
	})
	const what = "deleting the account"
	switch {
	case err == nil:
		return c.SendStatus(fiber.StatusNoContent)
	case errors.Is(err, errNotRecent):
		return httpapi.NeedRecentAuth(c, DeleteMaxAge, mfa, what)
	case errors.Is(err, sessions.ErrNotFound), errors.Is(err, users.ErrNotFound):
		return httpapi.SessionEnded(c)
	}
	return err
}

// emailChangesPerHour bounds the email changes (each mails a link) a
// user may start.
const emailChangesPerHour = 5

type patchMeBody struct {
	DisplayName *string `json:"display_name"`
	// Email starts an email change: a link goes to the new address, and
	// the address changes when it is used.
	Email *string `json:"email"`
}

// EmailChangeMaxAge is how recent a sign-in (with the second factor, for
// an account that has one) must be to change the address.
const EmailChangeMaxAge = 5 * time.Minute

// emailChangeNotRecent answers an email change whose sign-in is older than
// EmailChangeMaxAge or, for an account with a second factor (mfa), lacks
// it: as the account's deletion answers, a step-up for an account with a
// factor, a new sign-in for one without.
func emailChangeNotRecent(c *fiber.Ctx, mfa bool) error {
	return httpapi.NeedRecentAuth(c, EmailChangeMaxAge, mfa, "changing the email address")
}

func (s *Server) patchMe(c *fiber.Ctx) error {
	var b patchMeBody
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	var v httpapi.Checks
	v.Require(b.DisplayName != nil || b.Email != nil, "(body)", "display_name or email is required")
	if b.DisplayName != nil {
		n := strings.TrimSpace(*b.DisplayName)
		b.DisplayName = &n
		v.Text("display_name", n, 0, users.MaxDisplayName)
	}
	if b.Email != nil {
		e := mailq.Canonical(*b.Email)
		b.Email = &e
		v.Require(mailq.ValidNewAddress(e), "email", "not an email address")
	}
	if err := v.Err(); err != nil {
		return err
	}
	id := httpapi.IdentityOf(c)
	ctx := c.UserContext()
	if b.Email != nil {
		// The session first: an ended one is answered as ended (401
		// invalid_token), as on every other account route, not as one
		// to step up, which it never could (Fresh finds no live session
		// and so no recent sign-in).
		if live, err := sessions.LiveIn(ctx, s.pool, id.UserID, id.SessionID, id.TenantID); err != nil {
			return err
		} else if !live {
			return httpapi.SessionEnded(c)
		}
		// The address is where a password reset goes: moving it with a
		// session taken from its owner (a leaked token) would hand the
		// account over. It needs a recent sign-in, with the second factor
		// for an account that has one, as the account's deletion does.
		// Checked again, the factor looked for with the account's row
		// locked (users.Store.PatchMe).
		mfa, err := users.HasActiveFactor(ctx, s.pool, id.UserID)
		if err != nil {
			return err
		}
		fresh, err := sessions.Fresh(ctx, s.pool, id, EmailChangeMaxAge, mfa)
		if err != nil {
			return err
		}
		if !fresh {
			return emailChangeNotRecent(c, mfa)
		}
		// An account that could not sign in now (disabled, disabled in
		// the session's tenant, or of a suspended tenant: 403
		// user_disabled): a proxy that has not yet heard of the disabling
		// still forwards its bearer, and whoever held it would have a
		// link mailed to an address of theirs, ready to move the account
		// once it is active again. The session, its sign-in and the
		// account are checked again with the account's row locked
		// (users.Store.PatchMe).
		if _, err := users.ActiveAccount(ctx, s.pool, id.UserID, id.TenantID); err != nil {
			return err
		}
		// Each request mails someone: bounded per user.
		ok, wait, err := s.limiter.Allow(ctx, ratelimit.Key("email-change", id.UserID),
			ratelimit.Limit{N: emailChangesPerHour, Window: time.Hour})
		if err != nil {
			return err
		}
		if !ok {
			return httpapi.TooMany(c, wait, "too many email changes requested")
		}
	}
	// One transaction for both changes: a request refused for either
	// (a guard, a limit) writes neither.
	m, err := s.users.PatchMe(ctx, id, users.MePatch{
		DisplayName: b.DisplayName, NameLimit: s.nameLimit,
		Email: b.Email, EmailMaxAge: EmailChangeMaxAge,
	}, httpapi.RequestIDOf(c))
	if errors.Is(err, users.ErrNotFreshFactor) {
		return emailChangeNotRecent(c, true)
	}
	if errors.Is(err, users.ErrNotFresh) {
		return emailChangeNotRecent(c, false)
	}
	if errors.Is(err, sessions.ErrNotFound) { // the session moved to another tenant, or ended meanwhile (a reset, a sign-out everywhere)
		return httpapi.SessionEnded(c)
	}
	if err != nil {
		return err
	}
	out := me(m)
	status := fiber.StatusOK
	if b.Email != nil {
		// The change waits for the link: say so.
		status = fiber.StatusAccepted
	}
	return httpapi.SendJSON(c, status, &out)
}

func (s *Server) listMyTenants(c *fiber.Ctx) error {
	pq, err := httpapi.ParsePage(c)
	if err != nil {
		return err
	}
	id := httpapi.IdentityOf(c)
	lp := tenants.ListParams{UserID: id.UserID, Limit: pq.Limit + 1, IncludeTotal: pq.IncludeTotal}
	if pq.Cursor != "" {
		if lp.After, lp.AfterID, err = s.cursor.DecodeAfter("my-tenants", id.UserID, pq.Cursor); err != nil {
			return err
		}
	}
	rows, total, err := s.tenants.ListForUser(c.UserContext(), lp)
	if err != nil {
		return err
	}
	return c.JSON(httpapi.MapPage(httpapi.Page(rows, total, pq, func(m tenants.Membership) string {
		return s.cursor.After("my-tenants", id.UserID, m.JoinedAt, m.ID)
	}), func(m tenants.Membership) membership { return membership(m) }))
}

// --- tenant ---

var errStatusOperatorOnly = problem.New(fiber.StatusForbidden, problem.CodeOperatorOnly,
	"a tenant's status is changed by an operator (coreapi tenants suspend|reactivate ID), not through the API")

func (s *Server) getTenant(c *fiber.Ctx) error {
	t, err := s.tenants.Get(c.UserContext(), httpapi.IdentityOf(c).TenantID)
	if err != nil {
		return err
	}
	return c.JSON(Tenant(t))
}

func (s *Server) patchTenant(c *fiber.Ctx) error {
	var b tenants.Patch
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	if b.Status != nil {
		// Suspending one's own tenant through the API had no way back (a
		// suspended tenant's members cannot call the API): suspension and
		// reactivation are operator actions.
		return errStatusOperatorOnly
	}
	var v httpapi.Checks
	if b.Name != nil {
		n := strings.TrimSpace(*b.Name)
		b.Name = &n
		v.Text("name", n, 1, tenants.MaxName)
	}
	v.Require(b.Name != nil || b.RequireMFA != nil, "(body)", "nothing to change")
	if err := v.Err(); err != nil {
		return err
	}
	// A patch that changes nothing answers the tenant as it is (and
	// writes no audit row).
	all, member := roles.CatalogArgs(s.catalog)
	id := httpapi.IdentityOf(c)
	ctx := c.UserContext()
	t, _, err := s.tenants.UpdateAsMember(ctx, id.TenantID, httpapi.ActorOf(c), b, all, member, func(tx pgx.Tx) error {
		return mayWeakenPolicy(ctx, tx, id)
	})
	switch {
	case errors.Is(err, errMachinePolicy):
		return problem.New(fiber.StatusForbidden, problem.CodePrincipalNotAllowed,
			"API keys and service accounts cannot turn the tenant's MFA policy off; use a person's access token with a second factor given in the last "+httpapi.Window(PolicyMaxAge))
	case errors.Is(err, errNotRecent):
		return httpapi.NeedRecentSecondFactor(c, PolicyMaxAge, "turning the tenant's MFA policy off")
	case errors.Is(err, sessions.ErrNotFound):
		return httpapi.SessionEnded(c)
	case err != nil:
		return err
	}
	return c.JSON(Tenant(t))
}

// PolicyMaxAge is how recent the second factor of the person turning the
// tenant's MFA policy off must be, as for the other changes of a
// person's ways in.
const PolicyMaxAge = 5 * time.Minute

// errMachinePolicy: an API key or a service account asked to turn the
// tenant's MFA policy off.
var errMachinePolicy = errors.New("a machine principal cannot weaken the tenant's MFA policy")

// mayWeakenPolicy is nil when id may turn the tenant's MFA policy off: a
// person (never an API key or a service account, whatever permissions
// they carry: a leaked one must not take every member's second factor
// away), whose session is live in the token's tenant and gave a second
// factor within PolicyMaxAge (sessions.Fresh). Else errMachinePolicy,
// sessions.ErrNotFound (the session ended: answered as ended, not as one
// to step up, which it never could) or errNotRecent. Run in the
// update's transaction, after the tenant's lock; the session's row is
// locked, so a sign-out waits for it.
func mayWeakenPolicy(ctx context.Context, tx pgx.Tx, id identity.Identity) error {
	if id.Principal == identity.PrincipalAPIKey || id.Principal == identity.PrincipalService {
		return errMachinePolicy
	}
	if err := sessions.LockLiveIn(ctx, tx, id.UserID, id.SessionID, id.TenantID); err != nil {
		return err
	}
	fresh, err := sessions.Fresh(ctx, tx, id, PolicyMaxAge, true)
	if err != nil {
		return err
	}
	if !fresh {
		return errNotRecent
	}
	return nil
}

// --- users ---

func (s *Server) listUsers(c *fiber.Ctx) error {
	pq, err := httpapi.ParsePage(c)
	if err != nil {
		return err
	}
	tid := httpapi.IdentityOf(c).TenantID
	lp := users.ListParams{TenantID: tid, Limit: pq.Limit + 1, IncludeTotal: pq.IncludeTotal}
	if pq.Cursor != "" {
		if lp.After, lp.AfterID, err = s.cursor.DecodeAfter("users", tid, pq.Cursor); err != nil {
			return err
		}
	}
	rows, total, err := s.users.List(c.UserContext(), lp)
	if err != nil {
		return err
	}
	return httpapi.SendJSON(c, fiber.StatusOK, memberPage(httpapi.Page(rows, total, pq, func(m users.Member) string {
		return s.cursor.After("users", tid, m.CreatedAt, m.ID)
	})))
}

func (s *Server) getUser(c *fiber.Ctx) error {
	uid, err := httpapi.UserIDParam(c, "id")
	if err != nil {
		return err
	}
	m, err := s.users.Get(c.UserContext(), httpapi.IdentityOf(c).TenantID, uid)
	if err != nil {
		return err
	}
	return sendMember(c, fiber.StatusOK, m)
}

type createUserBody struct {
	Email       string   `json:"email"`
	Password    *string  `json:"password"`
	DisplayName *string  `json:"display_name"`
	Roles       []string `json:"roles"`
}

func (s *Server) createUser(c *fiber.Ctx) error {
	var b createUserBody
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	var v httpapi.Checks
	b.Email = mailq.Canonical(b.Email)
	v.Length("email", b.Email, 1, mailq.MaxAddress)
	if b.Email != "" && len(b.Email) <= mailq.MaxAddress {
		v.Require(mailq.ValidNewAddress(b.Email), "email", "not an email address")
	}
	n := users.NewMember{Email: b.Email, Roles: users.SortedUnique(b.Roles)}
	if b.Password != nil {
		if err := password.CheckNew(*b.Password); err != nil {
			v.Add("password", err.Error())
		}
		n.Password = *b.Password
		ip := httpapi.ClientIP(c)
		n.BeforeHash = func(ctx context.Context) error { return s.chargeHash(ctx, ip) }
	}
	if b.DisplayName != nil {
		n.DisplayName = strings.TrimSpace(*b.DisplayName)
		v.Text("display_name", n.DisplayName, 0, users.MaxDisplayName)
	}
	v.Require(len(b.Roles) <= 32, "roles", "at most 32 roles")
	for _, r := range b.Roles {
		if !roles.ValidName(r) {
			v.Add("roles", "invalid role name")
			break
		}
	}
	if err := v.Err(); err != nil {
		return err
	}
	m, inv, err := s.users.Create(c.UserContext(), httpapi.IdentityOf(c).TenantID, httpapi.ActorOf(c), n)
	if errors.Is(err, sessions.ErrEnded) {
		return httpapi.SessionEnded(c)
	}
	if err != nil {
		return err
	}
	if inv != nil {
		// The address has an account: it was invited, not added.
		c.Location("/api/v1/invitations/" + inv.ID)
		return c.Status(fiber.StatusAccepted).JSON(Invitation(*inv))
	}
	c.Location("/api/v1/users/" + m.ID)
	return sendMember(c, fiber.StatusCreated, m)
}

// chargeHash counts a password hash against the client ip's budget of
// them, the sign-in's PASSWORD_CHECKS_PER_HOUR, or refuses it (429,
// Retry-After): each is an argon2 hash, and anyone can sign up a tenant
// and make members with passwords in a loop.
func (s *Server) chargeHash(ctx context.Context, ip string) error {
	ok, wait, err := s.limiter.Allow(ctx, ratelimit.PasswordChecksKey(ip), s.checkLimit)
	if err != nil {
		return err
	}
	if !ok {
		return &ratelimit.Refused{What: "too many passwords hashed for this address in " + s.checkLimit.Period() +
			" (PASSWORD_CHECKS_PER_HOUR)", RetryAfter: wait}
	}
	return nil
}

// patchUserBody changes a membership: membership_status, the name Me and
// Member use for it (a bare status is always the object's own: a user's,
// a tenant's, an invitation's).
type patchUserBody struct {
	Status *string `json:"membership_status"`
}

func (s *Server) patchUser(c *fiber.Ctx) error {
	uid, err := httpapi.UserIDParam(c, "id")
	if err != nil {
		return err
	}
	var b patchUserBody
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	var v httpapi.Checks
	v.Require(b.Status != nil, "membership_status", "required")
	if b.Status != nil {
		v.Require(*b.Status == identity.StatusActive || *b.Status == identity.StatusDisabled, "membership_status", "active or disabled")
	}
	if err := v.Err(); err != nil {
		return err
	}
	m, err := s.users.Update(c.UserContext(), httpapi.IdentityOf(c).TenantID, uid, httpapi.ActorOf(c), users.Patch{Status: b.Status})
	if err != nil {
		return err
	}
	return sendMember(c, fiber.StatusOK, m)
}

func (s *Server) deleteUser(c *fiber.Ctx) error {
	uid, err := httpapi.UserIDParam(c, "id")
	if err != nil {
		return err
	}
	if err := s.users.Remove(c.UserContext(), httpapi.IdentityOf(c).TenantID, uid, httpapi.ActorOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func roleParam(c *fiber.Ctx) (string, error) {
	r := c.Params("role")
	if !roles.ValidName(r) {
		return "", problem.New(fiber.StatusNotFound, problem.CodeNotFound, roles.ErrNotFound.Error())
	}
	return strings.Clone(r), nil
}

func (s *Server) grantRole(c *fiber.Ctx) error {
	uid, err := httpapi.UserIDParam(c, "id")
	if err != nil {
		return err
	}
	role, err := roleParam(c)
	if err != nil {
		return err
	}
	m, err := s.users.GrantRole(c.UserContext(), httpapi.IdentityOf(c).TenantID, uid, role, httpapi.ActorOf(c))
	if err != nil {
		return err
	}
	return sendMember(c, fiber.StatusOK, m)
}

func (s *Server) revokeRole(c *fiber.Ctx) error {
	uid, err := httpapi.UserIDParam(c, "id")
	if err != nil {
		return err
	}
	role, err := roleParam(c)
	if err != nil {
		return err
	}
	m, err := s.users.RevokeRole(c.UserContext(), httpapi.IdentityOf(c).TenantID, uid, role, httpapi.ActorOf(c))
	if err != nil {
		return err
	}
	return sendMember(c, fiber.StatusOK, m)
}

// --- roles ---

func (s *Server) listRoles(c *fiber.Ctx) error {
	pq, err := httpapi.ParsePage(c)
	if err != nil {
		return err
	}
	tid := httpapi.IdentityOf(c).TenantID
	lp := roles.ListParams{TenantID: tid, Limit: pq.Limit + 1, IncludeTotal: pq.IncludeTotal}
	if pq.Cursor != "" {
		if lp.After, lp.AfterID, err = s.cursor.DecodeAfter("roles", tid, pq.Cursor); err != nil {
			return err
		}
	}
	rows, total, err := s.roles.List(c.UserContext(), lp)
	if err != nil {
		return err
	}
	return c.JSON(httpapi.MapPage(httpapi.Page(rows, total, pq, func(r roles.Role) string {
		return s.cursor.After("roles", tid, r.CreatedAt, r.ID)
	}), func(r roles.Role) role { return role(r) }))
}

// checkPermissions accepts only permissions of the live catalog, naming
// every one that is not.
func (s *Server) checkPermissions(v *httpapi.Checks, field string, perms []string) {
	if len(perms) > 64 {
		v.Add(field, "too many permissions (at most 64)")
		return
	}
	for _, p := range s.catalog.Unknown(perms) {
		if len(p) > permissions.MaxName {
			p = p[:permissions.MaxName] + "..."
		}
		v.Add(field, fmt.Sprintf("unknown permission %q: not in the permission catalog (GET /api/v1/permissions lists it)", p))
	}
}

type createRoleBody struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Permissions []string `json:"permissions"`
}

func (s *Server) createRole(c *fiber.Ctx) error {
	var b createRoleBody
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	var v httpapi.Checks
	v.Require(roles.ValidName(b.Name), "name", "1-63 characters: lower-case letters, digits, '_', '.', '-', starting with a letter or digit")
	b.Description = strings.TrimSpace(b.Description)
	v.Text("description", b.Description, 0, roles.MaxDescription)
	s.checkPermissions(&v, "permissions", b.Permissions)
	if err := v.Err(); err != nil {
		return err
	}
	perms := users.SortedUnique(b.Permissions)
	if perms == nil {
		perms = []string{}
	}
	r, err := s.roles.Create(c.UserContext(), httpapi.IdentityOf(c).TenantID, httpapi.ActorOf(c),
		roles.Definition{Name: b.Name, Description: b.Description, Permissions: perms})
	if err != nil {
		return err
	}
	c.Location("/api/v1/roles/" + r.ID)
	return c.Status(fiber.StatusCreated).JSON(role(r))
}

func (s *Server) patchRole(c *fiber.Ctx) error {
	rid, err := httpapi.PathUUID(c, "id")
	if err != nil {
		return err
	}
	var b roles.Patch
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	var v httpapi.Checks
	if b.Name != nil {
		v.Require(roles.ValidName(*b.Name), "name", "1-63 characters: lower-case letters, digits, '_', '.', '-', starting with a letter or digit")
	}
	if b.Description != nil {
		d := strings.TrimSpace(*b.Description)
		b.Description = &d
		v.Text("description", d, 0, roles.MaxDescription)
	}
	if b.Permissions != nil {
		s.checkPermissions(&v, "permissions", *b.Permissions)
		p := users.SortedUnique(*b.Permissions)
		if p == nil {
			p = []string{}
		}
		b.Permissions = &p
	}
	v.Require(b.Name != nil || b.Description != nil || b.Permissions != nil, "(body)", "nothing to change")
	if err := v.Err(); err != nil {
		return err
	}
	r, err := s.roles.Update(c.UserContext(), httpapi.IdentityOf(c).TenantID, rid, httpapi.ActorOf(c), b)
	if err != nil {
		return err
	}
	return c.JSON(role(r))
}

func (s *Server) deleteRole(c *fiber.Ctx) error {
	rid, err := httpapi.PathUUID(c, "id")
	if err != nil {
		return err
	}
	if err := s.roles.Delete(c.UserContext(), httpapi.IdentityOf(c).TenantID, rid, httpapi.ActorOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// --- permissions ---

type permissionList struct {
	Data []permissions.Entry `json:"data"`
}

func (s *Server) listPermissions(c *fiber.Ctx) error {
	if err := httpapi.NoQuery(c); err != nil {
		return err
	}
	return c.JSON(permissionList{Data: s.catalog.Entries()})
}

// --- audit ---

type idKey struct {
	ID int64 `json:"id"`
}

func (s *Server) listAudit(c *fiber.Ctx) error {
	pq, err := httpapi.ParsePage(c)
	if err != nil {
		return err
	}
	id := httpapi.IdentityOf(c)
	tid := id.TenantID
	// Addresses are the members' (GET /users): shown to those who may
	// read the members only.
	lp := audit.ListParams{TenantID: tid, Limit: pq.Limit + 1, IncludeTotal: pq.IncludeTotal,
		HideAddresses: !id.Has(roles.UsersRead)}
	if pq.Cursor != "" {
		var k idKey
		if err := s.cursor.Decode("audit", tid, pq.Cursor, &k); err != nil {
			return err
		}
		if k.ID <= 0 {
			return httpapi.ErrBadCursor
		}
		lp.BeforeID = k.ID
	}
	rows, total, err := s.audit.List(c.UserContext(), lp)
	if err != nil {
		return err
	}
	return c.JSON(httpapi.MapPage(httpapi.Page(rows, total, pq, func(r audit.Record) string {
		return s.cursor.Encode("audit", tid, idKey{ID: r.ID})
	}), func(r audit.Record) auditEvent { return auditEvent(r) }))
}

// sendMember answers one member.
func sendMember(c *fiber.Ctx, status int, m users.Member) error {
	out := member(m)
	return httpapi.SendJSON(c, status, &out)
}
