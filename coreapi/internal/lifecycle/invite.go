package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/outbox"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenantapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

type createInvitationBody struct {
	Email string   `json:"email"`
	Roles []string `json:"roles"`
}

func (s *Service) createInvitation(c *fiber.Ctx) error {
	var b createInvitationBody
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	email := mail.Canonical(b.Email)
	if !mail.ValidNewAddress(email) {
		return httpapi.Invalid("email", "not an email address")
	}
	if len(b.Roles) > 32 {
		return httpapi.Invalid("roles", "at most 32 roles")
	}
	for _, r := range b.Roles {
		if !roles.ValidName(r) {
			return httpapi.Invalid("roles", "invalid role name")
		}
	}
	inv, err := s.invitations.Create(c.UserContext(), httpapi.IdentityOf(c).TenantID, httpapi.ActorOf(c), email, users.SortedUnique(b.Roles))
	if errors.Is(err, sessions.ErrEnded) {
		return httpapi.SessionEnded(c)
	}
	if err != nil {
		return err
	}
	c.Location("/api/v1/invitations/" + inv.ID)
	return c.Status(fiber.StatusCreated).JSON(tenantapi.Invitation(inv))
}

func (s *Service) listInvitations(c *fiber.Ctx) error {
	pq, err := httpapi.ParsePageWithoutTotal(c)
	if err != nil {
		return err
	}
	tid := httpapi.IdentityOf(c).TenantID
	var after *invitations.Cursor
	if pq.Cursor != "" {
		t, id, err := s.cursors.DecodeAfter("invitations", tid, pq.Cursor)
		if err != nil {
			return err
		}
		after = &invitations.Cursor{CreatedAt: t, ID: id}
	}
	rows, err := s.invitations.List(c.UserContext(), tid, pq.Limit+1, after)
	if err != nil {
		return err
	}
	return c.JSON(httpapi.MapPage(httpapi.Page(rows, 0, pq, func(inv invitations.Invitation) string {
		return s.cursors.After("invitations", tid, inv.CreatedAt, inv.ID)
	}), func(inv invitations.Invitation) tenantapi.Invitation { return tenantapi.Invitation(inv) }))
}

func (s *Service) revokeInvitation(c *fiber.Ctx) error {
	id, err := httpapi.PathUUID(c, "id")
	if err != nil {
		return err
	}
	if err := s.invitations.Revoke(c.UserContext(), httpapi.IdentityOf(c).TenantID, id, httpapi.ActorOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Service) resendInvitation(c *fiber.Ctx) error {
	id, err := httpapi.PathUUID(c, "id")
	if err != nil {
		return err
	}
	inv, err := s.invitations.Resend(c.UserContext(), httpapi.IdentityOf(c).TenantID, id, httpapi.ActorOf(c))
	if errors.Is(err, sessions.ErrEnded) {
		return httpapi.SessionEnded(c)
	}
	if err != nil {
		return err
	}
	return c.JSON(tenantapi.Invitation(inv))
}

// myInvitation is invitations.Mine as the API writes it.
type myInvitation struct {
	ID         string    `json:"id"`
	TenantID   string    `json:"tenant_id"`
	TenantName string    `json:"tenant_name"`
	Roles      []string  `json:"roles"`
	ExpiresAt  time.Time `json:"expires_at"`
	CreatedAt  time.Time `json:"created_at"`
}

// myInvitations lists the pending invitations addressed to the caller,
// once the caller has proven the address (else anyone who signed up with
// someone else's address would see that person's invitations) and chosen
// the password (a tenant admin who set it can sign in with it, and would
// read other tenants' invitations, which the account cannot accept either
// until then).
func (s *Service) myInvitations(c *fiber.Ctx) error {
	pq, err := httpapi.ParsePageWithoutTotal(c)
	if err != nil {
		return err
	}
	id := httpapi.IdentityOf(c)
	var after *invitations.Cursor
	if pq.Cursor != "" {
		t, iid, err := s.cursors.DecodeAfter("my-invitations", id.UserID, pq.Cursor)
		if err != nil {
			return err
		}
		after = &invitations.Cursor{CreatedAt: t, ID: iid}
	}
	ctx := c.UserContext()
	const qUser = `SELECT email_verified_at IS NOT NULL, password_hash IS NOT NULL AND password_set_by_admin FROM users WHERE id = $1`
	var verified, adminPassword bool
	if err := s.pool.QueryRow(ctx, qUser, id.UserID).Scan(&verified, &adminPassword); errors.Is(err, pgx.ErrNoRows) {
		// Deleted since: its sessions went with it.
		return httpapi.SessionEnded(c)
	} else if err != nil {
		return fmt.Errorf("load user: %w", err)
	}
	if !verified {
		return problem.New(fiber.StatusForbidden, problem.CodeEmailUnverified, "verify your email address to see the invitations sent to it")
	}
	if adminPassword {
		return errAdminPasswordList
	}
	list, err := s.invitations.ForUser(ctx, id.UserID, pq.Limit+1, after)
	if err != nil {
		return err
	}
	return c.JSON(httpapi.MapPage(httpapi.Page(list, 0, pq, func(inv invitations.Mine) string {
		return s.cursors.After("my-invitations", id.UserID, inv.CreatedAt, inv.ID)
	}), func(inv invitations.Mine) myInvitation { return myInvitation(inv) }))
}

type acceptBody struct {
	Token       string  `json:"token"`
	Password    *string `json:"password"`
	DisplayName *string `json:"display_name"`
}

var (
	errMismatch = problem.New(fiber.StatusForbidden, problem.CodeInvitationMismatch,
		"this invitation was sent to another address than this account's")
	errAccountExists = problem.New(fiber.StatusUnauthorized, problem.CodeAccountExists,
		"an account has this address: accept signed in as it, or with its password")
	// errSecondFactorDetail: the right password of an account with a
	// second factor, which the password alone does not prove (whoever
	// reset it from the mailbox would get a session without the factor).
	errSecondFactorDetail = "this account has a second factor: sign in with its password and second factor " +
		"(grant_type=password, then grant_type=mfa_otp), then accept with the access token"
	errInviterCannotGrant = problem.New(fiber.StatusForbidden, problem.CodeForbidden,
		"whoever sent this invitation can no longer grant its roles")
	errInvitationRoleDeleted = problem.New(fiber.StatusConflict, problem.CodeConflict,
		"a role this invitation grants was deleted since it was sent: ask for a new invitation")
	errAdminPassword = problem.New(fiber.StatusConflict, problem.CodeAdminPasswordBeforeLinking,
		"this account's password was set by a tenant administrator: reset it (forgot password), then accept")
	errPasswordChanged = problem.New(fiber.StatusBadRequest, problem.CodeInvalidGrant,
		"the account's password or sessions changed while the invitation was accepted: try again")
	errAdminPasswordList = problem.New(fiber.StatusConflict, problem.CodeAdminPasswordBeforeLinking,
		"this account's password was set by a tenant administrator: reset it (forgot password) to see the invitations sent to it")
	// errSessionEnded: the session an acceptance without a bearer opened
	// was signed out before its tokens were issued (no bearer was sent,
	// so no RFC 6750 challenge; see accept's ended).
	errSessionEnded = problem.New(fiber.StatusUnauthorized, problem.CodeInvalidToken, "the session has ended")
)

// acceptInvitation adds the invitee to the inviting tenant and opens a
// session there. A new address gets an account (verified: the link proved
// the mailbox); an existing account must be the caller (bearer) or give
// its password, and its address must be the invited one.
func (s *Service) acceptInvitation(c *fiber.Ctx) error {
	var b acceptBody
	if err := decode(c, &b); err != nil {
		return formError(c, PageAcceptInvitation, "", err)
	}
	if b.Token == "" {
		return formError(c, PageAcceptInvitation, "", httpapi.Invalid("token", "required"))
	}
	if b.DisplayName != nil {
		n := strings.TrimSpace(*b.DisplayName)
		b.DisplayName = &n
		var v httpapi.Checks
		v.Text("display_name", n, 0, users.MaxDisplayName)
		if err := v.Err(); err != nil {
			return formError(c, PageAcceptInvitation, b.Token, err)
		}
	}
	// The page's form ends in a redirect to the page, which shows no
	// token: a session opened for it could never be used, and would stay
	// listed among the account's sessions until it expired.
	resp, err := s.accept(c, b, !isForm(c))
	if err != nil {
		if secs, ok := auth.RetryAfter(err); ok {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(secs))
		}
		return formError(c, PageAcceptInvitation, b.Token, err)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return done(c, PageAcceptInvitation, fiber.StatusOK, resp)
}

// hasAccount reports whether an account has the invited address email
// (invitations.Pending's): an accept without a bearer then needs its
// password, else creates it. The invitation's page asks for what this
// says.
func (s *Service) hasAccount(ctx context.Context, email string) (bool, error) {
	const q = `SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))`
	var exists bool
	if err := s.pool.QueryRow(ctx, q, email).Scan(&exists); err != nil {
		return false, fmt.Errorf("find account: %w", err)
	}
	return exists, nil
}

// usable refuses an invitation that can no longer be accepted: its
// refusal (invitations.Pending.Refusal, the test GET /users/me/invitations
// lists by) as a problem. One past its expiry is expired whether it is
// still pending or was marked expired: it was never used.
func usable(p invitations.Pending) error { return refused(p.Refusal) }

// refused is the problem of an invitation's refusal code ("": none).
func refused(code string) error {
	switch code {
	case "":
		return nil
	case invitations.RefusedRevoked:
		return problem.New(fiber.StatusGone, problem.CodeInvitationNotActive, "the invitation was withdrawn")
	case invitations.RefusedExpired:
		return problem.New(fiber.StatusGone, problem.CodeLinkExpired, "the invitation has expired; ask for a new one")
	case invitations.RefusedUsed:
		return problem.New(fiber.StatusGone, problem.CodeInvitationNotActive, "the invitation was already used")
	case invitations.RefusedTenantSuspended:
		// The operator's suspension admits nobody (the password grant
		// refuses the tenant too); the invitation stays pending.
		return problem.New(fiber.StatusForbidden, problem.CodeForbidden, "the inviting tenant is suspended")
	case invitations.RefusedInviter:
		return errInviterCannotGrant
	case invitations.RefusedRoleDeleted:
		// The invitee joins with every role the inviter chose or not at
		// all: never with fewer, unsaid (nor with another role created
		// since under a deleted one's name, which the invitation never
		// held).
		return errInvitationRoleDeleted
	}
	return fmt.Errorf("invitation refused: unknown refusal %q", code)
}

// accept accepts the invitation b names; with issue, it also signs the
// account in there (a session and its tokens).
func (s *Service) accept(c *fiber.Ctx, b acceptBody, issue bool) (auth.TokenResponse, error) {
	ctx := c.UserContext()
	id := httpapi.IdentityOf(c)
	rid := strings.Clone(httpapi.RequestIDOf(c))
	ua := strings.Clone(c.Get(fiber.HeaderUserAgent))
	ip := strings.Clone(clientIP(c))

	// Look the invitation up first (unlocked) to know whose credentials
	// to check; everything is checked again under the lock below.
	var email, tenantID string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		p, err := invitations.Lock(ctx, tx, s.catalog, b.Token)
		if err != nil {
			return err
		}
		email, tenantID = p.Email, p.TenantID
		return usable(p)
	})
	if err != nil {
		return auth.TokenResponse{}, err
	}
	const qAccount = `
SELECT id::text, lower(email) = lower($2), status, token_version, password_hash IS NOT NULL AND password_set_by_admin
FROM users WHERE id = $1`
	var (
		userID string
		tv     int64
		hash   string // set for a new account
		// checkedTV is the token version the password was checked
		// under (-1: no password checked).
		checkedTV int64 = -1
	)
	switch {
	case id.UserID != "":
		userID = id.UserID
	default:
		exists, err := s.hasAccount(ctx, email)
		if err != nil {
			return auth.TokenResponse{}, err
		}
		switch {
		case exists && (b.Password == nil || *b.Password == ""):
			return auth.TokenResponse{}, errAccountExists
		case exists:
			userID, checkedTV, err = s.auth.CheckPassword(ctx, email, *b.Password, ip)
			if errors.Is(err, auth.ErrSecondFactor) {
				return auth.TokenResponse{}, httpapi.NeedSecondFactorSignIn(c, errSecondFactorDetail)
			}
			if err != nil {
				return auth.TokenResponse{}, err
			}
		default:
			// The account would be a new one: its address must pass
			// as any new account's does (an invitation sent before
			// the look-alike check may hold one that does not).
			if !mail.ValidNewAddress(email) {
				return auth.TokenResponse{}, httpapi.Invalid("email", "not an email address")
			}
			if b.Password == nil {
				return auth.TokenResponse{}, httpapi.Invalid("password", "required to create the account")
			}
			if err := password.CheckNew(*b.Password); err != nil {
				return auth.TokenResponse{}, httpapi.Invalid("password", err.Error())
			}
			// The hash counts against the client's budget of password
			// checks, as a reset's does: what only the transaction below
			// tells (a change since the look above: a role deleted, an
			// inviter demoted) refuses after it and leaves the invitation
			// pending, and its link could be sent again and again, a hash
			// each.
			ok, wait, err := s.auth.ReserveHash(ctx, ip)
			if err != nil {
				return auth.TokenResponse{}, err
			}
			if !ok {
				return auth.TokenResponse{}, tooMany(c, wait,
					"too many passwords checked from this address (PASSWORD_CHECKS_PER_HOUR)")
			}
			if hash, err = s.passwords.Hash(ctx, *b.Password); err != nil {
				return auth.TokenResponse{}, err
			}
		}
	}
	var g auth.Grant
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The tenant's lock first, as every change of a membership or a
		// role takes it (before the invitation's row, which a member's
		// removal withdraws under it): the inviter's rights are read
		// below after any demotion or removal that committed, never
		// beside one still under way, which would be missed.
		if err := roles.LockTenant(ctx, tx, tenantID); err != nil {
			return err
		}
		// The invitation's roles are judged by this replica's catalog:
		// only if it is the recorded one (nothing is created otherwise).
		if err := permissions.CheckCurrent(ctx, tx, s.catalog); err != nil {
			return err
		}
		p, err := invitations.Lock(ctx, tx, s.catalog, b.Token)
		if err != nil {
			return err
		}
		if err := usable(p); err != nil {
			return err
		}
		// Checked again once the roles are locked: a change of their
		// permissions that committed meanwhile counts.
		grant, err := invitations.GrantableRoles(ctx, tx, s.catalog, p)
		if err != nil {
			return err
		}
		if err := refused(grant.Refusal); err != nil {
			return err
		}
		created := false
		if userID == "" {
			name := ""
			if b.DisplayName != nil {
				name = strings.TrimSpace(*b.DisplayName)
			}
			// The link reached the mailbox: the address is proven.
			u, err := users.Insert(ctx, tx, users.NewUser{Email: p.Email, DisplayName: name, PasswordHash: hash, Verified: true})
			if errors.Is(err, users.ErrEmailTaken) {
				return errAccountExists // signed up meanwhile
			}
			if err != nil {
				return err
			}
			userID, tv = u.ID, u.TokenVersion
			created = true
		} else {
			var (
				same, adminPassword bool
				status              string
			)
			err := tx.QueryRow(ctx, qAccount+` FOR UPDATE`, userID, p.Email).Scan(&userID, &same, &status, &tv, &adminPassword)
			switch {
			case errors.Is(err, pgx.ErrNoRows) && id.UserID != "":
				// Deleted since (a proxy that has not yet heard of it
				// still forwards the bearer): its sessions went with it.
				return sessions.ErrEnded
			case errors.Is(err, pgx.ErrNoRows):
				// Deleted after its password was checked: the password
				// is no account's now, as after a reset that raced it.
				return errPasswordChanged
			case err != nil:
				return fmt.Errorf("load account: %w", err)
			}
			if !same {
				return errMismatch
			}
			// The bearer's session must still be live, as a
			// verification's bearer's must: the form's accept opens no
			// session (nothing below would look at it), and the account
			// must not join, its address proven, on the say of a session
			// a sign-out or a password reset has ended.
			if id.UserID != "" {
				if err := bearerLive(ctx, tx, userID, id.SessionID); err != nil {
					return err
				}
			}
			// A password reset or change (or a sign-out everywhere)
			// committed since the password was checked: it may no
			// longer be the account's, and a session stamped with the
			// version read now would outlive what ended every other.
			if checkedTV >= 0 && tv != checkedTV {
				return errPasswordChanged
			}
			// A second factor confirmed since the password was checked
			// (a confirmation activates it with this row locked, and this
			// look is a statement after the lock): the password alone no
			// longer proves the owner, as CheckPassword says of one found
			// before, and the confirmation's end of the other sessions
			// never saw the session this would open.
			if checkedTV >= 0 {
				if factor, err := auth.HasActiveFactor(ctx, tx, userID); err != nil {
					return err
				} else if factor {
					return httpapi.NeedSecondFactorSignIn(c, errSecondFactorDetail)
				}
			}
			if status != identity.StatusActive {
				return problem.New(fiber.StatusForbidden, problem.CodeUserDisabled, "this account is disabled")
			}
			// The admin who chose the password (POST /users) knows it:
			// the account must not carry them into another tenant.
			if adminPassword {
				return errAdminPassword
			}
			// The link reached the mailbox: the address is proven.
			if _, err := tx.Exec(ctx, `UPDATE users SET email_verified_at = coalesce(email_verified_at, now()) WHERE id = $1`, userID); err != nil {
				return fmt.Errorf("verify email: %w", err)
			}
		}
		if err := tenants.AddMemberWithRoles(ctx, tx, p.TenantID, userID, grant.IDs); err != nil {
			if errors.Is(err, tenants.ErrAlreadyMember) {
				return problem.New(fiber.StatusConflict, problem.CodeAlreadyMember, "this account is already a member of the tenant")
			}
			return err
		}
		if err := invitations.MarkAccepted(ctx, tx, p.ID, userID); err != nil {
			return err
		}
		// Another pending invitation of the tenant to the address (one
		// spelled in another normal form, which migration 00012 left) is
		// a member's now: nobody could accept or resend it. Under the
		// tenant's lock, which every change of its invitations takes
		// before their rows.
		if err := invitations.WithdrawForMember(ctx, tx, p.TenantID, userID, userID, rid, audit.ActionInvitationAccepted); err != nil {
			return err
		}
		if err := audit.WriteWith(ctx, tx, audit.Event{TenantID: p.TenantID, ActorUserID: userID, Action: audit.ActionInvitationAccepted,
			TargetType: audit.TargetInvitation, TargetID: p.ID, RequestID: rid,
			Data: map[string]any{"email": p.Email, "roles": grant.Names, "role_ids": grant.IDs, "user_created": created}},
			outbox.Row{Subject: invalidation.UserSubject(userID), Reason: invalidation.ReasonMemberAdded}); err != nil {
			return err
		}
		if !issue {
			return nil
		}
		issued, err := s.auth.Sessions().CreateAt(ctx, tx, userID, p.TenantID, ua, ip, tv)
		if err != nil {
			return err
		}
		g = auth.Grant{UserID: userID, TenantID: p.TenantID, SessionID: issued.SessionID, TokenVersion: tv, RefreshToken: issued.RefreshToken, AuthTime: issued.AuthTime}
		if id.UserID != "" {
			// Signed in, nobody authenticated now: the new session is the
			// bearer's sign-in (its methods and time, as its access token
			// says), not a fresh one.
			g.AMR, g.AuthTime, err = sessions.InheritAuth(ctx, tx, userID, id, issued.SessionID)
		}
		return err
	})
	// ended answers a session that ended: the bearer's, with the RFC 6750
	// challenge, when one was sent.
	ended := func() error {
		if id.UserID != "" {
			return httpapi.SessionEnded(c)
		}
		return errSessionEnded
	}
	if errors.Is(err, sessions.ErrNotFound) || errors.Is(err, sessions.ErrEnded) {
		return auth.TokenResponse{}, ended()
	}
	if err != nil || !issue {
		return auth.TokenResponse{}, err
	}
	// The membership stays: a session signed out meanwhile (a sign-out
	// everywhere, a password reset) gets no token.
	return s.auth.Issue(ctx, g, ended)
}
