// Package lifecycle is the account lifecycle HTTP surface: email
// verification (POST /auth/verify-email, /auth/verify-email/resend),
// password reset (/auth/password/forgot, /auth/password/reset),
// invitations with consent (/invitations, /invitations/accept,
// /users/me/invitations) and the minimal HTML pages the mailed links open
// (/verify-email, /reset-password, /accept-invitation).
//
// Every change is one transaction that also writes its audit rows, its
// outbox row (when the proxy's projection changes) and its mail (package
// mail), so nothing is half done. Mailed tokens are single use and stored
// hashed (packages onetime and invitations).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/invitations"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/onetime"
	"github.com/tollgate-auth/tollgate/coreapi/internal/password"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// Limits are the rate limits of the mail-sending routes.
type Limits struct {
	// ForgotPerAddress: reset mails per address (its inbox, mail.Inbox)
	// asked for from one client network (ratelimit.ClientKey); above it
	// the request is answered the same (202) but nothing is sent, so
	// nobody can flood an inbox and the answer reveals nothing. Counted
	// per network, so that someone asking for an address's links again
	// and again does not spend its owner's share.
	ForgotPerAddress ratelimit.Limit
	// ForgotPerInbox: reset mails per inbox over every client network,
	// the ceiling on what many networks together can send to one
	// mailbox; above it, too, the same 202 and no mail. The links
	// already mailed stay valid (a new one revokes none), so the owner
	// can still use one.
	ForgotPerInbox ratelimit.Limit
	// ForgotPerIP: forgot requests per client IP; above it 429.
	ForgotPerIP ratelimit.Limit
	// Resend: verification mails a user may ask for; above it 429.
	Resend ratelimit.Limit
	// Invitations bound the invitation mails, per address, per inbox and
	// per tenant (TENANT_MAILS_PER_HOUR); a zero field takes its
	// invitations.DefaultLimits value. The tenant API's POST /users
	// counts against the same per-tenant limit and must be given it too.
	Invitations invitations.Limits
}

// DefaultLimits returns the limits a Service has unless its Options say
// otherwise: 3 reset mails per address, client network and hour, 10 per
// address and hour over every network, 20 forgot requests per IP and
// hour, 3 verification resends per user and 15 minutes, and
// invitations.DefaultLimits.
func DefaultLimits() Limits {
	return Limits{
		ForgotPerAddress: ratelimit.Limit{N: 3, Window: time.Hour},
		ForgotPerInbox:   ratelimit.Limit{N: 10, Window: time.Hour},
		ForgotPerIP:      ratelimit.Limit{N: 20, Window: time.Hour},
		Resend:           ratelimit.Limit{N: 3, Window: 15 * time.Minute},
		Invitations:      invitations.DefaultLimits(),
	}
}

// Options configure a Service; a zero limit takes its DefaultLimits value.
type Options struct {
	Logger    *slog.Logger
	Pool      *pgxpool.Pool
	Auth      *auth.Service
	Passwords *password.Hasher
	Limits    Limits
	// Catalog is the live permission catalog (nil: the built-in one): what
	// the built-in roles an invitation names grant.
	Catalog *permissions.Catalog
}

// Service serves the lifecycle routes.
type Service struct {
	log         *slog.Logger
	pool        *pgxpool.Pool
	auth        *auth.Service
	passwords   *password.Hasher
	limiter     *ratelimit.Limiter
	limits      Limits
	invitations *invitations.Store
	catalog     *permissions.Catalog
	cursors     *httpapi.Cursors
	resets      afterAnswer
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Logger == nil || o.Pool == nil || o.Auth == nil || o.Passwords == nil {
		return nil, errors.New("lifecycle: Logger, Pool, Auth and Passwords are required")
	}
	d := DefaultLimits()
	for _, l := range []struct {
		got *ratelimit.Limit
		def ratelimit.Limit
	}{
		{&o.Limits.ForgotPerAddress, d.ForgotPerAddress},
		{&o.Limits.ForgotPerInbox, d.ForgotPerInbox},
		{&o.Limits.ForgotPerIP, d.ForgotPerIP},
		{&o.Limits.Resend, d.Resend},
	} {
		if l.got.N <= 0 || l.got.Window <= 0 {
			*l.got = l.def
		}
	}
	if o.Catalog == nil {
		o.Catalog = permissions.Builtin()
	}
	return &Service{log: o.Logger, pool: o.Pool, auth: o.Auth, passwords: o.Passwords,
		limiter: ratelimit.New(o.Pool), limits: o.Limits, invitations: invitations.NewStore(o.Pool, o.Catalog, o.Limits.Invitations), catalog: o.Catalog,
		resets: afterAnswer{slots: make(chan struct{}, maxPendingResets)}}, nil
}

// Register adds the routes (an httpapi.Options.Register hook).
func (s *Service) Register(rt httpapi.Routes) {
	s.cursors = rt.Cursors
	rt.Optional.Post("/auth/verify-email", s.verifyEmail)
	rt.Protected.Post("/auth/verify-email/resend", s.resendVerification)
	rt.Public.Post("/auth/password/forgot", s.forgotPassword)
	rt.Public.Post("/auth/password/reset", s.resetPassword)

	rt.Protected.Get("/invitations", httpapi.RequirePermission("users:write"), s.listInvitations)
	rt.Protected.Post("/invitations", httpapi.RequirePermission("users:write"), s.createInvitation)
	rt.Protected.Delete("/invitations/:id", httpapi.RequirePermission("users:write"), s.revokeInvitation)
	rt.Protected.Post("/invitations/:id/resend", httpapi.RequirePermission("users:write"), s.resendInvitation)
	rt.Protected.Get("/users/me/invitations", s.myInvitations)
	rt.Optional.Post("/invitations/accept", s.acceptInvitation)

	rt.Root.Get(PageVerifyEmail, s.pageVerifyEmail)
	rt.Root.Get(PageResetPassword, s.pageResetPassword)
	rt.Root.Get(PageAcceptInvitation, s.pageAcceptInvitation)
}

// MapError turns this package's domain errors into problems (an
// httpapi.Options.ErrorMappers entry).
func MapError(err error) *problem.Problem {
	switch {
	case errors.Is(err, onetime.ErrInvalid), errors.Is(err, invitations.ErrInvalidToken):
		return problem.New(fiber.StatusBadRequest, problem.CodeLinkInvalid, err.Error())
	case errors.Is(err, onetime.ErrExpired):
		return problem.New(fiber.StatusBadRequest, problem.CodeLinkExpired, err.Error())
	case errors.Is(err, mail.ErrBadAddress):
		return httpapi.Invalid("email", "not a single plain address")
	case errors.Is(err, mail.ErrUndeliverable):
		// A stored address (the account's, a pending change's or an
		// invitation's): the caller learns why no mail can go, and what
		// to do.
		return httpapi.Invalid("email", "no mail is sent to this address: its domain is a single label (an address stored before such addresses were refused); change the address, or invite another one")
	}
	return nil
}

// --- request bodies: JSON, or a form posted by the pages ---

func isForm(c *fiber.Ctx) bool {
	mt, _, _ := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	return mt == fiber.MIMEApplicationForm
}

// decode reads JSON strictly (httpapi.DecodeJSON) or a form with the same
// field names, as strictly: a form declared in a charset other than UTF-8
// is 415 unsupported_media_type, as such a JSON body is; a field sent
// twice is 400 bad_request, as a JSON member named twice is (of two
// values, which one is meant would be a guess, and another reader of the
// body may take the other); and names match exactly. dst points to a struct of string and *string fields; an
// empty form value leaves its field as it is (nil).
func decode(c *fiber.Ctx, dst any) error {
	if !isForm(c) {
		return httpapi.DecodeJSON(c, dst)
	}
	if err := httpapi.CheckCoding(c); err != nil {
		return err
	}
	// A charset other than UTF-8 is refused (415), as DecodeJSON refuses
	// one: the form's bytes are read as UTF-8.
	if _, err := httpapi.MediaType(c); err != nil {
		return err
	}
	v := reflect.ValueOf(dst).Elem()
	t := v.Type()
	vals := make([]string, t.NumField())
	fields := make([]httpapi.FormField, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		fields = append(fields, httpapi.FormField{Name: name, Dst: &vals[i]})
	}
	// Also refuses a NUL byte or invalid UTF-8 in any field, as the JSON
	// path does, rather than a NUL reaching PostgreSQL (a 500).
	if err := httpapi.ReadPostBodyForm(c, fields); err != nil {
		return err
	}
	for i, s := range vals {
		switch f := v.Field(i); {
		case s == "":
		case f.Kind() == reflect.Pointer:
			f.Set(reflect.ValueOf(&s))
		default:
			f.SetString(s)
		}
	}
	return nil
}

// seeOther answers a page's form with a 303 to location, so the browser
// GETs it. Its address can hold the posted link's token, as the page's
// own does: it is private as the page is (httpapi.PrivateHeaders, as in
// render), so that neither it nor the token is kept in a cache or sent on
// as a Referer.
func seeOther(c *fiber.Ctx, location string) error {
	httpapi.PrivateHeaders(c)
	return c.Redirect(location, fiber.StatusSeeOther)
}

// done answers a page's form with a redirect back to the page showing the
// outcome (303, so the browser GETs it); API clients get v as JSON.
func done(c *fiber.Ctx, page string, status int, v any) error {
	if isForm(c) {
		return seeOther(c, page+"?done=1")
	}
	if v == nil {
		return c.SendStatus(status)
	}
	return c.Status(status).JSON(v)
}

// formError sends a page's form back to the page with the error code; API
// clients get the problem.
func formError(c *fiber.Ctx, page, token string, err error) error {
	if err == nil || !isForm(c) {
		return err
	}
	code := refusalCode(err)
	if code == "" {
		code = problem.CodeInternal
	}
	// The page shows the code; a challenge or a wait set for an API
	// client's answer is no part of a browser's redirect.
	c.Response().Header.Del(fiber.HeaderWWWAuthenticate)
	c.Response().Header.Del(fiber.HeaderRetryAfter)
	q := "?error=" + code
	// An expired link's token goes back to its page, which names whose
	// link it was and how to get a new one; an invalid one's, which names
	// nothing, does not.
	if token != "" && code != problem.CodeLinkInvalid {
		q += "&token=" + url.QueryEscape(token)
	}
	return seeOther(c, page+q)
}

// refusalCode is the problem code of err when it is a refusal (a
// problem, or an error MapError maps), else "".
func refusalCode(err error) string {
	var p *problem.Problem
	if errors.As(err, &p) {
		return p.Code
	}
	if mp := MapError(err); mp != nil {
		return mp.Code
	}
	return ""
}

// clientIP is the caller's address: the proxy's signed client IP (see
// httpapi.ClientIP, the one place that decides).
func clientIP(c *fiber.Ctx) string { return httpapi.ClientIP(c) }

func tooMany(c *fiber.Ctx, wait time.Duration, what string) error {
	return httpapi.TooMany(c, wait, what)
}

// auditUser writes one audit event about userID in every tenant the user
// belongs to.
func auditUser(ctx context.Context, tx pgx.Tx, userID, actorID, action, requestID string, data any) error {
	return audit.WriteForUser(ctx, tx, userID, audit.Event{ActorUserID: actorID, Action: action,
		TargetType: audit.TargetUser, TargetID: userID, Data: data, RequestID: requestID})
}

// ExpiredLinksKept is how long an expired one-time token stays after its
// expiry, refused as expired: its page names the address it was for and
// offers a new link (pages.go) to whoever opens an old mail, the morning
// after or a few days later. Only its hash is kept.
const ExpiredLinksKept = 7 * 24 * time.Hour

// Sweep deletes one-time tokens expired more than ExpiredLinksKept ago and
// the rate-limit counters whose hits no longer count (Limiter.Sweep). It
// skips the tokens another transaction holds: a revocation of a user's
// tokens (onetime.Revoke) reaches them by user, newest first, and a sweep
// deleting them by expiry could hold one while waiting for another the
// revocation held (a deadlock PostgreSQL ended by failing one of them, a
// password reset with a 500). A token skipped is taken next time. Both
// delete in batches (sweep.InBatches).
func (s *Service) Sweep(ctx context.Context) (int64, error) {
	const q = `
DELETE FROM action_tokens WHERE token_hash IN (
    SELECT token_hash FROM action_tokens WHERE expires_at < now() - make_interval(secs => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED)`
	tokens, err := sweep.InBatches(ctx, s.pool, q, ExpiredLinksKept.Seconds())
	if err != nil {
		return tokens, fmt.Errorf("sweep tokens: %w", err)
	}
	n, err := s.limiter.Sweep(ctx)
	return tokens + n, err
}

// RunSweeper sweeps every interval until ctx ends, then waits for the
// password resets still running after their answer (see forgotPassword),
// which need the pool.
func (s *Service) RunSweeper(ctx context.Context, every time.Duration) error {
	defer s.closeResets()
	return sweep.Every(ctx, every, s.log, slog.LevelDebug, sweep.Task{Name: "lifecycle tokens", Run: s.Sweep})
}
