package apikeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/clientsecret"
	"github.com/tollgate-auth/tollgate/coreapi/internal/httpapi"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ids"
	"github.com/tollgate-auth/tollgate/coreapi/internal/permissions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/projection"
	"github.com/tollgate-auth/tollgate/coreapi/internal/roles"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sessions"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sweep"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
)

// MinPepperLen is the shortest pepper accepted (bytes).
const MinPepperLen = 32

// Options configure a Service; Logger and Pool are required.
type Options struct {
	Logger *slog.Logger
	Pool   *pgxpool.Pool
	// Pepper keys the HMAC the secrets are stored under (API_KEY_PEPPER,
	// at least MinPepperLen bytes). nil: keys can be listed and revoked,
	// but creating or resolving one answers 503.
	Pepper []byte
	// Catalog is the live permission catalog (nil: the built-in one).
	Catalog *permissions.Catalog
	// RevokedWithin is the projection's revoked-session horizon (the
	// access-token TTL plus TOKEN_MAX_LEEWAY); keys do not use it, but
	// their projection is the same query.
	RevokedWithin time.Duration
	// MaxInFlight bounds concurrent resolves (0: the pool's MaxConns);
	// one more is answered 503 with Retry-After at once.
	MaxInFlight int
	// Now is the clock of expiry checks; nil means time.Now.
	Now func() time.Time
	// Limits bound creations and the audit of a revoked key's uses; a
	// zero field takes its DefaultLimits value.
	Limits Limits
}

// Service serves the API-key routes.
type Service struct {
	log     *slog.Logger
	store   *Store
	catalog *permissions.Catalog
	slots   chan struct{}
	now     func() time.Time
	cursors *httpapi.Cursors // set by Register
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Logger == nil || o.Pool == nil {
		return nil, errors.New("apikeys: Logger and Pool are required")
	}
	if o.Pepper != nil && len(o.Pepper) < MinPepperLen {
		return nil, errors.New("apikeys: the pepper is shorter than 32 bytes")
	}
	if o.Catalog == nil {
		o.Catalog = permissions.Builtin()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = int(o.Pool.Config().MaxConns)
	}
	if o.RevokedWithin <= 0 {
		o.RevokedWithin = 15 * time.Minute
	}
	all, member := roles.CatalogArgs(o.Catalog)
	st := &Store{pool: o.Pool, pepper: o.Pepper, now: o.Now, limits: o.Limits.orDefault(), proj: projection.NewStore(o.Pool, o.RevokedWithin, o.Catalog),
		all: all, member: member, catalog: o.Catalog}
	return &Service{log: o.Logger, store: st, catalog: o.Catalog, slots: make(chan struct{}, o.MaxInFlight), now: o.Now}, nil
}

// Store is the service's store (tests, commands).
func (s *Service) Store() *Store { return s.store }

// RevokeAPIKey revokes the key whose whole secret is secret if it is a
// live key of tenantID (RFC 7009 revocation, POST /api/v1/auth/revoke):
// revoked is false, with a nil error, when the secret is malformed,
// unknown, already revoked or of another tenant. It writes the audit row
// (actorID, the revoking client, as its actor; requestID the request's)
// and the invalidation itself.
func (s *Service) RevokeAPIKey(ctx context.Context, tenantID, secret, actorID, requestID string) (revoked bool, err error) {
	if !ids.Valid(tenantID) {
		return false, nil
	}
	return s.store.RevokeSecret(ctx, strings.ToLower(tenantID), secret, actorID, requestID)
}

// Register adds the routes (an httpapi.Options.Register hook).
func (s *Service) Register(rt httpapi.Routes) {
	s.cursors = rt.Cursors
	p := rt.Protected
	p.Get("/api-keys", httpapi.RequirePermission(roles.APIKeysWrite), s.listTenant)
	p.Post("/api-keys", httpapi.RequirePermission(roles.APIKeysWrite), s.createTenant)
	p.Delete("/api-keys/:id", httpapi.RequirePermission(roles.APIKeysWrite), s.revokeTenant)
	p.Get("/users/me/api-keys", s.listMine)
	p.Post("/users/me/api-keys", s.createMine)
	p.Delete("/users/me/api-keys/:id", s.revokeMine)
	in := strings.TrimPrefix
	rt.Internal.Post(in(apikey.ResolvePath, httpapi.InternalPrefix), s.resolve)
	rt.Internal.Post(in(apikey.UsedPath, httpapi.InternalPrefix), s.used)
}

// MapError maps the package's errors to problems (an
// httpapi.Options.ErrorMappers entry).
func MapError(err error) *problem.Problem {
	table := []struct {
		err    error
		status int
		code   string
	}{
		{ErrNotFound, fiber.StatusNotFound, problem.CodeNotFound},
		{ErrEscalation, fiber.StatusForbidden, problem.CodeForbidden},
		{ErrKeyCreatesKey, fiber.StatusForbidden, problem.CodeForbidden},
		{ErrNotMember, fiber.StatusForbidden, problem.CodeNoMembership},
		{ErrInactive, fiber.StatusForbidden, problem.CodeUserDisabled},
		{ErrNotPermitted, fiber.StatusForbidden, problem.CodeForbidden},
		{ErrStrongerKey, fiber.StatusForbidden, problem.CodeForbidden},
		{ErrLimit, fiber.StatusConflict, problem.CodeConflict},
		{ErrPersonalLimit, fiber.StatusConflict, problem.CodeConflict},
		{ErrWrongSecret, fiber.StatusUnauthorized, problem.CodeInvalidToken},
		{ErrRevoked, fiber.StatusGone, problem.CodeAPIKeyRevoked},
		{ErrExpired, fiber.StatusGone, problem.CodeAPIKeyExpired},
		{ErrUnavailable, fiber.StatusServiceUnavailable, problem.CodeAPIKeysUnavailable},
	}
	for _, e := range table {
		if errors.Is(err, e.err) {
			return problem.New(e.status, e.code, e.err.Error())
		}
	}
	return nil
}

// --- public routes ---

type createBody struct {
	Name        string     `json:"name"`
	Permissions []string   `json:"permissions"`
	ExpiresAt   *time.Time `json:"expires_at" nullable:"true"` // null: never expires
}

// maxExpiryYear is the last year an expiry may fall in, in UTC: the
// last RFC 3339 can write.
const maxExpiryYear = 9999

// MinLifetime is how far ahead of the creation an expires_at must be, as
// stored (to the microsecond, as PostgreSQL keeps it): "in the future"
// let through a time less than a microsecond ahead, which the truncation
// put in the past, and a key a few milliseconds from its expiry is as
// useless, gone before its creator can use it (or before a proxy whose
// clock runs a little ahead sees it).
const MinLifetime = time.Minute

// created is the 201 body: the key and, this once, its secret.
type created struct {
	Key
	Secret string `json:"secret"`
}

func (s *Service) createTenant(c *fiber.Ctx) error { return s.create(c, KindTenant) }
func (s *Service) createMine(c *fiber.Ctx) error   { return s.create(c, KindPersonal) }

func (s *Service) create(c *fiber.Ctx, kind string) error {
	id := httpapi.IdentityOf(c)
	if id.Principal == identity.PrincipalAPIKey {
		return ErrKeyCreatesKey
	}
	var b createBody
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	b.Name = strings.TrimSpace(b.Name)
	var errs []problem.FieldError
	add := func(field, msg string) { errs = append(errs, problem.FieldError{Field: field, Message: msg}) }
	if n := utf8.RuneCountInString(b.Name); n < 1 || n > 200 {
		add("name", "1 to 200 characters")
	} else if r, ok := httpapi.PlainText(b.Name); !ok {
		add("name", fmt.Sprintf("no control characters or bidirectional overrides (%U)", r))
	} else if !httpapi.Visible(b.Name) {
		add("name", httpapi.NotVisible)
	}
	if b.Permissions == nil {
		add("permissions", "required (an empty list is allowed)")
	} else if len(b.Permissions) > 64 {
		add("permissions", "too many permissions (at most 64)")
	} else {
		for _, p := range s.catalog.Unknown(b.Permissions) {
			if len(p) > permissions.MaxName {
				p = p[:permissions.MaxName] + "..."
			}
			add("permissions", "unknown permission \""+p+"\": not in the permission catalog (GET /api/v1/permissions lists it)")
		}
	}
	if b.ExpiresAt != nil {
		t := b.ExpiresAt.UTC().Truncate(time.Microsecond) // what PostgreSQL keeps
		b.ExpiresAt = &t
	}
	switch {
	case b.ExpiresAt == nil:
	case b.ExpiresAt.Before(s.now().Add(MinLifetime)):
		add("expires_at", "must be at least 1 minute in the future")
	case b.ExpiresAt.UTC().Year() > maxExpiryYear:
		// An offset can carry 9999-12-31T23:00:00-23:00 into year 10000
		// in UTC, which RFC 3339 (and so JSON) cannot write: the key's
		// audit row, its answer and every later list would fail.
		add("expires_at", "must be before 10000-01-01T00:00:00Z")
	}
	if len(errs) > 0 {
		p := problem.New(fiber.StatusUnprocessableEntity, problem.CodeValidation, "the request has invalid fields")
		p.Errors = errs
		return p
	}
	for _, p := range b.Permissions {
		if !id.Has(p) {
			return problem.New(fiber.StatusForbidden, problem.CodeInsufficientScope,
				"an API key cannot hold a permission its creator does not hold: "+p)
		}
	}
	k, secret, err := s.store.Create(c.UserContext(), NewKey{TenantID: id.TenantID, UserID: id.UserID, SessionID: httpapi.SessionOf(c),
		SecretID: httpapi.ClientSecretOf(c), Kind: kind, Name: b.Name, Permissions: b.Permissions, ExpiresAt: b.ExpiresAt, RequestID: httpapi.RequestIDOf(c), Held: id.Permissions})
	if errors.Is(err, sessions.ErrEnded) {
		return httpapi.SessionEnded(c)
	}
	if errors.Is(err, ErrNoClientSecret) {
		return tokenEnded(c)
	}
	if errors.Is(err, clientsecret.ErrDeleted) {
		return httpapi.SecretDeleted(c)
	}
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	path := "/api/v1/api-keys/"
	if kind == KindPersonal {
		path = "/api/v1/users/me/api-keys/"
	}
	c.Set(fiber.HeaderLocation, path+k.ID)
	return c.Status(fiber.StatusCreated).JSON(created{Key: k, Secret: secret})
}

// tokenEnded answers a key creation signed with an access token of a
// service account that has no client secret left (ErrNoClientSecret):
// the token ended with the last one, though the proxy that forwarded it
// had not yet heard. 401 invalid_token, with the RFC 6750 challenge a 401
// to a bearer carries.
func tokenEnded(c *fiber.Ctx) error {
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer error="invalid_token", error_description="the access token has ended"`)
	return problem.New(fiber.StatusUnauthorized, problem.CodeInvalidToken, ErrNoClientSecret.Error())
}

func (s *Service) listTenant(c *fiber.Ctx) error {
	return s.list(c, "api-keys", httpapi.IdentityOf(c).TenantID, "")
}

func (s *Service) listMine(c *fiber.Ctx) error {
	id := httpapi.IdentityOf(c)
	return s.list(c, "my-api-keys", id.TenantID+"/"+id.UserID, id.UserID)
}

// list answers a page of the tenant's live keys (owner "") or of owner's
// personal keys; cursors are bound to list and scope (the tenant, or the
// tenant and the owner). The lists have no total.
func (s *Service) list(c *fiber.Ctx, list, scope, owner string) error {
	pq, err := httpapi.ParsePageWithoutTotal(c)
	if err != nil {
		return err
	}
	var after *Cursor
	if pq.Cursor != "" {
		t, kid, err := s.cursors.DecodeAfter(list, scope, pq.Cursor)
		if err != nil {
			return err
		}
		after = &Cursor{CreatedAt: t, ID: kid}
	}
	keys, err := s.store.List(c.UserContext(), httpapi.IdentityOf(c).TenantID, owner, pq.Limit+1, after)
	if err != nil {
		return err
	}
	return c.JSON(httpapi.Page(keys, 0, pq, func(k Key) string { return s.cursors.After(list, scope, k.CreatedAt, k.ID) }))
}

func (s *Service) revokeTenant(c *fiber.Ctx) error { return s.revoke(c, "") }
func (s *Service) revokeMine(c *fiber.Ctx) error   { return s.revoke(c, httpapi.IdentityOf(c).UserID) }

func (s *Service) revoke(c *fiber.Ctx, owner string) error {
	kid, ok := ids.Parse(c.Params("id"))
	if !ok {
		return problem.New(fiber.StatusBadRequest, problem.CodeInvalidID, "id must be a UUID")
	}
	id := httpapi.IdentityOf(c)
	a := httpapi.ActorOf(c)
	if err := s.store.Revoke(c.UserContext(), id.TenantID, kid, owner, a); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// --- internal routes (the proxy) ---

func (s *Service) resolve(c *fiber.Ctx) error {
	var b apikey.ResolveRequest
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	// The client that presented the key, as the proxy tells it: the
	// resolve is the proxy's own call, so the request's own address
	// (httpapi.ClientIP) is the proxy's, which a revoked key's audit row
	// named for every use.
	clientIP := ""
	if b.ClientIP != "" {
		a, err := netip.ParseAddr(b.ClientIP)
		if err != nil || a.Zone() != "" {
			return httpapi.Invalid("client_ip", "an IP address")
		}
		clientIP = a.Unmap().String()
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		c.Set(fiber.HeaderRetryAfter, "1")
		return problem.New(fiber.StatusServiceUnavailable, problem.CodeUnavailable, "too many API key resolves in flight; retry shortly")
	}
	p, err := s.store.Resolve(c.UserContext(), b.Key, httpapi.RequestIDOf(c), clientIP)
	if errors.Is(err, ErrNotFound) {
		// A code of its own: the proxy remembers the key as unknown only
		// on it, not on any 404 (no such route, another service).
		return problem.New(fiber.StatusNotFound, problem.CodeAPIKeyUnknown, err.Error())
	}
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(p)
}

func (s *Service) used(c *fiber.Ctx) error {
	var b apikey.UsedRequest
	if err := httpapi.DecodeJSON(c, &b); err != nil {
		return err
	}
	if len(b.Keys) > apikey.MaxUsedKeys {
		return httpapi.Invalid("keys", "at most 1000 keys per report")
	}
	for _, k := range b.Keys {
		if !apikey.ValidPublicID(k) {
			return httpapi.Invalid("keys", "keys must be public ids")
		}
	}
	if len(b.Keys) > 0 {
		if _, err := s.store.MarkUsed(c.UserContext(), b.Keys); err != nil {
			return err
		}
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// SweepKeep is how long a revoked or expired key is kept (an expired one
// stays listed, marked by its expires_at) before the sweeper deletes it.
const SweepKeep = 7 * 24 * time.Hour

// RunSweeper deletes, every interval, the keys revoked or expired more
// than SweepKeep ago, until ctx ends.
func (s *Service) RunSweeper(ctx context.Context, every time.Duration) error {
	return sweep.Every(ctx, every, s.log, slog.LevelInfo,
		sweep.Task{Name: "api keys", Run: func(ctx context.Context) (int64, error) { return s.store.Sweep(ctx, SweepKeep) }})
}
