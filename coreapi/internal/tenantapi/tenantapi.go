// Package tenantapi is the tenant API: the caller's own account
// (/users/me), the tenant, its members and their roles, custom roles, the
// audit log and the permission catalog. It validates input and maps its
// stores' errors to problems (MapError); the stores own the SQL.
//
// Register it with httpapi.Options: Register gets Server.Register (before
// other features, so /users/me precedes /users/:id) and ErrorMappers gets
// MapError.
package tenantapi

import (
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/tenants"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// Options configure the tenant API; Pool and Passwords are required.
type Options struct {
	Pool *pgxpool.Pool
	// Passwords hashes passwords of members created with one (POST /users).
	Passwords users.PasswordHasher
	// Catalog is the live permission catalog (nil: the built-in
	// permissions only): what roles may hold, what built-in roles hold,
	// and what GET /permissions lists.
	Catalog *permissions.Catalog
	// PasswordChecksPerHour bounds the passwords one client IP may have
	// hashed or checked an hour over every route (PASSWORD_CHECKS_PER_HOUR,
	// shared with sign-in); a member made with a password counts one. 0
	// means ratelimit.DefaultPasswordChecks.
	PasswordChecksPerHour int
	// Limits bound the mails POST /users sends: invitations, and the
	// verification mails of the accounts it makes (a zero field: the
	// default; TENANT_MAILS_PER_HOUR sets Invitations.TenantMail).
	Limits users.Limits
	// DisplayNameChangesPerHour bounds the display-name changes one
	// account may make an hour (PATCH /users/me); each writes an audit
	// row in every tenant the account belongs to. 0 means
	// DefaultDisplayNameChangesPerHour.
	DisplayNameChangesPerHour int
}

// DefaultDisplayNameChangesPerHour is
// Options.DisplayNameChangesPerHour's default.
const DefaultDisplayNameChangesPerHour = 10

// Server serves the tenant API's routes.
type Server struct {
	pool    *pgxpool.Pool
	users   *users.Store
	tenants *tenants.Store
	roles   *roles.Store
	audit   *audit.Store
	catalog *permissions.Catalog
	limiter *ratelimit.Limiter
	// checkLimit is the client's budget of password hashes.
	checkLimit ratelimit.Limit
	// nameLimit bounds one account's display-name changes.
	nameLimit ratelimit.Limit
	cursor    *httpapi.Cursors // set by Register
}

// New builds the tenant API.
func New(o Options) (*Server, error) {
	if o.Pool == nil || o.Passwords == nil {
		return nil, errors.New("tenantapi: Pool and Passwords are required")
	}
	if o.Catalog == nil {
		o.Catalog = permissions.Builtin()
	}
	if o.PasswordChecksPerHour <= 0 {
		o.PasswordChecksPerHour = ratelimit.DefaultPasswordChecks
	}
	if o.DisplayNameChangesPerHour <= 0 {
		o.DisplayNameChangesPerHour = DefaultDisplayNameChangesPerHour
	}
	return &Server{
		pool:       o.Pool,
		users:      users.NewStore(o.Pool, o.Passwords, o.Catalog, o.Limits),
		tenants:    tenants.NewStore(o.Pool),
		roles:      roles.NewStore(o.Pool, o.Catalog),
		audit:      audit.NewStore(o.Pool),
		catalog:    o.Catalog,
		limiter:    ratelimit.New(o.Pool),
		checkLimit: ratelimit.Limit{N: o.PasswordChecksPerHour, Window: time.Hour},
		nameLimit:  ratelimit.Limit{N: o.DisplayNameChangesPerHour, Window: time.Hour},
	}, nil
}

// MapError maps the stores' sentinel errors to problems (an
// Options.ErrorMappers entry of httpapi); nil for any other error.
func MapError(err error) *problem.Problem {
	table := []struct {
		err    error
		status int
		code   string
		field  string // validation_failed: the member the error is about
	}{
		{users.ErrNotFound, 404, problem.CodeNotFound, ""},
		{roles.ErrNotFound, 404, problem.CodeNotFound, ""},
		{tenants.ErrNotFound, 404, problem.CodeNotFound, ""},
		{users.ErrAlreadyMember, 409, problem.CodeAlreadyMember, ""},
		{users.ErrLastOwner, 409, problem.CodeLastOwner, ""},
		{users.ErrEmailTaken, 409, problem.CodeEmailTaken, ""},
		{invitations.ErrPending, 409, problem.CodeInvitationPending, ""},
		{invitations.ErrNotPending, 409, problem.CodeInvitationNotActive, ""},
		{invitations.ErrIsMember, 409, problem.CodeAlreadyMember, ""},
		{invitations.ErrNotFound, 404, problem.CodeNotFound, ""},
		{invitations.ErrUnknownRole, 422, problem.CodeValidation, "roles"},
		{invitations.ErrRoleDeleted, 409, problem.CodeConflict, ""},
		{users.ErrSameEmail, 422, problem.CodeValidation, "email"},
		{users.ErrInactive, 403, problem.CodeUserDisabled, ""},
		{users.ErrServiceOwner, 403, problem.CodeForbidden, ""},
		{users.ErrServiceAccount, 409, problem.CodeConflict, ""},
		{roles.ErrNameTaken, 409, problem.CodeRoleNameTaken, ""},
		{roles.ErrBuiltin, 409, problem.CodeBuiltinRole, ""},
		{roles.ErrEscalation, 403, problem.CodeForbidden, ""},
		{roles.ErrNeedsUsersWrite, 403, problem.CodeInsufficientScope, ""},
		{roles.ErrTooManyRoles, 409, problem.CodeConflict, ""},
		{roles.ErrMemberRoles, 409, problem.CodeConflict, ""},
		{tenants.ErrUnknownRole, 422, problem.CodeValidation, "roles"},
		{tenants.ErrWeakening, 403, problem.CodeForbidden, ""},
	}
	if so := (*users.SoleOwnerError)(nil); errors.As(err, &so) {
		return problem.New(fiber.StatusConflict, problem.CodeSoleOwner, so.Error())
	}
	for _, e := range table {
		if errors.Is(err, e.err) {
			if e.field != "" {
				return httpapi.Invalid(e.field, e.err.Error())
			}
			return problem.New(e.status, e.code, e.err.Error())
		}
	}
	return nil
}
